//! Trust boundaries of `tokenkeeper run` (forged state files), and stopping whatever is blocked.
//!
//! What these tests prove, through the real binary against the loopback endpoint:
//! - A state file the daemon did not write never chooses the token it publishes: not an old
//!   version's file planted beside the outputs (in a directory everyone can write, like a
//!   Kubernetes `emptyDir`), not a copy of its own file with the token swapped, not a genuine file
//!   owned by another uid, not a symlink to a genuine copy. Each time the daemon warns naming the
//!   state path, logs in, and publishes a token the endpoint issued; a control restart shows that
//!   an untouched state file is reused, so those logins are the forgeries' doing.
//! - Odd things at the state path or an untrusted state directory never hang the daemon: a FIFO is
//!   ignored at once, and a state directory others could write, or another uid owns, stops the
//!   start with exit code 1 naming the path.
//! - SIGTERM ends the process within `shutdown_grace` plus one second whatever it is doing: a
//!   login hanging on the server is abandoned at once (exit 0); a token write stuck in `fsync`
//!   (held there by `strace` fault injection) still lets the process end in time, and a second
//!   SIGTERM ends it at once with exit code 1.
//! - A write stuck in `fsync` holds only its own account: the other accounts go on renewing.
//!
//! Sub-cases that need a second uid `chown` files to 65534 and so need root; they skip with a loud
//! warning when not root, except under CI, which runs as root and fails instead. The `strace`
//! tests skip the same way when `strace` cannot run.

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tokenkeeper::demo::endpoint::{Credentials, EndpointOptions, Fault, Route, TokenEndpoint};

use crate::support::{Daemon, eventually, temp_files, write_config, write_secret};

/// The uid an attacker's files belong to (`nobody`).
const ATTACKER_UID: u32 = 65534;
/// How long a start plus its first login may take: a few hundred milliseconds when idle, but the
/// suite runs many daemons at once on two cores, possibly beside other builds.
const START_LIMIT: Duration = Duration::from_secs(20);
/// The `shutdown_grace` of these configs (written as `GRACE_TEXT`).
const GRACE: Duration = Duration::from_secs(2);
const GRACE_TEXT: &str = "2s";
/// The product's promise: after SIGTERM the process ends within the grace period plus this.
const FORCE_AFTER_GRACE: Duration = Duration::from_secs(1);
/// How long a refused start may take to exit: it exits before any login, so this only absorbs a
/// loaded machine.
const REFUSAL_LIMIT: Duration = Duration::from_secs(10);
/// How long the output is still watched for a planted token after a fresh token appeared there,
/// in case something chose the planted token a little later (a reload, a second write).
const WATCH_AFTER: Duration = Duration::from_millis(500);

/// One `api` account on the apinizer route of a fresh endpoint, its output in `out/`, its state
/// in `state/` (created by the daemon unless a test plants it first).
struct Fixture {
    endpoint: TokenEndpoint,
    scratch: tempfile::TempDir,
    out: PathBuf,
    output: PathBuf,
    state_dir: PathBuf,
    config: String,
}

impl Fixture {
    /// With the usual grace period and `daemon_keys` added to the `[daemon]` table.
    async fn new(daemon_keys: &str) -> Fixture {
        Fixture::with_grace(GRACE_TEXT, daemon_keys).await
    }

    async fn with_grace(grace: &str, daemon_keys: &str) -> Fixture {
        let endpoint = TokenEndpoint::start(EndpointOptions::default())
            .await
            .expect("start the endpoint");
        let scratch = tempfile::tempdir().expect("tempdir");
        let out = scratch.path().join("out");
        std::fs::create_dir(&out).expect("create the output directory");
        let output = out.join("api.token");
        let state_dir = scratch.path().join("state");
        let credentials = Credentials::demo();
        let secret = write_secret(
            scratch.path(),
            "secret",
            &credentials.apinizer_client_secret,
        );
        let text = format!(
            r#"
[daemon]
startup_spread = "100ms"
retry_base = "200ms"
retry_cap = "1s"
shutdown_grace = "{grace}"
state_dir = "{state_dir}"
{daemon_keys}
[accounts.api]
preset = "apinizer"
base_url = "{base}"
client_id = "{id}"
client_secret = {{ file = "{secret}" }}
[[accounts.api.outputs]]
path = "{output}"
"#,
            state_dir = state_dir.display(),
            base = endpoint.base_url(),
            id = credentials.apinizer_client_id,
            secret = secret.display(),
            output = output.display(),
        );
        let config = write_config(scratch.path(), &text);
        Fixture {
            endpoint,
            scratch,
            out,
            output,
            state_dir,
            config,
        }
    }

    fn state_file(&self) -> PathBuf {
        self.state_dir.join("api.state")
    }

    fn start(&self) -> Daemon {
        Daemon::start(&self.config, self.scratch.path(), &[])
    }

    fn logins(&self) -> usize {
        self.endpoint.issued(Route::Apinizer)
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Writes `text` at `path` with mode 0600, replacing whatever is there (a symlink included, which
/// is removed rather than written through).
fn plant(path: &Path, text: &str) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, text).expect("plant a file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 0600");
}

/// What a version-1 daemon kept beside the first output: unsigned JSON naming the account.
fn legacy_state(token: &str) -> String {
    let now = jiff::Timestamp::now();
    format!(
        r#"{{"version":1,"account":"api","fingerprint":"00112233445566778899aabbccddeeff","saved_at":"{now}","obtained_at":"{now}","expires_at":"2099-01-01T00:00:00Z","token":"{token}"}}"#
    )
}

/// The token a genuine state file holds (the value of its `"token"` key).
fn token_in_state(text: &str) -> String {
    let json = text.lines().next().expect("a state file has a JSON line");
    let value: serde_json::Value = serde_json::from_str(json).expect("the JSON line parses");
    value["token"]
        .as_str()
        .expect("the state file holds a token")
        .to_string()
}

/// Whether sub-cases that need another uid can run: `chown` needs root. A developer who is not
/// root gets a loud skip; CI runs as root and must never skip them.
fn can_chown(case: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{case} needs root to chown files to uid {ATTACKER_UID}, and CI must run it"
    );
    eprintln!("\n*** SKIPPED {case}: not root, cannot chown to uid {ATTACKER_UID} ***\n");
    false
}

fn chown_to_attacker(path: &Path) {
    rustix::fs::chown(path, Some(rustix::fs::Uid::from_raw(ATTACKER_UID)), None)
        .expect("chown to the attacker's uid");
}

/// Records whether anyone opens or reads one file while it is watched (inotify `IN_OPEN` and
/// `IN_ACCESS` on the file itself). The daemon may `stat` a file it leaves alone, but a file it
/// must never read must never be opened at all; looking at the contents afterwards could not
/// tell a read apart from no read.
struct OpenWatch {
    inotify: OwnedFd,
}

impl OpenWatch {
    fn new(path: &Path) -> OpenWatch {
        use rustix::fs::inotify;
        let inotify = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
            .expect("inotify_init");
        inotify::add_watch(
            &inotify,
            path,
            inotify::WatchFlags::OPEN | inotify::WatchFlags::ACCESS,
        )
        .expect("watch the planted file");
        OpenWatch { inotify }
    }

    /// Whether the file was opened or read since the watch began. Events the kernel sends
    /// whatever the mask (the watch ending when the file is deleted) do not count.
    fn opened(&self) -> bool {
        use rustix::fs::inotify::{ReadFlags, Reader};
        let mut buffer = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = Reader::new(&self.inotify, &mut buffer);
        loop {
            match reader.next() {
                Ok(event) => {
                    if event
                        .events()
                        .intersects(ReadFlags::OPEN | ReadFlags::ACCESS)
                    {
                        return true;
                    }
                }
                Err(rustix::io::Errno::AGAIN) => return false,
                Err(error) => panic!("read inotify events: {error}"),
            }
        }
    }
}

/// Starts the daemon over what the attacker planted and reads the output every few milliseconds
/// until it holds a token from a login of this run (and for [`WATCH_AFTER`] more): not one read
/// may see `planted`. Returns the still-running daemon and the token it wrote.
async fn run_past_forgery(fixture: &Fixture, planted: &str, case: &str) -> (Daemon, String) {
    let logins_before = fixture.logins();
    let previous = read(&fixture.output);
    assert_ne!(
        previous.as_deref(),
        Some(planted),
        "{case}: the test planted the token the output already holds"
    );
    let daemon = fixture.start();
    let deadline = Instant::now() + START_LIMIT;
    let mut fresh: Option<(String, Instant)> = None;
    loop {
        let on_disk = read(&fixture.output);
        assert_ne!(
            on_disk.as_deref(),
            Some(planted),
            "{case}: the output holds the planted token; log:\n{}",
            daemon.log()
        );
        match &fresh {
            None => {
                if let Some(token) = on_disk
                    && Some(&token) != previous.as_ref()
                    && fixture.logins() > logins_before
                {
                    fresh = Some((token, Instant::now()));
                }
            }
            Some((_, since)) if since.elapsed() >= WATCH_AFTER => break,
            Some(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "{case}: no token from a new login within {START_LIMIT:?}; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (token, _) = fresh.expect("the loop ends only with a fresh token");
    assert!(
        fixture.endpoint.is_live(&token),
        "{case}: the output holds {token:?}, which the endpoint did not issue"
    );
    assert!(
        daemon.log().contains("login succeeded"),
        "{case}: {}",
        daemon.log()
    );
    assert!(
        !daemon.log().contains("reusing the still-valid token"),
        "{case}: a planted state file was reused; log:\n{}",
        daemon.log()
    );
    (daemon, token)
}

/// SIGTERM, and a clean exit well within the grace period (nothing is blocked here).
async fn stop(mut daemon: Daemon, case: &str) -> String {
    daemon.signal(Signal::TERM);
    let code = daemon.wait(GRACE + FORCE_AFTER_GRACE + REFUSAL_LIMIT).await;
    assert_eq!(code, Some(0), "{case}: {}", daemon.log());
    daemon.log()
}

/// The warning a state file that is there but not acceptable gets: the reason and the path.
fn assert_ignored(log: &str, state_file: &Path, reason: &str, case: &str) {
    let path = state_file.display().to_string();
    let warned = log
        .lines()
        .any(|line| line.contains("ignoring the state file") && line.contains(&path));
    assert!(warned, "{case}: no warning naming {path}; log:\n{log}");
    assert!(
        log.contains(reason),
        "{case}: no {reason:?} in the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_state_files_never_choose_the_token_even_beside_an_emptydir_output() {
    let fixture = Fixture::new("").await;
    // The output directory is writable by everyone without the sticky bit, as an emptyDir is: the
    // attacker is anyone who shares it.
    std::fs::set_permissions(&fixture.out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let legacy = fixture.out.join(".tokenkeeper-api.state");

    // First start. A version-1 file of the daemon's own uid beside the output is what an upgrade
    // finds: it is removed at start, and its token is not used.
    let planted = "ATTACKER-TOKEN-0000000000000000";
    plant(&legacy, &legacy_state(planted));
    let (daemon, _) = run_past_forgery(&fixture, planted, "first start").await;
    let log = stop(daemon, "first start").await;
    assert!(
        log.contains("lets everyone replace files"),
        "no warning about the 0777 output directory: {log}"
    );
    assert!(
        log.contains("removed the state file an older version kept beside the outputs"),
        "{log}"
    );
    assert!(!legacy.exists(), "the daemon's own legacy file was kept");
    assert_eq!(fixture.logins(), 1);
    // A genuine state file, kept to be replayed by the attacker later on.
    let genuine_first = read(&fixture.state_file()).expect("the first run saved its state");
    let first_token = token_in_state(&genuine_first);

    // (a) The attacker's own version-1 file beside the output, and no state of ours: an older
    // version would have published the attacker's token. It is not ours, so it stays where it is,
    // and it is never even opened.
    if can_chown("forged state files (a): a legacy file of another uid") {
        let planted = "ATTACKER-TOKEN-0000000000000001";
        let text = legacy_state(planted);
        plant(&legacy, &text);
        chown_to_attacker(&legacy);
        std::fs::remove_file(fixture.state_file()).unwrap();
        let watch = OpenWatch::new(&legacy);
        let (daemon, _) = run_past_forgery(&fixture, planted, "(a) legacy file").await;
        let log = stop(daemon, "(a) legacy file").await;
        assert!(
            !watch.opened(),
            "the daemon opened a legacy state file of uid {ATTACKER_UID}; log:\n{log}"
        );
        let metadata = std::fs::symlink_metadata(&legacy).expect("the legacy file was left");
        assert_eq!(metadata.uid(), ATTACKER_UID);
        assert_eq!(read(&legacy).as_deref(), Some(text.as_str()), "it changed");
        assert!(
            !log.contains("removed the state file an older version"),
            "{log}"
        );
    }

    // (b) The daemon's own state file with the token swapped for the attacker's, every other byte
    // (the check line included) kept: the check no longer matches.
    let genuine = read(&fixture.state_file()).expect("a state file to forge");
    let real = token_in_state(&genuine);
    let planted = format!("ATTACKER-TOKEN-{:0>width$}", 2, width = real.len() - 15);
    assert_eq!(planted.len(), real.len());
    let forged = genuine.replace(&real, &planted);
    assert_eq!(forged.len(), genuine.len(), "only the token differs");
    plant(&fixture.state_file(), &forged);
    let (daemon, _) = run_past_forgery(&fixture, &planted, "(b) token swapped").await;
    let log = stop(daemon, "(b) token swapped").await;
    assert_ignored(
        &log,
        &fixture.state_file(),
        "its check does not match",
        "(b) token swapped",
    );

    // Control: the state file just written, untouched, is reused without a login. The logins of
    // the other cases are therefore the forgeries' doing.
    let logins = fixture.logins();
    let mut daemon = fixture.start();
    assert!(
        eventually(START_LIMIT, || daemon
            .log()
            .contains("reusing the still-valid token from the state file"))
        .await,
        "control: {}",
        daemon.log()
    );
    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait(REFUSAL_LIMIT).await, Some(0));
    assert_eq!(
        fixture.logins(),
        logins,
        "control: a login despite valid state"
    );

    // (b) A genuine state file of the first run, mode 0600, owned by another uid: its check
    // matches and its token is live, so only its owner tells it apart from one to reuse.
    if can_chown("forged state files (b): a genuine file of another uid") {
        plant(&fixture.state_file(), &genuine_first);
        chown_to_attacker(&fixture.state_file());
        let (daemon, _) = run_past_forgery(&fixture, &first_token, "(b) other uid").await;
        let log = stop(daemon, "(b) other uid").await;
        assert_ignored(
            &log,
            &fixture.state_file(),
            &format!("belongs to uid {ATTACKER_UID}"),
            "(b) other uid",
        );
    }

    // (b) A symlink at the state path to a genuine copy (ours, 0600) in the attacker's directory:
    // following it would reuse the first run's token. The link is never followed, and saving the
    // new state replaces the link instead of writing through it.
    let target = fixture.out.join("copy.state");
    plant(&target, &genuine_first);
    let _ = std::fs::remove_file(fixture.state_file());
    std::os::unix::fs::symlink(&target, fixture.state_file()).unwrap();
    let watch = OpenWatch::new(&target);
    let (daemon, _) = run_past_forgery(&fixture, &first_token, "(b) symlink").await;
    let log = stop(daemon, "(b) symlink").await;
    assert!(!watch.opened(), "the symlink was followed; log:\n{log}");
    assert_ignored(
        &log,
        &fixture.state_file(),
        "is a symlink, which is refused",
        "(b) symlink",
    );
    assert_eq!(
        read(&target).as_deref(),
        Some(genuine_first.as_str()),
        "the link's target was written through"
    );
    assert!(
        std::fs::symlink_metadata(fixture.state_file())
            .unwrap()
            .file_type()
            .is_file(),
        "the link was not replaced by the new state file"
    );
    assert!(temp_files(&fixture.out).is_empty());
    assert!(temp_files(&fixture.state_dir).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_at_the_state_path_neither_blocks_the_start_nor_the_stop() {
    let fixture = Fixture::new("").await;
    std::fs::create_dir(&fixture.state_dir).unwrap();
    std::fs::set_permissions(&fixture.state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A reader that opened this without O_NONBLOCK would wait for a writer forever.
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        fixture.state_file(),
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let mut daemon = fixture.start();
    assert!(
        eventually(START_LIMIT, || read(&fixture.output)
            .is_some_and(|token| fixture.endpoint.is_live(&token)))
        .await,
        "no token: {}",
        daemon.log()
    );
    assert_eq!(fixture.logins(), 1);
    assert_ignored(&daemon.log(), &fixture.state_file(), "is a FIFO", "fifo");
    // Saving the state after the login replaced the FIFO with a regular file.
    assert!(
        eventually(START_LIMIT, || std::fs::symlink_metadata(
            fixture.state_file()
        )
        .is_ok_and(|metadata| metadata.file_type().is_file()))
        .await
    );
    let asked = Instant::now();
    daemon.signal(Signal::TERM);
    let code = daemon.wait(GRACE + FORCE_AFTER_GRACE + REFUSAL_LIMIT).await;
    let took = asked.elapsed();
    eprintln!("fifo: SIGTERM to exit {took:?}, exit code {code:?}");
    assert_eq!(code, Some(0), "{}", daemon.log());
    assert!(
        took < GRACE + FORCE_AFTER_GRACE,
        "stopping took {took:?} with a {GRACE:?} grace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_state_directory_refuses_the_start_naming_it() {
    let fixture = Fixture::new("").await;
    let mut cases = vec![("mode 0777", 0o777, false)];
    if can_chown("untrusted state directory: owned by another uid") {
        cases.push(("another uid's", 0o700, true));
    }
    for (case, mode, foreign) in cases {
        let _ = std::fs::remove_dir_all(&fixture.state_dir);
        std::fs::create_dir(&fixture.state_dir).unwrap();
        std::fs::set_permissions(&fixture.state_dir, std::fs::Permissions::from_mode(mode))
            .unwrap();
        if foreign {
            chown_to_attacker(&fixture.state_dir);
        }
        let started = Instant::now();
        let mut daemon = fixture.start();
        let code = daemon.wait(REFUSAL_LIMIT).await;
        let took = started.elapsed();
        let log = daemon.log();
        assert_eq!(code, Some(1), "{case}: {log}");
        assert!(
            log.contains(&fixture.state_dir.display().to_string()),
            "{case}: the log does not name the state directory:\n{log}"
        );
        assert!(log.contains("cannot start"), "{case}: {log}");
        assert!(
            fixture.endpoint.requests().is_empty(),
            "{case}: a login before the state directory was checked"
        );
        assert!(!fixture.output.exists(), "{case}");
        eprintln!("untrusted state directory, {case}: refused in {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_hung_login_stops_cleanly_at_once() {
    let fixture = Fixture::new("").await;
    fixture
        .endpoint
        .push_fault(Fault::Delay(Duration::from_secs(30)));
    let mut daemon = fixture.start();
    assert!(
        eventually(START_LIMIT, || !fixture.endpoint.requests().is_empty()).await,
        "the login never reached the endpoint: {}",
        daemon.log()
    );
    let asked = Instant::now();
    daemon.signal(Signal::TERM);
    let code = daemon.wait(GRACE + FORCE_AFTER_GRACE + REFUSAL_LIMIT).await;
    let took = asked.elapsed();
    eprintln!("hung login: SIGTERM to exit {took:?}, exit code {code:?}");
    let log = daemon.log();
    assert_eq!(code, Some(0), "not a clean stop: {log}");
    assert!(
        took < GRACE + FORCE_AFTER_GRACE,
        "stopping took {took:?} with a {GRACE:?} grace"
    );
    // The login was abandoned, not waited out until the grace period ran out.
    assert!(
        !log.contains("did not stop within the grace period"),
        "{log}"
    );
    assert!(!fixture.output.exists(), "a token without a finished login");
    assert!(temp_files(&fixture.out).is_empty());
    assert!(temp_files(&fixture.state_dir).is_empty());
}

/// How much longer than the product's promise a stop may take under `strace`: it stops every
/// thread at every system call, and the signal and the exit both pass through it, which on a
/// loaded two-core machine costs up to a second or so.
const STRACE_SLACK: Duration = Duration::from_millis(1500);
/// How long the injected delay holds an `fsync`: far beyond every deadline here, so the write
/// cannot finish by itself before the process is expected to end.
const FSYNC_DELAY: &str = "30s";

/// `tokenkeeper run` under `strace`, whose `fsync` calls (with state files off, the first is a
/// token write) are held for [`FSYNC_DELAY`]. Signals go to the tokenkeeper process itself, never
/// to `strace`.
struct Traced {
    strace: Child,
    /// The traced tokenkeeper: `strace` forks and then execs it, so it is `strace`'s own child.
    pid: Pid,
    log: PathBuf,
}

impl Traced {
    /// Whether `strace` can inject a delay here: a missing program, or a sandbox that forbids
    /// ptrace, gets a loud skip on a developer machine and a failure under CI.
    fn available() -> bool {
        let works = Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync"])
            .args(["-e", "inject=fsync:delay_enter=1ms", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !works {
            assert!(
                std::env::var_os("CI").is_none(),
                "`strace -e inject=fsync:delay_enter=...` does not run, and CI must run the blocked-stop tests"
            );
            eprintln!(
                "\n*** SKIPPED blocked-stop tests: `strace` with fault injection does not run \
                 here; install strace (and allow ptrace) to run them ***\n"
            );
        }
        works
    }

    /// Holds every `fsync`, or with `only` those of descriptors that name that path (strace's
    /// `-P`: a directory's descriptor names the directory, so only the directory sync after a
    /// rename there is held, and writes elsewhere go on).
    fn start(config: &str, dir: &Path, only: Option<&Path>) -> Traced {
        let log = dir.join("traced.log");
        let stderr = std::fs::File::create(&log).expect("create the log");
        let mut command = Command::new("strace");
        // -f: the delay must catch the fsync on whichever thread makes it. -qq: strace's own
        // attach and exit messages stay out of the daemon's log.
        command
            .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync"])
            .arg("-e")
            .arg(format!("inject=fsync:delay_enter={FSYNC_DELAY}"));
        if let Some(path) = only {
            command.arg("-P").arg(path);
        }
        command
            .arg(env!("CARGO_BIN_EXE_tokenkeeper"))
            .args(["run", "--config", config])
            .env_remove("TOKENKEEPER_CONFIG")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .env_remove("ALL_PROXY")
            .env_remove("https_proxy")
            .env_remove("http_proxy")
            .env_remove("all_proxy")
            .env("RUST_LOG", "info")
            .env("STATE_DIRECTORY", dir.join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let strace = command.spawn().expect("start strace");
        let strace_pid = strace.id();
        let deadline = Instant::now() + START_LIMIT;
        let pid = loop {
            if let Some(pid) = traced_child(strace_pid) {
                break pid;
            }
            assert!(
                Instant::now() < deadline,
                "strace started no tokenkeeper within {START_LIMIT:?}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        Traced { strace, pid, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: Signal) {
        rustix::process::kill_process(self.pid, signal).expect("signal tokenkeeper");
    }

    /// The exit code, once the process has ended. "Ended" is when the process has called exit and
    /// its main thread is a zombie: the thread held in the injected delay is only released when
    /// `strace` resumes it, as a thread stuck in a real hung `fsync` would be when the I/O
    /// returns, but the exit code is fixed and every other thread is gone. `strace` itself only
    /// notices once the delay is over, which is why its own exit is not waited for.
    fn ended(&self) -> Option<i32> {
        let Some(stat) = proc_stat(self.pid.as_raw_nonzero().get() as u32) else {
            // Already reaped, exit code unknown: strace reaps it only once the delay is over.
            return Some(-1);
        };
        if !matches!(stat.state, 'Z' | 'X') {
            return None;
        }
        // A waitpid(2) status: an exit code in the second byte, or a signal in the low bits.
        Some(if stat.exit_status & 0x7f == 0 {
            (stat.exit_status >> 8) & 0xff
        } else {
            -(stat.exit_status & 0x7f)
        })
    }

    /// Polls [`Traced::ended`] for at most `limit`: the exit code and when it was first seen.
    async fn wait_end(&self, limit: Duration) -> Option<(i32, Instant)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(code) = self.ended() {
                return Some((code, Instant::now()));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        // The tokenkeeper first, and only while it still is strace's child (its pid cannot have
        // been reused then): killing strace alone would leave it running, detached. Then strace,
        // which releases the thread held in the delay.
        if proc_stat(self.pid.as_raw_nonzero().get() as u32)
            .is_some_and(|stat| stat.ppid == self.strace.id())
        {
            let _ = rustix::process::kill_process(self.pid, Signal::KILL);
        }
        let _ = self.strace.kill();
        let _ = self.strace.wait();
    }
}

/// The fields of `/proc/<pid>/stat` these tests use.
struct ProcStat {
    comm: String,
    state: char,
    ppid: u32,
    /// Field 52: the exit status in waitpid(2) form, readable once the process is a zombie.
    exit_status: i32,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces and parentheses.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    // Fields from the third (state) on.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    Some(ProcStat {
        comm,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        exit_status: fields
            .get(52 - 3)
            .and_then(|field| field.parse().ok())
            .unwrap_or(0),
    })
}

/// The traced tokenkeeper: the process whose parent is `strace_pid` and which has exec'd the
/// binary (until the exec, strace's forked child still calls itself `strace`). Found by scanning
/// `/proc/*/stat` for the parent, which needs no kernel option (unlike `/proc/*/children`) and
/// no ptrace rights over the non-dumpable daemon.
fn traced_child(strace_pid: u32) -> Option<Pid> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = proc_stat(pid)
            && stat.ppid == strace_pid
            && stat.comm == "tokenkeeper"
        {
            return Pid::from_raw(pid as i32);
        }
    }
    None
}

/// A fixture whose daemon runs under `strace` and is left with a worker thread held in the
/// `fsync` of its first token write, after a successful login. `None` when strace is unavailable
/// (skipped, see [`Traced::available`]).
async fn blocked_in_fsync(grace: &str) -> Option<(Fixture, Traced)> {
    if !Traced::available() {
        return None;
    }
    // State files off: otherwise the first fsync would be the state key's, before any login.
    let fixture = Fixture::with_grace(grace, "state_files = false").await;
    let traced = Traced::start(&fixture.config, fixture.scratch.path(), None);
    // The login succeeded and the token's temp file is written but never renamed into place:
    // the write is held in its fsync (normally a temp file lives for microseconds).
    assert!(
        eventually(START_LIMIT, || traced.log().contains("login succeeded")
            && !temp_files(&fixture.out).is_empty())
        .await,
        "the token write did not block: {}",
        traced.log()
    );
    assert_eq!(fixture.logins(), 1);
    assert!(!fixture.output.exists(), "the fsync was not held");
    Some((fixture, traced))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_process_within_the_grace_period_while_a_write_is_stuck_in_fsync() {
    let Some((_fixture, traced)) = blocked_in_fsync(GRACE_TEXT).await else {
        return;
    };
    let asked = Instant::now();
    traced.signal(Signal::TERM);
    let bound = GRACE + FORCE_AFTER_GRACE + STRACE_SLACK;
    let ended = traced.wait_end(bound + REFUSAL_LIMIT).await;
    let Some((code, at)) = ended else {
        panic!(
            "still running {:?} after SIGTERM: {}",
            asked.elapsed(),
            traced.log()
        );
    };
    let took = at - asked;
    let how = match code {
        0 => "a clean stop",
        1 => "forced at the deadline",
        _ => "neither",
    };
    eprintln!("stuck fsync: SIGTERM to exit {took:?}, exit code {code} ({how})");
    assert!(code == 0 || code == 1, "exit code {code}: {}", traced.log());
    // The log says which way it ended, and agrees with the exit code.
    let forced = traced
        .log()
        .contains("did not stop within the grace period: exiting now");
    assert_eq!(forced, code == 1, "{}", traced.log());
    assert!(
        took < bound,
        "ended {took:?} after SIGTERM with a {GRACE:?} grace: {}",
        traced.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_a_process_stuck_in_fsync_at_once() {
    // A long grace, so that "at once" cannot be mistaken for the deadline.
    let grace = Duration::from_secs(10);
    let Some((_fixture, traced)) = blocked_in_fsync("10s").await else {
        return;
    };
    let asked = Instant::now();
    traced.signal(Signal::TERM);
    tokio::time::sleep(Duration::from_millis(100)).await;
    traced.signal(Signal::TERM);
    let ended = traced
        .wait_end(grace + FORCE_AFTER_GRACE + REFUSAL_LIMIT)
        .await;
    let Some((code, at)) = ended else {
        panic!(
            "still running {:?} after two SIGTERMs: {}",
            asked.elapsed(),
            traced.log()
        );
    };
    let took = at - asked;
    eprintln!(
        "stuck fsync, two SIGTERMs 100 ms apart: first SIGTERM to exit {took:?}, exit code {code}"
    );
    assert_eq!(code, 1, "{}", traced.log());
    assert!(
        took < Duration::from_millis(100) + STRACE_SLACK,
        "ended {took:?} after the first SIGTERM, with a {grace:?} grace: {}",
        traced.log()
    );
    assert!(
        traced.log().contains("second stop signal: exiting now"),
        "{}",
        traced.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stuck_in_fsync_does_not_stall_the_other_accounts() {
    if !Traced::available() {
        return;
    }
    // Three-second tokens renewed about every 1.5 s, so a stalled account is seen quickly.
    let endpoint = TokenEndpoint::start(EndpointOptions {
        lifetime: Duration::from_secs(3),
        ..EndpointOptions::default()
    })
    .await
    .expect("start the endpoint");
    let scratch = tempfile::tempdir().expect("tempdir");
    let credentials = Credentials::demo();
    let secret = write_secret(
        scratch.path(),
        "secret",
        &credentials.apinizer_client_secret,
    );
    // Fast renewals, so a stalled account is seen quickly.
    let mut text = r#"
[daemon]
state_files = false
refresh_at = 0.5
refresh_margin = "500ms"
min_refresh_interval = "300ms"
startup_spread = "100ms"
on_expiry = "keep"
"#
    .to_string();
    // Accounts a1 and a2 write into one directory, as on a mount that hangs; b writes
    // elsewhere. Two stuck writes are as many as the daemon has runtime workers, so unless a
    // stuck write gives up its worker nothing else can run at all.
    let stuck_dir = scratch.path().join("out-a");
    let healthy_dir = scratch.path().join("out-b");
    std::fs::create_dir(&stuck_dir).unwrap();
    std::fs::create_dir(&healthy_dir).unwrap();
    for (name, dir) in [("a1", &stuck_dir), ("a2", &stuck_dir), ("b", &healthy_dir)] {
        text += &format!(
            r#"
[accounts.{name}]
preset = "apinizer"
base_url = "{base}"
client_id = "{id}"
client_secret = {{ file = "{secret}" }}
[[accounts.{name}.outputs]]
path = "{dir}/{name}.token"
"#,
            base = endpoint.base_url(),
            id = credentials.apinizer_client_id,
            secret = secret.display(),
            dir = dir.display(),
        );
    }
    let config = write_config(scratch.path(), &text);
    // Every sync of the stuck directory (the last step of each write there, after the rename) is
    // held: those tasks are stuck in a system call, as on a hung mount.
    let traced = Traced::start(&config, scratch.path(), Some(&stuck_dir));
    let stuck_files = [stuck_dir.join("a1.token"), stuck_dir.join("a2.token")];
    let healthy_file = healthy_dir.join("b.token");
    assert!(
        eventually(START_LIMIT, || stuck_files.iter().all(|file| file.exists())).await,
        "the first writes did not land: {}",
        traced.log()
    );
    let stuck_tokens: Vec<Option<String>> = stuck_files.iter().map(|file| read(file)).collect();
    // Account b goes on: it renews about every 1.5 s, each time with a token the endpoint
    // issued. Three renewals take about 5 s; the bound allows for a loaded machine.
    let mut seen = std::collections::BTreeSet::new();
    let went_on = eventually(START_LIMIT, || {
        if let Some(token) = read(&healthy_file)
            && endpoint.is_live(&token)
        {
            seen.insert(token);
        }
        seen.len() >= 4
    })
    .await;
    eprintln!(
        "accounts a1 and a2 stuck in fsync; account b wrote {} tokens meanwhile",
        seen.len()
    );
    assert!(
        went_on,
        "account b stalled while a1's and a2's writes were stuck in fsync: {} tokens seen; log:\n{}",
        seen.len(),
        traced.log()
    );
    // Meanwhile a1 and a2 really were stuck: their files still hold their first tokens.
    let now: Vec<Option<String>> = stuck_files.iter().map(|file| read(file)).collect();
    assert_eq!(now, stuck_tokens, "the stuck accounts were not held");
}

/// A daemon whose log pipe is full (journald stuck, a paused pager): its writers block in
/// `write(2)` holding the log's lock. The stop must not wait behind them.
struct FullLog {
    child: Child,
    /// The read end, never read: the pipe stays full.
    _pipe: std::process::ChildStderr,
}

impl FullLog {
    /// Starts the fixture's daemon at trace level with its stderr into a pipe shrunk to one
    /// page, and waits until the pipe is full.
    async fn start(fixture: &Fixture) -> FullLog {
        let mut command = Daemon::command(
            &["run", "--config", &fixture.config],
            fixture.scratch.path(),
            &[("RUST_LOG", "trace")],
        );
        command.stderr(Stdio::piped());
        let mut child = command.spawn().expect("start tokenkeeper run");
        let pipe = child.stderr.take().expect("stderr was piped");
        let size = rustix::pipe::fcntl_setpipe_size(&pipe, 4096).expect("shrink the pipe");
        let daemon = FullLog { child, _pipe: pipe };
        // Once the first token is written the daemon handles signals (a SIGHUP before that
        // would end it); then reloads, two log lines each, fill the pipe fast.
        assert!(
            eventually(START_LIMIT, || fixture.output.exists()).await,
            "no token was written"
        );
        let full = eventually(START_LIMIT, || {
            if daemon.writer_blocked() {
                return true;
            }
            daemon.signal(Signal::HUP);
            false
        })
        .await;
        let queued = rustix::io::ioctl_fionread(&daemon._pipe).unwrap_or(0);
        assert!(
            full,
            "no thread blocked on the {size}-byte log pipe ({queued} bytes queued)"
        );
        daemon
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("send signal");
    }

    /// Whether one of the daemon's threads sleeps in a pipe write (the kernel's wait channel).
    fn writer_blocked(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.child.id())) else {
            return false;
        };
        tasks.filter_map(Result::ok).any(|task| {
            std::fs::read_to_string(task.path().join("wchan"))
                .is_ok_and(|channel| channel.contains("pipe_write"))
        })
    }

    /// Waits at most `limit` for the process to end; its exit code.
    async fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FullLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_pipe_cannot_keep_sigterm_from_ending_the_process() {
    let fixture = Fixture::new("").await;
    let mut daemon = FullLog::start(&fixture).await;
    let asked = Instant::now();
    daemon.signal(Signal::TERM);
    let code = daemon
        .wait(GRACE + FORCE_AFTER_GRACE + Duration::from_secs(5))
        .await;
    let took = asked.elapsed();
    eprintln!("full log pipe: SIGTERM to exit {took:?}, exit code {code:?}");
    assert_eq!(
        code,
        Some(1),
        "the stop was not forced: exit {code:?} after {took:?}"
    );
    // The deadline thread fires at grace + 1 s; the last log line gets 100 ms.
    assert!(
        took < GRACE + FORCE_AFTER_GRACE + Duration::from_secs(1),
        "SIGTERM took {took:?} with a {GRACE:?} grace"
    );

    // A fresh fixture: the first token written is the sign that signals are handled.
    let fixture = Fixture::new("").await;
    let mut daemon = FullLog::start(&fixture).await;
    let asked = Instant::now();
    daemon.signal(Signal::TERM);
    tokio::time::sleep(Duration::from_millis(100)).await;
    daemon.signal(Signal::TERM);
    let code = daemon
        .wait(GRACE + FORCE_AFTER_GRACE + Duration::from_secs(5))
        .await;
    let took = asked.elapsed();
    eprintln!("full log pipe, two SIGTERMs: exit {took:?}, exit code {code:?}");
    assert_eq!(code, Some(1));
    assert!(took < GRACE, "a second SIGTERM took {took:?}");
}
