//! Test support: runs the real OAuth2 server `oidc-provider` (npm, not written
//! here) on loopback so the `oauth2` login preset can be proven against it.
//!
//! [`OidcProvider::start`] spawns `node tests/oidc/server.mjs`, which serves the
//! client credentials grant and token introspection for the static clients
//! named by the constants below, and waits for its `LISTENING <port>` line.
//! The server's stderr is collected and printed when a test panics while the
//! server is alive, so a failing test shows why the server refused a request.
//!
//! The server needs Node.js and `npm ci --prefix tests/oidc`. Without them
//! `start` warns loudly and returns `None` on a developer machine, but panics
//! when the `CI` environment variable is set, so CI can never silently skip.
//!
//! oidc-provider itself accepts either of `client_secret_basic` and
//! `client_secret_post` from any client with a secret; server.mjs adds a check
//! that turns a request authenticated the unregistered way into a 401
//! `invalid_client`, so the tests also prove the preset picks the right method.
//!
//! [`OidcProvider::start_with_jwt_keys`] also registers two `private_key_jwt`
//! clients whose key pairs the server makes at start; their private keys are
//! left as PKCS#8 PEM files in a directory the provider owns
//! ([`OidcProvider::rs256_key`], [`OidcProvider::es256_key`]).
//!
//! [`OidcProvider::start_with_mtls`] serves HTTPS with a certificate of a
//! test PKI, asks clients for certificates, and registers two RFC 8705
//! clients: [`MTLS_CLIENT_ID`] (`tls_client_auth`, by subject) and
//! [`SELF_SIGNED_CLIENT_ID`] (`self_signed_tls_client_auth`, by thumbprint).
//!
//! The server logs one `oidc request: <route> client <id> status <n>` line per
//! token or introspection request; [`OidcProvider::settled_log`] waits until
//! every earlier request is in the log, so tests can count requests.

// Each integration test uses only some of these helpers.
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Registered for `client_secret_basic`, allowed scopes `api:read api:write`.
pub const BASIC_CLIENT_ID: &str = "basic-client";
/// Holds every printable character that form-urlencoding before Base64 (RFC 6749
/// §2.3.1) changes. Sent without that encoding, the `%` makes oidc-provider
/// answer 400 `invalid_request`. Non-ASCII (e.g. `é`) is impossible: RFC 6749
/// Appendix A.2 limits secrets to VSCHAR (%x20-7E) and oidc-provider enforces it.
pub const BASIC_CLIENT_SECRET: &str = "b4s1c:s%cr+t/ x&y=z";
/// Registered for `client_secret_post`, allowed scope `api:read` only.
pub const POST_CLIENT_ID: &str = "post-client";
pub const POST_CLIENT_SECRET: &str = "p0st-client-secret";
/// The only client the introspection endpoint answers (`client_secret_basic`).
pub const INTROSPECTOR_CLIENT_ID: &str = "introspector";
pub const INTROSPECTOR_CLIENT_SECRET: &str = "introspector-secret";
/// Registered for `private_key_jwt` with RS256 and the public half of
/// [`OidcProvider::rs256_key`] under `kid` [`JWT_RS256_KID`]; scopes `api:read api:write`.
pub const JWT_RS256_CLIENT_ID: &str = "jwt-rs256-client";
pub const JWT_RS256_KID: &str = "rs-1";
/// Registered for `private_key_jwt` with ES256 (P-256) and the public half of
/// [`OidcProvider::es256_key`] under `kid` [`JWT_ES256_KID`]; scopes `api:read api:write`.
pub const JWT_ES256_CLIENT_ID: &str = "jwt-es256-client";
pub const JWT_ES256_KID: &str = "es-1";
/// Registered for `tls_client_auth` with the subject DN `CN=` [`MTLS_CLIENT_CN`], which must chain
/// to the test PKI's CA; scopes `api:read api:write`.
pub const MTLS_CLIENT_ID: &str = "mtls-client";
pub const MTLS_CLIENT_CN: &str = "tokenkeeper-client-1";
/// Registered for `self_signed_tls_client_auth` with the certificate `self-signed.pem` of the
/// directory given to [`OidcProvider::start_with_mtls`]; scope `api:read`.
pub const SELF_SIGNED_CLIENT_ID: &str = "self-signed-client";

/// How long [`OidcProvider::start`] waits for the `LISTENING` line.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for one introspection round trip on loopback.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// What a developer or CI runs once to install the server's npm packages.
const INSTALL_COMMAND: &str = "npm ci --prefix tests/oidc";

/// A running oidc-provider on 127.0.0.1; killed and reaped on drop.
pub struct OidcProvider {
    child: Child,
    /// Held open so the server, started with `OIDC_EXIT_ON_STDIN_EOF=1`, exits
    /// by itself if this test process dies without running `Drop`.
    _stdin: Option<ChildStdin>,
    port: u16,
    log: Arc<Mutex<String>>,
    /// Joined after a failed start so the panic shows all the server wrote.
    stderr_reader: Option<JoinHandle<()>>,
    /// Where the server wrote the `private_key_jwt` clients' private keys, if asked to; removed
    /// only after `Drop` has killed the server (fields are dropped after `drop` runs).
    jwt_keys: Option<tempfile::TempDir>,
    /// The CA of the server's HTTPS certificate, when it serves HTTPS.
    https_ca: Option<PathBuf>,
}

impl OidcProvider {
    /// Starts `node tests/oidc/server.mjs` with client credentials tokens living
    /// `ttl_seconds`, and waits (at most 20 s) until it listens.
    ///
    /// Returns `None`, after a loud warning on stderr, only when `node` is not on
    /// PATH or `tests/oidc/node_modules` is not installed and `CI` is unset; with
    /// `CI` set that panics instead. A server that fails to start always panics.
    pub fn start(ttl_seconds: u64) -> Option<OidcProvider> {
        OidcProvider::spawn(ttl_seconds, None, None)
    }

    /// Like [`OidcProvider::start`], and the server also makes an RSA 2048 and an EC P-256 key
    /// pair, writes their private keys (PKCS#8 PEM, mode 0600) to a new temporary directory before
    /// it listens, and registers [`JWT_RS256_CLIENT_ID`] and [`JWT_ES256_CLIENT_ID`] with the
    /// public halves.
    pub fn start_with_jwt_keys(ttl_seconds: u64) -> Option<OidcProvider> {
        let keys = tempfile::tempdir().expect("creating a directory for the server's keys failed");
        OidcProvider::spawn(ttl_seconds, Some(keys), None)
    }

    /// Like [`OidcProvider::start`], over HTTPS: `dir` holds a test PKI made by
    /// `Pki::generate(dir)` (`ca.pem`, `leaf.pem`, `leaf.key`) and `self-signed.pem`, the
    /// certificate [`SELF_SIGNED_CLIENT_ID`] is registered with. Every connection is asked for a
    /// client certificate, verified against `ca.pem` but not required, so that oidc-provider
    /// itself refuses a missing or untrusted one (`invalid_client`).
    pub fn start_with_mtls(ttl_seconds: u64, dir: &Path) -> Option<OidcProvider> {
        OidcProvider::spawn(ttl_seconds, None, Some(dir))
    }

    fn spawn(
        ttl_seconds: u64,
        jwt_keys: Option<tempfile::TempDir>,
        mtls_dir: Option<&Path>,
    ) -> Option<OidcProvider> {
        assert!(
            ttl_seconds > 0,
            "the oidc-provider token TTL must be at least 1 s"
        );
        let dir = server_dir();
        if let Some(missing) = missing_prerequisite(&dir) {
            skip_or_panic(&missing);
            return None;
        }

        let mut command = Command::new("node");
        command
            .arg(dir.join("server.mjs"))
            .arg("0")
            .current_dir(&dir)
            .env("OIDC_TTL_SECONDS", ttl_seconds.to_string())
            .env("OIDC_EXIT_ON_STDIN_EOF", "1")
            .env_remove("OIDC_JWT_KEYS_DIR")
            .env_remove("OIDC_MTLS_DIR");
        if let Some(keys) = &jwt_keys {
            command.env("OIDC_JWT_KEYS_DIR", keys.path());
        }
        if let Some(dir) = mtls_dir {
            command.env("OIDC_MTLS_DIR", dir);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning `node tests/oidc/server.mjs` failed although node ran before");

        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child
            .stderr
            .take()
            .expect("child stderr was requested as a pipe");
        let stderr_reader = collect_lines(stderr, Arc::clone(&log));
        let stdout = child
            .stdout
            .take()
            .expect("child stdout was requested as a pipe");
        let (port_tx, port_rx) = mpsc::channel();
        watch_stdout(stdout, port_tx, Arc::clone(&log));

        let mut provider = OidcProvider {
            _stdin: child.stdin.take(),
            child,
            port: 0,
            log,
            stderr_reader: Some(stderr_reader),
            jwt_keys,
            https_ca: mtls_dir.map(|dir| dir.join("ca.pem")),
        };
        match port_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(port)) => {
                provider.port = port;
                Some(provider)
            }
            Ok(Err(line)) => {
                provider.fail(&format!("printed {line:?} instead of `LISTENING <port>`"))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => provider.fail(&format!(
                "did not print `LISTENING <port>` within {START_TIMEOUT:?}"
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = match provider.child.wait() {
                    Ok(status) => status.to_string(),
                    Err(e) => format!("status unknown: {e}"),
                };
                provider.fail(&format!("exited before listening ({status})"))
            }
        }
    }

    /// `http://127.0.0.1:<port>` (`https` when started with [`OidcProvider::start_with_mtls`]),
    /// exactly as the server's discovery document says.
    pub fn issuer(&self) -> String {
        let scheme = if self.https_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// oidc-provider's default token endpoint path, `/token`.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer())
    }

    /// oidc-provider's default introspection endpoint path, `/token/introspection`.
    pub fn introspection_endpoint(&self) -> String {
        format!("{}/token/introspection", self.issuer())
    }

    /// The RSA private key (PKCS#8 PEM) of [`JWT_RS256_CLIENT_ID`]. Panics unless the server was
    /// started with [`OidcProvider::start_with_jwt_keys`].
    pub fn rs256_key(&self) -> PathBuf {
        self.jwt_key("rs256.pem")
    }

    /// The EC P-256 private key (PKCS#8 PEM) of [`JWT_ES256_CLIENT_ID`]. Panics unless the server
    /// was started with [`OidcProvider::start_with_jwt_keys`].
    pub fn es256_key(&self) -> PathBuf {
        self.jwt_key("es256.pem")
    }

    fn jwt_key(&self, file: &str) -> PathBuf {
        let keys = self
            .jwt_keys
            .as_ref()
            .expect("the server was started without OIDC_JWT_KEYS_DIR: use start_with_jwt_keys");
        let path = keys.path().join(file);
        assert!(
            path.is_file(),
            "oidc-provider listened without writing {}",
            path.display()
        );
        path
    }

    /// What the server has written to stderr so far: its warnings, one
    /// `oidc request: <route> client <id> status <n>` line per token or
    /// introspection request, and a line with the reason for each refused one.
    /// Lines of requests still in flight may be missing: see [`OidcProvider::settled_log`].
    pub fn log(&self) -> String {
        self.log
            .lock()
            .map(|log| log.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// The server's log once every request answered before this call is in it: makes one
    /// introspection request and waits (at most 10 s) for its line, which the server writes
    /// after those of all earlier requests. For counting requests that must not have happened.
    pub async fn settled_log(&self) -> String {
        let marker = "oidc request: introspection client introspector status 200";
        let before = self.log().matches(marker).count();
        // A token the server never issued: introspection answers 200 with `active: false`.
        assert!(!self.introspect("tokenkeeper-log-barrier").await);
        let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            let log = self.log();
            if log.matches(marker).count() > before {
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "oidc-provider answered an introspection request but did not log it:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many token requests naming `client_id` the server has logged, whatever their status.
    pub fn token_requests(log: &str, client_id: &str) -> usize {
        let prefix = format!("oidc request: token client {client_id} status ");
        log.lines().filter(|line| line.starts_with(&prefix)).count()
    }

    /// Asks the introspection endpoint (RFC 7662), as the introspector client,
    /// whether `token` is a live access token. Panics on anything but a 200 reply
    /// with a boolean `active`.
    pub async fn introspect(&self, token: &str) -> bool {
        // `introspection` has checked that `active` is a boolean.
        self.introspection(token).await["active"] == true
    }

    /// The introspection endpoint's whole reply (RFC 7662 §2.2) for `token`, asked as the
    /// introspector client: for an active token it names the `client_id` it was issued to and
    /// its `scope`. Panics on anything but a 200 reply with a JSON object.
    pub async fn introspection(&self, token: &str) -> serde_json::Value {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let reply = http_client(self.https_ca.as_deref())
            .post(self.introspection_endpoint())
            .header(
                "authorization",
                basic_authorization(INTROSPECTOR_CLIENT_ID, INTROSPECTOR_CLIENT_SECRET),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .expect("the introspection request to oidc-provider failed");
        let status = reply.status();
        let text = reply
            .text()
            .await
            .expect("reading oidc-provider's introspection reply failed");
        assert!(
            status.is_success(),
            "oidc-provider introspection answered {status}: {text}\nserver log:\n{}",
            self.log()
        );
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("introspection reply is not JSON ({e}): {text}"));
        assert!(
            json.get("active")
                .is_some_and(serde_json::Value::is_boolean),
            "introspection reply has no boolean `active`: {text}"
        );
        json
    }

    /// Kills the server and panics with `what` and everything it logged.
    fn fail(&mut self, what: &str) -> ! {
        self.stop();
        if let Some(reader) = self.stderr_reader.take() {
            // The pipe closed with the killed child; a panicked reader only loses log lines.
            let _ = reader.join();
        }
        // Taken rather than copied so that `Drop` does not print it a second time.
        let log = std::mem::take(&mut *self.log.lock().unwrap_or_else(|p| p.into_inner()));
        panic!("oidc-provider (node tests/oidc/server.mjs) {what}\nserver log:\n{log}");
    }

    fn stop(&mut self) {
        // The child may already have exited; killing it then is not an error worth reporting.
        let _ = self.child.kill();
        // Reaping only fails if the child was never spawned, which `start` rules out.
        let _ = self.child.wait();
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!("--- oidc-provider log ---\n{}--- end ---", self.log());
        }
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, per RFC 6749 §2.3.1.
fn basic_authorization(id: &str, secret: &str) -> String {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(id), encode(secret));
    format!("Basic {}", STANDARD.encode(pair))
}

/// A client for the server, trusting `https_ca` when it serves HTTPS; reqwest is
/// built without a bundled crypto provider, so rustls needs one installed before
/// any client exists, even for http URLs.
fn http_client(https_ca: Option<&Path>) -> reqwest::Client {
    // Err only means a provider is already installed (by the daemon or another
    // test), which is exactly what is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
    if let Some(ca) = https_ca {
        let pem = std::fs::read(ca).expect("reading the test CA failed");
        let ca = reqwest::Certificate::from_pem(&pem).expect("the test CA is not PEM");
        builder = builder.add_root_certificate(ca);
    }
    builder
        .build()
        .expect("building a reqwest client for oidc-provider failed")
}

fn server_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("oidc")
}

/// Why the server cannot be started on this machine, if it cannot.
fn missing_prerequisite(dir: &Path) -> Option<String> {
    match Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => {}
        Ok(status) => return Some(format!("`node --version` failed ({status}).")),
        Err(e) => {
            return Some(format!(
                "`node` could not be run ({e}); is Node.js on PATH?"
            ));
        }
    }
    let package = dir
        .join("node_modules")
        .join("oidc-provider")
        .join("package.json");
    if !package.is_file() {
        return Some(format!("{} is missing.", package.display()));
    }
    None
}

fn skip_or_panic(missing: &str) {
    let message = format!(
        "oidc-provider integration tests cannot run: {missing}\n\
         They need Node.js (20 or later) on PATH and the server's packages, installed with:\n\
         \n    {INSTALL_COMMAND}\n"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message}CI is set, so this is an error rather than a skip.");
    }
    let banner = format!(
        "\n\
         ************************************************************************\n\
         * WARNING: SKIPPING tests against the real OAuth2 server (oidc-provider)\n\
         ************************************************************************\n\
         {message}\
         ************************************************************************\n"
    );
    // Written to the process's stderr directly: `eprintln!` would be captured by
    // the test harness and hidden because the skipping test passes. A failed
    // write to stderr leaves nothing better to report it to.
    let _ = std::io::stderr().write_all(banner.as_bytes());
}

/// Forwards the first stdout line as the listening port (or the unexpected
/// line), then keeps draining stdout into the log so the server never blocks.
fn watch_stdout(
    stdout: impl Read + Send + 'static,
    port_tx: mpsc::Sender<Result<u16, String>>,
    log: Arc<Mutex<String>>,
) {
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let Some(Ok(first)) = lines.next() else {
            return; // stdout closed: the receiver sees Disconnected.
        };
        let port = first
            .strip_prefix("LISTENING ")
            .and_then(|port| port.trim().parse::<u16>().ok())
            .filter(|port| *port != 0);
        // The receiver is gone only if `start` already gave up; nothing to tell then.
        let _ = port_tx.send(port.ok_or(first));
        for line in lines.map_while(Result::ok) {
            append(&log, "stdout: ", &line);
        }
    });
}

/// Appends each line of `reader` to `log` until the pipe closes.
fn collect_lines(reader: impl Read + Send + 'static, log: Arc<Mutex<String>>) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            append(&log, "", &line);
        }
    })
}

fn append(log: &Mutex<String>, prefix: &str, line: &str) {
    let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    log.push_str(prefix);
    log.push_str(line);
    log.push('\n');
}
