//! One client connection: every bidirectional stream is one request. Queries and job control
//! go to the driver; results and job lists are read from the store (the driver committed them
//! before anyone was told), then followed live. Jobs live on without their client.

use std::path::PathBuf;
use std::sync::Arc;

use bramble_net::{Budget, ReadError, write_frame};
use bramble_wire::{ClientRequest, JobId, JobSpec, JobState, ToClient, Work, close};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::driver::{Query, ToDriver, wall_ms};
use super::follow::{self, FollowRx};
use super::gate::Gate;
use crate::blobs::Blobs;
use crate::store::{Forget, Store, StoreError};

/// Stored results are sent in pages of this many.
const PAGE: u32 = 512;

/// A request whose sender sends nothing for this long, before it is all there, is dropped.
const IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// What a request handler needs.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) to_driver: mpsc::Sender<ToDriver>,
    pub(super) store_path: PathBuf,
    pub(super) gate: Arc<Gate>,
    pub(super) blobs: Blobs,
}

pub(super) async fn run(conn: quinn::Connection, name: String, ctx: Ctx, budget: Budget) {
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let (ctx, name, budget) = (ctx.clone(), name.clone(), budget.clone());
                tokio::spawn(async move { request(send, recv, &ctx, &name, &budget).await });
            }
            Err(e) => {
                debug!("client {name:?} gone: {e}");
                return;
            }
        }
    }
}

/// The client went away (or the stream failed): nothing more to send.
struct Gone;

/// One request stream: the request, its answers, the end of the stream.
struct Answer {
    send: quinn::SendStream,
    scratch: Vec<u8>,
}

impl Answer {
    async fn write(&mut self, msg: &ToClient) -> Result<(), Gone> {
        write_frame(&mut self.send, msg, &mut self.scratch)
            .await
            .map_err(|e| {
                debug!("answer not written: {e}");
                Gone
            })
    }

    async fn error(&mut self, message: impl Into<String>) -> Result<(), Gone> {
        self.write(&ToClient::Error {
            message: message.into(),
        })
        .await
    }
}

async fn request(
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: &Ctx,
    name: &str,
    budget: &Budget,
) {
    let mut answer = Answer {
        send,
        scratch: Vec::new(),
    };
    let answered = match bramble_net::read_one::<ClientRequest>(&mut recv, budget, IDLE).await {
        Ok(req) => serve(&mut answer, req, ctx, name).await,
        Err(ReadError::Stream(why)) => return debug!("request of client {name:?} lost: {why}"),
        Err(why @ ReadError::Idle(_)) => {
            warn!("dropping a request of client {name:?}: {why}");
            let _ = recv.stop(close::TIMEOUT.into());
            answer.error(format!("request incomplete: {why}")).await
        }
        Err(ReadError::Decode(why)) => {
            // Not a request of this protocol (a worker's Hello, garbage): say why and end
            // the stream, reading no more of it.
            let reason = match why {
                bramble_wire::DecodeError::Inflated(_) => format!("request refused: {why}"),
                _ => format!("not a client request: {why}"),
            };
            warn!("refused a request of client {name:?}: {reason}");
            let _ = recv.stop(close::PROTOCOL.into());
            answer.error(reason).await
        }
    };
    if answered.is_ok() {
        let _ = answer.send.finish();
    }
}

async fn serve(answer: &mut Answer, req: ClientRequest, ctx: &Ctx, name: &str) -> Result<(), Gone> {
    if let ClientRequest::Submit(spec) | ClientRequest::SubmitAndFollow(spec) = &req
        && let Some(message) = unstaged(&ctx.blobs, spec)
    {
        return answer.write(&ToClient::Error { message }).await;
    }
    let reply = match req {
        ClientRequest::Ids => {
            ask(ctx, |reply| ToDriver::Query {
                query: Query::Ids,
                reply,
            })
            .await
        }
        ClientRequest::Status => {
            ask(ctx, |reply| ToDriver::Query {
                query: Query::Status,
                reply,
            })
            .await
        }
        ClientRequest::Engines => {
            ask(ctx, |reply| ToDriver::Query {
                query: Query::Engines,
                reply,
            })
            .await
        }
        ClientRequest::Health => {
            ask(ctx, |reply| ToDriver::Query {
                query: Query::Health,
                reply,
            })
            .await
        }
        ClientRequest::MissingBlobs(list) => {
            let blobs = ctx.blobs.clone();
            ToClient::MissingBlobs(list.into_iter().filter(|s| !blobs.has(s)).collect())
        }
        ClientRequest::PutBlob {
            sha256,
            offset,
            total,
            data,
        } => {
            let blobs = ctx.blobs.clone();
            let put =
                tokio::task::spawn_blocking(move || blobs.put(&sha256, offset, total, &data)).await;
            match put {
                Ok(Ok(())) => ToClient::Done,
                Ok(Err(message)) => ToClient::Error { message },
                Err(e) => ToClient::Error {
                    message: format!("storing a staged file failed: {e}"),
                },
            }
        }
        ClientRequest::Submit(spec) => {
            ask(ctx, |reply| ToDriver::Submit {
                spec,
                reply,
                watch: None,
            })
            .await
        }
        ClientRequest::SubmitAndFollow(spec) => {
            return submit_and_follow(answer, ctx, name, spec).await;
        }
        ClientRequest::Cancel { job } => {
            let soon = false;
            ask(ctx, |reply| ToDriver::Cancel { job, soon, reply }).await
        }
        ClientRequest::WindDown { job } => {
            let soon = true;
            ask(ctx, |reply| ToDriver::Cancel { job, soon, reply }).await
        }
        ClientRequest::Forget { jobs } => {
            info!("client {name:?} forgets jobs {jobs:?}");
            let what = Forget::Jobs(jobs);
            ask(ctx, |reply| ToDriver::Forget { what, reply }).await
        }
        ClientRequest::NameJob { job, name } => {
            ask(ctx, |reply| ToDriver::NameJob { job, name, reply }).await
        }
        ClientRequest::JobNames => match Reader::open(ctx).await {
            Ok(mut reader) => reader
                .read(|s| s.job_names().map(ToClient::JobNames))
                .await
                .unwrap_or_else(|message| ToClient::Error { message }),
            Err(message) => ToClient::Error { message },
        },
        ClientRequest::Prune {
            older_than_ms,
            keep,
        } => {
            let what = Forget::Prune {
                older_than_ms,
                keep,
            };
            ask(ctx, |reply| ToDriver::Forget { what, reply }).await
        }
        ClientRequest::Drain { worker } => drain(ctx, name, worker, true).await,
        ClientRequest::Undrain { worker } => drain(ctx, name, worker, false).await,
        ClientRequest::Jobs => match Reader::open(ctx).await {
            Ok(mut reader) => reader
                .read(|s| s.jobs(wall_ms()).map(ToClient::Jobs))
                .await
                .unwrap_or_else(|message| ToClient::Error { message }),
            Err(message) => ToClient::Error { message },
        },
        ClientRequest::Results { job, after, follow } => {
            return results(answer, ctx, name, job, after, follow).await;
        }
        ClientRequest::Wait { job } => return wait(answer, ctx, job).await,
        ClientRequest::Refusals => ToClient::Refusals(ctx.gate.refusals()),
        ClientRequest::History { within_ms } => {
            let within = std::time::Duration::from_millis(within_ms);
            ask(ctx, |reply| ToDriver::Query {
                query: Query::History { within },
                reply,
            })
            .await
        }
        ClientRequest::Revoke { name: revoked } => {
            info!("client {name:?} revoked {revoked:?}");
            match ctx.gate.revoke(&revoked) {
                Ok(()) => ToClient::Done,
                Err(e) => ToClient::Error {
                    message: format!("cannot write revoked.txt: {e}"),
                },
            }
        }
    };
    answer.write(&reply).await
}

/// A staged file of the job the host does not have, in words (clients put them first).
fn unstaged(blobs: &Blobs, spec: &JobSpec) -> Option<String> {
    let Work::StagedCommand(staged) = &spec.work else {
        return None;
    };
    let f = staged.files.iter().find(|f| !blobs.has(&f.sha256))?;
    Some(format!(
        "staged file {} ({}) is not on the host: put it first",
        f.path,
        crate::blobs::hex(&f.sha256)
    ))
}

async fn ask(ctx: &Ctx, make: impl FnOnce(oneshot::Sender<ToClient>) -> ToDriver) -> ToClient {
    let (reply, rx) = oneshot::channel();
    if ctx.to_driver.send(make(reply)).await.is_err() {
        return shutting_down();
    }
    rx.await.unwrap_or_else(|_| shutting_down())
}

async fn drain(ctx: &Ctx, client: &str, worker: String, draining: bool) -> ToClient {
    let verb = if draining { "drained" } else { "undrained" };
    info!("client {client:?} {verb} worker {worker:?}");
    ask(ctx, |reply| ToDriver::Drain {
        worker,
        draining,
        reply,
    })
    .await
}

fn shutting_down() -> ToClient {
    ToClient::Error {
        message: "host shutting down".into(),
    }
}

/// A read-only store connection for one request, used on the blocking pool.
struct Reader(Option<Store>);

impl Reader {
    async fn open(ctx: &Ctx) -> Result<Self, String> {
        let path = ctx.store_path.clone();
        match tokio::task::spawn_blocking(move || Store::open_read(&path)).await {
            Ok(Ok(store)) => Ok(Self(Some(store))),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("store reader failed: {e}")),
        }
    }

    /// Runs `f` on the connection, off the async threads.
    async fn read<T, F>(&mut self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.0.take().ok_or("store reader failed earlier")?;
        let (store, result) = tokio::task::spawn_blocking(move || {
            let result = f(&store);
            (store, result)
        })
        .await
        .map_err(|e| format!("store reader failed: {e}"))?;
        self.0 = Some(store);
        result.map_err(|e| e.to_string())
    }

    /// How a job that is not running ended; `None` if it is still running.
    async fn ending(&mut self, job: JobId) -> ToClient {
        match self.read(move |s| s.job(job, wall_ms())).await {
            Ok(Some(j)) => match j.state {
                JobState::Done => ToClient::JobFinished {
                    job,
                    failed: j.failed,
                },
                JobState::Cancelled => ToClient::JobCancelled { job },
                JobState::Running => ToClient::Error {
                    message: format!("job {job} is still running"),
                },
            },
            Ok(None) => ToClient::Error {
                message: format!("no job {job}"),
            },
            Err(message) => ToClient::Error { message },
        }
    }
}

/// Registers a watcher (after the driver's next commit) and reports whether the job runs.
async fn watch(ctx: &Ctx, job: JobId, items: bool) -> Option<(bool, FollowRx)> {
    let (tx, rx) = follow::channel();
    let (reply, running) = oneshot::channel();
    ctx.to_driver
        .send(ToDriver::Watch {
            job,
            items,
            tx,
            reply,
        })
        .await
        .ok()?;
    Some((running.await.ok()?, rx))
}

/// `JobAccepted` (with the total), stored results with `seq` > `after` in `seq` order, then
/// (following a running job) live ones, each `seq` once, then how the job ended.
async fn results(
    answer: &mut Answer,
    ctx: &Ctx,
    client: &str,
    job: JobId,
    after: u64,
    follow: bool,
) -> Result<(), Gone> {
    catch_up(answer, ctx, client, job, after, follow, true).await
}

/// Stored results after `cursor` (announced with `JobAccepted` first if `announce`), then, if
/// `follow`ing a running job, live ones; a follower that falls behind the live results comes
/// back here and catches up from the store again.
async fn catch_up(
    answer: &mut Answer,
    ctx: &Ctx,
    client: &str,
    job: JobId,
    mut cursor: u64,
    follow: bool,
    mut announce: bool,
) -> Result<(), Gone> {
    loop {
        // Watch first: the store then holds everything before, the watcher everything after
        // (and perhaps some of the same, which the cursor skips).
        let Some((running, live)) = watch(ctx, job, follow).await else {
            return answer.write(&shutting_down()).await;
        };
        let mut reader = match Reader::open(ctx).await {
            Ok(r) => r,
            Err(message) => return answer.error(message).await,
        };
        if announce {
            let total = match reader.read(move |s| s.job(job, wall_ms())).await {
                Ok(Some(j)) => j.total,
                Ok(None) => return answer.error(format!("no job {job}")).await,
                Err(message) => return answer.error(message).await,
            };
            answer.write(&ToClient::JobAccepted { job, total }).await?;
            announce = false;
        }
        let from = cursor;
        let mut stored = 0u64;
        loop {
            let after = cursor;
            let rows = match reader.read(move |s| s.results(job, after, PAGE)).await {
                Ok(rows) => rows,
                Err(message) => return answer.error(message).await,
            };
            let full = rows.len() == PAGE as usize;
            for r in rows {
                cursor = r.seq;
                stored += 1;
                let msg = ToClient::ItemDone {
                    job,
                    seq: r.seq,
                    worker: r.worker,
                    engine: r.engine,
                    output: r.output,
                };
                answer.write(&msg).await?;
            }
            if !full {
                break;
            }
        }
        info!("client {client:?}: job {job}, {stored} stored results after seq {from}");
        if !(follow && running) {
            // Not following, or already over: end with how it ended (nothing if still running).
            return match reader.ending(job).await {
                ToClient::Error { .. } if running => Ok(()),
                end => answer.write(&end).await,
            };
        }
        drop(reader);
        match forward_live(answer, live, cursor).await? {
            Live::Ended => return Ok(()),
            Live::LetGo(at) => cursor = at,
        }
    }
}

/// How following live results ended.
enum Live {
    /// With how the job ended.
    Ended,
    /// The driver let go of this follower (too far behind, or the job ended while it was):
    /// carry on from the store after this `seq`.
    LetGo(u64),
}

/// Passes a followed job's live events on (results with `seq` above `cursor`, output, notes),
/// then how it ended.
async fn forward_live(
    answer: &mut Answer,
    mut live: FollowRx,
    mut cursor: u64,
) -> Result<Live, Gone> {
    loop {
        let msg = tokio::select! {
            msg = live.recv() => msg,
            _ = answer.send.stopped() => return Err(Gone),
        };
        match msg {
            Some(ToClient::ItemDone { seq, .. }) if seq <= cursor => {}
            Some(msg @ ToClient::ItemDone { seq, .. }) => {
                cursor = seq;
                answer.write(&msg).await?;
            }
            Some(msg @ (ToClient::Output { .. } | ToClient::HostNote { .. })) => {
                answer.write(&msg).await?
            }
            Some(end) => return answer.write(&end).await.map(|()| Live::Ended),
            None => return Ok(Live::LetGo(cursor)),
        }
    }
}

/// Submits a job and streams its events live from its acceptance (nothing is stored yet, so
/// nothing is read from the store unless this follower falls behind).
async fn submit_and_follow(
    answer: &mut Answer,
    ctx: &Ctx,
    client: &str,
    spec: JobSpec,
) -> Result<(), Gone> {
    let (tx, live) = follow::channel();
    let accepted = ask(ctx, |reply| ToDriver::Submit {
        spec,
        reply,
        watch: Some(tx),
    })
    .await;
    let ToClient::JobAccepted { job, .. } = accepted else {
        return answer.write(&accepted).await; // refused: nothing to follow
    };
    answer.write(&accepted).await?;
    match forward_live(answer, live, 0).await? {
        Live::Ended => Ok(()),
        Live::LetGo(cursor) => catch_up(answer, ctx, client, job, cursor, true, false).await,
    }
}

/// Answers once the job has ended.
async fn wait(answer: &mut Answer, ctx: &Ctx, job: JobId) -> Result<(), Gone> {
    let Some((running, mut live)) = watch(ctx, job, false).await else {
        return answer.write(&shutting_down()).await;
    };
    if running {
        tokio::select! {
            msg = live.recv() => if let Some(end) = msg {
                return answer.write(&end).await;
            },
            _ = answer.send.stopped() => return Err(Gone),
        }
    }
    let end = match Reader::open(ctx).await {
        Ok(mut reader) => reader.ending(job).await,
        Err(message) => ToClient::Error { message },
    };
    answer.write(&end).await
}
