//! The status listener: `/livez`, `/readyz`, `/metrics` and `/status` over HTTP/1.1, read-only,
//! for the kubelet, Prometheus and operators. Off unless `[daemon] listen` is set.
//!
//! Invariants: GET (and HEAD) only, nothing a request says changes the daemon; no body, header or
//! label holds a secret or a token (everything comes from the status board); one request per
//! connection, whose head must arrive within [`HEADER_TIMEOUT`] and be at most [`MAX_HEAD_BYTES`]; a
//! request with a body is refused without reading it; at most [`MAX_CONNECTIONS`] are served at
//! once and [`MAX_PER_PEER`] from one address, so one slow or hostile client can neither starve
//! the probes nor grow the daemon.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::status::{self, Board};

/// A client must have sent its request head within this long.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long, however busy.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// The largest request head read (hyper answers 431 beyond it).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections served at once from one IP address (the kubelet and Prometheus each have their
/// own): one client cannot take every slot.
pub const MAX_PER_PEER: usize = 8;

/// Binds the listener.
///
/// # Errors
/// The address cannot be bound (in use, not an address of this host, a privileged port).
pub fn bind(address: SocketAddr) -> Result<TcpListener, String> {
    let listener = std::net::TcpListener::bind(address)
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .map_err(|error| format!("cannot listen on {address} ([daemon] listen): {error}"))?;
    TcpListener::from_std(listener)
        .map_err(|error| format!("cannot listen on {address} ([daemon] listen): {error}"))
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, board: Arc<Board>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let peers = Arc::new(Peers::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!("status listener: cannot accept a connection: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(peer_slot) = Peers::take(&peers, peer.ip()) else {
            drop(stream);
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let board = Arc::clone(&board);
        tokio::spawn(async move {
            let _slots = (slot, peer_slot);
            let service = hyper::service::service_fn(move |request| {
                let board = Arc::clone(&board);
                async move { Ok::<_, Infallible>(respond(&board, &request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // A client that errs or hangs up is its own business; nothing to log.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}

/// How many connections each address holds.
#[derive(Default)]
struct Peers {
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection of an address; returned when dropped.
struct PeerSlot {
    peers: Arc<Peers>,
    address: IpAddr,
}

impl Peers {
    fn take(peers: &Arc<Peers>, address: IpAddr) -> Option<PeerSlot> {
        let mut held = peers
            .held
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let count = held.entry(address).or_insert(0);
        if *count >= MAX_PER_PEER {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: Arc::clone(peers),
            address,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut held = self
            .peers
            .held
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(count) = held.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.address);
            }
        }
    }
}

async fn respond(board: &Board, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n".to_string(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    if has_body {
        // Not read: the connection closes after this answer.
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "requests here have no body\n".to_string(),
        );
    }
    let now = jiff::Timestamp::now();
    match request.uri().path() {
        "/livez" => {
            if board.alive().await {
                text(StatusCode::OK, "ok\n".to_string())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the supervisor loop does not answer: it is stuck\n".to_string(),
                )
            }
        }
        "/readyz" => match status::readiness(&board.snapshot(), now) {
            Ok(()) => {
                let notes = status::readiness_notes(&board.snapshot());
                let body = std::iter::once("ok".to_string()).chain(notes);
                text(StatusCode::OK, body.map(|line| line + "\n").collect())
            }
            Err(problems) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                problems.iter().map(|line| format!("{line}\n")).collect(),
            ),
        },
        "/metrics" => {
            let text = board.metrics_text(now);
            if accepts_openmetrics(request) {
                with_type(
                    StatusCode::OK,
                    text,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                with_type(
                    StatusCode::OK,
                    super::metrics::classic_text(&text),
                    "text/plain; version=0.0.4; charset=utf-8",
                )
            }
        }
        "/status" => {
            let mut body = status::status_json(&board.snapshot(), now).to_string();
            body.push('\n');
            with_type(StatusCode::OK, body, "application/json")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /livez, /readyz, /metrics or /status\n".to_string(),
        ),
    }
}

/// Whether the client asks for OpenMetrics (Prometheus does; curl and promtool do not).
fn accepts_openmetrics(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"))
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    with_type(status, body, "text/plain; charset=utf-8")
}

fn with_type(
    status: StatusCode,
    body: String,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
