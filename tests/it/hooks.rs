//! Consumer hooks against the real binary: a signal reaches the pid in `pid_file` once per change
//! and not when the token is unchanged; a command hook sees its account and outputs and never the
//! token or a secret; a hook that hangs is killed while renewals go on on time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokenkeeper::demo::endpoint::{Credentials, EndpointOptions, Route, TokenEndpoint};

use crate::support::{Daemon, eventually, write_config};

/// An apinizer account whose secret comes from the daemon's environment (so that a hook that
/// inherited it would show it), with `on_change` as given, and tokens of `lifetime`.
async fn setup(lifetime: Duration, on_change: &str) -> (TokenEndpoint, tempfile::TempDir, String) {
    let endpoint = TokenEndpoint::start(EndpointOptions {
        lifetime,
        ..EndpointOptions::default()
    })
    .await
    .expect("endpoint");
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().display().to_string();
    let config = write_config(
        scratch.path(),
        &format!(
            r#"
[daemon]
state_dir = "{dir}/state"

[accounts.apinizer]
preset = "apinizer"
base_url = "{base}"
client_id = "{id}"
client_secret = {{ env = "HOOK_TEST_SECRET" }}
[[accounts.apinizer.outputs]]
path = "{dir}/token"
[[accounts.apinizer.outputs]]
path = "{dir}/token.json"
format = "json"

[accounts.apinizer.on_change]
{on_change}
"#,
            base = endpoint.base_url(),
            id = Credentials::demo().apinizer_client_id,
        ),
    );
    (endpoint, scratch, config)
}

fn secret_env() -> (&'static str, String) {
    (
        "HOOK_TEST_SECRET",
        Credentials::demo().apinizer_client_secret,
    )
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

/// A process that appends a line to `log` on every SIGHUP; killed on drop.
struct Consumer {
    child: std::process::Child,
}

impl Consumer {
    fn start(log: &Path, pid_file: &Path) -> Consumer {
        let ready = log.with_extension("ready");
        // Python, not a shell: a shell cannot trap a signal ignored when it started (`nohup`).
        let script = "import signal, sys, time\n\
            def hup(*_):\n    open(sys.argv[1], 'a').write('hup\\n')\n\
            signal.signal(signal.SIGHUP, hup)\n\
            open(sys.argv[2], 'w').write('up\\n')\n\
            while True:\n    time.sleep(0.05)\n";
        let child = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(log)
            .arg(&ready)
            .spawn()
            .expect("start consumer");
        std::fs::write(pid_file, format!("{}\n", child.id())).expect("pid file");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ready.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Consumer { child }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_reaches_the_consumer_once_per_new_token_and_not_when_it_is_unchanged() {
    let scratch_pid = tempfile::tempdir().expect("tempdir");
    let log = scratch_pid.path().join("hups");
    let pid_file = scratch_pid.path().join("app.pid");
    let _consumer = Consumer::start(&log, &pid_file);
    let (endpoint, scratch, config) = setup(
        Duration::from_secs(8),
        &format!(
            "pid_file = \"{}\"\nsignal = \"SIGHUP\"\ndebounce = \"200ms\"",
            pid_file.display()
        ),
    )
    .await;
    let (name, value) = secret_env();
    let daemon = Daemon::start(&config, scratch.path(), &[(name, &value)]);
    assert!(
        eventually(Duration::from_secs(20), || lines(&log) == 1).await,
        "no signal after the first token: {}",
        daemon.log()
    );
    // The renewal writes a new token: one more signal (for both outputs together).
    assert!(
        eventually(Duration::from_secs(20), || endpoint.issued(Route::Apinizer)
            >= 2)
        .await,
        "{}",
        daemon.log()
    );
    assert!(
        eventually(Duration::from_secs(10), || lines(&log) == 2).await,
        "expected a second signal after the renewal, got {}: {}",
        lines(&log),
        daemon.log()
    );
    // A restart reuses the saved token: the files do not change, and no signal comes.
    drop(daemon);
    let issued = endpoint.issued(Route::Apinizer);
    let before = lines(&log);
    let daemon = Daemon::start(&config, scratch.path(), &[(name, &value)]);
    assert!(
        eventually(Duration::from_secs(20), || daemon
            .log()
            .contains("reusing the still-valid token"))
        .await,
        "{}",
        daemon.log()
    );
    // After the debounce and more, still no signal, and no login either.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        endpoint.issued(Route::Apinizer),
        issued,
        "the restart logged in though the saved token was valid: {}",
        daemon.log()
    );
    assert_eq!(lines(&log), before, "a signal came though nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_hook_sees_its_account_and_outputs_and_never_the_token_or_a_secret() {
    let capture = tempfile::tempdir().expect("tempdir");
    let environ = capture.path().join("environ");
    let cmdline = capture.path().join("cmdline");
    let script = format!(
        "cat /proc/$$/environ > {e}.tmp && mv {e}.tmp {e}; cat /proc/$$/cmdline > {c}",
        e = environ.display(),
        c = cmdline.display()
    );
    let (_endpoint, scratch, config) = setup(
        Duration::from_secs(3600),
        &format!(
            "command = [\"/bin/sh\", \"-c\", {script:?}]\ntimeout = \"10s\"\ndebounce = \"10ms\""
        ),
    )
    .await;
    let (name, value) = secret_env();
    let daemon = Daemon::start(&config, scratch.path(), &[(name, &value)]);
    assert!(
        eventually(Duration::from_secs(20), || environ.exists()).await,
        "the hook did not run: {}",
        daemon.log()
    );
    let token = std::fs::read_to_string(scratch.path().join("token")).expect("token");
    let environment = std::fs::read(&environ).expect("environ");
    let variables: Vec<String> = environment
        .split(|byte| *byte == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect();
    let dir = scratch.path().display();
    assert!(
        variables.contains(&"TOKENKEEPER_ACCOUNT=apinizer".to_string()),
        "{variables:?}"
    );
    assert!(
        variables.contains(&"TOKENKEEPER_EVENT=written".to_string()),
        "{variables:?}"
    );
    assert!(
        variables.contains(&format!("TOKENKEEPER_OUTPUTS={dir}/token:{dir}/token.json")),
        "{variables:?}"
    );
    for variable in &variables {
        let name = variable.split('=').next().unwrap_or("");
        assert!(
            name.starts_with("TOKENKEEPER_") || ["PATH", "PWD", "SHLVL", "_"].contains(&name),
            "the hook inherited {name}"
        );
    }
    let command_line = std::fs::read(&cmdline).expect("cmdline");
    for (what, bytes) in [("environ", &environment), ("cmdline", &command_line)] {
        for (canary, label) in [(token.as_bytes(), "token"), (value.as_bytes(), "secret")] {
            assert!(
                !bytes.windows(canary.len()).any(|window| window == canary),
                "the hook's {what} holds the {label}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_hook_is_killed_after_its_timeout_and_renewals_stay_on_time() {
    let capture = tempfile::tempdir().expect("tempdir");
    let pids = capture.path().join("pids");
    let script = format!("echo $$ >> {}; exec sleep 600", pids.display());
    let (endpoint, scratch, config) = setup(
        Duration::from_secs(6),
        &format!(
            "command = [\"/bin/sh\", \"-c\", {script:?}]\ntimeout = \"1s\"\ndebounce = \"10ms\""
        ),
    )
    .await;
    let (name, value) = secret_env();
    let daemon = Daemon::start(&config, scratch.path(), &[(name, &value)]);
    // Three tokens of 6 s: renewals kept coming while hooks hung.
    assert!(
        eventually(Duration::from_secs(30), || endpoint.issued(Route::Apinizer)
            >= 3)
        .await,
        "renewals stalled behind a hanging hook: {}",
        daemon.log()
    );
    assert!(
        eventually(Duration::from_secs(10), || daemon
            .log()
            .contains("killed after its timeout"))
        .await,
        "{}",
        daemon.log()
    );
    // Never an expired token on disk: the json output's expiry is ahead of now.
    let document: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(scratch.path().join("token.json")).expect("json output"),
    )
    .expect("json");
    let expires: jiff::Timestamp = document["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("timestamp");
    assert!(
        expires > jiff::Timestamp::now(),
        "the token on disk expired"
    );
    // Every hook that was killed is gone (the last one may still be within its timeout).
    let started: Vec<PathBuf> = std::fs::read_to_string(&pids)
        .expect("pids")
        .lines()
        .map(|pid| PathBuf::from(format!("/proc/{pid}")))
        .collect();
    assert!(started.len() >= 2, "{started:?}");
    let killed = &started[..started.len() - 1];
    assert!(
        eventually(Duration::from_secs(10), || killed
            .iter()
            .all(|proc| !proc.exists()))
        .await,
        "hooks outlived their timeout: {killed:?}"
    );
}
