//! The host's IO: the QUIC endpoint, one task per connection, and the driver task that owns
//! the scheduler. Peers learn who they talk to from the verified certificate only.

mod client_peer;
mod driver;
mod worker_peer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bramble_certs::{Identity, Role};
use bramble_wire::close;
use quinn::crypto::rustls::QuicServerConfig;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::sched::{SchedConfig, Scheduler};
pub(crate) use driver::ToDriver;

/// What the host needs to serve.
pub struct HostOptions {
    pub listen: SocketAddr,
    /// PEM: CA certificate, host certificate, host key.
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub sched: SchedConfig,
    /// Ids given out before (name → id).
    pub known_ids: std::collections::BTreeMap<String, bramble_wire::WorkerId>,
    /// Called when a name gets a new id, to persist the table.
    pub on_new_id: OnNewId,
}

/// Persists a newly assigned worker id (name, id).
pub type OnNewId = Box<dyn FnMut(&str, bramble_wire::WorkerId) + Send>;

/// A bound, running host.
pub struct Host {
    endpoint: quinn::Endpoint,
    to_driver: mpsc::Sender<ToDriver>,
    driver: tokio::task::JoinHandle<()>,
}

impl Host {
    /// Binds the endpoint and starts the driver and the accept loop.
    pub fn start(opts: HostOptions) -> anyhow::Result<Self> {
        let tls = bramble_certs::tls::server_config(&opts.ca_pem, &opts.cert_pem, &opts.key_pem)?;
        let mut server =
            quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
        server.transport_config(Arc::new(transport()));
        let endpoint = quinn::Endpoint::server(server, opts.listen)
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let (to_driver, rx) = mpsc::channel(4096);
        let sched = Scheduler::new(opts.sched, opts.known_ids);
        let driver = tokio::spawn(driver::run(sched, rx, opts.on_new_id));
        tokio::spawn(accept_loop(endpoint.clone(), to_driver.clone()));
        Ok(Self {
            endpoint,
            to_driver,
            driver,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Closes every connection and stops.
    pub async fn shutdown(self) {
        self.endpoint
            .close(close::SHUTDOWN.into(), b"host shutting down");
        drop(self.to_driver);
        self.driver.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// Host-side QUIC settings: 15 s idle timeout (workers send keep-alives), room for result
/// streams from workers and request streams from clients.
fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        15_000,
    ))));
    t.max_concurrent_uni_streams(256u32.into());
    t.max_concurrent_bidi_streams(256u32.into());
    t
}

async fn accept_loop(endpoint: quinn::Endpoint, to_driver: mpsc::Sender<ToDriver>) {
    let ids = Arc::new(AtomicU64::new(1));
    while let Some(incoming) = endpoint.accept().await {
        let to_driver = to_driver.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    warn!("refused connection from {remote}: {e}");
                    return;
                }
            };
            let identity = match identity(&conn) {
                Ok(id) => id,
                Err(e) => {
                    warn!("refused connection from {remote}: {e}");
                    conn.close(close::REJECTED.into(), e.to_string().as_bytes());
                    return;
                }
            };
            let id = ids.fetch_add(1, Ordering::Relaxed);
            match identity.role {
                Role::Worker => worker_peer::run(conn, identity.name, id, to_driver).await,
                Role::Client => client_peer::run(conn, identity.name, ids, to_driver).await,
                Role::Host => {
                    warn!("refused connection from {remote}: a host certificate is not a peer");
                    conn.close(
                        close::REJECTED.into(),
                        b"host certificate cannot connect as a peer",
                    );
                }
            }
        });
    }
    info!("endpoint closed");
}

/// Role and name from the peer's verified certificate.
fn identity(conn: &quinn::Connection) -> anyhow::Result<Identity> {
    let certs = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .context("peer presented no certificate")?;
    let leaf = certs
        .first()
        .context("peer presented an empty certificate chain")?;
    Ok(bramble_certs::identity::peer_identity(leaf)?)
}
