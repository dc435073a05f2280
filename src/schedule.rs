//! Refresh and retry timing: when to refresh a token, how long to wait after a failed login, how
//! long to leave a parked account alone, how to spread the first logins at start, and how to tell a
//! suspend from clock drift.
//!
//! Invariants: pure: no I/O, no clock reads, no panics, no sleeping. Every instant is a [`Boot`]
//! reading passed in by the caller and every random draw comes from a caller-supplied [`Rng`], so
//! each rule is tested with fixed instants and seeded generators. Lifetimes come from remote servers
//! and may be absurd (reliability.md C7), so all arithmetic saturates instead of overflowing, and
//! [`clamp_wait`] bounds whatever reaches a timer.

use std::ops::RangeInclusive;
use std::time::Duration;

use rand::Rng;

/// An instant on the boot clock (`CLOCK_BOOTTIME`, time since boot), which keeps counting while the
/// machine is suspended. tokio's timers run on `CLOCK_MONOTONIC`, which stops during suspend, so
/// deadlines are kept on this clock and compared after a wake (reliability.md §2).
pub type Boot = Duration;

/// The longest wait [`clamp_wait`] lets through. Far shorter than anything that could overflow an
/// `Instant` (tokio#5183), and long enough that no sane token lifetime is cut.
pub const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The longest `Retry-After` honoured. A server asking for more is more likely confused than
/// serious, and the old token may expire long before (reliability.md §3).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// The shortest wait before retrying a parked account, whatever its configured base: rejected
/// credentials are not fixed by retrying every few seconds.
const MIN_PARKED_DELAY: Duration = Duration::from_secs(60);

/// A parked account's retry is spread by this fraction either way, so accounts parked together
/// (one rotated secret shared by many) do not retry together.
const PARKED_JITTER: f64 = 0.10;

const FRACTION_RANGE: RangeInclusive<f64> = 0.1..=0.95;
const JITTER_RANGE: RangeInclusive<f64> = 0.0..=0.5;

const DEFAULT_FRACTION: f64 = 0.75;
const DEFAULT_JITTER: f64 = 0.10;

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

/// When to refresh a token, relative to its lifetime. Build one with [`RefreshPolicy::new`] (or
/// [`Default`]); [`next_refresh`] still treats out-of-range fields of a struct literal as the
/// nearest valid value, so it cannot panic on them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefreshPolicy {
    /// Refresh at this fraction of the lifetime (0.1..=0.95, default 0.75): early enough that
    /// several retries fit before expiry, late enough not to waste logins.
    pub fraction: f64,
    /// The delay to the nominal point varies by ± this fraction (0..=0.5, default 0.10), so many
    /// accounts and pods that logged in together do not refresh together.
    pub jitter: f64,
    /// Never refresh later than this long before expiry (default 30 s), so readers do not see a
    /// token in its last seconds.
    pub margin: Duration,
    /// Never refresh sooner than this after now (default 10 s): a token shorter than the margin,
    /// or an IdP handing back a cached token with a shrinking lifetime, must not cause a hot loop.
    pub min_interval: Duration,
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
}

/// When to refresh a token obtained at `obtained` (the boot time its request was sent) that expires
/// at `expires`, seen at `now`.
///
/// With lifetime `L = expires - obtained`, the nominal point is `obtained + fraction·L`; the delay
/// from `now` to it is stretched or shrunk by a factor drawn uniformly from
/// `[1 - jitter, 1 + jitter]`; the result is then capped at `expires - margin` (or at `now` when
/// that has passed) and floored at `now + min_interval`. The floor wins over the cap.
///
/// The result always lies in `[now + min_interval, max(now + min_interval, expires - margin)]`.
/// When `obtained <= now <= obtained + fraction·L` and neither cap nor floor binds (with the
/// defaults: `L` of about 8 minutes or more), it lies in
/// `[obtained + fraction·(1 - jitter)·L, obtained + fraction·(1 + jitter)·L]`, which for the
/// defaults is 67.5 %..82.5 % of the lifetime. Once the nominal point has passed, or the token is
/// inside its margin, it is exactly `now + min_interval`.
///
/// The result is an instant, not a wait: pass `result - now` through [`clamp_wait`] before it
/// reaches a timer. Saturates at [`Duration::MAX`] instead of overflowing.
pub fn next_refresh(
    policy: &RefreshPolicy,
    obtained: Boot,
    expires: Boot,
    now: Boot,
    rng: &mut impl Rng,
) -> Boot {
    let fraction = nearest_valid(policy.fraction, FRACTION_RANGE, DEFAULT_FRACTION);
    let jitter = nearest_valid(policy.jitter, JITTER_RANGE, DEFAULT_JITTER);
    let lifetime = expires.saturating_sub(obtained);
    let nominal = obtained.saturating_add(scale(lifetime, fraction));
    let delay = nominal.saturating_sub(now);
    let jittered = scale(delay, 1.0 + symmetric_draw(jitter, rng));
    // A deadline already behind `now` (the token is inside its margin) caps the point into the
    // past, and the floor then lifts it to `now + min_interval`: refresh as soon as the floor
    // allows, rather than skip the cap and wait out the jittered delay.
    let deadline = expires.saturating_sub(policy.margin);
    let floor = now.saturating_add(policy.min_interval);
    now.saturating_add(jittered).min(deadline).max(floor)
}

/// Caps a wait at [`MAX_WAIT`] before it reaches a timer; never panics. Whatever the lifetime, the
/// daemon then re-evaluates at least weekly, and no far-future instant can overflow.
pub fn clamp_wait(wait: Duration) -> Duration {
    wait.min(MAX_WAIT)
}

/// Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"):
/// attempt `n` waits a uniform draw from `[0, min(cap, base·2ⁿ)]`, raised to at least `floor`.
/// Full jitter spreads accounts that failed together far better than a fixed schedule
/// (reliability.md §3: peak 45 req/s instead of 1000 after an outage of 1000 accounts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's draw (default 1 s); it doubles with each failed attempt.
    pub base: Duration,
    /// The ceiling never grows past this (default 5 min), so a recovered endpoint is noticed soon.
    pub cap: Duration,
    /// No retry comes sooner than this (default 1 s): a draw near zero would otherwise retry at once.
    pub floor: Duration,
}

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
    /// `[floor, max(floor, min(cap, base·2^attempt))]`. Any `attempt`, up to `u32::MAX`, is fine.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        let drawn = if ceiling.is_zero() {
            Duration::ZERO
        } else {
            rng.random_range(Duration::ZERO..=ceiling)
        };
        drawn.max(self.floor)
    }

    /// The wait before the next retry after a failure: [`Backoff::delay`], but never shorter than
    /// the server's `Retry-After`, itself cut to [`MAX_RETRY_AFTER`] (RFC 9110 §10.2.3; a server
    /// asking for a day is not obeyed while the old token runs out).
    pub fn retry_delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        let server_asks = retry_after.map_or(Duration::ZERO, |wait| wait.min(MAX_RETRY_AFTER));
        self.delay(attempt, rng).max(server_asks)
    }

    /// `min(cap, base·2^attempt)`, without ever forming `2^attempt`: doubling stops at the cap, so
    /// the loop runs at most about 94 times (the bits of `Duration::MAX` in nanoseconds) even for
    /// `attempt = u32::MAX`.
    fn ceiling(&self, attempt: u32) -> Duration {
        let mut ceiling = self.base.min(self.cap);
        for _ in 0..attempt {
            // A zero base (possible through a struct literal) never grows; stop rather than spin.
            if ceiling >= self.cap || ceiling.is_zero() {
                break;
            }
            ceiling = ceiling.saturating_mul(2).min(self.cap);
        }
        ceiling
    }
}

/// The wait before retrying an account whose credentials were rejected ("parked"): `base`
/// (30 min by default in the config) ± 10 %, drawn uniformly, and never below one minute. The result
/// lies in `[max(1 min, 0.9·base), max(1 min, 1.1·base)]`, saturating at [`Duration::MAX`].
pub fn parked_delay(base: Duration, rng: &mut impl Rng) -> Duration {
    scale(base, 1.0 + symmetric_draw(PARKED_JITTER, rng)).max(MIN_PARKED_DELAY)
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

/// `value` if it lies in `range`, the nearest bound if it does not, `default` for NaN. Policy fields
/// are public, so a struct literal can bypass [`RefreshPolicy::new`]; scheduling must still not
/// panic (a NaN range would) nor misbehave wildly.
fn nearest_valid(value: f64, range: RangeInclusive<f64>, default: f64) -> f64 {
    if value.is_nan() {
        default
    } else {
        value.clamp(*range.start(), *range.end())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    fn seeded(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    /// Instants are compared in f64 seconds with this slack, which covers the rounding of the
    /// f64 reference computations below (the largest instants here are about 1e7 s).
    const SLACK: f64 = 1e-6;

    fn assert_between(value: Duration, low: f64, high: f64, context: &str) {
        let value = value.as_secs_f64();
        assert!(
            value >= low - SLACK && value <= high + SLACK,
            "{context}: {value} s not in [{low}, {high}]"
        );
    }

    /// House style: messages are lowercase; the quoted value after "found" is data and may not be
    /// (`NaN`).
    fn assert_lowercase_text(message: &str) {
        let text = message.split("(found").next().unwrap_or(message);
        assert_eq!(text, text.to_lowercase(), "{message:?}");
    }

    #[test]
    fn refresh_policy_default_is_valid_and_as_designed() {
        let policy = RefreshPolicy::default();
        assert_eq!(
            RefreshPolicy::new(0.75, 0.10, secs(30), secs(10)),
            Ok(policy)
        );
    }

    #[test]
    fn refresh_policy_new_checks_ranges_and_names_the_field() {
        let ok = |fraction, jitter, margin, min_interval| {
            RefreshPolicy::new(fraction, jitter, margin, min_interval).is_ok()
        };
        // Bounds are inclusive.
        assert!(ok(0.1, 0.0, Duration::ZERO, Duration::from_nanos(1)));
        assert!(ok(0.95, 0.5, MAX_WAIT, MAX_WAIT));

        let cases: &[(f64, f64, Duration, Duration, &str)] = &[
            (0.09, 0.1, secs(30), secs(10), "fraction"),
            (0.951, 0.1, secs(30), secs(10), "fraction"),
            (f64::NAN, 0.1, secs(30), secs(10), "fraction"),
            (f64::INFINITY, 0.1, secs(30), secs(10), "fraction"),
            (-0.75, 0.1, secs(30), secs(10), "fraction"),
            (0.75, -0.01, secs(30), secs(10), "jitter"),
            (0.75, 0.51, secs(30), secs(10), "jitter"),
            (0.75, f64::NAN, secs(30), secs(10), "jitter"),
            (0.75, 0.1, MAX_WAIT + secs(1), secs(10), "margin"),
            (0.75, 0.1, Duration::MAX, secs(10), "margin"),
            (0.75, 0.1, secs(30), Duration::ZERO, "min_interval"),
            (0.75, 0.1, secs(30), MAX_WAIT + secs(1), "min_interval"),
        ];
        for &(fraction, jitter, margin, min_interval, field) in cases {
            let error = RefreshPolicy::new(fraction, jitter, margin, min_interval)
                .expect_err(&format!("{fraction} {jitter} {margin:?} {min_interval:?}"));
            let message = error.to_string();
            assert!(message.contains(field), "{message:?} names {field}");
            assert_lowercase_text(&message);
        }
    }

    #[test]
    fn backoff_new_checks_ranges_and_names_the_field() {
        assert_eq!(
            Backoff::new(secs(1), secs(300), secs(1)),
            Ok(Backoff::default())
        );
        assert!(Backoff::new(secs(5), secs(5), secs(5)).is_ok());
        assert!(Backoff::new(secs(1), secs(5), Duration::ZERO).is_ok());

        let cases: &[(Duration, Duration, Duration, ScheduleError, &str)] = &[
            (
                Duration::ZERO,
                secs(300),
                secs(1),
                ScheduleError::BaseZero,
                "base",
            ),
            (
                secs(301),
                secs(300),
                secs(1),
                ScheduleError::BaseAboveCap {
                    base: secs(301),
                    cap: secs(300),
                },
                "base",
            ),
            (
                secs(1),
                secs(300),
                secs(301),
                ScheduleError::FloorAboveCap {
                    floor: secs(301),
                    cap: secs(300),
                },
                "floor",
            ),
        ];
        for (base, cap, floor, expected, field) in cases {
            let error = Backoff::new(*base, *cap, *floor).expect_err(field);
            assert_eq!(&error, expected);
            let message = error.to_string();
            assert!(message.contains(field), "{message:?} names {field}");
            assert_lowercase_text(&message);
        }
    }

    #[test]
    fn next_refresh_table_without_jitter() {
        let steady = RefreshPolicy::new(0.75, 0.0, secs(30), secs(10)).unwrap();
        let late = RefreshPolicy::new(0.95, 0.0, secs(30), secs(10)).unwrap();
        // (policy, obtained, expires, now, expected, why)
        let cases: &[(RefreshPolicy, u64, u64, u64, u64, &str)] = &[
            (steady, 100, 3700, 100, 2800, "75 % of an hour"),
            (
                steady,
                0,
                3600,
                1000,
                2700,
                "seen later: same nominal point",
            ),
            (steady, 0, 3600, 2700, 2710, "at the nominal point: floor"),
            (steady, 0, 3600, 3000, 3010, "past the nominal point: floor"),
            (
                late,
                0,
                100,
                0,
                70,
                "95 % of 100 s capped at expiry - margin",
            ),
            (steady, 0, 35, 0, 10, "cap at 5 s, the floor wins"),
            (steady, 0, 20, 0, 10, "lifetime below the margin: floor"),
            (steady, 0, 3600, 4000, 4010, "already expired: floor"),
            (
                steady,
                500,
                400,
                500,
                510,
                "expiry before the request: floor",
            ),
            (steady, 0, 0, 0, 10, "zero lifetime: floor"),
        ];
        for &(policy, obtained, expires, now, expected, why) in cases {
            let got = next_refresh(
                &policy,
                secs(obtained),
                secs(expires),
                secs(now),
                &mut seeded(1),
            );
            assert_eq!(got, secs(expected), "{why}");
        }
    }

    /// A log-uniform lifetime between 1 s and 30 days, so that short and long lifetimes are both
    /// well represented.
    fn random_lifetime(rng: &mut StdRng) -> Duration {
        let max = (30.0 * 24.0 * 3600.0_f64).ln();
        Duration::from_secs_f64(rng.random_range(0.0..=max).exp())
    }

    #[test]
    fn next_refresh_default_band_over_random_lifetimes() {
        let policy = RefreshPolicy::default();
        let (fraction, jitter) = (policy.fraction, policy.jitter);
        let margin = policy.margin.as_secs_f64();
        let min_interval = policy.min_interval.as_secs_f64();
        // Above this lifetime neither the cap nor the floor can bind (about 457 s).
        let not_tiny = 2.0 * (margin + min_interval) / (1.0 - fraction - jitter * fraction);
        let mut rng = seeded(0x5eed_0001);
        let (mut lowest, mut highest) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut banded, mut at_floor) = (0, 0);
        for case in 0..10_000 {
            let lifetime = random_lifetime(&mut rng);
            let obtained = Duration::from_secs_f64(rng.random_range(0.0..3e7));
            let expires = obtained + lifetime;
            let l = lifetime.as_secs_f64();
            let o = obtained.as_secs_f64();
            // Mostly seen right when obtained; sometimes later, up to past expiry.
            let now = if rng.random_bool(0.7) {
                obtained
            } else {
                obtained + lifetime.mul_f64(rng.random_range(0.0..1.2))
            };
            let n = now.as_secs_f64();
            let got = next_refresh(&policy, obtained, expires, now, &mut rng);
            let context = format!("case {case}: obtained {o} lifetime {l} now {n}");

            assert!(
                got >= now + policy.min_interval,
                "{context}: below the floor"
            );
            let deadline = (o + l - margin).max(n + min_interval);
            assert_between(got, n + min_interval, deadline, &context);

            let nominal = o + fraction * l;
            if n > nominal + 1e-3 {
                assert_eq!(got, now + policy.min_interval, "{context}: overdue");
                at_floor += 1;
            } else if l >= not_tiny {
                assert_between(
                    got,
                    o + fraction * (1.0 - jitter) * l,
                    (o + fraction * (1.0 + jitter) * l).min(o + l - margin),
                    &context,
                );
                banded += 1;
                if now == obtained {
                    let share = (got.as_secs_f64() - o) / l;
                    lowest = lowest.min(share);
                    highest = highest.max(share);
                }
            }
        }
        // The loops must have exercised both branches, and jitter must reach both band edges.
        assert!(banded > 5000 && at_floor > 100, "{banded} {at_floor}");
        assert!(
            (0.675 - 1e-9..=0.825 + 1e-9).contains(&lowest)
                && (0.675 - 1e-9..=0.825 + 1e-9).contains(&highest),
            "observed fractions {lowest}..{highest}"
        );
        assert!(lowest < 0.68 && highest > 0.82, "{lowest}..{highest}");
    }

    /// For random valid policies and arbitrary instants (including `now` before `obtained` and
    /// expiries in the past), the result is the jittered point put through the cap and the floor:
    /// since that map is monotonic, the result lies between the images of the two jitter extremes.
    #[test]
    fn next_refresh_random_policies_follow_the_formula() {
        let mut rng = seeded(0x5eed_0002);
        for case in 0..10_000 {
            let policy = RefreshPolicy::new(
                rng.random_range(0.1..=0.95),
                if rng.random_bool(0.1) {
                    0.0
                } else {
                    rng.random_range(0.0..=0.5)
                },
                Duration::from_secs_f64(rng.random_range(0.0..600.0)),
                Duration::from_secs_f64(rng.random_range(0.001..120.0)),
            )
            .unwrap();
            let obtained = rng.random_range(0.0..1e6);
            let expires = (obtained + rng.random_range(-100.0..1e6_f64)).max(0.0);
            let now = (obtained + rng.random_range(-100.0..1.2e6_f64)).max(0.0);
            let got = next_refresh(
                &policy,
                Duration::from_secs_f64(obtained),
                Duration::from_secs_f64(expires),
                Duration::from_secs_f64(now),
                &mut rng,
            );

            let lifetime = (expires - obtained).max(0.0);
            let delay = (obtained + policy.fraction * lifetime - now).max(0.0);
            let deadline = (expires - policy.margin.as_secs_f64()).max(now);
            let floor = now + policy.min_interval.as_secs_f64();
            let through = |point: f64| point.min(deadline).max(floor);
            let context = format!("case {case}: {policy:?} {obtained} {expires} {now}");
            assert_between(
                got,
                through(now + (1.0 - policy.jitter) * delay),
                through(now + (1.0 + policy.jitter) * delay),
                &context,
            );
            assert!(got >= Duration::from_secs_f64(now) + policy.min_interval);
        }
    }

    #[test]
    fn tiny_lifetimes_hit_the_floor() {
        let policy = RefreshPolicy::default();
        let mut rng = seeded(3);
        for lifetime in [1, 5, 10, 20, 29, 30] {
            for now_offset in [0, 1] {
                let obtained = secs(1000);
                let now = obtained + secs(now_offset);
                for _ in 0..100 {
                    let got =
                        next_refresh(&policy, obtained, obtained + secs(lifetime), now, &mut rng);
                    assert_eq!(got, now + policy.min_interval, "lifetime {lifetime} s");
                }
            }
        }
    }

    #[test]
    fn huge_instants_and_lifetimes_saturate_without_panicking() {
        let max_secs = Duration::from_secs(u64::MAX);
        let near_max = Duration::MAX - secs(5);
        let odd = RefreshPolicy {
            fraction: f64::NAN,
            jitter: f64::INFINITY,
            margin: Duration::MAX,
            min_interval: Duration::MAX,
        };
        let policies = [RefreshPolicy::default(), odd];
        let instants = [Duration::ZERO, secs(1), near_max, max_secs, Duration::MAX];
        let mut rng = seeded(4);
        for policy in &policies {
            for &obtained in &instants {
                for &expires in &instants {
                    for &now in &instants {
                        let got = next_refresh(policy, obtained, expires, now, &mut rng);
                        assert!(got >= now, "{policy:?} {obtained:?} {expires:?} {now:?}");
                        assert!(clamp_wait(got - now) <= MAX_WAIT);
                    }
                }
            }
        }
        // A lifetime of Duration::MAX seen right away: the nominal point is huge but finite, and
        // the wait that reaches a timer is a week.
        let got = next_refresh(
            &RefreshPolicy::default(),
            Duration::ZERO,
            Duration::MAX,
            Duration::ZERO,
            &mut rng,
        );
        assert!(got > secs(u64::MAX / 2), "{got:?}");
        assert_eq!(clamp_wait(got), MAX_WAIT);
        // Obtained near the end of the representable range: everything saturates at MAX.
        let got = next_refresh(
            &RefreshPolicy::default(),
            near_max,
            Duration::MAX,
            near_max,
            &mut rng,
        );
        assert_eq!(got, Duration::MAX);
    }

    #[test]
    fn clamp_wait_caps_at_a_week() {
        assert_eq!(MAX_WAIT, secs(604_800));
        for (wait, expected) in [
            (Duration::ZERO, Duration::ZERO),
            (secs(3600), secs(3600)),
            (MAX_WAIT, MAX_WAIT),
            (MAX_WAIT + Duration::from_nanos(1), MAX_WAIT),
            (max_secs(), MAX_WAIT),
            (Duration::MAX, MAX_WAIT),
        ] {
            assert_eq!(clamp_wait(wait), expected, "{wait:?}");
        }
    }

    fn max_secs() -> Duration {
        Duration::from_secs(u64::MAX)
    }

    #[test]
    fn jitter_spreads_over_the_band() {
        let policy = RefreshPolicy::default();
        let obtained = secs(5000);
        let lifetime = 3600.0;
        let mut rng = seeded(5);
        let shares: Vec<f64> = (0..1000)
            .map(|_| {
                let got =
                    next_refresh(&policy, obtained, obtained + secs(3600), obtained, &mut rng);
                (got - obtained).as_secs_f64() / lifetime
            })
            .collect();
        let lowest = shares.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = shares.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = shares.iter().sum::<f64>() / 1000.0;
        let variance = shares.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / 999.0;
        // Uniform over [0.675, 0.825] has mean 0.75 and standard deviation 0.15/√12 ≈ 0.043.
        assert!((0.675 - 1e-9..0.68).contains(&lowest), "lowest {lowest}");
        assert!(
            (0.82..=0.825 + 1e-9).contains(&highest),
            "highest {highest}"
        );
        assert!((mean - 0.75).abs() < 0.005, "mean {mean}");
        assert!(variance.sqrt() > 0.035, "stdev {}", variance.sqrt());
        let mut distinct: Vec<u64> = shares.iter().map(|s| (s * 1e9) as u64).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 990, "{} distinct", distinct.len());
    }

    /// reliability.md C6: an IdP that hands back the same cached token with a shrinking
    /// `expires_in`. Scheduling from the real remaining time with a floor bounds the requests per
    /// token lifetime, and no two requests come closer than the floor.
    #[test]
    fn cached_token_with_shrinking_lifetime_is_not_a_hot_loop() {
        let policy = RefreshPolicy::default();
        let mut rng = seeded(6);
        for lifetime in [60, 600, 3600, 86_400] {
            let expires = secs(1_000 + lifetime);
            let mut now = secs(1_000);
            let mut requests = 0;
            while now < expires {
                requests += 1;
                let next = next_refresh(&policy, now, expires, now, &mut rng);
                assert!(next - now >= policy.min_interval);
                now = next;
            }
            // Geometric approach to the margin, then one request per floor interval inside it.
            // Measured: 4, 6, 7 and 9 requests for these lifetimes.
            assert!(requests <= 10, "lifetime {lifetime} s: {requests} requests");
        }
    }

    fn expected_ceiling(backoff: &Backoff, attempt: u32) -> Duration {
        let doubled = 1u128
            .checked_shl(attempt)
            .and_then(|factor| backoff.base.as_nanos().checked_mul(factor));
        match doubled {
            Some(nanos) if nanos < backoff.cap.as_nanos() => Duration::new(
                u64::try_from(nanos / 1_000_000_000).unwrap(),
                u32::try_from(nanos % 1_000_000_000).unwrap(),
            ),
            _ => backoff.cap,
        }
    }

    #[test]
    fn backoff_delay_stays_within_floor_and_ceiling() {
        let mut rng = seeded(7);
        let mut backoffs = vec![
            Backoff::default(),
            Backoff::new(Duration::from_nanos(1), Duration::MAX, Duration::ZERO).unwrap(),
        ];
        for _ in 0..20 {
            let base = Duration::from_secs_f64(rng.random_range(0.001..10.0));
            let cap = base + Duration::from_secs_f64(rng.random_range(0.0..3600.0));
            let floor = cap.mul_f64(rng.random_range(0.0..=1.0));
            backoffs.push(Backoff::new(base, cap, floor).unwrap());
        }
        let attempts: Vec<u32> = (0..=64)
            .chain([65, 127, 128, u32::MAX - 1, u32::MAX])
            .collect();
        for backoff in &backoffs {
            for &attempt in &attempts {
                let ceiling = expected_ceiling(backoff, attempt);
                assert_eq!(backoff.ceiling(attempt), ceiling, "{backoff:?} {attempt}");
                for _ in 0..50 {
                    let delay = backoff.delay(attempt, &mut rng);
                    assert!(
                        delay >= backoff.floor && delay <= ceiling.max(backoff.floor),
                        "{backoff:?} attempt {attempt}: {delay:?}"
                    );
                }
            }
        }
        // A zero base from a struct literal does not spin through u32::MAX doublings.
        let stuck = Backoff {
            base: Duration::ZERO,
            cap: secs(10),
            floor: Duration::ZERO,
        };
        assert_eq!(stuck.delay(u32::MAX, &mut rng), Duration::ZERO);
    }

    #[test]
    fn backoff_mean_grows_then_saturates_at_half_the_cap() {
        let backoff = Backoff::default();
        let mut rng = seeded(8);
        let draws = 20_000;
        let mean = |attempt: u32, rng: &mut StdRng| {
            (0..draws)
                .map(|_| backoff.delay(attempt, rng).as_secs_f64())
                .sum::<f64>()
                / f64::from(draws)
        };
        let means: Vec<f64> = (0..=12).map(|attempt| mean(attempt, &mut rng)).collect();
        // Attempt 0 draws from [0, 1 s] and the floor lifts every draw to 1 s.
        assert!((means[0] - 1.0).abs() < 1e-9, "{means:?}");
        // The ceiling doubles until 256 s < 300 s < 512 s.
        for attempt in 0..8 {
            assert!(
                means[attempt + 1] > 1.2 * means[attempt],
                "attempt {attempt}: {means:?}"
            );
        }
        // From attempt 9 the ceiling is the cap: a uniform draw over [0, 300 s] averages 150 s.
        for &saturated in means[9..].iter().chain([mean(u32::MAX, &mut rng)].iter()) {
            assert!((saturated - 150.0).abs() < 4.0, "{means:?} {saturated}");
        }
    }

    #[test]
    fn retry_delay_never_precedes_retry_after() {
        let backoff = Backoff::default();
        let mut rng = seeded(9);
        for case in 0..10_000 {
            let attempt = if rng.random_bool(0.05) {
                u32::MAX
            } else {
                rng.random_range(0..100)
            };
            let retry_after = match rng.random_range(0..10) {
                0 => None,
                1 => Some(Duration::MAX),
                2 => Some(Duration::ZERO),
                _ => Some(Duration::from_secs_f64(rng.random_range(0.0..7200.0))),
            };
            let got = backoff.retry_delay(attempt, retry_after, &mut rng);
            let honoured = retry_after.map_or(Duration::ZERO, |wait| wait.min(secs(3600)));
            let context = format!("case {case}: attempt {attempt} retry_after {retry_after:?}");
            assert!(got >= honoured, "{context}: {got:?}");
            assert!(got >= backoff.floor, "{context}: {got:?}");
            // A Retry-After beyond an hour is not obeyed past the hour.
            assert!(got <= honoured.max(backoff.cap), "{context}: {got:?}");
        }
        assert_eq!(MAX_RETRY_AFTER, secs(3600));
    }

    #[test]
    fn parked_delay_is_base_within_ten_percent_and_at_least_a_minute() {
        let mut rng = seeded(10);
        for base in [0, 1, 30, 59, 60, 66, 600, 1800, 7200] {
            let base = secs(base);
            let b = base.as_secs_f64();
            let (mut lowest, mut highest) = (f64::INFINITY, f64::NEG_INFINITY);
            for _ in 0..1000 {
                let got = parked_delay(base, &mut rng);
                assert!(got >= secs(60), "{base:?}: {got:?}");
                assert_between(got, (0.9 * b).max(60.0), (1.1 * b).max(60.0), "parked");
                lowest = lowest.min(got.as_secs_f64());
                highest = highest.max(got.as_secs_f64());
            }
            if b >= 600.0 {
                assert!(
                    lowest < 0.91 * b && highest > 1.09 * b,
                    "{lowest}..{highest}"
                );
            }
        }
        for huge in [max_secs(), Duration::MAX] {
            assert!(parked_delay(huge, &mut rng) >= max_secs().mul_f64(0.9));
        }
    }

    #[test]
    fn startup_delay_stays_below_the_spread() {
        let per_account = Duration::from_millis(20);
        let max_spread = secs(30);
        let mut rng = seeded(11);
        // (accounts, spread)
        let cases = [
            (0, Duration::ZERO),
            (1, Duration::from_millis(20)),
            (10, Duration::from_millis(200)),
            (1500, secs(30)),
            (1_000_000, secs(30)),
            (usize::MAX, secs(30)),
        ];
        for (accounts, spread) in cases {
            let mut highest = Duration::ZERO;
            for _ in 0..1000 {
                let got = startup_delay(accounts, per_account, max_spread, &mut rng);
                assert!(got < spread || spread.is_zero(), "{accounts}: {got:?}");
                assert!(got <= spread);
                highest = highest.max(got);
            }
            // The draws use the whole spread, not a corner of it.
            assert!(highest >= spread.mul_f64(0.9), "{accounts}: {highest:?}");
        }
        assert_eq!(
            startup_delay(100, Duration::ZERO, max_spread, &mut rng),
            Duration::ZERO
        );
        assert_eq!(
            startup_delay(100, per_account, Duration::ZERO, &mut rng),
            Duration::ZERO
        );
    }

    #[test]
    fn suspended_table() {
        let threshold = secs(5);
        let ms = Duration::from_millis;
        // (previous offset, current offset, suspended?)
        let cases = [
            (secs(100), secs(100), false),
            (secs(100), secs(100) + ms(3), false),
            (secs(100), secs(100) - ms(3), false),
            (secs(100), secs(105), false),
            (secs(100), secs(105) + Duration::from_nanos(1), true),
            (secs(100), secs(100 + 2 * 3600), true),
            (secs(100 + 2 * 3600), secs(100), false),
            (Duration::ZERO, Duration::MAX, true),
            (Duration::MAX, Duration::ZERO, false),
        ];
        for (previous, current, expected) in cases {
            assert_eq!(
                suspended(previous, current, threshold),
                expected,
                "{previous:?} -> {current:?}"
            );
        }
    }
}
