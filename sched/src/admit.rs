//! Taking jobs in: new ones from clients (validated, planned, recorded) and unfinished ones
//! read back from the job store after a host restart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use bramble_wire::{JobId, JobKind, JobSpec, TaskId, Work};

use crate::job::{self, Job, Task};
use crate::targets::{self, TargetFilter};
use crate::{Action, Record, RestoredJob, Scheduler, TaskRow};

impl Scheduler {
    /// Takes back the unfinished jobs of a previous run. `next_job`/`next_task` are above
    /// every id ever stored, so ids are never reused.
    ///
    /// A resumed task whose latest attempt was placed on a worker is kept for that worker for
    /// one `worker_timeout` from `now`: it may still run the task, and given the task again it
    /// runs it once. After that the task goes to any worker.
    pub fn resume(&mut self, now: Instant, next_job: u64, next_task: u64, jobs: Vec<RestoredJob>) {
        self.next_job = self.next_job.max(next_job);
        self.next_task = self.next_task.max(next_task);
        for r in jobs {
            self.install_job(r.job, &r.spec, &r.tasks, Some(&r));
            for (task, worker) in &r.placed_on {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.kept_for = Some(*worker);
                    self.keep_until = Some(now + self.config.worker_timeout);
                }
            }
            self.finish_job_if_done(r.job);
        }
    }

    /// The job's bookkeeping and its unfinished tasks in the queue, for a new job or one
    /// restored from the store (whose done tasks are skipped and whose attempts and spent
    /// retries carry on).
    pub(crate) fn install_job(
        &mut self,
        id: JobId,
        spec: &JobSpec,
        rows: &[TaskRow],
        restored: Option<&RestoredJob>,
    ) {
        // Apply and scatter tasks are pinned; only map tasks choose among targets.
        let targets = if spec.kind == JobKind::Map {
            TargetFilter::for_map(spec)
        } else {
            None
        };
        let total = restored.map_or(total_results(spec, rows), |r| r.total);
        let job = Job {
            spec: spec.clone(),
            planned: restored.map_or(if spec.kind == JobKind::Map { 0 } else { total }, |r| {
                r.planned
            }),
            total,
            targets,
            failed: restored.map_or(0, |r| r.failed),
            open_tasks: BTreeSet::new(),
            winding_down: false,
        };
        self.jobs.insert(id, job);
        self.install_tasks(id, rows, restored);
        if let Some(r) = restored.filter(|r| r.winding_down) {
            // Only what was placed before the restart may still finish.
            let never_placed: Vec<TaskId> = rows
                .iter()
                .map(|row| row.task)
                .filter(|t| !r.placed_on.contains_key(t))
                .collect();
            self.stop_starting(id, &never_placed);
        }
    }

    /// Queues tasks of a job (new, restored, or newly cut), with what a restored job
    /// remembers of their attempts.
    fn install_tasks(&mut self, id: JobId, rows: &[TaskRow], restored: Option<&RestoredJob>) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        // Scatter rows split the items by the number of targets (every row of the job).
        let parts = if job.spec.kind == JobKind::Scatter {
            usize::try_from(job.total).unwrap_or(usize::MAX)
        } else {
            rows.len()
        };
        for row in rows {
            let past = |m: fn(&RestoredJob) -> &BTreeMap<TaskId, u32>| {
                restored
                    .and_then(|r| m(r).get(&row.task).copied())
                    .unwrap_or(0)
            };
            let retries = job
                .spec
                .retries
                .saturating_sub(past(|r| &r.failed_attempts));
            let items = job::items(&job.spec, row, parts);
            let mut task = Task::new(id, items, row.pin, retries);
            task.slot = row.slot;
            task.attempts = past(|r| &r.attempts);
            self.tasks.insert(row.task, task);
            self.queue.push_back(row.task);
            job.open_tasks.insert(row.task);
        }
    }

    /// Cuts more tasks from map jobs' items, oldest job first, until `want` tasks are queued
    /// (or every job is fully planned). Only what placement can use soon exists as tasks: a
    /// job of ten million items costs the host a window of tasks, not ten million.
    pub(crate) fn plan_more(&mut self, want: usize) {
        let mut short = want.saturating_sub(self.queue.len());
        let unplanned: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.fully_planned())
            .map(|(id, _)| *id)
            .collect();
        for id in unplanned {
            if short == 0 {
                break;
            }
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            let rows = job::cut(&job.spec, job.planned, short as u64, self.next_task);
            let Some(last) = rows.last() else {
                job.planned = job.total;
                continue;
            };
            job.planned = last.first_index + last.count;
            self.next_task += rows.len() as u64;
            short -= rows.len();
            self.install_tasks(id, &rows, None);
            self.actions.push_back(Action::Record(Record::TasksPlanned {
                job: id,
                tasks: rows,
            }));
        }
    }

    /// Whether any job still has items not cut into tasks.
    pub(crate) fn anything_unplanned(&self) -> bool {
        self.jobs.values().any(|j| !j.fully_planned())
    }

    /// Validates and plans a job; emits `JobCreated`, queues its tasks, returns its id and
    /// number of results.
    pub(crate) fn accept_job(&mut self, spec: &JobSpec) -> Result<(JobId, u64), String> {
        job::validate(spec)?;
        let pins = if spec.kind == JobKind::Map {
            targets::check_map(&spec.targets, &spec.work, &self.workers)?;
            self.check_map_fit(&spec.work)?;
            Vec::new()
        } else {
            targets::resolve(&spec.targets, &spec.work, &self.workers)?
        };
        if spec.kind == JobKind::Scatter
            && matches!(spec.work, Work::Python(_))
            && spec.items.len() != pins.len()
        {
            return Err(format!(
                "a Python scatter has one item per engine ({} engines, {} items)",
                pins.len(),
                spec.items.len()
            ));
        }
        let id = JobId(self.next_job);
        self.next_job += 1;
        let rows = job::plan(spec, &pins, self.next_task);
        self.next_task += rows.len() as u64;
        let total = total_results(spec, &rows);
        // Recorded before the tasks it queues are placed (placement records attempts).
        self.actions.push_back(Action::Record(Record::JobCreated {
            job: id,
            spec: spec.clone(),
            total,
            tasks: rows.clone(),
        }));
        self.install_job(id, spec, &rows, None);
        Ok((id, total))
    }
}

/// A job's number of results: one per map item, one per apply or scatter target (`rows`).
fn total_results(spec: &JobSpec, rows: &[TaskRow]) -> u64 {
    match spec.kind {
        JobKind::Map => spec.item_count(),
        JobKind::Apply | JobKind::Scatter => rows.len() as u64,
    }
}
