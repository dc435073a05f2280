//! Hostile inputs through the real binary: files that would block a read, signal storms, a log
//! written where the daemon watches, and a server that echoes the secret back.
//!
//! - A FIFO, a character device or a directory where the config, a secret file or a CA bundle
//!   should be, and a secret file past its size cap, are refused at once with an error naming the
//!   path. No command blocks on them, and a daemon whose secret is a FIFO keeps running and still
//!   stops on SIGTERM within its grace period.
//! - A storm of SIGHUPs coalesces into far fewer reloads than signals, logs in no more, and
//!   never delays a SIGTERM past the grace period.
//! - The daemon's own trace log written into the watched config directory causes no reload and
//!   no feedback loop, while a real change to the config is still seen.
//! - A token endpoint that echoes the secret back, in any of the encodings servers use, never
//!   gets a fragment of it into anything `once` or `run` prints, at trace level, in text or JSON.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use tokenkeeper::demo::endpoint::{Credentials, EndpointOptions, Fault, Route, TokenEndpoint};

use crate::support::{
    Daemon, Run, apinizer_config, apinizer_setup, eventually, replace_file, tokenkeeper,
    write_config, write_secret,
};

/// How long a one-shot command may take against a hostile input. A read that blocks on a FIFO
/// without a writer would never end, and `/dev/zero` would grow without bound; a refusal takes
/// milliseconds (the binary starts and fails in well under a second even on a loaded 2-core
/// machine), so 10 s tells the two apart with a wide margin while staying far inside the 60 s
/// timeout of `support::tokenkeeper`.
const COMMAND_BOUND: Duration = Duration::from_secs(10);

/// The grace period every daemon in this file runs with, as written in its config.
const GRACE: &str = "2s";

/// SIGTERM-to-exit must stay within the grace period plus 1 s.
const STOP_BOUND: Duration = Duration::from_secs(3);

/// How long a daemon may take to reach a state the test polls for (first login, a log line): far
/// more than the fraction of a second it takes, because the machine may be loaded.
const SETTLE: Duration = Duration::from_secs(20);

/// The canary secret of the echo tests: `/ + & < >` are the characters every encoding treats differently.
const CANARY: &str = "canary/SECRET+c1a2b3&<x>";

/// A second canary with a space, for form encoding's `+`.
const SPACED_CANARY: &str = "canary SECRET+c1a2b3";

/// Creates a FIFO at `path`: opening it for reading would wait for a writer that never comes.
fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .expect("mkfifo");
}

/// Runs the binary and requires it to finish within [`COMMAND_BOUND`]; the run and how long it
/// took. The child is killed when the bound passes (`support::tokenkeeper` kills on drop).
async fn finishes(args: &[&str], env: &[(&str, &str)]) -> (Run, Duration) {
    let started = Instant::now();
    let run = tokio::time::timeout(COMMAND_BOUND, tokenkeeper(args, env))
        .await
        .unwrap_or_else(|_| {
            panic!("tokenkeeper {args:?} did not finish within {COMMAND_BOUND:?}: it blocked")
        });
    (run, started.elapsed())
}

/// The `[daemon]` table of the daemons in this file: a short grace period, and quick retries so
/// that a queue of scripted failures is worked through in a few seconds.
fn daemon_table() -> String {
    format!(
        r#"
[daemon]
shutdown_grace = "{GRACE}"
retry_base = "200ms"
retry_cap = "1s"
min_refresh_interval = "300ms"
startup_spread = "100ms"
"#
    )
}

/// Sends SIGTERM and requires exit code 0 within [`STOP_BOUND`]; how long the stop took.
async fn stops_within_the_grace_period(daemon: &mut Daemon) -> Duration {
    let asked = Instant::now();
    daemon.signal(Signal::TERM);
    // The wait itself allows more, so that a slow stop is reported with its time, not as a hang.
    let code = daemon.wait(Duration::from_secs(15)).await;
    let took = asked.elapsed();
    assert_eq!(code, Some(0), "{}", daemon.log());
    assert!(
        took < STOP_BOUND,
        "SIGTERM-to-exit took {took:?} with a {GRACE} grace period:\n{}",
        daemon.log()
    );
    took
}

fn is_alive(daemon: &mut Daemon) -> bool {
    daemon.child.try_wait().expect("try_wait").is_none()
}

// ---------------------------------------------------------------------------------------------
// Blocking inputs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_config_is_refused_by_check_once_and_run_at_once_naming_it() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let fifo = scratch.path().join("config.toml");
    mkfifo(&fifo);
    let fifo = fifo.display().to_string();
    let state = scratch.path().join("state").display().to_string();
    for command in ["check", "once", "run"] {
        // `run` gets a state directory of its own, so that if it ever got past the config it
        // would not touch the machine's.
        let (run, took) = finishes(
            &[command, "--config", &fifo],
            &[("STATE_DIRECTORY", &state)],
        )
        .await;
        assert_eq!(run.code, 3, "{command}: {run:?}");
        assert!(
            run.stderr.contains(&fifo) && run.stderr.contains("is a FIFO"),
            "{command} did not name the FIFO: {}",
            run.stderr
        );
        eprintln!("-c <fifo> {command}: exit 3 after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_character_device_or_a_directory_as_config_is_refused_at_once_naming_it() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let directory = scratch.path().display().to_string();
    for (path, kind) in [
        ("/dev/zero", "is a character device"),
        (directory.as_str(), "is a directory"),
    ] {
        let (run, took) = finishes(&["check", "--config", path], &[]).await;
        assert_eq!(run.code, 3, "-c {path}: {run:?}");
        assert!(
            run.stderr.contains(&format!("{path} {kind}")),
            "-c {path}: {}",
            run.stderr
        );
        // No plan is printed for a config that could not be read.
        assert!(!run.stdout.contains("account "), "{}", run.stdout);
        eprintln!("-c {path} check: exit 3 after {took:?}");
    }
}

/// Writes a config in `scratch` for one apinizer account against `base_url` whose secret file is
/// a FIFO; the config's path and the FIFO's.
fn with_a_fifo_secret(scratch: &Path, base_url: &str, output: &Path) -> (String, String) {
    let fifo = scratch.join("secret.fifo");
    mkfifo(&fifo);
    let config = write_config(
        scratch,
        &(daemon_table() + &apinizer_config(base_url, &fifo, output)),
    );
    (config, fifo.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_a_secret_file_is_refused_by_check_and_once_naming_it() {
    let setup = apinizer_setup("api.token", "").await;
    let (config, fifo) = with_a_fifo_secret(
        setup.scratch.path(),
        &setup.endpoint.base_url(),
        &setup.output,
    );

    let (check, took) = finishes(&["check", "--config", &config], &[]).await;
    assert_eq!(check.code, 3, "{check:?}");
    assert!(
        check.stderr.contains(&fifo) && check.stderr.contains("FIFO"),
        "{}",
        check.stderr
    );
    eprintln!("check with a FIFO secret: exit 3 after {took:?}");

    let (once, took) = finishes(&["once", "--config", &config], &[]).await;
    assert_eq!(once.code, 1, "{once:?}");
    assert!(
        once.stderr.contains(&fifo) && once.stderr.contains("FIFO"),
        "{}",
        once.stderr
    );
    eprintln!("once with a FIFO secret: exit 1 after {took:?}");
    // A secret that cannot be read is never replaced by something else on the wire.
    assert!(setup.endpoint.requests().is_empty());
    assert!(!setup.output.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_a_secret_file_leaves_the_daemon_running_and_sigterm_stops_it() {
    let setup = apinizer_setup("api.token", "").await;
    let (config, fifo) = with_a_fifo_secret(
        setup.scratch.path(),
        &setup.endpoint.base_url(),
        &setup.output,
    );
    let mut daemon = Daemon::start(&config, setup.scratch.path(), &[]);
    assert!(
        eventually(SETTLE, || {
            let log = daemon.log();
            log.contains("tokenkeeper running") && log.contains(&fifo) && log.contains("FIFO")
        })
        .await,
        "the daemon did not log the FIFO: {}",
        daemon.log()
    );
    // The failure belongs to one account: the process goes on (a hung read would go on too, so
    // the stop below is what proves no thread is stuck).
    assert!(is_alive(&mut daemon), "the daemon exited: {}", daemon.log());
    let took = stops_within_the_grace_period(&mut daemon).await;
    eprintln!("a FIFO secret in run: SIGTERM-to-exit {took:?}");
    assert!(setup.endpoint.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_a_ca_bundle_in_the_account_or_the_defaults_is_refused_by_check_naming_it() {
    let setup = apinizer_setup("api.token", "").await;
    let fifo = setup.scratch.path().join("ca.fifo");
    mkfifo(&fifo);
    let fifo = fifo.display().to_string();
    let account = apinizer_config(&setup.endpoint.base_url(), &setup.secret, &setup.output);
    for (where_, text) in [
        (
            "accounts.apinizer.ca_file",
            account.replace(
                "preset = \"apinizer\"",
                &format!("preset = \"apinizer\"\nca_file = \"{fifo}\""),
            ),
        ),
        (
            "defaults.ca_file",
            format!("[defaults]\nca_file = \"{fifo}\"\n{account}"),
        ),
    ] {
        assert!(text.contains(&fifo));
        let config = write_config(setup.scratch.path(), &text);
        let (check, took) = finishes(&["check", "--config", &config], &[]).await;
        assert_eq!(check.code, 3, "{where_}: {check:?}");
        assert!(
            check.stderr.contains(&fifo) && check.stderr.contains("FIFO"),
            "{where_}: {}",
            check.stderr
        );
        assert!(
            check.stderr.contains(where_),
            "the error does not name the key {where_}: {}",
            check.stderr
        );
        eprintln!("{where_} a FIFO: check exit 3 after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_over_64_kib_is_refused_by_check() {
    let setup = apinizer_setup("api.token", "").await;
    // One byte past the cap, not counting the trailing newline that would be trimmed.
    let big = write_secret(setup.scratch.path(), "big", &"a".repeat(64 * 1024 + 1));
    let config = write_config(
        setup.scratch.path(),
        &apinizer_config(&setup.endpoint.base_url(), &big, &setup.output),
    );
    let (check, took) = finishes(&["check", "--config", &config], &[]).await;
    assert_eq!(check.code, 3, "{check:?}");
    assert!(
        check.stderr.contains(&big.display().to_string())
            && check.stderr.contains("larger than 65536 bytes"),
        "{}",
        check.stderr
    );
    eprintln!("a 64 KiB + 1 secret: check exit 3 after {took:?}");
}

// ---------------------------------------------------------------------------------------------
// A signal storm.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_storm_coalesces_and_sigterm_still_stops_within_the_grace_period() {
    let setup = apinizer_setup("api.token", "").await;
    let config = write_config(
        setup.scratch.path(),
        &(daemon_table()
            + &apinizer_config(&setup.endpoint.base_url(), &setup.secret, &setup.output)),
    );
    let mut daemon = Daemon::start(&config, setup.scratch.path(), &[]);
    assert!(
        eventually(SETTLE, || setup.output.exists()).await,
        "{}",
        daemon.log()
    );
    let token = std::fs::read_to_string(&setup.output).expect("read the token");

    // The storm runs on a blocking thread so that the runtime (and the endpoint it serves) stays
    // free; the 3 s are the storm's length, not a wait for something to happen.
    let pid = rustix::process::Pid::from_raw(daemon.child.id() as i32).expect("pid");
    let sent = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < Duration::from_secs(3) {
            rustix::process::kill_process(pid, Signal::HUP).expect("send SIGHUP");
            sent += 1;
        }
        sent
    })
    .await
    .expect("the storm thread");
    assert!(is_alive(&mut daemon), "SIGHUPs killed the daemon");
    let took = stops_within_the_grace_period(&mut daemon).await;

    let log = daemon.log();
    let reloads = log.matches("reload requested").count() as u64;
    eprintln!("SIGHUP storm: {sent} signals sent, {reloads} reloads, SIGTERM-to-exit {took:?}");
    assert!(sent >= 1000, "only {sent} SIGHUPs sent in 3 s");
    assert!(reloads >= 1, "no SIGHUP was heard: {log}");
    assert!(
        reloads < sent / 10,
        "{reloads} reloads for {sent} SIGHUPs: they do not coalesce"
    );
    // No-op reloads keep the account and its token: no login, the same file.
    assert_eq!(setup.endpoint.issued(Route::Apinizer), 1, "{log}");
    assert_eq!(setup.endpoint.requests().len(), 1);
    assert_eq!(
        std::fs::read_to_string(&setup.output).ok().as_deref(),
        Some(token.as_str())
    );
}

// ---------------------------------------------------------------------------------------------
// The daemon's log in the directory it watches.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_log_written_into_the_config_directory_causes_no_reload_and_stays_small() {
    // The token file, the config and the log all live in the same directory, the one watched.
    let setup = apinizer_setup("api.token", "").await;
    let text =
        daemon_table() + &apinizer_config(&setup.endpoint.base_url(), &setup.secret, &setup.output);
    let config = write_config(setup.scratch.path(), &text);
    let config_dir = Path::new(&config)
        .parent()
        .expect("the config's directory")
        .to_path_buf();
    let daemon = Daemon::start_with_args(
        &["run", "--config", &config],
        &config_dir,
        &[("RUST_LOG", "trace")],
    );
    assert!(daemon.log.starts_with(&config_dir));
    assert!(
        eventually(SETTLE, || setup.output.exists()).await,
        "{}",
        daemon.log()
    );

    // A fixed observation window is the point here: nothing should happen, and what is measured
    // is that nothing did. 8 s is many debounce periods and many trace lines.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let log = daemon.log();
    let size = std::fs::metadata(&daemon.log).expect("stat the log").len();
    eprintln!(
        "log in the watched directory: {size} bytes after 8 s, {} reloads",
        log.matches("config reloaded").count()
    );
    assert!(log.contains("TRACE"), "trace logging was not on");
    assert_eq!(log.matches("config reloaded").count(), 0, "{log}");
    assert_eq!(log.matches("reload requested").count(), 0);
    assert_eq!(setup.endpoint.issued(Route::Apinizer), 1);
    assert_eq!(setup.endpoint.requests().len(), 1);
    // Before the fix, each log line woke the watcher, whose trace lines woke it again: the log
    // grew to hundreds of MB in seconds. Without the loop it holds a few kB of start-up lines.
    assert!(size < 2 * 1024 * 1024, "the log grew to {size} bytes");

    // The watch still works: a real change (a comment, so nothing to restart) is reloaded.
    replace_file(
        Path::new(&config),
        &(text + "# a comment changes the text only\n"),
    );
    assert!(
        eventually(SETTLE, || daemon.log().contains("config reloaded")).await,
        "the config change was not seen: {}",
        daemon.log()
    );
    let log = daemon.log();
    let line = log
        .lines()
        .find(|line| line.contains("config reloaded"))
        .expect("the reload line");
    assert!(line.contains("added=0 removed=0 restarted=0"), "{line}");
    assert_eq!(setup.endpoint.issued(Route::Apinizer), 1);
}

// ---------------------------------------------------------------------------------------------
// An echoing server.

/// JSON string escaping with `/` written `\/`, as PHP's `json_encode` does.
fn json_escaped_slashes(secret: &str) -> String {
    let quoted = serde_json::to_string(secret).expect("JSON");
    quoted[1..quoted.len() - 1].replace('/', "\\/")
}

/// JSON string escaping of `/ & < > +` as `\u00XX`, as .NET's and Go's HTML-safe encoders do.
fn json_unicode_escaped(secret: &str) -> String {
    secret
        .chars()
        .map(|character| match character {
            '/' | '&' | '<' | '>' | '+' => format!("\\u{:04x}", character as u32),
            other => other.to_string(),
        })
        .collect()
}

/// Percent-encoding of every byte but the RFC 3986 unreserved ones, with upper- or lower-case
/// hex digits.
fn percent_encoded(secret: &str, upper: bool) -> String {
    secret
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else if upper {
                format!("%{byte:02X}")
            } else {
                format!("%{byte:02x}")
            }
        })
        .collect()
}

/// `application/x-www-form-urlencoded`: `+` for a space.
fn form_encoded(secret: &str) -> String {
    url::form_urlencoded::byte_serialize(secret.as_bytes()).collect()
}

/// HTML with the named entities `&amp; &lt; &gt; &quot;`.
fn html_named(secret: &str) -> String {
    secret
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// HTML with every character that is not a letter or digit as a decimal (`&#47;`) or hex
/// (`&#x2F;`) reference.
fn html_numeric(secret: &str, hex: bool) -> String {
    secret
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() {
                character.to_string()
            } else if hex {
                format!("&#x{:X};", character as u32)
            } else {
                format!("&#{};", character as u32)
            }
        })
        .collect()
}

/// The canary fragments that must never be printed, for a canary `canary<sep>SECRET+c1a2b3…`.
fn fragments_of(secret: &str) -> Vec<String> {
    let whole_prefix = secret
        .split('+')
        .next()
        .expect("the canary has a prefix")
        .to_string();
    vec!["SECRET".to_string(), "c1a2b3".to_string(), whole_prefix]
}

/// Fails when `text` holds any fragment, ASCII case-insensitively.
fn assert_no_fragment(what: &str, text: &str, fragments: &[String]) {
    let lower = text.to_lowercase();
    for fragment in fragments {
        assert!(
            !lower.contains(&fragment.to_lowercase()),
            "{what}: the output holds the canary fragment {fragment:?}:\n{text}"
        );
    }
}

fn fault(status: u16, content_type: &str, body: String) -> Fault {
    Fault::Status {
        status,
        content_type: content_type.to_string(),
        body,
        headers: Vec::new(),
    }
}

/// A 503 `text/plain` echo with `Retry-After: 1`.
fn busy_echo(secret: &str) -> Fault {
    Fault::Status {
        status: 503,
        content_type: "text/plain".to_string(),
        body: format!("overloaded, try again; you sent {secret}"),
        headers: vec![("Retry-After".to_string(), "1".to_string())],
    }
}

/// A 200 JSON reply with no token, whose only key is the secret.
fn key_echo(secret: &str) -> Fault {
    let key = serde_json::to_string(secret).expect("JSON");
    fault(200, "application/json", format!("{{{key}: 1}}"))
}

/// One echoing reply per encoding, with the status each comes with.
fn echo_cases(secret: &str) -> Vec<(&'static str, u16, Fault)> {
    let json = |text: String| {
        format!(r#"{{"error":"invalid_client","error_description":"client {text} is unknown"}}"#)
    };
    vec![
        (
            "raw",
            401,
            fault(401, "text/plain", format!("unknown client {secret}")),
        ),
        (
            "JSON with \\/",
            401,
            fault(401, "application/json", json(json_escaped_slashes(secret))),
        ),
        (
            "JSON with \\u00XX",
            401,
            fault(401, "application/json", json(json_unicode_escaped(secret))),
        ),
        (
            "percent-encoded, upper case",
            401,
            fault(
                401,
                "text/plain",
                format!("rejected: {}", percent_encoded(secret, true)),
            ),
        ),
        (
            "percent-encoded, lower case",
            401,
            fault(
                401,
                "text/plain",
                format!("rejected: {}", percent_encoded(secret, false)),
            ),
        ),
        (
            "HTML named entities",
            401,
            fault(
                401,
                "text/html",
                format!("<p>unknown client {}</p>", html_named(secret)),
            ),
        ),
        (
            "HTML decimal references",
            401,
            fault(
                401,
                "text/html",
                format!("<p>unknown client {}</p>", html_numeric(secret, false)),
            ),
        ),
        (
            "HTML hex references",
            401,
            fault(
                401,
                "text/html",
                format!("<p>unknown client {}</p>", html_numeric(secret, true)),
            ),
        ),
        (
            "nested JSON field",
            400,
            fault(
                400,
                "application/json",
                format!(
                    r#"{{"error":"invalid_client","debug":{{"received":"{}"}}}}"#,
                    json_escaped_slashes(secret)
                ),
            ),
        ),
        ("503 text/plain with Retry-After", 503, busy_echo(secret)),
        ("200 JSON keyed by the secret", 200, key_echo(secret)),
    ]
}

/// An endpoint that accepts `secret` for the preset's login, a secret file holding it, and a
/// config for one account of the preset (`apinizer` or `oauth2`, HTTP Basic by default).
struct Echo {
    endpoint: TokenEndpoint,
    scratch: tempfile::TempDir,
    config: String,
    output: PathBuf,
}

impl Echo {
    async fn start(preset: &str, secret: &str, extra: &str) -> Echo {
        let credentials = Credentials {
            apinizer_client_secret: secret.to_string(),
            oauth2_client_secret: secret.to_string(),
            ..Credentials::demo()
        };
        let endpoint = TokenEndpoint::start(EndpointOptions {
            credentials: credentials.clone(),
            ..EndpointOptions::default()
        })
        .await
        .expect("start the endpoint");
        let scratch = tempfile::tempdir().expect("tempdir");
        let secret_file = write_secret(scratch.path(), "secret", secret);
        let output = scratch.path().join(format!("{preset}.token"));
        let account = match preset {
            "apinizer" => apinizer_config(&endpoint.base_url(), &secret_file, &output),
            _ => format!(
                r#"
[accounts.apinizer]
preset = "oauth2"
token_url = "{base}{path}"
client_id = "{id}"
client_secret = {{ file = "{secret}" }}
[[accounts.apinizer.outputs]]
path = "{output}"
"#,
                base = endpoint.base_url(),
                path = Route::OAuth2.path(),
                id = credentials.oauth2_client_id,
                secret = secret_file.display(),
                output = output.display(),
            ),
        };
        let config = write_config(scratch.path(), &(extra.to_string() + &account));
        Echo {
            endpoint,
            scratch,
            config,
            output,
        }
    }

    /// Queues `fault` and runs `once` at trace level against it; the run. Checks that the fault
    /// was what the login got.
    async fn once_against(&self, fault: Fault) -> Run {
        let before = self.endpoint.requests().len();
        self.endpoint.push_fault(fault);
        let (run, _) = finishes(
            &["once", "--config", &self.config],
            &[("RUST_LOG", "trace")],
        )
        .await;
        assert_eq!(
            self.endpoint.requests().len(),
            before + 1,
            "the login did not reach the echoing server once: {run:?}"
        );
        run
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoing_server_never_gets_the_secret_into_once_output_in_any_encoding() {
    let echo = Echo::start("apinizer", CANARY, "").await;
    // A normal login works with the canary: the secret file and the endpoint agree, so the
    // failures below come from the scripted replies alone.
    let (clean, _) = finishes(
        &["once", "--config", &echo.config],
        &[("RUST_LOG", "trace")],
    )
    .await;
    assert_eq!(clean.code, 0, "{clean:?}");
    assert!(clean.stderr.contains("TRACE"), "trace logging was not on");
    assert!(echo.output.exists());
    let fragments = fragments_of(CANARY);
    assert_eq!(fragments[2], "canary/SECRET");
    assert_no_fragment("a clean login", &clean.all_output(), &fragments);

    for (encoding, status, fault) in echo_cases(CANARY) {
        // Every encoding leaves the letters and digits alone, so a reply quoted as it came would
        // fail the fragment check below.
        let Fault::Status { body, .. } = &fault else {
            unreachable!("every echo is a status reply")
        };
        assert!(body.contains("SECRET") && body.contains("c1a2b3"), "{body}");
        let run = echo.once_against(fault).await;
        assert_eq!(run.code, 1, "{encoding}: {run:?}");
        let output = run.all_output();
        assert_no_fragment(encoding, &output, &fragments);
        assert!(
            output.contains("account apinizer") && output.contains(&format!("HTTP {status}")),
            "{encoding}: the failure does not name the account and HTTP {status}:\n{output}"
        );
    }

    // Form encoding writes a space as `+`: a second canary with a space, in a login of its own.
    let spaced = Echo::start("apinizer", SPACED_CANARY, "").await;
    let fragments = fragments_of(SPACED_CANARY);
    assert_eq!(fragments[2], "canary SECRET");
    let encoded = form_encoded(SPACED_CANARY);
    assert!(encoded.starts_with("canary+SECRET%2B"), "{encoded}");
    let run = spaced
        .once_against(fault(
            401,
            "application/x-www-form-urlencoded",
            format!("error=invalid_client&received={encoded}"),
        ))
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    let output = run.all_output();
    assert_no_fragment("form-encoded", &output, &fragments);
    assert_no_fragment("form-encoded", &output, &[encoded]);
    assert!(
        output.contains("account apinizer") && output.contains("HTTP 401"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_http_basic_header_never_reaches_the_output() {
    let echo = Echo::start("oauth2", CANARY, "").await;
    let (clean, _) = finishes(
        &["once", "--config", &echo.config],
        &[("RUST_LOG", "trace")],
    )
    .await;
    assert_eq!(
        clean.code, 0,
        "the canary does not log in by Basic: {clean:?}"
    );
    let header = tokenkeeper::login::request::basic_credentials(
        &Credentials::demo().oauth2_client_id,
        CANARY,
    );
    // What the login sent is what the server echoes.
    let sent = echo.endpoint.requests();
    assert_eq!(
        sent.first()
            .and_then(|request| request.header("authorization")),
        Some(header.as_str())
    );
    let base64 = header
        .strip_prefix("Basic ")
        .expect("a Basic header")
        .to_string();
    let run = echo
        .once_against(fault(
            401,
            "text/plain",
            format!(
                "invalid_client; you sent Authorization: {}",
                header.as_str()
            ),
        ))
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    let output = run.all_output();
    let mut fragments = fragments_of(CANARY);
    fragments.push(base64);
    assert_no_fragment("an echoed Basic header", &output, &fragments);
    assert!(
        output.contains("account apinizer") && output.contains("HTTP 401"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_logs_no_echoed_secret_in_text_or_json() {
    let fragments = fragments_of(CANARY);
    for format in ["text", "json"] {
        // A fresh endpoint and state directory per format: the first run parks the account, and
        // its state file would keep the second from logging in at all.
        let echo = Echo::start("apinizer", CANARY, &daemon_table()).await;
        // Transient and unusable replies first (they are retried quickly), then a rejection
        // (which parks the account, so the queue ends there).
        let faults = [
            busy_echo(CANARY),
            key_echo(CANARY),
            fault(
                503,
                "text/plain",
                format!("busy: {}", percent_encoded(CANARY, false)),
            ),
            fault(
                401,
                "application/json",
                format!(
                    r#"{{"error":"invalid_client","error_description":"{}"}}"#,
                    json_unicode_escaped(CANARY)
                ),
            ),
        ];
        let count = faults.len();
        for fault in faults {
            echo.endpoint.push_fault(fault);
        }
        let mut daemon = Daemon::start_with_args(
            &["run", "--log-format", format, "--config", &echo.config],
            echo.scratch.path(),
            &[("RUST_LOG", "trace")],
        );
        // The 503 asks for a second's wait and the retries back off from 200 ms: the four
        // failures take about 2 s, polled for with a wide margin.
        assert!(
            eventually(SETTLE, || daemon.log().matches("login failed").count()
                >= count)
            .await,
            "{format}: {}",
            daemon.log()
        );
        stops_within_the_grace_period(&mut daemon).await;
        let log = daemon.log();
        assert_eq!(echo.endpoint.requests().len(), count, "{format}: {log}");
        let marker = if format == "json" {
            "\"level\":\"TRACE\""
        } else {
            "TRACE"
        };
        assert!(log.contains(marker), "{format}: trace logging was not on");
        assert!(log.contains("credentials rejected"), "{format}: {log}");
        assert_no_fragment(&format!("run --log-format {format}"), &log, &fragments);
    }
}
