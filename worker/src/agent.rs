//! The worker's bookkeeping, without IO: which tasks run, and the bounded outbox of results
//! that finished while no host was connected (delivered on the next connection).

use std::collections::{BTreeMap, VecDeque};

use bramble_wire::{Attempt, TaskId, TaskResult};

/// What to do with a `RunTask`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Start it.
    Start,
    /// This attempt already runs here (a resent frame): ignore.
    Duplicate,
    /// All slots are busy; the host over-committed. Report it back as failed to start.
    Full,
}

/// Task table and outbox.
#[derive(Debug)]
pub(crate) struct Agent {
    slots: usize,
    running: BTreeMap<TaskId, Attempt>,
    outbox: VecDeque<TaskResult>,
    outbox_bytes: usize,
    outbox_limit: usize,
    /// Set by the host's `Drain`: running tasks finish, new ones are refused.
    draining: bool,
}

impl Agent {
    pub(crate) fn new(slots: usize, outbox_limit: usize) -> Self {
        Self {
            slots,
            running: BTreeMap::new(),
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            outbox_limit,
            draining: false,
        }
    }

    pub(crate) fn admit(&mut self, task: TaskId, attempt: Attempt) -> Admit {
        if self.running.get(&task) == Some(&attempt) {
            return Admit::Duplicate;
        }
        if self.draining || self.running.len() >= self.slots {
            return Admit::Full;
        }
        self.running.insert(task, attempt);
        Admit::Start
    }

    /// Stop taking new tasks.
    pub(crate) fn drain(&mut self) {
        self.draining = true;
    }

    /// A task's process(es) ended; returns whether it was still tracked.
    pub(crate) fn finished(&mut self, task: TaskId) -> bool {
        self.running.remove(&task).is_some()
    }

    pub(crate) fn running(&self) -> u16 {
        u16::try_from(self.running.len()).unwrap_or(u16::MAX)
    }

    /// Keeps a result for the next connection. When the outbox is over its byte limit the
    /// oldest results are dropped: the host re-queues tasks of a lost worker, so a dropped
    /// result costs a re-run, never a lost item.
    pub(crate) fn stash(&mut self, result: TaskResult) -> usize {
        self.outbox_bytes += size_of_result(&result);
        self.outbox.push_back(result);
        let mut dropped = 0;
        while self.outbox_bytes > self.outbox_limit && self.outbox.len() > 1 {
            if let Some(old) = self.outbox.pop_front() {
                self.outbox_bytes -= size_of_result(&old);
                dropped += 1;
            }
        }
        dropped
    }

    /// Takes every stashed result, oldest first.
    pub(crate) fn drain_outbox(&mut self) -> Vec<TaskResult> {
        self.outbox_bytes = 0;
        self.outbox.drain(..).collect()
    }
}

fn size_of_result(r: &TaskResult) -> usize {
    r.outputs
        .iter()
        .map(|o| o.stdout.len() + o.stderr.len() + 64)
        .sum::<usize>()
        + 32
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::{ItemOutput, Outcome};

    fn result(task: u64, bytes: usize) -> TaskResult {
        let out = ItemOutput {
            index: 0,
            outcome: Outcome::Exited(0),
            stdout: vec![b'x'; bytes],
            stderr: vec![],
            truncated_bytes: 0,
            duration_ms: 1,
        };
        TaskResult {
            task: TaskId(task),
            attempt: Attempt(0),
            outputs: vec![out],
        }
    }

    #[test]
    fn admits_up_to_slots_and_ignores_duplicates() {
        let mut a = Agent::new(2, 1 << 20);
        assert_eq!(a.admit(TaskId(1), Attempt(0)), Admit::Start);
        assert_eq!(a.admit(TaskId(1), Attempt(0)), Admit::Duplicate);
        assert_eq!(a.admit(TaskId(2), Attempt(0)), Admit::Start);
        assert_eq!(a.admit(TaskId(3), Attempt(0)), Admit::Full);
        assert!(a.finished(TaskId(1)));
        assert!(!a.finished(TaskId(1)));
        assert_eq!(a.running(), 1);
    }

    #[test]
    fn outbox_is_bounded_and_drains_in_order() {
        let mut a = Agent::new(1, 1000);
        assert_eq!(a.stash(result(1, 400)), 0);
        assert_eq!(a.stash(result(2, 400)), 0);
        assert_eq!(
            a.stash(result(3, 400)),
            1,
            "oldest dropped once over the limit"
        );
        let ids: Vec<u64> = a.drain_outbox().iter().map(|r| r.task.0).collect();
        assert_eq!(ids, [2, 3]);
        assert!(a.drain_outbox().is_empty());
    }
}
