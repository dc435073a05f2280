//! Validation: raw structs → a [`Config`], every problem collected with its line and key.
//!
//! - [`account`]: one account: preset or generic login, HTTP settings.
//! - [`outputs`]: an account's outputs: paths, formats, modes, owners.
//! - [`secrets`]: reading secrets for `check`, and literal secrets in readable configs.
//!
//! Invariant: a [`Config`] comes out only when no problem was found; no network; secret values
//! stay in [`crate::secret::Secret`]s.

mod account;
mod fleet;
pub(crate) use fleet::valid_member;
mod hook;
mod outputs;
mod secrets;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::SignedDuration;
use toml::Spanned;
use url::Url;

use super::problem::{ConfigError, LineIndex, Problem};
use super::raw::{RawConfig, RawDaemon, RawDefaults};
use super::values::{check_control_socket, check_state_dir, check_url, parse_duration, parse_mode};
use super::{
    Config, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_LIFETIME, DEFAULT_MAX_REPLY_BYTES, DEFAULT_MODE,
    DEFAULT_TIMEOUT, DaemonSettings, OnExpiry, SecretCheck,
};
use crate::login::spec::ProxySetting;
use crate::schedule::{Backoff, RefreshPolicy};

/// Validates a parsed config file.
///
/// # Errors
/// Every problem found, sorted by line.
pub(super) fn validate(
    raw: &RawConfig,
    text: &str,
    path: &Path,
    secrets: SecretCheck,
    readable_by_others: bool,
) -> Result<Config, ConfigError> {
    let mut validator = Validator {
        lines: LineIndex::new(text),
        problems: Vec::new(),
        warnings: Vec::new(),
        secrets,
        readable_by_others,
        output_paths: HashMap::new(),
        state_dir: None,
        ca_files: HashMap::new(),
    };
    let defaults = validator.defaults(&raw.defaults);
    let daemon = validator.daemon(&raw.daemon);
    let fleet = raw.fleet.as_ref().and_then(|fleet| validator.fleet(fleet));
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
        if let Some(flag) = &account.get_ref().fleet
            && *flag.get_ref()
            && raw.fleet.is_none()
        {
            validator.problem(
                Some(flag.span()),
                &format!("accounts.{name}.fleet"),
                "`fleet = true` needs a [fleet] table: the etcd endpoints and the fleet key",
            );
        }
        if let Some(account) = validator.account(name, account, &defaults) {
            accounts.insert(name.clone(), std::sync::Arc::new(account));
        }
    }
    if validator.problems.is_empty() {
        Ok(Config {
            path: path.to_path_buf(),
            accounts,
            lines,
            daemon,
            fleet,
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
    /// CA bundles checked so far, with the problem found in each (`None`: it is good), so a
    /// bundle many accounts name is read and parsed once.
    ca_files: HashMap<PathBuf, Option<String>>,
}

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
            Ok(policy) => {
                if policy.band_may_be_cut() {
                    self.warnings.push(format!(
                        "daemon.refresh_jitter: {jitter} with refresh_at = {fraction} spreads renewals over {:.0} % of a lifetime, more than fits before the reserve kept at expiry: for short lifetimes renewals may come right after a login (keep refresh_jitter × refresh_at at most 0.25)",
                        200.0 * jitter * fraction
                    ));
                }
                settings.refresh = policy;
            }
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
        if let Some(value) = &raw.listen {
            match value.get_ref().parse::<std::net::SocketAddr>() {
                Ok(address) => settings.listen = Some(address),
                Err(_) => self.problem(
                    Some(value.span()),
                    "daemon.listen",
                    format!(
                        "`{}` is not ADDRESS:PORT (e.g. 127.0.0.1:9464, or [::]:9464 in a pod)",
                        value.get_ref()
                    ),
                ),
            }
        }
        settings.control_socket = match &raw.control_socket {
            Some(value) => match check_control_socket(value.get_ref()) {
                Ok(path) => Some(path),
                Err(message) => {
                    self.problem(Some(value.span()), "daemon.control_socket", message);
                    None
                }
            },
            None => settings
                .state_files
                .then(|| settings.state_dir.join(crate::config::CONTROL_SOCKET_NAME)),
        };
        settings.refresh_request_interval = duration_or(
            self,
            &raw.refresh_request_interval,
            "refresh_request_interval",
            defaults.refresh_request_interval,
        );
        if settings.refresh_request_interval < crate::config::MIN_REFRESH_REQUEST_INTERVAL
            && let Some(value) = &raw.refresh_request_interval
        {
            self.problem(
                Some(value.span()),
                "daemon.refresh_request_interval",
                "must be at least 1s: requested refreshes must not hammer the token endpoint",
            );
        }
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
        let problem = self
            .ca_files
            .entry(path.clone())
            .or_insert_with(|| {
                crate::login::http::CaBundle::load(&path)
                    .err()
                    .map(|error| error.to_string())
            })
            .clone();
        match problem {
            None => Some(path),
            Some(message) => {
                self.problem(Some(value.span()), key, message);
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
}

#[cfg(test)]
mod tests;
