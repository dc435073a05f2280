//! The configuration file: TOML → raw structs (unknown keys rejected) → a validated [`Config`].
//!
//! Invariants: a [`Config`] value is fully valid (every URL allowed, every path absolute and
//! unique, every mode sane, every preset complete); validation reports every problem it finds at
//! once, each with its line and dotted key; loading never touches the network and never holds a
//! secret value outside a [`crate::secret::Secret`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use jiff::SignedDuration;
use reqwest::Method;
use reqwest::header::HeaderName;
use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::login::preset::{ClientAuth, Need, Preset, PresetInput};
use crate::login::spec::{
    BasicAuth, Encoding, FieldValue, HttpSettings, LoginSpec, ProxySetting, ReplySpec, RequestSpec,
};
use crate::output::{Format, OutputSpec};
use crate::schedule::{Backoff, RefreshPolicy};
use crate::secret::SecretSource;

/// Where the config is read from when neither `--config` nor the environment says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tokenkeeper/config.toml";
/// The environment variable that overrides [`DEFAULT_CONFIG_PATH`].
pub const CONFIG_ENV: &str = "TOKENKEEPER_CONFIG";

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_LIFETIME: SignedDuration = SignedDuration::from_hours(24);
const DEFAULT_MAX_REPLY_BYTES: usize = 64 * 1024;
const DEFAULT_MODE: u32 = 0o600;
/// The longest duration any setting accepts.
const MAX_SETTING_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from, for messages.
    pub path: PathBuf,
    pub accounts: BTreeMap<String, Account>,
    /// The line each account's table starts on, for plans and messages. Kept apart from
    /// [`Account`], whose equality says whether a reload must restart it: moving an account
    /// within the file (a comment added above it) changes nothing it does.
    pub lines: BTreeMap<String, usize>,
    /// How `run` schedules, retries and stops.
    pub daemon: DaemonSettings,
    /// Things that work but deserve the operator's attention (literal secrets in a readable file).
    pub warnings: Vec<String>,
}

/// One account: how to log in and where to write the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    /// The preset it was built from; `None` for a generic login.
    pub preset: Option<Preset>,
    pub login: LoginSpec,
    pub http: HttpSettings,
    /// Longer lifetimes reported by a server are cut to this.
    pub max_lifetime: SignedDuration,
    pub outputs: Vec<OutputSpec>,
}

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
            shutdown_grace: Duration::from_secs(10),
            log_level: None,
            watch: true,
            state_files: true,
            state_dir: default_state_dir(),
        }
    }
}

/// Where state lives when the config does not say: the first directory systemd's
/// `StateDirectory=` gave (`$STATE_DIRECTORY`, colon-separated when it names several), else
/// [`DEFAULT_STATE_DIR`].
pub fn default_state_dir() -> PathBuf {
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
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tokenkeeper";

/// One thing wrong with a config, located by line and dotted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// A config that could not be loaded: every problem found, in file order.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(
            f,
            "invalid config {}: {count} problem{}",
            self.path.display(),
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Whether loading also reads every secret source (the `check` command does, to report missing or
/// empty secrets; the daemon does not, so one missing secret cannot stop the other accounts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretCheck {
    Skip,
    Resolve,
}

/// The largest config file read. Ten thousand accounts take about 4 MiB.
pub const MAX_CONFIG_BYTES: usize = 32 * 1024 * 1024;

/// A config file's text, read once: the daemon compares it with the running config's text and
/// validates the same bytes it compared.
pub struct ConfigText {
    pub path: PathBuf,
    pub text: String,
    /// Whether group or others may read the file (literal secrets in it are warned about).
    readable_by_others: bool,
}

impl ConfigText {
    /// Validates the text.
    ///
    /// # Errors
    /// Every problem found, with its line.
    pub fn validate(&self, secrets: SecretCheck) -> Result<Config, ConfigError> {
        parse(&self.text, &self.path, secrets, self.readable_by_others)
    }
}

/// Reads a config file: a regular file of at most [`MAX_CONFIG_BYTES`] (a FIFO or device given
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
    let file = crate::input::read_file(path, MAX_CONFIG_BYTES, crate::input::Symlinks::Follow)
        .map_err(|error| file_problem(error.to_string()))?;
    let text = std::str::from_utf8(&file.bytes)
        .map_err(|error| file_problem(format!("{} is not valid UTF-8: {error}", path.display())))?
        .to_string();
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
    let mut validator = Validator {
        lines: LineIndex::new(text),
        problems: Vec::new(),
        warnings: Vec::new(),
        secrets,
        readable_by_others,
        output_paths: HashMap::new(),
        state_dir: None,
    };
    let defaults = validator.defaults(&raw.defaults);
    let daemon = validator.daemon(&raw.daemon);
    let mut accounts = BTreeMap::new();
    if raw.accounts.is_empty() {
        validator.problem(
            Some(0..0),
            "accounts",
            "no accounts are configured: add an [accounts.NAME] table",
        );
    }
    let mut lines = BTreeMap::new();
    for (name, account) in &raw.accounts {
        lines.insert(name.clone(), validator.lines.line_of(account.span().start));
        if let Some(account) = validator.account(name, account, &defaults) {
            accounts.insert(name.clone(), account);
        }
    }
    if validator.problems.is_empty() {
        Ok(Config {
            path: path.to_path_buf(),
            accounts,
            lines,
            daemon,
            warnings: validator.warnings,
        })
    } else {
        let mut problems = validator.problems;
        problems.sort_by_key(|problem| problem.line.unwrap_or(0));
        Err(ConfigError {
            path: path.to_path_buf(),
            problems,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Raw structs: exactly the file's shape. Spans locate problems found after deserialization.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    accounts: BTreeMap<String, Spanned<RawAccount>>,
}

/// The `[daemon]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    refresh_at: Option<Spanned<f64>>,
    refresh_jitter: Option<Spanned<f64>>,
    refresh_margin: Option<Spanned<String>>,
    min_refresh_interval: Option<Spanned<String>>,
    retry_base: Option<Spanned<String>>,
    retry_cap: Option<Spanned<String>>,
    rejected_retry: Option<Spanned<String>>,
    max_concurrent_logins: Option<Spanned<i64>>,
    startup_spread: Option<Spanned<String>>,
    on_expiry: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
    watch: Option<bool>,
    state_files: Option<bool>,
    state_dir: Option<Spanned<String>>,
}

/// Settings every account inherits unless it sets its own.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    connect_timeout: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_lifetime: Option<Spanned<String>>,
    max_reply_bytes: Option<Spanned<i64>>,
    ca_file: Option<Spanned<String>>,
    proxy: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    preset: Option<Spanned<String>>,
    base_url: Option<Spanned<String>>,
    token_url: Option<Spanned<String>>,
    username: Option<Spanned<SecretSource>>,
    token: Option<Spanned<SecretSource>>,
    api_key: Option<Spanned<SecretSource>>,
    client_id: Option<Spanned<SecretSource>>,
    client_secret: Option<Spanned<SecretSource>>,
    email: Option<Spanned<SecretSource>>,
    password: Option<Spanned<SecretSource>>,
    token_name: Option<Spanned<String>>,
    scope: Option<Spanned<String>>,
    audience: Option<Spanned<String>>,
    auth_method: Option<Spanned<String>>,
    lifetime: Option<Spanned<String>>,
    allow_http: Option<Spanned<bool>>,
    connect_timeout: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_lifetime: Option<Spanned<String>>,
    max_reply_bytes: Option<Spanned<i64>>,
    ca_file: Option<Spanned<String>>,
    proxy: Option<Spanned<String>>,
    request: Option<Spanned<RawRequest>>,
    reply: Option<Spanned<RawReply>>,
    #[serde(default)]
    outputs: Vec<Spanned<RawOutput>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    url: Spanned<String>,
    method: Option<Spanned<String>>,
    encoding: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<RawField>>,
    #[serde(default)]
    fields: BTreeMap<String, Spanned<RawField>>,
    basic_auth: Option<Spanned<RawBasicAuth>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    user: RawField,
    password: RawField,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReply {
    token: Spanned<String>,
    expires_in: Option<Spanned<String>>,
    expires_at: Option<Spanned<String>>,
    #[serde(default)]
    jwt_exp: bool,
    scheme: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    path: Spanned<String>,
    format: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    owner: Option<Spanned<RawId>>,
    group: Option<Spanned<RawId>>,
    var: Option<Spanned<String>>,
}

/// A user or group, by name or number.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawId {
    Number(u32),
    Name(String),
}

/// A generic request field: a plain string, or a secret table (`{ file = … }` and kin).
enum RawField {
    Plain(String),
    Secret(SecretSource),
}

impl<'de> Deserialize<'de> for RawField {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> serde::de::Visitor<'de> for FieldVisitor {
            type Value = RawField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or a secret table with one of `file`, `env`, `credential` or `value`")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<RawField, E> {
                Ok(RawField::Plain(value.to_string()))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<RawField, M::Error> {
                SecretSource::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawField::Secret)
            }
        }
        deserializer.deserialize_any(FieldVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// Defaults after validation; an account's own settings override them.
struct Defaults {
    connect_timeout: Duration,
    timeout: Duration,
    max_lifetime: SignedDuration,
    max_reply_bytes: usize,
    ca_file: Option<PathBuf>,
    proxy: ProxySetting,
    mode: u32,
}

struct Validator {
    /// Turns the spans of problems into line numbers.
    lines: LineIndex,
    problems: Vec<Problem>,
    warnings: Vec<String>,
    secrets: SecretCheck,
    readable_by_others: bool,
    /// Every output path seen so far, with the key that claimed it.
    output_paths: HashMap<PathBuf, String>,
    /// The state directory in use, if state files are: outputs may not live in it.
    state_dir: Option<PathBuf>,
}

/// The credential keys an account may carry, and whether each is a secret (a literal one in a
/// readable config is warned about) or an identifier.
const CREDENTIAL_KEYS: &[(&str, bool)] = &[
    ("username", false),
    ("token", true),
    ("api_key", true),
    ("client_id", false),
    ("client_secret", true),
    ("email", false),
    ("password", true),
];

impl Validator {
    fn problem(&mut self, span: Option<Range<usize>>, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line: span.map(|span| self.lines.line_of(span.start)),
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn duration(&mut self, value: &Spanned<String>, key: &str) -> Option<Duration> {
        match parse_duration(value.get_ref()) {
            Ok(duration) => Some(duration),
            Err(message) => {
                self.problem(Some(value.span()), key, message);
                None
            }
        }
    }

    fn defaults(&mut self, raw: &RawDefaults) -> Defaults {
        let mut defaults = Defaults {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
            ca_file: None,
            proxy: ProxySetting::None,
            mode: DEFAULT_MODE,
        };
        if let Some(value) = &raw.connect_timeout
            && let Some(duration) = self.duration(value, "defaults.connect_timeout")
        {
            defaults.connect_timeout = duration;
        }
        if let Some(value) = &raw.timeout
            && let Some(duration) = self.duration(value, "defaults.timeout")
        {
            defaults.timeout = duration;
        }
        if let Some(value) = &raw.max_lifetime {
            defaults.max_lifetime = self.max_lifetime(value, "defaults.max_lifetime");
        }
        if let Some(value) = &raw.max_reply_bytes {
            defaults.max_reply_bytes = self.max_reply_bytes(value, "defaults.max_reply_bytes");
        }
        if let Some(value) = &raw.ca_file {
            defaults.ca_file = self.ca_file(value, "defaults.ca_file");
        }
        if let Some(value) = &raw.proxy {
            defaults.proxy = self.proxy(value, "defaults.proxy");
        }
        if let Some(value) = &raw.mode
            && let Some(mode) = self.mode(value, "defaults.mode")
        {
            defaults.mode = mode;
        }
        defaults
    }

    fn daemon(&mut self, raw: &RawDaemon) -> DaemonSettings {
        let mut settings = DaemonSettings::default();
        let defaults = settings.clone();
        let duration_or = |validator: &mut Self,
                           value: &Option<Spanned<String>>,
                           key: &str,
                           default: Duration| {
            value
                .as_ref()
                .and_then(|value| validator.duration(value, &format!("daemon.{key}")))
                .unwrap_or(default)
        };
        let margin = duration_or(
            self,
            &raw.refresh_margin,
            "refresh_margin",
            defaults.refresh.margin(),
        );
        let min_interval = duration_or(
            self,
            &raw.min_refresh_interval,
            "min_refresh_interval",
            defaults.refresh.min_interval(),
        );
        let fraction = raw
            .refresh_at
            .as_ref()
            .map_or(defaults.refresh.fraction(), |value| *value.get_ref());
        let jitter = raw
            .refresh_jitter
            .as_ref()
            .map_or(defaults.refresh.jitter(), |value| *value.get_ref());
        // Where the value a timing error names was written (a cap left at its default is refused
        // because of the base that was set).
        let span_of = |key: &str| -> Option<Range<usize>> {
            match key {
                "refresh_at" => raw.refresh_at.as_ref().map(Spanned::span),
                "refresh_jitter" => raw.refresh_jitter.as_ref().map(Spanned::span),
                "refresh_margin" => raw.refresh_margin.as_ref().map(Spanned::span),
                "min_refresh_interval" => raw.min_refresh_interval.as_ref().map(Spanned::span),
                "retry_base" => raw.retry_base.as_ref().map(Spanned::span),
                _ => raw
                    .retry_cap
                    .as_ref()
                    .or(raw.retry_base.as_ref())
                    .map(Spanned::span),
            }
        };
        match RefreshPolicy::new(fraction, jitter, margin, min_interval) {
            Ok(policy) => settings.refresh = policy,
            Err(error) => {
                let key = error.config_key();
                self.problem(span_of(key), &format!("daemon.{key}"), error.to_string());
            }
        }
        let base = duration_or(self, &raw.retry_base, "retry_base", defaults.backoff.base());
        let cap = duration_or(self, &raw.retry_cap, "retry_cap", defaults.backoff.cap());
        match Backoff::new(base, cap, base.min(defaults.backoff.floor())) {
            Ok(backoff) => settings.backoff = backoff,
            Err(error) => {
                let key = error.config_key();
                self.problem(span_of(key), &format!("daemon.{key}"), error.to_string());
            }
        }
        settings.rejected_retry = duration_or(
            self,
            &raw.rejected_retry,
            "rejected_retry",
            defaults.rejected_retry,
        );
        if settings.rejected_retry < Duration::from_secs(60)
            && let Some(value) = &raw.rejected_retry
        {
            self.problem(
                Some(value.span()),
                "daemon.rejected_retry",
                "must be at least 1m: a rejected secret is retried at once when it changes",
            );
        }
        settings.startup_spread = duration_or(
            self,
            &raw.startup_spread,
            "startup_spread",
            defaults.startup_spread,
        );
        settings.shutdown_grace = duration_or(
            self,
            &raw.shutdown_grace,
            "shutdown_grace",
            defaults.shutdown_grace,
        );
        if let Some(value) = &raw.max_concurrent_logins {
            match *value.get_ref() {
                count @ 1..=4096 => settings.max_concurrent_logins = count as usize,
                _ => self.problem(
                    Some(value.span()),
                    "daemon.max_concurrent_logins",
                    "must be between 1 and 4096",
                ),
            }
        }
        if let Some(value) = &raw.on_expiry {
            match value.get_ref().as_str() {
                "remove" => settings.on_expiry = OnExpiry::Remove,
                "keep" => settings.on_expiry = OnExpiry::Keep,
                other => self.problem(
                    Some(value.span()),
                    "daemon.on_expiry",
                    format!("unknown on_expiry `{other}`, expected remove or keep"),
                ),
            }
        }
        if let Some(value) = &raw.log_level {
            let level = value.get_ref().to_ascii_lowercase();
            if matches!(
                level.as_str(),
                "error" | "warn" | "info" | "debug" | "trace"
            ) {
                settings.log_level = Some(level);
            } else {
                self.problem(
                    Some(value.span()),
                    "daemon.log_level",
                    format!(
                        "unknown log level `{}`, expected error, warn, info, debug or trace",
                        value.get_ref()
                    ),
                );
            }
        }
        settings.watch = raw.watch.unwrap_or(defaults.watch);
        settings.state_files = raw.state_files.unwrap_or(defaults.state_files);
        if let Some(value) = &raw.state_dir {
            match check_state_dir(value.get_ref()) {
                Ok(dir) => settings.state_dir = dir,
                Err(message) => self.problem(Some(value.span()), "daemon.state_dir", message),
            }
        }
        self.state_dir = settings.state_files.then(|| settings.state_dir.clone());
        settings
    }

    fn max_lifetime(&mut self, value: &Spanned<String>, key: &str) -> SignedDuration {
        match self.duration(value, key) {
            Some(duration) if duration < Duration::from_secs(60) => {
                self.problem(Some(value.span()), key, "must be at least 1m");
                DEFAULT_MAX_LIFETIME
            }
            Some(duration) => SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX),
            None => DEFAULT_MAX_LIFETIME,
        }
    }

    fn max_reply_bytes(&mut self, value: &Spanned<i64>, key: &str) -> usize {
        const LIMIT: i64 = 16 * 1024 * 1024;
        match *value.get_ref() {
            bytes @ 1..=LIMIT => bytes as usize,
            _ => {
                self.problem(
                    Some(value.span()),
                    key,
                    format!("must be between 1 and {LIMIT}"),
                );
                DEFAULT_MAX_REPLY_BYTES
            }
        }
    }

    fn ca_file(&mut self, value: &Spanned<String>, key: &str) -> Option<PathBuf> {
        let path = PathBuf::from(value.get_ref());
        match crate::login::http::CaBundle::load(&path) {
            Ok(_) => Some(path),
            Err(error) => {
                self.problem(Some(value.span()), key, error.to_string());
                None
            }
        }
    }

    fn proxy(&mut self, value: &Spanned<String>, key: &str) -> ProxySetting {
        let text = value.get_ref();
        if text == "env" {
            return ProxySetting::Environment;
        }
        match Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                ProxySetting::Url(url)
            }
            _ => {
                self.problem(
                    Some(value.span()),
                    key,
                    "expected \"env\" (use the proxy environment variables) or an http:// or https:// proxy URL",
                );
                ProxySetting::None
            }
        }
    }

    fn mode(&mut self, value: &Spanned<String>, key: &str) -> Option<u32> {
        match parse_mode(value.get_ref()) {
            Ok(mode) => Some(mode),
            Err(message) => {
                self.problem(Some(value.span()), key, message);
                None
            }
        }
    }

    fn url(
        &mut self,
        value: &Spanned<String>,
        key: &str,
        allow_http: bool,
        base: bool,
    ) -> Option<Url> {
        match check_url(value.get_ref(), allow_http, base) {
            Ok(url) => Some(url),
            Err(message) => {
                self.problem(Some(value.span()), key, message);
                None
            }
        }
    }

    fn account(
        &mut self,
        name: &str,
        raw: &Spanned<RawAccount>,
        defaults: &Defaults,
    ) -> Option<Account> {
        let before = self.problems.len();
        let span = raw.span();
        let prefix = format!("accounts.{name}");
        let key = |suffix: &str| format!("{prefix}.{suffix}");
        let account = raw.get_ref();
        if !valid_account_name(name) {
            self.problem(
                Some(span.clone()),
                &prefix,
                "account names use letters, digits, `.`, `_` and `-`, start with a letter or digit, and are at most 64 characters",
            );
        }
        let allow_http = account
            .allow_http
            .as_ref()
            .is_some_and(|flag| *flag.get_ref());

        let lifetime = account.lifetime.as_ref().and_then(|value| {
            let duration = self.duration(value, &key("lifetime"))?;
            if duration < Duration::from_secs(1) {
                self.problem(Some(value.span()), &key("lifetime"), "must be at least 1s");
                return None;
            }
            SignedDuration::try_from(duration).ok()
        });

        let login = match (&account.preset, &account.request) {
            (Some(_), Some(request)) => {
                self.problem(
                    Some(request.span()),
                    &key("request"),
                    "an account has either `preset` or a `request` table, not both",
                );
                None
            }
            (Some(preset), None) => {
                self.preset_login(&prefix, account, preset, allow_http, lifetime)
            }
            (None, Some(request)) => {
                self.generic_login(&prefix, account, request, allow_http, lifetime, &span)
            }
            (None, None) => {
                self.problem(
                    Some(span.clone()),
                    &prefix,
                    "needs `preset` (one of panaya, papaya, apinizer, patchworks, onlyoffice, oauth2) or a `request` table",
                );
                None
            }
        };

        let http = HttpSettings {
            connect_timeout: account
                .connect_timeout
                .as_ref()
                .and_then(|value| self.duration(value, &key("connect_timeout")))
                .unwrap_or(defaults.connect_timeout),
            timeout: account
                .timeout
                .as_ref()
                .and_then(|value| self.duration(value, &key("timeout")))
                .unwrap_or(defaults.timeout),
            max_reply_bytes: account
                .max_reply_bytes
                .as_ref()
                .map_or(defaults.max_reply_bytes, |value| {
                    self.max_reply_bytes(value, &key("max_reply_bytes"))
                }),
            ca_file: match &account.ca_file {
                Some(value) => self.ca_file(value, &key("ca_file")),
                None => defaults.ca_file.clone(),
            },
            proxy: match &account.proxy {
                Some(value) => self.proxy(value, &key("proxy")),
                None => defaults.proxy.clone(),
            },
        };
        let max_lifetime = match &account.max_lifetime {
            Some(value) => self.max_lifetime(value, &key("max_lifetime")),
            None => defaults.max_lifetime,
        };

        let outputs = self.outputs(name, &prefix, &account.outputs, &span, defaults.mode);

        if let Some(login) = &login {
            self.secret_hygiene(&prefix, account, login);
        }
        if self.problems.len() > before {
            return None;
        }
        Some(Account {
            name: name.to_string(),
            preset: account
                .preset
                .as_ref()
                .and_then(|preset| Preset::from_name(preset.get_ref())),
            login: login?,
            http,
            max_lifetime,
            outputs,
        })
    }

    /// The credential keys present on an account, with their spans.
    fn credential_values(account: &RawAccount) -> Vec<(&'static str, &Spanned<SecretSource>)> {
        let fields = [
            ("username", &account.username),
            ("token", &account.token),
            ("api_key", &account.api_key),
            ("client_id", &account.client_id),
            ("client_secret", &account.client_secret),
            ("email", &account.email),
            ("password", &account.password),
        ];
        fields
            .into_iter()
            .filter_map(|(name, value)| value.as_ref().map(|value| (name, value)))
            .collect()
    }

    /// Every preset-only key present on an account, with its span.
    fn preset_keys_present(account: &RawAccount) -> Vec<(&'static str, Range<usize>)> {
        let mut present: Vec<(&'static str, Range<usize>)> = Self::credential_values(account)
            .into_iter()
            .map(|(name, value)| (name, value.span()))
            .collect();
        let texts = [
            ("base_url", &account.base_url),
            ("token_url", &account.token_url),
            ("token_name", &account.token_name),
            ("scope", &account.scope),
            ("audience", &account.audience),
            ("auth_method", &account.auth_method),
        ];
        for (name, value) in texts {
            if let Some(value) = value {
                present.push((name, value.span()));
            }
        }
        present
    }

    fn preset_login(
        &mut self,
        prefix: &str,
        account: &RawAccount,
        preset_name: &Spanned<String>,
        allow_http: bool,
        lifetime: Option<SignedDuration>,
    ) -> Option<LoginSpec> {
        let key = |suffix: &str| format!("{prefix}.{suffix}");
        let Some(preset) = Preset::from_name(preset_name.get_ref()) else {
            let names: Vec<&str> = Preset::ALL.iter().map(|preset| preset.name()).collect();
            self.problem(
                Some(preset_name.span()),
                &key("preset"),
                format!(
                    "unknown preset `{}`, expected one of {}",
                    preset_name.get_ref(),
                    names.join(", ")
                ),
            );
            return None;
        };
        if let Some(reply) = &account.reply {
            self.problem(
                Some(reply.span()),
                &key("reply"),
                format!(
                    "preset {} defines the reply; `reply` goes with a `request` table",
                    preset.name()
                ),
            );
        }
        let before = self.problems.len();
        let present = Self::preset_keys_present(account);
        for (name, span) in &present {
            if !preset.keys().iter().any(|(allowed, _)| allowed == name) {
                self.problem(
                    Some(span.clone()),
                    &key(name),
                    format!("`{name}` is not used by preset {}", preset.name()),
                );
            }
        }
        for (name, need) in preset.keys() {
            if *need == Need::Required && !present.iter().any(|(present, _)| present == name) {
                self.problem(
                    Some(preset_name.span()),
                    &key(name),
                    format!("preset {} needs `{name}`", preset.name()),
                );
            }
        }
        let mut input = PresetInput {
            lifetime,
            ..PresetInput::default()
        };
        if let Some(base) = &account.base_url {
            input.base_url = self.url(base, &key("base_url"), allow_http, true);
        }
        if let Some(token_url) = &account.token_url {
            input.token_url = self.url(token_url, &key("token_url"), allow_http, false);
        }
        for (name, value) in Self::credential_values(account) {
            input
                .values
                .push((name, FieldValue::Secret(value.get_ref().clone())));
        }
        for (name, value) in [
            ("token_name", &account.token_name),
            ("scope", &account.scope),
            ("audience", &account.audience),
        ] {
            if let Some(value) = value {
                if value.get_ref().is_empty() {
                    self.problem(Some(value.span()), &key(name), "must not be empty");
                }
                input
                    .values
                    .push((name, FieldValue::Plain(value.get_ref().clone())));
            }
        }
        if let Some(method) = &account.auth_method {
            match method.get_ref().as_str() {
                "basic" | "client_secret_basic" => input.auth_method = ClientAuth::Basic,
                "post" | "client_secret_post" => input.auth_method = ClientAuth::Post,
                other => self.problem(
                    Some(method.span()),
                    &key("auth_method"),
                    format!("unknown auth_method `{other}`, expected `basic` (client_secret_basic) or `post` (client_secret_post)"),
                ),
            }
        }
        if self.problems.len() > before {
            return None;
        }
        match preset.build(&input) {
            Ok(spec) => Some(spec),
            Err(message) => {
                self.problem(Some(preset_name.span()), &key("preset"), message);
                None
            }
        }
    }

    fn generic_login(
        &mut self,
        prefix: &str,
        account: &RawAccount,
        request: &Spanned<RawRequest>,
        allow_http: bool,
        lifetime: Option<SignedDuration>,
        account_span: &Range<usize>,
    ) -> Option<LoginSpec> {
        let key = |suffix: &str| format!("{prefix}.{suffix}");
        let before = self.problems.len();
        for (name, span) in Self::preset_keys_present(account) {
            self.problem(
                Some(span),
                &key(name),
                format!(
                    "`{name}` belongs to presets; a `request` table puts it in `request.fields`"
                ),
            );
        }
        let raw = request.get_ref();
        let url = self.url(&raw.url, &key("request.url"), allow_http, false);
        let method = match &raw.method {
            None => Method::POST,
            Some(method) => match method.get_ref().to_ascii_uppercase().as_str() {
                "POST" => Method::POST,
                "GET" => Method::GET,
                "PUT" => Method::PUT,
                "PATCH" => Method::PATCH,
                other => {
                    self.problem(
                        Some(method.span()),
                        &key("request.method"),
                        format!("unsupported method `{other}`, expected POST, GET, PUT or PATCH"),
                    );
                    Method::POST
                }
            },
        };
        let encoding = match raw
            .encoding
            .as_ref()
            .map(|value| (value.get_ref().as_str(), value))
        {
            None if raw.fields.is_empty() => Encoding::None,
            None | Some(("form", _)) => Encoding::Form,
            Some(("json", _)) => Encoding::Json,
            Some(("none", value)) => {
                if !raw.fields.is_empty() {
                    self.problem(
                        Some(value.span()),
                        &key("request.encoding"),
                        "`none` sends no body, but `request.fields` is set",
                    );
                }
                Encoding::None
            }
            Some((other, value)) => {
                self.problem(
                    Some(value.span()),
                    &key("request.encoding"),
                    format!("unknown encoding `{other}`, expected form, json or none"),
                );
                Encoding::Form
            }
        };
        let mut headers = Vec::new();
        for (name, value) in &raw.headers {
            match HeaderName::from_bytes(name.as_bytes()) {
                // Header values often are API keys: literal ones are held as secrets.
                Ok(header) => headers.push((header, field_value(value.get_ref(), true))),
                Err(_) => self.problem(
                    Some(value.span()),
                    &key(&format!("request.headers.{name}")),
                    "not a valid header name",
                ),
            }
        }
        let mut fields = Vec::new();
        for (name, value) in &raw.fields {
            if name.is_empty() {
                self.problem(
                    Some(value.span()),
                    &key("request.fields"),
                    "a field name is empty",
                );
            }
            fields.push((
                name.clone(),
                field_value(value.get_ref(), secret_field_name(name)),
            ));
        }
        let basic_auth = raw.basic_auth.as_ref().map(|basic| BasicAuth {
            user: field_value(&basic.get_ref().user, false),
            password: field_value(&basic.get_ref().password, true),
        });

        let reply = match &account.reply {
            None => {
                self.problem(
                    Some(account_span.clone()),
                    &key("reply"),
                    "a `request` table needs a `reply` table saying where the token is (reply.token = \"/access_token\")",
                );
                None
            }
            Some(reply) => self.reply(prefix, reply, lifetime),
        };
        let scheme = match account
            .reply
            .as_ref()
            .and_then(|reply| reply.get_ref().scheme.as_ref())
        {
            None => Some("Bearer".to_string()),
            Some(scheme) if scheme.get_ref().is_empty() => None,
            Some(scheme) => {
                if !scheme
                    .get_ref()
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                {
                    self.problem(
                        Some(scheme.span()),
                        &key("reply.scheme"),
                        "a scheme is a single word such as Bearer, or \"\" for a bare token",
                    );
                }
                Some(scheme.get_ref().clone())
            }
        };
        if self.problems.len() > before {
            return None;
        }
        Some(LoginSpec {
            request: RequestSpec {
                method,
                url: url?,
                headers,
                encoding,
                fields,
                basic_auth,
            },
            reply: reply?,
            refresh: None,
            scheme,
        })
    }

    fn reply(
        &mut self,
        prefix: &str,
        reply: &Spanned<RawReply>,
        lifetime: Option<SignedDuration>,
    ) -> Option<ReplySpec> {
        let raw = reply.get_ref();
        let mut pointer = |value: &Spanned<String>, name: &str| -> Option<String> {
            let text = value.get_ref();
            if text.starts_with('/') {
                Some(text.clone())
            } else {
                self.problem(
                    Some(value.span()),
                    &format!("{prefix}.reply.{name}"),
                    format!("`{text}` is not a JSON pointer; write it as \"/{text}\" (RFC 6901)"),
                );
                None
            }
        };
        let token = pointer(&raw.token, "token");
        let expires_in = raw
            .expires_in
            .as_ref()
            .and_then(|value| pointer(value, "expires_in"));
        let expires_at = raw
            .expires_at
            .as_ref()
            .and_then(|value| pointer(value, "expires_at"));
        if raw.expires_in.is_none()
            && raw.expires_at.is_none()
            && !raw.jwt_exp
            && lifetime.is_none()
        {
            self.problem(
                Some(reply.span()),
                &format!("{prefix}.reply"),
                "no way to know when the token expires: set reply.expires_in, reply.expires_at, reply.jwt_exp or the account's lifetime",
            );
        }
        Some(ReplySpec {
            token: vec![token?],
            expires_in,
            expires_at,
            jwt_exp: raw.jwt_exp,
            fixed_lifetime: lifetime,
            refresh_token: None,
            check_token_type: false,
        })
    }

    fn outputs(
        &mut self,
        account: &str,
        prefix: &str,
        raw: &[Spanned<RawOutput>],
        account_span: &Range<usize>,
        default_mode: u32,
    ) -> Vec<OutputSpec> {
        if raw.is_empty() {
            self.problem(
                Some(account_span.clone()),
                &format!("{prefix}.outputs"),
                "no outputs: add at least one [[accounts.NAME.outputs]] with a `path`",
            );
        }
        let mut outputs = Vec::new();
        for (index, output) in raw.iter().enumerate() {
            let key = |suffix: &str| format!("{prefix}.outputs[{index}].{suffix}");
            let raw = output.get_ref();
            let path = match check_output_path(raw.path.get_ref()) {
                Ok(path) => Some(path),
                Err(message) => {
                    self.problem(Some(raw.path.span()), &key("path"), message);
                    None
                }
            };
            if let Some(path) = &path
                && let Some(state_dir) = &self.state_dir
                && path.starts_with(state_dir)
            {
                let message = format!(
                    "{} is inside the state directory {}, which only the daemon may read; write outputs where consumers read them",
                    path.display(),
                    state_dir.display()
                );
                self.problem(Some(raw.path.span()), &key("path"), message);
            }
            if let Some(path) = &path {
                if let Some(other) = self.output_paths.get(path) {
                    let message = format!("{} is also the path of {other}", path.display());
                    self.problem(Some(raw.path.span()), &key("path"), message);
                } else {
                    self.output_paths.insert(path.clone(), key("path"));
                }
            }
            let format = match raw.format.as_ref() {
                None => Format::Raw,
                Some(value) => Format::from_name(value.get_ref()).unwrap_or_else(|| {
                    let names: Vec<&str> = Format::ALL.iter().map(|format| format.name()).collect();
                    self.problem(
                        Some(value.span()),
                        &key("format"),
                        format!(
                            "unknown format `{}`, expected one of {}",
                            value.get_ref(),
                            names.join(", ")
                        ),
                    );
                    Format::Raw
                }),
            };
            let mode = match &raw.mode {
                Some(value) => self.mode(value, &key("mode")).unwrap_or(default_mode),
                None => default_mode,
            };
            let owner = raw
                .owner
                .as_ref()
                .and_then(|value| self.user(value, &key("owner")));
            let group = raw
                .group
                .as_ref()
                .and_then(|value| self.group(value, &key("group")));
            let env_name = match (&raw.var, format) {
                (Some(var), Format::Env) => {
                    if !valid_env_name(var.get_ref()) {
                        self.problem(
                            Some(var.span()),
                            &key("var"),
                            "a variable name is letters, digits and `_`, not starting with a digit",
                        );
                    }
                    var.get_ref().clone()
                }
                (Some(var), _) => {
                    self.problem(
                        Some(var.span()),
                        &key("var"),
                        "`var` only applies to format = \"env\"",
                    );
                    String::new()
                }
                (None, _) => default_env_name(account),
            };
            if let Some(path) = path {
                outputs.push(OutputSpec {
                    path,
                    format,
                    mode,
                    owner,
                    group,
                    env_name,
                });
            }
        }
        outputs
    }

    fn user(&mut self, value: &Spanned<RawId>, key: &str) -> Option<u32> {
        self.account_id(value, key, "user", |name| {
            nix::unistd::User::from_name(name).map(|user| user.map(|user| user.uid.as_raw()))
        })
    }

    fn group(&mut self, value: &Spanned<RawId>, key: &str) -> Option<u32> {
        self.account_id(value, key, "group", |name| {
            nix::unistd::Group::from_name(name).map(|group| group.map(|group| group.gid.as_raw()))
        })
    }

    /// A user or group id: a number as written, or a name looked up through NSS.
    fn account_id(
        &mut self,
        value: &Spanned<RawId>,
        key: &str,
        what: &str,
        lookup: impl Fn(&str) -> nix::Result<Option<u32>>,
    ) -> Option<u32> {
        match value.get_ref() {
            RawId::Number(id) => Some(*id),
            RawId::Name(name) => match lookup(name) {
                Ok(Some(id)) => Some(id),
                Ok(None) => {
                    self.problem(Some(value.span()), key, format!("no {what} named `{name}`"));
                    None
                }
                Err(error) => {
                    let message = format!("cannot look up {what} `{name}`: {error}");
                    self.problem(Some(value.span()), key, message);
                    None
                }
            },
        }
    }

    /// Reads secrets when asked to (the `check` command), and warns about literal secrets in a
    /// config file that others can read.
    fn secret_hygiene(&mut self, prefix: &str, account: &RawAccount, login: &LoginSpec) {
        for (name, value) in Self::credential_values(account) {
            let is_secret = CREDENTIAL_KEYS
                .iter()
                .any(|(key, secret)| *key == name && *secret);
            self.check_source(prefix, name, value.get_ref(), Some(value.span()), is_secret);
        }
        if let Some(request) = &account.request {
            for (name, source) in login.secret_sources() {
                self.check_source(
                    prefix,
                    &format!("request.{name}"),
                    source,
                    Some(request.span()),
                    true,
                );
            }
        }
    }

    fn check_source(
        &mut self,
        prefix: &str,
        name: &str,
        source: &SecretSource,
        span: Option<Range<usize>>,
        is_secret: bool,
    ) {
        if let SecretSource::Literal(_) = source
            && is_secret
            && self.readable_by_others
        {
            self.warnings.push(format!(
                "{prefix}.{name}: a secret is written in the config file, which group or others can read; move it to a file or credential, or chmod 600 the config"
            ));
        }
        if self.secrets == SecretCheck::Resolve
            && let Err(error) = source.resolve()
        {
            self.problem(span, &format!("{prefix}.{name}"), error.to_string());
        }
    }
}

/// A generic field's value. A plain string stays plain (shown in plans) unless `secret` says the
/// place it goes carries credentials, in which case it is held as a literal secret.
fn field_value(field: &RawField, secret: bool) -> FieldValue {
    match field {
        RawField::Plain(text) if secret => FieldValue::Secret(SecretSource::Literal(
            crate::secret::Secret::new(text.clone()),
        )),
        RawField::Plain(text) => FieldValue::Plain(text.clone()),
        RawField::Secret(source) => FieldValue::Secret(source.clone()),
    }
}

/// Whether a body field's name says it carries a credential (`password`, `client_secret`,
/// `api_key`, `token` …): its literal value is then treated as a secret.
fn secret_field_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "secret",
        "password",
        "passwd",
        "token",
        "key",
        "credential",
        "pin",
    ]
    .iter()
    .any(|word| name.contains(word))
}

// ---------------------------------------------------------------------------------------------
// Pure checks, table-tested below.

/// Where each line of a text starts, so that the line of any byte offset is a binary search:
/// locating 10,000 accounts stays linear in the size of the file.
struct LineIndex {
    /// Byte offsets of the first byte of each line; the first is 0.
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, byte)| *byte == b'\n')
                .map(|(index, _)| index + 1),
        );
        LineIndex { starts }
    }

    /// 1-based line of a byte offset (offsets past the end count as the last line).
    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|start| *start <= offset)
    }
}

/// The dotted key at a byte offset, for errors that toml reports by position only: the nearest
/// table header above it joined with the key on its own line (`accounts.idp.client_secret`).
fn key_at(text: &str, offset: usize) -> String {
    let end = offset.min(text.len());
    let line_start = text[..end].rfind('\n').map_or(0, |index| index + 1);
    let line_end = text[end..]
        .find('\n')
        .map_or(text.len(), |index| end + index);
    let line = text[line_start..line_end].trim();
    let header = |line: &str| -> Option<String> {
        let inner = line.strip_prefix('[')?.trim_start_matches('[');
        let inner = inner.split(']').next()?;
        Some(inner.trim().to_string())
    };
    if let Some(table) = header(line) {
        return table;
    }
    let own_key = line
        .split_once('=')
        .map(|(key, _)| key.trim().trim_matches('"').to_string())
        .filter(|key| !key.is_empty());
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .and_then(header);
    match (table, own_key) {
        (Some(table), Some(key)) => format!("{table}.{key}"),
        (Some(table), None) => table,
        (None, Some(key)) => key,
        (None, None) => "syntax".to_string(),
    }
}

fn valid_account_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 64
        && bytes
            .next()
            .is_some_and(|first| first.is_ascii_alphanumeric())
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

/// `panaya-prod` → `PANAYA_PROD_TOKEN`.
pub fn default_env_name(account: &str) -> String {
    let mut name: String = account
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() {
                character.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|character: char| character.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name.push_str("_TOKEN");
    name
}

/// A duration such as `90s`, `15m`, `1h30m`, `24h`, `7d`, `1d12h`, `1w` or `500ms` (jiff's
/// friendly format, and ISO 8601 `PT1M30S`). Days and weeks are 24 hours and 7 days; months and
/// years are refused, since their length depends on the date.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "`{text}` is not a duration; write e.g. \"90s\", \"15m\", \"1h30m\", \"7d\" or \"1d12h\""
        )
    };
    let span: jiff::Span = text.trim().parse().map_err(|_| bad())?;
    let parsed = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|_| bad())?;
    if parsed.is_negative() || parsed.is_zero() {
        return Err(format!("`{text}` must be longer than zero"));
    }
    let duration = Duration::try_from(parsed).map_err(|_| bad())?;
    check_duration_limit(text, duration)
}

/// No setting needs more than a year, and bounding them keeps every later sum far from overflow.
fn check_duration_limit(text: &str, duration: Duration) -> Result<Duration, String> {
    if duration > MAX_SETTING_DURATION {
        return Err(format!(
            "`{text}` is longer than the 366d any setting allows"
        ));
    }
    Ok(duration)
}

/// An octal mode string: `"0640"`, `"640"` or `"0o640"`. Special bits and world-writable modes
/// are refused: a token file is a credential.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty()
        || digits.len() > 4
        || !digits.bytes().all(|byte| (b'0'..=b'7').contains(&byte))
    {
        return Err(format!(
            "`{text}` is not an octal mode such as \"0600\" or \"0640\""
        ));
    }
    let mode =
        u32::from_str_radix(digits, 8).map_err(|_| format!("`{text}` is not an octal mode"))?;
    if mode > 0o777 {
        return Err(format!("`{text}` sets setuid, setgid or sticky bits"));
    }
    if mode & 0o002 != 0 {
        return Err(format!("`{text}` lets anyone overwrite the token file"));
    }
    if mode & 0o600 != 0o600 {
        return Err(format!(
            "`{text}` must let the owner read and write (0600 at least)"
        ));
    }
    Ok(mode)
}

/// A token endpoint URL: https, or http to a loopback host, or http anywhere with `allow_http`.
/// Base URLs may not carry a query or fragment (a path is appended to them).
pub fn check_url(text: &str, allow_http: bool, base: bool) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| format!("`{text}` is not a URL: {error}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials in the URL are refused: they would show in logs; use the credential keys"
                .to_string(),
        );
    }
    let Some(host) = url.host_str() else {
        return Err(format!("`{text}` has no host"));
    };
    match url.scheme() {
        "https" => {}
        "http" if allow_http || is_loopback_host(host) => {}
        "http" => {
            return Err(format!(
                "plain http:// to `{host}` would send credentials unencrypted; use https://, or set allow_http = true on the account if the network is trusted"
            ));
        }
        other => return Err(format!("unsupported scheme `{other}`, expected https")),
    }
    if base && (url.query().is_some() || url.fragment().is_some()) {
        return Err("a base_url cannot have a query or fragment".to_string());
    }
    Ok(url)
}

/// Loopback IP literals and `localhost` itself; `localhost.example.com` is not loopback.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// A state directory: absolute and normalised, without `..`, not the root.
fn check_state_dir(text: &str) -> Result<PathBuf, String> {
    let clean = normalise_absolute(text)?;
    if clean == Path::new("/") {
        return Err("the state directory cannot be the root directory".to_string());
    }
    Ok(clean)
}

/// An absolute path with `.` and repeated slashes removed; `..` is refused rather than resolved,
/// since resolving it lexically can name another place than the kernel would through a symlink.
fn normalise_absolute(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(format!("`{text}` is not absolute"));
    }
    let mut clean = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => clean.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("`{text}` contains `..`"));
            }
        }
    }
    Ok(clean)
}

/// An output path: absolute, normalised, no `..`, a real file name, within PATH_MAX.
pub fn check_output_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("the path is empty".to_string());
    }
    if text.len() > 4096 {
        return Err("the path is longer than 4096 bytes".to_string());
    }
    if text.ends_with('/') {
        return Err(format!("`{text}` names a directory; give a file path"));
    }
    let clean = normalise_absolute(text)?;
    let Some(name) = clean.file_name().and_then(|name| name.to_str()) else {
        return Err(format!("`{text}` has no file name"));
    };
    if name.len() > 255 {
        return Err("the file name is longer than 255 bytes".to_string());
    }
    if name.starts_with("..") {
        return Err(format!("`{name}`: names starting with `..` are reserved"));
    }
    if name.starts_with('.') && name.ends_with(".tmp") {
        return Err(format!(
            "`{name}` looks like tokenkeeper's own temporary files"
        ));
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("90s", Some(90)),
            ("15m", Some(900)),
            ("1h30m", Some(5400)),
            ("1h 30m", Some(5400)),
            ("24h", Some(86_400)),
            ("7d", Some(604_800)),
            ("366d", Some(366 * 86_400)),
            ("367d", None),
            ("200000000000000d", None),
            ("100000h", None),
            ("PT1M", Some(60)),
            ("1d12h", Some(129_600)),
            ("1d 12h", Some(129_600)),
            ("2d3h4m5s", Some(2 * 86_400 + 3 * 3600 + 4 * 60 + 5)),
            ("1w", Some(604_800)),
            ("1w2d", Some(9 * 86_400)),
            ("90 minutes", Some(5400)),
            ("P1DT12H", Some(129_600)),
            ("1mo", None),
            ("1y", None),
            ("0s", None),
            ("-5s", None),
            ("soon", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_duration(text).ok().map(|d| d.as_secs()),
                *expected,
                "{text}"
            );
        }
    }

    #[test]
    fn modes() {
        let cases: &[(&str, Option<u32>)] = &[
            ("0600", Some(0o600)),
            ("600", Some(0o600)),
            ("0o640", Some(0o640)),
            ("0644", Some(0o644)),
            ("0666", None),
            ("4600", None),
            ("0400", None),
            ("0680", None),
            ("rw-------", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_mode(text).ok(), *expected, "{text}");
        }
    }

    #[test]
    fn urls() {
        let cases: &[(&str, bool, bool)] = &[
            ("https://idp.example/token", false, true),
            ("http://127.0.0.1:8080/token", false, true),
            ("http://127.9.9.9/token", false, true),
            ("http://[::1]:80/token", false, true),
            ("http://localhost:80/token", false, true),
            ("http://localhost.evil.com/token", false, false),
            ("http://idp.example/token", false, false),
            ("http://idp.example/token", true, true),
            ("ftp://idp.example/token", true, false),
            ("https://user:pw@idp.example/token", false, false),
            ("not a url", false, false),
        ];
        for (text, allow_http, ok) in cases {
            assert_eq!(check_url(text, *allow_http, false).is_ok(), *ok, "{text}");
        }
        assert!(check_url("https://host/?x=1", false, true).is_err());
    }

    #[test]
    fn output_paths() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/run/tokenkeeper/a.token", Some("/run/tokenkeeper/a.token")),
            (
                "/run//tokenkeeper/./a.token",
                Some("/run/tokenkeeper/a.token"),
            ),
            ("relative/a.token", None),
            ("/run/../etc/passwd", None),
            ("/run/tokenkeeper/", None),
            ("/", None),
            ("", None),
            ("/run/..data", None),
            ("/run/.a.0123456789abcdef.tmp", None),
        ];
        for (text, expected) in cases {
            let got = check_output_path(text).ok();
            assert_eq!(got.as_deref(), expected.map(Path::new), "{text}");
        }
        let long = format!("/run/{}", "a".repeat(256));
        assert!(check_output_path(&long).is_err());
    }

    #[test]
    fn env_names() {
        assert_eq!(default_env_name("panaya-prod"), "PANAYA_PROD_TOKEN");
        assert_eq!(default_env_name("1st"), "_1ST_TOKEN");
        assert!(valid_env_name("A_1") && !valid_env_name("1A") && !valid_env_name("A-B"));
    }

    #[test]
    fn generic_literals_in_credential_places_are_secrets() {
        let text = r#"
[accounts.g]
lifetime = "1h"
[accounts.g.request]
url = "https://api.example/login"
headers = { X-Api-Key = "hdr-canary-1234", Accept = "application/json" }
fields = { user = "ops", password = "pw-canary-5678", client_secret = "cs-canary", grant_type = "password" }
basic_auth = { user = "ops", password = "basic-canary-9999" }
[accounts.g.reply]
token = "/token"
[[accounts.g.outputs]]
path = "/run/tk/g"
"#;
        let config = parse(text, Path::new("t.toml"), SecretCheck::Skip, true).unwrap();
        let login = &config.accounts["g"].login;
        let shown = format!("{login:?}")
            + &login
                .request
                .fields
                .iter()
                .map(|(_, value)| value.describe())
                .collect::<String>();
        for canary in [
            "hdr-canary-1234",
            "pw-canary-5678",
            "cs-canary",
            "basic-canary-9999",
        ] {
            assert!(!shown.contains(canary), "{canary} is shown");
        }
        assert!(
            shown.contains("\"ops\"") && shown.contains("\"password\""),
            "{shown}"
        );
        // The config is readable by others: every literal secret is warned about.
        assert!(config.warnings.len() >= 4, "{:?}", config.warnings);
    }

    #[test]
    fn keys_at_offsets() {
        let text = "[defaults]\ntimeout = 5\n\n[accounts.idp]\nclient_secret = { a = 1 }\n[[accounts.idp.outputs]]\npath = 3\n";
        let at = |needle: &str| key_at(text, text.find(needle).unwrap());
        assert_eq!(at("timeout"), "defaults.timeout");
        assert_eq!(at("a = 1"), "accounts.idp.client_secret");
        assert_eq!(at("path"), "accounts.idp.outputs.path");
        assert_eq!(at("[accounts.idp]"), "accounts.idp");
        assert_eq!(key_at("x = 1", 0), "x");
    }

    #[test]
    fn line_numbers() {
        let index = LineIndex::new("a\nb\nc");
        // (offset, line): the newline itself belongs to the line it ends.
        for (offset, line) in [(0, 1), (1, 1), (2, 2), (3, 2), (4, 3), (99, 3)] {
            assert_eq!(index.line_of(offset), line, "offset {offset}");
        }
        assert_eq!(LineIndex::new("").line_of(0), 1);
        assert_eq!(LineIndex::new("\n\n").line_of(2), 3);
    }
}
