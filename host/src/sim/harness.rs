//! A simulated cluster for the scheduler: virtual clock, simulated workers with speeds, seeded
//! faults, the real job store in memory (so a host restart resumes exactly as the real host
//! does), and the scheduler's invariants checked after every step (like quinn's `Pair` and
//! raft-rs's `Network`). No sockets, no tokio, no real time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bramble_sched::{Action, Event, Known, Record, RequestId, SchedConfig, Scheduler, SessionId};
use bramble_wire::worker::{AHEAD_PER_SLOT, CAP_COMMAND};
use bramble_wire::{
    Command, Hello, ItemOutput, JobId, JobKind, JobSpec, JobState, Megahertz, MilliCelsius,
    Outcome, Targets, TaskId, TaskResult, TaskSpec, Telemetry, ThrottleFlags, ToClient, ToWorker,
    Work, WorkerId,
};

use super::worker::{Rng, SimWorker};
use crate::store::Store;

/// What the client of one job saw.
#[derive(Default)]
pub(crate) struct JobLog {
    pub(crate) job: Option<JobId>,
    pub(crate) total: Option<u64>,
    pub(crate) items: BTreeMap<u64, (WorkerId, Outcome)>,
    pub(crate) duplicates: u64,
    pub(crate) ended: Option<JobState>,
    /// Virtual time from submission to the end.
    pub(crate) makespan: Option<Duration>,
    submitted: Option<Instant>,
    pub(crate) error: Option<String>,
}

pub(crate) struct Sim {
    pub(crate) sched: Scheduler,
    config: SchedConfig,
    store: Store,
    /// The virtual clock's start (the store's timestamps count from here).
    start: Instant,
    pub(crate) now: Instant,
    pub(crate) rng: Rng,
    pub(crate) workers: Vec<SimWorker>,
    /// Per submitted request, what its client saw.
    pub(crate) jobs: BTreeMap<RequestId, JobLog>,
    job_requests: BTreeMap<JobId, RequestId>,
    next_session: u64,
    next_request: u64,
    next_telemetry: Instant,
    pub(crate) seed: u64,
    /// Events workers send back at once, fed after the current one.
    answers: std::collections::VecDeque<Event>,
    /// Item times vary ±10 % (seeded), as real ones do.
    pub(crate) jitter: bool,
}

impl Sim {
    pub(crate) fn new(config: SchedConfig, seed: u64) -> Self {
        let now = Instant::now();
        Self {
            sched: Scheduler::new(config.clone(), Known::default()),
            config,
            store: Store::open_in_memory().expect("an in-memory store"),
            start: now,
            now,
            rng: Rng(seed),
            workers: Vec::new(),
            jobs: BTreeMap::new(),
            job_requests: BTreeMap::new(),
            next_session: 1,
            next_request: 1,
            next_telemetry: now,
            seed,
            answers: std::collections::VecDeque::new(),
            jitter: false,
        }
    }

    /// Adds a worker (not yet connected); returns its index.
    pub(crate) fn add_worker(&mut self, slots: u16, item_ms: u64) -> usize {
        let i = self.workers.len();
        self.workers
            .push(SimWorker::new(format!("w{i}"), slots, item_ms));
        i
    }

    pub(crate) fn connect(&mut self, i: usize) {
        let session = SessionId(self.next_session);
        self.next_session += 1;
        self.workers[i].session = Some(session);
        let hello = Hello {
            protocol_minor: bramble_wire::PROTOCOL_MINOR,
            capabilities: CAP_COMMAND,
            slots: self.workers[i].slots,
            boot_id: i as u64,
            labels: self.workers[i].labels.clone(),
            arch: "sim".into(),
            version: "0".into(),
        };
        let name = self.workers[i].name.clone();
        self.feed(Event::WorkerConnected {
            session,
            name,
            hello,
            address: format!("sim:{i}"),
            enrolled: None,
        });
        // Like the real worker: everything in the outbox is sent at once, and kept until the
        // host confirms it.
        let pending = std::mem::take(&mut self.workers[i].outbox);
        self.workers[i].unacked.extend(pending.iter().cloned());
        for result in pending {
            self.feed(Event::TaskFinished { session, result });
        }
    }

    /// The connection drops (the worker keeps running its tasks).
    pub(crate) fn disconnect(&mut self, i: usize) {
        if let Some(session) = self.workers[i].session.take() {
            self.workers[i].connection_lost();
            self.feed(Event::WorkerDisconnected { session });
        }
    }

    /// The host process dies and starts again from the store: every connection drops, the
    /// workers keep running and reconnect later.
    pub(crate) fn restart_host(&mut self) {
        for w in &mut self.workers {
            w.session = None;
            w.connection_lost();
        }
        let store = &self.store;
        let mut sched = Scheduler::new(self.config.clone(), store.known().expect("known ids"));
        let (next_job, next_task) = store.next_ids().expect("next ids");
        let unfinished = store.unfinished_jobs().expect("unfinished jobs");
        sched.resume(self.now, next_job, next_task, unfinished);
        self.sched = sched;
        self.drain_actions();
        self.check_invariants();
    }

    pub(crate) fn submit_spec(&mut self, spec: JobSpec) -> RequestId {
        let request = RequestId(self.next_request);
        self.next_request += 1;
        self.jobs.insert(
            request,
            JobLog {
                submitted: Some(self.now),
                ..JobLog::default()
            },
        );
        self.feed(Event::JobSubmitted { request, spec });
        request
    }

    pub(crate) fn submit(
        &mut self,
        kind: JobKind,
        items: usize,
        chunksize: u32,
        targets: Targets,
    ) -> RequestId {
        self.submit_spec(spec(kind, items, chunksize, targets))
    }

    /// Cancels the job submitted by `request`: at once, or winding it down (`soon`).
    pub(crate) fn cancel(&mut self, request: RequestId, soon: bool) {
        let job = self.jobs[&request].job.expect("job accepted");
        let cancel = RequestId(self.next_request);
        self.next_request += 1;
        self.feed(Event::CancelRequested {
            request: cancel,
            job,
            soon,
        });
    }

    pub(crate) fn feed(&mut self, event: Event) {
        self.sched.handle(self.now, event);
        self.drain_actions();
        // What workers answered at once (refusals).
        while let Some(event) = self.answers.pop_front() {
            self.sched.handle(self.now, event);
            self.drain_actions();
        }
        self.check_invariants();
    }

    fn drain_actions(&mut self) {
        while let Some(action) = self.sched.poll_action() {
            match action {
                Action::Send { session, msg } => self.deliver(session, msg),
                Action::Disconnect { session, .. } => {
                    if let Some(w) = self.workers.iter_mut().find(|w| w.session == Some(session)) {
                        w.session = None;
                        w.connection_lost();
                    }
                }
                Action::Reply { request, msg } => self.replied(request, msg),
                Action::Record(record) => {
                    let ms = (self.now - self.start).as_millis() as u64;
                    self.store
                        .apply(std::slice::from_ref(&record), ms)
                        .expect("the store takes every record");
                    self.recorded(record);
                }
                Action::Tell { .. } => {}
            }
        }
    }

    fn deliver(&mut self, session: SessionId, msg: ToWorker) {
        let now = self.now;
        let jitter = if self.jitter {
            900 + self.rng.below(201)
        } else {
            1000
        };
        let Some(w) = self.workers.iter_mut().find(|w| w.session == Some(session)) else {
            return; // the connection is gone; the frame is lost
        };
        match msg {
            ToWorker::RunTask(TaskSpec {
                task,
                attempt,
                items,
                ..
            }) => {
                if w.adopt(task, attempt) {
                    return;
                }
                let per_item = w.item_ms * jitter / 1000;
                let idx = items.iter().map(|i| i.index).collect();
                if w.running.len() < usize::from(w.slots) {
                    w.begin(task, attempt, idx, per_item, now);
                } else if w.waiting.len() < usize::from(w.slots) * AHEAD_PER_SLOT as usize {
                    // Like the real worker: tasks sent ahead wait for a slot.
                    w.waiting.push_back((task, attempt, idx, per_item));
                } else {
                    // It still runs tasks the host's books do not show (a restarted host).
                    w.refused += 1;
                    self.answers.push_back(Event::TaskRefused {
                        session,
                        task,
                        attempt,
                    });
                    return;
                }
                w.started += 1;
            }
            ToWorker::CancelTask { task } => {
                w.waiting.retain(|q| q.0 != task);
                // Like the real worker: the killed task's slot goes to a waiting one.
                if w.running.remove(&task).is_some() {
                    w.start_waiting(now);
                }
            }
            ToWorker::Welcome(_)
            | ToWorker::Reject { .. }
            | ToWorker::Drain
            | ToWorker::Undrain
            | ToWorker::JobEnded { .. } => {}
            ToWorker::ResultRecorded { task, attempt } => {
                w.unacked.retain(|r| (r.task, r.attempt) != (task, attempt));
            }
        }
    }

    fn replied(&mut self, request: RequestId, msg: ToClient) {
        let Some(log) = self.jobs.get_mut(&request) else {
            return;
        };
        match msg {
            ToClient::JobAccepted { job, total } => {
                log.job = Some(job);
                log.total = Some(total);
                self.job_requests.insert(job, request);
            }
            ToClient::Error { message } => log.error = Some(message),
            _ => {}
        }
    }

    fn log_mut(&mut self, job: JobId) -> Option<&mut JobLog> {
        let request = self.job_requests.get(&job)?;
        self.jobs.get_mut(request)
    }

    fn recorded(&mut self, record: Record) {
        let seed = self.seed;
        match record {
            Record::ResultRecorded {
                job,
                worker,
                output,
                ..
            } => {
                if let Some(l) = self.log_mut(job) {
                    assert!(
                        l.ended.is_none(),
                        "result after the job ended (seed {seed})"
                    );
                    if l.items
                        .insert(output.index, (worker, output.outcome))
                        .is_some()
                    {
                        l.duplicates += 1;
                    }
                }
            }
            Record::JobEnded { job, state, .. } => {
                let now = self.now;
                if let Some(l) = self.log_mut(job) {
                    l.ended = Some(state);
                    l.makespan = l.submitted.map(|s| now - s);
                }
            }
            _ => {}
        }
    }

    /// Moves the virtual clock to the next thing that happens (a task finishing, a telemetry
    /// tick, a scheduler deadline) but not past `limit`, and processes it.
    pub(crate) fn step(&mut self, limit: Instant) {
        let next_finish = self
            .workers
            .iter()
            .filter(|w| !w.frozen)
            .flat_map(|w| w.running.values().map(|r| r.1))
            .min();
        let next = [
            next_finish,
            Some(self.next_telemetry),
            self.sched.poll_timeout(),
            Some(limit),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(limit);
        self.now = self.now.max(next);
        if self.now >= self.next_telemetry {
            self.next_telemetry = self.now + Duration::from_secs(1);
            for i in 0..self.workers.len() {
                let w = &self.workers[i];
                if let (Some(session), false) = (w.session, w.frozen) {
                    let telemetry = Telemetry {
                        running: w.running.len() as u16,
                        arm_clock: w.clock.map(|c| Megahertz(c.0)),
                        arm_max: w.clock.map(|c| Megahertz(c.1)),
                        cpu_temp: w.temp_c.map(|c| MilliCelsius((c * 1000.0) as i32)),
                        throttle: Some(ThrottleFlags(w.throttle)),
                        ..Telemetry::default()
                    };
                    self.feed(Event::TelemetryReceived { session, telemetry });
                }
            }
        }
        for i in 0..self.workers.len() {
            if self.workers[i].frozen {
                continue;
            }
            let now = self.now;
            let done: Vec<TaskId> = self.workers[i]
                .running
                .iter()
                .filter(|(_, r)| r.1 <= now)
                .map(|(t, _)| *t)
                .collect();
            for task in done {
                let Some((attempt, _, items, ms)) = self.workers[i].running.remove(&task) else {
                    continue;
                };
                self.workers[i].start_waiting(now);
                let code = i32::from(self.workers[i].failing);
                let outputs = items
                    .into_iter()
                    .map(|index| output(index, code, ms))
                    .collect();
                let result = TaskResult {
                    task,
                    attempt,
                    outputs,
                    engine: None,
                };
                match self.workers[i].session {
                    Some(session) => {
                        // Kept until confirmed (the confirmation comes within this feed).
                        self.workers[i].unacked.push(result.clone());
                        if code != 0 && self.workers[i].resend_failures {
                            // As if the connection dropped before the confirmation came.
                            let again = result.clone();
                            self.feed(Event::TaskFinished { session, result });
                            self.feed(Event::TaskFinished {
                                session,
                                result: again,
                            });
                        } else {
                            self.feed(Event::TaskFinished { session, result });
                        }
                    }
                    None => self.workers[i].outbox.push(result),
                }
            }
        }
        self.sched.handle_timeout(self.now);
        self.drain_actions();
        self.check_invariants();
    }

    /// Steps until every job ended, or panics after `max_steps` (a livelock is a failure).
    pub(crate) fn run_until_jobs_done(&mut self, max_steps: usize) {
        for _ in 0..max_steps {
            if self
                .jobs
                .values()
                .all(|j| j.ended.is_some() || j.error.is_some())
            {
                return;
            }
            let limit = self.now + Duration::from_secs(60);
            self.step(limit);
        }
        panic!(
            "jobs not done after {max_steps} steps; replay with SIM_SEED={}",
            self.seed
        );
    }

    pub(crate) fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step(end);
        }
    }

    /// The scheduler's invariants, checked after every event.
    fn check_invariants(&self) {
        if let Err(e) = self.sched.check_invariants() {
            panic!("{e} (seed {})", self.seed);
        }
    }

    /// Asserts every finished job got each item exactly once, with nothing lost, and that
    /// the host confirmed every result a connected worker sent (a worker keeps what is not
    /// confirmed, and sends it all again after a reconnect).
    pub(crate) fn assert_all_results_once(&self) {
        for w in self.workers.iter().filter(|w| w.session.is_some()) {
            assert!(
                w.unacked.is_empty(),
                "{} holds {} results the host never confirmed (seed {})",
                w.name,
                w.unacked.len(),
                self.seed
            );
        }
        for (request, log) in &self.jobs {
            let total = log
                .total
                .unwrap_or_else(|| panic!("job of {request:?} not accepted: {:?}", log.error));
            assert_eq!(
                log.ended,
                Some(JobState::Done),
                "job of {request:?} (seed {})",
                self.seed
            );
            assert_eq!(log.duplicates, 0, "duplicate results (seed {})", self.seed);
            let want: Vec<u64> = (0..total).collect();
            assert_eq!(
                log.items.keys().copied().collect::<Vec<_>>(),
                want,
                "seed {}",
                self.seed
            );
        }
    }
}

/// A job running the command `work` over `items` numbered inputs.
pub(crate) fn spec(kind: JobKind, items: usize, chunksize: u32, targets: Targets) -> JobSpec {
    JobSpec {
        kind,
        work: Work::Command {
            command: Command {
                argv: vec!["work".into()],
                shell: false,
                timeout_ms: 0,
            },
            persistent: false,
        },
        items: (0..items).map(|i| i.to_string().into_bytes()).collect(),
        chunksize,
        targets,
        retries: 0,
        range: None,
    }
}

fn output(index: u64, code: i32, duration_ms: u64) -> ItemOutput {
    ItemOutput::ended(index, Outcome::Exited(code), duration_ms)
}

/// Seeds for randomised tests: `SIM_SEED=n` replays one.
pub(crate) fn seeds(n: u64) -> std::ops::Range<u64> {
    std::env::var("SIM_SEED").map_or(0..n, |s| {
        let s: u64 = s.parse().expect("SIM_SEED is a number");
        s..s + 1
    })
}
