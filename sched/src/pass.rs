//! The bookkeeping of one `thermal` placement pass: the slots it has promised so far, on top
//! of the workers' cached forecasts, and per job and task size a heap of the eligible workers
//! by expected finish. The pass itself (which task, sent or promised) is `dispatch.rs`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use bramble_wire::{JobId, WorkerId};

use super::worker::WorkerEntry;

/// A task is sent ahead to a worker whose slot frees within this: long enough to cover the
/// round trip to the host, short enough that nothing is hoarded.
pub(crate) const SEND_AHEAD: Duration = Duration::from_millis(100);

/// Tasks placed alike: those of one job with as many items, and no constraint of their own.
pub(crate) type Class = (JobId, u32);

/// One thermal placement pass: the slots promised so far (on top of the workers' cached
/// forecasts) and, per job and task size, a heap of its eligible workers by expected finish.
pub(crate) struct Pass {
    now: Instant,
    /// Slot free times of the workers this pass promised or sent work to.
    promised: BTreeMap<WorkerId, Vec<Instant>>,
    heaps: BTreeMap<Class, BinaryHeap<Reverse<(Instant, WorkerId)>>>,
}

impl Pass {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            now,
            promised: BTreeMap::new(),
            heaps: BTreeMap::new(),
        }
    }

    /// When `id`'s earliest slot frees up, promises of this pass included.
    pub(crate) fn free_at(
        &self,
        workers: &BTreeMap<WorkerId, WorkerEntry>,
        id: WorkerId,
    ) -> Instant {
        match self.promised.get(&id) {
            Some(slots) => slots.iter().min().copied(),
            None => workers
                .get(&id)
                .and_then(|w| w.cached_forecast())
                .and_then(|f| f.slots(self.now).min()),
        }
        .unwrap_or(self.now)
    }

    pub(crate) fn per_item(
        &self,
        workers: &BTreeMap<WorkerId, WorkerEntry>,
        id: WorkerId,
    ) -> Option<Duration> {
        Some(workers.get(&id)?.cached_forecast()?.per_item())
    }

    /// Whether `w`, whose earliest slot frees at `free_at`, can be sent a task now.
    pub(crate) fn sendable(&self, w: &WorkerEntry, free_at: Instant) -> bool {
        (free_at <= self.now && w.has_free_slot())
            || (free_at <= self.now + SEND_AHEAD
                && w.can_take_ahead()
                && w.speed.full_clock_ms().is_some())
    }

    /// The eligible worker of `class` (a job and a task size) that would finish such a task
    /// first (ties: lower id), and when. Heap entries made stale by promises (a slot only ever
    /// gets later) are brought up to date as they surface.
    pub(crate) fn best_of_class(
        &mut self,
        workers: &BTreeMap<WorkerId, WorkerEntry>,
        class: Class,
        eligible: impl FnOnce() -> Vec<WorkerId>,
    ) -> Option<(WorkerId, Instant)> {
        if !self.heaps.contains_key(&class) {
            let heap = eligible()
                .into_iter()
                .filter_map(|id| Some(Reverse((self.finish(workers, id, class.1)?, id))))
                .collect();
            self.heaps.insert(class, heap);
        }
        loop {
            let Reverse((finish, id)) = *self.heaps.get(&class)?.peek()?;
            let now_finish = self.finish(workers, id, class.1)?;
            let heap = self.heaps.get_mut(&class)?;
            if now_finish == finish {
                return Some((id, finish));
            }
            heap.pop();
            heap.push(Reverse((now_finish, id)));
        }
    }

    fn finish(
        &self,
        workers: &BTreeMap<WorkerId, WorkerEntry>,
        id: WorkerId,
        items: u32,
    ) -> Option<Instant> {
        Some(self.free_at(workers, id) + self.per_item(workers, id)? * items)
    }

    /// Occupies `id`'s earliest slot until `finish`, and files it again in `class`'s heap
    /// (where [`Pass::best_of_class`] has just left it on top).
    pub(crate) fn promise(
        &mut self,
        workers: &BTreeMap<WorkerId, WorkerEntry>,
        id: WorkerId,
        finish: Instant,
        class: Option<Class>,
    ) {
        let now = self.now;
        let slots = self.promised.entry(id).or_insert_with(|| {
            workers
                .get(&id)
                .and_then(|w| w.cached_forecast())
                .map_or_else(|| vec![now], |f| f.slots(now).collect())
        });
        if let Some(slot) = slots.iter_mut().min() {
            *slot = finish;
        }
        if let Some(class) = class
            && let Some(next) = self.finish(workers, id, class.1)
            && let Some(heap) = self.heaps.get_mut(&class)
        {
            if heap.peek().is_some_and(|Reverse((_, top))| *top == id) {
                heap.pop();
            }
            heap.push(Reverse((next, id)));
        }
    }
}
