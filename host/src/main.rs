//! `bramble`: the host scheduler and the CLI. Thin: parse, dispatch, map errors to exit codes
//! (0 success, 1 some tasks failed, 2 usage, config or connection error).

/// Tests count allocations: every decoder's fuzz run checks what it allocates.
#[cfg(test)]
#[global_allocator]
static COUNTING: bramble_wire::fuzz::Counting = bramble_wire::fuzz::Counting;

mod cli;
mod cmd;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        // Output piped into `head` and the like: stop quietly, as ripgrep does.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bramble: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
