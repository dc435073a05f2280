//! The `oauth2` preset's mutual-TLS client authentication (RFC 8705 `tls_client_auth` and
//! `self_signed_tls_client_auth`) against the real OAuth2 server `oidc-provider` (npm) behind a
//! Node HTTPS listener that asks for client certificates: oidc-provider judges the certificate
//! (chain, subject, thumbprint), and the body must carry only `client_id`. The tests skip only
//! when Node or the npm packages are absent outside CI.

use std::path::Path;
use std::time::Duration;

use crate::support::oidc::{MTLS_CLIENT_CN, MTLS_CLIENT_ID, OidcProvider, SELF_SIGNED_CLIENT_ID};
use crate::support::pki::{ClientCert, Pki, client_cert, self_signed_client_cert};
use crate::support::{Daemon, Run, eventually, tokenkeeper, write_config};

/// A test PKI for the server (CA, leaf for 127.0.0.1), the certificate `mtls-client` is known by
/// (CA-signed, `CN=tokenkeeper-client-1`) and the one `self-signed-client` is registered with,
/// with the server started over HTTPS on them.
struct Setup {
    provider: OidcProvider,
    pki: Pki,
    /// Where the certificates live: the tests make more here.
    dir: std::path::PathBuf,
    ca_signed: ClientCert,
    self_signed: ClientCert,
    _scratch: tempfile::TempDir,
}

fn start(ttl_seconds: u64) -> Option<Setup> {
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("pki");
    let pki = Pki::generate(&dir);
    let ca_signed = client_cert(&dir, "client1", MTLS_CLIENT_CN, 11);
    let self_signed = self_signed_client_cert(&dir, "self-signed", "tokenkeeper-self-signed");
    let provider = OidcProvider::start_with_mtls(ttl_seconds, &dir)?;
    Some(Setup {
        provider,
        pki,
        dir,
        ca_signed,
        self_signed,
        _scratch: scratch,
    })
}

/// A one-account `oauth2` config named `mtls` trusting the test CA, writing `<out>/mtls.token`;
/// `auth` holds the `auth_method` line and its keys.
fn config(setup: &Setup, client_id: &str, auth: &str, out: &Path) -> String {
    format!(
        r#"
[accounts.mtls]
preset = "oauth2"
token_url = "{token_url}"
client_id = "{client_id}"
ca_file = "{ca}"
{auth}
[[accounts.mtls.outputs]]
path = "{out}/mtls.token"
"#,
        token_url = setup.provider.token_endpoint(),
        ca = setup.pki.ca_pem.display(),
        out = out.display(),
    )
}

/// The keys of `method` with the certificate and key of `cert`.
fn certificate_auth(method: &str, cert: &ClientCert) -> String {
    format!(
        "auth_method = \"{method}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        cert.pem.display(),
        cert.key.display()
    )
}

/// Asserts that `output` shows no line of the PEM body of any file in `pems` and no PEM header.
fn assert_no_key_material(what: &str, output: &str, pems: &[&Path]) {
    for pem in pems {
        let text = std::fs::read_to_string(pem).expect("read a PEM file");
        for line in text
            .lines()
            .filter(|line| !line.starts_with("-----") && !line.is_empty())
        {
            assert!(
                !output.contains(line),
                "{what}: a line of {} was printed:\n{output}",
                pem.display()
            );
        }
    }
    assert!(
        !output.contains("PRIVATE KEY"),
        "{what}: a PEM header was printed:\n{output}"
    );
}

/// The token `once` wrote to `<dir>/mtls.token`, which must exist.
fn written_token(dir: &Path, what: &str, run: &Run) -> String {
    std::fs::read_to_string(dir.join("mtls.token"))
        .unwrap_or_else(|e| panic!("{what}: no token file ({e}); {run:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_auth_and_self_signed_certificates_log_in_to_oidc_provider() {
    let Some(setup) = start(300) else {
        return;
    };
    let cases = [
        (
            MTLS_CLIENT_ID,
            "tls_client_auth",
            &setup.ca_signed,
            "CN=tokenkeeper-client-1",
        ),
        (
            SELF_SIGNED_CLIENT_ID,
            "self_signed_tls_client_auth",
            &setup.self_signed,
            "CN=tokenkeeper-self-signed",
        ),
    ];
    for (client_id, method, cert, subject) in cases {
        let what = format!("{client_id} with {method}");
        let scratch = tempfile::tempdir().unwrap();
        let config_path = write_config(
            scratch.path(),
            &config(
                &setup,
                client_id,
                &certificate_auth(method, cert),
                scratch.path(),
            ),
        );
        // `check` shows the certificate and key by their paths, never what is in them.
        let check = tokenkeeper(&["check", "--config", &config_path], &[]).await;
        assert_eq!(check.code, 0, "{what}: check: {check:?}");
        assert!(
            check.stdout.contains(&format!(
                "client certificate {} (key {})",
                cert.pem.display(),
                cert.key.display()
            )),
            "{what}: check does not show the certificate's and key's paths: {check:?}"
        );
        assert_no_key_material(&what, &check.all_output(), &[&cert.key]);
        let before = OidcProvider::token_requests(&setup.provider.settled_log().await, client_id);
        let run = tokenkeeper(
            &["once", "--config", &config_path],
            &[("RUST_LOG", "debug")],
        )
        .await;
        assert_eq!(run.code, 0, "{what}: {run:?}");
        let token = written_token(scratch.path(), &what, &run);
        let reply = setup.provider.introspection(&token).await;
        assert_eq!(reply["active"], true, "{what}: {reply}");
        assert_eq!(reply["client_id"], client_id, "{what}: {reply}");
        let log = setup.provider.settled_log().await;
        assert_eq!(
            OidcProvider::token_requests(&log, client_id),
            before + 1,
            "{what}: expected exactly one token request; server log:\n{log}"
        );
        // The server's strict check passed: the certificate was the only credential, and it was
        // this one.
        assert!(
            log.contains(&format!(
                "oidc request: token client {client_id} status 200 certificate {subject}"
            )),
            "{what}: server log:\n{log}"
        );
        assert!(
            !run.all_output().contains(&token),
            "{what}: the token was printed"
        );
        assert_no_key_material(&what, &run.all_output(), &[&cert.key]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_refuses_a_wrong_certificate_as_rejected_credentials() {
    let Some(setup) = start(300) else {
        return;
    };
    // A CA the server does not trust, issuing the registered subject; a trusted CA's certificate
    // for another subject; a self-signed certificate that is not the registered one.
    let stranger_dir = setup.dir.join("stranger");
    let _stranger = Pki::generate(&stranger_dir);
    let untrusted = client_cert(&stranger_dir, "client1", MTLS_CLIENT_CN, 21);
    let other_subject = client_cert(&setup.dir, "client2", "tokenkeeper-client-2", 12);
    let other_self_signed =
        self_signed_client_cert(&setup.dir, "other-self-signed", "tokenkeeper-self-signed");
    let cases: [(&str, &str, String, &str); 4] = [
        (
            "a certificate of an untrusted CA",
            MTLS_CLIENT_ID,
            certificate_auth("tls_client_auth", &untrusted),
            "client certificate was not verified",
        ),
        (
            "a trusted certificate of another subject",
            MTLS_CLIENT_ID,
            certificate_auth("tls_client_auth", &other_subject),
            "certificate subject value does not match the registered one",
        ),
        (
            "another self-signed certificate",
            SELF_SIGNED_CLIENT_ID,
            certificate_auth("self_signed_tls_client_auth", &other_self_signed),
            "unregistered client certificate provided",
        ),
        // A certificate client must not get in with a secret either.
        (
            "a client secret instead of a certificate",
            MTLS_CLIENT_ID,
            "auth_method = \"post\"\nclient_secret = \"definitely-wrong\"\n".to_string(),
            "does not match the registered client authentication method",
        ),
    ];
    for (what, client_id, auth, detail) in cases {
        let scratch = tempfile::tempdir().unwrap();
        let config_path = write_config(
            scratch.path(),
            &config(&setup, client_id, &auth, scratch.path()),
        );
        let log_start = setup.provider.settled_log().await.len();
        let run = tokenkeeper(&["once", "--config", &config_path], &[]).await;
        assert_eq!(run.code, 1, "{what}: {run:?}");
        assert!(
            run.stderr.contains("credentials rejected") && run.stderr.contains("invalid_client"),
            "{what}: {}",
            run.stderr
        );
        assert!(
            !scratch.path().join("mtls.token").exists(),
            "{what}: a token file was written"
        );
        let log = setup.provider.settled_log().await;
        assert!(
            log[log_start..].contains(detail),
            "{what}: the server did not refuse for {detail:?}; server log:\n{log}"
        );
        assert_no_key_material(
            what,
            &run.all_output(),
            &[&untrusted.key, &other_subject.key, &other_self_signed.key],
        );
    }
    let log = setup.provider.settled_log().await;
    for client_id in [MTLS_CLIENT_ID, SELF_SIGNED_CLIENT_ID] {
        assert!(
            !log.contains(&format!(
                "oidc request: token client {client_id} status 200"
            )),
            "a refused login got a token; server log:\n{log}"
        );
    }
}

/// The daemon keeps a `tls_client_auth` token live across several of the server's short
/// lifetimes, every renewal authenticated by the certificate (on a new or a kept-alive connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_renews_a_tls_client_auth_token() {
    let Some(setup) = start(4) else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let account = config(
        &setup,
        MTLS_CLIENT_ID,
        &certificate_auth("tls_client_auth", &setup.ca_signed),
        scratch.path(),
    );
    let config_path = write_config(
        scratch.path(),
        &format!(
            "[daemon]\nrefresh_at = 0.5\nrefresh_margin = \"1s\"\nmin_refresh_interval = \
             \"1s\"\nretry_base = \"200ms\"\nretry_cap = \"1s\"\nstate_dir = \"{}\"\n{account}",
            scratch.path().join("state").display()
        ),
    );
    let daemon = Daemon::start(&config_path, scratch.path(), &[]);
    let token_file = scratch.path().join("mtls.token");
    let mut seen: Vec<String> = Vec::new();
    // Three distinct tokens, each live at the server when read: two renewals at least.
    let renewed = eventually(Duration::from_secs(40), || {
        if let Ok(token) = std::fs::read_to_string(&token_file)
            && !token.is_empty()
            && !seen.contains(&token)
        {
            seen.push(token);
        }
        seen.len() >= 3
    })
    .await;
    assert!(
        renewed,
        "tokens seen: {}\ndaemon log:\n{}",
        seen.len(),
        daemon.log()
    );
    let current = std::fs::read_to_string(&token_file).expect("read the token");
    let reply = setup.provider.introspection(&current).await;
    assert_eq!(reply["active"], true, "{reply}\n{}", daemon.log());
    assert_eq!(reply["client_id"], MTLS_CLIENT_ID, "{reply}");
    let log = setup.provider.settled_log().await;
    assert!(
        OidcProvider::token_requests(&log, MTLS_CLIENT_ID) >= 3,
        "server log:\n{log}"
    );
    assert!(
        !log.contains(&format!(
            "oidc request: token client {MTLS_CLIENT_ID} status 4"
        )),
        "a renewal was refused; server log:\n{log}"
    );
    for token in &seen {
        assert!(!daemon.log().contains(token.as_str()), "a token was logged");
    }
    assert_no_key_material("daemon", &daemon.log(), &[&setup.ca_signed.key]);
}
