//! Tables of every expiry form the seeds and the RFCs use, absurd values, skewed server clocks.

use base64::Engine as _;
use serde_json::Value;

use super::parse::*;
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
            "e", "GMT", "Sun", "Nov", "-07-11", "07:48", "+03:00", "é", "…", "\u{0}", "eyJ", "=",
            "_", "[", "]", "(", ")", "\"",
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
