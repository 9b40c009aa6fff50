//! Which workers can run a job's work, and refusals that say why: Python work needs a usable
//! Python of the client's major.minor, which cloudpickle needs (a mismatch names both
//! versions); staged commands and GNU parallel's newer placeholders need workers that announce
//! them (`CAP_STAGE`, `CAP_TEMPLATES`). Also: output of running Python items passed on to the
//! job's watchers.

use bramble_wire::template;
use bramble_wire::worker::{CAP_STAGE, CAP_TEMPLATES};
use bramble_wire::{OutputChunk, ToClient, Work, WorkerId};

use crate::worker::WorkerEntry;
use crate::{Action, Scheduler};

/// Why `w` cannot run `work`, or `None` if it can. Commands run anywhere (those with GNU
/// parallel's newer placeholders on workers that fill them); staged commands on workers that
/// fetch staged files.
pub(crate) fn unfit(w: &WorkerEntry, work: &Work) -> Option<String> {
    if let Some((command, _)) = work.command()
        && w.hello.capabilities & CAP_TEMPLATES == 0
        && command.argv.iter().any(|a| template::uses_extended(a))
    {
        return Some(format!(
            "{}'s bramble-worker ({}) is too old for placeholders like {{.}} and {{1}}: upgrade it",
            w.name, w.hello.version
        ));
    }
    let p = match work {
        Work::Command { .. } => return None,
        Work::StagedCommand(_) if w.hello.capabilities & CAP_STAGE == 0 => {
            return Some(format!(
                "{}'s bramble-worker ({}) is too old for staged files: upgrade it",
                w.name, w.hello.version
            ));
        }
        Work::StagedCommand(_) => return None,
        Work::Python(p) => p,
    };
    if w.engines.is_empty() {
        return Some(format!("{} runs no Python engines", w.name));
    }
    let Some(report) = &w.python else {
        return Some(format!("{} has not reported its Python yet", w.name));
    };
    if let Some(problem) = &report.problem {
        return Some(format!("{}: {problem}", w.name));
    }
    let (major, minor, micro) = report.version?;
    if (major, minor) != p.python {
        let (cmaj, cmin) = p.python;
        return Some(format!(
            "{} runs Python {major}.{minor}.{micro} and this client Python {cmaj}.{cmin}: \
             cloudpickle needs the same major.minor version on both sides",
            w.name
        ));
    }
    None
}

impl Scheduler {
    /// A map of Python or staged work needs at least one connected worker that can run it
    /// now.
    pub(crate) fn check_map_fit(&self, work: &Work) -> Result<(), String> {
        let reasons: Vec<String> = self
            .workers
            .values()
            .filter(|w| !w.draining)
            .map(|w| unfit(w, work))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        match reasons.first() {
            None if self.workers.is_empty() => Err("no workers connected".into()),
            None => Ok(()),
            Some(_) if matches!(work, Work::Python(_)) => {
                Err(format!("no engine can run this: {}", reasons.join("; ")))
            }
            Some(_) => Err(format!("no worker can run this: {}", reasons.join("; "))),
        }
    }

    /// Passes a running item's output on to its job's watchers.
    pub(crate) fn forward_output(&mut self, worker: WorkerId, chunk: OutputChunk) {
        let Some(task) = self.tasks.get(&chunk.task) else {
            return; // finished or cancelled meanwhile
        };
        let engine = self.workers.get(&worker).and_then(|w| w.engine(task.slot));
        let job = task.job;
        let msg = ToClient::Output {
            job,
            index: chunk.index,
            worker,
            engine,
            stream: chunk.stream,
            data: chunk.data,
        };
        self.actions.push_back(Action::Tell { job, msg });
    }
}
