//! Sealed publications: a token as the fleet's leader stores it in the coordination store, and
//! the key every member shares to seal and open it.
//!
//! Invariant: what the store holds is ChaCha20-Poly1305 ciphertext under a key derived from the
//! fleet key file; the account and the key prefix are authenticated with it (as associated
//! data), so a value can be neither read, forged, nor moved to another account or fleet without
//! the key. A publication carries the leader's election term and a sequence number, so that a
//! member can refuse a replayed older value ([`Publication::is_newer_than`]). No value, key
//! byte or token reaches a `Debug` output or an error.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::secret::Secret;
use crate::token::Token;

/// The bytes of a fleet key.
pub const KEY_BYTES: usize = 32;

/// What a sealed value starts with: the format and its version.
const MAGIC: &str = "tkfleet1.";

/// The largest sealed value opened: a token is at most 16 KiB; the rest is small.
pub const MAX_SEALED_BYTES: usize = 64 * 1024;

/// The largest key file read.
const MAX_KEY_FILE_BYTES: usize = 4096;

/// The key every member of a fleet shares, as read from its key file. Only derived keys are
/// kept: the sealing key and a fingerprint that lets an operator compare members' keys.
pub struct FleetKey {
    sealing: LessSafeKey,
    fingerprint: String,
}

impl fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Why a key file cannot be used. Names the path, never its bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("fleet key {path}: {message}")]
    Read { path: String, message: String },
    #[error(
        "fleet key {path}: not a key: expected {KEY_BYTES} random bytes, as Base64 (44 characters), \
         hex (64 characters) or raw; `tokenkeeper fleet-key` makes one"
    )]
    Format { path: String },
}

/// An HKDF output length for ring.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl FleetKey {
    /// Reads the key file at `path` (following links, as Kubernetes Secret volumes need).
    ///
    /// # Errors
    /// A file that cannot be read or does not hold a key.
    pub fn load(path: &Path) -> Result<FleetKey, KeyError> {
        let file =
            crate::input::read_file(path, MAX_KEY_FILE_BYTES, crate::input::Symlinks::Follow)
                .map_err(|error| KeyError::Read {
                    path: path.display().to_string(),
                    message: error.to_string(),
                })?;
        let key = decode_key(&file.bytes).ok_or_else(|| KeyError::Format {
            path: path.display().to_string(),
        })?;
        Ok(FleetKey::from_bytes(&key))
    }

    /// A key from its raw bytes.
    pub fn from_bytes(key: &[u8; KEY_BYTES]) -> FleetKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"tokenkeeper fleet").extract(key);
        let mut sealing = Zeroizing::new([0u8; KEY_BYTES]);
        let mut fingerprint = [0u8; 8];
        // Both lengths are within HKDF-SHA256's limit of 255 hash lengths, so expansion and
        // filling cannot fail.
        prk.expand(&[b"sealing v1"], Len(KEY_BYTES))
            .and_then(|okm| okm.fill(&mut sealing[..]))
            .and_then(|()| prk.expand(&[b"fingerprint v1"], Len(fingerprint.len())))
            .and_then(|okm| okm.fill(&mut fingerprint))
            .unwrap_or_else(|_| unreachable!("HKDF-SHA256 expands to 32 and 8 bytes"));
        // A 32-byte key is what ChaCha20-Poly1305 takes, so this cannot fail.
        let unbound = UnboundKey::new(&aead::CHACHA20_POLY1305, &sealing[..])
            .unwrap_or_else(|_| unreachable!("a 32-byte ChaCha20-Poly1305 key"));
        FleetKey {
            sealing: LessSafeKey::new(unbound),
            fingerprint: fingerprint
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect(),
        }
    }

    /// A fresh random key, as the text a key file holds (Base64 and a newline).
    ///
    /// # Errors
    /// The system's random source failed.
    pub fn generate() -> Result<Zeroizing<String>, ring::error::Unspecified> {
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        SystemRandom::new().fill(&mut key[..])?;
        let mut text = Zeroizing::new(STANDARD.encode(&key[..]));
        text.push('\n');
        Ok(text)
    }

    /// Sixteen hex digits derived from the key (not the key): equal on members that share a key,
    /// so `check` can show it and an operator can compare.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Seals `publication` for `account` under the key `prefix`.
    ///
    /// # Errors
    /// The system's random source failed, or the sealed value would be larger than
    /// [`MAX_SEALED_BYTES`] (and so refused by [`FleetKey::open`]).
    pub fn seal(
        &self,
        prefix: &str,
        account: &str,
        publication: &Publication,
    ) -> Result<String, SealError> {
        let mut nonce = [0u8; aead::NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let body = Body {
            term: publication.term,
            seq: publication.seq,
            leader: &publication.leader,
            token: publication.token.expose(),
            obtained_at: publication.token.obtained_at.to_string(),
            expires_at: publication.token.expires_at.to_string(),
        };
        // Room for the whole plaintext and the tag up front, so that no growth leaves a copy of
        // the token in freed memory. Serializing strings and integers into memory cannot fail.
        // JSON escaping at most doubles a string here: a token is printable ASCII, and `"` and
        // `\` take two bytes each (a member name is checked the same way by the config).
        let room = 2 * (body.token.len() + body.leader.len()) + 256 + aead::MAX_TAG_LEN;
        let mut buffer = Zeroizing::new(Vec::with_capacity(room));
        serde_json::to_writer(&mut *buffer, &body)
            .unwrap_or_else(|_| unreachable!("a publication serializes"));
        self.sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(prefix, account)),
                &mut *buffer,
            )
            .map_err(|_| SealError::Random)?;
        let mut sealed = Vec::with_capacity(nonce.len() + buffer.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&buffer);
        let value = format!("{MAGIC}{}", URL_SAFE_NO_PAD.encode(sealed));
        if value.len() > MAX_SEALED_BYTES {
            return Err(SealError::TooLarge(value.len()));
        }
        Ok(value)
    }

    /// Opens a value stored for `account` under `prefix`.
    ///
    /// # Errors
    /// A value that is not a sealed publication, was not sealed with this key for this account
    /// and prefix, or was altered; or one whose token is not a valid token.
    pub fn open(
        &self,
        prefix: &str,
        account: &str,
        value: &[u8],
    ) -> Result<Publication, OpenError> {
        if value.len() > MAX_SEALED_BYTES {
            return Err(OpenError::TooLarge(value.len()));
        }
        let text = std::str::from_utf8(value).map_err(|_| OpenError::NotSealed)?;
        let encoded = text.strip_prefix(MAGIC).ok_or(OpenError::NotSealed)?;
        let sealed = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(encoded.trim_end())
                .map_err(|_| OpenError::NotSealed)?,
        );
        if sealed.len() < aead::NONCE_LEN + aead::CHACHA20_POLY1305.tag_len() {
            return Err(OpenError::NotSealed);
        }
        let (nonce, ciphertext) = sealed.split_at(aead::NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::NotSealed)?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plain = self
            .sealing
            .open_in_place(
                nonce,
                Aad::from(associated_data(prefix, account)),
                &mut buffer[..],
            )
            .map_err(|_| OpenError::Forged)?;
        let body: OwnedBody = serde_json::from_slice(plain).map_err(|_| OpenError::Malformed)?;
        let OwnedBody {
            term,
            seq,
            leader,
            token,
            obtained_at,
            expires_at,
        } = body;
        let token = Secret::new(token);
        let parse = |text: &str| text.parse::<Timestamp>().map_err(|_| OpenError::Malformed);
        let token = Token::new(token, parse(&obtained_at)?, parse(&expires_at)?)
            .map_err(|error| OpenError::Token(error.to_string()))?;
        Ok(Publication {
            term,
            seq,
            leader,
            token,
        })
    }
}

/// A key file's bytes as a key: exactly [`KEY_BYTES`] raw bytes, or hex or Base64 text of them
/// (surrounding white space ignored). Base64 and hex of 32 bytes are 44 and 64 characters, so a
/// 32-byte file is always raw.
fn decode_key(bytes: &[u8]) -> Option<Zeroizing<[u8; KEY_BYTES]>> {
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    if bytes.len() == KEY_BYTES {
        // Random bytes are all printable with a chance of about 1e-14: such a file is a
        // passphrase or a truncated text key, not a key.
        if bytes
            .iter()
            .all(|byte| byte.is_ascii_graphic() || *byte == b' ')
        {
            return None;
        }
        key.copy_from_slice(bytes);
        return Some(key);
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.len() == 2 * KEY_BYTES {
        let decoded = crate::hex::decode(text)?;
        key.copy_from_slice(&decoded);
        return Some(key);
    }
    let decoded = Zeroizing::new(STANDARD.decode(text).ok()?);
    if decoded.len() != KEY_BYTES {
        return None;
    }
    key.copy_from_slice(&decoded);
    Some(key)
}

/// What the seal authenticates beside the ciphertext: the format, the prefix and the account.
fn associated_data(prefix: &str, account: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(MAGIC.len() + prefix.len() + account.len() + 2);
    data.extend_from_slice(MAGIC.as_bytes());
    data.extend_from_slice(prefix.as_bytes());
    data.push(0);
    data.extend_from_slice(account.as_bytes());
    data.push(0);
    data
}

/// Why a publication could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the system's random source failed")]
    Random,
    #[error("the sealed publication would be {0} bytes, more than {MAX_SEALED_BYTES}")]
    TooLarge(usize),
}

/// Why a stored value was not accepted. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the value is {0} bytes, more than a publication can be")]
    TooLarge(usize),
    #[error("the value is not a sealed publication")]
    NotSealed,
    #[error(
        "the value does not open with this fleet key for this account (another key, another \
         account's value, or altered)"
    )]
    Forged,
    #[error("the sealed publication is malformed")]
    Malformed,
    #[error("the published token is not valid: {0}")]
    Token(String),
}

/// A token as the leader published it.
#[derive(Debug)]
pub struct Publication {
    /// The leader's election term (the revision at which it became leader): a later leader has a
    /// higher one.
    pub term: i64,
    /// Counts the leader's publications within its term.
    pub seq: u64,
    /// The leader's member name.
    pub leader: String,
    pub token: Token,
}

impl Publication {
    /// Whether this publication supersedes `other`: a later term, or a later one in the same term.
    /// A member accepts only publications newer than the one it holds, so a replayed older value
    /// is refused even though it opens.
    pub fn is_newer_than(&self, other: &Publication) -> bool {
        (self.term, self.seq) > (other.term, other.seq)
    }
}

/// The sealed plaintext, as written.
#[derive(serde::Serialize)]
struct Body<'a> {
    term: i64,
    seq: u64,
    leader: &'a str,
    token: &'a str,
    obtained_at: String,
    expires_at: String,
}

/// The sealed plaintext, as read.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnedBody {
    term: i64,
    seq: u64,
    leader: String,
    token: String,
    obtained_at: String,
    expires_at: String,
}

#[cfg(test)]
mod tests;
