//! State files against forgery, copies, odd files, untrusted directories and bad keys.

use super::*;
use crate::config::{self, SecretCheck};
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

fn test_account(dir: &Path, url: &str) -> Account {
    let text = format!(
        r#"
[accounts.a]
preset = "oauth2"
token_url = "{url}"
client_id = "id"
client_secret = {{ file = "{}/secret" }}
[[accounts.a.outputs]]
path = "{}/out/a.token"
"#,
        dir.display(),
        dir.display()
    );
    let config = config::parse(&text, Path::new("t.toml"), SecretCheck::Skip, false).unwrap();
    Account::clone(&config.accounts["a"])
}

fn token(value: &str) -> Token {
    Token::new(
        Secret::new(value.into()),
        Timestamp::from_second(1_800_000_000).unwrap(),
        Timestamp::from_second(1_800_003_600).unwrap(),
    )
    .unwrap()
}

fn saved(token: Option<Token>) -> Saved {
    Saved {
        token,
        not_before: None,
        parked: false,
        saved_at: Timestamp::from_second(1_800_000_000).unwrap(),
        credentials: None,
    }
}

fn am_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn saves_and_loads_only_a_matching_state() {
    let scratch = tempfile::tempdir().unwrap();
    let state_dir = StateDir::open(&scratch.path().join("state")).unwrap();
    let metadata = std::fs::metadata(scratch.path().join("state")).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o7777, 0o700);
    let account = test_account(scratch.path(), "https://idp.example/token");
    let state = state_dir.file(&account);
    assert!(state.load().is_none(), "no file yet");
    let digest = state_dir.keys().credentials(&account.login);
    state
        .save(&Saved {
            credentials: Some(digest),
            ..saved(Some(token("state-token-1")))
        })
        .unwrap();
    assert_eq!(
        std::fs::metadata(state.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o600
    );
    let loaded = state.load().unwrap();
    assert_eq!(loaded.token.unwrap().expose(), "state-token-1");
    assert_eq!(loaded.credentials, Some(digest));

    // Another login for the same account name does not reuse it: another URL, another reply
    // shape or header.
    let other = test_account(scratch.path(), "https://other.example/token");
    assert!(state_dir.file(&other).load().is_none());
    let mut changed = account.clone();
    std::sync::Arc::make_mut(&mut changed.login).reply.token = vec!["/other".to_string()];
    assert!(state_dir.file(&changed).load().is_none());
    let mut changed = account.clone();
    std::sync::Arc::make_mut(&mut changed.login)
        .request
        .headers
        .clear();
    assert!(state_dir.file(&changed).load().is_none());
    // Outputs are not part of the login: moving one keeps the token.
    let mut moved = account.clone();
    moved.outputs[0].path = scratch.path().join("out/b.token");
    assert!(state_dir.file(&moved).load().is_some());

    // Reopening the directory keeps the key, so the file still verifies.
    let reopened = StateDir::open(&scratch.path().join("state")).unwrap();
    assert!(reopened.file(&account).load().is_some());
    state.remove();
    assert!(!state.path().exists());
}

#[test]
fn a_forged_or_copied_state_file_is_never_trusted() {
    let scratch = tempfile::tempdir().unwrap();
    let state_dir = StateDir::open(&scratch.path().join("state")).unwrap();
    let account = test_account(scratch.path(), "https://idp.example/token");
    let state = state_dir.file(&account);
    state.save(&saved(Some(token("real-token")))).unwrap();
    let genuine = std::fs::read_to_string(state.path()).unwrap();
    let (body, _) = genuine.trim_end().rsplit_once('\n').unwrap();
    let plant = |text: &str| {
        std::fs::write(state.path(), text).unwrap();
        std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    // Every field copied, the token replaced: the check fails.
    let forged = body.replace("real-token", "attacker-token");
    plant(&format!("{forged}\n{}\n", "0".repeat(64)));
    assert!(state.load().is_none());
    // No signature at all.
    plant(&format!("{forged}\n"));
    assert!(state.load().is_none());
    // A genuine file of another account, moved into place.
    let mut other = account.clone();
    other.name = "b".to_string();
    let other_state = state_dir.file(&other);
    other_state.save(&saved(Some(token("b-token")))).unwrap();
    std::fs::rename(other_state.path(), state.path()).unwrap();
    assert!(state.load().is_none(), "a file of account b was used for a");
    // A genuine file signed with another directory's key.
    let elsewhere = StateDir::open(&scratch.path().join("elsewhere")).unwrap();
    let foreign = elsewhere.file(&account);
    foreign.save(&saved(Some(token("foreign-token")))).unwrap();
    std::fs::copy(foreign.path(), state.path()).unwrap();
    assert!(state.load().is_none());
    // A version-1 file (the old format, unsigned) is ignored too.
    plant(
        r#"{"version":1,"account":"a","fingerprint":"x","saved_at":"2027-01-15T08:00:00Z","token":"t","obtained_at":"2027-01-15T08:00:00Z","expires_at":"2099-01-01T00:00:00Z"}"#,
    );
    assert!(state.load().is_none());
}

#[test]
fn odd_files_at_the_state_path_are_ignored_without_blocking() {
    let scratch = tempfile::tempdir().unwrap();
    let state_dir = StateDir::open(&scratch.path().join("state")).unwrap();
    let account = test_account(scratch.path(), "https://idp.example/token");
    let state = state_dir.file(&account);
    state.save(&saved(Some(token("real-token")))).unwrap();
    let genuine = std::fs::read(state.path()).unwrap();
    // The right bytes with the wrong mode.
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(state.load().is_none());
    std::fs::remove_file(state.path()).unwrap();
    // A FIFO: refused at once, not waited on.
    rustix::fs::mkfifoat(rustix::fs::CWD, state.path(), Mode::from_raw_mode(0o600)).unwrap();
    let started = Instant::now();
    assert!(state.load().is_none());
    assert!(started.elapsed() < Duration::from_secs(5));
    std::fs::remove_file(state.path()).unwrap();
    // A symlink to a genuine copy.
    let copy = scratch.path().join("copy");
    std::fs::write(&copy, &genuine).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&copy, state.path()).unwrap();
    assert!(state.load().is_none());
    std::fs::remove_file(state.path()).unwrap();
    // A directory, and something huge.
    std::fs::create_dir(state.path()).unwrap();
    assert!(state.load().is_none());
    std::fs::remove_dir(state.path()).unwrap();
    std::fs::write(state.path(), vec![b'{'; MAX_STATE_BYTES + 1]).unwrap();
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(state.load().is_none());
    // Saving replaces whatever is there (a symlink is replaced, never followed).
    std::fs::remove_file(state.path()).unwrap();
    std::os::unix::fs::symlink(&copy, state.path()).unwrap();
    state.save(&saved(Some(token("new-token")))).unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), genuine);
    assert_eq!(state.load().unwrap().token.unwrap().expose(), "new-token");
    if am_root() {
        // A genuine file that another user owns.
        rustix::fs::chown(state.path(), Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
        assert!(state.load().is_none());
    }
}

#[test]
fn untrusted_state_directories_are_refused_naming_them() {
    let scratch = tempfile::tempdir().unwrap();
    let open = scratch.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let error = StateDir::open(&open).err().unwrap();
    assert!(
        error.contains(&open.display().to_string()) && error.contains("0o777"),
        "{error}"
    );
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o770)).unwrap();
    assert!(StateDir::open(&open).is_err(), "group-writable");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o750)).unwrap();
    assert!(StateDir::open(&open).is_ok(), "group-readable is fine");
    if am_root() {
        let foreign = scratch.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        rustix::fs::chown(&foreign, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
        let error = StateDir::open(&foreign).err().unwrap();
        assert!(error.contains("uid 65534"), "{error}");
    }
    // Missing parents are created, the last one 0700 whatever the umask.
    let deep = scratch.path().join("a/b/state");
    StateDir::open(&deep).unwrap();
    assert_eq!(
        std::fs::metadata(&deep).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn opening_removes_stale_temporary_files() {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("state");
    StateDir::open(&path).unwrap();
    let stale = path.join(".a.state.0123456789abcdef.tmp");
    std::fs::write(&stale, "{\"token\":\"half-written\"").unwrap();
    StateDir::open(&path).unwrap();
    assert!(!stale.exists());
}

#[test]
fn a_bad_key_is_replaced_and_old_files_stop_verifying() {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("state");
    let state_dir = StateDir::open(&path).unwrap();
    let account = test_account(scratch.path(), "https://idp.example/token");
    state_dir
        .file(&account)
        .save(&saved(Some(token("t1"))))
        .unwrap();
    std::fs::set_permissions(path.join(KEY_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
    let reopened = StateDir::open(&path).unwrap();
    assert!(reopened.file(&account).load().is_none());
    assert_eq!(
        std::fs::metadata(path.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn digests_follow_values_and_fingerprints_follow_the_login() {
    let scratch = tempfile::tempdir().unwrap();
    let keys = Keys::ephemeral();
    let account = test_account(scratch.path(), "https://idp.example/token");
    let secret = scratch.path().join("secret");
    let missing = keys.credentials(&account.login);
    std::fs::write(&secret, "one\n").unwrap();
    let one = keys.credentials(&account.login);
    std::fs::write(&secret, "two\n").unwrap();
    let two = keys.credentials(&account.login);
    assert!(missing != one && one != two);
    std::fs::write(&secret, "one\n").unwrap();
    assert_eq!(keys.credentials(&account.login), one);
    // Another key gives other digests: they say nothing outside this directory.
    assert_ne!(Keys::ephemeral().credentials(&account.login), one);
    // A literal secret: its value changes the digest, not the fingerprint.
    let literal = |value: &str| {
        let text = format!(
            "[accounts.a]\npreset = \"oauth2\"\ntoken_url = \"https://idp.example/t\"\nclient_id = \"id\"\nclient_secret = \"{value}\"\n[[accounts.a.outputs]]\npath = \"/run/a\"\n"
        );
        config::parse(&text, Path::new("t.toml"), SecretCheck::Skip, false)
            .unwrap()
            .accounts["a"]
            .clone()
    };
    let (first, second) = (literal("secret-one"), literal("secret-two"));
    assert_eq!(
        keys.fingerprint(&first.login),
        keys.fingerprint(&second.login)
    );
    assert_ne!(
        keys.credentials(&first.login),
        keys.credentials(&second.login)
    );
    assert_ne!(
        keys.fingerprint(&first.login),
        keys.fingerprint(&account.login)
    );
}
