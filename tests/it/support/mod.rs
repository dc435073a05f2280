//! Helpers shared by the integration tests: running the binary, writing configs, reading files.

#![allow(dead_code)]

pub mod oidc;

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Everything the run printed, for canary searches.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs the built binary with `args` and extra environment, with a clean proxy and config
/// environment, and waits for it (at most 60 s).
pub async fn tokenkeeper(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenkeeper"));
    command
        .args(args)
        .env_remove("TOKENKEEPER_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("https_proxy")
        .env_remove("http_proxy")
        .env_remove("all_proxy")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("tokenkeeper did not finish within 60 s")
        .expect("cannot run tokenkeeper");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes `text` as `config.toml` in `dir` (mode 0600) and returns its path as a string.
pub fn write_config(dir: &Path, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod config");
    path.display().to_string()
}

/// Writes a secret file (with a trailing newline, as editors do) and returns its path.
pub fn write_secret(dir: &Path, name: &str, value: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).expect("write secret");
    path
}

/// Names of the files in `dir` that look like leftover temporary files.
pub fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect()
}

/// The file's mode bits.
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

/// A one-account apinizer config against `base_url`, writing a raw file at `output`.
pub fn apinizer_config(base_url: &str, secret_file: &Path, output: &Path) -> String {
    let credentials = tokenkeeper::demo::endpoint::Credentials::demo();
    format!(
        r#"
[accounts.apinizer]
preset = "apinizer"
base_url = "{base_url}"
client_id = "{id}"
client_secret = {{ file = "{secret}" }}
[[accounts.apinizer.outputs]]
path = "{output}"
"#,
        id = credentials.apinizer_client_id,
        secret = secret_file.display(),
        output = output.display(),
    )
}
