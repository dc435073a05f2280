//! Fleet mode: many instances share one login per account through a coordination store (etcd).
//! One member per account (the leader) logs in and publishes the token, sealed with the fleet
//! key; the others open each newer publication and write their own outputs from it.
//!
//! - [`seal`]: the sealed publication and the fleet key.
//! - [`follow`]: what a follower makes of a publication (pure, table-tested).
//! - [`etcd`]: the etcd v3 calls, over etcd's JSON gateway.
//! - [`session`]: this member's lease, kept alive while the store answers.
//!
//! Invariant: nothing read from the store is published unless it opens with the fleet key for
//! that account and is newer than what the member holds ([`seal`], [`follow`]); a leader acts
//! only while its lease is valid by its own clock ([`session`]), and every publication is fenced
//! by its election key ([`etcd::Client::fenced_put`]).

pub mod etcd;
pub mod follow;
pub mod seal;
pub mod session;

/// What a member is for one account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Campaigning, with no leader known (starting, or the store cannot be reached).
    #[default]
    Candidate,
    /// Another member leads: this one writes what it publishes.
    Follower,
    /// This member logs in and publishes.
    Leader,
    /// The store cannot be reached and the token held has expired: this member logs in on its own
    /// (`login_alone_after_expiry`), sharing nothing.
    Alone,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Leader, Role::Follower, Role::Candidate, Role::Alone];

    pub fn name(self) -> &'static str {
        match self {
            Role::Candidate => "candidate",
            Role::Follower => "follower",
            Role::Leader => "leader",
            Role::Alone => "alone",
        }
    }
}

/// The store key of an account's election (etcd's election service adds `/<lease>` per member).
pub fn election_key(prefix: &str, account: &str) -> Vec<u8> {
    format!("{prefix}/election/{account}").into_bytes()
}

/// The store key an account's sealed token is published at.
pub fn token_key(prefix: &str, account: &str) -> Vec<u8> {
    format!("{prefix}/token/{account}").into_bytes()
}
