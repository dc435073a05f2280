//! What the running daemon knows about itself: each account's status, the last reload's outcome,
//! and whether the supervisor loop answers. The status listener, the control socket, systemd
//! notifications and the metrics all read this board; account tasks and the supervisor write it.
//!
//! Invariants: nothing on the board is a secret or a token (errors are the scrubbed texts that
//! logs carry); readiness is judged from the token's expiry at the moment of asking, so a token
//! that expired unrenewed makes the daemon unready even before its task notices; writing the board
//! never blocks on a reader for longer than a copy of one account's status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::Notify;

use super::metrics::{Counts, Metrics};
use super::state::CredentialsDigest;
use super::wake::Wake;
use crate::config::Account;

/// How an account is doing, for logs, status and readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// No token yet, first login pending.
    Starting,
    /// A valid token is published.
    Healthy,
    /// The last attempts failed but the published token is still valid.
    Degraded,
    /// The credentials were rejected; retrying slowly, or at once when the secret changes.
    Rejected,
    /// No valid token: it expired (or never came) and no new one could be had.
    Unhealthy,
}

impl Health {
    /// The name status views use.
    pub fn name(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Rejected => "rejected",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// What the supervisor and status views know about one account. Never holds a secret.
#[derive(Clone, Debug)]
pub struct AccountStatus {
    pub health: Health,
    pub expires_at: Option<Timestamp>,
    /// When the next login is planned.
    pub next_attempt: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    /// The last failure (a login or a write), scrubbed; cleared by a success.
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// Logins attempted by this task (successful or not).
    pub logins: u64,
    /// The account's counters for the metrics, kept across restarts of its task.
    pub counts: Counts,
    /// Whether every output holds the current token.
    pub written: bool,
    /// Whether the task has had its first go: a login finished (either way), or a token kept
    /// from before a restart was written.
    pub attempted: bool,
    /// The account's place in the fleet, for a `fleet = true` account.
    pub fleet: Option<FleetView>,
}

/// A fleet account as its member sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetView {
    pub role: crate::fleet::Role,
    /// The member that leads, when known (this one's name when it leads).
    pub leader: Option<String>,
    /// The leader's term (its election key's revision), when known.
    pub term: Option<i64>,
    /// Why the store cannot be reached (or was refusing), while that lasts.
    pub store_error: Option<String>,
    /// Logins this member made as the leader.
    pub logins_as_leader: u64,
    /// Logins this member made alone, the store out of reach.
    pub logins_alone: u64,
}

impl Default for AccountStatus {
    fn default() -> AccountStatus {
        AccountStatus {
            health: Health::Starting,
            expires_at: None,
            next_attempt: None,
            last_success: None,
            last_error: None,
            consecutive_failures: 0,
            logins: 0,
            counts: Counts::default(),
            written: false,
            attempted: false,
            fleet: None,
        }
    }
}

impl AccountStatus {
    /// Why the account is not ready at `now`, or `None` when every output holds a token that has
    /// not expired.
    pub fn not_ready(&self, now: Timestamp) -> Option<String> {
        let error = |what: &str| match &self.last_error {
            Some(error) => format!("{what}: {error}"),
            None => what.to_string(),
        };
        match self.expires_at {
            Some(expires) if expires <= now => Some(error(&format!("token expired at {expires}"))),
            Some(_) if self.written => None,
            Some(_) => Some(error("token not written yet")),
            None if self.health == Health::Rejected => Some(
                self.last_error
                    .clone()
                    .unwrap_or_else(|| "credentials rejected".to_string()),
            ),
            None if self.attempted => Some(error("no token")),
            None => Some("no token yet: first login pending".to_string()),
        }
    }
}

/// What a login attempt came to, for `tokenkeeper_logins_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Transient,
    Rejected,
    Protocol,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Transient,
        Outcome::Rejected,
        Outcome::Protocol,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Transient => "transient",
            Outcome::Rejected => "rejected",
            Outcome::Protocol => "protocol",
        }
    }
}

/// One account on the board: its status (with its metric counters), and the signal that wakes its
/// task (refresh requests, new credentials, clock jumps).
pub struct AccountCell {
    /// Where its name and outputs come from (shared with the config and the task).
    account: Arc<Account>,
    status: Mutex<AccountStatus>,
    /// Wakes the account's task: refresh requests, new credentials, clock jumps.
    wake: Wake,
    changed: Arc<Notify>,
}

impl AccountCell {
    /// Changes the status, and tells the board's watchers (systemd's status line).
    pub fn update(&self, change: impl FnOnce(&mut AccountStatus)) {
        {
            let mut status = self
                .status
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            change(&mut status);
        }
        self.changed.notify_one();
    }

    pub fn snapshot(&self) -> AccountStatus {
        self.status
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// A login ended with `outcome` after `duration`.
    pub fn login_finished(&self, outcome: Outcome, duration: Duration) {
        self.count(|counts| counts.login_finished(outcome, duration));
    }

    /// Writing a token to the outputs failed.
    pub fn write_failed(&self) {
        self.count(Counts::write_failed);
    }

    /// Changes the counters: no watcher shows them, so none is told.
    fn count(&self, change: impl FnOnce(&mut Counts)) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        change(&mut status.counts);
    }

    /// The account, as its task runs it.
    pub fn account(&self) -> &Arc<Account> {
        &self.account
    }

    /// What wakes the account's task.
    pub fn wake(&self) -> &Wake {
        &self.wake
    }
}

/// One account as status views show it.
#[derive(Clone, Debug)]
pub struct AccountView {
    pub name: String,
    pub outputs: Vec<PathBuf>,
    pub status: AccountStatus,
}

/// The outcome of the last config load, Prometheus's own convention for reloads.
#[derive(Clone, Copy, Debug)]
pub struct ReloadRecord {
    pub successful: bool,
    /// When the config in force was loaded.
    pub last_success: Timestamp,
}

/// The daemon's board. Shared as an `Arc`.
pub struct Board {
    accounts: RwLock<BTreeMap<String, Arc<AccountCell>>>,
    metrics: Metrics,
    liveness: Liveness,
    reload: Mutex<ReloadRecord>,
    changed: Arc<Notify>,
}

/// How the supervisor loop shows it is alive: it answers pokes, and says when it is busy with a
/// reload (which may take a while) instead. No periodic wake-up: an idle daemon stays asleep.
#[derive(Default)]
struct Liveness {
    poke: Notify,
    answers: std::sync::atomic::AtomicU64,
    answered: Notify,
    busy_since: Mutex<Option<tokio::time::Instant>>,
}

/// How long a liveness check waits for the loop to answer: well inside the kubelet's default
/// probe timeout of 1 s; a loop that lets it pass is stuck.
pub const LIVENESS_WAIT: Duration = Duration::from_millis(800);
/// A reload may keep the loop busy this long before the loop is taken for stuck: longer than any
/// reload takes (a stuck account task is waited for at most `STOP_WAIT`).
pub const BUSY_LIMIT: Duration = Duration::from_secs(15);

impl Board {
    pub fn new(loaded_at: Timestamp) -> Arc<Board> {
        Arc::new(Board {
            accounts: RwLock::default(),
            metrics: Metrics::new(),
            liveness: Liveness::default(),
            reload: Mutex::new(ReloadRecord {
                successful: true,
                last_success: loaded_at,
            }),
            changed: Arc::new(Notify::new()),
        })
    }

    /// Puts an account on the board, with the digest of its `credentials`. An account already
    /// there (its task restarts) keeps what is known of it and its counters; the new task updates
    /// them as it goes.
    pub fn insert(
        &self,
        account: &Arc<Account>,
        credentials: CredentialsDigest,
    ) -> Arc<AccountCell> {
        let previous = self.cell(&account.name);
        let status = previous.map_or_else(AccountStatus::default, |cell| cell.snapshot());
        let cell = Arc::new(AccountCell {
            account: Arc::clone(account),
            status: Mutex::new(status),
            wake: Wake::new(credentials),
            changed: Arc::clone(&self.changed),
        });
        self.write_accounts()
            .insert(account.name.clone(), Arc::clone(&cell));
        self.changed.notify_one();
        cell
    }

    /// Takes an account off the board, and so its series off the metrics.
    pub fn remove(&self, name: &str) {
        self.write_accounts().remove(name);
        self.changed.notify_one();
    }

    pub fn cell(&self, name: &str) -> Option<Arc<AccountCell>> {
        self.read_accounts().get(name).cloned()
    }

    /// Every account, in name order.
    pub fn snapshot(&self) -> Vec<AccountView> {
        let cells: Vec<Arc<AccountCell>> = self.read_accounts().values().cloned().collect();
        cells
            .iter()
            .map(|cell| AccountView {
                name: cell.account.name.clone(),
                outputs: cell
                    .account
                    .outputs
                    .iter()
                    .map(|output| output.path.clone())
                    .collect(),
                status: cell.snapshot(),
            })
            .collect()
    }

    /// Asks one account (or all) to log in again soon. Returns the accounts asked, or `None`
    /// when there is no account of that name.
    pub fn request_refresh(&self, account: Option<&str>) -> Option<Vec<String>> {
        let accounts = self.read_accounts();
        match account {
            Some(name) => {
                let cell = accounts.get(name)?;
                cell.wake.request_refresh();
                Some(vec![name.to_string()])
            }
            None => {
                for cell in accounts.values() {
                    cell.wake.request_refresh();
                }
                Some(accounts.keys().cloned().collect())
            }
        }
    }

    /// Whether the supervisor loop is alive: busy with a reload for less than [`BUSY_LIMIT`], or
    /// answering a poke within [`LIVENESS_WAIT`].
    pub async fn alive(&self) -> bool {
        let liveness = &self.liveness;
        if let Some(busy) = self.busy_within_limit() {
            return busy;
        }
        let answered = liveness.answered.notified();
        tokio::pin!(answered);
        answered.as_mut().enable();
        let before = liveness.answers.load(std::sync::atomic::Ordering::Acquire);
        liveness.poke.notify_one();
        let deadline = tokio::time::Instant::now() + LIVENESS_WAIT;
        loop {
            if liveness.answers.load(std::sync::atomic::Ordering::Acquire) != before {
                return true;
            }
            if tokio::time::timeout_at(deadline, answered.as_mut())
                .await
                .is_err()
            {
                // The loop may have started a reload after the poke.
                return liveness.answers.load(std::sync::atomic::Ordering::Acquire) != before
                    || self.busy_within_limit() == Some(true);
            }
            answered.set(liveness.answered.notified());
            answered.as_mut().enable();
        }
    }

    /// `None` when the loop is not busy; else whether it has been busy for less than
    /// [`BUSY_LIMIT`].
    fn busy_within_limit(&self) -> Option<bool> {
        let since = *self
            .liveness
            .busy_since
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        since.map(|since| since.elapsed() < BUSY_LIMIT)
    }

    /// Resolves when a liveness check pokes the supervisor loop. Cancel-safe.
    pub async fn poked(&self) {
        self.liveness.poke.notified().await;
    }

    /// The supervisor loop answers a poke.
    pub fn answer(&self) {
        self.liveness
            .answers
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        self.liveness.answered.notify_waiters();
    }

    /// The supervisor loop starts (`true`) or ends (`false`) a reload, during which it answers
    /// no pokes.
    pub fn busy(&self, busy: bool) {
        *self
            .liveness
            .busy_since
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = busy.then(tokio::time::Instant::now);
    }

    /// A reload was tried (`at` is now).
    pub fn reloaded(&self, successful: bool, at: Timestamp) {
        let mut record = self
            .reload
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        record.successful = successful;
        if successful {
            record.last_success = at;
        }
    }

    pub fn reload_record(&self) -> ReloadRecord {
        *self
            .reload
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Resolves after some account's status changed (or an account came or went) since the last
    /// call. Cancel-safe.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The Prometheus exposition of the board at `now`.
    pub fn metrics_text(&self, now: Timestamp) -> String {
        self.metrics
            .encode(|| self.snapshot(), self.reload_record(), now)
    }

    fn read_accounts(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<AccountCell>>> {
        self.accounts
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn write_accounts(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<AccountCell>>> {
        self.accounts
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// The readiness of every account at `now`: `Ok` when all are ready, else one line per account
/// that is not, naming it and why.
pub fn readiness(accounts: &[AccountView], now: Timestamp) -> Result<(), Vec<String>> {
    let problems: Vec<String> = accounts
        .iter()
        .filter_map(|view| {
            view.status
                .not_ready(now)
                .map(|why| format!("{}: {why}", view.name))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// What a ready daemon still wants an operator to know, one line per account: fleet accounts
/// serving the last token while the store cannot be reached.
pub fn readiness_notes(accounts: &[AccountView]) -> Vec<String> {
    accounts
        .iter()
        .filter_map(|view| {
            let fleet = view.status.fleet.as_ref()?;
            let error = fleet.store_error.as_ref()?;
            let until = view
                .status
                .expires_at
                .map_or_else(String::new, |at| format!(" until it expires at {at:.0}"));
            Some(format!(
                "{}: serving the last token{until}: the fleet store cannot be reached: {error}",
                view.name
            ))
        })
        .collect()
}

/// The one-line summary systemd shows (`STATUS=`): counts, and the first account in trouble.
pub fn summary(accounts: &[AccountView], now: Timestamp) -> String {
    let ready = accounts
        .iter()
        .filter(|view| view.status.not_ready(now).is_none())
        .count();
    let mut line = format!("{ready}/{} accounts ready", accounts.len());
    let troubled = accounts.iter().find(|view| {
        matches!(
            view.status.health,
            Health::Rejected | Health::Unhealthy | Health::Degraded
        )
    });
    if let Some(view) = troubled {
        let what = match view.status.health {
            Health::Rejected => "credentials rejected",
            Health::Unhealthy => "no valid token",
            _ => "logins failing, token still valid",
        };
        line.push_str(&format!("; {}: {what}", view.name));
    }
    line
}

/// Whether every account has had its first go (systemd's `READY=1`).
pub fn all_attempted(accounts: &[AccountView]) -> bool {
    accounts.iter().all(|view| view.status.attempted)
}

/// The `/status` document: one object per account.
pub fn status_json(accounts: &[AccountView], now: Timestamp) -> serde_json::Value {
    let time = |at: Option<Timestamp>| at.map(|at| at.to_string());
    let list: Vec<serde_json::Value> = accounts
        .iter()
        .map(|view| {
            let status = &view.status;
            serde_json::json!({
                "account": view.name,
                "health": status.health.name(),
                "ready": status.not_ready(now).is_none(),
                "expires_at": time(status.expires_at),
                "next_refresh": time(status.next_attempt),
                "last_success": time(status.last_success),
                "last_error": status.last_error,
                "consecutive_failures": status.consecutive_failures,
                "outputs": view.outputs,
                "fleet": status.fleet.as_ref().map(|fleet| serde_json::json!({
                    "role": fleet.role.name(),
                    "leader": fleet.leader,
                    "term": fleet.term,
                    "store_error": fleet.store_error,
                    "logins_as_leader": fleet.logins_as_leader,
                    "logins_alone": fleet.logins_alone,
                })),
            })
        })
        .collect();
    serde_json::json!({
        "ready": readiness(accounts, now).is_ok(),
        "accounts": list,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_900_000_000 + seconds).expect("in range")
    }

    fn view(name: &str, change: impl FnOnce(&mut AccountStatus)) -> AccountView {
        let mut status = AccountStatus::default();
        change(&mut status);
        AccountView {
            name: name.to_string(),
            outputs: vec![PathBuf::from(format!("/run/tk/{name}"))],
            status,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_is_alive_while_it_answers_or_is_busy_for_a_while() {
        let board = Board::new(at(0));
        // Nobody answers: dead after the wait.
        assert!(!board.alive().await);
        // A loop that answers pokes.
        let answering = Arc::clone(&board);
        let task = tokio::spawn(async move {
            loop {
                answering.poked().await;
                answering.answer();
            }
        });
        assert!(board.alive().await);
        assert!(board.alive().await);
        task.abort();
        // Busy with a reload: alive without answering, until the busy limit.
        board.busy(true);
        assert!(board.alive().await);
        tokio::time::sleep(BUSY_LIMIT).await;
        assert!(!board.alive().await);
        board.busy(false);
        assert!(!board.alive().await);
    }

    #[test]
    fn readiness_follows_the_expiry_at_the_moment_of_asking() {
        let healthy = view("a", |status| {
            status.health = Health::Healthy;
            status.expires_at = Some(at(100));
            status.written = true;
            status.attempted = true;
        });
        assert_eq!(readiness(std::slice::from_ref(&healthy), at(99)), Ok(()));
        let expired = readiness(std::slice::from_ref(&healthy), at(100)).unwrap_err();
        assert_eq!(expired.len(), 1);
        assert!(expired[0].starts_with("a: token expired at"), "{expired:?}");
    }

    #[test]
    fn a_fleet_account_serving_its_last_token_is_ready_with_a_note() {
        let accounts = [
            view("shared", |status| {
                status.expires_at = Some(at(60));
                status.written = true;
                status.fleet = Some(FleetView {
                    store_error: Some("etcdserver: no leader".to_string()),
                    ..FleetView::default()
                });
            }),
            view("own", |status| {
                status.expires_at = Some(at(60));
                status.written = true;
            }),
        ];
        assert!(readiness(&accounts, at(0)).is_ok());
        let notes = readiness_notes(&accounts);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("shared: serving the last token until it expires at"),
            "{notes:?}"
        );
        assert!(notes[0].ends_with("etcdserver: no leader"), "{notes:?}");
        let document = status_json(&accounts, at(0));
        assert_eq!(document["accounts"][0]["fleet"]["role"], "candidate");
        assert!(document["accounts"][1]["fleet"].is_null());
    }

    #[test]
    fn every_unready_account_is_named_with_its_reason() {
        let accounts = [
            view("fresh", |_| {}),
            view("rejected", |status| {
                status.health = Health::Rejected;
                status.attempted = true;
                status.last_error = Some("credentials rejected: HTTP 401".to_string());
            }),
            view("unwritten", |status| {
                status.expires_at = Some(at(500));
                status.attempted = true;
            }),
            view("ok", |status| {
                status.expires_at = Some(at(500));
                status.written = true;
                status.attempted = true;
            }),
        ];
        let problems = readiness(&accounts, at(0)).unwrap_err();
        assert_eq!(
            problems,
            [
                "fresh: no token yet: first login pending",
                "rejected: credentials rejected: HTTP 401",
                "unwritten: token not written yet",
            ]
        );
        assert!(!all_attempted(&accounts));
        assert_eq!(
            summary(&accounts, at(0)),
            "1/4 accounts ready; rejected: credentials rejected"
        );
    }

    #[test]
    fn the_status_document_has_one_object_per_account() {
        let accounts = [view("b", |status| {
            status.expires_at = Some(at(60));
            status.written = true;
            status.consecutive_failures = 2;
        })];
        let document = status_json(&accounts, at(0));
        assert_eq!(document["ready"], true);
        let entry = &document["accounts"][0];
        assert_eq!(entry["account"], "b");
        assert_eq!(entry["health"], "starting");
        assert_eq!(entry["expires_at"], at(60).to_string());
        assert_eq!(entry["consecutive_failures"], 2);
        assert_eq!(entry["outputs"][0], "/run/tk/b");
        assert!(entry["last_error"].is_null());
    }
}
