//! Python engines: one warm interpreter per worker slot, started when Python work first needs
//! it and kept across jobs with its namespace. A job's function is loaded into an engine once
//! and dropped when the job ends; an engine that dies is started afresh for the next item
//! (its namespace is lost, and the item it died in says so).

mod frames;
mod probe;
mod process;
mod run;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

pub(crate) use probe::probe;
use process::Engine;
pub(crate) use run::{PythonRun, run_task};

/// One slot's engine and what it holds.
#[derive(Default)]
struct Slot {
    /// The engine when idle (a running item holds it meanwhile).
    idle: Option<Engine>,
    /// Jobs whose function the slot's engine has.
    loaded: BTreeSet<u64>,
    /// Jobs that ended while it had their function: forgotten before its next item.
    forget: Vec<u64>,
}

/// The engines of this worker, by slot. Shared by the task runners; never locked across an
/// await. The core never runs two items in one engine at once.
#[derive(Clone)]
pub(crate) struct Engines {
    slots: Arc<Mutex<Vec<Slot>>>,
    /// The interpreter (the worker's `python` setting).
    python: Arc<str>,
}

/// An engine taken out for one item, with the bookkeeping to give back.
pub(crate) struct Lease {
    engine: Option<Engine>,
    loaded: BTreeSet<u64>,
    forget: Vec<u64>,
}

impl Engines {
    pub(crate) fn new(slots: u16, python: &str) -> Self {
        Self {
            slots: Arc::new(Mutex::new((0..slots).map(|_| Slot::default()).collect())),
            python: python.into(),
        }
    }

    pub(crate) fn python(&self) -> &str {
        &self.python
    }

    /// Takes slot `slot`'s engine (if it has a live one) and what it holds.
    fn take(&self, slot: u16) -> Lease {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.get_mut(usize::from(slot)) {
            Some(s) => Lease {
                engine: s.idle.take(),
                loaded: std::mem::take(&mut s.loaded),
                forget: std::mem::take(&mut s.forget),
            },
            None => Lease {
                engine: None,
                loaded: BTreeSet::new(),
                forget: Vec::new(),
            },
        }
    }

    /// Gives an engine back (or `None` if it died: the slot starts afresh next time).
    fn give_back(&self, slot: u16, engine: Option<Engine>, loaded: BTreeSet<u64>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.get_mut(usize::from(slot)) {
            s.loaded = if engine.is_some() {
                loaded
            } else {
                BTreeSet::new()
            };
            s.idle = engine;
        }
    }

    /// The job ended: every engine that has its function forgets it before its next item.
    pub(crate) fn end_job(&self, job: bramble_wire::JobId) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for s in slots.iter_mut() {
            if s.loaded.remove(&job.0) {
                s.forget.push(job.0);
            }
        }
    }
}

#[cfg(test)]
mod tests;
