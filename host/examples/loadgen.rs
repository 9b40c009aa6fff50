//! Load generator (issue 12, item 3): N simulated workers in one process against a running
//! host, each with a certificate of its own, over real QUIC and mutual TLS. A simulated worker
//! says Hello with one slot, reports telemetry every heartbeat, and answers every task at once
//! (its items "exit 0" without running anything), so what is measured is the host.
//!
//! ```text
//! cargo run --release -p bramble-host --example loadgen -- PROFILE_DIR N ITEMS HOST_PID
//! ```
//!
//! Prints one JSON line: how long the N workers took to register, the host's RSS with them
//! idle, its CPU over a 10 s window of their telemetry alone, and a map of ITEMS items (chunksize 1):
//! items per second and host CPU per item. With LOADGEN_REGISTER_ONLY set it stops after the
//! registration; with LOADGEN_PATIENT set every dial waits up to 2 s for the host's answer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bramble_certs::Bundle;
use bramble_client::{Client, JobEvent, Order};
use bramble_host::profile::{Again, Profile};
use bramble_net::{Backoff, DialError, Eager, FrameReader, Side, write_frame};
use bramble_wire::worker::CAP_COMMAND;
use bramble_wire::{
    Command, Hello, ItemOutput, ItemRange, JobKind, JobSpec, Outcome, Targets, TaskResult,
    Telemetry, ToHost, ToWorker, Work,
};

/// How long a dial waits once the eager dials are over (as the worker's).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Dials that got no answer in time and were made again.
static REDIALS: AtomicU64 = AtomicU64::new(0);
/// Dials the host refused because it was busy with other handshakes.
static BUSY: AtomicU64 = AtomicU64::new(0);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, n, items, host_pid] = args.as_slice() else {
        anyhow::bail!("usage: loadgen PROFILE_DIR N ITEMS HOST_PID");
    };
    let profile = Profile {
        dir: PathBuf::from(dir),
    };
    let (n, items): (usize, i64) = (n.parse()?, items.parse()?);
    let host_pid: u32 = host_pid.parse()?;
    raise_fd_limit();
    // The simulated workers share this machine's cores with the host, so a dial's answer can
    // be late for the load generator's own sake; LOADGEN_PATIENT=1 measures the host with
    // workers that wait up to 2 s for it from the first dial on (as after a busy refusal).
    let patient = std::env::var_os("LOADGEN_PATIENT").is_some();

    let mut bundles = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("sim-{i:04}");
        bundles.push(profile.enroll_worker(&name, Again::Replace)?.0);
    }

    // Each simulated worker says here when the host has welcomed it.
    let (joined, mut welcomed) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (started, cpu_before) = (Instant::now(), cpu_ms(host_pid)?);
    for (i, bundle) in bundles.into_iter().enumerate() {
        let joined = joined.clone();
        tokio::spawn(async move {
            // Dials as a worker does (`worker/src/net.rs`), with its dial policy.
            let mut eager = Eager::new();
            if patient {
                eager.busy();
            }
            let mut backoff = Backoff::new(i as u64 + 1);
            let mut unanswered: Option<Instant> = None;
            loop {
                let started = Instant::now();
                let wait = eager.dial_wait(unanswered.map(|since| since.elapsed()));
                let dialed = simulate(&bundle, wait.unwrap_or(CONNECT_TIMEOUT), i as u64, &joined);
                let e = match dialed.await {
                    Ok(()) => return,
                    Err(e) if e.is::<Joined>() => return eprintln!("sim-{i:04}: {e:#}"),
                    Err(e) => e,
                };
                if e.downcast_ref::<DialError>().is_some_and(|d| d.busy) {
                    BUSY.fetch_add(1, Ordering::Relaxed);
                    unanswered = None;
                    eager.busy();
                    tokio::time::sleep(backoff.busy_pause()).await;
                    continue;
                }
                if REDIALS.fetch_add(1, Ordering::Relaxed) < 10 {
                    eprintln!("sim-{i:04}: dialling again: {e:#}");
                }
                if wait.is_some() {
                    unanswered.get_or_insert(started);
                } else {
                    tokio::time::sleep(backoff.next_delay(false)).await;
                }
            }
        });
    }
    drop(joined);
    for _ in 0..n {
        let welcome = tokio::time::timeout(Duration::from_secs(120), welcomed.recv()).await;
        anyhow::ensure!(matches!(welcome, Ok(Some(()))), "workers never joined");
    }
    let registered_ms = started.elapsed().as_secs_f64() * 1000.0;
    let registration_cpu_ms = cpu_ms(host_pid)? - cpu_before;
    let mut report = serde_json::json!({
        "workers": n,
        "registered_ms": registered_ms,
        "registration_host_cpu_ms": registration_cpu_ms,
        "redials": REDIALS.load(Ordering::Relaxed),
        "refused_busy": BUSY.load(Ordering::Relaxed),
    });
    if std::env::var_os("LOADGEN_REGISTER_ONLY").is_some() {
        println!("{report}");
        return Ok(());
    }

    let idle = cpu_ms(host_pid)?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let telemetry_share = (cpu_ms(host_pid)? - idle) / 10_000.0;
    let rss_idle = rss_mib(host_pid)?;

    let client = Client::connect(Bundle::load(&profile.client_bundle_path())?).await?;
    let spec = JobSpec {
        kind: JobKind::Map,
        work: Work::Command {
            command: Command {
                argv: vec!["true".into()],
                shell: false,
                timeout_ms: 0,
            },
            persistent: false,
        },
        items: vec![],
        chunksize: 1,
        targets: Targets::All,
        retries: 0,
        range: Some(ItemRange {
            start: 0,
            end: items,
        }),
    };
    let before = cpu_ms(host_pid)?;
    let started = Instant::now();
    let mut stream = client.submit_and_follow(spec, Order::Completion).await?;
    let mut done = 0u64;
    while let Some(event) = stream.next().await? {
        match event {
            JobEvent::Item(_) => done += 1,
            JobEvent::Ended(_) => break,
            _ => {}
        }
    }
    let took = started.elapsed().as_secs_f64();
    let host_us = (cpu_ms(host_pid)? - before) * 1000.0 / done.max(1) as f64;
    client.close().await;
    if let Some(report) = report.as_object_mut() {
        report.extend([
            ("telemetry_core_share".into(), telemetry_share.into()),
            ("host_rss_mib".into(), rss_idle.into()),
            ("items".into(), done.into()),
            ("items_per_s".into(), (done as f64 / took).into()),
            ("host_us_per_item".into(), host_us.into()),
            ("host_rss_after_mib".into(), rss_mib(host_pid)?.into()),
        ]);
    }
    println!("{report}");
    Ok(())
}

/// One simulated worker: Hello, then telemetry every heartbeat and an instant answer to every
/// task, until the host closes.
async fn simulate(
    bundle: &Bundle,
    wait: Duration,
    boot_id: u64,
    joined: &tokio::sync::mpsc::UnboundedSender<()>,
) -> anyhow::Result<()> {
    let config = bramble_net::client_config(bundle, Side::Worker)?;
    // A socket of its own, as every Pi has.
    let (conn, _endpoint) = bramble_net::connect(bundle, &config, wait).await?;
    let (mut send, recv) = conn.open_bi().await?;
    let mut frames = FrameReader::new(recv);
    let mut out = Vec::new();
    let hello = ToHost::Hello(Hello {
        protocol_minor: bramble_wire::PROTOCOL_MINOR,
        capabilities: CAP_COMMAND,
        slots: 1,
        boot_id,
        labels: vec![],
        arch: "sim".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    });
    write_frame(&mut send, &hello, &mut out).await?;
    let heartbeat = match frames.next::<ToWorker>().await? {
        Some(ToWorker::Welcome(w)) => Duration::from_millis(u64::from(w.heartbeat_ms)),
        other => anyhow::bail!("expected Welcome, got {other:?}"),
    };
    let _ = joined.send(());
    serve(send, frames, heartbeat)
        .await
        .map_err(|e| e.context(Joined))
}

/// A failure after the worker joined (not worth dialling again for a measurement).
#[derive(Debug)]
struct Joined;

impl std::fmt::Display for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("after joining")
    }
}

async fn serve(
    mut send: quinn::SendStream,
    mut frames: FrameReader,
    heartbeat: Duration,
) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(heartbeat);
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                seq += 1;
                let telemetry = Telemetry { seq, ..Telemetry::default() };
                write_frame(&mut send, &ToHost::Telemetry(telemetry), &mut out).await?;
            }
            msg = frames.next::<ToWorker>() => match msg? {
                Some(ToWorker::RunTask(task)) => {
                    let result = TaskResult {
                        task: task.task,
                        attempt: task.attempt,
                        outputs: task
                            .items
                            .iter()
                            .map(|i| ItemOutput::ended(i.index, Outcome::Exited(0), 0))
                            .collect(),
                        engine: None,
                    };
                    write_frame(&mut send, &ToHost::TaskFinished(result), &mut out).await?;
                }
                Some(_) => {}
                None => return Ok(()),
            },
        }
    }
}

/// The host's CPU time so far (user + system), in ms.
fn cpu_ms(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks * 10.0)
}

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")?;
    Ok(kib / 1024.0)
}

/// A thousand connections need more descriptors than the usual soft limit of 1024.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
}
