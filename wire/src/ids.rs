//! Identifier newtypes. Plain integers on the wire (postcard varints).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A worker's small, stable id: given to its certificate name the first time it joins, kept
/// across reconnects and host restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkerId(pub u32);

/// A Python engine: one warm interpreter in one worker slot. Given to a (worker name, slot)
/// the first time that worker joins with Python, kept across reconnects and host restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EngineId(pub u32);

/// A job: one `map`, `apply` or `scatter` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub u64);

/// A task: the unit the scheduler places on a worker (one chunk of a job's items).
/// Unique across all jobs of one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId(pub u64);

/// Which run of a task this is. A task that ran twice (requeued, speculated) has two attempts;
/// the host records the first result and drops the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attempt(pub u32);

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}
display_inner!(WorkerId, EngineId, JobId, TaskId, Attempt);
