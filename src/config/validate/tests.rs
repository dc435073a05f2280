//! Tests of validation rules that span the config: generic literals held as secrets, timing
//! bands too wide to keep, unquoted secrets never repeated, the status settings and hooks.

use crate::config::{SecretCheck, parse};
use std::path::Path;

#[test]
fn generic_literals_in_credential_places_are_secrets() {
    let text = r#"
[accounts.g]
lifetime = "1h"
[accounts.g.request]
url = "https://api.example/login"
headers = { X-Api-Key = "hdr-canary-1234", Accept = "application/json" }
fields = { user = "ops", password = "pw-canary-5678", client_secret = "cs-canary", grant_type = "password" }
basic_auth = { user = "ops", password = "basic-canary-9999" }
[accounts.g.reply]
token = "/token"
[[accounts.g.outputs]]
path = "/run/tk/g"
"#;
    let config = parse(text, Path::new("t.toml"), SecretCheck::Skip, true).unwrap();
    let login = &config.accounts["g"].login;
    let shown = format!("{login:?}")
        + &login
            .request
            .fields
            .iter()
            .map(|(_, value)| value.describe())
            .collect::<String>();
    for canary in [
        "hdr-canary-1234",
        "pw-canary-5678",
        "cs-canary",
        "basic-canary-9999",
    ] {
        assert!(!shown.contains(canary), "{canary} is shown");
    }
    assert!(
        shown.contains("\"ops\"") && shown.contains("\"password\""),
        "{shown}"
    );
    // The config is readable by others: every literal secret is warned about.
    assert!(config.warnings.len() >= 4, "{:?}", config.warnings);
}

#[test]
fn a_band_too_wide_to_keep_is_warned_about() {
    let text = |jitter: f64| {
        format!(
            "[daemon]\nrefresh_at = 0.95\nrefresh_jitter = {jitter}\n[accounts.a]\npreset = \"apinizer\"\nbase_url = \"https://api.example\"\nclient_id = \"ops\"\nclient_secret = {{ env = \"S\" }}\n[[accounts.a.outputs]]\npath = \"/run/tk/a\"\n"
        )
    };
    let warned = |jitter| {
        parse(&text(jitter), Path::new("t.toml"), SecretCheck::Skip, false)
            .unwrap()
            .warnings
            .iter()
            .any(|warning| warning.contains("daemon.refresh_jitter"))
    };
    assert!(warned(0.5));
    assert!(!warned(0.2));
}

/// A secret written without quotes is a number (or a boolean) to TOML; the error refusing it
/// must not repeat it, wherever a secret may stand.
#[test]
fn an_unquoted_secret_is_refused_without_being_repeated() {
    let generic = |request: &str| {
        format!(
            "[accounts.g]\nlifetime = \"1h\"\n[accounts.g.request]\nurl = \"https://api.example/login\"\n{request}\n[accounts.g.reply]\ntoken = \"/token\"\n[[accounts.g.outputs]]\npath = \"/run/tk/g\"\n"
        )
    };
    let preset = |line: &str| {
        format!(
            "[accounts.a]\npreset = \"apinizer\"\nbase_url = \"https://api.example\"\nclient_id = \"ops\"\n{line}\n[[accounts.a.outputs]]\npath = \"/run/tk/a\"\n"
        )
    };
    let cases = [
        (preset("client_secret = 98765432"), "98765432"),
        (preset("client_secret = -98765432"), "98765432"),
        (preset("client_secret = 9876.5432"), "9876"),
        (preset("client_secret = { value = 13371337 }"), "13371337"),
        (preset("client_secret = { file = 13371337 }"), "13371337"),
        (generic("fields = { pin = 4242424 }"), "4242424"),
        (generic("headers = { X-Pin = 4242424 }"), "4242424"),
        (
            generic("basic_auth = { user = \"ops\", password = 4242424 }"),
            "4242424",
        ),
    ];
    for (text, canary) in cases {
        let error = parse(&text, Path::new("t.toml"), SecretCheck::Skip, false)
            .err()
            .unwrap_or_else(|| panic!("accepted: {text}"));
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(canary), "{canary} is shown: {shown}");
        assert!(shown.contains("a number"), "{shown}");
    }
}

fn with(daemon: &str, hook: &str) -> String {
    format!(
        "[daemon]\n{daemon}\n[accounts.a]\npreset = \"apinizer\"\nbase_url = \"https://api.example\"\nclient_id = \"ops\"\nclient_secret = {{ env = \"S\" }}\n[[accounts.a.outputs]]\npath = \"/run/tk/a\"\n{hook}"
    )
}

fn problems(text: &str) -> String {
    match parse(text, Path::new("t.toml"), SecretCheck::Skip, false) {
        Ok(_) => String::new(),
        Err(error) => error.to_string(),
    }
}

#[test]
fn status_settings_are_checked_and_named() {
    let config = parse(
        &with(
            "listen = \"127.0.0.1:9464\"\nstate_dir = \"/var/lib/tk\"",
            "",
        ),
        Path::new("t.toml"),
        SecretCheck::Skip,
        false,
    )
    .unwrap();
    assert_eq!(
        config.daemon.listen,
        Some("127.0.0.1:9464".parse().unwrap())
    );
    assert_eq!(
        config.daemon.control_socket.as_deref(),
        Some(Path::new("/var/lib/tk/control.sock"))
    );
    assert_eq!(
        config.daemon.refresh_request_interval,
        crate::config::DEFAULT_REFRESH_REQUEST_INTERVAL
    );
    let off = parse(
        &with("state_files = false", ""),
        Path::new("t.toml"),
        SecretCheck::Skip,
        false,
    )
    .unwrap();
    assert_eq!(off.daemon.control_socket, None);
    for (daemon, expected) in [
        (
            "listen = \"localhost\"",
            "line 2: daemon.listen: `localhost` is not ADDRESS:PORT",
        ),
        ("control_socket = \"run/tk.sock\"", "daemon.control_socket"),
        (
            "refresh_request_interval = \"500ms\"",
            "daemon.refresh_request_interval: must be at least 1s",
        ),
    ] {
        let found = problems(&with(daemon, ""));
        assert!(found.contains(expected), "{daemon}: {found}");
    }
    let long = format!("control_socket = \"/{}\"", "s".repeat(120));
    assert!(problems(&with(&long, "")).contains("longer than 107 bytes"));
}

#[test]
fn hooks_take_a_command_or_a_pid_file_and_say_what_is_wrong() {
    let hook = |body: &str| with("", &format!("[accounts.a.on_change]\n{body}\n"));
    let config = parse(
        &hook("command = [\"systemctl\", \"reload\", \"app\"]\ntimeout = \"5s\""),
        Path::new("t.toml"),
        SecretCheck::Skip,
        false,
    )
    .unwrap();
    let spec = config.accounts["a"].on_change.clone().unwrap();
    assert_eq!(
        spec.action,
        crate::hook::Action::Command(vec!["systemctl".into(), "reload".into(), "app".into()])
    );
    assert_eq!(spec.timeout, std::time::Duration::from_secs(5));
    assert_eq!(spec.debounce, crate::hook::DEFAULT_DEBOUNCE);
    let config = parse(
        &hook("pid_file = \"/run/app.pid\""),
        Path::new("t.toml"),
        SecretCheck::Skip,
        false,
    )
    .unwrap();
    assert_eq!(
        config.accounts["a"].on_change.as_ref().unwrap().action,
        crate::hook::Action::Signal {
            pid_file: "/run/app.pid".into(),
            signal: crate::hook::Signal::Hup
        }
    );
    for (body, expected) in [
        ("", "accounts.a.on_change: give `command"),
        (
            "command = []",
            "accounts.a.on_change.command: the command is empty",
        ),
        ("command = [\"a\"]\npid_file = \"/p\"", "not both"),
        (
            "pid_file = \"/p\"\nsignal = \"KILL\"",
            "accounts.a.on_change.signal: unknown signal `KILL`",
        ),
        (
            "pid_file = \"p.pid\"",
            "accounts.a.on_change.pid_file: `p.pid` is not absolute",
        ),
        (
            "command = [\"a\"]\nsignal = \"HUP\"",
            "`signal` goes with `pid_file`",
        ),
        (
            "command = [\"a\"]\ntimeout = \"2h\"",
            "on_change.timeout: must be more than 0s and at most 1h",
        ),
        ("command = [\"a\"]\nshell = true", "unknown field `shell`"),
    ] {
        let found = problems(&hook(body));
        assert!(found.contains(expected), "{body:?}: {found}");
    }
}
