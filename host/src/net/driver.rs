//! The driver: the one task that owns the [`Scheduler`] and the job store's writer. It feeds
//! peer messages and deadlines to the scheduler in batches, commits the batch's records in
//! one transaction, and only then sends frames, answers and results: the host writes before
//! it acknowledges.
//!
//! It runs on a thread of its own, in a single-threaded runtime ([`spawn`]): a commit blocks
//! only that thread, with no hand-off of a runtime worker per batch, and the scheduler's
//! allocations stay in one malloc arena (spread over the runtime's threads, glibc's arenas
//! kept growing the host to four times its heap).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bramble_sched::{Action, DisconnectReason, Event, Record, RequestId, Scheduler, SessionId};
use bramble_wire::{HostHealth, JobId, JobSpec, JobState, ToClient, ToWorker, close};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::follow::FollowTx;
use super::metrics::Counters;
use crate::store::{Forget, Store};

/// Messages handled per batch at most, so a flood cannot starve the flush.
const BATCH: usize = 512;
/// With this many workers or more, a placement pass that took at least [`GATHER_AFTER`] is
/// followed by a pause as long, in which events are gathered, not flushed: a pass costs
/// O(workers), and this keeps it to at most half of the driver's time however few events
/// each would carry (1,000 workers, 5,000 tasks: 8,700 tasks a second without, 11,100 with). A
/// small rack's passes are long only when they cut many tasks, which is work, not overhead:
/// pausing after them cost 10 workers a quarter of their rate, and pausing after long store
/// commits half.
const GATHER_FROM: usize = 128;
const GATHER_AFTER: Duration = Duration::from_micros(100);

/// While writing the job store fails, it is tried again this often.
const RETRY: Duration = Duration::from_secs(1);

/// A failing write is logged again this often while it keeps failing.
const LOG_AGAIN: Duration = Duration::from_secs(60);

/// What a worker connection task is told to do.
#[derive(Debug)]
pub(crate) enum PeerCmd {
    Send(ToWorker),
    Close { code: u32, reason: String },
}

/// A read-only question answered from the scheduler's state.
#[derive(Debug)]
pub(crate) enum Query {
    Ids,
    Status,
    Engines,
    Health,
    History { within: Duration },
}

/// Messages to the driver.
// Events are most of the traffic and move once through the channel; boxing the large one
// would allocate per message for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum ToDriver {
    /// A scheduler event from a worker connection.
    Event(Event),
    /// A worker session's outbound channel; sent before its `WorkerConnected`.
    WorkerOpened {
        session: SessionId,
        tx: mpsc::UnboundedSender<PeerCmd>,
    },
    Query {
        query: Query,
        reply: oneshot::Sender<ToClient>,
    },
    Submit {
        spec: JobSpec,
        reply: oneshot::Sender<ToClient>,
        /// `SubmitAndFollow`: watch the job from the moment it is accepted.
        watch: Option<FollowTx>,
    },
    Cancel {
        job: JobId,
        /// Wind it down instead (`--halt soon`).
        soon: bool,
        reply: oneshot::Sender<ToClient>,
    },
    /// `forget`, `prune`: the store's writer removes ended jobs.
    Forget {
        what: Forget,
        reply: oneshot::Sender<ToClient>,
    },
    /// `serve --metrics`: the page, as text.
    Metrics { reply: oneshot::Sender<String> },
    /// `--name`: the store's writer names a job.
    NameJob {
        job: JobId,
        name: String,
        reply: oneshot::Sender<ToClient>,
    },
    Drain {
        worker: String,
        draining: bool,
        reply: oneshot::Sender<ToClient>,
    },
    /// Stream the job's results (`items`) and its end to `tx`. Answered after the current
    /// batch is committed: `true` if the job is running (so the store holds everything up to
    /// now and `tx` gets everything after), `false` if it is not.
    Watch {
        job: JobId,
        items: bool,
        tx: FollowTx,
        reply: oneshot::Sender<bool>,
    },
}

struct Watcher {
    items: bool,
    tx: FollowTx,
}

/// Writing the job store fails: since when, why, and when to try and to log again.
struct Stall {
    since: Instant,
    error: String,
    retry_at: Instant,
    logged_at: Instant,
}

/// The driver's state besides the scheduler.
struct Driver {
    sched: Scheduler,
    store: Store,
    store_path: PathBuf,
    /// What the scheduler asked for and the store has not written yet: carried out in order
    /// once it is (empty between batches while writing works).
    unwritten: Vec<Action>,
    stall: Option<Stall>,
    // Unbounded channels: what goes to a worker is bounded by its slots (the scheduler never
    // places more); what goes to a watcher is bounded in bytes (`follow`).
    workers: BTreeMap<SessionId, mpsc::UnboundedSender<PeerCmd>>,
    pending: BTreeMap<RequestId, oneshot::Sender<ToClient>>,
    watchers: BTreeMap<JobId, Vec<Watcher>>,
    deferred: Vec<(JobId, bool, FollowTx, oneshot::Sender<bool>)>,
    /// Submits that follow their job: the watcher starts with the job's acceptance.
    watched_submits: BTreeMap<RequestId, FollowTx>,
    /// For `serve --metrics`.
    counters: Counters,
    next_request: u64,
}

/// A running driver: [`Running::stop`] ends it between two batches.
pub(crate) struct Running {
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Running {
    /// Stops the driver after its current batch and waits for it.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
    }
}

/// Starts the driver on its own thread.
pub(crate) fn spawn(
    sched: Scheduler,
    store: Store,
    store_path: PathBuf,
    rx: mpsc::Receiver<ToDriver>,
) -> std::io::Result<Running> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("bramble-driver".into())
        .spawn(move || runtime.block_on(run(sched, store, store_path, rx, stopped)))?;
    Ok(Running { stop, thread })
}

/// Runs until every sender is gone or `stop` fires.
async fn run(
    sched: Scheduler,
    store: Store,
    store_path: PathBuf,
    mut rx: mpsc::Receiver<ToDriver>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut d = Driver {
        sched,
        store,
        store_path,
        unwritten: Vec::new(),
        stall: None,
        workers: BTreeMap::new(),
        pending: BTreeMap::new(),
        watchers: BTreeMap::new(),
        deferred: Vec::new(),
        watched_submits: BTreeMap::new(),
        counters: Counters::default(),
        next_request: 1,
    };
    // Jobs resumed from the store may have tasks to place as soon as workers join; a
    // resumed job with nothing left ends now.
    let _ = d.flush();
    // After a long flush, the next one waits as long again, gathering what arrives meanwhile.
    let mut gather_until: Option<Instant> = None;
    loop {
        let deadline = d.sched.poll_timeout();
        let retry = d.stall.as_ref().map(|s| s.retry_at);
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => d.handle(msg),
                None => return,
            },
            () = sleep_until(deadline) => d.sched.handle_timeout(now()),
            () = sleep_until(retry) => {}
            () = sleep_until(gather_until) => {}
            _ = &mut stop => return,
        }
        for _ in 0..BATCH {
            match rx.try_recv() {
                Ok(msg) => d.handle(msg),
                Err(_) => break,
            }
        }
        if gather_until.is_some_and(|t| now() < t) {
            continue;
        }
        let pass = d.flush();
        let big = d.sched.worker_count() >= GATHER_FROM;
        gather_until = (big && pass >= GATHER_AFTER).then(|| now() + pass);
    }
}

impl Driver {
    fn handle(&mut self, msg: ToDriver) {
        match msg {
            ToDriver::Event(ev) => {
                if let Event::WorkerDisconnected { session } = &ev {
                    self.workers.remove(session);
                }
                self.sched.handle(now(), ev);
            }
            ToDriver::WorkerOpened { session, tx } => {
                self.workers.insert(session, tx);
            }
            ToDriver::Query { query, reply } => {
                let answer = match query {
                    Query::Ids => ToClient::Ids(self.sched.ids()),
                    Query::Status => ToClient::Status(self.sched.status(now())),
                    Query::Engines => ToClient::Engines(self.sched.engines()),
                    Query::Health => ToClient::Health(self.health()),
                    Query::History { within } => {
                        ToClient::History(self.sched.history(now(), within))
                    }
                };
                let _ = reply.send(answer);
            }
            ToDriver::Submit { spec, reply, watch } => {
                if let Some(stall) = &self.stall {
                    // Nothing new while the store refuses what is already running.
                    let message = format!(
                        "not accepting jobs: the host cannot write its job store ({}): {}",
                        self.store_path.display(),
                        stall.error
                    );
                    let _ = reply.send(ToClient::Error { message });
                    return;
                }
                let request = self.request(reply);
                if let Some(tx) = watch {
                    self.watched_submits.insert(request, tx);
                }
                self.sched
                    .handle(now(), Event::JobSubmitted { request, spec });
            }
            ToDriver::Forget { what, reply } => {
                let answer = match self.store.forget(&what, wall_ms()) {
                    Ok(Ok(jobs)) => {
                        info!("forgot {} job(s)", jobs.len());
                        ToClient::Forgotten(jobs)
                    }
                    Ok(Err(message)) => ToClient::Error { message },
                    Err(e) => ToClient::Error {
                        message: e.to_string(),
                    },
                };
                let _ = reply.send(answer);
            }
            ToDriver::Metrics { reply } => {
                let text = super::metrics::render(&self.sched.status(now()), &self.counters);
                let _ = reply.send(text);
            }
            ToDriver::NameJob { job, name, reply } => {
                let answer = match self.store.name_job(job, &name) {
                    Ok(Ok(())) => ToClient::Done,
                    Ok(Err(message)) => ToClient::Error { message },
                    Err(e) => ToClient::Error {
                        message: e.to_string(),
                    },
                };
                let _ = reply.send(answer);
            }
            ToDriver::Cancel { job, soon, reply } => {
                let request = self.request(reply);
                self.sched
                    .handle(now(), Event::CancelRequested { request, job, soon });
            }
            ToDriver::Drain {
                worker,
                draining,
                reply,
            } => {
                let request = self.request(reply);
                let event = Event::DrainRequested {
                    request,
                    worker,
                    draining,
                };
                self.sched.handle(now(), event);
            }
            ToDriver::Watch {
                job,
                items,
                tx,
                reply,
            } => {
                if let (Some(stall), true) = (&self.stall, items) {
                    let message = self.stall_message(stall);
                    let _ = tx.send(ToClient::HostNote { message });
                }
                self.deferred.push((job, items, tx, reply));
            }
        }
    }

    fn request(&mut self, reply: oneshot::Sender<ToClient>) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.pending.insert(id, reply);
        id
    }

    /// Commits the records of everything handled so far, then carries out the rest. If the
    /// store refuses, nothing is carried out (no acknowledgement, answer or result leaves the
    /// host) and the batch waits, growing with what follows, until a write succeeds.
    /// Places, records and carries out what the handled events led to; returns how long the
    /// placement pass took.
    fn flush(&mut self) -> Duration {
        let started = now();
        self.unwritten
            .extend(std::iter::from_fn(|| self.sched.poll_action()));
        let pass = started.elapsed();
        self.counters.passes += 1;
        self.counters.pass_seconds += pass.as_secs_f64();
        let now = now();
        if self.stall.as_ref().is_some_and(|s| now < s.retry_at) {
            return pass;
        }
        let records = self.unwritten.iter().filter_map(|a| match a {
            Action::Record(r) => Some(r),
            _ => None,
        });
        let mut seqs = Vec::new().into_iter();
        if records.clone().next().is_some() {
            match self.store.apply(records, wall_ms()) {
                Ok(written) => seqs = written.into_iter(),
                Err(e) => {
                    self.stalled(now, e.to_string());
                    return pass;
                }
            }
        }
        if let Some(stall) = self.stall.take() {
            let message = format!(
                "the job store is writable again after {} s; carrying on",
                stall.since.elapsed().as_secs()
            );
            info!("{message}");
            self.note(&message);
        }
        for action in std::mem::take(&mut self.unwritten) {
            let seq = match &action {
                Action::Record(Record::ResultRecorded { .. }) => seqs.next().flatten(),
                _ => None,
            };
            self.carry_out(action, seq);
        }
        for (job, items, tx, reply) in std::mem::take(&mut self.deferred) {
            let running = self.sched.is_running(job);
            if running {
                self.watchers
                    .entry(job)
                    .or_default()
                    .push(Watcher { items, tx });
            }
            let _ = reply.send(running);
        }
        pass
    }

    /// A write failed: hold everything, say so (once to followers, now and then in the log)
    /// and try again in a moment.
    fn stalled(&mut self, now: Instant, error: String) {
        let retry_at = now + RETRY;
        match &mut self.stall {
            Some(stall) => {
                if now.duration_since(stall.logged_at) >= LOG_AGAIN {
                    warn!(
                        "still cannot write the job store after {} s: {error}",
                        now.duration_since(stall.since).as_secs()
                    );
                    stall.logged_at = now;
                }
                stall.error = error;
                stall.retry_at = retry_at;
            }
            None => {
                let stall = Stall {
                    since: now,
                    error,
                    retry_at,
                    logged_at: now,
                };
                let message = self.stall_message(&stall);
                error!("{message}");
                self.note(&message);
                self.stall = Some(stall);
            }
        }
    }

    fn stall_message(&self, stall: &Stall) -> String {
        format!(
            "the host cannot write its job store ({}): {}. Nothing is lost: results wait, \
             unacknowledged, until it can; free space there and it carries on by itself",
            self.store_path.display(),
            stall.error
        )
    }

    /// Tells everyone following a job's items about the host (also those waiting for the
    /// store to catch up before they follow).
    fn note(&mut self, message: &str) {
        let msg = ToClient::HostNote {
            message: message.to_owned(),
        };
        for ws in self.watchers.values_mut() {
            ws.retain(|w| !w.items || w.tx.send(msg.clone()));
        }
        for (_, items, tx, _) in &self.deferred {
            if *items {
                let _ = tx.send(msg.clone());
            }
        }
    }

    fn health(&self) -> HostHealth {
        let dir = self.store_path.parent().unwrap_or(&self.store_path);
        HostHealth {
            store: self.store_path.display().to_string(),
            store_free_bytes: free_bytes(dir),
            store_error: self.stall.as_ref().map(|s| s.error.clone()),
            stalled_ms: self.stall.as_ref().map_or(0, |s| {
                u64::try_from(s.since.elapsed().as_millis()).unwrap_or(u64::MAX)
            }),
        }
    }

    /// Sends `msg` to the job's watchers that follow its items.
    fn tell(&mut self, job: JobId, msg: &ToClient) {
        if let Some(ws) = self.watchers.get_mut(&job) {
            ws.retain(|w| !w.items || w.tx.send(msg.clone()));
        }
    }

    /// `seq`: where the store put the result of a `ResultRecorded` (none for a copy).
    fn carry_out(&mut self, action: Action, seq: Option<u64>) {
        match action {
            Action::Send { session, msg } => {
                if let Some(tx) = self.workers.get(&session) {
                    let _ = tx.send(PeerCmd::Send(msg));
                }
            }
            Action::Disconnect { session, reason } => {
                if let Some(tx) = self.workers.remove(&session) {
                    info!("disconnecting session {}: {reason}", session.0);
                    let code = match reason {
                        DisconnectReason::Rejected(_) => close::REJECTED,
                        DisconnectReason::HeartbeatTimeout(_) => close::TIMEOUT,
                        DisconnectReason::Superseded => close::SUPERSEDED,
                    };
                    let _ = tx.send(PeerCmd::Close {
                        code,
                        reason: reason.to_string(),
                    });
                }
            }
            Action::Reply { request, msg } => {
                // A followed submit watches its job before anything else of the job (even in
                // this batch: an empty job ends at once) is carried out.
                if let (Some(tx), ToClient::JobAccepted { job, .. }) =
                    (self.watched_submits.remove(&request), &msg)
                {
                    let watcher = Watcher { items: true, tx };
                    self.watchers.entry(*job).or_default().push(watcher);
                }
                if let Some(reply) = self.pending.remove(&request) {
                    let _ = reply.send(msg);
                }
            }
            Action::Record(Record::ResultRecorded {
                job,
                worker,
                engine,
                output,
            }) => {
                *self
                    .counters
                    .results
                    .entry(output.outcome.word())
                    .or_default() += 1;
                if !output.outcome.is_success() {
                    self.counters.failed += 1;
                }
                if let Some(seq) = seq {
                    let msg = ToClient::ItemDone {
                        job,
                        seq,
                        worker,
                        engine,
                        output,
                    };
                    self.tell(job, &msg);
                }
            }
            Action::Tell { job, msg } => self.tell(job, &msg),
            Action::Record(Record::JobEnded { job, state, failed }) => {
                let msg = match state {
                    JobState::Cancelled => ToClient::JobCancelled { job },
                    JobState::Done | JobState::Running => ToClient::JobFinished { job, failed },
                };
                for w in self.watchers.remove(&job).unwrap_or_default() {
                    let _ = w.tx.send(msg.clone());
                }
                let word = match state {
                    JobState::Cancelled => "cancelled",
                    JobState::Done | JobState::Running => "done",
                };
                *self.counters.jobs.entry(word).or_default() += 1;
                info!("job {job} ended: {state:?}, {failed} failed");
            }
            Action::Record(Record::IdAssigned { worker, name }) => {
                info!("worker {name:?} is id {worker}")
            }
            Action::Record(_) => {}
        }
    }
}

/// The driver's clock. Only IO code reads clocks; the scheduler gets `now` passed in.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Bytes free to unprivileged users on the filesystem holding `dir`.
pub(crate) fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Wall-clock milliseconds for the store's timestamps.
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
