//! The worker's decisions, without IO (quinn's shape: [`Core::handle`] takes what happened,
//! [`Core::poll_action`] says what to do). It owns admission (start now, wait for a slot,
//! already held, or refuse), cancel, drain, what starts when a slot frees, and the results:
//! sent when connected and kept until the host confirms them, held in a bounded outbox while
//! not. The session (`session.rs`) only does the IO these actions ask for.

use std::collections::{BTreeMap, VecDeque};

use bramble_wire::{Attempt, JobId, TaskId, TaskResult, TaskSpec, ToHost, ToWorker};

use crate::outbox::Outbox;

/// Something that happened.
#[derive(Debug)]
pub(crate) enum Input {
    /// The host welcomed this worker on a new connection.
    Connected,
    /// The connection is gone (tasks keep running).
    Disconnected,
    /// A frame from the host, after its `Welcome`.
    Host(ToWorker),
    /// A task's processes ended with this result.
    TaskEnded(TaskResult),
}

/// Something to do.
#[derive(Debug, PartialEq)]
pub(crate) enum Action {
    /// Start the task's processes now.
    Start(TaskSpec),
    /// Kill the running task's processes (its result still comes as `TaskEnded`).
    Kill(TaskId),
    /// Send this to the host.
    Send(ToHost),
    /// The job ended: stop its co-processes.
    EndJob(JobId),
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Core {
    slots: usize,
    /// Running tasks and the newest attempt of each this worker was given.
    running: BTreeMap<TaskId, Attempt>,
    /// Tasks sent ahead, waiting for a slot (at most one per slot).
    waiting: VecDeque<TaskSpec>,
    /// Results waiting for a connection.
    outbox: Outbox,
    /// Results sent on this connection that the host has not yet confirmed.
    unacked: Outbox,
    connected: bool,
    /// Set by the host's `Drain`: running tasks finish, new ones are refused.
    draining: bool,
    /// Results dropped from a full outbox since the last [`Core::take_dropped`].
    dropped: usize,
    actions: VecDeque<Action>,
}

impl Core {
    /// `outbox_limit`: bytes kept in each of the outbox and the unconfirmed results.
    pub(crate) fn new(slots: usize, outbox_limit: usize) -> Self {
        Self {
            slots,
            running: BTreeMap::new(),
            waiting: VecDeque::new(),
            outbox: Outbox::new(outbox_limit),
            unacked: Outbox::new(outbox_limit),
            connected: false,
            draining: false,
            dropped: 0,
            actions: VecDeque::new(),
        }
    }

    pub(crate) fn handle(&mut self, input: Input) {
        match input {
            Input::Connected => {
                self.connected = true;
                for result in self.outbox.take_all() {
                    tracing::info!(
                        "delivering task {} finished while disconnected",
                        result.task
                    );
                    self.send_result(result);
                }
            }
            Input::Disconnected => {
                self.connected = false;
                // Unconfirmed results go back ahead of the ones stashed since.
                self.dropped += self.outbox.prepend(&mut self.unacked);
            }
            Input::Host(msg) => self.handle_host(msg),
            Input::TaskEnded(result) => self.task_ended(result),
        }
    }

    /// The next thing to do.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Tasks running now.
    pub(crate) fn running(&self) -> u16 {
        u16::try_from(self.running.len()).unwrap_or(u16::MAX)
    }

    /// How many results were dropped from a full outbox since the last call.
    pub(crate) fn take_dropped(&mut self) -> usize {
        std::mem::take(&mut self.dropped)
    }

    fn handle_host(&mut self, msg: ToWorker) {
        match msg {
            ToWorker::RunTask(spec) => self.admit(spec),
            ToWorker::CancelTask { task } => {
                // A waiting task is simply dropped; a running one is killed.
                let before = self.waiting.len();
                self.waiting.retain(|w| w.task != task);
                if self.waiting.len() == before && self.running.contains_key(&task) {
                    self.actions.push_back(Action::Kill(task));
                }
            }
            ToWorker::Drain => self.draining = true,
            ToWorker::Undrain => self.draining = false,
            ToWorker::JobEnded { job } => self.actions.push_back(Action::EndJob(job)),
            ToWorker::ResultRecorded { task, attempt } => self.unacked.remove(task, attempt),
            // The session handles the handshake.
            ToWorker::Welcome(_) | ToWorker::Reject { .. } => {}
        }
    }

    /// A task this worker runs, holds waiting, or holds a successful result of is not run
    /// again (a resent frame, or a restarted host asking again): what it holds is labelled
    /// with the newest attempt, the one the host now expects. (A held failure does not
    /// count: the new attempt may be its retry.) With no room, or draining, it is refused.
    fn admit(&mut self, spec: TaskSpec) {
        if let Some(attempt) = self.running.get_mut(&spec.task) {
            *attempt = spec.attempt;
            return;
        }
        if let Some(w) = self.waiting.iter_mut().find(|w| w.task == spec.task) {
            w.attempt = spec.attempt;
            return;
        }
        if let Some(r) = self
            .outbox
            .success_of(spec.task)
            .or_else(|| self.unacked.success_of(spec.task))
        {
            r.attempt = spec.attempt;
            return;
        }
        if !self.draining && self.running.len() < self.slots {
            self.running.insert(spec.task, spec.attempt);
            self.actions.push_back(Action::Start(spec));
        } else if !self.draining && self.waiting.len() < self.slots {
            self.waiting.push_back(spec);
        } else {
            let msg = ToHost::TaskRefused {
                task: spec.task,
                attempt: spec.attempt,
            };
            self.actions.push_back(Action::Send(msg));
        }
    }

    /// A task ended: its slot goes to the task waiting for one, and its result, labelled with
    /// the newest attempt given, goes to the host (or the outbox).
    fn task_ended(&mut self, mut result: TaskResult) {
        if let Some(attempt) = self.running.remove(&result.task) {
            result.attempt = attempt;
            if let Some(next) = self.waiting.pop_front() {
                self.running.insert(next.task, next.attempt);
                self.actions.push_back(Action::Start(next));
            }
        }
        if self.connected {
            self.send_result(result);
        } else {
            self.dropped += self.outbox.push(result);
        }
    }

    /// Sends a result and keeps it until the host confirms it: a connection can die with the
    /// result still in flight.
    fn send_result(&mut self, result: TaskResult) {
        self.actions
            .push_back(Action::Send(ToHost::TaskFinished(result.clone())));
        self.dropped += self.unacked.push(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::{Command, ItemOutput, Outcome, Work};

    fn spec(task: u64, attempt: u32) -> TaskSpec {
        TaskSpec {
            task: TaskId(task),
            attempt: Attempt(attempt),
            job: JobId(1),
            work: Work::Command {
                command: Command {
                    argv: vec!["true".into()],
                    shell: false,
                    timeout_ms: 0,
                },
                persistent: false,
            },
            items: vec![],
        }
    }

    fn ended(task: u64, code: i32) -> Input {
        Input::TaskEnded(TaskResult {
            task: TaskId(task),
            attempt: Attempt(0),
            outputs: vec![ItemOutput::ended(0, Outcome::Exited(code), 1)],
        })
    }

    fn run(core: &mut Core, input: Input) -> Vec<Action> {
        core.handle(input);
        std::iter::from_fn(|| core.poll_action()).collect()
    }

    fn sent(actions: &[Action]) -> Vec<(u64, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(ToHost::TaskFinished(r)) => Some((r.task.0, r.attempt.0)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn admits_up_to_slots_waits_one_per_slot_refuses_the_rest() {
        let mut c = Core::new(1, 1 << 20);
        run(&mut c, Input::Connected);
        assert_eq!(
            run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 0)))),
            [Action::Start(spec(1, 0))]
        );
        assert!(
            run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 1)))).is_empty(),
            "held"
        );
        assert!(
            run(&mut c, Input::Host(ToWorker::RunTask(spec(2, 0)))).is_empty(),
            "waits"
        );
        assert!(
            run(&mut c, Input::Host(ToWorker::RunTask(spec(2, 1)))).is_empty(),
            "held"
        );
        let refused = run(&mut c, Input::Host(ToWorker::RunTask(spec(3, 0))));
        assert_eq!(
            refused,
            [Action::Send(ToHost::TaskRefused {
                task: TaskId(3),
                attempt: Attempt(0)
            })]
        );
        // Task 1 ends: it answers for attempt 1, and the waiting task takes the slot as the
        // newest attempt sent.
        let a = run(&mut c, ended(1, 0));
        assert_eq!(a[0], Action::Start(spec(2, 1)));
        assert_eq!(sent(&a), [(1, 1)]);
        assert_eq!(c.running(), 1);
    }

    #[test]
    fn cancel_drops_a_waiting_task_and_kills_a_running_one() {
        let mut c = Core::new(1, 1 << 20);
        run(&mut c, Input::Connected);
        run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 0))));
        run(&mut c, Input::Host(ToWorker::RunTask(spec(2, 0))));
        assert!(
            run(
                &mut c,
                Input::Host(ToWorker::CancelTask { task: TaskId(2) })
            )
            .is_empty()
        );
        let kill = run(
            &mut c,
            Input::Host(ToWorker::CancelTask { task: TaskId(1) }),
        );
        assert_eq!(kill, [Action::Kill(TaskId(1))]);
        // The killed task's slot does not go to the dropped one.
        let a = run(&mut c, ended(1, 137));
        assert!(!a.iter().any(|a| matches!(a, Action::Start(_))), "{a:?}");
    }

    #[test]
    fn a_drained_worker_refuses_new_work_until_undrained() {
        let mut c = Core::new(2, 1 << 20);
        run(&mut c, Input::Connected);
        run(&mut c, Input::Host(ToWorker::Drain));
        let a = run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 0))));
        assert!(matches!(a[..], [Action::Send(ToHost::TaskRefused { .. })]));
        run(&mut c, Input::Host(ToWorker::Undrain));
        let a = run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 0))));
        assert_eq!(a, [Action::Start(spec(1, 0))]);
    }

    #[test]
    fn results_the_host_did_not_confirm_go_out_again_first() {
        let mut c = Core::new(4, 1 << 20);
        run(&mut c, Input::Connected);
        for t in 1..=3 {
            run(&mut c, Input::Host(ToWorker::RunTask(spec(t, 0))));
            run(&mut c, ended(t, 0));
        }
        run(
            &mut c,
            Input::Host(ToWorker::ResultRecorded {
                task: TaskId(2),
                attempt: Attempt(0),
            }),
        );
        // Another attempt's confirmation does not count.
        run(
            &mut c,
            Input::Host(ToWorker::ResultRecorded {
                task: TaskId(3),
                attempt: Attempt(7),
            }),
        );
        run(&mut c, Input::Disconnected);
        run(&mut c, Input::Host(ToWorker::RunTask(spec(4, 0))));
        run(&mut c, ended(4, 0)); // finished while disconnected
        // A restarted host that never saw task 1's result asks for it again: not run twice,
        // and the result answers for the attempt the host now expects.
        assert!(run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 5)))).is_empty());
        let a = run(&mut c, Input::Connected);
        assert_eq!(sent(&a), [(1, 5), (3, 0), (4, 0)]);
        run(&mut c, Input::Disconnected);
        let a = run(&mut c, Input::Connected);
        assert_eq!(
            sent(&a),
            [(1, 5), (3, 0), (4, 0)],
            "still unconfirmed: sent again"
        );
    }

    #[test]
    fn a_held_failure_does_not_block_a_retry() {
        let mut c = Core::new(1, 1000);
        run(&mut c, Input::Connected);
        run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 0))));
        run(&mut c, ended(1, 1));
        let a = run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 1))));
        assert_eq!(a, [Action::Start(spec(1, 1))]);
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_says_so() {
        let mut c = Core::new(1, 300);
        for t in 1..=3 {
            run(&mut c, Input::Host(ToWorker::RunTask(spec(t, 0))));
            let mut r = TaskResult {
                task: TaskId(t),
                attempt: Attempt(0),
                outputs: vec![ItemOutput::ended(0, Outcome::Exited(0), 1)],
            };
            r.outputs[0].stdout = vec![b'x'; 150];
            run(&mut c, Input::TaskEnded(r));
        }
        assert_eq!(c.take_dropped(), 2);
        assert_eq!(c.take_dropped(), 0);
        assert_eq!(sent(&run(&mut c, Input::Connected)), [(3, 0)]);
    }
}
