//! The scheduler's inputs (facts, past tense) and outputs (imperatives).

use bramble_wire::{Hello, JobSpec, TaskResult, Telemetry, ToClient, ToWorker, WorkerId};

/// One worker connection. A reconnecting worker gets a new session; events of an old
/// session are ignored once it is superseded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// One client request stream that submitted a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

/// Something that happened, fed to [`super::Scheduler::handle`].
#[derive(Clone, Debug)]
pub enum Event {
    /// A worker with a verified certificate `name` said hello on a new connection.
    WorkerConnected {
        session: SessionId,
        name: String,
        hello: Hello,
        address: String,
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
    /// A client submitted a job; results go back to `client`.
    JobSubmitted { client: ClientId, spec: JobSpec },
    /// The client went away before its job finished: the job is cancelled.
    ClientGone { client: ClientId },
}

/// Why the scheduler closes a worker session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The worker cannot be used (what it announced is unusable).
    Rejected(String),
    /// No frame arrived within the worker timeout.
    HeartbeatTimeout(std::time::Duration),
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
    /// Send a frame to a client.
    Reply { client: ClientId, msg: ToClient },
    /// The client's request is complete; finish its stream.
    CloseClient { client: ClientId },
    /// A name got a new id: persist the name → id table so ids survive restarts.
    IdAssigned { worker: WorkerId, name: String },
}
