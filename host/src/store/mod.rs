//! The job store: one SQLite file (`jobs.db`, WAL) holding worker ids and drains, jobs, tasks,
//! attempts and results. The driver applies each batch of scheduler [`Record`]s in one
//! transaction before it sends anything that follows them ([`write`]); client requests read
//! it through their own read-only connections ([`read`]); a restarted host resumes from it
//! ([`restore`]). Schema and migrations: [`schema`] and `docs/JOBSTORE.md`.

mod forget;
mod read;
mod restore;
mod schema;
mod write;

use std::path::Path;

pub use forget::Forget;
pub use read::StoredResult;
use rusqlite::{Connection, OpenFlags};
use schema::VERSION;

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
    #[error("job store schema version {0} is newer than this bramble ({VERSION})")]
    Version(i64),
}

impl StoreError {
    /// The disk holding the store is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Sqlite(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DiskFull)
    }
}

/// A connection to the store.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating or migrating if needed) the store for writing. One writer: the host's
    /// driver.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        // WAL: readers never block the writer. NORMAL: a committed transaction survives a
        // crash of the process (SIGKILL); only an OS crash may lose the newest ones.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::ready(conn)
    }

    /// A store in memory (the scheduler simulation restarts its host from one).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::ready(Connection::open_in_memory()?)
    }

    fn ready(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::create_or_migrate(&mut conn)?;
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
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use bramble_sched::{Record, TaskRow};
    use bramble_wire::{
        Attempt, Command, EngineId, ItemOutput, JobId, JobKind, JobSpec, JobState, Outcome,
        Targets, TaskId, Work, WorkerId,
    };

    use super::Store;

    fn spec(n: usize) -> JobSpec {
        JobSpec {
            kind: JobKind::Map,
            work: Work::Command {
                command: Command {
                    argv: vec!["echo".into(), "{}".into()],
                    shell: false,
                    timeout_ms: 0,
                },
                persistent: false,
            },
            items: (0..n).map(|i| i.to_string().into_bytes()).collect(),
            chunksize: 2,
            targets: Targets::All,
            retries: 1,
            range: None,
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
            value: vec![],
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
                slot: None,
            },
            TaskRow {
                task: TaskId(2),
                first_index: 2,
                count: 1,
                pin: None,
                slot: None,
            },
        ];
        let (j, w) = (JobId(1), WorkerId(0));
        let seqs = store
            .apply(
                &[
                    Record::IdAssigned {
                        worker: w,
                        name: "pi-01".into(),
                    },
                    Record::JobCreated {
                        job: j,
                        spec: spec(3),
                        total: 3,
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
                    Record::AttemptStarted {
                        task: TaskId(2),
                        attempt: Attempt(1),
                        worker: w,
                    },
                    // A Python item that returned succeeded.
                    Record::ResultRecorded {
                        job: j,
                        worker: w,
                        engine: Some(EngineId(4)),
                        output: ItemOutput {
                            outcome: Outcome::Returned,
                            ..output(0, 0)
                        },
                    },
                    Record::ResultRecorded {
                        job: j,
                        worker: w,
                        engine: None,
                        output: output(1, 3),
                    },
                    // A duplicate is ignored, not an error.
                    Record::ResultRecorded {
                        job: j,
                        worker: w,
                        engine: None,
                        output: output(1, 0),
                    },
                ],
                1000,
            )
            .unwrap();
        assert_eq!(seqs, [Some(1), Some(2), None], "the duplicate gets no seq");
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.known().unwrap().names["pi-01"], w);
        assert_eq!(store.next_ids().unwrap(), (2, 3));
        let jobs = store.unfinished_jobs().unwrap();
        assert_eq!(jobs.len(), 1);
        let r = &jobs[0];
        // Task 1 has its results; task 2 is left, with its attempts (one failed).
        let open: Vec<TaskId> = r.tasks.iter().map(|t| t.task).collect();
        assert_eq!(open, [TaskId(2)]);
        assert_eq!((r.planned, r.total), (3, 3));
        assert_eq!(
            (r.attempts[&TaskId(2)], r.failed_attempts[&TaskId(2)]),
            (2, 1)
        );
        // Where the latest attempt went, unless it failed.
        assert_eq!(r.placed_on, BTreeMap::from([(TaskId(2), w)]));
        assert_eq!(r.spec, spec(3));
        // Two results stored, in commit order; the duplicate of index 1 ignored.
        let results = store.results(j, 0, 10).unwrap();
        let seqs: Vec<(u64, u64)> = results.iter().map(|r| (r.seq, r.output.index)).collect();
        assert_eq!(seqs, [(1, 0), (2, 1)]);
        assert_eq!(results[0].engine, Some(EngineId(4)));
        assert_eq!(
            results[1].output.outcome,
            Outcome::Exited(3),
            "first result kept"
        );
        assert_eq!(store.results(j, 1, 10).unwrap().len(), 1, "after seq 1");
        let summary = store.jobs(1500).unwrap();
        assert_eq!(
            (summary[0].done, summary[0].failed, summary[0].total),
            (2, 1, 3),
            "a return succeeded, an exit 3 failed"
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
    fn drains_are_kept_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let mut store = Store::open(&path).unwrap();
        let id = |n: u32, name: &str| Record::IdAssigned {
            worker: WorkerId(n),
            name: name.into(),
        };
        let drain = |name: &str, draining| Record::DrainChanged {
            name: name.into(),
            draining,
        };
        store
            .apply(
                &[id(0, "a"), id(1, "b"), drain("a", true), drain("b", true)],
                0,
            )
            .unwrap();
        store.apply(&[drain("b", false), id(0, "a")], 0).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.known().unwrap().drained,
            BTreeSet::from(["a".to_owned()])
        );
    }

    #[test]
    fn reserved_engine_ids_follow_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("jobs.db")).unwrap();
        store
            .apply(
                &[Record::EngineIdAssigned {
                    name: "x".into(),
                    slot: 0,
                    engine: EngineId(4),
                }],
                0,
            )
            .unwrap();
        store
            .reserve_engine_ids(&["a".into(), "b".into(), "x".into()], 2)
            .unwrap();
        let known = store.known().unwrap();
        assert!(known.names.is_empty());
        let engine = |name: &str, slot| known.engines[&(name.to_owned(), slot)].0;
        assert_eq!(
            [
                engine("a", 0),
                engine("a", 1),
                engine("b", 0),
                engine("x", 1)
            ],
            [5, 6, 7, 9]
        );
    }
}
