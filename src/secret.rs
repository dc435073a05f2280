//! Secrets: where a credential comes from, and the type that holds it.
//!
//! Invariant: a secret value never reaches a log line, an error message or `Debug`/`Display`
//! output. The raw value is reachable only through [`Secret::expose`], and every caller of that
//! method hands the value straight to the wire (a request body or header) or to an output file.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use zeroize::Zeroizing;

/// The largest secret accepted from a file, an environment variable or a credential.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// A credential or token held in memory. Zeroized on drop; redacted when formatted.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value. The caller gives up the only other copy.
    pub fn new(value: String) -> Secret {
        Secret(SecretString::from(value))
    }

    /// The raw value. The one way to read a secret: call it only where the value goes on the wire
    /// or into an output file.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether two secrets hold the same value, without exposing either.
    pub fn same_value(&self, other: &Secret) -> bool {
        self.expose() == other.expose()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A parsed JSON document that may hold secrets or tokens (a login reply, a state file): every
/// string in it is zeroized when it is dropped, so the tree serde_json builds leaves no copy of a
/// token behind. (Object keys are not; they are names, not values.)
pub struct ZeroizingJson(serde_json::Value);

impl ZeroizingJson {
    pub fn new(value: serde_json::Value) -> ZeroizingJson {
        ZeroizingJson(value)
    }

    /// Parses bytes into a document.
    ///
    /// # Errors
    /// serde_json's error (which quotes no part of the input).
    pub fn parse(bytes: &[u8]) -> Result<ZeroizingJson, serde_json::Error> {
        serde_json::from_slice(bytes).map(ZeroizingJson)
    }
}

impl std::ops::Deref for ZeroizingJson {
    type Target = serde_json::Value;
    fn deref(&self) -> &serde_json::Value {
        &self.0
    }
}

impl std::ops::DerefMut for ZeroizingJson {
    fn deref_mut(&mut self) -> &mut serde_json::Value {
        &mut self.0
    }
}

impl Drop for ZeroizingJson {
    fn drop(&mut self) {
        fn wipe(value: &mut serde_json::Value) {
            match value {
                serde_json::Value::String(text) => zeroize::Zeroize::zeroize(text),
                serde_json::Value::Array(items) => items.iter_mut().for_each(wipe),
                serde_json::Value::Object(members) => members.values_mut().for_each(wipe),
                _ => {}
            }
        }
        wipe(&mut self.0);
    }
}

/// Appends `bytes` to a buffer that may hold a secret or a token without leaving a copy behind:
/// when the buffer must grow, its contents move into a new, larger buffer and the old one is
/// wiped as it drops (`Vec::extend` would free it unwiped).
pub fn extend_zeroizing(buffer: &mut Zeroizing<Vec<u8>>, bytes: &[u8]) {
    let needed = buffer.len().saturating_add(bytes.len());
    if needed > buffer.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(
            needed.max(buffer.capacity().saturating_mul(2)),
        ));
        bigger.extend_from_slice(buffer);
        *buffer = bigger;
    }
    buffer.extend_from_slice(bytes);
}

/// Where a secret is read from. Read again at every login, so that a rotated file or credential is
/// picked up without a restart.
#[derive(Clone, Debug)]
pub enum SecretSource {
    /// A file; symlinks are followed (Kubernetes Secret volumes are `..data` symlinks) and exactly
    /// one trailing newline (`\n` or `\r\n`) is trimmed.
    File(PathBuf),
    /// An environment variable of the daemon's own process.
    Env(String),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<name>`, read like a file.
    Credential(String),
    /// A value written in the config file itself.
    Literal(Secret),
}

/// Why a secret could not be read. Names the source, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret file: {0}")]
    Input(#[source] crate::input::InputError),
    #[error("secret file {path} is empty")]
    EmptyFile { path: PathBuf },
    #[error("secret file {path} is larger than {MAX_SECRET_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("secret file {path} is not valid UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("secret file {path} contains a NUL byte")]
    Nul { path: PathBuf },
    #[error("environment variable {name} is not set")]
    EnvMissing { name: String },
    #[error("environment variable {name} is empty or not valid UTF-8")]
    EnvInvalid { name: String },
    #[error(
        "credential {name}: CREDENTIALS_DIRECTORY is not set (not started by systemd with LoadCredential=?)"
    )]
    NoCredentialsDirectory { name: String },
    #[error("the literal secret is empty")]
    EmptyLiteral,
}

/// Two sources are equal when they read from the same place (or hold the same literal), so that
/// a reload can tell an unchanged account from a changed one.
impl PartialEq for SecretSource {
    fn eq(&self, other: &SecretSource) -> bool {
        match (self, other) {
            (SecretSource::File(a), SecretSource::File(b)) => a == b,
            (SecretSource::Env(a), SecretSource::Env(b)) => a == b,
            (SecretSource::Credential(a), SecretSource::Credential(b)) => a == b,
            (SecretSource::Literal(a), SecretSource::Literal(b)) => a.same_value(b),
            _ => false,
        }
    }
}

impl Eq for SecretSource {}

impl SecretSource {
    /// Reads the secret now.
    ///
    /// # Errors
    /// A missing, unreadable, empty, oversized, non-UTF-8 or NUL-carrying source.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        match self {
            SecretSource::File(path) => read_secret_file(path),
            SecretSource::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| SecretError::NoCredentialsDirectory { name: name.clone() })?;
                read_secret_file(&Path::new(&dir).join(name))
            }
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(value) if value.is_empty() => {
                    Err(SecretError::EnvInvalid { name: name.clone() })
                }
                Ok(value) => Ok(Secret::new(value)),
                Err(std::env::VarError::NotPresent) => {
                    Err(SecretError::EnvMissing { name: name.clone() })
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(SecretError::EnvInvalid { name: name.clone() })
                }
            },
            SecretSource::Literal(secret) if secret.expose().is_empty() => {
                Err(SecretError::EmptyLiteral)
            }
            SecretSource::Literal(secret) => Ok(secret.clone()),
        }
    }

    /// A description for plans and errors: where the secret comes from, never what it is.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::File(path) => format!("file {}", path.display()),
            SecretSource::Env(name) => format!("env {name}"),
            SecretSource::Credential(name) => format!("credential {name}"),
            SecretSource::Literal(_) => "literal in config".to_string(),
        }
    }

    /// The file this secret is read from, if any: the daemon watches it for rotation.
    pub fn watched_path(&self) -> Option<PathBuf> {
        match self {
            SecretSource::File(path) => Some(path.clone()),
            SecretSource::Credential(name) => {
                std::env::var_os("CREDENTIALS_DIRECTORY").map(|dir| Path::new(&dir).join(name))
            }
            SecretSource::Env(_) | SecretSource::Literal(_) => None,
        }
    }
}

fn read_secret_file(path: &Path) -> Result<Secret, SecretError> {
    let file = crate::input::read_file(path, MAX_SECRET_BYTES, crate::input::Symlinks::Follow)
        .map_err(|error| match error {
            crate::input::InputError::TooLarge { .. } => SecretError::TooLarge {
                path: path.to_path_buf(),
            },
            other => SecretError::Input(other),
        })?;
    let mut bytes: &[u8] = &file.bytes;
    if let Some(trimmed) = bytes.strip_suffix(b"\r\n") {
        bytes = trimmed;
    } else if let Some(trimmed) = bytes.strip_suffix(b"\n") {
        bytes = trimmed;
    }
    if bytes.is_empty() {
        return Err(SecretError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    if bytes.contains(&0) {
        return Err(SecretError::Nul {
            path: path.to_path_buf(),
        });
    }
    // The file's buffer is zeroized when dropped; the secret gets its own copy.
    match std::str::from_utf8(bytes) {
        Ok(value) => Ok(Secret::new(value.to_string())),
        Err(_) => Err(SecretError::NotUtf8 {
            path: path.to_path_buf(),
        }),
    }
}

/// Visitor methods refusing a number or a boolean without repeating it: serde's default error
/// ("invalid type: integer `98765432`, expected …") would print a secret written unquoted.
macro_rules! refuse_scalars_quietly {
    () => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(E::invalid_type(
                serde::de::Unexpected::Other("a boolean"),
                &self,
            ))
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::invalid_type(
                serde::de::Unexpected::Other("a number"),
                &self,
            ))
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(E::invalid_type(
                serde::de::Unexpected::Other("a number"),
                &self,
            ))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::invalid_type(
                serde::de::Unexpected::Other("a number"),
                &self,
            ))
        }
    };
}
pub(crate) use refuse_scalars_quietly;

/// A string in a secret table (`file`, `env`, `credential`, `value`), refused quietly when it
/// is not one.
struct SourceText(String);

impl<'de> serde::Deserialize<'de> for SourceText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = SourceText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<SourceText, E> {
                Ok(SourceText(value.to_string()))
            }
            fn visit_string<E: de::Error>(self, value: String) -> Result<SourceText, E> {
                Ok(SourceText(value))
            }
            refuse_scalars_quietly!();
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

/// In the config a secret is either a string (a literal) or a table with exactly one of `file`,
/// `env`, `credential` or `value`.
impl<'de> serde::Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SourceVisitor;
        impl<'de> Visitor<'de> for SourceVisitor {
            type Value = SecretSource;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a string, or a table with one of `file`, `env`, `credential` or `value`",
                )
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<SecretSource, E> {
                Ok(SecretSource::Literal(Secret::new(value.to_string())))
            }
            fn visit_string<E: de::Error>(self, value: String) -> Result<SecretSource, E> {
                Ok(SecretSource::Literal(Secret::new(value)))
            }
            refuse_scalars_quietly!();
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<SecretSource, M::Error> {
                let mut found: Option<SecretSource> = None;
                while let Some(key) = map.next_key::<String>()? {
                    let SourceText(value) = map.next_value()?;
                    let source = match key.as_str() {
                        "file" => SecretSource::File(PathBuf::from(value)),
                        "env" => SecretSource::Env(value),
                        "credential" => {
                            if value.is_empty() || value.contains('/') {
                                return Err(de::Error::custom(
                                    "`credential` must be a plain name without `/`",
                                ));
                            }
                            SecretSource::Credential(value)
                        }
                        "value" => SecretSource::Literal(Secret::new(value)),
                        other => {
                            return Err(de::Error::unknown_field(
                                other,
                                &["file", "env", "credential", "value"],
                            ));
                        }
                    };
                    if found.is_some() {
                        return Err(de::Error::custom(
                            "a secret takes exactly one of `file`, `env`, `credential` or `value`",
                        ));
                    }
                    found = Some(source);
                }
                found.ok_or_else(|| {
                    de::Error::custom(
                        "a secret needs one of `file`, `env`, `credential` or `value`",
                    )
                })
            }
        }
        deserializer.deserialize_any(SourceVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "canary-secret-5f1d2c";

    #[test]
    fn a_zeroizing_buffer_grows_by_moving_into_a_new_one() {
        let mut buffer = Zeroizing::new(Vec::with_capacity(4));
        let mut expected = Vec::new();
        for chunk in [&b"abc"[..], b"defgh", b"", b"ijklmnopqrstuvwxyz0123456789"] {
            extend_zeroizing(&mut buffer, chunk);
            expected.extend_from_slice(chunk);
            assert_eq!(&buffer[..], &expected[..]);
            assert!(buffer.capacity() >= buffer.len());
        }
        // Growth at least doubles, so appending n bytes moves them O(log n) times.
        let before = buffer.capacity();
        let overflow = vec![b'x'; before - buffer.len() + 1];
        extend_zeroizing(&mut buffer, &overflow);
        assert!(buffer.capacity() >= 2 * before);
    }

    #[test]
    fn debug_and_display_redact() {
        let secret = Secret::new(CANARY.to_string());
        assert!(!format!("{secret:?}").contains(CANARY));
        assert!(!format!("{secret}").contains(CANARY));
        let source = SecretSource::Literal(secret);
        assert!(!format!("{source:?}").contains(CANARY));
        assert!(!source.describe().contains(CANARY));
    }

    #[test]
    fn file_trims_exactly_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"abc\n", Some("abc")),
            (b"abc\r\n", Some("abc")),
            (b"abc\n\n", Some("abc\n")),
            (b"abc", Some("abc")),
            (b" abc \n", Some(" abc ")),
            (b"\n", None),
            (b"", None),
            (b"a\0b", None),
            (b"\xff\xfe", None),
        ];
        for (index, (bytes, expected)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("s{index}"));
            std::fs::write(&path, bytes).unwrap();
            let got = SecretSource::File(path.clone()).resolve();
            match expected {
                Some(value) => assert_eq!(got.unwrap().expose(), *value, "case {index}"),
                None => {
                    let error = got.unwrap_err().to_string();
                    assert!(error.contains(&path.display().to_string()), "{error}");
                }
            }
        }
    }

    #[test]
    fn file_follows_symlinks_and_rejects_oversize() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("password"), "hunter2\n").unwrap();
        let link = dir.path().join("password");
        std::os::unix::fs::symlink("..data/password", &link).unwrap();
        assert_eq!(
            SecretSource::File(link).resolve().unwrap().expose(),
            "hunter2"
        );

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_SECRET_BYTES + 1]).unwrap();
        assert!(matches!(
            SecretSource::File(big).resolve(),
            Err(SecretError::TooLarge { .. })
        ));
        let missing = SecretSource::File(dir.path().join("nope"))
            .resolve()
            .unwrap_err();
        assert!(missing.to_string().contains("nope"));
    }

    #[test]
    fn deserializes_every_form() {
        #[derive(serde::Deserialize)]
        struct Holder {
            s: SecretSource,
        }
        let parse = |text: &str| toml::from_str::<Holder>(text).map(|holder| holder.s);
        assert!(matches!(
            parse("s = \"x\"").unwrap(),
            SecretSource::Literal(_)
        ));
        assert!(matches!(
            parse("s = { file = \"/x\" }").unwrap(),
            SecretSource::File(_)
        ));
        assert!(matches!(
            parse("s = { env = \"X\" }").unwrap(),
            SecretSource::Env(_)
        ));
        assert!(matches!(
            parse("s = { credential = \"x\" }").unwrap(),
            SecretSource::Credential(_)
        ));
        assert!(matches!(
            parse("s = { value = \"x\" }").unwrap(),
            SecretSource::Literal(_)
        ));
        assert!(
            parse("s = { fil = \"/x\" }")
                .unwrap_err()
                .to_string()
                .contains("fil")
        );
        assert!(parse("s = { file = \"/x\", env = \"Y\" }").is_err());
        assert!(parse("s = {}").is_err());
        assert!(parse("s = { credential = \"../x\" }").is_err());
    }
}
