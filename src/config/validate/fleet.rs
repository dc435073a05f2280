//! The `[fleet]` table: etcd endpoints, the key prefix, this member's name, the fleet key, the
//! lease TTL, TLS and etcd authentication.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::raw::RawFleet;
use crate::config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FLEET_PREFIX, DEFAULT_LEASE_TTL, FleetSettings,
};
use crate::login::spec::{HttpSettings, ProxySetting};

/// The shortest lease TTL accepted (etcd itself grants at least about 1.5 election timeouts,
/// and the member uses the TTL etcd granted); a member renews its lease three times per TTL.
const MIN_LEASE_TTL: Duration = Duration::from_secs(1);
/// The longest: a dead leader is replaced after at most this long.
const MAX_LEASE_TTL: Duration = Duration::from_secs(300);

impl Validator {
    pub(super) fn fleet(&mut self, raw: &Spanned<RawFleet>) -> Option<FleetSettings> {
        let before = self.problems.len();
        let span = raw.span();
        let fleet = raw.get_ref();
        let key = |name: &str| format!("fleet.{name}");

        let mut endpoints = Vec::new();
        match &fleet.endpoints {
            None => self.problem(
                Some(span.clone()),
                "fleet.endpoints",
                "`endpoints` is required: the etcd client URLs, e.g. [\"https://etcd-1:2379\"]",
            ),
            Some(list) if list.get_ref().is_empty() => self.problem(
                Some(list.span()),
                "fleet.endpoints",
                "must name at least one etcd client URL",
            ),
            Some(list) => {
                for text in list.get_ref() {
                    match endpoint(text) {
                        Ok(url) => endpoints.push(url),
                        Err(message) => {
                            self.problem(Some(list.span()), "fleet.endpoints", message);
                        }
                    }
                }
            }
        }

        let prefix = match &fleet.prefix {
            None => DEFAULT_FLEET_PREFIX.to_string(),
            Some(value) => {
                let text = value.get_ref();
                if !text.starts_with('/')
                    || text.len() < 2
                    || text.ends_with('/')
                    || text.chars().any(|c| c.is_control() || c.is_whitespace())
                    || text.len() > 200
                {
                    self.problem(
                        Some(value.span()),
                        &key("prefix"),
                        "must start with `/`, not end with one, and hold no spaces (e.g. \"/tokenkeeper/prod\")",
                    );
                }
                text.clone()
            }
        };

        let member = match &fleet.member {
            Some(value) => {
                if !valid_member(value.get_ref()) {
                    self.problem(
                        Some(value.span()),
                        &key("member"),
                        "member names use letters, digits, `.`, `_` and `-`, at most 253 characters",
                    );
                }
                value.get_ref().clone()
            }
            None => match hostname() {
                Some(name) if valid_member(&name) => name,
                _ => {
                    self.problem(
                        Some(span.clone()),
                        &key("member"),
                        "the host name cannot serve as the member name: set `member`",
                    );
                    String::new()
                }
            },
        };

        let loaded_key = match &fleet.key_file {
            None => {
                self.problem(
                    Some(span.clone()),
                    &key("key_file"),
                    "`key_file` is required: the key every member shares (`tokenkeeper fleet-key` makes one)",
                );
                None
            }
            Some(value) => {
                let path = PathBuf::from(value.get_ref());
                if !path.is_absolute() {
                    self.problem(
                        Some(value.span()),
                        &key("key_file"),
                        "must be an absolute path",
                    );
                    None
                } else {
                    match crate::input::may_block(|| crate::fleet::seal::FleetKey::load(&path)) {
                        Ok(loaded) => Some((path, Arc::new(loaded))),
                        Err(error) => {
                            self.problem(Some(value.span()), &key("key_file"), error.to_string());
                            None
                        }
                    }
                }
            }
        };

        let lease_ttl = match &fleet.lease_ttl {
            None => DEFAULT_LEASE_TTL,
            Some(value) => match self.duration(value, &key("lease_ttl")) {
                Some(ttl)
                    if (MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&ttl)
                        && ttl.subsec_nanos() == 0 =>
                {
                    ttl
                }
                Some(_) => {
                    self.problem(
                        Some(value.span()),
                        &key("lease_ttl"),
                        "must be whole seconds, from 1s to 5m",
                    );
                    DEFAULT_LEASE_TTL
                }
                None => DEFAULT_LEASE_TTL,
            },
        };

        let ca_file = fleet
            .ca_file
            .as_ref()
            .and_then(|value| self.ca_file(value, &key("ca_file")));
        let client_identity =
            self.client_identity(fleet.client_cert.as_ref(), fleet.client_key.as_ref(), &key);

        let username = fleet.username.as_ref().map(|value| {
            if value.get_ref().is_empty() || value.get_ref().chars().any(char::is_control) {
                self.problem(
                    Some(value.span()),
                    &key("username"),
                    "must be an etcd user name",
                );
            }
            value.get_ref().clone()
        });
        let password = fleet.password.as_ref().map(|value| value.get_ref().clone());
        match (&fleet.username, &fleet.password) {
            (Some(_), None) => self.problem(
                fleet.username.as_ref().map(Spanned::span),
                &key("password"),
                "`username` needs `password` (a secret source, e.g. { file = \"…\" })",
            ),
            (None, Some(value)) => self.problem(
                Some(value.span()),
                &key("username"),
                "`password` needs `username`",
            ),
            (Some(_), Some(value)) => {
                if let Some(plain) = endpoints.iter().find(|url| {
                    url.scheme() == "http"
                        && !url
                            .host_str()
                            .is_some_and(crate::config::values::is_loopback_host)
                }) {
                    self.problem(
                        Some(value.span()),
                        &key("password"),
                        format!(
                            "the etcd password would travel unencrypted to {plain}: use https:// endpoints"
                        ),
                    );
                }
                self.check_source(
                    "fleet",
                    "password",
                    value.get_ref(),
                    Some(value.span()),
                    true,
                );
            }
            (None, None) => {}
        }

        if self.problems.len() > before {
            return None;
        }
        let (key_file, key) = loaded_key?;
        Some(FleetSettings {
            endpoints,
            prefix,
            member,
            key_file,
            key,
            lease_ttl,
            http: HttpSettings {
                connect_timeout: DEFAULT_CONNECT_TIMEOUT.min(Duration::from_secs(2)),
                timeout: Duration::from_secs(30),
                max_reply_bytes: 1024 * 1024,
                ca_file,
                proxy: ProxySetting::None,
                client_identity,
            },
            username,
            password,
            login_alone_after_expiry: fleet.login_alone_after_expiry.unwrap_or(false),
        })
    }
}

/// An etcd client URL: http or https, a host, no credentials, no path, query or fragment.
fn endpoint(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|error| format!("`{text}` is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{text}`: expected an http:// or https:// etcd client URL"
        ));
    }
    if url.host_str().is_none() {
        return Err(format!("`{text}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{}`: credentials in the URL are refused: use `username` and `password`",
            url.host_str().unwrap_or("?")
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`{text}`: an etcd client URL has no path, query or fragment"
        ));
    }
    Ok(url)
}

/// Whether `name` can be a member's name (host-like: letters, digits, `.`, `_`, `-`).
pub(crate) fn valid_member(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The host name (`uname -n`).
fn hostname() -> Option<String> {
    let uname = rustix::system::uname();
    uname.nodename().to_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_bare_client_urls() {
        assert!(endpoint("http://127.0.0.1:2379").is_ok());
        assert!(endpoint("https://etcd-1.internal:2379/").is_ok());
        assert!(endpoint("etcd-1:2379").is_err());
        assert!(endpoint("https://etcd-1:2379/v3").is_err());
        let refused = endpoint("https://root:canary-pw@etcd-1:2379").unwrap_err();
        assert!(!refused.contains("canary"), "{refused}");
        assert!(endpoint("unix:///run/etcd.sock").is_err());
    }

    #[test]
    fn member_names_are_host_like() {
        assert!(valid_member("node-a.example_1"));
        assert!(!valid_member(""));
        assert!(!valid_member("node a"));
        assert!(!valid_member(&"x".repeat(254)));
    }
}

#[cfg(test)]
mod config_tests {
    use std::path::Path;

    use crate::config::{SecretCheck, parse};

    const ACCOUNT: &str = "[accounts.a]\npreset = \"apinizer\"\nbase_url = \"https://api.example\"\nclient_id = \"ops\"\nclient_secret = { env = \"S\" }\nfleet = true\n[[accounts.a.outputs]]\npath = \"/run/tk/a\"\n";

    fn key_file(dir: &Path) -> String {
        let path = dir.join("fleet.key");
        std::fs::write(&path, "11".repeat(32)).unwrap();
        path.display().to_string()
    }

    fn problems(text: &str) -> Vec<(String, String)> {
        match parse(text, Path::new("t.toml"), SecretCheck::Skip, false) {
            Ok(_) => Vec::new(),
            Err(error) => error
                .problems
                .into_iter()
                .map(|problem| (problem.key, problem.message))
                .collect(),
        }
    }

    #[test]
    fn a_fleet_table_takes_its_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[fleet]\nendpoints = [\"http://127.0.0.1:2379\", \"https://etcd-2:2379\"]\nkey_file = \"{}\"\n{ACCOUNT}",
            key_file(dir.path())
        );
        let config = parse(&text, Path::new("t.toml"), SecretCheck::Skip, false).unwrap();
        let fleet = config.fleet.as_ref().unwrap();
        assert_eq!(fleet.prefix, "/tokenkeeper");
        assert_eq!(fleet.lease_ttl, std::time::Duration::from_secs(10));
        assert!(!fleet.member.is_empty());
        assert!(!fleet.login_alone_after_expiry);
        assert_eq!(fleet.endpoints.len(), 2);
        assert!(config.accounts["a"].fleet);
        // The key's Debug shows its fingerprint only.
        let shown = format!("{fleet:?}");
        assert!(shown.contains(fleet.key.fingerprint()), "{shown}");
        assert!(!shown.contains(&"11".repeat(8)), "{shown}");
    }

    #[test]
    fn fleet_problems_name_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let key = key_file(dir.path());
        assert!(
            problems(ACCOUNT)
                .iter()
                .any(|(at, message)| at == "accounts.a.fleet" && message.contains("[fleet]")),
            "{:?}",
            problems(ACCOUNT)
        );
        let cases = [
            ("endpoints = []\n", "fleet.endpoints"),
            ("endpoints = [\"etcd:2379\"]\n", "fleet.endpoints"),
            ("endpoints = [\"http://e:2379/v3\"]\n", "fleet.endpoints"),
            ("lease_ttl = \"0s\"\n", "fleet.lease_ttl"),
            ("lease_ttl = \"2500ms\"\n", "fleet.lease_ttl"),
            ("prefix = \"tokenkeeper\"\n", "fleet.prefix"),
            ("prefix = \"/tk/\"\n", "fleet.prefix"),
            ("member = \"node a\"\n", "fleet.member"),
            ("username = \"tk\"\n", "fleet.password"),
            ("password = { env = \"P\" }\n", "fleet.username"),
            (
                "endpoints = [\"http://etcd.internal:2379\"]\nusername = \"tk\"\npassword = { env = \"P\" }\n",
                "fleet.password",
            ),
        ];
        for (extra, wanted) in cases {
            let endpoints = if extra.starts_with("endpoints") {
                ""
            } else {
                "endpoints = [\"http://127.0.0.1:2379\"]\n"
            };
            let text = format!("[fleet]\n{endpoints}{extra}key_file = \"{key}\"\n{ACCOUNT}");
            let found = problems(&text);
            assert!(
                found.iter().any(|(at, _)| at == wanted),
                "{extra:?}: wanted a problem at {wanted}, got {found:?}"
            );
        }
        let missing_key = format!("[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\n{ACCOUNT}");
        assert!(
            problems(&missing_key)
                .iter()
                .any(|(at, _)| at == "fleet.key_file")
        );
        let bad_key = dir.path().join("bad.key");
        std::fs::write(&bad_key, "not a key").unwrap();
        let text = format!(
            "[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\nkey_file = \"{}\"\n{ACCOUNT}",
            bad_key.display()
        );
        let found = problems(&text);
        assert!(
            found
                .iter()
                .any(|(at, message)| at == "fleet.key_file" && message.contains("bad.key")),
            "{found:?}"
        );
    }
}
