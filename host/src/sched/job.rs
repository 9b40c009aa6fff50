//! Jobs and their tasks: turning a submitted [`JobSpec`] into placeable tasks, and the
//! per-task bookkeeping the scheduler needs (pin, attempts, losses, where it runs).

use std::collections::BTreeSet;

use bramble_wire::{Attempt, Command, Item, JobKind, JobSpec, TaskId, WorkerId};

use super::event::ClientId;

/// A job in progress.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub(crate) client: ClientId,
    pub(crate) command: Command,
    /// Workers the job may use; `None` means any.
    pub(crate) targets: Option<BTreeSet<WorkerId>>,
    /// Items that have a result.
    pub(crate) reported: u64,
    /// Reported items that did not exit 0.
    pub(crate) failed: u64,
    /// Tasks without a result yet.
    pub(crate) open_tasks: BTreeSet<TaskId>,
}

/// A placeable unit: a chunk of one job's items.
#[derive(Clone, Debug)]
pub(crate) struct Task {
    pub(crate) job: bramble_wire::JobId,
    pub(crate) items: Vec<Item>,
    /// `apply` tasks run only on their target.
    pub(crate) pin: Option<WorkerId>,
    /// Attempts started so far; the next attempt gets this number.
    pub(crate) attempts: u32,
    /// How often a worker running it was lost.
    pub(crate) losses: u32,
    /// Where the current attempt runs; `None` while queued.
    pub(crate) running_on: Option<(WorkerId, Attempt)>,
}

impl Task {
    fn new(job: bramble_wire::JobId, items: Vec<Item>, pin: Option<WorkerId>) -> Self {
        Self {
            job,
            items,
            pin,
            attempts: 0,
            losses: 0,
            running_on: None,
        }
    }
}

/// Splits a validated job into tasks: `apply` gets one pinned task per target (item index =
/// position in `apply_targets`); `map` gets one task per `chunksize` items.
pub(crate) fn split(
    job: bramble_wire::JobId,
    spec: &JobSpec,
    apply_targets: &[WorkerId],
) -> Vec<Task> {
    match spec.kind {
        JobKind::Apply => apply_targets
            .iter()
            .zip(0u64..)
            .map(|(w, index)| Task::new(job, vec![Item { index, value: None }], Some(*w)))
            .collect(),
        JobKind::Map => {
            let chunk = usize::try_from(spec.chunksize.max(1)).unwrap_or(usize::MAX);
            let mut tasks = Vec::with_capacity(spec.items.len().div_ceil(chunk));
            let mut items = spec.items.iter().zip(0u64..).peekable();
            while items.peek().is_some() {
                let chunk_items = items
                    .by_ref()
                    .take(chunk)
                    .map(|(v, index)| Item {
                        index,
                        value: Some(v.clone()),
                    })
                    .collect();
                tasks.push(Task::new(job, chunk_items, None));
            }
            tasks
        }
    }
}

/// Total items of a job: one per apply target, else one per input.
pub(crate) fn total_items(spec: &JobSpec, apply_targets: &[WorkerId]) -> u64 {
    let n = match spec.kind {
        JobKind::Apply => apply_targets.len(),
        JobKind::Map => spec.items.len(),
    };
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Checks what the host must refuse before accepting a job.
pub(crate) fn validate(spec: &JobSpec) -> Result<(), String> {
    if spec.command.argv.first().is_none_or(String::is_empty) {
        return Err("empty command".into());
    }
    if spec.chunksize == 0 {
        return Err("chunksize must be at least 1".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::{JobId, Targets};

    fn spec(kind: JobKind, n: usize, chunksize: u32) -> JobSpec {
        JobSpec {
            kind,
            command: Command {
                argv: vec!["true".into()],
                shell: false,
                timeout_ms: 0,
            },
            items: (0..n).map(|i| i.to_string()).collect(),
            chunksize,
            targets: Targets::All,
        }
    }

    #[test]
    fn map_chunks_keep_every_item_once_in_order() {
        let tasks = split(JobId(1), &spec(JobKind::Map, 64, 10), &[]);
        assert_eq!(tasks.len(), 7);
        let idx: Vec<u64> = tasks
            .iter()
            .flat_map(|t| t.items.iter().map(|i| i.index))
            .collect();
        assert_eq!(idx, (0..64).collect::<Vec<_>>());
        assert_eq!(tasks[6].items.len(), 4);
        assert_eq!(tasks[6].items[3].value.as_deref(), Some("63"));
    }

    #[test]
    fn apply_pins_one_task_per_target() {
        let targets = [WorkerId(2), WorkerId(0)];
        let tasks = split(JobId(1), &spec(JobKind::Apply, 0, 1), &targets);
        assert_eq!(
            tasks.iter().map(|t| t.pin).collect::<Vec<_>>(),
            [Some(WorkerId(2)), Some(WorkerId(0))]
        );
        assert_eq!(total_items(&spec(JobKind::Apply, 0, 1), &targets), 2);
    }

    #[test]
    fn validation() {
        let mut s = spec(JobKind::Map, 1, 0);
        assert!(validate(&s).is_err());
        s.chunksize = 1;
        s.command.argv.clear();
        assert!(validate(&s).is_err());
    }
}
