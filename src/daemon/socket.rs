//! The control socket: how `tokenkeeper status`, `probe live|ready` and `refresh` reach the
//! running daemon. A Unix stream socket, by default `control.sock` in the state directory; one
//! request line (`status`, `live`, `ready`, `refresh`, `refresh ACCOUNT`), one JSON reply.
//!
//! Invariants: only the daemon's own user and root are answered (the socket is 0600 in a 0700
//! directory, and the peer's uid is checked again); a request is at most [`MAX_REQUEST`] bytes and
//! must arrive within [`REQUEST_TIMEOUT`]; a refresh request only asks (the account tasks keep the
//! login limit and the minimum interval), so no client can make the daemon hammer an endpoint;
//! replies come from the status board and hold no secret or token.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};

use super::status::{self, Board};

/// The longest request line.
pub const MAX_REQUEST: usize = 1024;
/// A client must have sent its request (and read the reply) within this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest reply a client reads (a status of very many accounts).
const MAX_REPLY: u64 = 64 * 1024 * 1024;

/// The control socket, bound; removed when dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds the socket at `path`, replacing a stale one. Refuses to take the place of a socket
    /// another daemon still answers on.
    ///
    /// # Errors
    /// The path is in use by a live daemon, is not a socket, or cannot be bound.
    pub fn bind(path: &Path) -> Result<ControlSocket, String> {
        use std::os::unix::fs::MetadataExt as _;
        use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
        let fail = |what: &str, error: std::io::Error| {
            format!("control socket {}: {what}: {error}", path.display())
        };
        // In a directory others may write, someone else could put a socket of theirs there
        // (and answer `status` and `probe` for the daemon), or keep ours from binding.
        let parent = path.parent().unwrap_or(Path::new("/"));
        let directory = std::fs::metadata(parent)
            .map_err(|error| fail("cannot inspect its directory", error))?;
        let ours = rustix::process::geteuid().as_raw();
        if directory.mode() & 0o022 != 0 || (directory.uid() != ours && directory.uid() != 0) {
            return Err(format!(
                "control socket {}: its directory {} may be written by others (mode {:o}, uid {}); put it in a directory only the daemon's user can write",
                path.display(),
                parent.display(),
                directory.mode() & 0o7777,
                directory.uid()
            ));
        }
        match std::fs::symlink_metadata(path) {
            Ok(metadata) if metadata.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(format!(
                        "control socket {}: another daemon answers there (two daemons with one state directory?)",
                        path.display()
                    ));
                }
                std::fs::remove_file(path)
                    .map_err(|error| fail("cannot remove the stale socket", error))?;
            }
            Ok(_) => {
                return Err(format!(
                    "control socket {}: something that is not a socket is in the way",
                    path.display()
                ));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(fail("cannot inspect", error)),
        }
        let listener = UnixListener::bind(path).map_err(|error| fail("cannot bind", error))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|error| fail("cannot set its mode", error))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Answers requests until the task is dropped.
    pub async fn serve(self, board: Arc<Board>) {
        let ours = rustix::process::geteuid().as_raw();
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!("control socket: cannot accept a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let allowed = stream
                .peer_cred()
                .is_ok_and(|peer| peer.uid() == ours || peer.uid() == 0);
            if !allowed {
                continue;
            }
            let board = Arc::clone(&board);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &board)).await;
            });
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(mut stream: UnixStream, board: &Board) {
    let mut request = Vec::with_capacity(64);
    let mut limited = (&mut stream).take(MAX_REQUEST as u64);
    loop {
        let mut byte = [0u8; 256];
        match limited.read(&mut byte).await {
            Ok(0) => break,
            Ok(read) => {
                request.extend_from_slice(&byte[..read]);
                if request.contains(&b'\n') {
                    break;
                }
            }
            Err(_) => return,
        }
    }
    let line = String::from_utf8_lossy(&request);
    let line = line.lines().next().unwrap_or("").trim();
    let mut reply = reply_to(line, board).await.to_string();
    reply.push('\n');
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The reply to one request line.
async fn reply_to(line: &str, board: &Board) -> serde_json::Value {
    let now = jiff::Timestamp::now();
    let mut words = line.split_ascii_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("status"), None, _) => status::status_json(&board.snapshot(), now),
        (Some("live"), None, _) => serde_json::json!({ "live": board.alive().await }),
        (Some("ready"), None, _) => match status::readiness(&board.snapshot(), now) {
            Ok(()) => serde_json::json!({ "ready": true, "problems": [] }),
            Err(problems) => serde_json::json!({ "ready": false, "problems": problems }),
        },
        (Some("refresh"), account, None) => match board.request_refresh(account) {
            Some(accounts) => {
                tracing::info!(
                    accounts = accounts.len(),
                    "refresh requested on the control socket"
                );
                serde_json::json!({ "refreshing": accounts })
            }
            None => serde_json::json!({
                "error": format!("no account named {:?}", account.unwrap_or_default())
            }),
        },
        _ => serde_json::json!({
            "error": "unknown request: expected status, live, ready, refresh or refresh ACCOUNT"
        }),
    }
}

/// Why a client could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error(
        "no daemon answers on {path}: {error} (is `tokenkeeper run` running with this config?)"
    )]
    NoDaemon { path: String, error: std::io::Error },
    #[error(
        "cannot reach the daemon on {path}: permission denied (run as the daemon's user or root)"
    )]
    Denied { path: String },
    #[error("the daemon on {path} did not answer properly: {message}")]
    BadReply { path: String, message: String },
}

/// Sends one request to the daemon on `path` and returns its reply.
///
/// # Errors
/// No daemon listens there, the caller may not reach it, or the reply is not JSON.
pub fn ask(path: &Path, request: &str) -> Result<serde_json::Value, AskError> {
    let shown = path.display().to_string();
    let connected = std::os::unix::net::UnixStream::connect(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::PermissionDenied {
            AskError::Denied {
                path: shown.clone(),
            }
        } else {
            AskError::NoDaemon {
                path: shown.clone(),
                error,
            }
        }
    })?;
    let bad = |message: String| AskError::BadReply {
        path: shown.clone(),
        message,
    };
    let mut stream = connected;
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .and_then(|()| stream.write_all(format!("{request}\n").as_bytes()))
        .map_err(|error| bad(error.to_string()))?;
    let mut reply = Vec::new();
    stream
        .take(MAX_REPLY)
        .read_to_end(&mut reply)
        .map_err(|error| bad(error.to_string()))?;
    serde_json::from_slice(&reply).map_err(|error| bad(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_is_bound_only_where_others_cannot_write() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let refused = ControlSocket::bind(&shared.join("control.sock"))
            .err()
            .unwrap();
        assert!(refused.contains("may be written by others"), "{refused}");
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = private.join("control.sock");
        let socket = ControlSocket::bind(&path).unwrap();
        // A second daemon does not take a live socket's place; a stale one is replaced.
        let board = Board::new(jiff::Timestamp::now());
        let serving = tokio::spawn(socket.serve(board));
        let taken = tokio::task::spawn_blocking({
            let path = path.clone();
            move || ControlSocket::bind(&path).err()
        })
        .await
        .unwrap();
        assert!(taken.unwrap().contains("another daemon answers"));
        let answer = tokio::task::spawn_blocking({
            let path = path.clone();
            move || ask(&path, "live")
        })
        .await
        .unwrap()
        .unwrap();
        // No supervisor loop answers pokes in this test.
        assert_eq!(answer["live"], false);
        serving.abort();
        let _ = serving.await;
        assert!(!path.exists(), "the socket outlived its server");
        std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(
            ControlSocket::bind(&path).is_ok(),
            "a stale socket was not replaced"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_answered_and_unknown_ones_named() {
        let board = Board::new(jiff::Timestamp::now());
        // No supervisor loop answers here.
        assert_eq!(reply_to("live", &board).await["live"], false);
        board.busy(true);
        assert_eq!(reply_to("live", &board).await["live"], true);
        assert_eq!(reply_to("ready", &board).await["ready"], true);
        assert_eq!(
            reply_to("refresh", &board).await["refreshing"],
            serde_json::json!([])
        );
        assert!(
            reply_to("refresh nobody", &board).await["error"]
                .as_str()
                .is_some_and(|error| error.contains("nobody"))
        );
        for bad in ["", "status extra", "refresh a b", "REBOOT"] {
            assert!(reply_to(bad, &board).await["error"].is_string(), "{bad:?}");
        }
    }
}
