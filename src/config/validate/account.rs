//! Validating one account: its login (a preset or a generic request and reply), its HTTP
//! settings and its lifetime settings.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use reqwest::Method;
use reqwest::header::HeaderName;
use toml::Spanned;

use super::Defaults;
use super::Validator;
use crate::config::Account;
use crate::config::raw::{RawAccount, RawField, RawReply, RawRequest};
use crate::config::values::valid_account_name;
use crate::login::assertion::SigningAlg;
use crate::login::preset::{ClientAuth, Need, Preset, PresetInput};
use crate::login::spec::{
    BasicAuth, ClientIdentity, Encoding, FieldValue, HttpSettings, LoginSpec, ReplySpec,
    RequestSpec,
};
use crate::secret::SecretSource;

impl Validator {
    pub(super) fn account(
        &mut self,
        name: &str,
        raw: &Spanned<RawAccount>,
        defaults: &Defaults,
    ) -> Option<Account> {
        let before = self.problems.len();
        let span = raw.span();
        let prefix = format!("accounts.{name}");
        let key = |suffix: &str| format!("{prefix}.{suffix}");
        let account = raw.get_ref();
        if !valid_account_name(name) {
            self.problem(
                Some(span.clone()),
                &prefix,
                "account names use letters, digits, `.`, `_` and `-`, start with a letter or digit, and are at most 64 characters",
            );
        }
        let allow_http = account
            .allow_http
            .as_ref()
            .is_some_and(|flag| *flag.get_ref());

        let lifetime = account.lifetime.as_ref().and_then(|value| {
            let duration = self.duration(value, &key("lifetime"))?;
            if duration < Duration::from_secs(1) {
                self.problem(Some(value.span()), &key("lifetime"), "must be at least 1s");
                return None;
            }
            SignedDuration::try_from(duration).ok()
        });

        let login = match (&account.preset, &account.request) {
            (Some(_), Some(request)) => {
                self.problem(
                    Some(request.span()),
                    &key("request"),
                    "an account has either `preset` or a `request` table, not both",
                );
                None
            }
            (Some(preset), None) => self
                .preset_login(&prefix, account, preset, allow_http, lifetime)
                .map(|(preset, spec)| (Some(preset), spec)),
            (None, Some(request)) => self
                .generic_login(&prefix, account, request, allow_http, lifetime, &span)
                .map(|spec| (None, spec)),
            (None, None) => {
                self.problem(
                    Some(span.clone()),
                    &prefix,
                    format!(
                        "needs `preset` (one of {}) or a `request` table",
                        Preset::names()
                    ),
                );
                None
            }
        };

        let http = HttpSettings {
            connect_timeout: account
                .connect_timeout
                .as_ref()
                .and_then(|value| self.duration(value, &key("connect_timeout")))
                .unwrap_or(defaults.connect_timeout),
            timeout: account
                .timeout
                .as_ref()
                .and_then(|value| self.duration(value, &key("timeout")))
                .unwrap_or(defaults.timeout),
            max_reply_bytes: account
                .max_reply_bytes
                .as_ref()
                .map_or(defaults.max_reply_bytes, |value| {
                    self.max_reply_bytes(value, &key("max_reply_bytes"))
                }),
            ca_file: match &account.ca_file {
                Some(value) => self.ca_file(value, &key("ca_file")),
                None => defaults.ca_file.clone(),
            },
            proxy: match &account.proxy {
                Some(value) => self.proxy(value, &key("proxy")),
                None => defaults.proxy.clone(),
            },
            client_identity: self.client_identity(
                account.client_cert.as_ref(),
                account.client_key.as_ref(),
                &key,
            ),
        };
        let max_lifetime = match &account.max_lifetime {
            Some(value) => self.max_lifetime(value, &key("max_lifetime")),
            None => defaults.max_lifetime,
        };

        let outputs = self.outputs(name, &prefix, &account.outputs, &span, defaults.mode);
        let on_change = account
            .on_change
            .as_ref()
            .and_then(|hook| self.hook(&prefix, hook));

        if let Some((_, login)) = &login {
            self.secret_hygiene(&prefix, account, login);
        }
        if self.problems.len() > before {
            return None;
        }
        let (preset, login) = login?;
        Some(Account {
            name: name.to_string(),
            preset,
            login: Arc::new(login),
            http,
            max_lifetime,
            outputs,
            on_change,
            fleet: account.fleet.as_ref().is_some_and(|flag| *flag.get_ref()),
        })
    }

    /// The account's client certificate and key: both or neither, absolute paths, and a pair
    /// that makes a TLS client identity (read now, as a CA bundle is).
    pub(super) fn client_identity(
        &mut self,
        cert: Option<&Spanned<String>>,
        private: Option<&Spanned<String>>,
        key: &dyn Fn(&str) -> String,
    ) -> Option<ClientIdentity> {
        let (cert, private) = match (cert, private) {
            (None, None) => return None,
            (Some(cert), Some(private)) => (cert, private),
            (Some(only), None) | (None, Some(only)) => {
                let missing = if cert.is_none() {
                    "client_cert"
                } else {
                    "client_key"
                };
                self.problem(
                    Some(only.span()),
                    &key(missing),
                    "`client_cert` and `client_key` go together: the certificate and its private key, each a PEM file",
                );
                return None;
            }
        };
        let mut path = |value: &Spanned<String>, name: &str| {
            let path = std::path::PathBuf::from(value.get_ref());
            if path.is_absolute() {
                Some(path)
            } else {
                self.problem(Some(value.span()), &key(name), "must be an absolute path");
                None
            }
        };
        let identity = ClientIdentity {
            cert: path(cert, "client_cert")?,
            key: path(private, "client_key")?,
        };
        if let Err(error) = crate::login::http::check_identity(&identity) {
            let (at, name) = match error {
                crate::login::http::ClientError::ClientKey { .. } => (private, "client_key"),
                _ => (cert, "client_cert"),
            };
            self.problem(Some(at.span()), &key(name), error.to_string());
            return None;
        }
        Some(identity)
    }

    /// Checks that an OAuth2 account has the one client credential its `auth_method` uses (and
    /// the assertion options only with `private_key_jwt`), each problem at its key.
    fn client_credential(
        &mut self,
        account: &RawAccount,
        auth: ClientAuth,
        preset_span: &Range<usize>,
        key: &dyn Fn(&str) -> String,
    ) {
        let method = account
            .auth_method
            .as_ref()
            .map_or("basic", |method| method.get_ref().as_str());
        let mut present: Vec<(&'static str, Range<usize>)> = account
            .credentials()
            .into_iter()
            .map(|credential| (credential.name, credential.value.span()))
            .collect();
        if let Some(cert) = &account.client_cert {
            present.push(("client_cert", cert.span()));
        }
        let wanted = auth.credential();
        if !present.iter().any(|(name, _)| *name == wanted) {
            let span = account
                .auth_method
                .as_ref()
                .map_or_else(|| preset_span.clone(), Spanned::span);
            self.problem(
                Some(span),
                &key(wanted),
                format!("auth_method `{method}` needs `{wanted}`"),
            );
        }
        // A client certificate may also just secure the connection of a secret-based login.
        for other in ["client_secret", "private_key", "client_assertion"] {
            if other == wanted {
                continue;
            }
            if let Some((_, span)) = present.iter().find(|(name, _)| *name == other) {
                self.problem(
                    Some(span.clone()),
                    &key(other),
                    format!("`{other}` is not used with auth_method `{method}`"),
                );
            }
        }
        if auth != ClientAuth::PrivateKeyJwt {
            for (name, value) in [
                ("signing_alg", &account.signing_alg),
                ("key_id", &account.key_id),
                ("assertion_audience", &account.assertion_audience),
            ] {
                if let Some(value) = value {
                    self.problem(
                        Some(value.span()),
                        &key(name),
                        format!("`{name}` only applies to auth_method `private_key_jwt`"),
                    );
                }
            }
        }
    }

    /// Every preset-only key present on an account, with its span.
    pub(super) fn preset_keys_present(account: &RawAccount) -> Vec<(&'static str, Range<usize>)> {
        let mut present: Vec<(&'static str, Range<usize>)> = account
            .credentials()
            .into_iter()
            .map(|credential| (credential.name, credential.value.span()))
            .collect();
        let texts = [
            ("base_url", &account.base_url),
            ("token_url", &account.token_url),
            ("token_name", &account.token_name),
            ("scope", &account.scope),
            ("audience", &account.audience),
            ("auth_method", &account.auth_method),
            ("signing_alg", &account.signing_alg),
            ("key_id", &account.key_id),
            ("assertion_audience", &account.assertion_audience),
        ];
        for (name, value) in texts {
            if let Some(value) = value {
                present.push((name, value.span()));
            }
        }
        present
    }

    pub(super) fn preset_login(
        &mut self,
        prefix: &str,
        account: &RawAccount,
        preset_name: &Spanned<String>,
        allow_http: bool,
        lifetime: Option<SignedDuration>,
    ) -> Option<(Preset, LoginSpec)> {
        let key = |suffix: &str| format!("{prefix}.{suffix}");
        let Some(preset) = Preset::from_name(preset_name.get_ref()) else {
            self.problem(
                Some(preset_name.span()),
                &key("preset"),
                format!(
                    "unknown preset `{}`, expected one of {}",
                    preset_name.get_ref(),
                    Preset::names()
                ),
            );
            return None;
        };
        if let Some(reply) = &account.reply {
            self.problem(
                Some(reply.span()),
                &key("reply"),
                format!(
                    "preset {} defines the reply; `reply` goes with a `request` table",
                    preset.name()
                ),
            );
        }
        let before = self.problems.len();
        let present = Self::preset_keys_present(account);
        for (name, span) in &present {
            if !preset.keys().iter().any(|(allowed, _)| allowed == name) {
                self.problem(
                    Some(span.clone()),
                    &key(name),
                    format!("`{name}` is not used by preset {}", preset.name()),
                );
            }
        }
        for (name, need) in preset.keys() {
            if *need == Need::Required && !present.iter().any(|(present, _)| present == name) {
                self.problem(
                    Some(preset_name.span()),
                    &key(name),
                    format!("preset {} needs `{name}`", preset.name()),
                );
            }
        }
        let mut input = PresetInput {
            lifetime,
            ..PresetInput::default()
        };
        if let Some(base) = &account.base_url {
            input.base_url = self.url(base, &key("base_url"), allow_http, true);
        }
        if let Some(token_url) = &account.token_url {
            input.token_url = self.url(token_url, &key("token_url"), allow_http, false);
        }
        for credential in account.credentials() {
            input.values.push((
                credential.name,
                FieldValue::Secret(credential.value.get_ref().clone()),
            ));
        }
        for (name, value) in [
            ("token_name", &account.token_name),
            ("scope", &account.scope),
            ("audience", &account.audience),
            ("signing_alg", &account.signing_alg),
            ("key_id", &account.key_id),
            ("assertion_audience", &account.assertion_audience),
        ] {
            if let Some(value) = value {
                if value.get_ref().is_empty() {
                    self.problem(Some(value.span()), &key(name), "must not be empty");
                }
                input
                    .values
                    .push((name, FieldValue::Plain(value.get_ref().clone())));
            }
        }
        if let Some(method) = &account.auth_method {
            match ClientAuth::NAMES
                .iter()
                .find(|(name, _)| name == method.get_ref())
            {
                Some((_, auth)) => input.auth_method = *auth,
                None => self.problem(
                    Some(method.span()),
                    &key("auth_method"),
                    format!(
                        "unknown auth_method `{}`, expected `basic` (client_secret_basic), `post` (client_secret_post), `private_key_jwt`, `client_assertion`, `tls_client_auth` or `self_signed_tls_client_auth`",
                        method.get_ref()
                    ),
                ),
            }
        }
        if let Some(alg) = &account.signing_alg
            && SigningAlg::from_name(alg.get_ref()).is_none()
        {
            let names: Vec<&str> = SigningAlg::ALL.iter().map(|alg| alg.name()).collect();
            self.problem(
                Some(alg.span()),
                &key("signing_alg"),
                format!(
                    "unknown signing_alg `{}`, expected one of {}",
                    alg.get_ref(),
                    names.join(", ")
                ),
            );
        }
        if preset == Preset::OAuth2 {
            self.client_credential(account, input.auth_method, &preset_name.span(), &key);
        }
        if self.problems.len() > before {
            return None;
        }
        match preset.build(&input) {
            Ok(spec) => Some((preset, spec)),
            Err(message) => {
                self.problem(Some(preset_name.span()), &key("preset"), message);
                None
            }
        }
    }

    pub(super) fn generic_login(
        &mut self,
        prefix: &str,
        account: &RawAccount,
        request: &Spanned<RawRequest>,
        allow_http: bool,
        lifetime: Option<SignedDuration>,
        account_span: &Range<usize>,
    ) -> Option<LoginSpec> {
        let key = |suffix: &str| format!("{prefix}.{suffix}");
        let before = self.problems.len();
        for (name, span) in Self::preset_keys_present(account) {
            self.problem(
                Some(span),
                &key(name),
                format!(
                    "`{name}` belongs to presets; a `request` table puts it in `request.fields`"
                ),
            );
        }
        let raw = request.get_ref();
        let url = self.url(&raw.url, &key("request.url"), allow_http, false);
        let method = match &raw.method {
            None => Method::POST,
            Some(method) => match method.get_ref().to_ascii_uppercase().as_str() {
                "POST" => Method::POST,
                "GET" => Method::GET,
                "PUT" => Method::PUT,
                "PATCH" => Method::PATCH,
                other => {
                    self.problem(
                        Some(method.span()),
                        &key("request.method"),
                        format!("unsupported method `{other}`, expected POST, GET, PUT or PATCH"),
                    );
                    Method::POST
                }
            },
        };
        let encoding = match raw
            .encoding
            .as_ref()
            .map(|value| (value.get_ref().as_str(), value))
        {
            None if raw.fields.is_empty() => Encoding::None,
            None | Some(("form", _)) => Encoding::Form,
            Some(("json", _)) => Encoding::Json,
            Some(("none", value)) => {
                if !raw.fields.is_empty() {
                    self.problem(
                        Some(value.span()),
                        &key("request.encoding"),
                        "`none` sends no body, but `request.fields` is set",
                    );
                }
                Encoding::None
            }
            Some((other, value)) => {
                self.problem(
                    Some(value.span()),
                    &key("request.encoding"),
                    format!("unknown encoding `{other}`, expected form, json or none"),
                );
                Encoding::Form
            }
        };
        let mut headers = Vec::new();
        for (name, value) in &raw.headers {
            match HeaderName::from_bytes(name.as_bytes()) {
                // Header values often are API keys: literal ones are held as secrets.
                Ok(header) => headers.push((header, field_value(value.get_ref(), true))),
                Err(_) => self.problem(
                    Some(value.span()),
                    &key(&format!("request.headers.{name}")),
                    "not a valid header name",
                ),
            }
        }
        let mut fields = Vec::new();
        for (name, value) in &raw.fields {
            if name.is_empty() {
                self.problem(
                    Some(value.span()),
                    &key("request.fields"),
                    "a field name is empty",
                );
            }
            fields.push((
                name.clone(),
                field_value(value.get_ref(), secret_field_name(name)),
            ));
        }
        let basic_auth = raw.basic_auth.as_ref().map(|basic| BasicAuth {
            user: field_value(&basic.get_ref().user, false),
            password: field_value(&basic.get_ref().password, true),
        });

        let reply = match &account.reply {
            None => {
                self.problem(
                    Some(account_span.clone()),
                    &key("reply"),
                    "a `request` table needs a `reply` table saying where the token is (reply.token = \"/access_token\")",
                );
                None
            }
            Some(reply) => self.reply(prefix, reply, lifetime),
        };
        let scheme = match account
            .reply
            .as_ref()
            .and_then(|reply| reply.get_ref().scheme.as_ref())
        {
            None => Some("Bearer".to_string()),
            Some(scheme) if scheme.get_ref().is_empty() => None,
            Some(scheme) => {
                if !scheme
                    .get_ref()
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                {
                    self.problem(
                        Some(scheme.span()),
                        &key("reply.scheme"),
                        "a scheme is a single word such as Bearer, or \"\" for a bare token",
                    );
                }
                Some(scheme.get_ref().clone())
            }
        };
        if self.problems.len() > before {
            return None;
        }
        Some(LoginSpec {
            request: RequestSpec {
                method,
                url: url?,
                headers,
                encoding,
                fields,
                basic_auth,
            },
            reply: reply?,
            refresh: None,
            scheme,
        })
    }

    pub(super) fn reply(
        &mut self,
        prefix: &str,
        reply: &Spanned<RawReply>,
        lifetime: Option<SignedDuration>,
    ) -> Option<ReplySpec> {
        let raw = reply.get_ref();
        let mut pointer = |value: &Spanned<String>, name: &str| -> Option<String> {
            let text = value.get_ref();
            if text.starts_with('/') {
                Some(text.clone())
            } else {
                self.problem(
                    Some(value.span()),
                    &format!("{prefix}.reply.{name}"),
                    format!("`{text}` is not a JSON pointer; write it as \"/{text}\" (RFC 6901)"),
                );
                None
            }
        };
        let token = pointer(&raw.token, "token");
        let expires_in = raw
            .expires_in
            .as_ref()
            .and_then(|value| pointer(value, "expires_in"));
        let expires_at = raw
            .expires_at
            .as_ref()
            .and_then(|value| pointer(value, "expires_at"));
        if raw.expires_in.is_none()
            && raw.expires_at.is_none()
            && !raw.jwt_exp
            && lifetime.is_none()
        {
            self.problem(
                Some(reply.span()),
                &format!("{prefix}.reply"),
                "no way to know when the token expires: set reply.expires_in, reply.expires_at, reply.jwt_exp or the account's lifetime",
            );
        }
        Some(ReplySpec {
            token: vec![token?],
            expires_in,
            expires_at,
            jwt_exp: raw.jwt_exp,
            fixed_lifetime: lifetime,
            refresh_token: None,
            check_token_type: false,
        })
    }
}

/// A generic field's value. A plain string stays plain (shown in plans) unless `secret` says the
/// place it goes carries credentials, in which case it is held as a literal secret.
fn field_value(field: &RawField, secret: bool) -> FieldValue {
    match field {
        RawField::Plain(text) if secret => FieldValue::Secret(SecretSource::Literal(
            crate::secret::Secret::new(text.clone()),
        )),
        RawField::Plain(text) => FieldValue::Plain(text.clone()),
        RawField::Secret(source) => FieldValue::Secret(source.clone()),
    }
}

/// Whether a body field's name says it carries a credential (`password`, `client_secret`,
/// `api_key`, `token` …): its literal value is then treated as a secret.
fn secret_field_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "secret",
        "password",
        "passwd",
        "token",
        "key",
        "credential",
        "pin",
    ]
    .iter()
    .any(|word| name.contains(word))
}
