//! What wakes a sleeping account task before its timer: a refresh request, a change of its
//! credentials, a jump of the clocks.
//!
//! One small signal per account (a `Notify` and two counters, some 80 bytes) instead of a watch
//! channel per source: a watch channel is some 350 bytes, and its `changed()` future 120 more in
//! every sleeping task, which at 10,000 accounts was a tenth of the daemon's memory.
//!
//! Invariants: a wake sent while the task is not waiting is kept (one stored permit), so none is
//! lost; the task tells what happened by comparing the counters with those it last saw, so several
//! wakes before it runs count once each way (requests coalesce, as a watch's did).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use super::state::CredentialsDigest;

/// The wake-up signal of one account's task.
pub struct Wake {
    notify: Notify,
    refreshes: AtomicU64,
    credential_changes: AtomicU64,
    /// The keyed digest of the account's secret values, set by the supervisor when it re-reads
    /// them: the state file remembers which credentials a retry delay was for.
    credentials: Mutex<CredentialsDigest>,
}

/// The counters as a task last saw them; `Default` is what a new [`Wake`] starts from, so that a
/// request made before the task first looks is noticed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    refreshes: u64,
    credential_changes: u64,
}

/// What changed since a task last looked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Woken {
    pub refresh_requested: bool,
    pub credentials_changed: bool,
}

impl Wake {
    pub fn new(credentials: CredentialsDigest) -> Wake {
        Wake {
            notify: Notify::new(),
            refreshes: AtomicU64::new(0),
            credential_changes: AtomicU64::new(0),
            credentials: Mutex::new(credentials),
        }
    }

    /// Asks for a refresh (SIGUSR1, `tokenkeeper refresh`).
    pub fn request_refresh(&self) {
        self.refreshes.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// Records the account's credentials digest; wakes the task and returns true when it differs
    /// from the one held.
    pub fn set_credentials(&self, digest: CredentialsDigest) -> bool {
        {
            let mut held = self
                .credentials
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if *held == digest {
                return false;
            }
            *held = digest;
        }
        self.credential_changes.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
        true
    }

    /// Makes the task re-check its deadlines now (the clocks jumped).
    pub fn recheck(&self) {
        self.notify.notify_one();
    }

    pub fn credentials(&self) -> CredentialsDigest {
        *self
            .credentials
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Waits for a wake; returns at once when one came since the last wait.
    pub async fn woken(&self) {
        self.notify.notified().await;
    }

    /// What changed since `seen`, which is brought up to date.
    pub fn changes(&self, seen: &mut Seen) -> Woken {
        let now = Seen {
            refreshes: self.refreshes.load(Ordering::Acquire),
            credential_changes: self.credential_changes.load(Ordering::Acquire),
        };
        let woken = Woken {
            refresh_requested: now.refreshes != seen.refreshes,
            credentials_changed: now.credential_changes != seen.credential_changes,
        };
        *seen = now;
        woken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn digest(byte: u8) -> CredentialsDigest {
        CredentialsDigest::from_bytes([byte; 32])
    }

    #[tokio::test]
    async fn a_wake_sent_before_the_wait_is_kept() {
        let wake = Wake::new(digest(1));
        wake.request_refresh();
        tokio::time::timeout(Duration::from_secs(5), wake.woken())
            .await
            .expect("the stored wake returns at once");
        let mut seen = Seen::default();
        assert_eq!(
            wake.changes(&mut seen),
            Woken {
                refresh_requested: true,
                credentials_changed: false
            }
        );
        assert_eq!(wake.changes(&mut seen), Woken::default(), "seen once");
    }

    #[tokio::test(start_paused = true)]
    async fn several_wakes_coalesce_and_an_unchanged_digest_wakes_nobody() {
        let wake = Wake::new(digest(1));
        assert!(!wake.set_credentials(digest(1)));
        assert!(
            tokio::time::timeout(Duration::from_secs(60), wake.woken())
                .await
                .is_err(),
            "no wake for the same credentials"
        );
        assert!(wake.set_credentials(digest(2)));
        wake.request_refresh();
        wake.request_refresh();
        wake.woken().await;
        let mut seen = Seen::default();
        assert_eq!(
            wake.changes(&mut seen),
            Woken {
                refresh_requested: true,
                credentials_changed: true
            }
        );
        assert_eq!(wake.credentials(), digest(2));
        assert!(
            tokio::time::timeout(Duration::from_secs(60), wake.woken())
                .await
                .is_err(),
            "three wakes before the wait are one"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_recheck_wakes_without_a_change() {
        let wake = Wake::new(digest(1));
        wake.recheck();
        wake.woken().await;
        assert_eq!(wake.changes(&mut Seen::default()), Woken::default());
    }
}
