//! `status`, `refresh` and `probe live|ready`: asking the running daemon on its control socket.
//!
//! Invariant: these never log in and never read a secret; what they print comes from the daemon's
//! reply, which holds no secret or token.

use std::fmt::Write as _;

use jiff::Timestamp;

use crate::Error;
use crate::config::Config;
use crate::daemon::socket;

/// The control socket of the daemon that runs `config`.
fn socket_of(config: &Config) -> Result<&std::path::Path, Error> {
    config
        .daemon
        .control_socket
        .as_deref()
        .ok_or(Error::NoControlSocket)
}

fn ask(config: &Config, request: &str) -> Result<serde_json::Value, Error> {
    let reply = socket::ask(socket_of(config)?, request).map_err(Error::Daemon)?;
    match reply.get("error").and_then(serde_json::Value::as_str) {
        Some(error) => Err(Error::DaemonSaid(error.to_string())),
        None => Ok(reply),
    }
}

/// `tokenkeeper status [--json]`: the daemon's view, as a table or its JSON document.
///
/// # Errors
/// No control socket in the config, or no daemon answers on it.
pub fn status(config: &Config, json: bool, now: Timestamp) -> Result<String, Error> {
    let reply = ask(config, "status")?;
    if json {
        return Ok(format!("{reply:#}\n"));
    }
    Ok(table(&reply, now))
}

/// The status document as a table: account, health, expires in, next refresh, last error.
fn table(reply: &serde_json::Value, now: Timestamp) -> String {
    let empty = Vec::new();
    let accounts = reply["accounts"].as_array().unwrap_or(&empty);
    let mut rows = vec![[
        "ACCOUNT".to_string(),
        "HEALTH".to_string(),
        "FLEET".to_string(),
        "EXPIRES IN".to_string(),
        "NEXT REFRESH".to_string(),
        "LAST ERROR".to_string(),
    ]];
    for account in accounts {
        let field = |key: &str| account[key].as_str().unwrap_or("-").to_string();
        rows.push([
            field("account"),
            field("health"),
            fleet_role(&account["fleet"]),
            relative(account["expires_at"].as_str(), now),
            relative(account["next_refresh"].as_str(), now),
            field("last_error"),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        for (width, cell) in widths.iter().zip(row) {
            let _ = write!(out, "{cell:<width$}  ");
        }
        let _ = writeln!(out, "{}", row[5]);
    }
    let _ = writeln!(
        out,
        "{} of {} accounts ready",
        accounts
            .iter()
            .filter(|account| account["ready"].as_bool() == Some(true))
            .count(),
        accounts.len()
    );
    out
}

/// A fleet account's role (with its leader when another member leads), or `-`.
fn fleet_role(fleet: &serde_json::Value) -> String {
    let Some(role) = fleet["role"].as_str() else {
        return "-".to_string();
    };
    let unreachable = if fleet["store_error"].is_string() {
        ", store out of reach"
    } else {
        ""
    };
    match (role, fleet["leader"].as_str()) {
        ("follower", Some(leader)) => format!("follower of {leader}{unreachable}"),
        (role, _) => format!("{role}{unreachable}"),
    }
}

/// `in 4m12s`, `3s ago`, or `-`.
fn relative(at: Option<&str>, now: Timestamp) -> String {
    let Some(at) = at.and_then(|text| text.parse::<Timestamp>().ok()) else {
        return "-".to_string();
    };
    let seconds = at.as_second() - now.as_second();
    let span = human(seconds.unsigned_abs());
    if seconds >= 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

fn human(seconds: u64) -> String {
    let (days, hours, minutes, secs) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    if days > 0 {
        format!("{days}d{hours}h")
    } else if hours > 0 {
        format!("{hours}h{minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// `tokenkeeper refresh [ACCOUNT]`: asks the daemon; returns what it said it asked.
///
/// # Errors
/// An unknown account, no control socket, or no daemon answers.
pub fn refresh(config: &Config, account: Option<&str>) -> Result<String, Error> {
    if let Some(name) = account
        && !config.accounts.contains_key(name)
    {
        return Err(Error::UnknownAccount {
            name: name.to_string(),
            path: config.path.display().to_string(),
            known: config.accounts.keys().cloned().collect(),
        });
    }
    let request = match account {
        Some(name) => format!("refresh {name}"),
        None => "refresh".to_string(),
    };
    let reply = ask(config, &request)?;
    let names: Vec<&str> = reply["refreshing"]
        .as_array()
        .map(|names| names.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    Ok(format!(
        "refresh requested for {} account(s): {}\n",
        names.len(),
        names.join(", ")
    ))
}

/// `probe live` and `probe ready`: `Ok` when the daemon says so, else why not.
///
/// # Errors
/// The daemon is not live or not ready (the reasons, one per line), or does not answer.
pub fn probe(config: &Config, ready: bool) -> Result<(), Error> {
    if ready {
        let reply = ask(config, "ready")?;
        if reply["ready"].as_bool() == Some(true) {
            return Ok(());
        }
        let problems: Vec<String> = reply["problems"]
            .as_array()
            .map(|lines| {
                lines
                    .iter()
                    .filter_map(|line| line.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Err(Error::Probe(problems.join("\n")))
    } else {
        let reply = ask(config, "live")?;
        if reply["live"].as_bool() == Some(true) {
            Ok(())
        } else {
            Err(Error::Probe(
                "the daemon answers but its supervisor loop does not: it is stuck".to_string(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_times_relative_to_now() {
        let now: Timestamp = "2026-12-01T12:00:00Z".parse().expect("valid");
        let reply = serde_json::json!({
            "ready": false,
            "accounts": [
                {"account": "papaya", "health": "rejected", "ready": false,
                 "expires_at": null, "next_refresh": "2026-12-01T12:30:00Z",
                 "last_error": "HTTP 401"},
                {"account": "panaya", "health": "healthy", "ready": true,
                 "expires_at": "2026-12-01T12:04:12Z", "next_refresh": "2026-12-01T11:59:57Z",
                 "last_error": null},
            ]
        });
        let table = table(&reply, now);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ACCOUNT  HEALTH"), "{table}");
        assert!(
            lines[1].contains("rejected") && lines[1].contains("in 30m0s"),
            "{table}"
        );
        assert!(lines[1].ends_with("HTTP 401"), "{table}");
        assert!(
            lines[2].contains("in 4m12s") && lines[2].contains("3s ago"),
            "{table}"
        );
        assert_eq!(lines[3], "1 of 2 accounts ready");
    }

    #[test]
    fn the_table_shows_each_fleet_accounts_role_and_leader() {
        let now: Timestamp = "2026-12-01T12:00:00Z".parse().expect("valid");
        let reply = serde_json::json!({
            "ready": true,
            "accounts": [
                {"account": "a", "health": "healthy", "ready": true, "fleet":
                    {"role": "follower", "leader": "node-b", "store_error": null}},
                {"account": "b", "health": "healthy", "ready": true, "fleet":
                    {"role": "candidate", "leader": null, "store_error": "no leader"}},
                {"account": "c", "health": "healthy", "ready": true, "fleet": null},
            ]
        });
        let table = table(&reply, now);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("HEALTH   FLEET"), "{table}");
        assert!(lines[1].contains("follower of node-b "), "{table}");
        assert!(
            lines[2].contains("candidate, store out of reach"),
            "{table}"
        );
        assert!(lines[3].contains("healthy  -"), "{table}");
    }
}
