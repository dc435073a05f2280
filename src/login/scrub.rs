//! Quoting reply text: the one place that decides whether a piece of a server's reply may appear
//! in an error message or a log line, and what it looks like when it does.
//!
//! A token endpoint that refuses a login may echo back what the request sent (a client secret, a
//! password, the Base64 of an HTTP Basic pair), and not necessarily verbatim: JSON-escaped,
//! percent-encoded with either case of hex digits, with `+` for space, HTML-escaped, Base64
//! encoded, or two of these stacked. Replacing the known spellings of a secret cannot keep up with
//! every encoding, so this module does not redact: [`echoes_secret`] decodes the text every
//! plausible way and looks for each secret, and for each distinctive fragment of it, in every
//! decoding; [`quote`] withholds the whole text when anything is found.
//!
//! Invariant: no text that decodes, in any encoding a server plausibly uses, to a secret or a
//! fragment of one is ever returned by [`quote`].
//!
//! This module reads secret values through [`Secret::expose`] only to compare them with reply
//! text; its copies of them (and every decoding of a reply, which may hold one) are zeroized on
//! drop.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use zeroize::Zeroizing;

use crate::secret::Secret;

/// How long a quoted excerpt may be, in characters.
pub const EXCERPT_CHARS: usize = 160;

/// What `quote` returns instead of text that echoes a credential.
pub const WITHHELD: &str = "[reply text withheld: it echoes a credential]";

/// Secrets shorter than this many bytes are not looked for: they would match ordinary words.
const MIN_SECRET_BYTES: usize = 4;

/// Fragments of a secret shorter than this many characters are not looked for, for the same reason.
const MIN_FRAGMENT_CHARS: usize = 4;

/// Runs of this many token characters (RFC 6750 `b64token`) or more are blanked in excerpts: they
/// are most likely a token, a JWT or a Base64 header that the server quoted.
const TOKEN_RUN: usize = 20;

/// The longest text examined. Every decoding is at most as long as what it decodes, so this bounds
/// each haystack. Reply bodies are capped at 64 KiB by default, but `max_reply_bytes` may allow up
/// to 16 MiB.
const MAX_SCAN_BYTES: usize = 256 * 1024;

/// Runs of Base64 characters shorter than this are not decoded: they are ordinary words far more
/// often than encodings, and decode to at most five bytes.
const MIN_BASE64_RUN: usize = 8;

/// The longest HTML entity name looked up without a trailing `;` (`NewLine` is the longest known).
const MAX_LEGACY_ENTITY_NAME: usize = 7;

/// The longest HTML entity name looked up before a `;`; longer names are not entities.
const MAX_ENTITY_NAME: usize = 32;

/// Words in the bit filter of [`Needles`]: 65 536 bits, one per value of [`head_bit`].
const FILTER_WORDS: usize = 1024;

/// Makes a piece of reply text safe to quote in an error message or log line.
///
/// Returns the flattened, shortened text (control characters and runs of white space become one
/// space, the result is trimmed and cut to [`EXCERPT_CHARS`] characters plus `…` when longer, and
/// runs of at least 20 RFC 6750 token characters are blanked as `[…]` before the cut), or
/// [`WITHHELD`] when the text carries a secret in any encoding (see [`echoes_secret`]); the whole
/// text is examined, not only the part that would be shown.
///
/// Text longer than 256 KiB is quoted and examined only up to there, and its excerpt ends in `…`.
pub fn quote(text: &str, sent_secrets: &[Secret]) -> String {
    let needles = Needles::new(sent_secrets);
    // The excerpt comes from the examined part only, so an unexamined tail can never reach it.
    let examined = prefix(text, MAX_SCAN_BYTES);
    if needles.in_text_or_decodings(examined) {
        return WITHHELD.to_string();
    }
    let blanked = blank_token_runs(examined);
    let mut quoted = shorten(flatten_spaces(&blanked).trim());
    if examined.len() < text.len() && !quoted.ends_with('…') {
        quoted.push('…');
    }
    // What leaves is the excerpt, so it is examined too: cheap, as it is short, and it keeps the
    // invariant even if blanking, flattening or the cut ever made what the text alone did not.
    if needles.in_text_or_decodings(&quoted) {
        return WITHHELD.to_string();
    }
    quoted
}

/// Whether `text` carries one of the secrets (or a distinctive fragment of one) in any encoding.
///
/// What is looked for, for each secret of at least 4 bytes, ASCII case-insensitively: the whole
/// value (also with its white space flattened), and every fragment: each maximal run of at least
/// 4 ASCII alphanumeric characters, and each maximal run of at least 4 alphanumeric characters of
/// any script. A Basic header's Base64 text, which the request module sends as a secret of its own,
/// is covered the same way: `+`, `/` and `=` end its fragments.
///
/// Where it is looked for: the text; its decodings as a JSON string (`\/`, `\uXXXX` with surrogate
/// pairs, and `\xHH`), percent-encoded (`%HH` in either case, and `%uXXXX`), form-encoded (the same
/// with `+` for space) and HTML (named, decimal and hex references, with or without `;`); every
/// decoding of a decoding (so double percent-encoding, JSON then percent, HTML then percent and the
/// like); and the Base64 decoding (either alphabet, padded or not, at every alignment) of each run
/// of at least 8 Base64 characters in the text or in a first decoding, together with the first
/// decodings of that. Each of these is also looked at with its runs of white space and control
/// characters flattened to one space, as [`quote`] would show it.
///
/// Text longer than 256 KiB cannot be examined with bounded work: when there is a secret to look
/// for, it counts as echoing, since it cannot be shown not to.
pub fn echoes_secret(text: &str, sent_secrets: &[Secret]) -> bool {
    let needles = Needles::new(sent_secrets);
    if needles.is_empty() {
        return false;
    }
    if text.len() > MAX_SCAN_BYTES {
        return true;
    }
    needles.in_text_or_decodings(text)
}

/// The longest start of `text` of at most `bytes` bytes that ends on a character boundary.
fn prefix(text: &str, bytes: usize) -> &str {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// The byte strings looked for, lower-cased, each at least 4 bytes long, with an index by their
/// first four bytes so that a haystack is scanned once however many needles there are.
struct Needles {
    needles: Vec<Zeroizing<Vec<u8>>>,
    /// Needle indexes by the first four bytes of the needle, big-endian.
    by_head: HashMap<u32, Vec<usize>>,
    /// One bit per [`head_bit`] of a needle's head: it turns most positions of a haystack away
    /// without a map look-up.
    filter: Vec<u64>,
}

impl Needles {
    fn new(secrets: &[Secret]) -> Needles {
        let mut needles: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut add = |needle: &[u8]| {
            if needle.len() >= MIN_SECRET_BYTES {
                needles.push(Zeroizing::new(needle.to_ascii_lowercase()));
            }
        };
        for secret in secrets {
            let value = secret.expose();
            if value.len() < MIN_SECRET_BYTES {
                continue;
            }
            add(value.as_bytes());
            add(Zeroizing::new(flatten_spaces(value)).as_bytes());
            for fragment in fragments(value) {
                add(fragment.as_bytes());
            }
        }
        needles.sort_unstable_by(|left, right| left.as_slice().cmp(right.as_slice()));
        needles.dedup_by(|left, right| left.as_slice() == right.as_slice());
        let mut by_head: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut filter = vec![0u64; FILTER_WORDS];
        for (index, needle) in needles.iter().enumerate() {
            if let Some(&[a, b, c, d]) = needle.get(..4) {
                let head = u32::from_be_bytes([a, b, c, d]);
                let bit = head_bit(head);
                filter[bit / 64] |= 1 << (bit % 64);
                by_head.entry(head).or_default().push(index);
            }
        }
        Needles {
            needles,
            by_head,
            filter,
        }
    }

    fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Whether any needle occurs in `haystack`, ASCII case-insensitively.
    fn found_in(&self, haystack: &[u8]) -> bool {
        let mut head: u32 = 0;
        for (index, byte) in haystack.iter().enumerate() {
            head = (head << 8) | u32::from(byte.to_ascii_lowercase());
            let Some(start) = index.checked_sub(3) else {
                continue;
            };
            let bit = head_bit(head);
            if self.filter[bit / 64] & (1 << (bit % 64)) == 0 {
                continue;
            }
            let Some(candidates) = self.by_head.get(&head) else {
                continue;
            };
            for &candidate in candidates {
                let needle = self.needles[candidate].as_slice();
                if let Some(window) = haystack.get(start..start + needle.len())
                    && window.eq_ignore_ascii_case(needle)
                {
                    return true;
                }
            }
        }
        false
    }

    /// Whether any needle occurs in `text` as it is or with its white space flattened the way
    /// [`quote`] shows it, so that `p@ss\tword`, and `p@ss&nbsp;word` once decoded, are caught.
    fn found_in_text(&self, text: &str) -> bool {
        self.found_in(text.as_bytes())
            || flatten_runs(text).is_some_and(|flat| self.found_in(flat.as_bytes()))
    }

    fn in_text_or_decodings(&self, text: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        if self.found_in_text(text) {
            return true;
        }
        // A decoder that finds nothing to decode returns None, so plain text costs one pass per
        // decoder and no second level at all.
        let mut first: Vec<Zeroizing<String>> = Vec::new();
        for decode in DECODERS {
            if let Some(decoded) = decode(text) {
                if self.found_in_text(&decoded) {
                    return true;
                }
                first.push(decoded);
            }
        }
        for decoded in &first {
            for decode in DECODERS {
                if let Some(twice) = decode(decoded)
                    && self.found_in_text(&twice)
                {
                    return true;
                }
            }
        }
        // The first decodings mostly repeat the text, so each distinct run is decoded once.
        let mut seen: HashSet<&str> = HashSet::new();
        let haystacks = std::iter::once(text).chain(first.iter().map(|decoded| decoded.as_str()));
        for haystack in haystacks {
            for run in base64_runs(haystack) {
                if seen.insert(run) && self.in_base64(run) {
                    return true;
                }
            }
        }
        false
    }

    /// Whether a run of Base64 characters decodes, at any of the four alignments, to bytes that
    /// carry a needle, raw or after one more decoding (the Basic pair is form-encoded before it is
    /// Base64-encoded, so its whole value only shows after that).
    fn in_base64(&self, run: &str) -> bool {
        // The run may have letters glued in front (`20aWQ6…` from `Basic%20aWQ6…`, `-aWQ6…`), so
        // every alignment is tried; the decoding that started at the right one is clean after it.
        for offset in 0..4 {
            let Some(tail) = run.get(offset..) else {
                break;
            };
            let bytes = base64_decode_lenient(tail);
            if self.found_in(&bytes) {
                return true;
            }
            // Flattening and the decoders work on text: invalid UTF-8 becomes U+FFFD.
            let owned;
            let text = match String::from_utf8_lossy(&bytes) {
                Cow::Borrowed(text) => text,
                Cow::Owned(text) => {
                    owned = Zeroizing::new(text);
                    owned.as_str()
                }
            };
            if self.found_in_text(text) {
                return true;
            }
            for decode in DECODERS {
                if let Some(decoded) = decode(text)
                    && self.found_in_text(&decoded)
                {
                    return true;
                }
            }
        }
        false
    }
}

/// Which of the 65 536 filter bits a needle head (or a haystack window) maps to.
fn head_bit(head: u32) -> usize {
    // Multiplicative hashing: the high bits of the product depend on every byte of the head.
    (head.wrapping_mul(0x9E37_79B1) >> 16) as usize
}

/// The fragments of a secret: maximal runs of at least [`MIN_FRAGMENT_CHARS`] ASCII alphanumeric
/// characters, then the same for alphanumeric characters of any script (so `wörd` in `p@ss wörd`
/// counts although no ASCII run of it is long enough).
///
/// Every window of [`WINDOW_CHARS`] characters of a longer ASCII run counts too, so that an echo
/// that shows only part of a secret (`s3cr3tValu***` for `s3cr3tValue12345`) is caught as well.
fn fragments(value: &str) -> Vec<&str> {
    let mut found = Vec::new();
    push_runs(
        value,
        |character| character.is_ascii_alphanumeric(),
        &mut found,
    );
    let windows: Vec<&str> = found
        .iter()
        .filter(|run| run.len() > WINDOW_CHARS)
        .flat_map(|run| {
            // ASCII runs: every byte index is a character boundary.
            (0..=run.len() - WINDOW_CHARS).filter_map(|start| run.get(start..start + WINDOW_CHARS))
        })
        .collect();
    found.extend(windows);
    push_runs(value, char::is_alphanumeric, &mut found);
    found
}

/// The length of the windows of long secret runs looked for: long enough that a window of a
/// random secret does not turn up in ordinary text, short enough to catch a half-masked echo.
const WINDOW_CHARS: usize = 6;

fn push_runs<'a>(value: &'a str, member: impl Fn(char) -> bool, found: &mut Vec<&'a str>) {
    let mut run: Option<(usize, usize)> = None;
    for (index, character) in value.char_indices() {
        if member(character) {
            let (start, chars) = run.unwrap_or((index, 0));
            run = Some((start, chars + 1));
        } else if let Some((start, chars)) = run.take()
            && chars >= MIN_FRAGMENT_CHARS
            && let Some(fragment) = value.get(start..index)
        {
            found.push(fragment);
        }
    }
    if let Some((start, chars)) = run
        && chars >= MIN_FRAGMENT_CHARS
        && let Some(fragment) = value.get(start..)
    {
        found.push(fragment);
    }
}

/// A decoding of reply text: None when the text holds nothing it decodes.
type Decoder = fn(&str) -> Option<Zeroizing<String>>;

/// Every decoding applied, each also to the others' output. None of them makes text longer.
/// Flattening white space is not among them: every haystack is also looked at flattened, so it
/// does not use up one of the two levels (`%26nbsp%3B` is percent, then HTML, then flattening).
const DECODERS: [Decoder; 4] = [json_unescape, percent_decode, form_decode, html_decode];

/// JSON string escapes, plus `\xHH` and `\'` that JavaScript and Python reprs use. A malformed
/// escape (a lone surrogate, too few hex digits, an unknown letter) is left as it is.
fn json_unescape(text: &str) -> Option<Zeroizing<String>> {
    replace_references(text, b'\\', backslash_escape)
}

/// Reads a reference (an escape) starting at a byte offset: its character and its length.
type Reference = fn(&[u8], usize) -> Option<(char, usize)>;

/// Replaces every reference that starts with `marker` and that `reference` recognises (it
/// returns the character and the reference's length in bytes) by its character. `None` when
/// nothing was replaced. References are ASCII, so every cut falls on a character boundary.
fn replace_references(text: &str, marker: u8, reference: Reference) -> Option<Zeroizing<String>> {
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
fn backslash_escape(bytes: &[u8], at: usize) -> Option<(char, usize)> {
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
fn hex_number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    digits.iter().try_fold(0u32, |value, digit| {
        Some((value << 4) | char::from(*digit).to_digit(16)?)
    })
}

fn percent_decode(text: &str) -> Option<Zeroizing<String>> {
    percent_decode_with(text, false)
}

fn form_decode(text: &str) -> Option<Zeroizing<String>> {
    percent_decode_with(text, true)
}

/// `%HH` in either case (and IIS's `%uXXXX`) to bytes, optionally `+` to a space; the bytes are
/// read as UTF-8, invalid sequences becoming U+FFFD. A `%` not followed by hex digits stays.
fn percent_decode_with(text: &str, plus_is_space: bool) -> Option<Zeroizing<String>> {
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
fn into_text(mut bytes: Zeroizing<Vec<u8>>) -> Zeroizing<String> {
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
fn html_decode(text: &str) -> Option<Zeroizing<String>> {
    replace_references(text, b'&', html_reference)
}

/// The character an HTML reference at `at` (an `&`) stands for, and the reference's length.
fn html_reference(bytes: &[u8], at: usize) -> Option<(char, usize)> {
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
const LATIN1_ENTITIES: [&str; 96] = [
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
fn named_entity(name: &[u8]) -> Option<char> {
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

/// Runs of white space and control characters as one space, the way [`quote`] shows them; None
/// when that changes nothing.
fn flatten_runs(text: &str) -> Option<Zeroizing<String>> {
    let flat = Zeroizing::new(flatten_spaces(text));
    (flat.as_str() != text).then_some(flat)
}

/// Replaces every run of white space and control characters with one space. Never lengthens text.
fn flatten_spaces(text: &str) -> String {
    let mut flat = String::with_capacity(text.len());
    let mut last_space = false;
    for character in text.chars() {
        let space = character.is_whitespace() || character.is_control();
        if space && last_space {
            continue;
        }
        flat.push(if space { ' ' } else { character });
        last_space = space;
    }
    flat
}

/// The value of a Base64 character in either alphabet (`+`/`-` are 62, `/`/`_` are 63).
fn base64_value(byte: u8) -> Option<u8> {
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
fn base64_runs(text: &str) -> Vec<&str> {
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
fn base64_decode_lenient(run: &str) -> Zeroizing<Vec<u8>> {
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

/// Blanks each run of at least [`TOKEN_RUN`] token characters as `[…]`.
fn blank_token_runs(text: &str) -> String {
    let is_token_char =
        |character: char| character.is_ascii_alphanumeric() || "-._~+/=".contains(character);
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= TOKEN_RUN {
            out.push_str("[…]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for character in text.chars() {
        if is_token_char(character) {
            run.push(character);
        } else {
            flush(&mut run, &mut out);
            out.push(character);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Cuts flattened text to [`EXCERPT_CHARS`] characters, marking a cut with `…`.
fn shorten(flat: &str) -> String {
    if flat.chars().count() > EXCERPT_CHARS {
        let cut: String = flat.chars().take(EXCERPT_CHARS).collect();
        format!("{cut}…")
    } else {
        flat.to_string()
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

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
        let json =
            r#"{"error":"invalid_client","error_description":"Client authentication failed"}"#;
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
        let json = json_unescape(r"a\/b \u00e9 \ud83d\ude00 \ud800 \udc00x \u12 \q \x2f \\u0041 \")
            .unwrap();
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
}
