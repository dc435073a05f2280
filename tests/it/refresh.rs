//! Forced refresh: SIGUSR1 and `tokenkeeper refresh [ACCOUNT]` log accounts in again, once per
//! request, never more often than `refresh_request_interval` allows.

use std::time::{Duration, Instant};

use tokenkeeper::demo::endpoint::{Credentials, EndpointOptions, Route, TokenEndpoint};

use crate::support::{Daemon, eventually, tokenkeeper, write_config, write_secret};

struct Setup {
    endpoint: TokenEndpoint,
    scratch: tempfile::TempDir,
    config: String,
}

/// Two accounts (apinizer and patchworks) with hour-long tokens, state in the scratch directory.
async fn setup(interval: &str) -> Setup {
    let endpoint = TokenEndpoint::start(EndpointOptions::default())
        .await
        .expect("endpoint");
    let scratch = tempfile::tempdir().expect("tempdir");
    let credentials = Credentials::demo();
    let apinizer = write_secret(
        scratch.path(),
        "apinizer",
        &credentials.apinizer_client_secret,
    );
    let patchworks = write_secret(
        scratch.path(),
        "patchworks",
        &credentials.patchworks_password,
    );
    let dir = scratch.path().display().to_string();
    let config = write_config(
        scratch.path(),
        &format!(
            r#"
[daemon]
state_dir = "{dir}/state"
refresh_request_interval = "{interval}"

[accounts.apinizer]
preset = "apinizer"
base_url = "{base}"
client_id = "{client_id}"
client_secret = {{ file = "{apinizer}" }}
[[accounts.apinizer.outputs]]
path = "{dir}/apinizer.token"

[accounts.patchworks]
preset = "patchworks"
base_url = "{base}"
email = "{email}"
password = {{ file = "{patchworks}" }}
[[accounts.patchworks.outputs]]
path = "{dir}/patchworks.token"
"#,
            base = endpoint.base_url(),
            client_id = credentials.apinizer_client_id,
            apinizer = apinizer.display(),
            email = credentials.patchworks_email,
            patchworks = patchworks.display(),
        ),
    );
    Setup {
        endpoint,
        scratch,
        config,
    }
}

fn logins(endpoint: &TokenEndpoint) -> (usize, usize) {
    (
        endpoint.issued(Route::Apinizer),
        endpoint.issued(Route::Patchworks),
    )
}

async fn started(setup: &Setup) -> Daemon {
    let daemon = Daemon::start(&setup.config, setup.scratch.path(), &[]);
    assert!(
        eventually(Duration::from_secs(30), || logins(&setup.endpoint)
            == (1, 1))
        .await,
        "{}",
        daemon.log()
    );
    daemon
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_and_the_refresh_command_log_in_exactly_once_per_request() {
    let setup = setup("1s").await;
    let daemon = started(&setup).await;
    // Past the minimum interval since the first logins.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    daemon.signal(rustix::process::Signal::USR1);
    assert!(
        eventually(Duration::from_secs(20), || logins(&setup.endpoint)
            == (2, 2))
        .await,
        "SIGUSR1 did not log every account in again: {:?}\n{}",
        logins(&setup.endpoint),
        daemon.log()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        logins(&setup.endpoint),
        (2, 2),
        "more than one login per request"
    );

    // One account by name: only that one logs in.
    let run = tokenkeeper(&["refresh", "patchworks", "--config", &setup.config], &[]).await;
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert!(run.stdout.contains("patchworks"), "{}", run.stdout);
    assert!(
        eventually(Duration::from_secs(20), || logins(&setup.endpoint)
            == (2, 3))
        .await,
        "{:?}\n{}",
        logins(&setup.endpoint),
        daemon.log()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(logins(&setup.endpoint), (2, 3));

    // An account the config does not have is refused before the daemon is asked.
    let run = tokenkeeper(&["refresh", "nobody", "--config", &setup.config], &[]).await;
    assert_eq!(run.code, 3, "{}", run.all_output());
    assert!(run.stderr.contains("nobody"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_logs_in_no_more_often_than_the_minimum_interval() {
    let setup = setup("4s").await;
    let daemon = started(&setup).await;
    let burst_started = Instant::now();
    for round in 0..100 {
        if round % 2 == 0 {
            daemon.signal(rustix::process::Signal::USR1);
        } else {
            let run = tokenkeeper(&["refresh", "--config", &setup.config], &[]).await;
            assert_eq!(run.code, 0, "{}", run.all_output());
        }
    }
    let burst = burst_started.elapsed();
    // Every request came within `burst`; the minimum interval allows one login per account
    // per 4 s after the first, so: at most 1 + burst/4 s + 1 (the deferred one) more each.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let allowed = 2 + (burst.as_secs() / 4) as usize;
    let (apinizer, patchworks) = logins(&setup.endpoint);
    assert!(
        apinizer >= 2 && patchworks >= 2,
        "the burst caused no login at all: {apinizer}, {patchworks}"
    );
    assert!(
        apinizer - 1 <= allowed && patchworks - 1 <= allowed,
        "a burst of 100 requests over {burst:?} caused {} and {} logins, more than {allowed}",
        apinizer - 1,
        patchworks - 1
    );
}
