//! `tokenkeeper demo`: the product working with no vendor account, the way `vault server -dev` is.
//!
//! Starts [`endpoint::TokenEndpoint`] on loopback, writes secrets and a config for every preset into
//! a new directory, then runs the daemon against it with two-minute token lifetimes so that tokens
//! visibly rotate on disk and in the log (`--once` runs a single round, as `once` does, and exits).
//! The endpoint doubles as the integration tests' token server.

pub mod endpoint;

use std::fmt::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use endpoint::{Credentials, EndpointOptions, TokenEndpoint};

/// Token lifetime the demo endpoint grants: short enough to watch rotation, long enough for
/// Papaya's minute-precision `valid_until`.
pub const DEMO_LIFETIME: std::time::Duration = std::time::Duration::from_secs(120);

use crate::Error;
use crate::config::{self, SecretCheck};

/// Runs the demo in `dir` (a new directory under `$TMPDIR` by default). With `once`, returns after
/// the login round; otherwise the endpoint keeps serving until Ctrl-C so that `once`, `check` and
/// `token` can be tried against it.
///
/// # Errors
/// The endpoint or the directory could not be set up, or (with `once`) an account failed.
pub async fn run(dir: Option<PathBuf>, once: bool) -> Result<(), Error> {
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("tokenkeeper-demo-{:08x}", rand::random::<u32>()))
    });
    let options = EndpointOptions {
        lifetime: DEMO_LIFETIME,
        ..EndpointOptions::default()
    };
    let endpoint = TokenEndpoint::start(options).await.map_err(|error| {
        Error::Demo(format!(
            "cannot start the demo token endpoint on 127.0.0.1: {error}"
        ))
    })?;
    let config_path =
        prepare(&dir, &endpoint.base_url(), &Credentials::demo()).map_err(|error| {
            Error::Demo(format!(
                "cannot prepare the demo directory {}: {error}",
                dir.display()
            ))
        })?;
    let config = config::load(&config_path, SecretCheck::Resolve)?;
    println!(
        "tokenkeeper demo: token endpoint on {} speaking the panaya, papaya, apinizer, patchworks, onlyoffice and oauth2 logins",
        endpoint.base_url()
    );
    println!("config:  {}", config_path.display());
    if once {
        let failed = crate::commands::once(&config).await;
        print!("{}", summary(&dir));
        endpoint.shutdown().await;
        if failed > 0 {
            return Err(Error::Accounts {
                failed,
                total: config.accounts.len(),
            });
        }
        return Ok(());
    }
    println!(
        "tokens:  {0}\n\nThe daemon now keeps them fresh: tokens live {1} s and are renewed at about 75 %.\nWatch them rotate:  watch -n1 ls -l --time-style=+%T {0}\nIn another terminal: tokenkeeper check --config {2}\nCtrl-C stops the demo.\n",
        dir.join("tokens").display(),
        DEMO_LIFETIME.as_secs(),
        config_path.display()
    );
    let result = crate::daemon::run_with_signals(&config_path).await;
    print!("{}", summary(&dir));
    endpoint.shutdown().await;
    result
}

/// Creates `dir` with `secrets/` and `tokens/`, writes one secret file per credential (mode 0600)
/// and a config for every preset pointing at `base_url`. Returns the config's path.
///
/// # Errors
/// Any file system error; an existing `dir` is refused so nothing of the user's is overwritten.
pub fn prepare(dir: &Path, base_url: &str, credentials: &Credentials) -> std::io::Result<PathBuf> {
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(0o700);
    builder.create(dir)?;
    builder.create(dir.join("secrets"))?;
    builder.mode(0o750).create(dir.join("tokens"))?;
    let secrets = [
        ("panaya-token", &credentials.panaya_token),
        ("papaya-api-key", &credentials.papaya_api_key),
        ("papaya-client-secret", &credentials.papaya_client_secret),
        ("apinizer-password", &credentials.apinizer_client_secret),
        ("patchworks-password", &credentials.patchworks_password),
        ("onlyoffice-password", &credentials.onlyoffice_password),
        ("oauth2-client-secret", &credentials.oauth2_client_secret),
    ];
    for (name, value) in secrets {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join("secrets").join(name))?;
        std::io::Write::write_all(&mut file, format!("{value}\n").as_bytes())?;
    }
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, demo_config(dir, base_url, credentials))?;
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o600))?;
    Ok(config_path)
}

/// The demo's config: one account per preset, each writing a different output format.
pub fn demo_config(dir: &Path, base_url: &str, credentials: &Credentials) -> String {
    let secrets = dir.join("secrets");
    let tokens = dir.join("tokens");
    // A JSON string is a TOML basic string (Rust's `{:?}` is not: `\u{1}`).
    // Serializing a str cannot fail.
    let quote = |text: &str| serde_json::to_string(text).unwrap_or_default();
    let path = |path: PathBuf| quote(&path.display().to_string());
    let secret = |name: &str| format!("{{ file = {} }}", path(secrets.join(name)));
    let output = |name: &str| path(tokens.join(name));
    let state_dir = path(dir.join("state"));
    format!(
        r#"# Written by `tokenkeeper demo`: every preset, against the built-in endpoint at {base_url}.

[daemon]
# Short timings so that the demo shows rotation within a couple of minutes.
refresh_margin = "10s"
min_refresh_interval = "5s"
retry_cap = "30s"
# State files (the last token, for restarts) live where only the daemon reads, never beside the
# tokens that consumers read.
state_dir = {state_dir}

[accounts.panaya]
preset = "panaya"
base_url = "{base_url}"
username = {panaya_user}
token = {panaya_token}
lifetime = "2m"                  # Panaya's reply carries no expiry; the real one lasts 1h
[[accounts.panaya.outputs]]
path = {panaya_out}

[accounts.papaya]
preset = "papaya"
base_url = "{base_url}"
api_key = {papaya_key}
client_secret = {papaya_secret}
token_name = "tokenkeeper-demo"
[[accounts.papaya.outputs]]
path = {papaya_out}
format = "json"

[accounts.apinizer]
preset = "apinizer"
base_url = "{base_url}"
client_id = {apinizer_user}
client_secret = {apinizer_password}
[[accounts.apinizer.outputs]]
path = {apinizer_out}
format = "header"

[accounts.patchworks]
preset = "patchworks"
base_url = "{base_url}"
email = {patchworks_email}
password = {patchworks_password}
[[accounts.patchworks.outputs]]
path = {patchworks_out}
format = "env"

[accounts.onlyoffice]
preset = "onlyoffice"
base_url = "{base_url}"
username = {onlyoffice_user}
password = {onlyoffice_password}
[[accounts.onlyoffice.outputs]]
path = {onlyoffice_out}
format = "header"

[accounts.oauth2]
preset = "oauth2"
token_url = "{base_url}/oauth2/token"
client_id = {oauth2_id}
client_secret = {oauth2_secret}
scope = "demo:read"
[[accounts.oauth2.outputs]]
path = {oauth2_out}
[[accounts.oauth2.outputs]]
path = {oauth2_json}
format = "json"
mode = "0640"
"#,
        panaya_user = quote(&credentials.panaya_username),
        panaya_token = secret("panaya-token"),
        panaya_out = output("panaya.token"),
        papaya_key = secret("papaya-api-key"),
        papaya_secret = secret("papaya-client-secret"),
        papaya_out = output("papaya.json"),
        apinizer_user = quote(&credentials.apinizer_client_id),
        apinizer_password = secret("apinizer-password"),
        apinizer_out = output("apinizer.header"),
        patchworks_email = quote(&credentials.patchworks_email),
        patchworks_password = secret("patchworks-password"),
        patchworks_out = output("patchworks.env"),
        onlyoffice_user = quote(&credentials.onlyoffice_username),
        onlyoffice_password = secret("onlyoffice-password"),
        onlyoffice_out = output("onlyoffice.header"),
        oauth2_id = quote(&credentials.oauth2_client_id),
        oauth2_secret = secret("oauth2-client-secret"),
        oauth2_out = output("oauth2.token"),
        oauth2_json = output("oauth2.json"),
    )
}

/// Lists the token files with their modes and sizes, and how to look at them; never their
/// contents.
fn summary(dir: &Path) -> String {
    let tokens = dir.join("tokens");
    let mut text = format!("tokens:  {}\n", tokens.display());
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&tokens)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    for path in &entries {
        if let Ok(metadata) = std::fs::metadata(path) {
            let _ = writeln!(
                text,
                "  {:04o}  {:>5} bytes  {}",
                metadata.permissions().mode() & 0o7777,
                metadata.len(),
                path.file_name()
                    .map(|name| name.to_string_lossy())
                    .unwrap_or_default()
            );
        }
    }
    let _ = writeln!(
        text,
        "look:    cat {}\n         curl -H @{} <your API>",
        tokens.join("oauth2.json").display(),
        tokens.join("apinizer.header").display()
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo directory may be anywhere (`--dir`, `$TMPDIR`): quotes, backslashes, control
    /// and combining characters in its path still make a valid config that names it exactly.
    #[test]
    fn the_demo_config_is_valid_wherever_the_directory_is() {
        let dir = PathBuf::from("/tmp/odd \"dir\" \\ \u{1} e\u{301}/demo");
        let text = demo_config(&dir, "http://127.0.0.1:9", &Credentials::demo());
        let config = crate::config::parse(
            &text,
            Path::new("demo.toml"),
            crate::config::SecretCheck::Skip,
            false,
        )
        .unwrap_or_else(|error| panic!("{error}\n{text}"));
        assert_eq!(config.daemon.state_dir, dir.join("state"));
        assert!(
            config
                .accounts
                .values()
                .flat_map(|account| &account.outputs)
                .all(|output| output.path.starts_with(dir.join("tokens")))
        );
    }
}
