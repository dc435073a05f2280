//! Every vendor's login route, as its documentation describes it: the request it checks (content
//! type, fields, credentials, RFC 6749 client authentication) and the exact reply it gives. In
//! the order of `login/preset.rs`.

use super::wire::*;
use super::*;

use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, PRAGMA, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use jiff::tz::Offset;
use serde_json::Value;

/// Panaya: form `username` + `token` → 200 `{"token"}`. The seed shows only the `token` field.
pub(super) fn panaya(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    if !has_media_type(headers, "application/x-www-form-urlencoded") {
        return unsupported_media_type();
    }
    let form = FormBody::parse(body);
    let mut inner = shared.lock();
    let creds = &inner.credentials;
    if form.first("username") != Some(creds.panaya_username.as_str())
        || form.first("token") != Some(creds.panaya_token.as_str())
    {
        return json_response(
            StatusCode::UNAUTHORIZED,
            object(&[("error", string("invalid credentials"))]),
        );
    }
    let now = Timestamp::now();
    let token = inner.fresh_token();
    inner.remember(Route::Panaya, &token, shared.expiry(now), now);
    json_response(StatusCode::OK, object(&[("token", string(&token))]))
}

/// Papaya Global: JSON `api_key` + `client_secret` (+ `token_name`) → 201 with `valid_until`, a
/// JWT and the token name.
pub(super) fn papaya(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let invalid = || {
        json_response(
            StatusCode::UNAUTHORIZED,
            object(&[("error", string("Invalid request"))]),
        )
    };
    if !has_media_type(headers, "application/json") {
        return unsupported_media_type();
    }
    let Some(json) = parse_json_object(body) else {
        return invalid();
    };
    let token_name = match json.get("token_name") {
        None | Some(Value::Null) => random_uuid(),
        Some(Value::String(name)) => name.clone(),
        Some(_) => return invalid(),
    };
    let mut inner = shared.lock();
    let creds = &inner.credentials;
    if json_str(&json, "api_key") != Some(creds.papaya_api_key.as_str())
        || json_str(&json, "client_secret") != Some(creds.papaya_client_secret.as_str())
    {
        return invalid();
    }
    let now = Timestamp::now();
    let expiry = shared.expiry(now);
    let token = loop {
        let token = papaya_jwt(now, expiry);
        if !inner.access_tokens.contains_key(&token) {
            break token;
        }
    };
    inner.remember(Route::Papaya, &token, expiry, now);
    // The seed's `2024-07-11T07:48Z`: UTC, minute resolution, seconds dropped (not rounded).
    let utc = Offset::UTC.to_datetime(expiry);
    let valid_until = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}Z",
        utc.year(),
        utc.month(),
        utc.day(),
        utc.hour(),
        utc.minute()
    );
    json_response(
        StatusCode::CREATED,
        object(&[
            ("valid_until", string(&valid_until)),
            ("token", string(&token)),
            ("token_name", string(&token_name)),
        ]),
    )
}

/// An unsigned-in-spirit JWT shaped like Papaya's: RS256 header, `iat`/`exp`/`sub` claims, and a
/// random signature part (nobody verifies it; a client must not need to).
pub(super) fn papaya_jwt(now: Timestamp, expiry: Timestamp) -> String {
    let header = object(&[("typ", string("JWT")), ("alg", string("RS256"))]);
    let claims = object(&[
        ("iat", now.as_second().to_string()),
        ("exp", expiry.as_second().to_string()),
        ("sub", string("access")),
    ]);
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims),
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    )
}

/// Apinizer: client credentials form with `Accept: application/json` → 200 OAuth2-style reply.
pub(super) fn apinizer(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    // Spring answers 406 when it cannot produce what `Accept` asks for; the docs require JSON.
    if !accepts_json(headers) {
        return json_response(
            StatusCode::NOT_ACCEPTABLE,
            object(&[("error", string("not acceptable"))]),
        );
    }
    if !has_media_type(headers, "application/x-www-form-urlencoded") {
        return unsupported_media_type();
    }
    let form = FormBody::parse(body);
    match form.first("grant_type") {
        Some("client_credentials") => {}
        Some(_) => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", None),
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some("grant_type is required"),
            );
        }
    }
    let mut inner = shared.lock();
    let creds = &inner.credentials;
    if form.first("client_id") != Some(creds.apinizer_client_id.as_str())
        || form.first("client_secret") != Some(creds.apinizer_client_secret.as_str())
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            Some("Bad credentials"),
        );
    }
    let now = Timestamp::now();
    let token = inner.fresh_token();
    inner.remember(Route::Apinizer, &token, shared.expiry(now), now);
    json_response(
        StatusCode::OK,
        object(&[
            ("access_token", string(&token)),
            ("token_type", string("Bearer")),
            ("expires_in", shared.expires_in().to_string()),
        ]),
    )
}

/// Patchworks: JSON `email` + `password` → 200 bearer reply (or `{"token"}` alone).
pub(super) fn patchworks(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    if !has_media_type(headers, "application/json") {
        return unsupported_media_type();
    }
    let Some(json) = parse_json_object(body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            object(&[("message", string("Malformed JSON."))]),
        );
    };
    // A Laravel backend validates required fields before checking them: 422 with per-field errors.
    let missing: Vec<&str> = ["email", "password"]
        .into_iter()
        .filter(|field| json_str(&json, field).is_none_or(str::is_empty))
        .collect();
    if let Some(first) = missing.first() {
        let errors: Vec<(&str, String)> = missing
            .iter()
            .map(|field| {
                let text = format!("The {field} field is required.");
                (*field, format!("[{}]", string(&text)))
            })
            .collect();
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            object(&[
                (
                    "message",
                    string(&format!("The {first} field is required.")),
                ),
                ("errors", object(&errors)),
            ]),
        );
    }
    let mut inner = shared.lock();
    let creds = &inner.credentials;
    if json_str(&json, "email") != Some(creds.patchworks_email.as_str())
        || json_str(&json, "password") != Some(creds.patchworks_password.as_str())
    {
        return json_response(
            StatusCode::UNAUTHORIZED,
            object(&[("message", string("Unauthenticated."))]),
        );
    }
    let now = Timestamp::now();
    let token = inner.fresh_token();
    inner.remember(Route::Patchworks, &token, shared.expiry(now), now);
    let reply = if shared.patchworks_token_only {
        object(&[("token", string(&token))])
    } else {
        object(&[
            ("access_token", string(&token)),
            ("token_type", string("bearer")),
            ("expires_in", shared.expires_in().to_string()),
        ])
    };
    json_response(StatusCode::OK, reply)
}

/// ONLYOFFICE: JSON `userName` + `password` → 201 with the token and expiry nested in `response`.
pub(super) fn onlyoffice(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    if !has_media_type(headers, "application/json") {
        return unsupported_media_type();
    }
    let json = parse_json_object(body).unwrap_or_default();
    let mut inner = shared.lock();
    let creds = &inner.credentials;
    if json_str(&json, "userName") != Some(creds.onlyoffice_username.as_str())
        || json_str(&json, "password") != Some(creds.onlyoffice_password.as_str())
    {
        return onlyoffice_response(
            StatusCode::UNAUTHORIZED,
            object(&[
                (
                    "error",
                    object(&[("message", string("User authentication failed"))]),
                ),
                ("status", "1".to_owned()),
                ("statusCode", "401".to_owned()),
            ]),
        );
    }
    let now = Timestamp::now();
    let expiry = shared.expiry(now);
    let token = inner.fresh_token();
    inner.remember(Route::OnlyOffice, &token, expiry, now);
    // The seed's `2010-07-07T17:06:03.5845502+03:00`: the server's local time (a fixed +03:00
    // here, so clients must honour the offset) with .NET's 7 fraction digits.
    let local = Offset::constant(3).to_datetime(expiry);
    let expires = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}+03:00",
        local.year(),
        local.month(),
        local.day(),
        local.hour(),
        local.minute(),
        local.second(),
        local.subsec_nanosecond() / 100
    );
    onlyoffice_response(
        StatusCode::CREATED,
        object(&[
            ("count", "1".to_owned()),
            (
                "response",
                object(&[("token", string(&token)), ("expires", string(&expires))]),
            ),
            ("status", "0".to_owned()),
            ("statusCode", "201".to_owned()),
        ]),
    )
}

pub(super) fn onlyoffice_response(status: StatusCode, body: String) -> Response {
    response(status, "application/json; charset=utf-8", body.into_bytes())
}

/// A standard OAuth2 token endpoint: RFC 6749 §4.4 client credentials and §6 refresh, with client
/// authentication by HTTP Basic or body parameters (§2.3.1), replies per §5.1/§5.2.
pub(super) fn oauth2(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    if !has_media_type(headers, "application/x-www-form-urlencoded") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("the body must be application/x-www-form-urlencoded"),
        );
    }
    let form = FormBody::parse(body);
    // §3.2: parameters must not be included more than once.
    if let Some(name) = form.repeated() {
        let text = format!("{name} is repeated");
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", Some(&text));
    }
    let body_id = form.first("client_id");
    let body_secret = form.first("client_secret");
    let (client_id, client_secret, basic) = match headers.get(AUTHORIZATION) {
        Some(value) => {
            if body_secret.is_some() {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    Some("more than one client authentication method"),
                );
            }
            let Some((id, secret)) = decode_basic(value.as_bytes()) else {
                return invalid_client(true);
            };
            // §3.2.1 lets a client name itself in the body too, but it must be the same client.
            if body_id.is_some_and(|body_id| body_id != id) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    Some("client_id differs from the authenticated client"),
                );
            }
            (id, secret, true)
        }
        None => match (body_id, body_secret) {
            (Some(id), Some(secret)) => (id.to_owned(), secret.to_owned(), false),
            _ => return invalid_client(false),
        },
    };

    let mut inner = shared.lock();
    if client_id != inner.credentials.oauth2_client_id
        || client_secret != inner.credentials.oauth2_client_secret
    {
        return invalid_client(basic);
    }
    let (scope, with_refresh) = match form.first("grant_type") {
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some("grant_type is required"),
            );
        }
        Some("client_credentials") => (
            form.first("scope").map(str::to_owned),
            shared.issue_refresh_tokens,
        ),
        Some("refresh_token") => {
            let Some(presented) = form.first("refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    Some("refresh_token is required"),
                );
            };
            let granted = match inner.refresh_tokens.get(presented) {
                Some(grant) if grant.client_id == client_id => grant.scope.clone(),
                _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", None),
            };
            // §6: a narrower scope may be asked for, never a wider one.
            let scope = match form.first("scope") {
                None => granted,
                Some(asked) => {
                    let allowed = granted.as_deref().unwrap_or("");
                    if !asked
                        .split(' ')
                        .filter(|s| !s.is_empty())
                        .all(|s| allowed.split(' ').any(|g| g == s))
                    {
                        return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", None);
                    }
                    Some(asked.to_owned())
                }
            };
            // Rotation: the presented token is spent; a new one comes back below.
            inner.refresh_tokens.remove(presented);
            (scope, true)
        }
        Some(_) => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", None),
    };

    let now = Timestamp::now();
    let token = inner.fresh_token();
    inner.remember(Route::OAuth2, &token, shared.expiry(now), now);
    let mut fields = vec![
        ("access_token", string(&token)),
        ("token_type", string("Bearer")),
        ("expires_in", shared.expires_in().to_string()),
    ];
    if with_refresh {
        let refresh = inner.fresh_token();
        fields.push(("refresh_token", string(&refresh)));
        inner.refresh_tokens.insert(
            refresh,
            RefreshGrant {
                client_id,
                scope: scope.clone(),
            },
        );
    }
    if let Some(scope) = &scope {
        fields.push(("scope", string(scope)));
    }
    oauth_response(StatusCode::OK, object(&fields))
}

pub(super) fn invalid_client(basic: bool) -> Response {
    let mut response = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", None);
    // §5.2: a client that tried the Authorization header gets the matching challenge.
    if basic {
        let challenge = format!("Basic realm=\"{REALM}\"");
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
    }
    response
}

pub(super) fn oauth_error(status: StatusCode, error: &str, description: Option<&str>) -> Response {
    let mut fields = vec![("error", string(error))];
    if let Some(description) = description {
        fields.push(("error_description", string(description)));
    }
    oauth_response(status, object(&fields))
}

/// §5.1: token replies must not be cached.
pub(super) fn oauth_response(status: StatusCode, body: String) -> Response {
    let mut response = json_response(status, body);
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
