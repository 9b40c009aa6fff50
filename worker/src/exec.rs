//! Runs a task's processes: spawn each item's command in its own process group, feed stdin,
//! capture stdout/stderr up to a cap, and kill the whole group on timeout or cancel.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bramble_wire::{Command, Item, ItemOutput, Outcome, TaskResult, TaskSpec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::template::{Invocation, expand};

/// Limits applied to every process.
#[derive(Clone, Debug)]
pub(crate) struct ExecLimits {
    /// Per stream (stdout, stderr) bytes kept; the rest is counted and dropped.
    pub(crate) max_output_bytes: usize,
    /// Working directory of task processes; the worker's own when `None`.
    pub(crate) work_dir: Option<PathBuf>,
    /// Programs tasks may start (by name or full path); anything when `None`.
    pub(crate) allow: Option<Vec<String>>,
    /// Simulation: tasks get `BRAMBLE_SIM_SPEED` and are duty-cycled to the simulated clock.
    pub(crate) sim: Option<std::sync::Arc<crate::sim::SimHooks>>,
}

impl ExecLimits {
    /// A task process: its own process group (so timeouts and cancel kill all of it), pipes
    /// for output, the work dir, `BRAMBLE_SIM_SPEED` when simulating, and none of systemd's
    /// notify variables (a task must not speak for the worker).
    pub(crate) fn command(
        &self,
        program: &str,
        args: &[String],
        stdin: Stdio,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .process_group(0)
            .kill_on_drop(true)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &self.work_dir {
            cmd.current_dir(dir);
        }
        if let Some(sim) = &self.sim {
            cmd.env("BRAMBLE_SIM_SPEED", format!("{:.4}", sim.speed()));
            if let Some(file) = sim.speed_file() {
                cmd.env("BRAMBLE_SIM_SPEED_FILE", file);
            }
        }
        for var in crate::watchdog::PRIVATE_ENV {
            cmd.env_remove(var);
        }
        cmd
    }
}

/// Refuses a program the worker's allow list does not name. With `--shell` the program is
/// `sh`, which can run anything: it must be allowed explicitly.
pub(crate) fn check_allowed(program: &str, limits: &ExecLimits) -> Result<(), String> {
    let Some(allow) = &limits.allow else {
        return Ok(());
    };
    let name = std::path::Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program);
    if allow.iter().any(|a| a == program || a == name) {
        Ok(())
    } else {
        Err(format!("{program} is not in this worker's allow list"))
    }
}

/// Runs every item of `spec` in turn. `cancel` turning true kills the running item and marks
/// the rest cancelled.
pub(crate) async fn run_task(
    spec: TaskSpec,
    limits: &ExecLimits,
    mut cancel: watch::Receiver<bool>,
) -> TaskResult {
    let mut outputs = Vec::with_capacity(spec.items.len());
    for item in &spec.items {
        let output = if *cancel.borrow() {
            ended(item.index, Outcome::Cancelled, Duration::ZERO)
        } else {
            run_item(&spec.command, item, limits, &mut cancel).await
        };
        outputs.push(output);
    }
    TaskResult {
        task: spec.task,
        attempt: spec.attempt,
        outputs,
    }
}

async fn run_item(
    command: &Command,
    item: &Item,
    limits: &ExecLimits,
    cancel: &mut watch::Receiver<bool>,
) -> ItemOutput {
    let started = Instant::now();
    let Invocation { argv, stdin } = expand(command, item);
    let Some((program, args)) = argv.split_first() else {
        return ended(
            item.index,
            Outcome::StartFailed("empty command".into()),
            Duration::ZERO,
        );
    };
    if let Err(why) = check_allowed(program, limits) {
        return ended(item.index, Outcome::StartFailed(why), Duration::ZERO);
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
            return ended(item.index, why, started.elapsed());
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
        index: item.index,
        outcome,
        stdout: out,
        stderr: err,
        truncated_bytes: out_dropped + err_dropped,
        duration_ms: millis(started.elapsed()),
    }
}

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
    let out = run_item(
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
    let what = match &out.outcome {
        Outcome::Exited(c) => format!("exit status {c}"),
        Outcome::Signaled(s) => format!("signal {s}"),
        Outcome::StartFailed(why) => why.clone(),
        Outcome::TimedOut => "timed out".into(),
        Outcome::Cancelled | Outcome::Lost => "stopped".into(),
    };
    let mut msg = format!("{}: {what}", argv.join(" "));
    if !first_line.is_empty() {
        msg.push_str(": ");
        msg.push_str(&first_line);
    }
    Err(msg)
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

pub(crate) fn ended(index: u64, outcome: Outcome, took: Duration) -> ItemOutput {
    ItemOutput {
        index,
        outcome,
        stdout: Vec::new(),
        stderr: Vec::new(),
        truncated_bytes: 0,
        duration_ms: millis(took),
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::{Attempt, TaskId};

    fn spec(argv: &[&str], items: Vec<Item>, timeout_ms: u64) -> TaskSpec {
        TaskSpec {
            task: TaskId(1),
            attempt: Attempt(0),
            command: Command {
                argv: argv.iter().map(|s| (*s).to_owned()).collect(),
                shell: false,
                timeout_ms,
            },
            items,
            job: bramble_wire::JobId(1),
            persistent: false,
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
        rt.block_on(run_task(s, &l, rx))
    }

    #[test]
    fn runs_items_with_substitution_and_stdin() {
        let items = vec![
            Item {
                index: 0,
                value: Some("abc".into()),
            },
            Item {
                index: 1,
                value: Some("de".into()),
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
        assert!(
            r.outputs[0].duration_ms < 10_000,
            "took {} ms",
            r.outputs[0].duration_ms
        );
    }
}

#[cfg(test)]
mod allow_tests {
    use super::*;

    #[test]
    fn allow_list_matches_names_and_paths() {
        let limits = ExecLimits {
            max_output_bytes: 10,
            work_dir: None,
            allow: Some(vec!["echo".into(), "/opt/x/run".into()]),
            sim: None,
        };
        assert!(check_allowed("echo", &limits).is_ok());
        assert!(check_allowed("/bin/echo", &limits).is_ok());
        assert!(check_allowed("/opt/x/run", &limits).is_ok());
        assert!(
            check_allowed("sh", &limits)
                .unwrap_err()
                .contains("allow list")
        );
        let open = ExecLimits {
            allow: None,
            ..limits
        };
        assert!(check_allowed("anything", &open).is_ok());
    }
}
