//! The daemon's cost, measured: the real binary (`tokenkeeper run`, a child process measured
//! through `/proc`) against a fast loopback OAuth2 token server in this process, which counts
//! logins, logins in flight and when each one arrives.
//!
//! ```text
//! cargo bench --bench daemon                      # every scenario, full size (about 6 min)
//! cargo bench --bench daemon -- cold steady       # some of them (cold steady idle floor shell)
//! cargo bench --bench daemon -- --quick           # a smoke run of every scenario (seconds)
//! ```
//!
//! Scenarios:
//! - `cold`: 1, 10, 100, 1,000 and 10,000 accounts from nothing: time until every token file exists,
//!   peak RSS, CPU time, the most logins in flight (never above `max_concurrent_logins`); then
//!   how long `tokenkeeper check` of the same config takes.
//! - `steady`: 10,000 accounts with 60 s tokens for 3 min: CPU per refresh, RSS over time,
//!   lateness (a login's arrival minus the refresh time the daemon logged for it) p50/p99/max,
//!   and tokens that expired on disk (must be none).
//! - `idle`: 10,000 accounts with 1 h tokens, after their first logins, for 60 s: CPU time and
//!   context switches.
//! - `shell`: the homegrown `curl | jq` + `mv` loop (where both are installed): CPU per refresh,
//!   and the PSS of 100 such loops sleeping between refreshes.
//! - `floor`: a minimal loop with the same HTTP client (a new connection per login) and one
//!   fsync'd atomic write per token, in a child process: the cost the daemon is compared to.
//!
//! Numbers among the arguments replace the cold start's sizes (`-- cold 10 10000`).
//!
//! Environment: `TOKENKEEPER_BENCH_LATENCY_MS` adds latency to every login (default 0);
//! `TOKENKEEPER_BENCH_WRAPPER` runs the daemon under a profiler, e.g. `heaptrack` or
//! `perf record -g -o /tmp/perf.data` (the /proc figures are then the wrapper's);
//! `TOKENKEEPER_BENCH_PAUSE=SECONDS` leaves the daemon running after each cold start, to inspect.

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use jiff::Timestamp;

// ---------------------------------------------------------------------------------------------
// The token server.

/// What the server saw.
#[derive(Default)]
struct Counters {
    logins: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    /// Per account (its index), the refresh time the daemon logged for its next login.
    planned: Mutex<HashMap<u32, Timestamp>>,
    /// Arrival minus planned time of every login that had a plan, in milliseconds.
    lateness_ms: Mutex<Vec<f64>>,
}

struct Server {
    address: SocketAddr,
    counters: Arc<Counters>,
}

async fn start_server(lifetime: Duration, latency: Duration) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the token server");
    let address = listener.local_addr().expect("address");
    let counters = Arc::new(Counters::default());
    let shared = Arc::clone(&counters);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counters = Arc::clone(&shared);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let counters = Arc::clone(&counters);
                    async move { answer(request, &counters, lifetime, latency).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Server { address, counters }
}

async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    counters: &Counters,
    lifetime: Duration,
    latency: Duration,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let arrived = Timestamp::now();
    let in_flight = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    counters
        .peak_in_flight
        .fetch_max(in_flight, Ordering::SeqCst);
    let body = request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let account = url::form_urlencoded::parse(&body)
        .find(|(key, _)| key == "client_id")
        .and_then(|(_, value)| value.strip_prefix('a')?.parse::<u32>().ok());
    if let Some(account) = account {
        let plan = counters.planned.lock().expect("plans").remove(&account);
        if let Some(planned) = plan {
            let late = arrived.duration_since(planned).as_secs_f64() * 1e3;
            counters.lateness_ms.lock().expect("lateness").push(late);
        }
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let number = counters.logins.fetch_add(1, Ordering::SeqCst);
    let reply = format!(
        r#"{{"access_token":"bench-{number:016x}","token_type":"Bearer","expires_in":{}}}"#,
        lifetime.as_secs()
    );
    counters.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response = hyper::Response::new(Full::new(Bytes::from(reply)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// The daemon as a child process.

/// CPU time, memory and context switches of a process, from `/proc`.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    cpu: Duration,
    rss_kib: u64,
    peak_rss_kib: u64,
    switches: u64,
}

fn usage(pid: u32) -> Usage {
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let number = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    let cpu_ticks = number(11) + number(12);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|line| line.starts_with(key))
            .and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Context switches are counted per thread: sum them over the process's threads.
    let switches = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|task| task.ok())
                .map(|task| {
                    let status =
                        std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
                    ["voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"]
                        .iter()
                        .filter_map(|key| {
                            status
                                .lines()
                                .find(|line| line.starts_with(key))
                                .and_then(|line| {
                                    line.split_whitespace().nth(1)?.parse::<u64>().ok()
                                })
                        })
                        .sum::<u64>()
                })
                .sum()
        })
        .unwrap_or(0);
    Usage {
        cpu: Duration::from_secs_f64(cpu_ticks as f64 / ticks as f64),
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
        switches,
    }
}

/// The time the live threads of a process have spent on a CPU, in nanoseconds (the first field
/// of each thread's `schedstat`): finer than `stat`'s clock ticks, which an idle minute of a
/// well-behaved daemon may not even reach.
fn run_time_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|task| task.ok())
        .filter_map(|task| {
            std::fs::read_to_string(task.path().join("schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Each thread's name and CPU ticks.
fn thread_ticks(pid: u32) -> HashMap<String, u64> {
    let mut threads = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.filter_map(|task| task.ok()) {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map_or("?", |(_, name)| name);
        let fields: Vec<u64> = rest
            .split_whitespace()
            .map(|field| field.parse().unwrap_or(0))
            .collect();
        let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
        *threads
            .entry(format!("{name}#{}", task.file_name().to_string_lossy()))
            .or_insert(0) += ticks;
    }
    threads
}

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    out: PathBuf,
    /// ERROR lines saying a token expired on disk.
    expired_on_disk: Arc<AtomicU64>,
}

impl Daemon {
    /// Writes a config of `accounts` OAuth2 accounts against `server` and starts the daemon.
    fn start(server: &Server, accounts: usize) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        std::fs::create_dir(&out).expect("out");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "bench-secret\n").expect("secret");
        let mut text = format!(
            "[daemon]\nwatch = false\nstartup_spread = \"1ms\"\nstate_dir = \"{}\"\n",
            dir.path().join("state").display()
        );
        for index in 0..accounts {
            text += &format!(
                "[accounts.a{index}]\npreset = \"oauth2\"\ntoken_url = \"http://{}/token\"\nclient_id = \"a{index}\"\nclient_secret = {{ file = \"{}\" }}\nauth_method = \"post\"\n[[accounts.a{index}.outputs]]\npath = \"{}/a{index}.token\"\n",
                server.address,
                secret.display(),
                out.display()
            );
        }
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).expect("config");
        // TOKENKEEPER_BENCH_WRAPPER runs the daemon under a profiler (`perf record -g`,
        // `heaptrack`, `valgrind --tool=callgrind`); /proc figures are then the wrapper's.
        let wrapper = std::env::var("TOKENKEEPER_BENCH_WRAPPER").unwrap_or_default();
        let mut words: Vec<String> = wrapper.split_whitespace().map(str::to_string).collect();
        words.push(env!("CARGO_BIN_EXE_tokenkeeper").to_string());
        let mut child = Command::new(&words[0])
            .args(&words[1..])
            .args(["run", "--log-format", "json", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tokenkeeper run");
        let stderr = child.stderr.take().expect("stderr");
        let counters = Arc::clone(&server.counters);
        let expired_on_disk = Arc::new(AtomicU64::new(0));
        let expired = Arc::clone(&expired_on_disk);
        std::thread::spawn(move || read_log(stderr, &counters, &expired));
        Daemon {
            child,
            dir,
            out,
            expired_on_disk,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn files(&self) -> usize {
        std::fs::read_dir(&self.out)
            .map(|entries| entries.count())
            .unwrap_or(0)
    }

    fn stop(mut self) {
        self.stop_keeping_config();
    }

    /// Stops the daemon; its directory (the config, the outputs) stays until `self` is dropped.
    fn stop_keeping_config(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// How long `tokenkeeper check` of the daemon's config takes (it reads every secret file).
    fn check_time(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_tokenkeeper"))
            .args(["check", "--config"])
            .arg(self.dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .output()
            .map_err(|error| error.to_string())?;
        let took = started.elapsed();
        if output.status.success() {
            Ok(took)
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

/// Reads the daemon's JSON log: the refresh time planned at each login, and tokens expired on
/// disk.
fn read_log(stderr: std::process::ChildStderr, counters: &Counters, expired: &AtomicU64) {
    for line in std::io::BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if line.contains("the token on disk expired") {
            expired.fetch_add(1, Ordering::SeqCst);
        }
        if !line.contains("login succeeded") {
            continue;
        }
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let fields = &entry["fields"];
        let account = fields["account"]
            .as_str()
            .and_then(|name| name.strip_prefix('a')?.parse::<u32>().ok());
        let planned = fields["next_refresh"]
            .as_str()
            .and_then(|text| text.parse::<Timestamp>().ok());
        if let (Some(account), Some(planned)) = (account, planned) {
            counters
                .planned
                .lock()
                .expect("plans")
                .insert(account, planned);
        }
    }
}

/// With `TOKENKEEPER_BENCH_PAUSE=SECONDS`, leaves the daemon running that long after a scenario
/// (its pid printed), to look at it with `/proc/PID/smaps`, `perf top -p` or `gdb`.
fn pause_for_profiling(daemon: &Daemon) {
    let Some(seconds) = std::env::var("TOKENKEEPER_BENCH_PAUSE")
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
    else {
        return;
    };
    println!("(pausing {seconds} s: the daemon is pid {})", daemon.pid());
    std::thread::sleep(Duration::from_secs(seconds));
}

/// Waits until `condition` holds or `limit` passes; whether it held.
fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

struct Sizes {
    cold: Vec<usize>,
    steady_accounts: usize,
    steady_lifetime: Duration,
    steady_for: Duration,
    idle_accounts: usize,
    idle_for: Duration,
    floor_logins: usize,
    shell_refreshes: usize,
    shell_loops: usize,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            cold: vec![1, 10, 100, 1000, 10_000],
            steady_accounts: 10_000,
            steady_lifetime: Duration::from_secs(60),
            steady_for: Duration::from_secs(180),
            idle_accounts: 10_000,
            idle_for: Duration::from_secs(60),
            floor_logins: 10_000,
            shell_refreshes: 200,
            shell_loops: 100,
        }
    }

    fn quick() -> Sizes {
        Sizes {
            cold: vec![1, 100],
            steady_accounts: 100,
            steady_lifetime: Duration::from_secs(20),
            steady_for: Duration::from_secs(25),
            idle_accounts: 100,
            idle_for: Duration::from_secs(3),
            floor_logins: 100,
            shell_refreshes: 10,
            shell_loops: 3,
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn cold(runtime: &tokio::runtime::Runtime, accounts: usize, latency: Duration) {
    let server = runtime.block_on(start_server(Duration::from_secs(3600), latency));
    let started = Instant::now();
    let mut daemon = Daemon::start(&server, accounts);
    let done = wait_for(Duration::from_secs(300), || daemon.files() >= accounts);
    let took = started.elapsed();
    let used = usage(daemon.pid());
    let peak = server.counters.peak_in_flight.load(Ordering::SeqCst);
    if !done {
        broken(&format!(
            "the cold start of {accounts} accounts did not finish"
        ));
    }
    if peak > 16 {
        broken(&format!("{peak} logins in flight, above the limit of 16"));
    }
    println!(
        "| cold start | {accounts:>6} accounts | {} | peak RSS {:.1} MiB | CPU {:.2} s | peak logins in flight {peak} (limit 16) |",
        if done {
            format!("all files in {:.2} s", took.as_secs_f64())
        } else {
            format!(
                "only {} files after {:.0} s",
                daemon.files(),
                took.as_secs_f64()
            )
        },
        mib(used.peak_rss_kib),
        used.cpu.as_secs_f64(),
    );
    pause_for_profiling(&daemon);
    daemon.stop_keeping_config();
    let check = daemon.check_time();
    println!(
        "| check      | {accounts:>6} accounts | {} |",
        check.as_ref().map_or_else(
            |error| format!("failed: {error}"),
            |took| format!("{:.2} s", took.as_secs_f64())
        )
    );
    if let Err(error) = check {
        broken(&format!(
            "`tokenkeeper check` of {accounts} accounts: {error}"
        ));
    }
}

fn steady(runtime: &tokio::runtime::Runtime, sizes: &Sizes, latency: Duration) {
    let accounts = sizes.steady_accounts;
    let server = runtime.block_on(start_server(sizes.steady_lifetime, latency));
    let daemon = Daemon::start(&server, accounts);
    if !wait_for(Duration::from_secs(300), || daemon.files() >= accounts) {
        broken("steady state: the cold start did not finish");
        daemon.stop();
        return;
    }
    // Measure from here: every account holds a token and has a plan.
    server
        .counters
        .lateness_ms
        .lock()
        .expect("lateness")
        .clear();
    let logins_before = server.counters.logins.load(Ordering::SeqCst);
    let before = usage(daemon.pid());
    let started = Instant::now();
    let mut rss = Vec::new();
    while started.elapsed() < sizes.steady_for {
        std::thread::sleep(Duration::from_secs(5).min(sizes.steady_for));
        rss.push(usage(daemon.pid()).rss_kib);
    }
    let after = usage(daemon.pid());
    let refreshes = server.counters.logins.load(Ordering::SeqCst) - logins_before;
    let cpu = after.cpu.saturating_sub(before.cpu);
    let mut late = server
        .counters
        .lateness_ms
        .lock()
        .expect("lateness")
        .clone();
    late.sort_by(f64::total_cmp);
    let quantile = |q: f64| -> f64 {
        if late.is_empty() {
            return f64::NAN;
        }
        late[((late.len() - 1) as f64 * q).round() as usize]
    };
    let per_refresh_ms = cpu.as_secs_f64() * 1e3 / refreshes.max(1) as f64;
    println!(
        "| steady state | {accounts} accounts, {} s tokens, {:.0} s | {refreshes} refreshes, CPU {:.3} ms each | RSS {:.1} → {:.1} MiB (peak {:.1}) | lateness p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples) | expired on disk: {} |",
        sizes.steady_lifetime.as_secs(),
        sizes.steady_for.as_secs_f64(),
        per_refresh_ms,
        mib(rss.first().copied().unwrap_or(before.rss_kib)),
        mib(rss.last().copied().unwrap_or(after.rss_kib)),
        mib(after.peak_rss_kib),
        quantile(0.5),
        quantile(0.99),
        late.last().copied().unwrap_or(f64::NAN),
        late.len(),
        daemon.expired_on_disk.load(Ordering::SeqCst),
    );
    STEADY_PER_REFRESH_MS.store(per_refresh_ms.to_bits(), Ordering::SeqCst);
    let expired = daemon.expired_on_disk.load(Ordering::SeqCst);
    if expired > 0 {
        broken(&format!(
            "{expired} tokens expired on disk in the steady state"
        ));
    }
    if refreshes == 0 {
        broken("no refresh in the steady state");
    }
    daemon.stop();
}

/// A ratio to the daemon's CPU per refresh in the steady state (`describe` gets it in ms), or a
/// hint when the steady state did not run.
fn compared_with_daemon(describe: impl FnOnce(f64) -> String) -> String {
    let daemon = f64::from_bits(STEADY_PER_REFRESH_MS.load(Ordering::SeqCst));
    if daemon > 0.0 {
        describe(daemon)
    } else {
        "run `steady` too for the ratio".to_string()
    }
}

/// The daemon's CPU per refresh in the steady state, for the floor's ratio.
static STEADY_PER_REFRESH_MS: AtomicU64 = AtomicU64::new(0);

/// Broken promises (not missed speed targets, which are only printed): the run exits 1.
static BROKEN: AtomicU64 = AtomicU64::new(0);

fn broken(what: &str) {
    BROKEN.fetch_add(1, Ordering::SeqCst);
    println!("BROKEN: {what}");
}

fn idle(runtime: &tokio::runtime::Runtime, sizes: &Sizes) {
    let accounts = sizes.idle_accounts;
    let server = runtime.block_on(start_server(Duration::from_secs(3600), Duration::ZERO));
    let daemon = Daemon::start(&server, accounts);
    if !wait_for(Duration::from_secs(300), || daemon.files() >= accounts) {
        broken("idle: the cold start did not finish");
        daemon.stop();
        return;
    }
    // Idle means after the start-up work: wait (up to 30 s) for a quiet 2 s, with the runtime's
    // spare blocking threads gone (they linger 10 s), so that every thread measured below is
    // alive at both ends of the window.
    let settle = Instant::now();
    std::thread::sleep(Duration::from_secs(11));
    while settle.elapsed() < Duration::from_secs(30) {
        let before = run_time_ns(daemon.pid());
        std::thread::sleep(Duration::from_secs(2));
        if run_time_ns(daemon.pid()).saturating_sub(before) < 1_000_000 {
            break;
        }
    }
    let before = usage(daemon.pid());
    let ran_before = run_time_ns(daemon.pid());
    let threads_before = thread_ticks(daemon.pid());
    std::thread::sleep(sizes.idle_for);
    let after = usage(daemon.pid());
    let ran = run_time_ns(daemon.pid()).saturating_sub(ran_before);
    let mut busiest: Vec<(String, u64)> = thread_ticks(daemon.pid())
        .into_iter()
        .map(|(name, ticks)| {
            let spent = ticks.saturating_sub(threads_before.get(&name).copied().unwrap_or(0));
            (name, spent)
        })
        .filter(|(_, spent)| *spent > 0)
        .collect();
    busiest.sort_by_key(|(_, spent)| std::cmp::Reverse(*spent));
    busiest.truncate(3);
    let minutes = sizes.idle_for.as_secs_f64() / 60.0;
    println!(
        "| idle | {accounts} accounts, 1 h tokens, {:.0} s | CPU {:.2} ms per minute (in clock ticks: {:.0} ms) | {:.0} context switches per minute | RSS {:.1} MiB | busiest threads (ticks): {busiest:?} |",
        sizes.idle_for.as_secs_f64(),
        ran as f64 / 1e6 / minutes,
        after.cpu.saturating_sub(before.cpu).as_secs_f64() * 1e3 / minutes,
        after.switches.saturating_sub(before.switches) as f64 / minutes,
        mib(after.rss_kib),
    );
    daemon.stop();
}

fn floor(runtime: &tokio::runtime::Runtime, sizes: &Sizes) {
    let server = runtime.block_on(start_server(Duration::from_secs(3600), Duration::ZERO));
    let dir = tempfile::tempdir().expect("tempdir");
    let child = Command::new(std::env::current_exe().expect("this benchmark"))
        .arg("--floor-child")
        .arg(server.address.to_string())
        .arg(sizes.floor_logins.to_string())
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the floor loop");
    let output = child.wait_with_output().expect("floor loop");
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(cpu_ms) = text.trim().parse::<f64>().ok() else {
        broken(&format!("the floor loop failed: {text}"));
        return;
    };
    let per_login = cpu_ms / sizes.floor_logins as f64;
    let ratio = compared_with_daemon(|daemon| format!("daemon/floor {:.2}×", daemon / per_login));
    println!(
        "| floor | {} logins, a new connection each, one fsync'd atomic write | CPU {per_login:.3} ms each | {ratio} |",
        sizes.floor_logins
    );
}

/// The homegrown alternative, as operators write it: per account, a shell loop of `curl` (the
/// login), `jq` (the token out of the reply) and `mv` (the publish). Measured twice: CPU per
/// refresh over one loop run flat out, and the memory (PSS, summed over every process) of
/// `loops` such loops sleeping between refreshes, as they would for hours.
fn shell_loop(runtime: &tokio::runtime::Runtime, refreshes: usize, loops: usize) {
    let found = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if !found("curl") || !found("jq") {
        println!("| shell loop | skipped: curl and jq are not both installed |");
        return;
    }
    let server = runtime.block_on(start_server(Duration::from_secs(3600), Duration::ZERO));
    let dir = tempfile::tempdir().expect("tempdir");
    let script = |account: usize, rounds: &str, pause: &str| {
        format!(
            "out={dir}/s{account}.token; i=0; while [ $i -lt {rounds} ]; do \
             curl -sf -X POST -d grant_type=client_credentials -d client_id=s{account} \
             -d client_secret=bench-secret http://{address}/token \
             | jq -er .access_token > $out.tmp && mv $out.tmp $out; i=$((i+1)); {pause}; done",
            dir = dir.path().display(),
            address = server.address,
        )
    };
    // CPU: the children's times of this process grow by the loop's once it has been waited for.
    let children_cpu = || {
        let ticks = rustix::param::clock_ticks_per_second().max(1);
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .map(|f| f.parse().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default();
        // cutime and cstime are fields 16 and 17 of stat, 14 and 15 after the name and state.
        let sum = fields.get(13).copied().unwrap_or(0) + fields.get(14).copied().unwrap_or(0);
        sum as f64 * 1e3 / ticks as f64
    };
    let before = children_cpu();
    let ran = Command::new("sh")
        .args(["-c", &script(0, &refreshes.to_string(), "true")])
        .status()
        .is_ok_and(|status| status.success());
    let per_refresh = (children_cpu() - before) / refreshes as f64;
    if !ran {
        broken("the shell loop failed");
        return;
    }
    // Memory: `loops` loops, each after its first refresh, sleeping (as for a 1 h token).
    let mut sleeping: Vec<Child> = (0..loops)
        .map(|account| {
            Command::new("sh")
                .args(["-c", &script(account, "1000000", "sleep 2700")])
                .process_group(0)
                .spawn()
                .expect("start a shell loop")
        })
        .collect();
    let written = wait_for(Duration::from_secs(60), || {
        (0..loops).all(|account| dir.path().join(format!("s{account}.token")).exists())
    });
    std::thread::sleep(Duration::from_millis(500));
    let pss_kib: u64 = sleeping.iter().map(|child| group_pss_kib(child.id())).sum();
    for child in &mut sleeping {
        let group = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = child.wait();
    }
    if !written {
        broken("the sleeping shell loops did not all write their token");
    }
    let ratio = compared_with_daemon(|daemon| format!("shell/daemon {:.0}×", per_refresh / daemon));
    println!(
        "| shell loop | curl + jq + mv | CPU {per_refresh:.2} ms per refresh | {ratio} | {loops} loops sleeping: PSS {:.1} MiB |",
        mib(pss_kib)
    );
}

/// The PSS of every process in the process group `group`, in KiB.
fn group_pss_kib(group: u32) -> u64 {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return 0;
    };
    processes
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // pgrp is field 5 of stat, the third after the name and state.
                    let rest = stat.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(2)?.parse::<u32>().ok()
                })
                == Some(group)
        })
        .map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                .unwrap_or_default()
                .lines()
                .find(|line| line.starts_with("Pss:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// The floor loop, in a process of its own so that its CPU time is its own: the same HTTP client
/// as the daemon's, a new connection per login, one fsync'd atomic write per token (each to a
/// file of its own, so that the directory fills as the daemon's does). Prints its CPU time in
/// milliseconds.
fn floor_child(address: &str, logins: usize, dir: &Path) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .expect("client");
        let url = format!("http://{address}/token");
        let directory = std::fs::File::open(dir).expect("dir");
        for index in 0..logins {
            let body = format!(
                "grant_type=client_credentials&client_id=floor{index}&client_secret=bench-secret"
            );
            let reply = client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .expect("login");
            let bytes = reply.bytes().await.expect("reply");
            let value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            let token = value["access_token"].as_str().expect("token");
            // One file per login, as the daemon has one per account in a directory as full.
            let temp = dir.join(format!(".floor{index}.tmp"));
            let mut file = std::fs::File::create(&temp).expect("temp");
            file.write_all(token.as_bytes()).expect("write");
            file.sync_all().expect("fsync");
            std::fs::rename(&temp, dir.join(format!("floor{index}.token"))).expect("rename");
            directory.sync_all().expect("dir fsync");
        }
    });
    let used = usage(std::process::id());
    println!("{}", used.cpu.as_secs_f64() * 1e3);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--floor-child") {
        let logins = args[2].parse().expect("logins");
        floor_child(&args[1], logins, Path::new(&args[3]));
        return;
    }
    let quick = args.iter().any(|arg| arg == "--quick");
    let chosen: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|arg| ["cold", "steady", "idle", "floor", "shell"].contains(arg))
        .collect();
    let wants = |name: &str| chosen.is_empty() || chosen.contains(&name);
    let mut sizes = if quick { Sizes::quick() } else { Sizes::full() };
    let cold_sizes: Vec<usize> = args.iter().filter_map(|arg| arg.parse().ok()).collect();
    if !cold_sizes.is_empty() {
        sizes.cold = cold_sizes;
    }
    let latency = Duration::from_millis(
        std::env::var("TOKENKEEPER_BENCH_LATENCY_MS")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(0),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "tokenkeeper benchmark ({}), {} CPUs, added login latency {} ms",
        if quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        latency.as_millis()
    );
    if wants("cold") {
        for &accounts in &sizes.cold {
            cold(&runtime, accounts, latency);
        }
    }
    if wants("steady") {
        steady(&runtime, &sizes, latency);
    }
    if wants("idle") {
        idle(&runtime, &sizes);
    }
    if wants("floor") {
        floor(&runtime, &sizes);
    }
    if wants("shell") {
        shell_loop(&runtime, sizes.shell_refreshes, sizes.shell_loops);
    }
    if BROKEN.load(Ordering::SeqCst) > 0 {
        std::process::exit(1);
    }
}
