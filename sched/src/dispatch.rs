//! Placement mechanism: walking the queue, finding eligible workers, asking the policy, and
//! starting attempts. `leastload`/`roundrobin` fill free slots; `thermal` projects when each
//! worker's slots free up and how long a task takes there, and places a task only on the
//! worker that would finish it first, so a slow worker is not handed work a fast one would
//! finish sooner (the end-of-job straggler problem). It sends a task ahead to a slot that
//! frees within `pass::SEND_AHEAD`, counting the tasks already waiting there (tiny tasks queue many
//! deep, up to `AHEAD_PER_SLOT`; long ones go when their predecessor is nearly done), to hide
//! the round trip, and near the end it re-runs stragglers on idle workers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bramble_wire::worker::AHEAD_PER_SLOT;
use bramble_wire::{Attempt, JobId, TaskId, TaskSpec, ToWorker, Work, WorkerId};

use super::pass::Pass;
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
    /// worker is connected. Ascending ids.
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
    ///
    /// A pass costs O(workers) to read their cached forecasts, plus O(log workers) per task it
    /// looks at: the tasks of one job and size share a heap of workers by expected finish. It
    /// stops once no worker could be sent anything more, which in a busy rack is after the
    /// few tasks the freed slots take.
    fn dispatch_thermal(&mut self, now: Instant) {
        let fallback = self.fallback_ms();
        for (id, w) in &mut self.workers {
            let per_item = ms(w.speed.expected_ms(fallback));
            w.refresh_forecast(*id, per_item, &self.tasks, now);
        }
        let total_slots: usize = self
            .workers
            .values()
            .map(|w| usize::try_from(w.slots()).unwrap_or(1).max(1))
            .sum();
        let lookahead = total_slots * (AHEAD_PER_SLOT as usize + 4) + 16;
        let mut pass = Pass::new(now);
        // Workers that could be sent a task now; once none can, the rest of the queue waits
        // (a worker's slots only get later during a pass, so none becomes one again).
        let mut takers = self
            .workers
            .iter()
            .filter(|(id, w)| pass.sendable(w, pass.free_at(&self.workers, **id)))
            .count();
        let mut i = 0;
        let mut looked = 0;
        let mut blocked = Blocked::default();
        while i < self.queue.len() && looked < lookahead && takers > 0 {
            looked += 1;
            let tid = self.queue[i];
            if blocked.holds(self, tid) {
                i += 1;
                continue;
            }
            let Some(task) = self.tasks.get(&tid) else {
                i += 1;
                continue;
            };
            let items = task.items.len().max(1) as u32;
            let class = (task.pin.is_none() && task.kept_for.is_none() && task.avoid.is_empty())
                .then_some((task.job, items));
            let best = match class {
                Some(class) => {
                    let eligible = || self.eligible_for(class.0);
                    pass.best_of_class(&self.workers, class, eligible)
                }
                None => {
                    let options: Vec<Projection> = self
                        .eligible(tid)
                        .into_iter()
                        .filter_map(|id| {
                            Some(Projection {
                                id,
                                free_at: pass.free_at(&self.workers, id),
                                expected: pass.per_item(&self.workers, id)? * items,
                            })
                        })
                        .collect();
                    placement::earliest_finish(&options)
                }
            };
            let Some((best, finish)) = best else {
                blocked.left_behind(self, tid);
                i += 1;
                continue;
            };
            let Some(w) = self.workers.get(&best) else {
                break;
            };
            // Start now on a free slot; or send ahead if a slot frees very soon (the task waits
            // on the worker and starts the moment the slot frees, hiding the round trip), but
            // only to a worker whose speed we know: a task sent ahead cannot be taken back.
            let send_now = pass.sendable(w, pass.free_at(&self.workers, best));
            pass.promise(&self.workers, best, finish, class);
            if send_now {
                self.queue.remove(i);
                self.start(tid, best, now);
            } else {
                blocked.left_behind(self, tid);
                i += 1;
            }
            let still = self
                .workers
                .get(&best)
                .is_some_and(|w| pass.sendable(w, pass.free_at(&self.workers, best)));
            if send_now && !still {
                takers -= 1;
            }
        }
        if self.queue.is_empty() && !self.anything_unplanned() {
            let expected: BTreeMap<WorkerId, f64> = self
                .workers
                .iter()
                .map(|(id, w)| (*id, w.speed.expected_ms(fallback)))
                .collect();
            self.speculate(now, &expected);
        }
    }

    /// Workers that may run any task of `job` that carries no constraint of its own (no pin,
    /// no worker it is kept for, none to avoid): not drained, matching the job's targets and
    /// able to run its kind of work. Ascending ids.
    fn eligible_for(&self, job: JobId) -> Vec<WorkerId> {
        let Some(job) = self.jobs.get(&job) else {
            return Vec::new();
        };
        let filter = job.targets.as_ref();
        self.workers
            .iter()
            .filter(|(id, w)| {
                !w.draining
                    && filter.is_none_or(|f| f.matches(**id, w))
                    && unfit(w, job.work()).is_none()
            })
            .map(|(id, _)| *id)
            .collect()
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
            // Per job, its eligible idle workers fastest first (ties: lower id): the fastest
            // one other than the task's own gains the most.
            let mut fastest: BTreeMap<JobId, Vec<(u64, WorkerId)>> = BTreeMap::new();
            // The task whose backup would gain the most, and where to run it.
            let mut best: Option<(Duration, TaskId, WorkerId)> = None;
            for (tid, task) in &self.tasks {
                let (Some((primary, _)), None, None) = (task.running_on, task.backup, task.pin)
                else {
                    continue;
                };
                // A job winding down starts nothing new, backups included.
                if self.jobs.get(&task.job).is_some_and(|j| j.winding_down) {
                    continue;
                }
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
                let faster =
                    |list: &[(u64, WorkerId)]| list.iter().find(|(_, w)| *w != primary).copied();
                let candidate = if task.kept_for.is_none() && task.avoid.is_empty() {
                    let list = fastest
                        .entry(task.job)
                        .or_insert_with(|| by_speed(&idle, &self.eligible_for(task.job), expected));
                    faster(list)
                } else {
                    faster(&by_speed(&idle, &self.eligible(*tid), expected))
                };
                let Some((exp_w, w)) = candidate else {
                    continue;
                };
                let end = now + Duration::from_nanos(exp_w) * n;
                let remaining = primary_end.saturating_duration_since(now);
                let gain = primary_end.saturating_duration_since(end);
                if (overdue || gain > remaining.mul_f64(0.2))
                    && best.is_none_or(|(g, _, _)| gain > g)
                {
                    best = Some((gain, *tid, w));
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
        w.add_task(tid);
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

/// The `idle` workers that are `eligible` (both by id), fastest first: (expected ns per item,
/// id).
fn by_speed(
    idle: &[WorkerId],
    eligible: &[WorkerId],
    expected: &BTreeMap<WorkerId, f64>,
) -> Vec<(u64, WorkerId)> {
    let mut list: Vec<(u64, WorkerId)> = idle
        .iter()
        .filter(|w| eligible.binary_search(w).is_ok())
        .filter_map(|w| Some((ms(*expected.get(w)?).as_nanos() as u64, *w)))
        .collect();
    list.sort_unstable();
    list
}

pub(crate) fn ms(v: f64) -> Duration {
    Duration::from_secs_f64((v / 1000.0).clamp(0.0, 86_400.0))
}
