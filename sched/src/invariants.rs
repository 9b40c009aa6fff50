//! The scheduler's bookkeeping invariants, checked from outside (the host's simulation tests
//! call this after every event). Reading them here keeps the fields private.

use std::collections::{BTreeMap, BTreeSet};

use bramble_wire::TaskId;

use crate::Scheduler;

impl Scheduler {
    /// `Err` with what is wrong if an invariant does not hold:
    /// - a worker holds at most its capacity (running, and sent ahead to wait for a slot);
    /// - a task runs on one worker, or two while one attempt is a speculative backup, and
    ///   only where its books say;
    /// - every open task is queued or placed on a connected worker, never both, never twice,
    ///   and belongs to a running job.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut places: BTreeMap<TaskId, usize> = BTreeMap::new();
        for (id, w) in &self.workers {
            if w.running() > w.capacity() {
                return Err(format!("worker {id} over its capacity"));
            }
            for t in &w.running {
                *places.entry(*t).or_default() += 1;
                let task = self
                    .tasks
                    .get(t)
                    .ok_or_else(|| format!("unknown task {t} running on worker {id}"))?;
                let here = task.running_on.map(|r| r.0) == Some(*id)
                    || task.backup.map(|b| b.0) == Some(*id);
                if !here {
                    return Err(format!(
                        "task {t} is on worker {id}, its books say elsewhere"
                    ));
                }
            }
        }
        for (t, n) in places {
            let allowed = if self.tasks[&t].backup.is_some() {
                2
            } else {
                1
            };
            if n > allowed {
                return Err(format!("task {t} placed on {n} workers"));
            }
        }
        let queued: BTreeSet<TaskId> = self.queue.iter().copied().collect();
        if queued.len() != self.queue.len() {
            return Err("a task is queued twice".into());
        }
        for (tid, task) in &self.tasks {
            let placed = task
                .running_on
                .is_some_and(|(w, _)| self.workers.contains_key(&w));
            if placed == queued.contains(tid) {
                return Err(format!("task {tid} is neither placed nor queued, or both"));
            }
            let owned = self
                .jobs
                .get(&task.job)
                .is_some_and(|j| j.open_tasks.contains(tid));
            if !owned {
                return Err(format!("orphan task {tid}"));
            }
        }
        Ok(())
    }

    /// Nothing left: no job, no task, nothing queued or running anywhere.
    pub fn is_idle(&self) -> bool {
        self.jobs.is_empty()
            && self.tasks.is_empty()
            && self.queue.is_empty()
            && self.workers.values().all(|w| w.running.is_empty())
    }
}
