//! Where the worker's tasks run: the running ones (and the engine each holds), those sent
//! ahead and waiting for room, and which engines are busy. A command task needs a free slot;
//! a Python task needs a free slot and a free engine: the one it is pinned to (DirectView
//! work, so an engine runs its tasks in the order they came), or any. Mechanism only; the
//! core decides.

use std::collections::{BTreeMap, VecDeque};

use bramble_wire::worker::AHEAD_PER_SLOT;
use bramble_wire::{Attempt, TaskId, TaskSpec, Work};

/// See the module docs.
#[derive(Debug)]
pub(super) struct Slots {
    slots: usize,
    /// Running tasks: the newest attempt given, and the engine (slot) of a Python task.
    running: BTreeMap<TaskId, (Attempt, Option<u16>)>,
    /// Tasks sent ahead, waiting for room, in the order they came.
    waiting: VecDeque<TaskSpec>,
    engine_busy: Vec<bool>,
}

impl Slots {
    pub(super) fn new(slots: usize) -> Self {
        Self {
            slots,
            running: BTreeMap::new(),
            waiting: VecDeque::new(),
            engine_busy: vec![false; slots],
        }
    }

    pub(super) fn running(&self) -> usize {
        self.running.len()
    }

    pub(super) fn is_running(&self, task: TaskId) -> bool {
        self.running.contains_key(&task)
    }

    /// If `task` is running or waiting here, labels it with `attempt` (the newest the host
    /// gave) and says so.
    pub(super) fn relabel(&mut self, task: TaskId, attempt: Attempt) -> bool {
        if let Some(r) = self.running.get_mut(&task) {
            r.0 = attempt;
            return true;
        }
        if let Some(w) = self.waiting.iter_mut().find(|w| w.task == task) {
            w.attempt = attempt;
            return true;
        }
        false
    }

    /// Where `spec` would start now: `Some(engine)` (`None` for a command), or `None` if
    /// there is no room for it.
    pub(super) fn room_for(&self, spec: &TaskSpec) -> Option<Option<u16>> {
        if self.running.len() >= self.slots {
            return None;
        }
        if !matches!(spec.work, Work::Python(_)) {
            return Some(None);
        }
        let free = |e: usize| !self.engine_busy.get(e).copied().unwrap_or(true);
        let engine = match spec.engine {
            Some(e) => free(usize::from(e)).then_some(usize::from(e)),
            None => (0..self.slots).find(|e| free(*e)),
        }?;
        Some(u16::try_from(engine).ok())
    }

    /// Marks `spec` running (in `engine`).
    pub(super) fn start(&mut self, spec: &TaskSpec, engine: Option<u16>) {
        if let Some(busy) = engine.and_then(|e| self.engine_busy.get_mut(usize::from(e))) {
            *busy = true;
        }
        self.running.insert(spec.task, (spec.attempt, engine));
    }

    /// Room to wait for a slot: `AHEAD_PER_SLOT` tasks per slot.
    pub(super) fn can_wait(&self) -> bool {
        self.waiting.len() < self.slots * AHEAD_PER_SLOT as usize
    }

    pub(super) fn wait(&mut self, spec: TaskSpec) {
        self.waiting.push_back(spec);
    }

    /// Drops a waiting task; true if it was waiting.
    pub(super) fn drop_waiting(&mut self, task: TaskId) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|w| w.task != task);
        self.waiting.len() != before
    }

    /// A running task ended: its slot and engine are free. Returns the attempt it answers
    /// for (`None` if it was not running).
    pub(super) fn finished(&mut self, task: TaskId) -> Option<Attempt> {
        let (attempt, engine) = self.running.remove(&task)?;
        if let Some(busy) = engine.and_then(|e| self.engine_busy.get_mut(usize::from(e))) {
            *busy = false;
        }
        Some(attempt)
    }

    /// The first waiting task that has room now, and where, taken off the waiting list. A
    /// task pinned to a busy engine stays, and so does every later one for that engine.
    pub(super) fn next_startable(&mut self) -> Option<(TaskSpec, Option<u16>)> {
        let i = self
            .waiting
            .iter()
            .position(|w| self.room_for(w).is_some())?;
        let spec = self.waiting.remove(i)?;
        let engine = self.room_for(&spec)?;
        Some((spec, engine))
    }
}
