//! The endpoint's wire helpers: strict form and Basic decoding, media types, JSON bodies and
//! replies in a fixed key order.

use axum::body::Body;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// Decodes an RFC 6749 §2.3.1 Basic credential: base64, split at the first ':', then each half
/// form-urldecoded. `None` for any other scheme or a malformed value.
pub(super) fn decode_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_urldecode(id)?, form_urldecode(secret)?))
}

/// Strict application/x-www-form-urlencoded decoding of one value: '+' is a space, `%XX` a byte,
/// and a '%' not followed by two hex digits is an error (as in Java's URLDecoder), so a secret
/// sent without encoding is refused rather than silently mangled into a different one.
pub(super) fn form_urldecode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let high = char::from(bytes.next()?).to_digit(16)?;
                let low = char::from(bytes.next()?).to_digit(16)?;
                // Two hex digits make at most 0xff.
                out.push(u8::try_from(high * 16 + low).ok()?);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

/// A parsed form body, keeping repeats so the OAuth2 route can refuse them.
pub(super) struct FormBody(Vec<(String, String)>);

impl FormBody {
    pub(super) fn parse(body: &[u8]) -> FormBody {
        FormBody(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub(super) fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn repeated(&self) -> Option<&str> {
        self.0.iter().enumerate().find_map(|(i, (name, _))| {
            self.0[..i]
                .iter()
                .any(|(earlier, _)| earlier == name)
                .then_some(name.as_str())
        })
    }
}

/// Whether the Content-Type's media type (parameters such as charset ignored) is `expected`.
pub(super) fn has_media_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(expected))
}

/// Whether some `Accept` header lists `application/json`.
pub(super) fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|range| range.split(';').next())
        .any(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

pub(super) fn parse_json_object(body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice(body).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

pub(super) fn json_str<'a>(json: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    json.get(key).and_then(Value::as_str)
}

pub(super) fn unsupported_media_type() -> Response {
    json_response(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        object(&[("error", string("unsupported content type"))]),
    )
}

/// A JSON string literal.
pub(super) fn string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// A JSON object from already-encoded values, keys in the given order: the seeds document a key
/// order, and `serde_json::Map` would sort it.
pub(super) fn object(fields: &[(&str, String)]) -> String {
    let members: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("{}:{value}", string(key)))
        .collect();
    format!("{{{}}}", members.join(","))
}

pub(super) fn json_response(status: StatusCode, body: String) -> Response {
    response(status, "application/json", body.into_bytes())
}

pub(super) fn response(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    // Every content type here is a fixed ASCII literal or test-scripted text; an invalid one is
    // left out rather than failing the reply.
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}
