//! Helpers shared by the integration tests: running the binary, writing configs, reading files.

pub mod etcd_cluster;
pub mod oidc;
pub mod pki;

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

/// A `tokenkeeper run` child process whose stderr goes to a file the test can read at any time.
pub struct Daemon {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `tokenkeeper run --config <config>` with a clean environment plus `env`.
    pub fn start(config: &str, log_dir: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_with_args(&["run", "--config", config], log_dir, env)
    }

    /// Starts the binary with `args` (which should include `run`).
    pub fn start_with_args(args: &[&str], log_dir: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn_logged(Daemon::command(args, log_dir, env), log_dir)
    }

    /// Like [`Daemon::start_with_args`], in the working directory `cwd`.
    pub fn start_in(cwd: &Path, args: &[&str], log_dir: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut command = Daemon::command(args, log_dir, env);
        command.current_dir(cwd);
        Daemon::spawn_logged(command, log_dir)
    }

    /// Spawns `command` with its stderr in a new log file in `log_dir`.
    fn spawn_logged(mut command: std::process::Command, log_dir: &Path) -> Daemon {
        let log = log_dir.join(format!("daemon-{}.log", rand_suffix()));
        let stderr = std::fs::File::create(&log).expect("create log");
        command.stderr(Stdio::from(stderr));
        Daemon {
            child: command.spawn().expect("start tokenkeeper run"),
            log,
        }
    }

    /// The command the starters run (clean proxy and config environment, `RUST_LOG=info`, state
    /// beside the log), for tests that change it further; stderr is left to the caller.
    pub fn command(args: &[&str], log_dir: &Path, env: &[(&str, &str)]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tokenkeeper"));
        command
            .args(args)
            .env_remove("TOKENKEEPER_CONFIG")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .env_remove("ALL_PROXY")
            .env("RUST_LOG", "info")
            // Configs that name no state_dir keep their state beside the log, as systemd's
            // StateDirectory= would, never in the machine's /var/lib/tokenkeeper.
            .env("STATE_DIRECTORY", log_dir.join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (name, value) in env {
            // An empty value removes the variable (RUST_LOG is set by default above).
            if value.is_empty() {
                command.env_remove(name);
            } else {
                command.env(name, value);
            }
        }
        command
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("send signal");
    }

    /// Waits for the process to exit, at most `limit`; its exit code, or None if it is still
    /// running (then it is killed).
    pub async fn wait(&mut self, limit: std::time::Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status.code().unwrap_or(-1));
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    hasher.finish()
}

/// Polls `condition` every 20 ms until it holds or `limit` passes; whether it held.
pub async fn eventually(limit: std::time::Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Writes a file atomically (temp + rename), as editors and config management do.
pub fn replace_file(path: &Path, contents: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, contents).expect("write temp");
    std::fs::rename(&temp, path).expect("rename");
}

/// A server that must never be reached: counts connections and bytes.
pub async fn trap() -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bytes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (connections_seen, bytes_seen) = (
        std::sync::Arc::clone(&connections),
        std::sync::Arc::clone(&bytes),
    );
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            connections_seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let bytes_seen = std::sync::Arc::clone(&bytes_seen);
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buffer = [0u8; 4096];
                while let Ok(read) = stream.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                    bytes_seen.fetch_add(read, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    (format!("http://{address}"), connections, bytes)
}

/// A one-account apinizer setup against a fresh loopback endpoint: the most common test fixture.
pub struct ApinizerSetup {
    pub endpoint: tokenkeeper::demo::endpoint::TokenEndpoint,
    pub scratch: tempfile::TempDir,
    pub secret: PathBuf,
    pub output: PathBuf,
    pub config: String,
}

/// Starts an endpoint and writes a config whose single output is `output` (relative to a new
/// scratch directory), with `extra_output_keys` appended to the output table.
pub async fn apinizer_setup(output: &str, extra_output_keys: &str) -> ApinizerSetup {
    use tokenkeeper::demo::endpoint::{Credentials, EndpointOptions, TokenEndpoint};
    let endpoint = TokenEndpoint::start(EndpointOptions::default())
        .await
        .expect("start the endpoint");
    let scratch = tempfile::tempdir().expect("tempdir");
    let secret = write_secret(
        scratch.path(),
        "secret",
        &Credentials::demo().apinizer_client_secret,
    );
    let output = scratch.path().join(output);
    let text = apinizer_config(&endpoint.base_url(), &secret, &output) + extra_output_keys;
    let config = write_config(scratch.path(), &text);
    ApinizerSetup {
        endpoint,
        scratch,
        secret,
        output,
        config,
    }
}
