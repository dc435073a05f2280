//! The edge: parse the command line, start logging, run the command, turn the outcome into an
//! exit code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use tokenkeeper::cli::{Cli, LogFormat};

fn main() -> ExitCode {
    // Same-uid processes must not ptrace us or read our memory and environment, which hold
    // secrets (OpenSSH does the same). Failure is not fatal: the daemon still works without it.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(tokenkeeper::EXIT_FAILURE);
        }
    };
    ExitCode::from(runtime.block_on(tokenkeeper::run(cli)))
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let from_environment = std::env::var_os("RUST_LOG").is_some();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // RUST_LOG wins over the config's log_level: an operator debugging sets it on purpose.
    if !from_environment {
        tokenkeeper::set_log_level_hook(Box::new(move |level| {
            let _ = handle.modify(|filter| *filter = tracing_subscriber::EnvFilter::new(level));
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
}
