//! The global cap on logins in flight, resizable while logins hold permits.
//!
//! Invariant: once [`Limiter::resize`] returns, no login starts that would put more than the new
//! limit in flight. Shrinking below the permits currently held records a debt that the next
//! returned permits pay off (they are retired instead of handed on), so the smaller limit holds as
//! soon as enough running logins finish, ahead of logins already queued for a permit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A semaphore of login permits whose size can change.
pub struct Limiter {
    semaphore: Arc<Semaphore>,
    /// The limit now; the lock also keeps resizes one at a time.
    limit: Mutex<usize>,
    /// Permits to retire when they come back, because the limit shrank below what was held.
    debt: AtomicUsize,
}

/// The right to run one login; returned (or retired, see [`Limiter::resize`]) on drop.
pub struct LoginPermit {
    permit: Option<OwnedSemaphorePermit>,
    limiter: Arc<Limiter>,
}

impl Drop for LoginPermit {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take()
            && self.limiter.take_debt()
        {
            permit.forget();
        }
    }
}

impl Limiter {
    pub fn new(limit: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit: Mutex::new(limit),
            debt: AtomicUsize::new(0),
        })
    }

    /// Waits for a permit. Cancel-safe: dropping the future gives up its place in the queue.
    pub async fn acquire(self: &Arc<Self>) -> LoginPermit {
        // The semaphore is never closed, so acquiring only waits.
        let permit = Arc::clone(&self.semaphore).acquire_owned().await.ok();
        LoginPermit {
            permit,
            limiter: Arc::clone(self),
        }
    }

    /// Changes the limit to `wanted`.
    pub fn resize(&self, wanted: usize) {
        let mut limit = self
            .limit
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let current = std::mem::replace(&mut *limit, wanted);
        if wanted > current {
            let grow = wanted - current;
            // Cancel debt first: permits that were to be retired may now stay. The closure may
            // run more than once (a returning permit takes debt meanwhile), so what was repaid
            // is worked out from the value it finally replaced.
            let before = self
                .debt
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |debt| {
                    Some(debt - debt.min(grow))
                })
                .unwrap_or_else(|debt| debt);
            let added = grow - before.min(grow);
            if added > 0 {
                self.semaphore.add_permits(added);
            }
        } else if wanted < current {
            let shrink = current - wanted;
            let forgotten = self.semaphore.forget_permits(shrink);
            self.debt.fetch_add(shrink - forgotten, Ordering::SeqCst);
        }
    }

    /// Takes one unit of debt, if there is any.
    fn take_debt(&self) -> bool {
        self.debt
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |debt| {
                debt.checked_sub(1)
            })
            .is_ok()
    }

    /// Permits free right now.
    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shrinking_below_held_permits_retires_them_as_they_return() {
        let limiter = Limiter::new(4);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(limiter.acquire().await);
        }
        assert_eq!(limiter.available(), 0);
        limiter.resize(2);
        // Two returned permits are retired; the next two are handed on.
        held.pop();
        held.pop();
        assert_eq!(limiter.available(), 0);
        held.pop();
        assert_eq!(limiter.available(), 1);
        held.pop();
        assert_eq!(limiter.available(), 2);
        // Growing pays back debt before adding permits.
        let first = limiter.acquire().await;
        let second = limiter.acquire().await;
        limiter.resize(1);
        limiter.resize(3);
        assert_eq!(limiter.available(), 1, "debt of 1 repaid, 1 added");
        drop((first, second));
        assert_eq!(limiter.available(), 3);
        limiter.resize(0);
        assert_eq!(limiter.available(), 0);
        limiter.resize(1);
        assert_eq!(limiter.available(), 1);
    }

    /// Resizes racing returned permits never lose or make permits: after the dust settles the
    /// semaphore holds exactly the final limit.
    #[test]
    fn resizes_racing_returned_permits_keep_the_count() {
        const HELD: usize = 4000;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for round in 0..20 {
            let limiter = Limiter::new(HELD);
            let mut held = runtime.block_on(async {
                let mut held = Vec::with_capacity(HELD);
                for _ in 0..HELD {
                    held.push(limiter.acquire().await);
                }
                held
            });
            // Owe every permit, then return them from two threads while the limit grows back
            // one permit at a time: debt is taken and repaid at once.
            limiter.resize(0);
            let other_half = held.split_off(HELD / 2);
            let start = Arc::new(std::sync::Barrier::new(3));
            let droppers = [held, other_half].map(|permits| {
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    drop(permits);
                })
            });
            start.wait();
            for size in 0..HELD {
                limiter.resize(size + 1);
            }
            for dropper in droppers {
                dropper.join().unwrap();
            }
            assert_eq!(limiter.available(), HELD, "round {round}");
        }
    }
}
