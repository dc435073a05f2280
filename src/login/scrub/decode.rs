//! The decodings a reply's text is looked at through: JSON escapes, percent-encoding (with and
//! without `+` for space), HTML character references, and lenient Base64.
//!
//! Invariants: none of them makes text longer; none panics on any input; every buffer they fill
//! is zeroized on drop, since a decoding may hold a secret.

use zeroize::Zeroizing;

use super::MIN_BASE64_RUN;

/// The longest HTML entity name looked up without a trailing `;` (`NewLine` is the longest known).
pub(super) const MAX_LEGACY_ENTITY_NAME: usize = 7;

/// The longest HTML entity name looked up before a `;`; longer names are not entities.
pub(super) const MAX_ENTITY_NAME: usize = 32;

/// A decoding of reply text: None when the text holds nothing it decodes.
pub(super) type Decoder = fn(&str) -> Option<Zeroizing<String>>;

/// Every decoding applied, each also to the others' output. None of them makes text longer.
/// Flattening white space is not among them: every haystack is also looked at flattened, so it
/// does not use up one of the two levels (`%26nbsp%3B` is percent, then HTML, then flattening).
pub(super) const DECODERS: [Decoder; 4] = [json_unescape, percent_decode, form_decode, html_decode];

/// JSON string escapes, plus `\xHH` and `\'` that JavaScript and Python reprs use. A malformed
/// escape (a lone surrogate, too few hex digits, an unknown letter) is left as it is.
pub(super) fn json_unescape(text: &str) -> Option<Zeroizing<String>> {
    replace_references(text, b'\\', backslash_escape)
}

/// Reads a reference (an escape) starting at a byte offset: its character and its length.
pub(super) type Reference = fn(&[u8], usize) -> Option<(char, usize)>;

/// Replaces every reference that starts with `marker` and that `reference` recognises (it
/// returns the character and the reference's length in bytes) by its character. `None` when
/// nothing was replaced. References are ASCII, so every cut falls on a character boundary.
pub(super) fn replace_references(
    text: &str,
    marker: u8,
    reference: Reference,
) -> Option<Zeroizing<String>> {
    if !text.as_bytes().contains(&marker) {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = Zeroizing::new(String::with_capacity(text.len()));
    let (mut copied, mut index, mut changed) = (0, 0, false);
    while let Some(&byte) = bytes.get(index) {
        if byte == marker
            && let Some((character, length)) = reference(bytes, index)
        {
            out.push_str(text.get(copied..index)?);
            out.push(character);
            index += length;
            copied = index;
            changed = true;
        } else {
            index += 1;
        }
    }
    out.push_str(text.get(copied..)?);
    changed.then_some(out)
}

/// The character a backslash escape at `at` stands for, and the escape's length in bytes.
pub(super) fn backslash_escape(bytes: &[u8], at: usize) -> Option<(char, usize)> {
    let simple = match bytes.get(at + 1)? {
        b'/' => '/',
        b'\\' => '\\',
        b'"' => '"',
        b'\'' => '\'',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'x' => {
            let code = hex_number(bytes.get(at + 2..at + 4)?)?;
            return Some((char::from_u32(code)?, 4));
        }
        b'u' => {
            let unit = hex_number(bytes.get(at + 2..at + 6)?)?;
            if !(0xD800..0xDC00).contains(&unit) {
                // A lone low surrogate is no character: from_u32 refuses it and it stays as it is.
                return Some((char::from_u32(unit)?, 6));
            }
            if bytes.get(at + 6..at + 8)? != b"\\u" {
                return None;
            }
            let low = hex_number(bytes.get(at + 8..at + 12)?)?;
            if !(0xDC00..0xE000).contains(&low) {
                return None;
            }
            let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
            return Some((char::from_u32(code)?, 12));
        }
        _ => return None,
    };
    Some((simple, 2))
}

/// The value of a run of hex digits, if every byte is one; None for an empty run or overflow.
pub(super) fn hex_number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    digits.iter().try_fold(0u32, |value, digit| {
        Some((value << 4) | char::from(*digit).to_digit(16)?)
    })
}

pub(super) fn percent_decode(text: &str) -> Option<Zeroizing<String>> {
    percent_decode_with(text, false)
}

pub(super) fn form_decode(text: &str) -> Option<Zeroizing<String>> {
    percent_decode_with(text, true)
}

/// `%HH` in either case (and IIS's `%uXXXX`) to bytes, optionally `+` to a space; the bytes are
/// read as UTF-8, invalid sequences becoming U+FFFD. A `%` not followed by hex digits stays.
pub(super) fn percent_decode_with(text: &str, plus_is_space: bool) -> Option<Zeroizing<String>> {
    if !(text.contains('%') || plus_is_space && text.contains('+')) {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let (mut index, mut changed) = (0, false);
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let escaped = bytes
                .get(index + 1..index + 3)
                .and_then(hex_number)
                .and_then(|value| u8::try_from(value).ok());
            if let Some(value) = escaped {
                out.push(value);
                index += 3;
                changed = true;
                continue;
            }
            let wide = match bytes.get(index + 1) {
                Some(b'u' | b'U') => bytes
                    .get(index + 2..index + 6)
                    .and_then(hex_number)
                    .and_then(char::from_u32),
                _ => None,
            };
            if let Some(character) = wide {
                let mut buffer = Zeroizing::new([0u8; 4]);
                out.extend_from_slice(character.encode_utf8(&mut *buffer).as_bytes());
                index += 6;
                changed = true;
                continue;
            }
        } else if byte == b'+' && plus_is_space {
            out.push(b' ');
            index += 1;
            changed = true;
            continue;
        }
        out.push(byte);
        index += 1;
    }
    changed.then(|| into_text(out))
}

/// Bytes as text, invalid UTF-8 becoming U+FFFD, without leaving an unzeroized copy behind.
pub(super) fn into_text(mut bytes: Zeroizing<Vec<u8>>) -> Zeroizing<String> {
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Zeroizing::new(text),
        Err(error) => {
            let bytes = Zeroizing::new(error.into_bytes());
            Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned())
        }
    }
}

/// HTML character references: named ones (see [`named_entity`]), `&#47;`, `&#x2f;` and `&#X2F;`,
/// each with or without the trailing `;`. An `&` that starts no known reference stays.
pub(super) fn html_decode(text: &str) -> Option<Zeroizing<String>> {
    replace_references(text, b'&', html_reference)
}

/// The character an HTML reference at `at` (an `&`) stands for, and the reference's length.
pub(super) fn html_reference(bytes: &[u8], at: usize) -> Option<(char, usize)> {
    let rest = bytes.get(at + 1..)?;
    if rest.first() == Some(&b'#') {
        let (radix, digits_start) = match rest.get(1) {
            Some(b'x' | b'X') => (16, 2),
            _ => (10, 1),
        };
        let digits = rest
            .get(digits_start..)?
            .iter()
            .take_while(|byte| char::from(**byte).is_digit(radix))
            .count();
        if digits == 0 {
            return None;
        }
        let end = digits_start + digits;
        let mut code: u32 = 0;
        for byte in rest.get(digits_start..end)? {
            let digit = char::from(*byte).to_digit(radix)?;
            code = code.saturating_mul(radix).saturating_add(digit);
        }
        // As in browsers, NUL, surrogates and numbers past Unicode become U+FFFD; all the digits are
        // consumed either way, so `&#99999999999;` leaves no stray digits behind.
        let character = char::from_u32(code)
            .filter(|character| *character != '\0')
            .unwrap_or(char::REPLACEMENT_CHARACTER);
        let semicolon = usize::from(rest.get(end) == Some(&b';'));
        return Some((character, 1 + end + semicolon));
    }
    let name_length = rest
        .iter()
        .take(MAX_ENTITY_NAME + 1)
        .take_while(|byte| byte.is_ascii_alphanumeric())
        .count();
    let name = rest.get(..name_length)?;
    if rest.get(name_length) == Some(&b';')
        && let Some(character) = named_entity(name)
    {
        return Some((character, name_length + 2));
    }
    // Without a `;`, the longest known name the letters start with, as browsers do for `&amp` and
    // the other legacy names; being generous here can only find more, never hide an echo.
    for length in (2..=name_length.min(MAX_LEGACY_ENTITY_NAME)).rev() {
        if let Some(character) = name.get(..length).and_then(named_entity) {
            return Some((character, length + 1));
        }
    }
    None
}

/// Latin-1 entity names, for U+00A0 to U+00FF in order.
pub(super) const LATIN1_ENTITIES: [&str; 96] = [
    "nbsp", "iexcl", "cent", "pound", "curren", "yen", "brvbar", "sect", "uml", "copy", "ordf",
    "laquo", "not", "shy", "reg", "macr", "deg", "plusmn", "sup2", "sup3", "acute", "micro",
    "para", "middot", "cedil", "sup1", "ordm", "raquo", "frac14", "frac12", "frac34", "iquest",
    "Agrave", "Aacute", "Acirc", "Atilde", "Auml", "Aring", "AElig", "Ccedil", "Egrave", "Eacute",
    "Ecirc", "Euml", "Igrave", "Iacute", "Icirc", "Iuml", "ETH", "Ntilde", "Ograve", "Oacute",
    "Ocirc", "Otilde", "Ouml", "times", "Oslash", "Ugrave", "Uacute", "Ucirc", "Uuml", "Yacute",
    "THORN", "szlig", "agrave", "aacute", "acirc", "atilde", "auml", "aring", "aelig", "ccedil",
    "egrave", "eacute", "ecirc", "euml", "igrave", "iacute", "icirc", "iuml", "eth", "ntilde",
    "ograve", "oacute", "ocirc", "otilde", "ouml", "divide", "oslash", "ugrave", "uacute", "ucirc",
    "uuml", "yacute", "thorn", "yuml",
];

/// A named HTML entity: the Latin-1 ones by exact name, and those for ASCII punctuation in any
/// case (`&AMP;` and `&QUOT;` are standard, and a sloppy server may write `&Amp;`).
pub(super) fn named_entity(name: &[u8]) -> Option<char> {
    if let Some(index) = LATIN1_ENTITIES
        .iter()
        .position(|entity| entity.as_bytes() == name)
    {
        return u32::try_from(index)
            .ok()
            .and_then(|index| char::from_u32(0xA0 + index));
    }
    let mut lower = [0u8; MAX_ENTITY_NAME];
    let lower = lower.get_mut(..name.len())?;
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let character = match &*lower {
        b"amp" => '&',
        b"lt" => '<',
        b"gt" => '>',
        b"quot" => '"',
        b"apos" => '\'',
        b"sol" => '/',
        b"bsol" => '\\',
        b"plus" => '+',
        b"equals" => '=',
        b"colon" => ':',
        b"semi" => ';',
        b"num" => '#',
        b"percnt" => '%',
        b"excl" => '!',
        b"quest" => '?',
        b"commat" => '@',
        b"dollar" => '$',
        b"ast" | b"midast" => '*',
        b"lpar" => '(',
        b"rpar" => ')',
        b"lsqb" | b"lbrack" => '[',
        b"rsqb" | b"rbrack" => ']',
        b"lcub" | b"lbrace" => '{',
        b"rcub" | b"rbrace" => '}',
        b"verbar" | b"vert" => '|',
        b"grave" => '`',
        b"hat" => '^',
        b"lowbar" => '_',
        b"period" => '.',
        b"comma" => ',',
        b"tab" => '\t',
        b"newline" => '\n',
        b"nbsp" => '\u{a0}',
        _ => return None,
    };
    Some(character)
}

/// The value of a Base64 character in either alphabet (`+`/`-` are 62, `/`/`_` are 63).
pub(super) fn base64_value(byte: u8) -> Option<u8> {
    match byte {
        b'A'..=b'Z' => Some(byte - b'A'),
        b'a'..=b'z' => Some(byte - b'a' + 26),
        b'0'..=b'9' => Some(byte - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    }
}

/// Maximal runs of at least [`MIN_BASE64_RUN`] Base64 characters of either alphabet. Padding ends
/// a run, so `=` signs are left out.
pub(super) fn base64_runs(text: &str) -> Vec<&str> {
    let mut runs = Vec::new();
    let mut start = None;
    for (index, byte) in text.bytes().enumerate() {
        if base64_value(byte).is_some() {
            start.get_or_insert(index);
        } else if let Some(run_start) = start.take()
            && index - run_start >= MIN_BASE64_RUN
            && let Some(run) = text.get(run_start..index)
        {
            runs.push(run);
        }
    }
    if let Some(run_start) = start
        && text.len() - run_start >= MIN_BASE64_RUN
        && let Some(run) = text.get(run_start..)
    {
        runs.push(run);
    }
    runs
}

/// Decodes Base64 of either alphabet, or both mixed, without padding checks: every full byte the
/// characters spell is kept and leftover bits are dropped. The base64 crate's engines reject just
/// the sloppy forms (a wrong alignment, missing padding, stray trailing bits) that matter here.
pub(super) fn base64_decode_lenient(run: &str) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(run.len() / 4 * 3 + 3));
    let (mut bits, mut count) = (0u32, 0u32);
    for value in run.bytes().map_while(base64_value) {
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push(((bits >> count) & 0xFF) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}
