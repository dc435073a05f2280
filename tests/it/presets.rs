//! `once` against the loopback endpoint: every preset's exact request, its token, its expiry and
//! its header scheme, through the real binary.

use std::time::Duration;

use base64::Engine as _;
use jiff::Timestamp;
use tokenkeeper::demo::endpoint::{Credentials, EndpointOptions, Route, TokenEndpoint};

use crate::support::{mode_of, temp_files, tokenkeeper, write_config, write_secret};

const LIFETIME: Duration = Duration::from_secs(3600);

fn expires_at_of(json: &serde_json::Value) -> Timestamp {
    json["expires_at"]
        .as_str()
        .expect("expires_at is a string")
        .parse()
        .expect("expires_at is RFC 3339")
}

fn assert_close(actual: Timestamp, expected: Timestamp, slack_seconds: i64, what: &str) {
    let difference = actual.duration_since(expected).as_secs().abs();
    assert!(
        difference <= slack_seconds,
        "{what}: {actual} is {difference}s away from {expected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_writes_every_preset_with_exact_requests() {
    let endpoint = TokenEndpoint::start(EndpointOptions {
        lifetime: LIFETIME,
        ..EndpointOptions::default()
    })
    .await
    .unwrap();
    let credentials = Credentials::demo();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("demo");
    let config = tokenkeeper::demo::prepare(&dir, &endpoint.base_url(), &credentials).unwrap();
    let started = Timestamp::now();
    let run = tokenkeeper(&["once", "--config", config.to_str().unwrap()], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let tokens = dir.join("tokens");
    let read = |name: &str| std::fs::read_to_string(tokens.join(name)).unwrap();

    // Panaya: form body exactly as the seed's table; raw file holds a live token.
    let panaya = read("panaya.token");
    assert!(
        endpoint.is_live(&panaya),
        "panaya token not issued by the endpoint"
    );
    assert!(!panaya.ends_with('\n'));

    // Papaya: JSON file; expiry is valid_until (minute precision), never later than JWT exp.
    let papaya: serde_json::Value = serde_json::from_str(&read("papaya.json")).unwrap();
    assert_eq!(papaya["account"], "papaya");
    assert_eq!(papaya["type"], "Bearer");
    assert!(endpoint.is_live(papaya["token"].as_str().unwrap()));
    let papaya_expiry = expires_at_of(&papaya);
    assert!(papaya_expiry <= started + LIFETIME + Duration::from_secs(5));
    assert!(papaya_expiry >= started + LIFETIME - Duration::from_secs(65));
    assert_eq!(
        papaya_expiry.as_second() % 60,
        0,
        "valid_until has minute precision"
    );

    // Apinizer: header file with the Bearer scheme.
    let apinizer = read("apinizer.header");
    let token = apinizer
        .strip_prefix("Authorization: Bearer ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .expect("header format");
    assert!(endpoint.is_live(token));

    // Patchworks: env file with the default variable name.
    let patchworks = read("patchworks.env");
    let token = patchworks
        .strip_prefix("PATCHWORKS_TOKEN=")
        .and_then(|rest| rest.strip_suffix('\n'))
        .expect("env format");
    assert!(endpoint.is_live(token));

    // ONLYOFFICE: the bare token with no scheme.
    let onlyoffice = read("onlyoffice.header");
    let token = onlyoffice
        .strip_prefix("Authorization: ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .expect("header format");
    assert!(
        !token.starts_with("Bearer"),
        "ONLYOFFICE takes no scheme: {onlyoffice:?}"
    );
    assert!(endpoint.is_live(token));

    // OAuth2: raw and JSON agree; expiry from expires_in, anchored at the request.
    let oauth2_raw = read("oauth2.token");
    let oauth2: serde_json::Value = serde_json::from_str(&read("oauth2.json")).unwrap();
    assert_eq!(oauth2["token"].as_str().unwrap(), oauth2_raw);
    assert!(endpoint.is_live(&oauth2_raw));
    assert_close(
        expires_at_of(&oauth2),
        started + LIFETIME,
        5,
        "oauth2 expiry",
    );
    assert_eq!(mode_of(&tokens.join("oauth2.json")), 0o640);
    assert_eq!(mode_of(&tokens.join("oauth2.token")), 0o600);
    assert!(temp_files(&tokens).is_empty());

    // The requests on the wire, checked here rather than trusting the endpoint's checks.
    let requests = endpoint.requests();
    let find = |path: &str| {
        requests
            .iter()
            .find(|request| request.path == path)
            .unwrap_or_else(|| panic!("no request to {path}"))
    };
    let panaya_request = find(Route::Panaya.path());
    assert_eq!(panaya_request.method, "POST");
    assert_eq!(
        panaya_request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let expected_body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("username", &credentials.panaya_username)
        .append_pair("token", &credentials.panaya_token)
        .finish();
    assert_eq!(String::from_utf8_lossy(&panaya_request.body), expected_body);

    let papaya_request = find(Route::Papaya.path());
    assert_eq!(
        papaya_request.header("content-type"),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_slice(&papaya_request.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "api_key": credentials.papaya_api_key,
            "client_secret": credentials.papaya_client_secret,
            "token_name": "tokenkeeper-demo",
        })
    );

    let apinizer_request = find(Route::Apinizer.path());
    assert_eq!(apinizer_request.header("accept"), Some("application/json"));
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&apinizer_request.body)
        .into_owned()
        .collect();
    assert_eq!(
        form,
        vec![
            ("grant_type".to_string(), "client_credentials".to_string()),
            (
                "client_id".to_string(),
                credentials.apinizer_client_id.clone()
            ),
            (
                "client_secret".to_string(),
                credentials.apinizer_client_secret.clone()
            ),
        ]
    );

    let patchworks_request = find(Route::Patchworks.path());
    let body: serde_json::Value = serde_json::from_slice(&patchworks_request.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"email": credentials.patchworks_email, "password": credentials.patchworks_password})
    );

    let onlyoffice_request = find(Route::OnlyOffice.path());
    let body: serde_json::Value = serde_json::from_slice(&onlyoffice_request.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"userName": credentials.onlyoffice_username, "password": credentials.onlyoffice_password})
    );

    // client_secret_basic: id and secret form-urlencoded, then Base64 (RFC 6749 §2.3.1).
    let oauth2_request = find(Route::OAuth2.path());
    let basic = oauth2_request
        .header("authorization")
        .and_then(|value| value.strip_prefix("Basic "))
        .expect("Basic authorization");
    let decoded = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(basic)
            .unwrap(),
    )
    .unwrap();
    let encode =
        |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    assert_eq!(
        decoded,
        format!(
            "{}:{}",
            encode(&credentials.oauth2_client_id),
            encode(&credentials.oauth2_client_secret)
        )
    );
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&oauth2_request.body)
        .into_owned()
        .collect();
    assert_eq!(
        form,
        vec![
            ("grant_type".to_string(), "client_credentials".to_string()),
            ("scope".to_string(), "demo:read".to_string()),
        ]
    );
    for request in &requests {
        assert!(
            request
                .header("user-agent")
                .is_some_and(|agent| agent.starts_with("tokenkeeper/")),
            "{:?}",
            request.header("user-agent")
        );
    }

    // A second round with the same tokens would rewrite; but with identical contents nothing
    // changes: prove "no rewrite when unchanged" on a file the test writes itself below.
    endpoint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onlyoffice_offset_timestamp_and_patchworks_fallback() {
    let endpoint = TokenEndpoint::start(EndpointOptions {
        lifetime: Duration::from_secs(1800),
        patchworks_token_only: true,
        ..EndpointOptions::default()
    })
    .await
    .unwrap();
    let credentials = Credentials::demo();
    let scratch = tempfile::tempdir().unwrap();
    let secret = write_secret(scratch.path(), "office", &credentials.onlyoffice_password);
    let patch = write_secret(scratch.path(), "patch", &credentials.patchworks_password);
    let out = scratch.path();
    let config = write_config(
        scratch.path(),
        &format!(
            r#"
[accounts.office]
preset = "onlyoffice"
base_url = "{base}"
username = "{user}"
password = {{ file = "{secret}" }}
[[accounts.office.outputs]]
path = "{out}/office.json"
format = "json"

[accounts.patch]
preset = "patchworks"
base_url = "{base}"
email = "{email}"
password = {{ file = "{patch}" }}
[[accounts.patch.outputs]]
path = "{out}/patch.json"
format = "json"
"#,
            base = endpoint.base_url(),
            user = credentials.onlyoffice_username,
            secret = secret.display(),
            email = credentials.patchworks_email,
            patch = patch.display(),
            out = out.display(),
        ),
    );
    let started = Timestamp::now();
    let run = tokenkeeper(&["once", "--config", &config], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let office: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("office.json")).unwrap()).unwrap();
    assert_eq!(
        office["type"],
        serde_json::Value::Null,
        "ONLYOFFICE has no scheme"
    );
    assert_close(
        expires_at_of(&office),
        started + Duration::from_secs(1800),
        5,
        "onlyoffice expires with a +03:00 offset",
    );
    // Patchworks replied `{"token": ...}` without expires_in: the documented 24 h applies.
    let patch: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("patch.json")).unwrap()).unwrap();
    assert!(endpoint.is_live(patch["token"].as_str().unwrap()));
    assert_close(
        expires_at_of(&patch),
        started + Duration::from_secs(24 * 3600),
        5,
        "patchworks fallback lifetime",
    );
    endpoint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_login_expresses_every_seed() {
    let endpoint = TokenEndpoint::start(EndpointOptions::default())
        .await
        .unwrap();
    let credentials = Credentials::demo();
    let scratch = tempfile::tempdir().unwrap();
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/valid/generic_seeds.toml"
    ))
    .unwrap();
    // Point the fixture at the loopback endpoint, its secrets at files, its outputs at scratch.
    let secrets = [
        ("/etc/tokenkeeper/panaya", &credentials.panaya_token),
        ("/etc/tokenkeeper/papaya-key", &credentials.papaya_api_key),
        (
            "/etc/tokenkeeper/papaya-secret",
            &credentials.papaya_client_secret,
        ),
        (
            "/etc/tokenkeeper/apinizer",
            &credentials.apinizer_client_secret,
        ),
        (
            "/etc/tokenkeeper/patchworks",
            &credentials.patchworks_password,
        ),
        (
            "/etc/tokenkeeper/onlyoffice",
            &credentials.onlyoffice_password,
        ),
    ];
    let mut text = fixture;
    for (path, value) in secrets {
        let name = path.rsplit('/').next().unwrap();
        let file = write_secret(scratch.path(), name, value);
        text = text.replace(path, &file.display().to_string());
    }
    for host in [
        "https://my.panaya.com",
        "https://api.papayaglobal.com",
        "https://demo.apinizer.com",
        "https://svc-fabric.pwks.co",
        "https://portal.onlyoffice.example",
    ] {
        text = text.replace(host, &endpoint.base_url());
    }
    text = text
        .replace(
            "\"ops@example.com\"",
            &format!("{:?}", credentials.panaya_username),
        )
        .replace("/run/tokenkeeper", &scratch.path().display().to_string());
    // The fixture uses one user name per seed; the endpoint's demo users differ per route.
    text = text
        .replace(
            "client_id = \"ops\"",
            &format!("client_id = {:?}", credentials.apinizer_client_id),
        )
        .replace(
            "userName = \"ops\"",
            &format!("userName = {:?}", credentials.onlyoffice_username),
        )
        .replace(
            &format!("email = {:?}", credentials.panaya_username),
            &format!("email = {:?}", credentials.patchworks_email),
        );
    let config = write_config(scratch.path(), &text);
    let run = tokenkeeper(&["once", "--config", &config], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    for name in ["panaya", "papaya", "apinizer", "patchworks"] {
        let token = std::fs::read_to_string(scratch.path().join(format!("{name}.token"))).unwrap();
        assert!(endpoint.is_live(&token), "{name}");
    }
    let office = std::fs::read_to_string(scratch.path().join("onlyoffice.header")).unwrap();
    let token = office.strip_prefix("Authorization: ").unwrap().trim_end();
    assert!(endpoint.is_live(token));
    for route in Route::ALL {
        if route != Route::OAuth2 {
            assert_eq!(endpoint.issued(route), 1, "{route:?}");
        }
    }
    endpoint.shutdown().await;
}

/// A `template` output holds its text with every placeholder filled from the same token the
/// `json` output of the account shows; `{type}` is empty for a scheme-less token (ONLYOFFICE),
/// and `{expires_in}` is the lifetime as granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_output_fills_every_placeholder() {
    let endpoint = TokenEndpoint::start(EndpointOptions {
        lifetime: Duration::from_secs(1800),
        ..EndpointOptions::default()
    })
    .await
    .unwrap();
    let credentials = Credentials::demo();
    let scratch = tempfile::tempdir().unwrap();
    let secret = write_secret(scratch.path(), "office", &credentials.onlyoffice_password);
    let out = scratch.path();
    let config = write_config(
        scratch.path(),
        &format!(
            r#"
[accounts.office]
preset = "onlyoffice"
base_url = "{base}"
username = "{user}"
password = {{ file = "{secret}" }}
[[accounts.office.outputs]]
path = "{out}/office.json"
format = "json"
[[accounts.office.outputs]]
path = "{out}/office.netrc"
format = "template"
mode = "0640"
template = "machine office.example login {{account}} password {{token}}\n# {{{{type={{type}}, expires_at={{expires_at}}, expires_in={{expires_in}}}}}}\n"
"#,
            base = endpoint.base_url(),
            user = credentials.onlyoffice_username,
            secret = secret.display(),
            out = out.display(),
        ),
    );
    let run = tokenkeeper(&["once", "--config", &config], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("office.json")).unwrap()).unwrap();
    let token = json["token"].as_str().expect("a token");
    assert!(endpoint.is_live(token));
    let templated = std::fs::read_to_string(out.join("office.netrc")).unwrap();
    // ONLYOFFICE gives an absolute expiry: the lifetime as granted is 1800 s, or a second less
    // when the server's clock read fell on the other side of a second.
    let expected = |lifetime: u32| {
        format!(
            "machine office.example login office password {token}\n# {{type=, expires_at={}, expires_in={lifetime}}}\n",
            json["expires_at"].as_str().expect("expires_at")
        )
    };
    assert!(
        templated == expected(1800) || templated == expected(1799),
        "{templated:?}"
    );
    assert_eq!(mode_of(&out.join("office.netrc")), 0o640);
    let check = tokenkeeper(&["check", "--config", &config], &[]).await;
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check
            .stdout
            .contains("template \"machine office.example login {account}"),
        "{}",
        check.stdout
    );
    endpoint.shutdown().await;
}
