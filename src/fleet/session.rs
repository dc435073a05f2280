//! This member's session with the store: one lease, granted with the configured TTL and kept
//! alive a few times per TTL; every election key of the member is bound to it, so a member that
//! dies or loses the store is out of every election once the TTL passes.
//!
//! Invariant: [`Lease::valid_until`] is never later than the store's own expiry of the lease: it
//! counts from when the renewal that granted it was *sent*, less a margin for clock-rate
//! differences, and it is kept on both the timer clock and boot time (which counts a suspend,
//! when the timer clock stops while the store's clock runs on). A leader stops acting at that
//! instant, so it has stopped before the store can expire its key and elect another.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::etcd::{Client, LeaderKey};
use crate::daemon::clock::Clock;

/// A lease this member holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Until when the lease is surely still alive in the store, on the timer clock.
    pub valid_until: Instant,
    /// The same instant in boot time: after a suspend, the timer clock has fallen behind.
    pub boot_until: Duration,
}

impl Lease {
    /// A lease renewed by a request sent at `sent` (`sent_boot` in boot time) for `ttl`.
    fn renewed(id: i64, sent: Instant, sent_boot: Duration, ttl: Duration) -> Lease {
        let vouched = ttl.saturating_sub(margin(ttl));
        Lease {
            id,
            valid_until: sent.checked_add(vouched).unwrap_or(sent),
            boot_until: sent_boot.saturating_add(vouched),
        }
    }

    /// Whether the lease is still surely alive, by both clocks.
    pub fn is_valid(&self, now: Instant, boot_now: Duration) -> bool {
        now < self.valid_until && boot_now < self.boot_until
    }
}

/// The member's session: the store client, the lease, and why the store cannot be reached.
pub struct Session {
    pub client: Client,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    lease: watch::Sender<Option<Lease>>,
    error: watch::Sender<Option<String>>,
    keeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Resignations in flight, by election: a campaign in that election waits for its own.
    resigning: Mutex<Vec<(Vec<u8>, tokio::task::JoinHandle<()>)>>,
}

/// A failed renewal is tried again after this long (on the next endpoint), times the renewals
/// failed in a row, up to a third of the TTL.
const RENEW_RETRY: Duration = Duration::from_millis(250);

/// How much earlier than the store a member takes its lease for expired: a tenth of the TTL,
/// between 100 ms and 1 s.
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

impl Session {
    /// Starts keeping a lease of `ttl` (the keeper runs until [`Session::close`]).
    pub fn start(client: Client, ttl: Duration, clock: Arc<dyn Clock>) -> Arc<Session> {
        let session = Arc::new(Session {
            client,
            ttl,
            clock,
            lease: watch::channel(None).0,
            error: watch::channel(None).0,
            keeper: Mutex::new(None),
            resigning: Mutex::new(Vec::new()),
        });
        let keeper = tokio::spawn(Arc::clone(&session).keep());
        *session.lock_keeper() = Some(keeper);
        session
    }

    fn lock_keeper(&self) -> std::sync::MutexGuard<'_, Option<tokio::task::JoinHandle<()>>> {
        self.keeper
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The lease as it changes: `None` while the member has none.
    pub fn lease(&self) -> watch::Receiver<Option<Lease>> {
        self.lease.subscribe()
    }

    /// The lease now, if any is valid.
    pub fn current(&self) -> Option<Lease> {
        let (now, boot) = (Instant::now(), self.clock.boot());
        (*self.lease.borrow()).filter(|lease| lease.is_valid(now, boot))
    }

    /// Why the store cannot be reached, while that lasts.
    pub fn store_error(&self) -> watch::Receiver<Option<String>> {
        self.error.subscribe()
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn set_error(&self, error: Option<String>) {
        self.error.send_if_modified(|held| {
            if *held == error {
                false
            } else {
                *held = error;
                true
            }
        });
    }

    /// Grants a lease, renews it, and grants a new one when it is lost; forever.
    async fn keep(self: Arc<Session>) {
        let retry = (self.ttl / 4).clamp(Duration::from_millis(200), Duration::from_secs(2));
        loop {
            let (sent, sent_boot) = (Instant::now(), self.clock.boot());
            let (id, granted) = match self.client.grant(self.ttl).await {
                // etcd may grant more than asked (its minimum TTL): this member vouches for no
                // more than it asked for, and for nothing absurd.
                Ok((id, granted)) if id != 0 && !granted.is_zero() => (id, granted.min(self.ttl)),
                Ok(_) => {
                    self.set_error(Some("etcd granted no lease".to_string()));
                    tokio::time::sleep(retry).await;
                    continue;
                }
                Err(error) => {
                    tracing::debug!("cannot get a fleet lease: {error}");
                    self.set_error(Some(error.to_string()));
                    tokio::time::sleep(retry).await;
                    continue;
                }
            };
            let mut lease = Lease::renewed(id, sent, sent_boot, granted);
            self.set_error(None);
            self.lease.send_replace(Some(lease));
            tracing::info!(lease = %format!("{id:x}"), ttl_s = granted.as_secs(), "fleet lease granted");
            let renew_every = granted / 3;
            let mut next = sent + renew_every;
            // Renewals failed in a row: each waits a little longer before the next.
            let mut failed = 0_u32;
            loop {
                tokio::time::sleep_until(next).await;
                let (sent, sent_boot) = (Instant::now(), self.clock.boot());
                if !lease.is_valid(sent, sent_boot) {
                    let why = if sent < lease.valid_until {
                        // Valid by the timer clock, not in boot time.
                        "it ran out while the machine was suspended"
                    } else {
                        "etcd did not renew it in time"
                    };
                    tracing::warn!(lease = %format!("{id:x}"), "lost the fleet lease: {why}");
                    self.lease.send_replace(None);
                    break;
                }
                // A renewal that takes longer than the lease has left is of no use, and one that
                // takes half of it leaves time to try the next endpoint. The limit is the call's
                // own, so that a member that does not answer in time is left for the next.
                let within = (lease.valid_until.saturating_duration_since(sent) / 2)
                    .max(Duration::from_millis(200));
                let renewed = tokio::time::timeout(
                    within + Duration::from_millis(250),
                    self.client.keep_alive(id, within),
                )
                .await;
                match renewed {
                    Ok(Ok(Some(ttl))) => {
                        lease = Lease::renewed(id, sent, sent_boot, ttl.min(self.ttl));
                        self.lease.send_replace(Some(lease));
                        self.set_error(None);
                        next = sent + renew_every;
                        failed = 0;
                        continue;
                    }
                    Ok(Ok(None)) => {
                        tracing::warn!(lease = %format!("{id:x}"), "the fleet lease expired in etcd: getting a new one");
                        self.lease.send_replace(None);
                        break;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!("cannot renew the fleet lease: {error}");
                        self.set_error(Some(error.to_string()));
                    }
                    Err(_) => {
                        self.set_error(Some("etcd did not renew the lease in time".to_string()));
                    }
                }
                // Soon, on the next endpoint (the lease has only what is left of it), then less
                // and less often: a store that refuses at once is not hammered while it recovers.
                // Never after the lease's end, when the check above gives it up.
                failed = failed.saturating_add(1);
                next = (Instant::now() + (RENEW_RETRY * failed).min(renew_every))
                    .min(lease.valid_until);
            }
        }
    }

    /// Gives `leader`'s election back in the background (for a task that is being dropped), for
    /// at most a second; [`Session::settle`] waits for it.
    pub fn resign_later(self: &Arc<Session>, leader: LeaderKey, election: Vec<u8>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let session = Arc::clone(self);
        let name = election.clone();
        let handle = runtime.spawn(async move { session.resign(&leader, &name).await });
        let mut resigning = self.lock_resigning();
        resigning.retain(|(_, handle)| !handle.is_finished());
        resigning.push((election, handle));
    }

    /// Gives `leader`'s election back, for at most a second (best effort: the lease's expiry
    /// would give it back too).
    pub async fn resign(&self, leader: &LeaderKey, election: &[u8]) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.resign(leader, election))
            .await;
    }

    /// Waits until every resignation in flight in `election` has ended.
    pub async fn settle(&self, election: &[u8]) {
        let pending: Vec<_> = {
            let mut resigning = self.lock_resigning();
            let (ours, others) = std::mem::take(&mut *resigning)
                .into_iter()
                .partition(|(name, _)| name.as_slice() == election);
            *resigning = others;
            ours
        };
        for (_, handle) in pending {
            // Bounded: the resignation gives up after a second.
            let _ = handle.await;
        }
    }

    fn lock_resigning(
        &self,
    ) -> std::sync::MutexGuard<'_, Vec<(Vec<u8>, tokio::task::JoinHandle<()>)>> {
        self.resigning
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Stops keeping the lease and revokes it, so that every election this member leads is
    /// open again at once (best effort, for at most a second).
    pub async fn close(&self) {
        if let Some(keeper) = self.lock_keeper().take() {
            keeper.abort();
        }
        let lease = self.lease.send_replace(None);
        if let Some(lease) = lease
            && lease.is_valid(Instant::now(), self.clock.boot())
        {
            match tokio::time::timeout(Duration::from_secs(1), self.client.revoke(lease.id)).await {
                Ok(Ok(())) => tracing::info!("fleet lease revoked: other members take over now"),
                Ok(Err(error)) => tracing::warn!("cannot revoke the fleet lease: {error}"),
                Err(_) => {
                    tracing::warn!("cannot revoke the fleet lease: etcd did not answer in time")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_vouched_for_from_the_renewal_sent_less_the_margin() {
        let sent = Instant::now();
        let boot = Duration::from_secs(1000);
        let lease = Lease::renewed(7, sent, boot, Duration::from_secs(10));
        assert_eq!(lease.valid_until, sent + Duration::from_secs(9));
        assert_eq!(lease.boot_until, boot + Duration::from_secs(9));
        assert!(lease.is_valid(
            sent + Duration::from_millis(8999),
            boot + Duration::from_secs(8)
        ));
        assert!(!lease.is_valid(sent + Duration::from_secs(9), boot + Duration::from_secs(8)));
    }

    #[test]
    fn a_suspend_ends_a_lease_the_timer_clock_still_counts_valid() {
        let sent = Instant::now();
        let boot = Duration::from_secs(1000);
        let lease = Lease::renewed(7, sent, boot, Duration::from_secs(10));
        // The timer clock stopped for the hour the machine slept; boot time did not.
        let after = sent + Duration::from_secs(2);
        assert!(!lease.is_valid(after, boot + Duration::from_secs(3602)));
        assert!(lease.is_valid(after, boot + Duration::from_secs(2)));
    }

    #[test]
    fn an_absurd_ttl_saturates_instead_of_overflowing() {
        let sent = Instant::now();
        let lease = Lease::renewed(7, sent, Duration::MAX, Duration::MAX);
        assert_eq!(lease.boot_until, Duration::MAX);
        assert!(lease.valid_until >= sent);
    }

    #[tokio::test]
    async fn settle_waits_for_the_resignations_of_its_own_election_only() {
        // A port nothing listens on: every call fails at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap();
        let client = Client::new(super::super::etcd::ClientSettings {
            endpoints: vec![url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap()],
            http: crate::login::http::Clients::new()
                .client_for(&crate::login::spec::HttpSettings {
                    connect_timeout: Duration::from_secs(1),
                    timeout: Duration::from_secs(1),
                    max_reply_bytes: 1024,
                    ca_file: None,
                    proxy: crate::login::spec::ProxySetting::None,
                    client_identity: None,
                })
                .unwrap()
                .client,
            credentials: None,
        });
        let clock = Arc::new(crate::daemon::clock::SystemClock::new());
        let session = Session::start(client, Duration::from_secs(2), clock);
        let leader = LeaderKey {
            key: b"/p/election/a/1".to_vec(),
            rev: 5,
            lease: 1,
        };
        session.resign_later(leader, b"/p/election/a".to_vec());
        session.settle(b"/p/election/b").await;
        assert_eq!(
            session.lock_resigning().len(),
            1,
            "another election's is kept"
        );
        session.settle(b"/p/election/a").await;
        assert!(session.lock_resigning().is_empty());
        session.close().await;
        assert!(session.current().is_none());
    }

    #[test]
    fn the_margin_is_a_tenth_between_100ms_and_1s() {
        assert_eq!(margin(Duration::from_secs(1)), Duration::from_millis(100));
        assert_eq!(
            margin(Duration::from_millis(500)),
            Duration::from_millis(100)
        );
        assert_eq!(margin(Duration::from_secs(5)), Duration::from_millis(500));
        assert_eq!(margin(Duration::from_secs(300)), Duration::from_secs(1));
    }
}
