//! What clients read: job summaries and results after a cursor. Each request reads through
//! its own read-only connection, so readers never stall the writer (WAL).

use bramble_wire::{EngineId, ItemOutput, JobId, JobKind, JobState, JobSummary, Outcome, WorkerId};
use rusqlite::params;

use super::{Store, StoreError};

/// One stored result.
#[derive(Debug, PartialEq, Eq)]
pub struct StoredResult {
    /// Its position in commit order (the cursor clients resume from).
    pub seq: u64,
    pub worker: WorkerId,
    pub engine: Option<EngineId>,
    pub output: ItemOutput,
}

/// The summary columns of `jobs`, with the result counts, for `WHERE` clauses to extend.
/// Failed results are those `Outcome::is_success` refuses: anything but an exit with status 0
/// or a Python item that returned.
const SUMMARY: &str =
    "SELECT j.id, j.kind, j.state, j.total, j.created_ms, j.finished_ms, j.command,
        (SELECT COUNT(*) FROM results r WHERE r.job = j.id),
        (SELECT COUNT(*) FROM results r WHERE r.job = j.id
            AND NOT ((r.outcome = 'exited' AND r.code = 0) OR r.outcome = 'returned'))
     FROM jobs j";

impl Store {
    /// The named jobs' names, oldest first.
    pub fn job_names(&self) -> Result<Vec<(JobId, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, name FROM jobs WHERE name IS NOT NULL ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((JobId(r.get(0)?), r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// All jobs, oldest first.
    pub fn jobs(&self, now_ms: u64) -> Result<Vec<JobSummary>, StoreError> {
        let mut stmt = self.conn.prepare(&format!("{SUMMARY} ORDER BY j.id"))?;
        let rows = stmt.query_map([], |r| summary(r, now_ms))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One job's summary.
    pub fn job(&self, job: JobId, now_ms: u64) -> Result<Option<JobSummary>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{SUMMARY} WHERE j.id = ?1"))?;
        let mut rows = stmt.query_map([job.0], |r| summary(r, now_ms))?;
        Ok(rows.next().transpose()?)
    }

    /// Results of `job` with `seq` > `after`, in `seq` (commit) order, at most `limit`.
    pub fn results(
        &self,
        job: JobId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredResult>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, idx, worker, engine, outcome, code, message, stdout, stderr,
                    truncated_bytes, duration_ms, value
             FROM results WHERE job = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![job.0, after, limit], |r| {
            let outcome = Outcome::from_parts(&r.get::<_, String>(4)?, r.get(5)?, r.get(6)?);
            Ok(StoredResult {
                seq: r.get(0)?,
                worker: WorkerId(r.get(2)?),
                engine: r.get::<_, Option<u32>>(3)?.map(EngineId),
                output: ItemOutput {
                    index: r.get(1)?,
                    outcome,
                    stdout: r.get(7)?,
                    stderr: r.get(8)?,
                    truncated_bytes: r.get(9)?,
                    duration_ms: r.get(10)?,
                    value: r.get(11)?,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn summary(r: &rusqlite::Row<'_>, now_ms: u64) -> rusqlite::Result<JobSummary> {
    let created: u64 = r.get(4)?;
    let finished: Option<u64> = r.get(5)?;
    Ok(JobSummary {
        job: JobId(r.get(0)?),
        kind: kind_from(&r.get::<_, String>(1)?),
        state: state_from(&r.get::<_, String>(2)?),
        total: r.get(3)?,
        elapsed_ms: finished.unwrap_or(now_ms).saturating_sub(created),
        command: r.get(6)?,
        done: r.get(7)?,
        failed: r.get(8)?,
    })
}

pub(super) fn kind_word(k: JobKind) -> &'static str {
    match k {
        JobKind::Map => "map",
        JobKind::Apply => "apply",
        JobKind::Scatter => "scatter",
    }
}

fn kind_from(s: &str) -> JobKind {
    match s {
        "apply" => JobKind::Apply,
        "scatter" => JobKind::Scatter,
        _ => JobKind::Map,
    }
}

pub(super) fn state_word(s: JobState) -> &'static str {
    match s {
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Cancelled => "cancelled",
    }
}

fn state_from(s: &str) -> JobState {
    match s {
        "done" => JobState::Done,
        "cancelled" => JobState::Cancelled,
        _ => JobState::Running,
    }
}
