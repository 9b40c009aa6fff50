//! Which workers a job may use: resolving `Targets` at submit time (apply, scatter) and
//! filtering candidates at placement time (map, where workers come and go).

use std::collections::{BTreeMap, BTreeSet};

use bramble_wire::{JobSpec, Targets, WorkerId};

use super::worker::WorkerEntry;

/// A map job's target filter: a worker matches by id or by any of its labels.
#[derive(Clone, Debug)]
pub(crate) struct TargetFilter {
    ids: BTreeSet<WorkerId>,
    labels: BTreeSet<String>,
}

impl TargetFilter {
    /// `None` (any worker) for `Targets::All`.
    pub(crate) fn for_map(spec: &JobSpec) -> Option<Self> {
        match &spec.targets {
            Targets::All => None,
            Targets::Ids(ids) => Some(Self {
                ids: ids.iter().copied().collect(),
                labels: BTreeSet::new(),
            }),
            Targets::Select { ids, labels } => Some(Self {
                ids: ids.iter().copied().collect(),
                labels: labels.iter().cloned().collect(),
            }),
        }
    }

    pub(crate) fn matches(&self, id: WorkerId, labels: &[String]) -> bool {
        self.ids.contains(&id) || labels.iter().any(|l| self.labels.contains(l))
    }
}

/// The connected workers `targets` names, in the order a job reports them: as listed for
/// `Ids`, by id otherwise. Drained workers are left out of `All` and label matches, and
/// naming one by id is an error; so are unknown ids and labels that match nobody.
pub(crate) fn resolve(
    targets: &Targets,
    workers: &BTreeMap<WorkerId, WorkerEntry>,
) -> Result<Vec<WorkerId>, String> {
    let check_ids = |ids: &[WorkerId]| {
        for id in ids {
            match workers.get(id) {
                None => return Err(format!("worker {id} is not connected")),
                Some(w) if w.draining => {
                    return Err(format!("worker {id} is drained (`bramble undrain {id}`)"));
                }
                Some(_) => {}
            }
        }
        Ok(())
    };
    let resolved = match targets {
        Targets::All => workers
            .iter()
            .filter(|(_, w)| !w.draining)
            .map(|(id, _)| *id)
            .collect(),
        Targets::Ids(ids) => {
            check_ids(ids)?;
            ids.clone()
        }
        Targets::Select { ids, labels } => {
            check_ids(ids)?;
            if let Some(l) = labels
                .iter()
                .find(|l| !workers.values().any(|w| w.hello.labels.contains(l)))
            {
                return Err(format!("no connected worker has label {l:?}"));
            }
            let filter = TargetFilter {
                ids: ids.iter().copied().collect(),
                labels: labels.iter().cloned().collect(),
            };
            workers
                .iter()
                .filter(|(id, w)| !w.draining && filter.matches(**id, &w.hello.labels))
                .map(|(id, _)| *id)
                .collect()
        }
    };
    if resolved.is_empty() {
        let why = if workers.is_empty() {
            "no workers connected"
        } else {
            "every connected worker is drained"
        };
        return Err(why.into());
    }
    Ok(resolved)
}
