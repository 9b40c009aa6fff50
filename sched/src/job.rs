//! Jobs and their tasks: turning a submitted [`JobSpec`] into placeable tasks (and rebuilding
//! them after a restart), and the per-task bookkeeping the scheduler needs.

use std::collections::BTreeSet;

use bramble_wire::{
    Attempt, Item, JobId, JobKind, JobSpec, StagedCommand, TaskId, Work, WorkerId,
    is_plain_relative,
};

use super::event::TaskRow;
use super::targets::Pin;

/// A job in progress.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    /// As submitted: a map job's items are cut into tasks from it as placement needs them.
    pub(crate) spec: JobSpec,
    /// Items cut into tasks so far (`0..planned`); the job is fully planned at `total`.
    pub(crate) planned: u64,
    /// Results the job will have.
    pub(crate) total: u64,
    /// Workers a map job may use; `None` means any.
    pub(crate) targets: Option<super::targets::TargetFilter>,
    /// Results that did not exit 0.
    pub(crate) failed: u64,
    /// Tasks without a result yet.
    pub(crate) open_tasks: BTreeSet<TaskId>,
    /// Winding down (`--halt soon`): nothing new starts (no cutting, no retries, no second
    /// placement); the job ends, cancelled, once what runs is done.
    pub(crate) winding_down: bool,
}

/// A placeable unit: a chunk of one job's items.
#[derive(Clone, Debug)]
pub(crate) struct Task {
    pub(crate) job: JobId,
    pub(crate) items: Vec<Item>,
    /// Apply and scatter tasks run only on their target.
    pub(crate) pin: Option<WorkerId>,
    /// Python apply and scatter tasks run only in this engine (slot) of `pin`.
    pub(crate) slot: Option<u16>,
    /// Attempts started so far; the next attempt gets this number.
    pub(crate) attempts: u32,
    /// How often a worker running it was lost.
    pub(crate) losses: u32,
    /// Failed attempts that may still be re-run.
    pub(crate) retries_left: u32,
    /// Workers on which an attempt failed: avoided while others can take the task.
    pub(crate) avoid: BTreeSet<WorkerId>,
    /// Where the current attempt runs; `None` while queued.
    pub(crate) running_on: Option<(WorkerId, Attempt)>,
    /// When the current attempt started (the thermal policy projects its end).
    pub(crate) started_at: Option<std::time::Instant>,
    /// A speculative second attempt of a straggler: (worker, attempt, start). The first
    /// result of either attempt wins; the other is cancelled.
    pub(crate) backup: Option<(WorkerId, Attempt, std::time::Instant)>,
    /// Resumed after a host restart: only this worker, which had it before, may take it for
    /// now (see `Scheduler::resume`).
    pub(crate) kept_for: Option<WorkerId>,
}

impl Task {
    pub(crate) fn new(job: JobId, items: Vec<Item>, pin: Option<WorkerId>, retries: u32) -> Self {
        Self {
            job,
            items,
            pin,
            slot: None,
            attempts: 0,
            losses: 0,
            retries_left: retries,
            avoid: BTreeSet::new(),
            running_on: None,
            started_at: None,
            backup: None,
            kept_for: None,
        }
    }

    /// Every attempt running now: the primary, then the backup.
    pub(crate) fn running_attempts(&self) -> impl Iterator<Item = (WorkerId, Attempt)> + '_ {
        self.running_on
            .into_iter()
            .chain(self.backup.map(|(w, a, _)| (w, a)))
    }

    /// When the attempt on `worker` started.
    pub(crate) fn started_on(&self, worker: WorkerId) -> Option<std::time::Instant> {
        match self.backup {
            Some((w, _, at)) if w == worker => Some(at),
            _ => self.started_at,
        }
    }

    /// Forgets the attempt running on `worker` (it ended or its worker is gone); a backup
    /// left alone becomes the primary. True if another attempt still runs.
    pub(crate) fn drop_attempt_on(&mut self, worker: WorkerId) -> bool {
        if self.backup.is_some_and(|(w, _, _)| w == worker) {
            self.backup = None;
        } else if self.running_on.is_some_and(|(w, _)| w == worker) {
            self.running_on = self.backup.map(|(w, a, _)| (w, a));
            self.started_at = self.backup.map(|(_, _, at)| at);
            self.backup = None;
        }
        self.running_on.is_some()
    }
}

impl Job {
    pub(crate) fn work(&self) -> &Work {
        &self.spec.work
    }

    /// Every item is in a task.
    pub(crate) fn fully_planned(&self) -> bool {
        self.planned >= self.total
    }
}

/// The task rows of a new job. `pins` are the resolved targets of apply/scatter (one pinned
/// task each, result index = position); a map job gets none here: its tasks are cut as
/// placement needs them ([`cut`]).
pub(crate) fn plan(spec: &JobSpec, pins: &[Pin], first_task: u64) -> Vec<TaskRow> {
    let rows: Vec<(u64, u64, Option<Pin>)> = match spec.kind {
        JobKind::Apply | JobKind::Scatter => pins
            .iter()
            .zip(0u64..)
            .map(|(pin, i)| (i, 1, Some(*pin)))
            .collect(),
        JobKind::Map => Vec::new(),
    };
    rows_from(rows, first_task)
}

/// At most `tasks` task rows of a map job, one per `chunksize` items from item `from` on.
pub(crate) fn cut(spec: &JobSpec, from: u64, tasks: u64, first_task: u64) -> Vec<TaskRow> {
    let n = spec.item_count();
    let chunk = u64::from(spec.chunksize.max(1));
    let rows = (0..tasks)
        .map(|k| from + k * chunk)
        .take_while(|start| *start < n)
        .map(|start| (start, chunk.min(n - start), None))
        .collect();
    rows_from(rows, first_task)
}

fn rows_from(rows: Vec<(u64, u64, Option<Pin>)>, first_task: u64) -> Vec<TaskRow> {
    rows.into_iter()
        .zip(first_task..)
        .map(|((first_index, count, pin), id)| TaskRow {
            task: TaskId(id),
            first_index,
            count,
            pin: pin.map(|p| p.0),
            slot: pin.and_then(|p| p.1),
        })
        .collect()
}

/// The items a task row carries. Scatter rows get their contiguous chunk of the inputs as
/// one stdin text (`tasks` is the number of rows of the job).
pub(crate) fn items(spec: &JobSpec, row: &TaskRow, tasks: usize) -> Vec<Item> {
    match spec.kind {
        JobKind::Apply => vec![Item {
            index: row.first_index,
            value: None,
        }],
        JobKind::Map => (row.first_index..row.first_index.saturating_add(row.count))
            .map_while(|index| {
                let value = spec.item(index)?.into_owned();
                Some(Item {
                    index,
                    value: Some(value),
                })
            })
            .collect(),
        JobKind::Scatter => {
            let k = usize::try_from(row.first_index).unwrap_or(usize::MAX);
            let n = usize::try_from(spec.item_count()).unwrap_or(usize::MAX);
            let (start, end) = chunk_bounds(n, tasks, k);
            let chunk: Vec<_> = (start..end).filter_map(|i| spec.item(i as u64)).collect();
            let value = (!chunk.is_empty()).then(|| chunk.join(&b'\n'));
            vec![Item {
                index: row.first_index,
                value,
            }]
        }
    }
}

/// Bounds of chunk `k` of `n` items split into `parts` contiguous chunks whose sizes differ by
/// at most one (the first `n % parts` chunks are one larger), as ipyparallel's scatter does.
pub(crate) fn chunk_bounds(n: usize, parts: usize, k: usize) -> (usize, usize) {
    let parts = parts.max(1);
    let (base, extra) = (n / parts, n % parts);
    let start = k * base + k.min(extra);
    let len = base + usize::from(k < extra);
    (start.min(n), (start + len).min(n))
}

/// Items per task at most: a task's result is one frame, and a frame may only decode to a
/// few times its size (`bramble_wire::codec::EXPANSION`), which ten thousand results of a
/// few bytes each stay far within.
pub const MAX_CHUNKSIZE: u32 = 10_000;

/// Items per job at most (ids and counts are stored as SQLite's signed 64-bit integers).
pub(crate) const MAX_ITEMS: u64 = 1 << 40;

/// Files staged with one job at most.
pub(crate) const MAX_STAGED_FILES: usize = 10_000;

/// Staged paths are plain relative paths, each once, none inside another; fetch patterns are
/// relative too; fetching needs a directory per item, which co-processes do not have.
fn validate_staged(staged: &StagedCommand) -> Result<(), String> {
    if staged.files.len() > MAX_STAGED_FILES {
        return Err(format!("at most {MAX_STAGED_FILES} staged files per job"));
    }
    let mut seen = BTreeSet::new();
    for f in &staged.files {
        if !is_plain_relative(&f.path) {
            return Err(format!(
                "staged path {:?} must be relative, without `.` or `..`",
                f.path
            ));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(format!("{:?} is staged twice", f.path));
        }
    }
    for f in &staged.files {
        let mut prefix = f.path.as_str();
        while let Some((dir, _)) = prefix.rsplit_once('/') {
            if seen.contains(dir) {
                return Err(format!("{dir:?} is staged as a file and as a directory"));
            }
            prefix = dir;
        }
    }
    if let Some(p) = staged.fetch.iter().find(|p| !is_plain_relative(p)) {
        return Err(format!(
            "--fetch pattern {p:?} must be relative to the task's directory, without `.` or `..`"
        ));
    }
    if staged.persistent && !staged.fetch.is_empty() {
        return Err("--fetch brings back each item's files; a --persistent co-process serves many                     items in one directory"
            .into());
    }
    Ok(())
}

/// Checks what the host must refuse before accepting a job.
pub(crate) fn validate(spec: &JobSpec) -> Result<(), String> {
    if let Work::StagedCommand(staged) = &spec.work {
        validate_staged(staged)?;
    }
    match &spec.work {
        Work::Command { command, .. } | Work::StagedCommand(StagedCommand { command, .. }) => {
            if command.argv.first().is_none_or(String::is_empty) {
                return Err("empty command".into());
            }
            if spec.items.iter().any(|i| std::str::from_utf8(i).is_err()) {
                return Err("a command's items must be UTF-8 text".into());
            }
            if spec.kind == JobKind::Scatter
                && command
                    .argv
                    .iter()
                    .any(|a| bramble_wire::template::takes_item(a))
            {
                return Err(
                    "scatter gives each target its chunk on stdin; `{}` is not allowed".into(),
                );
            }
        }
        Work::Python(p) => {
            if p.function.is_none() {
                return Err("a Python job needs its function".into());
            }
        }
    }
    if spec.chunksize == 0 || spec.chunksize > MAX_CHUNKSIZE {
        return Err(format!("chunksize must be 1 to {MAX_CHUNKSIZE}"));
    }
    if spec.kind == JobKind::Apply && spec.item_count() > 0 {
        return Err("apply takes no items".into());
    }
    if spec.item_count() > MAX_ITEMS {
        return Err(format!("a job has at most {MAX_ITEMS} items"));
    }
    if spec.range.is_some() && !spec.items.is_empty() {
        return Err("a job's items come from a list or a range, not both".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::Targets;

    fn spec(kind: JobKind, n: usize, chunksize: u32) -> JobSpec {
        JobSpec {
            kind,
            work: Work::Command {
                command: bramble_wire::Command {
                    argv: vec!["true".into()],
                    shell: false,
                    timeout_ms: 0,
                },
                persistent: false,
            },
            items: (0..n).map(|i| i.to_string().into_bytes()).collect(),
            chunksize,
            targets: Targets::All,
            retries: 0,
            range: None,
        }
    }

    fn argv(s: &mut JobSpec) -> &mut Vec<String> {
        s.work.argv_mut().expect("a command job")
    }

    #[test]
    fn map_chunks_keep_every_item_once_in_order() {
        let s = spec(JobKind::Map, 64, 10);
        assert!(plan(&s, &[], 100).is_empty(), "map tasks are cut later");
        // Cut in two goes, as placement asks: 3 tasks, then as many as there are.
        let mut rows = cut(&s, 0, 3, 100);
        rows.extend(cut(&s, 30, 100, 103));
        assert_eq!(rows.len(), 7);
        assert_eq!(rows[0].task, TaskId(100));
        assert_eq!(rows[6].task, TaskId(106));
        let idx: Vec<u64> = rows
            .iter()
            .flat_map(|r| items(&s, r, rows.len()).into_iter().map(|i| i.index))
            .collect();
        assert_eq!(idx, (0..64).collect::<Vec<_>>());
        assert_eq!(items(&s, &rows[6], 7)[3].value.as_deref(), Some(&b"63"[..]));
    }

    #[test]
    fn a_range_makes_its_items_as_they_are_cut() {
        let mut s = spec(JobKind::Map, 0, 4);
        s.range = Some(bramble_wire::ItemRange {
            start: -2,
            end: 9_999_998,
        });
        assert_eq!(s.item_count(), 10_000_000);
        let rows = cut(&s, 9_999_996, 5, 1);
        assert_eq!(rows.len(), 1, "only one chunk is left");
        let values: Vec<Vec<u8>> = items(&s, &rows[0], 1)
            .into_iter()
            .map(|i| i.value.unwrap())
            .collect();
        assert_eq!(
            values,
            [
                b"9999994".to_vec(),
                b"9999995".to_vec(),
                b"9999996".to_vec(),
                b"9999997".to_vec()
            ]
        );
        assert_eq!(
            items(&s, &cut(&s, 0, 1, 1)[0], 1)[0].value.as_deref(),
            Some(&b"-2"[..])
        );
    }

    #[test]
    fn apply_pins_one_task_per_target() {
        let targets = [(WorkerId(2), None), (WorkerId(0), Some(3))];
        let s = spec(JobKind::Apply, 0, 1);
        let rows = plan(&s, &targets, 1);
        assert_eq!(
            rows.iter().map(|r| (r.pin, r.slot)).collect::<Vec<_>>(),
            [(Some(WorkerId(2)), None), (Some(WorkerId(0)), Some(3))]
        );
        assert_eq!(
            items(&s, &rows[1], 2),
            [Item {
                index: 1,
                value: None
            }]
        );
    }

    #[test]
    fn scatter_splits_contiguously_and_evenly() {
        let s = spec(JobKind::Scatter, 10, 1);
        let targets = [0, 1, 2, 3].map(|w| (WorkerId(w), None));
        let rows = plan(&s, &targets, 1);
        let chunks: Vec<Option<Vec<u8>>> = rows
            .iter()
            .map(|r| items(&s, r, 4)[0].value.clone())
            .collect();
        assert_eq!(chunks[0].as_deref(), Some(&b"0\n1\n2"[..]));
        assert_eq!(chunks[1].as_deref(), Some(&b"3\n4\n5"[..]));
        assert_eq!(chunks[2].as_deref(), Some(&b"6\n7"[..]));
        assert_eq!(chunks[3].as_deref(), Some(&b"8\n9"[..]));
        let few = spec(JobKind::Scatter, 1, 1);
        assert_eq!(
            items(&few, &rows[3], 4)[0].value,
            None,
            "an empty chunk is empty stdin"
        );
        for (n, parts) in [(0, 3), (7, 7), (100, 6), (5, 9)] {
            let covered: usize = (0..parts)
                .map(|k| chunk_bounds(n, parts, k))
                .map(|(a, b)| b - a)
                .sum();
            assert_eq!(covered, n);
        }
    }

    #[test]
    fn validation() {
        let mut s = spec(JobKind::Map, 1, 0);
        assert!(validate(&s).is_err());
        s.chunksize = 1;
        s.items[0] = vec![0xff];
        assert!(validate(&s).unwrap_err().contains("UTF-8"));
        s.items[0] = b"x".to_vec();
        argv(&mut s).clear();
        assert!(validate(&s).is_err());
        let mut s = spec(JobKind::Scatter, 1, 1);
        argv(&mut s).push("{}".into());
        assert!(validate(&s).unwrap_err().contains("stdin"));
    }

    #[test]
    fn staged_paths_are_plain_and_unique_and_fetch_needs_an_item_directory() {
        let file = |path: &str| bramble_wire::StagedFile {
            path: path.into(),
            sha256: [0; 32],
            size: 1,
            executable: false,
        };
        let check = |paths: &[&str], fetch: &[&str], persistent: bool| {
            let mut s = spec(JobKind::Map, 1, 1);
            let Work::Command { command, .. } = s.work else {
                unreachable!()
            };
            s.work = Work::StagedCommand(StagedCommand {
                command,
                persistent,
                files: paths.iter().map(|p| file(p)).collect(),
                fetch: fetch.iter().map(|p| (*p).to_owned()).collect(),
            });
            validate(&s)
        };
        assert_eq!(check(&["run.py", "data/a.csv"], &["*.out"], false), Ok(()));
        assert_eq!(check(&["run.py"], &[], true), Ok(()));
        for bad in ["/etc/passwd", "../x", "a/../b", "a//b", "./a", ""] {
            let err = check(&[bad], &[], false).unwrap_err();
            assert!(err.contains("must be relative"), "{bad}: {err}");
        }
        assert!(
            check(&["a", "a"], &[], false)
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            check(&["d", "d/x"], &[], false)
                .unwrap_err()
                .contains("as a directory")
        );
        assert!(
            check(&["a"], &["../out"], false)
                .unwrap_err()
                .contains("--fetch")
        );
        assert!(
            check(&["a"], &["*.out"], true)
                .unwrap_err()
                .contains("--persistent")
        );
    }
}
