//! Reading back what a restarted host resumes: worker ids and drains, the next free ids, and
//! every running job with what is left of it.

use std::collections::{BTreeMap, BTreeSet};

use bramble_sched::{Known, RestoredJob, TaskRow};
use bramble_wire::{EngineId, JobId, JobSpec, TaskId, WorkerId};

use super::{Store, StoreError};

/// A stored job spec. Specs written before `JobSpec` had its `range` (bramble 0.2
/// development builds) lack the final byte of its `None`.
fn decode_spec(id: u64, blob: Vec<u8>) -> Result<JobSpec, StoreError> {
    postcard::from_bytes(&blob).or_else(|e| {
        let mut older = blob;
        older.push(0);
        postcard::from_bytes(&older).map_err(|_| StoreError::Spec(id, e))
    })
}

impl Store {
    /// What the scheduler knows from before: worker ids and drains, engine ids.
    pub fn known(&self) -> Result<Known, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, id, draining FROM workers")?;
        let mut names = BTreeMap::new();
        let mut drained = BTreeSet::new();
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                WorkerId(r.get(1)?),
                r.get::<_, bool>(2)?,
            ))
        })?;
        for row in rows {
            let (name, id, draining) = row?;
            if draining {
                drained.insert(name.clone());
            }
            names.insert(name, id);
        }
        let engines = self
            .conn
            .prepare("SELECT name, slot, id FROM engines")?
            .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), EngineId(r.get(2)?))))?
            .collect::<Result<_, _>>()?;
        Ok(Known {
            names,
            drained,
            engines,
        })
    }

    /// Ids above every stored job and task: (next job, next task).
    pub fn next_ids(&self) -> Result<(u64, u64), StoreError> {
        // Past every id in the table and every id of a forgotten row (`given`).
        let next = |table: &str| -> Result<u64, StoreError> {
            let sql = format!(
                "SELECT MAX((SELECT COALESCE(MAX(id), 0) FROM {table}),
                            (SELECT COALESCE(MAX(id), 0) FROM given WHERE what = '{table}')) + 1"
            );
            Ok(self.conn.query_row(&sql, [], |r| r.get(0))?)
        };
        Ok((next("jobs")?, next("tasks")?))
    }

    /// Every running job with what is left of it, for the scheduler to resume.
    pub fn unfinished_jobs(&self) -> Result<Vec<RestoredJob>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, spec, failed, total, winding FROM jobs WHERE state = 'running' ORDER BY id",
        )?;
        let jobs = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, u64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, u64>(2)?,
                    r.get::<_, u64>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(jobs.len());
        for (id, blob, failed, total, winding) in jobs {
            let spec = decode_spec(id, blob)?;
            let mut job = self.restore_job(JobId(id), spec, failed, total)?;
            job.winding_down = winding;
            out.push(job);
        }
        Ok(out)
    }

    fn restore_job(
        &self,
        job: JobId,
        spec: JobSpec,
        failed: u64,
        total: u64,
    ) -> Result<RestoredJob, StoreError> {
        // The tasks without a result (a task's results are written in one transaction: its
        // first item recorded means all are), and how far the items were cut into tasks.
        let mut stmt = self.conn.prepare(
            "SELECT id, first_index, count, pin, slot FROM tasks t WHERE job = ?1
               AND NOT EXISTS (SELECT 1 FROM results r WHERE r.job = t.job AND r.idx = t.first_index)
             ORDER BY id",
        )?;
        let tasks: Vec<TaskRow> = stmt
            .query_map([job.0], |r| {
                Ok(TaskRow {
                    task: TaskId(r.get(0)?),
                    first_index: r.get(1)?,
                    count: r.get(2)?,
                    pin: r.get::<_, Option<u32>>(3)?.map(WorkerId),
                    slot: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let planned = match spec.kind {
            bramble_wire::JobKind::Map => self.conn.query_row(
                "SELECT COALESCE(MAX(first_index + count), 0) FROM tasks WHERE job = ?1",
                [job.0],
                |r| r.get(0),
            )?,
            _ => total,
        };
        let open: BTreeSet<TaskId> = tasks.iter().map(|t| t.task).collect();
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
            if open.contains(&task) {
                attempts.insert(task, n);
                failed_attempts.insert(task, f);
            }
        }
        let placed_on = self
            .conn
            .prepare(
                "SELECT a.task, a.worker FROM attempts a JOIN tasks t ON t.id = a.task
                 WHERE t.job = ?1 AND a.failed = 0
                   AND a.attempt = (SELECT MAX(b.attempt) FROM attempts b WHERE b.task = a.task)",
            )?
            .query_map([job.0], |r| Ok((TaskId(r.get(0)?), WorkerId(r.get(1)?))))?
            .filter(|row| row.as_ref().is_ok_and(|(task, _)| open.contains(task)))
            .collect::<Result<_, _>>()?;
        Ok(RestoredJob {
            job,
            spec,
            tasks,
            planned,
            total,
            failed,
            attempts,
            failed_attempts,
            placed_on,
            winding_down: false,
        })
    }
}
