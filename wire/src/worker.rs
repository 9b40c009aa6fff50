//! Messages between a worker and the host. Append only (see the crate docs).

use serde::{Deserialize, Serialize};

use crate::ids::{Attempt, JobId, TaskId, WorkerId};
use crate::serde_bounded::{bytes, seq};
use crate::task::{TaskResult, TaskSpec};
use crate::telemetry::Telemetry;

/// Tasks per slot a worker takes beyond the ones it runs, to start the moment a slot frees:
/// the host sends tasks ahead (tiny ones many deep, long ones one at a time, see the
/// scheduler's send-ahead horizon) so that no slot waits a round trip for its next task. A
/// worker refuses (`TaskRefused`) what does not fit.
pub const AHEAD_PER_SLOT: u32 = 16;

/// Capability bit: the worker runs [`crate::Work::Command`] tasks.
pub const CAP_COMMAND: u64 = 0x1;
/// Capability bit: the worker may run [`crate::Work::Python`] tasks in engines (one per
/// slot); whether it can is in its [`PythonReport`].
pub const CAP_PYTHON: u64 = 0x2;

/// Capability bit: the worker runs [`crate::Work::StagedCommand`] tasks, fetching their files
/// with `ToHost::FetchBlob`.
pub const CAP_STAGE: u64 = 0x4;

/// Capability bit: the worker fills GNU parallel's placeholders beyond `{}` and `{#}` (`{.}`,
/// `{/}`, `{//}`, `{/.}`, `{N}`...: [`crate::template`]); older ones would pass them on as
/// written.
pub const CAP_TEMPLATES: u64 = 0x8;

/// The first frame a worker sends on its control stream.
///
/// Identity is *not* in here: the host takes the worker's name from its verified certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`crate::PROTOCOL_MINOR`] of the worker.
    pub protocol_minor: u16,
    /// Capability bits (`CAP_*`).
    pub capabilities: u64,
    /// Tasks the worker runs at once.
    pub slots: u16,
    /// Random per worker process; a new value means the worker restarted.
    pub boot_id: u64,
    /// Free-form labels from the worker config, usable as targets.
    #[serde(with = "seq")]
    pub labels: Vec<String>,
    /// `uname -m`-style machine architecture, e.g. `aarch64`.
    pub arch: String,
    /// Worker version string.
    pub version: String,
}

/// Worker → host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToHost {
    /// First frame of a connection.
    Hello(Hello),
    /// Periodic sensor report; also the heartbeat.
    Telemetry(Telemetry),
    /// A task ended (all its items ran, or it was cancelled). The worker keeps it until the
    /// host answers `ResultRecorded`, and sends it again on its next connection otherwise.
    TaskFinished(TaskResult),
    /// The worker is shutting down on purpose.
    Goodbye,
    /// The worker has no room for this attempt: it is draining, or still runs tasks the host
    /// does not know of (a restarted host). Nothing ran; the host places the task again
    /// without counting a failure.
    TaskRefused { task: TaskId, attempt: Attempt },
    /// What the worker's Python can do (sent once known, and after every connect).
    Python(PythonReport),
    /// Output of a running Python item, as it is printed (not recorded: the result carries
    /// the whole capped output).
    Output(OutputChunk),
    /// Send me the staged file with this SHA-256. The host answers on a unidirectional stream
    /// of its own: the 32-byte hash, the size as 8 bytes little-endian ([`BLOB_MISSING`] if it
    /// does not have it), then the content.
    FetchBlob { sha256: [u8; 32] },
    /// What board the worker runs on (`/proc/device-tree/model`, say "Raspberry Pi 4 Model B
    /// Rev 1.4"), sent once after the welcome, only to hosts of protocol minor 1 or later.
    Board { model: String },
}

/// The size a host gives for a staged file it does not have.
pub const BLOB_MISSING: u64 = u64::MAX;

/// A worker's Python, as its probe found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonReport {
    /// The interpreter (the worker's `python` setting).
    pub interpreter: String,
    /// Its `(major, minor, micro)`, when it answered.
    pub version: Option<(u8, u8, u8)>,
    /// Why Python work cannot run here, and the fix; `None` when it can.
    pub problem: Option<String>,
}

impl PythonReport {
    /// Engines can run here.
    pub fn usable(&self) -> bool {
        self.problem.is_none() && self.version.is_some()
    }
}

/// A piece of a running Python item's stdout (`stream` 1) or stderr (2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    pub task: TaskId,
    pub index: u64,
    pub stream: u8,
    #[serde(with = "bytes")]
    pub data: Vec<u8>,
}

/// The host's answer to `Hello`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The id given to this worker's name.
    pub worker: WorkerId,
    /// How often the host expects telemetry.
    pub heartbeat_ms: u32,
    /// [`crate::PROTOCOL_MINOR`] of the host.
    pub protocol_minor: u16,
}

/// Host → worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Registration accepted.
    Welcome(Welcome),
    /// Registration refused; the host closes the connection after this.
    Reject { reason: String },
    /// Run a task in a free slot (or, sent ahead, in the next slot that frees).
    RunTask(TaskSpec),
    /// Stop a task: drop it if waiting, kill its process group if running.
    CancelTask { task: TaskId },
    /// Finish running tasks, take no new ones (`bramble drain`).
    Drain,
    /// The job ended: stop its co-processes and forget its per-job state.
    JobEnded { job: JobId },
    /// The host has committed this attempt's result to its job store, so the worker may forget
    /// it; until then the worker keeps it and sends it again on its next connection.
    ResultRecorded { task: TaskId, attempt: Attempt },
    /// Take work again after a `Drain` (`bramble undrain`).
    Undrain,
}
