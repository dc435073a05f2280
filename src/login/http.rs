//! The HTTP clients of logins: rustls, no redirects, timeouts, optional CA bundle and proxy, one
//! client per distinct set of settings ([`Clients`]).
//!
//! Invariant: a login client never follows a redirect (it would replay credentials to another
//! origin, RFC 6749 §3.2 and reqwest#9), never decompresses (no gzip bombs), and uses a proxy only
//! when the config names one. The one process-wide state is the crypto provider, installed once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, Once};

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

/// The largest CA bundle read: a full system bundle is about 200 KiB.
const MAX_CA_BUNDLE_BYTES: usize = 8 * 1024 * 1024;

/// A CA bundle read and parsed once. Config validation and client building both load bundles
/// through [`CaBundle::load`], so what `check` accepts is exactly what a client trusts.
pub struct CaBundle {
    bytes: Vec<u8>,
    certificates: Vec<reqwest::Certificate>,
}

impl CaBundle {
    /// Reads and parses a PEM bundle of extra trusted roots: a regular file (symlinks followed,
    /// as `/etc/ssl` is full of them) of at most 8 MiB, so a FIFO or device there cannot block.
    ///
    /// # Errors
    /// An unreadable or special file, or one holding no certificate.
    pub fn load(path: &Path) -> Result<CaBundle, ClientError> {
        let bytes = read_ca_file(path)?;
        let ca_error = |message: String| ClientError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let certificates = reqwest::Certificate::from_pem_bundle(&bytes)
            .map_err(|error| ca_error(error.to_string()))?;
        if certificates.is_empty() {
            return Err(ca_error("no PEM certificate in the file".to_string()));
        }
        Ok(CaBundle {
            bytes,
            certificates,
        })
    }
}

/// A digest of the CA bundle's current contents (`None` without a bundle, or when it cannot be
/// read): when it changes, accounts using the bundle restart to get a client that trusts it.
pub fn ca_digest(settings: &HttpSettings) -> Option<u64> {
    use std::hash::{Hash as _, Hasher as _};
    let bytes = read_ca_file(settings.ca_file.as_deref()?).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

fn read_ca_file(path: &Path) -> Result<Vec<u8>, ClientError> {
    crate::input::read_file(path, MAX_CA_BUNDLE_BYTES, crate::input::Symlinks::Follow)
        .map(|file| file.bytes.to_vec())
        .map_err(|error| ClientError::CaFile {
            path: path.display().to_string(),
            message: error.to_string(),
        })
}

/// Which client serves a login: the settings and the CA bundle's bytes (so a rotated bundle
/// gets a new client).
type ClientKey = (HttpSettings, Option<Vec<u8>>);

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

    /// The client for `settings`, built on first use.
    ///
    /// # Errors
    /// A bad CA bundle or proxy URL.
    pub fn client_for(&self, settings: &HttpSettings) -> Result<reqwest::Client, ClientError> {
        let bundle = settings
            .ca_file
            .as_deref()
            .map(CaBundle::load)
            .transpose()?;
        let key = (settings.clone(), bundle.as_ref().map(|ca| ca.bytes.clone()));
        if let Some(client) = self.lock().get(&key) {
            return Ok(client.clone());
        }
        let client = build_client(settings, bundle.as_ref())?;
        let mut built = self.lock();
        // A client for the same settings with other CA bytes is for a bundle that has since been
        // rotated: the file now holds these bytes, so that client will not be handed out again.
        built.retain(|(other, bytes), _| other != settings || *bytes == key.1);
        Ok(built.entry(key).or_insert(client).clone())
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

/// Builds a client (the bundle, if any, already loaded).
fn build_client(
    settings: &HttpSettings,
    bundle: Option<&CaBundle>,
) -> Result<reqwest::Client, ClientError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.timeout)
        // Idle pooled connections are of no use between logins minutes or hours apart.
        .pool_max_idle_per_host(0);
    if let Some(bundle) = bundle {
        builder = builder.tls_certs_merge(bundle.certificates.clone());
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
