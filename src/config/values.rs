//! Pure checks of single config values: durations, modes, URLs, paths, names.
//!
//! Invariant: no I/O; every error message quotes the value and says what would be accepted.

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use url::Url;

/// The longest duration any setting accepts.
const MAX_SETTING_DURATION: Duration = Duration::from_secs(366 * 86_400);

pub(super) fn valid_account_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 64
        && bytes
            .next()
            .is_some_and(|first| first.is_ascii_alphanumeric())
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

pub(super) fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

/// `panaya-prod` → `PANAYA_PROD_TOKEN`.
pub fn default_env_name(account: &str) -> String {
    let mut name: String = account
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() {
                character.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|character: char| character.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name.push_str("_TOKEN");
    name
}

/// A duration such as `90s`, `15m`, `1h30m`, `24h`, `7d`, `1d12h`, `1w` or `500ms` (jiff's
/// friendly format, and ISO 8601 `PT1M30S`). Days and weeks are 24 hours and 7 days; months and
/// years are refused, since their length depends on the date.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "`{text}` is not a duration; write e.g. \"90s\", \"15m\", \"1h30m\", \"7d\" or \"1d12h\""
        )
    };
    let span: jiff::Span = text.trim().parse().map_err(|_| bad())?;
    let parsed = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|_| bad())?;
    if parsed.is_negative() || parsed.is_zero() {
        return Err(format!("`{text}` must be longer than zero"));
    }
    let duration = Duration::try_from(parsed).map_err(|_| bad())?;
    check_duration_limit(text, duration)
}

/// No setting needs more than a year, and bounding them keeps every later sum far from overflow.
fn check_duration_limit(text: &str, duration: Duration) -> Result<Duration, String> {
    if duration > MAX_SETTING_DURATION {
        return Err(format!(
            "`{text}` is longer than the 366d any setting allows"
        ));
    }
    Ok(duration)
}

/// An octal mode string: `"0640"`, `"640"` or `"0o640"`. Special bits and world-writable modes
/// are refused: a token file is a credential.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty()
        || digits.len() > 4
        || !digits.bytes().all(|byte| (b'0'..=b'7').contains(&byte))
    {
        return Err(format!(
            "`{text}` is not an octal mode such as \"0600\" or \"0640\""
        ));
    }
    let mode =
        u32::from_str_radix(digits, 8).map_err(|_| format!("`{text}` is not an octal mode"))?;
    if mode > 0o777 {
        return Err(format!("`{text}` sets setuid, setgid or sticky bits"));
    }
    if mode & 0o002 != 0 {
        return Err(format!("`{text}` lets anyone overwrite the token file"));
    }
    if mode & 0o600 != 0o600 {
        return Err(format!(
            "`{text}` must let the owner read and write (0600 at least)"
        ));
    }
    Ok(mode)
}

/// A token endpoint URL: https, or http to a loopback host, or http anywhere with `allow_http`.
/// Base URLs may not carry a query or fragment (a path is appended to them).
pub fn check_url(text: &str, allow_http: bool, base: bool) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| format!("`{text}` is not a URL: {error}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials in the URL are refused: they would show in logs; use the credential keys"
                .to_string(),
        );
    }
    let Some(host) = url.host_str() else {
        return Err(format!("`{text}` has no host"));
    };
    match url.scheme() {
        "https" => {}
        "http" if allow_http || is_loopback_host(host) => {}
        "http" => {
            return Err(format!(
                "plain http:// to `{host}` would send credentials unencrypted; use https://, or set allow_http = true on the account if the network is trusted"
            ));
        }
        other => return Err(format!("unsupported scheme `{other}`, expected https")),
    }
    if base && (url.query().is_some() || url.fragment().is_some()) {
        return Err("a base_url cannot have a query or fragment".to_string());
    }
    Ok(url)
}

/// Loopback IP literals and `localhost` itself; `localhost.example.com` is not loopback.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// A state directory: absolute and normalised, without `..`, not the root.
pub(super) fn check_state_dir(text: &str) -> Result<PathBuf, String> {
    let clean = normalise_absolute(text)?;
    if clean == Path::new("/") {
        return Err("the state directory cannot be the root directory".to_string());
    }
    Ok(clean)
}

/// The control socket's path: absolute, and short enough for a Unix socket address (107 bytes).
pub(super) fn check_control_socket(text: &str) -> Result<PathBuf, String> {
    let clean = normalise_absolute(text)?;
    if clean.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(format!(
            "`{text}` is longer than {MAX_SOCKET_PATH} bytes, the most a Unix socket path may have"
        ));
    }
    if clean.file_name().is_none() {
        return Err(format!("`{text}` has no file name"));
    }
    Ok(clean)
}

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// An absolute path with `.` and repeated slashes removed; `..` is refused rather than resolved,
/// since resolving it lexically can name another place than the kernel would through a symlink.
fn normalise_absolute(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(format!("`{text}` is not absolute"));
    }
    let mut clean = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => clean.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("`{text}` contains `..`"));
            }
        }
    }
    Ok(clean)
}

/// An output path: absolute, normalised, no `..`, a real file name, within PATH_MAX.
pub fn check_output_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("the path is empty".to_string());
    }
    if text.len() > 4096 {
        return Err("the path is longer than 4096 bytes".to_string());
    }
    if text.ends_with('/') {
        return Err(format!("`{text}` names a directory; give a file path"));
    }
    let clean = normalise_absolute(text)?;
    let Some(name) = clean.file_name().and_then(|name| name.to_str()) else {
        return Err(format!("`{text}` has no file name"));
    };
    if name.len() > 255 {
        return Err("the file name is longer than 255 bytes".to_string());
    }
    if name.starts_with("..") {
        return Err(format!("`{name}`: names starting with `..` are reserved"));
    }
    if name.starts_with('.') && name.ends_with(".tmp") {
        return Err(format!(
            "`{name}` looks like tokenkeeper's own temporary files"
        ));
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("90s", Some(90)),
            ("15m", Some(900)),
            ("1h30m", Some(5400)),
            ("1h 30m", Some(5400)),
            ("24h", Some(86_400)),
            ("7d", Some(604_800)),
            ("366d", Some(366 * 86_400)),
            ("367d", None),
            ("200000000000000d", None),
            ("100000h", None),
            ("PT1M", Some(60)),
            ("1d12h", Some(129_600)),
            ("1d 12h", Some(129_600)),
            ("2d3h4m5s", Some(2 * 86_400 + 3 * 3600 + 4 * 60 + 5)),
            ("1w", Some(604_800)),
            ("1w2d", Some(9 * 86_400)),
            ("90 minutes", Some(5400)),
            ("P1DT12H", Some(129_600)),
            ("1mo", None),
            ("1y", None),
            ("0s", None),
            ("-5s", None),
            ("soon", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_duration(text).ok().map(|d| d.as_secs()),
                *expected,
                "{text}"
            );
        }
    }

    #[test]
    fn modes() {
        let cases: &[(&str, Option<u32>)] = &[
            ("0600", Some(0o600)),
            ("600", Some(0o600)),
            ("0o640", Some(0o640)),
            ("0644", Some(0o644)),
            ("0666", None),
            ("4600", None),
            ("0400", None),
            ("0680", None),
            ("rw-------", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_mode(text).ok(), *expected, "{text}");
        }
    }

    #[test]
    fn urls() {
        let cases: &[(&str, bool, bool)] = &[
            ("https://idp.example/token", false, true),
            ("http://127.0.0.1:8080/token", false, true),
            ("http://127.9.9.9/token", false, true),
            ("http://[::1]:80/token", false, true),
            ("http://localhost:80/token", false, true),
            ("http://localhost.evil.com/token", false, false),
            ("http://idp.example/token", false, false),
            ("http://idp.example/token", true, true),
            ("ftp://idp.example/token", true, false),
            ("https://user:pw@idp.example/token", false, false),
            ("not a url", false, false),
        ];
        for (text, allow_http, ok) in cases {
            assert_eq!(check_url(text, *allow_http, false).is_ok(), *ok, "{text}");
        }
        assert!(check_url("https://host/?x=1", false, true).is_err());
    }

    #[test]
    fn output_paths() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/run/tokenkeeper/a.token", Some("/run/tokenkeeper/a.token")),
            (
                "/run//tokenkeeper/./a.token",
                Some("/run/tokenkeeper/a.token"),
            ),
            ("relative/a.token", None),
            ("/run/../etc/passwd", None),
            ("/run/tokenkeeper/", None),
            ("/", None),
            ("", None),
            ("/run/..data", None),
            ("/run/.a.0123456789abcdef.tmp", None),
        ];
        for (text, expected) in cases {
            let got = check_output_path(text).ok();
            assert_eq!(got.as_deref(), expected.map(Path::new), "{text}");
        }
        let long = format!("/run/{}", "a".repeat(256));
        assert!(check_output_path(&long).is_err());
    }

    #[test]
    fn env_names() {
        assert_eq!(default_env_name("panaya-prod"), "PANAYA_PROD_TOKEN");
        assert_eq!(default_env_name("1st"), "_1ST_TOKEN");
        assert!(valid_env_name("A_1") && !valid_env_name("1A") && !valid_env_name("A-B"));
    }
}
