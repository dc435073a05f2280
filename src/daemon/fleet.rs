//! A fleet account's task: campaign for the account's election and follow its leader's
//! publications; once elected, run the account's own task (which logs in) and publish each new
//! token, sealed and fenced; step down the moment the lease can no longer be vouched for.
//!
//! Invariants: the account's login runs only while this member leads with a valid lease (or,
//! if configured, alone once the token held has expired and the store is out of reach); a
//! follower writes only what [`follow::judge`] accepts, through the account's own writer (so
//! formats, modes, hooks and the state file behave as for any account); a publication is
//! written to the store only by a transaction fenced on the leader's election key.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::account::{AccountTask, Authenticator, LoginFuture};
use super::status::{AccountCell, FleetView};
use crate::config::FleetSettings;
use crate::fleet::etcd::{Event, KeyValue, LeaderKey, StoreError, Watch, WatchMessage};
use crate::fleet::follow::{self, Verdict};
use crate::fleet::seal::Publication;
use crate::fleet::session::Session;
use crate::fleet::{Role, election_key, token_key};
use crate::login::{ErrorClass, LoginError};
use crate::secret::Secret;
use crate::token::Token;

/// A failed store call is tried again after this long.
const RETRY: Duration = Duration::from_millis(500);

/// What the account's login may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Nothing: another member leads, or none is known.
    Idle,
    /// Log in for the fleet, while this lease (the election's fence) is still vouched for.
    Leading {
        lease: i64,
    },
    Alone,
}

/// What the fleet task and the account's login share: the mode, and the tokens the login
/// obtained as the leader (or alone), for the fleet task to publish (or hold).
pub struct Slot {
    cell: Arc<AccountCell>,
    session: Arc<Session>,
    mode: Mutex<Mode>,
    fresh: watch::Sender<Option<Token>>,
}

impl Slot {
    pub fn new(cell: Arc<AccountCell>, session: Arc<Session>) -> Arc<Slot> {
        cell.update(|status| {
            status.fleet.get_or_insert_with(FleetView::default);
        });
        Arc::new(Slot {
            cell,
            session,
            mode: Mutex::new(Mode::Idle),
            fresh: watch::channel(None).0,
        })
    }

    fn mode(&self) -> Mode {
        *self
            .mode
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn set_mode(&self, mode: Mode) {
        *self
            .mode
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = mode;
    }
}

/// A fleet account's login: the account's own, run only in a mode that allows it; as the
/// leader, each token it obtains goes to the fleet task to be published.
pub struct FleetLogin {
    pub inner: Arc<dyn Authenticator>,
    pub slot: Arc<Slot>,
}

impl Authenticator for FleetLogin {
    fn login<'a>(&'a self, refresh_token: Option<&'a Secret>) -> LoginFuture<'a> {
        Box::pin(async move {
            let mode = self.slot.mode();
            let cell = &self.slot.cell;
            match mode {
                Mode::Idle => {
                    return Err(LoginError {
                        account: cell.account().name.clone(),
                        class: ErrorClass::Transient,
                        status: None,
                        retry_after: None,
                        message: "this member is not the fleet's leader for the account"
                            .to_string(),
                    });
                }
                // The fleet task steps down when the lease runs out; this holds even before it
                // has (a suspend outlasted the lease while the timer clock stood still).
                Mode::Leading { lease }
                    if self
                        .slot
                        .session
                        .current()
                        .is_none_or(|current| current.id != lease) =>
                {
                    // Not a failed login: the fleet task steps down as soon as it sees the lease
                    // gone (at the latest when the keeper next wakes), and that cancels this.
                    tracing::debug!(account = %cell.account().name, "no login: this member's fleet lease ran out");
                    return std::future::pending().await;
                }
                Mode::Leading { .. } => cell.update(|status| {
                    if let Some(fleet) = &mut status.fleet {
                        fleet.logins_as_leader += 1;
                    }
                }),
                Mode::Alone => cell.update(|status| {
                    if let Some(fleet) = &mut status.fleet {
                        fleet.logins_alone += 1;
                    }
                }),
            }
            let outcome = self.inner.login(refresh_token).await?;
            self.slot.fresh.send_replace(Some(outcome.token.clone()));
            Ok(outcome)
        })
    }
}

/// What the follower phase ended with.
enum Next {
    Lead(LeaderKey),
    Alone,
    Stop,
}

/// A fleet account's task.
pub struct FleetTask {
    task: AccountTask,
    session: Arc<Session>,
    settings: Arc<FleetSettings>,
    slot: Arc<Slot>,
    /// The publication the outputs hold (a token restored from the state file counts as one of
    /// no term).
    held: Option<Publication>,
    /// The newest publication seen that was refused only for not being newer: followed if the
    /// held token expires first.
    waiting: Option<Publication>,
    /// The store revision of the last publication looked at.
    seen_revision: i64,
    /// A publication accepted whose write failed (a full disk): written again at the next poll.
    unwritten: Option<Publication>,
    /// The last election key found held by no member (warned about once).
    foreign_leader: Option<Vec<u8>>,
}

impl FleetTask {
    pub fn new(
        task: AccountTask,
        session: Arc<Session>,
        settings: Arc<FleetSettings>,
        slot: Arc<Slot>,
    ) -> FleetTask {
        let held = task.saved_token().map(|token| Publication {
            term: i64::MIN,
            seq: 0,
            leader: String::new(),
            token,
        });
        FleetTask {
            task,
            session,
            settings,
            slot,
            held,
            waiting: None,
            seen_revision: 0,
            unwritten: None,
            foreign_leader: None,
        }
    }

    fn account(&self) -> String {
        self.task.cell().account().name.clone()
    }

    fn view(&self, change: impl FnOnce(&mut FleetView)) {
        self.task.cell().update(|status| {
            change(status.fleet.get_or_insert_with(FleetView::default));
        });
    }

    /// Runs until shutdown.
    pub async fn run(mut self) {
        let now = self.task.clock().wall();
        if let Some(held) = &self.held {
            if held.token.expires_at > now {
                // Written again (unchanged files are left alone) so that the status shows it.
                if let Err(message) = self.task.adopt(&held.token.clone()) {
                    tracing::error!(account = %self.account(), "{message}");
                }
            } else {
                self.held = None;
            }
        }
        loop {
            if *self.task.shutdown().borrow() {
                return;
            }
            match self.follow().await {
                Next::Lead(key) => self.lead(key).await,
                Next::Alone => self.alone().await,
                Next::Stop => return,
            }
        }
    }

    /// Campaigns and follows until elected, until logging in alone is due, or until shutdown.
    /// Every store call runs beside the others in one `select!`, so that a store that does not
    /// answer never holds up the expiry of the token held or shutdown.
    async fn follow(&mut self) -> Next {
        let session = Arc::clone(&self.session);
        let settings = Arc::clone(&self.settings);
        let account = self.account();
        let election = election_key(&settings.prefix, &account);
        let key = token_key(&settings.prefix, &account);
        let mut lease = session.lease();
        let mut store_error = session.store_error();
        let mut shutdown = self.task.shutdown();
        let mut campaign: Option<(i64, StoreCall<'_, Option<LeaderKey>>)> = None;
        let mut campaign_after = Instant::now();
        let mut watch: Option<Watch> = None;
        let mut opening: Option<StoreCall<'_, Watch>> = None;
        let mut watch_after = Instant::now();
        let mut watch_error: Option<String> = None;
        let mut watch_from_now = false;
        let mut polling: Option<StoreCall<'_, Polled>> = None;
        let mut poll = tokio::time::interval(session.ttl());
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A task this one replaces (a reload) may still be giving the election back: campaigning
        // before that ends would find the key it is about to delete.
        session.settle(&election).await;
        self.view(|view| {
            if view.role != Role::Follower {
                view.role = Role::Candidate;
            }
        });
        loop {
            let now = Instant::now();
            let current = session.current();
            match (&campaign, current) {
                (Some((id, _)), Some(lease)) if *id == lease.id => {}
                (_, Some(lease)) if now >= campaign_after => {
                    campaign = Some((
                        lease.id,
                        Box::pin(session.client.campaign(
                            &election,
                            settings.member.as_bytes(),
                            lease.id,
                        )),
                    ));
                }
                (_, None) => campaign = None,
                _ => {}
            }
            if watch.is_none() && opening.is_none() && now >= watch_after {
                watch_after = now + RETRY;
                // From the revision after the last value looked at; from now (0) before any
                // (the first poll reads the value itself, rather than the key's whole history)
                // and after the watch was cancelled.
                let start = if watch_from_now || self.seen_revision == 0 {
                    0
                } else {
                    self.seen_revision.saturating_add(1)
                };
                opening = Some(Box::pin(session.client.watch(&key, start)));
            }
            let wake_at = [
                (campaign.is_none() && current.is_some()).then_some(campaign_after),
                (watch.is_none() && opening.is_none()).then_some(watch_after),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + session.ttl());
            let expiry = self.held_expiry_wait();
            tokio::select! {
                result = maybe(campaign.as_mut().map(|(_, future)| future)) => {
                    let lease_id = campaign.take().map_or(0, |(id, _)| id);
                    match result {
                        Ok(Some(leader)) => {
                            if session.current().is_some_and(|lease| lease.id == lease_id && leader.lease == lease_id) {
                                return Next::Lead(leader);
                            }
                        }
                        Ok(None) => {}
                        Err(error) => {
                            tracing::debug!(account = %account, "campaign failed: {error}");
                            campaign_after = Instant::now() + RETRY;
                        }
                    }
                }
                opened = maybe(opening.as_mut()) => {
                    opening = None;
                    match opened {
                        Ok(opened) => {
                            watch = Some(opened);
                            watch_error = None;
                            watch_from_now = false;
                        }
                        Err(error) => watch_error = Some(error.to_string()),
                    }
                    self.report_store(&store_error, &watch_error);
                }
                message = next_message(&mut watch) => {
                    match message {
                        Ok(Some(WatchMessage::Events { events, .. })) => {
                            for event in events {
                                if let Event::Put(kv) = event {
                                    self.offer(kv.mod_revision, &kv.value);
                                }
                            }
                        }
                        Ok(Some(WatchMessage::Cancelled(reason))) => {
                            tracing::debug!(account = %account, "the watch was cancelled: {reason}");
                            watch = None;
                            watch_from_now = true;
                            watch_error = Some(reason);
                            self.report_store(&store_error, &watch_error);
                        }
                        Ok(Some(WatchMessage::Compacted)) => {
                            tracing::debug!(account = %account, "the watch's start was compacted away: watching from now");
                            watch = None;
                            watch_from_now = true;
                            // What came between is read by the next poll, now.
                            poll.reset_immediately();
                        }
                        Ok(None) => watch = None,
                        Err(error) => {
                            watch = None;
                            watch_error = Some(error.to_string());
                            self.report_store(&store_error, &watch_error);
                        }
                    }
                }
                polled = maybe(polling.as_mut()) => {
                    polling = None;
                    match polled {
                        Ok(polled) => {
                            watch_error = None;
                            if polled.revision > 0 && polled.revision < self.seen_revision {
                                // A store restored from a backup, or rebuilt: its revisions
                                // start lower, and every value in it is new to this member.
                                tracing::info!(account = %account, revision = polled.revision, seen = self.seen_revision, "the fleet store's revisions went back (restored or rebuilt): reading it afresh");
                                self.seen_revision = 0;
                                watch = None;
                                opening = None;
                                watch_from_now = true;
                            }
                            if let Some(kv) = polled.value {
                                self.offer(kv.mod_revision, &kv.value);
                            }
                            // The store names this member's key the leader, though the campaign
                            // has not said so (its reply lost with a member that hangs).
                            if let Some(kv) = &polled.leader
                                && session.current().is_some_and(|lease| lease.id == kv.lease)
                            {
                                return Next::Lead(LeaderKey::of(kv));
                            }
                            self.show_leader(polled.leader);
                        }
                        Err(error) => watch_error = Some(error.to_string()),
                    }
                    self.report_store(&store_error, &watch_error);
                }
                _ = poll.tick() => {
                    if let Some(unwritten) = self.unwritten.take()
                        && follow::judge(self.held.as_ref(), &unwritten, self.task.clock().wall()) == Verdict::Publish
                    {
                        self.take(unwritten);
                    }
                    // Reads the published value (in case the watch missed it) and who leads.
                    if polling.is_none() {
                        polling = Some(Box::pin(read_published(&session, &key, &election)));
                    }
                    if let Some(next) = self.on_expiry() {
                        return next;
                    }
                }
                () = sleep_for(expiry) => {
                    if let Some(next) = self.on_expiry() {
                        return next;
                    }
                }
                _ = lease.changed() => self.report_store(&store_error, &watch_error),
                _ = store_error.changed() => self.report_store(&store_error, &watch_error),
                () = tokio::time::sleep_until(wake_at) => {}
                _ = shutdown.changed() => return Next::Stop,
            }
        }
    }

    /// Shows who leads, as the store says. A key no member could have written (bound to no
    /// lease, or not holding a member name) is named in a warning, once: every member waits
    /// behind it until someone deletes it, and its value is shown nowhere.
    fn show_leader(&mut self, leader: Option<KeyValue>) {
        let leader = leader.and_then(|kv| {
            let name = std::str::from_utf8(&kv.value)
                .ok()
                .filter(|name| crate::config::valid_member(name));
            if (kv.lease == 0 || name.is_none())
                && self.foreign_leader.as_deref() != Some(kv.key.as_slice())
            {
                let key: String = String::from_utf8_lossy(&kv.key)
                    .chars()
                    .take(200)
                    .flat_map(char::escape_debug)
                    .collect();
                tracing::warn!(account = %self.account(), key = %key, "the fleet's election is held by a key no member wrote (bound to no lease, or not a member's name): every member waits behind it until it is deleted");
                self.foreign_leader = Some(kv.key.clone());
            }
            name.filter(|_| kv.lease != 0).map(str::to_string)
        });
        let ours = leader.as_deref() == Some(self.settings.member.as_str());
        self.view(|view| {
            view.role = match &leader {
                Some(_) if !ours => Role::Follower,
                _ => Role::Candidate,
            };
            view.leader = leader;
        });
    }

    /// Shows why the store cannot be reached, if it cannot.
    fn report_store(
        &self,
        session_error: &watch::Receiver<Option<String>>,
        watch_error: &Option<String>,
    ) {
        let error = session_error
            .borrow()
            .clone()
            .or_else(|| watch_error.clone());
        self.task.cell().update(|status| {
            // A follower has had its first go once the store answered or failed to: systemd's
            // READY=1 must not wait for a leader that may never come.
            status.attempted = true;
            let fleet = status.fleet.get_or_insert_with(FleetView::default);
            if fleet.store_error == error {
                return;
            }
            match &error {
                Some(error) => {
                    // Once per outage; the reason as it changes at debug level.
                    if fleet.store_error.is_none() {
                        tracing::warn!(account = %status_name(&self.task), "the fleet store cannot be reached: {error}");
                    } else {
                        tracing::debug!(account = %status_name(&self.task), "the fleet store still cannot be reached: {error}");
                    }
                    status.last_error = Some(format!("the fleet store cannot be reached: {error}"));
                }
                None => {
                    tracing::info!(account = %status_name(&self.task), "the fleet store answers again");
                    if status
                        .last_error
                        .as_deref()
                        .is_some_and(|last| last.starts_with("the fleet store"))
                    {
                        status.last_error = None;
                    }
                }
            }
            fleet.store_error = error;
        });
    }

    /// Opens and judges a value read from the store; writes it when it is to be followed.
    fn offer(&mut self, revision: i64, value: &[u8]) {
        if revision <= self.seen_revision {
            return;
        }
        self.seen_revision = revision;
        let account = self.account();
        let publication = match self
            .settings
            .key
            .open(&self.settings.prefix, &account, value)
        {
            Ok(publication) => publication,
            Err(error) => {
                tracing::warn!(account = %account, revision, "refused a fleet publication: {error}");
                return;
            }
        };
        let now = self.task.clock().wall();
        let verdict = follow::judge(self.held.as_ref(), &publication, now);
        match verdict {
            Verdict::Publish => self.take(publication),
            refused => {
                let why = refused.refusal().unwrap_or_default();
                let same =
                    matches!(&refused, Verdict::NotNewer { held, offered } if held == offered);
                // A value that expired while the store was out of reach is no attack; the
                // publication held, read again (a repeated put, this member's own), is none either.
                if same {
                    tracing::debug!(account = %account, revision, term = publication.term, "read the fleet publication held again");
                    return;
                } else if matches!(refused, Verdict::Expired { .. }) {
                    tracing::info!(account = %account, revision, term = publication.term, "passed over a fleet publication: {why}");
                } else {
                    tracing::warn!(account = %account, revision, term = publication.term, "refused a fleet publication: {why}");
                }
                if matches!(
                    refused,
                    Verdict::NotNewer { .. } | Verdict::OlderToken { .. }
                ) && self
                    .waiting
                    .as_ref()
                    .is_none_or(|waiting| publication.is_newer_than(waiting))
                {
                    self.waiting = Some(publication);
                }
            }
        }
    }

    /// Writes a publication to the outputs and holds it.
    fn take(&mut self, publication: Publication) {
        let account = self.account();
        match self.task.adopt(&publication.token) {
            Ok(()) => {
                tracing::info!(
                    account = %account,
                    leader = %publication.leader,
                    term = publication.term,
                    expires_at = %publication.token.expires_at,
                    "wrote the token the fleet's leader published"
                );
                let (leader, term) = (publication.leader.clone(), publication.term);
                let ours = leader == self.settings.member;
                self.view(|view| {
                    if view.role != Role::Leader && !ours {
                        view.role = Role::Follower;
                    }
                    view.leader = Some(leader);
                    view.term = Some(term);
                });
                self.held = Some(publication);
                self.waiting = None;
            }
            Err(message) => {
                tracing::error!(account = %account, "{message}");
                self.unwritten = Some(publication);
            }
        }
    }

    /// How long until the held token expires.
    fn held_expiry_wait(&self) -> Option<Duration> {
        let held = self.held.as_ref()?;
        let left = held
            .token
            .expires_at
            .duration_since(self.task.clock().wall());
        Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
    }

    /// Once the held token has expired: follow a live publication that was waiting, else empty
    /// the files (as `on_expiry` says); then log in alone if configured and the store is out of
    /// reach.
    fn on_expiry(&mut self) -> Option<Next> {
        let now = self.task.clock().wall();
        let expired = self
            .held
            .as_ref()
            .is_none_or(|held| held.token.expires_at <= now);
        if !expired {
            return None;
        }
        if let Some(held) = self.held.take() {
            drop(held);
            match self.waiting.take() {
                Some(waiting) if waiting.token.expires_at > now => self.take(waiting),
                _ => self.task.expired(),
            }
        }
        // Out of reach: no lease, and the store failed to give one (not merely a start-up
        // that has not heard back yet).
        let out_of_reach =
            self.session.current().is_none() && self.session.store_error().borrow().is_some();
        (self.held.is_none() && out_of_reach && self.settings.login_alone_after_expiry)
            .then_some(Next::Alone)
    }

    /// Leads: runs the account's task and publishes each token it obtains, until the lease can
    /// no longer be vouched for, another member holds the election, or shutdown.
    async fn lead(&mut self, leader: LeaderKey) {
        let account = self.account();
        let session = Arc::clone(&self.session);
        let settings = Arc::clone(&self.settings);
        let key = token_key(&settings.prefix, &account);
        // Gives the election back if this task is dropped while leading (its account removed
        // or restarted by a reload), so that no member waits behind a leader that is gone.
        // Armed from here: a drop during the check below gives it back too.
        let mut guard = Resign {
            session: Arc::clone(&session),
            leader: Some(leader.clone()),
            election: election_key(&settings.prefix, &account),
        };
        // etcd's campaign does not check that the key it waited on is still there (a revoked
        // lease, a resign that crossed it): lead only on a key that is.
        match session.client.get(&leader.key).await {
            Ok((Some(kv), _)) if leader.is_held_in(&kv) => {}
            other => {
                // Not ours any more, or not known: the next campaign tells.
                guard.leader = None;
                if let Err(error) = other {
                    tracing::debug!(account = %account, "cannot check the election key: {error}");
                }
                tokio::time::sleep(RETRY).await;
                return;
            }
        }
        tracing::info!(account = %account, term = leader.rev, member = %settings.member, "elected the fleet's leader: logging in for the fleet");
        self.view(|view| {
            view.role = Role::Leader;
            view.leader = Some(settings.member.clone());
            view.term = Some(leader.rev);
        });
        let cell = Arc::clone(self.task.cell());
        let clock = Arc::clone(self.task.clock());
        let policy = self.task.settings().refresh;
        let mut warned = false;
        // Only what this term obtains is published (or held at the end): a token left from an
        // earlier term is not this one's.
        self.slot.fresh.send_replace(None);
        let mut fresh = self.slot.fresh.subscribe();
        fresh.mark_unchanged();
        self.slot.set_mode(Mode::Leading {
            lease: leader.lease,
        });
        let held = self.held.as_ref().map(|held| held.token.clone());
        self.task.take_over(held.as_ref());
        let mut lease = session.lease();
        let mut seq = 0_u64;
        let mut pending: Option<(Publication, String)> = None;
        let mut publish_after = Instant::now();
        // The fenced put in flight (and the sequence number it carries): kept across wake-ups,
        // so that a lease renewal does not cut it off and send it again.
        let mut publishing: Option<(u64, StoreCall<'_, bool>)> = None;
        // The election key is looked at once per TTL: deleted (a resignation, someone with
        // write access), this member stops before its next login, not at its next publication.
        let mut checking: Option<StoreCall<'_, (Option<KeyValue>, i64)>> = None;
        let mut check = tokio::time::interval(session.ttl());
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.reset();
        let why = {
            let run = self.task.run_loop();
            tokio::pin!(run);
            loop {
                let valid_until = match session.current() {
                    Some(current) if current.id == leader.lease => current.valid_until,
                    _ => break "the fleet lease was lost",
                };
                if pending
                    .as_ref()
                    .is_some_and(|(publication, _)| publication.token.expires_at <= clock.wall())
                {
                    // Every follower would refuse it.
                    tracing::debug!(account = %account, "dropped a token that expired before it could be published");
                    pending = None;
                }
                if publishing.is_none()
                    && Instant::now() >= publish_after
                    && let Some((publication, sealed)) = &pending
                {
                    let sealed = sealed.clone().into_bytes();
                    let (session, leader, key) = (&session, &leader, &key);
                    publishing = Some((
                        publication.seq,
                        Box::pin(
                            async move { session.client.fenced_put(leader, key, &sealed).await },
                        ),
                    ));
                }
                tokio::select! {
                    () = &mut run => break "",
                    _ = fresh.changed() => {
                        let Some(token) = fresh.borrow_and_update().clone() else { continue };
                        // A leader that dies just before it renews leaves the followers with
                        // what the token has left then: it should outlast a takeover.
                        let lifetime = Duration::try_from(token.lifetime()).unwrap_or_default();
                        let left = crate::schedule::least_left(&policy, lifetime);
                        let takeover = session.ttl() + Duration::from_secs(1);
                        if !warned && left < takeover {
                            warned = true;
                            tracing::warn!(
                                account = %account,
                                left_s = left.as_secs_f32(),
                                lease_ttl_s = session.ttl().as_secs(),
                                "tokens have as little as {:.1}s left when renewed, less than a takeover takes (lease_ttl + a login): if the leader dies then, followers may hold an expired token until the next leader publishes; lower [fleet] lease_ttl or renew earlier",
                                left.as_secs_f32()
                            );
                        }
                        // Grows across restarts of this task within one term too (a reload
                        // restarts the account; its campaign finds the same key).
                        let millis = u64::try_from(clock.wall().as_millisecond()).unwrap_or(0);
                        seq = seq.saturating_add(1).max(millis);
                        let publication = Publication { term: leader.rev, seq, leader: settings.member.clone(), token };
                        match settings.key.seal(&settings.prefix, &account, &publication) {
                            Ok(sealed) => {
                                pending = Some((publication, sealed));
                                publish_after = Instant::now();
                            }
                            Err(error) => tracing::error!(account = %account, "cannot seal the token for the fleet: {error}"),
                        }
                    }
                    result = maybe(publishing.as_mut().map(|(_, future)| future)) => {
                        let sent = publishing.take().map_or(0, |(seq, _)| seq);
                        match result {
                            Ok(true) => {
                                tracing::info!(account = %account, term = leader.rev, seq = sent, "published the token to the fleet");
                                // A newer token that came meanwhile is still to go.
                                if pending.as_ref().is_some_and(|(publication, _)| publication.seq == sent) {
                                    pending = None;
                                }
                                report_publish(&cell, None);
                            }
                            Ok(false) => break "another member holds the fleet's election",
                            Err(error) => {
                                report_publish(&cell, Some(&error));
                                publish_after = Instant::now() + RETRY;
                            }
                        }
                    }
                    _ = check.tick(), if checking.is_none() => {
                        checking = Some(Box::pin(session.client.get(&leader.key)));
                    }
                    checked = maybe(checking.as_mut()) => {
                        checking = None;
                        match checked {
                            Ok((Some(kv), _)) if leader.is_held_in(&kv) => {}
                            Ok(_) => break "the fleet's election key is gone (resigned or deleted)",
                            Err(error) => tracing::debug!(account = %account, "cannot check the election key: {error}"),
                        }
                    }
                    _ = lease.changed() => {}
                    () = tokio::time::sleep_until(valid_until) => {}
                    () = tokio::time::sleep_until(publish_after), if pending.is_some() && publishing.is_none() => {}
                }
            }
        };
        // Calls in flight end here, before the election is given back.
        drop((publishing, checking));
        self.slot.set_mode(Mode::Idle);
        // What the files hold now: the last token this leader obtained in this term (published
        // or not), else what they held before.
        let last = fresh.borrow().clone();
        if let Some(token) = last {
            self.held = Some(Publication {
                term: leader.rev,
                seq,
                leader: settings.member.clone(),
                token,
            });
        }
        self.view(|view| {
            view.role = Role::Candidate;
            view.leader = None;
        });
        // Disarmed: what follows resigns (or the session's revocation at shutdown does).
        guard.leader = None;
        if why.is_empty() {
            return;
        }
        tracing::warn!(account = %account, term = leader.rev, "stopped acting as the fleet's leader: {why}");
        if session
            .current()
            .is_some_and(|current| current.id == leader.lease)
        {
            session.resign(&leader, &guard.election).await;
        }
    }

    /// Logs in alone, sharing nothing, until the store can be reached again (or shutdown).
    async fn alone(&mut self) {
        let account = self.account();
        tracing::warn!(account = %account, "the token expired and the fleet store cannot be reached: logging in alone (login_alone_after_expiry)");
        self.view(|view| view.role = Role::Alone);
        self.slot.fresh.send_replace(None);
        self.slot.set_mode(Mode::Alone);
        self.task.take_over(None);
        let mut lease = self.session.lease();
        let session = Arc::clone(&self.session);
        {
            let run = self.task.run_loop();
            tokio::pin!(run);
            loop {
                if session.current().is_some() {
                    break;
                }
                tokio::select! {
                    () = &mut run => break,
                    _ = lease.changed() => {}
                }
            }
        }
        self.slot.set_mode(Mode::Idle);
        // What it logged in to is held as a publication of no term: any newer live one whose
        // token is not older is followed from here, and its expiry empties the files as usual.
        self.held = self.slot.fresh.borrow().clone().map(|token| Publication {
            term: i64::MIN,
            seq: 0,
            leader: String::new(),
            token,
        });
        self.view(|view| view.role = Role::Candidate);
        tracing::info!(account = %account, "the fleet store answers again: back to the election");
    }
}

/// Resigns a leadership when dropped while still armed.
struct Resign {
    session: Arc<Session>,
    leader: Option<LeaderKey>,
    election: Vec<u8>,
}

impl Drop for Resign {
    fn drop(&mut self) {
        if let Some(leader) = self.leader.take() {
            self.session
                .resign_later(leader, std::mem::take(&mut self.election));
        }
    }
}

/// A store call in flight.
type StoreCall<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What a poll read: the published value, the leader's election key, and the store's revision.
struct Polled {
    value: Option<KeyValue>,
    leader: Option<KeyValue>,
    revision: i64,
}

/// Reads the published value and who leads.
async fn read_published(
    session: &Session,
    key: &[u8],
    election: &[u8],
) -> Result<Polled, StoreError> {
    let (value, revision) = session.client.get(key).await?;
    let leader = session.client.leader(election).await?;
    Ok(Polled {
        value,
        leader,
        revision,
    })
}

/// Shows (and logs, once) why the leader cannot publish, or that it can again.
fn report_publish(cell: &AccountCell, error: Option<&StoreError>) {
    let error = error.map(ToString::to_string);
    cell.update(|status| {
        let view = status.fleet.get_or_insert_with(FleetView::default);
        if view.store_error != error {
            if let Some(error) = &error {
                tracing::warn!(account = %cell.account().name, "cannot publish the token to the fleet: {error}");
            }
            view.store_error = error;
        }
    });
}

/// Awaits the future, if there is one (else never returns).
async fn maybe<F: Future + Unpin>(future: Option<&mut F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// The next message of the watch, if one is open (else never returns).
async fn next_message(watch: &mut Option<Watch>) -> Result<Option<WatchMessage>, StoreError> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

fn status_name(task: &AccountTask) -> String {
    task.cell().account().name.clone()
}

/// Sleeps for `wait`, or for ever without one.
async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}
