//! Tables and properties of the timing rules: bands over random lifetimes, tiny and absurd
//! lifetimes, backoff bounds and means, retries that spread, saturation.

use super::refresh::*;
use super::retry::*;
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
    let ms = Duration::from_millis;
    // (policy, obtained, expires, now, expected, why)
    let cases: &[(RefreshPolicy, u64, u64, u64, Duration, &str)] = &[
        (steady, 100, 3700, 100, secs(2800), "75 % of an hour"),
        (steady, 0, 3600, 1000, secs(2700), "seen later: same point"),
        (
            steady,
            0,
            3600,
            2700,
            secs(2710),
            "at the point: min_interval",
        ),
        (
            steady,
            0,
            3600,
            3000,
            secs(3010),
            "past the point: min_interval",
        ),
        (steady, 0, 3600, 3590, secs(3595), "past the point: halfway"),
        (
            steady,
            0,
            3600,
            4000,
            secs(4001),
            "already expired: the gap",
        ),
        (late, 0, 100, 0, secs(75), "95 % shifted to a 25 s reserve"),
        (steady, 0, 120, 0, secs(90), "2 min: the full 30 s margin"),
        (
            steady,
            0,
            60,
            0,
            secs(45),
            "1 min: the margin shrinks to 15 s",
        ),
        (steady, 0, 35, 0, ms(26_250), "35 s: a quarter of it kept"),
        (steady, 0, 10, 0, secs(7), "10 s: 3 s kept for retries"),
        (steady, 0, 5, 0, ms(2500), "5 s: half kept"),
        (steady, 0, 2, 0, secs(1), "2 s: the gap wins"),
        (
            steady,
            500,
            400,
            500,
            secs(501),
            "expiry before the request",
        ),
        (steady, 0, 0, 0, secs(1), "zero lifetime: the gap"),
    ];
    for &(policy, obtained, expires, now, expected, why) in cases {
        let got = next_refresh(
            &policy,
            secs(obtained),
            secs(expires),
            secs(now),
            &mut seeded(1),
        );
        assert_eq!(got, expected, "{why}");
    }
}

#[test]
fn reserve_and_band_table() {
    let policy = RefreshPolicy::default();
    let ms = Duration::from_millis;
    // (lifetime, reserve, band low, band top) with the defaults.
    let cases = [
        (secs(86_400), secs(30), ms(58_320_000), ms(71_280_000)),
        (secs(3600), secs(30), secs(2430), secs(2970)),
        (secs(200), secs(30), secs(135), secs(165)),
        (secs(120), secs(30), secs(72), secs(90)),
        (secs(60), secs(15), secs(36), secs(45)),
        (secs(12), secs(3), ms(7200), secs(9)),
        (secs(10), secs(3), secs(4) + ms(1500), secs(7)),
        (secs(5), ms(2500), secs(1) + ms(750), ms(2500)),
        (secs(2), secs(1), ms(700), secs(1)),
        (
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
        ),
    ];
    for (lifetime, expected_reserve, low, top) in cases {
        assert_eq!(reserve(&policy, lifetime), expected_reserve, "{lifetime:?}");
        let (got_low, got_top) = band(&policy, lifetime);
        let close = |a: Duration, b: Duration| a.abs_diff(b) < Duration::from_micros(1);
        assert!(
            close(got_low, low) && close(got_top, top),
            "{lifetime:?}: {got_low:?}..{got_top:?}"
        );
    }
}

/// A log-uniform lifetime between 1 s and 30 days, so that short and long lifetimes are both
/// well represented.
fn random_lifetime(rng: &mut StdRng) -> Duration {
    let max = (30.0 * 24.0 * 3600.0_f64).ln();
    Duration::from_secs_f64(rng.random_range(0.0..=max).exp())
}

/// The promise of the refresh rule for every lifetime: with the defaults, the point is before
/// expiry with the reserve kept, at least the gap after now, inside a band whose width is
/// ±7.5 % of the lifetime, and for lifetimes of about 3 min and more exactly 67.5 %..82.5 %.
#[test]
fn next_refresh_default_band_over_random_lifetimes() {
    let policy = RefreshPolicy::default();
    let mut rng = seeded(0x5eed_0001);
    let (mut lowest, mut highest) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut banded, mut overdue) = (0, 0);
    for case in 0..20_000 {
        let lifetime = random_lifetime(&mut rng);
        let obtained = Duration::from_secs_f64(rng.random_range(0.0..3e7));
        let expires = obtained + lifetime;
        let (l, o) = (lifetime.as_secs_f64(), obtained.as_secs_f64());
        // Mostly seen right when obtained; sometimes later, up to past expiry.
        let now = if rng.random_bool(0.7) {
            obtained
        } else {
            obtained + lifetime.mul_f64(rng.random_range(0.0..1.2))
        };
        let n = now.as_secs_f64();
        let got = next_refresh(&policy, obtained, expires, now, &mut rng);
        let context = format!("case {case}: obtained {o} lifetime {l} now {n}");
        assert!(got >= now + MIN_REFRESH_GAP, "{context}: below the gap");
        let (low, top) = band(&policy, lifetime);
        let (low, top) = (o + low.as_secs_f64(), o + top.as_secs_f64());
        if top >= n + 1.0 {
            assert_between(got, low.max(n + 1.0), top, &context);
            banded += 1;
            if l >= 3.0 {
                // Before expiry, with the reserve kept.
                let kept = reserve(&policy, lifetime).as_secs_f64();
                assert!(got.as_secs_f64() <= o + l - kept + SLACK, "{context}");
            }
            if now == obtained && l >= 5.0 {
                // The band keeps its width whatever the lifetime.
                assert!(
                    (top - low - 0.15 * l).abs() < 1e-6 * l.max(1.0),
                    "{context}"
                );
            }
            if now == obtained && l >= 200.0 {
                let share = (got.as_secs_f64() - o) / l;
                lowest = lowest.min(share);
                highest = highest.max(share);
            }
        } else {
            // The band has passed: soon, jittered around the smaller of min_interval and
            // half the time left.
            let wait = (got - now).as_secs_f64();
            let nominal = 10.0_f64.min((o + l - n).max(0.0) / 2.0).max(1.0);
            assert!(
                wait >= 1.0 - SLACK && wait <= (nominal * 1.1).max(1.0) + SLACK,
                "{context}: overdue wait {wait}"
            );
            overdue += 1;
        }
    }
    // The loops must have exercised both branches, and jitter must reach both band edges.
    assert!(banded > 10_000 && overdue > 100, "{banded} {overdue}");
    assert!(
        (0.675 - 1e-9..0.68).contains(&lowest) && (0.82..=0.825 + 1e-9).contains(&highest),
        "observed fractions {lowest}..{highest}"
    );
}

/// For random valid policies and arbitrary instants (including `now` before `obtained` and
/// expiries in the past), the result is a draw from what is left of the band, or the
/// overdue wait.
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
        let lifetime =
            Duration::from_secs_f64(expires).saturating_sub(Duration::from_secs_f64(obtained));
        let (low, top) = band(&policy, lifetime);
        let (low, top) = (obtained + low.as_secs_f64(), obtained + top.as_secs_f64());
        let context = format!("case {case}: {policy:?} {obtained} {expires} {now}");
        if top >= now + 1.0 + SLACK {
            assert_between(got, low.max(now + 1.0), top, &context);
        } else if top < now + 1.0 - SLACK {
            let nominal = policy
                .min_interval()
                .as_secs_f64()
                .min((expires - now).max(0.0) / 2.0)
                .max(1.0);
            let wait = got.as_secs_f64() - now;
            assert!(
                wait >= 1.0 - SLACK && wait <= (nominal * (1.0 + policy.jitter())).max(1.0) + SLACK,
                "{context}: {wait}"
            );
        }
        assert!(got >= Duration::from_secs_f64(now) + MIN_REFRESH_GAP);
    }
}

#[test]
fn tiny_lifetimes_renew_before_expiry_without_a_hot_loop() {
    let policy = RefreshPolicy::default();
    let mut rng = seeded(3);
    for lifetime in [2, 3, 5, 8, 10, 12, 20, 29, 30, 45, 60] {
        let obtained = secs(1000);
        let expires = obtained + secs(lifetime);
        let mut points = Vec::new();
        for _ in 0..200 {
            let got = next_refresh(&policy, obtained, expires, obtained, &mut rng);
            assert!(got >= obtained + MIN_REFRESH_GAP, "lifetime {lifetime} s");
            assert!(got < expires, "lifetime {lifetime} s: refresh at {got:?}");
            points.push((got - obtained).as_secs_f64() / lifetime as f64);
        }
        // From 3 s up the jitter band survives: the refresh points of accounts that logged
        // in together spread over at least ±5 % of the lifetime.
        if lifetime >= 3 {
            let lowest = points.iter().copied().fold(f64::INFINITY, f64::min);
            let highest = points.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert!(
                highest - lowest >= 0.10,
                "lifetime {lifetime} s: {lowest}..{highest}"
            );
        }
    }
}

#[test]
fn too_short_names_the_settings_that_give_way() {
    let policy = RefreshPolicy::default();
    assert_eq!(too_short(&policy, secs(3600)), None);
    assert_eq!(too_short(&policy, secs(200)), None);
    let sixty = too_short(&policy, secs(60)).unwrap();
    assert!(
        sixty.contains("60s") && sixty.contains("refresh_margin = 30s"),
        "{sixty}"
    );
    assert!(sixty.contains("60 % and 75 %"), "{sixty}");
    assert!(!sixty.contains("min_refresh_interval"), "{sixty}");
    let ten = too_short(&policy, secs(10)).unwrap();
    assert!(
        ten.contains("refresh_margin = 30s and min_refresh_interval = 10s"),
        "{ten}"
    );
    assert!(ten.contains("55 % and 70 %"), "{ten}");
}

#[test]
fn huge_instants_and_lifetimes_saturate_without_panicking() {
    let max_secs = Duration::from_secs(u64::MAX);
    let near_max = Duration::MAX - secs(5);
    // The widest settings the constructor allows: every field at its bound.
    let widest = RefreshPolicy::new(0.95, 0.5, MAX_WAIT, MAX_WAIT).unwrap();
    let narrowest = RefreshPolicy::new(0.1, 0.0, Duration::ZERO, Duration::from_nanos(1)).unwrap();
    let policies = [RefreshPolicy::default(), widest, narrowest];
    let instants = [Duration::ZERO, secs(1), near_max, max_secs, Duration::MAX];
    let mut rng = seeded(4);
    for policy in &policies {
        for &obtained in &instants {
            for &expires in &instants {
                for &now in &instants {
                    let got = next_refresh(policy, obtained, expires, now, &mut rng);
                    assert!(got >= now, "{policy:?} {obtained:?} {expires:?} {now:?}");
                    assert!(clamp_wait(got - now) <= MAX_WAIT);
                    let _ = too_short(policy, expires.saturating_sub(obtained));
                    let _ = retry_at(now, expires, obtained, Some(expires), &mut rng);
                }
            }
        }
    }
    // A lifetime of Duration::MAX seen right away: the point is huge but finite, and the
    // wait that reaches a timer is a week.
    let got = next_refresh(
        &RefreshPolicy::default(),
        Duration::ZERO,
        Duration::MAX,
        Duration::ZERO,
        &mut rng,
    );
    assert!(got > secs(u64::MAX / 2), "{got:?}");
    assert_eq!(clamp_wait(got), MAX_WAIT);
    // Obtained near the end of the representable range: the point stays in range.
    let got = next_refresh(
        &RefreshPolicy::default(),
        near_max,
        Duration::MAX,
        near_max,
        &mut rng,
    );
    assert!(got > near_max, "{got:?}");
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
            let got = next_refresh(&policy, obtained, obtained + secs(3600), obtained, &mut rng);
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

/// An IdP that hands back the same cached token with a shrinking
/// `expires_in`. Scheduling from the real remaining time with the gap bounds the requests per
/// token lifetime (logarithmic in the lifetime: each refresh keeps about a quarter of what
/// was left), and no two requests come closer than the gap.
#[test]
fn cached_token_with_shrinking_lifetime_is_not_a_hot_loop() {
    let policy = RefreshPolicy::default();
    let mut rng = seeded(6);
    for (lifetime, bound) in [(60, 8), (600, 10), (3600, 11), (86_400, 14)] {
        for _ in 0..50 {
            let expires = secs(1_000 + lifetime);
            let mut now = secs(1_000);
            let mut requests = 0;
            while now < expires {
                requests += 1;
                let next = next_refresh(&policy, now, expires, now, &mut rng);
                assert!(next - now >= MIN_REFRESH_GAP);
                now = next;
            }
            assert!(
                requests <= bound,
                "lifetime {lifetime} s: {requests} requests"
            );
        }
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
            // min(cap, base·2^(attempt+2)), by exact integer arithmetic.
            let doubled = 1u128
                .checked_shl(attempt.saturating_add(2))
                .and_then(|factor| backoff.base().as_nanos().checked_mul(factor));
            let span = match doubled {
                Some(nanos) if nanos < backoff.cap().as_nanos() => Duration::new(
                    u64::try_from(nanos / 1_000_000_000).unwrap(),
                    u32::try_from(nanos % 1_000_000_000).unwrap(),
                ),
                _ => backoff.cap(),
            };
            let highest = backoff
                .floor()
                .saturating_add(span)
                .min(backoff.cap().max(backoff.floor()));
            for _ in 0..50 {
                let delay = backoff.delay(attempt, &mut rng);
                assert!(
                    delay >= backoff.floor() && delay <= highest,
                    "{backoff:?} attempt {attempt}: {delay:?}"
                );
            }
        }
    }
    // The smallest base allowed reaches the cap within a bounded number of doublings.
    let tiny = Backoff::new(Duration::from_nanos(1), secs(10), Duration::ZERO).unwrap();
    assert!(tiny.delay(u32::MAX, &mut rng) <= secs(10));
    assert_eq!(tiny.ceiling(u32::MAX), secs(10));
}

#[test]
fn backoff_mean_grows_then_saturates_near_half_the_cap() {
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
    // Attempt 0 draws 1 s + [0, 4 s]: the first retry is spread, not always 1 s.
    assert!((means[0] - 3.0).abs() < 0.05, "{means:?}");
    // The span doubles until 256 s < 300 s < 512 s.
    for attempt in 0..6 {
        assert!(
            means[attempt + 1] > 1.2 * means[attempt],
            "attempt {attempt}: {means:?}"
        );
    }
    // From attempt 7 the span is the cap: 1 s + a uniform draw over [0, 300 s], capped at
    // 300 s, averages just under 151 s.
    for &saturated in means[7..].iter().chain([mean(u32::MAX, &mut rng)].iter()) {
        assert!((saturated - 150.5).abs() < 4.0, "{means:?} {saturated}");
    }
}

#[test]
fn retry_delay_never_precedes_retry_after_and_spreads_after_it() {
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
        let window = (honoured / 2).clamp(secs(4), secs(300));
        let context = format!("case {case}: attempt {attempt} retry_after {retry_after:?}");
        assert!(got >= honoured, "{context}: {got:?}");
        assert!(got >= backoff.floor(), "{context}: {got:?}");
        // A Retry-After beyond an hour is not obeyed past the hour and its window.
        assert!(
            got <= (honoured.max(backoff.floor()) + window).max(backoff.cap()),
            "{context}: {got:?}"
        );
    }
    assert_eq!(MAX_RETRY_AFTER, secs(3600));
}

/// 50 accounts told `429 Retry-After: 5` at the same instant, or failing
/// together without one, come back spread out: no 100 ms bucket holds more than 20 % of them.
#[test]
fn retries_of_accounts_that_failed_together_spread_out() {
    let backoff = Backoff::default();
    let mut rng = seeded(10);
    for retry_after in [Some(secs(5)), Some(secs(1)), None] {
        for round in 0..200 {
            let mut buckets = std::collections::BTreeMap::new();
            for _ in 0..50 {
                let delay = backoff.retry_delay(0, retry_after, &mut rng);
                assert!(delay >= retry_after.unwrap_or(Duration::ZERO));
                *buckets.entry(delay.as_millis() / 100).or_insert(0) += 1;
            }
            let largest = buckets.values().copied().max().unwrap_or(0);
            assert!(
                largest <= 10,
                "{retry_after:?} round {round}: {largest} of 50 in one 100 ms bucket"
            );
        }
    }
}

#[test]
fn retry_at_leaves_room_before_expiry_but_never_precedes_not_before() {
    let mut rng = seeded(12);
    // (now, delay, not_before, expires, earliest, latest): the result lies in between.
    let cases = [
        (100, 30, 1, None, 130, 130),
        (100, 30, 1, Some(10_000), 130, 130),
        (100, 30, 1, Some(120), 101, 110),
        (100, 30, 15, Some(121), 115, 118),
        (100, 30, 25, Some(120), 125, 125),
        (100, 2, 1, Some(101), 101, 101),
        (100, 5, 1, Some(50), 101, 101),
    ];
    for (now, delay, not_before, expires, earliest, latest) in cases {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let got = retry_at(
                secs(now),
                secs(delay),
                secs(not_before),
                expires.map(secs),
                &mut rng,
            );
            let context = format!("{now} {delay} {not_before} {expires:?}: {got:?}");
            assert!(got >= secs(earliest) && got <= secs(latest), "{context}");
            seen.insert(got);
        }
        // A capped retry is spread over what is left, not piled up at the limit.
        if latest > earliest + 1 {
            assert!(seen.len() > 100, "{now} {delay}: {} distinct", seen.len());
        }
    }
    // Two failures answered Retry-After: 1 at the latest refresh point of a 10 s token still
    // leave a third attempt before it expires.
    let policy = RefreshPolicy::default();
    let expires = secs(10);
    let (_, top) = band(&policy, expires);
    let first = retry_at(top, secs(5), secs(1), Some(expires), &mut rng);
    let second = retry_at(first, secs(5), secs(1), Some(expires), &mut rng);
    assert!(second < expires, "{top:?} {first:?} {second:?}");
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

/// A band wider than a quarter of the lifetime on either side cannot keep its width once shifted
/// to end a reserve before expiry: it is cut at the moment of login, which the policy reports
/// (and the config check warns about). At or below that it keeps its width for every lifetime.
#[test]
fn only_a_band_wider_than_fits_is_cut() {
    let lifetimes = [1, 5, 10, 60, 300, 3600, 86_400].map(secs);
    for (fraction, jitter, cut) in [
        (0.75, 0.10, false),
        (0.5, 0.5, false),
        (0.95, 0.25, false),
        (0.95, 0.5, true),
        (0.75, 0.5, true),
    ] {
        let policy = RefreshPolicy::new(fraction, jitter, secs(30), secs(10)).unwrap();
        assert_eq!(policy.band_may_be_cut(), cut, "{fraction} × {jitter}");
        let width_kept = lifetimes.iter().all(|&lifetime| {
            let (low, top) = band(&policy, lifetime);
            let wanted = 2.0 * jitter * fraction * lifetime.as_secs_f64();
            ((top - low).as_secs_f64() - wanted).abs() < 1e-6
        });
        assert_eq!(width_kept, !cut, "{fraction} × {jitter}");
    }
}
