//! Token files: the output formats and specs, and publishing a token to every output of an
//! account. The only module that writes token files.
//!
//! - `render`: the bytes of each format (pure).
//! - `atomic`: the atomic, no-follow publish of one file.
//!
//! Invariants: a token is checked against every output's format before any output is written, so
//! outputs never disagree because one format refused a token another took; one failing output
//! does not keep the others from the new token; see the submodules for the write itself.

mod atomic;
mod render;
mod template;

use std::path::PathBuf;

use atomic::publish;
pub use atomic::{OutputDir, OutputError, Publish};
use render::{env_safe, render};
pub use template::Template;

use crate::config::Account;
use crate::token::Token;

/// What an output file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The token bytes alone, without a trailing newline.
    Raw,
    /// One `Authorization:` header line, usable as `curl -H @file`.
    Header,
    /// One JSON object with the account, token, scheme and expiry, then a newline.
    Json,
    /// One `NAME=token` line.
    Env,
    /// The output's own text with placeholders ([`Template`]).
    Template,
}

impl Format {
    /// Every format, in the order the docs list them.
    pub const ALL: [Format; 5] = [
        Format::Raw,
        Format::Header,
        Format::Json,
        Format::Env,
        Format::Template,
    ];

    /// The name the config uses.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Header => "header",
            Format::Json => "json",
            Format::Env => "env",
            Format::Template => "template",
        }
    }

    /// The format a config name stands for.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|format| format.name() == name)
    }
}

/// One configured output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// Absolute path of the file, already validated by the config loader.
    pub path: PathBuf,
    /// What the file holds.
    pub format: Format,
    /// Permission bits, e.g. `0o600`; set explicitly so that they do not depend on the umask.
    pub mode: u32,
    /// The uid to give the file, if not the daemon's own.
    pub owner: Option<u32>,
    /// The gid to give the file, e.g. the readers' group.
    pub group: Option<u32>,
    /// The variable name written by [`Format::Env`]; unused by the other formats.
    pub env_name: String,
    /// What [`Format::Template`] writes; `None` for the other formats.
    pub template: Option<Template>,
}

/// Why a token was not published to every output of an account.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("account {account}: {refused}")]
    Refused { account: String, refused: Refused },
    #[error("account {account}: {}", describe_write_failures(.failures))]
    Write {
        account: String,
        /// Every output that could not be written; the others hold the new token.
        failures: Vec<WriteFailure>,
    },
}

/// An output whose format cannot take the token: nothing is written then.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path}: the token holds characters a shell would interpret, so it is not written to any output"
)]
pub struct Refused {
    pub path: String,
}

/// One output that could not be written.
#[derive(Debug)]
pub struct WriteFailure {
    pub path: PathBuf,
    pub source: OutputError,
}

fn describe_write_failures(failures: &[WriteFailure]) -> String {
    let described: Vec<String> = failures
        .iter()
        .map(|failure| format!("writing {}: {}", failure.path.display(), failure.source))
        .collect();
    described.join("; ")
}

/// Whether every output of the account can take the token: the `env` format refuses one a
/// shell would interpret. The daemon checks a new token with this as soon as it arrives, so a
/// refused one counts as an unusable reply (and is retried as a login), not as a write that
/// can never succeed.
///
/// # Errors
/// The first output that refuses the token.
pub fn check_token(account: &Account, token: &Token) -> Result<(), Refused> {
    match account
        .outputs
        .iter()
        .find(|output| output.format == Format::Env && !env_safe(token.expose()))
    {
        Some(output) => Err(Refused {
            path: output.path.display().to_string(),
        }),
        None => Ok(()),
    }
}

/// The bytes `output` of `account` holds for `token`.
pub fn contents(
    account: &Account,
    output: &OutputSpec,
    token: &Token,
) -> zeroize::Zeroizing<Vec<u8>> {
    render(
        output,
        &account.name,
        token,
        account.login.scheme.as_deref(),
    )
}

/// Writes a token to every output of an account: `once` and the daemon both publish through
/// here. The token is checked against every output's format first, so that either all outputs
/// can take it or none is written; then each output is written, and one that fails (a full disk,
/// a missing directory) does not keep the others from the new token.
///
/// # Errors
/// A token the `env` format refuses (nothing written), or every output that could not be
/// written (the others were).
pub fn publish_all(
    account: &Account,
    token: &Token,
) -> Result<Vec<(PathBuf, Publish)>, PublishError> {
    check_token(account, token).map_err(|refused| PublishError::Refused {
        account: account.name.clone(),
        refused,
    })?;
    let mut written = Vec::with_capacity(account.outputs.len());
    let mut failures = Vec::new();
    for output in &account.outputs {
        let contents = contents(account, output, token);
        match publish(output, &contents) {
            Ok(result) => written.push((output.path.clone(), result)),
            Err(source) => failures.push(WriteFailure {
                path: output.path.clone(),
                source,
            }),
        }
    }
    if failures.is_empty() {
        Ok(written)
    } else {
        Err(PublishError::Write {
            account: account.name.clone(),
            failures,
        })
    }
}

/// The first output of the account whose file holds something other than `token` (rendered as
/// that output renders it), or that cannot be looked at, with why; a missing file agrees. A
/// restart reuses a saved token only when every output agrees with it: state files are written
/// without fsync, so after a power loss a state file may be older (or newer) than the durable
/// outputs, and the daemon must neither publish an older token over a newer one nor remove the
/// newer one when the older expires.
pub fn first_disagreeing(account: &Account, token: &Token) -> Option<(PathBuf, String)> {
    account.outputs.iter().find_map(|output| {
        let contents = contents(account, output, token);
        let held = match (output.path.parent(), output.path.file_name()) {
            (Some(dir), Some(name)) => {
                OutputDir::open(dir).and_then(|dir| dir.holds(name, &contents))
            }
            _ => return Some((output.path.clone(), "not a file path".to_string())),
        };
        match held {
            Ok(None | Some(true)) => None,
            Ok(Some(false)) => Some((output.path.clone(), "it holds another token".to_string())),
            Err(error) => Some((output.path.clone(), format!("cannot compare: {error}"))),
        }
    })
}

/// Deletes every output file of an account: when its token expired with no replacement
/// (`on_expiry = "remove"`), and when the account is removed. Failures are logged; a file
/// already gone is not one.
pub fn remove_all(account: &Account) {
    for output in &account.outputs {
        let (Some(dir), Some(name)) = (output.path.parent(), output.path.file_name()) else {
            continue;
        };
        match OutputDir::open(dir).and_then(|dir| dir.remove(name)) {
            Ok(true) => {
                tracing::info!(account = %account.name, path = %output.path.display(), "removed");
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(account = %account.name, "cannot remove {}: {error}", output.path.display());
            }
        }
    }
}

/// What the output tests share: one token with a fractional expiry and one spec per format.
#[cfg(test)]
mod test_support {
    use std::path::PathBuf;

    use jiff::Timestamp;

    use super::{Format, OutputSpec};
    use crate::secret::Secret;
    use crate::token::Token;

    pub(super) fn token(value: &str) -> Token {
        let obtained = Timestamp::from_second(1_795_363_200 - 3_600).unwrap();
        // 2026-11-22T16:00:00.75Z: the fraction must not reach the JSON.
        let expires = Timestamp::new(1_795_363_200, 750_000_000).unwrap();
        Token::new(Secret::new(value.to_string()), obtained, expires).unwrap()
    }

    pub(super) fn spec(format: Format) -> OutputSpec {
        OutputSpec {
            path: PathBuf::from("/run/tokenkeeper/demo.token"),
            format,
            mode: 0o600,
            owner: None,
            group: None,
            env_name: "DEMO_TOKEN".to_string(),
            template: (format == Format::Template).then(|| {
                super::Template::parse("{account} {type} {token}\n").expect("a valid template")
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for format in Format::ALL {
            assert_eq!(Format::from_name(format.name()), Some(format));
        }
        assert_eq!(Format::from_name("Raw"), None);
        assert_eq!(Format::from_name("yaml"), None);
    }
}
