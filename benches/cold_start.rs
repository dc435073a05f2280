//! Cold start at scale: N accounts, no state files, against the built-in endpoint on loopback.
//! Prints the time until every account's token is on disk, logins per second, the most logins in
//! flight (bounded by `max_concurrent_logins`), and the process's peak memory.
//!
//! Run: `cargo bench --bench cold_start` (N from `TOKENKEEPER_BENCH_ACCOUNTS`, default 2000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenkeeper::daemon::{self, Controller};
use tokenkeeper::demo::endpoint::{Credentials, EndpointOptions, Route, TokenEndpoint};

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let accounts: usize = std::env::var("TOKENKEEPER_BENCH_ACCOUNTS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(2000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let endpoint = TokenEndpoint::start(EndpointOptions::default())
            .await
            .expect("endpoint");
        let credentials = Credentials::demo();
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        std::fs::create_dir(&out).expect("out dir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, format!("{}\n", credentials.apinizer_client_secret)).expect("secret");
        let mut text = String::from("[daemon]\nwatch = false\nstate_files = false\n");
        for index in 0..accounts {
            text += &format!(
                "[accounts.a{index}]\npreset = \"apinizer\"\nbase_url = \"{}\"\nclient_id = \"{}\"\nclient_secret = {{ file = \"{}\" }}\n[[accounts.a{index}.outputs]]\npath = \"{}/a{index}.token\"\n",
                endpoint.base_url(),
                credentials.apinizer_client_id,
                secret.display(),
                out.display()
            );
        }
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).expect("config");

        let control = Controller::new();
        let steering = control.clone();
        let started = Instant::now();
        let config_path = config.clone();
        let daemon = tokio::spawn(async move {
            daemon::run(
                &config_path,
                Arc::new(daemon::clock::SystemClock::new()),
                daemon::http_logins(),
                steering,
            )
            .await
        });
        while endpoint.issued(Route::Apinizer) < accounts {
            if started.elapsed() > Duration::from_secs(300) {
                eprintln!("gave up after 300 s");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let all_logged_in = started.elapsed();
        // Wait for the last writes to land.
        while std::fs::read_dir(&out).map(|entries| entries.count()).unwrap_or(0) < accounts {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let all_written = started.elapsed();
        control.stop();
        let _ = daemon.await;
        println!("cold start, {accounts} accounts (max_concurrent_logins 16, startup spread 20 ms/account up to 30 s)");
        println!("  all logged in:  {:.2} s", all_logged_in.as_secs_f64());
        println!("  all on disk:    {:.2} s", all_written.as_secs_f64());
        println!(
            "  rate:           {:.0} logins/s",
            accounts as f64 / all_logged_in.as_secs_f64()
        );
        if let Some(peak) = peak_rss_kib() {
            println!(
                "  peak RSS:       {:.1} MiB for the whole process, endpoint included ({:.1} KiB per account)",
                peak as f64 / 1024.0,
                peak as f64 / accounts as f64
            );
        }
        endpoint.shutdown().await;
    });
}
