//! Messages between a client (the CLI, the Python package, the dashboard) and the host.
//! Append only.
//!
//! A client opens one bidirectional stream per request, sends one [`ClientRequest`] frame and
//! reads [`ToClient`] frames until the host finishes the stream.
//!
//! Every stored result has a sequence number, `seq`: its position in the host's job store, in
//! the order results were committed (completion order). A client following a job remembers
//! the highest `seq` it has and, after a lost connection or a host restart, asks for what
//! comes after it: nothing is sent twice and nothing is downloaded again.

use serde::{Deserialize, Serialize};

use crate::ids::{EngineId, JobId, WorkerId};
use crate::serde_bounded::{byte_vecs, bytes, seq};
use crate::task::{ItemOutput, Work};
use crate::telemetry::{Megahertz, MilliCelsius, Telemetry, ThrottleFlags};
use crate::worker::PythonReport;

/// Which workers a job may use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Targets {
    /// Every connected worker.
    All,
    /// These workers, in this order (a job's results are numbered in this order).
    Ids(#[serde(with = "seq")] Vec<WorkerId>),
    /// Workers with one of these ids or carrying one of these labels, in id order.
    Select {
        #[serde(with = "seq")]
        ids: Vec<WorkerId>,
        #[serde(with = "seq")]
        labels: Vec<String>,
    },
    /// These Python engines, in this order: apply and scatter tasks are pinned to each; a map
    /// may use the workers that have them.
    Engines(#[serde(with = "seq")] Vec<EngineId>),
}

/// How a job's items are placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    /// Load-balanced: one task per chunk of items, placed by the scheduler's policy.
    Map,
    /// One task per target worker, pinned to it; no items.
    Apply,
    /// One contiguous chunk of the items per target worker, given on stdin; outputs are
    /// gathered in target order.
    Scatter,
}

/// A job as the client submits it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub kind: JobKind,
    /// What every task runs.
    pub work: Work,
    /// `map` and `scatter` inputs; empty for `apply`.
    #[serde(with = "byte_vecs")]
    pub items: Vec<Vec<u8>>,
    /// Items sent to a worker together (≥ 1).
    pub chunksize: u32,
    pub targets: Targets,
    /// Re-run a failed item up to this many times, on another worker when possible.
    pub retries: u32,
    /// Integer items `start..end` (as decimal text), made by the host as tasks need them,
    /// instead of `items`: a job of ten million items is a few bytes on the wire and in the
    /// host.
    pub range: Option<ItemRange>,
}

/// The integers `start..end`, as items.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRange {
    pub start: i64,
    pub end: i64,
}

impl JobSpec {
    /// How many items the job has (`map` and `scatter`; 0 for `apply`).
    pub fn item_count(&self) -> u64 {
        match self.range {
            Some(r) if r.end > r.start => r.end.abs_diff(r.start),
            Some(_) => 0,
            None => self.items.len() as u64,
        }
    }

    /// Item `i` (`None` past the end).
    pub fn item(&self, i: u64) -> Option<std::borrow::Cow<'_, [u8]>> {
        use std::borrow::Cow;
        match self.range {
            Some(r) => (i < self.item_count()).then(|| {
                let n = i128::from(r.start) + i128::from(i);
                Cow::Owned(n.to_string().into_bytes())
            }),
            None => usize::try_from(i)
                .ok()
                .and_then(|i| self.items.get(i))
                .map(|v| Cow::Borrowed(v.as_slice())),
        }
    }
}

/// Client → host, the first and only frame on a request stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Connected worker ids, ascending.
    Ids,
    /// One row per connected worker.
    Status,
    /// Start a job; answered with `JobAccepted` (the job lives on without the client).
    Submit(JobSpec),
    /// `JobAccepted`, then the job's results with `seq` > `after` in `seq` order; with
    /// `follow`, new ones as they are recorded, until `JobFinished` or `JobCancelled`.
    Results {
        job: JobId,
        after: u64,
        follow: bool,
    },
    /// Every job the host knows, newest last.
    Jobs,
    /// Stop a job: queued tasks dropped, running ones killed. Answered with `Done`.
    Cancel { job: JobId },
    /// Answered with `JobFinished` once the job has ended.
    Wait { job: JobId },
    /// Refuse this worker or client name from now on and drop its connections.
    Revoke { name: String },
    /// Place nothing more on this worker (a name, or an id in decimal); its running tasks
    /// finish. Kept across reconnects and host restarts. Answered with `Done`.
    Drain { worker: String },
    /// Place work on a drained worker again. Answered with `Done`.
    Undrain { worker: String },
    /// Every Python engine of the connected workers, by id.
    Engines,
    /// `Submit`, then the job's events as `Results { after: 0, follow: true }` gives them,
    /// on this one stream: nothing the job does (not even early output) comes before the
    /// client follows it, and it costs one round trip instead of two.
    SubmitAndFollow(JobSpec),
    /// The host's own state: its job store's free space and whether writing it fails.
    Health,
    /// Connections the host refused lately and why (a Pi that keeps failing to join).
    Refusals,
    /// Which of these staged files (by SHA-256) the host does not have yet; answered with
    /// `MissingBlobs`.
    MissingBlobs(#[serde(with = "seq")] Vec<[u8; 32]>),
    /// A piece of a staged file: `data` goes at `offset` of the file of `total` bytes. Pieces
    /// come in order; the last one completes the file, which the host keeps only if its
    /// content has that SHA-256. Answered with `Done`.
    PutBlob {
        sha256: [u8; 32],
        offset: u64,
        total: u64,
        #[serde(with = "bytes")]
        data: Vec<u8>,
    },
    /// Remove these ended jobs and their results from the job store; answered with
    /// `Forgotten` (nothing is forgotten if one is unknown or running).
    Forget {
        #[serde(with = "seq")]
        jobs: Vec<JobId>,
    },
    /// Forget the ended jobs that ended more than `older_than_ms` ago (if given), apart from
    /// the newest `keep` ended ones (if given); answered with `Forgotten`.
    Prune {
        older_than_ms: Option<u64>,
        keep: Option<u64>,
    },
    /// Give a job a name (`--name`), unique among the jobs the host keeps; answered with
    /// `Done`.
    NameJob { job: JobId, name: String },
    /// The named jobs; answered with `JobNames`.
    JobNames,
    /// Wind a job down (`--halt soon`): nothing of it starts any more (no new tasks, retries
    /// or backups); what workers have been sent runs to its end and is recorded, then the
    /// job ends as cancelled. Answered with `Done`.
    WindDown { job: JobId },
    /// Every worker's telemetry of the last `within_ms` (the host keeps an hour); answered
    /// with `History`.
    History { within_ms: u64 },
}

/// The host's own state, as `Health` answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostHealth {
    /// The job store file.
    pub store: String,
    /// Bytes free to the host on the job store's filesystem (`None` if it cannot tell).
    pub store_free_bytes: Option<u64>,
    /// While writing the job store fails: why, the newest time. Nothing that waits for the
    /// failed write has been acknowledged or reported; the host retries every second and
    /// carries on where it stopped once a write succeeds.
    pub store_error: Option<String>,
    /// For how long writing has been failing (0 while it works).
    pub stalled_ms: u64,
}

/// A connection the host refused, as `Refusals` lists it: the newest of each name and address
/// in the last ten minutes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The certificate's name (`None` when the handshake failed before it was known).
    pub name: Option<String>,
    /// Remote address as the host sees it.
    pub address: String,
    /// Why, in words.
    pub reason: String,
    /// How often in those ten minutes.
    pub count: u64,
    /// How long ago the newest was.
    pub ago_ms: u64,
}

/// One Python engine, as `Engines` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineInfo {
    pub engine: EngineId,
    pub worker: WorkerId,
    /// The worker's name.
    pub name: String,
    /// The worker slot it runs in.
    pub slot: u16,
    /// The worker's Python (`None` until its probe answered).
    pub python: Option<PythonReport>,
    /// Its worker is drained.
    pub draining: bool,
}

/// A job's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Running,
    Done,
    Cancelled,
}

/// One row of `bramble jobs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    pub job: JobId,
    pub kind: JobKind,
    pub state: JobState,
    pub total: u64,
    /// Items with a result.
    pub done: u64,
    /// Results that did not exit 0.
    pub failed: u64,
    /// From submission to the end (or to now while running).
    pub elapsed_ms: u64,
    /// The command, joined with spaces.
    pub command: String,
}

/// One row of `bramble status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: WorkerId,
    /// Name from the worker's certificate.
    pub name: String,
    /// Remote address as the host sees it.
    pub address: String,
    pub slots: u16,
    /// Tasks the host has placed on it and not yet seen finish.
    pub running: u32,
    /// Items finished on it since the host started.
    pub done: u64,
    /// Time since this connection was established.
    pub connected_ms: u64,
    pub arch: String,
    #[serde(with = "seq")]
    pub labels: Vec<String>,
    /// Newest telemetry, if any arrived yet.
    pub telemetry: Option<Telemetry>,
    /// The scheduler's estimate of its current effective speed, relative to the fastest
    /// connected worker, × 1000 (1000 = as fast as the fastest); `None` until it finished an
    /// item.
    pub speed_milli: Option<u32>,
    /// Drained (`bramble drain`): nothing new is placed on it.
    pub draining: bool,
    /// Its Python, if it offers engines (`None` until its probe answered, or without Python).
    pub python: Option<PythonReport>,
    /// Its engines, by slot.
    #[serde(with = "seq")]
    pub engines: Vec<EngineId>,
}

/// Host → client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToClient {
    /// The request failed; nothing else follows.
    Error {
        message: String,
    },
    Ids(#[serde(with = "seq")] Vec<WorkerId>),
    Status(#[serde(with = "seq")] Vec<WorkerStatus>),
    /// The job is accepted with this many items (apply: one per target).
    JobAccepted {
        job: JobId,
        total: u64,
    },
    /// One item's result; `seq` is its position in the job store (see the module docs).
    ItemDone {
        job: JobId,
        seq: u64,
        worker: WorkerId,
        /// The Python engine that produced it.
        engine: Option<EngineId>,
        output: ItemOutput,
    },
    /// Every item has a result; `failed` of them did not exit 0.
    JobFinished {
        job: JobId,
        failed: u64,
    },
    Jobs(#[serde(with = "seq")] Vec<JobSummary>),
    /// The request was carried out.
    Done,
    /// The job was cancelled before every item had a result.
    JobCancelled {
        job: JobId,
    },
    Engines(#[serde(with = "seq")] Vec<EngineInfo>),
    /// Output of a running Python item as it is printed (following a job only; the result
    /// carries all of it).
    Output {
        job: JobId,
        index: u64,
        worker: WorkerId,
        engine: Option<EngineId>,
        /// 1 stdout, 2 stderr.
        stream: u8,
        #[serde(with = "bytes")]
        data: Vec<u8>,
    },
    Health(HostHealth),
    /// Something about the host a person following a job should know (its job store stopped
    /// being writable, and when it is again), in words.
    HostNote {
        message: String,
    },
    Refusals(#[serde(with = "seq")] Vec<Refusal>),
    MissingBlobs(#[serde(with = "seq")] Vec<[u8; 32]>),
    /// The jobs forgotten.
    Forgotten(#[serde(with = "seq")] Vec<JobId>),
    /// The named jobs, oldest first.
    JobNames(#[serde(with = "seq")] Vec<(JobId, String)>),
    History(#[serde(with = "seq")] Vec<WorkerHistory>),
}

/// One worker's telemetry over time, as `History` answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerHistory {
    /// The worker's name, and its id once it has one.
    pub name: String,
    pub id: Option<WorkerId>,
    /// Its board, if it said (`ToHost::Board`).
    pub model: Option<String>,
    /// Oldest first: up to one a second for the last ten minutes, one per ten seconds before.
    #[serde(with = "seq")]
    pub samples: Vec<HistorySample>,
}

/// A telemetry sample in a worker's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistorySample {
    /// How long before the answer it was taken.
    pub ago_ms: u64,
    pub cpu_temp: Option<MilliCelsius>,
    pub arm_clock: Option<Megahertz>,
    pub arm_max: Option<Megahertz>,
    pub throttle: Option<ThrottleFlags>,
}
