//! The schema (`PRAGMA user_version` 3) and the migrations from versions 1 and 2.
//!
//! Version 3: jobs carry an optional unique `name` (`--name`) and `winding` (1 while a job
//! winds down: `--halt soon`).
//!
//! Version 2 (bramble 0.2): results carry `seq`, their position in commit order (the cursor
//! clients resume from), `value` (what a Python item returned) and `engine`; workers carry
//! `draining`; tasks carry the engine `slot` they are pinned to; `engines` holds the engine
//! ids; job specs are encoded with protocol major 2's `JobSpec`.

use bramble_wire::{Command, JobKind, JobSpec, Targets, Work};
use rusqlite::{Connection, params};
use serde::Deserialize;

use super::StoreError;

pub(super) const VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS workers (
    name     TEXT PRIMARY KEY,
    id       INTEGER NOT NULL UNIQUE,
    draining INTEGER NOT NULL DEFAULT 0
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
    finished_ms INTEGER,
    name        TEXT,
    winding     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS engines (
    name TEXT NOT NULL,
    slot INTEGER NOT NULL,
    id   INTEGER NOT NULL UNIQUE,
    PRIMARY KEY (name, slot)
);
CREATE TABLE IF NOT EXISTS tasks (
    id          INTEGER PRIMARY KEY,
    job         INTEGER NOT NULL REFERENCES jobs(id),
    first_index INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    pin         INTEGER,
    slot        INTEGER
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
    seq             INTEGER PRIMARY KEY,
    job             INTEGER NOT NULL,
    idx             INTEGER NOT NULL,
    worker          INTEGER NOT NULL,
    engine          INTEGER,
    outcome         TEXT NOT NULL,
    code            INTEGER,
    message         TEXT,
    stdout          BLOB NOT NULL,
    stderr          BLOB NOT NULL,
    truncated_bytes INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    recorded_ms     INTEGER NOT NULL,
    value           BLOB NOT NULL DEFAULT x'',
    UNIQUE (job, idx)
);
CREATE INDEX IF NOT EXISTS results_by_job ON results(job);
CREATE TABLE IF NOT EXISTS given (
    what TEXT PRIMARY KEY,
    id   INTEGER NOT NULL
);
";

/// Creates the tables of an empty store, or migrates an older one, in one transaction.
pub(super) fn create_or_migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > VERSION {
        return Err(StoreError::Version(version));
    }
    let tx = conn.transaction()?;
    if version == 1 {
        migrate_from_1(&tx)?;
    }
    if version == 1 || version == 2 {
        tx.execute_batch(
            "ALTER TABLE jobs ADD COLUMN name TEXT;
             ALTER TABLE jobs ADD COLUMN winding INTEGER NOT NULL DEFAULT 0;",
        )?;
    }
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch("CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_name ON jobs(name);")?;
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Version 1 → 2: results get `seq` (in the order they were inserted) and `value`; workers
/// get `draining`; every job spec is re-encoded.
fn migrate_from_1(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "ALTER TABLE workers ADD COLUMN draining INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE tasks ADD COLUMN slot INTEGER;
         ALTER TABLE results RENAME TO results_v1;",
    )?;
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(
        "INSERT INTO results (job, idx, worker, outcome, code, message, stdout, stderr,
                              truncated_bytes, duration_ms, recorded_ms)
         SELECT job, idx, worker, outcome, code, message, stdout, stderr,
                truncated_bytes, duration_ms, recorded_ms
         FROM results_v1 ORDER BY rowid;
         DROP TABLE results_v1;",
    )?;
    let specs: Vec<(u64, Vec<u8>)> = tx
        .prepare("SELECT id, spec FROM jobs")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, blob) in specs {
        let old: SpecV1 = postcard::from_bytes(&blob).map_err(|e| StoreError::Spec(id, e))?;
        let new = postcard::to_stdvec(&JobSpec::from(old)).map_err(|e| StoreError::Spec(id, e))?;
        tx.execute("UPDATE jobs SET spec = ?2 WHERE id = ?1", params![id, new])?;
    }
    Ok(())
}

/// A job spec as protocol major 1 encoded it.
#[derive(Deserialize)]
struct SpecV1 {
    kind: JobKind,
    command: Command,
    items: Vec<String>,
    chunksize: u32,
    targets: Targets,
    retries: u32,
    persistent: bool,
}

impl From<SpecV1> for JobSpec {
    fn from(v1: SpecV1) -> Self {
        Self {
            kind: v1.kind,
            work: Work::Command {
                command: v1.command,
                persistent: v1.persistent,
            },
            items: v1.items.into_iter().map(String::into_bytes).collect(),
            chunksize: v1.chunksize,
            targets: v1.targets,
            retries: v1.retries,
            range: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_version_1_store_migrates_with_its_results_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let conn = Connection::open(&path).unwrap();
        // The version 1 schema, as bramble 0.1 wrote it, with one running job.
        conn.execute_batch(
            "CREATE TABLE workers (name TEXT PRIMARY KEY, id INTEGER NOT NULL UNIQUE);
             CREATE TABLE jobs (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, command TEXT NOT NULL,
                 spec BLOB NOT NULL, total INTEGER NOT NULL, state TEXT NOT NULL,
                 failed INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL, finished_ms INTEGER);
             CREATE TABLE tasks (id INTEGER PRIMARY KEY, job INTEGER NOT NULL, first_index INTEGER NOT NULL,
                 count INTEGER NOT NULL, pin INTEGER);
             CREATE TABLE attempts (task INTEGER NOT NULL, attempt INTEGER NOT NULL, worker INTEGER NOT NULL,
                 started_ms INTEGER NOT NULL, failed INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (task, attempt));
             CREATE TABLE results (job INTEGER NOT NULL, idx INTEGER NOT NULL, worker INTEGER NOT NULL,
                 outcome TEXT NOT NULL, code INTEGER, message TEXT, stdout BLOB NOT NULL, stderr BLOB NOT NULL,
                 truncated_bytes INTEGER NOT NULL, duration_ms INTEGER NOT NULL, recorded_ms INTEGER NOT NULL,
                 PRIMARY KEY (job, idx));
             INSERT INTO workers VALUES ('pi-01', 0);
             INSERT INTO tasks VALUES (1, 1, 0, 1, NULL), (2, 1, 1, 1, NULL), (3, 1, 2, 1, NULL);
             INSERT INTO results VALUES (1, 2, 0, 'exited', 0, NULL, x'32', x'', 0, 5, 100);
             INSERT INTO results VALUES (1, 0, 0, 'exited', 1, NULL, x'30', x'', 0, 5, 101);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        // v1 bytes of JobSpec { Map, ["echo", "{}"], items ["a","b","c"], chunksize 1, All,
        // retries 0, persistent false }.
        let v1_spec: Vec<u8> = vec![
            0, 2, 4, b'e', b'c', b'h', b'o', 2, b'{', b'}', 0, 0, 3, 1, b'a', 1, b'b', 1, b'c', 1,
            0, 0, 0,
        ];
        conn.execute(
            "INSERT INTO jobs VALUES (1, 'map', 'echo {}', ?1, 3, 'running', 1, 50, NULL)",
            [v1_spec],
        )
        .unwrap();
        drop(conn);

        let store = Store::open(&path).unwrap();
        let jobs = store.unfinished_jobs().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            jobs[0].spec.items,
            [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(jobs[0].spec.work.describe(), "echo {}");
        let open: Vec<u64> = jobs[0].tasks.iter().map(|t| t.task.0).collect();
        assert_eq!(open, [2], "tasks 1 and 3 have results");
        // Commit order is kept: index 2 was inserted first.
        let seqs: Vec<(u64, u64)> = store
            .results(bramble_wire::JobId(1), 0, 10)
            .unwrap()
            .iter()
            .map(|r| (r.seq, r.output.index))
            .collect();
        assert_eq!(seqs, [(1, 2), (2, 0)]);
        assert!(store.known().unwrap().drained.is_empty());
    }
}
