//! What a follower makes of a publication it opened: publish it, or refuse it and say why. A pure
//! decision, so that every rule is table-tested without a store.
//!
//! Invariant: a follower never publishes an expired token; while the token it holds is live, it
//! publishes only newer publications (a replay, a reordered write or a deposed leader's value is
//! refused) whose token was not obtained before the held one (beyond [`CLOCK_SKEW`]). Once the
//! held token has expired, any live publication is better than none: a leader whose terms
//! restarted (a store restored from a backup, a Lease recreated) is followed again. What a
//! follower holds across its own restarts is the caller's to keep.

use jiff::Timestamp;

use super::seal::Publication;

/// How far apart members' clocks may be: a new leader whose token looks obtained up to this much
/// before the held one (its clock behind) is still followed.
pub const CLOCK_SKEW: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// The verdict on a publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Newer than what is held, and live: write it to the outputs.
    Publish,
    /// The token has expired (or expires now): it was published too late, or replayed.
    Expired { expires_at: Timestamp },
    /// Not newer than the publication held (a replay, or a write the store reordered).
    NotNewer {
        held: (i64, u64),
        offered: (i64, u64),
    },
    /// Newer by its term and sequence, but its token was obtained before the held one's (by more
    /// than [`CLOCK_SKEW`]): a leader must never take a consumer back to an older token.
    OlderToken {
        held_obtained_at: Timestamp,
        offered_obtained_at: Timestamp,
    },
}

impl Verdict {
    /// Why a publication was refused, for the log; `None` for [`Verdict::Publish`].
    pub fn refusal(&self) -> Option<String> {
        match self {
            Verdict::Publish => None,
            Verdict::Expired { expires_at } => {
                Some(format!("its token expired at {expires_at:.0}"))
            }
            Verdict::NotNewer { held, offered } => Some(format!(
                "it is not newer than the one held (term {} publication {}, offered term {} \
                 publication {}): a replay or a reordered write",
                held.0, held.1, offered.0, offered.1
            )),
            Verdict::OlderToken {
                held_obtained_at,
                offered_obtained_at,
            } => Some(format!(
                "its token was obtained at {offered_obtained_at:.0}, before the held one \
                 ({held_obtained_at:.0})"
            )),
        }
    }
}

/// Judges `offered` against the publication `held` (if any) at `now`.
pub fn judge(held: Option<&Publication>, offered: &Publication, now: Timestamp) -> Verdict {
    if offered.token.expires_at <= now {
        return Verdict::Expired {
            expires_at: offered.token.expires_at,
        };
    }
    let Some(held) = held.filter(|held| held.token.expires_at > now) else {
        return Verdict::Publish;
    };
    if !offered.is_newer_than(held) {
        return Verdict::NotNewer {
            held: (held.term, held.seq),
            offered: (offered.term, offered.seq),
        };
    }
    if offered.token.obtained_at < held.token.obtained_at - CLOCK_SKEW {
        return Verdict::OlderToken {
            held_obtained_at: held.token.obtained_at,
            offered_obtained_at: offered.token.obtained_at,
        };
    }
    Verdict::Publish
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::token::Token;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    /// A publication of term and sequence whose token was obtained at `obtained` and expires at
    /// `expires` (seconds from a fixed instant).
    fn offer(term: i64, seq: u64, obtained: i64, expires: i64) -> Publication {
        Publication {
            term,
            seq,
            leader: "m".to_string(),
            token: Token::new(
                Secret::new(format!("t{term}-{seq}")),
                at(obtained),
                at(expires),
            )
            .unwrap(),
        }
    }

    #[test]
    fn a_follower_publishes_only_newer_live_tokens() {
        let held = offer(5, 2, 100, 3700);
        let now = at(200);
        let dead = offer(9, 9, 0, 150);
        let cases: [(&str, Option<&Publication>, Publication, &str); 13] = [
            ("first", None, offer(1, 0, 100, 3700), "publish"),
            // Terms restarted (a restored store): followed once the held token is dead.
            (
                "after the held one expired",
                Some(&dead),
                offer(1, 0, 190, 3790),
                "publish",
            ),
            (
                "expired, after the held one expired",
                Some(&dead),
                offer(1, 0, 0, 190),
                "expired",
            ),
            // A new leader whose clock is 30 s behind: within the allowed skew.
            (
                "newer, clock behind",
                Some(&held),
                offer(6, 0, 70, 3670),
                "publish",
            ),
            (
                "newer, much older token",
                Some(&held),
                offer(6, 0, 39, 3639),
                "older token",
            ),
            ("first, expired", None, offer(1, 0, 0, 200), "expired"),
            (
                "next in the term",
                Some(&held),
                offer(5, 3, 150, 3750),
                "publish",
            ),
            (
                "a new leader",
                Some(&held),
                offer(6, 0, 190, 3790),
                "publish",
            ),
            (
                "a replay of the held one",
                Some(&held),
                offer(5, 2, 100, 3700),
                "not newer",
            ),
            (
                "an older one replayed",
                Some(&held),
                offer(5, 1, 50, 3650),
                "not newer",
            ),
            (
                "a deposed leader's",
                Some(&held),
                offer(4, 9, 180, 3780),
                "not newer",
            ),
            (
                "newer, but expired",
                Some(&held),
                offer(6, 0, 100, 199),
                "expired",
            ),
            (
                "newer, an hour-old token",
                Some(&held),
                offer(6, 0, -3500, 300),
                "older token",
            ),
        ];
        for (what, held, offered, expected) in cases {
            let verdict = judge(held, &offered, now);
            let name = match verdict {
                Verdict::Publish => "publish",
                Verdict::Expired { .. } => "expired",
                Verdict::NotNewer { .. } => "not newer",
                Verdict::OlderToken { .. } => "older token",
            };
            assert_eq!(name, expected, "{what}: {verdict:?}");
            assert_eq!(verdict.refusal().is_none(), expected == "publish", "{what}");
            if let Some(reason) = verdict.refusal() {
                assert!(!reason.contains(offered.token.expose()), "{what}: {reason}");
            }
        }
    }

    #[test]
    fn a_token_expiring_at_this_instant_is_expired() {
        assert_eq!(
            judge(None, &offer(1, 0, 0, 200), at(200)),
            Verdict::Expired {
                expires_at: at(200)
            }
        );
    }
}
