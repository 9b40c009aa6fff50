//! The client library: connect to a host with a client bundle; ask for ids, status and jobs;
//! submit, follow, wait for and cancel jobs. The CLI is a thin layer over this; the Python
//! package will be another.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bramble_certs::{Bundle, Role};
use bramble_wire::codec::encode_frame;
use bramble_wire::{
    ClientRequest, FrameDecoder, JobId, JobSpec, JobSummary, ToClient, WorkerId, WorkerStatus,
};
use quinn::crypto::rustls::QuicClientConfig;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong talking to a host.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The bundle cannot be used by a client.
    #[error("{0}")]
    Bundle(String),
    /// No host in the bundle could be reached.
    #[error("cannot reach the host: {0}")]
    Connect(String),
    /// The connection broke or the host sent something unexpected.
    #[error("connection to the host failed: {0}")]
    Protocol(String),
    /// The host refused the request.
    #[error("{0}")]
    Refused(String),
}

impl ClientError {
    fn protocol(e: impl std::fmt::Display) -> Self {
        Self::Protocol(e.to_string())
    }

    /// True if the connection itself failed (worth reconnecting), not the request.
    pub fn is_connection(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Protocol(_))
    }
}

/// A connection to a host.
pub struct Client {
    conn: quinn::Connection,
    endpoint: quinn::Endpoint,
}

impl Client {
    /// Connects to the first reachable host of a client bundle.
    pub async fn connect(bundle: &Bundle) -> Result<Self, ClientError> {
        if bundle.role != Role::Client {
            return Err(ClientError::Bundle(format!(
                "bundle {:?} is a {} bundle; clients need one from `bramble client-bundle`",
                bundle.name, bundle.role
            )));
        }
        let tls = bramble_certs::tls::client_config(bundle)
            .map_err(|e| ClientError::Bundle(e.to_string()))?;
        let crypto =
            QuicClientConfig::try_from(tls).map_err(|e| ClientError::Bundle(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        // Keep-alives let a client following a job notice a dead or restarted host (a
        // restarted one answers with a stateless reset) instead of waiting for results.
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_secs(2)));
        transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            15_000,
        ))));
        config.transport_config(Arc::new(transport));
        let mut last = String::from("no hosts in bundle");
        for host in &bundle.hosts {
            let addrs = match tokio::net::lookup_host(host.as_str()).await {
                Ok(a) => a.collect::<Vec<_>>(),
                Err(e) => {
                    last = format!("{host}: {e}");
                    continue;
                }
            };
            for addr in addrs {
                match dial(addr, &bundle.server_name, &config).await {
                    Ok((conn, endpoint)) => return Ok(Self { conn, endpoint }),
                    Err(e) => last = format!("{host}: {e}"),
                }
            }
        }
        Err(ClientError::Connect(last))
    }

    /// Connected worker ids, ascending.
    pub async fn ids(&self) -> Result<Vec<WorkerId>, ClientError> {
        match self.ask(ClientRequest::Ids).await? {
            ToClient::Ids(ids) => Ok(ids),
            other => Err(unexpected(other)),
        }
    }

    /// One row per connected worker.
    pub async fn status(&self) -> Result<Vec<WorkerStatus>, ClientError> {
        match self.ask(ClientRequest::Status).await? {
            ToClient::Status(rows) => Ok(rows),
            other => Err(unexpected(other)),
        }
    }

    /// Every job the host knows, oldest first.
    pub async fn jobs(&self) -> Result<Vec<JobSummary>, ClientError> {
        match self.ask(ClientRequest::Jobs).await? {
            ToClient::Jobs(jobs) => Ok(jobs),
            other => Err(unexpected(other)),
        }
    }

    /// Starts a job; returns its id and number of results. The job runs on without us.
    pub async fn submit(&self, spec: JobSpec) -> Result<(JobId, u64), ClientError> {
        match self.ask(ClientRequest::Submit(spec)).await? {
            ToClient::JobAccepted { job, total } => Ok((job, total)),
            other => Err(unexpected(other)),
        }
    }

    /// Cancels a running job.
    pub async fn cancel(&self, job: JobId) -> Result<(), ClientError> {
        match self.ask(ClientRequest::Cancel { job }).await? {
            ToClient::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Waits until the job ended: `JobFinished` or `JobCancelled`.
    pub async fn wait(&self, job: JobId) -> Result<ToClient, ClientError> {
        self.ask(ClientRequest::Wait { job }).await
    }

    /// Revokes a worker or client name on the host.
    pub async fn revoke(&self, name: &str) -> Result<(), ClientError> {
        match self
            .ask(ClientRequest::Revoke {
                name: name.to_owned(),
            })
            .await?
        {
            ToClient::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The job's results with index ≥ `from`: first `JobAccepted` (with the total), then
    /// `ItemDone`s, then `JobFinished`/`JobCancelled` once it ended (with `follow`, waiting
    /// for that; without, the stream may end while the job still runs).
    pub async fn results(
        &self,
        job: JobId,
        from: u64,
        follow: bool,
    ) -> Result<Replies, ClientError> {
        self.request(ClientRequest::Results { job, from, follow })
            .await
    }

    async fn ask(&self, req: ClientRequest) -> Result<ToClient, ClientError> {
        self.request(req)
            .await?
            .next()
            .await?
            .ok_or_else(unexpected_end)
    }

    async fn request(&self, req: ClientRequest) -> Result<Replies, ClientError> {
        let (mut send, recv) = self.conn.open_bi().await.map_err(ClientError::protocol)?;
        let mut frame = Vec::new();
        encode_frame(&req, &mut frame).map_err(ClientError::protocol)?;
        send.write_all(&frame)
            .await
            .map_err(ClientError::protocol)?;
        send.finish().map_err(ClientError::protocol)?;
        Ok(Replies {
            recv,
            decoder: FrameDecoder::default(),
            buf: vec![0; 64 * 1024],
        })
    }

    /// Closes the connection (jobs keep running on the host).
    pub async fn close(self) {
        self.conn
            .close(bramble_wire::close::SHUTDOWN.into(), b"client done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// The host's answers on one request stream.
pub struct Replies {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl Replies {
    /// The next answer; `None` when the host finished the stream. A host-side error comes
    /// back as [`ClientError::Refused`].
    pub async fn next(&mut self) -> Result<Option<ToClient>, ClientError> {
        loop {
            match self.decoder.next_msg().map_err(ClientError::protocol)? {
                Some(ToClient::Error { message }) => return Err(ClientError::Refused(message)),
                Some(msg) => return Ok(Some(msg)),
                None => {}
            }
            match self
                .recv
                .read(&mut self.buf)
                .await
                .map_err(ClientError::protocol)?
            {
                Some(n) => self.decoder.push(&self.buf[..n]),
                None => {
                    self.decoder.finish().map_err(ClientError::protocol)?;
                    return Ok(None);
                }
            }
        }
    }
}

async fn dial(
    addr: SocketAddr,
    server_name: &str,
    config: &quinn::ClientConfig,
) -> Result<(quinn::Connection, quinn::Endpoint), String> {
    let bind: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| e.to_string())?;
    let connecting = endpoint
        .connect_with(config.clone(), addr, server_name)
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => Ok((conn, endpoint)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer from {addr} within {}s (is `bramble serve` running?)",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

fn unexpected(msg: ToClient) -> ClientError {
    ClientError::Protocol(format!("unexpected answer {msg:?}"))
}

fn unexpected_end() -> ClientError {
    ClientError::Protocol("host closed the request without answering".into())
}
