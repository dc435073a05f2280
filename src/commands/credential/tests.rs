//! Tests of the credential helpers: each protocol's answer (kubectl, git, docker), and refusals
//! (missing, expired, foreign or empty files; tokens git's lines cannot carry) that name the
//! account and the file and never the token.

use super::*;

/// A token no message may ever show.
const CANARY: &str = "CANARY-tok.3f9a-never-shown";

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_900_000_000 + seconds).expect("in range")
}

/// A json output of `account` whose token expires at `at(60)`, in a new directory.
fn json_file(account: &str, token: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token.json");
    let document = serde_json::json!({
        "account": account,
        "token": token,
        "type": "Bearer",
        "expires_at": format!("{:.0}", at(60)),
    });
    std::fs::write(&path, format!("{document}\n")).expect("write the json output");
    (dir, path)
}

fn stored(token: &str) -> Stored {
    Stored {
        account: "k8s".to_string(),
        token: Zeroizing::new(token.to_string()),
        expires_at: at(60),
    }
}

/// A token read that went well.
fn ok(stored: Stored) -> Result<Stored, CredentialError> {
    Ok(stored)
}

fn never_read() -> Result<Stored, CredentialError> {
    panic!("this operation must not read the token")
}

#[test]
fn a_valid_json_output_gives_its_token_and_expiry() {
    let (_dir, path) = json_file("k8s", CANARY);
    let found = read("k8s", &path, at(0)).expect("a valid token");
    assert_eq!(found.token.as_str(), CANARY);
    assert_eq!(found.expires_at, at(60));
    assert!(
        !format!("{found:?}").contains(CANARY),
        "Debug redacts the token"
    );
}

#[test]
fn every_refusal_names_the_account_and_the_file_and_never_the_token() {
    let (dir, path) = json_file("k8s", CANARY);
    let expired = read("k8s", &path, at(60)).expect_err("expired at its expiry");
    assert!(
        matches!(expired, CredentialError::Expired { .. }),
        "{expired}"
    );
    let foreign = read("other", &path, at(0)).expect_err("another account's file");
    assert!(
        matches!(foreign, CredentialError::OtherAccount { .. }),
        "{foreign}"
    );
    let missing_path = dir.path().join("absent.json");
    let missing = read("k8s", &missing_path, at(0)).expect_err("no file");
    assert!(
        matches!(missing, CredentialError::Missing { .. }),
        "{missing}"
    );
    assert!(missing.to_string().contains("no token"), "{missing}");
    let raw = dir.path().join("raw");
    std::fs::write(&raw, CANARY).expect("write a raw output");
    let not_json = read("k8s", &raw, at(0)).expect_err("a raw output is not json");
    assert!(
        matches!(not_json, CredentialError::NotJson { .. }),
        "{not_json}"
    );
    // A FIFO would block a plain open: it is refused at once, naming the path.
    let fifo = dir.path().join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    let blocked = read("k8s", &fifo, at(0)).expect_err("a FIFO is not a file");
    assert!(
        matches!(blocked, CredentialError::Unreadable { .. }),
        "{blocked}"
    );
    for (error, asked, file) in [
        (expired, "k8s", &path),
        (foreign, "other", &path),
        (missing, "k8s", &missing_path),
        (not_json, "k8s", &raw),
        (blocked, "k8s", &fifo),
    ] {
        let text = error.to_string();
        assert!(text.starts_with(&format!("account {asked}:")), "{text}");
        assert!(text.contains(&file.display().to_string()), "{text}");
        assert!(!text.contains(CANARY), "{text}");
        assert!(!format!("{error:?}").contains(CANARY), "{error:?}");
    }
}

#[test]
fn an_empty_token_is_not_an_answer() {
    let (_dir, path) = json_file("k8s", "");
    let error = read("k8s", &path, at(0)).expect_err("an empty token");
    assert!(matches!(error, CredentialError::NotJson { .. }), "{error}");
}

#[test]
fn kubectl_gets_an_exec_credential_in_the_version_it_asks_for() {
    let answer = kubectl(&stored(CANARY), None).expect("an answer");
    let value: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    assert_eq!(
        value,
        serde_json::json!({
            "apiVersion": "client.authentication.k8s.io/v1",
            "kind": "ExecCredential",
            "status": {"token": CANARY, "expirationTimestamp": "2030-03-17T17:47:40Z"},
        })
    );
    assert_eq!(answer.last(), Some(&b'\n'));
    let info = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{"interactive":false}}"#;
    let beta = kubectl(&stored(CANARY), Some(info)).expect("an answer");
    let value: serde_json::Value = serde_json::from_slice(&beta).expect("json");
    assert_eq!(value["apiVersion"], "client.authentication.k8s.io/v1beta1");
    let alpha = r#"{"apiVersion":"client.authentication.k8s.io/v1alpha1"}"#;
    let refused = kubectl(&stored(CANARY), Some(alpha)).expect_err("an unknown version");
    assert!(refused.to_string().contains("v1alpha1"), "{refused}");
    assert!(!refused.to_string().contains(CANARY), "{refused}");
}

#[test]
fn git_get_answers_username_password_and_expiry() {
    let request = "protocol=https\nhost=git.example.com\n\n";
    let answer = git("get", request, None, || ok(stored(CANARY)))
        .expect("an answer")
        .expect("get answers");
    assert_eq!(
        answer.as_str(),
        format!(
            "username=oauth2\npassword={CANARY}\npassword_expiry_utc={}\n",
            at(60).as_second()
        )
    );
    let named = "protocol=https\nhost=git.example.com\nusername=alice\n";
    let theirs = git("get", named, None, || ok(stored(CANARY)))
        .expect("an answer")
        .expect("get answers");
    assert!(
        theirs.starts_with("username=alice\n"),
        "{}",
        theirs.as_str()
    );
    let ours = git("get", named, Some("x-access-token"), || ok(stored(CANARY)))
        .expect("an answer")
        .expect("get answers");
    assert!(
        ours.starts_with("username=x-access-token\n"),
        "{}",
        ours.as_str()
    );
}

#[test]
fn git_store_erase_and_unknown_operations_are_accepted_without_reading_the_token() {
    for operation in ["store", "erase", "capabilities", "future-op"] {
        let answer = git(operation, "password=x\n", None, never_read).expect("accepted");
        assert!(answer.is_none(), "{operation} answers nothing");
    }
}

#[test]
fn git_refuses_a_token_its_line_protocol_cannot_carry() {
    let token = format!("{CANARY}\npassword=forged");
    let error =
        git("get", "", None, || ok(stored(&token))).expect_err("a newline would forge a field");
    assert!(error.to_string().contains("line break"), "{error}");
    assert!(!error.to_string().contains(CANARY), "{error}");
}

#[test]
fn docker_get_answers_the_server_username_and_secret() {
    let answer = docker("get", "https://registry.example.com\n", None, "k8s", || {
        ok(stored(CANARY))
    })
    .expect("an answer")
    .expect("get answers");
    let value: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    assert_eq!(
        value,
        serde_json::json!({
            "ServerURL": "https://registry.example.com",
            "Username": "oauth2",
            "Secret": CANARY,
        })
    );
    let list = docker("list", "", None, "k8s", never_read)
        .expect("list")
        .expect("list answers");
    assert_eq!(list.as_slice(), b"{}\n");
    for operation in ["store", "erase"] {
        let answer = docker(operation, "{}", None, "k8s", never_read).expect("accepted");
        assert!(answer.is_none(), "{operation} answers nothing");
    }
    let unknown = docker("steal", "", None, "k8s", never_read).expect_err("unknown");
    assert!(unknown.to_string().starts_with("account k8s"), "{unknown}");
}
