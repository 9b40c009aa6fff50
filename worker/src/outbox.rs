//! A byte-bounded queue of task results: the results that wait for a connection, and those
//! sent but not yet confirmed by the host. Over its bound it drops the oldest results (the
//! host re-runs the tasks of a worker whose results never came, so a dropped result costs a
//! re-run, never a lost item).

use std::collections::VecDeque;

use bramble_wire::{Attempt, TaskId, TaskResult};

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: VecDeque<TaskResult>,
    bytes: usize,
    limit: usize,
}

impl Outbox {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    /// Adds a result at the back; returns how many old ones were dropped to make room.
    pub(crate) fn push(&mut self, result: TaskResult) -> usize {
        self.bytes += size_of_result(&result);
        self.queue.push_back(result);
        self.trim()
    }

    /// Puts `other`'s results in front of these (they are older); returns how many were
    /// dropped to stay within the bound.
    pub(crate) fn prepend(&mut self, other: &mut Self) -> usize {
        self.bytes += std::mem::take(&mut other.bytes);
        while let Some(r) = other.queue.pop_back() {
            self.queue.push_front(r);
        }
        self.trim()
    }

    /// Takes every result, oldest first.
    pub(crate) fn take_all(&mut self) -> Vec<TaskResult> {
        self.bytes = 0;
        self.queue.drain(..).collect()
    }

    /// Forgets the result of this attempt, if held.
    pub(crate) fn remove(&mut self, task: TaskId, attempt: Attempt) {
        if let Some(i) = self
            .queue
            .iter()
            .position(|r| (r.task, r.attempt) == (task, attempt))
            && let Some(r) = self.queue.remove(i)
        {
            self.bytes -= size_of_result(&r);
        }
    }

    /// A successful result of `task` held here, to answer for a newer attempt.
    pub(crate) fn success_of(&mut self, task: TaskId) -> Option<&mut TaskResult> {
        self.queue
            .iter_mut()
            .find(|r| r.task == task && r.succeeded())
    }

    /// Drops the oldest results (keeping at least the newest) until within the bound.
    fn trim(&mut self) -> usize {
        let mut dropped = 0;
        while self.bytes > self.limit && self.queue.len() > 1 {
            if let Some(old) = self.queue.pop_front() {
                self.bytes -= size_of_result(&old);
                dropped += 1;
            }
        }
        dropped
    }
}

fn size_of_result(r: &TaskResult) -> usize {
    r.outputs
        .iter()
        .map(|o| o.stdout.len() + o.stderr.len() + o.value.len() + 64)
        .sum::<usize>()
        + 32
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::{ItemOutput, Outcome};

    fn result(task: u64, bytes: usize) -> TaskResult {
        let mut out = ItemOutput::ended(0, Outcome::Exited(0), 1);
        out.stdout = vec![b'x'; bytes];
        TaskResult {
            task: TaskId(task),
            attempt: Attempt(0),
            outputs: vec![out],
            engine: None,
        }
    }

    #[test]
    fn bounded_oldest_dropped_first_and_drained_in_order() {
        let mut o = Outbox::new(1000);
        assert_eq!(o.push(result(1, 400)), 0);
        assert_eq!(o.push(result(2, 400)), 0);
        assert_eq!(
            o.push(result(3, 400)),
            1,
            "oldest dropped once over the limit"
        );
        let mut older = Outbox::new(1000);
        older.push(result(0, 100));
        assert_eq!(o.prepend(&mut older), 1, "0 and 2 do not both fit with 3");
        let ids: Vec<u64> = o.take_all().iter().map(|r| r.task.0).collect();
        assert_eq!(ids, [2, 3]);
        assert!(o.take_all().is_empty());
    }
}
