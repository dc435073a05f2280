//! The errors that end a command, each with its exit code. Commands return them; `main` reports
//! one, once, and exits with its code.
//!
//! Invariant: no message carries a secret or a token (the errors inside already guarantee it).

use crate::config::ConfigError;
use crate::login::LoginError;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a login or a write failed, the daemon could not start, or its stop was forced.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the config is invalid (or names no such account).
pub const EXIT_CONFIG: u8 = 3;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config is invalid: every problem, each with its line.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `token` named an account the config does not have.
    #[error("no account named {name:?} in {path}; accounts: {}", some_of(.known))]
    UnknownAccount {
        name: String,
        path: String,
        known: Vec<String>,
    },
    /// `run` could not start: an output or state directory, a login that cannot be set up.
    #[error("cannot start: {0}")]
    Start(#[from] crate::daemon::SetupError),
    /// `run` could not install its signal handlers.
    #[error("cannot listen for signals: {0}")]
    Signals(#[source] std::io::Error),
    /// Some accounts of a round have no fresh token (each was logged).
    #[error("{failed} of {total} accounts have no fresh token")]
    Accounts { failed: usize, total: usize },
    /// An account's login cannot be set up (a bad CA bundle or proxy).
    #[error(transparent)]
    Setup(#[from] crate::login::SetupError),
    /// `token`'s login failed.
    #[error(transparent)]
    Login(#[from] LoginError),
    /// `token` or a credential helper could not write the token to stdout.
    #[error("cannot write the token to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    /// The system's random source failed (making a fleet key).
    #[error("the system's random source failed")]
    Random,
    /// A credential helper could not read its request.
    #[error("cannot read the request on stdin: {0}")]
    Stdin(#[source] std::io::Error),
    /// The demo could not start its endpoint or write its directory.
    #[error("{0}")]
    Demo(String),
    /// `status`, `refresh` or `probe` found no control socket in the config.
    #[error(
        "this config has no control socket: state_files is off and [daemon] control_socket is not set"
    )]
    NoControlSocket,
    /// No daemon answered on the control socket.
    #[error(transparent)]
    Daemon(crate::daemon::socket::AskError),
    /// The daemon refused a request.
    #[error("the daemon says: {0}")]
    DaemonSaid(String),
    /// A probe failed: why, one line each.
    #[error("{0}")]
    Probe(String),
    /// A credential helper has no token to answer with.
    #[error(transparent)]
    Credential(#[from] crate::commands::credential::CredentialError),
}

/// At most this many account names are listed in a message.
const NAMES_LISTED: usize = 20;

/// The first names of `known`, and how many more there are: a config may have thousands.
fn some_of(known: &[String]) -> String {
    let listed = known.iter().take(NAMES_LISTED).map(String::as_str);
    let mut text = listed.collect::<Vec<_>>().join(", ");
    if known.len() > NAMES_LISTED {
        text.push_str(&format!(" and {} more", known.len() - NAMES_LISTED));
    }
    text
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::UnknownAccount { .. } => EXIT_CONFIG,
            Error::Start(_)
            | Error::Signals(_)
            | Error::Accounts { .. }
            | Error::Setup(_)
            | Error::Login(_)
            | Error::Stdout(_)
            | Error::Stdin(_)
            | Error::Random
            | Error::Demo(_)
            | Error::NoControlSocket
            | Error::Daemon(_)
            | Error::DaemonSaid(_)
            | Error::Probe(_)
            | Error::Credential(_) => EXIT_FAILURE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_help_text() {
        let config = Error::Config(ConfigError {
            path: "c.toml".into(),
            problems: Vec::new(),
        });
        assert_eq!(config.exit_code(), EXIT_CONFIG);
        let accounts = Error::Accounts {
            failed: 1,
            total: 3,
        };
        assert_eq!(accounts.exit_code(), EXIT_FAILURE);
        assert_eq!(accounts.to_string(), "1 of 3 accounts have no fresh token");
        let unknown = Error::UnknownAccount {
            name: "x".into(),
            path: "c.toml".into(),
            known: vec!["a".into(), "b".into()],
        };
        assert_eq!(unknown.exit_code(), EXIT_CONFIG);
        assert!(unknown.to_string().ends_with("accounts: a, b"), "{unknown}");
        let many = Error::UnknownAccount {
            name: "x".into(),
            path: "c.toml".into(),
            known: (0..10_000).map(|index| format!("a{index}")).collect(),
        };
        assert!(many.to_string().ends_with(", a19 and 9980 more"), "{many}");
    }
}
