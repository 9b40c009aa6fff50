//! One connection to the host: hello/welcome, then a loop that runs tasks, streams their
//! results and sends telemetry. Tasks outlive the connection; their results are stashed in
//! the agent's outbox until the next one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bramble_wire::codec::{encode_frame, encode_frame_to_slice};
use bramble_wire::worker::CAP_COMMAND;
use bramble_wire::{
    FrameDecoder, Hello, ItemOutput, Outcome, PROTOCOL_MINOR, TaskId, TaskResult, TaskSpec, ToHost,
    ToWorker,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::agent::{Admit, Agent};
use crate::config::WorkerConfig;
use crate::coproc;
use crate::exec::{self, ExecLimits};
use crate::net::is_refusal;
use crate::sensors::Sensors;
use crate::sim::Sim;
use crate::watchdog;

/// Results up to this size go on the control stream; larger ones get their own stream so
/// they never hold up heartbeats.
const INLINE_LIMIT: usize = 16 * 1024;
/// Bytes of results kept while disconnected.
const OUTBOX_LIMIT: usize = 64 << 20;
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// The startup command is killed after this long.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(300);

/// How a session ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// SIGTERM/SIGINT: the worker exits.
    Shutdown,
    /// The connection is gone; `fatal` if the host refused us (retry slowly).
    Lost { reason: String, fatal: bool },
}

struct Lost(String);

impl<E: std::fmt::Display> From<E> for Lost {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

/// The worker's state that survives reconnects.
pub(crate) struct Worker {
    hello: Hello,
    limits: Arc<ExecLimits>,
    telemetry_interval: Duration,
    agent: Agent,
    cancels: BTreeMap<TaskId, watch::Sender<bool>>,
    results_tx: mpsc::Sender<TaskResult>,
    results_rx: mpsc::Receiver<TaskResult>,
    sensors: Sensors,
    shutdown: watch::Receiver<bool>,
    pool: coproc::Pool,
    startup_command: Option<Vec<String>>,
    /// Why the startup command failed after the latest connect (reported in telemetry).
    startup_error: Arc<Mutex<Option<String>>>,
    /// `--sim`: the simulated board whose model replaces the sensors.
    sim: Option<Sim>,
    /// The connected host reports recorded results (`ResultRecorded`, minor 2): keep sent
    /// results until then.
    host_acks: bool,
}

impl Worker {
    pub(crate) fn new(
        config: &WorkerConfig,
        boot_id: u64,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let slots = usize::from(config.slots);
        let (results_tx, results_rx) = mpsc::channel(slots * 2 + 8);
        let sim = config.sim.clone().map(Sim::new);
        if let Some(sim) = sim
            .as_ref()
            .filter(|_| config.sim.as_ref().is_some_and(|c| c.duty_cycle))
        {
            tokio::spawn(crate::sim::duty_cycle(sim.hooks()));
        }
        Self {
            hello: Hello {
                protocol_minor: PROTOCOL_MINOR,
                capabilities: CAP_COMMAND,
                slots: config.slots,
                boot_id,
                labels: config.labels.clone(),
                arch: std::env::consts::ARCH.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            limits: Arc::new(ExecLimits {
                sim: sim.as_ref().map(Sim::hooks),
                ..config.limits.clone()
            }),
            telemetry_interval: config.telemetry_interval,
            agent: Agent::new(slots, OUTBOX_LIMIT),
            cancels: BTreeMap::new(),
            results_tx,
            results_rx,
            sensors: Sensors::new(std::path::Path::new("/")),
            shutdown,
            pool: coproc::Pool::default(),
            startup_command: config.startup_command.clone(),
            startup_error: Arc::default(),
            sim,
            host_acks: false,
        }
    }

    /// Serves one connection until it is lost or the worker shuts down.
    pub(crate) async fn serve(&mut self, conn: quinn::Connection) -> Ended {
        let ended = self.serve_inner(&conn).await;
        warn_dropped(self.agent.connection_lost());
        match ended {
            Ok(()) => {
                conn.close(
                    bramble_wire::close::SHUTDOWN.into(),
                    b"worker shutting down",
                );
                Ended::Shutdown
            }
            Err(Lost(reason)) => {
                let fatal = conn.close_reason().is_some_and(|e| is_refusal(&e));
                let reason = conn.close_reason().map_or(reason, |e| e.to_string());
                conn.close(bramble_wire::close::SHUTDOWN.into(), b"");
                Ended::Lost { reason, fatal }
            }
        }
    }

    /// Waits `delay` between connections, stashing results; true if shutdown was requested.
    pub(crate) async fn idle_for(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        // The backoff can be longer than the watchdog period: keep pinging while waiting.
        let mut ping = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = &mut sleep => return false,
                Some(result) = self.results_rx.recv() => self.stash(result),
                _ = ping.tick() => watchdog::alive(),
                _ = self.shutdown.changed() => return true,
            }
        }
    }

    async fn serve_inner(&mut self, conn: &quinn::Connection) -> Result<(), Lost> {
        let (mut send, mut recv) = conn.open_bi().await?;
        let mut frame = Vec::new();
        encode_frame(&ToHost::Hello(self.hello.clone()), &mut frame)?;
        send.write_all(&frame).await?;
        let mut decoder = FrameDecoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        let welcome =
            tokio::time::timeout(WELCOME_TIMEOUT, next_msg(&mut recv, &mut decoder, &mut buf))
                .await
                .map_err(|_| Lost("no welcome from host".into()))??;
        match welcome {
            ToWorker::Welcome(w) => {
                info!(
                    "joined as worker {} (heartbeat {} ms)",
                    w.worker, w.heartbeat_ms
                );
                self.host_acks = w.protocol_minor >= 2;
                watchdog::status(&format!("connected as worker {}", w.worker));
            }
            ToWorker::Reject { reason } => return Err(Lost(format!("rejected: {reason}"))),
            other => return Err(Lost(format!("expected welcome, got {other:?}"))),
        }
        self.run_startup_command();
        // Frames that arrived together with the welcome (a resumed job's tasks) are already
        // in the decoder: handle them before waiting for more bytes.
        while let Some(msg) = decoder.next_msg::<ToWorker>()? {
            self.handle(conn, &mut send, msg).await?;
        }
        for result in self.agent.drain_outbox() {
            info!(
                "delivering task {} finished while disconnected",
                result.task
            );
            self.send_result(conn, &mut send, result).await?;
        }
        let mut tick = tokio::time::interval(self.telemetry_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tbuf = [0u8; 512];
        loop {
            tokio::select! {
                read = recv.read(&mut buf) => {
                    let n = read?.ok_or_else(|| Lost("host closed the control stream".into()))?;
                    decoder.push(&buf[..n]);
                    while let Some(msg) = decoder.next_msg::<ToWorker>()? {
                        self.handle(conn, &mut send, msg).await?;
                    }
                }
                Some(result) = self.results_rx.recv() => self.send_result(conn, &mut send, result).await?,
                _ = tick.tick() => {
                    watchdog::alive();
                    let mut report = self.sensors.read(self.agent.running());
                    if let Some(sim) = &mut self.sim {
                        let busy = f64::from(self.agent.running()) / f64::from(self.hello.slots.max(1));
                        sim.report(busy, &mut report);
                    }
                    report.startup_error = self.startup_error.lock().ok().and_then(|e| e.as_deref().map(short));
                    send.write_all(encode_frame_to_slice(&ToHost::Telemetry(report), &mut tbuf)?).await?;
                }
                _ = self.shutdown.changed() => {
                    frame.clear();
                    encode_frame(&ToHost::Goodbye, &mut frame)?;
                    let _ = send.write_all(&frame).await;
                    return Ok(());
                }
            }
        }
    }

    async fn handle(
        &mut self,
        conn: &quinn::Connection,
        send: &mut quinn::SendStream,
        msg: ToWorker,
    ) -> Result<(), Lost> {
        match msg {
            ToWorker::RunTask(spec) => match self.agent.admit(spec) {
                Admit::Start(spec) => self.start(spec),
                Admit::Queued | Admit::Duplicate => {}
                Admit::Full(spec) if self.host_acks => {
                    warn!("task {} refused: no free slot, or draining", spec.task);
                    let msg = ToHost::TaskRefused {
                        task: spec.task,
                        attempt: spec.attempt,
                    };
                    let mut frame = Vec::new();
                    encode_frame(&msg, &mut frame)?;
                    send.write_all(&frame).await?;
                }
                Admit::Full(spec) => {
                    warn!("task {} refused: all slots busy", spec.task);
                    let result = refused(&spec, "worker has no free slot");
                    self.send_result(conn, send, result).await?;
                }
            },
            ToWorker::CancelTask { task } => {
                // Waiting tasks are simply dropped; running ones are killed.
                if !self.agent.cancel_waiting(task)
                    && let Some(cancel) = self.cancels.get(&task)
                {
                    let _ = cancel.send(true);
                }
            }
            ToWorker::Drain => {
                info!("drain requested: finishing running tasks, taking no new ones");
                self.agent.drain();
            }
            ToWorker::JobEnded { job } => self.pool.end_job(job),
            ToWorker::ResultRecorded { task, attempt } => self.agent.recorded(task, attempt),
            ToWorker::Reject { reason } => return Err(Lost(format!("rejected: {reason}"))),
            ToWorker::Welcome(_) => return Err(Lost("unexpected second welcome".into())),
        }
        Ok(())
    }

    fn start(&mut self, spec: TaskSpec) {
        let (cancel_tx, cancel_rx) = watch::channel(false);
        self.cancels.insert(spec.task, cancel_tx);
        let limits = self.limits.clone();
        let results = self.results_tx.clone();
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let result = if spec.persistent {
                coproc::run_task(spec, &limits, &pool, cancel_rx).await
            } else {
                exec::run_task(spec, &limits, cancel_rx).await
            };
            // Fails only when the worker is exiting.
            let _ = results.send(result).await;
        });
    }

    /// Runs the configured startup command in the background; its failure is kept for the
    /// telemetry reports (and so for `bramble status`).
    fn run_startup_command(&self) {
        let Some(argv) = self.startup_command.clone() else {
            return;
        };
        let slot = self.startup_error.clone();
        let limits = self.limits.clone();
        tokio::spawn(async move {
            let outcome = exec::run_once(&argv, &limits, STARTUP_TIMEOUT).await;
            match &outcome {
                Ok(()) => info!("startup command succeeded"),
                Err(why) => warn!("startup command failed: {why}"),
            }
            if let Ok(mut slot) = slot.lock() {
                *slot = outcome.err();
            }
        });
    }

    fn stash(&mut self, mut result: TaskResult) {
        self.forget(&mut result);
        warn_dropped(self.agent.stash(result));
    }

    /// A task ended: free its slot for the task waiting for one, if any, and label the result
    /// with the attempt the host expects (a no-op for a result already forgotten).
    fn forget(&mut self, result: &mut TaskResult) {
        self.cancels.remove(&result.task);
        if let Some(next) = self.agent.finished(result) {
            self.start(next);
        }
    }

    async fn send_result(
        &mut self,
        conn: &quinn::Connection,
        send: &mut quinn::SendStream,
        mut result: TaskResult,
    ) -> Result<(), Lost> {
        self.forget(&mut result);
        let mut frame = Vec::new();
        let msg = ToHost::TaskFinished(result);
        encode_frame(&msg, &mut frame)?;
        let sent = if frame.len() <= INLINE_LIMIT {
            send.write_all(&frame).await.map_err(Lost::from)
        } else {
            send_on_own_stream(conn, &frame).await
        };
        let ToHost::TaskFinished(result) = msg else {
            return sent;
        };
        match &sent {
            Err(e) => {
                warn!(
                    "result of task {} kept for the next connection: {}",
                    result.task, e.0
                );
                self.stash(result);
            }
            // Written is not delivered: the connection may be dead and not know it yet.
            Ok(()) if self.host_acks => warn_dropped(self.agent.sent(result)),
            Ok(()) => {}
        }
        sent
    }
}

/// Results dropped from a full outbox cost a re-run on the host, never a lost item.
fn warn_dropped(dropped: usize) {
    if dropped > 0 {
        warn!("outbox full: dropped {dropped} old results (the host will re-run them)");
    }
}

async fn send_on_own_stream(conn: &quinn::Connection, frame: &[u8]) -> Result<(), Lost> {
    let mut uni = conn.open_uni().await?;
    uni.write_all(frame).await?;
    uni.finish()?;
    Ok(())
}

async fn next_msg(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
    buf: &mut [u8],
) -> Result<ToWorker, Lost> {
    loop {
        if let Some(msg) = decoder.next_msg()? {
            return Ok(msg);
        }
        let n = recv
            .read(buf)
            .await?
            .ok_or_else(|| Lost("host closed the control stream".into()))?;
        decoder.push(&buf[..n]);
    }
}

fn refused(spec: &TaskSpec, why: &str) -> TaskResult {
    let outputs = spec
        .items
        .iter()
        .map(|i| ItemOutput {
            index: i.index,
            outcome: Outcome::StartFailed(why.to_owned()),
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated_bytes: 0,
            duration_ms: 0,
        })
        .collect();
    TaskResult {
        task: spec.task,
        attempt: spec.attempt,
        outputs,
    }
}

/// The first 120 bytes (on a character boundary) of a message, for a fixed-size report.
fn short(s: &str) -> heapless::String<120> {
    let mut out = heapless::String::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}
