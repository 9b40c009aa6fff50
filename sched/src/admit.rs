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
        let mut open_tasks = BTreeSet::new();
        for row in rows
            .iter()
            .filter(|row| restored.is_none_or(|r| !r.done.contains(&row.task)))
        {
            let past = |m: fn(&RestoredJob) -> &BTreeMap<TaskId, u32>| {
                restored
                    .and_then(|r| m(r).get(&row.task).copied())
                    .unwrap_or(0)
            };
            let retries = spec.retries.saturating_sub(past(|r| &r.failed_attempts));
            let items = job::items(spec, row, rows.len());
            let mut task = Task::new(id, items, row.pin, retries);
            task.slot = row.slot;
            task.attempts = past(|r| &r.attempts);
            self.tasks.insert(row.task, task);
            self.queue.push_back(row.task);
            open_tasks.insert(row.task);
        }
        // Apply and scatter tasks are pinned; only map tasks choose among targets.
        let targets = if spec.kind == JobKind::Map {
            TargetFilter::for_map(spec)
        } else {
            None
        };
        let job = Job {
            work: spec.work.clone(),
            targets,
            failed: restored.map_or(0, |r| r.failed),
            open_tasks,
        };
        self.jobs.insert(id, job);
    }

    /// Validates and plans a job; emits `JobCreated`, queues its tasks, returns its id and
    /// number of results.
    pub(crate) fn accept_job(&mut self, spec: &JobSpec) -> Result<(JobId, u64), String> {
        job::validate(spec)?;
        let pins = if spec.kind == JobKind::Map {
            targets::check_map(&spec.targets, &spec.work, &self.workers)?;
            self.check_python_map(&spec.work)?;
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
        self.install_job(id, spec, &rows, None);
        let total = rows.iter().map(|r| r.count).sum();
        self.actions.push_back(Action::Record(Record::JobCreated {
            job: id,
            spec: spec.clone(),
            tasks: rows,
        }));
        Ok((id, total))
    }
}
