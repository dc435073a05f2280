//! The per-account state file: the last good token and its expiry, kept beside the account's
//! first output so that a restart (or a crash loop) reuses a token that is still valid instead of
//! logging in again.
//!
//! Invariants: written only through [`crate::sink`] (atomic, mode 0600, no symlinks followed);
//! read with `O_NOFOLLOW`; anything unexpected in it (another account, another login, a bad token,
//! a past expiry) makes it ignored, never trusted.

use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use zeroize::Zeroizing;

use crate::config::Account;
use crate::secret::Secret;
use crate::sink::OutputDir;
use crate::token::Token;

const VERSION: u64 = 1;
/// Larger files are not state files of ours.
const MAX_STATE_BYTES: u64 = 64 * 1024;

/// Where one account's state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    dir: PathBuf,
    name: OsString,
    account: String,
    /// Describes the login (endpoint, fields, secret sources — never secret values): a state file
    /// written for another login is not reused.
    fingerprint: String,
}

impl StateFile {
    /// The state file of an account: `.tokenkeeper-<account>.state` in its first output's directory.
    pub fn for_account(account: &Account) -> Option<StateFile> {
        let first = account.outputs.first()?;
        let dir = first.path.parent()?.to_path_buf();
        Some(StateFile {
            dir,
            name: OsString::from(format!(".tokenkeeper-{}.state", account.name)),
            account: account.name.clone(),
            fingerprint: fingerprint(account),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// Reads a token worth reusing: same account, same login, a valid token that expires after
    /// `not_before`. `None` for anything else, including no file.
    pub fn load(&self, not_before: Timestamp) -> Option<Token> {
        let path = self.path();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .ok()?;
        let mut bytes = Zeroizing::new(Vec::new());
        file.by_ref()
            .take(MAX_STATE_BYTES)
            .read_to_end(&mut bytes)
            .ok()?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let field = |name: &str| value.get(name).and_then(|field| field.as_str());
        if value.get("version").and_then(serde_json::Value::as_u64) != Some(VERSION)
            || field("account") != Some(self.account.as_str())
            || field("fingerprint") != Some(self.fingerprint.as_str())
        {
            tracing::debug!(account = %self.account, path = %path.display(), "ignoring a state file written for another login");
            return None;
        }
        let obtained_at: Timestamp = field("obtained_at")?.parse().ok()?;
        let expires_at: Timestamp = field("expires_at")?.parse().ok()?;
        let token = Token::new(
            Secret::new(field("token")?.to_string()),
            obtained_at,
            expires_at,
        )
        .ok()?;
        (token.expires_at > not_before).then_some(token)
    }

    /// Saves the token.
    ///
    /// # Errors
    /// The sink's error, naming the path.
    pub fn save(&self, token: &Token) -> Result<(), crate::sink::SinkError> {
        let document = serde_json::json!({
            "version": VERSION,
            "account": self.account,
            "fingerprint": self.fingerprint,
            "obtained_at": token.obtained_at.to_string(),
            "expires_at": token.expires_at.to_string(),
            "token": token.expose(),
        });
        let bytes = Zeroizing::new(document.to_string().into_bytes());
        let dir = OutputDir::open(&self.dir)?;
        dir.publish(&self.name, &bytes, 0o600, None, None)?;
        Ok(())
    }

    /// Deletes the state file, if any.
    pub fn remove(&self) {
        if let Ok(dir) = OutputDir::open(&self.dir) {
            let _ = dir.remove(&self.name);
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Identifies the login a token came from: a hash of the whole login spec as data (endpoint,
/// headers, fields, client authentication, reply shape, secret *sources*; literal secrets are
/// redacted in that text, so they never reach the file). FNV-1a, so the value is the same in every
/// run of the same build.
fn fingerprint(account: &Account) -> String {
    let description = format!("{:?}", account.login);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in description.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, SecretCheck};

    fn test_account(dir: &Path, url: &str) -> Account {
        let text = format!(
            r#"
[accounts.a]
preset = "oauth2"
token_url = "{url}"
client_id = "id"
client_secret = {{ env = "HOME" }}
[[accounts.a.outputs]]
path = "{}/a.token"
"#,
            dir.display()
        );
        let config = config::parse(&text, Path::new("t.toml"), SecretCheck::Skip, false).unwrap();
        config.accounts["a"].clone()
    }

    #[test]
    fn saves_and_reuses_only_a_matching_valid_token() {
        let dir = tempfile::tempdir().unwrap();
        let account = test_account(dir.path(), "https://idp.example/token");
        let state = StateFile::for_account(&account).unwrap();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let token = Token::new(
            Secret::new("state-token-1".into()),
            now,
            Timestamp::from_second(1_800_003_600).unwrap(),
        )
        .unwrap();
        assert!(state.load(now).is_none(), "no file yet");
        state.save(&token).unwrap();
        let metadata = std::fs::symlink_metadata(state.path()).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o777,
            0o600
        );
        let loaded = state.load(now).unwrap();
        assert_eq!(loaded.expose(), "state-token-1");
        assert_eq!(loaded.expires_at, token.expires_at);
        // Expired by the time it is read.
        assert!(
            state
                .load(Timestamp::from_second(1_800_003_600).unwrap())
                .is_none()
        );
        // Another login for the same account name does not reuse it.
        let other =
            StateFile::for_account(&test_account(dir.path(), "https://other.example/token"))
                .unwrap();
        assert!(other.load(now).is_none());
        // Garbage is ignored.
        std::fs::write(state.path(), "{not json").unwrap();
        assert!(state.load(now).is_none());
        // A symlink is never followed.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "x").unwrap();
        std::fs::remove_file(state.path()).unwrap();
        std::os::unix::fs::symlink(&victim, state.path()).unwrap();
        assert!(state.load(now).is_none());
        state.save(&token).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "x");
        state.remove();
        assert!(!state.path().exists());
    }
}
