//! Canaries echoed in every encoding, ordinary error bodies, and inputs that must not panic.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use super::decode::*;
use super::*;

const CANARY_1: &str = "canary/SECRET+c1a2b3&<x>";
const CANARY_2: &str = "p@ss wörd:1%";
const CANARIES: [&str; 2] = [CANARY_1, CANARY_2];
const CLIENT_ID: &str = "tk-client";

fn secrets(values: &[&str]) -> Vec<Secret> {
    values
        .iter()
        .map(|value| Secret::new(value.to_string()))
        .collect()
}

/// What must never show in output for a canary, compared case-insensitively.
fn leaks(canary: &str) -> &'static [&'static str] {
    if canary == CANARY_1 {
        &["canary/secret+c1a2b3&<x>", "canary", "secret", "c1a2b3"]
    } else {
        &["p@ss wörd:1%", "wörd"]
    }
}

fn assert_no_leak(output: &str, canary: &str, case: &str) {
    let output = output.to_lowercase();
    for leak in leaks(canary) {
        assert!(!output.contains(leak), "{case}: {leak:?} in {output:?}");
    }
}

fn percent(value: &str, upper: bool, every_byte: bool) -> String {
    value
        .bytes()
        .map(|byte| {
            let unreserved = byte.is_ascii_alphanumeric() || b"-._~".contains(&byte);
            if unreserved && !every_byte {
                char::from(byte).to_string()
            } else if upper {
                format!("%{byte:02X}")
            } else {
                format!("%{byte:02x}")
            }
        })
        .collect()
}

fn form(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn form_lower(value: &str) -> String {
    percent(value, false, false).replace("%20", "+")
}

fn json_slash(value: &str) -> String {
    let json = serde_json::to_string(value).unwrap();
    json[1..json.len() - 1].replace('/', "\\/")
}

fn json_unicode(value: &str, upper: bool) -> String {
    let mut out = String::new();
    for character in value.chars() {
        if character.is_ascii_alphanumeric() {
            out.push(character);
            continue;
        }
        for unit in character.encode_utf16(&mut [0; 2]) {
            out.push_str(&if upper {
                format!("\\u{unit:04X}")
            } else {
                format!("\\u{unit:04x}")
            });
        }
    }
    out
}

fn html_named(value: &str) -> String {
    value
        .chars()
        .map(|character| match character {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            '/' => "&sol;".to_string(),
            '+' => "&plus;".to_string(),
            ':' => "&colon;".to_string(),
            '%' => "&percnt;".to_string(),
            '@' => "&commat;".to_string(),
            '=' => "&equals;".to_string(),
            'ö' => "&ouml;".to_string(),
            other => other.to_string(),
        })
        .collect()
}

/// The OWASP escaping that many frameworks apply to HTML text.
fn html_escape(value: &str) -> String {
    value
        .chars()
        .map(|character| match character {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#x27;".to_string(),
            '/' => "&#x2F;".to_string(),
            other => other.to_string(),
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Numeric {
    Decimal,
    HexLower,
    HexUpper,
}

/// Every character but ASCII letters and digits as a numeric reference; without `;` only where
/// the next character cannot be read as one more digit, as a careful encoder would.
fn html_numeric(value: &str, style: Numeric, semicolon: bool) -> String {
    let characters: Vec<char> = value.chars().collect();
    let mut out = String::new();
    for (index, character) in characters.iter().enumerate() {
        if character.is_ascii_alphanumeric() {
            out.push(*character);
            continue;
        }
        let code = u32::from(*character);
        out.push_str(&match style {
            Numeric::Decimal => format!("&#{code}"),
            Numeric::HexLower => format!("&#x{code:x}"),
            Numeric::HexUpper => format!("&#X{code:X}"),
        });
        let next_is_digit = characters.get(index + 1).is_some_and(|next| match style {
            Numeric::Decimal => next.is_ascii_digit(),
            Numeric::HexLower | Numeric::HexUpper => next.is_ascii_hexdigit(),
        });
        if semicolon || next_is_digit {
            out.push(';');
        }
    }
    out
}

fn pair(value: &str) -> String {
    format!("{CLIENT_ID}:{value}")
}

/// The pair as the request module builds it for Basic: each half form-encoded first.
fn form_pair(value: &str) -> String {
    format!("{}:{}", form(CLIENT_ID), form(value))
}

fn fragment_alone(canary: &str) -> String {
    if canary == CANARY_1 {
        "c1a2b3".to_string()
    } else {
        "wörd".to_string()
    }
}

/// Every way a server might echo `value`, by name.
fn encodings(value: &str) -> Vec<(&'static str, String)> {
    let basic = STANDARD.encode(form_pair(value));
    vec![
        ("raw", value.to_string()),
        ("upper case", value.to_ascii_uppercase()),
        ("json with \\/", json_slash(value)),
        ("json \\u, lower hex", json_unicode(value, false)),
        ("json \\u, upper hex", json_unicode(value, true)),
        ("percent, upper hex", percent(value, true, false)),
        ("percent, lower hex", percent(value, false, false)),
        ("percent, every byte", percent(value, false, true)),
        ("form, + for space", form(value)),
        ("form, lower hex", form_lower(value)),
        (
            "double percent",
            percent(&percent(value, true, false), true, false),
        ),
        (
            "double percent, lower hex",
            percent(&percent(value, false, false), false, false),
        ),
        ("html named", html_named(value)),
        ("html escape with &#x2F;", html_escape(value)),
        ("html decimal", html_numeric(value, Numeric::Decimal, true)),
        (
            "html decimal without ;",
            html_numeric(value, Numeric::Decimal, false),
        ),
        (
            "html hex, lower",
            html_numeric(value, Numeric::HexLower, true),
        ),
        (
            "html hex, upper",
            html_numeric(value, Numeric::HexUpper, true),
        ),
        (
            "html hex without ;",
            html_numeric(value, Numeric::HexLower, false),
        ),
        ("&nbsp; for space", html_named(value).replace(' ', "&nbsp;")),
        ("tab for space", value.replace(' ', "\t")),
        ("nul for space", value.replace(' ', "\u{0}")),
        (
            "json \\u of percent",
            json_unicode(&percent(value, true, false), false),
        ),
        (
            "html of form",
            html_numeric(&form(value), Numeric::Decimal, true),
        ),
        ("percent of html", percent(&html_named(value), false, false)),
        ("json of html", json_slash(&html_escape(value))),
        ("base64 of id:secret", STANDARD.encode(pair(value))),
        (
            "base64url of id:secret",
            URL_SAFE_NO_PAD.encode(pair(value)),
        ),
        ("base64url padded", URL_SAFE.encode(pair(value))),
        ("base64 of the form-encoded pair", basic.clone()),
        (
            "base64url of the form-encoded pair",
            URL_SAFE_NO_PAD.encode(form_pair(value)),
        ),
        ("base64 of the secret alone", STANDARD_NO_PAD.encode(value)),
        (
            "basic header, percent-encoded",
            percent(&format!("Basic {basic}"), true, false),
        ),
        (
            "basic header, json-escaped",
            json_slash(&format!("Basic {}", STANDARD.encode(pair(value)))),
        ),
        (
            "basic header, every byte percent-encoded",
            percent(&format!("Basic {basic}"), false, true),
        ),
        ("base64 glued to a word", format!("xauth{basic}")),
        ("a fragment alone", fragment_alone(value)),
    ]
}

/// Realistic error bodies around an echo: an HTML page, a JSON object with the echo in a field
/// other than `error` or `message`, plain text, and a page with the echo far past the cut.
fn bodies(echo: &str) -> Vec<(&'static str, String)> {
    let html = format!(
        "<!DOCTYPE html>\n<html>\n<head><title>401 Unauthorized</title></head>\n<body>\n\
         <h1>Unauthorized</h1>\n<p>Bad client credentials: {echo}</p>\n\
         <hr><address>gateway/2.4</address>\n</body>\n</html>\n"
    );
    let verbatim = format!(
        r#"{{"error":"invalid_client","error_description":"Client authentication failed","debug":{{"received":{{"client_key":"{echo}"}}}}}}"#
    );
    let json = if serde_json::from_str::<serde_json::Value>(&verbatim).is_ok() {
        verbatim
    } else {
        let quoted = serde_json::to_string(echo).unwrap();
        format!(
            r#"{{"error":"invalid_client","error_description":"Client authentication failed","debug":{{"received":{{"client_key":{quoted}}}}}}}"#
        )
    };
    let plain = format!(
        "401 Unauthorized\r\n\r\nclient credentials rejected (got {echo}); try again later\r\n"
    );
    let long = format!(
        "<html><body>{}<pre>request: {echo}</pre></body></html>",
        "<p>The gateway could not authenticate the client.</p>\n".repeat(100)
    );
    vec![
        ("html page", html),
        ("json object", json),
        ("plain text", plain),
        ("long html page", long),
    ]
}

#[test]
fn every_encoding_of_an_echo_is_withheld() {
    let mut cases = 0;
    let mut missed = Vec::new();
    for canary in CANARIES {
        let sent = secrets(&[canary]);
        for (encoding, echo) in encodings(canary) {
            for (body_kind, body) in bodies(&echo) {
                let case = format!("{canary:?} {encoding} in {body_kind}");
                let quoted = quote(&body, &sent);
                if quoted != WITHHELD || !echoes_secret(&body, &sent) {
                    missed.push(format!("{case}: {quoted}"));
                }
                assert_no_leak(&quoted, canary, &case);
                cases += 1;
            }
        }
    }
    // All misses at once, so that a broken decoder shows every encoding it was needed for.
    assert!(
        missed.is_empty(),
        "{} missed:\n{}",
        missed.len(),
        missed.join("\n")
    );
    assert_eq!(cases, 2 * 37 * 4);
}

#[test]
fn a_secret_without_fragments_is_matched_whole() {
    // No run of four letters or digits: only the whole value, decoded exactly, gives it away,
    // so `+` must stay `+` in plain percent-decoding and white space must be flattened.
    let canary = "a+b c/d:e";
    let sent = secrets(&[canary]);
    let echoes = [
        "a+b%20c%2Fd%3Ae".to_string(),
        "a%2Bb+c%2fd%3ae".to_string(),
        r"a+b\tc\/d:e".to_string(),
        r"a+b\u0020c\u002fd:e".to_string(),
        "a&plus;b&nbsp;c&sol;d&colon;e".to_string(),
        "a+b\r\n  c/d:e".to_string(),
        "a+b%26nbsp%3Bc/d:e".to_string(),
        STANDARD.encode(form_pair(canary)),
    ];
    for echo in echoes {
        for (body_kind, body) in bodies(&echo) {
            assert_eq!(quote(&body, &sent), WITHHELD, "{echo} in {body_kind}");
        }
    }
    assert_eq!(
        quote("a+b c/d:f", &sent),
        "a+b c/d:f",
        "a near miss is quoted"
    );
}

#[test]
fn the_encodings_hide_the_value() {
    // Otherwise the table above would pass on the raw match alone.
    for canary in CANARIES {
        for (encoding, echo) in encodings(canary) {
            // These leave a canary without a `/`, HTML specials or a space as it is.
            let may_be_identity = [
                "raw",
                "json with \\/",
                "html escape with &#x2F;",
                "json of html",
                "tab for space",
                "nul for space",
            ];
            if !may_be_identity.contains(&encoding) {
                assert!(!echo.contains(canary), "{canary:?} {encoding}: {echo}");
            }
        }
    }
}

#[test]
fn the_bodies_alone_are_quoted() {
    for canary in CANARIES {
        for (body_kind, body) in bodies("nothing to see here") {
            let quoted = quote(&body, &secrets(&[canary]));
            assert_ne!(quoted, WITHHELD, "{body_kind}");
            assert!(quoted.contains("nothing to see here") || quoted.ends_with('…'));
        }
    }
}

#[test]
fn the_basic_header_sent_as_a_secret_is_found_as_is() {
    // The request module sends the header's Base64 as a secret of its own.
    let basic = STANDARD.encode(form_pair(CANARY_2));
    let sent = secrets(&[CANARY_2, &basic]);
    let echoes = [
        format!("authorization: Basic {basic}"),
        format!("authorization=Basic+{}", form(&basic)),
        // Cut short, it no longer matches, but what is left still decodes to a fragment.
        format!("header was Basic {}…", &basic[..basic.len() - 6]),
    ];
    for echo in echoes {
        assert_eq!(quote(&echo, &sent), WITHHELD, "{echo}");
    }
}

#[test]
fn ordinary_error_bodies_are_quoted() {
    let basic = STANDARD.encode(form_pair(CANARY_1));
    let sent = secrets(&[CANARY_1, CANARY_2, &basic]);
    let json = r#"{"error":"invalid_client","error_description":"Client authentication failed"}"#;
    let html_503 = "<!DOCTYPE html>\n<html>\n<head><title>503 Service Temporarily Unavailable</title></head>\n\
                    <body>\n<center><h1>503 Service Temporarily Unavailable</h1></center>\n\
                    <hr><center>nginx</center>\n</body>\n</html>\n";
    let cases = [
        (json, json.to_string()),
        (
            "invalid_client: Client authentication failed",
            "invalid_client: Client authentication failed".to_string(),
        ),
        (
            html_503,
            "<!DOCTYPE html> <html> <head><title>503 Service Temporarily Unavailable</title></head> \
             <body> <center><h1>503 Service Temporarily Unavailable</h1></center> <hr>…"
                .to_string(),
        ),
        ("  bad\r\n\t request \u{0}\u{7} here  ", "bad request here".to_string()),
        (
            r#"{"error":"invalid_grant","error_description":"token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.abc expired"}"#,
            r#"{"error":"invalid_grant","error_description":"token […] expired"}"#.to_string(),
        ),
        ("", String::new()),
        (
            "Too Many Requests &amp; more: retry after 30s",
            "Too Many Requests &amp; more: retry after 30s".to_string(),
        ),
        (
            "escaped punctuation alone: %2F%2b%26 \\u002f &#x2F; &lt;x&gt;",
            "escaped punctuation alone: %2F%2b%26 \\u002f &#x2F; &lt;x&gt;".to_string(),
        ),
    ];
    for (text, expected) in cases {
        let quoted = quote(text, &sent);
        assert_eq!(quoted, expected, "{text:?}");
        for canary in CANARIES {
            assert_no_leak(&quoted, canary, text);
        }
    }
    let cut = quote(&"x ".repeat(500), &sent);
    assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
    assert!(cut.ends_with('…'));
    // A long token run straddling the cut is blanked before the cut, not half-shown.
    let straddling = format!("{}{}", "ab ".repeat(50), "z".repeat(40));
    assert_eq!(
        quote(&straddling, &sent),
        format!("{}[…]", "ab ".repeat(50))
    );
}

#[test]
fn a_fragment_that_is_an_ordinary_word_still_withholds() {
    // `SECRET` is a fragment of the first canary, so a reply that merely says "secret" is
    // withheld: losing a harmless message is the price of never showing part of a secret.
    let text = "invalid client secret";
    assert_eq!(quote(text, &secrets(&[CANARY_1])), WITHHELD);
    assert_eq!(quote(text, &secrets(&["hunter2pass"])), text);
}

#[test]
fn short_secrets_and_no_secrets_withhold_nothing() {
    assert_eq!(quote("abc abc", &secrets(&["abc"])), "abc abc");
    assert!(!echoes_secret("p@ss wörd:1%", &[]));
    assert_eq!(quote("p@ss wörd:1%", &[]), "p@ss wörd:1%");
}

#[test]
fn oversized_text_is_examined_as_far_as_it_is_quoted() {
    let sent = secrets(&[CANARY_1]);
    let filler = "é ".repeat(MAX_SCAN_BYTES / 3);
    let late_echo = format!("{filler}{CANARY_1}");
    assert!(late_echo.len() > MAX_SCAN_BYTES);
    // The caller of `echoes_secret` may show all of the text, so what was not examined counts.
    assert!(echoes_secret(&late_echo, &sent));
    assert!(!echoes_secret(&late_echo, &[]));
    // `quote` shows only the start, and examines all of what it may show.
    let quoted = quote(&late_echo, &sent);
    assert_eq!(quoted, format!("{}…", "é ".repeat(EXCERPT_CHARS / 2)));
    let spaces = format!("{}{CANARY_1}", " ".repeat(MAX_SCAN_BYTES));
    assert_eq!(quote(&spaces, &sent), "…");
    let early_echo = format!("{CANARY_1} {filler}");
    assert_eq!(quote(&early_echo, &sent), WITHHELD);
}

#[test]
fn decoders() {
    let json =
        json_unescape(r"a\/b \u00e9 \ud83d\ude00 \ud800 \udc00x \u12 \q \x2f \\u0041 \").unwrap();
    assert_eq!(
        json.as_str(),
        "a/b é 😀 \\ud800 \\udc00x \\u12 \\q / \\u0041 \\"
    );
    assert!(json_unescape("no escapes").is_none());
    let percent = percent_decode("%2f%2F%zz%%u00e9%C3%B6%ff%").unwrap();
    assert_eq!(percent.as_str(), "//%zz%é\u{f6}\u{fffd}%");
    assert_eq!(form_decode("a+b%2Bc").unwrap().as_str(), "a b+c");
    assert!(percent_decode("a+b").is_none());
    let html = html_decode(
        "&amp;&AMP;&lt&#47;&#x2f;&#X2F;&#0047&#99999999999;&#0;&bogus;&ouml;&Ouml;&ampx&",
    )
    .unwrap();
    assert_eq!(html.as_str(), "&&<////\u{fffd}\u{fffd}&bogus;öÖ&x&");
    assert_eq!(flatten_runs("a \t\n b").unwrap().as_str(), "a b");
    assert!(flatten_runs("a b").is_none());
    let decoded = base64_decode_lenient(&URL_SAFE_NO_PAD.encode("id:p@ss wörd?>"));
    assert_eq!(decoded.as_slice(), "id:p@ss wörd?>".as_bytes());
    assert_eq!(
        base64_runs("x aWQ6cGFzcw== y abc ZGVmZ2hp-_"),
        ["aWQ6cGFzcw", "ZGVmZ2hp-_"]
    );
    assert_eq!(
        fragments("canary/SECRET+c1a2b3&<x>"),
        ["canary", "SECRET", "c1a2b3", "canary", "SECRET", "c1a2b3"]
    );
    assert_eq!(fragments("p@ss wörd:1%"), ["wörd"]);
    assert_eq!(
        fragments("passwörd1234"),
        ["passw", "rd1234", "passwörd1234"]
    );
}

/// A tiny linear congruential generator (Knuth's MMIX constants): reproducible, no dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn arbitrary_input_never_panics_or_leaks() {
    // Pieces that drive every decoder into its edge cases, mixed with arbitrary bytes.
    const PIECES: &[&str] = &[
        "%",
        "%u",
        "%uD800",
        "%2",
        "%2F",
        "%25",
        "+",
        "&",
        "&#",
        "&#x",
        "&#X",
        "&#99999999999;",
        "&#x110000;",
        "&#0;",
        "&amp",
        "&amp;",
        "&nbsp;",
        ";",
        "\\",
        "\\u",
        "\\ud800",
        "\\udc00",
        "\\ud83d\\ude00",
        "\\x",
        "\\/",
        "=",
        "==",
        "-",
        "_",
        "/",
        "aWQ6",
        "Y2Fu",
        "canar",
        "SECRE",
        "c1a2",
        "wö",
        "rd",
        "p@ss",
        " ",
        "\t",
        "\u{0}",
        "é",
        "😀",
        "\u{fffd}",
    ];
    let mut random = Lcg(0x5eed);
    let sent = secrets(&CANARIES);
    for _ in 0..4000 {
        let mut bytes = Vec::new();
        let length = random.next() % 64;
        for _ in 0..length {
            if random.next().is_multiple_of(2) {
                let piece = PIECES[(random.next() as usize) % PIECES.len()];
                bytes.extend_from_slice(piece.as_bytes());
            } else {
                bytes.push((random.next() % 256) as u8);
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let quoted = quote(&text, &sent);
        assert!(quoted == WITHHELD || quoted.chars().count() <= EXCERPT_CHARS + 1);
        for canary in CANARIES {
            assert_no_leak(&quoted, canary, &text);
        }
    }
}

#[test]
fn worst_case_bodies_finish() {
    // Each of these makes one decoder (or all of them) work on every byte of a 64 KiB body.
    let sent = secrets(&[CANARY_1, CANARY_2, &STANDARD.encode(form_pair(CANARY_1))]);
    let size = 64 * 1024;
    let bodies = [
        "A".repeat(size),
        "%25".repeat(size / 3),
        "&#x41;".repeat(size / 6),
        "\\u0041".repeat(size / 6),
        "&ampxyz".repeat(size / 7),
        "%25&amp;\\\\+ \n\t".repeat(size / 14),
        "aWQ6Y2Fu-".repeat(size / 9),
    ];
    for body in bodies {
        assert!(!echoes_secret(&body, &sent));
    }
}

#[test]
fn an_echo_of_part_of_a_secret_is_withheld_too() {
    let sent = secrets(&["s3cr3tValue12345"]);
    for echo in [
        "password s3cr3tValu*** rejected",
        "received ***tValue12345",
        "{\"hint\":\"S3CR3TV\"}",
    ] {
        assert_eq!(quote(echo, &sent), WITHHELD, "{echo}");
    }
    // Text that shares no six characters with the secret is quoted.
    assert_eq!(
        quote("invalid client: authentication failed", &sent),
        "invalid client: authentication failed"
    );
}

#[test]
fn a_registered_error_code_is_named_unless_it_holds_a_whole_secret() {
    // `client` of this secret withholds any text with `invalid_client` in it.
    let scrubber = Scrubber::new(&secrets(&["client-7Qx9"]));
    assert_eq!(
        scrubber.quote("invalid_client: no such client"),
        WITHHELD,
        "the fragment rule changed; this test no longer shows what it is for"
    );
    assert_eq!(
        scrubber.registered_code("invalid_client"),
        Some("invalid_client")
    );
    // Only exact registered codes: anything else is reply text.
    for text in [
        "invalid_client ",
        "Invalid_Client",
        "invalid_clients",
        "client-7Qx9",
        "",
    ] {
        assert_eq!(scrubber.registered_code(text), None, "{text:?}");
    }
    // A secret that a code spells out is never shown through it, in any case.
    for secret in ["invalid_client", "CLIENT", "id_cl"] {
        let scrubber = Scrubber::new(&secrets(&[secret]));
        assert_eq!(scrubber.registered_code("invalid_client"), None, "{secret}");
        // Other codes are still named.
        assert_eq!(
            scrubber.registered_code("invalid_grant"),
            Some("invalid_grant"),
            "{secret}"
        );
    }
}
