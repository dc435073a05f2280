//! Refresh and retry timing: when to refresh a token (`refresh`), how long to wait after a
//! failed login or write and how long to leave a parked account alone (`retry`), how to spread
//! the first logins at start, and how to tell a suspend from clock drift.
//!
//! Invariants: pure: no I/O, no clock reads, no panics, no sleeping. Every instant is a [`Boot`]
//! reading passed in by the caller and every random draw comes from a caller-supplied [`Rng`], so
//! each rule is tested with fixed instants and seeded generators. Lifetimes come from remote servers
//! and may be absurd (0, negative, 1e30 seconds), so all arithmetic saturates instead of overflowing, and
//! [`clamp_wait`] bounds whatever reaches a timer.

mod refresh;
mod retry;

use std::time::Duration;

use rand::Rng;

pub use refresh::{MIN_REFRESH_GAP, RefreshPolicy, least_left, next_refresh, reserve, too_short};
pub use retry::{Backoff, MAX_RETRY_AFTER, WRITE_RETRY, parked_delay, retry_at};

/// An instant on the boot clock (`CLOCK_BOOTTIME`, time since boot), which keeps counting while the
/// machine is suspended. tokio's timers run on `CLOCK_MONOTONIC`, which stops during suspend, so
/// deadlines are kept on this clock and compared after a wake (tokio-rs/tokio#3185).
pub type Boot = Duration;

/// The longest wait [`clamp_wait`] lets through. Far shorter than anything that could overflow an
/// `Instant` (tokio#5183), and long enough that no sane token lifetime is cut.
pub const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Why a timing setting was refused. Each message names the setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// The refresh fraction lies outside 0.1..=0.95 (or is not a number).
    #[error("fraction must be between 0.1 and 0.95 of the lifetime (found {0})")]
    Fraction(f64),
    /// The refresh jitter lies outside 0..=0.5 (or is not a number).
    #[error("jitter must be between 0 and 0.5 (found {0})")]
    Jitter(f64),
    /// The refresh margin is longer than [`MAX_WAIT`].
    #[error("margin must be at most 7 days (found {0:?})")]
    Margin(Duration),
    /// The minimum refresh interval is zero, which would allow a hot loop, or longer than
    /// [`MAX_WAIT`].
    #[error("min_interval must be positive and at most 7 days (found {0:?})")]
    MinInterval(Duration),
    /// The backoff base is zero, so the backoff would never grow.
    #[error("backoff base must be positive")]
    BaseZero,
    /// The backoff base is above its cap.
    #[error("backoff base {base:?} is above the backoff cap {cap:?}")]
    BaseAboveCap { base: Duration, cap: Duration },
    /// The backoff floor is above its cap.
    #[error("backoff floor {floor:?} is above the backoff cap {cap:?}")]
    FloorAboveCap { floor: Duration, cap: Duration },
}

impl ScheduleError {
    /// The `[daemon]` key of the config file that holds the refused value. The backoff floor
    /// follows `retry_base`, so a cap below either is the cap's fault.
    pub fn config_key(&self) -> &'static str {
        match self {
            ScheduleError::Fraction(_) => "refresh_at",
            ScheduleError::Jitter(_) => "refresh_jitter",
            ScheduleError::Margin(_) => "refresh_margin",
            ScheduleError::MinInterval(_) => "min_refresh_interval",
            ScheduleError::BaseZero => "retry_base",
            ScheduleError::BaseAboveCap { .. } | ScheduleError::FloorAboveCap { .. } => "retry_cap",
        }
    }
}

/// Caps a wait at [`MAX_WAIT`] before it reaches a timer; never panics. Whatever the lifetime, the
/// daemon then re-evaluates at least weekly, and no far-future instant can overflow.
pub fn clamp_wait(wait: Duration) -> Duration {
    wait.min(MAX_WAIT)
}

/// How long to hold back one account's first login at start, so that many accounts do not all hit
/// their endpoints in the same instant: uniform in `[0, spread)` with
/// `spread = min(max_spread, per_account · account_count)` (config defaults 20 ms and 30 s). With
/// one account the wait is below `per_account`; with no spread it is zero.
pub fn startup_delay(
    account_count: usize,
    per_account: Duration,
    max_spread: Duration,
    rng: &mut impl Rng,
) -> Duration {
    // Beyond u32::MAX accounts the spread has long reached any sane `max_spread`.
    let accounts = u32::try_from(account_count).unwrap_or(u32::MAX);
    let spread = per_account.saturating_mul(accounts).min(max_spread);
    if spread.is_zero() {
        // An empty range would make `random_range` panic.
        Duration::ZERO
    } else {
        rng.random_range(Duration::ZERO..spread)
    }
}

/// Whether the machine was suspended between two readings of `CLOCK_BOOTTIME − CLOCK_MONOTONIC`:
/// true when the offset grew by more than `threshold`. The boot clock runs on during suspend while
/// the monotonic one stops, so a suspend shows as growth; a few milliseconds either way are only
/// the two clocks being read at slightly different moments, and a shrinking offset cannot be a
/// suspend at all, so both count as no jump.
pub fn suspended(previous_offset: Duration, current_offset: Duration, threshold: Duration) -> bool {
    current_offset.saturating_sub(previous_offset) > threshold
}

/// A uniform draw from `[-spread, +spread]`; `spread` is finite and non-negative here.
fn symmetric_draw(spread: f64, rng: &mut impl Rng) -> f64 {
    if spread > 0.0 {
        rng.random_range(-spread..=spread)
    } else {
        0.0
    }
}

/// `duration · factor`, saturating. `Duration::mul_f64` panics when the product overflows; this
/// goes through `try_from_secs_f64` and saturates at [`Duration::MAX`] instead (or at zero for a
/// negative or NaN product, which the callers never form). Through `f64` the result is exact to the
/// nanosecond for durations up to about 104 days, and within a relative 1e-16 beyond.
fn scale(duration: Duration, factor: f64) -> Duration {
    let seconds = duration.as_secs_f64() * factor;
    match Duration::try_from_secs_f64(seconds) {
        Ok(scaled) => scaled,
        Err(_) if seconds > 0.0 => Duration::MAX,
        Err(_) => Duration::ZERO,
    }
}

/// A uniform draw from `[low, high]` (`low` when the range is empty).
fn draw_between(low: Boot, high: Boot, rng: &mut impl Rng) -> Boot {
    if high <= low {
        low
    } else {
        low.saturating_add(rng.random_range(Duration::ZERO..=high - low))
    }
}

#[cfg(test)]
mod tests;
