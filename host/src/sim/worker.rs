//! One simulated worker process for the scheduler simulation: it runs tasks in virtual time,
//! keeps results until the host confirms them, holds tasks sent ahead until a slot frees,
//! refuses what it has no room for, and does not start a task it already holds, as the real
//! worker's core does.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bramble_sched::SessionId;
use bramble_wire::worker::AHEAD_PER_SLOT;
use bramble_wire::{Attempt, TaskId, TaskResult};

/// SplitMix64: seedable and tiny.
pub(crate) struct Rng(pub(crate) u64);

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
    pub(crate) labels: Vec<String>,
    /// Milliseconds one item takes on this worker.
    pub(crate) item_ms: u64,
    /// Every item it runs exits 1 (a broken machine).
    pub(crate) failing: bool,
    /// Sends each failed result twice, as a worker does when the connection drops before the
    /// host's `ResultRecorded` arrives.
    pub(crate) resend_failures: bool,
    /// Current connection, if connected.
    pub(crate) session: Option<SessionId>,
    /// Stopped (like SIGSTOP): sends nothing, runs nothing, until resumed.
    pub(crate) frozen: bool,
    /// Running tasks: id → (attempt, finish time, items, ms per item).
    pub(crate) running: BTreeMap<TaskId, (Attempt, Instant, Vec<u64>, u64)>,
    /// Tasks sent ahead, waiting for a slot: (task, attempt, items, ms per item).
    pub(crate) waiting: VecDeque<(TaskId, Attempt, Vec<u64>, u64)>,
    /// Results finished while disconnected, delivered on the next connection.
    pub(crate) outbox: Vec<TaskResult>,
    /// Results sent that the host has not yet confirmed (`ResultRecorded`); back to the
    /// outbox when the connection drops.
    pub(crate) unacked: Vec<TaskResult>,
    /// Tasks it refused for want of room.
    pub(crate) refused: u64,
    /// Most tasks this worker ever ran at once.
    pub(crate) peak_running: usize,
    /// Task attempts it was given.
    pub(crate) started: u64,
    /// What its telemetry reports: (measured MHz, max MHz), °C, throttle bits.
    pub(crate) clock: Option<(u32, u32)>,
    pub(crate) temp_c: Option<f64>,
    pub(crate) throttle: u32,
}

impl SimWorker {
    pub(crate) fn new(name: String, slots: u16, item_ms: u64) -> Self {
        Self {
            name,
            slots,
            labels: Vec::new(),
            item_ms,
            failing: false,
            resend_failures: false,
            session: None,
            frozen: false,
            running: BTreeMap::new(),
            waiting: VecDeque::new(),
            outbox: Vec::new(),
            unacked: Vec::new(),
            peak_running: 0,
            refused: 0,
            started: 0,
            clock: None,
            temp_c: None,
            throttle: 0,
        }
    }

    pub(crate) fn begin(
        &mut self,
        task: TaskId,
        attempt: Attempt,
        items: Vec<u64>,
        per_item: u64,
        now: Instant,
    ) {
        let ms = per_item * items.len() as u64;
        self.running.insert(
            task,
            (attempt, now + Duration::from_millis(ms), items, per_item),
        );
        self.peak_running = self.peak_running.max(self.running.len());
        assert!(
            self.running.len() <= usize::from(self.slots),
            "worker {} over its slots",
            self.name
        );
    }

    /// A slot freed up: the first waiting task starts.
    pub(crate) fn start_waiting(&mut self, now: Instant) {
        if let Some((task, attempt, items, per_item)) = self.waiting.pop_front() {
            self.begin(task, attempt, items, per_item, now);
        }
    }

    /// Fills every slot and the waiting room with tasks the host's books do not show (as a
    /// worker still busy from before a host restart), each taking `ms`.
    pub(crate) fn occupy_unknown(&mut self, ms: u64, now: Instant) {
        let capacity = u64::from(self.slots) * (1 + u64::from(AHEAD_PER_SLOT));
        let hidden = (0..capacity).map(|i| TaskId(1_000_000 + i));
        for (n, task) in hidden.enumerate() {
            if n < usize::from(self.slots) {
                self.begin(task, Attempt(0), vec![1_000_000 + n as u64], ms, now);
            } else {
                self.waiting
                    .push_back((task, Attempt(0), vec![1_000_000 + n as u64], ms));
            }
        }
    }

    /// The process restarted: nothing running, nothing buffered.
    pub(crate) fn restart(&mut self) {
        self.running.clear();
        self.waiting.clear();
        self.outbox.clear();
        self.unacked.clear();
    }

    /// Like the real worker: a task it runs, holds waiting, or holds a successful result of is
    /// not started again (a restarted host asking for it); it answers for the newest attempt.
    pub(crate) fn adopt(&mut self, task: TaskId, attempt: Attempt) -> bool {
        if let Some(r) = self.running.get_mut(&task) {
            r.0 = attempt;
        } else if let Some(q) = self.waiting.iter_mut().find(|q| q.0 == task) {
            q.1 = attempt;
        } else if let Some(r) = self
            .outbox
            .iter_mut()
            .chain(&mut self.unacked)
            .find(|r| r.task == task && r.succeeded())
        {
            r.attempt = attempt;
        } else {
            return false;
        }
        true
    }

    /// The connection ended: unconfirmed results go back ahead of the outbox.
    pub(crate) fn connection_lost(&mut self) {
        let mut back = std::mem::take(&mut self.unacked);
        back.append(&mut self.outbox);
        self.outbox = back;
    }
}
