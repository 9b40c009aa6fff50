//! The worker's connection loop: dial the first reachable host of the bundle, serve the
//! session, and on loss wait (backoff) while tasks keep running.

use std::time::{Duration, Instant};

use anyhow::Context;
use bramble_net::{Backoff, Eager, Side};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::WorkerConfig;
use crate::session::{Ended, Worker};
use crate::watchdog;

/// A connection that lived this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs until SIGTERM/SIGINT.
pub(crate) async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let client = bramble_net::client_config(&config.bundle, Side::Worker).context("bundle")?;
    let shutdown = shutdown_signal()?;
    let seed = boot_id();
    let mut worker = Worker::new(&config, seed, shutdown.clone());
    let mut backoff = Backoff::new(seed);
    let mut eager = Eager::new();
    let mut stop = shutdown.clone();
    // Since when no dial was answered (`None` before the first).
    let mut unanswered: Option<Instant> = None;
    watchdog::ready();
    loop {
        let started = Instant::now();
        let eager_wait = eager.dial_wait(unanswered.map(|since| since.elapsed()));
        let timeout = eager_wait.unwrap_or(CONNECT_TIMEOUT);
        debug!("dialling {}", config.bundle.hosts.join(", "));
        // A SIGTERM while dialling an unreachable host ends the worker at once.
        let dialed = tokio::select! {
            dialed = bramble_net::connect(&config.bundle, &client, timeout) => dialed,
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
        };
        let fatal = match dialed {
            Err(e) if e.busy => {
                // Up, but answering other workers first: back soon, not all at once.
                unanswered = None;
                eager.busy();
                let pause = backoff.busy_pause();
                debug!("{e}; dialling again in {} ms", pause.as_millis());
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    _ = stop.wait_for(|stop| *stop) => return Ok(()),
                }
            }
            Err(e) if eager_wait.is_some() && !e.refused => {
                unanswered.get_or_insert(started);
                debug!("cannot connect yet: {e}");
                continue;
            }
            Ok((conn, _endpoint)) => {
                eager.reset();
                backoff.connected();
                info!("connected to {}", conn.remote_address());
                match worker.serve(conn).await {
                    Ended::Shutdown => return Ok(()),
                    Ended::Lost { reason, fatal } => {
                        if fatal {
                            error!("host refused this worker: {reason}");
                        } else {
                            warn!("connection lost: {reason}");
                        }
                        // Dial eagerly again: a restarted host is back in moments.
                        unanswered = Some(Instant::now());
                        fatal
                    }
                }
            }
            Err(e) => {
                if e.refused {
                    error!("cannot connect: {e} (check the bundle; retrying slowly)");
                } else {
                    warn!("cannot connect: {e}");
                }
                e.refused
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
