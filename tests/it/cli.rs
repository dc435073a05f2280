//! The command line: `check`'s plan, `token`, `--version`, exit codes, the demo, config lookup.

use tokenkeeper::demo::endpoint::Credentials;

use crate::support::{ApinizerSetup, apinizer_setup, tokenkeeper};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_the_plan_without_network_or_secrets() {
    let scratch = tempfile::tempdir().unwrap();
    let credentials = Credentials::demo();
    // Port 9 on loopback: nothing answers there, and `check` must not try.
    let dir = scratch.path().join("demo");
    let config = tokenkeeper::demo::prepare(&dir, "http://127.0.0.1:9", &credentials).unwrap();
    let run = tokenkeeper(&["check", "--config", config.to_str().unwrap()], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let plan = &run.stdout;
    for text in [
        "valid, 6 accounts",
        "account panaya (preset panaya",
        "POST http://127.0.0.1:9/api/accesstoken",
        "fixed lifetime 2m",
        "timestamp at /valid_until",
        "the JWT exp claim",
        "expires_in seconds at /response/expires",
        "Authorization: <token> (no scheme)",
        "basic auth (client_secret_basic)",
        "oauth2.json  json  mode 0640",
        "env PATCHWORKS_TOKEN",
        "secrets/apinizer-password",
    ] {
        if text == "expires_in seconds at /response/expires" {
            // ONLYOFFICE's expiry is a timestamp, not seconds.
            assert!(plan.contains("timestamp at /response/expires"), "{plan}");
            continue;
        }
        assert!(
            plan.contains(text),
            "{text:?} missing from the plan:\n{plan}"
        );
    }
    for secret in [
        &credentials.apinizer_client_secret,
        &credentials.panaya_token,
    ] {
        assert!(!plan.contains(secret.as_str()));
    }

    // A missing secret file is reported by check with its key, and exits 3.
    std::fs::remove_file(dir.join("secrets/apinizer-password")).unwrap();
    let run = tokenkeeper(&["check", "--config", config.to_str().unwrap()], &[]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("accounts.apinizer.client_secret"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("apinizer-password"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_prints_a_live_token_and_config_comes_from_the_environment() {
    let ApinizerSetup {
        endpoint,
        secret,
        output,
        config,
        scratch: _scratch,
    } = apinizer_setup("never-written.token", "").await;
    let run = tokenkeeper(
        &["token", "apinizer"],
        &[("TOKENKEEPER_CONFIG", config.as_str())],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let token = run.stdout.strip_suffix('\n').expect("one line");
    assert!(endpoint.is_live(token));
    assert!(!output.exists(), "token must not write outputs");

    let run = tokenkeeper(&["token", "nobody", "--config", &config], &[]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("nobody") && run.stderr.contains("apinizer"),
        "{}",
        run.stderr
    );

    // A wrong secret is rejected: exit 1, classified.
    std::fs::write(&secret, "wrong-secret\n").unwrap();
    let run = tokenkeeper(&["token", "apinizer", "--config", &config], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("credentials rejected"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
    endpoint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_fails_clearly_when_the_output_directory_is_missing() {
    let ApinizerSetup {
        endpoint,
        config,
        scratch: _scratch,
        ..
    } = apinizer_setup("no-such-dir/apinizer.token", "").await;
    let run = tokenkeeper(&["once", "--config", &config], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("no-such-dir"), "{}", run.stderr);
    endpoint.shutdown().await;
}

/// A RUST_LOG that does not parse (a typo'd level) logs at info, not at errors only, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparsable_rust_log_falls_back_to_info() {
    let ApinizerSetup {
        endpoint,
        config,
        scratch: _scratch,
        ..
    } = apinizer_setup("apinizer.token", "").await;
    let run = tokenkeeper(
        &["once", "--config", &config],
        &[("RUST_LOG", "tokenkeeper=verbose")],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("RUST_LOG does not parse"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(" INFO "), "{}", run.stderr);
    // A valid one is obeyed: warnings only, so no info line.
    let run = tokenkeeper(&["once", "--config", &config], &[("RUST_LOG", "warn")]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains(" INFO "), "{}", run.stderr);
    endpoint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_help_and_usage_errors() {
    let run = tokenkeeper(&["--version"], &[]).await;
    assert_eq!(run.code, 0);
    assert_eq!(
        run.stdout.trim(),
        format!("tokenkeeper {}", env!("CARGO_PKG_VERSION"))
    );
    let run = tokenkeeper(&["--help"], &[]).await;
    assert_eq!(run.code, 0);
    for text in [
        "check",
        "once",
        "token",
        "demo",
        "Exit codes",
        "TOKENKEEPER_CONFIG",
    ] {
        assert!(run.stdout.contains(text), "{text} missing from --help");
    }
    let run = tokenkeeper(&["frobnicate"], &[]).await;
    assert_eq!(run.code, 2);
    let run = tokenkeeper(&["check", "--config", "/nonexistent/tokenkeeper.toml"], &[]).await;
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.contains("/nonexistent/tokenkeeper.toml"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_writes_real_token_files() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("demo");
    let run = tokenkeeper(&["demo", "--once", "--dir", dir.to_str().unwrap()], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains(&dir.join("tokens").display().to_string()),
        "{}",
        run.stdout
    );
    let tokens = dir.join("tokens");
    let mut names: Vec<String> = std::fs::read_dir(&tokens)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "apinizer.header",
            "oauth2.json",
            "oauth2.token",
            "onlyoffice.header",
            "panaya.token",
            "papaya.json",
            "patchworks.env",
        ]
    );
    for name in &names {
        let size = std::fs::metadata(tokens.join(name)).unwrap().len();
        assert!(size > 10, "{name} is too small");
    }
    // An existing directory is never overwritten.
    let run = tokenkeeper(&["demo", "--once", "--dir", dir.to_str().unwrap()], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&dir.display().to_string()),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn fleet_key_prints_a_fresh_key_that_loads() {
    use base64::Engine as _;
    let scratch = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    for _ in 0..2 {
        // No config is needed (none exists at the default path's stand-in either).
        let run = tokenkeeper(
            &["--config", "/nonexistent/tokenkeeper.toml", "fleet-key"],
            &[],
        )
        .await;
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stderr.is_empty(), "{run:?}");
        let text = run.stdout.clone();
        assert!(text.ends_with('\n') && text.trim().len() == 44, "{text:?}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .expect("Base64");
        assert_eq!(bytes.len(), 32);
        let path = scratch.path().join(format!("key{}", keys.len()));
        std::fs::write(&path, &text).unwrap();
        let key = tokenkeeper::fleet::seal::FleetKey::load(&path).expect("the key loads");
        keys.push((text, key.fingerprint().to_string()));
    }
    assert_ne!(keys[0].0, keys[1].0, "two runs printed the same key");
    assert_ne!(keys[0].1, keys[1].1);
}
