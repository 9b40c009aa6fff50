//! Which workers a job may use: resolving `Targets` at submit time (apply, scatter) and
//! filtering candidates at placement time (map, where workers come and go). A target label
//! also matches a worker of that name.

use std::collections::{BTreeMap, BTreeSet};

use bramble_wire::{EngineId, JobSpec, Targets, Work, WorkerId};

use super::python::unfit;
use super::worker::WorkerEntry;

/// A map job's target filter: a worker matches by id, by its name or any of its labels, or by
/// having one of the engines.
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
            || self.labels.contains(&w.name)
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
        // Staged commands need workers that fetch staged files.
        if let Some((id, why)) = ids
            .iter()
            .find_map(|id| unfit(&workers[id], work).map(|why| (id, why)))
        {
            return Err(format!("worker {id}: {why}"));
        }
        return Ok(ids.into_iter().map(|id| (id, None)).collect());
    }
    // Every engine of the targeted workers, in engine id order (as clients list them, so a
    // gather puts the parts of a scatter back in order); `All` means every engine that can
    // run it.
    let mut engines = Vec::new();
    let mut unfit_reasons = Vec::new();
    for id in ids {
        let w = &workers[&id];
        match unfit(w, work) {
            Some(why) if *targets == Targets::All => unfit_reasons.push(why),
            Some(why) => return Err(format!("worker {id}: {why}")),
            None => engines.extend(
                w.engines
                    .iter()
                    .zip(0u16..)
                    .map(|(engine, slot)| (*engine, (id, Some(slot)))),
            ),
        }
    }
    if engines.is_empty() {
        return Err(format!(
            "no engine can run this: {}",
            unfit_reasons.join("; ")
        ));
    }
    engines.sort();
    Ok(engines.into_iter().map(|(_, pin)| pin).collect())
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
            if let Some(l) = labels.iter().find(|l| {
                !workers
                    .values()
                    .any(|w| w.name == **l || w.hello.labels.contains(l))
            }) {
                return Err(format!("no connected worker is named or labelled {l:?}"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::{Hello, PythonReport, PythonWork};

    fn python_worker(name: &str, engines: &[u32], version: (u8, u8, u8)) -> WorkerEntry {
        let hello = Hello {
            protocol_minor: 0,
            capabilities: 3,
            slots: engines.len() as u16,
            boot_id: 0,
            labels: vec![],
            arch: "x".into(),
            version: "0".into(),
        };
        let now = crate::test_clock::epoch();
        let mut w = WorkerEntry::new(crate::SessionId(0), name.into(), "a".into(), hello, now);
        w.engines = engines.iter().map(|e| EngineId(*e)).collect();
        w.python = Some(PythonReport {
            interpreter: "python3".into(),
            version: Some(version),
            problem: None,
        });
        w
    }

    fn python(minor: u8) -> Work {
        Work::Python(PythonWork {
            function: Some(vec![]),
            python: (3, minor),
            timeout_ms: 0,
            name: "f".into(),
        })
    }

    #[test]
    fn every_engine_comes_in_engine_id_order_and_unfit_ones_are_left_out_of_all() {
        // w0 grew a second slot after w1 joined: its engine 2 comes after w1's engine 1.
        let workers = BTreeMap::from([
            (WorkerId(0), python_worker("w0", &[0, 2], (3, 11, 2))),
            (WorkerId(1), python_worker("w1", &[1], (3, 11, 7))),
            (WorkerId(2), python_worker("w2", &[3], (3, 9, 16))),
        ]);
        let pins = resolve(&Targets::All, &python(11), &workers).unwrap();
        let w = |id| WorkerId(id);
        assert_eq!(
            pins,
            [(w(0), Some(0)), (w(1), Some(0)), (w(0), Some(1))],
            "engines 0, 1, 2; w2's Python 3.9 left out"
        );
        let e = resolve(&Targets::Engines(vec![EngineId(3)]), &python(11), &workers);
        let why = e.unwrap_err();
        assert!(
            why.contains("Python 3.9.16") && why.contains("Python 3.11"),
            "{why}"
        );
        let e = resolve(&Targets::All, &python(12), &workers).unwrap_err();
        assert!(e.starts_with("no engine can run this"), "{e}");
    }
}
