//! The client library: connect to a host with a client bundle, ask for ids and status, submit
//! jobs and stream their results. The CLI is a thin layer over this; the Python package will be
//! another.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bramble_certs::{Bundle, Role};
use bramble_wire::codec::encode_frame;
use bramble_wire::{ClientRequest, FrameDecoder, JobSpec, ToClient, WorkerId, WorkerStatus};
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
        let config = quinn::ClientConfig::new(Arc::new(crypto));
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
        match self.request(ClientRequest::Ids).await?.next().await? {
            Some(ToClient::Ids(ids)) => Ok(ids),
            other => Err(unexpected(other)),
        }
    }

    /// One row per connected worker.
    pub async fn status(&self) -> Result<Vec<WorkerStatus>, ClientError> {
        match self.request(ClientRequest::Status).await?.next().await? {
            Some(ToClient::Status(rows)) => Ok(rows),
            other => Err(unexpected(other)),
        }
    }

    /// Submits a job; its results stream back through the returned [`Replies`].
    pub async fn submit(&self, spec: JobSpec) -> Result<Replies, ClientError> {
        self.request(ClientRequest::Submit(spec)).await
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

    /// Closes the connection; a job still running is cancelled by the host.
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

fn unexpected(msg: Option<ToClient>) -> ClientError {
    match msg {
        None => ClientError::Protocol("host closed the request without answering".into()),
        Some(m) => ClientError::Protocol(format!("unexpected answer {m:?}")),
    }
}
