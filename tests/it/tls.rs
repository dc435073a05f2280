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

use crate::support::pki::{ClientCert, Pki, client_cert};
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
    /// `<n> <CN>` per served token request.
    clients_file: PathBuf,
    /// `<n> <field name>...` per served token request.
    bodies_file: PathBuf,
    log: PathBuf,
}

impl TlsServer {
    fn start(pki: &Pki, dir: &Path) -> TlsServer {
        TlsServer::start_with(pki, dir, None)
    }

    /// A server that requires a client certificate signed by `client_ca` (mutual TLS).
    fn start_mtls(pki: &Pki, dir: &Path, client_ca: &Path) -> TlsServer {
        TlsServer::start_with(pki, dir, Some(client_ca))
    }

    fn start_with(pki: &Pki, dir: &Path, client_ca: Option<&Path>) -> TlsServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls/server.py");
        let count_file = dir.join("count");
        let clients_file = dir.join("clients");
        let bodies_file = dir.join("bodies");
        let log = dir.join("server.log");
        let mut command = Command::new("python3");
        command
            .arg(&script)
            .arg("--cert")
            .arg(&pki.leaf_pem)
            .arg("--key")
            .arg(&pki.leaf_key)
            .arg("--count-file")
            .arg(&count_file)
            .arg("--clients-file")
            .arg(&clients_file)
            .arg("--bodies-file")
            .arg(&bodies_file);
        if let Some(client_ca) = client_ca {
            command.arg("--client-ca").arg(client_ca);
        }
        let mut child = command
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
            clients_file,
            bodies_file,
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

// Mutual TLS: client certificates (`client_cert`, `client_key`) and the RFC 8705 auth methods.
// The server is started with `--client-ca`, so it requires a certificate chaining to that CA, and
// it records, per served token request, the certificate's CN and the form fields' names.

/// A one-account `oauth2` config in `dir` (writing `dir/tls.token`, trusting `ca_file`) with the
/// account keys `extra` (the credential and client certificate lines); its path.
fn account_config(dir: &Path, token_url: &str, ca_file: &Path, extra: &str) -> String {
    std::fs::create_dir_all(dir).expect("create the case directory");
    write_config(
        dir,
        &format!(
            r#"
[accounts.tls]
preset = "oauth2"
token_url = "{token_url}"
client_id = "tls-client"
ca_file = "{ca}"
{extra}
[[accounts.tls.outputs]]
path = "{out}"
"#,
            ca = ca_file.display(),
            out = dir.join("tls.token").display(),
        ),
    )
}

/// The account lines of a `tls_client_auth` login presenting `cert` and `key`.
fn tls_client_auth(cert: &Path, key: &Path) -> String {
    format!(
        "auth_method = \"tls_client_auth\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
        cert.display(),
        key.display()
    )
}

/// The 1-based number of the first line of the file at `path` that starts with `prefix`.
fn line_of(path: &str, prefix: &str) -> usize {
    let text = std::fs::read_to_string(path).expect("read the config");
    1 + text
        .lines()
        .position(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {text}"))
}

/// The canary: `output` holds no line of the PEM body of any of the `keys` files.
fn assert_no_key_material(output: &str, keys: &[&Path]) {
    for key in keys {
        let pem = std::fs::read_to_string(key).expect("read a key");
        let body: Vec<&str> = pem
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with("-----"))
            .collect();
        assert!(!body.is_empty(), "{} has no PEM body", key.display());
        for line in body {
            assert!(
                !output.contains(line),
                "the output holds key material of {}:\n{output}",
                key.display()
            );
        }
    }
}

impl TlsServer {
    /// The CN of the client certificate each served token request came with, in order (`-` for
    /// none).
    fn clients(&self) -> Vec<String> {
        self.records(&self.clients_file)
            .into_iter()
            .map(|mut fields| fields.pop().unwrap_or_default())
            .collect()
    }

    /// The names of the form fields of each served token request, in order.
    fn bodies(&self) -> Vec<Vec<String>> {
        self.records(&self.bodies_file)
    }

    /// The lines `<n> <word>...` of a record file, checked to be numbered 1, 2, ..., as words.
    fn records(&self, path: &Path) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(path).expect("read a record file");
        text.lines()
            .enumerate()
            .map(|(index, line)| {
                let mut words = line.split_whitespace().map(str::to_string);
                assert_eq!(
                    words.next(),
                    Some((index + 1).to_string()),
                    "record {index} of {}: {text:?}",
                    path.display()
                );
                words.collect()
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_auth_presents_the_certificate_and_sends_only_the_client_id() {
    if !prerequisites_present() {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path();
    let pki_dir = root.join("pki");
    let pki = Pki::generate(&pki_dir);
    let client = client_cert(&pki_dir, "client1", "tokenkeeper-client-1", 11);
    let server = TlsServer::start_mtls(&pki, root, &pki.ca_pem);
    let token_url = format!("https://127.0.0.1:{}/token", server.port);

    let dir = root.join("mtls");
    let config_path = account_config(
        &dir,
        &token_url,
        &pki.ca_pem,
        &tls_client_auth(&client.pem, &client.key),
    );
    let check = tokenkeeper(&["check", "--config", &config_path], &[]).await;
    assert_eq!(check.code, 0, "check: {check:?}");
    let run = tokenkeeper(&["once", "--config", &config_path], &[]).await;
    assert_eq!(run.code, 0, "mTLS login failed: {run:?}\n{}", server.log());
    let token = std::fs::read_to_string(dir.join("tls.token")).expect("read the token");
    assert_eq!(token, "tls-token-1");
    assert_eq!(server.count(), 1, "one login, one token request");
    assert_eq!(
        server.clients(),
        ["tokenkeeper-client-1"],
        "{}",
        server.log()
    );
    // RFC 8705 §2: the client is identified by its certificate; the body names it, nothing more.
    let mut fields = server.bodies().pop().expect("one body recorded");
    fields.sort();
    assert_eq!(fields, ["client_id", "grant_type"], "the form fields sent");
    assert_eq!(server.failed_handshakes(), 0, "{}", server.log());

    // A client certificate on a secret-based login only secures the connection: it is presented,
    // and the secret goes in the Basic header as usual (so the body has the grant type alone).
    let secret = write_secret(root, "secret", "tls-client-secret");
    let dir = root.join("basic");
    let config_path = account_config(
        &dir,
        &token_url,
        &pki.ca_pem,
        &format!(
            "client_secret = {{ file = \"{}\" }}\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            secret.display(),
            client.pem.display(),
            client.key.display()
        ),
    );
    let basic = tokenkeeper(&["once", "--config", &config_path], &[]).await;
    assert_eq!(
        basic.code, 0,
        "basic login with a client certificate: {basic:?}"
    );
    assert_eq!(server.count(), 2);
    assert_eq!(server.clients()[1], "tokenkeeper-client-1");
    assert_eq!(server.bodies()[1], ["grant_type"], "the form fields sent");

    for output in [check.all_output(), run.all_output(), basic.all_output()] {
        assert_no_key_material(&output, &[&client.key]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_requiring_a_client_certificate_refuses_logins_without_the_right_one() {
    if !prerequisites_present() {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path();
    let pki_dir = root.join("pki");
    let pki = Pki::generate(&pki_dir);
    let other_dir = root.join("other-pki");
    let _other = Pki::generate(&other_dir);
    // Same CN as the good one, so only the issuer differs.
    let stranger = client_cert(&other_dir, "client1", "tokenkeeper-client-1", 11);
    let server = TlsServer::start_mtls(&pki, root, &pki.ca_pem);
    let token_url = format!("https://127.0.0.1:{}/token", server.port);
    let secret = write_secret(root, "secret", "tls-client-secret");

    // No client certificate: a plain secret-based login. The server ends the handshake, so the
    // request (and the secret in its Basic header) is never read.
    let dir = root.join("no-cert");
    let config_path = account_config(
        &dir,
        &token_url,
        &pki.ca_pem,
        &format!("client_secret = {{ file = \"{}\" }}", secret.display()),
    );
    let run = tokenkeeper(&["once", "--config", &config_path], &[]).await;
    assert_eq!(run.code, 1, "login without a client certificate: {run:?}");
    // rustls's name of the server's TLS 1.3 alert (pinned by Cargo.lock).
    assert!(run.stderr.contains("CertificateRequired"), "{}", run.stderr);
    assert!(run.stderr.contains("temporary failure"), "{}", run.stderr);
    assert!(
        handshake_failed_since(&server, 0).await,
        "the server saw no failed handshake: {}",
        server.log()
    );
    assert_eq!(
        server.count(),
        0,
        "a request without a client certificate was served"
    );
    assert!(
        !dir.join("tls.token").exists(),
        "a token without a client certificate"
    );

    // A certificate from another CA: refused at the handshake too.
    let dir = root.join("other-ca");
    let config_path = account_config(
        &dir,
        &token_url,
        &pki.ca_pem,
        &tls_client_auth(&stranger.pem, &stranger.key),
    );
    let handshakes = server.failed_handshakes();
    let stranger_run = tokenkeeper(&["once", "--config", &config_path], &[]).await;
    assert_eq!(
        stranger_run.code, 1,
        "login with another CA's certificate: {stranger_run:?}"
    );
    assert!(
        stranger_run.stderr.contains("temporary failure"),
        "{}",
        stranger_run.stderr
    );
    assert!(
        handshake_failed_since(&server, handshakes).await,
        "the server saw no failed handshake: {}",
        server.log()
    );
    assert_eq!(
        server.count(),
        0,
        "a request with another CA's certificate was served"
    );
    assert!(server.clients().is_empty(), "{:?}", server.clients());
    assert!(
        !dir.join("tls.token").exists(),
        "a token for another CA's certificate"
    );

    for output in [run.all_output(), stranger_run.all_output()] {
        assert_no_key_material(&output, &[&stranger.key]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_config_errors_name_the_key_and_its_line() {
    if !prerequisites_present() {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path();
    let pki_dir = root.join("pki");
    let pki = Pki::generate(&pki_dir);
    let client = client_cert(&pki_dir, "client1", "tokenkeeper-client-1", 11);
    let garbage = write_secret(root, "garbage.key", "this is not a PEM private key");
    let read = |path: &Path| std::fs::read_to_string(path).expect("read a PEM file");
    let two_keys = write_secret(
        root,
        "two.key",
        &format!("{}{}", read(&client.key), read(&pki.leaf_key)),
    );
    let token_url = "https://127.0.0.1:1/token";
    let cert_line = |path: &Path| format!("client_cert = \"{}\"", path.display());
    let key_line = |path: &Path| format!("client_key = \"{}\"", path.display());
    let method = "auth_method = \"tls_client_auth\"";

    // (case, account lines, the line the problem is at, the key it names, part of its message)
    let cases = [
        (
            "cert-without-key",
            format!("{method}\n{}", cert_line(&client.pem)),
            "client_cert",
            "client_key",
            "go together",
        ),
        (
            "key-without-cert",
            format!("{method}\n{}", key_line(&client.key)),
            "client_key",
            "client_cert",
            "go together",
        ),
        (
            "garbage-key",
            format!(
                "{method}\n{}\n{}",
                cert_line(&client.pem),
                key_line(&garbage)
            ),
            "client_key",
            "client_key",
            "holds no private key",
        ),
        (
            "two-keys",
            format!(
                "{method}\n{}\n{}",
                cert_line(&client.pem),
                key_line(&two_keys)
            ),
            "client_key",
            "client_key",
            "more than one private key",
        ),
        (
            "key-as-cert",
            format!(
                "{method}\n{}\n{}",
                cert_line(&client.key),
                key_line(&client.key)
            ),
            "client_cert",
            "client_cert",
            "holds no certificate",
        ),
        (
            "missing-key-file",
            format!(
                "{method}\n{}\n{}",
                cert_line(&client.pem),
                key_line(&root.join("absent.key"))
            ),
            "client_key",
            "client_key",
            "absent.key",
        ),
        (
            "relative-cert",
            format!(
                "{method}\nclient_cert = \"client1.pem\"\n{}",
                key_line(&client.key)
            ),
            "client_cert",
            "client_cert",
            "absolute path",
        ),
        (
            "relative-key",
            format!(
                "{method}\n{}\nclient_key = \"client1.key\"",
                cert_line(&client.pem)
            ),
            "client_key",
            "client_key",
            "absolute path",
        ),
    ];
    for (case, lines, at, names, message) in cases {
        let dir = root.join(case);
        let config_path = account_config(&dir, token_url, &pki.ca_pem, &lines);
        // Relative paths would resolve here, where the files are: still refused.
        let run = tokenkeeper(&["check", "--config", &config_path], &[]).await;
        assert_eq!(run.code, 3, "{case}: {run:?}");
        let line = line_of(&config_path, &format!("{at} ="));
        let problem = run
            .stderr
            .lines()
            .find(|text| text.contains(&format!("line {line}: accounts.tls.{names}:")))
            .unwrap_or_else(|| panic!("{case}: no problem at line {line} naming {names}: {run:?}"));
        assert!(problem.contains(message), "{case}: {problem}");
        assert_no_key_material(&run.all_output(), &[&client.key, &pki.leaf_key]);
    }

    // One file holding the certificate and its key serves as both, as many tools write them.
    let combined = write_secret(
        root,
        "combined.pem",
        &format!("{}{}", read(&client.pem), read(&client.key)),
    );
    let dir = root.join("combined");
    let config_path = account_config(
        &dir,
        token_url,
        &pki.ca_pem,
        &format!(
            "{method}\n{}\n{}",
            cert_line(&combined),
            key_line(&combined)
        ),
    );
    let run = tokenkeeper(&["check", "--config", &config_path], &[]).await;
    assert_eq!(run.code, 0, "a combined certificate and key file: {run:?}");
    assert_no_key_material(&run.all_output(), &[&client.key]);
}

/// Config load refuses a certificate and key that are not a pair, at the key's line (rustls would
/// refuse them too, but only when the client is built at start, with a message that names no
/// file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_is_not_the_certificates_is_a_config_error() {
    if !prerequisites_present() {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path();
    let pki_dir = root.join("pki");
    let pki = Pki::generate(&pki_dir);
    let client = client_cert(&pki_dir, "client1", "tokenkeeper-client-1", 11);
    let dir = root.join("mismatch");
    // A real P-256 key, but the server's, not client 1's.
    let config_path = account_config(
        &dir,
        "https://127.0.0.1:1/token",
        &pki.ca_pem,
        &tls_client_auth(&client.pem, &pki.leaf_key),
    );
    let run = tokenkeeper(&["check", "--config", &config_path], &[]).await;
    assert_eq!(run.code, 3, "check with a mismatched key: {run:?}");
    let line = line_of(&config_path, "client_key =");
    let problem = run
        .stderr
        .lines()
        .find(|text| text.contains(&format!("line {line}: accounts.tls.client_key:")))
        .unwrap_or_else(|| panic!("no problem at the client_key line {line}: {run:?}"));
    assert!(
        problem.contains("is not the private key of the certificate in")
            && problem.contains("client1.pem"),
        "{problem}"
    );
    // `once` refuses the same config before any connection.
    let once = tokenkeeper(&["once", "--config", &config_path], &[]).await;
    assert_eq!(once.code, 3, "once with a mismatched key: {once:?}");
    assert_no_key_material(&run.all_output(), &[&client.key, &pki.leaf_key]);
}

/// A daemon logging in with client 1's certificate and key, installed as the files of an
/// identity directory (as a mounted Secret would be), with client 2's pair ready to be renamed
/// in. Quick retries, and forced refreshes allowed every second: a restarted account reuses its
/// token from the state file, so the tests ask for the logins that present a certificate.
struct Rotation {
    daemon: crate::support::Daemon,
    server: TlsServer,
    first: ClientCert,
    second: ClientCert,
    cert: PathBuf,
    key: PathBuf,
    token_file: PathBuf,
    /// Removed last, after the daemon and the server are gone.
    _scratch: tempfile::TempDir,
}

/// How long each step of a rotation test may take.
const ROTATION_LIMIT: Duration = Duration::from_secs(20);

impl Rotation {
    /// `None` when the test's tools are missing (outside CI).
    async fn start() -> Option<Rotation> {
        if !prerequisites_present() {
            return None;
        }
        let scratch = tempfile::tempdir().expect("tempdir");
        let root = scratch.path();
        let pki_dir = root.join("pki");
        let pki = Pki::generate(&pki_dir);
        let first = client_cert(&pki_dir, "client1", "tokenkeeper-client-1", 11);
        let second = client_cert(&pki_dir, "client2", "tokenkeeper-client-2", 12);
        let server = TlsServer::start_mtls(&pki, root, &pki.ca_pem);
        let identity = root.join("identity");
        std::fs::create_dir(&identity).expect("create the identity directory");
        let (cert, key) = (identity.join("client.pem"), identity.join("client.key"));
        std::fs::copy(&first.pem, &cert).expect("install the first certificate");
        std::fs::copy(&first.key, &key).expect("install the first key");
        let dir = root.join("rotation");
        let token_url = format!("https://127.0.0.1:{}/token", server.port);
        let account = std::fs::read_to_string(account_config(
            &dir,
            &token_url,
            &pki.ca_pem,
            &tls_client_auth(&cert, &key),
        ))
        .expect("read the config");
        let config_path = write_config(
            &dir,
            &format!(
                "[daemon]\nretry_base = \"200ms\"\nretry_cap = \"1s\"\nrefresh_request_interval = \
                 \"1s\"\nstate_dir = \"{}\"\n{account}",
                root.join("state").display()
            ),
        );
        let daemon = crate::support::Daemon::start(&config_path, root, &[]);
        let token_file = dir.join("tls.token");
        assert!(
            eventually(ROTATION_LIMIT, || token_file.exists()).await,
            "no first token: daemon log:\n{}\nserver log:\n{}",
            daemon.log(),
            server.log()
        );
        assert_eq!(
            server.clients(),
            ["tokenkeeper-client-1"],
            "{}",
            server.log()
        );
        Some(Rotation {
            daemon,
            server,
            first,
            second,
            cert,
            key,
            token_file,
            _scratch: scratch,
        })
    }

    /// Asks for logins (SIGUSR1, at most every 1.5 s) until `done`; whether it came in time.
    async fn refresh_until(&self, mut done: impl FnMut(&TlsServer) -> bool) -> bool {
        let mut last_signal: Option<std::time::Instant> = None;
        eventually(ROTATION_LIMIT, || {
            if last_signal.is_none_or(|at| at.elapsed() > Duration::from_millis(1500)) {
                self.daemon.signal(rustix::process::Signal::USR1);
                last_signal = Some(std::time::Instant::now());
            }
            done(&self.server)
        })
        .await
    }

    /// Whether the server served a login presenting client 2's certificate.
    fn second_presented(server: &TlsServer) -> bool {
        server
            .clients()
            .iter()
            .any(|cn| cn == "tokenkeeper-client-2")
    }

    /// The checks every rotation test ends with: no mismatched pair ever reached the server, and
    /// no key material reached the log.
    fn assert_clean(&self) {
        assert_eq!(
            self.server.failed_handshakes(),
            0,
            "a mismatched pair reached the server: {}",
            self.server.log()
        );
        assert_no_key_material(&self.daemon.log(), &[&self.first.key, &self.second.key]);
    }
}

/// A rotation caught half-way (the new key beside the old certificate) never reaches the wire:
/// the new files are refused as a config, naming the key, and the running client keeps the old
/// pair, so forced logins still succeed with it. The whole pair then takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_rotated_identity_is_refused_and_the_old_one_keeps_working() {
    let Some(rotation) = Rotation::start().await else {
        return;
    };
    let (daemon, server) = (&rotation.daemon, &rotation.server);
    let refusal = "is not the private key of the certificate in";

    // Half a rotation: the new key only.
    rename_into_place(&rotation.second.key, &rotation.key);
    assert!(
        eventually(ROTATION_LIMIT, || daemon.log().contains(refusal)).await,
        "the mismatched pair was not refused: {}",
        daemon.log()
    );
    let log = daemon.log();
    let refused = log.lines().find(|line| line.contains(refusal));
    assert!(
        refused.is_some_and(|line| line.contains("client_key")),
        "{refused:?}"
    );
    assert!(
        !log.contains("restarting the account"),
        "the half-rotated pair restarted the account: {log}"
    );
    // A forced login still presents the old certificate, and succeeds.
    let served = server.count();
    assert!(
        rotation
            .refresh_until(|server| server.count() > served)
            .await,
        "no forced login with the old pair: {}",
        daemon.log()
    );
    assert!(
        server
            .clients()
            .iter()
            .all(|cn| cn == "tokenkeeper-client-1"),
        "{:?}",
        server.clients()
    );

    // The rest of the rotation: the new certificate makes the pair whole again.
    rename_into_place(&rotation.second.pem, &rotation.cert);
    assert!(
        eventually(ROTATION_LIMIT, || daemon.log().contains(
            "restarting the account with a client built from the new files"
        ))
        .await,
        "the completed rotation was not noticed: {}",
        daemon.log()
    );
    assert!(
        rotation.refresh_until(Rotation::second_presented).await,
        "no login presented the new certificate: {:?}\n{}",
        server.clients(),
        daemon.log()
    );
    rotation.assert_clean();
}

/// Replaces `path` with the contents of `source` through a rename, as config management does.
fn rename_into_place(source: &Path, path: &Path) {
    let temp = path.with_file_name(format!(
        ".{}.new",
        path.file_name().expect("a file name").to_string_lossy()
    ));
    std::fs::copy(source, &temp).expect("write the new file");
    std::fs::rename(&temp, path).expect("rename it into place");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_client_certificate_reaches_the_running_daemon() {
    let Some(rotation) = Rotation::start().await else {
        return;
    };
    let (daemon, server) = (&rotation.daemon, &rotation.server);

    // The rotation: the key first, then the certificate, each renamed into place.
    rename_into_place(&rotation.second.key, &rotation.key);
    rename_into_place(&rotation.second.pem, &rotation.cert);
    let rotated = std::time::Instant::now();
    assert!(
        eventually(ROTATION_LIMIT, || daemon
            .log()
            .contains("restarting the account"))
        .await,
        "the rotation was not noticed: {}",
        daemon.log()
    );
    // Ask for logins until one presents the new certificate: a request that reaches the account
    // before its restart would log in with the old one.
    assert!(
        rotation.refresh_until(Rotation::second_presented).await,
        "no login presented the new certificate: clients {:?}\ndaemon log:\n{}\nserver log:\n{}",
        server.clients(),
        daemon.log(),
        server.log()
    );
    eprintln!(
        "client certificate rotation: presented {:?} after the new files were renamed into place",
        rotated.elapsed()
    );
    let clients = server.clients();
    let first_new = clients
        .iter()
        .position(|cn| cn == "tokenkeeper-client-2")
        .expect("seen above");
    assert!(
        clients[..first_new]
            .iter()
            .all(|cn| cn == "tokenkeeper-client-1"),
        "{clients:?}"
    );
    // The token file holds what the server issued last (to the new certificate or later).
    assert!(
        eventually(ROTATION_LIMIT, || {
            std::fs::read_to_string(&rotation.token_file)
                .is_ok_and(|token| token == format!("tls-token-{}", server.count()))
        })
        .await,
        "the token file does not hold the last token: {:?}",
        std::fs::read_to_string(&rotation.token_file)
    );
    rotation.assert_clean();
}
