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
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{ALLOW, AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{MethodRouter, any, get};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod routes;
mod wire;

use routes::{apinizer, oauth2, onlyoffice, panaya, papaya, patchworks};
use wire::*;

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

#[cfg(test)]
mod tests;
