//! Following a job, without IO: the host's answers go in ([`Follow::handle`]), events come
//! out in the chosen order ([`Follow::poll_event`]). One cursor, the highest `seq` seen, is
//! both the deduplication (a result at or below it is a copy) and the point to resume from
//! after a lost connection ([`Follow::cursor`]). Results held back for input order stay here
//! across reconnects, so nothing is asked for twice.

use std::collections::{BTreeMap, VecDeque};

use bramble_wire::{EngineId, ItemOutput, ToClient, WorkerId};

/// The order results are given out in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// By item index: each result once it and every result before it are in.
    Input,
    /// As they were recorded.
    Completion,
}

/// One item's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemResult {
    /// Its position in the host's job store (commit order).
    pub seq: u64,
    /// The worker that produced it.
    pub worker: WorkerId,
    /// The Python engine that produced it.
    pub engine: Option<EngineId>,
    pub output: ItemOutput,
}

/// How a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobEnd {
    /// Every item has a result; `failed` of them did not succeed.
    Finished { failed: u64 },
    /// Cancelled before every item had a result.
    Cancelled,
}

/// What following a job yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobEvent {
    /// The job exists and will have `total` results (given once).
    Accepted { total: u64 },
    /// A result, in the chosen order, each index once.
    Item(ItemResult),
    /// What a running Python item printed, as it printed it (1 stdout, 2 stderr). Not
    /// resent after a reconnect: the item's result carries all of it.
    Output {
        index: u64,
        worker: WorkerId,
        engine: Option<EngineId>,
        stream: u8,
        data: Vec<u8>,
    },
    /// Something about the host worth saying while the job runs (its job store stopped
    /// being writable, or is again), in words.
    HostNote { message: String },
    /// The connection was lost (`reason`); reconnecting and resuming.
    Reconnecting { reason: String },
    /// The job ended; nothing follows.
    Ended(JobEnd),
}

/// See the module docs.
#[derive(Debug)]
pub struct Follow {
    order: Order,
    cursor: u64,
    total: Option<u64>,
    /// Input order: the next index to give out.
    next_index: u64,
    /// Input order: results waiting for an earlier index.
    held: BTreeMap<u64, ItemResult>,
    events: VecDeque<JobEvent>,
    ended: bool,
}

impl Follow {
    pub fn new(order: Order) -> Self {
        Self {
            order,
            cursor: 0,
            total: None,
            next_index: 0,
            held: BTreeMap::new(),
            events: VecDeque::new(),
            ended: false,
        }
    }

    /// The highest `seq` received: ask for results after it.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The job's number of results, once known.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// The job ended and every event about it was given out.
    pub fn is_done(&self) -> bool {
        self.ended && self.events.is_empty()
    }

    /// Takes one answer of the host; `Err` for an answer that does not belong to a results
    /// stream.
    pub fn handle(&mut self, msg: ToClient) -> Result<(), String> {
        match msg {
            ToClient::JobAccepted { total, .. } => {
                if self.total.is_none() {
                    self.total = Some(total);
                    self.events.push_back(JobEvent::Accepted { total });
                }
            }
            ToClient::ItemDone {
                seq,
                worker,
                engine,
                output,
                ..
            } => {
                if seq <= self.cursor || self.ended {
                    return Ok(()); // a copy of something already taken
                }
                self.cursor = seq;
                let item = ItemResult {
                    seq,
                    worker,
                    engine,
                    output,
                };
                match self.order {
                    Order::Completion => self.events.push_back(JobEvent::Item(item)),
                    Order::Input => {
                        self.held.insert(item.output.index, item);
                        while let Some(item) = self.held.remove(&self.next_index) {
                            self.events.push_back(JobEvent::Item(item));
                            self.next_index += 1;
                        }
                    }
                }
            }
            ToClient::Output {
                index,
                worker,
                engine,
                stream,
                data,
                ..
            } => {
                if !self.ended {
                    self.events.push_back(JobEvent::Output {
                        index,
                        worker,
                        engine,
                        stream,
                        data,
                    });
                }
            }
            ToClient::HostNote { message } => self.events.push_back(JobEvent::HostNote { message }),
            ToClient::JobFinished { failed, .. } => self.end(Some(JobEnd::Finished { failed })),
            ToClient::JobCancelled { .. } => self.end(Some(JobEnd::Cancelled)),
            other => return Err(format!("unexpected answer in a results stream: {other:?}")),
        }
        Ok(())
    }

    /// The stream ended without the job's end (a job still running, read without
    /// following): whatever is held back is given out, in index order.
    pub fn stream_ended(&mut self) {
        self.end(None);
    }

    /// Notes a lost connection, for the front end to show.
    pub fn reconnecting(&mut self, reason: String) {
        self.events.push_back(JobEvent::Reconnecting { reason });
    }

    fn end(&mut self, how: Option<JobEnd>) {
        if self.ended {
            return;
        }
        for (_, item) in std::mem::take(&mut self.held) {
            self.events.push_back(JobEvent::Item(item));
        }
        self.events.extend(how.map(JobEvent::Ended));
        self.ended = true;
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<JobEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::{JobId, Outcome};

    fn item(seq: u64, index: u64) -> ToClient {
        ToClient::ItemDone {
            job: JobId(1),
            seq,
            worker: WorkerId(0),
            engine: None,
            output: ItemOutput::ended(index, Outcome::Exited(0), 1),
        }
    }

    fn indices(f: &mut Follow) -> Vec<u64> {
        std::iter::from_fn(|| f.poll_event())
            .filter_map(|e| match e {
                JobEvent::Item(i) => Some(i.output.index),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn input_order_holds_back_until_the_gap_fills() {
        let mut f = Follow::new(Order::Input);
        f.handle(ToClient::JobAccepted {
            job: JobId(1),
            total: 4,
        })
        .unwrap();
        assert_eq!(f.poll_event(), Some(JobEvent::Accepted { total: 4 }));
        f.handle(item(1, 2)).unwrap();
        f.handle(item(2, 0)).unwrap();
        assert_eq!(indices(&mut f), [0]);
        f.handle(item(3, 1)).unwrap();
        f.handle(item(4, 3)).unwrap();
        assert_eq!(indices(&mut f), [1, 2, 3]);
        f.handle(ToClient::JobFinished {
            job: JobId(1),
            failed: 0,
        })
        .unwrap();
        assert_eq!(
            f.poll_event(),
            Some(JobEvent::Ended(JobEnd::Finished { failed: 0 }))
        );
        assert!(f.is_done());
    }

    #[test]
    fn a_resumed_stream_repeats_nothing() {
        // After a reconnect the host sends what comes after the cursor, and the accepted line
        // again; results it sends twice (stored and live) are dropped by seq.
        let mut f = Follow::new(Order::Completion);
        for msg in [
            ToClient::JobAccepted {
                job: JobId(1),
                total: 3,
            },
            item(5, 1),
            item(9, 0),
        ] {
            f.handle(msg).unwrap();
        }
        assert_eq!(f.cursor(), 9);
        let _ = indices(&mut f);
        for msg in [
            ToClient::JobAccepted {
                job: JobId(1),
                total: 3,
            },
            item(9, 0),
            item(12, 2),
            item(12, 2),
        ] {
            f.handle(msg).unwrap();
        }
        let events: Vec<JobEvent> = std::iter::from_fn(|| f.poll_event()).collect();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(f.cursor(), 12);
    }

    #[test]
    fn an_ended_or_cut_stream_gives_out_what_it_held() {
        let mut f = Follow::new(Order::Input);
        f.handle(item(1, 3)).unwrap();
        f.handle(item(2, 1)).unwrap();
        assert!(indices(&mut f).is_empty());
        f.stream_ended();
        assert_eq!(indices(&mut f), [1, 3]);
        assert!(f.is_done(), "no end event when the job still runs");
        let mut f = Follow::new(Order::Input);
        f.handle(item(1, 2)).unwrap();
        f.handle(ToClient::JobCancelled { job: JobId(1) }).unwrap();
        let events: Vec<JobEvent> = std::iter::from_fn(|| f.poll_event()).collect();
        assert!(matches!(
            events[..],
            [JobEvent::Item(_), JobEvent::Ended(JobEnd::Cancelled)]
        ));
        assert!(f.handle(ToClient::Done).is_err());
    }
}
