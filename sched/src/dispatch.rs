//! Placement mechanism: walking the queue, finding eligible workers, asking the policy, and
//! starting attempts. `leastload`/`roundrobin` fill free slots; `thermal` projects when each
//! worker's slots free up and how long a task takes there, and places a task only on the
//! worker that would finish it first, so a slow worker is not handed work a fast one would
//! finish sooner (the end-of-job straggler problem). It sends a task ahead to a slot that
//! frees within `SEND_AHEAD`, counting the tasks already waiting there (tiny tasks queue many
//! deep, up to `AHEAD_PER_SLOT`; long ones go when their predecessor is nearly done), to hide
//! the round trip, and near the end it re-runs stragglers on idle workers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bramble_wire::worker::AHEAD_PER_SLOT;
use bramble_wire::{Attempt, TaskId, TaskSpec, ToWorker, Work, WorkerId};

use super::placement::{self, Candidate, Policy, Projection};
use super::python::unfit;
use super::{Action, Record, Scheduler};

/// Engines (worker, slot) with a pinned task left in the queue during one placement pass: a
/// later task for the same engine waits behind it, so each engine gets its work in the order
/// it was submitted.
#[derive(Default)]
struct Blocked(std::collections::BTreeSet<(WorkerId, u16)>);

impl Blocked {
    fn engine_of(s: &Scheduler, tid: TaskId) -> Option<(WorkerId, u16)> {
        let t = s.tasks.get(&tid)?;
        Some((t.pin?, t.slot?))
    }

    fn holds(&self, s: &Scheduler, tid: TaskId) -> bool {
        Self::engine_of(s, tid).is_some_and(|e| self.0.contains(&e))
    }

    fn left_behind(&mut self, s: &Scheduler, tid: TaskId) {
        self.0.extend(Self::engine_of(s, tid));
    }
}

/// Tasks kept queued beyond what the connected slots can take in one pass: room for the
/// thermal policy's look-ahead and for workers that join.
const PLAN_AHEAD: usize = 256;

/// Nominal time per item before any worker has reported one; only ratios matter.
const NOMINAL_MS: f64 = 1000.0;
/// A task is sent ahead to a worker whose slot frees within this: long enough to cover the
/// round trip to the host, short enough that nothing is hoarded.
const SEND_AHEAD: Duration = Duration::from_millis(100);

impl Scheduler {
    /// Places queued tasks, oldest first (cutting more from map jobs first: enough for what
    /// one pass can place, see [`PLAN_AHEAD`]).
    pub(super) fn dispatch(&mut self, now: Instant) {
        if self.tasks.is_empty() && !self.anything_unplanned() {
            return; // nothing to place or to back up
        }
        let slots: usize = self
            .workers
            .values()
            .map(|w| usize::try_from(w.slots()).unwrap_or(1))
            .sum();
        self.plan_more(PLAN_AHEAD + slots * (AHEAD_PER_SLOT as usize + 4) * 2);
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
        let mut blocked = Blocked::default();
        while free > 0 && i < self.queue.len() {
            let tid = self.queue[i];
            let choice = if blocked.holds(self, tid) {
                None
            } else {
                self.choose_worker(tid)
            };
            let Some(choice) = choice else {
                blocked.left_behind(self, tid);
                i += 1;
                continue;
            };
            self.queue.remove(i);
            self.start(tid, choice, now);
            free -= 1;
        }
    }

    /// Workers that may run `tid`: its pin, its job's targets, the worker it is kept for after
    /// a restart, not drained (unless it is the one the task is kept for), able to run its
    /// kind of work (Python), and not where an attempt of it failed unless no other such
    /// worker is connected.
    fn eligible(&self, tid: TaskId) -> Vec<WorkerId> {
        let Some(task) = self.tasks.get(&tid) else {
            return Vec::new();
        };
        let Some(job) = self.jobs.get(&task.job) else {
            return Vec::new();
        };
        let filter = job.targets.as_ref();
        let fits: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(id, w)| {
                task.pin.is_none_or(|p| p == **id)
                    && task.kept_for.is_none_or(|k| k == **id)
                    && (!w.draining || task.kept_for == Some(**id))
                    && filter.is_none_or(|f| f.matches(**id, w))
                    && unfit(w, job.work()).is_none()
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
            // Its tasks in the order they were sent: the first `slots` run, the rest (sent
            // ahead) start as slots free up.
            let mut sent: Vec<(Instant, u32)> = w
                .running
                .iter()
                .filter_map(|t| self.tasks.get(t))
                .map(|t| (t.started_on(*id).unwrap_or(now), t.items.len() as u32))
                .collect();
            sent.sort();
            let mut free = vec![now; usize::try_from(w.slots()).unwrap_or(1).max(1)];
            for (sent_at, items) in sent {
                if let Some(slot) = free.iter_mut().min() {
                    *slot = ((*slot).max(sent_at) + per_item * items).max(now);
                }
            }
            slots.insert(*id, free);
        }
        let total_slots: usize = slots.values().map(Vec::len).sum();
        let lookahead = total_slots * (AHEAD_PER_SLOT as usize + 4) + 16;
        let mut i = 0;
        let mut looked = 0;
        let mut blocked = Blocked::default();
        // Workers that could take a task now; once none can, the rest of the queue waits
        // (what the pass would still learn only matters for tasks it could place).
        let can_take = |w: &super::worker::WorkerEntry| w.has_free_slot() || w.can_take_ahead();
        let mut takers = self.workers.values().filter(|w| can_take(w)).count();
        while i < self.queue.len() && looked < lookahead && takers > 0 {
            looked += 1;
            let tid = self.queue[i];
            if blocked.holds(self, tid) {
                i += 1;
                continue;
            }
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
                blocked.left_behind(self, tid);
                i += 1;
                continue;
            };
            let Some(best_slots) = slots.get_mut(&best) else {
                break;
            };
            let Some(slot) = best_slots.iter_mut().min() else {
                break;
            };
            // Start now on a free slot; or send ahead if a slot frees very soon (the task waits
            // on the worker and starts the moment the slot frees, hiding the round trip), but
            // only to a worker whose speed we know: a task sent ahead cannot be taken back.
            let send_now = self.workers.get(&best).is_some_and(|w| {
                (*slot <= now && w.has_free_slot())
                    || (*slot <= now + SEND_AHEAD
                        && w.can_take_ahead()
                        && w.speed.full_clock_ms().is_some())
            });
            *slot = finish;
            if send_now {
                self.queue.remove(i);
                self.start(tid, best, now);
                if self.workers.get(&best).is_none_or(|w| !can_take(w)) {
                    takers -= 1;
                }
            } else {
                blocked.left_behind(self, tid);
                i += 1;
            }
        }
        if self.queue.is_empty() && !self.anything_unplanned() {
            self.speculate(now, &expected);
        }
    }

    /// Near the end (nothing queued), idle workers re-run stragglers: a running task gets a
    /// second attempt on an idle worker when it is overdue (taking half again as long as
    /// expected) or when the idle worker would finish it at least 20 % sooner than its
    /// current one is expected to. One backup per task; the first result wins.
    fn speculate(&mut self, now: Instant, expected: &BTreeMap<WorkerId, f64>) {
        loop {
            let idle: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|(_, w)| w.has_free_slot() && !w.draining)
                .map(|(id, _)| *id)
                .collect();
            if idle.is_empty() {
                return;
            }
            // The task whose backup would gain the most, and where to run it.
            let mut best: Option<(Duration, TaskId, WorkerId)> = None;
            for (tid, task) in &self.tasks {
                let (Some((primary, _)), None, None) = (task.running_on, task.backup, task.pin)
                else {
                    continue;
                };
                let (Some(started), Some(exp)) = (task.started_at, expected.get(&primary)) else {
                    continue;
                };
                let n = task.items.len().max(1) as u32;
                let planned = ms(*exp) * n;
                let elapsed = now.saturating_duration_since(started);
                let overdue = elapsed > planned.mul_f64(1.5);
                let primary_end = if overdue {
                    now + elapsed
                } else {
                    started + planned
                };
                let eligible = self.eligible(*tid);
                for w in idle
                    .iter()
                    .filter(|w| **w != primary && eligible.contains(w))
                {
                    let Some(exp_w) = expected.get(w) else {
                        continue;
                    };
                    let end = now + ms(*exp_w) * n;
                    let remaining = primary_end.saturating_duration_since(now);
                    let gain = primary_end.saturating_duration_since(end);
                    if (overdue || gain > remaining.mul_f64(0.2))
                        && best.is_none_or(|(g, _, _)| gain > g)
                    {
                        best = Some((gain, *tid, *w));
                    }
                }
            }
            let Some((_, tid, worker)) = best.filter(|(gain, _, _)| !gain.is_zero()) else {
                return;
            };
            self.start_backup(tid, worker, now);
        }
    }

    fn start_backup(&mut self, tid: TaskId, worker: WorkerId, now: Instant) {
        let Some(task) = self.tasks.get_mut(&tid) else {
            return;
        };
        let attempt = Attempt(task.attempts);
        task.attempts += 1;
        task.backup = Some((worker, attempt, now));
        self.send_attempt(tid, worker, attempt);
    }

    pub(super) fn start(&mut self, tid: TaskId, worker: WorkerId, now: Instant) {
        let Some(task) = self.tasks.get_mut(&tid) else {
            return;
        };
        let attempt = Attempt(task.attempts);
        task.attempts += 1;
        task.running_on = Some((worker, attempt));
        task.started_at = Some(now);
        task.kept_for = None;
        self.last_placed = Some(worker);
        self.send_attempt(tid, worker, attempt);
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

    /// Occupies a slot of `worker` with the attempt, records it and sends the task. A Python
    /// job's function goes with its first task to each worker connection only.
    fn send_attempt(&mut self, tid: TaskId, worker: WorkerId, attempt: Attempt) {
        let (Some(task), Some(w)) = (self.tasks.get(&tid), self.workers.get_mut(&worker)) else {
            return;
        };
        let Some(job) = self.jobs.get(&task.job) else {
            return;
        };
        w.running.insert(tid);
        let mut work = job.work().clone();
        if let Work::Python(p) = &mut work
            && !w.functions_sent.insert(task.job)
        {
            p.function = None;
        }
        let spec = TaskSpec {
            task: tid,
            attempt,
            job: task.job,
            work,
            items: task.items.clone(),
            engine: task.slot,
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
