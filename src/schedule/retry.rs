//! How long to wait before trying again: backoff with full jitter after a failed login or
//! write, the window after a server's `Retry-After`, the limit a held token's expiry puts on a
//! retry, and the long wait of a parked account.
//!
//! Invariants: pure; never before a `Retry-After` (cut to [`MAX_RETRY_AFTER`]); while a token is
//! held, never later than halfway to its expiry unless the `Retry-After` is.

use std::time::Duration;

use rand::Rng;

use super::{Boot, ScheduleError, draw_between, scale, symmetric_draw};

/// The longest `Retry-After` honoured. A server asking for more is more likely confused than
/// serious, and the old token may expire long before.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// Retries after a `Retry-After` spread over a window of half its length, within these bounds.
const RETRY_AFTER_WINDOW_MIN: Duration = Duration::from_secs(4);
const RETRY_AFTER_WINDOW_MAX: Duration = Duration::from_secs(5 * 60);

/// The shortest wait before retrying a parked account, whatever its configured base: rejected
/// credentials are not fixed by retrying every few seconds.
const MIN_PARKED_DELAY: Duration = Duration::from_secs(60);

/// A parked account's retry is spread by this fraction either way, so accounts parked together
/// (one rotated secret shared by many) do not retry together.
const PARKED_JITTER: f64 = 0.10;

/// When to retry after a failed login at `now`, given the drawn `delay` (backoff, or the spread
/// after a `Retry-After`), the earliest moment allowed (`not_before`: the server's `Retry-After`
/// or the backoff floor), and the expiry of the token still held, if any.
///
/// While a token is held, a retry comes no later than halfway to its expiry, so that more attempts
/// fit before it (two failures answered `Retry-After: 1` still leave time for a third attempt
/// when a 10 s token is renewed at 70 %); when `not_before` is already past halfway, no later than
/// halfway from `not_before` to expiry. Never before `not_before`. A drawn delay beyond that
/// limit is drawn again uniformly up to it, so accounts that failed together stay spread.
pub fn retry_at(
    now: Boot,
    delay: Duration,
    not_before: Duration,
    expires: Option<Boot>,
    rng: &mut impl Rng,
) -> Boot {
    let earliest = now.saturating_add(not_before);
    let at = now.saturating_add(delay.max(not_before));
    let Some(expires) = expires else {
        return at;
    };
    let halfway = now.saturating_add(expires.saturating_sub(now) / 2);
    let latest = if halfway >= earliest {
        halfway
    } else {
        earliest.saturating_add(expires.saturating_sub(earliest) / 2)
    };
    if at <= latest {
        at
    } else {
        draw_between(earliest, latest, rng)
    }
}

/// Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"):
/// attempt `n` waits `floor` plus a uniform draw from `[0, min(cap, base·2ⁿ⁺²)]`, capped at `cap`.
/// Full jitter spreads accounts that failed together far better than a fixed schedule
/// (simulated for 1000 accounts and a 10 min outage: a peak of 45 logins a second after recovery
/// instead of 1000), and the
/// first retry is spread too: over 1–5 s with the defaults, so that 50 accounts that failed
/// together put at most a few in any 100 ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The span of the draw starts at this (default 1 s) and doubles with each failed attempt;
    /// never zero.
    base: Duration,
    /// The span never grows past this (default 5 min), so a recovered endpoint is noticed soon;
    /// at least `base` and `floor`.
    cap: Duration,
    /// No retry comes sooner than this (default 1 s): a draw near zero would otherwise retry at once.
    floor: Duration,
}

/// How failed writes of a token already held are retried: 1 s plus a jittered span doubling up
/// to 30 s, without logging in again (a full disk, a read-only mount).
pub const WRITE_RETRY: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(30),
    floor: Duration::from_secs(1),
};

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(5 * 60),
            floor: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// Checks the settings and builds a backoff.
    ///
    /// # Errors
    /// [`ScheduleError::BaseZero`] when `base` is zero, [`ScheduleError::BaseAboveCap`] when `base`
    /// exceeds `cap`, [`ScheduleError::FloorAboveCap`] when `floor` exceeds `cap`.
    pub fn new(base: Duration, cap: Duration, floor: Duration) -> Result<Self, ScheduleError> {
        if base.is_zero() {
            return Err(ScheduleError::BaseZero);
        }
        if base > cap {
            return Err(ScheduleError::BaseAboveCap { base, cap });
        }
        if floor > cap {
            return Err(ScheduleError::FloorAboveCap { floor, cap });
        }
        Ok(Self { base, cap, floor })
    }

    /// The wait before retry number `attempt` (0 for the first retry): within
    /// `[floor, min(cap, floor + min(cap, base·2^(attempt+2)))]`, and never above `cap` unless the
    /// floor is. Any `attempt`, up to `u32::MAX`, is fine.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt.saturating_add(2));
        let drawn = if ceiling.is_zero() {
            Duration::ZERO
        } else {
            rng.random_range(Duration::ZERO..=ceiling)
        };
        self.floor
            .saturating_add(drawn)
            .min(self.cap.max(self.floor))
    }

    /// The earliest a retry may come after a failure: the server's `Retry-After` (cut to
    /// [`MAX_RETRY_AFTER`]), never sooner than the floor.
    pub fn not_before(&self, retry_after: Option<Duration>) -> Duration {
        retry_after
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER)
            .max(self.floor)
    }

    /// The wait before the next retry after a failure: [`Backoff::delay`]; or, after a server's
    /// `Retry-After` (itself cut to [`MAX_RETRY_AFTER`]: a server asking for a day is not obeyed
    /// while the old token runs out), a uniform draw from the window that follows it, unless the
    /// backoff already waits longer than the whole window. The window is half the
    /// `Retry-After`, at least 4 s and at most 5 min, so that accounts told to come back together do not (RFC 9110 §10.2.3 sets the earliest moment,
    /// not a deadline).
    pub fn retry_delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        let backoff = self.delay(attempt, rng);
        let Some(asked) = retry_after.map(|wait| self.not_before(Some(wait))) else {
            return backoff;
        };
        let window = (asked / 2).clamp(RETRY_AFTER_WINDOW_MIN, RETRY_AFTER_WINDOW_MAX);
        if backoff > asked.saturating_add(window) {
            backoff
        } else {
            // Uniform over the window, not the later of two draws, which would crowd its end.
            asked.saturating_add(rng.random_range(Duration::ZERO..=window))
        }
    }

    /// `min(cap, base·2^attempt)`, without ever forming `2^attempt`: doubling stops at the cap, so
    /// the loop runs at most about 94 times (the bits of `Duration::MAX` in nanoseconds) even for
    /// `attempt = u32::MAX`.
    pub(super) fn ceiling(&self, attempt: u32) -> Duration {
        let mut ceiling = self.base.min(self.cap);
        for _ in 0..attempt {
            // The base is never zero, so doubling reaches the cap within about 94 steps.
            if ceiling >= self.cap {
                break;
            }
            ceiling = ceiling.saturating_mul(2).min(self.cap);
        }
        ceiling
    }

    /// The span of the first draw.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The smallest wait before any retry.
    pub fn floor(&self) -> Duration {
        self.floor
    }

    /// The largest span a draw can have.
    pub fn cap(&self) -> Duration {
        self.cap
    }
}

/// The wait before retrying an account whose credentials were rejected ("parked"): `base`
/// (30 min by default in the config) ± 10 %, drawn uniformly, and never below one minute. The result
/// lies in `[max(1 min, 0.9·base), max(1 min, 1.1·base)]`, saturating at [`Duration::MAX`].
pub fn parked_delay(base: Duration, rng: &mut impl Rng) -> Duration {
    scale(base, 1.0 + symmetric_draw(PARKED_JITTER, rng)).max(MIN_PARKED_DELAY)
}
