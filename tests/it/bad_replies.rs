//! Bad replies never replace a good token: each gives a clear, classified error naming the
//! account, writes nothing, and leaves the existing file byte-for-byte unchanged.

use std::sync::atomic::Ordering;

use tokenkeeper::demo::endpoint::{Credentials, EndpointOptions, Fault, TokenEndpoint};

use crate::support::{
    ApinizerSetup, apinizer_config, apinizer_setup, temp_files, tokenkeeper, trap, write_config,
    write_secret,
};

const OLD_TOKEN: &str = "old-good-token-0123456789";

fn json(status: u16, body: &str) -> Fault {
    Fault::Status {
        status,
        content_type: "application/json".to_string(),
        body: body.to_string(),
        headers: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_replies_write_nothing_and_keep_the_old_token() {
    let endpoint = TokenEndpoint::start(EndpointOptions::default())
        .await
        .unwrap();
    let credentials = Credentials::demo();
    let scratch = tempfile::tempdir().unwrap();
    let out_dir = scratch.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let output = out_dir.join("apinizer.token");
    let secret = write_secret(
        scratch.path(),
        "secret",
        &credentials.apinizer_client_secret,
    );
    let config = write_config(
        scratch.path(),
        &apinizer_config(&endpoint.base_url(), &secret, &output),
    );
    let (trap_url, trap_connections, trap_bytes) = trap().await;
    let echo = format!(
        "<html><body>bad request: client_secret={}</body></html>",
        credentials.apinizer_client_secret
    );

    let cases: Vec<(&str, Fault, &[&str])> = vec![
        (
            "malformed json",
            json(200, r#"{"access_token": "ab"#),
            &["unusable reply", "not valid JSON"],
        ),
        (
            "html with 200",
            Fault::Html200,
            &["unusable reply", "HTML page"],
        ),
        (
            "missing token",
            json(200, r#"{"token_type":"Bearer","expires_in":3600}"#),
            &["no token at /access_token", "token_type"],
        ),
        (
            "empty token",
            json(200, r#"{"access_token":"","expires_in":3600}"#),
            &["the token is empty"],
        ),
        (
            "null token",
            json(200, r#"{"access_token":null,"expires_in":3600}"#),
            &["null, not a string"],
        ),
        (
            "number token",
            json(200, r#"{"access_token":12345,"expires_in":3600}"#),
            &["a number, not a string"],
        ),
        (
            "newline in token",
            json(200, r#"{"access_token":"abc\ndef","expires_in":3600}"#),
            &["whitespace or a control character"],
        ),
        (
            "zero expires_in",
            json(200, r#"{"access_token":"abcdef","expires_in":0}"#),
            &["bad expiry at /expires_in"],
        ),
        (
            "junk expires_in",
            json(200, r#"{"access_token":"abcdef","expires_in":"soon"}"#),
            &["bad expiry at /expires_in"],
        ),
        (
            "empty body",
            Fault::Status {
                status: 200,
                content_type: "text/plain".into(),
                body: String::new(),
                headers: vec![],
            },
            &["empty"],
        ),
        (
            "oversized body",
            Fault::Oversized { bytes: 200_000 },
            &["larger than 65536 bytes"],
        ),
        (
            "rejected",
            json(
                401,
                r#"{"error":"unauthorized_client","error_description":"Bad credentials"}"#,
            ),
            &["credentials rejected", "HTTP 401", "Bad credentials"],
        ),
        (
            "server down",
            Fault::Status {
                status: 503,
                content_type: "text/plain".into(),
                body: "maintenance".into(),
                headers: vec![("Retry-After".into(), "120".into())],
            },
            &["temporary failure", "HTTP 503", "maintenance"],
        ),
        (
            "echoing error page",
            Fault::Status {
                status: 400,
                content_type: "text/html".into(),
                body: echo,
                headers: vec![],
            },
            &[
                "credentials rejected",
                "HTTP 400",
                tokenkeeper::login::scrub::WITHHELD,
            ],
        ),
        // The description echoes the secret, so it is withheld; the registered code still says
        // why the login was refused.
        (
            "echoing oauth2 error",
            json(
                401,
                &format!(
                    r#"{{"error":"invalid_client","error_description":"unknown secret {}"}}"#,
                    credentials.apinizer_client_secret
                ),
            ),
            &[
                "credentials rejected",
                "HTTP 401",
                "invalid_client: [reply text withheld",
            ],
        ),
        (
            "302 redirect",
            Fault::Redirect {
                status: 302,
                location: format!("{trap_url}/steal"),
            },
            &["HTTP 302", "redirects to 127.0.0.1"],
        ),
        (
            "307 redirect",
            Fault::Redirect {
                status: 307,
                location: format!("{trap_url}/steal"),
            },
            &["HTTP 307", "never followed"],
        ),
        (
            "308 redirect",
            Fault::Redirect {
                status: 308,
                location: format!("{trap_url}/steal"),
            },
            &["HTTP 308"],
        ),
    ];
    for (name, fault, expected) in cases {
        std::fs::write(&output, OLD_TOKEN).unwrap();
        let inode_before =
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&output).unwrap());
        endpoint.push_fault(fault);
        let run = tokenkeeper(&["once", "--config", &config], &[]).await;
        assert_eq!(run.code, 1, "{name}: {run:?}");
        assert!(
            run.stderr.contains("account apinizer"),
            "{name}: {}",
            run.stderr
        );
        for text in expected {
            assert!(
                run.stderr.contains(text),
                "{name}: expected {text:?} in {}",
                run.stderr
            );
        }
        assert!(
            !run.all_output()
                .contains(&credentials.apinizer_client_secret),
            "{name}: the secret leaked: {}",
            run.stderr
        );
        assert_eq!(
            std::fs::read_to_string(&output).unwrap(),
            OLD_TOKEN,
            "{name}"
        );
        let inode_after = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&output).unwrap());
        assert_eq!(inode_before, inode_after, "{name}: the file was replaced");
        assert!(temp_files(&out_dir).is_empty(), "{name}: temp files left");
    }
    assert_eq!(
        trap_connections.load(Ordering::SeqCst),
        0,
        "a redirect was followed"
    );
    assert_eq!(trap_bytes.load(Ordering::SeqCst), 0);

    // With the faults drained, the same config works and replaces the old token.
    let run = tokenkeeper(&["once", "--config", &config], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let token = std::fs::read_to_string(&output).unwrap();
    assert_ne!(token, OLD_TOKEN);
    assert!(endpoint.is_live(&token));
    endpoint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_is_a_transient_error() {
    // Bind and drop a listener so the port is very likely closed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let scratch = tempfile::tempdir().unwrap();
    let secret = write_secret(scratch.path(), "secret", "whatever-secret");
    let output = scratch.path().join("t.token");
    let config = write_config(
        scratch.path(),
        &apinizer_config(&format!("http://{address}"), &secret, &output),
    );
    let run = tokenkeeper(&["once", "--config", &config], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("temporary failure"), "{}", run.stderr);
    assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);
    assert!(!output.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_format_refuses_tokens_a_shell_would_interpret() {
    let ApinizerSetup {
        endpoint,
        output,
        config,
        scratch: _scratch,
        ..
    } = apinizer_setup("apinizer.env", "format = \"env\"\n").await;
    endpoint.push_fault(json(
        200,
        r#"{"access_token":"abc$(reboot)","expires_in":3600}"#,
    ));
    let run = tokenkeeper(&["once", "--config", &config], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("a shell would interpret"),
        "{}",
        run.stderr
    );
    assert!(!output.exists());
    let run = tokenkeeper(&["once", "--config", &config], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        std::fs::read_to_string(&output)
            .unwrap()
            .starts_with("APINIZER_TOKEN=")
    );
    endpoint.shutdown().await;
}
