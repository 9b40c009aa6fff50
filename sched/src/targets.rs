//! Which workers a job may use: resolving `Targets` at submit time (apply, scatter) and
//! filtering candidates at placement time (map, where workers come and go).

use std::collections::{BTreeMap, BTreeSet};

use bramble_wire::{EngineId, JobSpec, Targets, Work, WorkerId};

use super::python::unfit;
use super::worker::WorkerEntry;

/// A map job's target filter: a worker matches by id, by any of its labels, or by having
/// one of the engines.
#[derive(Clone, Debug)]
pub(crate) struct TargetFilter {
    ids: BTreeSet<WorkerId>,
    labels: BTreeSet<String>,
    engines: BTreeSet<EngineId>,
}

impl TargetFilter {
    /// `None` (any worker) for `Targets::All`. Engines select the workers they run on.
    pub(crate) fn for_map(spec: &JobSpec) -> Option<Self> {
        let (ids, labels, engines): (&[WorkerId], &[String], &[EngineId]) = match &spec.targets {
            Targets::All => return None,
            Targets::Ids(ids) => (ids, &[], &[]),
            Targets::Select { ids, labels } => (ids, labels, &[]),
            Targets::Engines(engines) => (&[], &[], engines),
        };
        Some(Self {
            ids: ids.iter().copied().collect(),
            labels: labels.iter().cloned().collect(),
            engines: engines.iter().copied().collect(),
        })
    }

    pub(crate) fn matches(&self, id: WorkerId, w: &WorkerEntry) -> bool {
        self.ids.contains(&id)
            || w.hello.labels.iter().any(|l| self.labels.contains(l))
            || w.engines.iter().any(|e| self.engines.contains(e))
    }
}

/// Where each apply or scatter task of a job runs: a worker, and for Python work an engine
/// (slot) of it.
pub(crate) type Pin = (WorkerId, Option<u16>);

/// The connected workers (or engines) `targets` names, in the order a job reports them: as
/// listed for `Ids` and `Engines`, by id otherwise. Drained workers are left out of `All` and
/// label matches, and naming one is an error; so are unknown ids, labels that match nobody,
/// and, for Python work, engines that cannot run it (`All` means every engine then).
pub(crate) fn resolve(
    targets: &Targets,
    work: &Work,
    workers: &BTreeMap<WorkerId, WorkerEntry>,
) -> Result<Vec<Pin>, String> {
    let python = matches!(work, Work::Python(_));
    if let Targets::Engines(engines) = targets {
        return resolve_engines(engines, work, workers);
    }
    let ids = resolve_workers(targets, workers)?;
    if !python {
        return Ok(ids.into_iter().map(|id| (id, None)).collect());
    }
    // Every engine of the targeted workers.
    let mut pins = Vec::new();
    for id in ids {
        let w = &workers[&id];
        if let Some(why) = unfit(w, work) {
            return Err(format!("worker {id}: {why}"));
        }
        pins.extend((0..w.engines.len()).map(|slot| (id, u16::try_from(slot).ok())));
    }
    Ok(pins)
}

/// Checks a map job's targets: the ids and labels exist, named engines can run the work.
pub(crate) fn check_map(
    targets: &Targets,
    work: &Work,
    workers: &BTreeMap<WorkerId, WorkerEntry>,
) -> Result<(), String> {
    match targets {
        Targets::Engines(engines) => resolve_engines(engines, work, workers).map(drop),
        other => resolve_workers(other, workers).map(drop),
    }
}

fn resolve_engines(
    engines: &[bramble_wire::EngineId],
    work: &Work,
    workers: &BTreeMap<WorkerId, WorkerEntry>,
) -> Result<Vec<Pin>, String> {
    let mut pins = Vec::with_capacity(engines.len());
    for engine in engines {
        let found = workers.iter().find_map(|(id, w)| {
            let slot = w.engines.iter().position(|e| e == engine)?;
            Some((*id, w, u16::try_from(slot).ok()?))
        });
        let Some((id, w, slot)) = found else {
            return Err(format!("engine {engine} is not connected"));
        };
        if w.draining {
            return Err(format!("engine {engine} is on drained worker {id}"));
        }
        if let Some(why) = unfit(w, work) {
            return Err(format!("engine {engine}: {why}"));
        }
        pins.push((id, Some(slot)));
    }
    if pins.is_empty() {
        return Err("no engines given".into());
    }
    Ok(pins)
}

fn resolve_workers(
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
                engines: BTreeSet::new(),
            };
            workers
                .iter()
                .filter(|(id, w)| !w.draining && filter.matches(**id, w))
                .map(|(id, _)| *id)
                .collect()
        }
        Targets::Engines(_) => Vec::new(), // resolved by `resolve_engines`
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
