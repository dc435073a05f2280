//! The named presets: each seed system's login (and OAuth2 client credentials) as a prefilled
//! [`LoginSpec`].
//!
//! Invariant: the shapes here are exactly those of the vendors' documentation in `shared/seeds/`
//! and RFC 6749; `tests/` replays them against a server that checks every field.

use jiff::SignedDuration;
use reqwest::Method;
use url::Url;

use super::assertion::{Assertion, JWT_BEARER, SigningAlg};
use super::request::accept_json;
use super::spec::{
    BasicAuth, Encoding, FieldValue, LoginSpec, RefreshSpec, ReplySpec, RequestSpec,
};

/// A named, prefilled login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    Panaya,
    Papaya,
    Apinizer,
    Patchworks,
    OnlyOffice,
    OAuth2,
}

/// Whether a preset needs a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Required,
    Optional,
}

/// Patchworks has a single production login endpoint, so its `base_url` may be left out.
pub const PATCHWORKS_DEFAULT_BASE_URL: &str = "https://svc-fabric.pwks.co";

impl Preset {
    pub const ALL: [Preset; 6] = [
        Preset::Panaya,
        Preset::Papaya,
        Preset::Apinizer,
        Preset::Patchworks,
        Preset::OnlyOffice,
        Preset::OAuth2,
    ];

    /// The name used in the config's `preset` key.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Panaya => "panaya",
            Preset::Papaya => "papaya",
            Preset::Apinizer => "apinizer",
            Preset::Patchworks => "patchworks",
            Preset::OnlyOffice => "onlyoffice",
            Preset::OAuth2 => "oauth2",
        }
    }

    /// Every preset's name, for messages: `panaya, papaya, …`.
    pub fn names() -> String {
        let names: Vec<&str> = Preset::ALL.iter().map(|preset| preset.name()).collect();
        names.join(", ")
    }

    pub fn from_name(name: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|preset| preset.name() == name)
    }

    /// The account keys this preset reads, beyond the ones every account has. Any other login key
    /// on an account with this preset is an error, so a typo or a copy-paste leftover is caught.
    pub fn keys(self) -> &'static [(&'static str, Need)] {
        use Need::{Optional, Required};
        match self {
            Preset::Panaya => &[
                ("base_url", Required),
                ("username", Required),
                ("token", Required),
            ],
            Preset::Papaya => &[
                ("base_url", Required),
                ("api_key", Required),
                ("client_secret", Required),
                ("token_name", Optional),
            ],
            Preset::Apinizer => &[
                ("base_url", Required),
                ("client_id", Required),
                ("client_secret", Required),
            ],
            Preset::Patchworks => &[
                ("base_url", Optional),
                ("email", Required),
                ("password", Required),
            ],
            Preset::OnlyOffice => &[
                ("base_url", Required),
                ("username", Required),
                ("password", Required),
            ],
            // Which client credential is needed depends on `auth_method`: the config module
            // checks that one of them is there (and only that one).
            Preset::OAuth2 => &[
                ("token_url", Required),
                ("client_id", Required),
                ("client_secret", Optional),
                ("private_key", Optional),
                ("client_assertion", Optional),
                ("auth_method", Optional),
                ("signing_alg", Optional),
                ("key_id", Optional),
                ("assertion_audience", Optional),
                ("scope", Optional),
                ("audience", Optional),
            ],
        }
    }

    /// The lifetime assumed when the reply carries no expiry: Panaya documents one hour and sends
    /// nothing; Patchworks documents 24 hours.
    pub fn default_lifetime(self) -> Option<SignedDuration> {
        match self {
            Preset::Panaya => Some(SignedDuration::from_hours(1)),
            Preset::Patchworks => Some(SignedDuration::from_hours(24)),
            _ => None,
        }
    }

    /// Builds the login. `input` must hold every [`Need::Required`] key of [`Preset::keys`]; the
    /// config module checks that first and reports missing keys with their line.
    ///
    /// # Errors
    /// A required key missing after all, or a URL that cannot be joined.
    pub fn build(self, input: &PresetInput) -> Result<LoginSpec, String> {
        let value = |key: &str| -> Result<FieldValue, String> {
            input
                .values
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, value)| value.clone())
                .ok_or_else(|| format!("preset {} needs `{key}`", self.name()))
        };
        let lifetime = input.lifetime.or(self.default_lifetime());
        let plain = |text: &str| FieldValue::Plain(text.to_string());
        let fields = |pairs: Vec<(&str, FieldValue)>| -> Vec<(String, FieldValue)> {
            pairs
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect()
        };
        let reply = |token: &[&str]| ReplySpec {
            token: token.iter().map(|pointer| pointer.to_string()).collect(),
            expires_in: None,
            expires_at: None,
            jwt_exp: false,
            fixed_lifetime: lifetime,
            refresh_token: None,
            check_token_type: false,
        };
        let post = |url: Url, encoding: Encoding, body: Vec<(String, FieldValue)>| RequestSpec {
            method: Method::POST,
            url,
            headers: vec![accept_json()],
            encoding,
            fields: body,
            basic_auth: None,
        };
        let spec = match self {
            Preset::Panaya => LoginSpec {
                request: post(
                    self.endpoint(input, "/api/accesstoken")?,
                    Encoding::Form,
                    fields(vec![
                        ("username", value("username")?),
                        ("token", value("token")?),
                    ]),
                ),
                reply: reply(&["/token"]),
                refresh: None,
                scheme: Some("Bearer".to_string()),
            },
            Preset::Papaya => {
                let mut body = vec![
                    ("api_key", value("api_key")?),
                    ("client_secret", value("client_secret")?),
                ];
                if let Ok(name) = value("token_name") {
                    body.push(("token_name", name));
                }
                LoginSpec {
                    request: post(
                        self.endpoint(input, "/token")?,
                        Encoding::Json,
                        fields(body),
                    ),
                    reply: ReplySpec {
                        expires_at: Some("/valid_until".to_string()),
                        jwt_exp: true,
                        ..reply(&["/token"])
                    },
                    refresh: None,
                    scheme: Some("Bearer".to_string()),
                }
            }
            Preset::Apinizer => LoginSpec {
                request: post(
                    self.endpoint(input, "/apiops/auth/token")?,
                    Encoding::Form,
                    fields(vec![
                        ("grant_type", plain("client_credentials")),
                        ("client_id", value("client_id")?),
                        ("client_secret", value("client_secret")?),
                    ]),
                ),
                reply: ReplySpec {
                    expires_in: Some("/expires_in".to_string()),
                    ..reply(&["/access_token"])
                },
                refresh: None,
                scheme: Some("Bearer".to_string()),
            },
            Preset::Patchworks => LoginSpec {
                request: post(
                    self.endpoint(input, "/api/v1/login")?,
                    Encoding::Json,
                    fields(vec![
                        ("email", value("email")?),
                        ("password", value("password")?),
                    ]),
                ),
                // The documentation shows the token only in a screenshot: accept both names.
                reply: ReplySpec {
                    expires_in: Some("/expires_in".to_string()),
                    jwt_exp: true,
                    ..reply(&["/access_token", "/token"])
                },
                refresh: None,
                scheme: Some("Bearer".to_string()),
            },
            Preset::OnlyOffice => LoginSpec {
                request: post(
                    self.endpoint(input, "/api/2.0/authentication")?,
                    Encoding::Json,
                    fields(vec![
                        ("userName", value("username")?),
                        ("password", value("password")?),
                    ]),
                ),
                reply: ReplySpec {
                    expires_at: Some("/response/expires".to_string()),
                    ..reply(&["/response/token"])
                },
                refresh: None,
                // ONLYOFFICE takes `Authorization: <token>` with no scheme.
                scheme: None,
            },
            Preset::OAuth2 => self.oauth2(input, &value, lifetime)?,
        };
        Ok(spec)
    }

    fn oauth2(
        self,
        input: &PresetInput,
        value: &dyn Fn(&str) -> Result<FieldValue, String>,
        lifetime: Option<SignedDuration>,
    ) -> Result<LoginSpec, String> {
        let url = input
            .token_url
            .clone()
            .ok_or_else(|| "preset oauth2 needs `token_url`".to_string())?;
        let client_id = value("client_id")?;
        let mut body = vec![(
            "grant_type".to_string(),
            FieldValue::Plain("client_credentials".to_string()),
        )];
        for key in ["scope", "audience"] {
            if let Ok(extra) = value(key) {
                body.push((key.to_string(), extra));
            }
        }
        let assertion_fields = |assertion: Assertion| {
            vec![
                ("client_id".to_string(), client_id.clone()),
                (
                    "client_assertion_type".to_string(),
                    FieldValue::Plain(JWT_BEARER.to_string()),
                ),
                (
                    "client_assertion".to_string(),
                    FieldValue::Assertion(assertion),
                ),
            ]
        };
        let (basic_auth, client_fields) = match input.auth_method {
            ClientAuth::Basic => (
                Some(BasicAuth {
                    user: client_id.clone(),
                    password: value("client_secret")?,
                }),
                Vec::new(),
            ),
            ClientAuth::Post => (
                None,
                vec![
                    ("client_id".to_string(), client_id.clone()),
                    ("client_secret".to_string(), value("client_secret")?),
                ],
            ),
            ClientAuth::PrivateKeyJwt => {
                let key = match value("private_key")? {
                    FieldValue::Secret(source) => source,
                    _ => return Err("`private_key` must be a secret source".to_string()),
                };
                let plain = |name: &str| match value(name) {
                    Ok(FieldValue::Plain(text)) => Some(text),
                    _ => None,
                };
                let alg = match plain("signing_alg") {
                    None => None,
                    Some(name) => Some(
                        SigningAlg::from_name(&name)
                            .ok_or_else(|| format!("unknown signing_alg `{name}`"))?,
                    ),
                };
                let audience = plain("assertion_audience").unwrap_or_else(|| url.to_string());
                let assertion = Assertion::Signed {
                    key,
                    alg,
                    key_id: plain("key_id"),
                    audience,
                };
                (None, assertion_fields(assertion))
            }
            ClientAuth::TlsClientAuth | ClientAuth::SelfSignedTlsClientAuth => {
                // The certificate travels in the TLS handshake (the account's `client_cert`).
                (None, vec![("client_id".to_string(), client_id.clone())])
            }
            ClientAuth::ClientAssertion => {
                let source = match value("client_assertion")? {
                    FieldValue::Secret(source) => source,
                    _ => return Err("`client_assertion` must be a secret source".to_string()),
                };
                (None, assertion_fields(Assertion::Read(source)))
            }
        };
        body.extend(client_fields.iter().cloned());
        Ok(LoginSpec {
            request: RequestSpec {
                method: Method::POST,
                url,
                headers: vec![accept_json()],
                encoding: Encoding::Form,
                fields: body,
                basic_auth: basic_auth.clone(),
            },
            reply: ReplySpec {
                token: vec!["/access_token".to_string()],
                expires_in: Some("/expires_in".to_string()),
                expires_at: None,
                jwt_exp: true,
                fixed_lifetime: lifetime,
                refresh_token: Some("/refresh_token".to_string()),
                check_token_type: true,
            },
            refresh: Some(RefreshSpec {
                client_fields,
                basic_auth,
            }),
            scheme: Some("Bearer".to_string()),
        })
    }

    fn endpoint(self, input: &PresetInput, path: &str) -> Result<Url, String> {
        let base = match (&input.base_url, self) {
            (Some(base), _) => base.clone(),
            (None, Preset::Patchworks) => Url::parse(PATCHWORKS_DEFAULT_BASE_URL)
                .map_err(|error| format!("default base_url: {error}"))?,
            (None, _) => return Err(format!("preset {} needs `base_url`", self.name())),
        };
        join_path(&base, path)
    }
}

/// `base` with `path` appended to whatever path it already has (`https://host/prefix` +
/// `/token` = `https://host/prefix/token`).
pub fn join_path(base: &Url, path: &str) -> Result<Url, String> {
    let joined = format!("{}{}", base.as_str().trim_end_matches('/'), path);
    Url::parse(&joined).map_err(|error| format!("cannot join `{path}` to base_url: {error}"))
}

/// OAuth2 client authentication method (RFC 6749 §2.3.1, RFC 7523 §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic; what every server must support.
    #[default]
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Post,
    /// `private_key_jwt`: a JWT signed with `private_key` at each login.
    PrivateKeyJwt,
    /// A JWT read from `client_assertion` (a file another issuer renews) at each login.
    ClientAssertion,
    /// `tls_client_auth` (RFC 8705 §2.1): the client certificate of the login connection, issued
    /// by a CA the server trusts; only `client_id` in the body.
    TlsClientAuth,
    /// `self_signed_tls_client_auth` (RFC 8705 §2.2): the same with a self-signed certificate
    /// the server knows from the client's registration.
    SelfSignedTlsClientAuth,
}

impl ClientAuth {
    /// Every method, by its config name(s) (the first is the one docs use).
    pub const NAMES: [(&'static str, ClientAuth); 8] = [
        ("basic", ClientAuth::Basic),
        ("client_secret_basic", ClientAuth::Basic),
        ("post", ClientAuth::Post),
        ("client_secret_post", ClientAuth::Post),
        ("private_key_jwt", ClientAuth::PrivateKeyJwt),
        ("client_assertion", ClientAuth::ClientAssertion),
        ("tls_client_auth", ClientAuth::TlsClientAuth),
        (
            "self_signed_tls_client_auth",
            ClientAuth::SelfSignedTlsClientAuth,
        ),
    ];

    /// The key this method needs: a credential, or `client_cert` (with `client_key`).
    pub fn credential(self) -> &'static str {
        match self {
            ClientAuth::Basic | ClientAuth::Post => "client_secret",
            ClientAuth::PrivateKeyJwt => "private_key",
            ClientAuth::ClientAssertion => "client_assertion",
            ClientAuth::TlsClientAuth | ClientAuth::SelfSignedTlsClientAuth => "client_cert",
        }
    }
}

/// The validated account keys a preset is built from.
#[derive(Clone, Debug, Default)]
pub struct PresetInput {
    pub base_url: Option<Url>,
    pub token_url: Option<Url>,
    /// Credential and option keys by their config name (`username`, `client_secret`, `scope` …).
    pub values: Vec<(&'static str, FieldValue)>,
    pub auth_method: ClientAuth,
    /// Overrides the preset's assumed lifetime when the reply carries no expiry.
    pub lifetime: Option<SignedDuration>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{Secret, SecretSource};

    fn secret(value: &str) -> FieldValue {
        FieldValue::Secret(SecretSource::Literal(Secret::new(value.to_string())))
    }

    #[test]
    fn every_preset_builds_from_its_required_keys() {
        for preset in Preset::ALL {
            let mut input = PresetInput {
                base_url: Some(Url::parse("https://vendor.example/prefix/").unwrap()),
                token_url: Some(Url::parse("https://idp.example/oauth/token").unwrap()),
                ..PresetInput::default()
            };
            for (key, need) in preset.keys() {
                if *need == Need::Required && !key.ends_with("_url") {
                    input.values.push((key, secret("x")));
                }
            }
            // OAuth2's client credential is the one its auth_method uses.
            if preset == Preset::OAuth2 {
                input
                    .values
                    .push((input.auth_method.credential(), secret("x")));
            }
            let spec = preset
                .build(&input)
                .unwrap_or_else(|error| panic!("{preset:?}: {error}"));
            let url = spec.request.url.as_str();
            match preset {
                Preset::OAuth2 => assert_eq!(url, "https://idp.example/oauth/token"),
                _ => assert!(url.starts_with("https://vendor.example/prefix/"), "{url}"),
            }
            assert!(!spec.reply.token.is_empty());
            // Removing any required key must fail with a message naming it.
            for (key, need) in preset.keys() {
                if *need == Need::Required && !key.ends_with("_url") {
                    let mut partial = input.clone();
                    partial.values.retain(|(name, _)| name != key);
                    let error = preset.build(&partial).expect_err("must fail");
                    assert!(error.contains(key), "{error}");
                }
            }
        }
    }

    #[test]
    fn seed_paths_and_shapes() {
        let base = Some(Url::parse("https://host.example").unwrap());
        let build = |preset: Preset, keys: &[&'static str]| {
            let input = PresetInput {
                base_url: base.clone(),
                values: keys.iter().map(|key| (*key, secret("v"))).collect(),
                ..PresetInput::default()
            };
            preset.build(&input).unwrap()
        };
        let panaya = build(Preset::Panaya, &["username", "token"]);
        assert_eq!(panaya.request.url.path(), "/api/accesstoken");
        assert_eq!(panaya.request.encoding, Encoding::Form);
        assert_eq!(
            panaya.reply.fixed_lifetime,
            Some(SignedDuration::from_hours(1))
        );
        let papaya = build(Preset::Papaya, &["api_key", "client_secret"]);
        assert_eq!(papaya.request.url.path(), "/token");
        assert_eq!(papaya.request.encoding, Encoding::Json);
        assert_eq!(papaya.reply.expires_at.as_deref(), Some("/valid_until"));
        let onlyoffice = build(Preset::OnlyOffice, &["username", "password"]);
        assert_eq!(onlyoffice.request.fields[0].0, "userName");
        assert_eq!(onlyoffice.scheme, None);
        let patchworks = PresetInput {
            values: vec![("email", secret("e")), ("password", secret("p"))],
            ..PresetInput::default()
        };
        let patchworks = Preset::Patchworks.build(&patchworks).unwrap();
        assert_eq!(
            patchworks.request.url.as_str(),
            "https://svc-fabric.pwks.co/api/v1/login"
        );
        assert_eq!(
            patchworks.reply.fixed_lifetime,
            Some(SignedDuration::from_hours(24))
        );
    }

    #[test]
    fn oauth2_auth_methods() {
        let mut input = PresetInput {
            token_url: Some(Url::parse("https://idp.example/token").unwrap()),
            values: vec![
                ("client_id", FieldValue::Plain("id".into())),
                ("client_secret", secret("s")),
                ("scope", FieldValue::Plain("api:read".into())),
            ],
            ..PresetInput::default()
        };
        let basic = Preset::OAuth2.build(&input).unwrap();
        assert!(basic.request.basic_auth.is_some());
        let names: Vec<&str> = basic
            .request
            .fields
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["grant_type", "scope"]);
        input.auth_method = ClientAuth::Post;
        let post = Preset::OAuth2.build(&input).unwrap();
        assert!(post.request.basic_auth.is_none());
        let names: Vec<&str> = post
            .request
            .fields
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["grant_type", "scope", "client_id", "client_secret"]);
        assert_eq!(post.refresh.unwrap().client_fields.len(), 2);
    }

    #[test]
    fn oauth2_private_key_jwt_sends_a_signed_assertion_naming_the_client() {
        use base64::Engine as _;
        let rng = ring::rand::SystemRandom::new();
        let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("a key");
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der.as_ref())
        );
        let input = PresetInput {
            token_url: Some(Url::parse("https://idp.example/token").unwrap()),
            values: vec![
                ("client_id", FieldValue::Plain("id-7".into())),
                ("private_key", secret(&pem)),
                ("key_id", FieldValue::Plain("k1".into())),
            ],
            auth_method: ClientAuth::PrivateKeyJwt,
            ..PresetInput::default()
        };
        let spec = Preset::OAuth2.build(&input).unwrap();
        assert!(spec.request.basic_auth.is_none());
        let built = crate::login::request::build(&spec.request).expect("built");
        let body = String::from_utf8(built.body.to_vec()).expect("utf-8");
        let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let value = |name: &str| {
            form.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
                .unwrap_or_else(|| panic!("{name} missing in {body}"))
        };
        assert_eq!(value("grant_type"), "client_credentials");
        assert_eq!(value("client_id"), "id-7");
        assert_eq!(value("client_assertion_type"), JWT_BEARER);
        let assertion = value("client_assertion");
        let claims = assertion.split('.').nth(1).expect("a JWT");
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .expect("base64url"),
        )
        .expect("json");
        assert_eq!(claims["iss"], "id-7");
        assert_eq!(claims["aud"], "https://idp.example/token");
        assert!(
            built
                .sent_secrets
                .iter()
                .any(|sent| sent.expose() == assertion),
            "an echoed assertion would be blanked out of error excerpts"
        );
        let refresh = spec.refresh.expect("a refresh grant");
        assert!(
            refresh
                .client_fields
                .iter()
                .any(|(name, value)| name == "client_assertion"
                    && matches!(value, FieldValue::Assertion(_))),
            "the refresh grant authenticates the same way"
        );
    }
}
