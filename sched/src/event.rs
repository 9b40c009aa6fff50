//! The scheduler's inputs (facts, past tense) and outputs (imperatives).

use std::time::Duration;

use bramble_wire::{
    Attempt, EngineId, Hello, ItemOutput, JobId, JobSpec, JobState, OutputChunk, PythonReport,
    TaskId, TaskResult, Telemetry, ToClient, ToWorker, WorkerId,
};

/// One worker connection. A reconnecting worker gets a new session; events of an old
/// session are ignored once it is superseded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// One client request that expects an answer (submit, cancel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Something that happened, fed to [`super::Scheduler::handle`].
#[derive(Clone, Debug)]
pub enum Event {
    /// A worker with a verified certificate `name` said hello on a new connection.
    WorkerConnected {
        session: SessionId,
        name: String,
        hello: Hello,
        address: String,
        /// The id the name was given at enrollment, if any; kept unless the name already has
        /// one or another name took it.
        enrolled: Option<WorkerId>,
    },
    /// The connection of `session` closed (for any reason).
    WorkerDisconnected { session: SessionId },
    /// A telemetry report arrived.
    TelemetryReceived {
        session: SessionId,
        telemetry: Telemetry,
    },
    /// A task's results arrived.
    TaskFinished {
        session: SessionId,
        result: TaskResult,
    },
    /// A worker had no room for an attempt; nothing ran.
    TaskRefused {
        session: SessionId,
        task: TaskId,
        attempt: Attempt,
    },
    /// A worker said what its Python can do.
    PythonReported {
        session: SessionId,
        report: PythonReport,
    },
    /// A worker said what board it runs on.
    BoardReported { session: SessionId, model: String },
    /// A running Python item printed something.
    OutputReceived {
        session: SessionId,
        chunk: OutputChunk,
    },
    /// A client submitted a job.
    JobSubmitted { request: RequestId, spec: JobSpec },
    /// A client asked to cancel a job: at once (`soon` false: running tasks are killed), or
    /// by winding it down (`soon`: nothing new starts, what runs finishes and is recorded).
    CancelRequested {
        request: RequestId,
        job: JobId,
        soon: bool,
    },
    /// A client asked to drain (or undrain) a worker, by name or id.
    DrainRequested {
        request: RequestId,
        worker: String,
        draining: bool,
    },
}

/// Why the scheduler closes a worker session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The worker cannot be used (what it announced is unusable).
    Rejected(String),
    /// No frame arrived within the worker timeout.
    HeartbeatTimeout(Duration),
    /// A newer connection of the same worker replaced this one.
    Superseded,
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rejected(why) => write!(f, "rejected: {why}"),
            Self::HeartbeatTimeout(d) => write!(f, "no heartbeat for {:.1}s", d.as_secs_f64()),
            Self::Superseded => f.write_str("superseded by a new connection of the same worker"),
        }
    }
}

/// A task as stored: enough to rebuild it from its job's spec after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRow {
    pub task: TaskId,
    /// Index of the task's first result.
    pub first_index: u64,
    /// Results it produces.
    pub count: u64,
    /// The worker an apply/scatter task must run on.
    pub pin: Option<WorkerId>,
    /// The engine (slot of `pin`) a Python apply/scatter task must run in.
    pub slot: Option<u16>,
}

/// A fact to persist. The driver writes records before it sends anything that follows them,
/// so what a client or worker has been told is always on disk.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A name got its id.
    IdAssigned { worker: WorkerId, name: String },
    /// A slot of a named worker got its engine id.
    EngineIdAssigned {
        name: String,
        slot: u16,
        engine: EngineId,
    },
    /// A job was accepted with `total` results to come and these tasks (a map job's come
    /// later, with `TasksPlanned`).
    JobCreated {
        job: JobId,
        spec: JobSpec,
        total: u64,
        tasks: Vec<TaskRow>,
    },
    /// A task attempt was placed on a worker.
    AttemptStarted {
        task: TaskId,
        attempt: Attempt,
        worker: WorkerId,
    },
    /// An attempt failed and the task will be retried (its outputs are not the result).
    AttemptFailed { task: TaskId, attempt: Attempt },
    /// An item's result: recorded exactly once per (job, index).
    ResultRecorded {
        job: JobId,
        worker: WorkerId,
        engine: Option<EngineId>,
        output: ItemOutput,
    },
    /// The job ended (`Done` or `Cancelled`); `failed` results did not exit 0.
    JobEnded {
        job: JobId,
        state: JobState,
        failed: u64,
    },
    /// A worker name was drained or undrained.
    DrainChanged { name: String, draining: bool },
    /// More tasks of a map job were cut from its items (in index order).
    TasksPlanned { job: JobId, tasks: Vec<TaskRow> },
    /// The job winds down: nothing new starts; it ends, cancelled, when what runs is done.
    JobWindingDown { job: JobId },
}

/// Something the driver must do, drained with [`super::Scheduler::poll_action`].
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send a frame to a worker session.
    Send { session: SessionId, msg: ToWorker },
    /// Close a worker session.
    Disconnect {
        session: SessionId,
        reason: DisconnectReason,
    },
    /// Answer a request.
    Reply { request: RequestId, msg: ToClient },
    /// Persist, then tell the job's watchers (results and job ends).
    Record(Record),
    /// Tell the job's watchers (output as it is printed; not persisted).
    Tell { job: JobId, msg: ToClient },
}
