//! The supervisor: one task per account, started after the output and state directories are
//! checked, restarted when a reload's plan says so, revived when one dies, stopped on request.
//!
//! Invariants: nothing starts until every check passed and every login was built, so a failed
//! start or reload changes nothing; a stopped account's files are removed only where the new
//! config does not write; a stuck task never stops a reload for longer than [`STOP_WAIT`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::account::{AccountTask, Shared};
use super::clock::Clock;
use super::limiter::Limiter;
use super::logins::{AuthFactory, Built};
use super::reload::{self, Change};
use super::state::{CredentialsDigest, Keys, Saved, StateDir, StateFile};
use super::status::{AccountCell, Board};
use crate::config::{self, Account, Config, DaemonSettings, FleetSettings};
use crate::fleet::session::Session;
use crate::login::http::FilesDigest;
use crate::output::OutputDir;

/// A gap between the two clocks that grew by more than this means the machine was suspended.
const SUSPEND_THRESHOLD: Duration = Duration::from_secs(2);

/// Why the daemon could not start, or a reload could not be applied (nothing changed then).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The state directory cannot be created, opened or trusted.
    #[error("{0}")]
    StateDir(String),
    /// Output directories that are missing, not directories, not writable, or the state
    /// directory: one line each, naming the directory.
    #[error("{}", .0.join("\n"))]
    OutputDirs(Vec<String>),
    /// A login that cannot be set up (a bad CA bundle or proxy), naming the account.
    #[error(transparent)]
    Login(#[from] crate::login::SetupError),
    /// The status listener's address cannot be bound.
    #[error("{0}")]
    Listen(String),
    /// The fleet's store client cannot be set up, or a reload would change the `[fleet]` table.
    #[error("{0}")]
    Fleet(String),
}

/// How long a reload waits for a stopped account's task to be gone.
pub const STOP_WAIT: Duration = Duration::from_secs(5);

/// An account with its login built, ready to start.
struct Prepared {
    account: Arc<Account>,
    login: Built,
}

impl Prepared {
    fn new(factory: &AuthFactory, account: &Arc<Account>) -> Result<Prepared, SetupError> {
        Ok(Prepared {
            account: Arc::clone(account),
            login: crate::input::may_block(|| factory.login_for(account))?,
        })
    }
}

/// An account task that ended: its account and generation.
type Exit = (String, u64);

/// Sent by an account task's future as it is dropped: it returned, panicked or was aborted.
struct ExitNotice {
    account: String,
    generation: u64,
    exits: tokio::sync::mpsc::UnboundedSender<Exit>,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        // The supervisor is gone when this fails: nothing to revive then.
        let _ = self
            .exits
            .send((std::mem::take(&mut self.account), self.generation));
    }
}

/// An account task's future with its exit notice, which is dropped with it. A plain future rather
/// than an async block: an async block keeps its captures apart from the futures it awaits, so it
/// would hold room for the task's future twice, a few KiB per account.
struct Noticed {
    future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    _notice: ExitNotice,
}

impl std::future::Future for Noticed {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.future.as_mut().poll(context)
    }
}

/// What an account's state file holds, for its task to restore. State files are not fsync'd:
/// after a power loss one may be older than a token the outputs durably hold. So at start
/// (`compare_outputs`) a saved token, expired or not, counts only when no output holds another
/// token; when one does, the whole record is stale and is dropped (its token, which must neither
/// be published nor have its expiry remove the newer files, and its backoff or parking, which a
/// later successful login ended). Later in the process's life (a reload, a revival) the state
/// file is never older than the outputs (it is saved first), and the outputs are not read, so a
/// hung output mount cannot stall the supervisor.
fn restorable(account: &Account, state: &StateFile, compare_outputs: bool) -> Option<Saved> {
    let saved = state.load()?;
    if compare_outputs
        && let Some(token) = &saved.token
        && let Some((path, why)) = crate::output::first_disagreeing(account, token)
    {
        tracing::info!(
            account = %account.name,
            path = %path.display(),
            "the state file is older or newer than an output ({why}): logging in"
        );
        return None;
    }
    Some(saved)
}

struct Running {
    task: JoinHandle<()>,
    /// Tells this task's exit from that of an earlier task of the same account.
    generation: u64,
    /// The account on the board (and so the account itself); its wake signal carries the keyed
    /// digest of the account's secret values, to notice rotation without keeping secrets.
    cell: Arc<AccountCell>,
    /// The digest of the files the task's HTTP client was built from: a rotated CA bundle or
    /// client certificate restarts the account, so that its client uses the new ones.
    files_digest: Option<FilesDigest>,
}

/// Owns the account tasks.
pub struct Supervisor {
    config: Config,
    /// `config.daemon`, shared by every task started since it last changed.
    settings: Arc<DaemonSettings>,
    running: BTreeMap<String, Running>,
    clock: Arc<dyn Clock>,
    factory: AuthFactory,
    limiter: Arc<Limiter>,
    /// Tasks that ended (each sends its account and generation as its future is dropped), so
    /// that reviving looks at those alone rather than at every task.
    exits: (
        tokio::sync::mpsc::UnboundedSender<Exit>,
        tokio::sync::mpsc::UnboundedReceiver<Exit>,
    ),
    /// Exits seen whose task was not yet marked finished: looked at again on the next tick.
    pending_exits: Vec<Exit>,
    next_generation: u64,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The state directory, when state files are on.
    state: Option<Arc<StateDir>>,
    /// Keys digests of secrets when there is no state directory (its own key serves otherwise).
    ephemeral_keys: Keys,
    /// Accounts warned about too-short lifetimes, across restarts of their tasks.
    warned_short: Arc<Mutex<BTreeSet<String>>>,
    last_clock_offset: Duration,
    /// What the accounts report, for status views, metrics and systemd.
    board: Arc<Board>,
    /// This member's session with the fleet's store, when the config has a `[fleet]` table.
    fleet: Option<(Arc<Session>, Arc<FleetSettings>)>,
}

/// Connects to the fleet's store: its client (TLS, etcd's own user) and this member's lease.
fn start_fleet(
    settings: &FleetSettings,
    clock: &Arc<dyn Clock>,
) -> Result<(Arc<Session>, Arc<FleetSettings>), SetupError> {
    let http = crate::login::http::Clients::new()
        .client_for(&settings.http)
        .map_err(|error| SetupError::Fleet(format!("[fleet]: {error}")))?
        .client;
    let credentials = match (&settings.username, &settings.password) {
        (Some(name), Some(source)) => {
            let password = crate::input::may_block(|| source.resolve())
                .map_err(|error| SetupError::Fleet(format!("[fleet] password: {error}")))?;
            Some((name.clone(), password))
        }
        _ => None,
    };
    let client = crate::fleet::etcd::Client::new(crate::fleet::etcd::ClientSettings {
        endpoints: settings.endpoints.clone(),
        http,
        credentials,
    });
    tracing::info!(
        member = %settings.member,
        prefix = %settings.prefix,
        endpoints = settings.endpoints.len(),
        key = %settings.key.fingerprint(),
        "joining the fleet"
    );
    Ok((
        Session::start(client, settings.lease_ttl, Arc::clone(clock)),
        Arc::new(settings.clone()),
    ))
}

impl Supervisor {
    /// Checks every output directory, then starts a task per account.
    ///
    /// # Errors
    /// An output directory that is missing, not a directory, or not writable (named in the
    /// message), or a login that cannot be set up.
    pub fn start(
        config: Config,
        clock: Arc<dyn Clock>,
        factory: AuthFactory,
    ) -> Result<Supervisor, SetupError> {
        let state = open_state_dir(&config.daemon)?;
        preflight(
            config.accounts.values().map(Arc::as_ref),
            state.as_deref(),
            Cleanup::AtStart,
        )?;
        // Build every login before starting any task, so a failure leaves nothing running.
        let mut logins = Vec::with_capacity(config.accounts.len());
        for account in config.accounts.values() {
            logins.push(Prepared::new(&factory, account)?);
        }
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let limiter = Limiter::new(config.daemon.max_concurrent_logins);
        let last_clock_offset = clock.boot().saturating_sub(clock.timer());
        let board = Board::new(clock.wall());
        let fleet = config
            .fleet
            .as_ref()
            .map(|fleet| start_fleet(fleet, &clock))
            .transpose()?;
        let mut supervisor = Supervisor {
            fleet,
            settings: Arc::new(config.daemon.clone()),
            config,
            running: BTreeMap::new(),
            clock,
            factory,
            limiter,
            shutdown,
            state,
            ephemeral_keys: Keys::ephemeral(),
            warned_short: Arc::default(),
            last_clock_offset,
            board,
            exits: tokio::sync::mpsc::unbounded_channel(),
            pending_exits: Vec::new(),
            next_generation: 0,
        };
        let count = logins.len();
        for prepared in logins {
            supervisor.spawn_with(prepared, count, true);
        }
        Ok(supervisor)
    }

    fn spawn(&mut self, account: &Arc<Account>, startup_accounts: usize) -> Result<(), SetupError> {
        let prepared = Prepared::new(&self.factory, account)?;
        self.spawn_with(prepared, startup_accounts, false);
        Ok(())
    }

    /// Starts an account's task; `at_start` when the daemon itself is starting (see
    /// [`restorable`]).
    fn spawn_with(&mut self, prepared: Prepared, startup_accounts: usize, at_start: bool) {
        let Prepared {
            account,
            login: Built { auth, files_digest },
        } = prepared;
        let digest = crate::input::may_block(|| self.credentials_digest(&account));
        let cell = self.board.insert(&account, digest);
        let shared = Shared {
            clock: Arc::clone(&self.clock),
            settings: Arc::clone(&self.settings),
            limiter: Arc::clone(&self.limiter),
            shutdown: self.shutdown.subscribe(),
            startup_accounts,
            warned_short: Arc::clone(&self.warned_short),
        };
        let state = self.state.as_ref().map(|dir| dir.file(&account));
        let saved = state
            .as_ref()
            .and_then(|state| crate::input::may_block(|| restorable(&account, state, at_start)));
        // A fleet account logs in only while its member leads (or is alone).
        let fleet = match (&self.fleet, account.fleet) {
            (Some((session, settings)), true) => Some((
                Arc::clone(session),
                Arc::clone(settings),
                super::fleet::Slot::new(Arc::clone(&cell), Arc::clone(session)),
            )),
            _ => None,
        };
        let auth: Arc<dyn super::account::Authenticator> = match &fleet {
            Some((_, _, slot)) => Arc::new(super::fleet::FleetLogin {
                inner: auth,
                slot: Arc::clone(slot),
            }),
            None => auth,
        };
        let task = AccountTask::new(
            account.clone(),
            auth,
            shared,
            Arc::clone(&cell),
            state,
            saved,
        );
        self.next_generation += 1;
        let generation = self.next_generation;
        let notice = ExitNotice {
            account: account.name.clone(),
            generation,
            exits: self.exits.0.clone(),
        };
        let future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match fleet {
            Some((session, settings, slot)) => {
                Box::pin(super::fleet::FleetTask::new(task, session, settings, slot).run())
            }
            None => Box::pin(task.run()),
        };
        let handle = tokio::spawn(Noticed {
            future,
            _notice: notice,
        });
        self.running.insert(
            account.name.clone(),
            Running {
                task: handle,
                generation,
                cell,
                files_digest,
            },
        );
    }

    /// Applies a new, already validated config (`files_changed`: the accounts whose CA bundle or client
    /// certificate was rotated, from [`Supervisor::files_changed`]): checks the output directories of added and
    /// changed accounts first, then stops removed and changed accounts (and deletes the files they
    /// no longer own), then starts added and changed ones. Unchanged accounts are untouched.
    ///
    /// # Errors
    /// An output directory or login setup problem; nothing was changed then.
    pub async fn reload(
        &mut self,
        new: Config,
        files_changed: &[String],
    ) -> Result<Vec<Change>, SetupError> {
        if self.config.fleet != new.fleet {
            return Err(SetupError::Fleet(
                "the [fleet] table changed: restart the daemon to apply it (nothing else was changed)"
                    .to_string(),
            ));
        }
        let plan = reload::plan(&self.config, &new, files_changed);
        for name in &plan.files_restarts {
            let http = new.accounts.get(name).map(|account| &account.http);
            let what =
                match http.map(|http| (http.ca_file.is_some(), http.client_identity.is_some())) {
                    Some((true, false)) => "the CA bundle changed",
                    Some((false, true)) => "the client certificate or key changed",
                    _ => "the CA bundle or the client certificate changed",
                };
            tracing::info!(account = %name, "{what}: restarting the account with a client built from the new files");
        }
        // A new state directory is opened (and checked) before anything changes.
        let state = if plan.state_dir_changed {
            open_state_dir(&new.daemon)?
        } else {
            self.state.clone()
        };
        // Other tasks are publishing in these directories: no stale-file cleanup here.
        crate::input::may_block(|| {
            preflight(
                plan.started(&new).map(Arc::as_ref),
                state.as_deref(),
                Cleanup::Skip,
            )
        })?;
        // Build every new login before touching anything, so a failure changes nothing.
        let mut logins: BTreeMap<String, Prepared> = BTreeMap::new();
        for account in plan.started(&new) {
            logins.insert(account.name.clone(), Prepared::new(&self.factory, account)?);
        }
        // Running logins finish; when the limit shrinks below them, the permits they return are
        // retired first.
        self.limiter.resize(new.daemon.max_concurrent_logins);
        if let Some(level) = &plan.log_level {
            crate::apply_log_level(level.as_deref().unwrap_or("info"));
        }
        if self.config.daemon != new.daemon {
            self.settings = Arc::new(new.daemon.clone());
        }
        self.config.daemon = new.daemon.clone();
        let old_state = std::mem::replace(&mut self.state, state);
        let stopped: Vec<(&str, Running)> = plan
            .stopped()
            .filter_map(|name| Some((name, self.running.remove(name)?)))
            .collect();
        for (_, running) in &stopped {
            running.task.abort();
        }
        // Wait for the tasks to be gone, so no write of theirs lands after the clean-up; but not
        // for ever: tasks stuck in file operations on a hung mount must not stop every later
        // reload (moving the output elsewhere is the operator's fix). One deadline for all.
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        for (name, running) in stopped {
            if tokio::time::timeout_at(deadline, running.task)
                .await
                .is_err()
            {
                tracing::warn!(
                    account = %name,
                    "the account's task is stuck in a file operation; going on without it"
                );
            }
            let mut dropped = Account::clone(running.cell.account());
            dropped
                .outputs
                .retain(|output| !plan.kept.contains(&output.path));
            crate::input::may_block(|| crate::output::remove_all(&dropped));
        }
        if let Some(state) = &old_state {
            for name in &plan.forgotten {
                state.remove(name);
            }
        }
        for change in &plan.changes {
            if let Change::Remove(name) = change {
                self.board.remove(name);
            }
        }
        let changes = plan.changes;
        let count = logins.len();
        for change in &changes {
            if let Change::Add(name) | Change::Restart(name) = change
                && let Some(prepared) = logins.remove(name)
            {
                self.spawn_with(prepared, count, false);
            }
        }
        self.config = new;
        let in_use: Vec<&crate::login::spec::HttpSettings> = self
            .config
            .accounts
            .values()
            .map(|account| &account.http)
            .collect();
        self.factory.retain(&in_use);
        Ok(changes)
    }

    /// The accounts whose client files (CA bundle, client certificate and key) changed since
    /// their client was built.
    pub fn files_changed(&self) -> Vec<String> {
        type Files<'a> = (
            Option<&'a Path>,
            Option<&'a crate::login::spec::ClientIdentity>,
        );
        let mut digests: HashMap<Files<'_>, Option<FilesDigest>> = HashMap::new();
        self.running
            .iter()
            .filter(|(_, running)| {
                let http = &running.cell.account().http;
                let files = (http.ca_file.as_deref(), http.client_identity.as_ref());
                if files == (None, None) {
                    return false;
                }
                let now = *digests
                    .entry(files)
                    .or_insert_with(|| crate::login::http::files_digest(http));
                now != running.files_digest
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Restarts account tasks that ended on their own (a panic): logged, and started again.
    /// Called on the supervisor's periodic tick, which spaces out restarts of a task that keeps
    /// failing. Only tasks that reported their exit are looked at: an idle daemon with many
    /// accounts does no work per account here (a scan of 10,000 tasks cost up to 65 ms a tick).
    pub fn revive(&mut self) {
        while let Ok(exit) = self.exits.1.try_recv() {
            self.pending_exits.push(exit);
        }
        let mut finished = Vec::new();
        let mut not_yet = Vec::new();
        for (name, generation) in std::mem::take(&mut self.pending_exits) {
            match self.running.get(&name) {
                // Stopped on purpose (removed or restarted by a reload), or already revived.
                Some(running) if running.generation != generation => {}
                None => {}
                Some(running) if running.task.is_finished() => finished.push(name),
                Some(_) => not_yet.push((name, generation)),
            }
        }
        self.pending_exits = not_yet;
        for name in finished {
            if *self.shutdown.borrow() {
                return;
            }
            let Some(running) = self.running.remove(&name) else {
                continue;
            };
            tracing::error!(account = %name, "the account's task stopped unexpectedly; restarting it");
            // Revivals are spaced by the tick: no start-up spread.
            if let Err(error) = self.spawn(running.cell.account(), 1) {
                // Kept as it was (its task finished), so the next tick tries again: a login that
                // cannot be built now (a file mid-rotation) may be buildable then.
                tracing::error!(account = %name, "cannot restart, trying again at the next check: {error}");
                self.pending_exits.push((name.clone(), running.generation));
                self.running.insert(name, running);
            }
        }
    }

    /// The keyed digest of an account's secret values now. Reading the secret files is bounded:
    /// each is a regular file of at most 64 KiB, opened without blocking.
    fn credentials_digest(&self, account: &Account) -> CredentialsDigest {
        let keys = self
            .state
            .as_deref()
            .map_or(&self.ephemeral_keys, StateDir::keys);
        keys.credentials(&account.login)
    }

    /// Re-reads every account's secret files and wakes the accounts whose secrets changed.
    /// Returns their names.
    pub fn wake_changed_secrets(&mut self) -> Vec<String> {
        let mut woken = Vec::new();
        for (name, running) in &self.running {
            let digest = self.credentials_digest(running.cell.account());
            // Waiting tasks see the new value; a parked one retries at once.
            if running.cell.wake().set_credentials(digest) {
                woken.push(name.clone());
            }
        }
        woken
    }

    /// Compares boot time with the timer clock; if they drifted apart (a suspend), every task
    /// re-checks its deadlines at once. Returns whether that happened.
    pub fn check_clock(&mut self) -> bool {
        let offset = self.clock.boot().saturating_sub(self.clock.timer());
        let jumped = crate::schedule::suspended(self.last_clock_offset, offset, SUSPEND_THRESHOLD);
        // The reference moves only when a jump is reported, so short suspends add up until they
        // are noticed instead of each slipping under the threshold.
        if jumped || offset < self.last_clock_offset {
            self.last_clock_offset = offset;
        }
        if jumped {
            tracing::info!("the clock jumped (suspend and resume?): re-checking every account");
            for running in self.running.values() {
                running.cell.wake().recheck();
            }
        }
        jumped
    }

    /// Every account's status, by name.
    #[cfg(test)]
    pub fn statuses(&self) -> Vec<(String, super::status::AccountStatus)> {
        self.board
            .snapshot()
            .into_iter()
            .map(|view| (view.name, view.status))
            .collect()
    }

    /// The status board the accounts report to.
    pub fn board(&self) -> Arc<Board> {
        Arc::clone(&self.board)
    }

    /// The files whose changes matter: the config, every secret file, every CA bundle and every
    /// client certificate and key.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = BTreeSet::from([self.config.path.clone()]);
        for running in self.running.values() {
            for (_, source) in running.cell.account().login.secret_sources() {
                files.extend(source.watched_path());
            }
            let http = &running.cell.account().http;
            files.extend(http.ca_file.clone());
            if let Some(identity) = &http.client_identity {
                files.extend([identity.cert.clone(), identity.key.clone()]);
            }
        }
        files.into_iter().collect()
    }

    /// The running config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Stops every task, waiting at most `grace` for them to finish.
    pub async fn stop(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let now = tokio::time::Instant::now();
        let deadline = now.checked_add(grace).unwrap_or(now);
        for (name, running) in self.running {
            let abort = running.task.abort_handle();
            if tokio::time::timeout_at(deadline, running.task)
                .await
                .is_err()
            {
                tracing::warn!(account = %name, "did not stop within the grace period; aborting");
                abort.abort();
            }
        }
        if let Some((session, _)) = &self.fleet {
            session.close().await;
        }
    }
}

/// Opens the state directory the settings name, if state files are on.
fn open_state_dir(settings: &config::DaemonSettings) -> Result<Option<Arc<StateDir>>, SetupError> {
    if settings.state_files {
        StateDir::open(&settings.state_dir)
            .map(Some)
            .map_err(SetupError::StateDir)
    } else {
        Ok(None)
    }
}

/// Whether [`preflight`] cleans up: only at start, when nothing else of ours is writing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cleanup {
    /// Remove stale temporary files and the state files older versions kept beside outputs,
    /// and warn about output directories others can write.
    AtStart,
    Skip,
}

/// Start-up checks of every output directory the accounts use: it exists, is a directory (not a
/// symlink), is not the state directory, and takes a file. At start, an output directory that
/// others can write without the sticky bit (a Kubernetes `emptyDir` root, say) is warned about
/// once: publishing there stays safe (exclusive, no-follow temp files and a rename), but others
/// can delete or replace the token files. Then stale temporary files of ours and state files of
/// older versions are removed.
fn preflight<'a>(
    accounts: impl Iterator<Item = &'a Account>,
    state: Option<&StateDir>,
    cleanup: Cleanup,
) -> Result<(), SetupError> {
    let mut dirs: BTreeMap<PathBuf, Vec<&str>> = BTreeMap::new();
    for account in accounts {
        for output in &account.outputs {
            if let Some(dir) = output.path.parent() {
                dirs.entry(dir.to_path_buf())
                    .or_default()
                    .push(account.name.as_str());
            }
        }
    }
    let mut problems = Vec::new();
    for (dir, names) in &dirs {
        let checked = OutputDir::open(dir).and_then(|opened| {
            if state.is_some_and(|state| state.is(&opened)) {
                return Err(crate::output::OutputError::UntrustedDir {
                    path: dir.clone(),
                    reason: "it is the state directory, which only the daemon may read".to_string(),
                });
            }
            opened.write_check()?;
            if cleanup == Cleanup::AtStart {
                if let Err(error) = opened.check_trusted() {
                    tracing::warn!("{error}; tokens are still published safely, but others can delete or replace them: give the daemon a directory of its own (a subdirectory, mode 0750)");
                }
                let removed = opened.remove_stale_temps()?;
                if removed > 0 {
                    tracing::info!(dir = %dir.display(), removed, "removed stale temporary files");
                }
                remove_legacy_state_files(&opened, names);
            }
            Ok(())
        });
        if let Err(error) = checked {
            problems.push(format!("output directory {}: {error}", dir.display()));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SetupError::OutputDirs(problems))
    }
}

/// Versions before the state directory kept `.tokenkeeper-<account>.state` beside the first
/// output; such a file holds a token in a directory consumers share. Regular files of ours with
/// that name are removed (their tokens are never read again).
fn remove_legacy_state_files(dir: &OutputDir, accounts: &[&str]) {
    let ours = rustix::process::geteuid().as_raw();
    for account in accounts {
        let name = std::ffi::OsString::from(format!(".tokenkeeper-{account}.state"));
        let Ok(stat) = rustix::fs::statat(dir.fd(), &name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        else {
            continue;
        };
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::RegularFile
            && stat.st_uid == ours
            && dir.remove(&name).unwrap_or(false)
        {
            tracing::info!(account = %account, dir = %dir.path().display(), "removed the state file an older version kept beside the outputs");
        }
    }
}
