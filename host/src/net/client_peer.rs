//! One client connection: every bidirectional stream is one request. Queries and job control
//! go to the driver; results and job lists are read from the store (the driver committed them
//! before anyone was told), then followed live. Jobs live on without their client.

use std::path::PathBuf;
use std::sync::Arc;

use bramble_wire::codec::encode_frame;
use bramble_wire::{ClientRequest, FrameDecoder, JobId, JobState, MAX_FRAME_LEN, ToClient};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::driver::{Query, ToDriver, wall_ms};
use super::revoke::Revocations;
use crate::index_set::IndexSet;
use crate::store::{Store, StoreError};

/// Stored results are sent in pages of this many.
const PAGE: u32 = 512;

/// What a request handler needs.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) to_driver: mpsc::Sender<ToDriver>,
    pub(super) store_path: PathBuf,
    pub(super) revocations: Arc<Revocations>,
}

pub(super) async fn run(conn: quinn::Connection, name: String, ctx: Ctx) {
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(request(send, recv, ctx.clone(), name.clone()));
            }
            Err(e) => {
                debug!("client {name:?} gone: {e}");
                return;
            }
        }
    }
}

struct Gone;

async fn request(mut send: quinn::SendStream, mut recv: quinn::RecvStream, ctx: Ctx, name: String) {
    let answered = match read_request(&mut recv).await {
        Ok(req) => serve(&mut send, req, &ctx, &name).await,
        Err(why) => {
            warn!("bad request from client {name:?}: {why}");
            write(&mut send, &ToClient::Error { message: why }).await
        }
    };
    if answered.is_ok() {
        let _ = send.finish();
    }
}

async fn serve(
    send: &mut quinn::SendStream,
    req: ClientRequest,
    ctx: &Ctx,
    name: &str,
) -> Result<(), Gone> {
    let answer = match req {
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
        ClientRequest::Submit(spec) => ask(ctx, |reply| ToDriver::Submit { spec, reply }).await,
        ClientRequest::Cancel { job } => ask(ctx, |reply| ToDriver::Cancel { job, reply }).await,
        ClientRequest::Jobs => read_store(ctx, |s| s.jobs(wall_ms()).map(ToClient::Jobs)).await,
        ClientRequest::Results { job, from, follow } => {
            return results(send, ctx, job, from, follow).await;
        }
        ClientRequest::Wait { job } => return wait(send, ctx, job).await,
        ClientRequest::Revoke { name: revoked } => {
            info!("client {name:?} revoked {revoked:?}");
            match ctx.revocations.revoke(&revoked) {
                Ok(()) => ToClient::Done,
                Err(e) => ToClient::Error {
                    message: format!("cannot write revoked.txt: {e}"),
                },
            }
        }
    };
    write(send, &answer).await
}

async fn ask(ctx: &Ctx, make: impl FnOnce(oneshot::Sender<ToClient>) -> ToDriver) -> ToClient {
    let (reply, rx) = oneshot::channel();
    if ctx.to_driver.send(make(reply)).await.is_err() {
        return ToClient::Error {
            message: "host shutting down".into(),
        };
    }
    rx.await.unwrap_or(ToClient::Error {
        message: "host shutting down".into(),
    })
}

/// Runs a store read on the blocking pool with its own read-only connection.
async fn query_store<T, F>(ctx: &Ctx, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
{
    let path = ctx.store_path.clone();
    match tokio::task::spawn_blocking(move || Store::open_read(&path).and_then(|s| f(&s))).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("store reader failed: {e}")),
    }
}

async fn read_store<F>(ctx: &Ctx, f: F) -> ToClient
where
    F: FnOnce(&Store) -> Result<ToClient, StoreError> + Send + 'static,
{
    query_store(ctx, f)
        .await
        .unwrap_or_else(|message| ToClient::Error { message })
}

/// Registers a watcher (after the driver's next commit) and reports whether the job runs.
async fn watch(
    ctx: &Ctx,
    job: JobId,
    items: bool,
) -> Option<(bool, mpsc::UnboundedReceiver<ToClient>)> {
    let (tx, rx) = mpsc::unbounded_channel();
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

/// How a job that is not running ended, from the store; `None` if it is still running.
async fn ending(ctx: &Ctx, job: JobId) -> Option<ToClient> {
    let summary = query_store(ctx, move |s| s.job(job, wall_ms())).await;
    match summary {
        Ok(Some(j)) => match j.state {
            JobState::Done => Some(ToClient::JobFinished {
                job,
                failed: j.failed,
            }),
            JobState::Cancelled => Some(ToClient::JobCancelled { job }),
            JobState::Running => None,
        },
        Ok(None) => Some(ToClient::Error {
            message: format!("no job {job}"),
        }),
        Err(message) => Some(ToClient::Error { message }),
    }
}

/// `JobAccepted` (with the total), stored results ≥ `from` in index order, then (following
/// a running job) live ones in completion order, each index once, then how the job ended.
async fn results(
    send: &mut quinn::SendStream,
    ctx: &Ctx,
    job: JobId,
    from: u64,
    follow: bool,
) -> Result<(), Gone> {
    // Watch first: the store then holds everything before, the watcher everything after.
    let Some((running, mut live)) = watch(ctx, job, follow).await else {
        return write(
            send,
            &ToClient::Error {
                message: "host shutting down".into(),
            },
        )
        .await;
    };
    let total = match query_store(ctx, move |s| s.job(job, wall_ms())).await {
        Ok(Some(j)) => j.total,
        Ok(None) => {
            return write(
                send,
                &ToClient::Error {
                    message: format!("no job {job}"),
                },
            )
            .await;
        }
        Err(message) => return write(send, &ToClient::Error { message }).await,
    };
    write(send, &ToClient::JobAccepted { job, total }).await?;
    let mut sent = IndexSet::default();
    let mut next = from;
    loop {
        let rows = match query_store(ctx, move |s| s.results(job, next, PAGE)).await {
            Ok(rows) => rows,
            Err(message) => return write(send, &ToClient::Error { message }).await,
        };
        let full = rows.len() == PAGE as usize;
        for (worker, output) in rows {
            next = output.index + 1;
            sent.insert(output.index);
            write(
                send,
                &ToClient::ItemDone {
                    job,
                    worker,
                    output,
                },
            )
            .await?;
        }
        if !full {
            break;
        }
    }
    if !(follow && running) {
        // Not following, or already over: end with how it ended (nothing if still running).
        return match ending(ctx, job).await {
            Some(end) => write(send, &end).await,
            None => Ok(()),
        };
    }
    loop {
        let msg = tokio::select! {
            msg = live.recv() => msg,
            _ = send.stopped() => return Err(Gone),
        };
        match msg {
            Some(ToClient::ItemDone { output, .. })
                if output.index < from || !sent.insert(output.index) => {}
            Some(end @ (ToClient::JobFinished { .. } | ToClient::JobCancelled { .. })) => {
                return write(send, &end).await;
            }
            Some(msg) => write(send, &msg).await?,
            None => {
                return write(
                    send,
                    &ToClient::Error {
                        message: "host shutting down".into(),
                    },
                )
                .await;
            }
        }
    }
}

/// Answers once the job has ended.
async fn wait(send: &mut quinn::SendStream, ctx: &Ctx, job: JobId) -> Result<(), Gone> {
    let Some((running, mut live)) = watch(ctx, job, false).await else {
        return write(
            send,
            &ToClient::Error {
                message: "host shutting down".into(),
            },
        )
        .await;
    };
    if running {
        tokio::select! {
            msg = live.recv() => if let Some(end) = msg {
                return write(send, &end).await;
            },
            _ = send.stopped() => return Err(Gone),
        }
    }
    let end = ending(ctx, job).await.unwrap_or(ToClient::Error {
        message: format!("job {job} is still running"),
    });
    write(send, &end).await
}

/// A request is one frame; the client finishes its side after it.
async fn read_request(recv: &mut quinn::RecvStream) -> Result<ClientRequest, String> {
    let bytes = recv
        .read_to_end(MAX_FRAME_LEN + bramble_wire::codec::HEADER_LEN)
        .await
        .map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::default();
    decoder.push(&bytes);
    let req = decoder
        .next_msg()
        .map_err(|e| e.to_string())?
        .ok_or("empty request")?;
    decoder.finish().map_err(|e| e.to_string())?;
    Ok(req)
}

async fn write(send: &mut quinn::SendStream, msg: &ToClient) -> Result<(), Gone> {
    let mut frame = Vec::new();
    if let Err(e) = encode_frame(msg, &mut frame) {
        warn!("cannot encode an answer: {e}");
        return Err(Gone);
    }
    send.write_all(&frame).await.map_err(|_| Gone)
}
