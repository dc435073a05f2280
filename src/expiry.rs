//! Expiry derivation: turns what a login reply says about a token's lifetime (`expires_in`, an
//! absolute timestamp such as `valid_until`, a JWT `exp` claim) or a configured fixed lifetime into
//! one wall-clock instant, and reads `Retry-After`.
//!
//! Invariants: no I/O, no clock reads and no panics. "Now" is always a parameter, so every rule is
//! tested with fixed instants. Every input here comes from a remote server, so no value, however
//! absurd, may overflow: out-of-range numbers saturate, and [`resolve`] clamps the result to the
//! configured maximum lifetime before anything schedules a timer on it.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jiff::fmt::rfc2822;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// A server clock this close to ours is trusted as it is: a `Date` header has one-second resolution
/// and the round trip adds more, so correcting smaller differences would only add noise.
const SKEW_TOLERANCE: Duration = Duration::from_secs(5);

/// Offending text quoted in an error is cut to this many characters, so that a megabyte of junk in a
/// reply cannot flood the log.
const EXCERPT_CHARS: usize = 64;

/// jiff parses at most nanosecond precision; .NET and some Java servers send more digits.
const MAX_FRACTION_DIGITS: usize = 9;

/// JWT segments are base64url; RFC 7515 says unpadded, but some issuers pad, and refusing those
/// would only lose the `exp` signal.
const BASE64URL_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// HTTP dates in IMF-fixdate form are a subset of RFC 2822. The weekday is redundant and RFC 9110
/// does not ask recipients to check it, so a server that gets it wrong is not punished for it.
static HTTP_DATE_PARSER: rfc2822::DateTimeParser =
    rfc2822::DateTimeParser::new().relaxed_weekday(true);

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

/// Reads an `expires_in` value: a JSON integer, a JSON float (floored to whole seconds) or a string
/// holding an integer, with surrounding ASCII whitespace ignored (Azure sends `"3599"`).
///
/// Values too large for a [`SignedDuration`] saturate to [`SignedDuration::MAX`]; [`resolve`] clamps
/// them to the configured maximum lifetime.
///
/// # Errors
/// [`ExpiryError::ExpiresInNotANumber`] for anything else (`"3599s"`, `""`, a boolean, null, an
/// object), [`ExpiryError::ExpiresInNotPositive`] for a value that is not at least one second.
pub fn parse_expires_in(value: &Value) -> Result<SignedDuration, ExpiryError> {
    let seconds = match value {
        Value::Number(number) => number_to_seconds(number),
        Value::String(text) => integer_text_to_seconds(text.trim_ascii()),
        _ => None,
    }
    .ok_or_else(|| ExpiryError::ExpiresInNotANumber(describe(value)))?;
    if seconds <= 0 {
        return Err(ExpiryError::ExpiresInNotPositive(describe(value)));
    }
    Ok(SignedDuration::from_secs(seconds))
}

/// Reads an absolute expiry from text.
///
/// Accepts RFC 3339 and the ISO 8601 forms jiff reads, provided they carry an offset or `Z`
/// (including `2024-07-11T07:48Z` without seconds and `2010-07-07T17:06:03.5845502+03:00`); more
/// than nine fraction digits are cut to nine; an HTTP date (see [`parse_http_date`]); and a string
/// of ASCII digits only, taken as Unix seconds (saturating at [`Timestamp::MAX`]). Surrounding ASCII
/// whitespace is ignored.
///
/// # Errors
/// [`ExpiryError::TimestampWithoutOffset`] for a date and time with no offset, which could be any of
/// some 26 hours; [`ExpiryError::BadTimestamp`] for anything else that does not parse.
pub fn parse_timestamp(text: &str) -> Result<Timestamp, ExpiryError> {
    let text = text.trim_ascii();
    if is_ascii_digits(text) {
        // Only digits, so the one way parsing can fail is a value beyond i64, which saturates.
        let seconds = text.parse::<i64>().unwrap_or(i64::MAX);
        return Ok(timestamp_from_seconds(seconds));
    }
    let normalized = truncate_fraction(text);
    if let Ok(timestamp) = normalized.parse::<Timestamp>() {
        return Ok(timestamp);
    }
    if let Some(timestamp) = beyond_range(&normalized) {
        return Ok(timestamp);
    }
    if let Some(timestamp) = parse_http_date(text) {
        return Ok(timestamp);
    }
    // jiff refuses a timestamp without an offset; telling that case apart from junk gives the
    // operator a precise message, since the fix (ask the vendor, or use expires_in) differs.
    if normalized.parse::<jiff::civil::DateTime>().is_ok() {
        return Err(ExpiryError::TimestampWithoutOffset(excerpt(text)));
    }
    Err(ExpiryError::BadTimestamp(excerpt(text)))
}

/// A valid date, time and offset that lie beyond what [`Timestamp`] holds (`9999-12-31T23:59Z`,
/// a vendor's "never expires"): saturated to the bound, like Unix seconds beyond range, so that
/// the lifetime is then cut to `max_lifetime` like any other.
fn beyond_range(text: &str) -> Option<Timestamp> {
    let pieces = jiff::fmt::temporal::Pieces::parse(text).ok()?;
    pieces.offset()?;
    pieces.time()?;
    let year = pieces.date().year();
    if year >= Timestamp::MAX.to_zoned(jiff::tz::TimeZone::UTC).year() {
        Some(Timestamp::MAX)
    } else if year <= Timestamp::MIN.to_zoned(jiff::tz::TimeZone::UTC).year() {
        Some(Timestamp::MIN)
    } else {
        None
    }
}

/// Reads an absolute expiry from a JSON value: a string goes through [`parse_timestamp`], a number
/// is Unix seconds (floats floored; saturating at the [`Timestamp`] bounds).
///
/// # Errors
/// See [`parse_timestamp`]; any other JSON type is [`ExpiryError::BadTimestamp`].
pub fn parse_absolute(value: &Value) -> Result<Timestamp, ExpiryError> {
    match value {
        Value::String(text) => parse_timestamp(text),
        Value::Number(number) => number_to_seconds(number)
            .map(timestamp_from_seconds)
            .ok_or_else(|| ExpiryError::BadTimestamp(describe(value))),
        _ => Err(ExpiryError::BadTimestamp(describe(value))),
    }
}

/// Reads the `exp` claim of a JWT without verifying the signature: the issuer is the party we just
/// authenticated to, and the claim only ever shortens the lifetime (see [`resolve`]).
///
/// A JWT here is three dot-separated base64url parts (padded or not; the signature may be empty)
/// whose middle decodes to a JSON object. A fractional `exp` is floored.
///
/// # Errors
/// `Ok(None)` when the token is not a JWT or has no `exp`; [`ExpiryError::JwtExpNotANumber`] when
/// `exp` is present but not a number.
pub fn jwt_exp(token: &str) -> Result<Option<Timestamp>, ExpiryError> {
    let Some(claims) = jwt_claims(token) else {
        return Ok(None);
    };
    match claims.get("exp") {
        None => Ok(None),
        Some(Value::Number(number)) => number_to_seconds(number)
            .map(|seconds| Some(timestamp_from_seconds(seconds)))
            .ok_or(ExpiryError::JwtExpNotANumber("a non-finite number")),
        Some(other) => Err(ExpiryError::JwtExpNotANumber(json_type(other))),
    }
}

/// Reads an HTTP date: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, and the wider RFC 2822 syntax
/// around it), the obsolete RFC 850 form (`Sunday, 06-Nov-94 08:49:37 GMT`; two-digit years 70–99
/// are 19xx, 00–69 are 20xx) and asctime (`Sun Nov  6 08:49:37 1994`, taken as UTC). The weekday is
/// not checked against the date.
///
/// Returns `None` for anything else.
pub fn parse_http_date(text: &str) -> Option<Timestamp> {
    let text = text.trim_ascii();
    if let Ok(timestamp) = HTTP_DATE_PARSER.parse_timestamp(text) {
        return Some(timestamp);
    }
    // The two obsolete forms hold the same fields in another order; rewriting them as RFC 2822
    // reuses jiff's validation of days, months and times instead of repeating it here.
    let rewritten = rfc850_as_rfc2822(text).or_else(|| asctime_as_rfc2822(text))?;
    HTTP_DATE_PARSER.parse_timestamp(rewritten).ok()
}

/// Reads a `Retry-After` header value: delta-seconds or an HTTP date, the latter measured from
/// `now`. A date in the past means "retry now" (zero). The result is clamped to `max`, so a server
/// cannot park an account for a year.
///
/// Returns `None` for garbage (including a negative or fractional number of seconds); the caller
/// then falls back to its normal backoff.
pub fn parse_retry_after(text: &str, now: Timestamp, max: Duration) -> Option<Duration> {
    let text = text.trim_ascii();
    if is_ascii_digits(text) {
        // Only digits, so the one way parsing can fail is a value beyond u64, which the clamp to
        // `max` would cut down anyway.
        let seconds = text.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds).min(max));
    }
    let date = parse_http_date(text)?;
    // The conversion fails only for a negative gap, i.e. a date already past.
    let wait = Duration::try_from(date.duration_since(now)).unwrap_or(Duration::ZERO);
    Some(wait.min(max))
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

/// Unix seconds to a timestamp, pinned to the [`Timestamp`] bounds.
fn timestamp_from_seconds(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap_or(if seconds < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// Whole seconds in a JSON number: floats floored, everything saturating at the i64 bounds. `None`
/// only for a non-finite float, which serde_json does not produce from text but a caller could
/// build.
fn number_to_seconds(number: &serde_json::Number) -> Option<i64> {
    if let Some(seconds) = number.as_i64() {
        return Some(seconds);
    }
    if number.as_u64().is_some() {
        // An integer that is not an i64 but is a u64 is above i64::MAX.
        return Some(i64::MAX);
    }
    let seconds = number.as_f64()?;
    if !seconds.is_finite() {
        return None;
    }
    // A float-to-int `as` cast saturates at the target's bounds, which is the saturation wanted.
    Some(seconds.floor() as i64)
}

/// An optionally signed run of ASCII digits as i64, saturating at the bounds; `None` otherwise.
fn integer_text_to_seconds(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if !is_ascii_digits(digits) {
        return None;
    }
    // Only digits remain, so the one way parsing can fail is overflow; a parsed value is at most
    // i64::MAX, whose negation fits.
    Some(match (digits.parse::<i64>(), negative) {
        (Ok(value), false) => value,
        (Ok(value), true) => -value,
        (Err(_), false) => i64::MAX,
        (Err(_), true) => i64::MIN,
    })
}

/// Non-empty and nothing but ASCII digits (so no sign, no Unicode digits).
fn is_ascii_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// Cuts the first fraction of a second (digits after a `.` or `,` that follows a digit) to nine
/// digits, the most jiff accepts; the lost digits are below a nanosecond.
fn truncate_fraction(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let separator = bytes
        .windows(2)
        .position(|pair| pair[0].is_ascii_digit() && (pair[1] == b'.' || pair[1] == b','));
    let Some(separator) = separator else {
        return Cow::Borrowed(text);
    };
    let start = separator + 2;
    let digits = bytes[start..]
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    if digits <= MAX_FRACTION_DIGITS {
        return Cow::Borrowed(text);
    }
    // Both cut points sit next to ASCII digits, so they are char boundaries and slicing cannot panic.
    let keep_until = start + MAX_FRACTION_DIGITS;
    let resume_at = start + digits;
    Cow::Owned(format!("{}{}", &text[..keep_until], &text[resume_at..]))
}

/// The claims of a JWT, or `None` when the token is not one.
fn jwt_claims(token: &str) -> Option<serde_json::Map<String, Value>> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let is_base64url = |part: &str| {
        part.bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'='))
    };
    // An empty signature is an unsecured JWT (`alg: none`), which still carries claims.
    if header.is_empty()
        || payload.is_empty()
        || ![header, payload, signature].into_iter().all(is_base64url)
    {
        return None;
    }
    let decoded = BASE64URL_ANY_PADDING.decode(payload).ok()?;
    match serde_json::from_slice(&decoded).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}

/// Rewrites `Sunday, 06-Nov-94 08:49:37 GMT` as `06 Nov 1994 08:49:37 GMT`.
fn rfc850_as_rfc2822(text: &str) -> Option<String> {
    let (weekday, rest) = text.split_once(',')?;
    if !weekday.bytes().all(|byte| byte.is_ascii_alphabetic()) {
        return None;
    }
    let mut fields = rest.split_ascii_whitespace();
    let (Some(date), Some(time), Some(zone), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    if !zone.eq_ignore_ascii_case("GMT") {
        return None;
    }
    let mut date_fields = date.split('-');
    let (Some(day), Some(month), Some(year), None) = (
        date_fields.next(),
        date_fields.next(),
        date_fields.next(),
        date_fields.next(),
    ) else {
        return None;
    };
    if year.len() != 2 || !is_ascii_digits(year) {
        return None;
    }
    let two_digits: u16 = year.parse().ok()?;
    // RFC 9110 wants "more than 50 years ahead means last century", which needs a clock; the fixed
    // POSIX pivot agrees with it for any date this daemon will meet.
    let year = if two_digits < 70 {
        2000 + two_digits
    } else {
        1900 + two_digits
    };
    Some(format!("{day} {month} {year} {time} GMT"))
}

/// Rewrites `Sun Nov  6 08:49:37 1994` as `6 Nov 1994 08:49:37 GMT`.
fn asctime_as_rfc2822(text: &str) -> Option<String> {
    let mut fields = text.split_ascii_whitespace();
    let (Some(weekday), Some(month), Some(day), Some(time), Some(year), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return None;
    };
    if !weekday.bytes().all(|byte| byte.is_ascii_alphabetic())
        || year.len() != 4
        || !is_ascii_digits(year)
    {
        return None;
    }
    Some(format!("{day} {month} {year} {time} GMT"))
}

/// A JSON value as it may appear in an error: strings and numbers quoted (cut and escaped), other
/// types by name.
fn describe(value: &Value) -> String {
    match value {
        Value::String(text) => excerpt(text),
        Value::Number(number) => excerpt(&number.to_string()),
        other => json_type(other).to_owned(),
    }
}

/// The name of a JSON value's type, for messages that must not quote the value.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Quotes at most [`EXCERPT_CHARS`] characters of `text`, escaped so that control characters from
/// a reply cannot forge log lines, with `…` after the quote when text was cut.
fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn secs(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    /// The Papaya token from the vendor page (seeds/001), verbatim.
    const PAPAYA_JWT: &str = "eyJ0eXAiOiJKV1QiLCJraWQiOiJBUElLRVkwIiwiYXBpX3Rva2VuX2lkIjoiYjZmMzhhN2QtMDc4MS00OGIyLWFhMTEtODUzMzA5NjEyNWFiIiwiYWxnIjoiUlMyNTYifQ.eyJpYXQiOjE3MjA1OTc3MTEsImV4cCI6MTcyMDY4NDExMSwic3ViIjoiYWNjZXNzIiwidXNlciI6eyJpZCI6IjgyNzI1NDg4LTIyYmYtNDBkMS1hY2U2LTllYTZlZTQyZjg3MCIsImVtYWlsIjoiZXlhbDEubmV0QGdtYWlsLmNvbSIsIm93bmVyIjp7ImlkIjoiMjAxMDAwIiwib3duZXJUeXBlIjoib3JnX2lkIn19fQ.gLmL4am5bro27H_ICzLT2OMxnh7MtyuenND9yR1J_jmZyxcnB_XbN1hTXLsqU4l-73UWLNWB9eMseFLVEVSx0z-XtDtDyPvwWHsicxTwC-PmZrhg1EvQRrRgEzUk5D-wJNqXRnfP5CNS78pPo6ZRHwW7N1t1fpop48gKnPdtyOt5m0w0apOyzgLPOWwsTHMKw8qCe5e5d6IumjKpxxeJUcgpzffEibUmaqGL9PFAS5Yky0ABFe37VFwdgj89muLW5RdaOz3HvYiZYLdtH91SIJYKhWMME38_xWSFb8wxoHZsRH3taBdyBUuU5zE8J7wfYQYsm_iA1BMlNZ9d73R71g";

    #[derive(Debug)]
    enum Want {
        At(&'static str),
        Secs(i64),
        Max,
        Min,
        NoOffset,
        Bad,
    }

    fn check_timestamp(input: &str, got: Result<Timestamp, ExpiryError>, want: &Want) {
        match (want, &got) {
            (Want::At(expected), Ok(ts)) => assert_eq!(*ts, at(expected), "{input:?}"),
            (Want::Secs(expected), Ok(ts)) => assert_eq!(*ts, secs(*expected), "{input:?}"),
            (Want::Max, Ok(ts)) => assert_eq!(*ts, Timestamp::MAX, "{input:?}"),
            (Want::Min, Ok(ts)) => assert_eq!(*ts, Timestamp::MIN, "{input:?}"),
            (Want::NoOffset, Err(ExpiryError::TimestampWithoutOffset(_)))
            | (Want::Bad, Err(ExpiryError::BadTimestamp(_))) => {}
            _ => panic!("{input:?}: wanted {want:?}, got {got:?}"),
        }
    }

    #[test]
    fn timestamp_table() {
        let long_fraction = format!("2024-07-11T07:48:00.{}Z", "7".repeat(40));
        let cases: &[(&str, Want)] = &[
            // The two vendor seed forms.
            ("2024-07-11T07:48Z", Want::At("2024-07-11T07:48:00Z")),
            (
                "2010-07-07T17:06:03.5845502+03:00",
                Want::At("2010-07-07T14:06:03.5845502Z"),
            ),
            ("2024-07-11T07:48:00Z", Want::At("2024-07-11T07:48:00Z")),
            ("2024-07-11T07:48:00z", Want::At("2024-07-11T07:48:00Z")),
            ("2024-07-11 07:48:00Z", Want::At("2024-07-11T07:48:00Z")),
            (
                "2024-07-11T07:48:00-04:00",
                Want::At("2024-07-11T11:48:00Z"),
            ),
            ("2024-07-11T07:48:00+0300", Want::At("2024-07-11T04:48:00Z")),
            (" 2024-07-11T07:48Z\r\n", Want::At("2024-07-11T07:48:00Z")),
            (
                "2024-07-11T07:48:00.123456789Z",
                Want::At("2024-07-11T07:48:00.123456789Z"),
            ),
            // Ten and fourteen fraction digits: cut to nine, not rounded.
            (
                "2024-07-11T07:48:00.1234567891Z",
                Want::At("2024-07-11T07:48:00.123456789Z"),
            ),
            (
                "2024-07-11T07:48:00,12345678999999+02:00",
                Want::At("2024-07-11T05:48:00.123456789Z"),
            ),
            (&long_fraction, Want::At("2024-07-11T07:48:00.777777777Z")),
            (
                "Thu, 11 Jul 2024 07:48:00 GMT",
                Want::At("2024-07-11T07:48:00Z"),
            ),
            // No offset: ambiguous, refused with its own error.
            ("2024-07-11T07:48:00", Want::NoOffset),
            ("2024-07-11T07:48", Want::NoOffset),
            ("2024-07-11", Want::NoOffset),
            ("2024-07-11T07:48:00.1234567891", Want::NoOffset),
            // Epoch strings.
            ("1720684080", Want::Secs(1_720_684_080)),
            (" 1720684080 ", Want::Secs(1_720_684_080)),
            ("0", Want::Secs(0)),
            ("99999999999999999999999", Want::Max),
            // Valid far-future timestamps beyond jiff's range saturate (and are then clamped).
            ("9999-12-31T23:59Z", Want::Max),
            ("9999-12-31T23:59:59.999999999+00:00", Want::Max),
            ("9999-12-31T23:59:59-14:00", Want::Max),
            ("9999-12-30T12:00Z", Want::At("9999-12-30T12:00:00Z")),
            ("9999-12-31T23:59", Want::NoOffset),
            ("9999-12-32T23:59Z", Want::Bad),
            // Junk.
            ("", Want::Bad),
            ("   ", Want::Bad),
            ("abc", Want::Bad),
            ("-5", Want::Bad),
            ("1720684080.5", Want::Bad),
            ("2024-13-01T00:00Z", Want::Bad),
            ("2024-07-11T07:48:00+30:00", Want::Bad),
            ("2024-07-11T25:00Z", Want::Bad),
            ("soon", Want::Bad),
        ];
        for (input, want) in cases {
            check_timestamp(input, parse_timestamp(input), want);
        }
    }

    #[test]
    fn absolute_table() {
        let cases: &[(Value, Want)] = &[
            (json!("2024-07-11T07:48Z"), Want::At("2024-07-11T07:48:00Z")),
            (json!("1720684080"), Want::Secs(1_720_684_080)),
            (json!(1_720_684_080), Want::Secs(1_720_684_080)),
            (json!(1_720_684_080.9), Want::Secs(1_720_684_080)),
            (json!(-0.5), Want::Secs(-1)),
            (json!(1e300), Want::Max),
            (json!(u64::MAX), Want::Max),
            (json!(-1e300), Want::Min),
            (json!(i64::MIN), Want::Min),
            (json!("2024-07-11T07:48:00"), Want::NoOffset),
            (json!(true), Want::Bad),
            (Value::Null, Want::Bad),
            (json!({"at": 1}), Want::Bad),
            (json!([1_720_684_080]), Want::Bad),
        ];
        for (value, want) in cases {
            check_timestamp(&value.to_string(), parse_absolute(value), want);
        }
    }

    #[test]
    fn expires_in_table() {
        #[derive(Debug)]
        enum Want {
            Secs(i64),
            NotANumber,
            NotPositive,
        }
        let cases: &[(Value, Want)] = &[
            (json!(3599), Want::Secs(3599)),
            (json!(1), Want::Secs(1)),
            (json!(3599.7), Want::Secs(3599)),
            (json!(1.5), Want::Secs(1)),
            (json!("3599"), Want::Secs(3599)),
            (json!(" 3599 "), Want::Secs(3599)),
            (json!("\t3599\r\n"), Want::Secs(3599)),
            (json!("+3599"), Want::Secs(3599)),
            (json!("0003599"), Want::Secs(3599)),
            // Too large for anything: saturates; resolve clamps.
            (json!(1e30), Want::Secs(i64::MAX)),
            (json!(i64::MAX), Want::Secs(i64::MAX)),
            (json!(u64::MAX), Want::Secs(i64::MAX)),
            (json!("99999999999999999999999"), Want::Secs(i64::MAX)),
            (json!(0), Want::NotPositive),
            (json!(-5), Want::NotPositive),
            (json!(0.5), Want::NotPositive),
            (json!(-0.5), Want::NotPositive),
            (json!(-1e30), Want::NotPositive),
            (json!(i64::MIN), Want::NotPositive),
            (json!("0"), Want::NotPositive),
            (json!("-5"), Want::NotPositive),
            (json!("-99999999999999999999999"), Want::NotPositive),
            (json!("3599s"), Want::NotANumber),
            (json!(""), Want::NotANumber),
            (json!("  "), Want::NotANumber),
            (json!("abc"), Want::NotANumber),
            (json!("35 99"), Want::NotANumber),
            (json!("3599.7"), Want::NotANumber),
            (json!("0x10"), Want::NotANumber),
            (json!("-"), Want::NotANumber),
            (json!("+-5"), Want::NotANumber),
            (json!("٣٥٩٩"), Want::NotANumber),
            (json!(true), Want::NotANumber),
            (Value::Null, Want::NotANumber),
            (json!({"seconds": 3599}), Want::NotANumber),
            (json!([3599]), Want::NotANumber),
        ];
        for (value, want) in cases {
            let got = parse_expires_in(value);
            match (want, &got) {
                (Want::Secs(expected), Ok(duration)) => {
                    assert_eq!(duration.as_secs(), *expected, "{value}");
                    assert_eq!(duration.subsec_nanos(), 0, "{value}");
                }
                (Want::NotANumber, Err(ExpiryError::ExpiresInNotANumber(_)))
                | (Want::NotPositive, Err(ExpiryError::ExpiresInNotPositive(_))) => {}
                _ => panic!("{value}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    fn unsigned_jwt(claims: &str, padded: bool) -> String {
        let engine = if padded {
            base64::engine::general_purpose::URL_SAFE
        } else {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
        };
        format!(
            "{}.{}.c2ln",
            engine.encode(r#"{"alg":"none"}"#),
            engine.encode(claims)
        )
    }

    #[test]
    fn jwt_exp_table() {
        // Ten bytes of claims need `==` padding, so the padded case really is padded.
        let padded = unsigned_jwt(r#"{"exp":12}"#, true);
        assert!(padded.contains('='), "{padded}");
        let no_signature = unsigned_jwt(r#"{"exp":1720684111}"#, false)
            .trim_end_matches("c2ln")
            .to_owned();
        let standard_alphabet = format!(
            "eyJhbGciOiJub25lIn0.{}.c2ln",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(r#"{"exp":1,"k":"??>>"}"#)
        );
        assert!(
            standard_alphabet.contains(['+', '/']),
            "{standard_alphabet}"
        );
        let cases: Vec<(String, Result<Option<i64>, ExpiryError>)> = vec![
            (PAPAYA_JWT.to_owned(), Ok(Some(1_720_684_111))),
            (
                unsigned_jwt(r#"{"exp":1720684111}"#, false),
                Ok(Some(1_720_684_111)),
            ),
            (padded, Ok(Some(12))),
            (no_signature, Ok(Some(1_720_684_111))),
            (
                unsigned_jwt(r#"{"exp":1720684111.9}"#, false),
                Ok(Some(1_720_684_111)),
            ),
            (
                unsigned_jwt(r#"{"exp":1e300}"#, false),
                Ok(Some(Timestamp::MAX.as_second())),
            ),
            (unsigned_jwt(r#"{"sub":"x"}"#, false), Ok(None)),
            (unsigned_jwt("[1,2]", false), Ok(None)),
            (unsigned_jwt("not json", false), Ok(None)),
            (unsigned_jwt("", false), Ok(None)),
            (standard_alphabet, Ok(None)),
            ("opaque-token-1234".to_owned(), Ok(None)),
            (String::new(), Ok(None)),
            ("..".to_owned(), Ok(None)),
            ("a.b".to_owned(), Ok(None)),
            ("a.b.c.d".to_owned(), Ok(None)),
            ("abc.!!!.def".to_owned(), Ok(None)),
            (
                unsigned_jwt(r#"{"exp":"1720684111"}"#, false),
                Err(ExpiryError::JwtExpNotANumber("a string")),
            ),
            (
                unsigned_jwt(r#"{"exp":null}"#, false),
                Err(ExpiryError::JwtExpNotANumber("null")),
            ),
            (
                unsigned_jwt(r#"{"exp":true}"#, false),
                Err(ExpiryError::JwtExpNotANumber("a boolean")),
            ),
            (
                unsigned_jwt(r#"{"exp":{"t":1}}"#, false),
                Err(ExpiryError::JwtExpNotANumber("an object")),
            ),
        ];
        for (token, want) in cases {
            let got = jwt_exp(&token).map(|exp| exp.map(Timestamp::as_second));
            assert_eq!(got, want, "{token:?}");
        }
    }

    #[test]
    fn jwt_exp_error_does_not_quote_the_claim() {
        let token = unsigned_jwt(r#"{"exp":"canary-exp-77"}"#, false);
        let message = jwt_exp(&token).unwrap_err().to_string();
        assert!(!message.contains("canary-exp-77"), "{message}");
    }

    #[test]
    fn http_date_table() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "Sun, 06 Nov 1994 08:49:37 GMT",
                Some("1994-11-06T08:49:37Z"),
            ),
            (
                "  Sun, 06 Nov 1994 08:49:37 GMT ",
                Some("1994-11-06T08:49:37Z"),
            ),
            // Wrong weekday: tolerated.
            (
                "Mon, 06 Nov 1994 08:49:37 GMT",
                Some("1994-11-06T08:49:37Z"),
            ),
            (
                "Sunday, 06-Nov-94 08:49:37 GMT",
                Some("1994-11-06T08:49:37Z"),
            ),
            (
                "Sunday, 06-Nov-05 08:49:37 GMT",
                Some("2005-11-06T08:49:37Z"),
            ),
            ("Sun Nov  6 08:49:37 1994", Some("1994-11-06T08:49:37Z")),
            ("Sun Nov 16 08:49:37 1994", Some("1994-11-16T08:49:37Z")),
            ("soon", None),
            ("", None),
            ("120", None),
            ("Sun, 06 Nov 1994 25:49:37 GMT", None),
            ("Sun, 31 Feb 1994 08:49:37 GMT", None),
            ("Sunday, 06-Nov-94 08:49:37 PST", None),
            ("Sunday, 06-Nov-1994 08:49:37 GMT", None),
            ("Sun Nov  6 08:49:37 94", None),
            ("Sun Xyz  6 08:49:37 1994", None),
            ("2024-07-11T07:48Z", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_http_date(input), want.map(at), "{input:?}");
        }
    }

    #[test]
    fn retry_after_table() {
        let now = at("2015-10-21T07:26:00Z");
        let max = Duration::from_secs(3600);
        let cases: &[(&str, Option<u64>)] = &[
            ("120", Some(120)),
            (" 120 ", Some(120)),
            ("0", Some(0)),
            ("Wed, 21 Oct 2015 07:28:00 GMT", Some(120)),
            ("Wed, 21 Oct 2015 07:00:00 GMT", Some(0)),
            ("Thu, 01 Jan 2099 00:00:00 GMT", Some(3600)),
            ("86400", Some(3600)),
            ("99999999999999999999999", Some(3600)),
            ("soon", None),
            ("", None),
            ("-5", None),
            ("1.5", None),
            ("12O", None),
        ];
        for (input, want) in cases {
            let got = parse_retry_after(input, now, max);
            assert_eq!(got, want.map(Duration::from_secs), "{input:?}");
        }
    }

    #[test]
    fn resolve_table() {
        const T0: i64 = 1_700_000_000;
        let sent_at = secs(T0);
        let received_at = secs(T0 + 1);
        let max = SignedDuration::from_hours(24);
        let hours = SignedDuration::from_hours;
        let ok = |seconds: i64, source: Source, clamped: bool| {
            Ok(Resolved {
                expires_at: secs(seconds),
                source,
                clamped,
            })
        };
        let cases: Vec<(&str, Signals, Result<Resolved, ExpiryError>)> = vec![
            (
                "expires_in counts from the send time",
                Signals {
                    expires_in: Some(hours(1)),
                    ..Signals::default()
                },
                ok(T0 + 3600, Source::ExpiresIn, false),
            ),
            (
                "absolute expiry alone",
                Signals {
                    expires_at: Some(secs(T0 + 1800)),
                    ..Signals::default()
                },
                ok(T0 + 1800, Source::ExpiresAt, false),
            ),
            (
                "jwt exp alone",
                Signals {
                    jwt_exp: Some(secs(T0 + 900)),
                    ..Signals::default()
                },
                ok(T0 + 900, Source::JwtExp, false),
            ),
            (
                "minimum wins: absolute",
                Signals {
                    expires_in: Some(hours(1)),
                    expires_at: Some(secs(T0 + 1800)),
                    jwt_exp: Some(secs(T0 + 2700)),
                    ..Signals::default()
                },
                ok(T0 + 1800, Source::ExpiresAt, false),
            ),
            (
                "minimum wins: jwt",
                Signals {
                    expires_in: Some(hours(1)),
                    expires_at: Some(secs(T0 + 1800)),
                    jwt_exp: Some(secs(T0 + 600)),
                    ..Signals::default()
                },
                ok(T0 + 600, Source::JwtExp, false),
            ),
            (
                "tie goes to expires_in",
                Signals {
                    expires_in: Some(hours(1)),
                    jwt_exp: Some(secs(T0 + 3600)),
                    ..Signals::default()
                },
                ok(T0 + 3600, Source::ExpiresIn, false),
            ),
            (
                "fixed lifetime when nothing else",
                Signals {
                    fixed_lifetime: Some(hours(1)),
                    ..Signals::default()
                },
                ok(T0 + 3600, Source::FixedLifetime, false),
            ),
            (
                "fixed lifetime ignored, even if shorter, when the reply says something",
                Signals {
                    expires_in: Some(hours(2)),
                    fixed_lifetime: Some(hours(1)),
                    ..Signals::default()
                },
                ok(T0 + 7200, Source::ExpiresIn, false),
            ),
            (
                "nothing at all",
                Signals::default(),
                Err(ExpiryError::NoExpiry),
            ),
            (
                "server date alone is no expiry",
                Signals {
                    server_date: Some(received_at),
                    ..Signals::default()
                },
                Err(ExpiryError::NoExpiry),
            ),
            (
                "server clock 1 h ahead: absolute shifted back",
                Signals {
                    expires_at: Some(secs(T0 + 1 + 3600 + 3600)),
                    server_date: Some(secs(T0 + 1 + 3600)),
                    ..Signals::default()
                },
                ok(T0 + 1 + 3600, Source::ExpiresAt, false),
            ),
            (
                "server clock 1 h ahead: jwt exp shifted back too",
                Signals {
                    jwt_exp: Some(secs(T0 + 1 + 3600 + 1800)),
                    server_date: Some(secs(T0 + 1 + 3600)),
                    ..Signals::default()
                },
                ok(T0 + 1 + 1800, Source::JwtExp, false),
            ),
            (
                "server clock 1 h behind: absolute shifted forward",
                Signals {
                    expires_at: Some(secs(T0 + 1 - 3600 + 1800)),
                    server_date: Some(secs(T0 + 1 - 3600)),
                    ..Signals::default()
                },
                ok(T0 + 1 + 1800, Source::ExpiresAt, false),
            ),
            (
                "server clock 3 s off: within tolerance, left alone",
                Signals {
                    expires_at: Some(secs(T0 + 1800)),
                    server_date: Some(secs(T0 + 1 + 3)),
                    ..Signals::default()
                },
                ok(T0 + 1800, Source::ExpiresAt, false),
            ),
            (
                "skew does not move the relative expires_in",
                Signals {
                    expires_in: Some(SignedDuration::from_secs(600)),
                    server_date: Some(secs(T0 + 1 - 3600)),
                    ..Signals::default()
                },
                ok(T0 + 600, Source::ExpiresIn, false),
            ),
            (
                "huge expires_in clamped",
                Signals {
                    expires_in: Some(SignedDuration::from_secs(1_000_000_000)),
                    ..Signals::default()
                },
                ok(T0 + 86_400, Source::ExpiresIn, true),
            ),
            (
                "saturated expires_in clamped",
                Signals {
                    expires_in: Some(SignedDuration::MAX),
                    ..Signals::default()
                },
                ok(T0 + 86_400, Source::ExpiresIn, true),
            ),
            (
                "extreme skew saturates, then clamps",
                Signals {
                    expires_at: Some(Timestamp::MAX),
                    server_date: Some(Timestamp::MIN),
                    ..Signals::default()
                },
                ok(T0 + 86_400, Source::ExpiresAt, true),
            ),
            (
                "expiry equal to the send time",
                Signals {
                    expires_at: Some(sent_at),
                    ..Signals::default()
                },
                Err(ExpiryError::NotInFuture {
                    expires_at: sent_at,
                    from: Source::ExpiresAt,
                    sent_at,
                }),
            ),
            (
                "a past absolute expiry wins over a future expires_in",
                Signals {
                    expires_in: Some(hours(1)),
                    expires_at: Some(secs(T0 - 60)),
                    ..Signals::default()
                },
                Err(ExpiryError::NotInFuture {
                    expires_at: secs(T0 - 60),
                    from: Source::ExpiresAt,
                    sent_at,
                }),
            ),
            (
                "negative expires_in from a caller",
                Signals {
                    expires_in: Some(SignedDuration::MIN),
                    ..Signals::default()
                },
                Err(ExpiryError::NotInFuture {
                    expires_at: Timestamp::MIN,
                    from: Source::ExpiresIn,
                    sent_at,
                }),
            ),
            (
                "zero fixed lifetime",
                Signals {
                    fixed_lifetime: Some(SignedDuration::ZERO),
                    ..Signals::default()
                },
                Err(ExpiryError::NotInFuture {
                    expires_at: sent_at,
                    from: Source::FixedLifetime,
                    sent_at,
                }),
            ),
        ];
        for (name, signals, want) in cases {
            assert_eq!(resolve(&signals, sent_at, received_at, max), want, "{name}");
        }
    }

    #[test]
    fn resolve_edges() {
        let signals = Signals {
            expires_in: Some(SignedDuration::from_hours(1)),
            ..Signals::default()
        };
        let now = secs(1_700_000_000);
        assert_eq!(
            resolve(&signals, now, now, SignedDuration::ZERO),
            Err(ExpiryError::MaxLifetimeNotPositive(SignedDuration::ZERO))
        );
        // At the end of time nothing can be in the future, and nothing may panic getting there.
        assert!(matches!(
            resolve(
                &signals,
                Timestamp::MAX,
                Timestamp::MAX,
                SignedDuration::MAX
            ),
            Err(ExpiryError::NotInFuture { .. })
        ));
        let resolved = resolve(&signals, now, now, SignedDuration::MAX).unwrap();
        assert_eq!(resolved.expires_at, secs(1_700_003_600));
        assert_eq!(
            resolved.to_string(),
            "2023-11-14T23:13:20Z (from expires_in)"
        );
        let clamped = resolve(&signals, now, now, SignedDuration::from_mins(10)).unwrap();
        assert_eq!(
            clamped.to_string(),
            "2023-11-14T22:23:20Z (from expires_in, clamped to max_lifetime)"
        );
    }

    /// The whole Papaya reply from the seed page: `valid_until` is the JWT's `exp` cut to the
    /// minute, so it is the earlier signal and wins.
    #[test]
    fn papaya_seed_reply() {
        let reply = json!({ "valid_until": "2024-07-11T07:48Z", "token": PAPAYA_JWT });
        let signals = Signals {
            expires_at: Some(parse_absolute(&reply["valid_until"]).unwrap()),
            jwt_exp: jwt_exp(PAPAYA_JWT).unwrap(),
            ..Signals::default()
        };
        let issued_at = secs(1_720_597_711);
        let resolved = resolve(
            &signals,
            issued_at,
            issued_at,
            SignedDuration::from_hours(48),
        )
        .unwrap();
        assert_eq!(
            resolved,
            Resolved {
                expires_at: at("2024-07-11T07:48:00Z"),
                source: Source::ExpiresAt,
                clamped: false,
            }
        );
    }

    #[test]
    fn error_messages_are_lowercase_cut_and_escaped() {
        let junk = format!("\n{}", "x".repeat(500));
        let errors = [
            parse_expires_in(&json!(junk)).unwrap_err(),
            parse_expires_in(&json!(-5)).unwrap_err(),
            parse_timestamp(&format!("2024-07-11T07:48:00{junk}")).unwrap_err(),
            parse_timestamp("2024-07-11T07:48:00").unwrap_err(),
            jwt_exp(&unsigned_jwt(r#"{"exp":"1"}"#, false)).unwrap_err(),
            ExpiryError::NoExpiry,
            resolve(
                &Signals {
                    expires_in: Some(SignedDuration::from_secs(1)),
                    ..Signals::default()
                },
                Timestamp::UNIX_EPOCH,
                Timestamp::UNIX_EPOCH,
                SignedDuration::from_secs(-1),
            )
            .unwrap_err(),
            resolve(
                &Signals {
                    fixed_lifetime: Some(SignedDuration::ZERO),
                    ..Signals::default()
                },
                Timestamp::UNIX_EPOCH,
                Timestamp::UNIX_EPOCH,
                SignedDuration::from_secs(1),
            )
            .unwrap_err(),
        ];
        for error in errors {
            let message = error.to_string();
            assert!(
                message.starts_with(|c: char| c.is_ascii_lowercase()),
                "{message}"
            );
            assert!(!message.ends_with('.'), "{message}");
            assert!(!message.contains('\n'), "{message}");
            assert!(!message.contains(&"x".repeat(EXCERPT_CHARS)), "{message}");
        }
        let message = parse_timestamp(&"y".repeat(500)).unwrap_err().to_string();
        assert!(
            message.contains(&format!("\"{}\"…", "y".repeat(64))),
            "{message}"
        );
        let message = parse_expires_in(&json!("3599s")).unwrap_err().to_string();
        assert_eq!(
            message,
            r#"expires_in is not a number of seconds (found "3599s")"#
        );
        assert_eq!(
            ExpiryError::MaxLifetimeNotPositive(SignedDuration::from_secs(-1)).to_string(),
            "max_lifetime -1s is not positive"
        );
    }

    /// xorshift64: a few lines of deterministic randomness, so a failure reproduces exactly.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }

        fn string(&mut self) -> String {
            const PIECES: &[&str] = &[
                "0", "1", "7", "9", "2024", "-", "+", ":", ".", ",", "T", "t", "Z", "z", " ", "\t",
                "e", "GMT", "Sun", "Nov", "-07-11", "07:48", "+03:00", "é", "…", "\u{0}", "eyJ",
                "=", "_", "[", "]", "(", ")", "\"",
            ];
            let length = self.below(12);
            (0..length)
                .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
                .collect()
        }

        fn value(&mut self) -> Value {
            match self.below(6) {
                0 => json!(self.next() as i64),
                1 => json!(self.next()),
                // Any bit pattern: NaN and infinities become null in serde_json.
                2 => json!(f64::from_bits(self.next())),
                3 => json!(self.string()),
                4 => json!(self.below(2) == 0),
                _ => Value::Null,
            }
        }

        fn timestamp(&mut self) -> Timestamp {
            match self.below(8) {
                0 => Timestamp::MIN,
                1 => Timestamp::MAX,
                _ => {
                    let span = Timestamp::MAX.as_second() as u64;
                    let seconds = (self.below(2 * span) as i64) - span as i64;
                    Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
                }
            }
        }

        fn duration(&mut self) -> SignedDuration {
            match self.below(8) {
                0 => SignedDuration::MIN,
                1 => SignedDuration::MAX,
                2 => SignedDuration::from_secs(self.below(100_000) as i64),
                _ => SignedDuration::from_secs(self.next() as i64),
            }
        }

        fn maybe<T>(&mut self, make: impl FnOnce(&mut Rng) -> T) -> Option<T> {
            (self.below(2) == 0).then(|| make(self))
        }
    }

    #[test]
    fn parsers_and_resolve_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let value = rng.value();
            if let Ok(duration) = parse_expires_in(&value) {
                assert!(duration.is_positive(), "{value}");
            }
            let _ = parse_absolute(&value);
            let text = rng.string();
            let _ = parse_timestamp(&text);
            let _ = parse_http_date(&text);
            let _ = jwt_exp(&text);
            let _ = jwt_exp(&unsigned_jwt(&format!(r#"{{"exp":{value}}}"#), false));
            let max = Duration::from_secs(rng.next());
            if let Some(wait) = parse_retry_after(&text, rng.timestamp(), max) {
                assert!(wait <= max, "{text:?}");
            }

            let signals = Signals {
                expires_in: rng.maybe(Rng::duration),
                expires_at: rng.maybe(Rng::timestamp),
                jwt_exp: rng.maybe(Rng::timestamp),
                fixed_lifetime: rng.maybe(Rng::duration),
                server_date: rng.maybe(Rng::timestamp),
            };
            let sent_at = rng.timestamp();
            let received_at = rng.timestamp();
            let max_lifetime = rng.duration();
            if let Ok(resolved) = resolve(&signals, sent_at, received_at, max_lifetime) {
                assert!(resolved.expires_at > sent_at, "{signals:?}");
                assert!(
                    resolved.expires_at <= add_saturating(sent_at, max_lifetime),
                    "{signals:?}"
                );
            }
        }
    }
}
