//! When each slot of a worker frees up, as the `thermal` policy projects it: its tasks in the
//! order they were sent, each taking the worker's expected time per item. Kept with the worker
//! between placement passes and recomputed only when its tasks or its speed changed, or when
//! time passed a projected finish (an overdue task is assumed to end now), so a pass over a
//! thousand busy workers reads a thousand cached forecasts instead of walking every task.
//! A running task is credited the time it has already run (it ends at its start plus its
//! expected time); before the cache, every task was projected as if it started now.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bramble_wire::{TaskId, WorkerId};

use super::job::Task;

/// One worker's projected slot free times.
#[derive(Clone, Debug)]
pub(crate) struct Forecast {
    /// The worker's task generation it was computed from (see `WorkerEntry::generation`).
    generation: u64,
    per_item: Duration,
    /// Per slot: when it frees up, or `None` for a slot that is free now.
    slots: Vec<Option<Instant>>,
    /// The forecast holds until then: past it, an overdue task would move later finishes.
    valid_until: Option<Instant>,
}

impl Forecast {
    /// Computes the forecast of `worker` with `slots` slots running `running`.
    pub(crate) fn compute(
        worker: WorkerId,
        slots: usize,
        running: impl Iterator<Item = TaskId>,
        tasks: &BTreeMap<TaskId, Task>,
        generation: u64,
        per_item: Duration,
        now: Instant,
    ) -> Self {
        // Its tasks in the order they were sent: the first `slots` run, the rest (sent ahead)
        // start as slots free up.
        let mut sent: Vec<(Instant, u32)> = running
            .filter_map(|t| tasks.get(&t))
            .map(|t| (t.started_on(worker).unwrap_or(now), t.items.len() as u32))
            .collect();
        sent.sort_unstable();
        let mut free: Vec<Option<Instant>> = vec![None; slots.max(1)];
        let mut valid_until: Option<Instant> = None;
        for (sent_at, items) in sent {
            let Some(slot) = free
                .iter_mut()
                .min_by_key(|s| s.map_or(now, |t| t.max(now)))
            else {
                break;
            };
            let end = slot.map_or(sent_at, |t| t.max(sent_at)) + per_item * items;
            valid_until = Some(valid_until.map_or(end, |v| v.min(end)));
            *slot = Some(end.max(now));
        }
        Self {
            generation,
            per_item,
            slots: free,
            valid_until,
        }
    }

    /// Whether this forecast is still what [`Forecast::compute`] would give.
    pub(crate) fn holds(&self, generation: u64, per_item: Duration, now: Instant) -> bool {
        self.generation == generation
            && self.per_item == per_item
            && self.valid_until.is_none_or(|v| now <= v)
    }

    /// The expected time per item it was computed with.
    pub(crate) fn per_item(&self) -> Duration {
        self.per_item
    }

    /// Slot free times at `now`.
    pub(crate) fn slots(&self, now: Instant) -> impl Iterator<Item = Instant> + '_ {
        self.slots
            .iter()
            .map(move |s| s.map_or(now, |t| t.max(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::epoch;

    #[test]
    fn an_idle_worker_is_free_now_and_stays_valid() {
        let now = epoch();
        let f = Forecast::compute(
            WorkerId(0),
            2,
            std::iter::empty(),
            &BTreeMap::new(),
            7,
            Duration::from_millis(10),
            now,
        );
        let later = now + Duration::from_secs(5);
        assert!(f.holds(7, Duration::from_millis(10), later));
        assert!(
            !f.holds(8, Duration::from_millis(10), later),
            "tasks changed"
        );
        assert!(
            !f.holds(7, Duration::from_millis(11), later),
            "speed changed"
        );
        assert_eq!(f.slots(later).collect::<Vec<_>>(), [later, later]);
    }
}
