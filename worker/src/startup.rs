//! The worker's startup command (`startup_command` in worker.toml, like ipyparallel's): run
//! once after every connect; its failure is reported in telemetry, never fatal.

use std::time::Duration;

use bramble_wire::{Command, Item};
use tokio::sync::watch;

use crate::exec::millis;
use crate::limits::ExecLimits;

/// Runs `argv` once (the startup command): Ok on exit 0, else why not, with the first line
/// of its stderr.
pub(crate) async fn run_once(
    argv: &[String],
    limits: &ExecLimits,
    timeout: Duration,
) -> Result<(), String> {
    let command = Command {
        argv: argv.to_vec(),
        shell: false,
        timeout_ms: millis(timeout),
    };
    let (_tx, mut rx) = watch::channel(false);
    // The startup command comes from the worker's own config, not from the network: the
    // allow list (which guards tasks) does not apply to it.
    let limits = ExecLimits {
        allow: None,
        ..limits.clone()
    };
    let out = crate::exec::run_item(
        &command,
        &Item {
            index: 0,
            value: None,
        },
        &limits,
        &mut rx,
    )
    .await;
    if out.outcome.is_success() {
        return Ok(());
    }
    let first_line = String::from_utf8_lossy(&out.stderr)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut msg = format!("{}: {}", argv.join(" "), out.outcome);
    if !first_line.is_empty() {
        msg.push_str(": ");
        msg.push_str(&first_line);
    }
    Err(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_startup_command_says_how_with_its_first_stderr_line() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let limits = ExecLimits {
            max_output_bytes: 1024,
            work_dir: None,
            allow: Some(vec![]),
            sim: None,
        };
        let argv: Vec<String> = ["sh", "-c", "echo no disk >&2; echo more >&2; exit 4"]
            .map(String::from)
            .to_vec();
        let err = rt
            .block_on(run_once(&argv, &limits, Duration::from_secs(10)))
            .unwrap_err();
        assert_eq!(
            err,
            "sh -c echo no disk >&2; echo more >&2; exit 4: exit status 4: no disk"
        );
        let ok: Vec<String> = vec!["true".into()];
        assert!(
            rt.block_on(run_once(&ok, &limits, Duration::from_secs(10)))
                .is_ok()
        );
    }
}
