//! [`Client`]: one QUIC connection to the host, shared by every request and job stream of a
//! client, redialled when it breaks (a restarted host, a network blip). Requests that can be
//! repeated safely (ids, status, jobs, wait) are retried on a new connection; a submit or a
//! cancel is sent once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bramble_certs::Bundle;
use bramble_net::{FrameReader, Side};
use bramble_wire::EncodeError;
use bramble_wire::codec::encode_frame;
use bramble_wire::{
    ClientRequest, EngineInfo, HostHealth, JobId, JobSpec, JobSummary, Refusal, ToClient,
    WorkerHistory, WorkerId, WorkerStatus,
};

use crate::stream::JobStream;
use crate::{ClientError, JobEnd, Order};

/// Turns of the runtime a closing client gives the endpoint to send the close.
const CLOSE_TURNS: usize = 4;

/// How long one dial waits for the host's first answer: on a LAN it comes within
/// milliseconds, so a host that is down is reported after a second, not five. A host that
/// answered gets longer to finish the handshake (`bramble_net::connect`).
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a waiting or following client keeps trying to reach a restarted host.
pub(crate) const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// A connection to a host. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    bundle: Bundle,
    config: quinn::ClientConfig,
    conn: Mutex<Link>,
    /// Held while dialling, so that many streams losing one connection dial once.
    redial: tokio::sync::Mutex<()>,
    /// `close` was called: nothing dials again, streams end.
    closed: AtomicBool,
}

#[derive(Clone)]
struct Link {
    conn: quinn::Connection,
    /// The connection's own endpoint (its UDP socket): held as long as the connection.
    _endpoint: quinn::Endpoint,
}

/// The answers to one request, in order.
pub(crate) struct Replies {
    reader: FrameReader,
    conn: quinn::Connection,
}

impl Replies {
    /// The next answer; `None` when the host finished the stream. A host-side error comes
    /// back as [`ClientError::Refused`].
    pub(crate) async fn next(&mut self) -> Result<Option<ToClient>, ClientError> {
        match self
            .reader
            .next()
            .await
            .map_err(|e| failure(&self.conn, e))?
        {
            Some(ToClient::Error { message }) => Err(ClientError::Refused(message)),
            other => Ok(other),
        }
    }
}

/// A failure on `conn`: [`ClientError::Refused`] if the host closed it as a refusal (a
/// revoked certificate: redialling cannot help), else a connection failure.
fn failure(conn: &quinn::Connection, e: impl std::fmt::Display) -> ClientError {
    refusal(conn).unwrap_or_else(|| ClientError::protocol(e))
}

/// Why the host refused `conn`, if it did.
fn refusal(conn: &quinn::Connection) -> Option<ClientError> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == quinn::VarInt::from_u32(bramble_wire::close::REJECTED) =>
        {
            Some(ClientError::Refused(format!(
                "the host refused this client: {}",
                String::from_utf8_lossy(&c.reason)
            )))
        }
        _ => None,
    }
}

impl Client {
    /// Connects to the first reachable host of a client bundle (see [`crate::locate`]).
    pub async fn connect(bundle: Bundle) -> Result<Self, ClientError> {
        let config = bramble_net::client_config(&bundle, Side::Client)
            .map_err(|e| ClientError::Bundle(e.to_string()))?;
        let link = dial(&bundle, &config).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                bundle,
                config,
                conn: Mutex::new(link),
                redial: tokio::sync::Mutex::new(()),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The bundle this client connects with.
    pub fn bundle(&self) -> &Bundle {
        &self.inner.bundle
    }

    fn link(&self) -> Option<Link> {
        self.inner.conn.lock().ok().map(|l| l.clone())
    }

    /// The connection requests go out on now.
    pub(crate) fn connection(&self) -> Option<quinn::Connection> {
        self.link().map(|l| l.conn)
    }

    /// Dials again, unless the connection that failed (`dead`) was already replaced.
    async fn redial(&self, dead: &quinn::Connection) -> Result<(), ClientError> {
        let _one_at_a_time = self.inner.redial.lock().await;
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(ClientError::Refused("the client was closed".into()));
        }
        if self
            .link()
            .is_some_and(|l| l.conn.stable_id() != dead.stable_id())
        {
            return Ok(());
        }
        let link = dial(&self.inner.bundle, &self.inner.config).await?;
        if let Ok(mut current) = self.inner.conn.lock() {
            *current = link;
        }
        Ok(())
    }

    /// Redials with capped backoff until it works or `RECONNECT_FOR` has passed.
    pub(crate) async fn reconnect(&self, dead: &quinn::Connection) -> Result<(), ClientError> {
        let give_up = Instant::now() + RECONNECT_FOR;
        let mut delay = Duration::from_millis(200);
        loop {
            tokio::time::sleep(delay).await;
            match self.redial(dead).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < give_up && e.is_connection() => {
                    delay = (delay * 2).min(Duration::from_secs(3));
                    tracing::debug!("still cannot reach the host: {e}");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `req` on a new stream of the current connection (dialling first if that one is
    /// known to be closed). Returns the connection used, to redial if it fails.
    pub(crate) async fn request(
        &self,
        req: &ClientRequest,
    ) -> Result<(Replies, quinn::Connection), ClientError> {
        let mut link = self
            .link()
            .ok_or_else(|| ClientError::Protocol("client state poisoned".into()))?;
        if link.conn.close_reason().is_some() {
            if let Some(refused) = refusal(&link.conn) {
                return Err(refused);
            }
            self.redial(&link.conn).await?;
            link = self
                .link()
                .ok_or_else(|| ClientError::Protocol("client state poisoned".into()))?;
        }
        let conn = &link.conn;
        let (mut send, recv) = conn.open_bi().await.map_err(|e| failure(conn, e))?;
        let mut frame = Vec::new();
        encode_frame(req, &mut frame).map_err(|e| match e {
            EncodeError::TooLarge(n) => ClientError::Refused(format!(
                "the request is {} MiB or more, above the limit of {} MiB: a job's listed \
                 items must fit in one request (integers can be a range; or split the input)",
                n >> 20,
                bramble_wire::MAX_FRAME_LEN >> 20
            )),
            e => ClientError::protocol(e),
        })?;
        send.write_all(&frame).await.map_err(|e| failure(conn, e))?;
        send.finish().map_err(|e| failure(conn, e))?;
        Ok((
            Replies {
                reader: FrameReader::new(recv),
                conn: conn.clone(),
            },
            link.conn,
        ))
    }

    /// The first answer to `req`.
    async fn ask(&self, req: &ClientRequest) -> Result<(ToClient, quinn::Connection), ClientError> {
        let (mut replies, conn) = self.request(req).await?;
        match replies.next().await? {
            Some(answer) => Ok((answer, conn)),
            None => Err(ClientError::Protocol(
                "host closed the request without answering".into(),
            )),
        }
    }

    /// Asks once; if the connection fails, redials once and asks again (for requests that
    /// can be repeated without effect).
    async fn ask_again_if_lost(&self, req: &ClientRequest) -> Result<ToClient, ClientError> {
        let conn = match self.ask(req).await {
            Ok((answer, _)) => return Ok(answer),
            Err(e) if e.is_connection() => self.link().map(|l| l.conn),
            Err(e) => return Err(e),
        };
        if let Some(conn) = conn {
            self.redial(&conn).await?;
        }
        self.ask(req).await.map(|(answer, _)| answer)
    }

    /// Connected worker ids, ascending.
    pub async fn ids(&self) -> Result<Vec<WorkerId>, ClientError> {
        match self.ask_again_if_lost(&ClientRequest::Ids).await? {
            ToClient::Ids(ids) => Ok(ids),
            other => Err(unexpected(&other)),
        }
    }

    /// One row per connected worker.
    pub async fn status(&self) -> Result<Vec<WorkerStatus>, ClientError> {
        match self.ask_again_if_lost(&ClientRequest::Status).await? {
            ToClient::Status(rows) => Ok(rows),
            other => Err(unexpected(&other)),
        }
    }

    /// The host's own state (its job store's free space, a failing write).
    pub async fn health(&self) -> Result<HostHealth, ClientError> {
        match self.ask_again_if_lost(&ClientRequest::Health).await? {
            ToClient::Health(health) => Ok(health),
            other => Err(unexpected(&other)),
        }
    }

    /// Connections the host refused in the last ten minutes, newest first: a Pi that keeps
    /// failing to join, and why.
    pub async fn refusals(&self) -> Result<Vec<Refusal>, ClientError> {
        match self.ask_again_if_lost(&ClientRequest::Refusals).await? {
            ToClient::Refusals(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes ended jobs and their results from the job store (all or none); returns them.
    pub async fn forget(&self, jobs: Vec<JobId>) -> Result<Vec<JobId>, ClientError> {
        self.forgotten(&ClientRequest::Forget { jobs }).await
    }

    /// Forgets the ended jobs older than `older_than_ms`, keeping the newest `keep`; returns
    /// them.
    pub async fn prune(
        &self,
        older_than_ms: Option<u64>,
        keep: Option<u64>,
    ) -> Result<Vec<JobId>, ClientError> {
        self.forgotten(&ClientRequest::Prune {
            older_than_ms,
            keep,
        })
        .await
    }

    /// Every worker's telemetry of the last `within_ms` (the host keeps an hour), by name.
    pub async fn history(&self, within_ms: u64) -> Result<Vec<WorkerHistory>, ClientError> {
        match self
            .ask_again_if_lost(&ClientRequest::History { within_ms })
            .await?
        {
            ToClient::History(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// Winds a job down: nothing of it starts any more; what runs finishes and is recorded.
    pub async fn wind_down(&self, job: JobId) -> Result<(), ClientError> {
        match self
            .ask_again_if_lost(&ClientRequest::WindDown { job })
            .await?
        {
            ToClient::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Names a job (unique among the host's jobs).
    pub async fn name_job(&self, job: JobId, name: &str) -> Result<(), ClientError> {
        let req = ClientRequest::NameJob {
            job,
            name: name.to_owned(),
        };
        match self.ask_again_if_lost(&req).await? {
            ToClient::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// The named jobs, oldest first.
    pub async fn job_names(&self) -> Result<Vec<(JobId, String)>, ClientError> {
        match self.ask_again_if_lost(&ClientRequest::JobNames).await? {
            ToClient::JobNames(names) => Ok(names),
            other => Err(unexpected(&other)),
        }
    }

    async fn forgotten(&self, req: &ClientRequest) -> Result<Vec<JobId>, ClientError> {
        match self.ask_again_if_lost(req).await? {
            ToClient::Forgotten(jobs) => Ok(jobs),
            other => Err(unexpected(&other)),
        }
    }

    /// Which of these staged files (by SHA-256) the host does not have yet.
    pub async fn missing_blobs(
        &self,
        sha256s: Vec<[u8; 32]>,
    ) -> Result<Vec<[u8; 32]>, ClientError> {
        match self
            .ask_again_if_lost(&ClientRequest::MissingBlobs(sha256s))
            .await?
        {
            ToClient::MissingBlobs(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// Puts a piece of a staged file on the host (pieces in order; the last completes it).
    pub async fn put_blob(
        &self,
        sha256: [u8; 32],
        offset: u64,
        total: u64,
        data: Vec<u8>,
    ) -> Result<(), ClientError> {
        let req = ClientRequest::PutBlob {
            sha256,
            offset,
            total,
            data,
        };
        match self.ask_again_if_lost(&req).await? {
            ToClient::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Every Python engine of the connected workers, by id.
    pub async fn engines(&self) -> Result<Vec<EngineInfo>, ClientError> {
        match self.ask_again_if_lost(&ClientRequest::Engines).await? {
            ToClient::Engines(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// Every job the host knows, oldest first.
    pub async fn jobs(&self) -> Result<Vec<JobSummary>, ClientError> {
        match self.ask_again_if_lost(&ClientRequest::Jobs).await? {
            ToClient::Jobs(jobs) => Ok(jobs),
            other => Err(unexpected(&other)),
        }
    }

    /// Starts a job and follows it from its acceptance, in one round trip: the stream's first
    /// event is [`crate::JobEvent::Accepted`] (and `stream.job()` is known at once).
    pub async fn submit_and_follow(
        &self,
        spec: JobSpec,
        order: Order,
    ) -> Result<JobStream, ClientError> {
        let (mut replies, conn) = self.request(&ClientRequest::SubmitAndFollow(spec)).await?;
        match replies.next().await? {
            Some(accepted @ ToClient::JobAccepted { .. }) => {
                JobStream::accepted(self.clone(), order, accepted, replies, conn)
            }
            Some(other) => Err(unexpected(&other)),
            None => Err(ClientError::Protocol(
                "host closed the request without answering".into(),
            )),
        }
    }

    /// Starts a job; returns its id and number of results. The job runs on without us.
    pub async fn submit(&self, spec: JobSpec) -> Result<(JobId, u64), ClientError> {
        match self.ask(&ClientRequest::Submit(spec)).await?.0 {
            ToClient::JobAccepted { job, total } => Ok((job, total)),
            other => Err(unexpected(&other)),
        }
    }

    /// Cancels a running job.
    pub async fn cancel(&self, job: JobId) -> Result<(), ClientError> {
        self.done(ClientRequest::Cancel { job }).await
    }

    /// Revokes a worker or client name on the host.
    pub async fn revoke(&self, name: &str) -> Result<(), ClientError> {
        self.done(ClientRequest::Revoke { name: name.into() }).await
    }

    /// Drains (`true`) or undrains a worker, by name or id.
    pub async fn drain(&self, worker: &str, draining: bool) -> Result<(), ClientError> {
        let worker = worker.to_owned();
        self.done(if draining {
            ClientRequest::Drain { worker }
        } else {
            ClientRequest::Undrain { worker }
        })
        .await
    }

    async fn done(&self, req: ClientRequest) -> Result<(), ClientError> {
        match self.ask(&req).await?.0 {
            ToClient::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Waits until the job has ended, across lost connections and host restarts.
    pub async fn wait(&self, job: JobId) -> Result<JobEnd, ClientError> {
        let req = ClientRequest::Wait { job };
        loop {
            let conn = match self.ask(&req).await {
                Ok((ToClient::JobFinished { failed, .. }, _)) => {
                    return Ok(JobEnd::Finished { failed });
                }
                Ok((ToClient::JobCancelled { .. }, _)) => return Ok(JobEnd::Cancelled),
                Ok((other, _)) => return Err(unexpected(&other)),
                Err(e) if e.is_connection() => self.link().map(|l| l.conn),
                Err(e) => return Err(e),
            };
            if let Some(conn) = conn {
                self.reconnect(&conn).await?;
            }
        }
    }

    /// The job's results as they are recorded, in `order`, until it ends; reconnects and
    /// resumes after a lost connection.
    pub fn follow(&self, job: JobId, order: Order) -> JobStream {
        JobStream::new(self.clone(), job, order, true)
    }

    /// The results stored so far, in `order`; ends without [`crate::JobEvent::Ended`] if the
    /// job is still running.
    pub fn results(&self, job: JobId, order: Order) -> JobStream {
        JobStream::new(self.clone(), job, order, false)
    }

    /// Closes the connection (jobs keep running on the host); nothing dials again.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        if let Some(link) = self.link() {
            link.conn
                .close(bramble_wire::close::SHUTDOWN.into(), b"client done");
            // Let the endpoint's driver run, which sends the close (the host then forgets the
            // connection at once); not QUIC's whole drain period after it (three probe
            // timeouts, most of a short-lived CLI call's time).
            for _ in 0..CLOSE_TURNS {
                tokio::task::yield_now().await;
            }
        }
    }
}

async fn dial(bundle: &Bundle, config: &quinn::ClientConfig) -> Result<Link, ClientError> {
    let (conn, endpoint) = bramble_net::connect(bundle, config, DIAL_TIMEOUT)
        .await
        .map_err(|e| {
            if e.refused {
                ClientError::Refused(format!("the host refused this client: {}", e.message))
            } else {
                ClientError::Connect(e.message)
            }
        })?;
    Ok(Link {
        conn,
        _endpoint: endpoint,
    })
}

pub(crate) fn unexpected(msg: &ToClient) -> ClientError {
    ClientError::Protocol(format!("unexpected answer {msg:?}"))
}
