//! Forgetting ended jobs (`bramble forget JOB`, `bramble prune`): a job's results, tasks and
//! attempts go with it, so the store does not grow without bound. The highest job and task
//! ids ever given are remembered (`given`), so a forgotten job's id is never given again.

use bramble_wire::JobId;
use rusqlite::params;

use super::{Store, StoreError};

/// What to forget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forget {
    /// These jobs (each must have ended).
    Jobs(Vec<JobId>),
    /// Ended jobs that ended more than `older_than_ms` ago (if given), apart from the newest
    /// `keep` ended ones (if given).
    Prune {
        older_than_ms: Option<u64>,
        keep: Option<u64>,
    },
}

impl Store {
    /// Forgets jobs; returns the ids forgotten, or (inner `Err`) why nothing was: an unknown
    /// or running job named.
    pub fn forget(
        &mut self,
        what: &Forget,
        now_ms: u64,
    ) -> Result<Result<Vec<JobId>, String>, StoreError> {
        let jobs = match what {
            Forget::Jobs(jobs) => {
                for job in jobs {
                    let state: Option<String> = self
                        .conn
                        .query_row("SELECT state FROM jobs WHERE id = ?1", [job.0], |r| {
                            r.get(0)
                        })
                        .map(Some)
                        .or_else(|e| match e {
                            rusqlite::Error::QueryReturnedNoRows => Ok(None),
                            e => Err(e),
                        })?;
                    match state.as_deref() {
                        None => return Ok(Err(format!("no job {job}"))),
                        Some("running") => {
                            return Ok(Err(format!(
                                "job {job} is running (`bramble cancel {job}` first)"
                            )));
                        }
                        Some(_) => {}
                    }
                }
                jobs.clone()
            }
            Forget::Prune {
                older_than_ms,
                keep,
            } => {
                let cutoff = older_than_ms.map_or(i64::MAX, |age| {
                    i64::try_from(now_ms.saturating_sub(age)).unwrap_or(i64::MAX)
                });
                let keep = i64::try_from(keep.unwrap_or(0)).unwrap_or(i64::MAX);
                let mut stmt = self.conn.prepare(
                    "SELECT id FROM jobs WHERE state != 'running'
                       AND COALESCE(finished_ms, created_ms) < ?1
                       AND id NOT IN (SELECT id FROM jobs WHERE state != 'running'
                                      ORDER BY id DESC LIMIT ?2)
                     ORDER BY id",
                )?;
                let ids = stmt.query_map(params![cutoff, keep], |r| r.get(0).map(JobId))?;
                ids.collect::<Result<_, _>>()?
            }
        };
        let tx = self.conn.transaction()?;
        for table in ["jobs", "tasks"] {
            tx.execute(
                &format!(
                    "INSERT INTO given (what, id) SELECT '{table}', MAX(id) FROM {table}
                     WHERE true HAVING MAX(id) IS NOT NULL
                     ON CONFLICT (what) DO UPDATE SET id = MAX(id, excluded.id)"
                ),
                [],
            )?;
        }
        for job in &jobs {
            tx.execute("DELETE FROM results WHERE job = ?1", [job.0])?;
            tx.execute(
                "DELETE FROM attempts WHERE task IN (SELECT id FROM tasks WHERE job = ?1)",
                [job.0],
            )?;
            tx.execute("DELETE FROM tasks WHERE job = ?1", [job.0])?;
            tx.execute("DELETE FROM jobs WHERE id = ?1", [job.0])?;
        }
        tx.commit()?;
        Ok(Ok(jobs))
    }
}

#[cfg(test)]
mod tests {
    use bramble_sched::Record;
    use bramble_wire::{JobKind, JobState, Targets, TaskId};

    use super::*;

    fn job(store: &mut Store, id: u64, ended_ms: Option<u64>) {
        let spec = crate::sim::harness::spec(JobKind::Map, 1, 1, Targets::All);
        let created = Record::JobCreated {
            job: JobId(id),
            spec,
            total: 1,
            tasks: vec![bramble_sched::TaskRow {
                task: TaskId(id * 10),
                first_index: 0,
                count: 1,
                pin: None,
                slot: None,
            }],
        };
        store.apply(&[created], 0).unwrap();
        if let Some(ms) = ended_ms {
            let ended = Record::JobEnded {
                job: JobId(id),
                state: JobState::Done,
                failed: 0,
            };
            store.apply(&[ended], ms).unwrap();
        }
    }

    #[test]
    fn ended_jobs_are_forgotten_and_their_ids_never_given_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("jobs.db")).unwrap();
        let nothing = Forget::Prune {
            older_than_ms: None,
            keep: None,
        };
        assert_eq!(store.forget(&nothing, 0).unwrap(), Ok(vec![]));
        for (id, ended) in [
            (1, None),
            (2, Some(1_000)),
            (3, Some(2_000)),
            (4, Some(3_000)),
        ] {
            job(&mut store, id, ended);
        }
        let err = store.forget(&Forget::Jobs(vec![JobId(1)]), 0).unwrap();
        assert!(err.unwrap_err().contains("running"));
        let err = store.forget(&Forget::Jobs(vec![JobId(9)]), 0).unwrap();
        assert_eq!(err.unwrap_err(), "no job 9");
        // By age, keeping the newest ended one: job 2 only (3 is too young, 4 is kept).
        let prune = |older_than_ms, keep| Forget::Prune {
            older_than_ms,
            keep,
        };
        let gone = store.forget(&prune(Some(500), Some(1)), 2_000).unwrap();
        assert_eq!(gone.unwrap(), [JobId(2)]);
        let gone = store.forget(&prune(None, Some(1)), 9_000).unwrap();
        assert_eq!(gone.unwrap(), [JobId(3)]);
        let gone = store.forget(&Forget::Jobs(vec![JobId(4)]), 0).unwrap();
        assert_eq!(gone.unwrap(), [JobId(4)]);
        let left: Vec<u64> = store.jobs(0).unwrap().iter().map(|j| j.job.0).collect();
        assert_eq!(left, [1]);
        // Names: unique, freed with their job.
        assert_eq!(store.name_job(JobId(1), "nightly").unwrap(), Ok(()));
        job(&mut store, 5, Some(4_000));
        let taken = store.name_job(JobId(5), "nightly").unwrap().unwrap_err();
        assert!(taken.contains("taken by job 1"), "{taken}");
        assert_eq!(
            store.name_job(JobId(9), "x").unwrap(),
            Err("no job 9".into())
        );
        assert_eq!(
            store.job_names().unwrap(),
            [(JobId(1), "nightly".to_owned())]
        );
        store
            .forget(&Forget::Jobs(vec![JobId(5)]), 0)
            .unwrap()
            .unwrap();
        // The newest job and task are gone; after a restart ids go on from 6 and 51.
        drop(store);
        let store = Store::open(&dir.path().join("jobs.db")).unwrap();
        assert_eq!(store.next_ids().unwrap(), (6, 51));
    }
}
