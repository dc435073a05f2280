//! Performing an account's hook: one task per account that debounces the account's change
//! events and then runs its command or sends its signal.
//!
//! Invariants: [`Hook::notify`] never blocks, fails or panics; a burst of changes gives one run,
//! and changes during a run give exactly one more run after it. A command starts from an empty
//! environment (only `PATH` and the `TOKENKEEPER_*` variables), in a process group of its own, and
//! that group is killed when the command outlives its timeout or the [`Hook`] is dropped; the
//! command is always reaped. A signal goes only to a process that the pid file's owner owns (or
//! to any process when root owns the pid file), never to pid 0 or 1 or to the daemon itself; a
//! pid file that is a symlink is refused (one planted in a shared directory could otherwise lend
//! it the owner of any root-owned file holding a number). The
//! task never holds a runtime thread in blocking I/O outside [`may_block`].

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Action, Event, HookSpec, Signal};
use crate::input::{self, InputError, Symlinks, may_block};

/// The `PATH` a command hook gets when the daemon itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A pid file holds a decimal number and a newline; anything longer is not a pid file.
const PID_FILE_LIMIT: usize = 64;

/// How long a command killed after its timeout may take to be reaped before the task stops
/// waiting for it (a process stuck in the kernel, on a hung NFS mount say, does not die at once).
/// The runtime still reaps it when it does exit.
const REAP_GRACE: Duration = Duration::from_secs(5);

/// The running hook of one account. Dropping it stops the hook task and kills a command that is
/// still running, with its process group.
pub struct Hook {
    /// The latest event. A watch channel keeps one value however many notifies arrive, so a burst
    /// (or the changes made while the hook runs) collapses into one pending run, and sending
    /// never blocks or fails.
    events: watch::Sender<Event>,
    /// The task that debounces and runs the hook; aborted on drop.
    task: JoinHandle<()>,
}

impl Hook {
    /// Spawns the hook task of `account` on the current tokio runtime. `outputs` are the account's
    /// output paths, given to a command as `TOKENKEEPER_OUTPUTS`.
    ///
    /// # Panics
    /// Outside a tokio runtime (as [`tokio::spawn`] does). The runtime needs its time and I/O
    /// drivers; a signal hook reads its pid file through [`may_block`], which wants the
    /// multi-thread runtime for not stalling other tasks.
    pub fn spawn(account: &str, outputs: Vec<PathBuf>, spec: HookSpec) -> Hook {
        // The initial value counts as seen: nothing runs until the first notify.
        let (events, receiver) = watch::channel(Event::Written);
        let runner = Runner {
            account: account.to_owned(),
            outputs: join_outputs(&outputs),
            spec,
        };
        let task = tokio::spawn(runner.run(receiver));
        Hook { events, task }
    }

    /// The account's files changed: run the hook after the debounce. Never blocks, never fails,
    /// never panics.
    pub fn notify(&self, event: Event) {
        // `send_replace` stores the value even when the task has ended (it never does on its
        // own), so there is no error to handle.
        self.events.send_replace(event);
    }
}

impl Drop for Hook {
    /// Aborts the task. A command still running is killed with its process group when the task's
    /// future is dropped (see `Running`).
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the hook task needs, owned by it.
struct Runner {
    account: String,
    /// The output paths joined by `:`, the value of `TOKENKEEPER_OUTPUTS`.
    outputs: OsString,
    spec: HookSpec,
}

impl Runner {
    /// Waits for notifies, debounces them, runs the hook; until the [`Hook`] goes away.
    async fn run(self, mut events: watch::Receiver<Event>) {
        // `changed` fails only when the sender is gone, that is when the Hook was dropped.
        while events.changed().await.is_ok() {
            // The debounce window restarts at every notify: run `debounce` after the last one.
            loop {
                match tokio::time::timeout(self.spec.debounce, events.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_elapsed) => break,
                }
            }
            // Marks the value seen: a notify from now on (during the run) means one more run.
            let event = *events.borrow_and_update();
            match &self.spec.action {
                Action::Command(argv) => self.run_command(argv, event).await,
                Action::Signal { pid_file, signal } => self.send_signal(pid_file, *signal),
            }
        }
    }

    /// Runs the command, kills its process group after the timeout, reaps it, and logs how it
    /// ended.
    async fn run_command(&self, argv: &[String], event: Event) {
        let account = self.account.as_str();
        let Some((program, arguments)) = argv.split_first() else {
            // A validated spec has a program; an empty argv is logged rather than trusted.
            tracing::warn!(account, "the hook command is empty: nothing to run");
            return;
        };
        let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        let mut command = Command::new(program);
        command
            .args(arguments)
            .env_clear()
            .env("PATH", path)
            .env("TOKENKEEPER_ACCOUNT", account)
            .env("TOKENKEEPER_EVENT", event.name())
            .env("TOKENKEEPER_OUTPUTS", &self.outputs)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // The hook's diagnostics join the daemon's log stream.
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true);
        let started = Instant::now();
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                tracing::warn!(account, program, "cannot run the hook {program}: {error}");
                return;
            }
        };
        let mut running = Running::new(child);
        let timeout = self.spec.timeout;
        match tokio::time::timeout(timeout, running.child.wait()).await {
            Ok(Ok(status)) => {
                running.reaped();
                log_exit(account, program, status, started.elapsed());
            }
            Ok(Err(error)) => {
                // Not seen in practice (the runtime owns the child's status). Dropping `running`
                // kills the group, so that nothing of this run is left behind.
                tracing::warn!(
                    account,
                    program,
                    "cannot wait for the hook {program}: {error}"
                );
            }
            Err(_elapsed) => {
                tracing::warn!(
                    account,
                    program,
                    "hook {program} killed after its timeout of {timeout:?}"
                );
                running.kill_group();
                match tokio::time::timeout(REAP_GRACE, running.child.wait()).await {
                    Ok(Ok(_killed)) => running.reaped(),
                    Ok(Err(error)) => tracing::warn!(
                        account,
                        program,
                        "cannot wait for the killed hook {program}: {error}"
                    ),
                    // Dropping the child leaves it to the runtime, which reaps it when it exits.
                    Err(_elapsed) => tracing::warn!(
                        account,
                        program,
                        "hook {program} has not exited {REAP_GRACE:?} after SIGKILL; it will be reaped when it does"
                    ),
                }
            }
        }
    }

    /// Sends the signal to the process the pid file names, if the safety rules allow it.
    fn send_signal(&self, pid_file: &Path, signal: Signal) {
        let account = self.account.as_str();
        let path = pid_file.display();
        match may_block(|| signal_pid_file(pid_file, signal)) {
            Ok(pid) => tracing::debug!(
                account,
                path = %path,
                pid,
                "hook sent SIG{} to process {pid}",
                signal.name()
            ),
            Err(error) => tracing::warn!(account, path = %path, "hook: {error}"),
        }
    }
}

/// A spawned command. Dropped before it was reaped (the hook's timeout, or the task aborted with
/// the [`Hook`]), it kills the command's whole process group; the child itself is then killed and
/// reaped by the runtime (`kill_on_drop`).
struct Running {
    child: Child,
    /// The process group, whose id is the child's pid (`process_group(0)`). `None` once the child
    /// was reaped: until then the pid cannot be reused, afterwards it could name someone else.
    group: Option<Pid>,
}

impl Running {
    fn new(child: Child) -> Running {
        // `id` is `Some` until the child was reaped, which it cannot be yet. A group id below 2
        // is refused because `kill(-1)` would signal every process we may signal.
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .filter(|&id| id >= 2)
            .and_then(Pid::from_raw);
        Running { child, group }
    }

    /// SIGKILLs the process group, the command and whatever it started.
    fn kill_group(&self) {
        if let Some(group) = self.group {
            // ESRCH (nothing left in the group) is the only expected error, and means done.
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }

    /// The child was waited for: its pid must not be signalled any more.
    fn reaped(&mut self) {
        self.group = None;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Runs before `child` is dropped, while the unreaped child still holds its pid.
        self.kill_group();
    }
}

fn log_exit(account: &str, program: &str, status: ExitStatus, duration: Duration) {
    if status.success() {
        tracing::debug!(account, program, ?duration, "hook {program} ran");
    } else if let Some(code) = status.code() {
        tracing::warn!(
            account,
            program,
            "hook {program} exited with status {code} after {duration:?}"
        );
    } else if let Some(signal) = status.signal() {
        tracing::warn!(
            account,
            program,
            "hook {program} was killed by signal {signal} after {duration:?}"
        );
    } else {
        tracing::warn!(account, program, "hook {program} ended with {status}");
    }
}

/// Why a signal hook sent nothing. Names the pid file; never carries its bytes.
#[derive(Debug, thiserror::Error)]
enum SignalError {
    #[error("{0}: not signalled")]
    Read(#[source] InputError),
    #[error("pid file {path} does not hold a process id: not signalled")]
    NotAPid { path: PathBuf },
    #[error("pid file {path} names pid {pid}, which is never signalled")]
    Reserved { path: PathBuf, pid: i32 },
    #[error("pid file {path} names the daemon's own pid {pid}: not signalled")]
    OwnPid { path: PathBuf, pid: i32 },
    #[error("pid file {path} names process {pid}, which does not exist")]
    NoProcess { path: PathBuf, pid: i32 },
    #[error("cannot find the owner of process {pid} named by pid file {path}: {source}")]
    Owner {
        path: PathBuf,
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "pid file {path} (uid {file_uid}) names process {pid} of uid {process_uid}: not signalled"
    )]
    OwnerMismatch {
        path: PathBuf,
        file_uid: u32,
        pid: i32,
        process_uid: u32,
    },
    #[error("cannot send SIG{signal} to process {pid} named by pid file {path}: {source}")]
    Kill {
        path: PathBuf,
        pid: i32,
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Reads the pid file, checks the pid against the safety rules, and sends the signal. Blocking
/// (file and procfs reads): call it through [`may_block`]. Returns the pid signalled.
fn signal_pid_file(pid_file: &Path, signal: Signal) -> Result<i32, SignalError> {
    let path = || pid_file.to_path_buf();
    let file =
        input::read_file(pid_file, PID_FILE_LIMIT, Symlinks::Refuse).map_err(SignalError::Read)?;
    let pid = parse_pid(&file.bytes).ok_or_else(|| SignalError::NotAPid { path: path() })?;
    if pid < 2 {
        return Err(SignalError::Reserved { path: path(), pid });
    }
    if pid == rustix::process::getpid().as_raw_pid() {
        return Err(SignalError::OwnPid { path: path(), pid });
    }
    // A pid file that anyone could write must not aim the daemon's signal at someone else's
    // process: its owner must own the process, or be root.
    let process_uid = match rustix::fs::stat(format!("/proc/{pid}")) {
        Ok(stat) => stat.st_uid,
        Err(Errno::NOENT) => return Err(SignalError::NoProcess { path: path(), pid }),
        Err(errno) => {
            return Err(SignalError::Owner {
                path: path(),
                pid,
                source: errno.into(),
            });
        }
    };
    if file.uid != 0 && file.uid != process_uid {
        return Err(SignalError::OwnerMismatch {
            path: path(),
            file_uid: file.uid,
            pid,
            process_uid,
        });
    }
    // `parse_pid` gives only positive numbers and 0 and 1 were refused, so this is always Some.
    let target = Pid::from_raw(pid).ok_or_else(|| SignalError::Reserved { path: path(), pid })?;
    match rustix::process::kill_process(target, signal.to_rustix()) {
        Ok(()) => Ok(pid),
        Err(Errno::SRCH) => Err(SignalError::NoProcess { path: path(), pid }),
        Err(errno) => Err(SignalError::Kill {
            path: path(),
            pid,
            signal: signal.name(),
            source: errno.into(),
        }),
    }
}

/// The pid a pid file holds: decimal digits, surrounded by optional whitespace. No sign, so never
/// a negative number (which `kill` would take as a process group).
fn parse_pid(bytes: &[u8]) -> Option<i32> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The output paths joined by `:`, as `TOKENKEEPER_OUTPUTS` gives them.
fn join_outputs(outputs: &[PathBuf]) -> OsString {
    let mut joined = OsString::new();
    for (index, output) in outputs.iter().enumerate() {
        if index > 0 {
            joined.push(":");
        }
        joined.push(output);
    }
    joined
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
