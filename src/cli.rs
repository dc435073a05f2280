//! The command line, as clap structs and nothing else.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{CONFIG_ENV, DEFAULT_CONFIG_PATH};

/// Keeps bearer tokens fresh on disk: logs in to each configured token endpoint, writes the token
/// atomically to files other processes read, and renews it before it expires.
#[derive(Debug, Parser)]
#[command(name = "tokenkeeper", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// The config file.
    #[arg(long, short = 'c', global = true, env = CONFIG_ENV, default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// Log line format on stderr. The level comes from RUST_LOG, else the config's
    /// daemon.log_level, else info.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// Exit codes, shown at the end of `--help`.
pub const EXIT_CODES: &str = "Exit codes:
  0  success
  1  a login or a write failed (once, token, demo), run could not start
     (an output or state directory is missing, not writable or not trusted;
     a login cannot be set up, e.g. a bad CA bundle or proxy; the signal
     handlers cannot be installed), or a stop had to be forced (a second
     signal, or blocked past the grace)
  2  bad command line
  3  invalid config (every problem is listed on stderr), or token names no
     such account";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: keep every account's token fresh until SIGTERM or SIGINT; SIGHUP or a
    /// change to the config, a secret file or a CA bundle reloads. State (the last tokens, for
    /// restarts) goes to the daemon table's state_dir, by default $STATE_DIRECTORY or
    /// /var/lib/tokenkeeper.
    Run,
    /// Validate the config and read every secret, without touching the network; print the plan.
    Check,
    /// Log in every account once and write its outputs; exit 0 only if all succeeded.
    Once,
    /// Log in one account and print a fresh token to stdout (outputs are not written).
    Token {
        /// The account name, as in `[accounts.NAME]`.
        account: String,
    },
    /// Start a built-in loopback token endpoint speaking the seed systems' logins, write an
    /// example config for it in a new temporary directory, and run the daemon against it (real
    /// token files, rotating every two minutes) until Ctrl-C.
    Demo {
        /// Exit after the first round instead of running the daemon until Ctrl-C.
        #[arg(long)]
        once: bool,
        /// Directory to create the demo in (default: a new directory under $TMPDIR).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
