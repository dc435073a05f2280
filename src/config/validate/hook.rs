//! Validating an account's `on_change` hook: exactly one of `command` (a non-empty argv, no
//! shell) or `pid_file` (with an optional `signal`), and its timeout and debounce.

use toml::Spanned;

use super::Validator;
use crate::config::raw::RawHook;
use crate::config::values::parse_duration;
use crate::hook::{Action, DEFAULT_DEBOUNCE, DEFAULT_TIMEOUT, HookSpec, Signal};

/// The longest a hook may be given to run.
const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

impl Validator {
    pub(super) fn hook(&mut self, prefix: &str, raw: &Spanned<RawHook>) -> Option<HookSpec> {
        let key = format!("{prefix}.on_change");
        let span = raw.span();
        let raw = raw.get_ref();
        let before = self.problems.len();
        let action = match (&raw.command, &raw.pid_file) {
            (Some(command), None) => {
                if raw.signal.is_some() {
                    self.problem(
                        raw.signal.as_ref().map(Spanned::span),
                        &format!("{key}.signal"),
                        "`signal` goes with `pid_file`, not with `command`",
                    );
                }
                let argv = command.get_ref();
                match argv.first() {
                    None => {
                        self.problem(
                            Some(command.span()),
                            &format!("{key}.command"),
                            "the command is empty: give the program and its arguments, e.g. [\"systemctl\", \"try-reload-or-restart\", \"app.service\"]",
                        );
                        None
                    }
                    Some(program) if program.is_empty() => {
                        self.problem(
                            Some(command.span()),
                            &format!("{key}.command"),
                            "the program name is empty",
                        );
                        None
                    }
                    Some(_) if argv.iter().any(|arg| arg.contains('\0')) => {
                        self.problem(
                            Some(command.span()),
                            &format!("{key}.command"),
                            "an argument holds a NUL byte",
                        );
                        None
                    }
                    Some(_) => Some(Action::Command(argv.clone())),
                }
            }
            (None, Some(pid_file)) => {
                let signal = match &raw.signal {
                    None => Some(Signal::Hup),
                    Some(name) => {
                        let signal = Signal::from_name(name.get_ref());
                        if signal.is_none() {
                            let known: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
                            self.problem(
                                Some(name.span()),
                                &format!("{key}.signal"),
                                format!(
                                    "unknown signal `{}`, expected one of {}",
                                    name.get_ref(),
                                    known.join(", ")
                                ),
                            );
                        }
                        signal
                    }
                };
                let path = std::path::Path::new(pid_file.get_ref());
                if !path.is_absolute() {
                    self.problem(
                        Some(pid_file.span()),
                        &format!("{key}.pid_file"),
                        format!("`{}` is not absolute", pid_file.get_ref()),
                    );
                }
                signal.map(|signal| Action::Signal {
                    pid_file: path.to_path_buf(),
                    signal,
                })
            }
            (Some(_), Some(_)) => {
                self.problem(
                    Some(span.clone()),
                    &key,
                    "give either `command` or `pid_file`, not both",
                );
                None
            }
            (None, None) => {
                self.problem(
                    Some(span.clone()),
                    &key,
                    "give `command = [\"program\", \"arg\", …]` or `pid_file = \"/run/app.pid\"`",
                );
                None
            }
        };
        let mut duration = |value: &Option<Spanned<String>>, name: &str, default| match value {
            None => default,
            Some(value) => match parse_duration(value.get_ref()) {
                Ok(duration) => duration,
                Err(message) => {
                    self.problem(Some(value.span()), &format!("{key}.{name}"), message);
                    default
                }
            },
        };
        let timeout = duration(&raw.timeout, "timeout", DEFAULT_TIMEOUT);
        let debounce = duration(&raw.debounce, "debounce", DEFAULT_DEBOUNCE);
        if (timeout.is_zero() || timeout > MAX_TIMEOUT)
            && let Some(value) = &raw.timeout
        {
            self.problem(
                Some(value.span()),
                &format!("{key}.timeout"),
                "must be more than 0s and at most 1h",
            );
        }
        if debounce > MAX_TIMEOUT
            && let Some(value) = &raw.debounce
        {
            self.problem(
                Some(value.span()),
                &format!("{key}.debounce"),
                "must be at most 1h",
            );
        }
        if self.problems.len() > before {
            return None;
        }
        Some(HookSpec {
            action: action?,
            timeout,
            debounce,
        })
    }
}
