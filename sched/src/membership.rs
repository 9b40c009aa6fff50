//! Workers joining and being drained: ids by certificate name (given at enrollment when the
//! host knows it, kept across reconnects and restarts), a newer connection superseding an
//! older one, the welcome, and `bramble drain`.

use std::time::Instant;

use bramble_wire::worker::{CAP_COMMAND, CAP_PYTHON};
use bramble_wire::{EngineId, Hello, PROTOCOL_MINOR, ToWorker, Welcome, WorkerId};

use crate::worker::WorkerEntry;
use crate::{Action, DisconnectReason, Record, Scheduler, SessionId};

impl Scheduler {
    pub(crate) fn handle_connected(
        &mut self,
        now: Instant,
        session: SessionId,
        name: String,
        hello: Hello,
        address: String,
        enrolled: Option<WorkerId>,
    ) {
        let refuse = if hello.capabilities & CAP_COMMAND == 0 {
            Some("worker cannot run command tasks")
        } else if hello.slots == 0 {
            Some("worker announced 0 slots")
        } else {
            None
        };
        if let Some(reason) = refuse {
            let msg = ToWorker::Reject {
                reason: reason.to_owned(),
            };
            self.actions.push_back(Action::Send { session, msg });
            let reason = DisconnectReason::Rejected(reason.to_owned());
            self.actions
                .push_back(Action::Disconnect { session, reason });
            return;
        }
        let id = match self.names.get(&name) {
            Some(id) => *id,
            None => {
                // Its enrollment's id unless another name has it (a profile whose names got
                // ids by joining before enrollment gave them), else the next free one.
                let id = enrolled
                    .filter(|id| !self.names.values().any(|w| w == id))
                    .unwrap_or_else(|| {
                        WorkerId(self.names.values().map(|w| w.0 + 1).max().unwrap_or(0))
                    });
                self.names.insert(name.clone(), id);
                self.actions.push_back(Action::Record(Record::IdAssigned {
                    worker: id,
                    name: name.clone(),
                }));
                id
            }
        };
        if let Some(old) = self.workers.get(&id).map(|w| w.session) {
            self.actions.push_back(Action::Disconnect {
                session: old,
                reason: DisconnectReason::Superseded,
            });
            self.lose_worker(id);
        }
        let heartbeat_ms = u32::try_from(self.config.heartbeat.as_millis()).unwrap_or(u32::MAX);
        let welcome = Welcome {
            worker: id,
            heartbeat_ms,
            protocol_minor: PROTOCOL_MINOR,
        };
        self.actions.push_back(Action::Send {
            session,
            msg: ToWorker::Welcome(welcome),
        });
        let draining = self.drained.contains(&name);
        if draining {
            self.actions.push_back(Action::Send {
                session,
                msg: ToWorker::Drain,
            });
        }
        self.sessions.insert(session, id);
        let python = hello.capabilities & CAP_PYTHON != 0;
        let slots = hello.slots;
        let mut entry = WorkerEntry::new(session, name.clone(), address, hello, now);
        entry.draining = draining;
        if python {
            entry.engines = (0..slots).map(|slot| self.engine_id(&name, slot)).collect();
        }
        self.workers.insert(id, entry);
        let deadline = now + self.config.worker_timeout;
        self.silence_check = Some(self.silence_check.map_or(deadline, |t| t.min(deadline)));
    }

    /// The engine id of a slot of a named worker, given (and recorded) the first time.
    fn engine_id(&mut self, name: &str, slot: u16) -> EngineId {
        let key = (name.to_owned(), slot);
        if let Some(id) = self.engine_ids.get(&key) {
            return *id;
        }
        let id = EngineId(self.engine_ids.values().map(|e| e.0 + 1).max().unwrap_or(0));
        self.engine_ids.insert(key, id);
        self.actions
            .push_back(Action::Record(Record::EngineIdAssigned {
                name: name.to_owned(),
                slot,
                engine: id,
            }));
        id
    }

    /// Drains (`draining`) or undrains the worker named `who` (a name, or an id in decimal).
    /// Kept by name, so it holds across reconnects and (recorded) host restarts.
    pub(crate) fn set_draining(&mut self, who: &str, draining: bool) -> Result<(), String> {
        let name = if self.names.contains_key(who) {
            who.to_owned()
        } else {
            let id = who.parse::<u32>().ok().map(WorkerId);
            self.names
                .iter()
                .find(|(_, w)| Some(**w) == id)
                .map(|(n, _)| n.clone())
                .ok_or_else(|| format!("no worker {who:?} (a name or id from `bramble status`)"))?
        };
        let changed = if draining {
            self.drained.insert(name.clone())
        } else {
            self.drained.remove(&name)
        };
        if !changed {
            return Ok(());
        }
        self.actions.push_back(Action::Record(Record::DrainChanged {
            name: name.clone(),
            draining,
        }));
        if let Some(w) = self.workers.values_mut().find(|w| w.name == name) {
            w.draining = draining;
            let msg = if draining {
                ToWorker::Drain
            } else {
                ToWorker::Undrain
            };
            self.actions.push_back(Action::Send {
                session: w.session,
                msg,
            });
        }
        Ok(())
    }
}
