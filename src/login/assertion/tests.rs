//! Tests of client assertions: signed assertions checked against the key's public half with ring
//! (claims, a fresh `jti`, the algorithm a key implies), keys that do not fit refused without
//! showing them, assertion files sent as read until they expire, and plans that show only sources.

use super::*;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _};

const URL_SAFE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn now() -> Timestamp {
    Timestamp::from_second(1_900_000_000).expect("in range")
}

/// A PKCS#8 DER key as a PEM file's text.
fn pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

fn literal(text: &str) -> SecretSource {
    SecretSource::Literal(Secret::new(text.to_string()))
}

/// An EC key of `alg`'s curve: its PEM and its public key.
fn ec_key(alg: &'static signature::EcdsaSigningAlgorithm) -> (String, Vec<u8>) {
    let rng = SystemRandom::new();
    let der = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("generate");
    let pair = signature::EcdsaKeyPair::from_pkcs8(alg, der.as_ref(), &rng).expect("parse");
    (pem(der.as_ref()), pair.public_key().as_ref().to_vec())
}

fn signed(key: &str, alg: Option<SigningAlg>, key_id: Option<&str>) -> Assertion {
    Assertion::Signed {
        key: literal(key),
        alg,
        key_id: key_id.map(str::to_string),
        audience: "https://idp.example/oauth/token".to_string(),
    }
}

/// The header and claims of a JWT, after checking its signature with `verify`.
fn open(
    jwt: &str,
    verify: &'static dyn signature::VerificationAlgorithm,
    public: &[u8],
) -> (serde_json::Value, serde_json::Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let signature = URL_SAFE.decode(parts[2]).expect("base64url signature");
    signature::UnparsedPublicKey::new(verify, public)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the signature verifies with the public key");
    let decode = |part: &str| -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE.decode(part).expect("base64url")).expect("json")
    };
    (decode(parts[0]), decode(parts[1]))
}

#[test]
fn a_signed_assertion_names_the_client_and_the_endpoint_and_is_fresh_each_time() {
    let (key, public) = ec_key(&signature::ECDSA_P256_SHA256_FIXED_SIGNING);
    let assertion = signed(&key, Some(SigningAlg::Es256), Some("key-1"));
    let first = assertion.make("client-7", now()).expect("signed");
    let (header, claims) = open(first.expose(), &signature::ECDSA_P256_SHA256_FIXED, &public);
    assert_eq!(
        header,
        serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": "key-1"})
    );
    assert_eq!(claims["iss"], "client-7");
    assert_eq!(claims["sub"], "client-7");
    assert_eq!(claims["aud"], "https://idp.example/oauth/token");
    assert_eq!(claims["iat"], now().as_second());
    assert_eq!(claims["exp"], now().as_second() + 60);
    let jti = claims["jti"].as_str().expect("a jti");
    assert_eq!(jti.len(), 32, "{jti}");
    let second = assertion.make("client-7", now()).expect("signed");
    let (_, again) = open(
        second.expose(),
        &signature::ECDSA_P256_SHA256_FIXED,
        &public,
    );
    assert_ne!(again["jti"], claims["jti"], "a fresh jti at each login");
}

#[test]
fn without_signing_alg_the_key_chooses() {
    let (p256, public256) = ec_key(&signature::ECDSA_P256_SHA256_FIXED_SIGNING);
    let jwt = signed(&p256, None, None).make("c", now()).expect("signed");
    let (header, _) = open(
        jwt.expose(),
        &signature::ECDSA_P256_SHA256_FIXED,
        &public256,
    );
    assert_eq!(header["alg"], "ES256");
    assert!(header.get("kid").is_none(), "{header}");
    let (p384, public384) = ec_key(&signature::ECDSA_P384_SHA384_FIXED_SIGNING);
    let jwt = signed(&p384, None, None).make("c", now()).expect("signed");
    let (header, _) = open(
        jwt.expose(),
        &signature::ECDSA_P384_SHA384_FIXED,
        &public384,
    );
    assert_eq!(header["alg"], "ES384");
    let rng = SystemRandom::new();
    let der = signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("generate");
    let pair = signature::Ed25519KeyPair::from_pkcs8(der.as_ref()).expect("parse");
    let jwt = signed(&pem(der.as_ref()), None, None)
        .make("c", now())
        .expect("signed");
    let (header, _) = open(
        jwt.expose(),
        &signature::ED25519,
        pair.public_key().as_ref(),
    );
    assert_eq!(header["alg"], "EdDSA");
}

#[test]
fn a_key_that_does_not_fit_is_refused_without_showing_it() {
    let (p256, _) = ec_key(&signature::ECDSA_P256_SHA256_FIXED_SIGNING);
    for (key, alg, wanted) in [
        (p256.as_str(), Some(SigningAlg::Rs256), "RSA"),
        ("not a key at all", None, "RSA, EC or Ed25519"),
        ("not a key at all", Some(SigningAlg::EdDsa), "Ed25519"),
    ] {
        let error = signed(key, alg, None)
            .make("c", now())
            .expect_err("no signature");
        let text = error.to_string();
        assert!(
            text.contains(&format!("not a PEM {wanted} private key")),
            "{text}"
        );
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains("at all"),
            "{text}"
        );
        assert!(!error.is_transient());
    }
}

/// A JWT whose only claim is `exp`, unsigned: a read assertion is checked, not verified.
fn jwt_expiring(at: Timestamp) -> String {
    let header = URL_SAFE.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = URL_SAFE.encode(format!(r#"{{"exp":{}}}"#, at.as_second()));
    format!("{header}.{claims}.c2lnbmF0dXJl")
}

#[test]
fn a_read_assertion_is_sent_as_it_is_until_it_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    let source = SecretSource::File(path.clone());
    let assertion = Assertion::Read(source);
    let live = jwt_expiring(now() + jiff::SignedDuration::from_secs(600));
    std::fs::write(&path, format!("{live}\n")).expect("write");
    assert_eq!(
        assertion.make("ignored", now()).expect("live").expose(),
        live
    );
    std::fs::write(&path, jwt_expiring(now())).expect("rotate");
    let expired = assertion.make("ignored", now()).expect_err("expired");
    assert!(
        expired.is_transient(),
        "an expired file is about to be renewed"
    );
    let text = expired.to_string();
    assert!(text.contains("expired at 2030-03-17T17:46:40Z"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    std::fs::write(&path, "opaque-token").expect("rotate");
    let opaque = assertion.make("ignored", now()).expect_err("not a JWT");
    assert!(matches!(opaque, AssertionError::NotJwt { .. }), "{opaque}");
    assert!(!opaque.to_string().contains("opaque-token"), "{opaque}");
}

#[test]
fn a_plan_shows_the_method_and_source_only() {
    let (key, _) = ec_key(&signature::ECDSA_P256_SHA256_FIXED_SIGNING);
    let shown = signed(&key, Some(SigningAlg::Es256), Some("k")).describe();
    assert_eq!(
        shown,
        "<private_key_jwt signed ES256, kid \"k\", aud \"https://idp.example/oauth/token\", key literal in config>"
    );
    assert!(!shown.contains("PRIVATE"), "{shown}");
}
