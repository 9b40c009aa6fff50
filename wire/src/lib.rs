//! bramble's wire protocol: the messages host, workers and clients exchange, and their framing.
//!
//! Pure: no IO, no async runtime, no clock. Every type here is encoded with postcard, which
//! writes enum variants by *position* and struct fields *in order*, without names. So:
//!
//! - **Append only.** New enum variants and new messages go at the end; nothing is reordered,
//!   removed or changed in place. `tests/golden.rs` pins the bytes so an accident fails CI.
//! - **Major version in ALPN** ([`ALPN`]): an incompatible change is a new ALPN string.
//! - **Minor version in `Hello`** ([`PROTOCOL_MINOR`]) with capability bits, so the host only
//!   sends what a peer understands.
//! - Durations are integer milliseconds; no timestamps cross the wire.
//! - Decoding allocates no more than the frame justifies ([`serde_bounded`]).
//!
//! Directions are typed: a worker sends [`ToHost`] and receives [`ToWorker`]; a client sends
//! [`ClientRequest`] and receives [`ToClient`]. Control streams carry u32-length-prefixed frames
//! ([`codec`]); a one-shot stream carries one frame.

pub mod client;
pub mod codec;
pub mod fuzz;
pub mod ids;
pub mod serde_bounded;
pub mod task;
pub mod telemetry;
pub mod template;
pub mod worker;

pub use client::{
    ClientRequest, EngineInfo, HistorySample, HostHealth, ItemRange, JobKind, JobSpec, JobState,
    JobSummary, Refusal, Targets, ToClient, WorkerHistory, WorkerStatus,
};
pub use codec::{DecodeError, EncodeError, FrameDecoder, MAX_FRAME_LEN};
pub use ids::{Attempt, EngineId, JobId, TaskId, WorkerId};
pub use task::{
    Command, FetchedFile, Item, ItemOutput, Outcome, PythonWork, StagedCommand, StagedFile,
    TaskResult, TaskSpec, Work, hex, is_plain_relative, shell_quote,
};
pub use telemetry::{Megahertz, MilliCelsius, Telemetry, ThrottleFlags};
pub use worker::{Hello, OutputChunk, PythonReport, ToHost, ToWorker, Welcome};

/// ALPN protocol id; carries the major protocol version. Major 2 (bramble 0.2) made the task
/// kind an enum ([`Work`]), gave every stored result a sequence number clients resume from,
/// and gave results a value; peers of major 1 fail the TLS handshake with "no application
/// protocol".
pub const ALPN: &[u8] = b"bramble/2";

/// QUIC application close codes, so a peer can tell a refusal from a blip.
pub mod close {
    /// Normal shutdown.
    pub const SHUTDOWN: u32 = 0;
    /// Refused: bad role, revoked, incompatible. Do not retry quickly.
    pub const REJECTED: u32 = 1;
    /// The peer broke the protocol (malformed or oversized frame).
    pub const PROTOCOL: u32 = 2;
    /// A newer connection of the same worker replaced this one.
    pub const SUPERSEDED: u32 = 3;
    /// No heartbeat within the timeout.
    pub const TIMEOUT: u32 = 4;
}

/// Minor protocol version, sent in `Hello` and `Welcome`. Bumped when messages are appended.
/// 1: `ToHost::FetchBlob` (sent only for staged work, which only `CAP_STAGE` workers get) and
/// `ToHost::Board` (sent only to a host of minor 1 or later).
pub const PROTOCOL_MINOR: u16 = 1;
