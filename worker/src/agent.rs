//! The worker's bookkeeping, without IO: which tasks run, which wait for a slot (the host may
//! send one task per slot ahead, to hide its round trip), and the bounded outbox of results
//! that finished while no host was connected or that the host has not yet recorded (delivered
//! on the next connection).

use std::collections::{BTreeMap, VecDeque};

use bramble_wire::{Attempt, TaskId, TaskResult, TaskSpec};

/// What to do with a `RunTask`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Start it now.
    Start(TaskSpec),
    /// Every slot is busy: it waits here and starts when one frees.
    Queued,
    /// This task is already here: running, waiting, or its successful result waiting to be
    /// delivered (a resent frame, or a restarted host asking again). It is not run twice; its
    /// result is labelled with this newest attempt, the one the host now expects. (A failed
    /// result does not count: the new attempt may be its retry.)
    Duplicate,
    /// Slots and queue are full; the host over-committed. Report it back as failed to start.
    Full(TaskSpec),
}

/// Task table and outbox.
#[derive(Debug)]
pub(crate) struct Agent {
    slots: usize,
    running: BTreeMap<TaskId, Attempt>,
    /// Tasks sent ahead, waiting for a slot (at most one per slot).
    waiting: VecDeque<TaskSpec>,
    outbox: VecDeque<TaskResult>,
    outbox_bytes: usize,
    /// Results sent on this connection that the host has not yet reported as recorded.
    unacked: VecDeque<TaskResult>,
    unacked_bytes: usize,
    /// Bytes kept in each of `outbox` and `unacked` before the oldest results are dropped.
    outbox_limit: usize,
    /// Set by the host's `Drain`: running tasks finish, new ones are refused.
    draining: bool,
}

impl Agent {
    pub(crate) fn new(slots: usize, outbox_limit: usize) -> Self {
        Self {
            slots,
            running: BTreeMap::new(),
            waiting: VecDeque::new(),
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            outbox_limit,
            draining: false,
        }
    }

    pub(crate) fn admit(&mut self, spec: TaskSpec) -> Admit {
        if let Some(attempt) = self.running.get_mut(&spec.task) {
            *attempt = spec.attempt;
            return Admit::Duplicate;
        }
        if let Some(w) = self.waiting.iter_mut().find(|w| w.task == spec.task) {
            w.attempt = spec.attempt;
            return Admit::Duplicate;
        }
        if let Some(r) = self
            .outbox
            .iter_mut()
            .chain(&mut self.unacked)
            .find(|r| r.task == spec.task && r.succeeded())
        {
            r.attempt = spec.attempt;
            return Admit::Duplicate;
        }
        if self.draining {
            return Admit::Full(spec);
        }
        if self.running.len() < self.slots {
            self.running.insert(spec.task, spec.attempt);
            return Admit::Start(spec);
        }
        if self.waiting.len() < self.slots {
            self.waiting.push_back(spec);
            return Admit::Queued;
        }
        Admit::Full(spec)
    }

    /// Drops a task that is still waiting for a slot; true if it was.
    pub(crate) fn cancel_waiting(&mut self, task: TaskId) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|w| w.task != task);
        self.waiting.len() != before
    }

    /// Stop taking new tasks.
    pub(crate) fn drain(&mut self) {
        self.draining = true;
    }

    /// A task's process(es) ended with `result`, which is labelled with the newest attempt
    /// this worker was given for it (see [`Admit::Duplicate`]); returns the waiting task that
    /// takes its slot.
    pub(crate) fn finished(&mut self, result: &mut TaskResult) -> Option<TaskSpec> {
        result.attempt = self.running.remove(&result.task)?;
        let next = self.waiting.pop_front()?;
        self.running.insert(next.task, next.attempt);
        Some(next)
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
        trim(&mut self.outbox, &mut self.outbox_bytes, self.outbox_limit)
    }

    /// Takes every stashed result, oldest first.
    pub(crate) fn drain_outbox(&mut self) -> Vec<TaskResult> {
        self.outbox_bytes = 0;
        self.outbox.drain(..).collect()
    }

    /// A result was written to a host that acknowledges results: kept until it is recorded,
    /// since a connection can die with the result still in flight. Returns how many old
    /// unacknowledged results were dropped to stay within the limit (the host re-runs them).
    pub(crate) fn sent(&mut self, result: TaskResult) -> usize {
        self.unacked_bytes += size_of_result(&result);
        self.unacked.push_back(result);
        trim(
            &mut self.unacked,
            &mut self.unacked_bytes,
            self.outbox_limit,
        )
    }

    /// The host committed this result: forget it.
    pub(crate) fn recorded(&mut self, task: TaskId, attempt: Attempt) {
        if let Some(i) = self
            .unacked
            .iter()
            .position(|r| (r.task, r.attempt) == (task, attempt))
            && let Some(r) = self.unacked.remove(i)
        {
            self.unacked_bytes -= size_of_result(&r);
        }
    }

    /// The connection ended: results it never confirmed go back to the outbox, ahead of the
    /// ones stashed since, to be sent again on the next connection. Returns how many were
    /// dropped to stay within the limit.
    pub(crate) fn connection_lost(&mut self) -> usize {
        self.outbox_bytes += std::mem::take(&mut self.unacked_bytes);
        while let Some(r) = self.unacked.pop_back() {
            self.outbox.push_front(r);
        }
        trim(&mut self.outbox, &mut self.outbox_bytes, self.outbox_limit)
    }
}

/// Drops the oldest results (keeping at least the newest) until `bytes` is within `limit`;
/// returns how many.
fn trim(queue: &mut VecDeque<TaskResult>, bytes: &mut usize, limit: usize) -> usize {
    let mut dropped = 0;
    while *bytes > limit && queue.len() > 1 {
        if let Some(old) = queue.pop_front() {
            *bytes -= size_of_result(&old);
            dropped += 1;
        }
    }
    dropped
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

    fn spec(task: u64) -> TaskSpec {
        TaskSpec {
            task: TaskId(task),
            attempt: Attempt(0),
            command: bramble_wire::Command {
                argv: vec!["true".into()],
                shell: false,
                timeout_ms: 0,
            },
            items: vec![],
            job: bramble_wire::JobId(1),
            persistent: false,
        }
    }

    #[test]
    fn admits_up_to_slots_queues_one_per_slot_and_ignores_duplicates() {
        let mut a = Agent::new(1, 1 << 20);
        assert_eq!(a.admit(spec(1)), Admit::Start(spec(1)));
        assert_eq!(a.admit(spec(1)), Admit::Duplicate);
        let again = |task| TaskSpec {
            attempt: Attempt(1),
            ..spec(task)
        };
        assert_eq!(
            a.admit(again(1)),
            Admit::Duplicate,
            "another attempt, same task"
        );
        assert_eq!(a.admit(spec(2)), Admit::Queued);
        assert_eq!(a.admit(spec(2)), Admit::Duplicate);
        assert_eq!(a.admit(again(2)), Admit::Duplicate);
        assert_eq!(a.admit(spec(3)), Admit::Full(spec(3)));
        let mut first = result(1, 0);
        assert_eq!(
            a.finished(&mut first),
            Some(again(2)),
            "the waiting task takes the slot, as the newest attempt sent"
        );
        assert_eq!(first.attempt, Attempt(1), "answers for the newest attempt");
        assert_eq!(a.finished(&mut result(1, 0)), None);
        assert_eq!(a.running(), 1);
        assert_eq!(a.admit(spec(4)), Admit::Queued);
        assert!(a.cancel_waiting(TaskId(4)) && !a.cancel_waiting(TaskId(4)));
        assert_eq!(a.finished(&mut result(2, 0)), None);
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

    #[test]
    fn results_the_host_did_not_record_go_out_again_first() {
        let mut a = Agent::new(1, 1000);
        assert_eq!(a.sent(result(1, 100)), 0);
        assert_eq!(a.sent(result(2, 100)), 0);
        assert_eq!(a.sent(result(3, 100)), 0);
        a.recorded(TaskId(2), Attempt(0));
        a.recorded(TaskId(3), Attempt(7)); // another attempt's record: keep this one
        // Finished after the connection died, before anything noticed.
        a.stash(result(4, 100));
        assert_eq!(a.connection_lost(), 0);
        // A restarted host that never saw task 1's result asks for it again: not run twice,
        // and the result answers for the attempt the host now expects.
        let again = TaskSpec {
            attempt: Attempt(5),
            ..spec(1)
        };
        assert_eq!(a.admit(again), Admit::Duplicate);
        let held: Vec<(u64, u32)> = a
            .drain_outbox()
            .iter()
            .map(|r| (r.task.0, r.attempt.0))
            .collect();
        assert_eq!(held, [(1, 5), (3, 0), (4, 0)]);
        assert_eq!(a.connection_lost(), 0);
        assert!(
            a.drain_outbox().is_empty(),
            "nothing is sent twice from here"
        );
    }

    #[test]
    fn unacknowledged_results_are_bounded_too() {
        let mut a = Agent::new(1, 1000);
        assert_eq!(a.sent(result(1, 400)), 0);
        assert_eq!(a.sent(result(2, 400)), 0);
        assert_eq!(a.sent(result(3, 400)), 1);
        a.stash(result(4, 400));
        assert_eq!(a.connection_lost(), 1, "2, 3 and 4 are over the limit");
        let ids: Vec<u64> = a.drain_outbox().iter().map(|r| r.task.0).collect();
        assert_eq!(ids, [3, 4]);
    }

    #[test]
    fn a_held_failure_does_not_block_a_retry() {
        let mut a = Agent::new(1, 1000);
        let mut failed = result(1, 10);
        failed.outputs[0].outcome = Outcome::Exited(1);
        a.sent(failed);
        let retry = TaskSpec {
            attempt: Attempt(1),
            ..spec(1)
        };
        assert_eq!(a.admit(retry.clone()), Admit::Start(retry));
    }
}
