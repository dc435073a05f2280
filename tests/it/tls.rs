//! HTTPS logins through the real binary (unknown issuers, private CAs): a token endpoint whose
//! certificate comes from a private CA is trusted when, and only when, that CA is the account's
//! `ca_file`; without it, or when the certificate names another host, the TLS handshake fails
//! before a single HTTP request byte, so no credential, reaches the server.
//!
//! The server is `tests/tls/server.py` (Python's `ssl` and `http.server`: OpenSSL on the server
//! side, independent of the rustls client under test), with a CA and a leaf certificate made by the
//! `openssl` CLI at test time (`support/pki.rs`). It counts
//! the token requests it served in a file and reports every failed handshake on stderr, so each
//! refusal is shown to happen at the handshake, not merely somewhere. The test skips with a loud
//! warning when `openssl` or `python3` is missing, except under CI, where it fails instead.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::pki::Pki;
use crate::support::{eventually, tokenkeeper, write_config, write_secret};

/// How long the server may take to print its `LISTENING` line.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// What the server prints on stderr for each connection refused at the handshake.
const HANDSHAKE_FAILED: &str = "HANDSHAKE FAILED";

/// `tests/tls/server.py` on 127.0.0.1; killed and reaped on drop.
struct TlsServer {
    child: Child,
    /// Held open: the server exits on stdin EOF, so it dies with this process even if `Drop`
    /// never runs.
    _stdin: Option<ChildStdin>,
    port: u16,
    count_file: PathBuf,
    log: PathBuf,
}

impl TlsServer {
    fn start(pki: &Pki, dir: &Path) -> TlsServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls/server.py");
        let count_file = dir.join("count");
        let log = dir.join("server.log");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--cert")
            .arg(&pki.leaf_pem)
            .arg("--key")
            .arg(&pki.leaf_key)
            .arg("--count-file")
            .arg(&count_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("create the server log"))
            .spawn()
            .expect("start python3 tests/tls/server.py");
        let stdout = child.stdout.take().expect("stdout was piped");
        let (sender, receiver) = mpsc::channel();
        // A thread, so that a server that hangs before printing cannot hang the test.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("LISTENING ") {
                    let _ = sender.send(port.trim().parse::<u16>());
                    return;
                }
            }
        });
        let mut server = TlsServer {
            _stdin: child.stdin.take(),
            child,
            port: 0,
            count_file,
            log,
        };
        match receiver.recv_timeout(START_TIMEOUT) {
            Ok(Ok(port)) => server.port = port,
            other => panic!(
                "server.py did not print `LISTENING <port>` within {START_TIMEOUT:?} ({other:?}); \
                 its stderr:\n{}",
                server.log()
            ),
        }
        server
    }

    /// Token requests served so far, as the server recorded them.
    fn count(&self) -> u32 {
        let text = std::fs::read_to_string(&self.count_file).expect("read the count file");
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("count file holds {text:?}"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn failed_handshakes(&self) -> usize {
        self.log().matches(HANDSHAKE_FAILED).count()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `openssl` and `python3` can run. When one cannot: a loud skip on a developer machine,
/// a failure under CI, which must never skip this silently.
fn prerequisites_present() -> bool {
    for (program, arg) in [("openssl", "version"), ("python3", "--version")] {
        let runs = Command::new(program)
            .arg(arg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !runs {
            assert!(
                std::env::var_os("CI").is_none(),
                "`{program}` is needed by the TLS test and CI must run it"
            );
            eprintln!(
                "\n*** SKIPPED tls: `{program} {arg}` does not run; install {program} to test \
                 HTTPS logins ***\n"
            );
            return false;
        }
    }
    true
}

/// A one-account `oauth2` config in `dir`, writing `dir/tls.token`; its path.
fn config(dir: &Path, token_url: &str, ca_file: Option<&Path>, secret: &Path) -> String {
    std::fs::create_dir_all(dir).expect("create the case directory");
    let ca_line = match ca_file {
        Some(path) => format!("ca_file = \"{}\"", path.display()),
        None => String::new(),
    };
    write_config(
        dir,
        &format!(
            r#"
[accounts.tls]
preset = "oauth2"
token_url = "{token_url}"
client_id = "tls-client"
client_secret = {{ file = "{secret}" }}
{ca_line}
[[accounts.tls.outputs]]
path = "{out}"
"#,
            secret = secret.display(),
            out = dir.join("tls.token").display(),
        ),
    )
}

/// Waits (at most 5 s: the server logs after the client has gone) until the server has reported
/// more than `before` failed handshakes.
async fn handshake_failed_since(server: &TlsServer, before: usize) -> bool {
    eventually(Duration::from_secs(5), || {
        server.failed_handshakes() > before
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_trusts_exactly_the_configured_ca() {
    if !prerequisites_present() {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path();
    let pki = Pki::generate(&root.join("pki"));
    let server = TlsServer::start(&pki, root);
    let secret = write_secret(root, "secret", "tls-client-secret");
    let by_ip = format!("https://127.0.0.1:{}/token", server.port);
    assert_eq!(server.count(), 0, "the server counted before any login");

    // N2, with the bundle: the private CA is trusted and the token is written.
    let dir = root.join("trusted");
    let config_path = config(&dir, &by_ip, Some(&pki.ca_pem), &secret);
    let run = tokenkeeper(&["once", "--config", &config_path], &[]).await;
    assert_eq!(
        run.code,
        0,
        "login with ca_file failed: {run:?}\n{}",
        server.log()
    );
    let token = std::fs::read_to_string(dir.join("tls.token")).expect("read the token");
    assert_eq!(token, "tls-token-1");
    assert_eq!(server.count(), 1, "one login, one token request");

    // N1/N2, without the bundle: the unknown issuer is refused during the handshake. The
    // unchanged count shows no HTTP request, so no client secret, reached the server; the
    // server's handshake report shows the connection did reach it and failed there.
    let dir = root.join("untrusted");
    let config_path = config(&dir, &by_ip, None, &secret);
    std::fs::write(dir.join("tls.token"), "old").expect("seed the output");
    let handshakes = server.failed_handshakes();
    let run = tokenkeeper(&["once", "--config", &config_path], &[]).await;
    assert_eq!(run.code, 1, "login without ca_file: {run:?}");
    // rustls's wording (pinned by Cargo.lock): the stable part, then the specific reason.
    assert!(
        run.stderr.contains("invalid peer certificate"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("UnknownIssuer"), "{}", run.stderr);
    assert!(run.stderr.contains("temporary failure"), "{}", run.stderr);
    assert_eq!(
        server.count(),
        1,
        "a request reached the server without ca_file"
    );
    assert!(
        handshake_failed_since(&server, handshakes).await,
        "the server saw no failed handshake: {}",
        server.log()
    );
    let output = std::fs::read_to_string(dir.join("tls.token")).expect("read the output");
    assert_eq!(output, "old", "a failed login changed the output");

    // N1, hostname mismatch: the CA is trusted but the certificate is for 127.0.0.1 only.
    let dir = root.join("wrong-name");
    let by_name = format!("https://localhost:{}/token", server.port);
    let config_path = config(&dir, &by_name, Some(&pki.ca_pem), &secret);
    let handshakes = server.failed_handshakes();
    let run = tokenkeeper(&["once", "--config", &config_path], &[]).await;
    assert_eq!(run.code, 1, "login to the wrong name: {run:?}");
    assert!(
        run.stderr.contains("invalid peer certificate"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("not valid for name"), "{}", run.stderr);
    assert!(run.stderr.contains("temporary failure"), "{}", run.stderr);
    assert_eq!(
        server.count(),
        1,
        "a request reached the server under the wrong name"
    );
    assert!(
        handshake_failed_since(&server, handshakes).await,
        "the server saw no failed handshake: {}",
        server.log()
    );

    // A CA file that is not PEM (here the CA in DER, the likeliest mix-up) is a config error
    // naming the key and the file, found by `check` before any login.
    let dir = root.join("der");
    let config_path = config(&dir, &by_ip, Some(&pki.ca_der), &secret);
    let run = tokenkeeper(&["check", "--config", &config_path], &[]).await;
    assert_eq!(run.code, 3, "check with a DER ca_file: {run:?}");
    assert!(run.stderr.contains("ca_file"), "{}", run.stderr);
    let der_path = pki.ca_der.display().to_string();
    assert!(run.stderr.contains(&der_path), "{}", run.stderr);
    assert_eq!(server.count(), 1, "check logged in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_ca_bundle_reaches_the_running_daemon_without_a_restart() {
    if !prerequisites_present() {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path();
    // Two independent CAs: the server presents PKI 2's leaf, the account first trusts PKI 1 only.
    let (old, new) = (
        Pki::generate(&root.join("pki1")),
        Pki::generate(&root.join("pki2")),
    );
    let server = TlsServer::start(&new, root);
    let secret = write_secret(root, "secret", "tls-client-secret");
    // The bundle in a directory of its own, as a mounted ConfigMap would be: the daemon must see
    // it change through that directory.
    let trust = root.join("trust");
    std::fs::create_dir(&trust).expect("create the trust directory");
    let ca_file = trust.join("ca.pem");
    let read_pem = |path: &Path| std::fs::read_to_string(path).expect("read a CA");
    std::fs::write(&ca_file, read_pem(&old.ca_pem)).expect("write the first bundle");
    let dir = root.join("rotation");
    let token_url = format!("https://127.0.0.1:{}/token", server.port);
    let account = std::fs::read_to_string(config(&dir, &token_url, Some(&ca_file), &secret))
        .expect("read the config");
    // Quick retries so the login after the rotation is not held back by a long backoff.
    let config_path = write_config(
        &dir,
        &format!(
            "[daemon]\nretry_base = \"200ms\"\nretry_cap = \"1s\"\nstate_dir = \"{}\"\n{account}",
            root.join("state").display()
        ),
    );
    let daemon = crate::support::Daemon::start(&config_path, root, &[]);
    let token_file = dir.join("tls.token");
    // Some seconds at most: the first login fails at once, at the handshake.
    let limit = Duration::from_secs(20);
    assert!(
        eventually(limit, || daemon.log().contains("login failed")).await,
        "no failed login with the wrong CA: {}",
        daemon.log()
    );
    assert!(
        handshake_failed_since(&server, 0).await,
        "the server saw no failed handshake: {}",
        server.log()
    );
    // Both CAs bear the same name, so the verifier finds PKI 1's and the signature fails.
    assert!(
        daemon.log().contains("invalid peer certificate"),
        "{}",
        daemon.log()
    );
    assert_eq!(server.count(), 0, "a request got through the wrong CA");
    assert!(!token_file.exists(), "a token without a trusted server");

    // The operator rotates the bundle the way config management does: a new file renamed over it.
    crate::support::replace_file(&ca_file, &read_pem(&new.ca_pem));
    let rotated = std::time::Instant::now();
    assert!(
        eventually(limit, || daemon.log().contains("the CA bundle changed")).await,
        "the rotation was not noticed: {}",
        daemon.log()
    );
    assert!(
        eventually(limit, || token_file.exists()).await,
        "no token after the rotation: daemon log:\n{}\nserver log:\n{}",
        daemon.log(),
        server.log()
    );
    eprintln!(
        "CA rotation: token written {:?} after the new bundle was renamed into place",
        rotated.elapsed()
    );
    let token = std::fs::read_to_string(&token_file).expect("read the token");
    assert!(token.starts_with("tls-token-"), "{token:?}");
    assert!(
        server.count() >= 1,
        "the token did not come from the server"
    );
}
