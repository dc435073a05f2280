//! The one-shot commands: `check`, `once` and `token`, built from the same pieces the daemon uses;
//! and those that ask the running daemon ([`remote`]) or look at its files ([`probe`]).
//!
//! Invariant: nothing here prints a secret or a token, except `token` and the [`credential`]
//! helpers, whose whole purpose is to put one token on stdout.

pub mod credential;
pub mod probe;
pub mod remote;

use std::fmt::Write as _;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::{Account, Config};
use crate::login::http::Clients;
use crate::login::spec::{Encoding, FieldValue, LoginSpec, ProxySetting};
use crate::login::{Login, LoginError, LoginOutcome};
use crate::output::{self, Format, Publish};

/// How many logins `once` runs at the same time.
const ONCE_CONCURRENCY: usize = 8;

/// Why one account's round failed.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error(transparent)]
    Setup(#[from] crate::login::SetupError),
    #[error(transparent)]
    Publish(#[from] output::PublishError),
}

/// What one account's round did.
#[derive(Debug)]
pub struct RoundReport {
    pub outcome: LoginOutcome,
    /// Each output path and whether it was rewritten.
    pub outputs: Vec<(std::path::PathBuf, Publish)>,
}

/// Logs one account in and writes every output (see [`output::publish_all`]).
///
/// # Errors
/// The login's error, or the outputs that could not be written.
pub async fn round(account: &Account, clients: &Clients) -> Result<RoundReport, RoundError> {
    let login = Login::for_account(account, clients)?;
    let outcome = login.login(None).await?;
    let outputs = output::publish_all(account, &outcome.token)?;
    Ok(RoundReport { outcome, outputs })
}

/// Runs a round for every account, a few at a time. Returns the number of accounts that failed;
/// each result is logged.
pub async fn once(config: &Config) -> usize {
    let limit = Arc::new(Semaphore::new(ONCE_CONCURRENCY));
    let clients = Arc::new(Clients::new());
    let mut tasks = tokio::task::JoinSet::new();
    for account in config.accounts.values() {
        let limit = Arc::clone(&limit);
        let clients = Arc::clone(&clients);
        let account = Arc::new(account.clone());
        tasks.spawn(async move {
            // The semaphore is never closed, so acquiring only waits.
            let _permit = limit.acquire_owned().await;
            let result = round(&account, &clients).await;
            (account.name.clone(), result)
        });
    }
    let mut failures = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((name, Ok(report))) => log_success(&name, &report),
            Ok((_, Err(error))) => {
                failures += 1;
                tracing::error!("{error}");
            }
            Err(error) => {
                failures += 1;
                tracing::error!("an account's task failed: {error}");
            }
        }
    }
    failures
}

fn log_success(name: &str, report: &RoundReport) {
    let token = &report.outcome.token;
    let written = report
        .outputs
        .iter()
        .filter(|(_, publish)| *publish == Publish::Written)
        .count();
    tracing::info!(
        account = %name,
        expires_at = %token.expires_at,
        lifetime_s = token.lifetime().as_secs(),
        expiry_from = ?report.outcome.expiry_source,
        clamped = report.outcome.clamped,
        written,
        unchanged = report.outputs.len() - written,
        latency_ms = report.outcome.latency.as_millis() as u64,
        "login succeeded"
    );
}

/// The plan `check` prints: for every account, what it will send where, how expiry is derived
/// and what it writes. Secrets appear only as their source.
pub fn plan(config: &Config) -> String {
    let mut text = String::new();
    let count = config.accounts.len();
    let _ = writeln!(
        text,
        "config {}: valid, {count} account{}",
        config.path.display(),
        if count == 1 { "" } else { "s" }
    );
    let daemon = &config.daemon;
    let _ = writeln!(
        text,
        "status   {}; control socket {}",
        daemon.listen.map_or_else(
            || "no listener ([daemon] listen)".to_string(),
            |address| format!("http://{address}/ (livez, readyz, metrics, status)")
        ),
        daemon
            .control_socket
            .as_ref()
            .map_or_else(|| "none".to_string(), |path| path.display().to_string())
    );
    if let Some(fleet) = &config.fleet {
        describe_fleet(&mut text, config, fleet);
    }
    for account in config.accounts.values() {
        text.push('\n');
        let line = config.lines.get(&account.name).copied().unwrap_or(0);
        describe_account(&mut text, account, line);
    }
    text
}

/// The fleet plan: the store, this member, the key's fingerprint, the failure policy, and which
/// accounts are shared. No key byte, no password.
fn describe_fleet(text: &mut String, config: &Config, fleet: &crate::config::FleetSettings) {
    let endpoints: Vec<&str> = fleet.endpoints.iter().map(url::Url::as_str).collect();
    let _ = writeln!(text, "fleet    etcd {}", endpoints.join(", "));
    let mut connection = String::new();
    if let Some(ca) = &fleet.http.ca_file {
        let _ = write!(connection, "CA bundle {}, ", ca.display());
    }
    if let Some(identity) = &fleet.http.client_identity {
        let _ = write!(
            connection,
            "client certificate {}, ",
            identity.cert.display()
        );
    }
    match (&fleet.username, &fleet.password) {
        (Some(name), Some(password)) => {
            let _ = write!(
                connection,
                "etcd user {name} (password {})",
                password.describe()
            );
        }
        _ => connection.push_str("no etcd user"),
    }
    let _ = writeln!(text, "         {connection}");
    let _ = writeln!(
        text,
        "         member {}, keys under {}/, lease TTL {}s",
        fleet.member,
        fleet.prefix,
        fleet.lease_ttl.as_secs()
    );
    let _ = writeln!(
        text,
        "         key {} (fingerprint {})",
        fleet.key_file.display(),
        fleet.key.fingerprint()
    );
    let _ = writeln!(
        text,
        "         store out of reach: serve the last token until it expires{}",
        if fleet.login_alone_after_expiry {
            ", then log in alone (login_alone_after_expiry)"
        } else {
            "; never log in alone"
        }
    );
    let shared: Vec<&str> = config
        .accounts
        .values()
        .filter(|account| account.fleet)
        .map(|account| account.name.as_str())
        .collect();
    let _ = writeln!(
        text,
        "         shared accounts: {}",
        if shared.is_empty() {
            "none (set fleet = true on an account)".to_string()
        } else {
            shared.join(", ")
        }
    );
}

fn describe_account(text: &mut String, account: &Account, line: usize) {
    let kind = match account.preset {
        Some(preset) => format!("preset {}", preset.name()),
        None => "generic login".to_string(),
    };
    let login = &account.login;
    let request = &login.request;
    let shared = if account.fleet {
        ", shared by the fleet"
    } else {
        ""
    };
    let _ = writeln!(
        text,
        "account {} ({kind}, line {line}{shared})",
        account.name
    );
    let _ = writeln!(text, "  login    {} {}", request.method, request.url);
    let encoding = match request.encoding {
        Encoding::Form => "form",
        Encoding::Json => "json",
        Encoding::None => "no body",
    };
    if !request.fields.is_empty() {
        let _ = writeln!(
            text,
            "           {encoding}: {}",
            describe_fields(&request.fields)
        );
    }
    if let Some(basic) = &request.basic_auth {
        let _ = writeln!(
            text,
            "           basic auth (client_secret_basic): {} / {}",
            basic.user.describe(),
            basic.password.describe()
        );
    }
    if !request.headers.is_empty() {
        let headers: Vec<(String, FieldValue)> = request
            .headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect();
        let _ = writeln!(text, "           headers: {}", describe_fields(&headers));
    }
    let mut http = format!(
        "timeout {}s (connect {}s), replies up to {} bytes",
        account.http.timeout.as_secs(),
        account.http.connect_timeout.as_secs(),
        account.http.max_reply_bytes
    );
    if let Some(ca) = &account.http.ca_file {
        let _ = write!(http, ", extra CA {}", ca.display());
    }
    if let Some(identity) = &account.http.client_identity {
        let _ = write!(
            http,
            ", client certificate {} (key {})",
            identity.cert.display(),
            identity.key.display()
        );
    }
    match &account.http.proxy {
        ProxySetting::None => http.push_str(", no proxy"),
        ProxySetting::Environment => http.push_str(", proxy from the environment"),
        ProxySetting::Url(url) => {
            let _ = write!(http, ", proxy {}", url.host_str().unwrap_or("?"));
        }
    }
    let _ = writeln!(text, "           {http}");
    let _ = writeln!(text, "  expiry   {}", describe_expiry(login, account));
    let _ = writeln!(
        text,
        "  header   {}",
        match &login.scheme {
            Some(scheme) => format!("Authorization: {scheme} <token>"),
            None => "Authorization: <token> (no scheme)".to_string(),
        }
    );
    for (index, output) in account.outputs.iter().enumerate() {
        let label = if index == 0 { "outputs" } else { "" };
        let format = match output.format {
            Format::Env => format!("{} {}", Format::Env.name(), output.env_name),
            Format::Template => match &output.template {
                Some(template) => format!("{} {:?}", Format::Template.name(), template.text()),
                None => Format::Template.name().to_string(),
            },
            format => format.name().to_string(),
        };
        let mut line = format!(
            "  {label:<8} {}  {format}  mode {:04o}",
            output.path.display(),
            output.mode
        );
        if let Some(owner) = output.owner {
            let _ = write!(line, "  owner {owner}");
        }
        if let Some(group) = output.group {
            let _ = write!(line, "  group {group}");
        }
        let _ = writeln!(text, "{line}");
    }
    if let Some(hook) = &account.on_change {
        let action = match &hook.action {
            crate::hook::Action::Command(argv) => format!("run {argv:?}"),
            crate::hook::Action::Signal { pid_file, signal } => {
                format!("SIG{} to the pid in {}", signal.name(), pid_file.display())
            }
        };
        let _ = writeln!(
            text,
            "  on change {action} (timeout {}s, debounce {}ms)",
            hook.timeout.as_secs(),
            hook.debounce.as_millis()
        );
    }
}

fn describe_fields(fields: &[(String, FieldValue)]) -> String {
    fields
        .iter()
        .map(|(name, value)| format!("{name}={}", value.describe()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe_expiry(login: &LoginSpec, account: &Account) -> String {
    let reply = &login.reply;
    let mut signals = Vec::new();
    if let Some(pointer) = &reply.expires_in {
        signals.push(format!("expires_in seconds at {pointer}"));
    }
    if let Some(pointer) = &reply.expires_at {
        signals.push(format!("timestamp at {pointer}"));
    }
    if reply.jwt_exp {
        signals.push("the JWT exp claim".to_string());
    }
    let mut text = if signals.is_empty() {
        String::new()
    } else {
        format!("earliest of {}", signals.join(", "))
    };
    if let Some(lifetime) = reply.fixed_lifetime {
        let fixed = format!("fixed lifetime {}", human_duration(lifetime));
        if text.is_empty() {
            text = fixed;
        } else {
            let _ = write!(text, "; else {fixed}");
        }
    }
    let _ = write!(
        text,
        "; token at {}; at most {}",
        reply.token.join(" or "),
        human_duration(account.max_lifetime)
    );
    text
}

/// `3600s` → `1h`, `86400s` → `1d`; anything uneven in seconds.
fn human_duration(duration: jiff::SignedDuration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0 => "0s".to_string(),
        _ if seconds % 86_400 == 0 => format!("{}d", seconds / 86_400),
        _ if seconds % 3600 == 0 => format!("{}h", seconds / 3600),
        _ if seconds % 60 == 0 => format!("{}m", seconds / 60),
        _ => format!("{seconds}s"),
    }
}
