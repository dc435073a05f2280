//! `probe files`: whether every account's outputs exist and hold a token that has not expired,
//! judged from the files themselves and the state directory, with no daemon to ask (the startup
//! probe of a native sidecar, which runs before the daemon could answer anything).
//!
//! How the expiry of a file is known: a `json` output says it (`expires_at`); any other output
//! must hold exactly what the daemon would write for the token in the account's state file,
//! whose expiry the file records (the state file is signed, so a planted one is not believed).
//!
//! Invariant: read-only; nothing is created, repaired or logged in, and no token is printed.

use std::sync::Arc;

use jiff::Timestamp;

use crate::config::{Account, Config};
use crate::daemon::state::StateDir;
use crate::input::{Symlinks, read_file};
use crate::output::{Format, OutputSpec};
use crate::token::Token;

/// The largest output file read: a token is at most 16 KiB, its JSON document a little more.
const MAX_OUTPUT_BYTES: usize = 128 * 1024;

/// `Ok` when every output of every account holds a token that has not expired at `now`; else
/// one line per problem, naming the account and the file.
pub fn files(config: &Config, now: Timestamp) -> Result<(), Vec<String>> {
    let state = config
        .daemon
        .state_files
        .then(|| StateDir::open_existing(&config.daemon.state_dir));
    let mut problems = Vec::new();
    for account in config.accounts.values() {
        let saved = match &state {
            Some(Ok(dir)) => saved_token(dir, account),
            _ => None,
        };
        for output in &account.outputs {
            if let Err(problem) = check_output(account, output, saved.as_ref(), now) {
                problems.push(format!(
                    "{}: {}: {problem}",
                    account.name,
                    output.path.display()
                ));
            }
        }
    }
    if let (Some(Err(error)), false) = (&state, problems.is_empty()) {
        problems.push(format!("(the state directory could not help: {error})"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn saved_token(dir: &Arc<StateDir>, account: &Account) -> Option<Token> {
    let file = dir.file(account);
    // The daemon rewrites state files in place: a read that races a write sees a torn file
    // (its signature fails). Look once more after the write (microseconds) is surely done.
    // Only a file that is there can be mid-write.
    file.load()
        .or_else(|| {
            file.path().symlink_metadata().ok()?;
            std::thread::sleep(std::time::Duration::from_millis(20));
            file.load()
        })
        .and_then(|saved| saved.token)
}

fn check_output(
    account: &Account,
    output: &OutputSpec,
    saved: Option<&Token>,
    now: Timestamp,
) -> Result<(), String> {
    let file = read_file(&output.path, MAX_OUTPUT_BYTES, Symlinks::Refuse).map_err(|error| {
        if error.is_not_found() {
            "missing".to_string()
        } else {
            error.to_string()
        }
    })?;
    if file.bytes.is_empty() {
        return Err("empty".to_string());
    }
    let expires = if output.format == Format::Json {
        json_expiry(&file.bytes)?
    } else {
        let token = saved.ok_or(
            "no state file to tell when its token expires (add a json output, or keep state_files on)",
        )?;
        let expected = crate::output::contents(account, output, token);
        if file.bytes[..] != expected[..] {
            return Err("does not hold the token the daemon saved last".to_string());
        }
        token.expires_at
    };
    if expires <= now {
        return Err(format!("its token expired at {expires}"));
    }
    Ok(())
}

/// The `expires_at` of a `json` output.
fn json_expiry(bytes: &[u8]) -> Result<Timestamp, String> {
    #[derive(serde::Deserialize)]
    struct Expiry {
        expires_at: String,
    }
    let document: Expiry = serde_json::from_slice(bytes)
        .map_err(|_| "not a tokenkeeper json output (no expires_at)".to_string())?;
    document
        .expires_at
        .parse()
        .map_err(|_| format!("expires_at {:?} is not a timestamp", document.expires_at))
}
