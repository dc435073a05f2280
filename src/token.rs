//! A token obtained from a login, validated before anything may write it.
//!
//! Invariant: a [`Token`] value always passed `validate_token_value`: non-empty, at most
//! [`MAX_TOKEN_BYTES`], and only visible ASCII, so it is safe in an HTTP header and in every output
//! format. Its expiry is always after the moment the request was sent.

use std::fmt;

use jiff::Timestamp;

use crate::secret::Secret;

/// Tokens longer than this are refused: no real bearer token comes near it, and a consumer puts the
/// value in a header.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A bearer token and when it stops being valid.
#[derive(Clone)]
pub struct Token {
    value: Secret,
    /// The wall-clock instant the login request was sent: relative lifetimes count from here, which
    /// errs on the early side by one round trip.
    pub obtained_at: Timestamp,
    /// The wall-clock instant after which the token must not be used.
    pub expires_at: Timestamp,
}

/// Why a token value was refused. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is empty")]
    Empty,
    #[error("the token is {0} bytes, more than the {MAX_TOKEN_BYTES} allowed")]
    TooLong(usize),
    #[error("the token contains whitespace or a control character (at byte {0})")]
    BadCharacter(usize),
    #[error("the token contains a non-ASCII character (at byte {0})")]
    NonAscii(usize),
    #[error("the token expires at {expires_at}, not after it was requested at {obtained_at}")]
    AlreadyExpired {
        obtained_at: Timestamp,
        expires_at: Timestamp,
    },
}

/// Checks that a token value can be written and sent in an `Authorization` header.
///
/// # Errors
/// Empty, longer than [`MAX_TOKEN_BYTES`], or holding anything but visible ASCII (`!`..=`~`).
fn validate_token_value(value: &str) -> Result<(), TokenError> {
    if value.is_empty() {
        return Err(TokenError::Empty);
    }
    if value.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong(value.len()));
    }
    for (index, byte) in value.bytes().enumerate() {
        match byte {
            b'!'..=b'~' => {}
            0x80.. => return Err(TokenError::NonAscii(index)),
            _ => return Err(TokenError::BadCharacter(index)),
        }
    }
    Ok(())
}

/// A token value that passed `validate_token_value`, before its expiry is known.
pub struct TokenValue(Secret);

impl TokenValue {
    /// Checks a value once; a [`Token`] built from it is not checked again.
    ///
    /// # Errors
    /// See `validate_token_value`.
    pub fn new(value: Secret) -> Result<TokenValue, TokenError> {
        validate_token_value(value.expose())?;
        Ok(TokenValue(value))
    }

    /// The raw value (a JWT's claims are read from it).
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl Token {
    /// Builds a validated token.
    ///
    /// # Errors
    /// See `validate_token_value`; also an expiry not after `obtained_at`.
    pub fn new(
        value: Secret,
        obtained_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Token, TokenError> {
        Token::with_value(TokenValue::new(value)?, obtained_at, expires_at)
    }

    /// Builds a token from a value already checked.
    ///
    /// # Errors
    /// An expiry not after `obtained_at`.
    pub fn with_value(
        value: TokenValue,
        obtained_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Token, TokenError> {
        let TokenValue(value) = value;
        if expires_at <= obtained_at {
            return Err(TokenError::AlreadyExpired {
                obtained_at,
                expires_at,
            });
        }
        Ok(Token {
            value,
            obtained_at,
            expires_at,
        })
    }

    /// The raw token, for an output file or a consumer's header.
    pub fn expose(&self) -> &str {
        self.value.expose()
    }

    /// How long the token was valid for when it was obtained.
    pub fn lifetime(&self) -> jiff::SignedDuration {
        self.expires_at.duration_since(self.obtained_at)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"[redacted]")
            .field("obtained_at", &self.obtained_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_table() {
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        let exact = "a".repeat(MAX_TOKEN_BYTES);
        let cases: &[(&str, Result<(), TokenError>)] = &[
            ("abc.DEF-123_~+/=", Ok(())),
            (exact.as_str(), Ok(())),
            ("", Err(TokenError::Empty)),
            (long.as_str(), Err(TokenError::TooLong(MAX_TOKEN_BYTES + 1))),
            ("abc\n", Err(TokenError::BadCharacter(3))),
            ("ab c", Err(TokenError::BadCharacter(2))),
            ("\tabc", Err(TokenError::BadCharacter(0))),
            ("a\0", Err(TokenError::BadCharacter(1))),
            ("a\x7f", Err(TokenError::BadCharacter(1))),
            ("aé", Err(TokenError::NonAscii(1))),
        ];
        for (value, expected) in cases {
            assert_eq!(&validate_token_value(value), expected, "{value:?}");
        }
    }

    #[test]
    fn debug_redacts_and_expiry_must_follow_request() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let later = Timestamp::from_second(1_700_003_600).unwrap();
        let token = Token::new(Secret::new("canary-tok-91".into()), now, later).unwrap();
        assert!(!format!("{token:?}").contains("canary-tok-91"));
        assert_eq!(token.lifetime().as_secs(), 3600);
        assert!(matches!(
            Token::new(Secret::new("x".into()), now, now),
            Err(TokenError::AlreadyExpired { .. })
        ));
    }
}
