//! Running a Python task: each item in the task's engine, one after the other. Output is
//! streamed as it is printed (within the worker's cap) and kept for the result; a cancel or a
//! timeout interrupts the item (SIGINT) and kills the engine if it does not stop within a grace
//! period; an engine that dies fails its item with how it died.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bramble_wire::{Item, ItemOutput, Outcome, OutputChunk, TaskResult, TaskSpec};
use tokio::sync::{mpsc, watch};

use super::frames::{FromEngine, Status, ToEngine};
use super::{Engine, Engines};
use crate::exec::{millis, sleep_until};
use crate::limits::ExecLimits;

/// How long an interrupted item may take to stop before its engine is killed.
const GRACE: Duration = Duration::from_secs(2);

/// What a task needs besides its spec.
pub(crate) struct PythonRun<'a> {
    pub(crate) engines: &'a Engines,
    pub(crate) limits: &'a ExecLimits,
    /// The job's function envelope (kept by the worker per job).
    pub(crate) function: Option<Arc<Vec<u8>>>,
    /// The engine (slot) the core chose.
    pub(crate) slot: u16,
    pub(crate) output: mpsc::UnboundedSender<OutputChunk>,
}

/// Runs every item of `spec` in engine `run.slot`. `cancel` turning true interrupts the
/// running item and marks the rest cancelled.
pub(crate) async fn run_task(
    spec: TaskSpec,
    run: PythonRun<'_>,
    mut cancel: watch::Receiver<bool>,
) -> TaskResult {
    let timeout_ms = spec.work.timeout_ms();
    let lease = run.engines.take(run.slot);
    let (mut engine, mut loaded, mut forget) = (lease.engine, lease.loaded, lease.forget);
    let mut outputs = Vec::with_capacity(spec.items.len());
    for item in &spec.items {
        if *cancel.borrow() {
            outputs.push(ItemOutput::ended(item.index, Outcome::Cancelled, 0));
            continue;
        }
        let started = Instant::now();
        let ready = match engine.take() {
            Some(e) => Ok(e),
            None => {
                loaded.clear();
                Engine::start(run.engines.python(), run.limits).await
            }
        };
        let mut e = match ready {
            Ok(e) => e,
            Err(why) => {
                let took = millis(started.elapsed());
                outputs.push(ItemOutput::ended(
                    item.index,
                    Outcome::StartFailed(why),
                    took,
                ));
                continue;
            }
        };
        for job in forget.drain(..) {
            e.queue(&ToEngine::Forget { job });
            loaded.remove(&job);
        }
        if !loaded.contains(&spec.job.0) {
            let Some(function) = &run.function else {
                let why = "the job's function never reached this worker".to_owned();
                outputs.push(ItemOutput::ended(item.index, Outcome::StartFailed(why), 0));
                engine = Some(e);
                continue;
            };
            e.queue(&ToEngine::Load {
                job: spec.job.0,
                function,
            });
            loaded.insert(spec.job.0);
        }
        let deadline = (timeout_ms > 0).then(|| started + Duration::from_millis(timeout_ms));
        let (output, survived) =
            run_item(e, &spec, item, &run, deadline, &mut cancel, started).await;
        outputs.push(output);
        engine = survived;
    }
    run.engines.give_back(run.slot, engine, loaded);
    TaskResult {
        task: spec.task,
        attempt: spec.attempt,
        outputs,
        engine: Some(run.slot),
    }
}

/// Runs one item; returns its output and the engine, unless it died or was killed.
async fn run_item(
    mut e: Engine,
    spec: &TaskSpec,
    item: &Item,
    run: &PythonRun<'_>,
    deadline: Option<Instant>,
    cancel: &mut watch::Receiver<bool>,
    started: Instant,
) -> (ItemOutput, Option<Engine>) {
    let msg = ToEngine::Run {
        job: spec.job.0,
        item: item.value.as_deref(),
    };
    // With the FORGETs and LOAD queued before it.
    if e.send(&msg).await.is_err() {
        let why = e.death().await;
        return (died(item.index, why, started), None);
    }
    let cap = run.limits.max_output_bytes;
    let mut out = ItemOutput::ended(item.index, Outcome::Returned, 0);
    // Why it was interrupted, and when the engine must have stopped.
    let mut stopping: Option<(Outcome, Instant)> = None;
    loop {
        let kill_at = stopping.as_ref().map(|(_, at)| *at);
        let frame = tokio::select! {
            frame = e.next() => frame,
            () = sleep_until(deadline), if stopping.is_none() => {
                e.interrupt();
                stopping = Some((Outcome::TimedOut, Instant::now() + GRACE));
                continue;
            }
            changed = cancel.changed(), if stopping.is_none() => {
                if changed.is_err() || *cancel.borrow() {
                    e.interrupt();
                    stopping = Some((Outcome::Cancelled, Instant::now() + GRACE));
                }
                continue;
            }
            () = sleep_until(kill_at) => {
                // It did not stop: its namespace goes with it.
                e.kill();
                let _ = e.death().await;
                let why = stopping.map_or(Outcome::Cancelled, |(o, _)| o);
                out.outcome = why;
                out.duration_ms = millis(started.elapsed());
                return (out, None);
            }
        };
        match frame {
            Ok(FromEngine::Output { stream, data }) => {
                keep_output(&mut out, stream, &data, cap, spec, item, run);
            }
            Ok(FromEngine::Done { status, value }) => {
                out.outcome = match (status, stopping) {
                    (Status::Interrupted, Some((why, _))) => why,
                    (Status::Interrupted, None) => Outcome::Cancelled,
                    (Status::Returned, _) => Outcome::Returned,
                    (Status::Raised, _) => Outcome::Raised,
                };
                out.value = value;
                out.duration_ms = millis(started.elapsed());
                return (out, Some(e));
            }
            Ok(FromEngine::Hello { .. }) | Err(()) => {
                let why = e.death().await;
                let mut dead = died(item.index, why, started);
                dead.stdout = out.stdout;
                dead.stderr = out.stderr;
                dead.truncated_bytes = out.truncated_bytes;
                return (dead, None);
            }
        }
    }
}

/// Keeps what an item printed, within the cap per stream, and streams what is kept.
fn keep_output(
    out: &mut ItemOutput,
    stream: u8,
    data: &[u8],
    cap: usize,
    spec: &TaskSpec,
    item: &Item,
    run: &PythonRun<'_>,
) {
    let kept = if stream == 2 {
        &mut out.stderr
    } else {
        &mut out.stdout
    };
    let room = cap.saturating_sub(kept.len()).min(data.len());
    kept.extend_from_slice(&data[..room]);
    out.truncated_bytes += (data.len() - room) as u64;
    if room > 0 {
        let _ = run.output.send(OutputChunk {
            task: spec.task,
            index: item.index,
            stream,
            data: data[..room].to_vec(),
        });
    }
}

fn died(index: u64, why: String, started: Instant) -> ItemOutput {
    ItemOutput::ended(index, Outcome::EngineDied(why), millis(started.elapsed()))
}
