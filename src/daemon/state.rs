//! The state directory and the per-account state files in it: the last good token, its expiry and
//! the retry delay in force, so that a restart (or a crash loop) reuses a token that is still
//! valid instead of logging in again, and does not retry a failing account at once.
//!
//! Invariants:
//! - State lives only in a directory the daemon owns: created 0700 when missing, refused when it
//!   is writable by group or others or owned by another user. Consumers never share it (a
//!   Kubernetes `emptyDir` root is 0777, so a pod uses a subdirectory of a second `emptyDir` that
//!   only the sidecar mounts).
//! - A state file is never trusted to choose a token it did not write. It is read relative to the
//!   directory's descriptor with `O_NOFOLLOW|O_NONBLOCK`, must be a regular file owned by the
//!   daemon's user with mode 0600 and at most [`MAX_STATE_BYTES`], and must carry an HMAC-SHA256
//!   made with a key kept in the same directory (`hmac.key`, 0600) over its whole text, which names
//!   the account and the login it belongs to. Anything else is ignored with a warning naming the
//!   path.
//! - Written only through [`crate::output`], mode 0600, no symlink or hard link written through:
//!   the key atomically and durably, once; each state file rewritten in place without fsync
//!   (a torn one fails its HMAC and costs a login; ARCHITECTURE.md, "State files are a cache").

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use ring::hmac;
use rustix::fs::{Mode, OFlags};
use zeroize::Zeroizing;

use crate::config::Account;
use crate::input::{InputError, Symlinks, read_file_at};
use crate::login::spec::LoginSpec;
use crate::output::OutputDir;
use crate::secret::Secret;
use crate::token::Token;

/// The state file format. Files of other versions are ignored (and replaced at the next save).
const VERSION: u64 = 2;
/// Larger files are not state files of ours.
pub const MAX_STATE_BYTES: usize = 64 * 1024;
/// The file holding the HMAC key, beside the state files.
const KEY_FILE: &str = "hmac.key";
const KEY_BYTES: usize = 32;
/// Every state file's MAC covers this prefix too, so a MAC made for something else under the same
/// key (a fingerprint) can never pass for a state file's.
const STATE_DOMAIN: &[u8] = b"tokenkeeper state file\n";
const LOGIN_DOMAIN: &[u8] = b"tokenkeeper login\n";
const CREDENTIALS_DOMAIN: &[u8] = b"tokenkeeper credentials\n";

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
    /// When this was written.
    pub saved_at: Timestamp,
    /// A keyed digest of the secret values at the time: when they differ now (a secret was
    /// rotated or corrected meanwhile), the saved retry delay and parking no longer apply.
    pub credentials: Option<CredentialsDigest>,
}

/// A keyed digest of an account's secret values. Without the key it says nothing about them; the
/// same values give the same digest in every run that uses the same state directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredentialsDigest([u8; 32]);

impl CredentialsDigest {
    fn hex(&self) -> String {
        crate::hex::encode(&self.0)
    }

    #[cfg(test)]
    pub fn from_bytes(bytes: [u8; 32]) -> CredentialsDigest {
        CredentialsDigest(bytes)
    }

    fn from_hex(text: &str) -> Option<CredentialsDigest> {
        let bytes = crate::hex::decode(text)?;
        Some(CredentialsDigest(bytes[..].try_into().ok()?))
    }
}

/// The HMAC key that binds state files to this daemon and makes digests of logins and secrets.
pub struct Keys {
    key: hmac::Key,
}

impl Keys {
    /// A key that lives only in this process, for digests when state files are off.
    pub fn ephemeral() -> Keys {
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
        Keys::from_bytes(&bytes[..])
    }

    fn from_bytes(bytes: &[u8]) -> Keys {
        Keys {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// Identifies what a login does (see [`LoginSpec::canonical`]): a state file written for
    /// another login of the same account name is not reused.
    pub fn fingerprint(&self, spec: &LoginSpec) -> String {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(LOGIN_DOMAIN);
        spec.canonical(&mut |bytes| context.update(bytes));
        crate::hex::encode(&context.sign().as_ref()[..16])
    }

    /// A keyed digest of every secret value the login reads now (files, environment variables,
    /// credentials, literals). A secret that cannot be read counts as unreadable, so a file that
    /// appears later changes the digest too.
    pub fn credentials(&self, spec: &LoginSpec) -> CredentialsDigest {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(CREDENTIALS_DOMAIN);
        for (name, source) in spec.secret_sources() {
            context.update(&(name.len() as u64).to_le_bytes());
            context.update(name.as_bytes());
            let description = source.describe();
            context.update(&(description.len() as u64).to_le_bytes());
            context.update(description.as_bytes());
            match source.resolve() {
                Ok(secret) => {
                    context.update(&[1]);
                    context.update(&(secret.expose().len() as u64).to_le_bytes());
                    context.update(secret.expose().as_bytes());
                }
                Err(_) => context.update(&[0]),
            }
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(context.sign().as_ref());
        CredentialsDigest(digest)
    }

    fn sign(&self, text: &[u8]) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(STATE_DOMAIN);
        context.update(text);
        context.sign()
    }

    fn verify(&self, text: &[u8], tag: &[u8]) -> bool {
        let mut message = Vec::with_capacity(STATE_DOMAIN.len() + text.len());
        message.extend_from_slice(STATE_DOMAIN);
        message.extend_from_slice(text);
        let verified = hmac::verify(&self.key, &message, tag).is_ok();
        zeroize::Zeroize::zeroize(&mut message);
        verified
    }
}

/// The daemon's state directory, opened once and checked.
pub struct StateDir {
    dir: OutputDir,
    keys: Keys,
    /// Device and inode, to tell an output directory that is the state directory under another
    /// name (a symlink, a bind mount).
    identity: (u64, u64),
}

impl StateDir {
    /// Opens the state directory, creating it with mode 0700 if it is missing, and loads its
    /// key (creating one if there is none, or replacing one that is not the daemon's own).
    ///
    /// The path itself may lead through symlinks (systemd's `DynamicUser=` makes
    /// `/var/lib/NAME` one): what is checked is the directory reached, and everything after the
    /// open happens relative to its descriptor.
    ///
    /// # Errors
    /// The directory cannot be created or opened, is writable by group or others, or belongs to
    /// another user; or the key cannot be written. The message names the path.
    pub fn open(path: &Path) -> Result<Arc<StateDir>, String> {
        use std::os::unix::fs::DirBuilderExt as _;
        let created = !path.exists();
        if created {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|error| {
                    format!(
                        "cannot create state directory {}: {error}; set [daemon] state_dir to a directory the daemon may create, or state_files = false",
                        path.display()
                    )
                })?;
        }
        let fd: OwnedFd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| format!("cannot open state directory {}: {errno}", path.display()))?;
        if created {
            // Independent of the umask, which may have taken bits the daemon needs.
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700)).map_err(|errno| {
                format!(
                    "cannot set the mode of state directory {}: {errno}",
                    path.display()
                )
            })?;
        }
        let stat = check_ownership(&fd, path)?;
        let dir = OutputDir::from_fd(fd, path.to_path_buf());
        // A crash between writing a state file's temp file and renaming it leaves a token behind;
        // nothing else writes here while the directory is being opened.
        match dir.remove_stale_temps() {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(dir = %path.display(), removed, "removed stale temporary files")
            }
            Err(error) => tracing::warn!("{error}"),
        }
        // The key is written durably, once; the state files are not (their loss costs a login,
        // and a restart trusts one only when the outputs agree with it: ARCHITECTURE.md).
        let keys = load_or_create_key(&dir)?;
        Ok(Arc::new(StateDir {
            dir: dir.unsynced(),
            keys,
            identity: (stat.st_dev, stat.st_ino),
        }))
    }

    /// Opens an existing state directory to read it (`probe files`): nothing is created, cleaned
    /// up or replaced.
    ///
    /// # Errors
    /// The directory or its key is missing or cannot be trusted; the message names the path.
    pub fn open_existing(path: &Path) -> Result<Arc<StateDir>, String> {
        let fd: OwnedFd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| format!("cannot open state directory {}: {errno}", path.display()))?;
        let stat = check_ownership(&fd, path)?;
        let dir = OutputDir::from_fd(fd, path.to_path_buf());
        let keys = read_key(&dir)?
            .ok_or_else(|| format!("state directory {} has no key yet", path.display()))?;
        Ok(Arc::new(StateDir {
            dir,
            keys,
            identity: (stat.st_dev, stat.st_ino),
        }))
    }

    /// The key of this directory.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Whether `dir` is this directory, whatever path it was opened by.
    pub fn is(&self, dir: &OutputDir) -> bool {
        rustix::fs::fstat(dir.fd()).is_ok_and(|stat| (stat.st_dev, stat.st_ino) == self.identity)
    }

    /// The state file of an account.
    pub fn file(self: &Arc<Self>, account: &Account) -> StateFile {
        StateFile {
            dir: Arc::clone(self),
            name: state_name(&account.name),
            account: account.name.clone(),
            fingerprint: self.keys.fingerprint(&account.login),
        }
    }

    /// Deletes an account's state file, if any (the account was removed from the config).
    pub fn remove(&self, account: &str) {
        let _ = self.dir.remove(&state_name(account));
    }
}

fn state_name(account: &str) -> OsString {
    // Account names are letters, digits, `.`, `_` and `-` and start with a letter or digit, so
    // this is one plain path component that never starts with a dot.
    OsString::from(format!("{account}.state"))
}

/// Reads the directory's key, or writes a new one when there is none or the one there is not a
/// regular 0600 file of ours of the right size (then every existing state file stops verifying,
/// which costs one login per account and nothing else).
/// Checks that the state directory open as `fd` is the daemon's own and that nobody else can
/// write to it.
fn check_ownership(fd: &OwnedFd, path: &Path) -> Result<rustix::fs::Stat, String> {
    let stat = rustix::fs::fstat(fd)
        .map_err(|errno| format!("cannot inspect state directory {}: {errno}", path.display()))?;
    let ours = rustix::process::geteuid().as_raw();
    if stat.st_uid != ours {
        return Err(format!(
            "state directory {} belongs to uid {}, not to this process's uid {ours}: state files there cannot be trusted",
            path.display(),
            stat.st_uid
        ));
    }
    if stat.st_mode & 0o022 != 0 {
        return Err(format!(
            "state directory {} has mode {:#o}: others could plant state files in it; make it 0700 or choose another state_dir",
            path.display(),
            stat.st_mode & 0o7777
        ));
    }
    Ok(stat)
}

/// Reads the key of the state directory, if it has a good one.
fn read_key(dir: &OutputDir) -> Result<Option<Keys>, String> {
    let path = dir.path().join(KEY_FILE);
    let ours = rustix::process::geteuid().as_raw();
    match read_file_at(dir.fd(), OsStr::new(KEY_FILE), &path, 64, Symlinks::Refuse) {
        Ok(file) if file.uid == ours && file.mode == 0o600 && file.bytes.len() == KEY_BYTES => {
            Ok(Some(Keys::from_bytes(&file.bytes)))
        }
        Ok(_) => Err(format!(
            "the state key {} is not a 0600 file of this user's with {KEY_BYTES} bytes",
            path.display()
        )),
        Err(error) if error.is_not_found() => Ok(None),
        Err(error) => Err(error.to_string()),
    }
}

fn load_or_create_key(dir: &OutputDir) -> Result<Keys, String> {
    let name = OsStr::new(KEY_FILE);
    match read_key(dir) {
        Ok(Some(keys)) => return Ok(keys),
        Ok(None) => {}
        Err(error) => {
            tracing::warn!("{error}; writing a new state key (saved tokens are not reused)")
        }
    }
    let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes[..])
        .map_err(|_| "the system's random number generator failed".to_string())?;
    dir.publish(name, &bytes[..], 0o600, None, None)
        .map_err(|error| format!("cannot write the state key: {error}"))?;
    Ok(Keys::from_bytes(&bytes[..]))
}

/// Where one account's state lives.
pub struct StateFile {
    dir: Arc<StateDir>,
    name: OsString,
    account: String,
    /// Describes the login (see [`Keys::fingerprint`]).
    fingerprint: String,
}

impl StateFile {
    pub fn path(&self) -> PathBuf {
        self.dir.dir.path().join(&self.name)
    }

    /// Reads what was saved for this account and this login. `None` for no file, anything not
    /// written by this daemon for this account and login, and anything malformed; a file that is
    /// there but not acceptable is warned about. The token is returned whatever its expiry: the
    /// caller decides whether to reuse it, refresh it at once, or remove its expired files.
    pub fn load(&self) -> Option<Saved> {
        let path = self.path();
        let ignore = |reason: &str| {
            tracing::warn!(account = %self.account, path = %path.display(), "ignoring the state file: {reason}");
        };
        let file = match read_file_at(
            self.dir.dir.fd(),
            &self.name,
            &path,
            MAX_STATE_BYTES,
            Symlinks::Refuse,
        ) {
            Ok(file) => file,
            Err(error) if error.is_not_found() => return None,
            Err(InputError::TooLarge { .. }) => {
                ignore(&format!("it is larger than {MAX_STATE_BYTES} bytes"));
                return None;
            }
            Err(error) => {
                ignore(&error.to_string());
                return None;
            }
        };
        let ours = rustix::process::geteuid().as_raw();
        if file.uid != ours {
            ignore(&format!("it belongs to uid {}, not {ours}", file.uid));
            return None;
        }
        if file.mode != 0o600 {
            ignore(&format!("its mode is {:#o}, not 0600", file.mode));
            return None;
        }
        let Some((text, tag)) = split_signed(&file.bytes) else {
            self.explain_unsigned(&file.bytes, &ignore);
            return None;
        };
        if !self.dir.keys.verify(text, &tag) {
            ignore("its check does not match: it was not written by this daemon");
            return None;
        }
        let value = crate::secret::ZeroizingJson::parse(text).ok()?;
        let field = |name: &str| value.get(name).and_then(|field| field.as_str());
        let time = |name: &str| field(name).and_then(|text| text.parse::<Timestamp>().ok());
        if value.get("version").and_then(serde_json::Value::as_u64) != Some(VERSION)
            || field("account") != Some(self.account.as_str())
            || field("login") != Some(self.fingerprint.as_str())
        {
            tracing::info!(account = %self.account, path = %path.display(), "not reusing a state file written for another login");
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
            credentials: field("credentials").and_then(CredentialsDigest::from_hex),
        })
    }

    /// Says why a file without a valid signature line is ignored: an older version's file is
    /// expected after an upgrade, anything else was planted or damaged.
    fn explain_unsigned(&self, bytes: &[u8], ignore: &dyn Fn(&str)) {
        // The file may hold a token: parsed into wiped strings.
        let version = crate::secret::ZeroizingJson::parse(bytes)
            .ok()
            .and_then(|value| value.get("version").and_then(serde_json::Value::as_u64));
        match version {
            Some(version) if version != VERSION => tracing::info!(
                account = %self.account,
                path = %self.path().display(),
                "ignoring a state file of version {version} (this daemon writes version {VERSION})"
            ),
            _ => ignore("it is not signed: it was not written by this daemon"),
        }
    }

    /// Saves the token (if any) and when the next login may happen.
    ///
    /// # Errors
    /// The output writer's error, naming the path.
    pub fn save(&self, saved: &Saved) -> Result<(), crate::output::OutputError> {
        let mut document = crate::secret::ZeroizingJson::new(serde_json::json!({
            "version": VERSION,
            "account": self.account,
            "login": self.fingerprint,
            "saved_at": saved.saved_at.to_string(),
            "parked": saved.parked,
        }));
        if let Some(token) = &saved.token {
            document["obtained_at"] = token.obtained_at.to_string().into();
            document["expires_at"] = token.expires_at.to_string().into();
            document["token"] = token.expose().into();
        }
        if let Some(not_before) = saved.not_before {
            document["not_before"] = not_before.to_string().into();
        }
        if let Some(credentials) = saved.credentials {
            document["credentials"] = credentials.hex().into();
        }
        // Sized up front, so that no reallocation leaves a copy of the token behind: serde_json
        // escapes a byte into at most six, and the rest of the document is short.
        let token_bytes = saved.token.as_ref().map_or(0, |token| token.expose().len());
        let mut bytes = Zeroizing::new(Vec::with_capacity(6 * token_bytes + 1024));
        // Writing into a Vec never fails, and a document of strings has no keys JSON refuses.
        serde_json::to_writer(&mut *bytes, &*document).expect("serializing strings into a Vec");
        drop(document);
        let tag = crate::hex::encode(self.dir.keys.sign(&bytes).as_ref());
        bytes.push(b'\n');
        bytes.extend_from_slice(tag.as_bytes());
        bytes.push(b'\n');
        // Rewritten in place: a torn file (a crash mid-write, or a reader racing the write)
        // fails its signature and is ignored, which costs a login and nothing else.
        self.dir.dir.overwrite(&self.name, &bytes, 0o600)?;
        Ok(())
    }

    /// Deletes the state file, if any.
    #[cfg(test)]
    pub fn remove(&self) {
        let _ = self.dir.dir.remove(&self.name);
    }
}

/// Splits `<text>\n<hex tag>\n` into the text and the tag's bytes.
fn split_signed(bytes: &[u8]) -> Option<(&[u8], zeroize::Zeroizing<Vec<u8>>)> {
    let body = bytes.strip_suffix(b"\n")?;
    let split = body.iter().rposition(|byte| *byte == b'\n')?;
    let tag = std::str::from_utf8(&body[split + 1..]).ok()?;
    Some((&body[..split], crate::hex::decode(tag)?))
}

#[cfg(test)]
mod tests;
