//! The systemd unit, checked by systemd's own tools without a running systemd:
//! `systemd-analyze verify` (no warnings at all: an unknown key only warns) and
//! `systemd-analyze security --offline=true` (the exposure bound), alone and with each example
//! drop-in. (The unit under a real systemd is the packaging issue's nspawn test.)

use std::path::{Path, PathBuf};
use std::process::Command;

/// The highest exposure score the unit may have (the bound is 1.5).
const MAX_EXPOSURE: f64 = 1.1;

fn systemd_analyze() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/systemd-analyze");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "systemd-analyze is missing; .ci/run installs it (Debian package systemd)"
    );
    eprintln!("WARNING: systemd-analyze is not installed: the unit checks are skipped");
    None
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A copy of the unit in a scratch directory whose ExecStart is the built binary (verify checks
/// that it exists), with `drop_in` (a file of `systemd/`) as its only drop-in.
fn unit_copy(scratch: &Path, drop_in: Option<&str>) -> PathBuf {
    let text = std::fs::read_to_string(repo("systemd/tokenkeeper.service")).expect("unit");
    assert!(
        text.contains("ExecStart=/usr/bin/tokenkeeper run"),
        "{text}"
    );
    let unit = scratch.join("tokenkeeper.service");
    std::fs::write(
        &unit,
        text.replace("/usr/bin/tokenkeeper", env!("CARGO_BIN_EXE_tokenkeeper")),
    )
    .expect("write unit");
    if let Some(name) = drop_in {
        let dir = scratch.join("tokenkeeper.service.d");
        std::fs::create_dir_all(&dir).expect("drop-in dir");
        std::fs::copy(repo(&format!("systemd/{name}")), dir.join("example.conf")).expect("copy");
    }
    unit
}

fn exposure(analyze: &Path, unit: &Path) -> f64 {
    let output = Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = text
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in {text}"));
    // "→ Overall exposure level for tokenkeeper.service: 1.0 OK 🙂"
    line.rsplit(": ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("unreadable score in {line:?}"))
}

#[test]
fn the_unit_verifies_without_a_single_warning() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    for drop_in in [
        None,
        Some("tokenkeeper-group.conf.example"),
        Some("tokenkeeper-ipallow.conf.example"),
    ] {
        let scratch = tempfile::tempdir().expect("tempdir");
        let unit = unit_copy(scratch.path(), drop_in);
        let output = Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .expect("systemd-analyze verify");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() && said.trim().is_empty(),
            "systemd-analyze verify ({drop_in:?}): {}\n{said}",
            output.status
        );
    }
}

#[test]
fn the_units_exposure_stays_within_its_bound() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let scratch = tempfile::tempdir().expect("tempdir");
    let alone = exposure(&analyze, &unit_copy(scratch.path(), None));
    assert!(alone <= MAX_EXPOSURE, "exposure {alone} > {MAX_EXPOSURE}");
    // The IP allow list removes what it claims to.
    let scratch = tempfile::tempdir().expect("tempdir");
    let allowed = exposure(
        &analyze,
        &unit_copy(scratch.path(), Some("tokenkeeper-ipallow.conf.example")),
    );
    assert!(allowed < alone, "{allowed} is not below {alone}");
    eprintln!("exposure: {alone} alone, {allowed} with the IP allow list");
}

#[test]
fn the_unit_keeps_the_settings_the_daemon_relies_on() {
    let text = std::fs::read_to_string(repo("systemd/tokenkeeper.service")).expect("unit");
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#') && line.contains('='))
        .collect();
    for wanted in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "User=tokenkeeper",
        "RuntimeDirectory=tokenkeeper",
        "RuntimeDirectoryPreserve=yes",
        "StateDirectory=tokenkeeper",
        "UMask=0077",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "NoNewPrivileges=yes",
        "MemoryDenyWriteExecute=yes",
        "LimitCORE=0",
    ] {
        assert!(settings.contains(&wanted), "the unit lacks {wanted}");
    }
    assert!(
        settings.iter().any(|line| line.starts_with("WatchdogSec=")),
        "no watchdog"
    );
    assert!(
        settings
            .iter()
            .any(|line| line.starts_with("LoadCredential=")),
        "no credentials"
    );
    let sysusers =
        std::fs::read_to_string(repo("systemd/sysusers.d/tokenkeeper.conf")).expect("sysusers");
    assert!(
        sysusers
            .lines()
            .any(|line| line.starts_with("u tokenkeeper ")),
        "{sysusers}"
    );
}
