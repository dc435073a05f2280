//! systemd notifications, seen on a `NOTIFY_SOCKET` the test binds: `READY=1` only after the first
//! logins, `STATUS=` lines, `RELOADING=1`/`READY=1` around a reload, `STOPPING=1`, and watchdog
//! pings at half of `WATCHDOG_USEC` that stop when the supervisor loop is wedged.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokenkeeper::demo::endpoint::{EndpointOptions, Fault, Route, TokenEndpoint};

use crate::support::{
    Daemon, apinizer_config, eventually, tokenkeeper, write_config, write_secret,
};

/// The messages a fake service manager received, with when they came.
#[derive(Clone, Default)]
struct Manager {
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Manager {
    /// Binds a datagram socket at `path` and records what arrives there.
    fn listen(path: &Path) -> Manager {
        let socket = UnixDatagram::bind(path).expect("bind NOTIFY_SOCKET");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let manager = Manager::default();
        let messages = Arc::clone(&manager.messages);
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 8192];
            // Ends when the test process does.
            loop {
                if let Ok(read) = socket.recv(&mut buffer) {
                    let text = String::from_utf8_lossy(&buffer[..read]).into_owned();
                    messages.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
        manager
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    /// The instants at which a message holding `line` arrived.
    fn times_of(&self, line: &str) -> Vec<Instant> {
        self.all()
            .into_iter()
            .filter(|(_, text)| text.lines().any(|have| have == line))
            .map(|(at, _)| at)
            .collect()
    }

    fn has_line(&self, wanted: impl Fn(&str) -> bool) -> bool {
        self.all().iter().any(|(_, text)| text.lines().any(&wanted))
    }
}

struct Setup {
    endpoint: TokenEndpoint,
    scratch: tempfile::TempDir,
    output: std::path::PathBuf,
    config: String,
    socket: String,
}

async fn setup() -> Setup {
    let endpoint = TokenEndpoint::start(EndpointOptions::default())
        .await
        .expect("endpoint");
    let scratch = tempfile::tempdir().expect("tempdir");
    let secret = write_secret(
        scratch.path(),
        "secret",
        &tokenkeeper::demo::endpoint::Credentials::demo().apinizer_client_secret,
    );
    let output = scratch.path().join("token");
    let config = write_config(
        scratch.path(),
        &apinizer_config(&endpoint.base_url(), &secret, &output),
    );
    let socket = scratch.path().join("notify.sock").display().to_string();
    Setup {
        endpoint,
        scratch,
        output,
        config,
        socket,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_comes_after_the_first_login_then_reload_and_stop_are_announced() {
    let setup = setup().await;
    // The first login takes a while: READY must wait for it.
    setup
        .endpoint
        .push_fault(Fault::Delay(Duration::from_millis(1500)));
    let manager = Manager::listen(Path::new(&setup.socket));
    let mut daemon = Daemon::start(
        &setup.config,
        setup.scratch.path(),
        &[("NOTIFY_SOCKET", &setup.socket)],
    );
    assert!(
        eventually(Duration::from_secs(30), || !manager
            .times_of("READY=1")
            .is_empty())
        .await,
        "no READY=1; got {:?}\n{}",
        manager.all(),
        daemon.log()
    );
    // When READY came, the token was already on disk.
    let ready_at = manager.times_of("READY=1")[0];
    let written = std::fs::metadata(&setup.output).expect("output written before READY");
    let written_at = written.modified().unwrap();
    let ready_wall = std::time::SystemTime::now() - ready_at.elapsed();
    assert!(
        written_at <= ready_wall + Duration::from_millis(50),
        "READY=1 came before the token was written"
    );
    assert_eq!(setup.endpoint.issued(Route::Apinizer), 1);
    assert!(
        manager.has_line(|line| line == "STATUS=1/1 accounts ready"),
        "{:?}",
        manager.all()
    );
    // A reload is bracketed by RELOADING=1 (with the monotonic time) and READY=1.
    daemon.signal(rustix::process::Signal::HUP);
    assert!(
        eventually(Duration::from_secs(20), || manager
            .times_of("READY=1")
            .len()
            >= 2)
        .await,
        "no READY=1 after the reload: {:?}",
        manager.all()
    );
    let reloading = manager.times_of("RELOADING=1");
    assert_eq!(reloading.len(), 1, "{:?}", manager.all());
    assert!(reloading[0] < manager.times_of("READY=1")[1]);
    assert!(manager.has_line(|line| line.starts_with("MONOTONIC_USEC=")));
    // A reload whose config cannot even be read is bracketed too (systemctl reload would hang).
    let config = Path::new(&setup.config);
    let text = std::fs::read_to_string(config).expect("config");
    std::fs::remove_file(config).expect("remove config");
    daemon.signal(rustix::process::Signal::HUP);
    assert!(
        eventually(Duration::from_secs(20), || manager
            .times_of("READY=1")
            .len()
            >= 3)
        .await,
        "no READY=1 after a reload that could not read the config: {:?}",
        manager.all()
    );
    assert_eq!(
        manager.times_of("RELOADING=1").len(),
        2,
        "{:?}",
        manager.all()
    );
    crate::support::replace_file(config, &text);
    // SIGTERM: STOPPING=1, then a clean exit.
    daemon.signal(rustix::process::Signal::TERM);
    assert_eq!(daemon.wait(Duration::from_secs(20)).await, Some(0));
    assert_eq!(
        manager.times_of("STOPPING=1").len(),
        1,
        "{:?}",
        manager.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_come_at_half_the_timeout_and_stop_when_the_loop_is_wedged() {
    let setup = setup().await;
    let manager = Manager::listen(Path::new(&setup.socket));
    // 600 ms watchdog: a ping every 300 ms. The loop wedges 3 s after start.
    let daemon = Daemon::start(
        &setup.config,
        setup.scratch.path(),
        &[
            ("NOTIFY_SOCKET", &setup.socket),
            ("WATCHDOG_USEC", "600000"),
            ("TOKENKEEPER_TEST_WEDGE_AFTER_MS", "4000"),
        ],
    );
    // While the loop runs, `probe live` passes (the control socket is in the state directory
    // that STATE_DIRECTORY names, as for the daemon).
    let state = setup.scratch.path().join("state").display().to_string();
    let env = [("STATE_DIRECTORY", state.as_str())];
    assert!(
        eventually(Duration::from_secs(20), || setup
            .scratch
            .path()
            .join("state/control.sock")
            .exists())
        .await,
        "{}",
        daemon.log()
    );
    let live = tokenkeeper(&["probe", "live", "--config", &setup.config], &env).await;
    assert!(
        live.code == 0 || daemon.log().contains("wedges now"),
        "probe live failed on a running loop: {}",
        live.all_output()
    );
    assert!(
        eventually(Duration::from_secs(30), || daemon
            .log()
            .contains("the supervisor loop wedges now"))
        .await,
        "{}",
        daemon.log()
    );
    let wedged_at = Instant::now();
    let pings = manager.times_of("WATCHDOG=1");
    assert!(
        pings.len() >= 4,
        "too few pings before the wedge: {}",
        pings.len()
    );
    // The gaps between pings while the loop ran: about 300 ms, never more than the timeout.
    let gaps: Vec<Duration> = pings.windows(2).map(|pair| pair[1] - pair[0]).collect();
    let longest = gaps.iter().max().copied().unwrap_or_default();
    let shortest = gaps.iter().min().copied().unwrap_or_default();
    assert!(
        shortest >= Duration::from_millis(150),
        "pings too close together: {gaps:?}"
    );
    // On a loaded machine a ping may come late, but a healthy loop should not miss a whole
    // watchdog period often; allow one slow gap of up to 2 s.
    assert!(longest < Duration::from_secs(2), "gaps: {gaps:?}");
    let median = {
        let mut sorted = gaps.clone();
        sorted.sort();
        sorted[sorted.len() / 2]
    };
    assert!(
        median >= Duration::from_millis(200) && median <= Duration::from_millis(450),
        "the median gap should be about half of WATCHDOG_USEC: {gaps:?}"
    );
    // Once wedged, no ping comes for well over the timeout, so systemd would kill the daemon.
    while wedged_at.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late: Vec<Instant> = manager
        .times_of("WATCHDOG=1")
        .into_iter()
        .filter(|at| *at > wedged_at + Duration::from_millis(350))
        .collect();
    assert!(
        late.is_empty(),
        "{} pings after the loop wedged: a blind timer is keeping it alive",
        late.len()
    );
    // And the liveness probe says so.
    let live = tokenkeeper(&["probe", "live", "--config", &setup.config], &env).await;
    assert_eq!(live.code, 1, "{}", live.all_output());
    assert!(live.stderr.contains("stuck"), "{}", live.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_parked_is_ready_at_once_and_says_why() {
    let setup = setup().await;
    // Wrong credentials: the account is parked for half an hour.
    let secret = setup.scratch.path().join("secret");
    std::fs::write(&secret, "not-the-secret\n").expect("secret");
    let daemon = Daemon::start(&setup.config, setup.scratch.path(), &[]);
    assert!(
        eventually(Duration::from_secs(20), || daemon
            .log()
            .contains("credentials rejected"))
        .await,
        "{}",
        daemon.log()
    );
    // The parking is saved just after the rejection is logged: wait for the state file.
    let state = setup.scratch.path().join("state/apinizer.state");
    assert!(
        eventually(Duration::from_secs(20), || state.exists()).await,
        "no state file: {}",
        daemon.log()
    );
    drop(daemon);
    // A request in flight when the daemon was killed is still being recorded: count once the
    // endpoint has been quiet for a while.
    let mut requests = setup.endpoint.requests().len();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = setup.endpoint.requests().len();
        if now == requests {
            break;
        }
        requests = now;
    }
    assert!(requests >= 1);
    // The restart keeps the parking; READY must not wait for it to end.
    let manager = Manager::listen(Path::new(&setup.socket));
    let daemon = Daemon::start(
        &setup.config,
        setup.scratch.path(),
        &[("NOTIFY_SOCKET", &setup.socket)],
    );
    assert!(
        eventually(Duration::from_secs(20), || !manager
            .times_of("READY=1")
            .is_empty())
        .await,
        "no READY=1 after a restart while parked: {:?}\n{}",
        manager.all(),
        daemon.log()
    );
    assert!(
        manager
            .has_line(|line| line == "STATUS=0/1 accounts ready; apinizer: credentials rejected"),
        "{:?}",
        manager.all()
    );
    assert_eq!(
        setup.endpoint.requests().len(),
        requests,
        "the restart logged in while parked"
    );
}
