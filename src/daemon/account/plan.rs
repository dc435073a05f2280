//! One account's decisions as data: given what the account holds and the time, what to do next
//! (log in, write the token it holds, remove an expired token from disk, or sleep until when).
//!
//! Invariants: pure (no I/O, no clocks, no randomness: every instant and every drawn delay is an
//! argument), so each rule is table-tested; every step the task performs is reported back through
//! one of the transitions, each of which moves the deadline that chose the step, so the loop
//! around [`Plan::next`] never spins; the token on disk is only ever replaced by a newer one or
//! removed once it expired.

use std::time::Duration;

pub use crate::schedule::Boot;

/// The instants of the token the account holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub expires: Boot,
    /// When to log in again for a fresh one.
    pub refresh: Boot,
}

/// What a task starts from: what the state file said, in boot time. `T` is the token itself
/// (the plan keeps it with its instants, so the two cannot disagree; tests use `()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start<T = ()> {
    /// A still-valid token to reuse (written to the outputs at once), with its instants.
    pub held: Option<(T, Held)>,
    /// When the token the outputs may still hold expires.
    pub disk_expires: Option<Boot>,
    /// No login before this: a backoff or parking kept across the restart.
    pub not_before: Option<Boot>,
    pub parked: bool,
    /// When the token kept was obtained: the last login, for the minimum interval between
    /// requested refreshes.
    pub last_login: Option<Boot>,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The token in the output files expired and no newer one was written: report it, and
    /// remove the files if the policy says so. Then [`Plan::next`] again.
    ExpireOnDisk,
    /// Log in now (a due login wins over a pending write: its token is written instead).
    Login,
    /// Write the held token to the outputs now.
    Write,
    /// Nothing to do before `until` (or an outside event: a secret change, a clock jump).
    Sleep { until: Boot },
}

impl<T> Default for Start<T> {
    fn default() -> Self {
        Start {
            held: None,
            disk_expires: None,
            not_before: None,
            parked: false,
            last_login: None,
        }
    }
}

/// The state of one account's loop, holding the token `T` it decides about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan<T = ()> {
    held: Option<(T, Held)>,
    /// When the token in the output files expires (then removed, by default), unless a newer
    /// token is written first.
    disk_expires: Option<Boot>,
    /// When to log in next: the refresh point, or a retry after a failure.
    next_login: Boot,
    /// When to try writing the held token (again).
    next_write: Option<Boot>,
    /// Failed logins in a row.
    failures: u32,
    /// Failed writes in a row of the token held.
    write_failures: u32,
    /// The credentials were rejected: only a change of them brings the next login forward.
    parked: bool,
    /// When the last login started: a requested refresh waits for the minimum interval after it.
    last_login: Option<Boot>,
    /// A server's `Retry-After`: not even a requested refresh logs in before it.
    retry_not_before: Option<Boot>,
}

impl<T> Plan<T> {
    /// The plan of a task started at `now`: with a restored token, write it at once and log in at
    /// its refresh point; without one, log in after `first_login_delay` (the start-up spread);
    /// never before a retry delay kept across the restart.
    pub fn start(now: Boot, start: Start<T>, first_login_delay: Duration) -> Plan<T> {
        let mut next_login = match &start.held {
            Some((_, held)) => held.refresh,
            None => now.saturating_add(first_login_delay),
        };
        if let Some(not_before) = start.not_before {
            next_login = next_login.max(not_before);
        }
        Plan {
            next_write: start.held.as_ref().map(|_| now),
            held: start.held,
            disk_expires: start.disk_expires,
            next_login,
            failures: 0,
            write_failures: 0,
            parked: start.parked,
            last_login: start.last_login,
            retry_not_before: None,
        }
    }

    /// What to do at `now`. A held token that expired is dropped first.
    pub fn next(&mut self, now: Boot) -> Step {
        if self.held().is_some_and(|held| now >= held.expires) {
            self.held = None;
            self.next_write = None;
        }
        if self.disk_expires.is_some_and(|at| now >= at) {
            self.disk_expires = None;
            return Step::ExpireOnDisk;
        }
        if now >= self.next_login {
            return Step::Login;
        }
        if self.held.is_some() && self.next_write.is_some_and(|due| now >= due) {
            return Step::Write;
        }
        let until = [
            self.next_write,
            self.disk_expires,
            self.held().map(|held| held.expires),
        ]
        .into_iter()
        .flatten()
        .fold(self.next_login, Boot::min);
        Step::Sleep { until }
    }

    /// The login asked for began at `at` (after waiting for a permit): a requested refresh keeps
    /// its minimum interval from here.
    pub fn login_began(&mut self, at: Boot) {
        self.last_login = Some(at);
    }

    /// A login at `now` brought `token`: hold it, write it at once, log in again at its refresh
    /// point.
    pub fn logged_in(&mut self, now: Boot, token: T, held: Held) {
        self.held = Some((token, held));
        self.next_login = held.refresh;
        self.next_write = Some(now);
        self.failures = 0;
        self.write_failures = 0;
        self.parked = false;
        self.retry_not_before = None;
    }

    /// A login failed: try again at `retry_at` (parked when the credentials were rejected),
    /// and never before `not_before` (the server's `Retry-After`), whatever is asked.
    pub fn login_failed(&mut self, retry_at: Boot, not_before: Option<Boot>, rejected: bool) {
        self.failures = self.failures.saturating_add(1);
        self.parked = rejected;
        self.next_login = retry_at;
        self.retry_not_before = not_before;
    }

    /// A refresh was asked for at `now` (SIGUSR1, `tokenkeeper refresh`): log in as soon as
    /// allowed, which is not within `min_gap` of the last login's start and never before a
    /// server's `Retry-After`; a parked account is unparked. A login planned sooner stays.
    /// Returns when the login will be.
    pub fn refresh_requested(&mut self, now: Boot, min_gap: Duration) -> Boot {
        let mut earliest = now;
        if let Some(last) = self.last_login {
            earliest = earliest.max(last.saturating_add(min_gap));
        }
        if let Some(not_before) = self.retry_not_before {
            earliest = earliest.max(not_before);
        }
        self.parked = false;
        self.next_login = self.next_login.min(earliest);
        self.next_login
    }

    /// The held token is in every output: the files now expire with it.
    pub fn wrote(&mut self) {
        self.write_failures = 0;
        self.next_write = None;
        if let Some(held) = self.held() {
            self.disk_expires = Some(held.expires);
        }
    }

    /// Writing the held token failed: try again at `retry_at`, without logging in again.
    pub fn write_failed(&mut self, retry_at: Boot) {
        self.write_failures = self.write_failures.saturating_add(1);
        self.next_write = Some(retry_at);
    }

    /// The account's secrets changed at `now`: a parked account tries again at once (a temporary
    /// failure keeps its backoff and any `Retry-After`). Whether the next login moved.
    pub fn secrets_changed(&mut self, now: Boot) -> bool {
        if self.parked {
            self.parked = false;
            self.next_login = now;
            true
        } else {
            false
        }
    }

    /// The instants of the token held, if any.
    pub fn held(&self) -> Option<Held> {
        self.held.as_ref().map(|(_, held)| *held)
    }

    /// The token held, if any.
    pub fn token(&self) -> Option<&T> {
        self.held.as_ref().map(|(token, _)| token)
    }

    pub fn next_login(&self) -> Boot {
        self.next_login
    }

    pub fn parked(&self) -> bool {
        self.parked
    }

    /// Failed logins in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Failed writes in a row.
    pub fn write_failures(&self) -> u32 {
        self.write_failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(seconds: u64) -> Boot {
        Duration::from_secs(seconds)
    }

    fn held(expires: u64, refresh: u64) -> Held {
        Held {
            expires: s(expires),
            refresh: s(refresh),
        }
    }

    /// A restored token (the tests hold `()` for it) with these instants.
    fn kept(expires: u64, refresh: u64) -> Option<((), Held)> {
        Some(((), held(expires, refresh)))
    }

    /// What the test does between two looks at the plan.
    #[derive(Clone, Copy, Debug)]
    enum Event {
        /// `next` at this instant must give this step.
        Expect(u64, Step),
        LoggedIn(u64, Held),
        Failed(u64, bool),
        Wrote,
        WriteFailed(u64),
        /// The secrets changed at this instant; whether the next login moved.
        SecretsChanged(u64, bool),
    }
    use Event::*;

    fn sleep(until: u64) -> Step {
        Step::Sleep { until: s(until) }
    }

    /// Runs the events against a plan; every expectation must hold.
    fn run(mut plan: Plan, events: &[Event], case: &str) -> Plan {
        for (index, event) in events.iter().enumerate() {
            match *event {
                Expect(now, step) => {
                    assert_eq!(plan.next(s(now)), step, "{case}, event {index}: {plan:?}")
                }
                LoggedIn(now, token) => plan.logged_in(s(now), (), token),
                Failed(retry_at, rejected) => plan.login_failed(s(retry_at), None, rejected),
                Wrote => plan.wrote(),
                WriteFailed(retry_at) => plan.write_failed(s(retry_at)),
                SecretsChanged(now, moved) => {
                    assert_eq!(plan.secrets_changed(s(now)), moved, "{case}, event {index}")
                }
            }
        }
        plan
    }

    #[test]
    fn decision_table() {
        let fresh = Plan::start(s(100), Start::default(), s(5));
        let restored = Plan::start(
            s(100),
            Start {
                held: kept(1000, 700),
                disk_expires: Some(s(1000)),
                not_before: None,
                parked: false,
                last_login: None,
            },
            s(5),
        );
        let cases: Vec<(&str, Plan, Vec<Event>)> = vec![
            (
                "a first login after the start-up spread, then write, then sleep to the refresh",
                fresh.clone(),
                vec![
                    Expect(100, sleep(105)),
                    Expect(105, Step::Login),
                    LoggedIn(105, held(1105, 800)),
                    Expect(105, Step::Write),
                    Wrote,
                    Expect(105, sleep(800)),
                    Expect(800, Step::Login),
                ],
            ),
            (
                "a restored token is written at once and refreshed at its point",
                restored.clone(),
                vec![
                    Expect(100, Step::Write),
                    Wrote,
                    Expect(100, sleep(700)),
                    Expect(700, Step::Login),
                ],
            ),
            (
                "a failed write is retried alone, without logging in",
                fresh.clone(),
                vec![
                    Expect(105, Step::Login),
                    LoggedIn(105, held(1105, 800)),
                    Expect(105, Step::Write),
                    WriteFailed(106),
                    Expect(105, sleep(106)),
                    Expect(106, Step::Write),
                    WriteFailed(110),
                    Expect(106, sleep(110)),
                    Expect(110, Step::Write),
                    Wrote,
                    Expect(110, sleep(800)),
                ],
            ),
            (
                "a due login wins over a pending write",
                fresh.clone(),
                vec![
                    Expect(105, Step::Login),
                    LoggedIn(105, held(1105, 800)),
                    WriteFailed(900),
                    Expect(800, Step::Login),
                ],
            ),
            (
                "failures back off while the token on disk stays, then it is removed at expiry",
                restored.clone(),
                vec![
                    Expect(100, Step::Write),
                    Wrote,
                    Expect(700, Step::Login),
                    Failed(900, false),
                    Expect(700, sleep(900)),
                    Expect(900, Step::Login),
                    Failed(1200, false),
                    Expect(900, sleep(1000)),
                    Expect(1000, Step::ExpireOnDisk),
                    Expect(1000, sleep(1200)),
                    Expect(1200, Step::Login),
                ],
            ),
            (
                "a token never written (writes failing) is dropped at expiry, and only the older file goes",
                restored.clone(),
                vec![
                    Expect(100, Step::Write),
                    Wrote,
                    Expect(700, Step::Login),
                    LoggedIn(700, held(1700, 1400)),
                    Expect(700, Step::Write),
                    WriteFailed(730),
                    // The file still holds the restored token, which expires at 1000.
                    Expect(720, sleep(730)),
                    Expect(1000, Step::ExpireOnDisk),
                    Expect(1000, Step::Write),
                    WriteFailed(1800),
                    // Its refresh comes before the next write retry: a newer token is fetched.
                    Expect(1000, sleep(1400)),
                    Expect(1400, Step::Login),
                    Failed(1500, false),
                    // The unwritten token expires: nothing is left to write or remove.
                    Expect(1700, Step::Login),
                    Failed(2000, false),
                    Expect(1700, sleep(2000)),
                ],
            ),
            (
                "a parked account waits for its retry, unless its secrets change",
                fresh.clone(),
                vec![
                    Expect(105, Step::Login),
                    Failed(1905, true),
                    Expect(106, sleep(1905)),
                    SecretsChanged(200, true),
                    Expect(200, Step::Login),
                    Failed(2000, false),
                    // A temporary failure keeps its backoff when secrets change.
                    SecretsChanged(300, false),
                    Expect(300, sleep(2000)),
                ],
            ),
            (
                "a retry delay kept across a restart holds back even a restored token's refresh",
                Plan::start(
                    s(100),
                    Start {
                        held: kept(5000, 150),
                        disk_expires: Some(s(5000)),
                        not_before: Some(s(400)),
                        parked: true,
                        last_login: None,
                    },
                    s(5),
                ),
                vec![
                    Expect(100, Step::Write),
                    Wrote,
                    Expect(150, sleep(400)),
                    Expect(400, Step::Login),
                ],
            ),
        ];
        for (case, plan, events) in cases {
            run(plan, &events, case);
        }
    }

    /// Whatever happens, `next` at a fixed instant never gives the same action twice without a
    /// transition in between, except a sleep: the loop cannot spin.
    #[test]
    fn every_action_moves_a_deadline() {
        let mut plan = Plan::start(
            s(100),
            Start {
                held: kept(200, 150),
                disk_expires: Some(s(120)),
                not_before: None,
                parked: false,
                last_login: None,
            },
            s(0),
        );
        // At 120 the disk copy expires: reported once, then the write is next.
        assert_eq!(plan.next(s(120)), Step::ExpireOnDisk);
        assert_eq!(plan.next(s(120)), Step::Write);
        plan.wrote();
        assert_eq!(plan.disk_expires, Some(s(200)));
        assert_eq!(plan.next(s(120)), sleep(150));
        // The expired token is dropped as soon as it is looked at past its expiry.
        assert_eq!(plan.next(s(250)), Step::ExpireOnDisk);
        assert_eq!(plan.held(), None);
        assert_eq!(plan.next(s(250)), Step::Login);
        plan.login_failed(s(260), None, false);
        assert_eq!(plan.failures(), 1);
        assert_eq!(plan.next(s(250)), sleep(260));
        plan.logged_in(s(260), (), held(400, 300));
        assert_eq!((plan.failures(), plan.parked()), (0, false));
        plan.write_failed(s(270));
        plan.write_failed(s(280));
        assert_eq!(plan.write_failures(), 2);
        plan.wrote();
        assert_eq!(plan.write_failures(), 0);
    }

    #[test]
    fn a_requested_refresh_waits_for_the_minimum_gap_and_any_retry_after() {
        let gap = s(10);
        // Holding a token refreshed at 300; the last login started at 100.
        let mut plan: Plan = Plan::start(s(0), Start::default(), s(100));
        assert_eq!(plan.next(s(100)), Step::Login);
        plan.login_began(s(100));
        plan.logged_in(s(101), (), held(1000, 300));
        // Asked 5 s after that login started: the login comes at the end of the gap, once.
        assert_eq!(plan.refresh_requested(s(105), gap), s(110));
        assert_eq!(plan.refresh_requested(s(106), gap), s(110));
        assert_eq!(plan.next(s(106)), Step::Write);
        plan.wrote();
        assert_eq!(plan.next(s(106)), sleep(110));
        assert_eq!(plan.next(s(110)), Step::Login);
        plan.login_began(s(110));
        // Asked long after the last login: at once.
        plan.logged_in(s(111), (), held(1000, 300));
        assert_eq!(plan.refresh_requested(s(200), gap), s(200));
        // A login planned sooner than the request allows stays where it was.
        let mut plan: Plan = Plan::start(s(0), Start::default(), s(100));
        assert_eq!(plan.next(s(100)), Step::Login);
        plan.login_began(s(100));
        plan.login_failed(s(103), None, false);
        assert_eq!(plan.refresh_requested(s(101), gap), s(103));
        // A server's Retry-After holds even a requested refresh back; parking does not.
        assert_eq!(plan.next(s(103)), Step::Login);
        plan.login_began(s(103));
        plan.login_failed(s(500), Some(s(400)), true);
        assert!(plan.parked());
        assert_eq!(plan.refresh_requested(s(120), gap), s(400));
        assert!(!plan.parked());
        // A permit that came late: the interval counts from when the login really began, and a
        // restored token's login counts too.
        let mut plan: Plan = Plan::start(s(0), Start::default(), s(100));
        assert_eq!(plan.next(s(100)), Step::Login);
        plan.login_began(s(109));
        plan.logged_in(s(110), (), held(1000, 300));
        assert_eq!(plan.refresh_requested(s(112), gap), s(119));
        let restored = Start {
            held: Some(((), held(1000, 700))),
            last_login: Some(s(95)),
            ..Start::default()
        };
        let mut plan: Plan = Plan::start(s(100), restored, s(0));
        assert_eq!(plan.refresh_requested(s(100), gap), s(105));
    }
}
