//! Accounts with several outputs: one failing output does not keep the others from the new
//! token, and a token one output cannot take is written to none.

use super::*;

#[tokio::test(start_paused = true)]
async fn one_failing_output_does_not_keep_the_new_token_from_the_others() {
    let dir = tempfile::tempdir().unwrap();
    // A non-empty directory at b's path makes every rename over it fail.
    std::fs::create_dir_all(dir.path().join("out/b.token/blocker")).unwrap();
    let clock = test_clock();
    let scripted = Scripted::new(&clock, vec![], Answer::Token(Duration::from_secs(3600)));
    let second = format!(
        "[[accounts.a.outputs]]\npath = \"{}/out/b.token\"\nformat = \"header\"\n",
        dir.path().display()
    );
    let harness = Harness::start_with_output(dir, clock, scripted, "", &second).await;
    pass(Duration::from_secs(120)).await;
    let token = harness.scripted.last_token().unwrap();
    assert_eq!(
        harness.read().as_deref(),
        Some(token.as_str()),
        "a has the token"
    );
    assert_eq!(
        harness.scripted.calls().len(),
        1,
        "retrying b's write must not log in"
    );
    let blocked = harness.dir.path().join("out/b.token");
    std::fs::remove_dir_all(&blocked).unwrap();
    // Write retries back off to at most 30 s.
    pass(Duration::from_secs(31)).await;
    assert_eq!(
        std::fs::read_to_string(&blocked).unwrap(),
        format!("Authorization: Bearer {token}\n")
    );
    assert_eq!(harness.read().as_deref(), Some(token.as_str()));
    assert_eq!(harness.scripted.calls().len(), 1);
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_token_one_output_cannot_take_is_written_to_none() {
    let dir = tempfile::tempdir().unwrap();
    let clock = test_clock();
    let scripted = unwritable_refresh(&clock);
    let env_output = format!(
        "[[accounts.a.outputs]]\npath = \"{}/out/a.env\"\nformat = \"env\"\n",
        dir.path().display()
    );
    let harness = Harness::start_with_output(dir, clock, scripted, "", &env_output).await;
    let env_file = harness.dir.path().join("out/a.env");
    pass(Duration::from_secs(10)).await;
    assert_eq!(harness.read().as_deref(), Some("first-token"));
    // The refresh brings the unwritable token: the raw output, listed first, must not take it
    // either, or the two outputs would disagree.
    pass(Duration::from_secs(280)).await;
    assert!(harness.scripted.calls().len() >= 2, "the refresh happened");
    assert_eq!(harness.read().as_deref(), Some("first-token"));
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        "A_TOKEN=first-token\n"
    );
    harness.stop().await;
}

/// A token an output refuses counts as an unusable reply: the account logs in again after a
/// short backoff, instead of retrying a write that can never succeed while its old token runs
/// out.
#[tokio::test(start_paused = true)]
async fn a_refused_token_is_retried_as_a_login() {
    let dir = tempfile::tempdir().unwrap();
    let clock = test_clock();
    let scripted = Scripted::new(
        &clock,
        vec![
            Answer::Named("first-token", Duration::from_secs(300)),
            Answer::Named("second$token", Duration::from_secs(3600)),
        ],
        Answer::Named("third-token", Duration::from_secs(3600)),
    );
    let env_output = format!(
        "[[accounts.a.outputs]]\npath = \"{}/out/a.env\"\nformat = \"env\"\n",
        dir.path().display()
    );
    let harness = Harness::start_with_output(dir, clock, scripted, "", &env_output).await;
    let env_file = harness.dir.path().join("out/a.env");
    // The refresh of the five-minute token comes well before it expires; the refused token is
    // followed by a login seconds later, and both files take its successor.
    pass(Duration::from_secs(290)).await;
    let calls = harness.scripted.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(
        calls[2] - calls[1] <= Duration::from_secs(10),
        "the login after the refused token came {:?} later",
        calls[2] - calls[1]
    );
    assert_eq!(harness.read().as_deref(), Some("third-token"));
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        "A_TOKEN=third-token\n"
    );
    harness.stop().await;
}
