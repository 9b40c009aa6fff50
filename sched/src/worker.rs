//! The scheduler's record of one connected worker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bramble_wire::worker::AHEAD_PER_SLOT;
use bramble_wire::{
    EngineId, Hello, JobId, PythonReport, TaskId, Telemetry, WorkerId, WorkerStatus,
};

use super::event::SessionId;
use super::forecast::Forecast;
use super::job::Task;

/// A connected worker, as the scheduler tracks it.
#[derive(Clone, Debug)]
pub(crate) struct WorkerEntry {
    pub(crate) session: SessionId,
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) hello: Hello,
    pub(crate) connected_at: Instant,
    /// When any frame last arrived; the heartbeat deadline counts from here.
    pub(crate) last_seen: Instant,
    pub(crate) telemetry: Option<Telemetry>,
    /// Tasks placed here whose results have not arrived: running, and sent ahead to wait for a
    /// slot (never more than [`WorkerEntry::capacity`]). Changed only through
    /// [`WorkerEntry::add_task`] and [`WorkerEntry::remove_task`], which keep `generation`.
    pub(crate) running: BTreeSet<TaskId>,
    /// Counts changes of `running`: a cached forecast of a different generation is stale.
    generation: u64,
    /// The thermal policy's projection of its slots, cached between passes.
    forecast: Option<Forecast>,
    /// Items finished here since the host started.
    pub(crate) done: u64,
    /// Current effective speed, for the thermal policy.
    pub(crate) speed: super::speed::SpeedEstimate,
    /// It refused a task for want of room (it runs tasks these books do not show, or is
    /// draining): nothing more is placed here until one of its tasks finishes.
    pub(crate) refusing: bool,
    /// Drained by a client: only tasks it had before (kept for it after a restart) go here.
    pub(crate) draining: bool,
    /// What its Python can do (`None` until it reported, or without Python).
    pub(crate) python: Option<PythonReport>,
    /// Its engines by slot (empty without Python).
    pub(crate) engines: Vec<EngineId>,
    /// Python jobs whose function this connection was sent (it is sent once per job).
    pub(crate) functions_sent: BTreeSet<JobId>,
}

impl WorkerEntry {
    pub(crate) fn new(
        session: SessionId,
        name: String,
        address: String,
        hello: Hello,
        now: Instant,
    ) -> Self {
        Self {
            session,
            name,
            address,
            hello,
            connected_at: now,
            last_seen: now,
            telemetry: None,
            running: BTreeSet::new(),
            generation: 0,
            forecast: None,
            done: 0,
            speed: super::speed::SpeedEstimate::default(),
            refusing: false,
            draining: false,
            python: None,
            engines: Vec::new(),
            functions_sent: BTreeSet::new(),
        }
    }

    /// A task was placed here.
    pub(crate) fn add_task(&mut self, task: TaskId) {
        self.running.insert(task);
        self.generation += 1;
    }

    /// A task here ended, was refused or moved.
    pub(crate) fn remove_task(&mut self, task: TaskId) {
        if self.running.remove(&task) {
            self.generation += 1;
        }
    }

    /// Brings its forecast up to date for `now`, taking `per_item` per item (recomputed only
    /// when it no longer holds, see [`Forecast`]).
    pub(crate) fn refresh_forecast(
        &mut self,
        id: WorkerId,
        per_item: Duration,
        tasks: &BTreeMap<TaskId, Task>,
        now: Instant,
    ) {
        let fresh = match self.forecast.take() {
            Some(f) if f.holds(self.generation, per_item, now) => f,
            _ => {
                let slots = usize::try_from(self.slots()).unwrap_or(1);
                let running = self.running.iter().copied();
                Forecast::compute(id, slots, running, tasks, self.generation, per_item, now)
            }
        };
        self.forecast = Some(fresh);
    }

    /// The forecast of the latest placement pass.
    pub(crate) fn cached_forecast(&self) -> Option<&Forecast> {
        self.forecast.as_ref()
    }

    pub(crate) fn slots(&self) -> u32 {
        u32::from(self.hello.slots)
    }

    pub(crate) fn running(&self) -> u32 {
        u32::try_from(self.running.len()).unwrap_or(u32::MAX)
    }

    pub(crate) fn has_free_slot(&self) -> bool {
        !self.refusing && self.running() < self.slots()
    }

    /// The thermal policy may send tasks ahead, up to `AHEAD_PER_SLOT` per slot (they wait
    /// on the worker for a slot), so a slot never idles for a round trip to the host.
    pub(crate) fn can_take_ahead(&self) -> bool {
        !self.refusing && self.running() < self.capacity()
    }

    /// Tasks it may hold at once: running, and waiting for a slot.
    pub(crate) fn capacity(&self) -> u32 {
        (1 + AHEAD_PER_SLOT) * self.slots()
    }

    /// Its engine in `slot`, if it has engines.
    pub(crate) fn engine(&self, slot: Option<u16>) -> Option<EngineId> {
        self.engines.get(usize::from(slot?)).copied()
    }

    /// `fastest_ms`: the lowest expected per-item time among connected workers.
    pub(crate) fn status(&self, id: WorkerId, now: Instant, fastest_ms: f64) -> WorkerStatus {
        let connected = now.saturating_duration_since(self.connected_at);
        WorkerStatus {
            id,
            name: self.name.clone(),
            address: self.address.clone(),
            slots: self.hello.slots,
            running: self.running(),
            done: self.done,
            connected_ms: u64::try_from(connected.as_millis()).unwrap_or(u64::MAX),
            arch: self.hello.arch.clone(),
            labels: self.hello.labels.clone(),
            telemetry: self.telemetry.clone(),
            speed_milli: self.speed.full_clock_ms().map(|full| {
                let relative = fastest_ms / self.speed.expected_ms(full);
                (relative * 1000.0).round().clamp(0.0, 1000.0) as u32
            }),
            draining: self.draining,
            python: self.python.clone(),
            engines: self.engines.clone(),
        }
    }
}
