//! The worker's decisions, without IO (quinn's shape: [`Core::handle`] takes what happened,
//! [`Core::poll_action`] says what to do). It owns admission (start now, wait for room,
//! already held, or refuse), cancel, drain, what starts when a slot or engine frees, the
//! functions of Python jobs (sent once per job, kept until the job ends), and the results:
//! sent when connected and kept until the host confirms them, held in a bounded outbox while
//! not. The session (`session.rs`) only does the IO these actions ask for.

mod slots;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bramble_wire::{JobId, TaskId, TaskResult, TaskSpec, ToHost, ToWorker, Work};

use crate::outbox::Outbox;
use slots::Slots;

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

/// A task to start, and what it needs.
#[derive(Debug, PartialEq)]
pub(crate) struct Start {
    pub(crate) spec: TaskSpec,
    /// The engine (slot) a Python task runs in.
    pub(crate) engine: Option<u16>,
    /// A Python job's function envelope.
    pub(crate) function: Option<Arc<Vec<u8>>>,
}

/// Something to do.
#[derive(Debug, PartialEq)]
pub(crate) enum Action {
    /// Start the task's processes (or its items in an engine) now.
    Start(Start),
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
    slots: Slots,
    /// Python jobs' functions, as the host sent them with each job's first task here.
    functions: BTreeMap<JobId, Arc<Vec<u8>>>,
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
            slots: Slots::new(slots),
            functions: BTreeMap::new(),
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
        u16::try_from(self.slots.running()).unwrap_or(u16::MAX)
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
                if !self.slots.drop_waiting(task) && self.slots.is_running(task) {
                    self.actions.push_back(Action::Kill(task));
                }
            }
            ToWorker::Drain => self.draining = true,
            ToWorker::Undrain => self.draining = false,
            ToWorker::JobEnded { job } => {
                self.functions.remove(&job);
                self.actions.push_back(Action::EndJob(job));
            }
            ToWorker::ResultRecorded { task, attempt } => self.unacked.remove(task, attempt),
            // The session handles the handshake.
            ToWorker::Welcome(_) | ToWorker::Reject { .. } => {}
        }
    }

    /// A task this worker runs, holds waiting, or holds a successful result of is not run
    /// again (a resent frame, or a restarted host asking again): what it holds is labelled
    /// with the newest attempt, the one the host now expects. (A held failure does not
    /// count: the new attempt may be its retry.) With no room, or draining, it is refused.
    fn admit(&mut self, mut spec: TaskSpec) {
        // A job's function comes once, with its first task here, whatever becomes of it.
        if let Work::Python(p) = &mut spec.work
            && let Some(function) = p.function.take()
        {
            self.functions.insert(spec.job, Arc::new(function));
        }
        if self.slots.relabel(spec.task, spec.attempt) {
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
        let room = self.slots.room_for(&spec);
        if let (false, Some(engine)) = (self.draining, room) {
            self.start(spec, engine);
        } else if !self.draining && self.slots.can_wait() {
            self.slots.wait(spec);
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
        if let Some(attempt) = self.slots.finished(result.task) {
            result.attempt = attempt;
            while let Some((next, engine)) = self.slots.next_startable() {
                self.start(next, engine);
            }
        }
        if self.connected {
            self.send_result(result);
        } else {
            self.dropped += self.outbox.push(result);
        }
    }

    fn start(&mut self, spec: TaskSpec, engine: Option<u16>) {
        self.slots.start(&spec, engine);
        let function = match spec.work {
            Work::Python(_) => self.functions.get(&spec.job).cloned(),
            Work::Command { .. } | Work::StagedCommand(_) => None,
        };
        self.actions.push_back(Action::Start(Start {
            spec,
            engine,
            function,
        }));
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
mod tests;
