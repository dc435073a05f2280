//! Consumer hooks: telling an application that its token files changed, by a signal to the pid in
//! a pid file or by running a command (an argv array, no shell).
//!
//! This module holds the hook as data, as the config gives it ([`HookSpec`]); [`run`] performs
//! it. Invariants: a hook never sees the token (not in its argv, not in its environment, which is
//! built from nothing); a failing or hanging hook is logged, killed after its timeout, and never
//! delays a renewal or another account.

pub mod run;

use std::path::PathBuf;
use std::time::Duration;

pub use run::Hook;

/// How long a command hook may run before it (and its process group) is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Changes closer together than this cause one run of the hook.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_secs(1);

/// One account's hook, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookSpec {
    pub action: Action,
    /// A command still running after this long is killed with its process group.
    pub timeout: Duration,
    /// The hook runs this long after the last of a burst of changes.
    pub debounce: Duration,
}

/// What a hook does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Runs `argv[0]` (a path, or a name looked up in `PATH`) with the rest as its arguments.
    Command(Vec<String>),
    /// Sends `signal` to the process whose pid the file holds.
    Signal { pid_file: PathBuf, signal: Signal },
}

/// The signals a hook may send: those applications take as "reload" or "reopen".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Hup,
    Usr1,
    Usr2,
    Int,
    Term,
    Quit,
    Winch,
}

impl Signal {
    pub const ALL: [Signal; 7] = [
        Signal::Hup,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Int,
        Signal::Term,
        Signal::Quit,
        Signal::Winch,
    ];

    /// The name the config uses (`HUP`; `SIGHUP` is accepted too).
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "HUP",
            Signal::Usr1 => "USR1",
            Signal::Usr2 => "USR2",
            Signal::Int => "INT",
            Signal::Term => "TERM",
            Signal::Quit => "QUIT",
            Signal::Winch => "WINCH",
        }
    }

    /// The signal a config name stands for, with or without `SIG`, in any case.
    pub fn from_name(name: &str) -> Option<Signal> {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Signal::ALL.into_iter().find(|signal| signal.name() == bare)
    }

    pub fn to_rustix(self) -> rustix::process::Signal {
        use rustix::process::Signal as S;
        match self {
            Signal::Hup => S::HUP,
            Signal::Usr1 => S::USR1,
            Signal::Usr2 => S::USR2,
            Signal::Int => S::INT,
            Signal::Term => S::TERM,
            Signal::Quit => S::QUIT,
            Signal::Winch => S::WINCH,
        }
    }
}

/// What happened to an account's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new token was written to at least one output.
    Written,
    /// The outputs were removed: the token expired with no replacement.
    Removed,
}

impl Event {
    /// The value of `TOKENKEEPER_EVENT`.
    pub fn name(self) -> &'static str {
        match self {
            Event::Written => "written",
            Event::Removed => "removed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_parse_with_or_without_sig_in_any_case() {
        for signal in Signal::ALL {
            assert_eq!(Signal::from_name(signal.name()), Some(signal));
            let long = format!("sig{}", signal.name().to_lowercase());
            assert_eq!(Signal::from_name(&long), Some(signal));
        }
        assert_eq!(Signal::from_name("KILL"), None);
        assert_eq!(Signal::from_name("SIG"), None);
        assert_eq!(Signal::from_name(""), None);
    }
}
