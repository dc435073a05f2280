//! Logging in: send an account's login request, read the reply, and turn it into a [`Token`].
//!
//! The only module that speaks HTTP. Invariants: a reply is fully checked (status, size, JSON,
//! token characters, expiry) before a token leaves this module; errors fall in the three classes
//! the daemon branches on ([`ErrorClass`]); no error carries a secret or a token, and excerpts of
//! reply bodies are shortened, flattened and scrubbed of every secret the request sent.

pub mod assertion;
pub mod http;
pub mod preset;
pub mod request;
pub mod scrub;
pub mod spec;

use std::fmt;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use reqwest::StatusCode;
use reqwest::header::{DATE, HeaderMap, LOCATION, RETRY_AFTER};
use zeroize::Zeroizing;

use crate::expiry;
use crate::secret::{Secret, SecretSource};
use crate::token::Token;
use request::BuiltRequest;
use spec::{FieldValue, LoginSpec, RequestSpec};

/// OAuth2 error codes (RFC 6749 §5.2) that mean the credentials or the request will not work
/// however often they are retried.
const REJECTING_CODES: &[&str] = &[
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_request",
    "access_denied",
];

/// What kind of failure a login error is; the daemon's retry policy branches on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again soon with backoff: connection errors, timeouts, 5xx, 429, 408.
    Transient,
    /// The server refused the credentials (401, 403, 400 `invalid_client` and kin, a vendor's
    /// "bad credentials"), or a secret could not be read: retrying is pointless until the secret
    /// or the config changes.
    Rejected,
    /// The server answered something unusable: not JSON, HTML, no token, a bad token or expiry,
    /// a redirect, an oversized body.
    Protocol,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "temporary failure",
            ErrorClass::Rejected => "credentials rejected",
            ErrorClass::Protocol => "unusable reply",
        })
    }
}

/// A failed login. Its message names the account, the status and what went wrong, and never
/// holds a secret or a token.
#[derive(Debug, thiserror::Error)]
#[error("account {account}: {class}: {message}")]
pub struct LoginError {
    pub account: String,
    pub class: ErrorClass,
    /// The HTTP status, when a reply arrived.
    pub status: Option<u16>,
    /// The server's `Retry-After`, parsed and clamped to [`crate::schedule::MAX_RETRY_AFTER`].
    pub retry_after: Option<Duration>,
    pub message: String,
}

/// A successful login.
#[derive(Debug)]
pub struct LoginOutcome {
    pub token: Token,
    /// A refresh token, when an OAuth2 server issued one: the next login uses it first.
    pub refresh_token: Option<Secret>,
    /// Which reply field the expiry came from.
    pub expiry_source: expiry::Source,
    /// Whether the expiry was cut down to the account's `max_lifetime`.
    pub clamped: bool,
    /// Whether the OAuth2 refresh_token grant produced this token.
    pub refreshed: bool,
    /// Time from sending the request to having the whole reply.
    pub latency: Duration,
}

/// One account's login, ready to run repeatedly.
pub struct Login {
    account: String,
    spec: std::sync::Arc<LoginSpec>,
    client: reqwest::Client,
    files_digest: Option<http::FilesDigest>,
    max_reply_bytes: usize,
    max_lifetime: SignedDuration,
}

/// An account whose login cannot be set up: a bad CA bundle or proxy.
#[derive(Debug, thiserror::Error)]
#[error("account {account}: {source}")]
pub struct SetupError {
    pub account: String,
    #[source]
    pub source: http::ClientError,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("account", &self.account)
            .field("url", &self.spec.request.url.as_str())
            .finish_non_exhaustive()
    }
}

impl Login {
    /// The login of an account, with its HTTP client from `clients` (shared with every account
    /// that has the same HTTP settings).
    ///
    /// # Errors
    /// A bad CA bundle or proxy setting.
    pub fn for_account(
        account: &crate::config::Account,
        clients: &http::Clients,
    ) -> Result<Login, SetupError> {
        let shared = clients
            .client_for(&account.http)
            .map_err(|source| SetupError {
                account: account.name.clone(),
                source,
            })?;
        Ok(Login {
            account: account.name.clone(),
            client: shared.client,
            files_digest: shared.files_digest,
            spec: std::sync::Arc::clone(&account.login),
            max_reply_bytes: account.http.max_reply_bytes,
            max_lifetime: account.max_lifetime,
        })
    }

    /// The digest of the CA bundle this login's client trusts (`None` without one): when the
    /// file's digest differs, the bundle was rotated after the client was built.
    pub fn files_digest(&self) -> Option<http::FilesDigest> {
        self.files_digest
    }

    /// Logs in once. With a `refresh_token` from an earlier OAuth2 login, the refresh grant is
    /// tried first and the client-credentials grant is used if the server refuses it. The
    /// outcome carries the refresh token to present next time: a new one, or the one presented.
    ///
    /// # Errors
    /// A [`LoginError`] of one of the three classes. Cancel-safe: dropping the future abandons
    /// the request and nothing has been written anywhere.
    pub async fn login(&self, refresh_token: Option<&Secret>) -> Result<LoginOutcome, LoginError> {
        if let (Some(refresh), Some(_)) = (refresh_token, &self.spec.refresh) {
            match self.exchange(&self.refresh_request(refresh)).await {
                Ok(mut outcome) => {
                    outcome.refreshed = true;
                    // A reply without a new refresh token leaves the one presented in force
                    // (RFC 6749 §6).
                    outcome.refresh_token.get_or_insert_with(|| refresh.clone());
                    return Ok(outcome);
                }
                Err(error) if error.class == ErrorClass::Rejected => {
                    tracing::info!(
                        account = %self.account,
                        "refresh token refused, logging in with client credentials"
                    );
                }
                Err(error) => return Err(error),
            }
        }
        self.exchange(&self.spec.request).await
    }

    fn refresh_request(&self, refresh: &Secret) -> RequestSpec {
        let mut request = self.spec.request.clone();
        let refresh_spec = self.spec.refresh.as_ref();
        request.fields = vec![
            (
                "grant_type".to_string(),
                FieldValue::Plain("refresh_token".to_string()),
            ),
            (
                "refresh_token".to_string(),
                FieldValue::Secret(SecretSource::Literal(refresh.clone())),
            ),
        ];
        if let Some(refresh_spec) = refresh_spec {
            request
                .fields
                .extend(refresh_spec.client_fields.iter().cloned());
            request.basic_auth = refresh_spec.basic_auth.clone();
        }
        request
    }

    fn error(&self, class: ErrorClass, status: Option<u16>, message: String) -> LoginError {
        LoginError {
            account: self.account.clone(),
            class,
            status,
            retry_after: None,
            message,
        }
    }

    async fn exchange(&self, request: &RequestSpec) -> Result<LoginOutcome, LoginError> {
        // Reading secret files is bounded (regular files of at most 64 KiB), but the file
        // system under them may hang.
        let built = crate::input::may_block(|| request::build(request))
            .map_err(|error| self.error(error.class(), None, error.to_string()))?;
        let BuiltRequest {
            method,
            url,
            headers,
            mut body,
            sent_secrets,
        } = built;
        let host = url.host_str().unwrap_or("?").to_string();
        tracing::debug!(account = %self.account, %method, url = %url, "sending login request");
        let sent_at = Timestamp::now();
        let started = std::time::Instant::now();
        let response = self
            .client
            .request(method, url)
            .headers(headers)
            // Moved, not copied: what reqwest and hyper do with it from here (their buffers, the
            // TLS layer) is not zeroized.
            .body(std::mem::take(&mut *body))
            .send()
            .await
            .map_err(|error| self.transport_error(&host, error))?;
        let status = response.status();
        let reply_headers = response.headers().clone();
        let reply_body = self.read_capped(response, status).await?;
        let latency = started.elapsed();
        let received_at = Timestamp::now();
        tracing::debug!(
            account = %self.account,
            status = status.as_u16(),
            bytes = reply_body.len(),
            latency_ms = latency.as_millis() as u64,
            "login reply received"
        );
        let reply = Reply {
            status,
            headers: &reply_headers,
            body: &reply_body,
            scrubber: scrub::Scrubber::new(&sent_secrets),
        };
        if !status.is_success() {
            return Err(self.status_error(&reply, received_at));
        }
        let (token, refresh_token, resolved) = self.parse_success(&reply, sent_at, received_at)?;
        Ok(LoginOutcome {
            token,
            refresh_token,
            expiry_source: resolved.source,
            clamped: resolved.clamped,
            refreshed: false,
            latency,
        })
    }

    fn transport_error(&self, host: &str, error: reqwest::Error) -> LoginError {
        let error = error.without_url();
        let what = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "cannot connect"
        } else {
            "request failed"
        };
        self.error(
            ErrorClass::Transient,
            None,
            format!("{what} ({host}): {}", http::error_chain(&error)),
        )
    }

    /// Reads the reply body, refusing it as soon as it grows past the cap so that a hostile or
    /// broken server cannot make the daemon buffer without bound.
    async fn read_capped(
        &self,
        mut response: reqwest::Response,
        status: StatusCode,
    ) -> Result<Zeroizing<Vec<u8>>, LoginError> {
        let status_code = Some(status.as_u16());
        if response
            .content_length()
            .is_some_and(|length| length > self.max_reply_bytes as u64)
        {
            return Err(self.oversized(status_code));
        }
        // Sized for the announced length when there is one; growing wipes what it leaves.
        let expected = response
            .content_length()
            .map_or(8 * 1024, |length| usize::try_from(length).unwrap_or(0));
        let mut body = Zeroizing::new(Vec::with_capacity(expected.min(self.max_reply_bytes)));
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.max_reply_bytes {
                        return Err(self.oversized(status_code));
                    }
                    crate::secret::extend_zeroizing(&mut body, &chunk);
                }
                Ok(None) => return Ok(body),
                Err(error) => {
                    let class = if error.is_timeout() || error.is_body() || error.is_request() {
                        ErrorClass::Transient
                    } else {
                        ErrorClass::Protocol
                    };
                    return Err(self.error(
                        class,
                        status_code,
                        format!(
                            "HTTP {}: reading the reply failed: {}",
                            status.as_u16(),
                            http::error_chain(&error.without_url())
                        ),
                    ));
                }
            }
        }
    }

    fn oversized(&self, status: Option<u16>) -> LoginError {
        self.error(
            ErrorClass::Protocol,
            status,
            format!("the reply is larger than {} bytes", self.max_reply_bytes),
        )
    }

    fn status_error(&self, reply: &Reply<'_>, now: Timestamp) -> LoginError {
        let code = reply.status.as_u16();
        // Only the arms that show it pay for examining the body.
        let detail = || reply.error_detail();
        let (class, text) = match code {
            300..=399 => {
                let target = reply
                    .headers
                    .get(LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|location| url::Url::parse(location).ok())
                    .and_then(|location| location.host_str().map(|host| reply.quote(host)))
                    .map_or_else(|| "elsewhere".to_string(), |host| format!("to {host}"));
                (
                    ErrorClass::Protocol,
                    format!(
                        "HTTP {code}: the token endpoint redirects {target}; redirects are never \
                         followed on a login because they would send the credentials on"
                    ),
                )
            }
            401 | 403 => (ErrorClass::Rejected, format!("HTTP {code}: {}", detail())),
            400 => (ErrorClass::Rejected, format!("HTTP {code}: {}", detail())),
            408 | 425 | 429 | 500..=599 => {
                (ErrorClass::Transient, format!("HTTP {code}: {}", detail()))
            }
            _ => (ErrorClass::Protocol, format!("HTTP {code}: {}", detail())),
        };
        let mut error = self.error(class, Some(code), text);
        if class == ErrorClass::Transient {
            // A date is on the server's clock: measured from the reply's `Date` when it has one,
            // so a server whose clock is an hour ahead does not park the account for an hour.
            let server_now = reply.server_date().unwrap_or(now);
            error.retry_after = reply
                .headers
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| {
                    expiry::parse_retry_after(value, server_now, crate::schedule::MAX_RETRY_AFTER)
                });
        }
        error
    }

    fn parse_success(
        &self,
        reply: &Reply<'_>,
        sent_at: Timestamp,
        received_at: Timestamp,
    ) -> Result<(Token, Option<Secret>, expiry::Resolved), LoginError> {
        let code = reply.status.as_u16();
        let protocol = |message: String| {
            self.error(
                ErrorClass::Protocol,
                Some(code),
                format!("HTTP {code}: {message}"),
            )
        };
        if reply.body.iter().all(u8::is_ascii_whitespace) {
            return Err(protocol("the reply body is empty".to_string()));
        }
        let json = match crate::secret::ZeroizingJson::parse(reply.body) {
            Ok(json) => json,
            Err(_) if reply.looks_like_html() => {
                return Err(protocol(format!(
                    "an HTML page instead of JSON (a proxy or captive portal?): {}",
                    reply.excerpt()
                )));
            }
            Err(error) => {
                // No excerpt: a broken success reply may well hold the token itself.
                return Err(protocol(format!(
                    "the reply is not valid JSON ({error}; {} bytes)",
                    reply.body.len()
                )));
            }
        };
        let reply_spec = &self.spec.reply;
        let found = reply_spec
            .token
            .iter()
            .find_map(|pointer| json.pointer(pointer).map(|value| (pointer, value)));
        let (pointer, value) = match found {
            Some(found) => found,
            None => {
                if let Some(reason) = vendor_rejection(&json) {
                    return Err(self.error(
                        ErrorClass::Rejected,
                        Some(code),
                        format!("HTTP {code} without a token: {}", reply.quote(&reason)),
                    ));
                }
                return Err(protocol(format!(
                    "no token at {} in the reply ({})",
                    reply_spec.token.join(" or "),
                    reply.quote(&describe_keys(&json))
                )));
            }
        };
        let Some(text) = value.as_str() else {
            return Err(protocol(format!(
                "the token at {pointer} is {}, not a string",
                expiry::json_type(value)
            )));
        };
        let value = crate::token::TokenValue::new(Secret::new(text.to_string()))
            .map_err(|error| protocol(format!("the token at {pointer} is refused: {error}")))?;

        let bad_expiry = |field: &str, error: expiry::ExpiryError| {
            // The error quotes the offending expiry text, which comes from the reply.
            protocol(format!(
                "bad expiry at {field}: {}",
                reply.quote(&error.to_string())
            ))
        };
        let mut signals = expiry::Signals {
            fixed_lifetime: reply_spec.fixed_lifetime,
            server_date: reply.server_date(),
            ..expiry::Signals::default()
        };
        if let Some(field) = &reply_spec.expires_in
            && let Some(raw) = json.pointer(field).filter(|raw| !raw.is_null())
        {
            signals.expires_in =
                Some(expiry::parse_expires_in(raw).map_err(|error| bad_expiry(field, error))?);
        }
        if let Some(field) = &reply_spec.expires_at
            && let Some(raw) = json.pointer(field).filter(|raw| !raw.is_null())
        {
            signals.expires_at =
                Some(expiry::parse_absolute(raw).map_err(|error| bad_expiry(field, error))?);
        }
        if reply_spec.jwt_exp {
            signals.jwt_exp = expiry::jwt_exp(value.expose())
                .map_err(|error| bad_expiry("the JWT exp claim", error))?;
        }
        let resolved = expiry::resolve(&signals, sent_at, received_at, self.max_lifetime)
            .map_err(|error| protocol(format!("no usable expiry: {error}")))?;
        let token = Token::with_value(value, sent_at, resolved.expires_at)
            .map_err(|error| protocol(error.to_string()))?;

        if reply_spec.check_token_type
            && let Some(kind) = json.get("token_type").and_then(|kind| kind.as_str())
            && !kind.eq_ignore_ascii_case("bearer")
        {
            tracing::warn!(
                account = %self.account,
                token_type = %reply.quote(&kind.chars().take(32).collect::<String>()),
                "the server issued a token_type other than Bearer; writing it as a bearer token"
            );
        }
        let refresh_token = reply_spec
            .refresh_token
            .as_ref()
            .and_then(|pointer| json.pointer(pointer))
            .and_then(|value| value.as_str())
            .filter(|text| !text.is_empty())
            .map(|text| Secret::new(text.to_string()));
        Ok((token, refresh_token, resolved))
    }
}

/// A reply as received, for classification.
struct Reply<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
    body: &'a [u8],
    /// Built once per reply from the secrets the request sent.
    scrubber: scrub::Scrubber,
}

impl Reply<'_> {
    /// The reply's `Date`: the server's clock when it answered.
    fn server_date(&self) -> Option<Timestamp> {
        self.headers
            .get(DATE)
            .and_then(|value| value.to_str().ok())
            .and_then(expiry::parse_http_date)
    }

    fn looks_like_html(&self) -> bool {
        let content_type_html = self
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.to_ascii_lowercase().contains("html"));
        let starts_with_tag = self
            .body
            .iter()
            .find(|byte| !byte.is_ascii_whitespace())
            .is_some_and(|byte| *byte == b'<');
        content_type_html || starts_with_tag
    }

    /// The reason a non-success reply gives, from the usual JSON error members, else an excerpt.
    fn error_detail(&self) -> String {
        if let Ok(json) = crate::secret::ZeroizingJson::parse(self.body) {
            let mut parts = Vec::new();
            for pointer in ["/error", "/error/message", "/error_description", "/message"] {
                if let Some(text) = json.pointer(pointer).and_then(|value| value.as_str()) {
                    parts.push(text.to_string());
                }
            }
            if !parts.is_empty() {
                let quoted = self.quote(&parts.join(": "));
                // A registered code still says why, when the text around it is withheld.
                if quoted == scrub::WITHHELD
                    && let Some(code) = json
                        .pointer("/error")
                        .and_then(|value| value.as_str())
                        .and_then(|code| self.scrubber.registered_code(code))
                {
                    return format!("{code}: {quoted}");
                }
                return quoted;
            }
        }
        if self.body.is_empty() {
            return "empty body".to_string();
        }
        self.excerpt()
    }

    fn excerpt(&self) -> String {
        self.quote(&String::from_utf8_lossy(self.body))
    }

    /// Any text taken from the reply, made safe to quote (see [`scrub::quote`]).
    fn quote(&self, text: &str) -> String {
        self.scrubber.quote(text)
    }
}

/// A 2xx reply without a token that still says the credentials were refused: an OAuth2 error
/// code, or ONLYOFFICE's `statusCode` 401/403 inside the body.
fn vendor_rejection(json: &serde_json::Value) -> Option<String> {
    if let Some(code) = json.get("error").and_then(|value| value.as_str())
        && REJECTING_CODES.contains(&code)
    {
        return Some(code.to_string());
    }
    let status = json.get("statusCode").and_then(|value| value.as_u64());
    if let Some(status @ (401 | 403)) = status {
        return Some(format!("statusCode {status} in the body"));
    }
    None
}

/// Names the top-level keys of a reply (never its values) to help locate a misplaced token.
fn describe_keys(json: &serde_json::Value) -> String {
    match json.as_object() {
        Some(object) if object.is_empty() => "an empty object".to_string(),
        Some(object) => {
            let keys: Vec<String> = object
                .keys()
                .take(12)
                .map(|key| key.chars().take(40).collect())
                .collect();
            format!("keys: {}", keys.join(", "))
        }
        None => format!("the reply is {}", expiry::json_type(json)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_rejections() {
        let cases = [
            (serde_json::json!({"error": "invalid_client"}), true),
            (serde_json::json!({"error": "server_error"}), false),
            (serde_json::json!({"status": 1, "statusCode": 401}), true),
            (serde_json::json!({"statusCode": 200}), false),
            (serde_json::json!({}), false),
        ];
        for (json, rejected) in cases {
            assert_eq!(vendor_rejection(&json).is_some(), rejected, "{json}");
        }
    }

    #[test]
    fn describe_keys_never_shows_values() {
        let json = serde_json::json!({"tokn": "canary-value-77", "expires_in": 5});
        let text = describe_keys(&json);
        assert!(
            text.contains("tokn") && text.contains("expires_in"),
            "{text}"
        );
        assert!(!text.contains("canary-value-77"));
    }
}
