//! Failures in virtual time: backoff and Retry-After, parking and secret rotation, expiry on
//! disk, failed writes, a panicking task, and the status kept meanwhile.

use super::*;

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
async fn a_panicking_account_task_is_restarted() {
    let harness = Harness::start(
        vec![Answer::Panic],
        Answer::Token(Duration::from_secs(3600)),
        "",
    )
    .await;
    pass(crate::daemon::CLOCK_CHECK_INTERVAL * 2).await;
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

/// Hands out one login, but fails to build it on the listed calls (0-based), as a bad CA bundle
/// or client certificate would.
struct FlakyLogins {
    login: Arc<dyn Authenticator>,
    failing: Vec<usize>,
    calls: std::sync::atomic::AtomicUsize,
}

impl crate::daemon::Logins for FlakyLogins {
    fn login_for(
        &self,
        account: &crate::config::Account,
    ) -> Result<crate::daemon::Built, crate::login::SetupError> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.failing.contains(&call) {
            return Err(crate::login::SetupError {
                account: account.name.clone(),
                source: crate::login::http::ClientError::Proxy("a test failure".to_string()),
            });
        }
        Ok(crate::daemon::Built {
            auth: Arc::clone(&self.login),
            files_digest: None,
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_revival_that_cannot_build_its_login_is_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = test_clock();
    let scripted = Scripted::new(
        &clock,
        vec![Answer::Panic],
        Answer::Token(Duration::from_secs(3600)),
    );
    // Call 0 starts the account; its task panics; calls 1 and 2 (the revivals) fail.
    let factory: AuthFactory = Arc::new(FlakyLogins {
        login: Arc::clone(&scripted) as Arc<dyn Authenticator>,
        failing: vec![1, 2],
        calls: std::sync::atomic::AtomicUsize::new(0),
    });
    let harness =
        Harness::start_with_factory(dir, clock, Arc::clone(&scripted), "", "", factory).await;
    pass(crate::daemon::CLOCK_CHECK_INTERVAL * 5).await;
    let calls = harness.scripted.calls();
    assert_eq!(
        calls.len(),
        2,
        "the account was not revived once its login could be built: {calls:?}"
    );
    assert_eq!(harness.read(), harness.scripted.last_token());
    let (code, ..) = harness.stop().await;
    assert_eq!(code, 0);
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

/// A supervisor (no daemon loop) over the config `text`, every login answered with `answer`.
fn supervisor_of(text: &str, answer: Answer) -> (crate::daemon::Supervisor, Arc<TestClock>) {
    let config = crate::config::parse(
        text,
        Path::new("t.toml"),
        crate::config::SecretCheck::Skip,
        false,
    )
    .unwrap();
    let clock = test_clock();
    let scripted = Scripted::new(&clock, vec![], answer);
    let factory: AuthFactory = Arc::new(move |_account: &crate::config::Account| {
        Arc::clone(&scripted) as Arc<dyn Authenticator>
    });
    let supervisor =
        crate::daemon::Supervisor::start(config, Arc::clone(&clock) as Arc<dyn Clock>, factory)
            .unwrap();
    (supervisor, clock)
}

#[tokio::test(start_paused = true)]
async fn the_supervisor_keeps_each_accounts_status_without_secrets() {
    use crate::daemon::status::Health;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let text = format!(
        "[daemon]\nwatch = false\nstate_dir = \"{}\"\n[accounts.a]\npreset = \"oauth2\"\ntoken_url = \"https://idp.example/t\"\nclient_id = \"i\"\nclient_secret = \"status-canary-secret\"\n[[accounts.a.outputs]]\npath = \"{}/a.token\"\n",
        dir.path().join("state").display(),
        dir.path().join("out").display()
    );
    let (supervisor, clock) = supervisor_of(&text, Answer::Fail(ErrorClass::Rejected, None));
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

/// The status says what is published: a token that could not be written is not "expiring at"
/// anything, and the account is not ready, until the write succeeds.
#[tokio::test(start_paused = true)]
async fn the_status_follows_what_is_on_disk_not_what_is_held() {
    use crate::daemon::status::Health;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // A non-empty directory at the target path makes every rename fail.
    std::fs::create_dir_all(out.join("a.token/blocker")).unwrap();
    let text = format!(
        "[daemon]\nwatch = false\nstate_dir = \"{}\"\n[accounts.a]\npreset = \"oauth2\"\ntoken_url = \"https://idp.example/t\"\nclient_id = \"i\"\nclient_secret = {{ env = \"S\" }}\n[[accounts.a.outputs]]\npath = \"{}/a.token\"\n",
        dir.path().join("state").display(),
        out.display()
    );
    let (supervisor, clock) = supervisor_of(&text, Answer::Token(Duration::from_secs(3600)));
    pass(Duration::from_secs(5)).await;
    let (_, status) = supervisor.statuses().remove(0);
    assert_eq!(status.health, Health::Healthy, "the login succeeded");
    assert!(status.attempted);
    assert_eq!(status.expires_at, None, "nothing is published yet");
    assert!(!status.written);
    let why = status.not_ready(clock.wall()).expect("not ready");
    assert!(why.contains("a.token"), "{why}");
    std::fs::remove_dir_all(out.join("a.token")).unwrap();
    pass(Duration::from_secs(31)).await;
    let (_, status) = supervisor.statuses().remove(0);
    assert!(status.written);
    let expires = status.expires_at.expect("published");
    assert!(expires > clock.wall());
    assert_eq!(status.not_ready(clock.wall()), None);
    supervisor.stop(Duration::from_secs(1)).await;
}
