//! tokenkeeper keeps bearer tokens fresh on disk.
//!
//! For each configured account it logs in to a token endpoint, validates the token, and writes it
//! atomically to one or more files that other processes read. Crate map, in the order data flows:
//!
//! - [`cli`]: the command line (clap structs only).
//! - [`config`]: TOML → validated [`config::Config`]; every problem reported with its line.
//! - [`input`]: reading input files (config, secrets, CA bundles, state) without ever blocking.
//! - [`secret`]: where credentials come from, and the redacting [`secret::Secret`] type.
//! - [`login`]: the only module that speaks HTTP: presets, the generic login, error classes.
//! - [`expiry`]: pure time parsing: `expires_in`, timestamps, JWT `exp`, `Retry-After`.
//! - [`token`]: a validated token and its expiry.
//! - [`output`]: output formats, the atomic no-follow file writer, publishing to every output.
//! - [`commands`]: `check`, `once` and `token`, built from the pieces above.
//! - [`schedule`]: pure refresh and retry timing.
//! - [`daemon`]: `run`: a supervisor with one task per account, reload, file watching, signals.
//! - [`demo`]: a loopback token endpoint speaking every preset's shapes, and the `demo` command.
//!
//! - [`error`]: the errors that end a command, with their exit codes.
//!
//! [`run`] is the entry that `main` and the integration tests share.

pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod error;
pub mod expiry;
pub mod fleet;
pub mod hex;
pub mod hook;
pub mod input;
pub mod login;
pub mod output;
pub mod schedule;
pub mod secret;
pub mod token;

use std::io::Write as _;
use std::sync::OnceLock;

use cli::{Cli, Command};
use config::SecretCheck;

pub use error::{EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, Error};

/// Sets the log level; installed by `main` so that the config's `daemon.log_level` can apply
/// when RUST_LOG is not set.
type LogLevelHook = Box<dyn Fn(&str) + Send + Sync>;
static LOG_LEVEL_HOOK: OnceLock<LogLevelHook> = OnceLock::new();

/// Installs the function that changes the log level (once; later calls are ignored).
pub fn set_log_level_hook(hook: LogLevelHook) {
    let _ = LOG_LEVEL_HOOK.set(hook);
}

/// Changes the log level, if `main` installed a way to.
pub fn apply_log_level(level: &str) {
    if let Some(hook) = LOG_LEVEL_HOOK.get() {
        hook(level);
    }
}

/// Runs one command. The error, if any, is for the caller to report (once) and turn into an exit
/// code; what went wrong per account along the way was logged already.
///
/// # Errors
/// See [`Error`].
pub async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Check => {
            let config = config::load(&cli.config, SecretCheck::Resolve)?;
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", commands::plan(&config));
            Ok(())
        }
        Command::Once => {
            let config = load_for_run(&cli.config)?;
            let failed = commands::once(&config).await;
            if failed == 0 {
                Ok(())
            } else {
                Err(Error::Accounts {
                    failed,
                    total: config.accounts.len(),
                })
            }
        }
        Command::Token { account } => {
            let config = load_for_run(&cli.config)?;
            print_token(&config, &account).await
        }
        Command::Run => daemon::run_with_signals(&cli.config).await,
        Command::Status { json } => {
            let config = config::load(&cli.config, SecretCheck::Skip)?;
            let text = commands::remote::status(&config, json, jiff::Timestamp::now())?;
            print!("{text}");
            Ok(())
        }
        Command::Refresh { account } => {
            let config = config::load(&cli.config, SecretCheck::Skip)?;
            print!(
                "{}",
                commands::remote::refresh(&config, account.as_deref())?
            );
            Ok(())
        }
        Command::Probe { what } => {
            let config = config::load(&cli.config, SecretCheck::Skip)?;
            match what {
                cli::ProbeKind::Live => commands::remote::probe(&config, false),
                cli::ProbeKind::Ready => commands::remote::probe(&config, true),
                cli::ProbeKind::Files => commands::probe::files(&config, jiff::Timestamp::now())
                    .map_err(|problems| Error::Probe(problems.join("\n"))),
            }
        }
        Command::Credential { helper } => commands::credential::run(&cli.config, &helper),
        Command::FleetKey => fleet_key(),
        Command::Demo { once, dir } => demo::run(dir, once).await,
    }
}

/// Whether a command's errors are shown as plain `error: …` lines (the interactive commands)
/// rather than through the log.
pub fn reports_plainly(command: &Command) -> bool {
    matches!(
        command,
        Command::Check
            | Command::Credential { .. }
            | Command::FleetKey
            | Command::Demo { .. }
            | Command::Status { .. }
            | Command::Refresh { .. }
            | Command::Probe { .. }
    )
}

/// `fleet-key`: a fresh key on stdout, nowhere else.
fn fleet_key() -> Result<(), Error> {
    let key = fleet::seal::FleetKey::generate().map_err(|_| Error::Random)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(key.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(Error::Stdout)
}

fn load_for_run(path: &std::path::Path) -> Result<config::Config, Error> {
    let config = config::load(path, SecretCheck::Skip)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

async fn print_token(config: &config::Config, name: &str) -> Result<(), Error> {
    let Some(account) = config.accounts.get(name) else {
        return Err(Error::UnknownAccount {
            name: name.to_string(),
            path: config.path.display().to_string(),
            known: config.accounts.keys().cloned().collect(),
        });
    };
    let login = login::Login::for_account(account, &login::http::Clients::new())?;
    let outcome = login.login(None).await?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(outcome.token.expose().as_bytes())
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush())
        .map_err(Error::Stdout)
}
