//! Placement mechanism: walking the queue, finding eligible workers, asking the policy, and
//! starting attempts. `leastload`/`roundrobin` fill free slots; `thermal` projects when each
//! worker's slots free up and how long a task takes there, and places a task now only on the
//! worker that would finish it first, so a slow worker is not handed work a fast one would
//! finish sooner (the end-of-job straggler problem).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bramble_wire::{Attempt, TaskId, TaskSpec, ToWorker, WorkerId};

use super::placement::{self, Candidate, Policy, Projection};
use super::{Action, Record, Scheduler};

/// Nominal time per item before any worker has reported one; only ratios matter.
const NOMINAL_MS: f64 = 1000.0;

impl Scheduler {
    /// Places queued tasks, oldest first.
    pub(super) fn dispatch(&mut self, now: Instant) {
        if self.config.policy == Policy::Thermal {
            self.dispatch_thermal(now);
            return;
        }
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
            self.start(tid, choice, now);
            free -= 1;
        }
    }

    /// Workers that may run `tid`: its pin, its job's targets, and not where an attempt of it
    /// failed unless no other such worker is connected.
    fn eligible(&self, tid: TaskId) -> Vec<WorkerId> {
        let Some(task) = self.tasks.get(&tid) else {
            return Vec::new();
        };
        let filter = self.jobs.get(&task.job).and_then(|j| j.targets.as_ref());
        let fits: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(id, w)| {
                task.pin.is_none_or(|p| p == **id)
                    && filter.is_none_or(|f| f.matches(**id, &w.hello.labels))
            })
            .map(|(id, _)| *id)
            .collect();
        let fresh: Vec<WorkerId> = fits
            .iter()
            .copied()
            .filter(|id| !task.avoid.contains(id))
            .collect();
        if fresh.is_empty() { fits } else { fresh }
    }

    /// A worker with a free slot for `tid` (slot-count policies), or `None` to leave it queued.
    fn choose_worker(&self, tid: TaskId) -> Option<WorkerId> {
        let candidates: Vec<Candidate> = self
            .eligible(tid)
            .into_iter()
            .filter_map(|id| self.workers.get(&id).map(|w| (id, w)))
            .filter(|(_, w)| w.has_free_slot())
            .map(|(id, w)| Candidate {
                id,
                running: w.running(),
                slots: w.slots(),
            })
            .collect();
        placement::place(self.config.policy, &candidates, self.last_placed)
    }

    /// The `thermal` policy: list scheduling by earliest expected finish over a projection of
    /// every worker's slots. Tasks whose best worker has a free slot start now; the others
    /// stay queued but occupy their best worker's projected slot, so the next task sees the
    /// work already promised to fast workers.
    fn dispatch_thermal(&mut self, now: Instant) {
        let fallback = self.fallback_ms();
        let expected: BTreeMap<WorkerId, f64> = self
            .workers
            .iter()
            .map(|(id, w)| (*id, w.speed.expected_ms(fallback)))
            .collect();
        // When each slot of each worker frees up, as far as we can tell now.
        let mut slots: BTreeMap<WorkerId, Vec<Instant>> = BTreeMap::new();
        for (id, w) in &self.workers {
            let per_item = ms(expected[id]);
            let mut free: Vec<Instant> = w
                .running
                .iter()
                .filter_map(|t| self.tasks.get(t))
                .map(|t| (t.started_at.unwrap_or(now) + per_item * t.items.len() as u32).max(now))
                .collect();
            free.resize(usize::try_from(w.slots()).unwrap_or(0).max(free.len()), now);
            slots.insert(*id, free);
        }
        let total_slots: usize = slots.values().map(Vec::len).sum();
        let lookahead = total_slots * 4 + 16;
        let mut i = 0;
        let mut looked = 0;
        while i < self.queue.len() && looked < lookahead {
            looked += 1;
            let tid = self.queue[i];
            let items = self.tasks.get(&tid).map_or(1, |t| t.items.len().max(1)) as u32;
            let options: Vec<Projection> = self
                .eligible(tid)
                .into_iter()
                .filter_map(|id| {
                    let free_at = *slots.get(&id)?.iter().min()?;
                    Some(Projection {
                        id,
                        free_at,
                        expected: ms(expected[&id]) * items,
                    })
                })
                .collect();
            let Some((best, finish)) = placement::earliest_finish(&options) else {
                i += 1;
                continue;
            };
            let Some(best_slots) = slots.get_mut(&best) else {
                break;
            };
            let Some(slot) = best_slots.iter_mut().min() else {
                break;
            };
            let starts_now =
                *slot <= now && self.workers.get(&best).is_some_and(|w| w.has_free_slot());
            *slot = finish;
            if starts_now {
                self.queue.remove(i);
                self.start(tid, best, now);
            } else {
                i += 1;
            }
        }
    }

    /// Per-item time assumed for workers with no observation yet: the mean of those with one.
    fn fallback_ms(&self) -> f64 {
        let known: Vec<f64> = self
            .workers
            .values()
            .filter_map(|w| w.speed.full_clock_ms())
            .collect();
        if known.is_empty() {
            NOMINAL_MS
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        }
    }

    pub(super) fn start(&mut self, tid: TaskId, worker: WorkerId, now: Instant) {
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
        task.started_at = Some(now);
        w.running.insert(tid);
        self.last_placed = Some(worker);
        let spec = TaskSpec {
            task: tid,
            attempt,
            command: job.command.clone(),
            items: task.items.clone(),
            job: task.job,
            persistent: job.persistent,
        };
        let session = w.session;
        self.actions
            .push_back(Action::Record(Record::AttemptStarted {
                task: tid,
                attempt,
                worker,
            }));
        self.actions.push_back(Action::Send {
            session,
            msg: ToWorker::RunTask(spec),
        });
    }
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64((v / 1000.0).clamp(0.0, 86_400.0))
}
