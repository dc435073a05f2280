//! Fleet mode: many instances share one login per account through a coordination store. One
//! member per account (the leader) logs in and publishes the token, sealed with the fleet key;
//! the others open each newer publication and write their own outputs from it.
//!
//! Invariant: nothing read from the store is published unless it opens with the fleet key for
//! that account and is newer than what the member holds ([`seal`]).

pub mod follow;
pub mod seal;
