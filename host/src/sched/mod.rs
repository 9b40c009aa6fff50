//! The scheduler: a deterministic, sans-IO state machine.
//!
//! Inputs are [`Event`]s (facts) with the current time passed in; outputs are [`Action`]s the
//! driver drains with [`Scheduler::poll_action`]. It never reads the clock, touches a socket,
//! a file or a process; deadlines come out of [`Scheduler::poll_timeout`] and a spurious
//! [`Scheduler::handle_timeout`] is harmless. What must survive a restart leaves as
//! [`Record`]s, which the driver persists before it sends anything that follows them.
//! Decision paths iterate `BTreeMap`s and break ties by id, so the same inputs give the same
//! outputs.
//!
//! Invariants (checked by the simulation tests after every step): a task runs on at most one
//! worker at a time; no worker runs more tasks than its slots; every item of a job gets
//! exactly one result, even when a task ran twice.

mod dispatch;
mod event;
mod job;
mod outcome;
mod placement;
mod speed;
mod targets;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bramble_wire::worker::CAP_COMMAND;
use bramble_wire::{
    Hello, JobId, JobKind, JobSpec, PROTOCOL_MINOR, TaskId, ToClient, ToWorker, Welcome, WorkerId,
    WorkerStatus,
};

pub use event::{Action, DisconnectReason, Event, Record, RequestId, SessionId, TaskRow};
pub use placement::Policy;

use job::{Job, Task};
use targets::TargetFilter;
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

/// An unfinished job read back from the store after a restart.
#[derive(Clone, Debug)]
pub struct RestoredJob {
    pub job: JobId,
    pub spec: JobSpec,
    pub tasks: Vec<TaskRow>,
    /// Tasks whose results are recorded.
    pub done: BTreeSet<TaskId>,
    /// Recorded results that did not exit 0.
    pub failed: u64,
    /// Attempts started per task.
    pub attempts: BTreeMap<TaskId, u32>,
    /// Attempts per task that failed and were retried.
    pub failed_attempts: BTreeMap<TaskId, u32>,
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
}

impl Scheduler {
    /// A scheduler that knows the ids given out before (name → id).
    pub fn new(config: SchedConfig, names: BTreeMap<String, WorkerId>) -> Self {
        Self {
            config,
            names,
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
        }
    }

    /// Takes back the unfinished jobs of a previous run. `next_job`/`next_task` are above
    /// every id ever stored, so ids are never reused.
    ///
    /// A resumed task whose latest attempt was placed on a worker is kept for that worker for
    /// one `worker_timeout` from `now`: it may still run the task, and given the task again it
    /// runs it once. After that the task goes to any worker.
    pub fn resume(&mut self, now: Instant, next_job: u64, next_task: u64, jobs: Vec<RestoredJob>) {
        self.next_job = self.next_job.max(next_job);
        self.next_task = self.next_task.max(next_task);
        for r in jobs {
            self.install_job(r.job, &r.spec, &r.tasks, Some(&r));
            for (task, worker) in &r.placed_on {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.kept_for = Some(*worker);
                    self.keep_until = Some(now + self.config.worker_timeout);
                }
            }
            self.finish_job_if_done(r.job);
        }
    }

    /// The job's bookkeeping and its unfinished tasks in the queue, for a new job or one
    /// restored from the store (whose done tasks are skipped and whose attempts and spent
    /// retries carry on).
    fn install_job(
        &mut self,
        id: JobId,
        spec: &JobSpec,
        rows: &[TaskRow],
        restored: Option<&RestoredJob>,
    ) {
        let mut open_tasks = BTreeSet::new();
        for row in rows
            .iter()
            .filter(|row| restored.is_none_or(|r| !r.done.contains(&row.task)))
        {
            let past = |m: fn(&RestoredJob) -> &BTreeMap<TaskId, u32>| {
                restored
                    .and_then(|r| m(r).get(&row.task).copied())
                    .unwrap_or(0)
            };
            let retries = spec.retries.saturating_sub(past(|r| &r.failed_attempts));
            let mut task = Task::new(id, job::items(spec, row, rows.len()), row.pin, retries);
            task.attempts = past(|r| &r.attempts);
            self.tasks.insert(row.task, task);
            self.queue.push_back(row.task);
            open_tasks.insert(row.task);
        }
        // Apply and scatter tasks are pinned; only map tasks choose among targets.
        let targets = if spec.kind == JobKind::Map {
            TargetFilter::for_map(spec)
        } else {
            None
        };
        let job = Job {
            command: spec.command.clone(),
            persistent: spec.persistent,
            targets,
            failed: restored.map_or(0, |r| r.failed),
            open_tasks,
        };
        self.jobs.insert(id, job);
    }

    /// Feeds one event.
    pub fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::WorkerConnected {
                session,
                name,
                hello,
                address,
            } => {
                self.handle_connected(now, session, name, hello, address);
            }
            Event::WorkerDisconnected { session } => {
                if let Some(id) = self.sessions.get(&session).copied() {
                    self.lose_worker(id);
                }
            }
            Event::TelemetryReceived { session, telemetry } => {
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
                if from
                    .and_then(|id| self.workers.get(&id))
                    .is_some_and(|w| w.hello.protocol_minor >= 2)
                {
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
            Event::CancelRequested { request, job } => {
                let msg = if self.cancel(job) {
                    ToClient::Done
                } else {
                    ToClient::Error {
                        message: format!("job {job} is not running"),
                    }
                };
                self.actions.push_back(Action::Reply { request, msg });
            }
        }
        self.dispatch(now);
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
        if self.keep_until.is_some_and(|t| t <= now) {
            // Workers that had tasks before the restart and did not come back: others take them.
            self.keep_until = None;
            for t in self.tasks.values_mut() {
                t.kept_for = None;
            }
        }
        self.dispatch(now);
    }

    /// The next thing for the driver to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Scheduler::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.workers
            .values()
            .map(|w| w.last_seen + self.config.worker_timeout)
            .chain(self.keep_until)
            .min()
    }

    /// Connected worker ids, ascending.
    pub fn ids(&self) -> Vec<WorkerId> {
        self.workers.keys().copied().collect()
    }

    /// One status row per connected worker, by id.
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

    fn handle_connected(
        &mut self,
        now: Instant,
        session: SessionId,
        name: String,
        hello: Hello,
        address: String,
    ) {
        let refuse = if hello.capabilities & CAP_COMMAND == 0 {
            Some("worker cannot run command tasks")
        } else if hello.slots == 0 {
            Some("worker announced 0 slots")
        } else {
            None
        };
        if let Some(reason) = refuse {
            let msg = ToWorker::Reject {
                reason: reason.to_owned(),
            };
            self.actions.push_back(Action::Send { session, msg });
            let reason = DisconnectReason::Rejected(reason.to_owned());
            self.actions
                .push_back(Action::Disconnect { session, reason });
            return;
        }
        let id = match self.names.get(&name) {
            Some(id) => *id,
            None => {
                let id = WorkerId(self.names.values().map(|w| w.0 + 1).max().unwrap_or(0));
                self.names.insert(name.clone(), id);
                self.actions.push_back(Action::Record(Record::IdAssigned {
                    worker: id,
                    name: name.clone(),
                }));
                id
            }
        };
        if let Some(old) = self.workers.get(&id).map(|w| w.session) {
            self.actions.push_back(Action::Disconnect {
                session: old,
                reason: DisconnectReason::Superseded,
            });
            self.lose_worker(id);
        }
        let heartbeat_ms = u32::try_from(self.config.heartbeat.as_millis()).unwrap_or(u32::MAX);
        let welcome = Welcome {
            worker: id,
            heartbeat_ms,
            protocol_minor: PROTOCOL_MINOR,
        };
        self.actions.push_back(Action::Send {
            session,
            msg: ToWorker::Welcome(welcome),
        });
        self.sessions.insert(session, id);
        self.workers
            .insert(id, WorkerEntry::new(session, name, address, hello, now));
    }

    /// Validates and plans a job; emits `JobCreated`, queues its tasks, returns its id and
    /// number of results.
    fn accept_job(&mut self, spec: &JobSpec) -> Result<(JobId, u64), String> {
        job::validate(spec)?;
        let targets_list = targets::resolve(&spec.targets, &self.workers)?;
        let id = JobId(self.next_job);
        self.next_job += 1;
        let rows = job::plan(spec, &targets_list, self.next_task);
        self.next_task += rows.len() as u64;
        self.install_job(id, spec, &rows, None);
        self.actions.push_back(Action::Record(Record::JobCreated {
            job: id,
            spec: spec.clone(),
            tasks: rows,
        }));
        Ok((id, job::total_results(spec, &targets_list)))
    }
}
