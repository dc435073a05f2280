//! Lower-case hex text of bytes, and back: how digests, signatures and keys are written in the
//! daemon's own text files (state files, fleet key files).
//!
//! Invariant: only pairs of hex digits decode (no sign, no white space), and decoding fills a
//! buffer allocated once, so a decoded key leaves no copy behind in freed memory.

use zeroize::Zeroizing;

/// `bytes` as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// The bytes of hex `text` (either case), or `None` when it is not an even number of hex digits.
pub fn decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(digits.len() / 2));
    for pair in digits.chunks(2) {
        let value = |digit: u8| (digit as char).to_digit(16);
        bytes.push((value(pair[0])? * 16 + value(pair[1])?) as u8);
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_hex() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xab, 0xff];
        assert_eq!(encode(&bytes), "00017f80abff");
        assert_eq!(
            decode("00017f80abff").as_deref().map(|b| &b[..]),
            Some(&bytes[..])
        );
        assert_eq!(
            decode("00017F80ABFF").as_deref().map(|b| &b[..]),
            Some(&bytes[..])
        );
        assert_eq!(decode("").as_deref().map(|b| b.len()), Some(0));
        for bad in ["0", "+a", "0g", " a", "a ", "-1", "é0"] {
            assert!(decode(bad).is_none(), "{bad:?}");
        }
    }
}
