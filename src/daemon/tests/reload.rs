//! Reloads in virtual time: what restarts an account and what does not, and settings that apply
//! without a restart.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

#[tokio::test(start_paused = true)]
async fn a_comment_above_an_account_restarts_nothing() {
    // Without state files, a restarted task would log in again: a login shows a restart.
    let harness = Harness::start(
        vec![],
        Answer::Token(Duration::from_secs(3600)),
        "state_files = false",
    )
    .await;
    pass(Duration::from_secs(10)).await;
    assert_eq!(harness.scripted.calls().len(), 1);
    let config = harness.dir.path().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("# a comment moves every line down\n\n{text}"),
    )
    .unwrap();
    harness.control.reload();
    pass(Duration::from_secs(60)).await;
    assert_eq!(
        harness.scripted.calls().len(),
        1,
        "moving an account in the file restarted it"
    );
    // A change to what the account does restarts it (and, without state, logs in).
    let changed = std::fs::read_to_string(&config)
        .unwrap()
        .replace("client_id = \"id\"", "client_id = \"other-id\"");
    std::fs::write(&config, changed).unwrap();
    harness.control.reload();
    pass(Duration::from_secs(1)).await;
    assert_eq!(harness.scripted.calls().len(), 2);
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_daemon_change_restarts_every_account_without_logins() {
    let lifetime = Duration::from_secs(3600);
    let fleet = Fleet::start(3, vec![], Answer::Token(lifetime), "").await;
    pass(Duration::from_secs(60)).await;
    let firsts: Vec<Duration> = fleet
        .logins
        .values()
        .map(|login| {
            let calls = login.calls();
            assert_eq!(calls.len(), 1);
            calls[0]
        })
        .collect();
    // New timing: refresh at exactly half the lifetime. The restarted tasks reuse their tokens
    // from the state files, and then follow the new timing.
    fleet.reconfigure("refresh_at = 0.5\nrefresh_jitter = 0.0");
    pass(Duration::from_secs(60)).await;
    for login in fleet.logins.values() {
        assert_eq!(login.calls().len(), 1, "a restart logged in");
    }
    pass(lifetime / 2).await;
    for (login, first) in fleet.logins.values().zip(firsts) {
        let calls = login.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        let gap = calls[1] - first;
        assert!(
            gap.abs_diff(lifetime / 2) < Duration::from_millis(10),
            "refreshed {gap:?} after the first login, not at half the lifetime: the new timing was not applied"
        );
    }
    fleet.stop().await;
}

/// A login that takes a long (virtual) time and lets the test read how many run at once.
struct Gauge {
    clock: Arc<TestClock>,
    in_flight: AtomicUsize,
}

impl Authenticator for Gauge {
    fn login<'a>(&'a self, _refresh_token: Option<&'a Secret>) -> LoginFuture<'a> {
        Box::pin(async move {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(100)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let wall = self.clock.wall();
            Ok(LoginOutcome {
                token: Token::new(
                    Secret::new("gauge-token".into()),
                    wall,
                    wall + Duration::from_secs(86_400),
                )
                .unwrap(),
                refresh_token: None,
                expiry_source: crate::expiry::Source::ExpiresIn,
                clamped: false,
                refreshed: false,
                latency: Duration::from_secs(100),
            })
        })
    }
}

#[tokio::test(start_paused = true)]
async fn the_login_limit_shrinks_and_grows_on_reload_while_logins_hold_permits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let config = dir.path().join("config.toml");
    let write = |limit: usize| {
        let mut text = format!(
            "[daemon]\nwatch = false\nstartup_spread = \"1ms\"\nmax_concurrent_logins = {limit}\nstate_dir = \"{}\"\n",
            dir.path().join("state").display()
        );
        for index in 0..12 {
            text += &format!(
                "[accounts.a{index}]\npreset = \"oauth2\"\ntoken_url = \"https://idp.example/t\"\nclient_id = \"i\"\nclient_secret = {{ env = \"HOME\" }}\n[[accounts.a{index}.outputs]]\npath = \"{}/a{index}.token\"\n",
                dir.path().join("out").display()
            );
        }
        std::fs::write(&config, text).unwrap();
    };
    write(4);
    let clock = test_clock();
    let gauge = Arc::new(Gauge {
        clock: Arc::clone(&clock),
        in_flight: AtomicUsize::new(0),
    });
    let factory = same_login(Arc::clone(&gauge) as Arc<dyn Authenticator>);
    let (control, daemon) = spawn_run(config.clone(), &clock, factory);
    let in_flight = || gauge.in_flight.load(Ordering::SeqCst);
    pass(Duration::from_secs(10)).await;
    assert_eq!(in_flight(), 4);
    // Shrink while all four permits are held: the running logins finish, and only two follow.
    write(2);
    control.reload();
    pass(Duration::from_secs(10)).await;
    assert_eq!(in_flight(), 4, "running logins are not cut short");
    pass(Duration::from_secs(100)).await;
    assert_eq!(in_flight(), 2, "the smaller limit did not apply");
    // Grow while two are held: four more start at once.
    write(6);
    control.reload();
    pass(Duration::from_secs(1)).await;
    assert_eq!(in_flight(), 6, "the larger limit did not apply");
    control.stop();
    assert_eq!(daemon.await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_state_file_of_another_version_is_ignored_and_replaced() {
    let harness = Harness::start(vec![], Answer::Token(Duration::from_secs(3600)), "").await;
    pass(Duration::from_secs(10)).await;
    let (_, dir, first, clock) = harness.stop().await;
    assert_eq!(first.calls().len(), 1);
    let state = dir.path().join("state/a.state");
    // What version 1 wrote: unsigned, with a token that would still be valid.
    let old = format!(
        r#"{{"version":1,"account":"a","fingerprint":"0123456789abcdef","saved_at":"{now}","parked":false,"obtained_at":"{now}","expires_at":"2099-01-01T00:00:00Z","token":"version-one-token"}}"#,
        now = clock.wall()
    );
    std::fs::write(&state, old).unwrap();
    let second = Scripted::new(&clock, vec![], Answer::Token(Duration::from_secs(3600)));
    let harness = Harness::start_in(dir, clock, Arc::clone(&second), "").await;
    pass(Duration::from_secs(5)).await;
    assert_eq!(second.calls().len(), 1, "the old state file was trusted");
    assert_eq!(harness.read(), second.last_token());
    let text = std::fs::read_to_string(harness.dir.path().join("state/a.state")).unwrap();
    assert!(text.contains("\"version\":2"), "{text}");
    harness.stop().await;
}
