//! `bramble-worker`: the lean agent on each Pi. Thin: parse the config, start a
//! current-thread runtime, run the connection loop. Exit 2 on a bad config or bundle.

/// Tests count allocations: every decoder's fuzz run checks what it allocates.
#[cfg(test)]
#[global_allocator]
static COUNTING: bramble_wire::fuzz::Counting = bramble_wire::fuzz::Counting;

mod config;
mod coproc;
mod core;
mod engine;
mod exec;
mod limits;
mod net;
mod outbox;
mod sensors;
mod session;
mod sim;
mod stage;
mod startup;
mod tail;
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
    bramble_net::logging::init(tracing::Level::INFO);
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
