//! Turning a [`RequestSpec`] into the exact bytes sent: form and JSON bodies, HTTP Basic.
//!
//! Pure apart from reading secret sources. Invariant: secret values live only in the returned
//! [`BuiltRequest`] (body zeroized on drop, secret headers marked sensitive) and never in an error.

use base64::Engine as _;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use url::Url;
use zeroize::Zeroizing;

use super::ErrorClass;
use super::assertion::AssertionError;
use super::spec::{BasicAuth, Encoding, FieldValue, RequestSpec};
use crate::secret::{Secret, SecretError};

/// A request ready to send.
pub struct BuiltRequest {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Zeroizing<Vec<u8>>,
    /// Every secret value that went into the request, so that an error excerpt of the reply can
    /// blank them out if the server echoes them back.
    pub sent_secrets: Vec<Secret>,
}

/// Why a request could not be built. Names the field, never its value.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("secret for `{field}`: {source}")]
    Secret {
        field: String,
        #[source]
        source: SecretError,
    },
    #[error("the value of header `{field}` contains characters not allowed in a header")]
    BadHeaderValue { field: String },
    #[error("`{field}`: {source}")]
    Assertion {
        field: String,
        #[source]
        source: AssertionError,
    },
}

impl BuildError {
    /// How the login that could not be sent counts: a missing or bad secret is the credentials'
    /// fault (retried when they change); an expired assertion file is about to be renewed.
    pub fn class(&self) -> ErrorClass {
        match self {
            BuildError::Assertion { source, .. } if source.is_transient() => ErrorClass::Transient,
            _ => ErrorClass::Rejected,
        }
    }
}

struct Resolver {
    sent_secrets: Vec<Secret>,
    /// The request's `client_id`, which a signed assertion names as its issuer and subject.
    client_id: Option<Secret>,
}

/// Field names that carry who is logging in rather than a credential (the presets' `username`,
/// `userName`, `email` and `client_id`, and their usual generic spellings). Their values may be
/// read from a secret source, but a server that echoes them back reveals nothing: they are not
/// among the values a reply excerpt is checked against, so that `client_id = "client"` does not
/// withhold every `invalid_client` reply.
fn is_identifier(field: &str) -> bool {
    matches!(
        field.to_ascii_lowercase().as_str(),
        "username" | "user" | "user_name" | "login" | "email" | "client_id" | "clientid"
    )
}

impl Resolver {
    fn resolve(&mut self, field: &str, value: &FieldValue) -> Result<Secret, BuildError> {
        match value {
            FieldValue::Plain(text) => Ok(Secret::new(text.clone())),
            FieldValue::Secret(source) => {
                let secret = source.resolve().map_err(|source| BuildError::Secret {
                    field: field.to_string(),
                    source,
                })?;
                if !is_identifier(field) {
                    self.sent_secrets.push(secret.clone());
                }
                Ok(secret)
            }
            FieldValue::Assertion(assertion) => {
                let client_id = self.client_id.as_ref().map_or("", Secret::expose);
                let made = assertion
                    .make(client_id, jiff::Timestamp::now())
                    .map_err(|source| BuildError::Assertion {
                        field: field.to_string(),
                        source,
                    })?;
                self.sent_secrets.push(made.clone());
                Ok(made)
            }
        }
    }
}

/// Reads the secrets the request needs and encodes it.
///
/// # Errors
/// An unreadable secret source, or a header value that cannot go in a header.
pub fn build(spec: &RequestSpec) -> Result<BuiltRequest, BuildError> {
    let mut resolver = Resolver {
        sent_secrets: Vec::new(),
        client_id: None,
    };
    // The client id comes first: an assertion names it.
    if let Some((_, value)) = spec.fields.iter().find(|(name, _)| name == "client_id") {
        resolver.client_id = Some(resolver.resolve("client_id", value)?);
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &spec.headers {
        let secret_header = !matches!(value, FieldValue::Plain(_));
        let resolved = resolver.resolve(name.as_str(), value)?;
        let mut header =
            HeaderValue::from_str(resolved.expose()).map_err(|_| BuildError::BadHeaderValue {
                field: name.to_string(),
            })?;
        header.set_sensitive(secret_header);
        headers.insert(name.clone(), header);
    }
    if let Some(basic) = &spec.basic_auth {
        headers.insert(AUTHORIZATION, basic_header_value(&mut resolver, basic)?);
    }
    let mut fields = Vec::with_capacity(spec.fields.len());
    for (name, value) in &spec.fields {
        let resolved = match &resolver.client_id {
            // Read once, above.
            Some(client_id) if name == "client_id" => client_id.clone(),
            _ => resolver.resolve(name, value)?,
        };
        fields.push((name.as_str(), resolved));
    }
    let body = match spec.encoding {
        Encoding::Form => {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            form_body(&fields)
        }
        Encoding::Json => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            json_body(&fields)
        }
        Encoding::None => Zeroizing::new(Vec::new()),
    };
    Ok(BuiltRequest {
        method: spec.method.clone(),
        url: spec.url.clone(),
        headers,
        body,
        sent_secrets: resolver.sent_secrets,
    })
}

fn basic_header_value(
    resolver: &mut Resolver,
    basic: &BasicAuth,
) -> Result<HeaderValue, BuildError> {
    let user = resolver.resolve("client_id", &basic.user)?;
    let password = resolver.resolve("client_secret", &basic.password)?;
    let encoded = basic_credentials(user.expose(), password.expose());
    // The encoded form is a secret too: a server that echoes headers must not leak it.
    if let Some(credentials) = encoded.strip_prefix("Basic ") {
        resolver
            .sent_secrets
            .push(Secret::new(credentials.to_string()));
    }
    let mut value = HeaderValue::from_str(&encoded).map_err(|_| BuildError::BadHeaderValue {
        field: "authorization".to_string(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// `Basic base64(urlencode(user) ":" urlencode(password))`: RFC 6749 §2.3.1 requires the
/// form-urlencoding before Base64, so a `:`, `%` or `+` in a secret survives the trip.
pub fn basic_credentials(user: &str, password: &str) -> Zeroizing<String> {
    // Sized up front (percent-encoding at most triples a byte, Base64 takes 4 per 3), so that
    // no reallocation leaves an unwiped copy of the secret.
    let joined_bound = 3 * (user.len() + password.len()) + 1;
    let mut joined = Zeroizing::new(String::with_capacity(joined_bound));
    joined.extend(url::form_urlencoded::byte_serialize(user.as_bytes()));
    joined.push(':');
    joined.extend(url::form_urlencoded::byte_serialize(password.as_bytes()));
    let mut header = Zeroizing::new(String::with_capacity(6 + 4 * joined.len().div_ceil(3)));
    header.push_str("Basic ");
    base64::engine::general_purpose::STANDARD.encode_string(joined.as_bytes(), &mut header);
    header
}

/// `application/x-www-form-urlencoded` body in field order.
fn form_body(fields: &[(&str, Secret)]) -> Zeroizing<Vec<u8>> {
    // Sized up front (percent-encoding at most triples a byte): no reallocation leaves a copy.
    let bound: usize = fields
        .iter()
        .map(|(name, value)| 3 * (name.len() + value.expose().len()) + 2)
        .sum();
    let mut body = Zeroizing::new(String::with_capacity(bound));
    for (index, (name, value)) in fields.iter().enumerate() {
        if index > 0 {
            body.push('&');
        }
        body.extend(url::form_urlencoded::byte_serialize(name.as_bytes()));
        body.push('=');
        body.extend(url::form_urlencoded::byte_serialize(
            value.expose().as_bytes(),
        ));
    }
    Zeroizing::new(std::mem::take(&mut *body).into_bytes())
}

/// A JSON object of string members in field order.
fn json_body(fields: &[(&str, Secret)]) -> Zeroizing<Vec<u8>> {
    // Sized up front (an escape is at most 6 bytes per input byte, `\u00XX`): no reallocation
    // leaves a copy.
    let bound: usize = fields
        .iter()
        .map(|(name, value)| 6 * (name.len() + value.expose().len()) + 6)
        .sum::<usize>()
        + 2;
    let mut body = Zeroizing::new(Vec::with_capacity(bound));
    body.push(b'{');
    for (index, (name, value)) in fields.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        push_json_string(&mut body, name);
        body.push(b':');
        push_json_string(&mut body, value.expose());
    }
    body.push(b'}');
    body
}

/// Appends a JSON string literal. Written out by hand so that the secret is never copied into a
/// `serde_json::Value` that would not be zeroized.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for character in text.chars() {
        match character {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            control if (control as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", control as u32).as_bytes());
            }
            other => {
                let mut buffer = [0u8; 4];
                out.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Header names used by presets, checked at compile time.
pub fn accept_json() -> (HeaderName, FieldValue) {
    (
        reqwest::header::ACCEPT,
        FieldValue::Plain("application/json".to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(value: &str) -> Secret {
        Secret::new(value.to_string())
    }

    #[test]
    fn form_encoding_table() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("a", "b")], "a=b"),
            (
                &[("grant_type", "client_credentials"), ("x", "1")],
                "grant_type=client_credentials&x=1",
            ),
            (&[("p", "a b")], "p=a+b"),
            (&[("p", "a+b")], "p=a%2Bb"),
            (&[("p", "50%:x")], "p=50%25%3Ax"),
            (&[("p", "é")], "p=%C3%A9"),
            (&[("p", "&=?")], "p=%26%3D%3F"),
            (&[("user name", "")], "user+name="),
        ];
        for (fields, expected) in cases {
            let fields: Vec<(&str, Secret)> = fields
                .iter()
                .map(|(name, value)| (*name, secret(value)))
                .collect();
            assert_eq!(
                String::from_utf8(form_body(&fields).to_vec()).unwrap(),
                *expected
            );
        }
    }

    #[test]
    fn json_body_round_trips_awkward_strings() {
        let awkward = "quote\" back\\slash\nnew\u{1}ctl é ✓";
        let fields = vec![("userName", secret("joe")), ("password", secret(awkward))];
        let body = json_body(&fields);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["userName"], "joe");
        assert_eq!(parsed["password"], awkward);
        assert_eq!(parsed.as_object().unwrap().len(), 2);
        assert_eq!(&*json_body(&[]), b"{}");
    }

    #[test]
    fn basic_encodes_before_base64() {
        let cases: &[(&str, &str, &str)] = &[
            ("client", "secret", "client:secret"),
            ("my:id", "p:ss", "my%3Aid:p%3Ass"),
            ("id", "100%+é", "id:100%25%2B%C3%A9"),
            ("id", "a b", "id:a+b"),
        ];
        for (user, password, plain) in cases {
            let header = basic_credentials(user, password);
            let encoded = header.strip_prefix("Basic ").unwrap();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap();
            assert_eq!(String::from_utf8(decoded).unwrap(), *plain);
        }
    }

    #[test]
    fn build_marks_secrets_sensitive_and_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let spec = RequestSpec {
            method: Method::POST,
            url: Url::parse("https://example.test/token").unwrap(),
            headers: vec![(
                HeaderName::from_static("x-api-key"),
                FieldValue::Secret(crate::secret::SecretSource::Literal(secret("k3y"))),
            )],
            encoding: Encoding::Form,
            fields: vec![
                (
                    "grant_type".to_string(),
                    FieldValue::Plain("client_credentials".to_string()),
                ),
                (
                    "client_secret".to_string(),
                    FieldValue::Secret(crate::secret::SecretSource::File(
                        dir.path().join("missing"),
                    )),
                ),
            ],
            basic_auth: None,
        };
        let error = build(&spec).err().expect("missing secret file must fail");
        assert!(error.to_string().contains("client_secret"), "{error}");
        assert!(error.to_string().contains("missing"), "{error}");

        std::fs::write(dir.path().join("missing"), "s3cret\n").unwrap();
        let built = build(&spec).unwrap();
        assert!(built.headers.get("x-api-key").unwrap().is_sensitive());
        assert_eq!(
            &*built.body,
            b"grant_type=client_credentials&client_secret=s3cret"
        );
        assert_eq!(built.sent_secrets.len(), 2);
        assert_eq!(
            built.headers.get(CONTENT_TYPE).unwrap(),
            "application/x-www-form-urlencoded"
        );
    }

    #[test]
    fn identifiers_are_sent_but_not_checked_against_replies() {
        use crate::secret::SecretSource;
        let literal =
            |text: &str| FieldValue::Secret(SecretSource::Literal(Secret::new(text.to_string())));
        let spec = RequestSpec {
            method: Method::POST,
            url: Url::parse("https://idp.example/token").unwrap(),
            headers: vec![],
            encoding: Encoding::Json,
            fields: vec![
                ("email".to_string(), literal("client@example.com")),
                ("password".to_string(), literal("hunter2-canary")),
            ],
            basic_auth: Some(BasicAuth {
                user: literal("client"),
                password: literal("basic-canary"),
            }),
        };
        let built = build(&spec).unwrap();
        let sent: Vec<&str> = built.sent_secrets.iter().map(Secret::expose).collect();
        assert!(
            sent.contains(&"hunter2-canary") && sent.contains(&"basic-canary"),
            "{sent:?}"
        );
        assert!(
            !sent.contains(&"client") && !sent.contains(&"client@example.com"),
            "{sent:?}"
        );
        // The Basic pair's Base64 is checked too, since it carries the password.
        assert_eq!(sent.len(), 3, "{sent:?}");
    }
}
