//! `serve` and `cluster start`: run the host in this process (and, for a cluster, N local
//! worker processes) until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bramble_host::net::{Host, HostOptions};
use bramble_host::profile::{Again, Profile, local_hosts};
use bramble_host::store::Store;
use bramble_sched::{Policy, SchedConfig};
use tracing::info;

/// Starts the host from the profile, with optional overrides.
async fn start_host(
    profile: &Profile,
    listen: Option<SocketAddr>,
    policy: Option<String>,
    metrics: Option<SocketAddr>,
) -> anyhow::Result<Host> {
    let config = profile.config()?;
    let listen = match listen {
        Some(l) => l,
        None => config
            .listen
            .parse()
            .with_context(|| format!("host.toml: bad listen address {:?}", config.listen))?,
    };
    let policy: Policy = policy
        .unwrap_or(config.policy)
        .parse()
        .map_err(anyhow::Error::msg)?;
    if config.heartbeat_ms == 0 || config.worker_timeout_ms <= config.heartbeat_ms {
        bail!("host.toml: worker_timeout_ms must be larger than heartbeat_ms (> 0)");
    }
    let sched = SchedConfig {
        policy,
        heartbeat: Duration::from_millis(config.heartbeat_ms),
        worker_timeout: Duration::from_millis(config.worker_timeout_ms),
        ..SchedConfig::default()
    };
    let (ca_pem, cert_pem, key_pem) = profile.server_material()?;
    let host = Host::start(HostOptions {
        listen,
        ca_pem,
        cert_pem,
        key_pem,
        sched,
        store: profile.store_path(),
        revoked: profile.revoked_path(),
        enrolled: profile.enrolled_path(),
        blobs: profile.blobs_path(),
        metrics,
        reset_key: profile.reset_key()?,
    })
    .await?;
    if let Some(addr) = host.metrics_addr() {
        info!("Prometheus metrics on http://{addr}/metrics");
    }
    if listen.port() == 0 {
        profile.settle_address(host.local_addr()?)?;
    }
    info!(
        "bramble host listening on {} (policy {policy}, profile {})",
        host.local_addr()?,
        profile.dir.display()
    );
    Ok(host)
}

pub(super) async fn serve(
    profile: &Profile,
    listen: Option<SocketAddr>,
    policy: Option<String>,
    metrics: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    // Stoppable while it waits for a full disk.
    let host = tokio::select! {
        host = start_host(profile, listen, policy, metrics) => host?,
        stop = stop_signal() => return stop.map(|()| ExitCode::SUCCESS),
    };
    stop_signal().await?;
    info!("shutting down");
    host.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// What `cluster start` runs.
pub(super) struct Local {
    pub(super) n: u16,
    pub(super) slots: u16,
    pub(super) listen: SocketAddr,
    pub(super) policy: Option<String>,
    pub(super) python: Option<String>,
}

pub(super) async fn cluster(profile: &Profile, local: Local) -> anyhow::Result<ExitCode> {
    let Local {
        n,
        slots,
        listen,
        policy,
        python,
    } = local;
    if n == 0 || slots == 0 {
        bail!("need at least one worker with at least one slot");
    }
    if !profile.exists() {
        profile.init(listen, Vec::new(), false)?;
        info!("created profile {}", profile.dir.display());
    }
    let worker_bin = worker_binary()?;
    let mut bundles = Vec::new();
    let names: Vec<String> = (0..n).map(|i| format!("local-{i}")).collect();
    for name in &names {
        // On this machine: they dial loopback, whatever the Pis dial.
        let (mut bundle, _) = profile.enroll_worker(name, Again::Reuse)?;
        bundle.hosts = local_hosts(&profile.config()?);
        let path = profile.worker_bundle_path(name);
        bundle.save(&path)?;
        bundles.push(path);
    }
    // Engine ids follow names too, rather than the order workers join.
    Store::open(&profile.store_path())?.reserve_engine_ids(&names, slots)?;
    let host = start_host(profile, None, policy, None).await?;
    let mut children = Vec::new();
    for bundle in &bundles {
        let mut worker = tokio::process::Command::new(&worker_bin);
        worker
            .arg("--bundle")
            .arg(bundle)
            .arg("--slots")
            .arg(slots.to_string())
            // One machine, one cache of staged files, kept with the profile.
            .arg("--cache-dir")
            .arg(profile.dir.join("worker-cache"))
            .kill_on_drop(true);
        if let Some(python) = &python {
            worker.arg("--python").arg(python);
        }
        let child = worker
            .spawn()
            .with_context(|| format!("starting {}", worker_bin.display()))?;
        children.push(child);
    }
    info!("cluster up: {n} workers x {slots} slots; Ctrl-C stops all");
    stop_signal().await?;
    info!("stopping workers");
    for child in &children {
        if let Some(pid) = child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    for mut child in children {
        if tokio::time::timeout(Duration::from_secs(3), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
    host.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `bramble-worker` next to this executable, unless `BRAMBLE_WORKER_BIN` says otherwise.
fn worker_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("BRAMBLE_WORKER_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().context("locating the bramble executable")?;
    let sibling = exe.with_file_name("bramble-worker");
    if sibling.exists() {
        return Ok(sibling);
    }
    bail!(
        "bramble-worker not found next to {} (build it, or set BRAMBLE_WORKER_BIN)",
        exe.display()
    )
}

async fn stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
