//! HTTP behaviour of a login: the OAuth2 refresh_token grant, timeouts, and proxies used only when
//! the config asks for them.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokenkeeper::config::{self, SecretCheck};
use tokenkeeper::demo::endpoint::{Credentials, EndpointOptions, Fault, Route, TokenEndpoint};
use tokenkeeper::login::Login;

use crate::support::{apinizer_config, tokenkeeper, trap, write_config, write_secret};

fn oauth2_login(base: &str, secret: &std::path::Path, out: &std::path::Path) -> Login {
    let credentials = Credentials::demo();
    let text = format!(
        r#"
[accounts.idp]
preset = "oauth2"
token_url = "{base}/oauth2/token"
client_id = "{id}"
client_secret = {{ file = "{secret}" }}
[[accounts.idp.outputs]]
path = "{out}/idp.token"
"#,
        id = credentials.oauth2_client_id,
        secret = secret.display(),
        out = out.display(),
    );
    let config = config::parse(
        &text,
        std::path::Path::new("t.toml"),
        SecretCheck::Skip,
        false,
    )
    .expect("valid config");
    let account = &config.accounts["idp"];
    Login::for_account(account, &tokenkeeper::login::http::Clients::new()).expect("login")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_uses_the_refresh_token_grant_and_falls_back_when_it_is_refused() {
    let endpoint = TokenEndpoint::start(EndpointOptions {
        issue_refresh_tokens: true,
        ..EndpointOptions::default()
    })
    .await
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let secret = write_secret(
        scratch.path(),
        "secret",
        &Credentials::demo().oauth2_client_secret,
    );
    let login = oauth2_login(&endpoint.base_url(), &secret, scratch.path());

    let first = login.login(None).await.expect("client credentials");
    assert!(!first.refreshed);
    let refresh = first
        .refresh_token
        .clone()
        .expect("the endpoint issued a refresh token");
    let second = login.login(Some(&refresh)).await.expect("refresh grant");
    assert!(second.refreshed);
    assert!(endpoint.is_live(second.token.expose()));
    let grants: Vec<Option<String>> = endpoint
        .requests()
        .iter()
        .map(|request| request.form_value("grant_type"))
        .collect();
    assert_eq!(
        grants,
        vec![
            Some("client_credentials".to_string()),
            Some("refresh_token".to_string())
        ]
    );
    // The endpoint rotates refresh tokens: the first one is now spent. The login notices the
    // refusal and falls back to client credentials in the same call.
    let third = login.login(Some(&refresh)).await.expect("fallback");
    assert!(!third.refreshed);
    assert_eq!(endpoint.requests().len(), 4);
    assert_eq!(endpoint.issued(Route::OAuth2), 3);
    assert!(
        !format!("{first:?}").contains(refresh.expose()),
        "Debug shows the refresh token"
    );
    endpoint.shutdown().await;
}

/// RFC 6749 §6: a refresh reply may leave out `refresh_token`; the one presented then stays in
/// use, instead of every other login falling back to the client-credentials grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_reply_without_a_refresh_token_keeps_the_one_presented() {
    let endpoint = TokenEndpoint::start(EndpointOptions {
        issue_refresh_tokens: true,
        ..EndpointOptions::default()
    })
    .await
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let secret = write_secret(
        scratch.path(),
        "secret",
        &Credentials::demo().oauth2_client_secret,
    );
    let login = oauth2_login(&endpoint.base_url(), &secret, scratch.path());
    let first = login.login(None).await.expect("client credentials");
    let refresh = first.refresh_token.clone().expect("a refresh token");
    endpoint.push_fault(Fault::Status {
        status: 200,
        content_type: "application/json".to_string(),
        body: r#"{"access_token":"refreshed-without-rotation-0123","token_type":"Bearer","expires_in":3600}"#.to_string(),
        headers: Vec::new(),
    });
    let second = login.login(Some(&refresh)).await.expect("refresh grant");
    assert!(second.refreshed);
    assert_eq!(second.token.expose(), "refreshed-without-rotation-0123");
    let kept = second
        .refresh_token
        .clone()
        .expect("the presented one is kept");
    assert_eq!(kept.expose(), refresh.expose());
    // The endpoint never saw that refresh token spent, so the kept one works.
    let third = login.login(Some(&kept)).await.expect("refresh grant again");
    assert!(third.refreshed, "fell back to client credentials");
    assert!(endpoint.is_live(third.token.expose()));
    endpoint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out_as_a_temporary_failure() {
    // Accepts connections and never answers.
    let (silent, connections, _) = trap().await;
    let scratch = tempfile::tempdir().unwrap();
    let secret = write_secret(scratch.path(), "secret", "some-secret-value");
    let output = scratch.path().join("t.token");
    let config = format!(
        "[defaults]\ntimeout = \"1s\"\nconnect_timeout = \"1s\"\n{}",
        apinizer_config(&silent, &secret, &output)
    );
    let config = write_config(scratch.path(), &config);
    let started = Instant::now();
    let run = tokenkeeper(&["once", "--config", &config], &[]).await;
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("temporary failure") && run.stderr.contains("timed out"),
        "{}",
        run.stderr
    );
    // Without the timeout the silent server would hold the login until the test's own 60 s
    // limit; 10 s leaves a loaded machine room to start the process.
    assert!(
        took < Duration::from_secs(10),
        "the 1 s timeout took {took:?}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    assert!(!output.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_variables_are_ignored_unless_the_config_asks_for_a_proxy() {
    let endpoint = TokenEndpoint::start(EndpointOptions::default())
        .await
        .unwrap();
    let (proxy, proxy_connections, _) = trap().await;
    let scratch = tempfile::tempdir().unwrap();
    let secret = write_secret(
        scratch.path(),
        "secret",
        &Credentials::demo().apinizer_client_secret,
    );
    let output = scratch.path().join("t.token");
    let account = apinizer_config(&endpoint.base_url(), &secret, &output);
    let proxy_env = [
        ("HTTP_PROXY", proxy.as_str()),
        ("HTTPS_PROXY", proxy.as_str()),
        ("ALL_PROXY", proxy.as_str()),
        ("http_proxy", proxy.as_str()),
        ("NO_PROXY", ""),
    ];

    let config = write_config(scratch.path(), &account);
    let run = tokenkeeper(&["once", "--config", &config], &proxy_env).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        proxy_connections.load(Ordering::SeqCst),
        0,
        "the environment's proxy was used"
    );

    // An explicit proxy is used (the trap never answers, so the login times out).
    let explicit = format!("[defaults]\ntimeout = \"1s\"\nproxy = \"{proxy}\"\n{account}");
    let config = write_config(scratch.path(), &explicit);
    let run = tokenkeeper(&["once", "--config", &config], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        proxy_connections.load(Ordering::SeqCst),
        1,
        "the configured proxy was not used"
    );
    assert!(run.stderr.contains("temporary failure"), "{}", run.stderr);

    // `proxy = "env"` opts in to the environment's proxy variables.
    let from_env = format!("[defaults]\ntimeout = \"1s\"\nproxy = \"env\"\n{account}");
    let config = write_config(scratch.path(), &from_env);
    let run = tokenkeeper(&["once", "--config", &config], &proxy_env).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        proxy_connections.load(Ordering::SeqCst),
        2,
        "proxy = \"env\" ignored the variables"
    );
    endpoint.shutdown().await;
}

/// A `Retry-After` date is on the server's clock: measured from the reply's `Date`, a server ten
/// minutes ahead that asks for a minute gets a minute, not eleven.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_date_is_measured_from_the_servers_date() {
    let endpoint = TokenEndpoint::start(EndpointOptions::default())
        .await
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let secret = write_secret(
        scratch.path(),
        "secret",
        &Credentials::demo().oauth2_client_secret,
    );
    let login = oauth2_login(&endpoint.base_url(), &secret, scratch.path());
    let printer = jiff::fmt::rfc2822::DateTimePrinter::new();
    let http_date = |at: jiff::Timestamp| printer.timestamp_to_rfc9110_string(&at).unwrap();
    let server_now = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(10);
    for (server_date, expected) in [
        // Ten minutes ahead, asking for 60 s.
        (Some(server_now), 60..=61),
        // No Date: the date is taken as on our clock, eleven minutes away.
        (None, 655..=660),
    ] {
        let mut headers = vec![(
            "retry-after".to_string(),
            http_date(server_now + jiff::SignedDuration::from_secs(60)),
        )];
        if let Some(date) = server_date {
            headers.push(("date".to_string(), http_date(date)));
        }
        endpoint.push_fault(Fault::Status {
            status: 503,
            content_type: "text/plain".to_string(),
            body: "busy".to_string(),
            headers,
        });
        let error = login.login(None).await.expect_err("a 503");
        let wait = error.retry_after.expect("a Retry-After").as_secs();
        assert!(
            expected.contains(&wait),
            "Date {server_date:?}: waits {wait} s, expected {expected:?}"
        );
    }
    endpoint.shutdown().await;
}
