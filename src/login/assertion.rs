//! OAuth2 client authentication by assertion (RFC 7523 §2.2): instead of a shared secret, the
//! client sends `client_assertion_type = urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
//! and a JWT in `client_assertion`.
//!
//! - `private_key_jwt` (OpenID Connect Core §9): a JWT signed at each login with the client's
//!   private key (PEM, read from its secret source each time): `iss` and `sub` the client id,
//!   `aud` the token endpoint (or the configured audience), `iat` now, `exp` a minute later, and a
//!   fresh random `jti`, so no two logins send the same assertion.
//! - A client assertion read from a file at each login: the federated-workload case, where
//!   another issuer (the kubelet's projected service-account token, a CI system's OIDC token)
//!   signs a short-lived JWT. Its `exp` is checked before it is sent, so an expired one is
//!   reported as such rather than as rejected credentials.
//!
//! Invariant: key material and assertions live only in zeroized buffers and in the request;
//! errors name the source and the algorithm, never a value.

use jiff::Timestamp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::secret::{Secret, SecretError, SecretSource};

/// The `client_assertion_type` of a JWT assertion.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long a signed assertion is valid: long enough for a slow login, short enough that a
/// captured one is soon useless.
const SIGNED_LIFETIME_SECONDS: i64 = 60;

/// A client assertion, made or read at each login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assertion {
    /// `private_key_jwt`: signed with the key from `key` at each login.
    Signed {
        key: SecretSource,
        /// `None`: chosen from the key (RS256 for RSA, ES256 or ES384 for EC by its curve,
        /// EdDSA for Ed25519).
        alg: Option<SigningAlg>,
        key_id: Option<String>,
        /// `aud`: the token endpoint unless configured otherwise.
        audience: String,
    },
    /// Read from its source at each login and sent as it is, once its `exp` is checked.
    Read(SecretSource),
}

/// The signature algorithms of a signed assertion (those ring computes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningAlg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl SigningAlg {
    pub const ALL: [SigningAlg; 9] = [
        SigningAlg::Rs256,
        SigningAlg::Rs384,
        SigningAlg::Rs512,
        SigningAlg::Ps256,
        SigningAlg::Ps384,
        SigningAlg::Ps512,
        SigningAlg::Es256,
        SigningAlg::Es384,
        SigningAlg::EdDsa,
    ];

    /// The JOSE name (`RS256` …), as the config writes it.
    pub fn name(self) -> &'static str {
        match self {
            SigningAlg::Rs256 => "RS256",
            SigningAlg::Rs384 => "RS384",
            SigningAlg::Rs512 => "RS512",
            SigningAlg::Ps256 => "PS256",
            SigningAlg::Ps384 => "PS384",
            SigningAlg::Ps512 => "PS512",
            SigningAlg::Es256 => "ES256",
            SigningAlg::Es384 => "ES384",
            SigningAlg::EdDsa => "EdDSA",
        }
    }

    pub fn from_name(name: &str) -> Option<SigningAlg> {
        SigningAlg::ALL.into_iter().find(|alg| alg.name() == name)
    }

    fn jose(self) -> Algorithm {
        match self {
            SigningAlg::Rs256 => Algorithm::RS256,
            SigningAlg::Rs384 => Algorithm::RS384,
            SigningAlg::Rs512 => Algorithm::RS512,
            SigningAlg::Ps256 => Algorithm::PS256,
            SigningAlg::Ps384 => Algorithm::PS384,
            SigningAlg::Ps512 => Algorithm::PS512,
            SigningAlg::Es256 => Algorithm::ES256,
            SigningAlg::Es384 => Algorithm::ES384,
            SigningAlg::EdDsa => Algorithm::EdDSA,
        }
    }

    /// The kind of key the algorithm signs with.
    fn family(self) -> &'static str {
        match self {
            SigningAlg::Es256 | SigningAlg::Es384 => "EC",
            SigningAlg::EdDsa => "Ed25519",
            _ => "RSA",
        }
    }

    /// The key, parsed for this algorithm's family; `None` when the PEM is not such a key.
    fn key(self, pem: &[u8]) -> Option<EncodingKey> {
        match self {
            SigningAlg::Rs256
            | SigningAlg::Rs384
            | SigningAlg::Rs512
            | SigningAlg::Ps256
            | SigningAlg::Ps384
            | SigningAlg::Ps512 => EncodingKey::from_rsa_pem(pem).ok(),
            SigningAlg::Es256 | SigningAlg::Es384 => EncodingKey::from_ec_pem(pem).ok(),
            SigningAlg::EdDsa => EncodingKey::from_ed_pem(pem).ok(),
        }
    }
}

/// Why no assertion could be made or read. Names the source, never a value.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("{0}")]
    Source(#[from] SecretError),
    #[error(
        "the private key ({origin}) is not a PEM {wanted} private key (EC keys must be PKCS#8: `openssl pkcs8 -topk8 -nocrypt`)"
    )]
    BadKey {
        origin: String,
        wanted: &'static str,
    },
    #[error("signing the client assertion with {alg} failed (does the key fit the algorithm?)")]
    Sign { alg: &'static str },
    #[error("the client assertion ({origin}) is not a JWT with an `exp` claim")]
    NotJwt { origin: String },
    #[error(
        "the client assertion ({origin}) expired at {expired_at}; the file is not being renewed"
    )]
    Expired {
        origin: String,
        expired_at: Timestamp,
    },
}

impl AssertionError {
    /// Whether a new try may succeed without a change of the config or secrets: an expired
    /// assertion file is usually about to be rotated (the kubelet renews projected tokens).
    pub fn is_transient(&self) -> bool {
        matches!(self, AssertionError::Expired { .. })
    }
}

impl Assertion {
    /// The assertion to send now, for the client `client_id`.
    ///
    /// # Errors
    /// An unreadable source, a key that is not one of the algorithm's, a failed signature, or
    /// an assertion file that is not a JWT or has expired.
    pub fn make(&self, client_id: &str, now: Timestamp) -> Result<Secret, AssertionError> {
        match self {
            Assertion::Signed {
                key,
                alg,
                key_id,
                audience,
            } => sign(key, *alg, key_id.as_deref(), client_id, audience, now),
            Assertion::Read(source) => {
                let assertion = source.resolve()?;
                let not_jwt = || AssertionError::NotJwt {
                    origin: source.describe(),
                };
                let expires = crate::expiry::jwt_exp(assertion.expose())
                    .map_err(|_| not_jwt())?
                    .ok_or_else(not_jwt)?;
                if expires <= now {
                    return Err(AssertionError::Expired {
                        origin: source.describe(),
                        expired_at: expires,
                    });
                }
                Ok(assertion)
            }
        }
    }

    /// The secret source the assertion is made from or read from.
    pub fn source(&self) -> &SecretSource {
        match self {
            Assertion::Signed { key, .. } => key,
            Assertion::Read(source) => source,
        }
    }

    /// How a plan shows it: the method and the source, never a value.
    pub fn describe(&self) -> String {
        match self {
            Assertion::Signed {
                key,
                alg,
                key_id,
                audience,
            } => {
                let alg = alg.map_or("with the key's algorithm", SigningAlg::name);
                let kid = key_id
                    .as_deref()
                    .map(|kid| format!(", kid {kid:?}"))
                    .unwrap_or_default();
                format!(
                    "<private_key_jwt signed {alg}{kid}, aud {audience:?}, key {}>",
                    key.describe()
                )
            }
            Assertion::Read(source) => format!("<client assertion {}>", source.describe()),
        }
    }
}

/// Signs a fresh assertion for `client_id` to `audience`.
fn sign(
    key: &SecretSource,
    alg: Option<SigningAlg>,
    key_id: Option<&str>,
    client_id: &str,
    audience: &str,
    now: Timestamp,
) -> Result<Secret, AssertionError> {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        sub: &'a str,
        aud: &'a str,
        iat: i64,
        exp: i64,
        jti: String,
    }
    let pem = key.resolve()?;
    let pem = pem.expose().as_bytes();
    let (alg, encoding_key, wanted) = match alg {
        Some(alg) => (alg, alg.key(pem), alg.family()),
        None => {
            let (alg, key) = choose(pem);
            (alg, key, "RSA, EC or Ed25519")
        }
    };
    let encoding_key = encoding_key.ok_or_else(|| AssertionError::BadKey {
        origin: key.describe(),
        wanted,
    })?;
    let mut jti = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut jti[..]);
    let claims = Claims {
        iss: client_id,
        sub: client_id,
        aud: audience,
        iat: now.as_second(),
        exp: now.as_second() + SIGNED_LIFETIME_SECONDS,
        jti: jti.iter().map(|byte| format!("{byte:02x}")).collect(),
    };
    let mut header = Header::new(alg.jose());
    header.typ = Some("JWT".to_string());
    header.kid = key_id.map(str::to_string);
    jsonwebtoken::encode(&header, &claims, &encoding_key)
        .map(Secret::new)
        .map_err(|_| AssertionError::Sign { alg: alg.name() })
}

/// The algorithm a key without a configured one signs with, and the parsed key: RS256 for an RSA
/// key, ES256 or ES384 for an EC key (whichever its curve fits), EdDSA for Ed25519. The key is
/// `None` when it is none of these (reported as wanting any of them).
fn choose(pem: &[u8]) -> (SigningAlg, Option<EncodingKey>) {
    if let Some(key) = SigningAlg::Rs256.key(pem) {
        return (SigningAlg::Rs256, Some(key));
    }
    if let Some(key) = SigningAlg::EdDsa.key(pem) {
        return (SigningAlg::EdDsa, Some(key));
    }
    if let Some(key) = SigningAlg::Es256.key(pem) {
        // The EC parse does not check the curve: ring does, when it signs.
        let probe = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &(), &key);
        let alg = if probe.is_ok() {
            SigningAlg::Es256
        } else {
            SigningAlg::Es384
        };
        return (alg, Some(key));
    }
    (SigningAlg::Rs256, None)
}

#[cfg(test)]
mod tests;
