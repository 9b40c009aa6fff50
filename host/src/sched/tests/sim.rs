//! A simulated cluster for the scheduler: virtual clock, simulated workers with speeds, seeded
//! faults, and the scheduler's invariants checked after every step (like quinn's `Pair` and
//! raft-rs's `Network`). No sockets, no tokio, no real time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bramble_wire::worker::CAP_COMMAND;
use bramble_wire::{
    Attempt, Command, Hello, ItemOutput, JobKind, JobSpec, Outcome, Targets, TaskId, TaskResult,
    TaskSpec, Telemetry, ToClient, ToWorker, WorkerId,
};

use crate::sched::{Action, ClientId, Event, SchedConfig, Scheduler, SessionId};

/// SplitMix64: seedable and tiny.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One simulated worker process.
pub(crate) struct SimWorker {
    pub(crate) name: String,
    pub(crate) slots: u16,
    /// Milliseconds one item takes on this worker.
    pub(crate) item_ms: u64,
    /// Current connection, if connected.
    pub(crate) session: Option<SessionId>,
    /// Stopped (like SIGSTOP): sends nothing, runs nothing, until resumed.
    pub(crate) frozen: bool,
    /// Running tasks: id → (attempt, finish time, items).
    running: BTreeMap<TaskId, (Attempt, Instant, Vec<u64>)>,
    /// Results finished while disconnected, delivered on the next connection.
    outbox: Vec<TaskResult>,
    /// Most tasks this worker ever ran at once.
    pub(crate) peak_running: usize,
}

impl SimWorker {
    /// The process restarted: nothing running, nothing buffered.
    pub(crate) fn restart(&mut self) {
        self.running.clear();
        self.outbox.clear();
    }
}

/// What one client saw for one job.
#[derive(Default)]
pub(crate) struct JobLog {
    pub(crate) total: Option<u64>,
    pub(crate) items: BTreeMap<u64, (WorkerId, Outcome)>,
    pub(crate) duplicates: u64,
    pub(crate) finished: bool,
    pub(crate) error: Option<String>,
}

pub(crate) struct Sim {
    pub(crate) sched: Scheduler,
    pub(crate) now: Instant,
    pub(crate) rng: Rng,
    pub(crate) workers: Vec<SimWorker>,
    pub(crate) jobs: BTreeMap<ClientId, JobLog>,
    next_session: u64,
    next_client: u64,
    next_telemetry: Instant,
    pub(crate) seed: u64,
}

impl Sim {
    pub(crate) fn new(config: SchedConfig, seed: u64) -> Self {
        let now = Instant::now();
        Self {
            sched: Scheduler::new(config, BTreeMap::new()),
            now,
            rng: Rng(seed),
            workers: Vec::new(),
            jobs: BTreeMap::new(),
            next_session: 1,
            next_client: 1,
            next_telemetry: now,
            seed,
        }
    }

    /// Adds a worker (not yet connected); returns its index.
    pub(crate) fn add_worker(&mut self, slots: u16, item_ms: u64) -> usize {
        let i = self.workers.len();
        self.workers.push(SimWorker {
            name: format!("w{i}"),
            slots,
            item_ms,
            session: None,
            frozen: false,
            running: BTreeMap::new(),
            outbox: Vec::new(),
            peak_running: 0,
        });
        i
    }

    pub(crate) fn connect(&mut self, i: usize) {
        let session = SessionId(self.next_session);
        self.next_session += 1;
        self.workers[i].session = Some(session);
        let hello = Hello {
            protocol_minor: 0,
            capabilities: CAP_COMMAND,
            slots: self.workers[i].slots,
            boot_id: i as u64,
            labels: vec![],
            arch: "sim".into(),
            version: "0".into(),
        };
        let name = self.workers[i].name.clone();
        self.feed(Event::WorkerConnected {
            session,
            name,
            hello,
            address: format!("sim:{i}"),
        });
        for result in std::mem::take(&mut self.workers[i].outbox) {
            self.feed(Event::TaskFinished { session, result });
        }
    }

    /// The connection drops (the worker keeps running its tasks).
    pub(crate) fn disconnect(&mut self, i: usize) {
        if let Some(session) = self.workers[i].session.take() {
            self.feed(Event::WorkerDisconnected { session });
        }
    }

    pub(crate) fn submit(
        &mut self,
        kind: JobKind,
        items: usize,
        chunksize: u32,
        targets: Targets,
    ) -> ClientId {
        let client = ClientId(self.next_client);
        self.next_client += 1;
        self.jobs.insert(client, JobLog::default());
        let spec = JobSpec {
            kind,
            command: Command {
                argv: vec!["work".into()],
                shell: false,
                timeout_ms: 0,
            },
            items: (0..items).map(|i| i.to_string()).collect(),
            chunksize,
            targets,
        };
        self.feed(Event::JobSubmitted { client, spec });
        client
    }

    pub(crate) fn feed(&mut self, event: Event) {
        self.sched.handle(self.now, event);
        self.drain_actions();
        self.check_invariants();
    }

    fn drain_actions(&mut self) {
        while let Some(action) = self.sched.poll_action() {
            match action {
                Action::Send { session, msg } => self.deliver(session, msg),
                Action::Disconnect { session, .. } => {
                    if let Some(w) = self.workers.iter_mut().find(|w| w.session == Some(session)) {
                        w.session = None;
                    }
                }
                Action::Reply { client, msg } => self.client_saw(client, msg),
                Action::CloseClient { .. } | Action::IdAssigned { .. } => {}
            }
        }
    }

    fn deliver(&mut self, session: SessionId, msg: ToWorker) {
        let now = self.now;
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
                let ms = w.item_ms * items.len() as u64;
                let idx = items.iter().map(|i| i.index).collect();
                w.running
                    .insert(task, (attempt, now + Duration::from_millis(ms), idx));
                w.peak_running = w.peak_running.max(w.running.len());
                assert!(
                    w.running.len() <= usize::from(w.slots),
                    "worker {} over its slots",
                    w.name
                );
            }
            ToWorker::CancelTask { task } => {
                w.running.remove(&task);
            }
            ToWorker::Welcome(_) | ToWorker::Reject { .. } | ToWorker::Drain => {}
        }
    }

    fn client_saw(&mut self, client: ClientId, msg: ToClient) {
        let log = self.jobs.entry(client).or_default();
        match msg {
            ToClient::JobAccepted { total, .. } => log.total = Some(total),
            ToClient::ItemDone { worker, output, .. } => {
                assert!(
                    !log.finished,
                    "result after JobFinished (seed {})",
                    self.seed
                );
                if log
                    .items
                    .insert(output.index, (worker, output.outcome))
                    .is_some()
                {
                    log.duplicates += 1;
                }
            }
            ToClient::JobFinished { .. } => log.finished = true,
            ToClient::Error { message } => log.error = Some(message),
            ToClient::Ids(_) | ToClient::Status(_) => {}
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
            let done: Vec<TaskId> = self.workers[i]
                .running
                .iter()
                .filter(|(_, r)| r.1 <= self.now)
                .map(|(t, _)| *t)
                .collect();
            for task in done {
                let Some((attempt, _, items)) = self.workers[i].running.remove(&task) else {
                    continue;
                };
                let outputs = items.into_iter().map(ok_output).collect();
                let result = TaskResult {
                    task,
                    attempt,
                    outputs,
                };
                match self.workers[i].session {
                    Some(session) => self.feed(Event::TaskFinished { session, result }),
                    None => self.workers[i].outbox.push(result),
                }
            }
        }
        self.sched.handle_timeout(self.now);
        self.drain_actions();
        self.check_invariants();
    }

    /// Steps until every job finished, or panics after `max_steps` (a livelock is a failure).
    pub(crate) fn run_until_jobs_done(&mut self, max_steps: usize) {
        for _ in 0..max_steps {
            if self.jobs.values().all(|j| j.finished || j.error.is_some()) {
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
        let s = &self.sched;
        let seed = self.seed;
        let mut seen = BTreeSet::new();
        for (id, w) in &s.workers {
            assert!(
                w.running() <= w.slots(),
                "worker {id} over its slots (seed {seed})"
            );
            for t in &w.running {
                assert!(
                    seen.insert(*t),
                    "task {t} placed on two workers (seed {seed})"
                );
                let task = s
                    .tasks
                    .get(t)
                    .unwrap_or_else(|| panic!("unknown task {t} running (seed {seed})"));
                assert_eq!(
                    task.running_on.map(|r| r.0),
                    Some(*id),
                    "task {t} location (seed {seed})"
                );
            }
        }
        let queued: BTreeSet<TaskId> = s.queue.iter().copied().collect();
        assert_eq!(
            queued.len(),
            s.queue.len(),
            "task queued twice (seed {seed})"
        );
        for (tid, task) in &s.tasks {
            let placed = task
                .running_on
                .is_some_and(|(w, _)| s.workers.contains_key(&w));
            assert!(
                placed != queued.contains(tid),
                "task {tid} is neither placed nor queued, or both (seed {seed})"
            );
            assert!(
                s.jobs
                    .get(&task.job)
                    .is_some_and(|j| j.open_tasks.contains(tid)),
                "orphan task {tid} (seed {seed})"
            );
        }
    }

    /// Asserts every job got each item exactly once, with nothing lost.
    pub(crate) fn assert_all_results_once(&self) {
        for (client, log) in &self.jobs {
            let total = log
                .total
                .unwrap_or_else(|| panic!("job of {client:?} not accepted: {:?}", log.error));
            assert!(
                log.finished,
                "job of {client:?} unfinished (seed {})",
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

fn ok_output(index: u64) -> ItemOutput {
    ItemOutput {
        index,
        outcome: Outcome::Exited(0),
        stdout: Vec::new(),
        stderr: Vec::new(),
        truncated_bytes: 0,
        duration_ms: 0,
    }
}

/// Seeds for randomised tests: `SIM_SEED=n` replays one.
pub(crate) fn seeds(n: u64) -> std::ops::Range<u64> {
    std::env::var("SIM_SEED").map_or(0..n, |s| {
        let s: u64 = s.parse().expect("SIM_SEED is a number");
        s..s + 1
    })
}
