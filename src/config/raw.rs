//! The config file's shape, exactly as written: raw structs that reject unknown keys, with spans
//! that locate the problems found after deserialization.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use crate::secret::SecretSource;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) defaults: RawDefaults,
    #[serde(default)]
    pub(super) daemon: RawDaemon,
    pub(super) fleet: Option<Spanned<RawFleet>>,
    #[serde(default)]
    pub(super) accounts: BTreeMap<String, Spanned<RawAccount>>,
}

/// The `[fleet]` table: the coordination store and this member.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    pub(super) endpoints: Option<Spanned<Vec<String>>>,
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) member: Option<Spanned<String>>,
    pub(super) key_file: Option<Spanned<String>>,
    pub(super) lease_ttl: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) client_cert: Option<Spanned<String>>,
    pub(super) client_key: Option<Spanned<String>>,
    pub(super) username: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<SecretSource>>,
    pub(super) login_alone_after_expiry: Option<bool>,
}

/// The `[daemon]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) refresh_at: Option<Spanned<f64>>,
    pub(super) refresh_jitter: Option<Spanned<f64>>,
    pub(super) refresh_margin: Option<Spanned<String>>,
    pub(super) min_refresh_interval: Option<Spanned<String>>,
    pub(super) retry_base: Option<Spanned<String>>,
    pub(super) retry_cap: Option<Spanned<String>>,
    pub(super) rejected_retry: Option<Spanned<String>>,
    pub(super) max_concurrent_logins: Option<Spanned<i64>>,
    pub(super) startup_spread: Option<Spanned<String>>,
    pub(super) on_expiry: Option<Spanned<String>>,
    pub(super) shutdown_grace: Option<Spanned<String>>,
    pub(super) log_level: Option<Spanned<String>>,
    pub(super) watch: Option<bool>,
    pub(super) state_files: Option<bool>,
    pub(super) state_dir: Option<Spanned<String>>,
    pub(super) listen: Option<Spanned<String>>,
    pub(super) control_socket: Option<Spanned<String>>,
    pub(super) refresh_request_interval: Option<Spanned<String>>,
}

/// Settings every account inherits unless it sets its own.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) max_lifetime: Option<Spanned<String>>,
    pub(super) max_reply_bytes: Option<Spanned<i64>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) proxy: Option<Spanned<String>>,
    pub(super) mode: Option<Spanned<String>>,
}

/// Declares [`RawAccount`] with its credential keys listed once: each becomes a field that takes
/// a secret value, and [`RawAccount::credentials`] lists those present, each with whether it is a
/// secret (a literal one in a readable config is warned about) or an identifier.
macro_rules! raw_account {
    (
        credentials { $($credential:ident: $secret:literal),* $(,)? }
        $($(#[$meta:meta])* $field:ident: $type:ty),* $(,)?
    ) => {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct RawAccount {
            $(pub(super) $credential: Option<Spanned<SecretSource>>,)*
            $($(#[$meta])* pub(super) $field: $type,)*
        }

        impl RawAccount {
            /// The credential keys present, in the order they are declared.
            pub(super) fn credentials(&self) -> Vec<Credential<'_>> {
                let mut present = Vec::new();
                $(
                    if let Some(value) = &self.$credential {
                        present.push(Credential {
                            name: stringify!($credential),
                            secret: $secret,
                            value,
                        });
                    }
                )*
                present
            }
        }
    };
}

/// One credential key present on an account.
pub(super) struct Credential<'a> {
    pub(super) name: &'static str,
    /// A secret (warned about when literal in a readable config), not an identifier.
    pub(super) secret: bool,
    pub(super) value: &'a Spanned<SecretSource>,
}

raw_account! {
    credentials {
        username: false,
        token: true,
        api_key: true,
        client_id: false,
        client_secret: true,
        email: false,
        password: true,
        private_key: true,
        client_assertion: true,
    }
    preset: Option<Spanned<String>>,
    base_url: Option<Spanned<String>>,
    token_url: Option<Spanned<String>>,
    token_name: Option<Spanned<String>>,
    scope: Option<Spanned<String>>,
    audience: Option<Spanned<String>>,
    auth_method: Option<Spanned<String>>,
    signing_alg: Option<Spanned<String>>,
    key_id: Option<Spanned<String>>,
    assertion_audience: Option<Spanned<String>>,
    lifetime: Option<Spanned<String>>,
    allow_http: Option<Spanned<bool>>,
    connect_timeout: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_lifetime: Option<Spanned<String>>,
    max_reply_bytes: Option<Spanned<i64>>,
    ca_file: Option<Spanned<String>>,
    proxy: Option<Spanned<String>>,
    client_cert: Option<Spanned<String>>,
    client_key: Option<Spanned<String>>,
    request: Option<Spanned<RawRequest>>,
    reply: Option<Spanned<RawReply>>,
    #[serde(default)]
    outputs: Vec<Spanned<RawOutput>>,
    on_change: Option<Spanned<RawHook>>,
    fleet: Option<Spanned<bool>>,
}

/// `[accounts.NAME.on_change]`: a command or a signal to a pid file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    pub(super) command: Option<Spanned<Vec<String>>>,
    pub(super) pid_file: Option<Spanned<String>>,
    pub(super) signal: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) debounce: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRequest {
    pub(super) url: Spanned<String>,
    pub(super) method: Option<Spanned<String>>,
    pub(super) encoding: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, Spanned<RawField>>,
    #[serde(default)]
    pub(super) fields: BTreeMap<String, Spanned<RawField>>,
    pub(super) basic_auth: Option<Spanned<RawBasicAuth>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBasicAuth {
    pub(super) user: RawField,
    pub(super) password: RawField,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReply {
    pub(super) token: Spanned<String>,
    pub(super) expires_in: Option<Spanned<String>>,
    pub(super) expires_at: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) jwt_exp: bool,
    pub(super) scheme: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutput {
    pub(super) path: Spanned<String>,
    pub(super) format: Option<Spanned<String>>,
    pub(super) mode: Option<Spanned<String>>,
    pub(super) owner: Option<Spanned<RawId>>,
    pub(super) group: Option<Spanned<RawId>>,
    pub(super) var: Option<Spanned<String>>,
    pub(super) template: Option<Spanned<String>>,
}

/// A user or group, by name or number.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawId {
    Number(u32),
    Name(String),
}

/// A generic request field: a plain string, or a secret table (`{ file = … }` and kin).
pub(super) enum RawField {
    Plain(String),
    Secret(SecretSource),
}

impl<'de> Deserialize<'de> for RawField {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> serde::de::Visitor<'de> for FieldVisitor {
            type Value = RawField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or a secret table with one of `file`, `env`, `credential` or `value`")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<RawField, E> {
                Ok(RawField::Plain(value.to_string()))
            }
            crate::secret::refuse_scalars_quietly!();
            fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<RawField, M::Error> {
                SecretSource::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawField::Secret)
            }
        }
        deserializer.deserialize_any(FieldVisitor)
    }
}
