//! A loopback HTTP token endpoint that speaks every seed system's login.
//!
//! `tokenkeeper demo` starts one so a newcomer sees tokens written and rotated without a vendor
//! account, and the integration tests start one to script faults and inspect what the daemon sent.
//! Each route answers with the exact reply shape its vendor documents (status code, JSON keys in the
//! documented order, timestamp formats) and checks a request the way the real server would: the
//! content type, the credentials and, for OAuth2, RFC 6749 client authentication.
//!
//! Every token it hands out is remembered with its expiry, so `GET /api/protected` can play the
//! API a consumer calls with the token, and [`TokenEndpoint::is_live`] can tell a test whether a
//! token on disk is still one the server would accept.
//!
//! Not a security boundary: it binds to 127.0.0.1 only, holds demo credentials, and compares
//! secrets in variable time.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{
    ACCEPT, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, LOCATION, PRAGMA, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{MethodRouter, any, get};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use jiff::tz::Offset;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The path of the protected resource that accepts issued tokens.
pub const PROTECTED_PATH: &str = "/api/protected";

/// The most requests [`TokenEndpoint::requests`] keeps; older ones are dropped so a long-running
/// `tokenkeeper demo` does not grow without bound. Far above what any test sends.
const MAX_RECORDED: usize = 10_000;

/// How long [`TokenEndpoint::shutdown`] lets in-flight requests finish (a scripted
/// [`Fault::Delay`] may be sleeping) before it aborts the server.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The realm named in `WWW-Authenticate` challenges.
const REALM: &str = "tokenkeeper-demo";

/// The logins the endpoint accepts. Fixed demo values unless a test sets its own.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// Panaya form field `username`.
    pub panaya_username: String,
    /// Panaya form field `token` (the access token created in Panaya).
    pub panaya_token: String,
    /// Papaya Global JSON field `api_key`.
    pub papaya_api_key: String,
    /// Papaya Global JSON field `client_secret`.
    pub papaya_client_secret: String,
    /// Apinizer form field `client_id` (an Apinizer username).
    pub apinizer_client_id: String,
    /// Apinizer form field `client_secret` (an Apinizer password).
    pub apinizer_client_secret: String,
    /// Patchworks JSON field `email`.
    pub patchworks_email: String,
    /// Patchworks JSON field `password`.
    pub patchworks_password: String,
    /// ONLYOFFICE JSON field `userName`.
    pub onlyoffice_username: String,
    /// ONLYOFFICE JSON field `password`.
    pub onlyoffice_password: String,
    /// OAuth2 client identifier.
    pub oauth2_client_id: String,
    /// OAuth2 client secret.
    pub oauth2_client_secret: String,
}

impl Credentials {
    /// Fixed, obviously fake values. The OAuth2 secret holds `:`, `%`, `+`, a space and `é` so a
    /// client that skips the form-encoding step of HTTP Basic (RFC 6749 §2.3.1) is refused.
    pub fn demo() -> Credentials {
        Credentials {
            panaya_username: "demo.user@example.com".to_owned(),
            panaya_token: "demo-panaya-access-token".to_owned(),
            papaya_api_key: "00000000-0000-4000-8000-00000000demo".to_owned(),
            papaya_client_secret: "demo-papaya-secret!!!".to_owned(),
            apinizer_client_id: "demo-apinizer-user".to_owned(),
            apinizer_client_secret: "demo-apinizer-password".to_owned(),
            patchworks_email: "demo@example.com".to_owned(),
            patchworks_password: "demo-password-123*".to_owned(),
            onlyoffice_username: "demo-onlyoffice-user".to_owned(),
            onlyoffice_password: "demo-onlyoffice-password".to_owned(),
            oauth2_client_id: "demo-client".to_owned(),
            oauth2_client_secret: "demo-secret: 100% + é".to_owned(),
        }
    }
}

/// How a [`TokenEndpoint`] behaves.
#[derive(Clone, Debug)]
pub struct EndpointOptions {
    /// The logins accepted at start; see [`TokenEndpoint::set_credentials`] to rotate them.
    pub credentials: Credentials,
    /// How long every issued token stays valid, on every route. Routes that report an expiry
    /// report this one: `expires_in` is its whole seconds, Papaya's `valid_until` is truncated to
    /// the minute (as the seed shows), so lifetimes under a minute can make it lie in the past.
    pub lifetime: Duration,
    /// Whether the OAuth2 client_credentials grant also returns a `refresh_token`. RFC 6749 §4.4.3
    /// advises against it, but some servers do, and the daemon must use it when they do.
    pub issue_refresh_tokens: bool,
    /// Whether Patchworks replies `{"token": ...}` alone, without `expires_in`, so the caller
    /// must fall back to the documented 24 h.
    pub patchworks_token_only: bool,
}

impl Default for EndpointOptions {
    fn default() -> EndpointOptions {
        EndpointOptions {
            credentials: Credentials::demo(),
            lifetime: Duration::from_secs(3600),
            issue_refresh_tokens: false,
            patchworks_token_only: false,
        }
    }
}

/// One login route of the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// Panaya: form `username`, `token`.
    Panaya,
    /// Papaya Global: JSON `api_key`, `client_secret`, optional `token_name`.
    Papaya,
    /// Apinizer: OAuth2-style client credentials form.
    Apinizer,
    /// Patchworks: JSON `email`, `password`.
    Patchworks,
    /// ONLYOFFICE: JSON `userName`, `password`.
    OnlyOffice,
    /// Standard OAuth2 token endpoint (client credentials and refresh token grants).
    OAuth2,
}

impl Route {
    /// Every route, in declaration order.
    pub const ALL: [Route; 6] = [
        Route::Panaya,
        Route::Papaya,
        Route::Apinizer,
        Route::Patchworks,
        Route::OnlyOffice,
        Route::OAuth2,
    ];

    /// The path the route is served at, as the vendor documents it.
    pub fn path(self) -> &'static str {
        match self {
            Route::Panaya => "/api/accesstoken",
            Route::Papaya => "/token",
            Route::Apinizer => "/apiops/auth/token",
            Route::Patchworks => "/api/v1/login",
            Route::OnlyOffice => "/api/2.0/authentication",
            Route::OAuth2 => "/oauth2/token",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A request received on a login route, as it arrived.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// The path, with the query string when one was sent.
    pub path: String,
    /// Header names in lower case, values as sent (non-UTF-8 bytes replaced), in arrival order.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first value of a header, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a form field in the body (decoded), e.g. the OAuth2 `scope` or
    /// `audience` a client asked for.
    pub fn form_value(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(&self.body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// A scripted misbehaviour that replaces the answer to one login request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status, content type, body and extra headers (e.g. `Retry-After`).
    /// A status outside 100..=999 becomes 500; headers that are not valid HTTP are skipped.
    Status {
        status: u16,
        content_type: String,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// A 200 login page instead of JSON, as a misrouted proxy or an SSO wall returns.
    Html200,
    /// A redirect with this status and `Location`.
    Redirect { status: u16, location: String },
    /// A 200 JSON-looking reply of exactly this many bytes that never becomes valid JSON, to test
    /// a reply size cap. Sent with a `Content-Length`.
    Oversized { bytes: usize },
    /// Wait this long, then answer normally (for timeouts and concurrency tests).
    Delay(Duration),
}

/// A loopback token endpoint serving every [`Route`] and [`PROTECTED_PATH`].
pub struct TokenEndpoint {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TokenEndpoint {
    /// Binds 127.0.0.1 on a free port and starts serving on the current tokio runtime.
    pub async fn start(options: EndpointOptions) -> std::io::Result<TokenEndpoint> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            lifetime: options.lifetime,
            issue_refresh_tokens: options.issue_refresh_tokens,
            patchworks_token_only: options.patchworks_token_only,
            inner: Mutex::new(Inner {
                credentials: options.credentials,
                requests: VecDeque::new(),
                faults: VecDeque::new(),
                issued: [0; Route::ALL.len()],
                access_tokens: HashMap::new(),
                refresh_tokens: HashMap::new(),
                accepted: 0,
                rejected: 0,
            }),
        });
        let mut router = Router::new();
        for route in Route::ALL {
            router = router.route(route.path(), login_route(route));
        }
        let router = router
            .route(PROTECTED_PATH, get(protected))
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // Either a send or a dropped sender ends the wait: both mean "stop".
            let signal = async move {
                let _ = stopped.await;
            };
            // axum's serve loop retries accept errors itself, so an error here can only come
            // from a listener that is already gone; there is nobody left to tell.
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(signal)
                .await;
        });
        Ok(TokenEndpoint {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The base URL to configure a client with, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request to a login route, oldest first, faulted ones included.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.iter().cloned().collect()
    }

    /// How many successful logins the route has answered.
    pub fn issued(&self, route: Route) -> usize {
        self.shared.lock().issued[route.index()]
    }

    /// Queues a fault. Faults are consumed first in, first out, one by each following request to
    /// any login route (not [`PROTECTED_PATH`]).
    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }

    /// Replaces the accepted credentials, as an operator rotating a secret would. Tokens already
    /// issued stay valid until they expire; refresh tokens stay bound to the client that got them.
    pub fn set_credentials(&self, credentials: Credentials) {
        self.shared.lock().credentials = credentials;
    }

    /// Whether `token` is an access token this server issued that has not expired.
    pub fn is_live(&self, token: &str) -> bool {
        self.shared.lock().is_live(token, Timestamp::now())
    }

    /// Whether `token` is an access token this server issued, expired or not.
    pub fn was_issued(&self, token: &str) -> bool {
        self.shared.lock().is_live(token, Timestamp::MIN)
    }

    /// How many calls [`PROTECTED_PATH`] accepted and rejected.
    pub fn protected_calls(&self) -> (usize, usize) {
        let inner = self.shared.lock();
        (inner.accepted, inner.rejected)
    }

    /// Stops accepting connections, lets in-flight requests finish (for at most a few seconds),
    /// and waits for the server to stop.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        // Starts the same graceful stop as `shutdown`, without waiting for it: drop cannot await.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// State shared between the handle and the request handlers.
struct Shared {
    lifetime: Duration,
    issue_refresh_tokens: bool,
    patchworks_token_only: bool,
    inner: Mutex<Inner>,
}

impl Shared {
    /// Locks the state. A handler that panicked while holding the lock left it consistent
    /// (every update is a single push, insert or increment), so a poisoned lock is recovered.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The expiry of a token issued at `now`. A lifetime too long to represent is clamped: this is
    /// a demo server, and "never" is what such a lifetime means.
    fn expiry(&self, now: Timestamp) -> Timestamp {
        now.checked_add(self.lifetime).unwrap_or(Timestamp::MAX)
    }

    fn expires_in(&self) -> u64 {
        self.lifetime.as_secs()
    }
}

struct Inner {
    credentials: Credentials,
    requests: VecDeque<RecordedRequest>,
    faults: VecDeque<Fault>,
    issued: [usize; Route::ALL.len()],
    /// Every live access token and when it expires.
    access_tokens: HashMap<String, Timestamp>,
    /// Unused refresh tokens and the grant each continues.
    refresh_tokens: HashMap<String, RefreshGrant>,
    accepted: usize,
    rejected: usize,
}

struct RefreshGrant {
    client_id: String,
    scope: Option<String>,
}

impl Inner {
    fn is_live(&self, token: &str, now: Timestamp) -> bool {
        self.access_tokens
            .get(token)
            .is_some_and(|expiry| now < *expiry)
    }

    /// Remembers a new access token, counts the login, and forgets tokens that have expired (a
    /// forgotten token is as dead as an expired one, and this keeps a long demo run small).
    fn remember(&mut self, route: Route, token: &str, expiry: Timestamp, now: Timestamp) {
        self.access_tokens.retain(|_, e| now < *e);
        self.access_tokens.insert(token.to_owned(), expiry);
        self.issued[route.index()] += 1;
    }

    /// A random opaque token not yet handed out.
    fn fresh_token(&self) -> String {
        loop {
            let token = random_token();
            if !self.access_tokens.contains_key(&token) && !self.refresh_tokens.contains_key(&token)
            {
                return token;
            }
        }
    }
}

/// 24 random bytes in base64url: 32 visible ASCII characters, safe in any header or file format.
fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
}

/// A random version-4 UUID, as Papaya names a token whose request gave no `token_name`.
fn random_uuid() -> String {
    let mut b = rand::random::<[u8; 16]>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

// ---------------------------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------------------------

fn login_route(route: Route) -> MethodRouter<Arc<Shared>> {
    // `any` rather than `post` so a request with the wrong method is still recorded and consumes
    // a fault like every other request to the route.
    any(
        move |State(shared): State<Arc<Shared>>,
              method: Method,
              uri: Uri,
              headers: HeaderMap,
              body: Bytes| async move {
            login(&shared, route, method, uri, headers, body).await
        },
    )
}

async fn login(
    shared: &Shared,
    route: Route,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = {
        let mut inner = shared.lock();
        if inner.requests.len() >= MAX_RECORDED {
            inner.requests.pop_front();
        }
        inner.requests.push_back(RecordedRequest {
            method: method.as_str().to_owned(),
            path: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect(),
            body: body.to_vec(),
        });
        inner.faults.pop_front()
    };
    match fault {
        None => {}
        Some(Fault::Delay(pause)) => tokio::time::sleep(pause).await,
        Some(fault) => return fault_response(fault),
    }
    if method != Method::POST {
        let mut response = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            object(&[("error", string("method not allowed"))]),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    match route {
        Route::Panaya => panaya(shared, &headers, &body),
        Route::Papaya => papaya(shared, &headers, &body),
        Route::Apinizer => apinizer(shared, &headers, &body),
        Route::Patchworks => patchworks(shared, &headers, &body),
        Route::OnlyOffice => onlyoffice(shared, &headers, &body),
        Route::OAuth2 => oauth2(shared, &headers, &body),
    }
}

fn fault_response(fault: Fault) -> Response {
    match fault {
        Fault::Status {
            status,
            content_type,
            body,
            headers,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = response(status, &content_type, body.into_bytes());
            for (name, value) in headers {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    response.headers_mut().append(name, value);
                }
            }
            response
        }
        Fault::Html200 => response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            b"<html><body>Please log in</body></html>".to_vec(),
        ),
        Fault::Redirect { status, location } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
            let mut response = response(status, "text/plain", Vec::new());
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(LOCATION, location);
            }
            response
        }
        Fault::Oversized { bytes } => {
            // Starts like a real token reply so only a size cap, not a parse error, can stop a
            // client from reading it all.
            let mut body = br#"{"access_token":""#.to_vec();
            body.truncate(bytes);
            body.resize(bytes, b'a');
            response(StatusCode::OK, "application/json", body)
        }
        // `login` handles a delay itself (it then answers normally) and never passes one here;
        // the arm exists only because the match must be exhaustive.
        Fault::Delay(_) => response(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", Vec::new()),
    }
}

/// Panaya: form `username` + `token` → 200 `{"token"}`. The seed shows only the `token` field.
fn panaya(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
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
fn papaya(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
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
fn papaya_jwt(now: Timestamp, expiry: Timestamp) -> String {
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
fn apinizer(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
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
fn patchworks(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
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
fn onlyoffice(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
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

fn onlyoffice_response(status: StatusCode, body: String) -> Response {
    response(status, "application/json; charset=utf-8", body.into_bytes())
}

/// A standard OAuth2 token endpoint: RFC 6749 §4.4 client credentials and §6 refresh, with client
/// authentication by HTTP Basic or body parameters (§2.3.1), replies per §5.1/§5.2.
fn oauth2(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
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
            let bound_here = inner
                .refresh_tokens
                .get(presented)
                .is_some_and(|grant| grant.client_id == client_id);
            if !bound_here {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", None);
            }
            let granted = inner
                .refresh_tokens
                .get(presented)
                .and_then(|grant| grant.scope.clone());
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

fn invalid_client(basic: bool) -> Response {
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

fn oauth_error(status: StatusCode, error: &str, description: Option<&str>) -> Response {
    let mut fields = vec![("error", string(error))];
    if let Some(description) = description {
        fields.push(("error_description", string(description)));
    }
    oauth_response(status, object(&fields))
}

/// §5.1: token replies must not be cached.
fn oauth_response(status: StatusCode, body: String) -> Response {
    let mut response = json_response(status, body);
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Decodes an RFC 6749 §2.3.1 Basic credential: base64, split at the first ':', then each half
/// form-urldecoded. `None` for any other scheme or a malformed value.
fn decode_basic(value: &[u8]) -> Option<(String, String)> {
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
fn form_urldecode(text: &str) -> Option<String> {
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

/// `GET /api/protected`: 200 for a live token this server issued, as `Bearer <t>` or bare
/// (ONLYOFFICE style); 401 otherwise.
async fn protected(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            let value = value.trim();
            match value.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
                _ => value,
            }
        });
    let mut inner = shared.lock();
    let live = presented.is_some_and(|token| inner.is_live(token, Timestamp::now()));
    if live {
        inner.accepted += 1;
        json_response(StatusCode::OK, object(&[("ok", "true".to_owned())]))
    } else {
        inner.rejected += 1;
        let mut response = json_response(
            StatusCode::UNAUTHORIZED,
            object(&[("error", string("invalid_token"))]),
        );
        let challenge = format!("Bearer realm=\"{REALM}\", error=\"invalid_token\"");
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
        response
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// A parsed form body, keeping repeats so the OAuth2 route can refuse them.
struct FormBody(Vec<(String, String)>);

impl FormBody {
    fn parse(body: &[u8]) -> FormBody {
        FormBody(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn repeated(&self) -> Option<&str> {
        self.0.iter().enumerate().find_map(|(i, (name, _))| {
            self.0[..i]
                .iter()
                .any(|(earlier, _)| earlier == name)
                .then_some(name.as_str())
        })
    }
}

/// Whether the Content-Type's media type (parameters such as charset ignored) is `expected`.
fn has_media_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(expected))
}

/// Whether some `Accept` header lists `application/json`.
fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|range| range.split(';').next())
        .any(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

fn parse_json_object(body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice(body).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn json_str<'a>(json: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    json.get(key).and_then(Value::as_str)
}

fn unsupported_media_type() -> Response {
    json_response(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        object(&[("error", string("unsupported content type"))]),
    )
}

/// A JSON string literal.
fn string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// A JSON object from already-encoded values, keys in the given order: the seeds document a key
/// order, and `serde_json::Map` would sort it.
fn object(fields: &[(&str, String)]) -> String {
    let members: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("{}:{value}", string(key)))
        .collect();
    format!("{{{}}}", members.join(","))
}

fn json_response(status: StatusCode, body: String) -> Response {
    response(status, "application/json", body.into_bytes())
}

fn response(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    // Every content type here is a fixed ASCII literal or test-scripted text; an invalid one is
    // left out rather than failing the reply.
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: &str = "application/x-www-form-urlencoded";
    const JSON: &str = "application/json";

    struct Reply {
        status: u16,
        headers: reqwest::header::HeaderMap,
        body: String,
    }

    impl Reply {
        fn json(&self) -> Value {
            serde_json::from_str(&self.body).expect("reply is JSON")
        }

        fn keys(&self) -> Vec<String> {
            match self.json() {
                Value::Object(map) => map.keys().cloned().collect(),
                other => panic!("not an object: {other}"),
            }
        }

        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }
    }

    thread_local! {
        // Building a client costs ~50 ms in a debug build, so each test builds one. libtest runs
        // every test on its own thread with its own runtime, so no pooled connection outlives
        // the runtime it was made on.
        static CLIENT: reqwest::Client = {
            // reqwest builds its TLS config even for plain-HTTP clients and panics without a
            // provider; another test may already have installed it.
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client builds")
        };
    }

    fn client() -> reqwest::Client {
        CLIENT.with(reqwest::Client::clone)
    }

    async fn send(
        ep: &TokenEndpoint,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut request = client().request(method, format!("{}{path}", ep.base_url()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent");
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.expect("body read"),
        }
    }

    async fn post(ep: &TokenEndpoint, route: Route, content_type: &str, body: &str) -> Reply {
        let headers = [("content-type", content_type), ("accept", JSON)];
        send(ep, reqwest::Method::POST, route.path(), &headers, body).await
    }

    async fn call_protected(ep: &TokenEndpoint, authorization: Option<&str>) -> u16 {
        let headers: Vec<(&str, &str)> = authorization
            .map(|value| ("authorization", value))
            .into_iter()
            .collect();
        send(ep, reqwest::Method::GET, PROTECTED_PATH, &headers, "")
            .await
            .status
    }

    fn form(pairs: &[(&str, &str)]) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    }

    fn encode(text: &str) -> String {
        url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
    }

    /// RFC 6749 §2.3.1 Basic: each part form-encoded, then base64.
    fn basic(id: &str, secret: &str) -> String {
        let pair = format!("{}:{}", encode(id), encode(secret));
        format!("Basic {}", STANDARD.encode(pair))
    }

    /// RFC 7617 Basic with no form-encoding step: what a careless client sends.
    fn raw_basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    fn token_shape_ok(token: &str) {
        assert!(token.len() >= 32, "{token}");
        assert!(token.bytes().all(|b| b.is_ascii_graphic()), "{token}");
    }

    async fn start(options: EndpointOptions) -> TokenEndpoint {
        TokenEndpoint::start(options)
            .await
            .expect("endpoint starts")
    }

    #[tokio::test]
    async fn panaya_issues_token_only_for_matching_form() {
        let ep = start(EndpointOptions::default()).await;
        let c = Credentials::demo();
        let good = form(&[("username", &c.panaya_username), ("token", &c.panaya_token)]);
        let reply = post(&ep, Route::Panaya, FORM, &good).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.keys(), ["token"]);
        let token = reply.json()["token"].as_str().expect("string").to_owned();
        token_shape_ok(&token);
        assert!(ep.is_live(&token));

        let bad = form(&[
            ("username", "DEMO.USER@example.com"),
            ("token", &c.panaya_token),
        ]);
        let reply = post(&ep, Route::Panaya, FORM, &bad).await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.json(),
            serde_json::json!({"error": "invalid credentials"})
        );

        // The right fields as JSON are not what the server documents.
        let as_json = serde_json::json!({"username": c.panaya_username, "token": c.panaya_token});
        let reply = post(&ep, Route::Panaya, JSON, &as_json.to_string()).await;
        assert_eq!(reply.status, 415);
        assert_eq!(ep.issued(Route::Panaya), 1);
    }

    #[tokio::test]
    async fn papaya_replies_201_with_minute_valid_until_and_matching_jwt() {
        let ep = start(EndpointOptions::default()).await;
        let c = Credentials::demo();
        let body = serde_json::json!({
            "api_key": c.papaya_api_key,
            "client_secret": c.papaya_client_secret,
            "token_name": "nightly-sync",
        });
        let before = Timestamp::now();
        let reply = post(&ep, Route::Papaya, JSON, &body.to_string()).await;
        assert_eq!(reply.status, 201);
        assert_eq!(reply.keys(), ["token", "token_name", "valid_until"]);
        assert!(reply.body.starts_with(r#"{"valid_until":"#), "seed order");
        let json = reply.json();
        assert_eq!(json["token_name"], "nightly-sync");

        let valid_until = json["valid_until"].as_str().expect("string");
        assert_eq!(
            valid_until.len(),
            "2024-07-11T07:48Z".len(),
            "{valid_until}"
        );
        assert!(valid_until.ends_with('Z') && valid_until.as_bytes()[13] == b':');
        let valid_until: Timestamp = valid_until.parse().expect("jiff parses the seed form");

        let token = json["token"].as_str().expect("string");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url"))
                .expect("claims JSON");
        assert_eq!(claims["sub"], "access");
        let iat = claims["iat"].as_i64().expect("iat");
        let exp = claims["exp"].as_i64().expect("exp");
        assert_eq!(exp - iat, 3600);
        assert!((iat - before.as_second()).abs() <= 1);
        assert_eq!(valid_until.as_second(), exp - exp.rem_euclid(60));
        assert!(ep.is_live(token));

        let unnamed = serde_json::json!({
            "api_key": c.papaya_api_key,
            "client_secret": c.papaya_client_secret,
        });
        let reply = post(&ep, Route::Papaya, JSON, &unnamed.to_string()).await;
        assert_eq!(reply.status, 201);
        let name = reply.json()["token_name"]
            .as_str()
            .expect("name")
            .to_owned();
        let groups: Vec<usize> = name.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{name}");

        let wrong = serde_json::json!({"api_key": c.papaya_api_key, "client_secret": "nope"});
        let reply = post(&ep, Route::Papaya, JSON, &wrong.to_string()).await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.json(),
            serde_json::json!({"error": "Invalid request"})
        );
        let missing = serde_json::json!({"api_key": c.papaya_api_key});
        let reply = post(&ep, Route::Papaya, JSON, &missing.to_string()).await;
        assert_eq!(reply.status, 401);
        assert_eq!(ep.issued(Route::Papaya), 2);
    }

    #[tokio::test]
    async fn apinizer_needs_accept_json_and_credentials() {
        let ep = start(EndpointOptions::default()).await;
        let c = Credentials::demo();
        let good = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &c.apinizer_client_id),
            ("client_secret", &c.apinizer_client_secret),
        ]);
        let reply = post(&ep, Route::Apinizer, FORM, &good).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.keys(), ["access_token", "expires_in", "token_type"]);
        let json = reply.json();
        assert_eq!(json["token_type"], "Bearer");
        assert_eq!(json["expires_in"], 3600);
        token_shape_ok(json["access_token"].as_str().expect("token"));

        let no_accept = [("content-type", FORM)];
        let reply = send(
            &ep,
            reqwest::Method::POST,
            Route::Apinizer.path(),
            &no_accept,
            &good,
        )
        .await;
        assert_eq!(reply.status, 406);

        let wrong = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &c.apinizer_client_id),
            ("client_secret", "guess"),
        ]);
        let reply = post(&ep, Route::Apinizer, FORM, &wrong).await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.json(),
            serde_json::json!({"error": "unauthorized_client", "error_description": "Bad credentials"})
        );
        let password = form(&[
            ("grant_type", "password"),
            ("client_id", &c.apinizer_client_id),
            ("client_secret", &c.apinizer_client_secret),
        ]);
        let reply = post(&ep, Route::Apinizer, FORM, &password).await;
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json()["error"], "unsupported_grant_type");
        assert_eq!(ep.issued(Route::Apinizer), 1);
    }

    #[tokio::test]
    async fn patchworks_bearer_reply_and_token_only_option() {
        let c = Credentials::demo();
        let body =
            serde_json::json!({"email": c.patchworks_email, "password": c.patchworks_password})
                .to_string();

        let ep = start(EndpointOptions::default()).await;
        let reply = post(&ep, Route::Patchworks, JSON, &body).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.keys(), ["access_token", "expires_in", "token_type"]);
        assert_eq!(reply.json()["token_type"], "bearer");
        assert_eq!(reply.json()["expires_in"], 3600);

        let wrong = serde_json::json!({"email": c.patchworks_email, "password": "x"});
        let reply = post(&ep, Route::Patchworks, JSON, &wrong.to_string()).await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.json(),
            serde_json::json!({"message": "Unauthenticated."})
        );
        let missing = serde_json::json!({"email": c.patchworks_email});
        let reply = post(&ep, Route::Patchworks, JSON, &missing.to_string()).await;
        assert_eq!(reply.status, 422);
        assert_eq!(
            reply.json()["errors"]["password"][0],
            "The password field is required."
        );

        let options = EndpointOptions {
            patchworks_token_only: true,
            ..EndpointOptions::default()
        };
        let ep = start(options).await;
        let reply = post(&ep, Route::Patchworks, JSON, &body).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.keys(), ["token"]);
        assert!(ep.is_live(reply.json()["token"].as_str().expect("token")));
    }

    #[tokio::test]
    async fn onlyoffice_nests_token_and_local_expiry() {
        let ep = start(EndpointOptions::default()).await;
        let c = Credentials::demo();
        let body = serde_json::json!({"userName": c.onlyoffice_username, "password": c.onlyoffice_password});
        let before = Timestamp::now();
        let reply = post(&ep, Route::OnlyOffice, JSON, &body.to_string()).await;
        assert_eq!(reply.status, 201);
        assert_eq!(
            reply.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(reply.keys(), ["count", "response", "status", "statusCode"]);
        let json = reply.json();
        assert_eq!(
            (json["count"].as_i64(), json["status"].as_i64()),
            (Some(1), Some(0))
        );
        assert_eq!(json["statusCode"], 201);
        let inner: Vec<&String> = json["response"]
            .as_object()
            .expect("object")
            .keys()
            .collect();
        assert_eq!(inner, ["expires", "token"]);

        let expires = json["response"]["expires"].as_str().expect("string");
        // e.g. 2010-07-07T17:06:03.5845502+03:00
        assert!(expires.ends_with("+03:00"), "{expires}");
        let fraction = &expires[expires.find('.').expect("fraction") + 1..expires.len() - 6];
        assert_eq!(fraction.len(), 7, "{expires}");
        assert!(fraction.bytes().all(|b| b.is_ascii_digit()));
        let expires: Timestamp = expires.parse().expect("jiff parses the seed form");
        let lifetime = expires.as_second() - before.as_second();
        assert!((3599..=3601).contains(&lifetime), "{lifetime}");
        assert!(ep.is_live(json["response"]["token"].as_str().expect("token")));

        let wrong = serde_json::json!({"userName": c.onlyoffice_username, "password": ""});
        let reply = post(&ep, Route::OnlyOffice, JSON, &wrong.to_string()).await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.json(),
            serde_json::json!({"error": {"message": "User authentication failed"}, "status": 1, "statusCode": 401})
        );
    }

    #[tokio::test]
    async fn oauth2_basic_needs_form_encoding_first() {
        let ep = start(EndpointOptions::default()).await;
        let c = Credentials::demo();
        assert!(
            [":", "%", "+", "é"]
                .iter()
                .all(|ch| c.oauth2_client_secret.contains(ch))
        );
        let grant = form(&[
            ("grant_type", "client_credentials"),
            ("scope", "read write"),
        ]);
        let send_basic = |authorization: String| {
            let grant = grant.clone();
            let ep = &ep;
            async move {
                let headers = [
                    ("content-type", FORM),
                    ("authorization", authorization.as_str()),
                ];
                send(
                    ep,
                    reqwest::Method::POST,
                    Route::OAuth2.path(),
                    &headers,
                    &grant,
                )
                .await
            }
        };

        let reply = send_basic(basic(&c.oauth2_client_id, &c.oauth2_client_secret)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            reply.keys(),
            ["access_token", "expires_in", "scope", "token_type"]
        );
        assert_eq!(reply.json()["scope"], "read write");
        assert_eq!(reply.json()["token_type"], "Bearer");
        assert_eq!(reply.header("cache-control"), Some("no-store"));

        // The same secret without the form-encoding step: '%' followed by a space is no escape.
        let reply = send_basic(raw_basic(&c.oauth2_client_id, &c.oauth2_client_secret)).await;
        assert_eq!(reply.status, 401);
        assert_eq!(reply.json(), serde_json::json!({"error": "invalid_client"}));
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Basic"))
        );

        // A secret that decodes, but to something else: '+' becomes a space, "%41" an 'A'.
        let plus = Credentials {
            oauth2_client_secret: "p+q%41".to_owned(),
            ..Credentials::demo()
        };
        ep.set_credentials(plus.clone());
        let reply = send_basic(raw_basic(
            &plus.oauth2_client_id,
            &plus.oauth2_client_secret,
        ))
        .await;
        assert_eq!(reply.status, 401);
        let reply = send_basic(basic(&plus.oauth2_client_id, &plus.oauth2_client_secret)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(ep.issued(Route::OAuth2), 2);
    }

    #[tokio::test]
    async fn oauth2_post_auth_errors_and_recorded_audience() {
        let ep = start(EndpointOptions::default()).await;
        let c = Credentials::demo();
        let post_auth = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &c.oauth2_client_id),
            ("client_secret", &c.oauth2_client_secret),
            ("audience", "https://api.example.com"),
        ]);
        let reply = post(&ep, Route::OAuth2, FORM, &post_auth).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.keys(), ["access_token", "expires_in", "token_type"]);
        let recorded = ep.requests().pop().expect("recorded");
        assert_eq!(
            recorded.form_value("audience").as_deref(),
            Some("https://api.example.com")
        );
        assert_eq!(recorded.header("Content-Type"), Some(FORM));

        // Both methods at once.
        let authorization = basic(&c.oauth2_client_id, &c.oauth2_client_secret);
        let headers = [
            ("content-type", FORM),
            ("authorization", authorization.as_str()),
        ];
        let reply = send(
            &ep,
            reqwest::Method::POST,
            Route::OAuth2.path(),
            &headers,
            &post_auth,
        )
        .await;
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json()["error"], "invalid_request");

        let wrong = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &c.oauth2_client_id),
            ("client_secret", "guess"),
        ]);
        let reply = post(&ep, Route::OAuth2, FORM, &wrong).await;
        assert_eq!(reply.status, 401);
        assert_eq!(reply.json(), serde_json::json!({"error": "invalid_client"}));
        assert_eq!(reply.header("www-authenticate"), None, "no Basic was tried");

        let password = form(&[
            ("grant_type", "password"),
            ("client_id", &c.oauth2_client_id),
            ("client_secret", &c.oauth2_client_secret),
        ]);
        let reply = post(&ep, Route::OAuth2, FORM, &password).await;
        assert_eq!(reply.status, 400);
        assert_eq!(
            reply.json(),
            serde_json::json!({"error": "unsupported_grant_type"})
        );

        let as_json = serde_json::json!({"grant_type": "client_credentials"}).to_string();
        let reply = post(&ep, Route::OAuth2, JSON, &as_json).await;
        assert_eq!(reply.status, 400);
        assert_eq!(ep.issued(Route::OAuth2), 1);
    }

    #[tokio::test]
    async fn oauth2_refresh_tokens_rotate_and_are_single_use() {
        let options = EndpointOptions {
            issue_refresh_tokens: true,
            ..EndpointOptions::default()
        };
        let ep = start(options).await;
        let c = Credentials::demo();
        let auth = |extra: &[(&str, &str)]| {
            let mut pairs = vec![
                ("client_id", c.oauth2_client_id.as_str()),
                ("client_secret", c.oauth2_client_secret.as_str()),
            ];
            pairs.extend_from_slice(extra);
            form(&pairs)
        };
        let first = post(
            &ep,
            Route::OAuth2,
            FORM,
            &auth(&[("grant_type", "client_credentials"), ("scope", "read")]),
        )
        .await;
        assert_eq!(first.status, 200);
        assert_eq!(
            first.keys(),
            [
                "access_token",
                "expires_in",
                "refresh_token",
                "scope",
                "token_type"
            ]
        );
        let refresh1 = first.json()["refresh_token"]
            .as_str()
            .expect("rt")
            .to_owned();
        token_shape_ok(&refresh1);
        assert!(
            !ep.is_live(&refresh1),
            "a refresh token is not an access token"
        );

        let second = post(
            &ep,
            Route::OAuth2,
            FORM,
            &auth(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh1),
            ]),
        )
        .await;
        assert_eq!(second.status, 200, "{}", second.body);
        let json = second.json();
        let refresh2 = json["refresh_token"].as_str().expect("rotated");
        assert_ne!(refresh2, refresh1);
        assert_eq!(json["scope"], "read", "the granted scope carries over");
        assert_ne!(json["access_token"], first.json()["access_token"]);

        let reused = post(
            &ep,
            Route::OAuth2,
            FORM,
            &auth(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh1),
            ]),
        )
        .await;
        assert_eq!(reused.status, 400);
        assert_eq!(reused.json(), serde_json::json!({"error": "invalid_grant"}));
        let forged = post(
            &ep,
            Route::OAuth2,
            FORM,
            &auth(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "made-up"),
            ]),
        )
        .await;
        assert_eq!(forged.json()["error"], "invalid_grant");
        let wider = post(
            &ep,
            Route::OAuth2,
            FORM,
            &auth(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh2),
                ("scope", "read admin"),
            ]),
        )
        .await;
        assert_eq!(wider.json()["error"], "invalid_scope");
        assert_eq!(ep.issued(Route::OAuth2), 2);
    }

    #[tokio::test]
    async fn faults_are_consumed_in_order_by_any_login_route() {
        let ep = start(EndpointOptions::default()).await;
        let c = Credentials::demo();
        let panaya = form(&[("username", &c.panaya_username), ("token", &c.panaya_token)]);
        ep.push_fault(Fault::Status {
            status: 503,
            content_type: "text/plain".to_owned(),
            body: "busy".to_owned(),
            headers: vec![("Retry-After".to_owned(), "7".to_owned())],
        });
        ep.push_fault(Fault::Html200);
        ep.push_fault(Fault::Redirect {
            status: 302,
            location: "https://sso.example.com/login".to_owned(),
        });
        ep.push_fault(Fault::Oversized { bytes: 100_000 });
        ep.push_fault(Fault::Delay(Duration::from_millis(300)));

        // The protected resource neither consumes nor is recorded.
        assert_eq!(call_protected(&ep, None).await, 401);

        let reply = post(&ep, Route::Panaya, FORM, &panaya).await;
        assert_eq!((reply.status, reply.body.as_str()), (503, "busy"));
        assert_eq!(reply.header("retry-after"), Some("7"));
        let reply = post(&ep, Route::OnlyOffice, JSON, "{}").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "<html><body>Please log in</body></html>");
        assert!(
            reply
                .header("content-type")
                .is_some_and(|v| v.starts_with("text/html"))
        );
        let reply = post(&ep, Route::Papaya, JSON, "{}").await;
        assert_eq!(reply.status, 302);
        assert_eq!(
            reply.header("location"),
            Some("https://sso.example.com/login")
        );
        let reply = post(&ep, Route::OAuth2, FORM, "").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body.len(), 100_000);
        assert!(reply.body.starts_with(r#"{"access_token":"aaaa"#));
        let started = std::time::Instant::now();
        let reply = post(&ep, Route::Panaya, FORM, &panaya).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(reply.status, 200, "a delay then the normal answer");
        let reply = post(&ep, Route::Panaya, FORM, &panaya).await;
        assert_eq!(reply.status, 200);

        let paths: Vec<String> = ep.requests().into_iter().map(|r| r.path).collect();
        let expected = [
            Route::Panaya,
            Route::OnlyOffice,
            Route::Papaya,
            Route::OAuth2,
            Route::Panaya,
            Route::Panaya,
        ]
        .map(|r| r.path().to_owned());
        assert_eq!(paths, expected);
        assert_eq!(ep.issued(Route::Panaya), 2);
        assert_eq!(ep.issued(Route::OAuth2), 0);
    }

    #[tokio::test]
    async fn protected_counts_live_and_expired_tokens() {
        let options = EndpointOptions {
            lifetime: Duration::from_secs(1),
            ..EndpointOptions::default()
        };
        let ep = start(options).await;
        let c = Credentials::demo();
        let body = serde_json::json!({"userName": c.onlyoffice_username, "password": c.onlyoffice_password});
        let reply = post(&ep, Route::OnlyOffice, JSON, &body.to_string()).await;
        let token = reply.json()["response"]["token"]
            .as_str()
            .expect("token")
            .to_owned();

        assert_eq!(
            call_protected(&ep, Some(&format!("Bearer {token}"))).await,
            200
        );
        assert_eq!(
            call_protected(&ep, Some(&token)).await,
            200,
            "bare, ONLYOFFICE style"
        );
        assert_eq!(
            call_protected(&ep, Some("Bearer not-issued-here")).await,
            401
        );
        assert_eq!(call_protected(&ep, None).await, 401);
        assert_eq!(ep.protected_calls(), (2, 2));

        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(!ep.is_live(&token));
        assert_eq!(
            call_protected(&ep, Some(&format!("Bearer {token}"))).await,
            401
        );
        assert_eq!(ep.protected_calls(), (2, 3));
        assert!(ep.requests().iter().all(|r| r.path != PROTECTED_PATH));
    }

    #[tokio::test]
    async fn rotated_credentials_replace_the_old_ones() {
        let ep = start(EndpointOptions::default()).await;
        let old = Credentials::demo();
        let new = Credentials {
            patchworks_password: "rotated-password".to_owned(),
            ..Credentials::demo()
        };
        let with = |password: &str| {
            serde_json::json!({"email": old.patchworks_email, "password": password}).to_string()
        };
        ep.set_credentials(new.clone());
        let reply = post(
            &ep,
            Route::Patchworks,
            JSON,
            &with(&old.patchworks_password),
        )
        .await;
        assert_eq!(reply.status, 401);
        let reply = post(
            &ep,
            Route::Patchworks,
            JSON,
            &with(&new.patchworks_password),
        )
        .await;
        assert_eq!(reply.status, 200);
    }

    #[tokio::test]
    async fn wrong_method_is_recorded_and_refused() {
        let ep = start(EndpointOptions::default()).await;
        for route in Route::ALL {
            let reply = send(&ep, reqwest::Method::GET, route.path(), &[], "").await;
            assert_eq!(reply.status, 405, "{route:?}");
            assert_eq!(reply.header("allow"), Some("POST"));
        }
        let requests = ep.requests();
        assert_eq!(requests.len(), Route::ALL.len());
        assert!(requests.iter().all(|r| r.method == "GET"));
        let mut paths: Vec<&str> = Route::ALL.iter().map(|r| r.path()).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), Route::ALL.len(), "distinct paths");
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let ep = start(EndpointOptions::default()).await;
        let url = ep.base_url();
        assert_eq!(call_protected(&ep, None).await, 401);
        ep.shutdown().await;
        let result = client().get(format!("{url}{PROTECTED_PATH}")).send().await;
        assert!(result.is_err(), "still answering after shutdown");
    }

    #[test]
    fn basic_decoding_is_strict_form_urldecoding() {
        let value =
            |id: &str, secret: &str| format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
        assert_eq!(
            decode_basic(value("a%3Ab", "x+y%25%C3%A9").as_bytes()),
            Some(("a:b".to_owned(), "x y%é".to_owned()))
        );
        // Split at the first ':' only; later ones belong to the secret.
        assert_eq!(
            decode_basic(value("id", "s:t").as_bytes()),
            Some(("id".to_owned(), "s:t".to_owned()))
        );
        assert_eq!(decode_basic(value("id", "100% sure").as_bytes()), None);
        assert_eq!(decode_basic(value("id", "%zz").as_bytes()), None);
        assert_eq!(
            decode_basic(value("id", "%C3").as_bytes()),
            None,
            "not UTF-8"
        );
        assert_eq!(decode_basic(b"Bearer abc"), None);
        assert_eq!(decode_basic(b"Basic !!!"), None);
        assert_eq!(
            decode_basic(format!("Basic {}", STANDARD.encode("nocolon")).as_bytes()),
            None
        );
    }

    #[test]
    fn object_keeps_key_order_and_escapes() {
        let text = object(&[("b", string("q\"uote")), ("a", "1".to_owned())]);
        assert_eq!(text, r#"{"b":"q\"uote","a":1}"#);
    }
}
