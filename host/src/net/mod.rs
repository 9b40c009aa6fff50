//! The host's IO: the QUIC endpoint, one task per connection, and the driver task that owns
//! the scheduler. Peers learn who they talk to from the verified certificate only.

mod client_peer;
mod driver;
mod follow;
mod gate;
mod metrics;
mod worker_peer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use bramble_certs::{Identity, Role};
use bramble_net::Budget;
use bramble_sched::{SchedConfig, Scheduler, SessionId};
use bramble_wire::close;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::store::Store;
pub(crate) use driver::ToDriver;
pub use gate::{Gate, append_name as append_revoked, remove_name as unrevoke};

/// Bytes of one-frame streams (requests, large results) being read at once, by everyone...
const READ_BUDGET: usize = 256 << 20;
/// ... and by one connection: two frames of the largest size.
const CONNECTION_READ_BUDGET: usize = 2 * bramble_wire::MAX_FRAME_LEN;

/// Dials the host has taken but not yet answered. Answering one (key exchange and signature)
/// costs the host about a millisecond of CPU, and a dialling worker waits 50–200 ms for a
/// first answer before it dials again. Past this many, a new dial is refused at once with
/// QUIC's CONNECTION_REFUSED (a packet, no cryptography): the worker then knows the host is up,
/// comes back after a short random pause and waits for its answer patiently. Without this, a
/// thousand workers dialling together were answered too late, dialled again and again, and the
/// host did each handshake several times over.
const MAX_UNANSWERED: usize = 32;

/// A handshake not finished by then is dropped: its worker gave up on it and dialled again,
/// and the connection's idle timeout would hold its memory for 15 s.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the host needs to serve.
pub struct HostOptions {
    pub listen: SocketAddr,
    /// PEM: CA certificate, host certificate, host key.
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub sched: SchedConfig,
    /// The job store (`jobs.db`).
    pub store: PathBuf,
    /// The revocation list (`revoked.txt`).
    pub revoked: PathBuf,
    /// The enrolled workers (`enrolled.txt`).
    pub enrolled: PathBuf,
    /// Staged files (`blobs/`).
    pub blobs: PathBuf,
    /// Where to serve Prometheus metrics (`serve --metrics`), if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Secret for QUIC stateless resets. Kept across restarts, so that a restarted host
    /// resets the connections of the previous run at their next packet and workers and
    /// clients reconnect at once instead of waiting out the idle timeout.
    pub reset_key: Vec<u8>,
}

/// A bound, running host.
pub struct Host {
    endpoint: quinn::Endpoint,
    metrics: Option<SocketAddr>,
    to_driver: mpsc::Sender<ToDriver>,
    driver: driver::Running,
}

impl Host {
    /// Binds the endpoint and starts the driver and the accept loop (after waiting for a full
    /// disk, see [`open_store`]).
    pub async fn start(opts: HostOptions) -> anyhow::Result<Self> {
        let server = bramble_net::server_config(&opts.ca_pem, &opts.cert_pem, &opts.key_pem)?;
        let socket = bramble_net::bind_udp(opts.listen)
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let endpoint = quinn::Endpoint::new(
            endpoint_config(&opts.reset_key),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        let store = open_store(&opts.store).await?;
        let mut sched = Scheduler::new(opts.sched, store.known()?);
        let (next_job, next_task) = store.next_ids()?;
        let unfinished = store.unfinished_jobs()?;
        if !unfinished.is_empty() {
            info!(
                "resuming {} unfinished job(s) from {}",
                unfinished.len(),
                opts.store.display()
            );
        }
        sched.resume(std::time::Instant::now(), next_job, next_task, unfinished);
        let gate = Arc::new(Gate::load(&opts.revoked, &opts.enrolled).with_context(|| {
            format!(
                "reading {} and {}",
                opts.revoked.display(),
                opts.enrolled.display()
            )
        })?);
        let (to_driver, rx) = mpsc::channel(4096);
        let driver = driver::spawn(sched, store, opts.store.clone(), rx)
            .context("starting the driver thread")?;
        let ctx = client_peer::Ctx {
            to_driver: to_driver.clone(),
            store_path: opts.store,
            gate,
            blobs: crate::blobs::Blobs::new(&opts.blobs),
        };
        let metrics = match opts.metrics {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot serve metrics on {addr}"))?;
                let bound = listener.local_addr()?;
                tokio::spawn(metrics::serve(listener, to_driver.clone()));
                Some(bound)
            }
            None => None,
        };
        tokio::spawn(accept_loop(endpoint.clone(), ctx, Budget::new(READ_BUDGET)));
        Ok(Self {
            endpoint,
            metrics,
            to_driver,
            driver,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Where Prometheus metrics are served (`/metrics`), if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// Closes every connection and stops.
    pub async fn shutdown(self) {
        self.endpoint
            .close(close::SHUTDOWN.into(), b"host shutting down");
        drop(self.to_driver);
        self.driver.stop().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// Opens the job store. While its disk is too full for that (SQLite recovers its write-ahead
/// log on open), says so once and tries again every second: the workers keep their results
/// until the host is back, and a restart loop would say nothing more.
async fn open_store(path: &std::path::Path) -> anyhow::Result<Store> {
    let mut said = false;
    loop {
        match Store::open(path) {
            Err(e) if e.is_disk_full() => {
                if !said {
                    error!(
                        "cannot open the job store {}: {e}; waiting for free space",
                        path.display()
                    );
                    said = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other.with_context(|| format!("opening {}", path.display())),
        }
    }
}

/// Stateless resets and connection ids keyed by the profile's secret: after a restart the
/// host still recognises the ids it gave out (the default generator signs them with a
/// per-process key and would drop them) and answers their packets with a reset the peer
/// can verify, so peers of the previous run reconnect at once.
fn endpoint_config(secret: &[u8]) -> quinn::EndpointConfig {
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&reset_key, b"bramble connection ids");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&tag.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

async fn accept_loop(endpoint: quinn::Endpoint, ctx: client_peer::Ctx, budget: Budget) {
    let ids = Arc::new(AtomicU64::new(1));
    let unanswered = Arc::new(AtomicUsize::new(0));
    while let Some(incoming) = endpoint.accept().await {
        let Some(unanswered) = Unanswered::begin(&unanswered) else {
            debug!(
                "busy: {MAX_UNANSWERED} dials not answered yet; refused {} for now",
                incoming.remote_address()
            );
            incoming.refuse();
            continue;
        };
        let ctx = ctx.clone();
        let ids = ids.clone();
        let budget = budget.connection(CONNECTION_READ_BUDGET);
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            // Answers the dial (the host's hello goes out here).
            let connecting = incoming.accept();
            drop(unanswered);
            let accepted = match connecting {
                Ok(connecting) => tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await,
                Err(e) => Ok(Err(e)),
            };
            let conn = match accepted {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    warn!("refused connection from {remote}: {e}");
                    if let quinn::ConnectionError::TransportError(e) = &e {
                        // A certificate from another profile, say: worth a line in `status`.
                        ctx.gate.refused(None, remote, &e.to_string());
                    }
                    return;
                }
                Err(_) => {
                    debug!("gave up a handshake with {remote}: the peer went silent");
                    return;
                }
            };
            let (identity, fingerprint) = match identity(&conn) {
                Ok(id) => id,
                Err(e) => {
                    warn!("refused connection from {remote}: {e}");
                    ctx.gate.refused(None, remote, &e.to_string());
                    conn.close(close::REJECTED.into(), e.to_string().as_bytes());
                    return;
                }
            };
            let enrolled = match ctx.gate.admit(&identity, &fingerprint, &conn) {
                Ok(enrolled) => enrolled,
                Err(why) => {
                    warn!(
                        "refused {} {:?} from {remote}: {why}",
                        identity.role, identity.name
                    );
                    conn.close(close::REJECTED.into(), why.as_bytes());
                    return;
                }
            };
            match identity.role {
                Role::Worker => {
                    let session = SessionId(ids.fetch_add(1, Ordering::Relaxed));
                    let peer = worker_peer::Peer {
                        name: identity.name,
                        session,
                        enrolled,
                        blobs: ctx.blobs.clone(),
                    };
                    worker_peer::run(conn, peer, ctx.to_driver, budget).await;
                }
                Role::Client => client_peer::run(conn, identity.name, ctx, budget).await,
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

/// A dial not answered yet, counted against [`MAX_UNANSWERED`] until dropped.
struct Unanswered(Arc<AtomicUsize>);

impl Unanswered {
    fn begin(count: &Arc<AtomicUsize>) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_UNANSWERED).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count.clone()))
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Role and name from the peer's verified certificate, and the certificate's fingerprint.
fn identity(conn: &quinn::Connection) -> anyhow::Result<(Identity, String)> {
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
    let identity = bramble_certs::identity::peer_identity(leaf)?;
    Ok((identity, crate::enrolled::fingerprint(leaf)))
}
