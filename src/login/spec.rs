//! What a login is, as data: the request to send and where the reply keeps the token and expiry.
//!
//! A preset is nothing but a prefilled [`LoginSpec`]; the generic `[accounts.X.request]` table
//! fills one by hand. Invariant: a spec holds secret *sources*, never secret values, so it can be
//! printed in a plan and compared across reloads without exposing anything.

use std::time::Duration;

use jiff::SignedDuration;
use reqwest::Method;
use reqwest::header::HeaderName;
use url::Url;

pub use super::assertion::{Assertion, SigningAlg};
use crate::secret::SecretSource;

/// One value in a request: either plain configuration or a secret read at login time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldValue {
    /// Not secret (a grant type, a user name written in the config): may be shown in a plan.
    Plain(String),
    /// Read from its source at every login; shown only as its source.
    Secret(SecretSource),
    /// A client assertion, signed or read at every login ([`Assertion`]); shown only as its
    /// method and source.
    Assertion(Assertion),
}

impl FieldValue {
    /// How the value is shown in a plan: plain values in full, secrets by source only.
    pub fn describe(&self) -> String {
        match self {
            FieldValue::Plain(value) => format!("{value:?}"),
            FieldValue::Secret(source) => format!("<{}>", source.describe()),
            FieldValue::Assertion(assertion) => assertion.describe(),
        }
    }

    /// The secret source the value is read or made from, if any.
    pub fn source(&self) -> Option<&SecretSource> {
        match self {
            FieldValue::Plain(_) => None,
            FieldValue::Secret(source) => Some(source),
            FieldValue::Assertion(assertion) => Some(assertion.source()),
        }
    }
}

/// How the request body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-www-form-urlencoded`
    Form,
    /// `application/json`: an object whose members are all strings.
    Json,
    /// No body.
    None,
}

/// How a client authenticates with HTTP Basic (RFC 6749 §2.3.1 `client_secret_basic`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuth {
    pub user: FieldValue,
    pub password: FieldValue,
}

/// The request a login sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestSpec {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(HeaderName, FieldValue)>,
    pub encoding: Encoding,
    /// Body members in the order they are sent.
    pub fields: Vec<(String, FieldValue)>,
    pub basic_auth: Option<BasicAuth>,
}

/// Where the reply keeps the token and how its expiry is derived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplySpec {
    /// JSON pointers (RFC 6901) to the token string, tried in order.
    pub token: Vec<String>,
    /// JSON pointer to a lifetime in seconds from now.
    pub expires_in: Option<String>,
    /// JSON pointer to an absolute expiry (timestamp text or Unix seconds).
    pub expires_at: Option<String>,
    /// Read the `exp` claim when the token is a JWT.
    pub jwt_exp: bool,
    /// Used only when the reply gives no expiry at all.
    pub fixed_lifetime: Option<SignedDuration>,
    /// JSON pointer to a refresh token (OAuth2 only).
    pub refresh_token: Option<String>,
    /// Warn when the reply's `token_type` is present and not `Bearer` (OAuth2 only).
    pub check_token_type: bool,
}

/// The OAuth2 refresh_token grant (RFC 6749 §6), used when the server issued a refresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshSpec {
    /// Client authentication and extra members repeated on the refresh request.
    pub client_fields: Vec<(String, FieldValue)>,
    pub basic_auth: Option<BasicAuth>,
}

/// Everything one login needs, minus the HTTP client settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginSpec {
    pub request: RequestSpec,
    pub reply: ReplySpec,
    pub refresh: Option<RefreshSpec>,
    /// The `Authorization` scheme consumers use with the token: `Some("Bearer")`, or `None` for a
    /// bare token (ONLYOFFICE).
    pub scheme: Option<String>,
}

impl LoginSpec {
    /// Every secret source the login reads, for `check` and for watching files.
    pub fn secret_sources(&self) -> Vec<(&str, &SecretSource)> {
        let mut sources = Vec::new();
        for (name, value) in &self.request.fields {
            if let Some(source) = value.source() {
                sources.push((name.as_str(), source));
            }
        }
        for (name, value) in &self.request.headers {
            if let Some(source) = value.source() {
                sources.push((name.as_str(), source));
            }
        }
        if let Some(basic) = &self.request.basic_auth {
            for (name, value) in [
                ("basic user", &basic.user),
                ("basic password", &basic.password),
            ] {
                if let Some(source) = value.source() {
                    sources.push((name, source));
                }
            }
        }
        sources
    }
}

impl LoginSpec {
    /// Feeds an unambiguous encoding of what this login does (method, URL, headers, body fields,
    /// client authentication, reply shape, refresh grant, scheme) to `feed`. Secrets appear as
    /// their *sources* only (`file /path`, `env NAME`, `literal`), never as values, so two
    /// logins that differ only in a secret's value encode the same: the token one of them got
    /// stays usable for the other. Every item is length-prefixed, so no two specs encode alike;
    /// every struct is destructured in full, so a new field cannot be forgotten here.
    pub fn canonical(&self, feed: &mut dyn FnMut(&[u8])) {
        let mut out = Canonical(feed);
        let LoginSpec {
            request,
            reply,
            refresh,
            scheme,
        } = self;
        let RequestSpec {
            method,
            url,
            headers,
            encoding,
            fields,
            basic_auth,
        } = request;
        out.text("request");
        out.text(method.as_str());
        out.text(url.as_str());
        out.count(headers.len());
        for (name, value) in headers {
            out.text(name.as_str());
            out.field(value);
        }
        out.text(match encoding {
            Encoding::Form => "form",
            Encoding::Json => "json",
            Encoding::None => "none",
        });
        out.fields(fields);
        out.basic(basic_auth.as_ref());
        let ReplySpec {
            token,
            expires_in,
            expires_at,
            jwt_exp,
            fixed_lifetime,
            refresh_token,
            check_token_type,
        } = reply;
        out.text("reply");
        out.count(token.len());
        for pointer in token {
            out.text(pointer);
        }
        out.optional(expires_in.as_deref());
        out.optional(expires_at.as_deref());
        out.flag(*jwt_exp);
        out.optional(
            fixed_lifetime
                .map(|lifetime| format!("{}.{}", lifetime.as_secs(), lifetime.subsec_nanos()))
                .as_deref(),
        );
        out.optional(refresh_token.as_deref());
        out.flag(*check_token_type);
        match refresh {
            None => out.text("no refresh"),
            Some(RefreshSpec {
                client_fields,
                basic_auth,
            }) => {
                out.text("refresh");
                out.fields(client_fields);
                out.basic(basic_auth.as_ref());
            }
        }
        out.optional(scheme.as_deref());
    }
}

/// The length-prefixed encoder behind [`LoginSpec::canonical`].
struct Canonical<'a>(&'a mut dyn FnMut(&[u8]));

impl Canonical<'_> {
    fn text(&mut self, text: &str) {
        self.count(text.len());
        (self.0)(text.as_bytes());
    }

    fn count(&mut self, count: usize) {
        (self.0)(&(count as u64).to_le_bytes());
    }

    fn flag(&mut self, flag: bool) {
        (self.0)(&[u8::from(flag)]);
    }

    fn optional(&mut self, text: Option<&str>) {
        match text {
            None => self.flag(false),
            Some(text) => {
                self.flag(true);
                self.text(text);
            }
        }
    }

    fn field(&mut self, value: &FieldValue) {
        match value {
            FieldValue::Plain(text) => {
                self.text("plain");
                self.text(text);
            }
            FieldValue::Secret(source) => self.source(source),
            FieldValue::Assertion(Assertion::Signed {
                key,
                alg,
                key_id,
                audience,
            }) => {
                self.text("signed assertion");
                self.source(key);
                self.optional(alg.map(SigningAlg::name));
                self.optional(key_id.as_deref());
                self.text(audience);
            }
            FieldValue::Assertion(Assertion::Read(source)) => {
                self.text("read assertion");
                self.source(source);
            }
        }
    }

    fn source(&mut self, source: &SecretSource) {
        match source {
            SecretSource::File(path) => {
                self.text("file");
                self.count(path.as_os_str().len());
                (self.0)(path.as_os_str().as_encoded_bytes());
            }
            SecretSource::Env(name) => {
                self.text("env");
                self.text(name);
            }
            SecretSource::Credential(name) => {
                self.text("credential");
                self.text(name);
            }
            SecretSource::Literal(_) => self.text("literal"),
        }
    }

    fn fields(&mut self, fields: &[(String, FieldValue)]) {
        self.count(fields.len());
        for (name, value) in fields {
            self.text(name);
            self.field(value);
        }
    }

    fn basic(&mut self, basic: Option<&BasicAuth>) {
        match basic {
            None => self.flag(false),
            Some(BasicAuth { user, password }) => {
                self.flag(true);
                self.field(user);
                self.field(password);
            }
        }
    }
}

/// HTTP client settings of one account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    /// Limit on the whole exchange: connect, send, and read the reply.
    pub timeout: Duration,
    /// Replies longer than this are refused while they stream in.
    pub max_reply_bytes: usize,
    /// Extra trusted roots (PEM), merged with the system's.
    pub ca_file: Option<std::path::PathBuf>,
    pub proxy: ProxySetting,
    /// A client certificate for the login connection (mutual TLS, RFC 8705).
    pub client_identity: Option<ClientIdentity>,
}

/// A client certificate and its private key, each a PEM file, read when the client is built and
/// again whenever either changes (the account then restarts with a new client).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    /// The certificate, then any intermediates.
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Whether and how a proxy is used. Proxy environment variables are ignored unless asked for.
/// `Debug` shows a proxy URL without its user name and password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum ProxySetting {
    None,
    /// Honour `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`.
    Environment,
    /// Send every login through this proxy.
    Url(Url),
}

impl std::fmt::Debug for ProxySetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxySetting::None => f.write_str("None"),
            ProxySetting::Environment => f.write_str("Environment"),
            ProxySetting::Url(url) => write!(
                f,
                "Url({}://{}:{})",
                url.scheme(),
                url.host_str().unwrap_or("?"),
                url.port_or_known_default().unwrap_or(0)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_debug_hides_credentials() {
        let proxy =
            ProxySetting::Url(Url::parse("http://user:canary-pw@proxy.internal:3128").unwrap());
        let shown = format!("{proxy:?}");
        assert_eq!(shown, "Url(http://proxy.internal:3128)");
    }
}
