//! Quoting reply text: the one place that decides whether a piece of a server's reply may appear
//! in an error message or a log line, and what it looks like when it does.
//!
//! A token endpoint that refuses a login may echo back what the request sent (a client secret, a
//! password, the Base64 of an HTTP Basic pair), and not necessarily verbatim: JSON-escaped,
//! percent-encoded with either case of hex digits, with `+` for space, HTML-escaped, Base64
//! encoded, or two of these stacked. Replacing the known spellings of a secret cannot keep up with
//! every encoding, so this module does not redact: [`quote`] decodes the text every plausible way,
//! looks for each secret, and for each distinctive fragment of it, in every decoding (the rules
//! are on `echoes_secret`), and withholds the whole text when anything is found.
//!
//! Invariant: no text that decodes, in any encoding a server plausibly uses, to a secret or a
//! fragment of one is ever returned by [`quote`].
//!
//! This module reads secret values through [`Secret::expose`] only to compare them with reply
//! text; its copies of them (and every decoding of a reply, which may hold one) are zeroized on
//! drop.

mod decode;

use std::borrow::Cow;
use std::collections::HashSet;

use zeroize::Zeroizing;

use crate::secret::Secret;
use decode::{DECODERS, base64_decode_lenient, base64_runs};

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

/// Words in the bit filter of [`Needles`]: 65 536 bits, one per value of [`head_bit`].
const FILTER_WORDS: usize = 1024;

/// Makes a piece of reply text safe to quote in an error message or log line.
///
/// Returns the flattened, shortened text (control characters and runs of white space become one
/// space, the result is trimmed and cut to [`EXCERPT_CHARS`] characters plus `…` when longer, and
/// runs of at least 20 RFC 6750 token characters are blanked as `[…]` before the cut), or
/// [`WITHHELD`] when the text carries a secret in any encoding (see `echoes_secret`); the whole
/// text is examined, not only the part that would be shown.
///
/// Text longer than 256 KiB is quoted and examined only up to there, and its excerpt ends in `…`.
pub fn quote(text: &str, sent_secrets: &[Secret]) -> String {
    Scrubber::new(sent_secrets).quote(text)
}

/// The error codes a token endpoint answers with (RFC 6749 §5.2, RFC 6750 §3.1, RFC 8707 §2):
/// a fixed vocabulary, so naming one shows nothing of the reply's own text.
const OAUTH2_ERROR_CODES: &[&str] = &[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
    "invalid_token",
    "insufficient_scope",
    "access_denied",
    "server_error",
    "temporarily_unavailable",
];

/// [`quote`] for many pieces of one reply: what is looked for is worked out once.
pub struct Scrubber {
    needles: Needles,
    /// Every secret whole, lower-cased, for [`Scrubber::registered_code`].
    wholes: Vec<Zeroizing<Vec<u8>>>,
}

impl Scrubber {
    pub fn new(sent_secrets: &[Secret]) -> Scrubber {
        Scrubber {
            needles: Needles::new(sent_secrets),
            wholes: sent_secrets
                .iter()
                .map(|secret| Zeroizing::new(secret.expose().as_bytes().to_ascii_lowercase()))
                .filter(|whole| !whole.is_empty())
                .collect(),
        }
    }

    /// `code` as one of the registered OAuth2 error codes, when it is one (exactly) and holds no
    /// whole secret. Shown when the rest of a reply is withheld: a fragment of a secret such as
    /// `client` would withhold `invalid_client` and hide why a login was refused, but what is
    /// shown then is this crate's constant, not reply text.
    pub fn registered_code(&self, code: &str) -> Option<&'static str> {
        let known = OAUTH2_ERROR_CODES.iter().find(|known| **known == code)?;
        let holds_secret = self.wholes.iter().any(|whole| {
            whole.len() <= known.len()
                && known
                    .as_bytes()
                    .windows(whole.len())
                    .any(|window| window == whole.as_slice())
        });
        (!holds_secret).then_some(*known)
    }

    /// See [`quote`].
    pub fn quote(&self, text: &str) -> String {
        // The excerpt comes from the examined part only, so an unexamined tail can never reach
        // it.
        let examined = prefix(text, MAX_SCAN_BYTES);
        if self.needles.in_text_or_decodings(examined) {
            return WITHHELD.to_string();
        }
        let blanked = blank_token_runs(examined);
        let mut quoted = shorten(flatten_spaces(&blanked).trim());
        if examined.len() < text.len() && !quoted.ends_with('…') {
            quoted.push('…');
        }
        // What leaves is the excerpt, so it is examined too: cheap, as it is short, and it keeps
        // the invariant even if blanking, flattening or the cut ever made what the text alone
        // did not.
        if self.needles.in_text_or_decodings(&quoted) {
            return WITHHELD.to_string();
        }
        quoted
    }
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
///
/// The detector [`quote`] applies, on its own for the tests (`quote` examines only the part of a
/// long text that it may show).
#[cfg(test)]
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
    /// `head << 32 | index` for each needle, sorted: the needles by their first four bytes
    /// (big-endian). Wiped on drop, as the heads are bytes of the secrets.
    by_head: Zeroizing<Vec<u64>>,
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
        let mut by_head = Zeroizing::new(Vec::with_capacity(needles.len()));
        let mut filter = vec![0u64; FILTER_WORDS];
        for (index, needle) in needles.iter().enumerate() {
            // Far fewer needles than u32::MAX: a secret is at most 64 KiB.
            if let (Some(&[a, b, c, d]), Ok(index)) = (needle.get(..4), u32::try_from(index)) {
                let head = u32::from_be_bytes([a, b, c, d]);
                let bit = head_bit(head);
                filter[bit / 64] |= 1 << (bit % 64);
                by_head.push(u64::from(head) << 32 | u64::from(index));
            }
        }
        by_head.sort_unstable();
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
            let first = self
                .by_head
                .partition_point(|entry| entry >> 32 < u64::from(head));
            let candidates = self.by_head[first..]
                .iter()
                .take_while(|entry| *entry >> 32 == u64::from(head));
            for entry in candidates {
                // The low half is an index into `needles`.
                let needle = self.needles[(entry & 0xffff_ffff) as usize].as_slice();
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
mod tests;
