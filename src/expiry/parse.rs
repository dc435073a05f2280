//! Reading each expiry signal of a reply: `expires_in`, absolute timestamps (RFC 3339, the seed
//! forms, HTTP dates, Unix seconds), a JWT's `exp` claim, and `Retry-After`.
//!
//! Invariants: pure; out-of-range values saturate instead of overflowing; an error may quote the
//! offending expiry text (cut and escaped), never any part of a token.

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jiff::fmt::rfc2822;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::ExpiryError;

/// Offending text quoted in an error is cut to this many characters, so that a megabyte of junk in a
/// reply cannot flood the log.
pub(super) const EXCERPT_CHARS: usize = 64;

/// jiff parses at most nanosecond precision; .NET and some Java servers send more digits.
pub(super) const MAX_FRACTION_DIGITS: usize = 9;

/// JWT segments are base64url; RFC 7515 says unpadded, but some issuers pad, and refusing those
/// would only lose the `exp` signal.
pub(super) const BASE64URL_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// HTTP dates in IMF-fixdate form are a subset of RFC 2822. The weekday is redundant and RFC 9110
/// does not ask recipients to check it, so a server that gets it wrong is not punished for it.
pub(super) static HTTP_DATE_PARSER: rfc2822::DateTimeParser =
    rfc2822::DateTimeParser::new().relaxed_weekday(true);

/// Reads an `expires_in` value: a JSON integer, a JSON float (floored to whole seconds) or a string
/// holding an integer, with surrounding ASCII whitespace ignored (Azure sends `"3599"`).
///
/// Values too large for a [`SignedDuration`] saturate to [`SignedDuration::MAX`]; [`super::resolve`] clamps
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
pub(super) fn beyond_range(text: &str) -> Option<Timestamp> {
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
/// authenticated to, and the claim only ever shortens the lifetime (see [`super::resolve`]).
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
/// `now` (the reply's own `Date`, when it has one: both are on the server's clock). A date in the past means "retry now" (zero). The result is clamped to `max`, so a server
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

/// Unix seconds to a timestamp, pinned to the [`Timestamp`] bounds.
pub(super) fn timestamp_from_seconds(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap_or(if seconds < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// Whole seconds in a JSON number: floats floored, everything saturating at the i64 bounds. `None`
/// only for a non-finite float, which serde_json does not produce from text but a caller could
/// build.
pub(super) fn number_to_seconds(number: &serde_json::Number) -> Option<i64> {
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
pub(super) fn integer_text_to_seconds(text: &str) -> Option<i64> {
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
pub(super) fn is_ascii_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// Cuts the first fraction of a second (digits after a `.` or `,` that follows a digit) to nine
/// digits, the most jiff accepts; the lost digits are below a nanosecond.
pub(super) fn truncate_fraction(text: &str) -> Cow<'_, str> {
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
pub(super) fn jwt_claims(token: &str) -> Option<crate::secret::ZeroizingJson> {
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
    // The payload is part of the token: decoded and parsed into buffers wiped on drop.
    let decoded = zeroize::Zeroizing::new(BASE64URL_ANY_PADDING.decode(payload).ok()?);
    let claims = crate::secret::ZeroizingJson::parse(&decoded).ok()?;
    claims.is_object().then_some(claims)
}

/// Rewrites `Sunday, 06-Nov-94 08:49:37 GMT` as `06 Nov 1994 08:49:37 GMT`.
pub(super) fn rfc850_as_rfc2822(text: &str) -> Option<String> {
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
pub(super) fn asctime_as_rfc2822(text: &str) -> Option<String> {
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
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::String(text) => excerpt(text),
        Value::Number(number) => excerpt(&number.to_string()),
        other => json_type(other).to_owned(),
    }
}

/// The name of a JSON value's type, for messages that must not quote the value.
pub fn json_type(value: &Value) -> &'static str {
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
pub(super) fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}
