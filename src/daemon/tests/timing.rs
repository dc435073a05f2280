//! The refresh rule over every lifetime, in virtual time and property style: renewal before
//! expiry with room for retries, the jitter band kept across accounts, bounded logins for tiny
//! lifetimes, and retries that spread out when many accounts fail together.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use super::*;

/// Lifetimes from 5 s to 7 days, roughly evenly spread on a log scale.
const LIFETIMES: &[u64] = &[
    5,
    10,
    12,
    15,
    20,
    30,
    45,
    60,
    90,
    120,
    300,
    600,
    1800,
    3600,
    4 * 3600,
    86_400,
    7 * 86_400,
];

/// Successful logins of one scripted account: (instant, token).
fn successes(login: &Scripted) -> Vec<Duration> {
    login
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, token)| token.is_some())
        .map(|(at, _)| *at)
        .collect()
}

/// With default settings, for every lifetime from
/// 10 s to 7 days, up to two transient failures answered `Retry-After: 1` at any renewal never
/// leave an expired token on disk: each new token arrives before the previous one expires.
#[tokio::test(start_paused = true)]
async fn two_retry_after_failures_at_a_renewal_never_leave_an_expired_token() {
    let mut rng = StdRng::seed_from_u64(0x7e57_0001);
    let mut tightest = f64::INFINITY;
    for &lifetime in LIFETIMES.iter().filter(|&&lifetime| lifetime >= 10) {
        let lifetime = Duration::from_secs(lifetime);
        // Virtual days cost real time (the supervisor's clock check ticks every 15 s), so the
        // longest lifetimes get one draw each.
        let seeds = if lifetime >= Duration::from_secs(86_400) {
            1
        } else {
            3
        };
        for _seed in 0..seeds {
            let renewals = 4;
            let mut script = vec![Answer::Token(lifetime)];
            for _ in 0..renewals {
                for _ in 0..rng.random_range(0..=2) {
                    script.push(Answer::Fail(
                        ErrorClass::Transient,
                        Some(Duration::from_secs(1)),
                    ));
                }
                script.push(Answer::Token(lifetime));
            }
            let fleet = Fleet::start(1, script, Answer::Token(lifetime), "").await;
            pass(lifetime * (renewals + 1)).await;
            let login = Arc::clone(&fleet.logins["a0"]);
            fleet.stop().await;
            let times = successes(&login);
            assert!(
                times.len() > renewals as usize,
                "lifetime {lifetime:?}: {} tokens in {} lifetimes",
                times.len(),
                renewals + 1
            );
            for pair in times.windows(2) {
                let left = (pair[0] + lifetime).saturating_sub(pair[1]);
                assert!(
                    pair[1] < pair[0] + lifetime,
                    "lifetime {lifetime:?}: a token obtained at {:?} expired before the next at {:?}; calls {:?}",
                    pair[0],
                    pair[1],
                    login.calls()
                );
                tightest = tightest.min(left.as_secs_f64() / lifetime.as_secs_f64());
            }
        }
    }
    // Even the tightest renewal left a real share of the lifetime.
    eprintln!(
        "tightest renewal left {:.1} % of the lifetime",
        tightest * 100.0
    );
    assert!(tightest > 0.0, "{tightest}");
}

/// The jitter band survives short lifetimes: 40 accounts that logged in together renew at points
/// that spread over at least ±5 % of the lifetime, for every lifetime from 5 s to 7 days.
#[tokio::test(start_paused = true)]
async fn refresh_points_of_accounts_that_started_together_stay_spread() {
    for &lifetime in LIFETIMES {
        let lifetime = Duration::from_secs(lifetime);
        // A tiny start-up spread, so that the accounts really start together.
        let fleet = Fleet::start(
            40,
            vec![],
            Answer::Token(lifetime),
            "startup_spread = \"1ms\"",
        )
        .await;
        // Every account renews within 82.5 % of the lifetime after its first login.
        pass(lifetime).await;
        let shares: Vec<f64> = fleet
            .logins
            .values()
            .map(|login| {
                let times = successes(login);
                assert!(times.len() >= 2, "lifetime {lifetime:?}: {times:?}");
                (times[1] - times[0]).as_secs_f64() / lifetime.as_secs_f64()
            })
            .collect();
        fleet.stop().await;
        let lowest = shares.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = shares.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        eprintln!(
            "lifetime {lifetime:?}: first renewals at {:.1} %..{:.1} % of the lifetime",
            lowest * 100.0,
            highest * 100.0
        );
        assert!(
            highest - lowest >= 0.10,
            "lifetime {lifetime:?}: refresh points within {lowest:.3}..{highest:.3} of the lifetime"
        );
        assert!(
            highest < 1.0,
            "lifetime {lifetime:?}: renewed at {highest:.3}"
        );
    }
}

/// Tiny lifetimes are renewed before they expire, yet never more than once a second.
#[tokio::test(start_paused = true)]
async fn tiny_lifetimes_give_bounded_logins() {
    for seconds in [1, 2, 3, 5] {
        let lifetime = Duration::from_secs(seconds);
        let fleet = Fleet::start(1, vec![], Answer::Token(lifetime), "").await;
        let span = Duration::from_secs(60);
        pass(span).await;
        let login = Arc::clone(&fleet.logins["a0"]);
        fleet.stop().await;
        let calls = login.calls();
        let per_lifetime = calls.len() as f64 * lifetime.as_secs_f64() / span.as_secs_f64();
        eprintln!(
            "lifetime {seconds} s: {} logins in 60 s, {per_lifetime:.2} per lifetime",
            calls.len()
        );
        // At most one login a second (plus the first); at least one per lifetime from 2 s up.
        assert!(
            calls.len() <= 61,
            "{seconds} s: {} logins in 60 s",
            calls.len()
        );
        if seconds >= 2 {
            assert!(
                per_lifetime >= 1.0,
                "{seconds} s: {per_lifetime} logins per lifetime"
            );
        }
        for gap in gaps(&calls) {
            assert!(
                gap >= crate::schedule::MIN_REFRESH_GAP,
                "{seconds} s: {gap:?}"
            );
        }
    }
}

/// 50 accounts answered `429 Retry-After: 5` together come back spread over a
/// window after the five seconds (never before), and 50 that fail together without one spread
/// their first retry too: no 100 ms holds more than 20 % of them.
#[tokio::test(start_paused = true)]
async fn retries_of_accounts_that_failed_together_spread_out() {
    for retry_after in [Some(Duration::from_secs(5)), None] {
        let fleet = Fleet::start(
            50,
            vec![Answer::Fail(ErrorClass::Transient, retry_after)],
            Answer::Token(Duration::from_secs(3600)),
            "startup_spread = \"1ms\"",
        )
        .await;
        pass(Duration::from_secs(60)).await;
        let mut buckets: BTreeMap<u128, usize> = BTreeMap::new();
        for login in fleet.logins.values() {
            let calls = login.calls();
            assert_eq!(calls.len(), 2, "{calls:?}");
            let waited = calls[1] - calls[0];
            assert!(
                waited >= retry_after.unwrap_or(Duration::from_secs(1)),
                "{retry_after:?}: retried after {waited:?}"
            );
            *buckets.entry(calls[1].as_millis() / 100).or_default() += 1;
        }
        fleet.stop().await;
        let largest = buckets.values().copied().max().unwrap_or(0);
        assert!(
            largest <= 10,
            "{retry_after:?}: {largest} of 50 retries in one 100 ms: {buckets:?}"
        );
        assert!(buckets.len() >= 15, "{retry_after:?}: {buckets:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn refreshes_inside_the_band_for_many_lifetimes() {
    let lifetime = Duration::from_secs(600);
    let harness = Harness::start(vec![], Answer::Token(lifetime), "").await;
    pass(lifetime * 20).await;
    let calls = harness.scripted.calls();
    assert_eq!(harness.read(), harness.scripted.last_token());
    let (code, ..) = harness.stop().await;
    assert_eq!(code, 0);
    // Default policy: 75 % of the lifetime ± 10 % of that delay.
    assert!(
        calls.len() >= 24 && calls.len() <= 31,
        "{} logins in 20 lifetimes",
        calls.len()
    );
    for gap in gaps(&calls) {
        let fraction = gap.as_secs_f64() / lifetime.as_secs_f64();
        assert!(
            (0.67..=0.83).contains(&fraction),
            "refreshed at {fraction:.3} of the lifetime"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn tiny_lifetimes_renew_before_expiry_without_a_hot_loop_and_huge_ones_are_clamped() {
    let lifetime = Duration::from_secs(3);
    let harness = Harness::start(vec![], Answer::Token(lifetime), "").await;
    pass(Duration::from_secs(100)).await;
    let calls = harness.scripted.calls();
    harness.stop().await;
    // A 3 s token is renewed at 35–50 % of its life (1.5 s kept before expiry): about 70 logins
    // in 100 s, never two within the 1 s gap, and every one before the last token expired.
    assert!(
        (50..=100).contains(&calls.len()),
        "{} logins in 100 s with a 3 s lifetime",
        calls.len()
    );
    for gap in gaps(&calls) {
        assert!(
            gap >= crate::schedule::MIN_REFRESH_GAP && gap < lifetime,
            "gap {gap:?} with a {lifetime:?} lifetime"
        );
    }

    let far = Answer::TokenUntil(Timestamp::MAX);
    let harness = Harness::start(vec![far.clone()], far, "").await;
    pass(Duration::from_secs(3 * 24 * 3600)).await;
    assert_eq!(
        harness.scripted.calls().len(),
        1,
        "a far expiry must not loop"
    );
    assert!(harness.read().is_some());
    let (code, ..) = harness.stop().await;
    assert_eq!(code, 0);
}

#[tokio::test(start_paused = true)]
async fn a_suspend_longer_than_the_token_refreshes_at_once_on_resume() {
    let harness = Harness::start(vec![], Answer::Token(Duration::from_secs(3600)), "").await;
    pass(Duration::from_secs(100)).await;
    assert_eq!(harness.scripted.calls().len(), 1);
    let resumed_at = harness.clock.timer();
    // Two hours pass in suspend: wall and boot clocks jump, the timer clock does not.
    harness.clock.suspend(Duration::from_secs(2 * 3600));
    pass(crate::daemon::CLOCK_CHECK_INTERVAL + Duration::from_secs(1)).await;
    let calls = harness.scripted.calls();
    assert_eq!(
        calls.len(),
        2,
        "the overdue account did not refresh after resume"
    );
    assert!(
        calls[1] - resumed_at <= crate::daemon::CLOCK_CHECK_INTERVAL + Duration::from_secs(1),
        "refreshed {:?} after resume",
        calls[1] - resumed_at
    );
    assert_eq!(harness.read(), harness.scripted.last_token());
    harness.stop().await;
}
