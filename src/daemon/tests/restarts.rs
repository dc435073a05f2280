//! Restarts in virtual time: the state file reused, ignored when it does not fit the clock, and
//! a retry delay kept across a crash loop until the secret changes.

use super::*;

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

#[tokio::test(start_paused = true)]
async fn a_saved_token_older_than_the_output_is_not_published_over_it() {
    let harness = Harness::start(vec![], Answer::Token(Duration::from_secs(3600)), "").await;
    pass(Duration::from_secs(10)).await;
    assert!(harness.read().is_some());
    let (_, dir, _, clock) = harness.stop().await;
    // A power loss after the output took a newer token but before the (unsynced) state file
    // did: the output holds a token the state file does not know.
    let output = dir.path().join("out/a.token");
    std::fs::write(&output, "newer-token-from-before-the-crash\n").unwrap();
    let second = Scripted::new(&clock, vec![], Answer::Token(Duration::from_secs(3600)));
    let harness = Harness::start_in(dir, clock, Arc::clone(&second), "").await;
    pass(Duration::from_secs(5)).await;
    assert_eq!(
        second.calls().len(),
        1,
        "a saved token the outputs disagree with must not be reused"
    );
    // The new login's token replaces the one from before the crash.
    assert_eq!(harness.read().as_deref(), Some("token-0"));
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_expired_saved_token_never_removes_a_newer_output() {
    let harness = Harness::start(vec![], Answer::Token(Duration::from_secs(300)), "").await;
    pass(Duration::from_secs(10)).await;
    let (_, dir, _, clock) = harness.stop().await;
    // A power loss left the state file with an older token than the output, and the daemon
    // comes back after that older token expired, with the endpoint failing.
    let output = dir.path().join("out/a.token");
    std::fs::write(&output, "newer-token-from-before-the-crash\n").unwrap();
    pass(Duration::from_secs(400)).await;
    let failing = Scripted::new(&clock, vec![], Answer::Fail(ErrorClass::Transient, None));
    let harness = Harness::start_in(dir, clock, Arc::clone(&failing), "").await;
    pass(Duration::from_secs(1)).await;
    assert_eq!(failing.calls().len(), 1, "the stale state file was trusted");
    assert_eq!(
        harness.read().as_deref(),
        Some("newer-token-from-before-the-crash\n"),
        "the expiry of the older saved token removed the newer output"
    );
    harness.stop().await;
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
