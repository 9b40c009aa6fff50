//! What a task is on the wire: the command to run, its items, and what came back.
//!
//! Append only (see the crate docs): the task kinds are an enum so that later kinds (Python
//! functions in warm engines) are new variants, not a new protocol.

use serde::{Deserialize, Serialize};

use crate::ids::{Attempt, JobId, TaskId};

/// A command template, run as argv (never through a shell unless `shell` is set).
///
/// In `argv`, `{}` is replaced by the item and `{#}` by its 0-based index; when no argument
/// contains `{}`, the item is written to the process's stdin instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Program and arguments. Never empty (checked by the host on submit).
    pub argv: Vec<String>,
    /// Join `argv` with spaces and run it with `sh -c`; `{}` is shell-quoted.
    pub shell: bool,
    /// Kill the task's process group after this many milliseconds; 0 means no limit.
    pub timeout_ms: u64,
}

/// One input of a task. A task carries one item per process it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Position of the item in its job (`{#}`).
    pub index: u64,
    /// The item text (`{}` or stdin); `None` for `apply`, which has no input.
    pub value: Option<String>,
}

/// Host → worker: run these items, one process each, one after the other in one slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task: TaskId,
    pub attempt: Attempt,
    pub command: Command,
    pub items: Vec<Item>,
    /// The job the task belongs to (co-processes are kept per job).
    pub job: JobId,
    /// Co-process mode: each worker slot starts the command once per job and feeds it one
    /// item per line on stdin, reading one line of stdout per item.
    pub persistent: bool,
}

/// How one process ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Exited normally with this status code.
    Exited(i32),
    /// Killed by this signal number.
    Signaled(i32),
    /// Could not be started (program missing, not allowed, bad template…).
    StartFailed(String),
    /// Ran past its timeout; its process group was killed.
    TimedOut,
    /// Cancelled before or while running.
    Cancelled,
    /// The worker running it was lost and no retry was left (set by the host).
    Lost,
}

impl Outcome {
    /// True only for a clean exit with status 0.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Exited(0))
    }
}

/// The result of one item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemOutput {
    pub index: u64,
    pub outcome: Outcome,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Bytes of stdout + stderr dropped because of the worker's `max_output_bytes`.
    pub truncated_bytes: u64,
    /// Wall time of the process.
    pub duration_ms: u64,
}

/// Worker → host: everything a task produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task: TaskId,
    pub attempt: Attempt,
    pub outputs: Vec<ItemOutput>,
}

impl TaskResult {
    /// Every item it reports exited 0.
    pub fn succeeded(&self) -> bool {
        self.outputs.iter().all(|o| o.outcome.is_success())
    }
}
