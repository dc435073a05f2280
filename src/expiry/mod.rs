//! Expiry derivation: turns what a login reply says about a token's lifetime (`expires_in`, an
//! absolute timestamp such as `valid_until`, a JWT `exp` claim) or a configured fixed lifetime into
//! one wall-clock instant ([`resolve`]); `parse` reads each signal, and `Retry-After`.
//!
//! Invariants: no I/O, no clock reads and no panics. "Now" is always a parameter, so every rule is
//! tested with fixed instants. Every input here comes from a remote server, so no value, however
//! absurd, may overflow: out-of-range numbers saturate, and [`resolve`] clamps the result to the
//! configured maximum lifetime before anything schedules a timer on it.

mod parse;

use std::fmt;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

pub use parse::{
    json_type, jwt_exp, parse_absolute, parse_expires_in, parse_http_date, parse_retry_after,
    parse_timestamp,
};

/// A server clock this close to ours is trusted as it is: a `Date` header has one-second resolution
/// and the round trip adds more, so correcting smaller differences would only add noise.
const SKEW_TOLERANCE: Duration = Duration::from_secs(5);

/// Why a reply's expiry could not be used. Messages may quote the offending expiry text (cut to 64
/// characters and escaped), never any part of a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    /// `expires_in` is neither a JSON number nor a string holding an integer.
    #[error("expires_in is not a number of seconds (found {0})")]
    ExpiresInNotANumber(String),
    /// `expires_in` is zero or negative once floored to whole seconds.
    #[error("expires_in is not positive (found {0})")]
    ExpiresInNotPositive(String),
    /// An absolute expiry is neither an RFC 3339 timestamp, an HTTP date nor Unix seconds.
    #[error("the expiry is not an rfc 3339 timestamp, http date or unix seconds (found {0})")]
    BadTimestamp(String),
    /// An absolute expiry names a local date and time with no offset, so the instant is unknown.
    #[error("the expiry timestamp has no utc offset, so its instant is ambiguous (found {0})")]
    TimestampWithoutOffset(String),
    /// The token is a JWT whose `exp` claim is present but not a number. Names only the JSON type:
    /// the claim's text is part of the token.
    #[error("the jwt exp claim is not a number (found {0})")]
    JwtExpNotANumber(&'static str),
    /// Nothing in the reply gave an expiry and no fixed lifetime is configured. A token is never
    /// treated as valid forever.
    #[error("the reply carries no expiry and no fixed lifetime is configured")]
    NoExpiry,
    /// The derived expiry is not after the moment the request was sent.
    #[error("the expiry {expires_at} (from {from}) is not after the request was sent at {sent_at}")]
    NotInFuture {
        expires_at: Timestamp,
        from: Source,
        sent_at: Timestamp,
    },
    /// The configured maximum lifetime is zero or negative, so no expiry could satisfy it.
    #[error("max_lifetime {0:#?} is not positive")]
    MaxLifetimeNotPositive(SignedDuration),
}

/// What a reply told us about expiry, plus the configured fallback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signals {
    /// The reply's `expires_in`: relative, so immune to the server's clock.
    pub expires_in: Option<SignedDuration>,
    /// An absolute expiry from the reply (`valid_until`, `expires`, `expires_on`), on the server's
    /// clock.
    pub expires_at: Option<Timestamp>,
    /// The token's own JWT `exp` claim, on the issuer's clock.
    pub jwt_exp: Option<Timestamp>,
    /// The configured lifetime for logins whose reply says nothing (Panaya: 1 h). Used only when
    /// none of the signals above is present, because the server knows better than the config.
    pub fixed_lifetime: Option<SignedDuration>,
    /// The reply's `Date` header: tells how far the server's clock is from ours.
    pub server_date: Option<Timestamp>,
}

/// Which signal an expiry came from, for logs and the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The reply's relative `expires_in`.
    ExpiresIn,
    /// The reply's absolute expiry (`valid_until` and the like).
    ExpiresAt,
    /// The token's JWT `exp` claim.
    JwtExp,
    /// The configured fixed lifetime.
    FixedLifetime,
}

impl Source {
    /// A short name for logs and the plan.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::ExpiresIn => "expires_in",
            Source::ExpiresAt => "expires_at",
            Source::JwtExp => "jwt exp",
            Source::FixedLifetime => "fixed lifetime",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The expiry [`resolve`] settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// On our clock; always after the request was sent and at most `max_lifetime` after it.
    pub expires_at: Timestamp,
    /// The signal that won.
    pub source: Source,
    /// Whether the signal promised more than `max_lifetime` and was cut to it.
    pub clamped: bool,
}

impl fmt::Display for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {}", self.expires_at, self.source)?;
        if self.clamped {
            f.write_str(", clamped to max_lifetime")?;
        }
        f.write_str(")")
    }
}

/// Combines the signals into one expiry on our clock.
///
/// - `expires_in` counts from `sent_at`, which errs early by one round trip.
/// - `expires_at` and `jwt_exp` are on the server's clock: when `server_date` is known and differs
///   from `received_at` by more than 5 s, both are shifted by `received_at - server_date`.
/// - The earliest of these wins (ties go to `expires_in`, then `expires_at`): any one of them
///   expiring ends the token's use.
/// - Only when none is present is `fixed_lifetime` used, counted from `sent_at`.
/// - A result later than `sent_at + max_lifetime` is cut to it and marked `clamped`.
///
/// All arithmetic saturates at the [`Timestamp`] bounds, so no input can panic.
///
/// # Errors
/// [`ExpiryError::NoExpiry`] when there is nothing to go on; [`ExpiryError::NotInFuture`] when the
/// earliest signal is not after `sent_at`; [`ExpiryError::MaxLifetimeNotPositive`] for a
/// `max_lifetime` of zero or less.
pub fn resolve(
    signals: &Signals,
    sent_at: Timestamp,
    received_at: Timestamp,
    max_lifetime: SignedDuration,
) -> Result<Resolved, ExpiryError> {
    if !max_lifetime.is_positive() {
        return Err(ExpiryError::MaxLifetimeNotPositive(max_lifetime));
    }
    let correction = clock_correction(signals.server_date, received_at);
    let candidates = [
        (
            Source::ExpiresIn,
            signals
                .expires_in
                .map(|lifetime| add_saturating(sent_at, lifetime)),
        ),
        (
            Source::ExpiresAt,
            signals.expires_at.map(|at| add_saturating(at, correction)),
        ),
        (
            Source::JwtExp,
            signals.jwt_exp.map(|at| add_saturating(at, correction)),
        ),
    ];
    // min_by_key keeps the first of equal minima, which gives the tie order documented above.
    let earliest = candidates
        .into_iter()
        .filter_map(|(source, at)| Some((at?, source)))
        .min_by_key(|(at, _)| *at);
    let (expires_at, source) = match (earliest, signals.fixed_lifetime) {
        (Some(found), _) => found,
        (None, Some(lifetime)) => (add_saturating(sent_at, lifetime), Source::FixedLifetime),
        (None, None) => return Err(ExpiryError::NoExpiry),
    };
    if expires_at <= sent_at {
        return Err(ExpiryError::NotInFuture {
            expires_at,
            from: source,
            sent_at,
        });
    }
    let limit = add_saturating(sent_at, max_lifetime);
    Ok(Resolved {
        expires_at: expires_at.min(limit),
        source,
        clamped: expires_at > limit,
    })
}

/// How far to shift a server-clock instant onto our clock: zero unless the server's `Date` is
/// further than [`SKEW_TOLERANCE`] from when we received the reply.
fn clock_correction(server_date: Option<Timestamp>, received_at: Timestamp) -> SignedDuration {
    let Some(server_date) = server_date else {
        return SignedDuration::ZERO;
    };
    // Two timestamps are at most some 20,000 years apart, far inside SignedDuration's range, and
    // unsigned_abs is defined for every value, so neither step can overflow.
    let skew = received_at.duration_since(server_date);
    if skew.unsigned_abs() > SKEW_TOLERANCE {
        skew
    } else {
        SignedDuration::ZERO
    }
}

/// `at + duration`, pinned to the [`Timestamp`] bounds instead of failing.
fn add_saturating(at: Timestamp, duration: SignedDuration) -> Timestamp {
    // checked_add with a SignedDuration fails only on overflow, whose direction is the sign.
    at.checked_add(duration)
        .unwrap_or(if duration.is_negative() {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        })
}

#[cfg(test)]
mod tests;
