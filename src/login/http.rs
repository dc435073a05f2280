//! The HTTP clients of logins: rustls, no redirects, timeouts, optional CA bundle and proxy, one
//! client per distinct set of settings ([`Clients`]).
//!
//! Invariant: a login client never follows a redirect (it would replay credentials to another
//! origin, RFC 6749 §3.2 and reqwest#9), never decompresses (no gzip bombs), and uses a proxy only
//! when the config names one. The one process-wide state is the crypto provider, installed once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, Once};

use super::spec::{ClientIdentity, HttpSettings, ProxySetting};

/// The `User-Agent` every login sends.
pub const USER_AGENT: &str = concat!("tokenkeeper/", env!("CARGO_PKG_VERSION"));

/// Why a client could not be built. Names the file or setting.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("client certificate {path}: {message}")]
    ClientCert { path: String, message: String },
    #[error("client key {path}: {message}")]
    ClientKey { path: String, message: String },
    #[error("proxy: {0}")]
    Proxy(String),
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// reqwest is built without a bundled crypto provider (see Cargo.toml); ring is installed once
/// for the whole process before the first client is built.
fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An error only means another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The largest CA bundle read: a full system bundle is about 200 KiB.
const MAX_CA_BUNDLE_BYTES: usize = 8 * 1024 * 1024;

/// A digest of the files a client is built from (the CA bundle, the client certificate and key):
/// it keys the shared clients, and a change of it (a rotated bundle or certificate) restarts the
/// accounts that use those files, so that their client trusts and presents the new ones.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FilesDigest([u8; 32]);

/// The largest client certificate chain or key read.
const MAX_IDENTITY_BYTES: usize = 1024 * 1024;

/// The files of a client as they are now, as read: the CA bundle, and the certificate and key
/// (zeroized on drop). Their digest is of these bytes, so telling a rotation costs a read and a
/// hash; the files are parsed and checked only when a client is built from them, as the CA bundle
/// is.
struct ClientFiles {
    ca: Option<Vec<u8>>,
    identity: Option<IdentityFiles>,
}

/// A client certificate file and key file, as read.
struct IdentityFiles {
    cert: zeroize::Zeroizing<Vec<u8>>,
    key: zeroize::Zeroizing<Vec<u8>>,
}

impl IdentityFiles {
    fn read(identity: &ClientIdentity) -> Result<IdentityFiles, ClientError> {
        Ok(IdentityFiles {
            cert: read_identity_file(&identity.cert, IdentityPart::Cert)?,
            key: read_identity_file(&identity.key, IdentityPart::Key)?,
        })
    }
}

impl ClientFiles {
    fn read(settings: &HttpSettings) -> Result<ClientFiles, ClientError> {
        let ca = settings.ca_file.as_deref().map(read_ca_file).transpose()?;
        let identity = settings
            .client_identity
            .as_ref()
            .map(IdentityFiles::read)
            .transpose()?;
        Ok(ClientFiles { ca, identity })
    }

    /// `None` when the client is built from no file at all.
    fn digest(&self) -> Option<FilesDigest> {
        if self.ca.is_none() && self.identity.is_none() {
            return None;
        }
        let parts = [
            self.ca.as_deref(),
            self.identity.as_ref().map(|files| &files.cert[..]),
            self.identity.as_ref().map(|files| &files.key[..]),
        ];
        // Sized up front: the input holds the key, and growing would leave copies of it behind.
        let size = parts
            .iter()
            .map(|part| 9 + part.map_or(0, <[u8]>::len))
            .sum();
        let mut input = zeroize::Zeroizing::new(Vec::with_capacity(size));
        for part in parts {
            match part {
                None => input.push(0),
                Some(bytes) => {
                    input.push(1);
                    input.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                    input.extend_from_slice(bytes);
                }
            }
        }
        Some(FilesDigest(crate::input::sha256(&input)))
    }
}

/// Reads a client certificate and key and checks that they make a TLS client identity, the way a
/// client is built from them: config validation calls this, so `check` finds a bad pair.
///
/// # Errors
/// A file that cannot be read, or a pair that is not a certificate chain and its key.
pub fn check_identity(identity: &ClientIdentity) -> Result<(), ClientError> {
    let files = IdentityFiles::read(identity)?;
    verify_identity(&files.cert, &files.key, identity).map(drop)
}

/// Which file of a client identity an error is about.
#[derive(Clone, Copy)]
enum IdentityPart {
    Cert,
    Key,
}

impl IdentityPart {
    fn error(self, path: &Path, message: impl Into<String>) -> ClientError {
        let path = path.display().to_string();
        let message = message.into();
        match self {
            IdentityPart::Cert => ClientError::ClientCert { path, message },
            IdentityPart::Key => ClientError::ClientKey { path, message },
        }
    }
}

/// Checks that `cert` (PEM) holds a certificate chain and `key` (PEM) exactly one private key
/// rustls can sign with, and that the key is the first certificate's; returns the chain and the
/// key re-encoded as one PEM buffer, which is what the client is built from, so that the client
/// presents exactly what was checked (reqwest's own parse would take the last of several keys
/// and refuse other sections). Other sections in the files (a CSR, comments) are ignored.
/// Messages name the file and what is wrong, never bytes from the file (the PEM parser's own
/// errors can quote a line, so they are not shown).
fn verify_identity(
    cert: &[u8],
    key: &[u8],
    files: &ClientIdentity,
) -> Result<zeroize::Zeroizing<Vec<u8>>, ClientError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_error = |message: &str| IdentityPart::Cert.error(&files.cert, message);
    let key_error = |message: &str| IdentityPart::Key.error(&files.key, message);
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| cert_error("is not a readable PEM file"))?;
    if chain.is_empty() {
        return Err(cert_error(
            "holds no certificate (a PEM `CERTIFICATE` section)",
        ));
    }
    let unreadable = |_| key_error("is not a readable PEM file");
    let mut keys = PrivateKeyDer::pem_slice_iter(key);
    let private = match keys.next() {
        Some(private) => private.map_err(unreadable)?,
        None => {
            return Err(key_error(
                "holds no private key (a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or \
                 `EC PRIVATE KEY` section)",
            ));
        }
    };
    if keys.next().is_some() {
        return Err(key_error(
            "holds more than one private key: which one goes with the certificate is ambiguous",
        ));
    }
    let label = match &private {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let mut identity = zeroize::Zeroizing::new(Vec::new());
    for der in &chain {
        push_pem(&mut identity, "CERTIFICATE", der.as_ref());
    }
    push_pem(&mut identity, label, private.secret_der());
    install_crypto_provider();
    let provider = rustls::crypto::ring::default_provider();
    let signer = provider
        .key_provider
        .load_private_key(private)
        .map_err(|_| {
            key_error(
                "is not a private key rustls can sign with (RSA, ECDSA P-256/P-384 or Ed25519)",
            )
        })?;
    let certified = rustls::sign::CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        // Unknown: the key type cannot tell its public half; the handshake will tell.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(identity)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(key_error(&format!(
                "is not the private key of the certificate in {}",
                files.cert.display()
            )))
        }
        Err(_) => Err(cert_error(
            "starts with a certificate that cannot be parsed",
        )),
    }
}

/// Appends `der` to `out` as a PEM section labelled `label`; the Base64 text is built in a
/// zeroized buffer, as it may be a key's.
fn push_pem(out: &mut zeroize::Zeroizing<Vec<u8>>, label: &str, der: &[u8]) {
    use base64::Engine as _;
    let text = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let lines = text.len().div_ceil(64);
    out.reserve(text.len() + lines + 2 * label.len() + 40);
    out.extend_from_slice(format!("-----BEGIN {label}-----\n").as_bytes());
    for line in text.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(format!("-----END {label}-----\n").as_bytes());
}

fn read_identity_file(
    path: &Path,
    part: IdentityPart,
) -> Result<zeroize::Zeroizing<Vec<u8>>, ClientError> {
    crate::input::read_file(path, MAX_IDENTITY_BYTES, crate::input::Symlinks::Follow)
        .map(|file| file.bytes)
        .map_err(|error| part.error(path, error.to_string()))
}

/// A CA bundle read and parsed once. Config validation and client building both load bundles
/// through here, so what `check` accepts is exactly what a client trusts.
pub struct CaBundle {
    certificates: Vec<reqwest::Certificate>,
}

impl CaBundle {
    /// Reads and parses a PEM bundle of extra trusted roots: a regular file (symlinks followed,
    /// as `/etc/ssl` is full of them) of at most 8 MiB, so a FIFO or device there cannot block.
    ///
    /// # Errors
    /// An unreadable or special file, or one holding no certificate.
    pub fn load(path: &Path) -> Result<CaBundle, ClientError> {
        CaBundle::parse(path, &read_ca_file(path)?)
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<CaBundle, ClientError> {
        let ca_error = |message: String| ClientError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let certificates = reqwest::Certificate::from_pem_bundle(bytes)
            .map_err(|error| ca_error(error.to_string()))?;
        if certificates.is_empty() {
            return Err(ca_error("no PEM certificate in the file".to_string()));
        }
        Ok(CaBundle { certificates })
    }
}

/// The digest of the client's files as they are now (`None` without any, or when one cannot be
/// read), to compare with the one a client was built with.
pub fn files_digest(settings: &HttpSettings) -> Option<FilesDigest> {
    ClientFiles::read(settings).ok()?.digest()
}

fn read_ca_file(path: &Path) -> Result<Vec<u8>, ClientError> {
    crate::input::read_file(path, MAX_CA_BUNDLE_BYTES, crate::input::Symlinks::Follow)
        .map(|file| file.bytes.to_vec())
        .map_err(|error| ClientError::CaFile {
            path: path.display().to_string(),
            message: error.to_string(),
        })
}

/// Which client serves a login: the settings and the digest of the CA bundle's bytes (so a
/// rotated bundle gets a new client).
type ClientKey = (HttpSettings, Option<FilesDigest>);

/// A client handed out by [`Clients`], with the digest of the CA bundle it trusts.
pub struct SharedClient {
    pub client: reqwest::Client,
    pub files_digest: Option<FilesDigest>,
}

/// The HTTP clients of a set of accounts: one per distinct set of settings and CA bundle
/// contents, shared by every account that has them (a client holds the parsed trust store, so one
/// per account would cost memory and start-up time in proportion to the number of accounts).
///
/// A value, owned by whoever runs logins: the daemon's login factory, `once`, `token`. Clients are
/// built outside its lock, so building one (parsing a trust store) never holds up another.
#[derive(Default)]
pub struct Clients {
    built: Mutex<HashMap<ClientKey, reqwest::Client>>,
}

impl Clients {
    pub fn new() -> Clients {
        Clients::default()
    }

    /// The client for `settings`, built on first use. The CA bundle and client certificate, if
    /// any, are read each time (a rotation gets a new client) but parsed and checked only when a
    /// client is built.
    ///
    /// # Errors
    /// A bad CA bundle or proxy URL.
    pub fn client_for(&self, settings: &HttpSettings) -> Result<SharedClient, ClientError> {
        let files = ClientFiles::read(settings)?;
        let key = (settings.clone(), files.digest());
        let shared = |client: &reqwest::Client| SharedClient {
            client: client.clone(),
            files_digest: key.1,
        };
        if let Some(client) = self.lock().get(&key) {
            return Ok(shared(client));
        }
        let bundle = match (&settings.ca_file, &files.ca) {
            (Some(path), Some(bytes)) => Some(CaBundle::parse(path, bytes)?),
            _ => None,
        };
        let identity = match (&settings.client_identity, &files.identity) {
            (Some(paths), Some(read)) => Some(verify_identity(&read.cert, &read.key, paths)?),
            _ => None,
        };
        let client = build_client(
            settings,
            bundle.as_ref(),
            identity.as_deref().map(|pem| &pem[..]),
        )?;
        let mut built = self.lock();
        // A client for the same settings with other files is for files that have since been
        // rotated: they now hold these bytes, so that client will not be handed out again.
        built.retain(|(other, digest), _| other != settings || *digest == key.1);
        Ok(shared(built.entry(key.clone()).or_insert(client)))
    }

    /// Drops the clients of settings no account uses any more (after a reload). Logins already
    /// holding one keep it alive until they are done with it.
    pub fn retain(&self, in_use: &[&HttpSettings]) {
        self.lock()
            .retain(|(settings, _), _| in_use.contains(&settings));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, reqwest::Client>> {
        self.built
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// How long an idle kept-alive login connection is kept.
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

/// At most this many idle connections are kept per token host and client.
const POOL_MAX_IDLE_PER_HOST: usize = 8;

/// Builds a client (the bundle, if any, already loaded).
fn build_client(
    settings: &HttpSettings,
    bundle: Option<&CaBundle>,
    identity: Option<&[u8]>,
) -> Result<reqwest::Client, ClientError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.timeout)
        // Logins of accounts that share a token host reuse a kept-alive connection: with
        // thousands of accounts that saves a TCP (and TLS) handshake per login. Safe across
        // accounts because nothing of a login outlives its request on the connection: no
        // cookies, no connection-bound auth (credentials travel in every request, and a client
        // certificate would be one client's, keyed by its settings). The idle timeout is kept
        // below common server keep-alive timeouts (5 s in Apache httpd and Node.js), so that a
        // login rarely meets a connection the server is closing; a few accounts logging in
        // minutes apart open a new connection each time, as before.
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST);
    if let Some(bundle) = bundle {
        builder = builder.tls_certs_merge(bundle.certificates.clone());
    }
    if let (Some(identity), Some(files)) = (identity, &settings.client_identity) {
        // The buffer is the chain and key `verify_identity` checked and re-encoded; this only
        // fails on what that does not check, and reqwest's message quotes no bytes of it.
        let identity =
            reqwest::Identity::from_pem(identity).map_err(|error| ClientError::ClientCert {
                path: files.cert.display().to_string(),
                message: format!(
                    "with the key {}: not a client identity: {}",
                    files.key.display(),
                    error_chain(&error)
                ),
            })?;
        builder = builder.identity(identity);
    }
    builder = match &settings.proxy {
        ProxySetting::None => builder.no_proxy(),
        // reqwest reads the proxy variables itself unless told otherwise.
        ProxySetting::Environment => builder,
        ProxySetting::Url(url) => builder.proxy(
            reqwest::Proxy::all(url.as_str())
                .map_err(|error| ClientError::Proxy(error.to_string()))?,
        ),
    };
    builder
        .build()
        .map_err(|error| ClientError::Build(error_chain(&error)))
}

/// An error and all its causes on one line: reqwest's own message hides the cause ("error sending
/// request") that an operator needs ("connection refused").
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
