//! Runs a command task's processes: spawn each item's command in its own process group, feed
//! stdin, capture stdout/stderr up to a cap, and kill the whole group on timeout or cancel.

use std::process::Stdio;
use std::time::{Duration, Instant};

use bramble_wire::{Command, Item, ItemOutput, Outcome, TaskResult, TaskSpec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::limits::{ExecLimits, check_allowed};
use crate::template::{Invocation, expand};

/// Runs every item of `spec` in turn. `cancel` turning true kills the running item and marks
/// the rest cancelled.
pub(crate) async fn run_task(
    spec: TaskSpec,
    command: &Command,
    limits: &ExecLimits,
    mut cancel: watch::Receiver<bool>,
) -> TaskResult {
    let mut outputs = Vec::with_capacity(spec.items.len());
    for item in &spec.items {
        let output = if *cancel.borrow() {
            ItemOutput::ended(item.index, Outcome::Cancelled, 0)
        } else {
            run_item(command, item, limits, &mut cancel).await
        };
        outputs.push(output);
    }
    TaskResult::of(&spec, outputs)
}

pub(crate) async fn run_item(
    command: &Command,
    item: &Item,
    limits: &ExecLimits,
    cancel: &mut watch::Receiver<bool>,
) -> ItemOutput {
    let started = Instant::now();
    let Invocation { argv, stdin } = expand(command, item);
    let Some((program, args)) = argv.split_first() else {
        return ItemOutput::ended(item.index, Outcome::StartFailed("empty command".into()), 0);
    };
    if let Err(why) = check_allowed(program, limits) {
        return ItemOutput::ended(item.index, Outcome::StartFailed(why), 0);
    }
    let stdin_mode = if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut cmd = limits.command(program, args, stdin_mode);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let why = Outcome::StartFailed(format!("{program}: {e}"));
            return ItemOutput::ended(item.index, why, millis(started.elapsed()));
        }
    };
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A process that never reads its stdin must not block us: write from a task.
        tokio::spawn(async move {
            let _ = pipe.write_all(&bytes).await;
        });
    }
    let pid = child.id();
    if let (Some(sim), Some(pid)) = (&limits.sim, pid) {
        sim.track(pid);
    }
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let cap = limits.max_output_bytes;
    let run = async {
        tokio::join!(
            child.wait(),
            read_capped(stdout, cap),
            read_capped(stderr, cap)
        )
    };
    tokio::pin!(run);
    let deadline =
        (command.timeout_ms > 0).then(|| started + Duration::from_millis(command.timeout_ms));
    let mut killed = None;
    let (status, (out, out_dropped), (err, err_dropped)) = loop {
        tokio::select! {
            r = &mut run => break r,
            () = sleep_until(deadline), if killed.is_none() => {
                kill_group(pid);
                killed = Some(Outcome::TimedOut);
            }
            changed = cancel.changed(), if killed.is_none() => {
                if changed.is_err() || *cancel.borrow() {
                    kill_group(pid);
                    killed = Some(Outcome::Cancelled);
                }
            }
        }
    };
    if let (Some(sim), Some(pid)) = (&limits.sim, pid) {
        sim.untrack(pid);
    }
    let outcome = killed.unwrap_or_else(|| match status {
        Ok(status) => exit_outcome(status),
        Err(e) => Outcome::StartFailed(format!("waiting for {program}: {e}")),
    });
    ItemOutput {
        stdout: out,
        stderr: err,
        truncated_bytes: out_dropped + err_dropped,
        ..ItemOutput::ended(item.index, outcome, millis(started.elapsed()))
    }
}

pub(crate) fn exit_outcome(status: std::process::ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Exited(code),
        (None, Some(signal)) => Outcome::Signaled(signal),
        (None, None) => Outcome::Exited(-1),
    }
}

/// Reads a pipe to its end, keeping at most `cap` bytes; returns them and the count dropped.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> (Vec<u8>, u64) {
    let Some(mut pipe) = pipe else {
        return (Vec::new(), 0);
    };
    let mut kept = Vec::new();
    let mut dropped = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, dropped),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
                dropped += (n - room) as u64;
            }
        }
    }
}

/// Kills the process group led by `pid` (every process the task started, unless one left it).
pub(crate) fn kill_group(pid: Option<u32>) {
    let pid = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        // ESRCH (already gone) is fine: the group ended on its own.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::{Attempt, TaskId, Work};

    fn command_of(s: &TaskSpec) -> Command {
        s.work.command().expect("a command task").0.clone()
    }

    fn spec(argv: &[&str], items: Vec<Item>, timeout_ms: u64) -> TaskSpec {
        TaskSpec {
            task: TaskId(1),
            attempt: Attempt(0),
            job: bramble_wire::JobId(1),
            work: Work::Command {
                command: Command {
                    argv: argv.iter().map(|s| (*s).to_owned()).collect(),
                    shell: false,
                    timeout_ms,
                },
                persistent: false,
            },
            items,
            engine: None,
        }
    }

    fn limits(max: usize) -> ExecLimits {
        ExecLimits {
            max_output_bytes: max,
            work_dir: None,
            allow: None,
            sim: None,
        }
    }

    fn run(s: TaskSpec, l: ExecLimits) -> TaskResult {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (_tx, rx) = watch::channel(false);
        let command = command_of(&s);
        rt.block_on(run_task(s, &command, &l, rx))
    }

    #[test]
    fn runs_items_with_substitution_and_stdin() {
        let items = vec![
            Item {
                index: 0,
                value: Some(b"abc".to_vec()),
            },
            Item {
                index: 1,
                value: Some(b"de".to_vec()),
            },
        ];
        let r = run(spec(&["wc", "-c"], items, 0), limits(1024));
        let outs: Vec<&[u8]> = r.outputs.iter().map(|o| o.stdout.as_slice()).collect();
        assert_eq!(outs, [&b"4\n"[..], &b"3\n"[..]]);
        assert!(r.outputs.iter().all(|o| o.outcome == Outcome::Exited(0)));
    }

    #[test]
    fn exit_codes_missing_programs_and_signals() {
        let item = || {
            vec![Item {
                index: 0,
                value: None,
            }]
        };
        assert_eq!(
            run(spec(&["false"], item(), 0), limits(10)).outputs[0].outcome,
            Outcome::Exited(1)
        );
        let r = run(spec(&["/nonexistent/prog"], item(), 0), limits(10));
        assert!(
            matches!(&r.outputs[0].outcome, Outcome::StartFailed(m) if m.contains("/nonexistent/prog"))
        );
        let r = run(spec(&["sh", "-c", "kill -TERM $$"], item(), 0), limits(10));
        assert_eq!(r.outputs[0].outcome, Outcome::Signaled(15));
    }

    #[test]
    fn output_is_capped_and_counted() {
        let r = run(
            spec(
                &["sh", "-c", "head -c 5000 /dev/zero"],
                vec![Item {
                    index: 0,
                    value: None,
                }],
                0,
            ),
            limits(1000),
        );
        assert_eq!(r.outputs[0].stdout.len(), 1000);
        assert_eq!(r.outputs[0].truncated_bytes, 4000);
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        // The grandchild holds stdout open: only a group kill lets the task end.
        let argv = ["sh", "-c", "sleep 30 & sleep 30; echo never"];
        let r = run(
            spec(
                &argv,
                vec![Item {
                    index: 0,
                    value: None,
                }],
                300,
            ),
            limits(100),
        );
        assert_eq!(r.outputs[0].outcome, Outcome::TimedOut);
    }
}
