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
//! [`run`] is the entry that `main` and the integration tests share.

pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod expiry;
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

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a login or a write failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the config is invalid.
pub const EXIT_CONFIG: u8 = 3;

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

/// Runs one command and returns its exit code. Errors are reported on stderr (or in the log) here,
/// so the caller only has to exit.
pub async fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Check => match config::load(&cli.config, SecretCheck::Resolve) {
            Ok(config) => {
                for warning in &config.warnings {
                    eprintln!("warning: {warning}");
                }
                print!("{}", commands::plan(&config));
                EXIT_OK
            }
            Err(error) => {
                eprintln!("error: {error}");
                EXIT_CONFIG
            }
        },
        Command::Once => {
            let Some(config) = load_for_run(&cli.config) else {
                return EXIT_CONFIG;
            };
            let failures = commands::once(&config).await;
            if failures == 0 {
                EXIT_OK
            } else {
                tracing::error!(
                    failed = failures,
                    total = config.accounts.len(),
                    "some accounts have no fresh token"
                );
                EXIT_FAILURE
            }
        }
        Command::Token { account } => {
            let Some(config) = load_for_run(&cli.config) else {
                return EXIT_CONFIG;
            };
            print_token(&config, &account).await
        }
        Command::Run => daemon::run_with_signals(&cli.config).await,
        Command::Demo { once, dir } => demo::run(dir, once).await,
    }
}

fn load_for_run(path: &std::path::Path) -> Option<config::Config> {
    match config::load(path, SecretCheck::Skip) {
        Ok(config) => {
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            Some(config)
        }
        Err(error) => {
            tracing::error!("{error}");
            None
        }
    }
}

async fn print_token(config: &config::Config, name: &str) -> u8 {
    let Some(account) = config.accounts.get(name) else {
        let names: Vec<&str> = config.accounts.keys().map(String::as_str).collect();
        tracing::error!(
            "no account named {name:?} in {}; accounts: {}",
            config.path.display(),
            names.join(", ")
        );
        return EXIT_CONFIG;
    };
    let login = match login::Login::for_account(account, &login::http::Clients::new()) {
        Ok(login) => login,
        Err(error) => {
            tracing::error!("account {name}: {error}");
            return EXIT_FAILURE;
        }
    };
    match login.login(None).await {
        Ok(outcome) => {
            let mut stdout = std::io::stdout().lock();
            let written = stdout
                .write_all(outcome.token.expose().as_bytes())
                .and_then(|()| stdout.write_all(b"\n"))
                .and_then(|()| stdout.flush());
            match written {
                Ok(()) => EXIT_OK,
                Err(error) => {
                    tracing::error!("cannot write the token to stdout: {error}");
                    EXIT_FAILURE
                }
            }
        }
        Err(error) => {
            tracing::error!("{error}");
            EXIT_FAILURE
        }
    }
}
