//! The `oauth2` preset's client authentication without a shared secret (`private_key_jwt` and a
//! `client_assertion` file, RFC 7523 §2.2) against the real OAuth2 server `oidc-provider` (npm),
//! which verifies the assertions with public keys it made itself and refuses a reused `jti`.
//! The tests skip only when Node or the npm packages are absent outside CI.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::oidc::{
    JWT_ES256_CLIENT_ID, JWT_ES256_KID, JWT_RS256_CLIENT_ID, JWT_RS256_KID, OidcProvider,
};
use crate::support::{Daemon, Run, eventually, replace_file, tokenkeeper, write_config};

/// Fast renewal for the daemon tests, as in oauth2_real.rs.
const FAST_DAEMON: &str = "[daemon]\nrefresh_at = 0.5\nrefresh_margin = \"1s\"\nmin_refresh_interval = \"1s\"\nretry_base = \"200ms\"\nretry_cap = \"1s\"\n";

/// A one-account `oauth2` config named `jwt` against `token_url`, writing `<out>/jwt.token`;
/// `auth` holds the `auth_method` line and its keys.
fn config(token_url: &str, client_id: &str, auth: &str, out: &Path) -> String {
    format!(
        r#"
[accounts.jwt]
preset = "oauth2"
token_url = "{token_url}"
client_id = "{client_id}"
{auth}
[[accounts.jwt.outputs]]
path = "{out}/jwt.token"
"#,
        out = out.display(),
    )
}

/// The `auth_method = "private_key_jwt"` keys for the key at `key`, with optional
/// `signing_alg` and `key_id`.
fn private_key_jwt(key: &Path, alg: Option<&str>, kid: Option<&str>) -> String {
    let mut auth = format!(
        "auth_method = \"private_key_jwt\"\nprivate_key = {{ file = \"{}\" }}\n",
        key.display()
    );
    if let Some(alg) = alg {
        auth.push_str(&format!("signing_alg = \"{alg}\"\n"));
    }
    if let Some(kid) = kid {
        auth.push_str(&format!("key_id = \"{kid}\"\n"));
    }
    auth
}

/// The `auth_method = "client_assertion"` keys for the assertion file `file`.
fn client_assertion(file: &Path) -> String {
    format!(
        "auth_method = \"client_assertion\"\nclient_assertion = {{ file = \"{}\" }}\n",
        file.display()
    )
}

/// A client assertion for `client_id` to `audience`, signed ES256 with the PKCS#8 PEM key at
/// `key` as another issuer would make it: `iat` and `exp` as given, a `jti` never used before.
fn es256_assertion(key: &Path, client_id: &str, audience: &str, iat: i64, exp: i64) -> String {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        sub: &'a str,
        aud: &'a str,
        iat: i64,
        exp: i64,
        jti: String,
    }
    let pem = std::fs::read(key).expect("read the ES256 key");
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).expect("the server's ES256 key parses");
    let mut jti = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut jti[..]);
    let claims = Claims {
        iss: client_id,
        sub: client_id,
        aud: audience,
        iat,
        exp,
        jti: jti.iter().map(|byte| format!("{byte:02x}")).collect(),
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(JWT_ES256_KID.to_string());
    jsonwebtoken::encode(&header, &claims, &key).expect("sign the test assertion")
}

/// Writes `assertion` to `path` (mode 0600), replacing any earlier one atomically.
fn write_assertion(path: &Path, assertion: &str) {
    use std::os::unix::fs::PermissionsExt;
    replace_file(path, assertion);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod the assertion");
}

/// The lines of a PEM file's Base64 body: what a leaked key would show.
fn pem_body(key: &Path) -> Vec<String> {
    let pem = std::fs::read_to_string(key).expect("read the key");
    let body: Vec<String> = pem
        .lines()
        .filter(|line| !line.starts_with("-----") && !line.is_empty())
        .map(str::to_string)
        .collect();
    assert!(!body.is_empty(), "{} has no PEM body", key.display());
    body
}

/// Asserts that `output` shows none of the key's PEM body, no JWT (every JWT's JOSE header
/// `{"` starts its Base64url with `eyJ`) and none of `secrets`.
fn assert_no_leak(what: &str, output: &str, key: &Path, secrets: &[&str]) {
    for line in pem_body(key) {
        assert!(
            !output.contains(&line),
            "{what}: a line of the private key's PEM body was printed:\n{output}"
        );
    }
    assert!(
        !output.contains("PRIVATE KEY"),
        "{what}: a PEM header was printed:\n{output}"
    );
    assert!(
        !output.contains("eyJ"),
        "{what}: something that looks like a JWT was printed:\n{output}"
    );
    for secret in secrets {
        assert!(
            !output.contains(secret),
            "{what}: a token or assertion was printed:\n{output}"
        );
    }
}

/// Asserts that `token` is live at the server and was issued to `client_id`.
async fn assert_active_for(provider: &OidcProvider, token: &str, client_id: &str, what: &str) {
    let reply = provider.introspection(token).await;
    assert_eq!(
        reply["active"], true,
        "{what}: the written token is not active: {reply}"
    );
    assert_eq!(
        reply["client_id"], client_id,
        "{what}: the token belongs to another client: {reply}"
    );
}

/// The token `once` wrote to `<dir>/jwt.token`, which must exist.
fn written_token(dir: &Path, what: &str, run: &Run) -> String {
    std::fs::read_to_string(dir.join("jwt.token"))
        .unwrap_or_else(|e| panic!("{what}: no token file ({e}); {run:?}"))
}

/// Asserts that `run` failed as credentials rejected with `invalid_client`, wrote no token, and
/// that the server refused the login for `detail` (oidc-provider's reason, which it logs): in the
/// part of its log after the first `log_start` bytes, which were there before the run.
async fn assert_rejected(
    provider: &OidcProvider,
    log_start: usize,
    run: &Run,
    dir: &Path,
    what: &str,
    detail: &str,
) {
    assert_eq!(run.code, 1, "{what}: {run:?}");
    assert!(
        run.stderr.contains("credentials rejected"),
        "{what}: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("invalid_client"),
        "{what}: {}",
        run.stderr
    );
    assert!(
        !dir.join("jwt.token").exists(),
        "{what}: a token file was written"
    );
    let log = provider.settled_log().await;
    assert!(
        log[log_start..].contains(detail),
        "{what}: the server did not refuse for {detail:?}; server log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_logs_in_to_oidc_provider_with_rs256_and_es256() {
    let Some(provider) = OidcProvider::start_with_jwt_keys(300) else {
        return;
    };
    let token_url = provider.token_endpoint();
    let (rs256, es256) = (provider.rs256_key(), provider.es256_key());
    let cases: [(&str, &PathBuf, Option<&str>, Option<&str>); 4] = [
        (
            JWT_RS256_CLIENT_ID,
            &rs256,
            Some("RS256"),
            Some(JWT_RS256_KID),
        ),
        (JWT_RS256_CLIENT_ID, &rs256, None, None),
        (
            JWT_ES256_CLIENT_ID,
            &es256,
            Some("ES256"),
            Some(JWT_ES256_KID),
        ),
        (JWT_ES256_CLIENT_ID, &es256, None, None),
    ];
    let mut tokens = Vec::new();
    for (client_id, key, alg, kid) in cases {
        let what = format!("{client_id} signing_alg {alg:?} key_id {kid:?}");
        let scratch = tempfile::tempdir().unwrap();
        let config = write_config(
            scratch.path(),
            &config(
                &token_url,
                client_id,
                &private_key_jwt(key, alg, kid),
                scratch.path(),
            ),
        );
        let before = OidcProvider::token_requests(&provider.settled_log().await, client_id);
        // One run at debug level: the canary below then covers what the login logs in detail.
        let env: &[(&str, &str)] = if alg.is_none() && client_id == JWT_ES256_CLIENT_ID {
            &[("RUST_LOG", "debug")]
        } else {
            &[]
        };
        let check = tokenkeeper(&["check", "--config", &config], &[]).await;
        assert_eq!(check.code, 0, "{what}: check: {check:?}");
        assert!(
            check.stdout.contains("private_key_jwt")
                && check.stdout.contains(&key.display().to_string()),
            "{what}: check does not show the method and the key's source: {check:?}"
        );
        assert_no_leak(&what, &check.all_output(), key, &[]);
        let run = tokenkeeper(&["once", "--config", &config], env).await;
        assert_eq!(run.code, 0, "{what}: {run:?}");
        let token = written_token(scratch.path(), &what, &run);
        assert_active_for(&provider, &token, client_id, &what).await;
        let log = provider.settled_log().await;
        assert_eq!(
            OidcProvider::token_requests(&log, client_id),
            before + 1,
            "{what}: expected exactly one token request; server log:\n{log}"
        );
        assert_no_leak(&what, &run.all_output(), key, &[&token]);
        tokens.push(token);
    }
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 4, "every login got a token of its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_rejects_a_private_key_jwt_login_with_the_wrong_key_alg_kid_or_a_secret() {
    let Some(provider) = OidcProvider::start_with_jwt_keys(300) else {
        return;
    };
    let token_url = provider.token_endpoint();
    let keys = tempfile::tempdir().unwrap();
    // Keys of the right types that the server has never seen.
    crate::support::pki::openssl(
        keys.path(),
        "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out other-rsa.pem",
    );
    crate::support::pki::openssl(
        keys.path(),
        "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out other-ec.pem",
    );
    let (other_rsa, other_ec) = (
        keys.path().join("other-rsa.pem"),
        keys.path().join("other-ec.pem"),
    );
    let (rs256, es256) = (provider.rs256_key(), provider.es256_key());
    let cases: [(&str, &str, String, &str); 6] = [
        (
            "another RSA key",
            JWT_RS256_CLIENT_ID,
            private_key_jwt(&other_rsa, None, None),
            "signature verification failed",
        ),
        (
            "another RSA key under the registered kid",
            JWT_RS256_CLIENT_ID,
            private_key_jwt(&other_rsa, Some("RS256"), Some(JWT_RS256_KID)),
            "signature verification failed",
        ),
        (
            "another EC key",
            JWT_ES256_CLIENT_ID,
            private_key_jwt(&other_ec, Some("ES256"), Some(JWT_ES256_KID)),
            "signature verification failed",
        ),
        // The right key, so only the header is wrong: proves key_id and signing_alg are sent.
        (
            "the right key under an unknown kid",
            JWT_ES256_CLIENT_ID,
            private_key_jwt(&es256, None, Some("no-such-kid")),
            "no applicable key found",
        ),
        (
            "the right key with an unregistered alg",
            JWT_RS256_CLIENT_ID,
            private_key_jwt(&rs256, Some("PS256"), None),
            "alg mismatch",
        ),
        // A client registered for private_key_jwt must not get in with a secret either.
        (
            "a client secret",
            JWT_RS256_CLIENT_ID,
            "auth_method = \"post\"\nclient_secret = \"definitely-wrong\"\n".to_string(),
            "does not match the registered client authentication method",
        ),
    ];
    for (what, client_id, auth, detail) in cases {
        let scratch = tempfile::tempdir().unwrap();
        let config = write_config(
            scratch.path(),
            &config(&token_url, client_id, &auth, scratch.path()),
        );
        let log_start = provider.settled_log().await.len();
        let run = tokenkeeper(&["once", "--config", &config], &[]).await;
        assert_rejected(&provider, log_start, &run, scratch.path(), what, detail).await;
        for key in [&other_rsa, &other_ec, &rs256, &es256] {
            assert_no_leak(what, &run.all_output(), key, &[]);
        }
    }
    // Nothing that failed minted a token: the server saw no successful token request.
    let log = provider.settled_log().await;
    for client_id in [JWT_RS256_CLIENT_ID, JWT_ES256_CLIENT_ID] {
        assert!(
            !log.contains(&format!(
                "oidc request: token client {client_id} status 200"
            )),
            "a refused login got a token; server log:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_assertion_file_is_sent_as_is_and_its_rotation_used() {
    let Some(provider) = OidcProvider::start_with_jwt_keys(300) else {
        return;
    };
    let token_url = provider.token_endpoint();
    let es256 = provider.es256_key();
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("assertion.jwt");
    let config = write_config(
        scratch.path(),
        &config(
            &token_url,
            JWT_ES256_CLIENT_ID,
            &client_assertion(&file),
            scratch.path(),
        ),
    );
    let now = jiff::Timestamp::now().as_second();

    let first = es256_assertion(&es256, JWT_ES256_CLIENT_ID, &token_url, now, now + 60);
    write_assertion(&file, &first);
    let run = tokenkeeper(&["once", "--config", &config], &[("RUST_LOG", "debug")]).await;
    assert_eq!(run.code, 0, "first assertion: {run:?}");
    let first_token = written_token(scratch.path(), "first assertion", &run);
    assert_active_for(
        &provider,
        &first_token,
        JWT_ES256_CLIENT_ID,
        "first assertion",
    )
    .await;
    assert_no_leak(
        "first assertion",
        &run.all_output(),
        &es256,
        &[&first, &first_token],
    );
    // `check` shows the assertion by its source only.
    let check = tokenkeeper(&["check", "--config", &config], &[]).await;
    assert_eq!(check.code, 0, "check: {check:?}");
    assert!(
        check.stdout.contains("client_assertion") && check.stdout.contains("assertion.jwt"),
        "check does not show the assertion's source: {check:?}"
    );
    assert_no_leak(
        "check",
        &check.all_output(),
        &es256,
        &[&first, &first_token],
    );

    // The issuer rotates the file: the next login reads and sends the new assertion.
    let second = es256_assertion(&es256, JWT_ES256_CLIENT_ID, &token_url, now, now + 60);
    assert_ne!(first, second);
    write_assertion(&file, &second);
    let run = tokenkeeper(&["once", "--config", &config], &[]).await;
    assert_eq!(run.code, 0, "rotated assertion: {run:?}");
    let second_token = written_token(scratch.path(), "rotated assertion", &run);
    assert_ne!(
        first_token, second_token,
        "the rotated login got a new token"
    );
    assert_active_for(
        &provider,
        &second_token,
        JWT_ES256_CLIENT_ID,
        "rotated assertion",
    )
    .await;
    assert_no_leak(
        "rotated assertion",
        &run.all_output(),
        &es256,
        &[&first, &second, &second_token],
    );

    // Not rotated again: the same assertion is sent a second time, and oidc-provider refuses the
    // replay of its jti. This proves the file's bytes are what is sent, not a new signature.
    let run = tokenkeeper(&["once", "--config", &config], &[]).await;
    assert_eq!(run.code, 1, "replayed assertion: {run:?}");
    assert!(
        run.stderr.contains("credentials rejected") && run.stderr.contains("invalid_client"),
        "replayed assertion: {}",
        run.stderr
    );
    let log = provider.settled_log().await;
    assert!(
        log.contains("client assertion tokens must only be used once"),
        "the server did not refuse the replay; server log:\n{log}"
    );
    assert_eq!(
        OidcProvider::token_requests(&log, JWT_ES256_CLIENT_ID),
        3,
        "three logins, three token requests; server log:\n{log}"
    );
    // The good token stays in place.
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("jwt.token")).unwrap(),
        second_token
    );
    assert_no_leak(
        "replayed assertion",
        &run.all_output(),
        &es256,
        &[&first, &second, &second_token],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_client_assertion_file_is_never_sent_and_is_retried_until_renewed() {
    let Some(provider) = OidcProvider::start_with_jwt_keys(300) else {
        return;
    };
    let token_url = provider.token_endpoint();
    let es256 = provider.es256_key();
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("assertion.jwt");
    let config = write_config(
        scratch.path(),
        &format!(
            "{FAST_DAEMON}{}",
            config(
                &token_url,
                JWT_ES256_CLIENT_ID,
                &client_assertion(&file),
                scratch.path()
            )
        ),
    );
    let now = jiff::Timestamp::now().as_second();
    let expired_at = now - 120;
    let expired = es256_assertion(
        &es256,
        JWT_ES256_CLIENT_ID,
        &token_url,
        now - 180,
        expired_at,
    );
    write_assertion(&file, &expired);

    let run = tokenkeeper(&["once", "--config", &config], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    let expected_time = jiff::Timestamp::from_second(expired_at)
        .unwrap()
        .to_string();
    assert!(
        run.stderr.contains(&format!("expired at {expected_time}")),
        "the message does not say when it expired ({expected_time}): {}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&file.display().to_string()),
        "the message does not name the file: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("temporary failure") && !run.stderr.contains("credentials rejected"),
        "an expired assertion is transient, not rejected credentials: {}",
        run.stderr
    );
    assert!(!scratch.path().join("jwt.token").exists());
    assert_no_leak("expired assertion", &run.all_output(), &es256, &[&expired]);
    let log = provider.settled_log().await;
    assert_eq!(
        OidcProvider::token_requests(&log, JWT_ES256_CLIENT_ID),
        0,
        "the expired assertion reached the server; server log:\n{log}"
    );

    // The daemon keeps retrying the transient failure, still without sending anything, and logs
    // in as soon as the issuer renews the file.
    let mut daemon = Daemon::start(&config, scratch.path(), &[]);
    assert!(
        eventually(Duration::from_secs(10), || daemon
            .log()
            .contains("expired at"))
        .await,
        "{}",
        daemon.log()
    );
    let log = provider.settled_log().await;
    assert_eq!(
        OidcProvider::token_requests(&log, JWT_ES256_CLIENT_ID),
        0,
        "the daemon sent the expired assertion; server log:\n{log}"
    );
    let now = jiff::Timestamp::now().as_second();
    let renewed = es256_assertion(&es256, JWT_ES256_CLIENT_ID, &token_url, now, now + 60);
    write_assertion(&file, &renewed);
    let token_file = scratch.path().join("jwt.token");
    assert!(
        eventually(Duration::from_secs(10), || token_file.exists()).await,
        "the daemon did not log in with the renewed assertion; log:\n{}\nserver log:\n{}",
        daemon.log(),
        provider.log()
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_active_for(&provider, &token, JWT_ES256_CLIENT_ID, "renewed assertion").await;
    daemon.signal(rustix::process::Signal::TERM);
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, Some(0));
    assert_no_leak(
        "daemon",
        &daemon.log(),
        &es256,
        &[&expired, &renewed, &token],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_renews_a_private_key_jwt_token_with_a_fresh_assertion_each_time() {
    let ttl = 4;
    let Some(provider) = OidcProvider::start_with_jwt_keys(ttl) else {
        return;
    };
    let rs256 = provider.rs256_key();
    let scratch = tempfile::tempdir().unwrap();
    let config = write_config(
        scratch.path(),
        &format!(
            "{FAST_DAEMON}{}",
            config(
                &provider.token_endpoint(),
                JWT_RS256_CLIENT_ID,
                &private_key_jwt(&rs256, None, Some(JWT_RS256_KID)),
                scratch.path()
            )
        ),
    );
    let mut daemon = Daemon::start(&config, scratch.path(), &[("RUST_LOG", "debug")]);
    let token_file = scratch.path().join("jwt.token");
    // The first token and two renewals: three distinct tokens in the file, in turn.
    let mut seen: Vec<String> = Vec::new();
    let renewed_twice = eventually(Duration::from_secs(ttl * 5), || {
        if let Ok(token) = std::fs::read_to_string(&token_file)
            && seen.last() != Some(&token)
        {
            seen.push(token);
        }
        seen.len() >= 3
    })
    .await;
    assert!(
        renewed_twice,
        "only {} distinct tokens in {}s; log:\n{}\nserver log:\n{}",
        seen.len(),
        ttl * 5,
        daemon.log(),
        provider.log()
    );
    let current = std::fs::read_to_string(&token_file).unwrap();
    assert_active_for(&provider, &current, JWT_RS256_CLIENT_ID, "renewed token").await;
    daemon.signal(rustix::process::Signal::TERM);
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, Some(0));

    let log = provider.settled_log().await;
    assert!(
        !log.contains("must only be used once"),
        "an assertion was replayed; server log:\n{log}"
    );
    let prefix = format!("oidc request: token client {JWT_RS256_CLIENT_ID} status ");
    let statuses: Vec<&str> = log
        .lines()
        .filter_map(|line| line.strip_prefix(prefix.as_str()))
        .collect();
    assert!(
        statuses.len() >= 3 && statuses.iter().all(|status| *status == "200"),
        "every renewal is a successful login with a new assertion: {statuses:?}; server log:\n{log}"
    );
    let mut secrets: Vec<&str> = seen.iter().map(String::as_str).collect();
    secrets.push(&current);
    assert_no_leak("daemon", &daemon.log(), &rs256, &secrets);
}
