//! `tokenkeeper run` end to end: the real binary against the loopback endpoint with lifetimes of a
//! few seconds, real files, real signals.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use tokenkeeper::demo::endpoint::{Credentials, EndpointOptions, Fault, Route, TokenEndpoint};

use crate::support::{Daemon, eventually, replace_file, temp_files, write_config, write_secret};

/// Fast timings so that a test sees many refreshes in a few seconds.
const FAST: &str = r#"
[daemon]
refresh_at = 0.5
refresh_margin = "500ms"
min_refresh_interval = "300ms"
retry_base = "200ms"
retry_cap = "1s"
startup_spread = "100ms"
shutdown_grace = "3s"
"#;

fn apinizer(name: &str, base: &str, secret: &Path, out: &Path) -> String {
    let credentials = Credentials::demo();
    format!(
        r#"
[accounts.{name}]
preset = "apinizer"
base_url = "{base}"
client_id = "{id}"
client_secret = {{ file = "{secret}" }}
[[accounts.{name}.outputs]]
path = "{out}/{name}.token"
"#,
        id = credentials.apinizer_client_id,
        secret = secret.display(),
        out = out.display(),
    )
}

fn panaya(name: &str, base: &str, secret: &Path, out: &Path) -> String {
    let credentials = Credentials::demo();
    format!(
        r#"
[accounts.{name}]
preset = "panaya"
base_url = "{base}"
username = "{user}"
token = {{ file = "{secret}" }}
lifetime = "1h"
[[accounts.{name}.outputs]]
path = "{out}/{name}.token"
"#,
        user = credentials.panaya_username,
        secret = secret.display(),
        out = out.display(),
    )
}

struct Setup {
    scratch: tempfile::TempDir,
    endpoint: TokenEndpoint,
    out: PathBuf,
    apinizer_secret: PathBuf,
    panaya_secret: PathBuf,
}

async fn setup(lifetime: Duration) -> Setup {
    let endpoint = TokenEndpoint::start(EndpointOptions {
        lifetime,
        ..EndpointOptions::default()
    })
    .await
    .unwrap();
    let credentials = Credentials::demo();
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let apinizer_secret = write_secret(
        scratch.path(),
        "apinizer",
        &credentials.apinizer_client_secret,
    );
    let panaya_secret = write_secret(scratch.path(), "panaya", &credentials.panaya_token);
    Setup {
        scratch,
        endpoint,
        out,
        apinizer_secret,
        panaya_secret,
    }
}

/// `count` apinizer accounts `a0`, `a1` … refreshing as fast as the floor allows. Expired files
/// are kept: a refresh that is late under load must not empty a file the test then reads.
fn busy(setup: &Setup, base: &str, count: usize) -> String {
    let mut text = FAST
        .replace(
            "min_refresh_interval = \"300ms\"",
            "min_refresh_interval = \"100ms\"",
        )
        .replace("refresh_margin = \"500ms\"", "refresh_margin = \"100ms\"")
        + "on_expiry = \"keep\"\n";
    for index in 0..count {
        text += &apinizer(
            &format!("a{index}"),
            base,
            &setup.apinizer_secret,
            &setup.out,
        );
    }
    text
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_never_gets_a_rejection_through_ten_lifetimes_and_503_bursts() {
    let lifetime = Duration::from_secs(4);
    let setup = setup(lifetime).await;
    let base = setup.endpoint.base_url();
    let config = write_config(
        setup.scratch.path(),
        &(FAST.to_string() + &apinizer("api", &base, &setup.apinizer_secret, &setup.out)),
    );
    let mut daemon = Daemon::start(&config, setup.scratch.path(), &[]);
    let token_file = setup.out.join("api.token");
    assert!(
        eventually(Duration::from_secs(10), || token_file.exists()).await,
        "{}",
        daemon.log()
    );

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let protected = format!("{base}{}", tokenkeeper::demo::endpoint::PROTECTED_PATH);
    let started = Instant::now();
    let (mut accepted, mut rejected, mut last_burst) = (0, 0, Instant::now());
    while started.elapsed() < lifetime * 10 {
        // Every 2.5 s the server fails twice with 503: shorter than the token's remaining life.
        if last_burst.elapsed() > Duration::from_millis(2500) {
            for _ in 0..2 {
                setup.endpoint.push_fault(Fault::Status {
                    status: 503,
                    content_type: "text/plain".into(),
                    body: "busy".into(),
                    headers: vec![],
                });
            }
            last_burst = Instant::now();
        }
        let token = std::fs::read_to_string(&token_file).expect("the token file is always there");
        let reply = client
            .get(&protected)
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        if reply.status().is_success() {
            accepted += 1;
        } else {
            rejected += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, Some(0));
    let logins = setup.endpoint.issued(Route::Apinizer);
    let faults = setup.endpoint.requests().len().saturating_sub(logins);
    assert_eq!(
        rejected,
        0,
        "{accepted} accepted, {rejected} rejected; log:\n{}",
        daemon.log()
    );
    assert!(accepted >= 200, "only {accepted} calls");
    assert!(logins >= 12, "only {logins} logins in 10 lifetimes");
    assert!(faults >= 16, "only {faults} 503 replies were served");
    assert!(
        daemon.log().contains("login failed"),
        "the bursts were not felt"
    );
    eprintln!(
        "consumer: {accepted} accepted, {rejected} rejected, {logins} logins, {faults} 503 replies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_stay_bounded_and_rotation_recovers_at_once() {
    let setup = setup(Duration::from_secs(3600)).await;
    let base = setup.endpoint.base_url();
    let credentials = Credentials::demo();
    // Account "plain": a plain file replaced by rename. Account "k8s": a Secret volume layout
    // whose `..data` symlink is swapped.
    std::fs::write(&setup.apinizer_secret, "wrong-secret\n").unwrap();
    let volume = setup.scratch.path().join("volume");
    std::fs::create_dir_all(volume.join("..2026_01")).unwrap();
    std::fs::write(volume.join("..2026_01/token"), "wrong-panaya-token").unwrap();
    std::os::unix::fs::symlink("..2026_01", volume.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/token", volume.join("token")).unwrap();
    let config = write_config(
        setup.scratch.path(),
        &(FAST.to_string()
            + "rejected_retry = \"30m\"\n"
            + &apinizer("plain", &base, &setup.apinizer_secret, &setup.out)
            + &panaya("k8s", &base, &volume.join("token"), &setup.out)),
    );
    let daemon = Daemon::start(&config, setup.scratch.path(), &[]);
    assert!(
        eventually(Duration::from_secs(5), || daemon
            .log()
            .matches("credentials rejected")
            .count()
            >= 2)
        .await,
        "{}",
        daemon.log()
    );
    // Both accounts are parked: the log says when each tries again, and it is half an hour away
    // (rejected_retry ± 10 %), not seconds. No waiting is needed to see that.
    let log = daemon.log();
    let waits: Vec<f64> = log
        .lines()
        .filter(|line| line.contains("credentials rejected"))
        .filter_map(|line| {
            let value = line.split("retry_in_s=").nth(1)?;
            value.split_whitespace().next()?.parse().ok()
        })
        .collect();
    assert_eq!(waits.len(), 2, "{log}");
    for wait in &waits {
        assert!(
            (27.0 * 60.0..=33.0 * 60.0).contains(wait),
            "a rejected account retries in {wait} s: {log}"
        );
    }
    let attempts = setup.endpoint.requests().len();
    assert_eq!(
        attempts, 2,
        "rejected accounts must not retry quickly: {attempts} attempts"
    );

    replace_file(
        &setup.apinizer_secret,
        &format!("{}\n", credentials.apinizer_client_secret),
    );
    let rotated = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || setup
            .out
            .join("plain.token")
            .exists())
        .await,
        "{}",
        daemon.log()
    );
    let plain_after = rotated.elapsed();

    std::fs::create_dir_all(volume.join("..2026_02")).unwrap();
    std::fs::write(volume.join("..2026_02/token"), &credentials.panaya_token).unwrap();
    std::os::unix::fs::symlink("..2026_02", volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    let swapped = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || setup
            .out
            .join("k8s.token")
            .exists())
        .await,
        "{}",
        daemon.log()
    );
    let k8s_after = swapped.elapsed();
    assert!(
        plain_after < Duration::from_secs(3),
        "plain rotation took {plain_after:?}"
    );
    assert!(
        k8s_after < Duration::from_secs(3),
        "..data swap took {k8s_after:?}"
    );
    for name in ["plain", "k8s"] {
        let token = read(&setup.out.join(format!("{name}.token"))).unwrap();
        assert!(setup.endpoint.is_live(&token), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A crash loop (SIGKILL right after start, three times) with a valid token in the state file
/// makes no login and leaves the token file in place. (Whole files after a kill *during* a write
/// are the next test's claim.)
async fn a_crash_loop_with_a_valid_token_makes_no_login() {
    let setup = setup(Duration::from_secs(3600)).await;
    let base = setup.endpoint.base_url();
    let config = write_config(
        setup.scratch.path(),
        &(FAST.to_string() + &apinizer("api", &base, &setup.apinizer_secret, &setup.out)),
    );
    let token_file = setup.out.join("api.token");
    let mut daemon = Daemon::start(&config, setup.scratch.path(), &[]);
    assert!(eventually(Duration::from_secs(10), || token_file.exists()).await);
    let token = read(&token_file).unwrap();
    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, Some(0));
    assert_eq!(setup.endpoint.issued(Route::Apinizer), 1);

    for round in 0..3 {
        let mut daemon = Daemon::start(&config, setup.scratch.path(), &[]);
        assert!(
            eventually(Duration::from_secs(5), || daemon
                .log()
                .contains("reusing the still-valid token"))
            .await,
            "round {round}: {}",
            daemon.log()
        );
        daemon.signal(Signal::KILL);
        let _ = daemon.wait(Duration::from_secs(5)).await;
        assert_eq!(
            read(&token_file).as_deref(),
            Some(token.as_str()),
            "round {round}"
        );
    }
    assert_eq!(
        setup.endpoint.issued(Route::Apinizer),
        1,
        "restarts caused logins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_a_write_loop_then_restart_leaves_no_partial_or_temp_files() {
    let setup = setup(Duration::from_secs(2)).await;
    let base = setup.endpoint.base_url();
    let config = write_config(setup.scratch.path(), &busy(&setup, &base, 4));
    for round in 0..5u64 {
        let mut daemon = Daemon::start(&config, setup.scratch.path(), &[]);
        let before = setup.endpoint.issued(Route::Apinizer);
        assert!(
            eventually(Duration::from_secs(5), || setup
                .endpoint
                .issued(Route::Apinizer)
                >= before + 6)
            .await,
            "round {round}: {}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(37 * round)).await;
        daemon.signal(Signal::KILL);
        let _ = daemon.wait(Duration::from_secs(5)).await;
        for index in 0..4 {
            let token = read(&setup.out.join(format!("a{index}.token"))).unwrap_or_default();
            assert!(
                setup.endpoint.was_issued(&token),
                "round {round}: a{index} holds {token:?}, not a whole issued token"
            );
        }
    }
    // Plant what a kill in the middle of a write leaves behind, then start again: the start-up
    // clean-up removes it (checked after a clean stop, when nothing else is being written).
    let planted = setup.out.join(".a0.token.0123456789abcdef.tmp");
    std::fs::write(&planted, "half a tok").unwrap();
    let mut daemon = Daemon::start(&config, setup.scratch.path(), &[]);
    assert!(
        eventually(Duration::from_secs(5), || daemon
            .log()
            .contains("tokenkeeper running"))
        .await
    );
    assert!(
        daemon.log().contains("removed stale temporary files"),
        "{}",
        daemon.log()
    );
    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, Some(0));
    assert!(!planted.exists());
    assert!(
        temp_files(&setup.out).is_empty(),
        "{:?}",
        temp_files(&setup.out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_by_file_change_and_sighup_add_remove_and_change_accounts() {
    let setup = setup(Duration::from_secs(3600)).await;
    let base = setup.endpoint.base_url();
    let first = FAST.to_string()
        + &apinizer("api", &base, &setup.apinizer_secret, &setup.out)
        + &panaya("pan", &base, &setup.panaya_secret, &setup.out);
    let config = write_config(setup.scratch.path(), &first);
    let daemon = Daemon::start(&config, setup.scratch.path(), &[]);
    let file = |name: &str| setup.out.join(format!("{name}.token"));
    assert!(
        eventually(Duration::from_secs(10), || file("api").exists()
            && file("pan").exists())
        .await
    );
    let logins = || setup.endpoint.requests().len();
    assert_eq!(logins(), 2);

    // A no-op reload, by signal and by touching the file: zero logins.
    daemon.signal(Signal::HUP);
    replace_file(Path::new(&config), &first);
    assert!(
        eventually(Duration::from_secs(5), || daemon
            .log()
            .contains("config reloaded"))
        .await
    );
    // The reload's own line says it started and stopped no account, so no login can follow
    // from it: nothing to wait for.
    assert_eq!(logins(), 2, "a no-op reload logged in");
    assert!(
        daemon.log().contains("added=0 removed=0 restarted=0"),
        "a no-op reload touched accounts: {}",
        daemon.log()
    );

    // Through the file: add "api2", remove "pan", move "api"'s output within its directory.
    let second = FAST.to_string()
        + &apinizer("api", &base, &setup.apinizer_secret, &setup.out)
            .replace("api.token", "api-moved.token")
        + &apinizer("api2", &base, &setup.apinizer_secret, &setup.out);
    replace_file(Path::new(&config), &second);
    assert!(
        eventually(Duration::from_secs(5), || file("api2").exists()
            && file("api-moved").exists()
            && !file("pan").exists())
        .await,
        "{}",
        daemon.log()
    );
    // api2 logged in; api restarted but reused its token from the state file, and its old
    // output, no longer configured, is gone.
    assert_eq!(logins(), 3, "{}", daemon.log());
    assert!(eventually(Duration::from_secs(2), || !file("api").exists()).await);
    assert!(setup.endpoint.is_live(&read(&file("api-moved")).unwrap()));

    // A broken config is refused; the running accounts go on.
    replace_file(Path::new(&config), "[accounts.x\nthis is not toml");
    assert!(
        eventually(Duration::from_secs(5), || daemon
            .log()
            .contains("reload rejected"))
        .await
    );
    daemon.signal(Signal::HUP);
    assert!(
        eventually(Duration::from_secs(5), || daemon
            .log()
            .matches("reload rejected")
            .count()
            >= 2)
        .await
    );
    assert!(file("api2").exists() && file("api-moved").exists());
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("not toml"));

    // Back to a valid config through SIGHUP only: "pan" comes back.
    std::fs::write(&config, &first).unwrap();
    daemon.signal(Signal::HUP);
    assert!(
        eventually(Duration::from_secs(5), || file("pan").exists()
            && !file("api2").exists())
        .await,
        "{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_activity_exits_zero_within_the_grace_period() {
    let setup = setup(Duration::from_secs(1)).await;
    let base = setup.endpoint.base_url();
    let config = write_config(setup.scratch.path(), &busy(&setup, &base, 6));
    let mut daemon = Daemon::start(&config, setup.scratch.path(), &[]);
    assert!(
        eventually(Duration::from_secs(10), || setup
            .endpoint
            .issued(Route::Apinizer)
            >= 12)
        .await
    );
    let before = setup.endpoint.requests().len();
    for _ in 0..6 {
        setup
            .endpoint
            .push_fault(Fault::Delay(Duration::from_secs(10)));
    }
    // Stop once logins are hanging in the delayed replies.
    assert!(
        eventually(Duration::from_secs(20), || setup.endpoint.requests().len()
            >= before + 3)
        .await
    );
    let asked = Instant::now();
    daemon.signal(Signal::TERM);
    let code = daemon.wait(Duration::from_secs(10)).await;
    let took = asked.elapsed();
    assert_eq!(code, Some(0), "{}", daemon.log());
    // The promise: within shutdown_grace (3 s here) plus one second, whatever is in flight.
    assert!(
        took < Duration::from_secs(4),
        "stopping took {took:?} with a 3 s grace"
    );
    for index in 0..6 {
        let token = read(&setup.out.join(format!("a{index}.token"))).unwrap_or_default();
        assert!(
            token.len() >= 20 && token.is_ascii() && !token.contains('\n'),
            "a{index}: {token:?}"
        );
    }
    assert!(temp_files(&setup.out).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_output_directory_fails_fast_naming_it() {
    let setup = setup(Duration::from_secs(3600)).await;
    let missing = setup.scratch.path().join("not-there");
    refuses_to_start(&setup, &missing).await;
}

/// Starts `run` with the single output in `dir` and checks that it refuses within 2 s, with exit
/// code 1, a log that names `dir`, and no login. Returns the log.
async fn refuses_to_start(setup: &Setup, dir: &Path) -> String {
    let base = setup.endpoint.base_url();
    let config = write_config(
        setup.scratch.path(),
        &apinizer("api", &base, &setup.apinizer_secret, dir),
    );
    let started = Instant::now();
    let mut daemon = Daemon::start(&config, setup.scratch.path(), &[]);
    assert_eq!(daemon.wait(Duration::from_secs(30)).await, Some(1));
    // The refusal comes before any account starts, in milliseconds; the generous bound only
    // tells "fails fast" from "hangs" on a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(20));
    let log = daemon.log();
    assert!(log.contains(&dir.display().to_string()), "{log}");
    assert_eq!(
        setup.endpoint.requests().len(),
        0,
        "no login before the checks pass"
    );
    log
}

/// A tmpfs mounted for one test (needs root and mount rights; skipped loudly without them).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        Tmpfs::mount_with(dir, &format!("size={size},mode=0755"))
    }

    fn mount_with(dir: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_keeps_the_old_token_and_recovers_without_extra_logins() {
    // 15 s tokens renewed every 3 s: the fault below stays well inside one token's life, so the
    // file on disk must not change until space returns.
    let setup = setup(Duration::from_secs(15)).await;
    let base = setup.endpoint.base_url();
    let out = setup.scratch.path().join("small");
    let Some(_tmpfs) = Tmpfs::mount(&out, "64k") else {
        if std::env::var_os("CI").is_some() {
            panic!("cannot mount a tmpfs for the full-disk test under CI");
        }
        eprintln!("\n*** SKIPPED a_full_filesystem_*: cannot mount a tmpfs (not root?) ***\n");
        return;
    };
    let config = write_config(
        setup.scratch.path(),
        &(FAST.replace("refresh_at = 0.5", "refresh_at = 0.2")
            + &apinizer("api", &base, &setup.apinizer_secret, &out)),
    );
    let daemon = Daemon::start(&config, setup.scratch.path(), &[]);
    let token_file = out.join("api.token");
    assert!(
        eventually(Duration::from_secs(10), || token_file.exists()).await,
        "{}",
        daemon.log()
    );
    // Fill the filesystem.
    let filler = out.join("filler");
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&filler).unwrap();
        while file.write_all(&[0u8; 1024]).is_ok() {}
    }
    let stuck = read(&token_file).unwrap();
    let logins_at_fault = setup.endpoint.issued(Route::Apinizer);
    let fault_started = Instant::now();
    assert!(
        eventually(Duration::from_secs(6), || daemon
            .log()
            .contains("No space left"))
        .await,
        "{}",
        daemon.log()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        read(&token_file).as_deref(),
        Some(stuck.as_str()),
        "the old file changed"
    );
    let fault_length = fault_started.elapsed();
    let logins_during_fault = setup.endpoint.issued(Route::Apinizer) - logins_at_fault;
    // Logins follow the refresh schedule (every ~3 s here), not the write retries.
    let scheduled = (fault_length.as_secs_f64() / 2.7).ceil() as usize + 1;
    assert!(
        logins_during_fault <= scheduled,
        "{logins_during_fault} logins in {fault_length:?} of full disk"
    );
    std::fs::remove_file(&filler).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || read(&token_file)
            .is_some_and(|token| token != stuck))
        .await,
        "did not recover: {}",
        daemon.log()
    );
    assert!(setup.endpoint.is_live(&read(&token_file).unwrap()));
    assert!(temp_files(&out).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_level_comes_from_the_config_unless_rust_log_is_set() {
    let setup = setup(Duration::from_secs(3600)).await;
    let base = setup.endpoint.base_url();
    let text = FAST.to_string()
        + "log_level = \"debug\"\n"
        + &apinizer("api", &base, &setup.apinizer_secret, &setup.out);
    let config = write_config(setup.scratch.path(), &text);
    for (rust_log, debug_expected) in [("", true), ("info", false)] {
        let mut daemon = Daemon::start(&config, setup.scratch.path(), &[("RUST_LOG", rust_log)]);
        assert!(
            eventually(Duration::from_secs(5), || daemon
                .log()
                .contains("login succeeded")
                || daemon.log().contains("reusing"))
            .await
        );
        daemon.signal(Signal::TERM);
        assert_eq!(daemon.wait(Duration::from_secs(5)).await, Some(0));
        assert_eq!(
            daemon.log().contains("DEBUG"),
            debug_expected,
            "RUST_LOG={rust_log:?}: {}",
            daemon.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_an_account_never_removes_the_file_it_keeps_writing() {
    let setup = setup(Duration::from_secs(3600)).await;
    let base = setup.endpoint.base_url();
    let old = FAST.to_string() + &apinizer("old", &base, &setup.apinizer_secret, &setup.out);
    let config = write_config(setup.scratch.path(), &old);
    let daemon = Daemon::start(&config, setup.scratch.path(), &[]);
    let shared_path = setup.out.join("old.token");
    assert!(eventually(Duration::from_secs(10), || shared_path.exists()).await);
    // The same output path under a new account name.
    let renamed = old
        .replace("[accounts.old]", "[accounts.new]")
        .replace("accounts.old.outputs", "accounts.new.outputs");
    replace_file(Path::new(&config), &renamed);
    // Watch the file through the whole reload: old account stopped, new one started.
    let watching = Instant::now();
    let mut missing = 0;
    while !daemon.log().contains("config reloaded") {
        assert!(
            watching.elapsed() < Duration::from_secs(20),
            "no reload: {}",
            daemon.log()
        );
        if !shared_path.exists() {
            missing += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if !shared_path.exists() {
        missing += 1;
    }
    assert!(
        daemon.log().contains("added=1 removed=1"),
        "{}",
        daemon.log()
    );
    assert_eq!(missing, 0, "the file vanished during the rename");
    assert!(setup.endpoint.is_live(&read(&shared_path).unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_output_directory_fails_fast_naming_it() {
    let setup = setup(Duration::from_secs(3600)).await;
    let read_only = setup.scratch.path().join("ro");
    let Some(_tmpfs) = Tmpfs::mount_with(&read_only, "size=64k,mode=0755,ro") else {
        if std::env::var_os("CI").is_some() {
            panic!("cannot mount a read-only tmpfs under CI");
        }
        eprintln!(
            "\n*** SKIPPED a_read_only_output_directory_*: cannot mount a tmpfs (not root?) ***\n"
        );
        return;
    };
    let log = refuses_to_start(&setup, &read_only).await;
    assert!(log.contains("Read-only file system"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_the_daemon_until_interrupted() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("demo");
    let mut daemon = Daemon::start_with_args(
        &["demo", "--dir", dir.to_str().unwrap()],
        scratch.path(),
        &[],
    );
    let tokens = dir.join("tokens");
    let count = || {
        std::fs::read_dir(&tokens)
            .map(|entries| {
                entries
                    .filter(|entry| {
                        entry.as_ref().is_ok_and(|entry| {
                            !entry.file_name().to_string_lossy().starts_with('.')
                        })
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(10), || count() == 7).await,
        "{}",
        daemon.log()
    );
    assert!(
        daemon.log().matches("login succeeded").count() >= 6,
        "{}",
        daemon.log()
    );
    daemon.signal(Signal::INT);
    assert_eq!(
        daemon.wait(Duration::from_secs(10)).await,
        Some(0),
        "{}",
        daemon.log()
    );
    assert!(daemon.log().contains("stopped"), "{}", daemon.log());
    assert_eq!(count(), 7, "the token files stay after the demo stops");
}

/// In real time: 10 s tokens with the default `[daemon]` settings for a minute.
/// A consumer reading every 50 ms never finds the file missing, never holds a token the server
/// no longer accepts, and always has at least half a second of life left in it. The daemon warns,
/// once, that the lifetime is too short for the settings, and renews early instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_second_tokens_with_default_settings_are_always_valid_on_disk() {
    let lifetime = Duration::from_secs(10);
    let setup = setup(lifetime).await;
    let base = setup.endpoint.base_url();
    let text = apinizer("api", &base, &setup.apinizer_secret, &setup.out)
        .replace("api.token\"", "api.json\"\nformat = \"json\"");
    let config = write_config(setup.scratch.path(), &text);
    let mut daemon = Daemon::start(&config, setup.scratch.path(), &[]);
    let file = setup.out.join("api.json");
    assert!(
        eventually(Duration::from_secs(20), || file.exists()).await,
        "{}",
        daemon.log()
    );
    let started = Instant::now();
    let (mut reads, mut least_left) = (0, f64::INFINITY);
    while started.elapsed() < Duration::from_secs(60) {
        let text = read(&file).unwrap_or_else(|| panic!("the file vanished: {}", daemon.log()));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let token = json["token"].as_str().unwrap();
        let expires_at: jiff::Timestamp = json["expires_at"].as_str().unwrap().parse().unwrap();
        let left = expires_at
            .duration_since(jiff::Timestamp::now())
            .as_secs_f64();
        assert!(
            setup.endpoint.is_live(token),
            "a dead token on disk after {:?}: {}",
            started.elapsed(),
            daemon.log()
        );
        assert!(left >= 0.5, "only {left:.2} s left: {}", daemon.log());
        least_left = least_left.min(left);
        reads += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait(Duration::from_secs(15)).await, Some(0));
    let logins = setup.endpoint.issued(Route::Apinizer);
    let log = daemon.log();
    // Renewed at 55–70 % of each 10 s lifetime: 9 to 12 logins a minute.
    assert!((7..=14).contains(&logins), "{logins} logins: {log}");
    assert_eq!(log.matches("too short for").count(), 1, "{log}");
    assert!(
        log.contains("refresh_margin = 30s and min_refresh_interval = 10s"),
        "{log}"
    );
    eprintln!("10 s tokens: {reads} reads, {logins} logins, least life left {least_left:.2} s");
}

/// The daemon reuses an OAuth2 server's refresh token on its next renewals (RFC 6749 §6) inside
/// its loop, not only in a single login (the fallback when a server refuses one is `http.rs`'s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_loop_uses_the_refresh_token_grant() {
    let endpoint = TokenEndpoint::start(EndpointOptions {
        lifetime: Duration::from_secs(3),
        issue_refresh_tokens: true,
        ..EndpointOptions::default()
    })
    .await
    .unwrap();
    let credentials = Credentials::demo();
    let scratch = tempfile::tempdir().unwrap();
    let secret = write_secret(scratch.path(), "secret", &credentials.oauth2_client_secret);
    let out = scratch.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let text = format!(
        r#"{FAST}
[accounts.idp]
preset = "oauth2"
token_url = "{}{}"
client_id = "{}"
client_secret = {{ file = "{}" }}
[[accounts.idp.outputs]]
path = "{}/idp.token"
"#,
        endpoint.base_url(),
        Route::OAuth2.path(),
        credentials.oauth2_client_id,
        secret.display(),
        out.display()
    );
    let config = write_config(scratch.path(), &text);
    let daemon = Daemon::start(&config, scratch.path(), &[]);
    let grants = || -> Vec<String> {
        endpoint
            .requests()
            .iter()
            .filter(|request| request.path == Route::OAuth2.path())
            .filter_map(|request| request.form_value("grant_type"))
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(30), || grants()
            .iter()
            .filter(|grant| *grant == "refresh_token")
            .count()
            >= 2)
        .await,
        "{:?}: {}",
        grants(),
        daemon.log()
    );
    let grants = grants();
    assert_eq!(grants[0], "client_credentials", "{grants:?}");
    // Every token on disk came from the server, whichever grant produced it.
    let token = read(&out.join("idp.token")).unwrap();
    assert!(endpoint.is_live(&token));
    assert!(daemon.log().contains("refreshed=true"), "{}", daemon.log());
}

/// A config named by a relative path (`-c config.toml` in its own directory) is watched too: the
/// watcher reports absolute paths, and the daemon must match them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_given_by_a_relative_path_is_still_watched() {
    let setup = setup(Duration::from_secs(3600)).await;
    let base = setup.endpoint.base_url();
    let text = FAST.to_string() + &apinizer("api", &base, &setup.apinizer_secret, &setup.out);
    let config = write_config(setup.scratch.path(), &text);
    let daemon = Daemon::start_in(
        setup.scratch.path(),
        &["run", "--config", "config.toml"],
        setup.scratch.path(),
        &[],
    );
    assert!(
        eventually(Duration::from_secs(20), || setup
            .out
            .join("api.token")
            .exists())
        .await,
        "{}",
        daemon.log()
    );
    // A second account appears in the file; no signal is sent.
    let second = text.clone() + &apinizer("api2", &base, &setup.apinizer_secret, &setup.out);
    replace_file(Path::new(&config), &second);
    assert!(
        eventually(Duration::from_secs(20), || setup
            .out
            .join("api2.token")
            .exists())
        .await,
        "the change to a relatively named config was missed: {}",
        daemon.log()
    );
    assert!(daemon.log().contains("added=1"), "{}", daemon.log());
}

/// A secret rotated after the accounts started but before the file watcher was up (a window
/// that a loaded machine makes wide; the test widens it for certain) is still noticed: the
/// daemon re-reads once when its watcher starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_before_the_watcher_is_up_is_not_missed() {
    let setup = setup(Duration::from_secs(3600)).await;
    let base = setup.endpoint.base_url();
    let credentials = Credentials::demo();
    std::fs::write(&setup.apinizer_secret, "wrong-secret\n").unwrap();
    let config = write_config(
        setup.scratch.path(),
        &(FAST.to_string()
            + "rejected_retry = \"30m\"\n"
            + &apinizer("plain", &base, &setup.apinizer_secret, &setup.out)),
    );
    let daemon = Daemon::start(
        &config,
        setup.scratch.path(),
        &[
            ("TOKENKEEPER_TEST_WATCH_DELAY_MS", "5000"),
            ("RUST_LOG", "tokenkeeper=debug"),
        ],
    );
    assert!(
        eventually(Duration::from_secs(10), || daemon
            .log()
            .contains("credentials rejected"))
        .await,
        "{}",
        daemon.log()
    );
    // Still inside the watcher's delay: no event can come of this. (Were the watcher up already,
    // the test would prove nothing: it fails rather than pass vacuously.)
    let watching = "watching the config's files for changes";
    assert!(
        !daemon.log().contains(watching),
        "the watcher was up before the rotation: {}",
        daemon.log()
    );
    replace_file(
        &setup.apinizer_secret,
        &format!("{}\n", credentials.apinizer_client_secret),
    );
    assert!(
        !daemon.log().contains(watching),
        "the watcher came up during the rotation: {}",
        daemon.log()
    );
    assert!(
        eventually(Duration::from_secs(20), || setup
            .out
            .join("plain.token")
            .exists())
        .await,
        "the rotation was missed: {}",
        daemon.log()
    );
    assert!(daemon.log().contains("secret changed"), "{}", daemon.log());
}
