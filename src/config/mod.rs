//! The configuration file: TOML → raw structs (unknown keys rejected) → a validated [`Config`].
//!
//! - `raw`: the file's shape; `problem`: located problems; `values`: pure value checks;
//!   `validate`: raw structs to a `Config`.
//!
//! Invariants: a [`Config`] value is fully valid (every URL allowed, every path absolute and
//! unique, every mode sane, every preset complete); validation reports every problem it finds at
//! once, each with its line and dotted key; loading never touches the network and never holds a
//! secret value outside a [`crate::secret::Secret`].

mod problem;
mod raw;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use zeroize::Zeroizing;

pub use problem::{ConfigError, Problem};
pub(crate) use validate::valid_member;

use crate::login::preset::Preset;
use crate::login::spec::{HttpSettings, LoginSpec};
use crate::output::OutputSpec;
use crate::schedule::{Backoff, RefreshPolicy};
use problem::{LineIndex, key_at};
use raw::RawConfig;

/// Where the config is read from when neither `--config` nor the environment says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tokenkeeper/config.toml";
/// The environment variable that overrides [`DEFAULT_CONFIG_PATH`].
pub const CONFIG_ENV: &str = "TOKENKEEPER_CONFIG";

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_LIFETIME: SignedDuration = SignedDuration::from_hours(24);
const DEFAULT_MAX_REPLY_BYTES: usize = 64 * 1024;
const DEFAULT_MODE: u32 = 0o600;

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from, for messages.
    pub path: PathBuf,
    pub accounts: BTreeMap<String, Arc<Account>>,
    /// The line each account's table starts on, for plans and messages. Kept apart from
    /// [`Account`], whose equality says whether a reload must restart it: moving an account
    /// within the file (a comment added above it) changes nothing it does.
    pub lines: BTreeMap<String, usize>,
    /// How `run` schedules, retries and stops.
    pub daemon: DaemonSettings,
    /// The `[fleet]` table: how members coordinate the accounts with `fleet = true`.
    pub fleet: Option<FleetSettings>,
    /// Things that work but deserve the operator's attention (literal secrets in a readable file).
    pub warnings: Vec<String>,
}

/// One account: how to log in and where to write the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    /// The preset it was built from; `None` for a generic login.
    pub preset: Option<Preset>,
    /// Shared with the account's [`crate::login::Login`], which would otherwise copy it.
    pub login: Arc<LoginSpec>,
    pub http: HttpSettings,
    /// Longer lifetimes reported by a server are cut to this.
    pub max_lifetime: SignedDuration,
    pub outputs: Vec<OutputSpec>,
    /// What to tell the account's consumer after its files change.
    pub on_change: Option<crate::hook::HookSpec>,
    /// One member of the fleet logs in for this account and shares the token (`fleet = true`).
    pub fleet: bool,
}

/// The `[fleet]` table: the etcd cluster, this member's name, the key publications are sealed
/// with, and what to do when the cluster cannot be reached.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// etcd client URLs, tried in turn.
    pub endpoints: Vec<url::Url>,
    /// Every key the fleet uses starts with this (no trailing `/`).
    pub prefix: String,
    /// This member's name, shown to the others as the leader's.
    pub member: String,
    pub key_file: PathBuf,
    /// The key, loaded when the config was (its fingerprint tells members' keys apart).
    pub key: Arc<crate::fleet::seal::FleetKey>,
    /// The TTL of the member's lease: a leader that dies is replaced after at most this long.
    pub lease_ttl: Duration,
    /// The connection to etcd: a CA bundle and a client certificate, if any.
    pub http: crate::login::spec::HttpSettings,
    /// etcd's own user, when the cluster has authentication on.
    pub username: Option<String>,
    pub password: Option<crate::secret::SecretSource>,
    /// Once the token held has expired and the store cannot be reached, log in alone (the token
    /// is not shared). Off by default: see the README's fleet section.
    pub login_alone_after_expiry: bool,
}

impl PartialEq for FleetSettings {
    fn eq(&self, other: &FleetSettings) -> bool {
        self.endpoints == other.endpoints
            && self.prefix == other.prefix
            && self.member == other.member
            && self.key_file == other.key_file
            && self.key.fingerprint() == other.key.fingerprint()
            && self.lease_ttl == other.lease_ttl
            && self.http == other.http
            && self.username == other.username
            && self.password == other.password
            && self.login_alone_after_expiry == other.login_alone_after_expiry
    }
}

/// The default `[fleet] prefix`.
pub const DEFAULT_FLEET_PREFIX: &str = "/tokenkeeper";
/// The default `[fleet] lease_ttl`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// What to do with an account's files when its token expires and no new one could be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExpiry {
    /// Delete them, so readers fail fast instead of sending a dead token (the default).
    Remove,
    /// Leave the expired token in place.
    Keep,
}

/// The `[daemon]` table: refresh timing, retries, load and lifecycle of `tokenkeeper run`.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonSettings {
    pub refresh: RefreshPolicy,
    /// Retries after a temporary failure or an unusable reply.
    pub backoff: Backoff,
    /// How long an account whose credentials were rejected waits before trying again (unless its
    /// secret or config changes first).
    pub rejected_retry: Duration,
    /// At most this many logins run at the same time, across all accounts.
    pub max_concurrent_logins: usize,
    /// First logins at start are spread over up to this long (20 ms per account, capped here).
    pub startup_spread: Duration,
    pub on_expiry: OnExpiry,
    /// How long SIGTERM waits for accounts to finish what they are doing.
    pub shutdown_grace: Duration,
    /// The log level when RUST_LOG is not set (`error`, `warn`, `info`, `debug`, `trace`).
    pub log_level: Option<String>,
    /// Watch the config and secret files and react to changes (SIGHUP always reloads).
    pub watch: bool,
    /// Keep a state file per account so that a restart reuses a token that is still valid.
    pub state_files: bool,
    /// Where the state files live: a directory only the daemon can write (never one that
    /// consumers share), `$STATE_DIRECTORY` under systemd, else `/var/lib/tokenkeeper`.
    pub state_dir: PathBuf,
    /// The status listener (`/livez`, `/readyz`, `/metrics`, `/status`), off when `None`.
    pub listen: Option<std::net::SocketAddr>,
    /// The control socket `status`, `probe` and `refresh` talk to: `control.sock` in the state
    /// directory unless set; `None` with state files off and no explicit path.
    pub control_socket: Option<PathBuf>,
    /// A requested refresh (SIGUSR1, `tokenkeeper refresh`) logs an account in at most this
    /// often: a loop of requests cannot hammer the token endpoint.
    pub refresh_request_interval: Duration,
}

impl Default for DaemonSettings {
    fn default() -> DaemonSettings {
        DaemonSettings {
            refresh: RefreshPolicy::default(),
            backoff: Backoff::default(),
            rejected_retry: Duration::from_secs(30 * 60),
            max_concurrent_logins: 16,
            startup_spread: Duration::from_secs(30),
            on_expiry: OnExpiry::Remove,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            log_level: None,
            watch: true,
            state_files: true,
            state_dir: default_state_dir(),
            listen: None,
            control_socket: Some(default_state_dir().join(CONTROL_SOCKET_NAME)),
            refresh_request_interval: DEFAULT_REFRESH_REQUEST_INTERVAL,
        }
    }
}

/// Where state lives when the config does not say: the first directory systemd's
/// `StateDirectory=` gave (`$STATE_DIRECTORY`, colon-separated when it names several), else
/// [`DEFAULT_STATE_DIR`].
fn default_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|dirs| {
            dirs.to_str()
                .and_then(|dirs| dirs.split(':').next())
                .filter(|first| Path::new(first).is_absolute())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// The state directory of a daemon not started by systemd with `StateDirectory=`.
const DEFAULT_STATE_DIR: &str = "/var/lib/tokenkeeper";

/// Whether loading also reads every secret source (the `check` command does, to report missing or
/// empty secrets; the daemon does not, so one missing secret cannot stop the other accounts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretCheck {
    Skip,
    Resolve,
}

/// How long a stop waits for logins and writes in flight, unless `shutdown_grace` says otherwise.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The file name of the control socket in the state directory.
pub const CONTROL_SOCKET_NAME: &str = "control.sock";
/// How often a requested refresh may log an account in, unless configured.
pub const DEFAULT_REFRESH_REQUEST_INTERVAL: Duration = Duration::from_secs(10);
/// The floor of `refresh_request_interval`: no setting makes requests hammer an endpoint.
pub const MIN_REFRESH_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// The largest config file read. Ten thousand accounts take about 4 MiB.
const MAX_CONFIG_BYTES: usize = 32 * 1024 * 1024;

/// A config file's text, read once: the daemon compares its digest with the running config's
/// and validates the same bytes it compared. Zeroized on drop (it may hold literal secrets).
pub struct ConfigText {
    pub path: PathBuf,
    text: Zeroizing<String>,
    /// Whether group or others may read the file (literal secrets in it are warned about).
    readable_by_others: bool,
}

/// A digest of a config file's text: equal digests, same text.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TextDigest([u8; 32]);

impl ConfigText {
    /// The digest of the text, to tell whether a reload changes anything without keeping it.
    pub fn digest(&self) -> TextDigest {
        TextDigest(crate::input::sha256(self.text.as_bytes()))
    }

    /// Validates the text.
    ///
    /// # Errors
    /// Every problem found, with its line.
    pub fn validate(&self, secrets: SecretCheck) -> Result<Config, ConfigError> {
        parse(&self.text, &self.path, secrets, self.readable_by_others)
    }
}

/// Reads a config file: a regular file of at most 32 MiB (a FIFO or device given
/// as the config is refused at once), in UTF-8.
///
/// # Errors
/// An unreadable, special, oversized or non-UTF-8 file, as one problem naming the path.
pub fn read(path: &Path) -> Result<ConfigText, ConfigError> {
    let file_problem = |message: String| ConfigError {
        path: path.to_path_buf(),
        problems: vec![Problem {
            line: None,
            key: "file".to_string(),
            message,
        }],
    };
    let mut file = crate::input::read_file(path, MAX_CONFIG_BYTES, crate::input::Symlinks::Follow)
        .map_err(|error| file_problem(error.to_string()))?;
    // The bytes move into the text (no copy left behind); on error they are wiped.
    let text = match String::from_utf8(std::mem::take(&mut *file.bytes)) {
        Ok(text) => Zeroizing::new(text),
        Err(error) => {
            let message = format!(
                "{} is not valid UTF-8: {}",
                path.display(),
                error.utf8_error()
            );
            drop(Zeroizing::new(error.into_bytes()));
            return Err(file_problem(message));
        }
    };
    Ok(ConfigText {
        path: path.to_path_buf(),
        text,
        readable_by_others: file.mode & 0o077 != 0,
    })
}

/// Reads and validates a config file.
///
/// # Errors
/// Every problem found, with its line; an unreadable file is one problem.
pub fn load(path: &Path, secrets: SecretCheck) -> Result<Config, ConfigError> {
    read(path)?.validate(secrets)
}

/// Validates config text. `path` is only used in messages; `readable_by_others` decides whether
/// literal secrets are warned about.
///
/// # Errors
/// Every problem found, with its line.
pub fn parse(
    text: &str,
    path: &Path,
    secrets: SecretCheck,
    readable_by_others: bool,
) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError {
        path: path.to_path_buf(),
        problems: vec![Problem {
            line: error
                .span()
                .map(|span| LineIndex::new(text).line_of(span.start)),
            key: error
                .span()
                .map_or_else(|| "syntax".to_string(), |span| key_at(text, span.start)),
            message: error.message().trim().to_string(),
        }],
    })?;
    validate::validate(&raw, text, path, secrets, readable_by_others)
}
