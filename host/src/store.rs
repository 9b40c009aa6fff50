//! The job store: one SQLite file (`jobs.db`, WAL) holding worker ids, jobs, tasks, attempts
//! and results. The driver applies each batch of scheduler [`Record`]s in one transaction
//! before it sends anything that follows them; client requests read it through their own
//! read-only connections. Schema: `docs/JOBSTORE.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bramble_wire::{
    Attempt, ItemOutput, JobId, JobKind, JobSpec, JobState, JobSummary, Outcome, TaskId, WorkerId,
};
use rusqlite::{Connection, OpenFlags, params};

use crate::sched::{Record, RestoredJob, TaskRow};

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("job store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored job spec does not decode.
    #[error("job store: job {0} has an unreadable spec: {1}")]
    Spec(u64, postcard::Error),
    /// The file was written by a newer bramble.
    #[error("job store schema version {0} is newer than this bramble ({SCHEMA_VERSION})")]
    Version(i64),
}

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY,
    id   INTEGER NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    command     TEXT NOT NULL,
    spec        BLOB NOT NULL,
    total       INTEGER NOT NULL,
    state       TEXT NOT NULL,
    failed      INTEGER NOT NULL DEFAULT 0,
    created_ms  INTEGER NOT NULL,
    finished_ms INTEGER
);
CREATE TABLE IF NOT EXISTS tasks (
    id          INTEGER PRIMARY KEY,
    job         INTEGER NOT NULL REFERENCES jobs(id),
    first_index INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    pin         INTEGER
);
CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks(job);
CREATE TABLE IF NOT EXISTS attempts (
    task       INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    worker     INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    failed     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task, attempt)
);
CREATE TABLE IF NOT EXISTS results (
    job             INTEGER NOT NULL,
    idx             INTEGER NOT NULL,
    worker          INTEGER NOT NULL,
    outcome         TEXT NOT NULL,
    code            INTEGER,
    message         TEXT,
    stdout          BLOB NOT NULL,
    stderr          BLOB NOT NULL,
    truncated_bytes INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    recorded_ms     INTEGER NOT NULL,
    PRIMARY KEY (job, idx)
);
";

/// A connection to the store.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the store for writing. One writer: the host's driver.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        // WAL: readers never block the writer. NORMAL: a committed transaction survives a
        // crash of the process (SIGKILL); only an OS crash may lose the newest ones.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Version(version));
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Self { conn })
    }

    /// A read-only connection (client requests: results, job lists).
    pub fn open_read(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self { conn })
    }

    /// Worker names and their ids.
    pub fn worker_ids(&self) -> Result<BTreeMap<String, WorkerId>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT name, id FROM workers")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, WorkerId(r.get(1)?))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Assigns ids to names that have none yet (e.g. `cluster start`'s local workers).
    pub fn reserve_ids(&mut self, names: &[String]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for name in names {
            tx.execute(
                "INSERT OR IGNORE INTO workers (name, id) SELECT ?1, COALESCE(MAX(id) + 1, 0) FROM workers",
                params![name],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes a batch of records in one transaction.
    pub fn apply(&mut self, records: &[Record], now_ms: u64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for record in records {
            write_record(&tx, record, now_ms)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Ids above every stored job and task: (next job, next task).
    pub fn next_ids(&self) -> Result<(u64, u64), StoreError> {
        let job: u64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM jobs", [], |r| {
                    r.get(0)
                })?;
        let task: u64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM tasks", [], |r| {
                    r.get(0)
                })?;
        Ok((job, task))
    }

    /// Every running job with what is left of it, for the scheduler to resume.
    pub fn unfinished_jobs(&self) -> Result<Vec<RestoredJob>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, spec, failed FROM jobs WHERE state = 'running' ORDER BY id")?;
        let jobs = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, u64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, u64>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(jobs.len());
        for (id, blob, failed) in jobs {
            let spec: JobSpec = postcard::from_bytes(&blob).map_err(|e| StoreError::Spec(id, e))?;
            out.push(self.restore_job(JobId(id), spec, failed)?);
        }
        Ok(out)
    }

    fn restore_job(
        &self,
        job: JobId,
        spec: JobSpec,
        failed: u64,
    ) -> Result<RestoredJob, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, first_index, count, pin FROM tasks WHERE job = ?1 ORDER BY id")?;
        let tasks: Vec<TaskRow> = stmt
            .query_map([job.0], |r| {
                Ok(TaskRow {
                    task: TaskId(r.get(0)?),
                    first_index: r.get(1)?,
                    count: r.get(2)?,
                    pin: r.get::<_, Option<u32>>(3)?.map(WorkerId),
                })
            })?
            .collect::<Result<_, _>>()?;
        let recorded: BTreeSet<u64> = self
            .conn
            .prepare("SELECT idx FROM results WHERE job = ?1")?
            .query_map([job.0], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        // A task's results are written in one transaction: one recorded index means all are.
        let done = tasks
            .iter()
            .filter(|t| recorded.contains(&t.first_index))
            .map(|t| t.task)
            .collect();
        let mut attempts = BTreeMap::new();
        let mut failed_attempts = BTreeMap::new();
        let mut stmt = self.conn.prepare(
            "SELECT a.task, COUNT(*), SUM(a.failed) FROM attempts a JOIN tasks t ON t.id = a.task
             WHERE t.job = ?1 GROUP BY a.task",
        )?;
        let rows = stmt.query_map([job.0], |r| {
            Ok((TaskId(r.get(0)?), r.get::<_, u32>(1)?, r.get::<_, u32>(2)?))
        })?;
        for row in rows {
            let (task, n, f) = row?;
            attempts.insert(task, n);
            failed_attempts.insert(task, f);
        }
        let placed_on = self
            .conn
            .prepare(
                "SELECT a.task, a.worker FROM attempts a JOIN tasks t ON t.id = a.task
                 WHERE t.job = ?1 AND a.failed = 0
                   AND a.attempt = (SELECT MAX(b.attempt) FROM attempts b WHERE b.task = a.task)",
            )?
            .query_map([job.0], |r| Ok((TaskId(r.get(0)?), WorkerId(r.get(1)?))))?
            .collect::<Result<_, _>>()?;
        Ok(RestoredJob {
            job,
            spec,
            tasks,
            done,
            failed,
            attempts,
            failed_attempts,
            placed_on,
        })
    }

    /// All jobs, oldest first.
    pub fn jobs(&self, now_ms: u64) -> Result<Vec<JobSummary>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT j.id, j.kind, j.state, j.total, j.created_ms, j.finished_ms, j.command,
                    (SELECT COUNT(*) FROM results r WHERE r.job = j.id),
                    (SELECT COUNT(*) FROM results r WHERE r.job = j.id
                        AND NOT (r.outcome = 'exited' AND r.code = 0))
             FROM jobs j ORDER BY j.id",
        )?;
        let rows = stmt.query_map([], |r| {
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
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One job's summary.
    pub fn job(&self, job: JobId, now_ms: u64) -> Result<Option<JobSummary>, StoreError> {
        Ok(self.jobs(now_ms)?.into_iter().find(|j| j.job == job))
    }

    /// Results of `job` with index ≥ `from`, in index order, at most `limit`.
    pub fn results(
        &self,
        job: JobId,
        from: u64,
        limit: u32,
    ) -> Result<Vec<(WorkerId, ItemOutput)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT idx, worker, outcome, code, message, stdout, stderr, truncated_bytes, duration_ms
             FROM results WHERE job = ?1 AND idx >= ?2 ORDER BY idx LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![job.0, from, limit], |r| {
            let outcome = outcome_from(&r.get::<_, String>(2)?, r.get(3)?, r.get(4)?);
            Ok((
                WorkerId(r.get(1)?),
                ItemOutput {
                    index: r.get(0)?,
                    outcome,
                    stdout: r.get(5)?,
                    stderr: r.get(6)?,
                    truncated_bytes: r.get(7)?,
                    duration_ms: r.get(8)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn write_record(
    tx: &rusqlite::Transaction<'_>,
    record: &Record,
    now_ms: u64,
) -> Result<(), StoreError> {
    match record {
        Record::IdAssigned { worker, name } => {
            tx.execute(
                "INSERT OR REPLACE INTO workers (name, id) VALUES (?1, ?2)",
                params![name, worker.0],
            )?;
        }
        Record::JobCreated { job, spec, tasks } => {
            let blob = postcard::to_stdvec(spec).map_err(|e| StoreError::Spec(job.0, e))?;
            let total: u64 = tasks.iter().map(|t| t.count).sum();
            tx.execute(
                "INSERT INTO jobs (id, kind, command, spec, total, state, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6)",
                params![
                    job.0,
                    kind_word(spec.kind),
                    spec.command.argv.join(" "),
                    blob,
                    total,
                    now_ms
                ],
            )?;
            let mut stmt = tx.prepare_cached(
                "INSERT INTO tasks (id, job, first_index, count, pin) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for t in tasks {
                stmt.execute(params![
                    t.task.0,
                    job.0,
                    t.first_index,
                    t.count,
                    t.pin.map(|w| w.0)
                ])?;
            }
        }
        Record::AttemptStarted {
            task,
            attempt,
            worker,
        } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO attempts (task, attempt, worker, started_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![task.0, attempt.0, worker.0, now_ms])?;
        }
        Record::AttemptFailed {
            task,
            attempt: Attempt(a),
        } => {
            tx.prepare_cached("UPDATE attempts SET failed = 1 WHERE task = ?1 AND attempt = ?2")?
                .execute(params![task.0, a])?;
        }
        Record::ResultRecorded {
            job,
            worker,
            output,
        } => {
            let (word, code, message) = outcome_parts(&output.outcome);
            // OR IGNORE: exactly once per (job, index), whatever arrives twice.
            tx.prepare_cached(
                "INSERT OR IGNORE INTO results (job, idx, worker, outcome, code, message, stdout, stderr,
                     truncated_bytes, duration_ms, recorded_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                job.0,
                output.index,
                worker.0,
                word,
                code,
                message,
                output.stdout,
                output.stderr,
                output.truncated_bytes,
                output.duration_ms,
                now_ms
            ])?;
        }
        Record::JobEnded { job, state, failed } => {
            tx.prepare_cached(
                "UPDATE jobs SET state = ?2, failed = ?3, finished_ms = ?4 WHERE id = ?1",
            )?
            .execute(params![job.0, state_word(*state), failed, now_ms])?;
        }
    }
    Ok(())
}

fn kind_word(k: JobKind) -> &'static str {
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

fn state_word(s: JobState) -> &'static str {
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

fn outcome_parts(o: &Outcome) -> (&'static str, Option<i32>, Option<&str>) {
    match o {
        Outcome::Exited(c) => ("exited", Some(*c), None),
        Outcome::Signaled(s) => ("signaled", Some(*s), None),
        Outcome::StartFailed(m) => ("start-failed", None, Some(m.as_str())),
        Outcome::TimedOut => ("timed-out", None, None),
        Outcome::Cancelled => ("cancelled", None, None),
        Outcome::Lost => ("lost", None, None),
    }
}

fn outcome_from(word: &str, code: Option<i32>, message: Option<String>) -> Outcome {
    match word {
        "exited" => Outcome::Exited(code.unwrap_or(-1)),
        "signaled" => Outcome::Signaled(code.unwrap_or(0)),
        "start-failed" => Outcome::StartFailed(message.unwrap_or_default()),
        "timed-out" => Outcome::TimedOut,
        "cancelled" => Outcome::Cancelled,
        _ => Outcome::Lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::{Command, Targets};

    fn spec(n: usize) -> JobSpec {
        JobSpec {
            kind: JobKind::Map,
            command: Command {
                argv: vec!["echo".into(), "{}".into()],
                shell: false,
                timeout_ms: 0,
            },
            items: (0..n).map(|i| i.to_string()).collect(),
            chunksize: 2,
            targets: Targets::All,
            retries: 1,
            persistent: false,
        }
    }

    fn output(index: u64, code: i32) -> ItemOutput {
        ItemOutput {
            index,
            outcome: Outcome::Exited(code),
            stdout: format!("{index}\n").into_bytes(),
            stderr: vec![],
            truncated_bytes: 0,
            duration_ms: 3,
        }
    }

    #[test]
    fn records_round_trip_and_unfinished_jobs_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let mut store = Store::open(&path).unwrap();
        let tasks = vec![
            TaskRow {
                task: TaskId(1),
                first_index: 0,
                count: 2,
                pin: None,
            },
            TaskRow {
                task: TaskId(2),
                first_index: 2,
                count: 1,
                pin: None,
            },
        ];
        let (j, w) = (JobId(1), WorkerId(0));
        store
            .apply(
                &[
                    Record::IdAssigned {
                        worker: w,
                        name: "pi-01".into(),
                    },
                    Record::JobCreated {
                        job: j,
                        spec: spec(3),
                        tasks,
                    },
                    Record::AttemptStarted {
                        task: TaskId(1),
                        attempt: Attempt(0),
                        worker: w,
                    },
                    Record::AttemptFailed {
                        task: TaskId(1),
                        attempt: Attempt(0),
                    },
                    Record::AttemptStarted {
                        task: TaskId(1),
                        attempt: Attempt(1),
                        worker: w,
                    },
                    Record::AttemptStarted {
                        task: TaskId(2),
                        attempt: Attempt(0),
                        worker: w,
                    },
                    Record::AttemptFailed {
                        task: TaskId(2),
                        attempt: Attempt(0),
                    },
                    Record::ResultRecorded {
                        job: j,
                        worker: w,
                        output: output(0, 0),
                    },
                    Record::ResultRecorded {
                        job: j,
                        worker: w,
                        output: output(1, 3),
                    },
                    // A duplicate is ignored, not an error.
                    Record::ResultRecorded {
                        job: j,
                        worker: w,
                        output: output(1, 0),
                    },
                ],
                1000,
            )
            .unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.worker_ids().unwrap()["pi-01"], w);
        assert_eq!(store.next_ids().unwrap(), (2, 3));
        let jobs = store.unfinished_jobs().unwrap();
        assert_eq!(jobs.len(), 1);
        let r = &jobs[0];
        assert_eq!(r.done, BTreeSet::from([TaskId(1)]));
        assert_eq!(
            (r.attempts[&TaskId(1)], r.failed_attempts[&TaskId(1)]),
            (2, 1)
        );
        // Where the latest attempt went, unless it failed (task 2's did).
        assert_eq!(r.placed_on, BTreeMap::from([(TaskId(1), w)]));
        assert_eq!(r.spec, spec(3));
        let results = store.results(j, 1, 10).unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(
            results[0].1.outcome,
            Outcome::Exited(3),
            "first result kept"
        );
        let summary = store.jobs(1500).unwrap();
        assert_eq!(
            (summary[0].done, summary[0].failed, summary[0].total),
            (2, 1, 3)
        );
        assert_eq!(summary[0].state, JobState::Running);

        let mut store = store;
        store
            .apply(
                &[Record::JobEnded {
                    job: j,
                    state: JobState::Cancelled,
                    failed: 1,
                }],
                2000,
            )
            .unwrap();
        assert!(store.unfinished_jobs().unwrap().is_empty());
        let reader = Store::open_read(&path).unwrap();
        assert_eq!(reader.job(j, 9999).unwrap().unwrap().elapsed_ms, 1000);
    }

    #[test]
    fn reserved_ids_follow_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("jobs.db")).unwrap();
        store
            .apply(
                &[Record::IdAssigned {
                    worker: WorkerId(4),
                    name: "x".into(),
                }],
                0,
            )
            .unwrap();
        store
            .reserve_ids(&["a".into(), "b".into(), "x".into()])
            .unwrap();
        let ids = store.worker_ids().unwrap();
        assert_eq!(
            (ids["a"], ids["b"], ids["x"]),
            (WorkerId(5), WorkerId(6), WorkerId(4))
        );
    }
}
