//! `tokenkeeper run`: the daemon. A [`Supervisor`] owns one task per account and applies config
//! reloads planned as pure data ([`reload::plan`]); [`run`] watches config, secret and CA files,
//! detects suspend, and stops on request.
//!
//! The only module that spawns long-lived tasks or touches signals and file watching. Invariants:
//! an invalid new config never replaces the running one; unchanged accounts keep their tasks and
//! tokens across a reload; an output directory that cannot be written is refused before any
//! account starts; on stop, no file is left half-written (writes never span an await).

pub mod account;
pub mod clock;
pub mod control;
pub mod fleet;
pub mod limiter;
pub mod listen;
pub mod logins;
mod memory;
pub mod metrics;
pub mod notify;
pub mod reload;
pub mod socket;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod wake;
pub mod watch;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use clock::Clock;
pub use control::Controller;
pub use logins::{AuthFactory, Built, HttpLogins, Logins, http_logins};
pub use reload::Change;
pub use supervisor::{SetupError, Supervisor};

use crate::config::{self, SecretCheck};

/// How often the supervisor compares boot time with the timer clock to notice a suspend.
pub const CLOCK_CHECK_INTERVAL: Duration = Duration::from_secs(15);
/// File events are collected this long before the config and secrets are looked at again.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Runs the daemon until `controller` says stop.
///
/// # Errors
/// An invalid config, or a start-up check that failed; nothing was started then.
///
/// Reloads (asked for, or caused by a change to the config or a secret file) run one at a time;
/// requests that arrive meanwhile leave one more pending. A stop request ends a reload in
/// progress rather than waiting for it: the accounts then stop as they would otherwise.
pub async fn run(
    config_path: &Path,
    clock: Arc<dyn Clock>,
    factory: AuthFactory,
    controller: Controller,
) -> Result<(), crate::Error> {
    let text = config::read(config_path)?;
    let config = text.validate(SecretCheck::Skip)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if let Some(level) = &config.daemon.log_level {
        crate::apply_log_level(level);
    }
    controller.set_grace(config.daemon.shutdown_grace);
    let watch_files = config.daemon.watch;
    let count = config.accounts.len();
    // Bound before anything starts: an address the operator asked for and cannot have is an
    // error at start, not a silent absence.
    let listener = match config.daemon.listen {
        Some(address) => Some(listen::bind(address).map_err(SetupError::Listen)?),
        None => None,
    };
    let control_socket = config.daemon.control_socket.clone();
    let mut supervisor = Supervisor::start(config, Arc::clone(&clock), factory)?;
    let board = supervisor.board();
    let _listener = listener.map(|listener| {
        tracing::info!(address = %listener.local_addr().map_or_else(|_| "?".to_string(), |a| a.to_string()), "status listener up");
        Background(tokio::spawn(listen::serve(listener, Arc::clone(&board))))
    });
    let _control = control_socket.and_then(|path| {
        match crate::input::may_block(|| socket::ControlSocket::bind(&path)) {
            Ok(socket) => Some(Background(tokio::spawn(socket.serve(Arc::clone(&board))))),
            Err(error) => {
                tracing::warn!("{error}; `tokenkeeper status`, `probe` and `refresh` will not reach this daemon");
                None
            }
        }
    });
    tracing::info!(accounts = count, config = %config_path.display(), "tokenkeeper running");
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut reloader = Reloader {
        path: config_path,
        last_digest: text.digest(),
        watcher: None,
        events: events_tx,
        controller: controller.clone(),
        notifier: notify::Notifier::from_env(),
        board: Arc::clone(&board),
        clock: Arc::clone(&clock),
    };
    drop(text);
    // The config's parse is done with: its memory goes back to the kernel.
    crate::input::may_block(memory::release_freed);
    if watch_files {
        test_watch_delay();
        reloader.watcher = start_watcher(&supervisor.watched_files(), &reloader.events);
        // The accounts started (and may have logged in) before the watcher was there: a file
        // changed in between made no event, so one quiet re-read now catches it (a no-op when
        // nothing changed). The receiver is this loop's own, so the send cannot fail.
        let _ = reloader.events.send(());
    }
    let mut clock_check = tokio::time::interval(CLOCK_CHECK_INTERVAL);
    clock_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watchdog = reloader.notifier.ping_interval().map(|every| {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let wedge = test_wedge();
    tokio::pin!(wedge);
    // Status changes are gathered for a moment before systemd hears of them.
    let mut status_due: Option<tokio::time::Instant> = None;
    if reloader.notifier.enabled() {
        reloader.notifier.update(&board.snapshot(), clock.wall());
    }
    loop {
        tokio::select! {
            biased;
            () = controller.stop_requested() => break,
            () = &mut wedge => std::future::pending::<()>().await,
            _ = tick(&mut watchdog) => reloader.notifier.ping(),
            () = board.poked() => board.answer(),
            () = controller.reload_requested() => {
                tracing::info!("reload requested");
                board.busy(true);
                let going_on = reloader.reload_unless_stopped(&mut supervisor, true).await;
                board.busy(false);
                if !going_on {
                    break;
                }
            }
            () = controller.refresh_requested() => {
                let accounts = board.request_refresh(None).map_or(0, |names| names.len());
                tracing::info!(accounts, "refresh requested (SIGUSR1)");
            }
            Some(()) = events.recv() => {
                board.busy(true);
                // Let a burst of events (an editor's save, a `..data` swap) settle.
                tokio::select! {
                    biased;
                    () = controller.stop_requested() => break,
                    () = tokio::time::sleep(DEBOUNCE) => {}
                }
                while events.try_recv().is_ok() {}
                let going_on = reloader.reload_unless_stopped(&mut supervisor, false).await;
                board.busy(false);
                if !going_on {
                    break;
                }
            }
            () = board.changed(), if status_due.is_none() && reloader.notifier.enabled() => {
                status_due = Some(tokio::time::Instant::now() + STATUS_GATHER);
            }
            () = sleep_until(status_due), if status_due.is_some() => {
                status_due = None;
                reloader.notifier.update(&board.snapshot(), clock.wall());
            }
            _ = clock_check.tick() => {
                supervisor.check_clock();
                supervisor.revive();
            }
        }
    }
    reloader.notifier.stopping();
    let grace = supervisor.config().daemon.shutdown_grace;
    tracing::info!(grace_s = grace.as_secs_f32(), "stopping");
    supervisor.stop(grace).await;
    tracing::info!("stopped");
    Ok(())
}

/// Status changes are gathered this long before systemd's status line is updated.
const STATUS_GATHER: Duration = Duration::from_millis(200);

/// A task that ends when this is dropped (the listener, the control socket).
struct Background(tokio::task::JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The next tick of an optional interval; never, without one.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// For the tests of the watchdog and `/livez` only, in debug builds only: with
/// `TOKENKEEPER_TEST_WEDGE_AFTER_MS` set, the supervisor loop stops making progress after that
/// long, while the runtime (and so the listener) goes on.
async fn test_wedge() {
    #[cfg(debug_assertions)]
    if let Some(after) = std::env::var("TOKENKEEPER_TEST_WEDGE_AFTER_MS")
        .ok()
        .and_then(|value| value.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(after)).await;
        tracing::warn!("TOKENKEEPER_TEST_WEDGE_AFTER_MS: the supervisor loop wedges now");
        return;
    }
    std::future::pending::<()>().await;
}

/// In debug builds, `TOKENKEEPER_TEST_WATCH_DELAY_MS` holds the start of the file watcher back
/// (after the accounts started), so that a test can change a file in that window for certain.
fn test_watch_delay() {
    #[cfg(debug_assertions)]
    if let Some(delay) = std::env::var("TOKENKEEPER_TEST_WATCH_DELAY_MS")
        .ok()
        .and_then(|value| value.parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(delay));
    }
}

/// What a reload needs besides the supervisor.
struct Reloader<'a> {
    path: &'a Path,
    /// The digest of the config text in force, to skip reloads that change nothing.
    last_digest: config::TextDigest,
    watcher: Option<watch::FileWatcher>,
    /// Where the watcher reports file events.
    events: mpsc::UnboundedSender<()>,
    controller: Controller,
    notifier: notify::Notifier,
    board: Arc<status::Board>,
    clock: Arc<dyn Clock>,
}

impl Reloader<'_> {
    /// Reloads, unless a stop request comes first or arrives meanwhile (then the reload is
    /// abandoned where it is). Returns whether the daemon goes on.
    async fn reload_unless_stopped(&mut self, supervisor: &mut Supervisor, force: bool) -> bool {
        let controller = self.controller.clone();
        tokio::select! {
            biased;
            () = controller.stop_requested() => false,
            () = self.reload(supervisor, force) => true,
        }
    }

    /// Re-reads the config once; applies it when its text changed, a CA bundle or client
    /// certificate was rotated, or
    /// when `force`d by SIGHUP; then wakes the accounts whose secrets changed. An invalid config
    /// is logged and the running one kept.
    async fn reload(&mut self, supervisor: &mut Supervisor, force: bool) {
        // systemd (Type=notify-reload) waits for READY=1 after RELOADING=1, whatever comes of it.
        if force {
            self.notifier.reloading();
        }
        self.reread(supervisor, force).await;
        if force {
            self.notifier.reloaded();
        }
    }

    async fn reread(&mut self, supervisor: &mut Supervisor, force: bool) {
        let text = match crate::input::may_block(|| config::read(self.path)) {
            Ok(text) => text,
            Err(error) => {
                tracing::error!("reload rejected, keeping the running config: {error}");
                self.board.reloaded(false, self.clock.wall());
                return;
            }
        };
        let files_changed = crate::input::may_block(|| supervisor.files_changed());
        if force || text.digest() != self.last_digest || !files_changed.is_empty() {
            if !force {
                self.notifier.reloading();
            }
            let applied = self.apply(supervisor, &text, &files_changed).await;
            self.board.reloaded(applied, self.clock.wall());
            if !force {
                self.notifier.reloaded();
            }
        } else if !self.board.reload_record().successful {
            // The file is back to the config in force (an undo after a rejected edit): the
            // config in force is the file's again.
            tracing::info!("the config file is back to the config in force");
            self.board.reloaded(true, self.clock.wall());
        }
        drop(text);
        // A reload parses the whole config again; trimming walks the heap, so off the workers.
        crate::input::may_block(memory::release_freed);
        for name in crate::input::may_block(|| supervisor.wake_changed_secrets()) {
            tracing::info!(account = %name, "secret changed");
        }
        // Links may have been retargeted even when nothing else changed: watch what the files
        // name now.
        crate::input::may_block(|| self.rewatch(supervisor));
    }

    /// Validates and applies the new config; whether it is now in force.
    async fn apply(
        &mut self,
        supervisor: &mut Supervisor,
        text: &config::ConfigText,
        files_changed: &[String],
    ) -> bool {
        // Validation opens CA bundles and looks up owner and group names.
        let new = match crate::input::may_block(|| text.validate(SecretCheck::Skip)) {
            Ok(new) => new,
            Err(error) => {
                tracing::error!("reload rejected, keeping the running config: {error}");
                return false;
            }
        };
        for warning in &new.warnings {
            tracing::warn!("{warning}");
        }
        let grace = new.daemon.shutdown_grace;
        let old = &supervisor.config().daemon;
        if new.daemon.listen != old.listen || new.daemon.control_socket != old.control_socket {
            tracing::warn!(
                "[daemon] listen and control_socket take effect when the daemon restarts"
            );
        }
        match supervisor.reload(new, files_changed).await {
            Ok(changes) => {
                self.last_digest = text.digest();
                self.controller.set_grace(grace);
                let count = |wanted: fn(&Change) -> bool| {
                    changes.iter().filter(|change| wanted(change)).count()
                };
                tracing::info!(
                    added = count(|change| matches!(change, Change::Add(_))),
                    removed = count(|change| matches!(change, Change::Remove(_))),
                    restarted = count(|change| matches!(change, Change::Restart(_))),
                    "config reloaded"
                );
                true
            }
            Err(error) => {
                tracing::error!("reload rejected, keeping the running config: {error}");
                false
            }
        }
    }

    /// Watches the files of the config now in force.
    fn rewatch(&mut self, supervisor: &Supervisor) {
        if !supervisor.config().daemon.watch {
            self.watcher = None;
            return;
        }
        let files = supervisor.watched_files();
        match self.watcher.as_mut() {
            Some(active) => active.set_files(&files),
            None => self.watcher = start_watcher(&files, &self.events),
        }
    }
}

/// A watcher of `files`, or `None` (logged) when none can be created (inotify limits): reloads
/// then come from SIGHUP alone. A directory that cannot be watched is logged by the watcher,
/// which watches the others.
fn start_watcher(
    files: &[std::path::PathBuf],
    events: &mpsc::UnboundedSender<()>,
) -> Option<watch::FileWatcher> {
    match watch::FileWatcher::new(files, events.clone()) {
        Ok(watcher) => {
            tracing::debug!(
                files = files.len(),
                "watching the config's files for changes"
            );
            Some(watcher)
        }
        Err(error) => {
            tracing::warn!("cannot watch files, relying on SIGHUP: {error}");
            None
        }
    }
}

/// Runs the daemon with the real clocks and HTTP logins, steered by signals: SIGHUP reloads,
/// SIGTERM and SIGINT stop (see [`Controller::listen_for_signals`]).
pub async fn run_with_signals(config_path: &Path) -> Result<(), crate::Error> {
    let controller = Controller::new();
    controller
        .listen_for_signals()
        .map_err(crate::Error::Signals)?;
    run(
        config_path,
        Arc::new(clock::SystemClock::new()),
        http_logins(),
        controller,
    )
    .await
}
