//! What a reload does, as data: from the running config, the new one and the accounts whose CA
//! bundle changed, the accounts to stop and start, the files to keep, and the settings to apply.
//!
//! Invariants: pure (no I/O, no tasks); accounts that did not change produce nothing, and where an
//! account is written in the file is not part of what it does; output paths the new config writes
//! are never in the way of a removal, whoever wrote them before.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{self, Account, Config};

/// What a reload does to one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Add(String),
    Remove(String),
    /// The account's settings changed: its task restarts (reusing its state file when the login
    /// itself is unchanged).
    Restart(String),
}

/// Compares two sets of accounts. Pure; unchanged accounts produce nothing.
pub fn diff(
    old: &BTreeMap<String, Arc<Account>>,
    new: &BTreeMap<String, Arc<Account>>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for (name, account) in old {
        match new.get(name) {
            None => changes.push(Change::Remove(name.clone())),
            Some(updated) if updated != account => changes.push(Change::Restart(name.clone())),
            Some(_) => {}
        }
    }
    for name in new.keys() {
        if !old.contains_key(name) {
            changes.push(Change::Add(name.clone()));
        }
    }
    changes
}

/// Whether a settings change reaches into the account tasks (which then restart). The log level,
/// file watching, the login limit and the grace period are applied by the supervisor itself; the
/// listener and the control socket change at a restart of the daemon.
pub fn task_settings_differ(old: &config::DaemonSettings, new: &config::DaemonSettings) -> bool {
    let mut comparable = new.clone();
    comparable.log_level.clone_from(&old.log_level);
    comparable.watch = old.watch;
    comparable.max_concurrent_logins = old.max_concurrent_logins;
    comparable.shutdown_grace = old.shutdown_grace;
    comparable.listen = old.listen;
    comparable.control_socket.clone_from(&old.control_socket);
    comparable != *old
}

/// Everything one reload changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Per account: start, stop, or restart.
    pub changes: Vec<Change>,
    /// Accounts restarted only because the contents of their client files (CA bundle, client
    /// certificate or key) changed.
    pub files_restarts: Vec<String>,
    /// Output paths the new config writes: not removed with the accounts that stop.
    pub kept: BTreeSet<PathBuf>,
    /// Accounts gone from the config: their state files go too.
    pub forgotten: Vec<String>,
    /// Whether the state directory moved (or state files were switched on or off).
    pub state_dir_changed: bool,
    /// The new log level, when it changed (`None` inside: back to the default).
    pub log_level: Option<Option<String>>,
}

impl ReloadPlan {
    /// The accounts to start (added or restarted), in the new config.
    pub fn started<'a>(&'a self, new: &'a Config) -> impl Iterator<Item = &'a Arc<Account>> + 'a {
        self.changes.iter().filter_map(|change| match change {
            Change::Add(name) | Change::Restart(name) => new.accounts.get(name),
            Change::Remove(_) => None,
        })
    }

    /// The names of the accounts to stop (removed or restarted).
    pub fn stopped(&self) -> impl Iterator<Item = &str> {
        self.changes.iter().filter_map(|change| match change {
            Change::Remove(name) | Change::Restart(name) => Some(name.as_str()),
            Change::Add(_) => None,
        })
    }
}

/// What reloading from `old` to `new` does, given the accounts whose client files (CA bundle,
/// client certificate and key) changed since their clients were built.
pub fn plan(old: &Config, new: &Config, files_changed: &[String]) -> ReloadPlan {
    let mut changes = diff(&old.accounts, &new.accounts);
    let mut files_restarts = Vec::new();
    for name in files_changed {
        if new.accounts.contains_key(name) && new.accounts.get(name) == old.accounts.get(name) {
            changes.push(Change::Restart(name.clone()));
            files_restarts.push(name.clone());
        }
    }
    if task_settings_differ(&old.daemon, &new.daemon) {
        // Timing and retry settings live in every task: restart them all (state files make that
        // free of logins while the tokens are valid).
        changes = old
            .accounts
            .keys()
            .map(|name| Change::Remove(name.clone()))
            .chain(new.accounts.keys().map(|name| Change::Add(name.clone())))
            .collect();
    }
    let kept = new
        .accounts
        .values()
        .flat_map(|account| account.outputs.iter().map(|output| output.path.clone()))
        .collect();
    let forgotten = old
        .accounts
        .keys()
        .filter(|name| !new.accounts.contains_key(*name))
        .cloned()
        .collect();
    ReloadPlan {
        changes,
        files_restarts,
        kept,
        forgotten,
        state_dir_changed: (old.daemon.state_files, &old.daemon.state_dir)
            != (new.daemon.state_files, &new.daemon.state_dir),
        log_level: (old.daemon.log_level != new.daemon.log_level)
            .then(|| new.daemon.log_level.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SecretCheck, parse};
    use std::path::Path;

    fn account(name: &str, scope: &str, output: &str) -> String {
        format!(
            "[accounts.{name}]\npreset = \"oauth2\"\ntoken_url = \"https://idp.example/t\"\nclient_id = \"i\"\nclient_secret = {{ env = \"HOME\" }}\nscope = \"{scope}\"\n[[accounts.{name}.outputs]]\npath = \"/run/tk/{output}\"\n"
        )
    }

    fn config(text: &str) -> Config {
        parse(text, Path::new("t.toml"), SecretCheck::Skip, false).unwrap()
    }

    #[test]
    fn diff_table() {
        let old =
            config(&(account("a", "x", "a") + &account("b", "x", "b") + &account("c", "x", "c")));
        let new =
            config(&(account("a", "x", "a") + &account("b", "y", "b") + &account("d", "x", "d")));
        assert_eq!(
            diff(&old.accounts, &new.accounts),
            vec![
                Change::Restart("b".into()),
                Change::Remove("c".into()),
                Change::Add("d".into())
            ]
        );
        assert!(diff(&old.accounts, &old.accounts).is_empty());
        assert_eq!(diff(&old.accounts, &Default::default()).len(), 3);
    }

    #[test]
    fn only_settings_the_tasks_use_restart_them() {
        use crate::config::DaemonSettings;
        let base = DaemonSettings::default();
        let mut quiet = base.clone();
        quiet.log_level = Some("debug".to_string());
        quiet.watch = false;
        quiet.max_concurrent_logins = 3;
        quiet.shutdown_grace = std::time::Duration::from_secs(1);
        assert!(!task_settings_differ(&base, &quiet));
        let mut timing = base.clone();
        timing.rejected_retry = std::time::Duration::from_secs(120);
        assert!(task_settings_differ(&base, &timing));
    }

    #[test]
    fn plan_table() {
        let base = account("a", "x", "a") + &account("b", "x", "b");
        let old = config(&base);
        let restart = |name: &str| Change::Restart(name.to_string());
        // (why, new config text, accounts whose CA changed, expected changes, kept, forgotten)
        type Case<'a> = (
            &'a str,
            String,
            Vec<&'a str>,
            Vec<Change>,
            Vec<&'a str>,
            Vec<&'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "the same text: nothing",
                base.clone(),
                vec![],
                vec![],
                vec!["a", "b"],
                vec![],
            ),
            (
                "a comment above the accounts moves every line: nothing",
                format!("# a comment\n\n{base}"),
                vec![],
                vec![],
                vec!["a", "b"],
                vec![],
            ),
            (
                "one account's scope: that one restarts",
                account("a", "x", "a") + &account("b", "y", "b"),
                vec![],
                vec![restart("b")],
                vec!["a", "b"],
                vec![],
            ),
            (
                "a rotated CA bundle: its account restarts",
                base.clone(),
                vec!["a"],
                vec![restart("a")],
                vec!["a", "b"],
                vec![],
            ),
            (
                "a renamed account keeps writing the same path: kept",
                account("a", "x", "a") + &account("renamed", "x", "b"),
                vec![],
                vec![Change::Remove("b".into()), Change::Add("renamed".into())],
                vec!["a", "b"],
                vec!["b"],
            ),
            (
                "a timing setting: every account restarts",
                format!("[daemon]\nretry_cap = \"1m\"\n{base}"),
                vec![],
                vec![
                    Change::Remove("a".into()),
                    Change::Remove("b".into()),
                    Change::Add("a".into()),
                    Change::Add("b".into()),
                ],
                vec!["a", "b"],
                vec![],
            ),
            (
                "the login limit and the log level: no account restarts",
                format!("[daemon]\nmax_concurrent_logins = 2\nlog_level = \"debug\"\n{base}"),
                vec![],
                vec![],
                vec!["a", "b"],
                vec![],
            ),
        ];
        for (why, text, files_changed, changes, kept, forgotten) in cases {
            let new = config(&text);
            let files_changed: Vec<String> =
                files_changed.iter().map(|name| name.to_string()).collect();
            let plan = plan(&old, &new, &files_changed);
            assert_eq!(plan.changes, changes, "{why}");
            let kept: BTreeSet<PathBuf> = kept
                .iter()
                .map(|name| PathBuf::from(format!("/run/tk/{name}")))
                .collect();
            assert_eq!(plan.kept, kept, "{why}");
            assert_eq!(plan.forgotten, forgotten, "{why}");
            assert_eq!(plan.files_restarts, files_changed, "{why}");
        }
        let louder = config(&format!("[daemon]\nlog_level = \"debug\"\n{base}"));
        let plan = plan(&old, &louder, &[]);
        assert_eq!(plan.log_level, Some(Some("debug".to_string())));
        assert!(!plan.state_dir_changed);
        let moved = config(&format!(
            "[daemon]\nstate_dir = \"/var/lib/elsewhere\"\n{base}"
        ));
        assert!(super::plan(&old, &moved, &[]).state_dir_changed);
    }
}
