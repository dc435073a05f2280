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
pub mod limiter;
pub mod reload;
pub mod state;
pub mod supervisor;
pub mod watch;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use clock::Clock;
pub use control::Controller;
pub use reload::Change;
pub use supervisor::{AuthFactory, HttpLogins, Logins, SetupError, Supervisor, http_logins};

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
    let mut supervisor = Supervisor::start(config, clock, factory)?;
    tracing::info!(accounts = count, config = %config_path.display(), "tokenkeeper running");
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut reloader = Reloader {
        path: config_path,
        last_digest: text.digest(),
        watcher: None,
        events: events_tx,
        controller: controller.clone(),
    };
    drop(text);
    if watch_files {
        reloader.watcher = start_watcher(&supervisor.watched_files(), &reloader.events);
    }
    let mut clock_check = tokio::time::interval(CLOCK_CHECK_INTERVAL);
    clock_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = controller.stop_requested() => break,
            () = controller.reload_requested() => {
                tracing::info!("reload requested");
                if !reloader.reload_unless_stopped(&mut supervisor, true).await {
                    break;
                }
            }
            Some(()) = events.recv() => {
                // Let a burst of events (an editor's save, a `..data` swap) settle.
                tokio::select! {
                    biased;
                    () = controller.stop_requested() => break,
                    () = tokio::time::sleep(DEBOUNCE) => {}
                }
                while events.try_recv().is_ok() {}
                if !reloader.reload_unless_stopped(&mut supervisor, false).await {
                    break;
                }
            }
            _ = clock_check.tick() => {
                supervisor.check_clock();
                supervisor.revive();
            }
        }
    }
    let grace = supervisor.config().daemon.shutdown_grace;
    tracing::info!(grace_s = grace.as_secs_f32(), "stopping");
    supervisor.stop(grace).await;
    tracing::info!("stopped");
    Ok(())
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

    /// Re-reads the config once; applies it when its text changed, a CA bundle was rotated, or
    /// when `force`d by SIGHUP; then wakes the accounts whose secrets changed. An invalid config
    /// is logged and the running one kept.
    async fn reload(&mut self, supervisor: &mut Supervisor, force: bool) {
        let text = match crate::input::may_block(|| config::read(self.path)) {
            Ok(text) => text,
            Err(error) => {
                tracing::error!("reload rejected, keeping the running config: {error}");
                return;
            }
        };
        let ca_changed = crate::input::may_block(|| supervisor.ca_changed());
        if force || text.digest() != self.last_digest || !ca_changed.is_empty() {
            self.apply(supervisor, &text, &ca_changed).await;
        }
        drop(text);
        for name in crate::input::may_block(|| supervisor.wake_changed_secrets()) {
            tracing::info!(account = %name, "secret changed");
        }
        // Links may have been retargeted even when nothing else changed: watch what the files
        // name now.
        crate::input::may_block(|| self.rewatch(supervisor));
    }

    async fn apply(
        &mut self,
        supervisor: &mut Supervisor,
        text: &config::ConfigText,
        ca_changed: &[String],
    ) {
        // Validation opens CA bundles and looks up owner and group names.
        let new = match crate::input::may_block(|| text.validate(SecretCheck::Skip)) {
            Ok(new) => new,
            Err(error) => {
                tracing::error!("reload rejected, keeping the running config: {error}");
                return;
            }
        };
        for warning in &new.warnings {
            tracing::warn!("{warning}");
        }
        let grace = new.daemon.shutdown_grace;
        match supervisor.reload(new, ca_changed).await {
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
            }
            Err(error) => tracing::error!("reload rejected, keeping the running config: {error}"),
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
        Ok(watcher) => Some(watcher),
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
