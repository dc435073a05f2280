//! The container image under a real container runtime (podman with runc): read-only root, a
//! non-root user, every capability dropped, tokens on a tmpfs; the token appears, `probe files`
//! passes inside the container, and `podman stop` ends it by SIGTERM, not SIGKILL.
//!
//! The image is built by `packaging/build-image.sh` (`.ci/run` does, and names it in
//! `TOKENKEEPER_IMAGE`); without one the test is skipped, except under CI.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tokenkeeper::demo::endpoint::{Credentials, EndpointOptions, Route, TokenEndpoint};

use crate::support::eventually;

fn image() -> Option<String> {
    match std::env::var("TOKENKEEPER_IMAGE") {
        Ok(image) if !image.is_empty() => Some(image),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "TOKENKEEPER_IMAGE is not set; .ci/run builds the image with packaging/build-image.sh"
            );
            eprintln!("WARNING: TOKENKEEPER_IMAGE is not set: the container test is skipped");
            None
        }
    }
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("run podman")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Removes the container however the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "0", &self.0]);
    }
}

/// A directory the container's user may read (the test runs as root; the container does not).
fn readable_dir(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(path).expect("mkdir");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn readable_file(path: &Path, contents: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, contents).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_read_only_as_non_root_and_stops_on_sigterm() {
    let Some(image) = image() else {
        return;
    };
    let endpoint = TokenEndpoint::start(EndpointOptions::default())
        .await
        .expect("endpoint");
    let scratch = tempfile::tempdir().expect("tempdir");
    readable_dir(scratch.path());
    let (config_dir, secrets_dir) = (
        scratch.path().join("config"),
        scratch.path().join("secrets"),
    );
    readable_dir(&config_dir);
    readable_dir(&secrets_dir);
    let credentials = Credentials::demo();
    readable_file(
        &secrets_dir.join("client-secret"),
        &format!("{}\n", credentials.apinizer_client_secret),
    );
    readable_file(
        &config_dir.join("config.toml"),
        &format!(
            r#"
[daemon]
state_dir = "/var/lib/tokenkeeper/state"
[accounts.api]
preset = "apinizer"
base_url = "{base}"
client_id = "{id}"
client_secret = {{ file = "/etc/tokenkeeper/secrets/client-secret" }}
[[accounts.api.outputs]]
path = "/run/tokenkeeper/api.json"
format = "json"
"#,
            base = endpoint.base_url(),
            id = credentials.apinizer_client_id,
        ),
    );
    let name = format!("tokenkeeper-test-{}", std::process::id());
    let config_mount = format!("{}:/etc/tokenkeeper/config:ro", config_dir.display());
    let secrets_mount = format!("{}:/etc/tokenkeeper/secrets:ro", secrets_dir.display());
    let started = podman(&[
        "--runtime=runc",
        "run",
        "--detach",
        "--name",
        &name,
        // The host's loopback, where the test's token endpoint listens.
        "--network=host",
        "--read-only",
        "--user",
        "65532:65532",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        // This machine's default rlimits cannot be set in a container.
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
        "--tmpfs",
        "/run/tokenkeeper:rw,size=1m,mode=0700,U",
        "--tmpfs",
        "/var/lib/tokenkeeper:rw,size=1m,mode=0700,U",
        "--volume",
        &config_mount,
        "--volume",
        &secrets_mount,
        &image,
    ]);
    assert!(started.status.success(), "podman run: {}", text(&started));
    let container = Container(name);
    let logs = || text(&podman(&["logs", &container.0]));
    // The token appears: the endpoint issued it, and `probe files` inside the container (no
    // shell there: the binary is its own probe) finds it on the tmpfs, unexpired.
    assert!(
        eventually(Duration::from_secs(30), || endpoint.issued(Route::Apinizer)
            == 1)
        .await,
        "no login from the container: {}",
        logs()
    );
    let mut probed = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let probe = podman(&[
            "exec",
            &container.0,
            "/usr/bin/tokenkeeper",
            "probe",
            "files",
        ]);
        if probe.status.success() {
            probed = Some(probe);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(probed.is_some(), "probe files never passed: {}", logs());
    // The daemon runs as the non-root user given, as PID 1.
    let top = podman(&["top", &container.0, "huser", "pid"]);
    let top_text = text(&top);
    assert!(
        top_text
            .lines()
            .any(|line| line.split_whitespace().collect::<Vec<_>>() == ["65532", "1"]),
        "{top_text}"
    );
    // SIGTERM to PID 1: a clean stop well inside podman's timeout (SIGKILL would be exit 137).
    let asked = Instant::now();
    let stopped = podman(&["stop", "--time", "20", &container.0]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    let took = asked.elapsed();
    let inspect = podman(&["inspect", "--format", "{{.State.ExitCode}}", &container.0]);
    assert_eq!(
        text(&inspect).trim(),
        "0",
        "exit status after podman stop: {}",
        logs()
    );
    assert!(took < Duration::from_secs(15), "podman stop took {took:?}");
    assert!(logs().contains("stopped"), "{}", logs());
    // Nothing secret in what the container logged.
    assert!(!logs().contains(&credentials.apinizer_client_secret));
}
