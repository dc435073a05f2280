//! Canary secrets: with trace logging on, no secret and no token appears in anything the binary
//! prints, on success, on failure, or in `check`'s plan.

use tokenkeeper::demo::endpoint::{Credentials, EndpointOptions, Fault, TokenEndpoint};

use crate::support::{tokenkeeper, write_config, write_secret};

fn canary_credentials() -> Credentials {
    Credentials {
        panaya_username: "canary-user-p4n4y4@example.com".to_string(),
        panaya_token: "CANARY-panaya-token-8d1e".to_string(),
        papaya_api_key: "CANARY-papaya-key-5a9c".to_string(),
        papaya_client_secret: "CANARY-papaya-secret-77f0".to_string(),
        apinizer_client_id: "canary-apinizer-id".to_string(),
        apinizer_client_secret: "CANARY-apinizer-secret-c2b4".to_string(),
        patchworks_email: "canary-pw@example.com".to_string(),
        patchworks_password: "CANARY-patchworks-pass-913d".to_string(),
        onlyoffice_username: "canary-office".to_string(),
        onlyoffice_password: "CANARY-office-pass-04aa".to_string(),
        oauth2_client_id: "canary-client".to_string(),
        oauth2_client_secret: "CANARY-oauth2:sec%ret+é-6b21".to_string(),
    }
}

fn secrets_of(credentials: &Credentials) -> Vec<String> {
    vec![
        credentials.panaya_token.clone(),
        credentials.papaya_api_key.clone(),
        credentials.papaya_client_secret.clone(),
        credentials.apinizer_client_secret.clone(),
        credentials.patchworks_password.clone(),
        credentials.onlyoffice_password.clone(),
        credentials.oauth2_client_secret.clone(),
        // The encoded forms that go on the wire must not leak either.
        url::form_urlencoded::byte_serialize(credentials.oauth2_client_secret.as_bytes()).collect(),
    ]
}

fn assert_clean(what: &str, text: &str, needles: &[String]) {
    for needle in needles {
        assert!(
            !text.contains(needle.as_str()),
            "{what} printed a secret or token ({needle})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_in_any_output_at_trace_level() {
    let credentials = canary_credentials();
    let endpoint = TokenEndpoint::start(EndpointOptions {
        credentials: credentials.clone(),
        issue_refresh_tokens: true,
        ..EndpointOptions::default()
    })
    .await
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("demo");
    let config = tokenkeeper::demo::prepare(&dir, &endpoint.base_url(), &credentials).unwrap();
    let config = config.to_str().unwrap().to_string();
    let trace = [("RUST_LOG", "trace")];
    let mut needles = secrets_of(&credentials);

    let check = tokenkeeper(&["check", "--config", &config], &trace).await;
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check.stdout.contains("account apinizer"),
        "{}",
        check.stdout
    );
    let once = tokenkeeper(&["once", "--config", &config], &trace).await;
    assert_eq!(once.code, 0, "{once:?}");
    assert!(once.stderr.contains("TRACE"), "trace logging was not on");
    let json_logs = tokenkeeper(
        &["once", "--log-format", "json", "--config", &config],
        &trace,
    )
    .await;
    assert_eq!(json_logs.code, 0, "{json_logs:?}");
    let token = tokenkeeper(&["token", "apinizer", "--config", &config], &trace).await;
    assert_eq!(token.code, 0, "{token:?}");
    let printed = token.stdout.trim().to_string();
    assert!(endpoint.is_live(&printed), "token printed a live token");

    // Every token issued during the runs is a canary too.
    for entry in std::fs::read_dir(dir.join("tokens")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for word in text.split(|character: char| "\n \"=,:{}".contains(character)) {
            if word.len() >= 20 && endpoint.is_live(word) {
                needles.push(word.to_string());
            }
        }
    }
    needles.push(printed);
    assert!(
        needles.len() > 10,
        "found too few tokens to make the check meaningful"
    );

    // Failures, one request each: rejected credentials whose error page echoes what was sent,
    // and a malformed token.
    endpoint.push_fault(Fault::Status {
        status: 401,
        content_type: "text/html".to_string(),
        body: format!(
            "<p>login failed for {} with secret {}</p>",
            credentials.apinizer_client_id, credentials.apinizer_client_secret
        ),
        headers: Vec::new(),
    });
    let rejected = tokenkeeper(&["token", "apinizer", "--config", &config], &trace).await;
    assert_eq!(rejected.code, 1, "{rejected:?}");
    assert!(
        rejected
            .stderr
            .contains(tokenkeeper::login::scrub::WITHHELD),
        "{}",
        rejected.stderr
    );
    endpoint.push_fault(Fault::Status {
        status: 200,
        content_type: "application/json".to_string(),
        body: r#"{"access_token":"CANARY-token-with space","expires_in":60}"#.to_string(),
        headers: Vec::new(),
    });
    needles.push("CANARY-token-with".to_string());
    let failing = tokenkeeper(&["token", "apinizer", "--config", &config], &trace).await;
    assert_eq!(failing.code, 1, "{failing:?}");
    assert!(failing.stdout.is_empty());
    // A broken success reply that holds a token must not be quoted back either.
    for body in [
        r#"{"access_token":"CANARY-leaky-token-5d2e9a","expires_in":3600"#,
        r#"{"access_token":"CANARY-leaky-token-5d2e9a","expires_in":3600} trailing"#,
    ] {
        endpoint.push_fault(Fault::Status {
            status: 200,
            content_type: "application/json".to_string(),
            body: body.to_string(),
            headers: Vec::new(),
        });
        let broken = tokenkeeper(&["token", "apinizer", "--config", &config], &trace).await;
        assert_eq!(broken.code, 1, "{broken:?}");
        assert!(
            broken.stderr.contains("not valid JSON"),
            "{}",
            broken.stderr
        );
        assert_clean(
            "broken reply",
            &broken.all_output(),
            &["CANARY-leaky-token".to_string()],
        );
    }

    for (what, run) in [
        ("check", &check),
        ("once", &once),
        ("once --log-format json", &json_logs),
        ("rejected token", &rejected),
        ("failing token", &failing),
    ] {
        assert_clean(what, &run.all_output(), &needles);
    }
    // `token` prints its token on stdout by design; its log must still be clean.
    assert_clean("token (stderr)", &token.stderr, &needles);
    endpoint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literal_secret_in_readable_config_is_warned_about_without_its_value() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = tempfile::tempdir().unwrap();
    let secret = "CANARY-literal-9f9f";
    let config = write_config(
        scratch.path(),
        &format!(
            r#"
[accounts.idp]
preset = "oauth2"
token_url = "https://idp.example/token"
client_id = "tokenkeeper"
client_secret = "{secret}"
[[accounts.idp.outputs]]
path = "/run/tokenkeeper/idp.token"
"#
        ),
    );
    let _ = write_secret(scratch.path(), "unused", "x");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = tokenkeeper(&["check", "--config", &config], &[("RUST_LOG", "trace")]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("accounts.idp.client_secret") && run.stderr.contains("can read"),
        "{}",
        run.stderr
    );
    assert!(!run.all_output().contains(secret));

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = tokenkeeper(&["check", "--config", &config], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_logs_no_secret_or_token_at_trace_level_in_text_or_json() {
    let credentials = canary_credentials();
    let endpoint = TokenEndpoint::start(EndpointOptions {
        credentials: credentials.clone(),
        lifetime: std::time::Duration::from_secs(2),
        ..EndpointOptions::default()
    })
    .await
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("demo");
    let config = tokenkeeper::demo::prepare(&dir, &endpoint.base_url(), &credentials).unwrap();
    // Two-second tokens (Papaya's minute-precision expiry cannot go that short: drop it).
    let text = std::fs::read_to_string(&config).unwrap();
    let start = text.find("[accounts.papaya]").unwrap();
    let end = text.find("[accounts.apinizer]").unwrap();
    let text = format!("{}{}", &text[..start], &text[end..])
        .replace("lifetime = \"2m\"", "lifetime = \"2s\"")
        .replace(
            "min_refresh_interval = \"5s\"",
            "min_refresh_interval = \"300ms\"",
        )
        .replace("refresh_margin = \"10s\"", "refresh_margin = \"300ms\"");
    std::fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap().to_string();
    let mut needles = secrets_of(&credentials);
    for (format, marker) in [("text", "TRACE"), ("json", "\"level\":\"TRACE\"")] {
        let mut daemon = crate::support::Daemon::start_with_args(
            &["run", "--log-format", format, "--config", &config],
            scratch.path(),
            &[("RUST_LOG", "trace")],
        );
        // Two-second tokens renew about every second: wait for ten logins, however long a
        // loaded machine takes.
        assert!(
            crate::support::eventually(std::time::Duration::from_secs(60), || daemon
                .log()
                .matches("login succeeded")
                .count()
                >= 10)
            .await,
            "{format}: too few logins: {}",
            daemon.log()
        );
        daemon.signal(rustix::process::Signal::TERM);
        assert_eq!(
            daemon.wait(std::time::Duration::from_secs(5)).await,
            Some(0)
        );
        let log = daemon.log();
        assert!(log.contains(marker), "{format}: trace logging was not on");
        assert!(
            log.matches("login succeeded").count() >= 10,
            "{format}: too few logins"
        );
        for entry in std::fs::read_dir(dir.join("tokens")).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for word in text.split(|character: char| "\n \"=,:{}".contains(character)) {
                if word.len() >= 20 && endpoint.is_live(word) {
                    needles.push(word.to_string());
                }
            }
        }
        assert_clean(&format!("run --log-format {format}"), &log, &needles);
    }
    endpoint.shutdown().await;
}
