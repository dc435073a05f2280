//! What an output file holds: the bytes of each format, rendered from a validated token.
//!
//! Invariants: pure (no I/O); every buffer that holds token bytes is allocated once with room for
//! the whole output and zeroized on drop, so no reallocation leaves a copy behind.

use zeroize::Zeroizing;

use super::{Format, OutputSpec};
use crate::token::Token;

/// Whether a token can go unquoted into an `env` file that a shell may `source`: only characters
/// no shell interprets. Tokens are already visible ASCII; this also refuses `$`, `` ` ``, `;`,
/// quotes, `&`, `|`, `<`, `>`, `(`, `)`, `\\`, `*`, `?`, `!`, `#`, `[`, `]`, `{`, `}` and `'`.
pub fn env_safe(value: &str) -> bool {
    value
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || b"-._~+/=:@%,^".contains(&byte))
}

/// Renders the contents of an output file.
///
/// `scheme` is `Some("Bearer")` normally and `None` for a bare token (ONLYOFFICE expects
/// `Authorization: <token>`); it only affects the header and JSON formats. The scheme and
/// `spec.env_name` must already be validated (no whitespace or control characters): they are
/// written as they are.
///
/// Every buffer is allocated once with room for the whole output, so no reallocation leaves an
/// unzeroized copy of the token behind.
pub fn render(
    spec: &OutputSpec,
    account: &str,
    token: &Token,
    scheme: Option<&str>,
) -> Zeroizing<Vec<u8>> {
    let value = token.expose().as_bytes();
    match (spec.format, scheme) {
        (Format::Raw, _) => concat(&[value]),
        (Format::Header, Some(scheme)) => {
            concat(&[b"Authorization: ", scheme.as_bytes(), b" ", value, b"\n"])
        }
        (Format::Header, None) => concat(&[b"Authorization: ", value, b"\n"]),
        (Format::Json, _) => render_json(account, token, scheme),
        (Format::Env, _) => concat(&[spec.env_name.as_bytes(), b"=", value, b"\n"]),
        (Format::Template, _) => match &spec.template {
            Some(template) => template.render(account, token, scheme),
            // The config loader gives every template output its template.
            None => concat(&[value]),
        },
    }
}

fn concat(parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(
        parts.iter().map(|part| part.len()).sum(),
    ));
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// The JSON output document; borrows the token so that no intermediate `String` holds it.
#[derive(serde::Serialize)]
struct JsonDocument<'a> {
    account: &'a str,
    token: &'a str,
    #[serde(rename = "type")]
    scheme: Option<&'a str>,
    expires_at: &'a str,
}

fn render_json(account: &str, token: &Token, scheme: Option<&str>) -> Zeroizing<Vec<u8>> {
    // Whole seconds, truncated: an expiry shown early errs on the safe side, and readers parse
    // `2026-11-22T16:00:00Z` more easily than nanoseconds.
    let expires_at = format!("{:.0}", token.expires_at);
    let document = JsonDocument {
        account,
        token: token.expose(),
        scheme,
        expires_at: &expires_at,
    };
    let mut out = Zeroizing::new(Vec::with_capacity(json_capacity(
        account,
        token.expose(),
        scheme,
        &expires_at,
    )));
    // Cannot fail: writing to a Vec never returns an I/O error, and a struct of strings has no
    // map keys that JSON could refuse.
    serde_json::to_writer(&mut *out, &document).expect("serializing strings into a Vec");
    out.push(b'\n');
    out
}

/// An upper bound on the rendered JSON length. serde_json escapes a byte into at most six bytes
/// (`\u001f`), and the keys, quotes, `null` and the newline fit in the fixed part.
fn json_capacity(account: &str, token: &str, scheme: Option<&str>, expires_at: &str) -> usize {
    const FIXED: usize = 80;
    let escaped = account.len() + token.len() + scheme.map_or(0, str::len) + expires_at.len();
    FIXED + 6 * escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::output::test_support::{spec, token};

    #[test]
    fn env_safety() {
        for safe in [
            "abc.DEF-1~",
            "eyJ0eXAi.eyJpYXQi.gLmL4am5_x-y",
            "a+b/c==",
            "x:y@z%2C,^",
        ] {
            assert!(env_safe(safe), "{safe}");
        }
        for unsafe_value in [
            "a$b", "a`b`", "a;b", "a'b", "a\"b", "a&b", "a|b", "a(b)", "a\\b", "a*", "a!b", "a#b",
            "{a}",
        ] {
            assert!(!env_safe(unsafe_value), "{unsafe_value}");
        }
    }

    #[test]
    fn render_table() {
        let token = token("abc.DEF-1~");
        let cases: &[(Format, Option<&str>, &str)] = &[
            (Format::Raw, Some("Bearer"), "abc.DEF-1~"),
            (Format::Raw, None, "abc.DEF-1~"),
            (
                Format::Header,
                Some("Bearer"),
                "Authorization: Bearer abc.DEF-1~\n",
            ),
            (Format::Header, None, "Authorization: abc.DEF-1~\n"),
            (Format::Env, Some("Bearer"), "DEMO_TOKEN=abc.DEF-1~\n"),
            (Format::Env, None, "DEMO_TOKEN=abc.DEF-1~\n"),
        ];
        for (format, scheme, expected) in cases {
            let out = render(&spec(*format), "demo", &token, *scheme);
            assert_eq!(
                String::from_utf8(out.to_vec()).unwrap(),
                *expected,
                "{format:?} {scheme:?}"
            );
        }

        for (scheme, kind) in [
            (Some("Bearer"), serde_json::json!("Bearer")),
            (None, serde_json::Value::Null),
        ] {
            let out = render(&spec(Format::Json), "demo", &token, scheme);
            let text = std::str::from_utf8(&out).unwrap();
            assert!(text.ends_with("}\n"), "{text}");
            assert_eq!(text.matches('\n').count(), 1, "{text}");
            let parsed: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                parsed,
                serde_json::json!({
                    "account": "demo",
                    "token": "abc.DEF-1~",
                    "type": kind,
                    "expires_at": "2026-11-22T16:00:00Z",
                })
            );
        }
    }

    #[test]
    fn json_escapes_and_fits_its_single_allocation() {
        let value = "\"\\\"\\".repeat(1000);
        let token = token(&value);
        let account = "a\"c\u{1}\u{1f}é\\\n".repeat(50);
        let out = render(&spec(Format::Json), &account, &token, Some("Bearer"));
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["token"], serde_json::json!(value));
        assert_eq!(parsed["account"], serde_json::json!(account));
        // The buffer was allocated with this bound; staying within it means it never grew, so
        // no copy of the token was left in a freed allocation.
        let bound = json_capacity(&account, &value, Some("Bearer"), "2026-11-22T16:00:00Z");
        assert!(out.len() <= bound, "{} > {bound}", out.len());
    }
}
