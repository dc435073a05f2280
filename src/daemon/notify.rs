//! systemd notifications (sd_notify(3)), when `NOTIFY_SOCKET` is set: `READY=1` once every
//! account has had its first attempt, a `STATUS=` line with counts, `RELOADING=1`/`READY=1`
//! around a reload, `STOPPING=1`, and watchdog pings.
//!
//! Invariants: pings come only from the supervisor loop itself (see `daemon::run`), never from a
//! timer of their own, so a wedged loop stops pinging and systemd restarts the daemon; the first
//! `READY=1` waits for every account's first attempt (a reload before it does not send one); a
//! status line names accounts and fixed words only; without `NOTIFY_SOCKET` nothing is sent.

use std::time::Duration;

use jiff::Timestamp;
use sd_notify::NotifyState;

use super::status::{self, AccountView};

/// Talks to systemd.
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
    ready_sent: bool,
    last_status: String,
    warned: bool,
}

impl Notifier {
    /// A notifier for the service manager named by the environment (`NOTIFY_SOCKET`,
    /// `WATCHDOG_USEC`, `WATCHDOG_PID`).
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled(),
            ready_sent: false,
            last_status: String::new(),
            warned: false,
        }
    }

    /// Whether a service manager listens (`NOTIFY_SOCKET` is set).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How often the supervisor loop pings: half of `WATCHDOG_USEC`, as systemd advises.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.watchdog
            .filter(|_| self.enabled)
            .map(|timeout| (timeout / 2).max(Duration::from_millis(1)))
    }

    /// Tells the watchdog the loop is making progress.
    pub fn ping(&mut self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// Sends the status line when it changed, and `READY=1` once every account had its go.
    pub fn update(&mut self, accounts: &[AccountView], now: Timestamp) {
        if !self.enabled {
            return;
        }
        let line = status::summary(accounts, now);
        let ready = !self.ready_sent && status::all_attempted(accounts);
        if line == self.last_status && !ready {
            return;
        }
        if ready {
            self.ready_sent = true;
            self.send(&[NotifyState::Ready, NotifyState::Status(&line)]);
        } else {
            self.send(&[NotifyState::Status(&line)]);
        }
        self.last_status = line;
    }

    /// A reload starts (systemd's `Type=notify-reload` waits for `READY=1` after it).
    pub fn reloading(&mut self) {
        if !self.enabled {
            return;
        }
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// A reload ended, applied or not.
    pub fn reloaded(&mut self) {
        if self.ready_sent {
            self.send(&[NotifyState::Ready]);
        }
    }

    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
    }

    fn send(&mut self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(error) = sd_notify::notify(states)
            && !self.warned
        {
            self.warned = true;
            tracing::warn!("cannot notify the service manager (NOTIFY_SOCKET): {error}");
        }
    }
}
