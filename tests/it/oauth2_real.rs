//! The `oauth2` preset against a real OAuth2 server nobody here wrote: the npm package
//! `oidc-provider`, started on loopback. The test skips only when Node is absent outside CI.

use crate::support::oidc::{
    BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider, POST_CLIENT_ID, POST_CLIENT_SECRET,
};
use crate::support::{tokenkeeper, write_config, write_secret};

fn oauth2_config(
    token_url: &str,
    id: &str,
    secret_file: &std::path::Path,
    method: &str,
    out: &std::path::Path,
) -> String {
    format!(
        r#"
[accounts.idp]
preset = "oauth2"
token_url = "{token_url}"
client_id = "{id}"
client_secret = {{ file = "{secret}" }}
auth_method = "{method}"
[[accounts.idp.outputs]]
path = "{out}/idp.token"
[[accounts.idp.outputs]]
path = "{out}/idp.json"
format = "json"
"#,
        secret = secret_file.display(),
        out = out.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_preset_against_oidc_provider() {
    let Some(provider) = OidcProvider::start(300) else {
        return;
    };
    let token_url = provider.token_endpoint();
    for (id, secret, method) in [
        (BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, "basic"),
        (POST_CLIENT_ID, POST_CLIENT_SECRET, "post"),
    ] {
        let scratch = tempfile::tempdir().unwrap();
        let secret_file = write_secret(scratch.path(), "secret", secret);
        let config = write_config(
            scratch.path(),
            &oauth2_config(&token_url, id, &secret_file, method, scratch.path()),
        );
        let started = jiff::Timestamp::now();
        let run = tokenkeeper(&["once", "--config", &config], &[]).await;
        assert_eq!(run.code, 0, "{method}: {run:?}");
        let token = std::fs::read_to_string(scratch.path().join("idp.token")).unwrap();
        assert!(
            provider.introspect(&token).await,
            "{method}: the written token is not active"
        );
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(scratch.path().join("idp.json")).unwrap(),
        )
        .unwrap();
        let expires_at: jiff::Timestamp = json["expires_at"].as_str().unwrap().parse().unwrap();
        let lifetime = expires_at.duration_since(started).as_secs();
        assert!(
            (295..=301).contains(&lifetime),
            "{method}: lifetime {lifetime}s, configured 300s"
        );

        // A wrong secret is rejected by the real server and classified as such.
        std::fs::write(&secret_file, "definitely-wrong\n").unwrap();
        let run = tokenkeeper(&["once", "--config", &config], &[]).await;
        assert_eq!(run.code, 1, "{method}: {run:?}");
        assert!(
            run.stderr.contains("credentials rejected"),
            "{method}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("invalid_client"),
            "{method}: {}",
            run.stderr
        );
        assert!(
            !run.all_output().contains(secret),
            "{method}: secret leaked"
        );
        // The good token stays in place.
        assert_eq!(
            std::fs::read_to_string(scratch.path().join("idp.token")).unwrap(),
            token
        );
    }
    assert!(!provider.introspect("not-a-token").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_keeps_an_oidc_provider_token_active() {
    let ttl = 6;
    let Some(provider) = OidcProvider::start(ttl) else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let secret_file = write_secret(scratch.path(), "secret", BASIC_CLIENT_SECRET);
    let config = write_config(
        scratch.path(),
        &format!(
            "[daemon]\nrefresh_at = 0.5\nrefresh_margin = \"1s\"\nmin_refresh_interval = \"1s\"\nretry_base = \"200ms\"\nretry_cap = \"1s\"\n{}",
            oauth2_config(
                &provider.token_endpoint(),
                BASIC_CLIENT_ID,
                &secret_file,
                "basic",
                scratch.path()
            )
        ),
    );
    let mut daemon = crate::support::Daemon::start(&config, scratch.path(), &[]);
    let token_file = scratch.path().join("idp.token");
    assert!(
        crate::support::eventually(std::time::Duration::from_secs(10), || token_file.exists())
            .await,
        "{}",
        daemon.log()
    );
    let started = std::time::Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    let mut checks = 0;
    while started.elapsed() < std::time::Duration::from_secs(ttl * 3 + 2) {
        let token = std::fs::read_to_string(&token_file).expect("the token file is always there");
        assert!(
            provider.introspect(&token).await,
            "an inactive token was on disk after {:?}; log:\n{}",
            started.elapsed(),
            daemon.log()
        );
        seen.insert(token);
        checks += 1;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    daemon.signal(rustix::process::Signal::TERM);
    assert_eq!(
        daemon.wait(std::time::Duration::from_secs(5)).await,
        Some(0)
    );
    assert!(checks >= 25, "only {checks} checks");
    assert!(
        seen.len() >= 5,
        "only {} distinct tokens over 3 lifetimes",
        seen.len()
    );
}
