//! The edge: parse the command line, start logging, run the command, turn the outcome into an
//! exit code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use tokenkeeper::cli::{Cli, LogFormat};

/// See `ARCHITECTURE.md` (blocking sections); `systemd/tokenkeeper.service` allows 256 tasks.
const BLOCKING_THREADS: usize = 64;

fn main() -> ExitCode {
    // Same-uid processes must not ptrace us or read our memory and environment, which hold
    // secrets (OpenSSH does the same). Failure is not fatal: the daemon still works without it.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        // Threads for file operations that may block (`input::may_block`): enough for that many
        // stuck on hung mounts at once while the rest goes on, well inside the unit's TasksMax,
        // and a bound on the burst of threads (each with its stack and malloc arena) that ten
        // thousand accounts writing their first tokens together would otherwise start.
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(tokenkeeper::EXIT_FAILURE);
        }
    };
    let plain = tokenkeeper::reports_plainly(&cli.command);
    let code = match runtime.block_on(tokenkeeper::run(cli)) {
        Ok(()) => tokenkeeper::EXIT_OK,
        Err(error) => {
            // The one place a command's error is reported.
            if plain {
                eprintln!("error: {error}");
            } else {
                tracing::error!("{error}");
            }
            error.exit_code()
        }
    };
    // A worker stuck in a system call (a hung file system) must not keep the process alive
    // after the daemon has stopped: give the runtime a moment, then leave without it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    ExitCode::from(code)
}

/// The log filter for `directives` (RUST_LOG syntax), or for `info` when they do not parse
/// (then `false`). The file watcher's own crate logs every inotify event at trace level; with
/// the log written into a watched directory each line would cause another event, so its logging
/// is capped at warnings unless the directives name it.
fn log_filter(directives: &str) -> (tracing_subscriber::EnvFilter, bool) {
    let capped = |directives: &str| {
        if directives.contains("notify") {
            directives.to_string()
        } else {
            format!("{directives},notify=warn")
        }
    };
    match tracing_subscriber::EnvFilter::try_new(capped(directives)) {
        Ok(filter) => (filter, true),
        Err(_) => (tracing_subscriber::EnvFilter::new(capped("info")), false),
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let from_environment = std::env::var_os("RUST_LOG").is_some();
    let (filter, valid) =
        log_filter(&std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string()));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // RUST_LOG wins over the config's log_level: an operator debugging sets it on purpose.
    if !from_environment {
        tokenkeeper::set_log_level_hook(Box::new(move |level| {
            // The config's log_level was validated: it parses.
            let _ = handle.modify(|filter| *filter = log_filter(level).0);
        }));
    }
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .init();
    if !valid {
        tracing::warn!("RUST_LOG does not parse as log directives; logging at info");
    }
}
