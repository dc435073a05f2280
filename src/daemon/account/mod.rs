//! One account's task: log in, write, sleep until the refresh point, repeat; back off on failure;
//! park on rejected credentials; keep the last good token until it expires.
//!
//! The decisions are `plan::Plan`'s (pure, table-tested); this task is the shell that performs
//! each step and reports the outcome back, and keeps the token itself, the logs and the status.
//!
//! Invariants: the token on disk is only ever replaced by a newer valid one (or removed once it
//! has expired, if so configured); a failed write is retried without logging in again while the
//! token in memory is valid; every wait is computed from boot time (which counts suspend) and
//! re-checked whenever the supervisor reports a clock jump; a login runs only with a permit from
//! the global limiter.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use jiff::Timestamp;
use rand::SeedableRng as _;
use rand::rngs::SmallRng;
use tokio::sync::watch;

mod plan;

use plan::{Held, Plan, Start, Step};

use super::clock::{Clock, boot_to_wall, wall_to_boot};
use super::limiter::Limiter;
use super::state::{Saved, StateFile};
use super::status::{AccountCell, Health, Outcome};
use super::wake::Seen;
use crate::config::{Account, DaemonSettings, OnExpiry};
use crate::login::{ErrorClass, Login, LoginError, LoginOutcome};
use crate::schedule;
use crate::secret::Secret;
use crate::token::Token;

/// A boxed login future, so that tests can stand in for the HTTP login.
pub type LoginFuture<'a> =
    Pin<Box<dyn Future<Output = Result<LoginOutcome, LoginError>> + Send + 'a>>;

/// Something that trades an account's credentials for a token.
pub trait Authenticator: Send + Sync + 'static {
    fn login<'a>(&'a self, refresh_token: Option<&'a Secret>) -> LoginFuture<'a>;
}

impl Authenticator for Login {
    fn login<'a>(&'a self, refresh_token: Option<&'a Secret>) -> LoginFuture<'a> {
        Box::pin(Login::login(self, refresh_token))
    }
}

/// Everything an account task shares with its supervisor.
pub struct Shared {
    pub clock: Arc<dyn Clock>,
    /// One copy for every task (it is a few hundred bytes).
    pub settings: Arc<DaemonSettings>,
    pub limiter: Arc<Limiter>,
    /// Becomes true when the daemon stops.
    pub shutdown: watch::Receiver<bool>,
    /// How many accounts started together, to size the spread of first logins.
    pub startup_accounts: usize,
    /// Accounts already warned that their lifetimes are too short for the timing settings, so
    /// the warning comes once per account, not once per restart of its task.
    pub warned_short: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

/// The token the task holds (its instants are in the [`Plan`]).
struct Holding {
    token: Token,
    refresh_token: Option<Secret>,
}

/// One account's task.
pub struct AccountTask {
    /// Shared with the supervisor's record of the running account.
    account: Arc<Account>,
    auth: Arc<dyn Authenticator>,
    shared: Shared,
    /// The account on the status board: status, metrics, and its wake signal (refresh
    /// requests; the keyed digest of the account's secret values, updated by the supervisor
    /// when a secret file changes, so that a parked account retries at once; clock jumps).
    cell: Arc<AccountCell>,
    /// The wake signal's counters as this task last saw them. A new cell's counters start at zero,
    /// so a refresh requested while the task starts is not lost.
    seen: Seen,
    state: Option<StateFile>,
    /// What the state file held at start, read by the supervisor (one account after another,
    /// so that thousands of tasks starting together do not each block a thread on a read).
    /// Boxed: it is needed once, and the task keeps its room for as long as it runs.
    saved: Option<Box<Saved>>,
    /// A fresh token is to be saved in the state file, with its first write.
    state_due: bool,
    /// What to tell the consumer after the files change.
    hook: Option<crate::hook::Hook>,
    /// Jitter and backoff draws: they need spread, not secrecy, and a small generator keeps
    /// the task small (a few hundred bytes less per account than a CSPRNG's state).
    rng: SmallRng,
    /// A fleet member takes over this account's logins: log in at once, keeping the token the
    /// files hold until the new one is written (see [`AccountTask::take_over`]).
    takeover: bool,
}

impl AccountTask {
    pub fn new(
        account: Arc<Account>,
        auth: Arc<dyn Authenticator>,
        shared: Shared,
        cell: Arc<AccountCell>,
        state: Option<StateFile>,
        saved: Option<Saved>,
    ) -> AccountTask {
        let hook = account.on_change.clone().map(|spec| {
            let outputs = account.outputs.iter().map(|output| output.path.clone());
            crate::hook::Hook::spawn(&account.name, outputs.collect(), spec)
        });
        AccountTask {
            account,
            auth,
            shared,
            cell,
            seen: Seen::default(),
            state,
            saved: saved.map(Box::new),
            state_due: false,
            hook,
            rng: SmallRng::from_os_rng(),
            takeover: false,
        }
    }

    /// The account on the board.
    pub(crate) fn cell(&self) -> &Arc<AccountCell> {
        &self.cell
    }

    pub(crate) fn shutdown(&self) -> watch::Receiver<bool> {
        self.shared.shutdown.clone()
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    pub(crate) fn settings(&self) -> &Arc<DaemonSettings> {
        &self.shared.settings
    }

    /// The token the state file held at start, for a fleet member to follow from.
    pub(crate) fn saved_token(&self) -> Option<Token> {
        self.saved.as_ref().and_then(|saved| saved.token.clone())
    }

    /// Makes the next [`AccountTask::run_loop`] log in at once (a fleet member that just became
    /// the leader, or logs in alone), holding `held`, the token the files hold, until then.
    pub(crate) fn take_over(&mut self, held: Option<&Token>) {
        let clock = &self.shared.clock;
        self.saved = Some(Box::new(Saved {
            token: held.cloned(),
            not_before: None,
            parked: false,
            saved_at: clock.wall(),
            credentials: Some(self.cell.wake().credentials()),
        }));
        self.takeover = true;
    }

    /// Writes a token a fleet's leader published to the outputs, with the state file first.
    pub(crate) fn adopt(&mut self, token: &Token) -> Result<(), String> {
        let holding = Holding {
            token: token.clone(),
            refresh_token: None,
        };
        self.write(token, Some(&holding))
            .inspect_err(|_| self.cell.write_failed())?;
        self.update(|status| {
            status.health = Health::Healthy;
            status.consecutive_failures = 0;
        });
        Ok(())
    }

    /// The token the files hold expired and none replaced it (a fleet follower's view).
    pub(crate) fn expired(&self) {
        self.expire_on_disk(self.shared.clock.boot(), false);
    }

    fn update(&self, change: impl FnOnce(&mut crate::daemon::status::AccountStatus)) {
        self.cell.update(change);
    }

    fn wall_of(&self, boot: Duration) -> Timestamp {
        boot_to_wall(boot, self.shared.clock.wall(), self.shared.clock.boot())
    }

    /// Runs until shutdown: a thin shell around `Plan`, which decides; this performs each step
    /// (a login, a write, a removal, a sleep) and reports the outcome back. Cancel-safe at every
    /// await: a login is abandoned, and writes never span an await.
    ///
    /// Not an `async fn`: one would hold the task twice in its future (the argument, and the
    /// local it is moved into), some 400 bytes per account for as long as it runs.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold the task twice"
    )]
    pub fn run(mut self) -> impl Future<Output = ()> + Send {
        async move { self.run_loop().await }
    }

    pub(crate) async fn run_loop(&mut self) {
        let clock = Arc::clone(&self.shared.clock);
        let start = self.restore();
        let first_login_delay = if std::mem::take(&mut self.takeover) {
            Duration::ZERO
        } else {
            schedule::startup_delay(
                self.shared.startup_accounts,
                Duration::from_millis(20),
                self.shared.settings.startup_spread,
                &mut self.rng,
            )
        };
        let mut plan = Plan::start(clock.boot(), start, first_login_delay);
        loop {
            if *self.shared.shutdown.borrow() {
                return;
            }
            let now = clock.boot();
            match plan.next(now) {
                Step::ExpireOnDisk => self.expire_on_disk(plan.next_login(), plan.parked()),
                Step::Login => {
                    let refresh_token = plan
                        .token()
                        .and_then(|current| current.refresh_token.clone());
                    // Boxed, so that the task's future is only as large as its sleeping state while
                    // it waits, which is almost always.
                    let Some((result, began, took)) =
                        Box::pin(self.login(refresh_token.as_ref())).await
                    else {
                        return;
                    };
                    plan.login_began(began);
                    // A token an output cannot take (an `env` file and a token a shell would
                    // interpret) is an unusable reply: retried as a login, with backoff, while
                    // the files keep the token they hold.
                    let result = result.and_then(|outcome| {
                        match crate::output::check_token(&self.account, &outcome.token) {
                            Ok(()) => Ok(outcome),
                            Err(refused) => Err(LoginError {
                                account: self.account.name.clone(),
                                class: ErrorClass::Protocol,
                                status: None,
                                retry_after: None,
                                message: refused.to_string(),
                            }),
                        }
                    });
                    let outcome = match &result {
                        Ok(_) => Outcome::Ok,
                        Err(error) => match error.class {
                            ErrorClass::Transient => Outcome::Transient,
                            ErrorClass::Rejected => Outcome::Rejected,
                            ErrorClass::Protocol => Outcome::Protocol,
                        },
                    };
                    self.cell.login_finished(outcome, took);
                    match result {
                        Ok(outcome) => {
                            let (fresh, times) = self.accept(outcome);
                            plan.logged_in(clock.boot(), fresh, times);
                        }
                        Err(error) => {
                            let failures = plan.failures().saturating_add(1);
                            let expires = plan.held().map(|held| held.expires);
                            let (retry_at, not_before) =
                                self.after_failure(&error, failures, expires);
                            plan.login_failed(
                                retry_at,
                                not_before,
                                error.class == ErrorClass::Rejected,
                            );
                            self.save_state(plan.token(), Some(retry_at), plan.parked());
                        }
                    }
                }
                Step::Write => {
                    // The plan asks for a write only while it holds a token.
                    let Some(current) = plan.token() else {
                        continue;
                    };
                    let save_first = std::mem::take(&mut self.state_due).then_some(current);
                    match self.write(&current.token, save_first) {
                        Ok(()) => plan.wrote(),
                        Err(message) => {
                            self.cell.write_failed();
                            let delay =
                                schedule::WRITE_RETRY.delay(plan.write_failures(), &mut self.rng);
                            tracing::error!(account = %self.account.name, retry_in_s = delay.as_secs_f32(), "{message}");
                            let message = self.without_account(message);
                            self.update(|status| {
                                status.last_error = Some(message);
                                status.attempted = true;
                            });
                            plan.write_failed(clock.boot().saturating_add(delay));
                        }
                    }
                }
                Step::Sleep { until } => {
                    let next_wall = self.wall_of(plan.next_login());
                    self.update(|status| status.next_attempt = Some(next_wall));
                    let wait = schedule::clamp_wait(until.saturating_sub(now));
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.cell.wake().woken() => {
                            // Or the clocks jumped: the loop re-checks every deadline anyway.
                            let woken = self.cell.wake().changes(&mut self.seen);
                            if woken.credentials_changed && plan.secrets_changed(clock.boot()) {
                                tracing::info!(account = %self.account.name, "secret or config changed: trying again now");
                            }
                            if woken.refresh_requested {
                                let now = clock.boot();
                                let gap = self.shared.settings.refresh_request_interval;
                                let at = plan.refresh_requested(now, gap);
                                tracing::info!(
                                    account = %self.account.name,
                                    in_s = at.saturating_sub(now).as_secs_f32(),
                                    "refresh requested"
                                );
                            }
                        }
                        // An error means the supervisor is gone: stop too, rather than spin on it.
                        changed = self.shared.shutdown.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Remembers the held token and the next permitted login in the state file, so that a
    /// restart neither logs in while a token is valid nor retries a failing account at once.
    fn save_state(&self, held: Option<&Holding>, next_login: Option<Duration>, parked: bool) {
        let Some(state) = &self.state else {
            return;
        };
        let clock = &self.shared.clock;
        let (wall_now, boot_now) = (clock.wall(), clock.boot());
        let saved = Saved {
            token: held.map(|current| current.token.clone()),
            not_before: next_login.map(|at| boot_to_wall(at, wall_now, boot_now)),
            parked,
            saved_at: wall_now,
            credentials: Some(self.cell.wake().credentials()),
        };
        if let Err(error) = crate::input::may_block(|| state.save(&saved)) {
            tracing::warn!(account = %self.account.name, "cannot save the state file: {error}");
        }
    }

    /// Logs a failed login, updates the status, and returns when to try again: backoff (never
    /// before a `Retry-After`), or the long parking delay for rejected credentials; and the
    /// server's `Retry-After`, which a requested refresh respects too. While a
    /// token is held, a retry is pulled in so that more attempts happen before it expires, but
    /// never before the `Retry-After`.
    fn after_failure(
        &mut self,
        error: &LoginError,
        failures: u32,
        expires: Option<Duration>,
    ) -> (Duration, Option<Duration>) {
        let now = self.shared.clock.boot();
        let settings = &self.shared.settings;
        let server_not_before = error
            .retry_after
            .map(|wait| now.saturating_add(wait.min(schedule::MAX_RETRY_AFTER)));
        let next = match error.class {
            // Parking is long on purpose and is not pulled in by an expiring token.
            ErrorClass::Rejected => now.saturating_add(schedule::parked_delay(
                settings.rejected_retry,
                &mut self.rng,
            )),
            ErrorClass::Transient | ErrorClass::Protocol => {
                let delay = settings.backoff.retry_delay(
                    failures.saturating_sub(1),
                    error.retry_after,
                    &mut self.rng,
                );
                let not_before = settings.backoff.not_before(error.retry_after);
                // While a token is held, retry early enough for more attempts before it expires
                // (but never before a Retry-After).
                schedule::retry_at(now, delay, not_before, expires, &mut self.rng)
            }
        };
        let still_valid = expires.is_some();
        tracing::warn!(
            account = %self.account.name,
            class = ?error.class,
            attempt = failures,
            retry_in_s = next.saturating_sub(now).as_secs_f32(),
            token_still_valid = still_valid,
            "login failed ({}): {}", error.class, error.message
        );
        let health = match (error.class, still_valid) {
            (ErrorClass::Rejected, _) => Health::Rejected,
            (_, true) => Health::Degraded,
            (_, false) => Health::Unhealthy,
        };
        let message = format!("{}: {}", error.class, error.message);
        self.update(|status| {
            status.health = health;
            status.consecutive_failures = failures;
            status.last_error = Some(message);
            status.attempted = true;
        });
        (next, server_not_before)
    }

    /// Waits for a permit, then logs in: the result, when the login began (boot time, after the
    /// permit) and how long it took. `None` when the daemon stops meanwhile.
    async fn login(
        &mut self,
        refresh_token: Option<&Secret>,
    ) -> Option<(Result<LoginOutcome, LoginError>, Duration, Duration)> {
        let mut shutdown = self.shared.shutdown.clone();
        let limiter = Arc::clone(&self.shared.limiter);
        let _permit = tokio::select! {
            permit = limiter.acquire() => permit,
            _ = shutdown.changed() => return None,
        };
        self.update(|status| status.logins += 1);
        let began = self.shared.clock.boot();
        let started = Instant::now();
        tokio::select! {
            result = self.auth.login(refresh_token) => Some((result, began, started.elapsed())),
            _ = shutdown.changed() => None,
        }
    }

    /// Warns, once per account, that the server's lifetimes are too short for the timing settings
    /// (which then give way so that renewal still comes before expiry).
    fn warn_if_too_short(&self, lifetime: Duration) {
        let Some(message) = schedule::too_short(&self.shared.settings.refresh, lifetime) else {
            return;
        };
        let first = self
            .shared
            .warned_short
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(self.account.name.clone());
        if first {
            tracing::warn!(account = %self.account.name, "{message}");
        }
    }

    /// Takes a fresh token in: converts its instants to boot time, schedules the refresh, marks
    /// the state file due (saved by the write that follows), logs the login line.
    fn accept(&mut self, outcome: LoginOutcome) -> (Holding, Held) {
        let clock = &self.shared.clock;
        let (wall_now, boot_now) = (clock.wall(), clock.boot());
        let token = outcome.token;
        let obtained_boot = wall_to_boot(token.obtained_at, wall_now, boot_now).min(boot_now);
        let expires_boot = wall_to_boot(token.expires_at, wall_now, boot_now);
        let refresh_boot = schedule::next_refresh(
            &self.shared.settings.refresh,
            obtained_boot,
            expires_boot,
            boot_now,
            &mut self.rng,
        );
        let refresh_wall = boot_to_wall(refresh_boot, wall_now, boot_now);
        self.warn_if_too_short(expires_boot.saturating_sub(obtained_boot));
        tracing::info!(
            account = %self.account.name,
            outcome = "ok",
            lifetime_s = token.lifetime().as_secs(),
            expires_at = %token.expires_at,
            next_refresh = %refresh_wall,
            expiry_from = %outcome.expiry_source,
            refreshed = outcome.refreshed,
            latency_ms = outcome.latency.as_millis() as u64,
            "login succeeded"
        );
        // What is published (and so `expires_at` and readiness) changes when the write succeeds.
        self.update(|status| {
            status.health = Health::Healthy;
            status.last_success = Some(wall_now);
            status.last_error = None;
            status.consecutive_failures = 0;
            status.attempted = true;
        });
        let holding = Holding {
            token,
            refresh_token: outcome.refresh_token,
        };
        // Saved by the write that follows, in the same blocking section (state first).
        self.state_due = true;
        (
            holding,
            Held {
                expires: expires_boot,
                refresh: refresh_boot,
            },
        )
    }

    /// What the state file says at start: a token to reuse (refreshed at once if it is close to
    /// expiry), when the token in the output files expires, and a backoff or parking still in
    /// force (moot when the secret values changed since it was saved: a rotated file, a corrected
    /// literal or environment variable).
    fn restore(&mut self) -> Start<Holding> {
        let mut restored = Start::default();
        let Some(saved) = self.saved.take() else {
            return restored;
        };
        let clock = &self.shared.clock;
        let (wall_now, boot_now) = (clock.wall(), clock.boot());
        // A state file from the future, or with a lifetime no server of this account may grant,
        // means the wall clock is wrong (a host that booted before NTP): do not trust it.
        let tolerance = jiff::SignedDuration::from_secs(60);
        let latest_sane = wall_now.saturating_add(tolerance).unwrap_or(wall_now);
        let max_lifetime = self.account.max_lifetime.saturating_add(tolerance);
        let token_fits = saved.token.as_ref().is_none_or(|token| {
            token.obtained_at <= latest_sane && token.lifetime() <= max_lifetime
        });
        if saved.saved_at > latest_sane || !token_fits {
            tracing::warn!(account = %self.account.name, "ignoring the state file: its times do not fit the clock");
            return restored;
        }
        let same_credentials = saved.credentials == Some(self.cell.wake().credentials());
        if saved.not_before.is_some_and(|at| at > wall_now) && !same_credentials {
            tracing::info!(
                account = %self.account.name,
                "the secrets changed since the last failure: trying again now"
            );
        }
        if let Some(not_before) = saved.not_before
            && not_before > wall_now
            && same_credentials
        {
            // Never wait longer than the longest delay this config could have produced.
            let settings = &self.shared.settings;
            let longest = settings
                .rejected_retry
                .max(settings.backoff.cap())
                .saturating_mul(2);
            let wait = wall_to_boot(not_before, wall_now, boot_now).saturating_sub(boot_now);
            restored.not_before = Some(boot_now.saturating_add(wait.min(longest)));
            restored.parked = saved.parked;
            // The account had its attempts before the restart: it is not "starting", and the
            // daemon is ready (READY=1) without waiting out the delay.
            let message = if saved.parked {
                format!("credentials rejected before the restart; next try at {not_before}")
            } else {
                format!("logins failing before the restart; next try at {not_before}")
            };
            let token_valid = saved
                .token
                .as_ref()
                .is_some_and(|token| token.expires_at > wall_now);
            self.update(|status| {
                status.health = match (saved.parked, token_valid) {
                    (true, _) => Health::Rejected,
                    (false, true) => Health::Degraded,
                    (false, false) => Health::Unhealthy,
                };
                status.last_error = Some(message);
                status.attempted = true;
            });
            tracing::info!(
                account = %self.account.name,
                not_before = %not_before,
                parked = saved.parked,
                "keeping the retry delay from before the restart"
            );
        }
        let Some(token) = saved.token else {
            return restored;
        };
        let expires_boot = wall_to_boot(token.expires_at, wall_now, boot_now);
        if token.expires_at <= wall_now {
            // The files may still hold it: they go at once (unless on_expiry = keep).
            restored.disk_expires = Some(boot_now);
            return restored;
        }
        restored.disk_expires = Some(expires_boot);
        let policy = self.shared.settings.refresh;
        let obtained_boot = wall_to_boot(token.obtained_at, wall_now, boot_now).min(boot_now);
        let mut refresh_boot = schedule::next_refresh(
            &policy,
            obtained_boot,
            expires_boot,
            boot_now,
            &mut self.rng,
        );
        // Too close to expiry to wait for the usual refresh point: log in now. So does a fleet
        // member taking over: the leader before it may have logged in again, ending the
        // session of the token held, before it could publish.
        let lifetime = expires_boot.saturating_sub(obtained_boot);
        if self.takeover
            || expires_boot.saturating_sub(boot_now)
                < schedule::reserve(&policy, lifetime).saturating_add(schedule::MIN_REFRESH_GAP)
        {
            refresh_boot = boot_now;
        }
        if !self.takeover {
            tracing::info!(
                account = %self.account.name,
                expires_at = %token.expires_at,
                next_refresh = %boot_to_wall(refresh_boot, wall_now, boot_now),
                "reusing the still-valid token from the state file"
            );
        }
        let holding = Holding {
            token,
            refresh_token: None,
        };
        // A refresh asked for right after the restart waits the minimum interval after this.
        restored.last_login = Some(obtained_boot);
        restored.held = Some((
            holding,
            Held {
                expires: expires_boot,
                refresh: refresh_boot,
            },
        ));
        restored
    }

    /// Writes `token` to the outputs; first, with `save_first`, the state file (a fresh login):
    /// one blocking section for both, each of which hands the worker to another thread.
    fn write(&self, token: &Token, save_first: Option<&Holding>) -> Result<(), String> {
        let published = crate::input::may_block(|| {
            if let Some(holding) = save_first {
                self.save_state(Some(holding), None, false);
            }
            crate::output::publish_all(&self.account, token)
        });
        // Outputs that took the new token changed even when others failed: the consumer hears
        // of it now, not only once the last one is written.
        let changed = match &published {
            Ok(results) => results
                .iter()
                .any(|(_, publish)| *publish == crate::output::Publish::Written),
            Err(crate::output::PublishError::Write { failures, .. }) => {
                failures.len() < self.account.outputs.len()
            }
            Err(crate::output::PublishError::Refused { .. }) => false,
        };
        if changed && let Some(hook) = &self.hook {
            hook.notify(crate::hook::Event::Written);
        }
        match published {
            Ok(results) => {
                tracing::debug!(account = %self.account.name, outputs = results.len(), changed, "outputs up to date");
                let expires_at = token.expires_at;
                self.update(|status| {
                    status.written = true;
                    status.attempted = true;
                    status.expires_at = Some(expires_at);
                    if matches!(status.health, Health::Starting | Health::Unhealthy) {
                        status.health = Health::Healthy;
                    }
                });
                Ok(())
            }
            Err(error) => {
                self.update(|status| status.written = false);
                Err(error.to_string())
            }
        }
    }

    /// An error text as the status shows it: the account is named beside it already.
    fn without_account(&self, message: String) -> String {
        let prefix = format!("account {}: ", self.account.name);
        match message.strip_prefix(&prefix) {
            Some(rest) => rest.to_string(),
            None => message,
        }
    }

    /// The token in the output files expired with no replacement written: report it, and remove
    /// the files unless told to keep them, so readers fail fast rather than send a dead token. The
    /// state file keeps only the retry timing.
    fn expire_on_disk(&self, next_login: Duration, parked: bool) {
        tracing::error!(
            account = %self.account.name,
            "the token on disk expired and no new one could be written"
        );
        if self.shared.settings.on_expiry == OnExpiry::Remove {
            crate::input::may_block(|| crate::output::remove_all(&self.account));
            self.save_state(None, Some(next_login), parked);
            if let Some(hook) = &self.hook {
                hook.notify(crate::hook::Event::Removed);
            }
        }
        self.update(|status| {
            status.health = Health::Unhealthy;
            status.written = false;
        });
    }
}
