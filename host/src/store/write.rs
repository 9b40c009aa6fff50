//! Writing: a batch of scheduler records in one transaction, the engine ids `cluster start`
//! reserves for its local workers, and job names.

use bramble_sched::Record;
use bramble_wire::{Attempt, JobId};
use rusqlite::params;

use super::{Store, StoreError};

impl Store {
    /// Writes a batch of records in one transaction. Returns the `seq` given to each
    /// `ResultRecorded` record, in order (`None` for a copy of a result already stored).
    pub fn apply<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a Record>,
        now_ms: u64,
    ) -> Result<Vec<Option<u64>>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut seqs = Vec::new();
        for record in records {
            if let Some(seq) = write_record(&tx, record, now_ms)? {
                seqs.push(seq);
            }
        }
        tx.commit()?;
        Ok(seqs)
    }

    /// Assigns engine ids to the `slots` slots of names whose slots have none yet
    /// (`cluster start`'s local workers: engine ids then follow the names, not the order in
    /// which the workers happen to join; their worker ids come from enrollment).
    pub fn reserve_engine_ids(&mut self, names: &[String], slots: u16) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for name in names {
            for slot in 0..slots {
                tx.execute(
                    "INSERT OR IGNORE INTO engines (name, slot, id)
                     SELECT ?1, ?2, COALESCE(MAX(id) + 1, 0) FROM engines",
                    params![name, slot],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Names a job (`--name`); names are unique. Inner `Err`: why not, in words.
    pub fn name_job(&mut self, job: JobId, name: &str) -> Result<Result<(), String>, StoreError> {
        let holder: Option<u64> = self
            .conn
            .query_row("SELECT id FROM jobs WHERE name = ?1", [name], |r| r.get(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        match holder {
            Some(id) if id == job.0 => return Ok(Ok(())),
            Some(id) => {
                return Ok(Err(format!(
                    "the name {name:?} is taken by job {id} (`bramble forget {id}` frees it)"
                )));
            }
            None => {}
        }
        let changed = self.conn.execute(
            "UPDATE jobs SET name = ?2 WHERE id = ?1",
            params![job.0, name],
        )?;
        Ok(if changed == 0 {
            Err(format!("no job {job}"))
        } else {
            Ok(())
        })
    }
}

fn write_tasks(
    tx: &rusqlite::Transaction<'_>,
    job: bramble_wire::JobId,
    tasks: &[bramble_sched::TaskRow],
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO tasks (id, job, first_index, count, pin, slot)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for t in tasks {
        stmt.execute(params![
            t.task.0,
            job.0,
            t.first_index,
            t.count,
            t.pin.map(|w| w.0),
            t.slot
        ])?;
    }
    Ok(())
}

/// Writes one record; a `ResultRecorded` answers with its seq (inner `None`: a duplicate).
fn write_record(
    tx: &rusqlite::Transaction<'_>,
    record: &Record,
    now_ms: u64,
) -> Result<Option<Option<u64>>, StoreError> {
    match record {
        Record::IdAssigned { worker, name } => {
            tx.execute(
                "INSERT INTO workers (name, id) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET id = excluded.id",
                params![name, worker.0],
            )?;
        }
        Record::EngineIdAssigned { name, slot, engine } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO engines (name, slot, id) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![name, slot, engine.0])?;
        }
        Record::JobWindingDown { job } => {
            tx.prepare_cached("UPDATE jobs SET winding = 1 WHERE id = ?1")?
                .execute([job.0])?;
        }
        Record::DrainChanged { name, draining } => {
            tx.prepare_cached("UPDATE workers SET draining = ?2 WHERE name = ?1")?
                .execute(params![name, draining])?;
        }
        Record::JobCreated {
            job,
            spec,
            total,
            tasks,
        } => {
            let blob = postcard::to_stdvec(spec).map_err(|e| StoreError::Spec(job.0, e))?;
            tx.prepare_cached(
                "INSERT INTO jobs (id, kind, command, spec, total, state, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6)",
            )?
            .execute(params![
                job.0,
                super::read::kind_word(spec.kind),
                spec.work.describe(),
                blob,
                total,
                now_ms
            ])?;
            write_tasks(tx, *job, tasks)?;
        }
        Record::TasksPlanned { job, tasks } => write_tasks(tx, *job, tasks)?,
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
            engine,
            output,
        } => {
            // OR IGNORE: exactly once per (job, index), whatever arrives twice.
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO results (job, idx, worker, engine, outcome, code,
                         message, stdout, stderr, truncated_bytes, duration_ms, recorded_ms,
                         value)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )?
                .execute(params![
                    job.0,
                    output.index,
                    worker.0,
                    engine.map(|e| e.0),
                    output.outcome.word(),
                    output.outcome.code(),
                    output.outcome.message(),
                    output.stdout,
                    output.stderr,
                    output.truncated_bytes,
                    output.duration_ms,
                    now_ms,
                    output.value,
                ])?;
            let seq = (inserted == 1).then(|| tx.last_insert_rowid() as u64);
            return Ok(Some(seq));
        }
        Record::JobEnded { job, state, failed } => {
            tx.prepare_cached(
                "UPDATE jobs SET state = ?2, failed = ?3, finished_ms = ?4 WHERE id = ?1",
            )?
            .execute(params![
                job.0,
                super::read::state_word(*state),
                failed,
                now_ms
            ])?;
        }
    }
    Ok(None)
}
