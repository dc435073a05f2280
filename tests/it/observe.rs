//! Observing the daemon from outside, end to end: the status listener's `/livez`, `/readyz`,
//! `/metrics` and `/status` over real loopback HTTP (read by a raw HTTP/1.1 client written here,
//! by `promtool` and by a real Prometheus), and `tokenkeeper status`, `probe` and `refresh` on the
//! control socket, all against the real binary and real loopback token servers.
//!
//! - `/readyz` follows the token on disk: 503 naming the account once its token expired
//!   unrenewed, 200 again after recovery; `/livez` answers 200 all the while.
//! - `/metrics` passes `promtool check metrics`, carries every series, and its values are the
//!   truth: the expiry is the one in the json output, each login lands in its outcome's counter,
//!   a rejected reload shows as 0 until a good one (by SIGHUP, or by the running config's text
//!   put back in the file).
//! - A real Prometheus scrapes it and stores one expiry series per account.
//! - `status`, `status --json`, `probe live|ready` exit 0 against a ready daemon, 1 naming the
//!   account that is not ready, and 1 naming the socket when no daemon answers; `probe files`
//!   needs no daemon and names a file that is missing or expired.
//! - Wrong methods, oversized heads, unknown paths and a crowd of clients that send nothing
//!   neither starve `/livez` for long nor stop the daemon renewing.
//! - No body the listener serves and nothing `status` prints holds a secret or a token, plain or
//!   base64-encoded.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustix::process::Signal;
use tokenkeeper::demo::endpoint::{Credentials, EndpointOptions, Fault, Route, TokenEndpoint};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::{Daemon, replace_file, tokenkeeper, write_config, write_secret};

/// How long a daemon may take to reach a state a test polls for (a login, a listener that
/// answers, a reload): far more than the fraction of a second it takes, because the machine may
/// be loaded.
const SETTLE: Duration = Duration::from_secs(25);

/// Fast timings, as in `daemon.rs`, so that short lifetimes are renewed within seconds.
const FAST: &str = r#"refresh_at = 0.5
refresh_margin = "500ms"
min_refresh_interval = "300ms"
startup_spread = "100ms"
shutdown_grace = "3s"
"#;

/// Quick retries after a temporary failure.
const QUICK_RETRIES: &str = "retry_base = \"200ms\"\nretry_cap = \"1s\"\n";

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// One HTTP reply, as received.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// The status line and the headers.
    head: String,
    body: String,
}

impl Reply {
    /// The first value of a header, matched case-insensitively.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// The whole reply, head and body, for canary searches.
    fn whole(&self) -> String {
        format!("{}\r\n\r\n{}", self.head, self.body)
    }
}

/// Sends `request` as it is, reads to the end (at most 10 s in all) and parses the reply; `None`
/// when the connection fails, or closes before a status line.
async fn exchange(address: SocketAddr, request: &[u8]) -> Option<Reply> {
    exchange_from(None, address, request).await
}

/// Like [`exchange`], from the loopback address `source` (another peer than 127.0.0.1).
async fn exchange_from(
    source: Option<std::net::IpAddr>,
    address: SocketAddr,
    request: &[u8],
) -> Option<Reply> {
    let attempt = async {
        let mut stream = match source {
            None => TcpStream::connect(address).await.ok()?,
            Some(source) => {
                let socket = tokio::net::TcpSocket::new_v4().ok()?;
                socket.bind(SocketAddr::new(source, 0)).ok()?;
                socket.connect(address).await.ok()?
            }
        };
        stream.write_all(request).await.ok()?;
        let mut raw = Vec::new();
        // A reset after the reply (a server closing with bytes unread) keeps what was read.
        let _ = stream.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head
            .strip_prefix("HTTP/1.1 ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(Reply {
            status,
            head: head.to_string(),
            body: body.to_string(),
        })
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .ok()
        .flatten()
}

/// `method path` with `Connection: close`.
async fn request(address: SocketAddr, method: &str, path: &str) -> Option<Reply> {
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    exchange(address, text.as_bytes()).await
}

async fn get(address: SocketAddr, path: &str) -> Option<Reply> {
    request(address, "GET", path).await
}

/// Calls `attempt` every 50 ms until it gives a value or `limit` passes.
async fn until<T, F, Fut>(limit: Duration, mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = attempt().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `path` until its reply satisfies `wanted`; the reply, or a panic naming the last one.
async fn get_until(
    address: SocketAddr,
    path: &str,
    daemon: &Daemon,
    wanted: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = Instant::now() + SETTLE;
    let mut last = None;
    loop {
        if let Some(reply) = get(address, path).await {
            if wanted(&reply) {
                return reply;
            }
            last = Some(reply);
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} never as wanted; last: {last:?}\nlog:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The samples of a Prometheus exposition, keyed by name and labels, the labels sorted by name
/// (`name{a="1",b="2"}`), so that a key does not depend on the order they are written in.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let key = match series.split_once('{') {
                Some((name, labels)) => {
                    let mut labels: Vec<&str> = labels.strip_suffix('}')?.split(',').collect();
                    labels.sort_unstable();
                    format!("{name}{{{}}}", labels.join(","))
                }
                None => series.to_string(),
            };
            Some((key, value.parse().ok()?))
        })
        .collect()
}

fn sample(samples: &HashMap<String, f64>, series: &str, text: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

fn seconds_now() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1e3
}

fn seconds_of(timestamp: &str) -> f64 {
    let at: jiff::Timestamp = timestamp
        .parse()
        .unwrap_or_else(|_| panic!("{timestamp:?} is not a timestamp"));
    at.as_millisecond() as f64 / 1e3
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A scratch directory with an `out` directory for the token files and a path for the state.
struct Rig {
    scratch: tempfile::TempDir,
    out: PathBuf,
    state: PathBuf,
}

/// A daemon whose status listener answers.
struct Running {
    daemon: Daemon,
    address: SocketAddr,
    /// The config file's path.
    config: String,
    /// The config's text.
    text: String,
}

impl Rig {
    fn new() -> Rig {
        let scratch = tempfile::tempdir().expect("tempdir");
        let out = scratch.path().join("out");
        std::fs::create_dir(&out).expect("create out");
        let state = scratch.path().join("state");
        Rig {
            scratch,
            out,
            state,
        }
    }

    fn dir(&self) -> &Path {
        self.scratch.path()
    }

    fn secret(&self, name: &str, value: &str) -> PathBuf {
        write_secret(self.dir(), name, value)
    }

    /// The control socket of the configs this rig writes.
    fn socket(&self) -> String {
        self.state.join("control.sock").display().to_string()
    }

    /// The `[daemon]` table: the listener on `port`, the state here, then `keys`.
    fn daemon_table(&self, port: u16, keys: &str) -> String {
        format!(
            "[daemon]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\n{keys}\n",
            self.state.display()
        )
    }

    /// Writes the config `make` gives for a free port and starts the daemon; waits until its
    /// listener is up (its log says so: the port is the daemon's, not another test's) and
    /// answers. A port taken in the meantime is replaced by another, up to three times.
    async fn start(&self, make: impl Fn(u16) -> String) -> Running {
        for _ in 0..3 {
            let port = free_port();
            let text = make(port);
            let config = write_config(self.dir(), &text);
            let mut daemon = Daemon::start(&config, self.dir(), &[]);
            let deadline = Instant::now() + SETTLE;
            while !daemon.log().contains("status listener up") {
                if let Some(code) = daemon.child.try_wait().expect("wait") {
                    let log = daemon.log();
                    assert!(
                        log.contains("cannot listen on"),
                        "the daemon exited ({code:?}): {log}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the listener never came up: {}",
                    daemon.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if daemon.child.try_wait().expect("wait").is_some() {
                continue;
            }
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            get_until(address, "/livez", &daemon, |_| true).await;
            return Running {
                daemon,
                address,
                config,
                text,
            };
        }
        panic!("three ports in a row were taken");
    }
}

/// A port nobody listens on just now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port")
        .port()
}

/// An apinizer account logging in at `base` with the secret in `secret`, writing `outputs`
/// (a path, and `Some(format)` or `None` for a raw file).
fn apinizer(name: &str, base: &str, secret: &Path, outputs: &[(&Path, Option<&str>)]) -> String {
    let mut text = format!(
        "\n[accounts.{name}]\npreset = \"apinizer\"\nbase_url = \"{base}\"\nclient_id = \"{id}\"\nclient_secret = {{ file = \"{secret}\" }}\n",
        id = Credentials::demo().apinizer_client_id,
        secret = secret.display(),
    );
    for (path, format) in outputs {
        text += &format!(
            "[[accounts.{name}.outputs]]\npath = \"{}\"\n",
            path.display()
        );
        if let Some(format) = format {
            text += &format!("format = \"{format}\"\n");
        }
    }
    text
}

fn endpoint_address(endpoint: &TokenEndpoint) -> SocketAddr {
    endpoint
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .expect("the endpoint's address")
}

/// A TCP proxy in front of a server: forwards while up; while down, accepts connections and
/// drops them at once, and cuts the ones it was forwarding (so that no pooled connection carries
/// a login through).
struct Proxy {
    address: SocketAddr,
    up: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address");
        let up = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&up);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let flag = Arc::clone(&flag);
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let down = async {
                        while flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = down => {}
                    }
                });
            }
        });
        Proxy { address, up, task }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One of the Prometheus tools, or `None` (with a loud notice) when it is not installed and CI
/// is not set; under CI a missing tool fails the test.
fn prometheus_tool(path: &str, test: &str) -> Option<PathBuf> {
    if Path::new(path).exists() {
        return Some(PathBuf::from(path));
    }
    if std::env::var_os("CI").is_some() {
        panic!("{path} is missing under CI (.ci/run installs Debian's prometheus package)");
    }
    eprintln!("\n*** SKIPPED {test}: {path} is not installed (Debian package prometheus) ***\n");
    None
}

/// Runs `tokenkeeper ARGS -c CONFIG` and returns the run.
async fn cli(args: &[&str], config: &str) -> crate::support::Run {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-c", config]);
    tokenkeeper(&all, &[]).await
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The endpoint goes away behind a proxy; the token (6 s) expires unrenewed: `/readyz` turns 503
/// naming the account and the expiry; the endpoint comes back: `/readyz` is 200 again. `/livez`
/// is polled the whole time and is never anything but 200: an unready daemon is not a dead one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_naming_an_expired_token_and_recovers_while_livez_stays_200() {
    let endpoint = TokenEndpoint::start(EndpointOptions {
        lifetime: Duration::from_secs(6),
        ..EndpointOptions::default()
    })
    .await
    .expect("start the endpoint");
    let proxy = Proxy::start(endpoint_address(&endpoint)).await;
    let rig = Rig::new();
    let secret = rig.secret("secret", &Credentials::demo().apinizer_client_secret);
    let token_file = rig.out.join("api.token");
    let running = rig
        .start(|port| {
            rig.daemon_table(
                port,
                &format!("{FAST}retry_base = \"1s\"\nretry_cap = \"2s\"\n"),
            ) + &apinizer("api", &proxy.base_url(), &secret, &[(&token_file, None)])
        })
        .await;
    let (address, daemon) = (running.address, &running.daemon);

    let watching = Arc::new(AtomicBool::new(true));
    let watcher = tokio::spawn({
        let watching = Arc::clone(&watching);
        async move {
            let mut answers = Vec::new();
            while watching.load(Ordering::SeqCst) {
                answers.push(get(address, "/livez").await.map(|reply| reply.status));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answers
        }
    });

    get_until(address, "/readyz", daemon, |reply| reply.status == 200).await;
    let logins_before = endpoint.issued(Route::Apinizer);
    proxy.set_up(false);
    let unready = get_until(address, "/readyz", daemon, |reply| {
        reply.status == 503 && reply.body.contains("token expired at")
    })
    .await;
    assert!(
        unready
            .body
            .lines()
            .any(|line| line.starts_with("api: token expired at")),
        "{unready:?}"
    );
    assert_eq!(
        endpoint.issued(Route::Apinizer),
        logins_before,
        "a login got through the proxy while it was down"
    );
    // The daemon knows too: the account is unhealthy, and its expired file is gone (on_expiry
    // is `remove` by default).
    get_until(address, "/status", daemon, |reply| {
        serde_json::from_str::<serde_json::Value>(&reply.body).is_ok_and(|document| {
            document["ready"] == false && document["accounts"][0]["health"] == "unhealthy"
        })
    })
    .await;
    assert!(
        until(SETTLE, || {
            let gone = !token_file.exists();
            async move { gone.then_some(()) }
        })
        .await
        .is_some(),
        "the expired token file stayed: {}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("login failed"),
        "no failed login while the endpoint was down: {}",
        daemon.log()
    );
    proxy.set_up(true);
    get_until(address, "/readyz", daemon, |reply| reply.status == 200).await;
    let token = std::fs::read_to_string(&token_file).expect("the token file is back");
    assert!(endpoint.is_live(&token), "{}", daemon.log());

    watching.store(false, Ordering::SeqCst);
    let answers = watcher.await.expect("the livez watcher");
    assert!(answers.len() >= 20, "only {} livez polls", answers.len());
    assert!(
        answers.iter().all(|answer| *answer == Some(200)),
        "/livez answered {answers:?}"
    );
}

/// A daemon with three accounts: `good` logs in at once (raw and json outputs), `bad` has a
/// wrong secret (rejected), `flaky` (on a second endpoint) gets an HTML page and a 503 before its
/// login succeeds. Fields drop in order: the daemon before its directory.
struct ThreeAccounts {
    running: Running,
    /// The first `/metrics` reply once all three had their logins.
    reply: Reply,
    json_file: PathBuf,
    endpoint: TokenEndpoint,
    _flaky_endpoint: TokenEndpoint,
    _rig: Rig,
}

async fn three_accounts() -> ThreeAccounts {
    let endpoint = TokenEndpoint::start(EndpointOptions::default())
        .await
        .expect("start the endpoint");
    let flaky_endpoint = TokenEndpoint::start(EndpointOptions::default())
        .await
        .expect("start the second endpoint");
    flaky_endpoint.push_fault(Fault::Html200);
    flaky_endpoint.push_fault(Fault::Status {
        status: 503,
        content_type: "text/plain".into(),
        body: "busy".into(),
        headers: vec![],
    });
    let rig = Rig::new();
    let secret = rig.secret("secret", &Credentials::demo().apinizer_client_secret);
    let wrong = rig.secret("wrong", "not-the-password");
    let json_file = rig.out.join("good.json");
    let running = rig
        .start(|port| {
            rig.daemon_table(port, &format!("{FAST}{QUICK_RETRIES}"))
                + &apinizer(
                    "good",
                    &endpoint.base_url(),
                    &secret,
                    &[
                        (&rig.out.join("good.token"), None),
                        (&json_file, Some("json")),
                    ],
                )
                + &apinizer(
                    "bad",
                    &endpoint.base_url(),
                    &wrong,
                    &[(&rig.out.join("bad.token"), None)],
                )
                + &apinizer(
                    "flaky",
                    &flaky_endpoint.base_url(),
                    &secret,
                    &[(&rig.out.join("flaky.token"), None)],
                )
        })
        .await;
    let reply = get_until(running.address, "/metrics", &running.daemon, |reply| {
        let have = samples(&reply.body);
        [
            "tokenkeeper_token_ready{account=\"good\"}",
            "tokenkeeper_token_ready{account=\"flaky\"}",
            "tokenkeeper_logins_total{account=\"bad\",outcome=\"rejected\"}",
        ]
        .iter()
        .all(|series| have.get(*series) == Some(&1.0))
    })
    .await;
    ThreeAccounts {
        running,
        reply,
        json_file,
        endpoint,
        _flaky_endpoint: flaky_endpoint,
        _rig: rig,
    }
}

/// `promtool check metrics` accepts the exposition of a daemon whose every family has series
/// (counters, the histogram, failures, the reload gauges).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_check_metrics() {
    let Some(promtool) =
        prometheus_tool("/usr/bin/promtool", "metrics_pass_promtool_check_metrics")
    else {
        return;
    };
    let fixture = three_accounts().await;
    let text = &fixture.reply.body;
    use std::io::Write as _;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let output = child.wait_with_output().expect("promtool");
    assert!(
        output.status.success(),
        "promtool check metrics ({}): {}{}\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `/metrics` has every series, and each value is the truth: the expiry is the json output's,
/// each login is counted under its outcome, a rejected account is parked; a rejected reload
/// shows as 0 (the running config kept), a good one as 1 again with a newer success time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_tell_the_truth_about_logins_expiry_and_reloads() {
    let started = seconds_now();
    let fixture = three_accounts().await;
    let (running, reply, json_file, endpoint) = (
        &fixture.running,
        &fixture.reply,
        &fixture.json_file,
        &fixture.endpoint,
    );
    let (address, daemon) = (running.address, &running.daemon);
    assert_eq!(reply.status, 200);
    // A client that does not ask for OpenMetrics gets the classic text format …
    assert!(
        reply
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/plain; version=0.0.4")),
        "{reply:?}"
    );
    assert!(!reply.body.contains("# EOF"), "{}", reply.body);
    // … and Prometheus, which asks, gets OpenMetrics.
    let asking = format!(
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\nConnection: close\r\n\r\n"
    );
    let open = exchange(address, asking.as_bytes()).await.expect("metrics");
    assert!(
        open.header("content-type")
            .is_some_and(|value| value.starts_with("application/openmetrics-text")),
        "{open:?}"
    );
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);
    let text = &reply.body;
    let have = samples(text);
    let value = |series: &str| sample(&have, series, text);

    // The expiry is the json output's (which shows whole seconds).
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json_file).expect("the json output"))
            .expect("json output");
    let file_expiry = seconds_of(document["expires_at"].as_str().expect("expires_at"));
    let expiry = value("tokenkeeper_token_expiry_timestamp_seconds{account=\"good\"}");
    assert_eq!(expiry.floor(), file_expiry, "{text}");
    assert!(expiry > seconds_now() + 3000.0, "{text}");
    assert_eq!(
        value("tokenkeeper_token_expiry_timestamp_seconds{account=\"bad\"}"),
        0.0
    );
    for (account, ready) in [("good", 1.0), ("flaky", 1.0), ("bad", 0.0)] {
        assert_eq!(
            value(&format!("tokenkeeper_token_ready{{account=\"{account}\"}}")),
            ready,
            "{account}: {text}"
        );
    }
    let now = seconds_now();
    let last_success = value("tokenkeeper_last_success_timestamp_seconds{account=\"good\"}");
    assert!(
        (started - 1.0..=now + 1.0).contains(&last_success),
        "{last_success} not in [{started}, {now}]"
    );
    assert_eq!(
        value("tokenkeeper_last_success_timestamp_seconds{account=\"bad\"}"),
        0.0
    );
    let next = value("tokenkeeper_next_refresh_timestamp_seconds{account=\"good\"}");
    assert!(
        now < next && next < expiry,
        "next refresh {next}, expiry {expiry}"
    );
    // A rejected account is parked for about half an hour.
    let parked = value("tokenkeeper_next_refresh_timestamp_seconds{account=\"bad\"}");
    assert!(
        parked > now + 20.0 * 60.0,
        "bad retries at {parked}, now {now}"
    );
    for (account, failures) in [("good", 0.0), ("flaky", 0.0), ("bad", 1.0)] {
        assert_eq!(
            value(&format!(
                "tokenkeeper_consecutive_failures{{account=\"{account}\"}}"
            )),
            failures,
            "{account}: {text}"
        );
    }
    let expected_logins = [
        ("good", [1.0, 0.0, 0.0, 0.0]),
        ("bad", [0.0, 0.0, 1.0, 0.0]),
        ("flaky", [1.0, 1.0, 0.0, 1.0]),
    ];
    for (account, counts) in expected_logins {
        for (outcome, count) in ["ok", "transient", "rejected", "protocol"]
            .iter()
            .zip(counts)
        {
            assert_eq!(
                value(&format!(
                    "tokenkeeper_logins_total{{account=\"{account}\",outcome=\"{outcome}\"}}"
                )),
                count,
                "{account} {outcome}: {text}"
            );
        }
        let total: f64 = counts.iter().sum();
        assert_eq!(
            value(&format!(
                "tokenkeeper_login_duration_seconds_count{{account=\"{account}\"}}"
            )),
            total,
            "{account}: {text}"
        );
        assert_eq!(
            value(&format!(
                "tokenkeeper_login_duration_seconds_bucket{{account=\"{account}\",le=\"+Inf\"}}"
            )),
            total,
            "{account}: {text}"
        );
        let sum = value(&format!(
            "tokenkeeper_login_duration_seconds_sum{{account=\"{account}\"}}"
        ));
        assert!((0.0..30.0).contains(&sum), "{account}: {sum}");
        assert_eq!(
            value(&format!(
                "tokenkeeper_write_failures_total{{account=\"{account}\"}}"
            )),
            0.0
        );
    }
    assert_eq!(value("tokenkeeper_config_last_reload_successful"), 1.0);
    let loaded_at = value("tokenkeeper_config_last_reload_success_timestamp_seconds");
    assert!(
        (started - 1.0..=now + 1.0).contains(&loaded_at),
        "{loaded_at} not in [{started}, {now}]"
    );
    assert_eq!(
        value(&format!(
            "tokenkeeper_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    for family in [
        "tokenkeeper_token_expiry_timestamp_seconds gauge",
        "tokenkeeper_token_ready gauge",
        "tokenkeeper_last_success_timestamp_seconds gauge",
        "tokenkeeper_next_refresh_timestamp_seconds gauge",
        "tokenkeeper_consecutive_failures gauge",
        "tokenkeeper_logins_total counter",
        "tokenkeeper_login_duration_seconds histogram",
        "tokenkeeper_write_failures_total counter",
        "tokenkeeper_config_last_reload_successful gauge",
        "tokenkeeper_config_last_reload_success_timestamp_seconds gauge",
        "tokenkeeper_build_info gauge",
    ] {
        assert!(
            text.lines().any(|line| line == format!("# TYPE {family}")),
            "no # TYPE {family}: {text}"
        );
    }

    // A config that does not parse, by SIGHUP: 0, the running config kept.
    replace_file(
        Path::new(&running.config),
        &format!("{}\n[daemon\n", running.text),
    );
    daemon.signal(Signal::HUP);
    let reply = get_until(address, "/metrics", daemon, |reply| {
        samples(&reply.body).get("tokenkeeper_config_last_reload_successful") == Some(&0.0)
    })
    .await;
    let have = samples(&reply.body);
    assert_eq!(
        sample(
            &have,
            "tokenkeeper_config_last_reload_success_timestamp_seconds",
            &reply.body
        ),
        loaded_at,
        "a rejected reload moved the success time"
    );
    assert_eq!(
        sample(
            &have,
            "tokenkeeper_token_ready{account=\"good\"}",
            &reply.body
        ),
        1.0
    );
    // The good config back, by SIGHUP: 1, with a newer success time, and no new login.
    replace_file(Path::new(&running.config), &running.text);
    daemon.signal(Signal::HUP);
    let reply = get_until(address, "/metrics", daemon, |reply| {
        samples(&reply.body).get("tokenkeeper_config_last_reload_successful") == Some(&1.0)
    })
    .await;
    let have = samples(&reply.body);
    let reloaded_at = sample(
        &have,
        "tokenkeeper_config_last_reload_success_timestamp_seconds",
        &reply.body,
    );
    assert!(reloaded_at > loaded_at, "{reloaded_at} <= {loaded_at}");
    assert_eq!(
        sample(
            &have,
            "tokenkeeper_logins_total{account=\"good\",outcome=\"ok\"}",
            &reply.body
        ),
        1.0,
        "an unchanged reload logged in again"
    );
    assert_eq!(endpoint.issued(Route::Apinizer), 1);
}

/// Kills the child it holds when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real Prometheus scraping every second stores one expiry series per account, with the value
/// the daemon reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_one_expiry_series_per_account() {
    let test = "a_real_prometheus_scrapes_one_expiry_series_per_account";
    let Some(prometheus) = prometheus_tool("/usr/bin/prometheus", test) else {
        return;
    };
    let endpoint = TokenEndpoint::start(EndpointOptions::default())
        .await
        .expect("start the endpoint");
    let rig = Rig::new();
    let secret = rig.secret("secret", &Credentials::demo().apinizer_client_secret);
    let running = rig
        .start(|port| {
            let mut text = rig.daemon_table(port, FAST);
            for name in ["alpha", "beta"] {
                let output = rig.out.join(format!("{name}.token"));
                text += &apinizer(name, &endpoint.base_url(), &secret, &[(&output, None)]);
            }
            text
        })
        .await;
    let (address, daemon) = (running.address, &running.daemon);
    get_until(address, "/readyz", daemon, |reply| reply.status == 200).await;

    let data = rig.dir().join("prometheus");
    std::fs::create_dir(&data).expect("prometheus dir");
    let config = data.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tokenkeeper\n    static_configs:\n      - targets: [\"{address}\"]\n"
        ),
    )
    .expect("write prometheus.yml");
    let prometheus_log = data.join("prometheus.log");
    let mut guard = None;
    let mut prometheus_address = None;
    for _ in 0..3 {
        let port = free_port();
        let child = std::process::Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&prometheus_log).expect("prometheus log"))
            .spawn()
            .expect("start prometheus");
        let mut child = KillOnDrop(child);
        let here = SocketAddr::from(([127, 0, 0, 1], port));
        let up = until(SETTLE, || {
            let exited = child.0.try_wait().ok().flatten().is_some();
            let answer = get(here, "/-/ready");
            async move {
                if exited {
                    return Some(false);
                }
                answer
                    .await
                    .filter(|reply| reply.status == 200)
                    .map(|_| true)
            }
        })
        .await;
        let log = std::fs::read_to_string(&prometheus_log).unwrap_or_default();
        match up {
            Some(true) => {
                guard = Some(child);
                prometheus_address = Some(here);
                break;
            }
            Some(false) if log.contains("address already in use") => continue,
            _ => panic!("prometheus did not come up: {log}"),
        }
    }
    let (_guard, prometheus_address) = (
        guard.expect("prometheus started"),
        prometheus_address.expect("prometheus address"),
    );

    let expected: BTreeSet<String> = ["alpha", "beta"].map(String::from).into();
    let series = until(Duration::from_secs(30), || {
        let reply = get(
            prometheus_address,
            "/api/v1/query?query=tokenkeeper_token_expiry_timestamp_seconds",
        );
        let expected = &expected;
        async move {
            let reply = reply.await?;
            let document: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
            let result = document["data"]["result"].as_array()?.clone();
            let accounts: BTreeSet<String> = result
                .iter()
                .filter_map(|series| series["metric"]["account"].as_str().map(String::from))
                .collect();
            (result.len() == 2 && accounts == *expected).then_some(result)
        }
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "prometheus never stored both series; its log:\n{}",
            std::fs::read_to_string(&prometheus_log).unwrap_or_default()
        )
    });

    let status: serde_json::Value =
        serde_json::from_str(&get(address, "/status").await.expect("GET /status").body)
            .expect("status json");
    for stored in &series {
        let account = stored["metric"]["account"].as_str().expect("account");
        assert_eq!(stored["metric"]["job"], "tokenkeeper", "{stored}");
        let value: f64 = stored["value"][1]
            .as_str()
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no value in {stored}"));
        let reported = status["accounts"]
            .as_array()
            .expect("accounts")
            .iter()
            .find(|entry| entry["account"] == account)
            .and_then(|entry| entry["expires_at"].as_str())
            .map(seconds_of)
            .unwrap_or_else(|| panic!("{account} not in {status}"));
        assert!(
            (value - reported).abs() < 0.01,
            "{account}: prometheus stored {value}, the daemon says {reported}"
        );
    }
}

/// Before the daemon starts and after it stopped, `status`, `probe live`, `probe ready` and
/// `refresh` exit 1 saying no daemon answers on the socket; against the ready daemon they exit
/// 0 (and `refresh` gets a new token); `/status` has one object per account with every field.
/// After a clean stop `probe files` still passes on the raw and json outputs, and names a
/// missing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_probes_answer_from_a_ready_daemon_and_say_plainly_when_none_answers() {
    let endpoint = TokenEndpoint::start(EndpointOptions::default())
        .await
        .expect("start the endpoint");
    let rig = Rig::new();
    let secret = rig.secret("secret", &Credentials::demo().apinizer_client_secret);
    let raw_file = rig.out.join("api.token");
    let json_file = rig.out.join("api.json");
    let make = |port| {
        rig.daemon_table(port, &format!("{FAST}refresh_request_interval = \"1s\"\n"))
            + &apinizer(
                "api",
                &endpoint.base_url(),
                &secret,
                &[(&raw_file, None), (&json_file, Some("json"))],
            )
    };
    let no_daemon = |what: &str, run: &crate::support::Run| {
        assert_eq!(run.code, 1, "{what}: {run:?}");
        assert!(
            run.stderr.contains("no daemon answers on") && run.stderr.contains(&rig.socket()),
            "{what}: {run:?}"
        );
    };
    // Never started.
    let config = write_config(rig.dir(), &make(free_port()));
    for args in [
        &["status"][..],
        &["probe", "live"],
        &["probe", "ready"],
        &["refresh"],
    ] {
        no_daemon(
            &format!("{args:?} before the start"),
            &cli(args, &config).await,
        );
    }

    let mut running = rig.start(make).await;
    let (address, config) = (running.address, running.config.clone());
    get_until(address, "/readyz", &running.daemon, |reply| {
        reply.status == 200
    })
    .await;
    let reply = get(address, "/status").await.expect("GET /status");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let document: serde_json::Value = serde_json::from_str(&reply.body).expect("status json");
    assert_eq!(document["ready"], true, "{document}");
    let accounts = document["accounts"].as_array().expect("accounts");
    assert_eq!(accounts.len(), 1, "{document}");
    let entry = &accounts[0];
    let keys: BTreeSet<&str> = entry
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "account",
            "health",
            "ready",
            "expires_at",
            "next_refresh",
            "last_success",
            "last_error",
            "consecutive_failures",
            "outputs",
            "fleet",
        ]),
        "{entry}"
    );
    // Not a fleet account.
    assert!(entry["fleet"].is_null(), "{entry}");
    assert_eq!(entry["account"], "api");
    assert_eq!(entry["health"], "healthy");
    assert_eq!(entry["ready"], true);
    assert!(entry["last_error"].is_null(), "{entry}");
    assert_eq!(entry["consecutive_failures"], 0);
    assert_eq!(
        entry["outputs"],
        serde_json::json!([
            raw_file.display().to_string(),
            json_file.display().to_string()
        ])
    );
    let now = seconds_now();
    let expires = seconds_of(entry["expires_at"].as_str().expect("expires_at"));
    let next = seconds_of(entry["next_refresh"].as_str().expect("next_refresh"));
    let success = seconds_of(entry["last_success"].as_str().expect("last_success"));
    assert!(success <= now && now < next && next < expires, "{entry}");
    let output: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_file).expect("json output"))
            .expect("json output");
    assert_eq!(
        expires.floor(),
        seconds_of(output["expires_at"].as_str().expect("expires_at"))
    );

    let table = cli(&["status"], &config).await;
    assert_eq!(table.code, 0, "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ACCOUNT") && lines[0].contains("HEALTH"),
        "{table:?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("api ") && line.contains("healthy")),
        "{table:?}"
    );
    assert_eq!(lines.last(), Some(&"1 of 1 accounts ready"), "{table:?}");
    let json = cli(&["status", "--json"], &config).await;
    assert_eq!(json.code, 0, "{json:?}");
    let from_cli: serde_json::Value = serde_json::from_str(&json.stdout).expect("status --json");
    assert_eq!(from_cli["ready"], true, "{from_cli}");
    assert_eq!(from_cli["accounts"][0]["account"], "api", "{from_cli}");
    assert_eq!(from_cli["accounts"][0]["expires_at"], entry["expires_at"]);
    for what in ["ready", "live"] {
        let probe = cli(&["probe", what], &config).await;
        assert_eq!(probe.code, 0, "probe {what}: {probe:?}");
    }
    let token = std::fs::read_to_string(&raw_file).expect("token");
    let refresh = cli(&["refresh"], &config).await;
    assert_eq!(refresh.code, 0, "{refresh:?}");
    assert_eq!(refresh.stdout, "refresh requested for 1 account(s): api\n");
    let renewed = until(SETTLE, || {
        let now = std::fs::read_to_string(&raw_file).ok();
        let ready = get(address, "/readyz");
        let token = &token;
        async move {
            let now = now.filter(|now| now != token)?;
            ready.await.filter(|reply| reply.status == 200)?;
            Some(now)
        }
    })
    .await
    .unwrap_or_else(|| panic!("refresh brought no new token: {}", running.daemon.log()));
    assert!(endpoint.is_live(&renewed));
    assert_eq!(endpoint.issued(Route::Apinizer), 2);

    running.daemon.signal(Signal::TERM);
    assert_eq!(
        running.daemon.wait(Duration::from_secs(10)).await,
        Some(0),
        "{}",
        running.daemon.log()
    );
    for args in [
        &["status"][..],
        &["probe", "live"],
        &["probe", "ready"],
        &["refresh"],
    ] {
        no_daemon(
            &format!("{args:?} after the stop"),
            &cli(args, &config).await,
        );
    }
    let files = cli(&["probe", "files"], &config).await;
    assert_eq!(files.code, 0, "the stop took the files: {files:?}");
    std::fs::remove_file(&raw_file).expect("remove the raw output");
    let files = cli(&["probe", "files"], &config).await;
    assert_eq!(files.code, 1, "{files:?}");
    assert!(
        files
            .stderr
            .contains(&format!("api: {}: missing", raw_file.display())),
        "{files:?}"
    );
    assert!(
        !files.stderr.contains(&json_file.display().to_string()),
        "{files:?}"
    );
}

/// With one account's secret wrong from the start, `probe ready` exits 1 naming it (and only
/// it), `/readyz` is 503 naming it, `status` shows it `rejected`, and `/status` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_ready_fails_naming_a_rejected_account_and_status_shows_it() {
    let endpoint = TokenEndpoint::start(EndpointOptions::default())
        .await
        .expect("start the endpoint");
    let rig = Rig::new();
    let secret = rig.secret("secret", &Credentials::demo().apinizer_client_secret);
    let wrong = rig.secret("wrong", "not-the-password");
    let running = rig
        .start(|port| {
            rig.daemon_table(port, FAST)
                + &apinizer(
                    "good",
                    &endpoint.base_url(),
                    &secret,
                    &[(&rig.out.join("good.token"), None)],
                )
                + &apinizer(
                    "bad",
                    &endpoint.base_url(),
                    &wrong,
                    &[(&rig.out.join("bad.token"), None)],
                )
        })
        .await;
    let (address, daemon) = (running.address, &running.daemon);
    let reply = get_until(address, "/status", daemon, |reply| {
        serde_json::from_str::<serde_json::Value>(&reply.body).is_ok_and(|document| {
            document["accounts"][0]["health"] == "rejected"
                && document["accounts"][1]["ready"] == true
        })
    })
    .await;
    let document: serde_json::Value = serde_json::from_str(&reply.body).expect("status json");
    assert_eq!(document["ready"], false, "{document}");
    let bad = &document["accounts"][0];
    assert_eq!(bad["account"], "bad", "{document}");
    assert_eq!(bad["ready"], false);
    assert!(bad["expires_at"].is_null(), "{bad}");
    assert_eq!(bad["consecutive_failures"], 1);
    let error = bad["last_error"].as_str().expect("last_error");
    assert!(error.contains("401"), "{bad}");

    let readyz = get(address, "/readyz").await.expect("GET /readyz");
    assert_eq!(readyz.status, 503);
    assert!(
        readyz.body.starts_with("bad: credentials rejected"),
        "{readyz:?}"
    );
    assert!(!readyz.body.contains("good"), "{readyz:?}");

    let probe = cli(&["probe", "ready"], &running.config).await;
    assert_eq!(probe.code, 1, "{probe:?}");
    assert!(
        probe.stderr.contains("bad: credentials rejected"),
        "{probe:?}"
    );
    assert!(!probe.stderr.contains("good"), "{probe:?}");
    let live = cli(&["probe", "live"], &running.config).await;
    assert_eq!(live.code, 0, "an unready daemon is still live: {live:?}");
    let table = cli(&["status"], &running.config).await;
    assert_eq!(table.code, 0, "{table:?}");
    assert!(
        table.stdout.lines().any(|line| line.starts_with("bad ")
            && line.contains("rejected")
            && line.contains("401")),
        "{table:?}"
    );
    assert!(
        table
            .stdout
            .lines()
            .any(|line| line.starts_with("good ") && line.contains("healthy")),
        "{table:?}"
    );
    assert!(
        table.stdout.ends_with("1 of 2 accounts ready\n"),
        "{table:?}"
    );
}

/// `probe files` needs no daemon: right after a clean stop the raw and json outputs pass; once
/// the 8 s token expired with nobody to renew it, it exits 1 naming both files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_files_passes_after_a_clean_stop_and_names_outputs_whose_token_expired() {
    let endpoint = TokenEndpoint::start(EndpointOptions {
        lifetime: Duration::from_secs(8),
        ..EndpointOptions::default()
    })
    .await
    .expect("start the endpoint");
    let rig = Rig::new();
    let secret = rig.secret("secret", &Credentials::demo().apinizer_client_secret);
    let raw_file = rig.out.join("api.token");
    let json_file = rig.out.join("api.json");
    let mut running = rig
        .start(|port| {
            rig.daemon_table(port, FAST)
                + &apinizer(
                    "api",
                    &endpoint.base_url(),
                    &secret,
                    &[(&raw_file, None), (&json_file, Some("json"))],
                )
        })
        .await;
    get_until(running.address, "/readyz", &running.daemon, |reply| {
        reply.status == 200
    })
    .await;
    running.daemon.signal(Signal::TERM);
    assert_eq!(
        running.daemon.wait(Duration::from_secs(10)).await,
        Some(0),
        "{}",
        running.daemon.log()
    );
    let files = cli(&["probe", "files"], &running.config).await;
    assert_eq!(files.code, 0, "{files:?}");
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_file).expect("json output"))
            .expect("json output");
    let expires = seconds_of(document["expires_at"].as_str().expect("expires_at"));

    let expired = until(SETTLE, || {
        let run = cli(&["probe", "files"], &running.config);
        let (raw_file, json_file) = (&raw_file, &json_file);
        // The json output shows whole seconds, so it may expire up to a second before the raw.
        async move {
            Some(run.await).filter(|run| {
                run.code != 0
                    && [raw_file, json_file]
                        .iter()
                        .all(|file| run.stderr.contains(&file.display().to_string()))
            })
        }
    })
    .await
    .expect("probe files never named both files");
    assert!(
        seconds_now() >= expires,
        "probe files failed before the token expired: {expired:?}"
    );
    assert_eq!(expired.code, 1, "{expired:?}");
    for file in [&raw_file, &json_file] {
        assert!(
            expired
                .stderr
                .contains(&format!("api: {}: its token expired at", file.display())),
            "{expired:?}"
        );
    }
}

/// Wrong methods, a head over 16 KiB, unknown paths and 100 clients that connect and send
/// nothing: each gets its refusal, the excess clients are closed at once and the rest at the
/// header timeout, `/livez` answers within seconds, and the daemon goes on renewing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_silent_clients_never_disturb_the_daemon() {
    let endpoint = TokenEndpoint::start(EndpointOptions {
        lifetime: Duration::from_secs(6),
        ..EndpointOptions::default()
    })
    .await
    .expect("start the endpoint");
    let rig = Rig::new();
    let secret = rig.secret("secret", &Credentials::demo().apinizer_client_secret);
    let token_file = rig.out.join("api.token");
    let mut running = rig
        .start(|port| {
            rig.daemon_table(port, &format!("{FAST}{QUICK_RETRIES}"))
                + &apinizer("api", &endpoint.base_url(), &secret, &[(&token_file, None)])
        })
        .await;
    let address = running.address;
    get_until(address, "/readyz", &running.daemon, |reply| {
        reply.status == 200
    })
    .await;

    for (method, path) in [
        ("POST", "/metrics"),
        ("PUT", "/readyz"),
        ("DELETE", "/status"),
    ] {
        let reply = request(address, method, path)
            .await
            .unwrap_or_else(|| panic!("no answer to {method} {path}"));
        assert_eq!(reply.status, 405, "{method} {path}: {reply:?}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{reply:?}");
    }
    for path in ["/", "/nope", "/metrics/extra", "/livez.html"] {
        let reply = get(address, path).await.expect("an answer");
        assert_eq!(reply.status, 404, "{path}: {reply:?}");
    }
    let huge = format!(
        "GET /livez HTTP/1.1\r\nHost: {address}\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let reply = exchange(address, huge.as_bytes()).await;
    assert!(
        matches!(reply.as_ref().map(|reply| reply.status), None | Some(431)),
        "a head over 16 KiB: {reply:?}"
    );

    // 100 clients that send nothing, each watched until the daemon closes it.
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        silent.push(tokio::spawn(async move {
            let mut buffer = [0u8; 64];
            let closed = tokio::time::timeout(Duration::from_secs(40), async {
                loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            closed.ok().map(|()| opened.elapsed())
        }));
    }
    // The kubelet comes from another address than the silent clients, and gets its own slots.
    let asked = Instant::now();
    let kubelet = Some("127.0.0.2".parse().expect("address"));
    let probe = format!("GET /livez HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let livez = until(SETTLE, || {
        let reply = exchange_from(kubelet, address, probe.as_bytes());
        async move { reply.await.filter(|reply| reply.status == 200) }
    })
    .await;
    let waited = asked.elapsed();
    assert!(
        livez.is_some(),
        "/livez never answered while clients were silent"
    );
    assert!(waited < Duration::from_secs(12), "/livez took {waited:?}");
    let mut closed_after = Vec::new();
    for task in silent {
        closed_after.push(task.await.expect("a silent client"));
    }
    let closed: Vec<Duration> = closed_after.iter().flatten().copied().collect();
    assert_eq!(closed.len(), 100, "some silent clients were never closed");
    let at_once = closed
        .iter()
        .filter(|after| **after < Duration::from_secs(3))
        .count();
    let held = closed
        .iter()
        .filter(|after| (Duration::from_secs(4)..Duration::from_secs(15)).contains(*after))
        .count();
    // One address holds at most 8 connections: the rest are closed at once.
    assert!(
        (1..=8).contains(&held) && at_once + held == 100,
        "{at_once} closed at once, {held} at the header timeout: {closed:?}"
    );
    eprintln!("silent clients: {at_once} closed at once, {held} held; /livez after {waited:?}");

    // The daemon is alive and still renews.
    assert!(
        running.daemon.child.try_wait().expect("wait").is_none(),
        "{}",
        running.daemon.log()
    );
    let logins = endpoint.issued(Route::Apinizer);
    assert!(
        until(SETTLE, || {
            let more = endpoint.issued(Route::Apinizer) > logins;
            async move { more.then_some(()) }
        })
        .await
        .is_some(),
        "no renewal after the abuse: {}",
        running.daemon.log()
    );
    get_until(address, "/readyz", &running.daemon, |reply| {
        reply.status == 200
    })
    .await;
    let token = std::fs::read_to_string(&token_file).expect("the token file");
    assert!(endpoint.is_live(&token));
    running.daemon.signal(Signal::TERM);
    assert_eq!(running.daemon.wait(Duration::from_secs(10)).await, Some(0));
}

/// Canary secrets (one accepted, one rejected, one the server echoes back in its refusal) and
/// the token actually issued: none of them, plain or in base64, is in any body the listener
/// serves or anything `status` and `probe ready` print.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_status_view_shows_a_secret_or_a_token() {
    const GOOD: &str = "CANARY-good-secret-5e1f0a";
    const WRONG: &str = "CANARY-wrong-secret-77c2d9";
    const ECHOED: &str = "CANARY-echoed-secret-b3a804";
    let credentials = |secret: &str| Credentials {
        apinizer_client_secret: secret.to_string(),
        ..Credentials::demo()
    };
    let endpoint = TokenEndpoint::start(EndpointOptions {
        credentials: credentials(GOOD),
        ..EndpointOptions::default()
    })
    .await
    .expect("start the endpoint");
    let echo_endpoint = TokenEndpoint::start(EndpointOptions {
        credentials: credentials(ECHOED),
        ..EndpointOptions::default()
    })
    .await
    .expect("start the echoing endpoint");
    echo_endpoint.push_fault(Fault::Status {
        status: 401,
        content_type: "application/json".into(),
        body: serde_json::json!({
            "error": "invalid_client",
            "error_description": format!("client_secret {ECHOED} is not valid"),
            "message": format!("expected {ECHOED}"),
        })
        .to_string(),
        headers: vec![(
            "WWW-Authenticate".into(),
            format!("Basic realm=\"{ECHOED}\""),
        )],
    });
    let rig = Rig::new();
    let good = rig.secret("good", GOOD);
    let wrong = rig.secret("wrong", WRONG);
    let echoed = rig.secret("echoed", ECHOED);
    let token_file = rig.out.join("api.token");
    let running = rig
        .start(|port| {
            rig.daemon_table(port, FAST)
                + &apinizer("api", &endpoint.base_url(), &good, &[(&token_file, None)])
                + &apinizer(
                    "wrong",
                    &endpoint.base_url(),
                    &wrong,
                    &[(&rig.out.join("wrong.token"), None)],
                )
                + &apinizer(
                    "echo",
                    &echo_endpoint.base_url(),
                    &echoed,
                    &[(&rig.out.join("echo.token"), None)],
                )
        })
        .await;
    let (address, daemon) = (running.address, &running.daemon);
    let status = get_until(address, "/status", daemon, |reply| {
        serde_json::from_str::<serde_json::Value>(&reply.body).is_ok_and(|document| {
            let health = |index: usize| document["accounts"][index]["health"].clone();
            // In name order: api, echo, wrong.
            // `ready`: the token is on disk too (health turns healthy at the login, before the write).
            health(0) == "healthy"
                && document["accounts"][0]["ready"] == true
                && health(1) == "rejected"
                && health(2) == "rejected"
        })
    })
    .await;
    let document: serde_json::Value = serde_json::from_str(&status.body).expect("status json");
    let echo_error = document["accounts"][1]["last_error"]
        .as_str()
        .expect("the echo account's error");
    // The refusal was read: the scrubbing is what keeps the secret out.
    assert!(echo_error.contains("HTTP 401"), "{echo_error}");
    let token = std::fs::read_to_string(&token_file)
        .expect("the token file")
        .trim()
        .to_string();
    assert!(endpoint.is_live(&token));

    let mut views = vec![("GET /status".to_string(), status.whole())];
    for path in ["/livez", "/readyz", "/metrics", "/status"] {
        let reply = get(address, path).await.expect("an answer");
        views.push((format!("GET {path}"), reply.whole()));
    }
    for args in [&["status", "--json"][..], &["status"], &["probe", "ready"]] {
        let run = cli(args, &running.config).await;
        views.push((format!("tokenkeeper {args:?}"), run.all_output()));
    }
    let mut needles = Vec::new();
    for value in [GOOD, WRONG, ECHOED, token.as_str()] {
        needles.push(value.to_string());
        needles.push(base64::engine::general_purpose::STANDARD.encode(value));
    }
    for (what, text) in &views {
        for needle in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "{what} holds {needle}:\n{text}"
            );
        }
    }
    assert!(
        views.iter().all(|(_, text)| !text.trim().is_empty()),
        "{views:?}"
    );
}

/// The usual repair of a broken config is to put the running one back (an editor's undo, `git
/// checkout`): once the file holds the config in force again, the reload gauge says 1 again,
/// without a SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_the_running_config_after_a_rejected_reload_clears_the_reload_failure() {
    let fixture = three_accounts().await;
    let running = &fixture.running;
    let reload_gauge = |reply: &Reply| {
        samples(&reply.body)
            .get("tokenkeeper_config_last_reload_successful")
            .copied()
    };
    replace_file(
        Path::new(&running.config),
        &format!("{}\n[daemon\n", running.text),
    );
    get_until(running.address, "/metrics", &running.daemon, |reply| {
        reload_gauge(reply) == Some(0.0)
    })
    .await;
    replace_file(Path::new(&running.config), &running.text);
    get_until(running.address, "/metrics", &running.daemon, |reply| {
        reload_gauge(reply) == Some(1.0)
    })
    .await;
}
