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
     such account
  status, refresh and probe exit 1 when no daemon answers (or a probe
  fails), 3 for an invalid config or an unknown account; credential
  exits 1 when the token file is missing, foreign or expired";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: keep every account's token fresh until SIGTERM or SIGINT; SIGHUP or a
    /// change to the config, a secret file or a CA bundle reloads; SIGUSR1 refreshes every
    /// account. State (the last tokens, for
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
    /// Show the running daemon's view of every account (asked on its control socket, by default
    /// control.sock in the state directory): health, expiry, next refresh, last error.
    Status {
        /// Print the daemon's JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon to log in again now (after a revocation): one account, or every
    /// one. Logins still wait for the login limit and the daemon table's
    /// refresh_request_interval since the account's last login.
    Refresh {
        /// The account name; every account when left out.
        account: Option<String>,
    },
    /// Exit 0 or 1, for Kubernetes exec probes in an image without a shell: `live` (the daemon's
    /// loop is making progress) and `ready` (every account holds an unexpired published token)
    /// ask the daemon on its control socket; `files` needs no daemon: every account's outputs
    /// exist and hold a token that has not expired.
    Probe {
        #[arg(value_enum)]
        what: ProbeKind,
    },
    /// Answer a credential helper's request (kubectl, git, docker) with the token the running
    /// daemon last wrote to the account's json output. Never logs in and needs no secret; exits 1
    /// with a message naming the account and the file when the token is missing or expired.
    Credential {
        #[command(subcommand)]
        helper: CredentialHelper,
    },
    /// Print a new random fleet key (Base64 of 32 bytes) for fleet mode's key file. Every member
    /// of a fleet needs the same key; keep the file readable by the daemon only.
    FleetKey,
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

/// The credential helper protocols.
#[derive(Debug, Subcommand)]
pub enum CredentialHelper {
    /// kubectl's exec credential plugin: prints an ExecCredential (client.authentication.k8s.io
    /// v1, or v1beta1 when KUBERNETES_EXEC_INFO asks) with the token and its expiry.
    Kubectl {
        #[command(flatten)]
        source: TokenSource,
    },
    /// git's credential helper: `get` answers username, password (the token) and
    /// password_expiry_utc; `store` and `erase` are accepted and ignored.
    Git {
        #[command(flatten)]
        source: TokenSource,
        /// What git asks (it appends this itself): get, store or erase.
        operation: String,
        /// The username to answer with (default: the one in git's request, else oauth2).
        #[arg(long)]
        username: Option<String>,
    },
    /// Docker's credential helper protocol, for a `docker-credential-NAME` wrapper script: `get`
    /// answers ServerURL, Username and Secret (the token); `store` and `erase` are ignored.
    Docker {
        #[command(flatten)]
        source: TokenSource,
        /// What docker asks (the wrapper passes it on): get, store, erase or list.
        operation: String,
        /// The username to answer with (default: oauth2).
        #[arg(long)]
        username: Option<String>,
    },
}

/// Where a credential helper reads the token.
#[derive(Debug, clap::Args)]
pub struct TokenSource {
    /// The account name, as in `[accounts.NAME]`; the token file must be this account's.
    pub account: String,
    /// The account's json output to read, instead of looking it up in the config (which then is
    /// not read: the helper needs read access to this file only).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeKind {
    /// The daemon answers and its supervisor loop is making progress.
    Live,
    /// Every account holds an unexpired token in all its outputs, as the daemon sees it.
    Ready,
    /// Every account's output files exist and hold a token that has not expired (read from
    /// the files and the state directory; no daemon needed).
    Files,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
