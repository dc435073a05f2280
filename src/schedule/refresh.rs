//! When to refresh a token: the band of refresh points for a lifetime, shifted to end a reserve
//! before expiry, and the spacing of refreshes whose band has passed.
//!
//! Invariants: pure; the band never ends after expiry minus the reserve, and keeps its width for
//! every lifetime unless [`RefreshPolicy::band_may_be_cut`] (the config warns then); no refresh
//! comes sooner than [`MIN_REFRESH_GAP`] after another.

use std::ops::RangeInclusive;
use std::time::Duration;

use rand::Rng;

use super::{Boot, MAX_WAIT, ScheduleError, draw_between, scale, symmetric_draw};

const FRACTION_RANGE: RangeInclusive<f64> = 0.1..=0.95;
const JITTER_RANGE: RangeInclusive<f64> = 0.0..=0.5;

const DEFAULT_FRACTION: f64 = 0.75;
const DEFAULT_JITTER: f64 = 0.10;

/// When to refresh a token, relative to its lifetime. Built only by [`RefreshPolicy::new`] (or
/// [`Default`]), so every value is within its range: nothing downstream checks again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefreshPolicy {
    /// Refresh at this fraction of the lifetime (0.1..=0.95, default 0.75): early enough that
    /// several retries fit before expiry, late enough not to waste logins.
    fraction: f64,
    /// The delay to the nominal point varies by ± this fraction (0..=0.5, default 0.10), so many
    /// accounts and pods that logged in together do not refresh together.
    jitter: f64,
    /// Never refresh later than this long before expiry (default 30 s), so readers do not see a
    /// token in its last seconds.
    margin: Duration,
    /// The least time between a login and the renewal after it (default 10 s), unless the
    /// lifetime is too short for it (the band then starts sooner, and [`too_short`] says so); and
    /// the spacing of refreshes whose band has already passed (a token restored late, an IdP
    /// handing back a cached token with a shrinking lifetime), so neither causes a hot loop.
    min_interval: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            fraction: DEFAULT_FRACTION,
            jitter: DEFAULT_JITTER,
            margin: Duration::from_secs(30),
            min_interval: Duration::from_secs(10),
        }
    }
}

impl RefreshPolicy {
    /// Checks each setting and builds a policy.
    ///
    /// # Errors
    /// [`ScheduleError::Fraction`] unless `fraction` is in 0.1..=0.95, [`ScheduleError::Jitter`]
    /// unless `jitter` is in 0..=0.5, [`ScheduleError::Margin`] when `margin` exceeds [`MAX_WAIT`],
    /// [`ScheduleError::MinInterval`] when `min_interval` is zero or exceeds [`MAX_WAIT`]. The first
    /// problem found, in that order, is reported.
    pub fn new(
        fraction: f64,
        jitter: f64,
        margin: Duration,
        min_interval: Duration,
    ) -> Result<Self, ScheduleError> {
        // `contains` is false for NaN, so a NaN from a config cannot slip through.
        if !FRACTION_RANGE.contains(&fraction) {
            return Err(ScheduleError::Fraction(fraction));
        }
        if !JITTER_RANGE.contains(&jitter) {
            return Err(ScheduleError::Jitter(jitter));
        }
        if margin > MAX_WAIT {
            return Err(ScheduleError::Margin(margin));
        }
        if min_interval.is_zero() || min_interval > MAX_WAIT {
            return Err(ScheduleError::MinInterval(min_interval));
        }
        Ok(Self {
            fraction,
            jitter,
            margin,
            min_interval,
        })
    }

    /// The share of the lifetime refreshes aim at.
    pub fn fraction(&self) -> f64 {
        self.fraction
    }

    /// How far either way of the aim refresh points spread, as a share of it.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// How long before expiry a refresh comes at the latest (less for short lifetimes).
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// The spacing of overdue refreshes.
    pub fn min_interval(&self) -> Duration {
        self.min_interval
    }

    /// Whether the band is too wide to keep its width for every lifetime: it spans
    /// `2·jitter·fraction` of the lifetime and must end at least [`reserve`] (up to half the
    /// lifetime) before expiry, so above a quarter it is cut off at the moment of login for some
    /// lifetimes, and a renewal may then come right after a login.
    pub fn band_may_be_cut(&self) -> bool {
        2.0 * self.jitter * self.fraction > 1.0 - MAX_RESERVE_SHARE
    }
}

/// No refresh comes sooner than this after the last one, whatever the lifetime: the hot-loop
/// protection that remains when a lifetime is too short for [`RefreshPolicy::min_interval`].
pub const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);

/// Time kept before expiry for retries, when the margin has to shrink for a short lifetime: two
/// failures answered `Retry-After: 1` and a third attempt fit in it.
const RETRY_ROOM: Duration = Duration::from_secs(3);

/// The margin shrinks to this share of a short lifetime, and never keeps more than
/// [`MAX_RESERVE_SHARE`] of it.
const MARGIN_SHARE: f64 = 0.25;
const MAX_RESERVE_SHARE: f64 = 0.5;

/// How long before expiry a token of lifetime `lifetime` is renewed at the latest: the configured
/// margin, or for lifetimes too short for it a quarter of the lifetime (but at least
/// 3 s, room for retries), and never more than half the lifetime. With the defaults: 30 s from a
/// lifetime of 2 min up, 15 s for 1 min, 3 s for 10 s, 2.5 s for 5 s.
pub fn reserve(policy: &RefreshPolicy, lifetime: Duration) -> Duration {
    let scaled = scale(lifetime, MARGIN_SHARE).max(RETRY_ROOM);
    policy
        .margin
        .min(scaled)
        .min(scale(lifetime, MAX_RESERVE_SHARE))
}

/// The least time a token of lifetime `lifetime` has left when it is renewed (on time): from the
/// end of its refresh band to its expiry.
pub fn least_left(policy: &RefreshPolicy, lifetime: Duration) -> Duration {
    lifetime.saturating_sub(band(policy, lifetime).1)
}

/// The band refresh points of a token of lifetime `lifetime` are drawn from, as offsets from the
/// moment it was obtained: centred on `fraction·L`, `jitter·fraction·L` wide on either side, and
/// shifted earlier (never squeezed) so that it ends [`reserve`] before expiry; cut at 0 when it
/// is wider than that leaves room for ([`RefreshPolicy::band_may_be_cut`]).
pub(super) fn band(policy: &RefreshPolicy, lifetime: Duration) -> (Duration, Duration) {
    let half = scale(lifetime, policy.jitter * policy.fraction);
    let top = scale(lifetime, policy.fraction)
        .saturating_add(half)
        .min(lifetime.saturating_sub(reserve(policy, lifetime)));
    (top.saturating_sub(half.saturating_mul(2)), top)
}

/// When to refresh a token obtained at `obtained` (the boot time its request was sent) that expires
/// at `expires`, seen at `now`.
///
/// The point is drawn uniformly from the refresh band of its lifetime `L`. With the defaults that is
/// 67.5 %..82.5 % of `L` for lifetimes of about 3 min and more; shorter ones keep the band's width
/// (±7.5 % of `L`) but shift it so that it ends [`reserve`] before expiry: 60 %..75 % for
/// lifetimes between 12 s and 2 min, 55 %..70 % for 10 s. No margin or floor ever cancels the
/// jitter or pushes the point past expiry.
///
/// A point less than [`MIN_REFRESH_GAP`] after `now` is drawn again from what is left of the band.
/// When the whole band has passed (a token restored late, or a reply that took most of a short
/// lifetime), the point is `min_interval` after `now`, but never later than halfway to expiry
/// nor sooner than [`MIN_REFRESH_GAP`], jittered by the same share as the band.
///
/// The result is an instant, not a wait: pass `result - now` through [`super::clamp_wait`] before it
/// reaches a timer. Saturates at [`Duration::MAX`] instead of overflowing.
pub fn next_refresh(
    policy: &RefreshPolicy,
    obtained: Boot,
    expires: Boot,
    now: Boot,
    rng: &mut impl Rng,
) -> Boot {
    let lifetime = expires.saturating_sub(obtained);
    let (low, top) = band(policy, lifetime);
    let (low, top) = (obtained.saturating_add(low), obtained.saturating_add(top));
    let earliest = now.saturating_add(MIN_REFRESH_GAP);
    if top >= earliest {
        return draw_between(low.max(earliest), top, rng);
    }
    // The band has passed: refresh soon, but without a hot loop, and before expiry when there is
    // time for it.
    let halfway = expires.saturating_sub(now) / 2;
    let wait = policy.min_interval.min(halfway).max(MIN_REFRESH_GAP);
    let wait = scale(wait, 1.0 + symmetric_draw(policy.jitter, rng)).max(MIN_REFRESH_GAP);
    now.saturating_add(wait)
}

/// Why a lifetime is too short for the configured timing, for one warning per account: which
/// settings had to give way and the band used instead. `None` when the settings are honoured.
pub fn too_short(policy: &RefreshPolicy, lifetime: Duration) -> Option<String> {
    let (low, top) = band(policy, lifetime);
    let mut settings = Vec::new();
    if reserve(policy, lifetime) < policy.margin {
        settings.push(format!("refresh_margin = {:?}", policy.margin));
    }
    if low < policy.min_interval {
        settings.push(format!("min_refresh_interval = {:?}", policy.min_interval));
    }
    if settings.is_empty() {
        return None;
    }
    let share = |offset: Duration| 100.0 * offset.as_secs_f64() / lifetime.as_secs_f64().max(1e-9);
    Some(format!(
        "the server's tokens live {:?}, too short for {}: renewing between {:.0} % and {:.0} % of each lifetime instead",
        lifetime,
        settings.join(" and "),
        share(low),
        share(top)
    ))
}
