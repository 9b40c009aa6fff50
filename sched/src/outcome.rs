//! What happens to tasks after they start: results (recorded once, or retried), workers lost,
//! jobs finished or cancelled.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bramble_wire::{
    Attempt, EngineId, ItemOutput, JobId, JobState, Outcome, TaskId, TaskResult, ToWorker, WorkerId,
};

use super::job::Job;
use super::{Action, Record, Scheduler};

impl Scheduler {
    /// `worker` had no room for this attempt: the task waits for another placement (no
    /// failure counted), and `worker` gets nothing more until one of its tasks finishes.
    pub(super) fn handle_refusal(&mut self, worker: WorkerId, task: TaskId, attempt: Attempt) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        w.refusing = true;
        let Some(t) = self.tasks.get_mut(&task) else {
            return;
        };
        if !t
            .running_attempts()
            .any(|running| running == (worker, attempt))
        {
            return; // already re-placed, or finished elsewhere
        }
        w.remove_task(task);
        if !t.drop_attempt_on(worker) && !self.queue.contains(&task) {
            self.requeue(task);
        }
    }

    /// Puts a task back at the front of the queue to be placed again, or, if its job winds
    /// down, drops it: nothing new starts.
    fn requeue(&mut self, task: TaskId) {
        let job = self.tasks.get(&task).map(|t| t.job);
        if let Some(job) = job.filter(|j| self.jobs.get(j).is_some_and(|j| j.winding_down)) {
            self.stop_starting(job, &[task]);
        } else {
            self.queue.push_front(task);
        }
    }

    /// Winds a running job down (`--halt soon`): no more of its items are cut into tasks,
    /// its queued tasks are dropped, failures are not retried; what workers have been sent
    /// runs to its end and is recorded, and then the job ends as cancelled. False if it is
    /// not running.
    pub(super) fn wind_down(&mut self, id: JobId) -> bool {
        let Some(job) = self.jobs.get(&id) else {
            return false;
        };
        let queued: Vec<TaskId> = job
            .open_tasks
            .iter()
            .filter(|t| self.tasks.get(t).is_some_and(|t| t.running_on.is_none()))
            .copied()
            .collect();
        self.actions
            .push_back(Action::Record(Record::JobWindingDown { job: id }));
        self.stop_starting(id, &queued);
        true
    }

    /// Drops tasks of a winding-down job that have not started, and ends the job if nothing
    /// of it runs any more.
    pub(super) fn stop_starting(&mut self, id: JobId, tasks: &[TaskId]) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.winding_down = true;
        job.planned = job.total;
        for t in tasks {
            job.open_tasks.remove(t);
            self.tasks.remove(t);
        }
        let dropped: BTreeSet<TaskId> = tasks.iter().copied().collect();
        self.queue.retain(|t| !dropped.contains(t));
        self.finish_job_if_done(id);
    }

    /// Records a task's result once; a failed attempt with retries left is re-queued on
    /// another worker instead; later copies (a task that ran twice) are dropped.
    pub(super) fn handle_result(
        &mut self,
        from: Option<WorkerId>,
        result: TaskResult,
        now: Instant,
    ) {
        // A copy of an older attempt's result, sent again, while a newer attempt of the task
        // runs on the same worker: that one still holds its slot.
        let newer_here = self.tasks.get(&result.task).is_some_and(|t| {
            t.running_attempts()
                .any(|(w, a)| Some(w) == from && a != result.attempt)
        });
        if let Some(w) = from.and_then(|id| self.workers.get_mut(&id)) {
            // A slot of it is free, whatever it refused before.
            w.refusing = false;
            if !newer_here {
                w.remove_task(result.task);
            }
            // Every successful item teaches us the worker's speed, duplicates included. A
            // task's items ran one after another, the last one ending about now.
            let mut ended = now;
            for o in result.outputs.iter().rev() {
                if o.outcome.is_success() {
                    w.speed.observe_item(o.duration_ms, ended);
                }
                ended = ended
                    .checked_sub(Duration::from_millis(o.duration_ms))
                    .unwrap_or(ended);
            }
        }
        let Some(task) = self.tasks.get_mut(&result.task) else {
            return; // already recorded, or its job is gone
        };
        // A worker given a new attempt of a task it still holds (after a host restart) runs
        // it once and answers for the newest attempt, so attempts match exactly.
        let others: Vec<WorkerId> = task
            .running_attempts()
            .filter(|(w, a)| (Some(*w), *a) != (from, result.attempt))
            .map(|(w, _)| w)
            .collect();
        let failed = result.outputs.len() != task.items.len() || !result.succeeded();
        let current = task
            .running_attempts()
            .any(|(w, a)| (Some(w), a) == (from, result.attempt));
        if failed && !current {
            // The failure of an attempt already given up on: counted when it first came (and
            // sent again after a connection dropped before its ack), or its worker was lost
            // and the task moved on. The task's queued or running attempt decides.
            return;
        }
        let winding = self.jobs.get(&task.job).is_some_and(|j| j.winding_down);
        if failed && task.retries_left > 0 && !winding {
            let (task_id, attempt) = (result.task, result.attempt);
            self.actions
                .push_back(Action::Record(Record::AttemptFailed {
                    task: task_id,
                    attempt,
                }));
            let still_running = from.is_some_and(|w| task.drop_attempt_on(w)) || !others.is_empty();
            if !still_running {
                task.retries_left -= 1;
                task.avoid.extend(from);
                task.running_on = None;
                task.backup = None;
                if !self.queue.contains(&task_id) {
                    self.queue.push_front(task_id);
                }
            }
            return;
        }
        let Some(task) = self.tasks.remove(&result.task) else {
            return;
        };
        // Another attempt still running elsewhere (a requeued or speculative copy): this
        // result wins, stop that one.
        for w in others {
            if let Some(w) = self.workers.get_mut(&w) {
                w.remove_task(result.task);
                let msg = ToWorker::CancelTask { task: result.task };
                self.actions.push_back(Action::Send {
                    session: w.session,
                    msg,
                });
            }
        }
        // Placed tasks are not queued: only a task waiting for another placement (its worker
        // was lost) is looked for in the queue, which can hold a whole job.
        if task.running_on.is_none() {
            self.queue.retain(|t| *t != result.task);
        }
        let worker = from
            .or(task.running_on.map(|(w, _)| w))
            .unwrap_or(WorkerId(u32::MAX));
        let engine = self
            .workers
            .get(&worker)
            .and_then(|w| w.engine(result.engine.or(task.slot)));
        let mut outputs = result.outputs;
        for item in &task.items {
            let output = match outputs.iter().position(|o| o.index == item.index) {
                Some(pos) => outputs.swap_remove(pos),
                None => ItemOutput::failed(
                    item.index,
                    Outcome::Lost,
                    "the worker returned no result for this item",
                ),
            };
            self.record_result(task.job, worker, engine, output);
        }
        if let Some(w) = from.and_then(|id| self.workers.get_mut(&id)) {
            w.done += task.items.len() as u64;
        }
        if let Some(job) = self.jobs.get_mut(&task.job) {
            job.open_tasks.remove(&result.task);
        }
        self.finish_job_if_done(task.job);
    }

    fn record_result(
        &mut self,
        job_id: JobId,
        worker: WorkerId,
        engine: Option<EngineId>,
        output: ItemOutput,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if !output.outcome.is_success() {
            job.failed += 1;
        }
        self.actions
            .push_back(Action::Record(Record::ResultRecorded {
                job: job_id,
                worker,
                engine,
                output,
            }));
    }

    pub(super) fn finish_job_if_done(&mut self, id: JobId) {
        if self
            .jobs
            .get(&id)
            .is_some_and(|j| j.open_tasks.is_empty() && j.fully_planned())
            && let Some(job) = self.jobs.remove(&id)
        {
            let state = if job.winding_down {
                JobState::Cancelled
            } else {
                JobState::Done
            };
            self.end_job(id, &job, state);
        }
    }

    fn end_job(&mut self, id: JobId, job: &Job, state: JobState) {
        self.actions.push_back(Action::Record(Record::JobEnded {
            job: id,
            state,
            failed: job.failed,
        }));
        if job.work().keeps_job_state() {
            for w in self.workers.values_mut() {
                w.functions_sent.remove(&id);
                self.actions.push_back(Action::Send {
                    session: w.session,
                    msg: ToWorker::JobEnded { job: id },
                });
            }
        }
    }

    /// Stops a running job: queued tasks are forgotten, running ones cancelled on their
    /// workers. False if the job is not running.
    pub(super) fn cancel(&mut self, id: JobId) -> bool {
        let Some(job) = self.jobs.remove(&id) else {
            return false;
        };
        for tid in &job.open_tasks {
            let Some(task) = self.tasks.remove(tid) else {
                continue;
            };
            for (w, _) in task.running_attempts() {
                if let Some(w) = self.workers.get_mut(&w) {
                    w.remove_task(*tid);
                    let msg = ToWorker::CancelTask { task: *tid };
                    self.actions.push_back(Action::Send {
                        session: w.session,
                        msg,
                    });
                }
            }
        }
        self.queue.retain(|t| !job.open_tasks.contains(t));
        self.end_job(id, &job, JobState::Cancelled);
        true
    }

    /// Forgets a connected worker; its running tasks go back to the queue front, or fail as
    /// lost once they have lost too many workers.
    pub(super) fn lose_worker(&mut self, id: WorkerId) {
        let Some(w) = self.workers.remove(&id) else {
            return;
        };
        self.sessions.remove(&w.session);
        for tid in w.running.iter().rev() {
            let Some(task) = self.tasks.get_mut(tid) else {
                continue;
            };
            if task.drop_attempt_on(id) {
                continue; // its other attempt (speculative or primary) carries on
            }
            task.losses += 1;
            if task.losses < self.config.max_losses {
                self.requeue(*tid);
                continue;
            }
            let (job, items) = (task.job, task.items.clone());
            self.tasks.remove(tid);
            for item in items {
                let why = format!("lost {} workers while running it", self.config.max_losses);
                let lost = ItemOutput::failed(item.index, Outcome::Lost, &why);
                self.record_result(job, id, None, lost);
            }
            if let Some(j) = self.jobs.get_mut(&job) {
                j.open_tasks.remove(tid);
            }
            self.finish_job_if_done(job);
        }
    }
}
