//! How the daemon gets a login for each account: the [`Logins`] a supervisor is given, and the
//! real one, [`HttpLogins`], which shares one HTTP client between accounts with the same settings.
//! Tests substitute closures.
//!
//! Invariant: a built login carries the digest of the files its client was built from, so that
//! the supervisor can tell when a CA bundle or client certificate has rotated under it.

use std::sync::Arc;

use super::account::Authenticator;
use crate::config::Account;
use crate::login::Login;
use crate::login::http::FilesDigest;

/// A login built for an account.
pub struct Built {
    pub auth: Arc<dyn Authenticator>,
    /// The digest of the files its HTTP client was built from (CA bundle, client certificate and
    /// key): when the files' digest differs, one was rotated and the account restarts with a
    /// client built from the new files.
    pub files_digest: Option<FilesDigest>,
}

/// Builds the logins of accounts. The daemon uses [`HttpLogins`]; tests substitute fakes (any
/// closure from an account to a login is one).
pub trait Logins: Send + Sync {
    /// The login of an account.
    ///
    /// # Errors
    /// A login that cannot be set up (a bad CA bundle or proxy), naming the account.
    fn login_for(&self, account: &Account) -> Result<Built, crate::login::SetupError>;

    /// After a reload: what the logins keep for accounts (HTTP clients) may go when no account
    /// uses these settings any more.
    fn retain(&self, _in_use: &[&crate::login::spec::HttpSettings]) {}
}

/// A fake login trusts the bundle as it is now.
impl<F> Logins for F
where
    F: Fn(&Account) -> Arc<dyn Authenticator> + Send + Sync,
{
    fn login_for(&self, account: &Account) -> Result<Built, crate::login::SetupError> {
        Ok(Built {
            auth: self(account),
            files_digest: crate::login::http::files_digest(&account.http),
        })
    }
}

/// The logins the daemon builds for its accounts.
pub type AuthFactory = Arc<dyn Logins>;

/// HTTP logins, sharing one client between accounts with the same settings.
#[derive(Default)]
pub struct HttpLogins {
    clients: crate::login::http::Clients,
}

impl Logins for HttpLogins {
    fn login_for(&self, account: &Account) -> Result<Built, crate::login::SetupError> {
        let login = Login::for_account(account, &self.clients)?;
        Ok(Built {
            files_digest: login.files_digest(),
            auth: Arc::new(login),
        })
    }

    fn retain(&self, in_use: &[&crate::login::spec::HttpSettings]) {
        self.clients.retain(in_use);
    }
}

/// The real factory: an HTTP [`Login`] per account.
pub fn http_logins() -> AuthFactory {
    Arc::new(HttpLogins::default())
}
