//! Load in virtual time: the global login limit and the spread of first logins at start.

use super::*;

/// A login that takes `latency` of (virtual) time and counts how many run at once.
struct Slow {
    clock: Arc<TestClock>,
    latency: Duration,
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
    starts: Mutex<Vec<Duration>>,
}

impl Authenticator for Slow {
    fn login<'a>(&'a self, _refresh_token: Option<&'a Secret>) -> LoginFuture<'a> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            self.starts.lock().unwrap().push(self.clock.timer());
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most_in_flight.fetch_max(now, SeqCst);
            tokio::time::sleep(self.latency).await;
            self.in_flight.fetch_sub(1, SeqCst);
            let wall = self.clock.wall();
            Ok(LoginOutcome {
                token: Token::new(
                    Secret::new("slow-token".into()),
                    wall,
                    wall + Duration::from_secs(3600),
                )
                .unwrap(),
                refresh_token: None,
                expiry_source: crate::expiry::Source::ExpiresIn,
                clamped: false,
                refreshed: false,
                latency: self.latency,
            })
        })
    }
}

/// Runs `accounts` accounts for a virtual minute against a [`Slow`] login; returns the start
/// instants of the logins and the most that ran at once.
async fn run_many(accounts: usize, limit: usize, latency: Duration) -> (Vec<Duration>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut text = format!(
        "[daemon]\nwatch = false\nmax_concurrent_logins = {limit}\nstartup_spread = \"30s\"\nstate_dir = \"{}\"\n",
        dir.path().join("state").display()
    );
    for index in 0..accounts {
        text += &format!(
            "[accounts.a{index}]\npreset = \"oauth2\"\ntoken_url = \"https://idp.example/t\"\nclient_id = \"i\"\nclient_secret = {{ env = \"HOME\" }}\n[[accounts.a{index}.outputs]]\npath = \"{}/a{index}.token\"\n",
            out.display()
        );
    }
    std::fs::write(dir.path().join("config.toml"), text).unwrap();
    let clock = test_clock();
    let slow = Arc::new(Slow {
        clock: Arc::clone(&clock),
        latency,
        in_flight: Default::default(),
        most_in_flight: Default::default(),
        starts: Mutex::new(Vec::new()),
    });
    let factory = same_login(Arc::clone(&slow) as Arc<dyn Authenticator>);
    let (control, daemon) = spawn_run(dir.path().join("config.toml"), &clock, factory);
    pass(Duration::from_secs(60)).await;
    control.stop();
    assert_eq!(daemon.await.unwrap(), 0);
    let written = std::fs::read_dir(&out)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".token")
        })
        .count();
    assert_eq!(written, accounts, "every account wrote its token");
    let starts = slow.starts.lock().unwrap().clone();
    (
        starts,
        slow.most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst),
    )
}

#[tokio::test(start_paused = true)]
async fn logins_respect_the_global_limit() {
    let (starts, most) = run_many(60, 4, Duration::from_millis(500)).await;
    assert_eq!(starts.len(), 60, "every account logged in once");
    assert_eq!(most, 4, "{most} logins ran at once with a limit of 4");
}

#[tokio::test(start_paused = true)]
async fn first_logins_spread_out_at_start() {
    // 60 accounts × 20 ms: first logins spread over up to 1.2 s instead of one instant.
    let (starts, most) = run_many(60, 4096, Duration::ZERO).await;
    assert_eq!(starts.len(), 60);
    let first = *starts.iter().min().unwrap();
    let last = *starts.iter().max().unwrap();
    assert!(
        last - first >= Duration::from_millis(600),
        "spread only {:?}",
        last - first
    );
    assert!(
        last - first <= Duration::from_millis(1200),
        "spread {:?} beyond 1.2 s",
        last - first
    );
    let distinct: std::collections::BTreeSet<Duration> = starts.iter().copied().collect();
    assert!(
        distinct.len() >= 30,
        "{} distinct start instants for 60 accounts",
        distinct.len()
    );
    assert!(most <= 60);
}
