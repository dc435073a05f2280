//! Tests of the hook runner against real processes: the environment a command gets, debounce and
//! coalescing, the timeout killing a whole process group, dropping a hook, and the pid-file
//! safety rules of signal hooks.
//!
//! Every wait polls until a deadline; a fixed sleep is used only to show that something did not
//! happen once the debounce window (plus a margin) has passed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::{Hook, join_outputs, parse_pid};
use crate::hook::{Action, Event, HookSpec, Signal};

/// How long a test waits for something that should happen well before.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long past a debounce window a test waits before saying that something did not happen.
const MARGIN: Duration = Duration::from_millis(500);

fn spec(action: Action, debounce: Duration, timeout: Duration) -> HookSpec {
    HookSpec {
        action,
        timeout,
        debounce,
    }
}

/// `sh -c script sh paths…`: the script sees the paths as `$1`, `$2`, ….
fn shell(script: &str, paths: &[&Path]) -> Action {
    let mut argv = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];
    argv.push("sh".to_owned());
    argv.extend(paths.iter().map(|path| path.to_str().unwrap().to_owned()));
    Action::Command(argv)
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// The lines of a file, none when it does not exist.
fn lines(path: &Path) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().map(str::to_owned).collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => panic!("cannot read {}: {error}", path.display()),
    }
}

/// The pids a hook script wrote (atomically, through a rename) to `path`.
fn pids(path: &Path) -> Vec<i32> {
    lines(path)
        .iter()
        .flat_map(|line| line.split_whitespace())
        .map(|word| word.parse().unwrap())
        .collect()
}

/// Whether the process is dead: no longer in /proc, or a zombie (a grandchild reparented to a
/// pid 1 that does not reap is the container's business, not the hook's).
fn dead(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The state follows the command name, which is in parentheses and may hold anything.
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    state.is_some_and(|rest| rest.starts_with('Z'))
}

/// Whether the process is gone from /proc altogether: dead and reaped.
fn reaped(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// A helper process, killed and reaped when the test ends however it ends.
struct Target(std::process::Child);

impl Target {
    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).unwrap()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Appends `hup` to argv[1] on every SIGHUP, after writing argv[2]. Python rather than a shell:
/// a shell cannot trap a signal that was ignored when it started (as under `nohup`), Python
/// installs its handler whatever it inherited.
const HUP_COUNTER: &str = r#"
import signal, sys, time
def hup(*_):
    with open(sys.argv[1], "a") as log:
        log.write("hup\n")
signal.signal(signal.SIGHUP, hup)
with open(sys.argv[2], "w") as ready:
    ready.write("ready\n")
while True:
    time.sleep(0.1)
"#;

/// A process that appends `hup` to `hups` on every SIGHUP, started and ready.
async fn hup_counter(hups: &Path, ready: &Path, uid: Option<u32>) -> Target {
    let mut command = std::process::Command::new("python3");
    command.arg("-c").arg(HUP_COUNTER).arg(hups).arg(ready);
    if let Some(uid) = uid {
        std::os::unix::process::CommandExt::uid(&mut command, uid);
    }
    let target = Target(command.spawn().unwrap());
    eventually("the signal target is ready", || ready.exists()).await;
    target
}

fn signal_hook(account: &str, pid_file: &Path, debounce: Duration) -> Hook {
    let action = Action::Signal {
        pid_file: pid_file.to_path_buf(),
        signal: Signal::Hup,
    };
    Hook::spawn(
        account,
        Vec::new(),
        spec(action, debounce, Duration::from_secs(5)),
    )
}

#[test]
fn pids_are_plain_decimal_numbers() {
    let cases: [(&[u8], Option<i32>); 11] = [
        (b"1234\n", Some(1234)),
        (b"  42 \n", Some(42)),
        (b"0", Some(0)),
        (b"", None),
        (b"\n", None),
        (b"-5\n", None),
        (b"+7\n", None),
        (b"12 34\n", None),
        (b"0x10\n", None),
        (b"99999999999\n", None),
        (b"\xff12\n", None),
    ];
    for (bytes, expected) in cases {
        assert_eq!(
            parse_pid(bytes),
            expected,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn outputs_are_joined_by_colons() {
    assert_eq!(join_outputs(&[]), "");
    assert_eq!(join_outputs(&[PathBuf::from("/a")]), "/a");
    let two = [PathBuf::from("/run/a.token"), PathBuf::from("/run/b.json")];
    assert_eq!(join_outputs(&two), "/run/a.token:/run/b.json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_gets_only_path_and_the_tokenkeeper_variables() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env");
    let outputs = vec![
        PathBuf::from("/run/tk/mail.token"),
        PathBuf::from("/run/tk/mail.json"),
    ];
    let action = shell(r#"env > "$1.tmp" && mv "$1.tmp" "$1""#, &[&env_file]);
    let hook = Hook::spawn(
        "mail",
        outputs,
        spec(action, Duration::ZERO, Duration::from_secs(10)),
    );
    hook.notify(Event::Removed);
    eventually("the hook wrote its environment", || env_file.exists()).await;

    let environment: BTreeMap<String, String> = lines(&env_file)
        .iter()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    assert_eq!(environment["TOKENKEEPER_ACCOUNT"], "mail");
    assert_eq!(environment["TOKENKEEPER_EVENT"], "removed");
    assert_eq!(
        environment["TOKENKEEPER_OUTPUTS"],
        "/run/tk/mail.token:/run/tk/mail.json"
    );
    let expected_path = std::env::var("PATH").unwrap_or_else(|_| super::DEFAULT_PATH.to_owned());
    assert_eq!(environment["PATH"], expected_path);

    // Besides ours, only what sh sets itself.
    let allowed = |name: &str| {
        name.starts_with("TOKENKEEPER_") || ["PATH", "PWD", "OLDPWD", "SHLVL", "_"].contains(&name)
    };
    for name in environment.keys() {
        assert!(allowed(name), "the hook inherited {name}");
    }
    // The test can fail: this process has variables (HOME, CARGO_*, …) that would have leaked.
    let canaries: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| !allowed(name))
        .collect();
    assert!(!canaries.is_empty(), "no canary in the test's environment");
    for canary in &canaries {
        assert!(!environment.contains_key(canary), "{canary} leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_notifies_runs_the_hook_once_after_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let debounce = Duration::from_millis(500);
    let action = shell(r#"echo "$TOKENKEEPER_EVENT" >> "$1""#, &[&runs]);
    let hook = Hook::spawn(
        "mail",
        Vec::new(),
        spec(action, debounce, Duration::from_secs(10)),
    );

    // The burst lasts longer than the window, which restarts at every notify.
    for _ in 0..7 {
        hook.notify(Event::Removed);
        sleep(Duration::from_millis(100)).await;
    }
    hook.notify(Event::Written);
    let last = Instant::now();
    assert_eq!(lines(&runs).len(), 0, "the hook ran during the burst");
    eventually("the hook ran", || !lines(&runs).is_empty()).await;
    assert!(last.elapsed() >= debounce, "ran before the window closed");
    sleep(debounce + MARGIN).await;
    // One run, with the latest event.
    assert_eq!(lines(&runs), ["written"]);

    hook.notify(Event::Removed);
    eventually("the hook ran again", || lines(&runs).len() == 2).await;
    sleep(debounce + MARGIN).await;
    assert_eq!(lines(&runs), ["written", "removed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_during_a_run_give_exactly_one_more_run() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let action = shell(
        r#"echo start >> "$1"; sleep 0.5; echo end >> "$1""#,
        &[&log],
    );
    let hook = Hook::spawn(
        "mail",
        Vec::new(),
        spec(action, Duration::ZERO, Duration::from_secs(10)),
    );
    hook.notify(Event::Written);
    eventually("the hook started", || lines(&log) == ["start"]).await;
    for _ in 0..3 {
        hook.notify(Event::Written);
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines(&log), ["start"], "the second run did not wait");
    eventually("the second run ended", || lines(&log).len() == 4).await;
    sleep(MARGIN).await;
    assert_eq!(lines(&log), ["start", "end", "start", "end"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_past_its_timeout_is_killed_with_its_group_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let action = shell(
        r#"sleep 60 & echo $$ $! > "$1.tmp"; mv "$1.tmp" "$1"; sleep 60"#,
        &[&pid_file],
    );
    let hook = Hook::spawn(
        "mail",
        Vec::new(),
        spec(action, Duration::ZERO, Duration::from_millis(300)),
    );

    hook.notify(Event::Written);
    eventually("the hook started", || pid_file.exists()).await;
    let [shell_pid, background] = pids(&pid_file)[..] else {
        panic!("expected two pids in {}", pid_file.display());
    };
    eventually("the hook and its background child died", || {
        dead(shell_pid) && dead(background)
    })
    .await;
    eventually("the hook was reaped", || reaped(shell_pid)).await;

    // The task survived the kill and runs the hook again.
    std::fs::remove_file(&pid_file).unwrap();
    hook.notify(Event::Written);
    eventually("the hook ran again", || pid_file.exists()).await;
    let again = pids(&pid_file);
    assert_eq!(again.len(), 2);
    assert_ne!(again[0], shell_pid);
    eventually("the second run was killed too", || {
        dead(again[0]) && dead(again[1])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_hook_kills_a_running_command_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let action = shell(
        r#"sleep 60 & echo $$ $! > "$1.tmp"; mv "$1.tmp" "$1"; wait"#,
        &[&pid_file],
    );
    let hook = Hook::spawn(
        "mail",
        Vec::new(),
        spec(action, Duration::ZERO, Duration::from_secs(60)),
    );
    hook.notify(Event::Written);
    eventually("the hook started", || pid_file.exists()).await;
    let [shell_pid, background] = pids(&pid_file)[..] else {
        panic!("expected two pids in {}", pid_file.display());
    };
    assert!(!dead(shell_pid) && !dead(background));

    drop(hook);
    eventually("the hook and its background child died", || {
        dead(shell_pid) && dead(background)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_cannot_start_leaves_the_task_running() {
    for argv in [vec!["/nonexistent/hook".to_owned()], Vec::new()] {
        let hook = Hook::spawn(
            "mail",
            Vec::new(),
            spec(
                Action::Command(argv),
                Duration::ZERO,
                Duration::from_secs(1),
            ),
        );
        hook.notify(Event::Written);
        sleep(MARGIN).await;
        assert!(!hook.task.is_finished());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_hook_signals_the_pid_in_the_file_once_per_burst() {
    let dir = tempfile::tempdir().unwrap();
    let hups = dir.path().join("hups");
    let target = hup_counter(&hups, &dir.path().join("ready"), None).await;
    let pid_file = dir.path().join("app.pid");
    std::fs::write(&pid_file, format!("{}\n", target.pid())).unwrap();
    let debounce = Duration::from_millis(200);
    let hook = signal_hook("web", &pid_file, debounce);

    for _ in 0..3 {
        hook.notify(Event::Written);
        sleep(Duration::from_millis(20)).await;
    }
    eventually("the target got SIGHUP", || lines(&hups).len() == 1).await;
    sleep(debounce + MARGIN).await;
    assert_eq!(lines(&hups), ["hup"]);

    hook.notify(Event::Removed);
    eventually("the target got a second SIGHUP", || lines(&hups).len() == 2).await;
    sleep(debounce + MARGIN).await;
    assert_eq!(lines(&hups).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_hook_refuses_pid_files_that_name_no_safe_target() {
    let dir = tempfile::tempdir().unwrap();
    let hups = dir.path().join("hups");
    let target = hup_counter(&hups, &dir.path().join("ready"), None).await;
    let pid_file = dir.path().join("app.pid");
    let debounce = Duration::from_millis(50);
    let hook = signal_hook("web", &pid_file, debounce);

    // A process that has exited and been reaped.
    let mut exited = std::process::Command::new("true").spawn().unwrap();
    let exited_pid = exited.id();
    exited.wait().unwrap();

    // Pid 1 and our own pid matter most: as root, a SIGHUP sent there would end pid 1 or this
    // test. The file missing, or a FIFO, must not stall the task either.
    hook.notify(Event::Written);
    sleep(debounce + MARGIN).await;
    let fifo = dir.path().join("fifo.pid");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let fifo_hook = signal_hook("web", &fifo, debounce);
    fifo_hook.notify(Event::Written);
    let refused = [
        "garbage\n".to_owned(),
        String::new(),
        "0\n".to_owned(),
        "1\n".to_owned(),
        "-1\n".to_owned(),
        format!("{}\n", std::process::id()),
        format!("{exited_pid}\n"),
        "99999999999\n".to_owned(),
    ];
    for contents in refused {
        std::fs::write(&pid_file, &contents).unwrap();
        hook.notify(Event::Written);
        sleep(debounce + MARGIN).await;
        assert!(!hook.task.is_finished(), "the task ended on {contents:?}");
    }
    assert!(!fifo_hook.task.is_finished());
    // A symlink to a file that names the target (as a link to a root-owned file holding a pid
    // would lend it root's authority): refused.
    let genuine = dir.path().join("genuine.pid");
    std::fs::write(&genuine, format!("{}\n", target.pid())).unwrap();
    let link = dir.path().join("link.pid");
    std::os::unix::fs::symlink(&genuine, &link).unwrap();
    let link_hook = signal_hook("web", &link, debounce);
    link_hook.notify(Event::Written);
    sleep(debounce + MARGIN).await;
    assert!(!link_hook.task.is_finished());
    assert_eq!(lines(&hups).len(), 0);

    // Still alive, and still signalling once the pid file is right.
    std::fs::write(&pid_file, format!("{}\n", target.pid())).unwrap();
    hook.notify(Event::Written);
    eventually("the target got SIGHUP", || lines(&hups) == ["hup"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_hook_signals_only_processes_of_the_pid_files_owner() {
    use std::os::unix::fs::PermissionsExt as _;

    if !rustix::process::geteuid().is_root() {
        // Only root can give a pid file to another owner or start a process as another user.
        return;
    }
    let nobody = rustix::fs::Uid::from_raw(65534);
    let root = rustix::fs::Uid::ROOT;
    let dir = tempfile::tempdir().unwrap();
    // The process running as nobody writes here.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let debounce = Duration::from_millis(50);

    // A pid file of nobody's naming root's process: refused.
    let root_hups = dir.path().join("root_hups");
    let root_target = hup_counter(&root_hups, &dir.path().join("root_ready"), None).await;
    let pid_file = dir.path().join("root.pid");
    std::fs::write(&pid_file, format!("{}\n", root_target.pid())).unwrap();
    rustix::fs::chown(&pid_file, Some(nobody), None).unwrap();
    let hook = signal_hook("web", &pid_file, debounce);
    hook.notify(Event::Written);
    sleep(debounce + MARGIN).await;
    assert_eq!(lines(&root_hups).len(), 0, "root's process was signalled");
    // Root's pid file may name any process.
    rustix::fs::chown(&pid_file, Some(root), None).unwrap();
    hook.notify(Event::Written);
    eventually("root's process got SIGHUP", || lines(&root_hups) == ["hup"]).await;

    // A pid file of nobody's naming nobody's process: signalled.
    let nobody_hups = dir.path().join("nobody_hups");
    let nobody_target = hup_counter(
        &nobody_hups,
        &dir.path().join("nobody_ready"),
        Some(nobody.as_raw()),
    )
    .await;
    let nobody_pid_file = dir.path().join("nobody.pid");
    std::fs::write(&nobody_pid_file, format!("{}\n", nobody_target.pid())).unwrap();
    rustix::fs::chown(&nobody_pid_file, Some(nobody), None).unwrap();
    let nobody_hook = signal_hook("web", &nobody_pid_file, debounce);
    nobody_hook.notify(Event::Written);
    eventually("nobody's process got SIGHUP", || {
        lines(&nobody_hups) == ["hup"]
    })
    .await;
}
