//! `bramble-worker`: the lean agent on each Pi. Thin: parse the config, start a
//! current-thread runtime, run the connection loop. Exit 2 on a bad config or bundle.

mod agent;
mod backoff;
mod config;
mod coproc;
mod exec;
mod net;
mod sensors;
mod session;
mod sim;
mod template;
mod watchdog;

use std::process::ExitCode;

use config::Parsed;

fn main() -> ExitCode {
    let config = match config::load(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(config)) => config,
        Ok(Parsed::Help) => {
            println!("{}", config::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("bramble-worker {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bramble-worker: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bramble-worker: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(net::run(*config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bramble-worker: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs to stderr (journald adds timestamps under systemd); `BRAMBLE_LOG=debug|info|warn|error`.
fn init_logging() {
    let level = std::env::var("BRAMBLE_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
