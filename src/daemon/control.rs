//! Steering a running daemon: reload, refresh and stop requests, and the signals that make them
//! (SIGHUP reloads, SIGUSR1 refreshes every account, SIGTERM and SIGINT stop).
//!
//! Invariants: reload requests coalesce (however many arrive while one reload runs, exactly one
//! more follows it); a stop request is seen even while a reload runs, and never waits behind
//! reloads; and once SIGTERM or SIGINT has arrived the process ends within the grace period plus
//! one second whatever is blocked, or at once on a second SIGTERM or SIGINT. Signals are handled
//! on a thread of their own, so a runtime whose worker threads are all stuck (a file system that
//! hangs) still hears them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// The exit code when the process had to be ended without a clean stop.
pub const EXIT_FORCED: i32 = crate::EXIT_FAILURE as i32;

/// How long past the grace period a stop may take before the process is ended anyway.
const FORCE_AFTER_GRACE: Duration = Duration::from_secs(1);

/// The handle through which signals (or a test, or the demo) steer [`super::run`]. Cheap to clone;
/// every clone steers the same daemon.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

struct Inner {
    /// One stored permit at most: requests made while a reload runs collapse into one.
    reload: Notify,
    /// Refresh requests coalesce the same way.
    refresh: Notify,
    stop: watch::Sender<bool>,
    /// The grace period of the running config, in milliseconds, for the forced exit.
    grace_ms: AtomicU64,
}

impl Default for Controller {
    fn default() -> Controller {
        Controller::new()
    }
}

impl Controller {
    pub fn new() -> Controller {
        let (stop, _) = watch::channel(false);
        Controller {
            inner: Arc::new(Inner {
                reload: Notify::new(),
                refresh: Notify::new(),
                stop,
                grace_ms: AtomicU64::new(
                    u64::try_from(crate::config::DEFAULT_SHUTDOWN_GRACE.as_millis())
                        .unwrap_or(u64::MAX),
                ),
            }),
        }
    }

    /// Asks for a reload of the config and secrets (SIGHUP).
    pub fn reload(&self) {
        self.inner.reload.notify_one();
    }

    /// Asks every account to log in again soon (SIGUSR1), within the login limit and each
    /// account's minimum interval between requested refreshes.
    pub fn refresh(&self) {
        self.inner.refresh.notify_one();
    }

    /// Resolves when a refresh is pending, and takes it. Cancel-safe.
    pub async fn refresh_requested(&self) {
        self.inner.refresh.notified().await;
    }

    /// Asks the daemon to stop (SIGTERM, SIGINT).
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Whether a stop was asked for.
    #[cfg(test)]
    pub fn stopping(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// Resolves once a stop is asked for (at once if it already was). Cancel-safe.
    pub async fn stop_requested(&self) {
        let mut receiver = self.inner.stop.subscribe();
        // The sender lives in `inner`, as long as `self`: the wait cannot fail.
        let _ = receiver.wait_for(|stopping| *stopping).await;
    }

    /// Resolves when a reload is pending, and takes it. Cancel-safe: a request is only taken
    /// when this future completes.
    pub async fn reload_requested(&self) {
        self.inner.reload.notified().await;
    }

    /// Tells the forced-exit timer the grace period of the config in force.
    pub fn set_grace(&self, grace: Duration) {
        let millis = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.inner.grace_ms.store(millis, Ordering::Relaxed);
    }

    fn grace(&self) -> Duration {
        Duration::from_millis(self.inner.grace_ms.load(Ordering::Relaxed))
    }

    /// Turns SIGHUP into reloads, SIGUSR1 into refreshes and SIGTERM/SIGINT into a stop, on a
    /// thread of its own. After
    /// the first SIGTERM or SIGINT the process exits with [`EXIT_FORCED`] if it is still running
    /// the grace period plus one second later, or at once on a second one.
    ///
    /// # Errors
    /// The signal handlers could not be installed.
    pub fn listen_for_signals(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
        let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGUSR1, SIGTERM, SIGINT])?;
        let controller = self.clone();
        std::thread::Builder::new()
            .name("tokenkeeper-signals".to_string())
            .spawn(move || {
                let mut stopping = false;
                for signal in signals.forever() {
                    if signal == SIGHUP {
                        controller.reload();
                    } else if signal == SIGUSR1 {
                        controller.refresh();
                    } else if stopping {
                        exit_now("second stop signal: exiting now");
                    } else {
                        stopping = true;
                        controller.stop();
                        force_exit_after(controller.grace().saturating_add(FORCE_AFTER_GRACE));
                    }
                }
            })?;
        Ok(())
    }
}

/// Ends the process after `delay` unless it ended by itself first.
fn force_exit_after(delay: Duration) {
    let spawned = std::thread::Builder::new()
        .name("tokenkeeper-stop-deadline".to_string())
        .spawn(move || {
            std::thread::sleep(delay);
            exit_now(
                "the daemon did not stop within the grace period: exiting now (token files are whole: every write is an atomic rename)",
            );
        });
    if spawned.is_err() {
        // Without a deadline thread the clean stop is the only way out; it is bounded by the
        // grace period for everything but a blocked system call.
        tracing::warn!("cannot start the stop deadline; waiting for a clean stop");
    }
}

/// Ends the process with [`EXIT_FORCED`], saying why if the log can take it. The line is written
/// from a thread of its own: when the log's pipe is full (journald stuck, a paused pager), a
/// writer blocks holding the log's lock, and the exit must not wait behind it. `process::exit`
/// itself only tries the stdout lock, so it cannot block on the log.
fn exit_now(message: &'static str) -> ! {
    let _ = std::thread::Builder::new()
        .name("tokenkeeper-last-words".to_string())
        .spawn(move || tracing::warn!("{message}"));
    std::thread::sleep(LAST_WORDS);
    std::process::exit(EXIT_FORCED);
}

/// How long a forced exit lets its last log line get out.
const LAST_WORDS: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reload_requests_coalesce_and_stop_is_sticky() {
        let controller = Controller::new();
        for _ in 0..1000 {
            controller.reload();
        }
        // One pending reload for the whole burst.
        controller.reload_requested().await;
        let second =
            tokio::time::timeout(Duration::from_secs(1), controller.reload_requested()).await;
        assert!(second.is_err(), "a burst left more than one reload pending");
        assert!(!controller.stopping());
        controller.stop();
        controller.stop_requested().await;
        controller.stop_requested().await;
        assert!(controller.stopping());
        controller.set_grace(Duration::from_secs(3));
        assert_eq!(controller.grace(), Duration::from_secs(3));
    }
}
