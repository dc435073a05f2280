//! `credential kubectl|git|docker ACCOUNT`: credential helpers that answer a consumer's request
//! with the token the running daemon last wrote, in the consumer's own protocol.
//!
//! Where the token comes from: the account's `json` output (its first output with
//! `format = "json"`), which holds the token and its expiry; `--file` names that file directly, so
//! that a helper run as the consumer's user needs neither the config nor any secret, only read
//! access to the file. The helper never logs in.
//!
//! Invariants: a missing, foreign (another account's), malformed or expired file is an error
//! naming the account and the file, never an answer; no message carries the token; the token is
//! printed only on stdout, in the protocol's answer, and the buffers that held it are zeroized.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use zeroize::Zeroizing;

use crate::Error;
use crate::cli::{CredentialHelper, TokenSource};
use crate::config::{self, Config, SecretCheck};
use crate::input::{InputError, Symlinks, read_file};
use crate::output::Format;

/// The most a helper reads of its request on stdin (git's is a few lines, docker's an address).
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// Answers one helper request: the request from stdin (git, docker) or `KUBERNETES_EXEC_INFO`
/// (kubectl), the answer on stdout. The config at `config_path` is read (without its secrets)
/// only to find the account's json output when `--file` is not given.
///
/// # Errors
/// No valid token (see [`CredentialError`]), an unknown account or an invalid config, or a
/// request or answer that cannot be read or written.
pub fn run(config_path: &Path, helper: &CredentialHelper) -> Result<(), Error> {
    let now = Timestamp::now();
    let answer = match helper {
        CredentialHelper::Kubectl { source } => {
            let path = locate(config_path, source)?;
            let stored = read(&source.account, &path, now)?;
            let exec_info = std::env::var("KUBERNETES_EXEC_INFO").ok();
            Some(kubectl(&stored, exec_info.as_deref())?)
        }
        CredentialHelper::Git {
            source,
            operation,
            username,
        } => {
            let request = read_request()?;
            git(operation, &request, username.as_deref(), || {
                Ok::<_, Error>(read(&source.account, &locate(config_path, source)?, now)?)
            })?
            .map(|text| Zeroizing::new(text.as_bytes().to_vec()))
        }
        CredentialHelper::Docker {
            source,
            operation,
            username,
        } => {
            let request = read_request()?;
            let answer = docker(
                operation,
                &request,
                username.as_deref(),
                &source.account,
                || Ok::<_, Error>(read(&source.account, &locate(config_path, source)?, now)?),
            );
            if let Err(error) = &answer {
                // Docker shows what a failing helper printed on stdout.
                println!("{error}");
            }
            answer?
        }
    };
    if let Some(answer) = answer {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&answer)
            .and_then(|()| stdout.flush())
            .map_err(Error::Stdout)?;
    }
    Ok(())
}

/// The json output of `source`'s account: `--file`, else looked up in the config.
fn locate(config_path: &Path, source: &TokenSource) -> Result<PathBuf, Error> {
    if let Some(file) = &source.file {
        return Ok(file.clone());
    }
    let config = config::load(config_path, SecretCheck::Skip)?;
    json_output(&config, &source.account)?.ok_or_else(|| Error::UnknownAccount {
        name: source.account.clone(),
        path: config.path.display().to_string(),
        known: config.accounts.keys().cloned().collect(),
    })
}

/// The request on stdin, up to its end (or [`MAX_REQUEST_BYTES`]).
fn read_request() -> Result<Zeroizing<String>, Error> {
    let mut request = Zeroizing::new(String::new());
    std::io::stdin()
        .take(MAX_REQUEST_BYTES)
        .read_to_string(&mut request)
        .map_err(Error::Stdin)?;
    Ok(request)
}

/// The largest json output read: a token is at most 16 KiB, its document a little more.
const MAX_OUTPUT_BYTES: usize = 128 * 1024;

/// The username given with the token when neither `--username` nor the request names one
/// (GitLab's convention for OAuth2 tokens; most servers ignore it for bearer tokens).
pub const DEFAULT_USERNAME: &str = "oauth2";

/// Why a helper has no answer. Names the account and the file; never carries the token.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "account {account}: no token in {path} yet (is tokenkeeper running, and is this the account's json output?)"
    )]
    Missing { account: String, path: PathBuf },
    #[error("account {account}: {source}")]
    Unreadable {
        account: String,
        #[source]
        source: InputError,
    },
    #[error("account {account}: {path} is not a tokenkeeper json output ({why})")]
    NotJson {
        account: String,
        path: PathBuf,
        why: String,
    },
    #[error("account {account}: {path} holds the token of account {other:?}")]
    OtherAccount {
        account: String,
        path: PathBuf,
        other: String,
    },
    #[error(
        "account {account}: the token in {path} expired at {expires_at} (is tokenkeeper running and renewing it?)"
    )]
    Expired {
        account: String,
        path: PathBuf,
        expires_at: Timestamp,
    },
    #[error(
        "account {account} has no json output to read the token from: add an output with format = \"json\", or pass --file"
    )]
    NoJsonOutput { account: String },
    #[error("account {account}: {what}")]
    Unanswerable { account: String, what: String },
}

/// The token the daemon last wrote for an account, and when it expires.
pub struct Stored {
    account: String,
    token: Zeroizing<String>,
    expires_at: Timestamp,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Stored")
            .field("account", &self.account)
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The json output the helper reads for `account`: its first `json` output in `config`; `None`
/// when the config has no such account.
///
/// # Errors
/// The account has no json output.
pub fn json_output(config: &Config, account: &str) -> Result<Option<PathBuf>, CredentialError> {
    let Some(found) = config.accounts.get(account) else {
        return Ok(None);
    };
    found
        .outputs
        .iter()
        .find(|output| output.format == Format::Json)
        .map(|output| Some(output.path.clone()))
        .ok_or_else(|| CredentialError::NoJsonOutput {
            account: account.to_string(),
        })
}

/// Reads `account`'s token from its json output at `path`, valid at `now`.
///
/// # Errors
/// See [`CredentialError`]: the file is missing, unreadable, not a json output, another
/// account's, or its token has expired.
pub fn read(account: &str, path: &Path, now: Timestamp) -> Result<Stored, CredentialError> {
    #[derive(serde::Deserialize)]
    struct Document {
        account: String,
        token: String,
        expires_at: String,
    }
    let file = read_file(path, MAX_OUTPUT_BYTES, Symlinks::Follow).map_err(|error| {
        if error.is_not_found() {
            CredentialError::Missing {
                account: account.to_string(),
                path: path.to_path_buf(),
            }
        } else {
            CredentialError::Unreadable {
                account: account.to_string(),
                source: error,
            }
        }
    })?;
    let not_json = |why: &str| CredentialError::NotJson {
        account: account.to_string(),
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    // serde_json's error would quote nothing of the token, but say less than this does.
    let document: Document = serde_json::from_slice(&file.bytes)
        .map_err(|_| not_json("no account, token and expires_at"))?;
    let token = Zeroizing::new(document.token);
    if document.account != account {
        return Err(CredentialError::OtherAccount {
            account: account.to_string(),
            path: path.to_path_buf(),
            other: document.account,
        });
    }
    let expires_at: Timestamp = document
        .expires_at
        .parse()
        .map_err(|_| not_json("expires_at is not a timestamp"))?;
    if token.is_empty() {
        return Err(not_json("the token is empty"));
    }
    if expires_at <= now {
        return Err(CredentialError::Expired {
            account: account.to_string(),
            path: path.to_path_buf(),
            expires_at,
        });
    }
    Ok(Stored {
        account: document.account,
        token,
        expires_at,
    })
}

/// The exec credential versions kubectl may ask for.
const KUBECTL_VERSIONS: [&str; 2] = [
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
];

/// kubectl's exec credential plugin answer: an `ExecCredential` with the token and its expiry
/// (after which kubectl runs the plugin again). `exec_info` is `KUBERNETES_EXEC_INFO`, whose
/// `apiVersion` the answer echoes; without it, `v1`.
///
/// # Errors
/// `exec_info` asks for a version this helper does not speak.
pub fn kubectl(
    stored: &Stored,
    exec_info: Option<&str>,
) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
    #[derive(serde::Deserialize)]
    struct ExecInfo {
        #[serde(rename = "apiVersion")]
        api_version: Option<String>,
    }
    let asked = exec_info
        .and_then(|text| serde_json::from_str::<ExecInfo>(text).ok())
        .and_then(|info| info.api_version);
    let api_version = match asked.as_deref() {
        None => KUBECTL_VERSIONS[0],
        Some(asked) => KUBECTL_VERSIONS
            .into_iter()
            .find(|known| *known == asked)
            .ok_or_else(|| CredentialError::Unanswerable {
                account: stored.account.clone(),
                what: format!(
                    "kubectl asks for {asked:?}; this helper speaks {}",
                    KUBECTL_VERSIONS.join(" and ")
                ),
            })?,
    };
    #[derive(serde::Serialize)]
    struct ExecCredential<'a> {
        #[serde(rename = "apiVersion")]
        api_version: &'a str,
        kind: &'a str,
        status: Status<'a>,
    }
    #[derive(serde::Serialize)]
    struct Status<'a> {
        token: &'a str,
        #[serde(rename = "expirationTimestamp")]
        expiration_timestamp: String,
    }
    let status = Status {
        token: &stored.token,
        expiration_timestamp: format!("{:.0}", stored.expires_at),
    };
    Ok(to_json_line(
        &ExecCredential {
            api_version,
            kind: "ExecCredential",
            status,
        },
        stored.token.len() + api_version.len() + 32,
    ))
}

/// One operation of git's credential helper protocol (`git help credential`).
///
/// `get` answers `username`, `password` (the token) and `password_expiry_utc`; `store`, `erase`
/// and operations this helper does not know are accepted and answered with nothing, as the
/// protocol asks. `request` is what git wrote on stdin; `read` gives the stored token, and is
/// called only for `get`.
///
/// # Errors
/// `read`'s error, or a token or username the line protocol cannot carry.
pub fn git<E: From<CredentialError>>(
    operation: &str,
    request: &str,
    username: Option<&str>,
    read: impl FnOnce() -> Result<Stored, E>,
) -> Result<Option<Zeroizing<String>>, E> {
    if operation != "get" {
        return Ok(None);
    }
    let stored = read()?;
    let asked = request
        .lines()
        .find_map(|line| line.strip_prefix("username="));
    let username = username.or(asked).unwrap_or(DEFAULT_USERNAME);
    let carriable = |value: &str| !value.contains(['\n', '\r', '\0']);
    if !carriable(&stored.token) || !carriable(username) {
        return Err(CredentialError::Unanswerable {
            account: stored.account.clone(),
            what:
                "the token or username holds a line break or NUL, which git's protocol cannot carry"
                    .to_string(),
        }
        .into());
    }
    let mut answer = Zeroizing::new(String::with_capacity(stored.token.len() + 96));
    answer.push_str("username=");
    answer.push_str(username);
    answer.push_str("\npassword=");
    answer.push_str(&stored.token);
    answer.push_str("\npassword_expiry_utc=");
    answer.push_str(&stored.expires_at.as_second().to_string());
    answer.push('\n');
    Ok(Some(answer))
}

/// One operation of Docker's credential helper protocol (`docker-credential-*`).
///
/// `get` reads the registry's address on stdin and answers `ServerURL`, `Username` and `Secret`
/// (the token); `store` and `erase` are accepted and ignored (the daemon owns the token); `list`
/// answers an empty object (the helper keeps nothing it could list). `read` is called only for
/// `get`.
///
/// # Errors
/// `read`'s error, or an operation the protocol does not have (for `account`).
pub fn docker<E: From<CredentialError>>(
    operation: &str,
    request: &str,
    username: Option<&str>,
    account: &str,
    read: impl FnOnce() -> Result<Stored, E>,
) -> Result<Option<Zeroizing<Vec<u8>>>, E> {
    match operation {
        "store" | "erase" => Ok(None),
        "list" => Ok(Some(Zeroizing::new(b"{}\n".to_vec()))),
        "get" => {
            #[derive(serde::Serialize)]
            #[serde(rename_all = "PascalCase")]
            struct Credentials<'a> {
                #[serde(rename = "ServerURL")]
                server_url: &'a str,
                username: &'a str,
                secret: &'a str,
            }
            let stored = read()?;
            let answer = Credentials {
                server_url: request.trim(),
                username: username.unwrap_or(DEFAULT_USERNAME),
                secret: &stored.token,
            };
            let strings = answer.server_url.len() + answer.username.len() + answer.secret.len();
            Ok(Some(to_json_line(&answer, strings)))
        }
        other => Err(CredentialError::Unanswerable {
            account: account.to_string(),
            what: format!(
                "unknown docker credential operation {other:?} (get, store, erase, list)"
            ),
        }
        .into()),
    }
}

/// `value` (which borrows the token, so no other buffer holds it) as one line of JSON, in a buffer
/// zeroized on drop and large enough from the start, so that no copy is left behind by a growth:
/// `strings` is the length of the strings in it, each byte of which serde_json escapes into at
/// most six.
fn to_json_line(value: &impl serde::Serialize, strings: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(256 + 6 * strings));
    // Cannot fail: writing to a Vec never returns an I/O error, and a struct of strings has no
    // map keys that JSON could refuse.
    serde_json::to_writer(&mut *out, value).expect("serializing strings into a Vec");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests;
