//! `--persistent` co-processes: per job, each slot keeps one long-lived process that gets one
//! item per line on stdin and answers with one line on stdout. A co-process that dies fails
//! its current item (with the tail of its stderr) and is started afresh for the next one.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bramble_wire::{Command, ItemOutput, JobId, Outcome, TaskResult, TaskSpec};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::watch;

use crate::exec::{exit_outcome, kill_group, millis, sleep_until};
use crate::limits::{ExecLimits, check_allowed};
use crate::tail::StderrTail;
use crate::template::{Invocation, expand};

/// One running co-process.
pub(crate) struct Coproc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Its last words, for the item it fails when it dies.
    stderr: StderrTail,
    /// Simulation: the duty cycler slows this process group while it lives.
    sim: Option<Arc<crate::sim::SimHooks>>,
}

impl Drop for Coproc {
    fn drop(&mut self) {
        // Never leave a stale group for the duty cycler: its pid could be reused.
        if let (Some(sim), Some(pid)) = (&self.sim, self.child.id()) {
            sim.untrack(pid);
        }
    }
}

/// Idle co-processes by job. Shared by the task runners; never locked across an await.
#[derive(Clone, Default)]
pub(crate) struct Pool(Arc<Mutex<BTreeMap<JobId, Vec<Coproc>>>>);

impl Pool {
    fn take(&self, job: JobId) -> Option<Coproc> {
        self.0.lock().ok()?.get_mut(&job)?.pop()
    }

    fn put(&self, job: JobId, cp: Coproc) {
        if let Ok(mut pool) = self.0.lock() {
            pool.entry(job).or_default().push(cp);
        }
    }

    /// The job ended: its co-processes are killed.
    pub(crate) fn end_job(&self, job: JobId) {
        let ended = self
            .0
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&job))
            .unwrap_or_default();
        for cp in ended {
            kill_group(cp.child.id());
        }
    }
}

/// Runs a persistent task's items through this job's co-processes.
pub(crate) async fn run_task(
    spec: TaskSpec,
    command: &Command,
    limits: &ExecLimits,
    pool: &Pool,
    mut cancel: watch::Receiver<bool>,
) -> TaskResult {
    let mut outputs = Vec::with_capacity(spec.items.len());
    for item in &spec.items {
        let started = Instant::now();
        if *cancel.borrow() {
            outputs.push(ItemOutput::ended(item.index, Outcome::Cancelled, 0));
            continue;
        }
        let line = item.value.as_deref().unwrap_or_default();
        if line.contains(&b'\n') {
            let why = "item contains a newline; --persistent feeds one line per item".to_owned();
            outputs.push(ItemOutput::ended(item.index, Outcome::StartFailed(why), 0));
            continue;
        }
        let cp = match pool.take(spec.job) {
            Some(cp) => cp,
            None => match spawn(command, limits) {
                Ok(cp) => cp,
                Err(why) => {
                    let took = millis(started.elapsed());
                    outputs.push(ItemOutput::ended(
                        item.index,
                        Outcome::StartFailed(why),
                        took,
                    ));
                    continue;
                }
            },
        };
        let (output, keep) = ask(cp, line, command, &mut cancel, started).await;
        let output = ItemOutput {
            index: item.index,
            ..output
        };
        if let Some(cp) = keep {
            pool.put(spec.job, cp);
        }
        outputs.push(output);
    }
    TaskResult::of(&spec, outputs)
}

fn spawn(command: &Command, limits: &ExecLimits) -> Result<Coproc, String> {
    // Started once for many items: no item to substitute; `{}` stays as written.
    let item = bramble_wire::Item {
        index: 0,
        value: None,
    };
    let Invocation { argv, .. } = expand(command, &item);
    let (program, args) = argv.split_first().ok_or("empty command")?;
    check_allowed(program, limits)?;
    let mut cmd = limits.command(program, args, Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{program}: {e}"))?;
    if let (Some(sim), Some(pid)) = (&limits.sim, child.id()) {
        // Slowed while alive; a group that is gone is simply not signalled.
        sim.track(pid);
    }
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("co-process pipes missing".into());
    };
    Ok(Coproc {
        child,
        stdin,
        stdout: BufReader::new(stdout),
        stderr: StderrTail::follow(stderr),
        sim: limits.sim.clone(),
    })
}

/// Sends one line, reads one line back. Returns the output and the co-process if it is still
/// usable.
async fn ask(
    mut cp: Coproc,
    line: &[u8],
    command: &Command,
    cancel: &mut watch::Receiver<bool>,
    started: Instant,
) -> (ItemOutput, Option<Coproc>) {
    let deadline =
        (command.timeout_ms > 0).then(|| started + Duration::from_millis(command.timeout_ms));
    let mut answer = String::new();
    let exchange = async {
        cp.stdin.write_all(line).await?;
        cp.stdin.write_all(b"\n").await?;
        cp.stdin.flush().await?;
        cp.stdout.read_line(&mut answer).await
    };
    let read = tokio::select! {
        r = exchange => Some(r),
        () = sleep_until(deadline) => None,
        _ = wait_cancelled(cancel) => {
            kill_group(cp.child.id());
            return (ItemOutput::ended(0, Outcome::Cancelled, millis(started.elapsed())), None);
        }
    };
    match read {
        Some(Ok(n)) if n > 0 => {
            let mut out = ItemOutput::ended(0, Outcome::Exited(0), millis(started.elapsed()));
            out.stdout = answer.into_bytes();
            (out, Some(cp))
        }
        Some(_) => {
            // EOF or a broken pipe: the co-process died; report how, with its last words.
            let status = tokio::time::timeout(Duration::from_secs(5), cp.child.wait()).await;
            let outcome = match status {
                Ok(Ok(status)) => exit_outcome(status),
                _ => {
                    kill_group(cp.child.id());
                    Outcome::StartFailed("co-process closed its stdout".into())
                }
            };
            let mut out = ItemOutput::ended(0, outcome, millis(started.elapsed()));
            out.stderr = cp.stderr.finish().await;
            (out, None)
        }
        None => {
            kill_group(cp.child.id());
            let took = millis(started.elapsed());
            (ItemOutput::ended(0, Outcome::TimedOut, took), None)
        }
    }
}

async fn wait_cancelled(cancel: &mut watch::Receiver<bool>) {
    loop {
        if *cancel.borrow() {
            return;
        }
        if cancel.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::{Attempt, Item, TaskId, Work};

    fn command_of(s: &TaskSpec) -> Command {
        s.work.command().expect("a command task").0.clone()
    }

    fn spec(script: &str, values: &[&str]) -> TaskSpec {
        TaskSpec {
            task: TaskId(1),
            attempt: Attempt(0),
            job: JobId(7),
            work: Work::Command {
                command: Command {
                    argv: vec!["sh".into(), "-c".into(), script.into()],
                    shell: false,
                    timeout_ms: 2000,
                },
                persistent: true,
            },
            items: values
                .iter()
                .zip(0..)
                .map(|(v, index)| Item {
                    index,
                    value: Some(v.as_bytes().to_vec()),
                })
                .collect(),
            engine: None,
        }
    }

    fn limits() -> ExecLimits {
        ExecLimits {
            max_output_bytes: 1024,
            work_dir: None,
            allow: None,
            sim: None,
        }
    }

    fn run(pool: &Pool, s: TaskSpec) -> TaskResult {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (_tx, rx) = watch::channel(false);
        let command = command_of(&s);
        rt.block_on(run_task(s, &command, &limits(), pool, rx))
    }

    #[test]
    fn one_process_answers_many_items_and_is_reused() {
        let pool = Pool::default();
        // Each answer carries the process id: all items of both tasks hit one process.
        let script = r#"while read l; do echo "$$:$l"; done"#;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (_tx, rx) = watch::channel(false);
        let (a, b) = rt.block_on(async {
            let (s1, s2) = (spec(script, &["a", "b"]), spec(script, &["c"]));
            let command = command_of(&s1);
            let a = run_task(s1, &command, &limits(), &pool, rx.clone()).await;
            let b = run_task(s2, &command, &limits(), &pool, rx).await;
            (a, b)
        });
        let outs: Vec<String> = a
            .outputs
            .iter()
            .chain(&b.outputs)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .collect();
        let pid = outs[0].split(':').next().unwrap().to_owned();
        assert_eq!(
            outs,
            [
                format!("{pid}:a\n"),
                format!("{pid}:b\n"),
                format!("{pid}:c\n")
            ]
        );
        assert_eq!(b.outputs[0].index, 0);
        pool.end_job(JobId(7));
        assert!(pool.take(JobId(7)).is_none());
    }

    #[test]
    fn a_dying_coprocess_fails_its_item_and_is_restarted() {
        let pool = Pool::default();
        let script = r#"read l; echo "first $l"; read l; echo dying >&2; exit 3"#;
        let r = run(&pool, spec(script, &["1", "2", "3"]));
        let outcomes: Vec<&Outcome> = r.outputs.iter().map(|o| &o.outcome).collect();
        assert_eq!(
            outcomes,
            [
                &Outcome::Exited(0),
                &Outcome::Exited(3),
                &Outcome::Exited(0)
            ]
        );
        assert_eq!(r.outputs[1].stderr, b"dying\n");
        assert_eq!(
            r.outputs[2].stdout, b"first 3\n",
            "a fresh process took item 3"
        );
        pool.end_job(JobId(7));
    }

    #[test]
    fn a_silent_coprocess_times_out() {
        let pool = Pool::default();
        let mut s = spec("read l; sleep 30", &["x"]);
        if let Work::Command { command, .. } = &mut s.work {
            command.timeout_ms = 300;
        }
        let r = run(&pool, s);
        assert_eq!(r.outputs[0].outcome, Outcome::TimedOut);
        assert!(
            pool.take(JobId(7)).is_none(),
            "a timed-out co-process is not reused"
        );
    }
}
