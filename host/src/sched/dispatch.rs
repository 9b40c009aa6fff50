//! Placement mechanism: walking the queue, finding eligible workers with free slots, asking
//! the policy, and starting attempts.

use bramble_wire::{Attempt, TaskId, TaskSpec, ToWorker, WorkerId};

use super::placement::{self, Candidate};
use super::worker::WorkerEntry;
use super::{Action, Record, Scheduler};

impl Scheduler {
    /// Places queued tasks on free slots, oldest task first.
    pub(super) fn dispatch(&mut self) {
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
            self.start(tid, choice);
            free -= 1;
        }
    }

    /// A worker for `tid`, or `None` to leave it queued. Workers where an attempt of the task
    /// failed are used only when no other eligible worker is connected.
    fn choose_worker(&self, tid: TaskId) -> Option<WorkerId> {
        let task = self.tasks.get(&tid)?;
        let filter = self.jobs.get(&task.job).and_then(|j| j.targets.as_ref());
        let eligible = |id: &WorkerId, w: &WorkerEntry| {
            task.pin.is_none_or(|p| p == *id)
                && filter.is_none_or(|f| f.matches(*id, &w.hello.labels))
        };
        let fresh_exists = self
            .workers
            .iter()
            .any(|(id, w)| eligible(id, w) && !task.avoid.contains(id));
        let candidates: Vec<Candidate> = self
            .workers
            .iter()
            .filter(|(id, w)| {
                w.has_free_slot() && eligible(id, w) && (!fresh_exists || !task.avoid.contains(id))
            })
            .map(|(id, w)| Candidate {
                id: *id,
                running: w.running(),
                slots: w.slots(),
            })
            .collect();
        placement::place(self.config.policy, &candidates, self.last_placed)
    }

    fn start(&mut self, tid: TaskId, worker: WorkerId) {
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
