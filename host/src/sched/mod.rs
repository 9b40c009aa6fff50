//! The scheduler: a deterministic, sans-IO state machine.
//!
//! Inputs are [`Event`]s (facts) with the current time passed in; outputs are [`Action`]s the
//! driver drains with [`Scheduler::poll_action`]. It never reads the clock, touches a socket
//! or spawns anything; deadlines come out of [`Scheduler::poll_timeout`] and a spurious
//! [`Scheduler::handle_timeout`] is harmless. Decision paths iterate `BTreeMap`s and break
//! ties by id, so the same inputs always give the same outputs.
//!
//! Invariants (checked by the simulation tests after every step): a task runs on at most one
//! worker at a time; no worker runs more tasks than its slots; every item of a job gets
//! exactly one result, even when a task ran twice.

mod event;
mod job;
mod placement;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bramble_wire::worker::CAP_COMMAND;
use bramble_wire::{
    Attempt, Hello, ItemOutput, JobId, JobKind, JobSpec, Outcome, PROTOCOL_MINOR, Targets, TaskId,
    TaskResult, TaskSpec, ToClient, ToWorker, Welcome, WorkerId, WorkerStatus,
};

pub use event::{Action, ClientId, DisconnectReason, Event, SessionId};
pub use placement::Policy;

use job::{Job, Task};
use placement::Candidate;
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
            policy: Policy::LeastLoad,
            heartbeat: Duration::from_secs(1),
            worker_timeout: Duration::from_secs(5),
            max_losses: 3,
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedConfig,
    /// Every name that ever joined → its id. Persisted by the driver (`IdAssigned`).
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
                    w.telemetry = Some(telemetry);
                }
            }
            Event::TaskFinished { session, result } => {
                let from = self.sessions.get(&session).copied();
                self.touch(now, session);
                self.handle_result(from, result);
            }
            Event::JobSubmitted { client, spec } => self.handle_submit(client, spec),
            Event::ClientGone { client } => self.cancel_jobs_of(client),
        }
        self.dispatch();
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
        self.dispatch();
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
            .min()
    }

    /// Connected worker ids, ascending.
    pub fn ids(&self) -> Vec<WorkerId> {
        self.workers.keys().copied().collect()
    }

    /// One status row per connected worker, by id.
    pub fn status(&self, now: Instant) -> Vec<WorkerStatus> {
        self.workers
            .iter()
            .map(|(id, w)| w.status(*id, now))
            .collect()
    }

    /// The configuration in force.
    pub fn config(&self) -> &SchedConfig {
        &self.config
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
            Some("worker cannot run command tasks".to_owned())
        } else if hello.slots == 0 {
            Some("worker announced 0 slots".to_owned())
        } else {
            None
        };
        if let Some(reason) = refuse {
            self.actions.push_back(Action::Send {
                session,
                msg: ToWorker::Reject {
                    reason: reason.clone(),
                },
            });
            let reason = DisconnectReason::Rejected(reason);
            self.actions
                .push_back(Action::Disconnect { session, reason });
            return;
        }
        let id = match self.names.get(&name) {
            Some(id) => *id,
            None => {
                let id = WorkerId(self.names.values().map(|w| w.0 + 1).max().unwrap_or(0));
                self.names.insert(name.clone(), id);
                self.actions.push_back(Action::IdAssigned {
                    worker: id,
                    name: name.clone(),
                });
                id
            }
        };
        if let Some(old) = self.workers.get(&id).map(|w| w.session) {
            let reason = DisconnectReason::Superseded;
            self.actions.push_back(Action::Disconnect {
                session: old,
                reason,
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
        let entry = WorkerEntry {
            session,
            name,
            address,
            hello,
            connected_at: now,
            last_seen: now,
            telemetry: None,
            running: BTreeSet::new(),
            done: 0,
        };
        self.workers.insert(id, entry);
    }

    fn handle_submit(&mut self, client: ClientId, spec: JobSpec) {
        match self.accept_job(client, &spec) {
            Ok(()) => {}
            Err(message) => {
                self.actions.push_back(Action::Reply {
                    client,
                    msg: ToClient::Error { message },
                });
                self.actions.push_back(Action::CloseClient { client });
            }
        }
    }

    fn accept_job(&mut self, client: ClientId, spec: &JobSpec) -> Result<(), String> {
        job::validate(spec)?;
        let targets: Vec<WorkerId> = match &spec.targets {
            Targets::All => self.ids(),
            Targets::Ids(ids) => {
                if let Some(missing) = ids.iter().find(|id| !self.workers.contains_key(id)) {
                    return Err(format!("worker {missing} is not connected"));
                }
                ids.clone()
            }
        };
        if targets.is_empty() {
            return Err("no workers connected".into());
        }
        let id = JobId(self.next_job);
        self.next_job += 1;
        let total = job::total_items(spec, &targets);
        self.actions.push_back(Action::Reply {
            client,
            msg: ToClient::JobAccepted { job: id, total },
        });
        let mut open_tasks = BTreeSet::new();
        for task in job::split(id, spec, &targets) {
            let tid = TaskId(self.next_task);
            self.next_task += 1;
            self.tasks.insert(tid, task);
            self.queue.push_back(tid);
            open_tasks.insert(tid);
        }
        let targets = match (&spec.targets, spec.kind) {
            (Targets::Ids(_), JobKind::Map) => Some(targets.into_iter().collect()),
            _ => None,
        };
        let job = Job {
            client,
            command: spec.command.clone(),
            targets,
            reported: 0,
            failed: 0,
            open_tasks,
        };
        self.jobs.insert(id, job);
        self.finish_job_if_done(id);
        Ok(())
    }

    /// Places queued tasks on free slots, oldest task first.
    fn dispatch(&mut self) {
        let mut free: usize = self
            .workers
            .values()
            .map(|w| usize::try_from(w.slots().saturating_sub(w.running())).unwrap_or(0))
            .sum();
        let mut i = 0;
        while free > 0 && i < self.queue.len() {
            let tid = self.queue[i];
            let Some(choice) = self.choose_worker(tid) else {
                i += 1;
                continue;
            };
            self.queue.remove(i);
            self.start(tid, choice);
            free -= 1;
        }
    }

    fn choose_worker(&self, tid: TaskId) -> Option<WorkerId> {
        let task = self.tasks.get(&tid)?;
        let targets = self.jobs.get(&task.job).and_then(|j| j.targets.as_ref());
        let candidates: Vec<Candidate> = self
            .workers
            .iter()
            .filter(|(id, w)| {
                w.has_free_slot()
                    && task.pin.is_none_or(|p| p == **id)
                    && targets.is_none_or(|t| t.contains(id))
            })
            .map(|(id, w)| Candidate {
                id: *id,
                running: w.running(),
                slots: w.slots(),
            })
            .collect();
        placement::place(self.config.policy, &candidates, self.last_placed)
    }

    fn start(&mut self, tid: TaskId, worker: WorkerId) {
        let (Some(task), Some(w)) = (self.tasks.get_mut(&tid), self.workers.get_mut(&worker))
        else {
            return;
        };
        let Some(job) = self.jobs.get(&task.job) else {
            return;
        };
        let attempt = Attempt(task.attempts);
        task.attempts += 1;
        task.running_on = Some((worker, attempt));
        w.running.insert(tid);
        self.last_placed = Some(worker);
        let spec = TaskSpec {
            task: tid,
            attempt,
            command: job.command.clone(),
            items: task.items.clone(),
        };
        self.actions.push_back(Action::Send {
            session: w.session,
            msg: ToWorker::RunTask(spec),
        });
    }

    /// Records a task's result once; later copies (a task that ran twice) are dropped.
    fn handle_result(&mut self, from: Option<WorkerId>, result: TaskResult) {
        if let Some(w) = from.and_then(|id| self.workers.get_mut(&id)) {
            w.running.remove(&result.task);
        }
        let Some(task) = self.tasks.remove(&result.task) else {
            return; // already recorded, or its job is gone
        };
        if let Some((other, _)) = task
            .running_on
            .filter(|(w, a)| (Some(*w), *a) != (from, result.attempt))
        {
            // Another attempt is still running elsewhere: this result wins, stop that one.
            if let Some(w) = self.workers.get_mut(&other) {
                w.running.remove(&result.task);
                let msg = ToWorker::CancelTask { task: result.task };
                self.actions.push_back(Action::Send {
                    session: w.session,
                    msg,
                });
            }
        }
        if task.running_on.is_none() {
            self.queue.retain(|t| *t != result.task);
        }
        let worker = from
            .or(task.running_on.map(|(w, _)| w))
            .unwrap_or(WorkerId(u32::MAX));
        let mut outputs = result.outputs;
        for item in &task.items {
            let output = match outputs.iter().position(|o| o.index == item.index) {
                Some(pos) => outputs.swap_remove(pos),
                None => lost_output(item.index, "the worker returned no result for this item"),
            };
            self.report(task.job, worker, output);
        }
        if let Some(w) = from.and_then(|id| self.workers.get_mut(&id)) {
            w.done += task.items.len() as u64;
        }
        if let Some(job) = self.jobs.get_mut(&task.job) {
            job.open_tasks.remove(&result.task);
        }
        self.finish_job_if_done(task.job);
    }

    fn report(&mut self, job_id: JobId, worker: WorkerId, output: ItemOutput) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        job.reported += 1;
        if !output.outcome.is_success() {
            job.failed += 1;
        }
        let msg = ToClient::ItemDone {
            job: job_id,
            worker,
            output,
        };
        self.actions.push_back(Action::Reply {
            client: job.client,
            msg,
        });
    }

    fn finish_job_if_done(&mut self, id: JobId) {
        if self.jobs.get(&id).is_some_and(|j| j.open_tasks.is_empty())
            && let Some(job) = self.jobs.remove(&id)
        {
            let msg = ToClient::JobFinished {
                job: id,
                failed: job.failed,
            };
            self.actions.push_back(Action::Reply {
                client: job.client,
                msg,
            });
            self.actions
                .push_back(Action::CloseClient { client: job.client });
        }
    }

    /// Forgets a connected worker; its running tasks go back to the queue front, or fail as
    /// lost once they have lost too many workers.
    fn lose_worker(&mut self, id: WorkerId) {
        let Some(w) = self.workers.remove(&id) else {
            return;
        };
        self.sessions.remove(&w.session);
        for tid in w.running.iter().rev() {
            let Some(task) = self.tasks.get_mut(tid) else {
                continue;
            };
            task.running_on = None;
            task.losses += 1;
            if task.losses < self.config.max_losses {
                self.queue.push_front(*tid);
                continue;
            }
            let (job, items) = (task.job, task.items.clone());
            self.tasks.remove(tid);
            for item in items {
                let why = format!("lost {} workers while running it", self.config.max_losses);
                self.report(job, id, lost_output(item.index, &why));
            }
            if let Some(j) = self.jobs.get_mut(&job) {
                j.open_tasks.remove(tid);
            }
            self.finish_job_if_done(job);
        }
    }

    /// Drops every job of `client`: queued tasks are forgotten, running ones cancelled.
    fn cancel_jobs_of(&mut self, client: ClientId) {
        let ids: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.client == client)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(job) = self.jobs.remove(&id) else {
                continue;
            };
            for tid in &job.open_tasks {
                let Some(task) = self.tasks.remove(tid) else {
                    continue;
                };
                if let Some(w) = task.running_on.and_then(|(w, _)| self.workers.get_mut(&w)) {
                    w.running.remove(tid);
                    let msg = ToWorker::CancelTask { task: *tid };
                    self.actions.push_back(Action::Send {
                        session: w.session,
                        msg,
                    });
                }
            }
            self.queue.retain(|t| !job.open_tasks.contains(t));
        }
    }
}

fn lost_output(index: u64, why: &str) -> ItemOutput {
    ItemOutput {
        index,
        outcome: Outcome::Lost,
        stdout: Vec::new(),
        stderr: format!("bramble: {why}\n").into_bytes(),
        truncated_bytes: 0,
        duration_ms: 0,
    }
}
