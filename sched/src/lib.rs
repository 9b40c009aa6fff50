//! bramble's scheduler: a deterministic, sans-IO state machine. It owns the decisions of the
//! host (which worker gets which task, when a worker is lost, retries, speculation, drains,
//! the end of a job); the host's driver feeds it and carries out what it says. This crate
//! depends on the wire types only, so the compiler keeps it free of IO, clocks and runtimes.
//!
//! Inputs are [`Event`]s (facts) with the current time passed in; outputs are [`Action`]s the
//! driver drains with [`Scheduler::poll_action`]. It never reads the clock, touches a socket,
//! a file or a process; deadlines come out of [`Scheduler::poll_timeout`] and a spurious
//! [`Scheduler::handle_timeout`] is harmless. What must survive a restart leaves as
//! [`Record`]s, which the driver persists before it sends anything that follows them.
//! Decision paths iterate `BTreeMap`s and break ties by id, so the same inputs give the same
//! outputs.
//!
//! Invariants ([`Scheduler::check_invariants`], checked by the host's simulation tests after
//! every step): a task runs on at most one worker at a time (two with a speculative backup);
//! no worker holds more tasks than twice its slots; every task is queued or placed, never
//! both. Every item of a job gets exactly one result, even when a task ran twice.

mod admit;
mod dispatch;
mod event;
mod forecast;
mod history;
mod invariants;
mod job;
mod membership;
mod outcome;
mod pass;
mod placement;
mod python;
mod speed;
mod targets;
#[cfg(test)]
mod test_clock;
mod worker;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bramble_wire::{
    EngineId, EngineInfo, JobId, JobSpec, TaskId, ToClient, ToWorker, WorkerHistory, WorkerId,
    WorkerStatus,
};

pub use event::{Action, DisconnectReason, Event, Record, RequestId, SessionId, TaskRow};
pub use job::MAX_CHUNKSIZE;
pub use placement::Policy;

use history::History;
use job::{Job, Task};
use worker::WorkerEntry;

/// Tunables of the scheduler.
#[derive(Clone, Debug)]
pub struct SchedConfig {
    pub policy: Policy,
    /// How often workers are asked to send telemetry.
    pub heartbeat: Duration,
    /// A worker silent for this long is lost: disconnected and its tasks re-queued.
    pub worker_timeout: Duration,
    /// A task whose worker was lost this many times fails with [`Outcome::Lost`].
    pub max_losses: u32,
}

impl Default for SchedConfig {
    fn default() -> Self {
        Self {
            policy: Policy::Thermal,
            heartbeat: Duration::from_secs(1),
            worker_timeout: Duration::from_secs(5),
            max_losses: 3,
        }
    }
}

/// What the scheduler knows from before it started (the job store): ids by worker name,
/// drained names, engine ids by (worker name, slot).
#[derive(Clone, Debug, Default)]
pub struct Known {
    pub names: BTreeMap<String, WorkerId>,
    pub drained: BTreeSet<String>,
    pub engines: BTreeMap<(String, u16), EngineId>,
}

/// An unfinished job read back from the store after a restart.
#[derive(Clone, Debug)]
pub struct RestoredJob {
    pub job: JobId,
    pub spec: JobSpec,
    /// Its tasks without a recorded result.
    pub tasks: Vec<TaskRow>,
    /// Items cut into tasks before the restart (a map job's next task starts here).
    pub planned: u64,
    /// Results the job will have.
    pub total: u64,
    /// Recorded results that did not exit 0.
    pub failed: u64,
    /// Attempts started per task.
    pub attempts: BTreeMap<TaskId, u32>,
    /// Attempts per task that failed and were retried.
    pub failed_attempts: BTreeMap<TaskId, u32>,
    /// It was winding down (`--halt soon`): tasks never placed are not run.
    pub winding_down: bool,
    /// Where each task's latest attempt was placed, unless it failed: that worker may still
    /// run it (or hold its result), so it gets the task first when it reconnects.
    pub placed_on: BTreeMap<TaskId, WorkerId>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedConfig,
    /// Every name that ever joined → its id.
    names: BTreeMap<String, WorkerId>,
    /// Names drained by a client (`bramble drain`): nothing new is placed on them.
    drained: BTreeSet<String>,
    /// Every (name, slot) that ever offered an engine → its id.
    engine_ids: BTreeMap<(String, u16), EngineId>,
    /// Connected workers.
    workers: BTreeMap<WorkerId, WorkerEntry>,
    sessions: BTreeMap<SessionId, WorkerId>,
    jobs: BTreeMap<JobId, Job>,
    tasks: BTreeMap<TaskId, Task>,
    /// Tasks waiting for a slot, oldest first.
    queue: VecDeque<TaskId>,
    next_job: u64,
    next_task: u64,
    last_placed: Option<WorkerId>,
    actions: VecDeque<Action>,
    /// After a restart, tasks are kept for the worker that had them until then.
    keep_until: Option<Instant>,
    /// A placement pass is due (at this time) before the next action.
    dispatch_at: Option<Instant>,
    /// No worker's heartbeat deadline is before this (it may be later: a worker heard from
    /// since moves its own deadline, not this). Recomputed at each timeout, so a thousand
    /// workers' telemetry does not cost a walk over all of them per message.
    silence_check: Option<Instant>,
    /// Each worker name's telemetry over the last hour (bounded per name).
    histories: BTreeMap<String, History>,
}

impl Scheduler {
    /// A scheduler that knows what was given out before (see [`Known`]).
    pub fn new(config: SchedConfig, known: Known) -> Self {
        Self {
            config,
            names: known.names,
            drained: known.drained,
            engine_ids: known.engines,
            workers: BTreeMap::new(),
            sessions: BTreeMap::new(),
            jobs: BTreeMap::new(),
            tasks: BTreeMap::new(),
            queue: VecDeque::new(),
            next_job: 1,
            next_task: 1,
            last_placed: None,
            actions: VecDeque::new(),
            keep_until: None,
            dispatch_at: None,
            silence_check: None,
            histories: BTreeMap::new(),
        }
    }

    /// Feeds one event.
    pub fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::WorkerConnected {
                session,
                name,
                hello,
                address,
                enrolled,
            } => {
                self.handle_connected(now, session, name, hello, address, enrolled);
            }
            Event::WorkerDisconnected { session } => {
                if let Some(id) = self.sessions.get(&session).copied() {
                    self.lose_worker(id);
                }
            }
            Event::TelemetryReceived { session, telemetry } => {
                let worker = self
                    .sessions
                    .get(&session)
                    .and_then(|id| self.workers.get(id));
                if let Some(name) = worker.map(|w| w.name.as_str()) {
                    match self.histories.get_mut(name) {
                        Some(h) => h.record(now, &telemetry),
                        None => {
                            let mut h = History::default();
                            h.record(now, &telemetry);
                            self.histories.insert(name.to_owned(), h);
                        }
                    }
                }
                if let Some(w) = self.touch(now, session) {
                    w.speed.observe_telemetry(now, &telemetry);
                    w.telemetry = Some(telemetry);
                }
            }
            Event::TaskFinished { session, result } => {
                let from = self.sessions.get(&session).copied();
                self.touch(now, session);
                // Sent after this batch's records are committed (the driver's rule), so the
                // worker forgets only what is on disk; duplicates are acknowledged too. Queued
                // ahead of anything the result leads to (a retry), so the worker hears of it
                // first.
                if from.is_some() {
                    let msg = ToWorker::ResultRecorded {
                        task: result.task,
                        attempt: result.attempt,
                    };
                    self.actions.push_back(Action::Send { session, msg });
                }
                self.handle_result(from, result, now);
            }
            Event::TaskRefused {
                session,
                task,
                attempt,
            } => {
                if let Some(id) = self.sessions.get(&session).copied() {
                    self.touch(now, session);
                    self.handle_refusal(id, task, attempt);
                }
            }
            Event::PythonReported { session, report } => {
                if let Some(w) = self.touch(now, session) {
                    w.python = Some(report);
                }
            }
            Event::BoardReported { session, model } => {
                if let Some(w) = self.touch(now, session) {
                    let name = w.name.clone();
                    let model: String = model.chars().take(120).collect();
                    self.histories.entry(name).or_default().model = Some(model);
                }
            }
            Event::OutputReceived { session, chunk } => {
                let from = self.sessions.get(&session).copied();
                self.touch(now, session);
                if let Some(worker) = from {
                    self.forward_output(worker, chunk);
                }
            }
            Event::JobSubmitted { request, spec } => match self.accept_job(&spec) {
                Ok((job, total)) => {
                    self.actions.push_back(Action::Reply {
                        request,
                        msg: ToClient::JobAccepted { job, total },
                    });
                    self.finish_job_if_done(job);
                }
                Err(message) => {
                    self.actions.push_back(Action::Reply {
                        request,
                        msg: ToClient::Error { message },
                    });
                }
            },
            Event::CancelRequested { request, job, soon } => {
                let stopped = if soon {
                    self.wind_down(job)
                } else {
                    self.cancel(job)
                };
                let msg = if stopped {
                    ToClient::Done
                } else {
                    ToClient::Error {
                        message: format!("job {job} is not running"),
                    }
                };
                self.actions.push_back(Action::Reply { request, msg });
            }
            Event::DrainRequested {
                request,
                worker,
                draining,
            } => {
                let msg = match self.set_draining(&worker, draining) {
                    Ok(()) => ToClient::Done,
                    Err(message) => ToClient::Error { message },
                };
                self.actions.push_back(Action::Reply { request, msg });
            }
        }
        self.dispatch_soon(now);
    }

    /// Declares workers lost whose heartbeat deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<(WorkerId, SessionId)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.last_seen + self.config.worker_timeout <= now)
            .map(|(id, w)| (*id, w.session))
            .collect();
        for (id, session) in expired {
            let reason = DisconnectReason::HeartbeatTimeout(self.config.worker_timeout);
            self.actions
                .push_back(Action::Disconnect { session, reason });
            self.lose_worker(id);
        }
        self.silence_check = self
            .workers
            .values()
            .map(|w| w.last_seen + self.config.worker_timeout)
            .min();
        if self.keep_until.is_some_and(|t| t <= now) {
            // Workers that had tasks before the restart and did not come back: others take them.
            self.keep_until = None;
            for t in self.tasks.values_mut() {
                t.kept_for = None;
            }
        }
        self.dispatch_soon(now);
    }

    /// The next thing for the driver to do. Placement runs here, once for everything handled
    /// since the last call: a batch of events (telemetry from a thousand workers, a burst of
    /// results) costs one pass over the workers, not one each.
    pub fn poll_action(&mut self) -> Option<Action> {
        if let Some(now) = self.dispatch_at.take() {
            self.dispatch(now);
        }
        self.actions.pop_front()
    }

    /// Asks for a placement pass before the next action is given out.
    fn dispatch_soon(&mut self, now: Instant) {
        self.dispatch_at = Some(self.dispatch_at.map_or(now, |t| t.max(now)));
    }

    /// When [`Scheduler::handle_timeout`] must be called next (at the latest: a worker heard
    /// from meanwhile makes that call find nothing due).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.silence_check.into_iter().chain(self.keep_until).min()
    }

    /// How many workers are connected.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Connected worker ids, ascending.
    pub fn ids(&self) -> Vec<WorkerId> {
        self.workers.keys().copied().collect()
    }

    /// One status row per connected worker, by id.
    /// Every worker's telemetry of the last `within` (an hour at most is kept), by name.
    pub fn history(&self, now: Instant, within: Duration) -> Vec<WorkerHistory> {
        self.histories
            .iter()
            .map(|(name, h)| WorkerHistory {
                name: name.clone(),
                id: self.names.get(name).copied(),
                model: h.model.clone(),
                samples: h.samples(now, within),
            })
            .collect()
    }

    pub fn status(&self, now: Instant) -> Vec<WorkerStatus> {
        let fastest = self
            .workers
            .values()
            .filter_map(|w| {
                w.speed
                    .full_clock_ms()
                    .map(|full| w.speed.expected_ms(full))
            })
            .fold(f64::INFINITY, f64::min);
        self.workers
            .iter()
            .map(|(id, w)| w.status(*id, now, fastest))
            .collect()
    }

    /// Every engine of the connected workers, by id.
    pub fn engines(&self) -> Vec<EngineInfo> {
        let mut list: Vec<EngineInfo> = self
            .workers
            .iter()
            .flat_map(|(id, w)| {
                w.engines
                    .iter()
                    .zip(0u16..)
                    .map(|(engine, slot)| EngineInfo {
                        engine: *engine,
                        worker: *id,
                        name: w.name.clone(),
                        slot,
                        python: w.python.clone(),
                        draining: w.draining,
                    })
            })
            .collect();
        list.sort_by_key(|e| e.engine);
        list
    }

    /// Whether the job is still running.
    pub fn is_running(&self, job: JobId) -> bool {
        self.jobs.contains_key(&job)
    }

    fn touch(&mut self, now: Instant, session: SessionId) -> Option<&mut WorkerEntry> {
        let id = self.sessions.get(&session)?;
        let w = self.workers.get_mut(id)?;
        w.last_seen = now;
        Some(w)
    }
}
