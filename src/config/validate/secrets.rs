//! Secrets during validation: read them when `check` asks, and warn about literal secrets in a
//! config file that others can read.

use std::ops::Range;

use super::Validator;
use crate::config::SecretCheck;
use crate::config::raw::RawAccount;
use crate::login::spec::LoginSpec;
use crate::secret::SecretSource;

impl Validator {
    /// Reads secrets when asked to (the `check` command), and warns about literal secrets in a
    /// config file that others can read.
    pub(super) fn secret_hygiene(&mut self, prefix: &str, account: &RawAccount, login: &LoginSpec) {
        for credential in account.credentials() {
            let value = credential.value;
            self.check_source(
                prefix,
                credential.name,
                value.get_ref(),
                Some(value.span()),
                credential.secret,
            );
        }
        if let Some(request) = &account.request {
            for (name, source) in login.secret_sources() {
                self.check_source(
                    prefix,
                    &format!("request.{name}"),
                    source,
                    Some(request.span()),
                    true,
                );
            }
        }
    }

    pub(super) fn check_source(
        &mut self,
        prefix: &str,
        name: &str,
        source: &SecretSource,
        span: Option<Range<usize>>,
        is_secret: bool,
    ) {
        if let SecretSource::Literal(_) = source
            && is_secret
            && self.readable_by_others
        {
            self.warnings.push(format!(
                "{prefix}.{name}: a secret is written in the config file, which group or others can read; move it to a file or credential, or chmod 600 the config"
            ));
        }
        if self.secrets == SecretCheck::Resolve
            && let Err(error) = source.resolve()
        {
            self.problem(span, &format!("{prefix}.{name}"), error.to_string());
        }
    }
}
