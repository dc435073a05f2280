//! The endpoint against a real client: every route's checks and replies, faults, recording.

use super::wire::*;
use super::*;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use serde_json::Value;

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("reply is JSON")
    }

    fn keys(&self) -> Vec<String> {
        match self.json() {
            Value::Object(map) => map.keys().cloned().collect(),
            other => panic!("not an object: {other}"),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

thread_local! {
    // Building a client costs ~50 ms in a debug build, so each test builds one. libtest runs
    // every test on its own thread with its own runtime, so no pooled connection outlives
    // the runtime it was made on.
    static CLIENT: reqwest::Client = {
        // reqwest builds its TLS config even for plain-HTTP clients and panics without a
        // provider; another test may already have installed it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client builds")
    };
}

fn client() -> reqwest::Client {
    CLIENT.with(reqwest::Client::clone)
}

async fn send(
    ep: &TokenEndpoint,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut request = client().request(method, format!("{}{path}", ep.base_url()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .body(body.to_owned())
        .send()
        .await
        .expect("request sent");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.expect("body read"),
    }
}

async fn post(ep: &TokenEndpoint, route: Route, content_type: &str, body: &str) -> Reply {
    let headers = [("content-type", content_type), ("accept", JSON)];
    send(ep, reqwest::Method::POST, route.path(), &headers, body).await
}

async fn call_protected(ep: &TokenEndpoint, authorization: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| ("authorization", value))
        .into_iter()
        .collect();
    send(ep, reqwest::Method::GET, PROTECTED_PATH, &headers, "")
        .await
        .status
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// RFC 6749 §2.3.1 Basic: each part form-encoded, then base64.
fn basic(id: &str, secret: &str) -> String {
    let pair = format!("{}:{}", encode(id), encode(secret));
    format!("Basic {}", STANDARD.encode(pair))
}

/// RFC 7617 Basic with no form-encoding step: what a careless client sends.
fn raw_basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

fn token_shape_ok(token: &str) {
    assert!(token.len() >= 32, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_graphic()), "{token}");
}

async fn start(options: EndpointOptions) -> TokenEndpoint {
    TokenEndpoint::start(options)
        .await
        .expect("endpoint starts")
}

#[tokio::test]
async fn panaya_issues_token_only_for_matching_form() {
    let ep = start(EndpointOptions::default()).await;
    let c = Credentials::demo();
    let good = form(&[("username", &c.panaya_username), ("token", &c.panaya_token)]);
    let reply = post(&ep, Route::Panaya, FORM, &good).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.keys(), ["token"]);
    let token = reply.json()["token"].as_str().expect("string").to_owned();
    token_shape_ok(&token);
    assert!(ep.is_live(&token));

    let bad = form(&[
        ("username", "DEMO.USER@example.com"),
        ("token", &c.panaya_token),
    ]);
    let reply = post(&ep, Route::Panaya, FORM, &bad).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": "invalid credentials"})
    );

    // The right fields as JSON are not what the server documents.
    let as_json = serde_json::json!({"username": c.panaya_username, "token": c.panaya_token});
    let reply = post(&ep, Route::Panaya, JSON, &as_json.to_string()).await;
    assert_eq!(reply.status, 415);
    assert_eq!(ep.issued(Route::Panaya), 1);
}

#[tokio::test]
async fn papaya_replies_201_with_minute_valid_until_and_matching_jwt() {
    let ep = start(EndpointOptions::default()).await;
    let c = Credentials::demo();
    let body = serde_json::json!({
        "api_key": c.papaya_api_key,
        "client_secret": c.papaya_client_secret,
        "token_name": "nightly-sync",
    });
    let before = Timestamp::now();
    let reply = post(&ep, Route::Papaya, JSON, &body.to_string()).await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.keys(), ["token", "token_name", "valid_until"]);
    assert!(reply.body.starts_with(r#"{"valid_until":"#), "seed order");
    let json = reply.json();
    assert_eq!(json["token_name"], "nightly-sync");

    let valid_until = json["valid_until"].as_str().expect("string");
    assert_eq!(
        valid_until.len(),
        "2024-07-11T07:48Z".len(),
        "{valid_until}"
    );
    assert!(valid_until.ends_with('Z') && valid_until.as_bytes()[13] == b':');
    let valid_until: Timestamp = valid_until.parse().expect("jiff parses the seed form");

    let token = json["token"].as_str().expect("string");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url"))
            .expect("claims JSON");
    assert_eq!(claims["sub"], "access");
    let iat = claims["iat"].as_i64().expect("iat");
    let exp = claims["exp"].as_i64().expect("exp");
    assert_eq!(exp - iat, 3600);
    assert!((iat - before.as_second()).abs() <= 1);
    assert_eq!(valid_until.as_second(), exp - exp.rem_euclid(60));
    assert!(ep.is_live(token));

    let unnamed = serde_json::json!({
        "api_key": c.papaya_api_key,
        "client_secret": c.papaya_client_secret,
    });
    let reply = post(&ep, Route::Papaya, JSON, &unnamed.to_string()).await;
    assert_eq!(reply.status, 201);
    let name = reply.json()["token_name"]
        .as_str()
        .expect("name")
        .to_owned();
    let groups: Vec<usize> = name.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{name}");

    let wrong = serde_json::json!({"api_key": c.papaya_api_key, "client_secret": "nope"});
    let reply = post(&ep, Route::Papaya, JSON, &wrong.to_string()).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": "Invalid request"})
    );
    let missing = serde_json::json!({"api_key": c.papaya_api_key});
    let reply = post(&ep, Route::Papaya, JSON, &missing.to_string()).await;
    assert_eq!(reply.status, 401);
    assert_eq!(ep.issued(Route::Papaya), 2);
}

#[tokio::test]
async fn apinizer_needs_accept_json_and_credentials() {
    let ep = start(EndpointOptions::default()).await;
    let c = Credentials::demo();
    let good = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", &c.apinizer_client_id),
        ("client_secret", &c.apinizer_client_secret),
    ]);
    let reply = post(&ep, Route::Apinizer, FORM, &good).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.keys(), ["access_token", "expires_in", "token_type"]);
    let json = reply.json();
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["expires_in"], 3600);
    token_shape_ok(json["access_token"].as_str().expect("token"));

    let no_accept = [("content-type", FORM)];
    let reply = send(
        &ep,
        reqwest::Method::POST,
        Route::Apinizer.path(),
        &no_accept,
        &good,
    )
    .await;
    assert_eq!(reply.status, 406);

    let wrong = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", &c.apinizer_client_id),
        ("client_secret", "guess"),
    ]);
    let reply = post(&ep, Route::Apinizer, FORM, &wrong).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": "unauthorized_client", "error_description": "Bad credentials"})
    );
    let password = form(&[
        ("grant_type", "password"),
        ("client_id", &c.apinizer_client_id),
        ("client_secret", &c.apinizer_client_secret),
    ]);
    let reply = post(&ep, Route::Apinizer, FORM, &password).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "unsupported_grant_type");
    assert_eq!(ep.issued(Route::Apinizer), 1);
}

#[tokio::test]
async fn patchworks_bearer_reply_and_token_only_option() {
    let c = Credentials::demo();
    let body = serde_json::json!({"email": c.patchworks_email, "password": c.patchworks_password})
        .to_string();

    let ep = start(EndpointOptions::default()).await;
    let reply = post(&ep, Route::Patchworks, JSON, &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.keys(), ["access_token", "expires_in", "token_type"]);
    assert_eq!(reply.json()["token_type"], "bearer");
    assert_eq!(reply.json()["expires_in"], 3600);

    let wrong = serde_json::json!({"email": c.patchworks_email, "password": "x"});
    let reply = post(&ep, Route::Patchworks, JSON, &wrong.to_string()).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json(),
        serde_json::json!({"message": "Unauthenticated."})
    );
    let missing = serde_json::json!({"email": c.patchworks_email});
    let reply = post(&ep, Route::Patchworks, JSON, &missing.to_string()).await;
    assert_eq!(reply.status, 422);
    assert_eq!(
        reply.json()["errors"]["password"][0],
        "The password field is required."
    );

    let options = EndpointOptions {
        patchworks_token_only: true,
        ..EndpointOptions::default()
    };
    let ep = start(options).await;
    let reply = post(&ep, Route::Patchworks, JSON, &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.keys(), ["token"]);
    assert!(ep.is_live(reply.json()["token"].as_str().expect("token")));
}

#[tokio::test]
async fn onlyoffice_nests_token_and_local_expiry() {
    let ep = start(EndpointOptions::default()).await;
    let c = Credentials::demo();
    let body =
        serde_json::json!({"userName": c.onlyoffice_username, "password": c.onlyoffice_password});
    let before = Timestamp::now();
    let reply = post(&ep, Route::OnlyOffice, JSON, &body.to_string()).await;
    assert_eq!(reply.status, 201);
    assert_eq!(
        reply.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(reply.keys(), ["count", "response", "status", "statusCode"]);
    let json = reply.json();
    assert_eq!(
        (json["count"].as_i64(), json["status"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(json["statusCode"], 201);
    let inner: Vec<&String> = json["response"]
        .as_object()
        .expect("object")
        .keys()
        .collect();
    assert_eq!(inner, ["expires", "token"]);

    let expires = json["response"]["expires"].as_str().expect("string");
    // e.g. 2010-07-07T17:06:03.5845502+03:00
    assert!(expires.ends_with("+03:00"), "{expires}");
    let fraction = &expires[expires.find('.').expect("fraction") + 1..expires.len() - 6];
    assert_eq!(fraction.len(), 7, "{expires}");
    assert!(fraction.bytes().all(|b| b.is_ascii_digit()));
    let expires: Timestamp = expires.parse().expect("jiff parses the seed form");
    let lifetime = expires.as_second() - before.as_second();
    assert!((3599..=3601).contains(&lifetime), "{lifetime}");
    assert!(ep.is_live(json["response"]["token"].as_str().expect("token")));

    let wrong = serde_json::json!({"userName": c.onlyoffice_username, "password": ""});
    let reply = post(&ep, Route::OnlyOffice, JSON, &wrong.to_string()).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": {"message": "User authentication failed"}, "status": 1, "statusCode": 401})
    );
}

#[tokio::test]
async fn oauth2_basic_needs_form_encoding_first() {
    let ep = start(EndpointOptions::default()).await;
    let c = Credentials::demo();
    assert!(
        [":", "%", "+", "é"]
            .iter()
            .all(|ch| c.oauth2_client_secret.contains(ch))
    );
    let grant = form(&[
        ("grant_type", "client_credentials"),
        ("scope", "read write"),
    ]);
    let send_basic = |authorization: String| {
        let grant = grant.clone();
        let ep = &ep;
        async move {
            let headers = [
                ("content-type", FORM),
                ("authorization", authorization.as_str()),
            ];
            send(
                ep,
                reqwest::Method::POST,
                Route::OAuth2.path(),
                &headers,
                &grant,
            )
            .await
        }
    };

    let reply = send_basic(basic(&c.oauth2_client_id, &c.oauth2_client_secret)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.keys(),
        ["access_token", "expires_in", "scope", "token_type"]
    );
    assert_eq!(reply.json()["scope"], "read write");
    assert_eq!(reply.json()["token_type"], "Bearer");
    assert_eq!(reply.header("cache-control"), Some("no-store"));

    // The same secret without the form-encoding step: '%' followed by a space is no escape.
    let reply = send_basic(raw_basic(&c.oauth2_client_id, &c.oauth2_client_secret)).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json(), serde_json::json!({"error": "invalid_client"}));
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic"))
    );

    // A secret that decodes, but to something else: '+' becomes a space, "%41" an 'A'.
    let plus = Credentials {
        oauth2_client_secret: "p+q%41".to_owned(),
        ..Credentials::demo()
    };
    ep.set_credentials(plus.clone());
    let reply = send_basic(raw_basic(
        &plus.oauth2_client_id,
        &plus.oauth2_client_secret,
    ))
    .await;
    assert_eq!(reply.status, 401);
    let reply = send_basic(basic(&plus.oauth2_client_id, &plus.oauth2_client_secret)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(ep.issued(Route::OAuth2), 2);
}

#[tokio::test]
async fn oauth2_post_auth_errors_and_recorded_audience() {
    let ep = start(EndpointOptions::default()).await;
    let c = Credentials::demo();
    let post_auth = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", &c.oauth2_client_id),
        ("client_secret", &c.oauth2_client_secret),
        ("audience", "https://api.example.com"),
    ]);
    let reply = post(&ep, Route::OAuth2, FORM, &post_auth).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.keys(), ["access_token", "expires_in", "token_type"]);
    let recorded = ep.requests().pop().expect("recorded");
    assert_eq!(
        recorded.form_value("audience").as_deref(),
        Some("https://api.example.com")
    );
    assert_eq!(recorded.header("Content-Type"), Some(FORM));

    // Both methods at once.
    let authorization = basic(&c.oauth2_client_id, &c.oauth2_client_secret);
    let headers = [
        ("content-type", FORM),
        ("authorization", authorization.as_str()),
    ];
    let reply = send(
        &ep,
        reqwest::Method::POST,
        Route::OAuth2.path(),
        &headers,
        &post_auth,
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "invalid_request");

    let wrong = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", &c.oauth2_client_id),
        ("client_secret", "guess"),
    ]);
    let reply = post(&ep, Route::OAuth2, FORM, &wrong).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json(), serde_json::json!({"error": "invalid_client"}));
    assert_eq!(reply.header("www-authenticate"), None, "no Basic was tried");

    let password = form(&[
        ("grant_type", "password"),
        ("client_id", &c.oauth2_client_id),
        ("client_secret", &c.oauth2_client_secret),
    ]);
    let reply = post(&ep, Route::OAuth2, FORM, &password).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": "unsupported_grant_type"})
    );

    let as_json = serde_json::json!({"grant_type": "client_credentials"}).to_string();
    let reply = post(&ep, Route::OAuth2, JSON, &as_json).await;
    assert_eq!(reply.status, 400);
    assert_eq!(ep.issued(Route::OAuth2), 1);
}

#[tokio::test]
async fn oauth2_refresh_tokens_rotate_and_are_single_use() {
    let options = EndpointOptions {
        issue_refresh_tokens: true,
        ..EndpointOptions::default()
    };
    let ep = start(options).await;
    let c = Credentials::demo();
    let auth = |extra: &[(&str, &str)]| {
        let mut pairs = vec![
            ("client_id", c.oauth2_client_id.as_str()),
            ("client_secret", c.oauth2_client_secret.as_str()),
        ];
        pairs.extend_from_slice(extra);
        form(&pairs)
    };
    let first = post(
        &ep,
        Route::OAuth2,
        FORM,
        &auth(&[("grant_type", "client_credentials"), ("scope", "read")]),
    )
    .await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.keys(),
        [
            "access_token",
            "expires_in",
            "refresh_token",
            "scope",
            "token_type"
        ]
    );
    let refresh1 = first.json()["refresh_token"]
        .as_str()
        .expect("rt")
        .to_owned();
    token_shape_ok(&refresh1);
    assert!(
        !ep.is_live(&refresh1),
        "a refresh token is not an access token"
    );

    let second = post(
        &ep,
        Route::OAuth2,
        FORM,
        &auth(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh1),
        ]),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.body);
    let json = second.json();
    let refresh2 = json["refresh_token"].as_str().expect("rotated");
    assert_ne!(refresh2, refresh1);
    assert_eq!(json["scope"], "read", "the granted scope carries over");
    assert_ne!(json["access_token"], first.json()["access_token"]);

    let reused = post(
        &ep,
        Route::OAuth2,
        FORM,
        &auth(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh1),
        ]),
    )
    .await;
    assert_eq!(reused.status, 400);
    assert_eq!(reused.json(), serde_json::json!({"error": "invalid_grant"}));
    let forged = post(
        &ep,
        Route::OAuth2,
        FORM,
        &auth(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "made-up"),
        ]),
    )
    .await;
    assert_eq!(forged.json()["error"], "invalid_grant");
    let wider = post(
        &ep,
        Route::OAuth2,
        FORM,
        &auth(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh2),
            ("scope", "read admin"),
        ]),
    )
    .await;
    assert_eq!(wider.json()["error"], "invalid_scope");
    assert_eq!(ep.issued(Route::OAuth2), 2);
}

#[tokio::test]
async fn faults_are_consumed_in_order_by_any_login_route() {
    let ep = start(EndpointOptions::default()).await;
    let c = Credentials::demo();
    let panaya = form(&[("username", &c.panaya_username), ("token", &c.panaya_token)]);
    ep.push_fault(Fault::Status {
        status: 503,
        content_type: "text/plain".to_owned(),
        body: "busy".to_owned(),
        headers: vec![("Retry-After".to_owned(), "7".to_owned())],
    });
    ep.push_fault(Fault::Html200);
    ep.push_fault(Fault::Redirect {
        status: 302,
        location: "https://sso.example.com/login".to_owned(),
    });
    ep.push_fault(Fault::Oversized { bytes: 100_000 });
    ep.push_fault(Fault::Delay(Duration::from_millis(300)));

    // The protected resource neither consumes nor is recorded.
    assert_eq!(call_protected(&ep, None).await, 401);

    let reply = post(&ep, Route::Panaya, FORM, &panaya).await;
    assert_eq!((reply.status, reply.body.as_str()), (503, "busy"));
    assert_eq!(reply.header("retry-after"), Some("7"));
    let reply = post(&ep, Route::OnlyOffice, JSON, "{}").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "<html><body>Please log in</body></html>");
    assert!(
        reply
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/html"))
    );
    let reply = post(&ep, Route::Papaya, JSON, "{}").await;
    assert_eq!(reply.status, 302);
    assert_eq!(
        reply.header("location"),
        Some("https://sso.example.com/login")
    );
    let reply = post(&ep, Route::OAuth2, FORM, "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), 100_000);
    assert!(reply.body.starts_with(r#"{"access_token":"aaaa"#));
    let started = std::time::Instant::now();
    let reply = post(&ep, Route::Panaya, FORM, &panaya).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(reply.status, 200, "a delay then the normal answer");
    let reply = post(&ep, Route::Panaya, FORM, &panaya).await;
    assert_eq!(reply.status, 200);

    let paths: Vec<String> = ep.requests().into_iter().map(|r| r.path).collect();
    let expected = [
        Route::Panaya,
        Route::OnlyOffice,
        Route::Papaya,
        Route::OAuth2,
        Route::Panaya,
        Route::Panaya,
    ]
    .map(|r| r.path().to_owned());
    assert_eq!(paths, expected);
    assert_eq!(ep.issued(Route::Panaya), 2);
    assert_eq!(ep.issued(Route::OAuth2), 0);
}

#[tokio::test]
async fn protected_counts_live_and_expired_tokens() {
    let options = EndpointOptions {
        lifetime: Duration::from_secs(1),
        ..EndpointOptions::default()
    };
    let ep = start(options).await;
    let c = Credentials::demo();
    let body =
        serde_json::json!({"userName": c.onlyoffice_username, "password": c.onlyoffice_password});
    let reply = post(&ep, Route::OnlyOffice, JSON, &body.to_string()).await;
    let token = reply.json()["response"]["token"]
        .as_str()
        .expect("token")
        .to_owned();

    assert_eq!(
        call_protected(&ep, Some(&format!("Bearer {token}"))).await,
        200
    );
    assert_eq!(
        call_protected(&ep, Some(&token)).await,
        200,
        "bare, ONLYOFFICE style"
    );
    assert_eq!(
        call_protected(&ep, Some("Bearer not-issued-here")).await,
        401
    );
    assert_eq!(call_protected(&ep, None).await, 401);
    assert_eq!(ep.protected_calls(), (2, 2));

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!ep.is_live(&token));
    assert_eq!(
        call_protected(&ep, Some(&format!("Bearer {token}"))).await,
        401
    );
    assert_eq!(ep.protected_calls(), (2, 3));
    assert!(ep.requests().iter().all(|r| r.path != PROTECTED_PATH));
}

#[tokio::test]
async fn rotated_credentials_replace_the_old_ones() {
    let ep = start(EndpointOptions::default()).await;
    let old = Credentials::demo();
    let new = Credentials {
        patchworks_password: "rotated-password".to_owned(),
        ..Credentials::demo()
    };
    let with = |password: &str| {
        serde_json::json!({"email": old.patchworks_email, "password": password}).to_string()
    };
    ep.set_credentials(new.clone());
    let reply = post(
        &ep,
        Route::Patchworks,
        JSON,
        &with(&old.patchworks_password),
    )
    .await;
    assert_eq!(reply.status, 401);
    let reply = post(
        &ep,
        Route::Patchworks,
        JSON,
        &with(&new.patchworks_password),
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn wrong_method_is_recorded_and_refused() {
    let ep = start(EndpointOptions::default()).await;
    for route in Route::ALL {
        let reply = send(&ep, reqwest::Method::GET, route.path(), &[], "").await;
        assert_eq!(reply.status, 405, "{route:?}");
        assert_eq!(reply.header("allow"), Some("POST"));
    }
    let requests = ep.requests();
    assert_eq!(requests.len(), Route::ALL.len());
    assert!(requests.iter().all(|r| r.method == "GET"));
    let mut paths: Vec<&str> = Route::ALL.iter().map(|r| r.path()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), Route::ALL.len(), "distinct paths");
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let ep = start(EndpointOptions::default()).await;
    let url = ep.base_url();
    assert_eq!(call_protected(&ep, None).await, 401);
    ep.shutdown().await;
    let result = client().get(format!("{url}{PROTECTED_PATH}")).send().await;
    assert!(result.is_err(), "still answering after shutdown");
}

#[test]
fn basic_decoding_is_strict_form_urldecoding() {
    let value = raw_basic;
    assert_eq!(
        decode_basic(value("a%3Ab", "x+y%25%C3%A9").as_bytes()),
        Some(("a:b".to_owned(), "x y%é".to_owned()))
    );
    // Split at the first ':' only; later ones belong to the secret.
    assert_eq!(
        decode_basic(value("id", "s:t").as_bytes()),
        Some(("id".to_owned(), "s:t".to_owned()))
    );
    assert_eq!(decode_basic(value("id", "100% sure").as_bytes()), None);
    assert_eq!(decode_basic(value("id", "%zz").as_bytes()), None);
    assert_eq!(
        decode_basic(value("id", "%C3").as_bytes()),
        None,
        "not UTF-8"
    );
    assert_eq!(decode_basic(b"Bearer abc"), None);
    assert_eq!(decode_basic(b"Basic !!!"), None);
    assert_eq!(
        decode_basic(format!("Basic {}", STANDARD.encode("nocolon")).as_bytes()),
        None
    );
}

#[test]
fn object_keeps_key_order_and_escapes() {
    let text = object(&[("b", string("q\"uote")), ("a", "1".to_owned())]);
    assert_eq!(text, r#"{"b":"q\"uote","a":1}"#);
}
