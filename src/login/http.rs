//! The HTTP client of one account: rustls, no redirects, timeouts, optional CA bundle and proxy.
//!
//! Invariant: a login client never follows a redirect (it would replay credentials to another
//! origin, RFC 6749 §3.2 and reqwest#9), never decompresses (no gzip bombs), and uses a proxy only
//! when the config names one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, Once, OnceLock};

use super::spec::{HttpSettings, ProxySetting};

/// The `User-Agent` every login sends.
pub const USER_AGENT: &str = concat!("tokenkeeper/", env!("CARGO_PKG_VERSION"));

/// Why a client could not be built. Names the file or setting.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("ca_file {path}: {message}")]
    CaFile { path: String, message: String },
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

/// Reads a PEM bundle of extra trusted roots.
///
/// # Errors
/// An unreadable file, or one holding no certificate.
pub fn load_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    parse_ca_bundle(path, &read_ca_file(path)?)
}

/// The largest CA bundle read: a full system bundle is about 200 KiB.
const MAX_CA_BUNDLE_BYTES: usize = 8 * 1024 * 1024;

/// A digest of the CA bundle's current contents (`None` without a bundle, or when it cannot be
/// read): when it changes, accounts using the bundle restart to get a client that trusts it.
pub fn ca_digest(settings: &HttpSettings) -> Option<u64> {
    use std::hash::{Hash as _, Hasher as _};
    let bytes = read_ca_file(settings.ca_file.as_deref()?).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

/// Reads a CA bundle's bytes: a regular file (symlinks followed, as `/etc/ssl` is full of them)
/// of at most [`MAX_CA_BUNDLE_BYTES`], so a FIFO or device there cannot block a login.
fn read_ca_file(path: &Path) -> Result<Vec<u8>, ClientError> {
    crate::input::read_file(path, MAX_CA_BUNDLE_BYTES, crate::input::Symlinks::Follow)
        .map(|file| file.bytes.to_vec())
        .map_err(|error| ClientError::CaFile {
            path: path.display().to_string(),
            message: error.to_string(),
        })
}

fn parse_ca_bundle(path: &Path, pem: &[u8]) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let ca_error = |message: String| ClientError::CaFile {
        path: path.display().to_string(),
        message,
    };
    let certificates =
        reqwest::Certificate::from_pem_bundle(pem).map_err(|error| ca_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(ca_error("no PEM certificate in the file".to_string()));
    }
    Ok(certificates)
}

/// The client for one account's settings, shared with every other account whose settings (and
/// CA bundle contents) are the same: a client holds the parsed trust store, so one per account
/// would cost memory and start-up time in proportion to the number of accounts.
///
/// # Errors
/// A bad CA bundle or proxy URL.
pub fn shared_client(settings: &HttpSettings) -> Result<reqwest::Client, ClientError> {
    // The CA bundle's bytes are part of the key, so a rotated bundle gets a new client when the
    // account restarts (a reload that changes it, or a restart of the daemon).
    let ca_bytes = match &settings.ca_file {
        Some(path) => Some(read_ca_file(path)?),
        None => None,
    };
    let key = (settings.clone(), ca_bytes);
    let mut clients = clients();
    if let Some(client) = clients.get(&key) {
        return Ok(client.clone());
    }
    let client = build_client_with(settings, key.1.as_deref())?;
    // A client for the same settings with other CA bytes is for a bundle that has since been
    // rotated: the file now holds these bytes, so that client will not be handed out again.
    clients.retain(|(other, _), _| other != settings);
    clients.insert(key, client.clone());
    Ok(client)
}

type ClientKey = (HttpSettings, Option<Vec<u8>>);

fn clients() -> std::sync::MutexGuard<'static, HashMap<ClientKey, reqwest::Client>> {
    static CLIENTS: OnceLock<Mutex<HashMap<ClientKey, reqwest::Client>>> = OnceLock::new();
    CLIENTS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}

/// Drops shared clients no account uses any more (after a reload). Logins already holding one
/// keep it alive until they are done with it.
pub fn forget_unused_clients(in_use: &[&HttpSettings]) {
    clients().retain(|(settings, _), _| in_use.contains(&settings));
}

/// Builds a client with the CA bundle given as bytes (read once by the caller).
fn build_client_with(
    settings: &HttpSettings,
    ca_pem: Option<&[u8]>,
) -> Result<reqwest::Client, ClientError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.timeout)
        // Idle pooled connections are of no use between logins minutes or hours apart.
        .pool_max_idle_per_host(0);
    if let (Some(path), Some(pem)) = (&settings.ca_file, ca_pem) {
        builder = builder.tls_certs_merge(parse_ca_bundle(path, pem)?);
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
