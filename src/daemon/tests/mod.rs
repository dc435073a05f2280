//! The daemon in virtual time: `daemon::run` with a [`TestClock`] and a scripted login, real
//! config files and real output files, under tokio's paused clock. Hours pass in milliseconds.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use super::account::{Authenticator, LoginFuture};
use super::clock::{Clock, TestClock};
use super::{AuthFactory, Controller, run};
use crate::login::{ErrorClass, LoginError, LoginOutcome};
use crate::secret::Secret;
use crate::token::Token;

mod outputs;
mod reload;
mod timing;

/// What the scripted server answers next.
#[derive(Clone, Debug)]
enum Answer {
    /// A token valid this long.
    Token(Duration),
    /// A token expiring at this absolute wall time (for absurd values).
    TokenUntil(Timestamp),
    /// A token with this value, valid this long.
    Named(&'static str, Duration),
    Fail(ErrorClass, Option<Duration>),
    /// A bug in a login: the task panics.
    Panic,
}

/// A login that answers from a script (then `fallback` forever) and records when it was called.
struct Scripted {
    clock: Arc<TestClock>,
    script: Mutex<VecDeque<Answer>>,
    fallback: Answer,
    /// Timer-clock instants of every call, and the token it returned.
    calls: Mutex<Vec<(Duration, Option<String>)>>,
}

impl Scripted {
    fn new(clock: &Arc<TestClock>, script: Vec<Answer>, fallback: Answer) -> Arc<Scripted> {
        Arc::new(Scripted {
            clock: Arc::clone(clock),
            script: Mutex::new(script.into()),
            fallback,
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<Duration> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(at, _)| *at)
            .collect()
    }

    fn last_token(&self) -> Option<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|(_, token)| token.clone())
    }

    fn set_fallback_script(&self, answers: Vec<Answer>) {
        self.script.lock().unwrap().extend(answers);
    }
}

impl Authenticator for Scripted {
    fn login<'a>(&'a self, _refresh_token: Option<&'a Secret>) -> LoginFuture<'a> {
        let answer = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.fallback.clone());
        let now = self.clock.wall();
        let number = self.calls.lock().unwrap().len();
        let mut value = format!("token-{number}");
        let result = match answer {
            Answer::Token(lifetime) => Ok(now + lifetime),
            Answer::Named(name, lifetime) => {
                value = name.to_string();
                Ok(now + lifetime)
            }
            Answer::TokenUntil(until) => Ok(until),
            Answer::Panic => {
                self.calls.lock().unwrap().push((self.clock.timer(), None));
                panic!("scripted panic in a login");
            }
            Answer::Fail(class, retry_after) => Err(LoginError {
                account: "a".to_string(),
                class,
                status: Some(503),
                retry_after,
                message: "scripted failure".to_string(),
            }),
        };
        let outcome = result.map(|expires_at| LoginOutcome {
            token: Token::new(Secret::new(value), now, expires_at).unwrap(),
            refresh_token: None,
            expiry_source: crate::expiry::Source::ExpiresIn,
            clamped: false,
            refreshed: false,
            latency: Duration::ZERO,
        });
        let token = outcome
            .as_ref()
            .ok()
            .map(|outcome| outcome.token.expose().to_string());
        self.calls.lock().unwrap().push((self.clock.timer(), token));
        Box::pin(async move { outcome })
    }
}

/// A test clock at a fixed wall-clock origin.
fn test_clock() -> Arc<TestClock> {
    Arc::new(TestClock::new(
        Timestamp::from_second(1_800_000_000).unwrap(),
    ))
}

/// A login whose first token (`first-token`, five minutes) every format takes, and whose refresh
/// the env format refuses (`second$token`: a shell would expand `$`).
fn unwritable_refresh(clock: &Arc<TestClock>) -> Arc<Scripted> {
    Scripted::new(
        clock,
        vec![Answer::Named("first-token", Duration::from_secs(300))],
        Answer::Named("second$token", Duration::from_secs(3600)),
    )
}

/// A factory that hands every account the same login.
fn same_login(login: Arc<dyn Authenticator>) -> AuthFactory {
    Arc::new(move |_account: &crate::config::Account| Ok(Arc::clone(&login)))
}

/// Starts `run` on the config at `path`; the controller that steers it and its task.
fn spawn_run(
    path: PathBuf,
    clock: &Arc<TestClock>,
    factory: AuthFactory,
) -> (Controller, tokio::task::JoinHandle<u8>) {
    let control = Controller::new();
    let steering = control.clone();
    let task_clock: Arc<dyn Clock> = Arc::clone(clock) as Arc<dyn Clock>;
    // The exit code the binary would give, so that tests read like the binary's.
    let daemon = tokio::spawn(async move {
        match run(&path, task_clock, factory, steering).await {
            Ok(()) => crate::EXIT_OK,
            Err(error) => error.exit_code(),
        }
    });
    (control, daemon)
}

struct Harness {
    clock: Arc<TestClock>,
    scripted: Arc<Scripted>,
    control: Controller,
    daemon: tokio::task::JoinHandle<u8>,
    dir: tempfile::TempDir,
}

impl Harness {
    /// Starts `run` on a one-account config (plus `daemon_table` lines under `[daemon]`).
    async fn start(script: Vec<Answer>, fallback: Answer, daemon_table: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let clock = test_clock();
        let scripted = Scripted::new(&clock, script, fallback);
        Harness::start_in(dir, clock, scripted, daemon_table).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        clock: Arc<TestClock>,
        scripted: Arc<Scripted>,
        daemon_table: &str,
    ) -> Harness {
        Harness::start_with_output(dir, clock, scripted, daemon_table, "").await
    }

    /// Like [`Harness::start_in`], with extra keys in the output table.
    async fn start_with_output(
        dir: tempfile::TempDir,
        clock: Arc<TestClock>,
        scripted: Arc<Scripted>,
        daemon_table: &str,
        output_keys: &str,
    ) -> Harness {
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        let secret = dir.path().join("secret");
        if !secret.exists() {
            std::fs::write(&secret, "first-secret\n").unwrap();
        }
        let config = format!(
            r#"
[daemon]
watch = false
state_dir = "{state}"
{daemon_table}

[accounts.a]
preset = "oauth2"
token_url = "https://idp.example/token"
client_id = "id"
client_secret = {{ file = "{secret}" }}
[[accounts.a.outputs]]
path = "{out}/a.token"
{output_keys}
"#,
            secret = secret.display(),
            out = dir.path().join("out").display(),
            state = dir.path().join("state").display(),
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let factory = same_login(Arc::clone(&scripted) as Arc<dyn Authenticator>);
        let (control, daemon) = spawn_run(dir.path().join("config.toml"), &clock, factory);
        Harness {
            clock,
            scripted,
            control,
            daemon,
            dir,
        }
    }

    fn output(&self) -> PathBuf {
        self.dir.path().join("out/a.token")
    }

    fn read(&self) -> Option<String> {
        std::fs::read_to_string(self.output()).ok()
    }

    async fn stop(self) -> (u8, tempfile::TempDir, Arc<Scripted>, Arc<TestClock>) {
        self.control.stop();
        let code = self.daemon.await.unwrap();
        (code, self.dir, self.scripted, self.clock)
    }
}

/// `count` accounts `a0`, `a1` … each with its own scripted login, started together by `run`.
struct Fleet {
    logins: std::collections::BTreeMap<String, Arc<Scripted>>,
    control: Controller,
    daemon: tokio::task::JoinHandle<u8>,
    dir: tempfile::TempDir,
    count: usize,
}

impl Fleet {
    /// Every account answers `script`, then `fallback`; `daemon_table` goes under `[daemon]`.
    async fn start(
        count: usize,
        script: Vec<Answer>,
        fallback: Answer,
        daemon_table: &str,
    ) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            Fleet::config(dir.path(), count, daemon_table),
        )
        .unwrap();
        let clock = test_clock();
        let logins: std::collections::BTreeMap<String, Arc<Scripted>> = (0..count)
            .map(|index| {
                (
                    format!("a{index}"),
                    Scripted::new(&clock, script.clone(), fallback.clone()),
                )
            })
            .collect();
        let factory: AuthFactory = {
            let logins = logins.clone();
            Arc::new(move |account: &crate::config::Account| {
                Ok(Arc::clone(&logins[&account.name]) as Arc<dyn Authenticator>)
            })
        };
        let (control, daemon) = spawn_run(dir.path().join("config.toml"), &clock, factory);
        Fleet {
            logins,
            control,
            daemon,
            dir,
            count,
        }
    }

    fn config(dir: &Path, count: usize, daemon_table: &str) -> String {
        let mut text = format!(
            "[daemon]\nwatch = false\nstate_dir = \"{}\"\n{daemon_table}\n[defaults]\nmax_lifetime = \"8d\"\n",
            dir.join("state").display()
        );
        for index in 0..count {
            text += &format!(
                "[accounts.a{index}]\npreset = \"oauth2\"\ntoken_url = \"https://idp.example/t\"\nclient_id = \"i\"\nclient_secret = {{ env = \"HOME\" }}\n[[accounts.a{index}.outputs]]\npath = \"{}/a{index}.token\"\n",
                dir.join("out").display()
            );
        }
        text
    }

    /// Rewrites the config with another `[daemon]` table and asks for a reload.
    fn reconfigure(&self, daemon_table: &str) {
        std::fs::write(
            self.dir.path().join("config.toml"),
            Fleet::config(self.dir.path(), self.count, daemon_table),
        )
        .unwrap();
        self.control.reload();
    }

    async fn stop(self) {
        self.control.stop();
        assert_eq!(self.daemon.await.unwrap(), 0);
    }
}

async fn pass(duration: Duration) {
    tokio::time::sleep(duration).await;
}

fn gaps(calls: &[Duration]) -> Vec<Duration> {
    calls.windows(2).map(|pair| pair[1] - pair[0]).collect()
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
    pass(super::CLOCK_CHECK_INTERVAL + Duration::from_secs(1)).await;
    let calls = harness.scripted.calls();
    assert_eq!(
        calls.len(),
        2,
        "the overdue account did not refresh after resume"
    );
    assert!(
        calls[1] - resumed_at <= super::CLOCK_CHECK_INTERVAL + Duration::from_secs(1),
        "refreshed {:?} after resume",
        calls[1] - resumed_at
    );
    assert_eq!(harness.read(), harness.scripted.last_token());
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_never_violated_and_backoff_stays_in_bounds() {
    let retry_after = Duration::from_secs(120);
    let mut script = vec![Answer::Token(Duration::from_secs(3600))];
    script.extend(std::iter::repeat_n(
        Answer::Fail(ErrorClass::Transient, Some(retry_after)),
        3,
    ));
    script.extend(std::iter::repeat_n(
        Answer::Fail(ErrorClass::Transient, None),
        8,
    ));
    let harness = Harness::start(
        script,
        Answer::Token(Duration::from_secs(3600)),
        "retry_base = \"2s\"\nretry_cap = \"60s\"",
    )
    .await;
    pass(Duration::from_secs(3600)).await;
    let calls = harness.scripted.calls();
    harness.stop().await;
    assert!(calls.len() >= 13, "{calls:?}");
    let gaps = gaps(&calls);
    // gaps[0]: refresh after the first token; gaps[1..=3] follow a Retry-After of 120 s.
    for gap in &gaps[1..=3] {
        assert!(
            *gap >= retry_after,
            "retried after {gap:?}, Retry-After said {retry_after:?}"
        );
    }
    // Then plain transient failures: full jitter within [floor, floor + min(cap, base·2^(n+2))],
    // capped at the cap (floor 1 s, base 2 s, cap 60 s).
    for (attempt, gap) in gaps[4..12].iter().enumerate() {
        let attempt = attempt as u32 + 3;
        let ceiling = (Duration::from_secs(1)
            + Duration::from_secs(2).saturating_mul(1 << (attempt + 2).min(20)))
        .min(Duration::from_secs(60));
        assert!(
            *gap >= Duration::from_secs(1) && *gap <= ceiling + Duration::from_millis(50),
            "attempt {attempt}: {gap:?} outside [1s, {ceiling:?}]"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn rejected_credentials_park_and_a_secret_change_retries_at_once() {
    // Without state files, a reload that restarted the task would show as an extra login.
    let harness = Harness::start(
        vec![],
        Answer::Fail(ErrorClass::Rejected, None),
        "rejected_retry = \"30m\"\nstate_files = false",
    )
    .await;
    pass(Duration::from_secs(2 * 3600)).await;
    let parked = harness.scripted.calls().len();
    assert!(
        (2..=5).contains(&parked),
        "{parked} attempts in 2 h with rejected credentials"
    );
    // Rotate the secret; a reload (SIGHUP) notices and the account retries at once.
    harness
        .scripted
        .set_fallback_script(vec![Answer::Token(Duration::from_secs(3600))]);
    std::fs::write(harness.dir.path().join("secret"), "second-secret\n").unwrap();
    let rotated_at = harness.clock.timer();
    harness.control.reload();
    pass(Duration::from_secs(1)).await;
    let calls = harness.scripted.calls();
    assert_eq!(
        calls.len(),
        parked + 1,
        "no immediate retry after the secret changed"
    );
    assert!(calls[parked] - rotated_at < Duration::from_secs(1));
    assert_eq!(harness.read(), harness.scripted.last_token());
    // A reload that changes nothing makes no login.
    harness.control.reload();
    pass(Duration::from_secs(60)).await;
    assert_eq!(harness.scripted.calls().len(), parked + 1);
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_old_token_stays_until_it_expires_then_its_file_goes() {
    let harness = Harness::start(
        vec![Answer::Token(Duration::from_secs(300))],
        Answer::Fail(ErrorClass::Transient, None),
        "",
    )
    .await;
    pass(Duration::from_secs(1)).await;
    let first = harness.read().expect("first token written");
    pass(Duration::from_secs(290)).await;
    assert_eq!(
        harness.read().as_deref(),
        Some(first.as_str()),
        "kept while valid"
    );
    pass(Duration::from_secs(20)).await;
    assert_eq!(harness.read(), None, "an expired token must be removed");
    harness.stop().await;

    let harness = Harness::start(
        vec![Answer::Token(Duration::from_secs(300))],
        Answer::Fail(ErrorClass::Transient, None),
        "on_expiry = \"keep\"",
    )
    .await;
    pass(Duration::from_secs(400)).await;
    assert!(harness.read().is_some(), "on_expiry = keep leaves the file");
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_is_retried_without_logging_in_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // A non-empty directory at the target path makes every rename fail.
    std::fs::create_dir_all(out.join("a.token/blocker")).unwrap();
    let clock = test_clock();
    let scripted = Scripted::new(&clock, vec![], Answer::Token(Duration::from_secs(3600)));
    let harness = Harness::start_in(dir, clock, scripted, "").await;
    pass(Duration::from_secs(120)).await;
    assert_eq!(
        harness.scripted.calls().len(),
        1,
        "write retries must not log in"
    );
    assert!(harness.read().is_none());
    std::fs::remove_dir_all(harness.output()).unwrap();
    pass(Duration::from_secs(31)).await;
    assert_eq!(
        harness.read(),
        harness.scripted.last_token(),
        "recovered once space returned"
    );
    assert_eq!(harness.scripted.calls().len(), 1);
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_write_failing_past_the_refresh_point_never_spins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out/a.token/blocker")).unwrap();
    let clock = test_clock();
    let scripted = Scripted::new(&clock, vec![], Answer::Token(Duration::from_secs(60)));
    let harness = Harness::start_in(dir, clock, scripted, "").await;
    // Several refresh points pass while every write fails; a busy loop would never let the
    // virtual clock move, and this sleep would never return.
    pass(Duration::from_secs(300)).await;
    let logins = harness.scripted.calls().len();
    // 60 s tokens are renewed at 60–75 % of their life (the margin shrinks to 15 s): every
    // 36–45 s.
    assert!(
        (7..=9).contains(&logins),
        "{logins} logins in 300 s with 60 s tokens: {:?}",
        harness.scripted.calls()
    );
    std::fs::remove_dir_all(harness.output()).unwrap();
    pass(Duration::from_secs(31)).await;
    assert_eq!(harness.read(), harness.scripted.last_token());
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_state_file_that_does_not_fit_the_clock_is_ignored() {
    let harness = Harness::start(vec![], Answer::Token(Duration::from_secs(3600)), "").await;
    pass(Duration::from_secs(10)).await;
    let (_, dir, first, _) = harness.stop().await;
    assert_eq!(first.calls().len(), 1);
    // Restart on a host whose wall clock is a day behind: the saved token looks issued tomorrow.
    let behind = Arc::new(TestClock::new(
        Timestamp::from_second(1_800_000_000 - 86_400).unwrap(),
    ));
    let second = Scripted::new(&behind, vec![], Answer::Token(Duration::from_secs(3600)));
    let harness = Harness::start_in(dir, behind, Arc::clone(&second), "").await;
    pass(Duration::from_secs(5)).await;
    assert_eq!(
        second.calls().len(),
        1,
        "a state file from the future was trusted"
    );
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_reuses_the_token_in_the_state_file() {
    let harness = Harness::start(vec![], Answer::Token(Duration::from_secs(3600)), "").await;
    pass(Duration::from_secs(10)).await;
    let token = harness.read().unwrap();
    let (code, dir, first, clock) = harness.stop().await;
    assert_eq!(code, 0);
    assert_eq!(first.calls().len(), 1);
    // The output file is lost (say a reader deleted it); the state file brings it back.
    std::fs::remove_file(dir.path().join("out/a.token")).unwrap();
    let second = Scripted::new(&clock, vec![], Answer::Token(Duration::from_secs(3600)));
    let harness = Harness::start_in(dir, clock, Arc::clone(&second), "").await;
    pass(Duration::from_secs(60)).await;
    assert_eq!(
        second.calls().len(),
        0,
        "a restart with a valid token must not log in"
    );
    assert_eq!(harness.read().as_deref(), Some(token.as_str()));
    harness.stop().await;
}

/// A login that takes `latency` of (virtual) time and counts how many run at once.
struct Slow {
    clock: Arc<TestClock>,
    latency: Duration,
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
    starts: Mutex<Vec<Duration>>,
}

impl Authenticator for Slow {
    fn login<'a>(&'a self, _refresh_token: Option<&'a Secret>) -> LoginFuture<'a> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            self.starts.lock().unwrap().push(self.clock.timer());
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most_in_flight.fetch_max(now, SeqCst);
            tokio::time::sleep(self.latency).await;
            self.in_flight.fetch_sub(1, SeqCst);
            let wall = self.clock.wall();
            Ok(LoginOutcome {
                token: Token::new(
                    Secret::new("slow-token".into()),
                    wall,
                    wall + Duration::from_secs(3600),
                )
                .unwrap(),
                refresh_token: None,
                expiry_source: crate::expiry::Source::ExpiresIn,
                clamped: false,
                refreshed: false,
                latency: self.latency,
            })
        })
    }
}

/// Runs `accounts` accounts for a virtual minute against a [`Slow`] login; returns the start
/// instants of the logins and the most that ran at once.
async fn run_many(accounts: usize, limit: usize, latency: Duration) -> (Vec<Duration>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut text = format!(
        "[daemon]\nwatch = false\nmax_concurrent_logins = {limit}\nstartup_spread = \"30s\"\nstate_dir = \"{}\"\n",
        dir.path().join("state").display()
    );
    for index in 0..accounts {
        text += &format!(
            "[accounts.a{index}]\npreset = \"oauth2\"\ntoken_url = \"https://idp.example/t\"\nclient_id = \"i\"\nclient_secret = {{ env = \"HOME\" }}\n[[accounts.a{index}.outputs]]\npath = \"{}/a{index}.token\"\n",
            out.display()
        );
    }
    std::fs::write(dir.path().join("config.toml"), text).unwrap();
    let clock = test_clock();
    let slow = Arc::new(Slow {
        clock: Arc::clone(&clock),
        latency,
        in_flight: Default::default(),
        most_in_flight: Default::default(),
        starts: Mutex::new(Vec::new()),
    });
    let factory = same_login(Arc::clone(&slow) as Arc<dyn Authenticator>);
    let (control, daemon) = spawn_run(dir.path().join("config.toml"), &clock, factory);
    pass(Duration::from_secs(60)).await;
    control.stop();
    assert_eq!(daemon.await.unwrap(), 0);
    let written = std::fs::read_dir(&out)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".token")
        })
        .count();
    assert_eq!(written, accounts, "every account wrote its token");
    let starts = slow.starts.lock().unwrap().clone();
    (
        starts,
        slow.most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst),
    )
}

#[tokio::test(start_paused = true)]
async fn logins_respect_the_global_limit() {
    let (starts, most) = run_many(60, 4, Duration::from_millis(500)).await;
    assert_eq!(starts.len(), 60, "every account logged in once");
    assert_eq!(most, 4, "{most} logins ran at once with a limit of 4");
}

#[tokio::test(start_paused = true)]
async fn first_logins_spread_out_at_start() {
    // 60 accounts × 20 ms: first logins spread over up to 1.2 s instead of one instant.
    let (starts, most) = run_many(60, 4096, Duration::ZERO).await;
    assert_eq!(starts.len(), 60);
    let first = *starts.iter().min().unwrap();
    let last = *starts.iter().max().unwrap();
    assert!(
        last - first >= Duration::from_millis(600),
        "spread only {:?}",
        last - first
    );
    assert!(
        last - first <= Duration::from_millis(1200),
        "spread {:?} beyond 1.2 s",
        last - first
    );
    let distinct: std::collections::BTreeSet<Duration> = starts.iter().copied().collect();
    assert!(
        distinct.len() >= 30,
        "{} distinct start instants for 60 accounts",
        distinct.len()
    );
    assert!(most <= 60);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_account_task_is_restarted() {
    let harness = Harness::start(
        vec![Answer::Panic],
        Answer::Token(Duration::from_secs(3600)),
        "",
    )
    .await;
    pass(super::CLOCK_CHECK_INTERVAL * 2).await;
    let calls = harness.scripted.calls();
    assert_eq!(
        calls.len(),
        2,
        "the task was not restarted after its panic: {calls:?}"
    );
    assert_eq!(harness.read(), harness.scripted.last_token());
    let (code, ..) = harness.stop().await;
    assert_eq!(code, 0);
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_an_expired_token_on_disk_is_removed() {
    let harness = Harness::start(vec![], Answer::Token(Duration::from_secs(300)), "").await;
    pass(Duration::from_secs(10)).await;
    assert!(harness.read().is_some());
    let (_, dir, _, clock) = harness.stop().await;
    // The daemon is down past the token's expiry; at start the endpoint is failing.
    pass(Duration::from_secs(400)).await;
    let failing = Scripted::new(&clock, vec![], Answer::Fail(ErrorClass::Transient, None));
    let harness = Harness::start_in(dir, clock, failing, "").await;
    pass(Duration::from_millis(100)).await;
    assert_eq!(
        harness.read(),
        None,
        "a dead token stayed on disk after the restart"
    );
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_token_close_to_expiry_at_restart_is_refreshed_at_once_and_removed_if_that_fails() {
    let harness = Harness::start(vec![], Answer::Token(Duration::from_secs(300)), "").await;
    pass(Duration::from_secs(10)).await;
    let (_, dir, _, clock) = harness.stop().await;
    // Back 20 s before expiry, with the endpoint failing.
    pass(Duration::from_secs(270)).await;
    let failing = Scripted::new(&clock, vec![], Answer::Fail(ErrorClass::Transient, None));
    let harness = Harness::start_in(dir, clock, Arc::clone(&failing), "").await;
    pass(Duration::from_millis(100)).await;
    assert_eq!(
        failing.calls().len(),
        1,
        "no immediate refresh of a nearly expired token"
    );
    assert!(
        harness.read().is_some(),
        "the still-valid token must stay meanwhile"
    );
    pass(Duration::from_secs(21)).await;
    assert_eq!(harness.read(), None, "the token expired and stayed on disk");
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn while_writes_fail_the_older_file_goes_when_its_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let clock = test_clock();
    let scripted = unwritable_refresh(&clock);
    let harness = Harness::start_with_output(dir, clock, scripted, "", "format = \"env\"").await;
    pass(Duration::from_secs(10)).await;
    assert_eq!(harness.read().as_deref(), Some("A_TOKEN=first-token\n"));
    pass(Duration::from_secs(280)).await;
    assert!(harness.scripted.calls().len() >= 2, "the refresh happened");
    assert_eq!(
        harness.read().as_deref(),
        Some("A_TOKEN=first-token\n"),
        "kept while valid"
    );
    pass(Duration::from_secs(20)).await;
    assert_eq!(
        harness.read(),
        None,
        "the expired first token stayed on disk"
    );
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rejected_account_stays_parked_across_restarts_until_its_secret_changes() {
    let harness = Harness::start(vec![], Answer::Fail(ErrorClass::Rejected, None), "").await;
    pass(Duration::from_secs(10)).await;
    let (_, dir, first, clock) = harness.stop().await;
    assert_eq!(first.calls().len(), 1);
    // A crash loop: three quick restarts make no login.
    let mut dir = dir;
    for _ in 0..3 {
        let again = Scripted::new(&clock, vec![], Answer::Fail(ErrorClass::Rejected, None));
        let harness = Harness::start_in(dir, Arc::clone(&clock), Arc::clone(&again), "").await;
        pass(Duration::from_secs(5)).await;
        assert_eq!(
            again.calls().len(),
            0,
            "a restart retried a parked account at once"
        );
        dir = harness.stop().await.1;
    }
    // The secret is rotated while the daemon is down: the next start tries at once.
    pass(Duration::from_secs(1)).await;
    std::fs::write(dir.path().join("secret"), "rotated-secret\n").unwrap();
    // The file's time comes from the real clock; put it on the test clock's timeline.
    let rotated_at = std::time::UNIX_EPOCH + Duration::from_secs(clock.wall().as_second() as u64);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("secret"))
        .unwrap()
        .set_modified(rotated_at)
        .unwrap();
    let rotated = Scripted::new(&clock, vec![], Answer::Token(Duration::from_secs(3600)));
    let harness = Harness::start_in(dir, clock, Arc::clone(&rotated), "").await;
    pass(Duration::from_millis(100)).await;
    assert_eq!(rotated.calls().len(), 1);
    assert_eq!(harness.read(), rotated.last_token());
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_supervisor_keeps_each_accounts_status_without_secrets() {
    use super::Supervisor;
    use super::account::Health;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let text = format!(
        "[daemon]\nwatch = false\nstate_dir = \"{}\"\n[accounts.a]\npreset = \"oauth2\"\ntoken_url = \"https://idp.example/t\"\nclient_id = \"i\"\nclient_secret = \"status-canary-secret\"\n[[accounts.a.outputs]]\npath = \"{}/a.token\"\n",
        dir.path().join("state").display(),
        dir.path().join("out").display()
    );
    let config = crate::config::parse(
        &text,
        Path::new("t.toml"),
        crate::config::SecretCheck::Skip,
        false,
    )
    .unwrap();
    let clock = test_clock();
    let scripted = Scripted::new(&clock, vec![], Answer::Fail(ErrorClass::Rejected, None));
    let factory: AuthFactory = {
        let scripted = Arc::clone(&scripted);
        Arc::new(move |_account: &crate::config::Account| {
            Ok(Arc::clone(&scripted) as Arc<dyn Authenticator>)
        })
    };
    let supervisor =
        Supervisor::start(config, Arc::clone(&clock) as Arc<dyn Clock>, factory).unwrap();
    pass(Duration::from_secs(1)).await;
    let statuses = supervisor.statuses();
    assert_eq!(statuses.len(), 1);
    let (name, status) = &statuses[0];
    assert_eq!(name, "a");
    assert_eq!(status.health, Health::Rejected);
    assert_eq!(status.logins, 1);
    assert_eq!(status.consecutive_failures, 1);
    let next = status
        .next_attempt
        .expect("the next attempt is kept for status");
    let wait = next.duration_since(clock.wall()).as_secs();
    assert!(
        (25 * 60..=35 * 60).contains(&wait),
        "next attempt in {wait} s while parked"
    );
    let error = status.last_error.as_deref().unwrap();
    assert!(error.contains("credentials rejected"), "{error}");
    assert!(!format!("{statuses:?}").contains("status-canary-secret"));
    supervisor.stop(Duration::from_secs(1)).await;
}
