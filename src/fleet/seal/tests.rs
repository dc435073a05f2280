//! Tests of sealed publications: the round trip, values that must not open (another key,
//! account or prefix, altered, truncated, foreign), replay ordering, key files in each accepted
//! form, and canaries that no token or key byte shows in a value, an error or `Debug`.

use super::*;

const TOKEN: &str = "canary-fleet-token-5f1e2d";
const PREFIX: &str = "/tokenkeeper";

fn key(byte: u8) -> FleetKey {
    FleetKey::from_bytes(&[byte; KEY_BYTES])
}

fn publication(term: i64, seq: u64) -> Publication {
    let obtained_at: Timestamp = "2026-12-02T10:00:00.123456789Z".parse().unwrap();
    let expires_at: Timestamp = "2026-12-02T11:00:00.5Z".parse().unwrap();
    Publication {
        term,
        seq,
        leader: "member-a".to_string(),
        token: Token::new(Secret::new(TOKEN.to_string()), obtained_at, expires_at).unwrap(),
    }
}

#[test]
fn a_sealed_publication_opens_whole_and_shows_nothing_in_clear() {
    let key = key(7);
    let original = publication(42, 3);
    let sealed = key.seal(PREFIX, "panaya", &original).unwrap();
    assert!(sealed.starts_with("tkfleet1."), "{sealed}");
    for leak in [
        TOKEN.to_string(),
        STANDARD.encode(TOKEN),
        URL_SAFE_NO_PAD.encode(TOKEN),
        "member-a".to_string(),
    ] {
        assert!(!sealed.contains(&leak), "{leak} in {sealed}");
    }
    let opened = key.open(PREFIX, "panaya", sealed.as_bytes()).unwrap();
    assert_eq!(opened.token.expose(), TOKEN);
    assert_eq!(opened.token.obtained_at, original.token.obtained_at);
    assert_eq!(opened.token.expires_at, original.token.expires_at);
    assert_eq!((opened.term, opened.seq), (42, 3));
    assert_eq!(opened.leader, "member-a");
    // A fresh nonce each time: the same publication never seals to the same value.
    assert_ne!(sealed, key.seal(PREFIX, "panaya", &original).unwrap());
    let debug = format!("{opened:?} {key:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(!debug.contains("[7, 7"), "{debug}");
}

#[test]
fn values_that_are_not_this_fleets_publication_for_this_account_do_not_open() {
    let key = key(7);
    let sealed = key.seal(PREFIX, "panaya", &publication(1, 1)).unwrap();
    let mut flipped = sealed.clone().into_bytes();
    // A character inside the Base64 text, changed to another Base64 character.
    let at = flipped.len() - 10;
    flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
    // (case, the key, prefix and account it is opened with, the value, the error)
    type Case = (
        &'static str,
        FleetKey,
        &'static str,
        &'static str,
        Vec<u8>,
        OpenError,
    );
    let cases: Vec<Case> = vec![
        (
            "another key",
            self::key(8),
            PREFIX,
            "panaya",
            sealed.clone().into_bytes(),
            OpenError::Forged,
        ),
        (
            "another account's value",
            self::key(7),
            PREFIX,
            "papaya",
            sealed.clone().into_bytes(),
            OpenError::Forged,
        ),
        (
            "another fleet's prefix",
            self::key(7),
            "/other",
            "panaya",
            sealed.clone().into_bytes(),
            OpenError::Forged,
        ),
        (
            "an altered byte",
            self::key(7),
            PREFIX,
            "panaya",
            flipped,
            OpenError::Forged,
        ),
        (
            "cut short",
            self::key(7),
            PREFIX,
            "panaya",
            sealed.as_bytes()[..20].to_vec(),
            OpenError::NotSealed,
        ),
        (
            "a token written in clear",
            self::key(7),
            PREFIX,
            "panaya",
            TOKEN.as_bytes().to_vec(),
            OpenError::NotSealed,
        ),
        (
            "not UTF-8",
            self::key(7),
            PREFIX,
            "panaya",
            vec![0xff, 0xfe, 0x00],
            OpenError::NotSealed,
        ),
        (
            "too large",
            self::key(7),
            PREFIX,
            "panaya",
            vec![b'a'; MAX_SEALED_BYTES + 1],
            OpenError::TooLarge(MAX_SEALED_BYTES + 1),
        ),
    ];
    for (what, key, prefix, account, value, expected) in cases {
        let error = key.open(prefix, account, &value).unwrap_err();
        assert_eq!(error, expected, "{what}");
        assert!(!error.to_string().contains(TOKEN), "{what}: {error}");
    }
}

#[test]
fn a_sealed_value_with_an_invalid_token_is_refused_as_such() {
    // Sealed by hand: `seal` only takes a valid token, but a forger with the key could write any.
    let key = key(7);
    let body = serde_json::json!({
        "term": 1, "seq": 1, "leader": "m", "token": "bad token",
        "obtained_at": "2026-12-02T10:00:00Z", "expires_at": "2026-12-02T11:00:00Z",
    });
    let mut buffer = serde_json::to_vec(&body).unwrap();
    let nonce = [3u8; aead::NONCE_LEN];
    key.sealing
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(associated_data(PREFIX, "a")),
            &mut buffer,
        )
        .unwrap();
    let value = format!(
        "{MAGIC}{}",
        URL_SAFE_NO_PAD.encode([&nonce[..], &buffer].concat())
    );
    let error = key.open(PREFIX, "a", value.as_bytes()).unwrap_err();
    assert!(matches!(error, OpenError::Token(_)), "{error:?}");
    assert!(!error.to_string().contains("bad token"), "{error}");
}

#[test]
fn only_a_later_term_or_sequence_is_newer() {
    let cases = [
        ((1, 1), (1, 0), true),
        ((2, 0), (1, 99), true),
        ((1, 1), (1, 1), false),
        ((1, 0), (1, 1), false),
        ((1, 99), (2, 0), false),
    ];
    for ((term, seq), (other_term, other_seq), newer) in cases {
        assert_eq!(
            publication(term, seq).is_newer_than(&publication(other_term, other_seq)),
            newer,
            "{term}/{seq} against {other_term}/{other_seq}"
        );
    }
}

#[test]
fn key_files_in_every_accepted_form_give_the_same_key() {
    let raw: [u8; KEY_BYTES] = std::array::from_fn(|index| index as u8 * 7 + 1);
    let hex: String = raw.iter().map(|byte| format!("{byte:02x}")).collect();
    let base64 = STANDARD.encode(raw);
    let dir = tempfile::tempdir().unwrap();
    let reference = FleetKey::from_bytes(&raw);
    for (name, bytes) in [
        ("raw", raw.to_vec()),
        ("hex", format!("{hex}\n").into_bytes()),
        ("hex-upper", hex.to_uppercase().into_bytes()),
        ("base64", format!("  {base64}\n").into_bytes()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let key = FleetKey::load(&path).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(key.fingerprint(), reference.fingerprint(), "{name}");
        // The same key: what one seals, the other opens.
        let sealed = reference.seal(PREFIX, "a", &publication(1, 1)).unwrap();
        assert!(key.open(PREFIX, "a", sealed.as_bytes()).is_ok(), "{name}");
    }
    assert_ne!(key(1).fingerprint(), key(2).fingerprint());
    assert_eq!(reference.fingerprint().len(), 16);

    // Made by `generate`: loadable, and different each time.
    let generated = FleetKey::generate().unwrap();
    let path = dir.path().join("generated");
    std::fs::write(&path, generated.as_bytes()).unwrap();
    let loaded = FleetKey::load(&path).unwrap();
    assert_ne!(generated.as_str(), FleetKey::generate().unwrap().as_str());
    assert!(!format!("{loaded:?}").contains(generated.trim()));
}

#[test]
fn a_key_file_that_is_not_a_key_is_refused_naming_the_path_only() {
    let dir = tempfile::tempdir().unwrap();
    let secretish = "c2VjcmV0LWJ1dC1zaG9ydA==";
    for (name, bytes) in [
        ("short", secretish.as_bytes().to_vec()),
        ("empty", Vec::new()),
        ("hex-63", "a".repeat(63).into_bytes()),
        ("hex-bad", format!("{}zz", "a".repeat(62)).into_bytes()),
        ("base64-of-31", STANDARD.encode([9u8; 31]).into_bytes()),
        ("raw-33", vec![1u8; 33]),
        (
            "passphrase-32",
            b"correct horse battery staple 123".to_vec(),
        ),
        ("hex-with-plus", format!("+{}", "a".repeat(63)).into_bytes()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let error = FleetKey::load(&path).unwrap_err().to_string();
        assert!(
            error.contains(&path.display().to_string()),
            "{name}: {error}"
        );
        assert!(error.contains("not a key"), "{name}: {error}");
        assert!(!error.contains(secretish), "{name}: {error}");
    }
    let missing = dir.path().join("missing");
    let error = FleetKey::load(&missing).unwrap_err().to_string();
    assert!(error.contains(&missing.display().to_string()), "{error}");
}

#[test]
fn a_publication_too_large_to_open_is_not_sealed() {
    let key = key(7);
    let mut big = publication(1, 1);
    big.leader = "m".repeat(MAX_SEALED_BYTES);
    assert!(matches!(
        key.seal(PREFIX, "a", &big),
        Err(SealError::TooLarge(_))
    ));
    // A token full of characters JSON escapes still seals and opens whole.
    let quoted = "\"\\".repeat(2000);
    let obtained_at = Timestamp::now();
    let escaped = Publication {
        term: 1,
        seq: 1,
        leader: "m".to_string(),
        token: Token::new(
            Secret::new(quoted.clone()),
            obtained_at,
            obtained_at + jiff::SignedDuration::from_secs(60),
        )
        .unwrap(),
    };
    let sealed = key.seal(PREFIX, "a", &escaped).unwrap();
    assert_eq!(
        key.open(PREFIX, "a", sealed.as_bytes())
            .unwrap()
            .token
            .expose(),
        quoted
    );
}
