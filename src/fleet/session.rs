//! This member's session with the store: one lease, granted with the configured TTL and kept
//! alive a few times per TTL; every election key of the member is bound to it, so a member that
//! dies or loses the store is out of every election once the TTL passes.
//!
//! Invariant: [`Lease::valid_until`] is never later than the store's own expiry of the lease: it
//! counts from when the renewal that granted it was *sent*, less a margin for clock-rate
//! differences. A leader stops acting at that instant, so it has stopped before the store can
//! expire its key and elect another.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::etcd::Client;

/// A lease this member holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Until when the lease is surely still alive in the store.
    pub valid_until: Instant,
}

impl Lease {
    pub fn is_valid(&self, now: Instant) -> bool {
        now < self.valid_until
    }
}

/// The member's session: the store client, the lease, and why the store cannot be reached.
pub struct Session {
    pub client: Client,
    ttl: Duration,
    lease: watch::Sender<Option<Lease>>,
    error: watch::Sender<Option<String>>,
    keeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How much earlier than the store a member takes its lease for expired: a tenth of the TTL,
/// between 100 ms and 1 s.
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

impl Session {
    /// Starts keeping a lease of `ttl` (the keeper runs until [`Session::close`]).
    pub fn start(client: Client, ttl: Duration) -> Arc<Session> {
        let session = Arc::new(Session {
            client,
            ttl,
            lease: watch::channel(None).0,
            error: watch::channel(None).0,
            keeper: Mutex::new(None),
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
        let now = Instant::now();
        (*self.lease.borrow()).filter(|lease| lease.is_valid(now))
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
            let sent = Instant::now();
            let (id, granted) = match self.client.grant(self.ttl).await {
                Ok((id, granted)) if id != 0 && !granted.is_zero() => (id, granted),
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
            let mut valid_until = sent + granted.saturating_sub(margin(granted));
            self.set_error(None);
            self.lease.send_replace(Some(Lease { id, valid_until }));
            tracing::info!(lease = %format!("{id:x}"), ttl_s = granted.as_secs(), "fleet lease granted");
            let renew_every = granted / 3;
            let mut next = sent + renew_every;
            loop {
                tokio::time::sleep_until(next).await;
                let sent = Instant::now();
                // A renewal that takes longer than the lease has left is of no use.
                let limit = valid_until.max(sent + Duration::from_millis(500));
                let renewed = tokio::time::timeout_at(limit, self.client.keep_alive(id)).await;
                match renewed {
                    Ok(Ok(Some(ttl))) => {
                        valid_until = sent + ttl.saturating_sub(margin(ttl));
                        self.lease.send_replace(Some(Lease { id, valid_until }));
                        self.set_error(None);
                        next = sent + renew_every;
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
                if Instant::now() >= valid_until {
                    tracing::warn!(lease = %format!("{id:x}"), "lost the fleet lease: etcd did not renew it in time");
                    self.lease.send_replace(None);
                    break;
                }
                next = Instant::now() + retry.min(renew_every);
            }
        }
    }

    /// Stops keeping the lease and revokes it, so that every election this member leads is
    /// open again at once (best effort, for at most a second).
    pub async fn close(&self) {
        if let Some(keeper) = self.lock_keeper().take() {
            keeper.abort();
        }
        let lease = self.lease.send_replace(None);
        if let Some(lease) = lease
            && lease.is_valid(Instant::now())
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
