//! The worker's connection loop: dial the first reachable host of the bundle, serve the
//! session, and on loss wait (backoff) while tasks keep running and their results are stashed.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use quinn::crypto::rustls::QuicClientConfig;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::config::WorkerConfig;
use crate::session::{Ended, Worker};
use crate::watchdog;

/// A connection that lived this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs until SIGTERM/SIGINT.
pub(crate) async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let tls = bramble_certs::tls::client_config(&config.bundle).context("bundle")?;
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    client.transport_config(Arc::new(transport()));
    let shutdown = shutdown_signal()?;
    let seed = boot_id();
    let mut worker = Worker::new(&config, seed, shutdown.clone());
    let mut backoff = Backoff::new(seed);
    watchdog::ready();
    loop {
        let started = Instant::now();
        let fatal = match connect(&config, &client).await {
            Ok(conn) => match worker.serve(conn).await {
                Ended::Shutdown => return Ok(()),
                Ended::Lost { reason, fatal } => {
                    if fatal {
                        error!("host refused this worker: {reason}");
                    } else {
                        warn!("connection lost: {reason}");
                    }
                    fatal
                }
            },
            Err((reason, fatal)) => {
                if fatal {
                    error!("cannot connect: {reason} (check the bundle; retrying slowly)");
                } else {
                    warn!("cannot connect: {reason}");
                }
                fatal
            }
        };
        if started.elapsed() > HEALTHY {
            backoff.reset();
        }
        let delay = backoff.next_delay(fatal);
        info!("reconnecting in {:.1}s", delay.as_secs_f64());
        watchdog::status(&format!(
            "not connected; retrying in {:.0}s",
            delay.as_secs_f64()
        ));
        if worker.idle_for(delay).await {
            return Ok(());
        }
    }
}

/// QUIC settings: the worker sends keep-alives (it is the side behind NAT); both sides time
/// out after 15 s of silence.
fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(3)));
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        15_000,
    ))));
    t.max_concurrent_uni_streams(0u32.into());
    t
}

/// Tries each host of the bundle in order; the error says why the last one failed and
/// whether the failure is a refusal (retrying fast cannot help).
async fn connect(
    config: &WorkerConfig,
    client: &quinn::ClientConfig,
) -> Result<quinn::Connection, (String, bool)> {
    let mut last = ("no hosts in bundle".to_owned(), false);
    for host in &config.bundle.hosts {
        let addrs = match tokio::net::lookup_host(host.as_str()).await {
            Ok(a) => a.collect::<Vec<_>>(),
            Err(e) => {
                last = (format!("{host}: {e}"), false);
                continue;
            }
        };
        for addr in addrs {
            match dial(addr, &config.bundle.server_name, client).await {
                Ok(conn) => {
                    info!("connected to {host} ({addr})");
                    return Ok(conn);
                }
                Err((e, fatal)) => last = (format!("{host}: {e}"), fatal),
            }
        }
    }
    Err(last)
}

async fn dial(
    addr: SocketAddr,
    server_name: &str,
    client: &quinn::ClientConfig,
) -> Result<quinn::Connection, (String, bool)> {
    let bind: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let endpoint =
        quinn::Endpoint::client(bind).map_err(|e| (format!("bind {bind}: {e}"), false))?;
    let connecting = endpoint
        .connect_with(client.clone(), addr, server_name)
        .map_err(|e| (e.to_string(), false))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err((e.to_string(), is_refusal(&e))),
        Err(_) => Err(("timed out".into(), false)),
    }
}

/// A TLS alert (bad or unknown certificate, …) or the host's explicit rejection.
pub(crate) fn is_refusal(e: &quinn::ConnectionError) -> bool {
    let crypto = |code: u64| (0x100..0x200).contains(&code);
    match e {
        quinn::ConnectionError::ConnectionClosed(c) => crypto(u64::from(c.error_code)),
        quinn::ConnectionError::TransportError(t) => crypto(u64::from(t.code)),
        quinn::ConnectionError::ApplicationClosed(c) => {
            c.error_code == quinn::VarInt::from_u32(bramble_wire::close::REJECTED)
        }
        _ => false,
    }
}

/// Flips to true on SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// Random per process: tells the host this is a new worker process; seeds the jitter.
fn boot_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}
