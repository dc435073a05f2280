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
use std::path::PathBuf;

use jiff::Timestamp;
use zeroize::Zeroizing;

use crate::config::Account;
use crate::secret::Secret;
use crate::sink::OutputDir;
use crate::token::Token;

const VERSION: u64 = 1;
/// Larger files are not state files of ours.
const MAX_STATE_BYTES: u64 = 64 * 1024;

/// What a state file holds.
#[derive(Debug)]
pub struct Saved {
    /// The last good token, if one is held.
    pub token: Option<Token>,
    /// No login before this instant: the backoff or parking in force when the daemon stopped, so
    /// that a crash loop does not turn a failing account into a flood of logins.
    pub not_before: Option<Timestamp>,
    /// Whether the credentials were rejected.
    pub parked: bool,
    /// When this was written: a secret file changed after it makes `not_before` moot.
    pub saved_at: Timestamp,
}

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

    /// Reads what was saved for this account and this login. `None` for no file, another
    /// account or login, or anything malformed. The token is returned whatever its expiry: the
    /// caller decides whether to reuse it, refresh it at once, or remove its expired files.
    pub fn load(&self) -> Option<Saved> {
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
        let time = |name: &str| field(name).and_then(|text| text.parse::<Timestamp>().ok());
        if value.get("version").and_then(serde_json::Value::as_u64) != Some(VERSION)
            || field("account") != Some(self.account.as_str())
            || field("fingerprint") != Some(self.fingerprint.as_str())
        {
            tracing::debug!(account = %self.account, path = %path.display(), "ignoring a state file written for another login");
            return None;
        }
        let token = match (field("token"), time("obtained_at"), time("expires_at")) {
            (Some(token), Some(obtained_at), Some(expires_at)) => {
                Some(Token::new(Secret::new(token.to_string()), obtained_at, expires_at).ok()?)
            }
            _ => None,
        };
        Some(Saved {
            token,
            not_before: time("not_before"),
            parked: value.get("parked").and_then(serde_json::Value::as_bool) == Some(true),
            saved_at: time("saved_at")?,
        })
    }

    /// Saves the token (if any) and when the next login may happen.
    ///
    /// # Errors
    /// The sink's error, naming the path.
    pub fn save(&self, saved: &Saved) -> Result<(), crate::sink::SinkError> {
        let mut document = serde_json::json!({
            "version": VERSION,
            "account": self.account,
            "fingerprint": self.fingerprint,
            "saved_at": saved.saved_at.to_string(),
            "parked": saved.parked,
        });
        if let Some(token) = &saved.token {
            document["obtained_at"] = token.obtained_at.to_string().into();
            document["expires_at"] = token.expires_at.to_string().into();
            document["token"] = token.expose().into();
        }
        if let Some(not_before) = saved.not_before {
            document["not_before"] = not_before.to_string().into();
        }
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
    use std::path::Path;

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
    fn saves_and_loads_only_a_matching_state() {
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
        let saved = |token: Option<Token>, not_before: Option<Timestamp>| Saved {
            token,
            not_before,
            parked: false,
            saved_at: now,
        };
        assert!(state.load().is_none(), "no file yet");
        state.save(&saved(Some(token.clone()), None)).unwrap();
        let metadata = std::fs::symlink_metadata(state.path()).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o777,
            0o600
        );
        let loaded = state.load().unwrap();
        let loaded_token = loaded.token.unwrap();
        assert_eq!(loaded_token.expose(), "state-token-1");
        assert_eq!(loaded_token.expires_at, token.expires_at);
        assert_eq!(loaded.not_before, None);
        assert_eq!(loaded.saved_at, now);
        // A failure remembered without a token.
        let later = Timestamp::from_second(1_800_000_900).unwrap();
        state
            .save(&Saved {
                parked: true,
                ..saved(None, Some(later))
            })
            .unwrap();
        let loaded = state.load().unwrap();
        assert!(loaded.token.is_none() && loaded.parked);
        assert_eq!(loaded.not_before, Some(later));
        state.save(&saved(Some(token.clone()), None)).unwrap();
        // Another login for the same account name does not reuse it: another URL, or the same
        // URL with another reply shape or header.
        let other =
            StateFile::for_account(&test_account(dir.path(), "https://other.example/token"))
                .unwrap();
        assert!(other.load().is_none());
        let mut changed = account.clone();
        changed.login.reply.token = vec!["/other".to_string()];
        assert!(StateFile::for_account(&changed).unwrap().load().is_none());
        let mut changed = account.clone();
        changed.login.request.headers.clear();
        assert!(StateFile::for_account(&changed).unwrap().load().is_none());
        // Outputs are not part of the login: moving one keeps the token.
        let mut moved = account.clone();
        moved.outputs[0].path = dir.path().join("b.token");
        assert!(StateFile::for_account(&moved).unwrap().load().is_some());
        // Garbage is ignored.
        std::fs::write(state.path(), "{not json").unwrap();
        assert!(state.load().is_none());
        // A symlink is never followed, neither to read nor to write.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "x").unwrap();
        std::fs::remove_file(state.path()).unwrap();
        std::os::unix::fs::symlink(&victim, state.path()).unwrap();
        assert!(state.load().is_none());
        state.save(&saved(Some(token), None)).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "x");
        state.remove();
        assert!(!state.path().exists());
    }
}
