//! The worker's IO around its [`Core`]: one connection's handshake, frames in and out, task
//! processes started and killed, telemetry every tick. Every decision is the core's; tasks
//! outlive connections, so this state survives reconnects.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bramble_net::{FrameReader, write_frame};
use bramble_wire::codec::encode_frame_to_slice;
use bramble_wire::worker::{CAP_COMMAND, CAP_PYTHON, CAP_STAGE, CAP_TEMPLATES};
use bramble_wire::{
    Hello, OutputChunk, PROTOCOL_MINOR, PythonReport, TaskId, TaskResult, ToHost, ToWorker, Work,
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::config::WorkerConfig;
use crate::core::{Action, Core, Input, Start};
use crate::engine::{self, Engines};
use crate::limits::ExecLimits;
use crate::sensors::Sensors;
use crate::sim::Sim;
use crate::stage::{self, Stage};
use crate::{coproc, exec, startup, watchdog};

/// Results up to this size go on the control stream; larger ones get their own stream so
/// they never hold up heartbeats.
const INLINE_LIMIT: usize = 16 * 1024;
/// Bytes of results kept while disconnected (and, apart, of results not yet confirmed).
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
    core: Core,
    /// Running tasks' kill switches.
    cancels: BTreeMap<TaskId, watch::Sender<bool>>,
    results_tx: mpsc::Sender<TaskResult>,
    results_rx: mpsc::Receiver<TaskResult>,
    sensors: Sensors,
    shutdown: watch::Receiver<bool>,
    pool: coproc::Pool,
    engines: Engines,
    /// What running Python items print, to stream to the host.
    output_tx: mpsc::UnboundedSender<OutputChunk>,
    output_rx: mpsc::UnboundedReceiver<OutputChunk>,
    /// What this worker's Python can do, once its probe answered.
    python: watch::Receiver<Option<PythonReport>>,
    startup_command: Option<Vec<String>>,
    /// Why the startup command failed after the latest connect (reported in telemetry).
    startup_error: Arc<Mutex<Option<String>>>,
    /// `--sim`: the simulated board whose model replaces the sensors.
    sim: Option<Sim>,
    /// Staged files, and the ones to ask the host for.
    stage: Stage,
    stage_asks: mpsc::UnboundedReceiver<[u8; 32]>,
    /// The board, as the host's dashboard shows it.
    board: Option<String>,
}

/// The open control stream of a connection.
struct Link<'a> {
    conn: &'a quinn::Connection,
    send: &'a mut quinn::SendStream,
    scratch: Vec<u8>,
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
        let limits = Arc::new(ExecLimits {
            sim: sim.as_ref().map(Sim::hooks),
            ..config.limits.clone()
        });
        let (output_tx, output_rx) = mpsc::unbounded_channel();
        let (stage, stage_asks) = Stage::new(&config.cache_dir, config.cache_max_bytes);
        Self {
            hello: Hello {
                protocol_minor: PROTOCOL_MINOR,
                capabilities: CAP_COMMAND | CAP_PYTHON | CAP_STAGE | CAP_TEMPLATES,
                slots: config.slots,
                boot_id,
                labels: config.labels.clone(),
                arch: std::env::consts::ARCH.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            python: probe_python(&config.python, &limits),
            limits,
            telemetry_interval: config.telemetry_interval,
            core: Core::new(slots, OUTBOX_LIMIT),
            cancels: BTreeMap::new(),
            results_tx,
            results_rx,
            sensors: Sensors::new(std::path::Path::new("/")),
            shutdown,
            pool: coproc::Pool::default(),
            engines: Engines::new(config.slots, &config.python),
            output_tx,
            output_rx,
            startup_command: config.startup_command.clone(),
            startup_error: Arc::default(),
            sim,
            stage,
            stage_asks,
            board: board(config.sim.as_ref()),
        }
    }

    /// Serves one connection until it is lost or the worker shuts down.
    pub(crate) async fn serve(&mut self, conn: quinn::Connection) -> Ended {
        let ended = self.serve_inner(&conn).await;
        self.step_offline(Input::Disconnected);
        match ended {
            Ok(()) => {
                conn.close(
                    bramble_wire::close::SHUTDOWN.into(),
                    b"worker shutting down",
                );
                Ended::Shutdown
            }
            Err(Lost(reason)) => {
                let fatal = conn
                    .close_reason()
                    .is_some_and(|e| bramble_net::is_refusal(&e));
                let reason = conn.close_reason().map_or(reason, |e| e.to_string());
                conn.close(bramble_wire::close::SHUTDOWN.into(), b"");
                Ended::Lost { reason, fatal }
            }
        }
    }

    /// Waits `delay` between connections while tasks run on; true if shutdown was requested.
    pub(crate) async fn idle_for(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        // The backoff can be longer than the watchdog period: keep pinging while waiting.
        let mut ping = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = &mut sleep => return false,
                Some(result) = self.results_rx.recv() => self.step_offline(Input::TaskEnded(result)),
                Some(_) = self.output_rx.recv() => {} // no one to stream it to
                _ = ping.tick() => watchdog::alive(),
                _ = self.shutdown.changed() => return true,
            }
        }
    }

    async fn serve_inner(&mut self, conn: &quinn::Connection) -> Result<(), Lost> {
        let (mut send, recv) = conn.open_bi().await?;
        let mut link = Link {
            conn,
            send: &mut send,
            scratch: Vec::new(),
        };
        write_frame(
            link.send,
            &ToHost::Hello(self.hello.clone()),
            &mut link.scratch,
        )
        .await?;
        let mut frames = FrameReader::new(recv);
        let welcome = tokio::time::timeout(WELCOME_TIMEOUT, frames.next::<ToWorker>())
            .await
            .map_err(|_| Lost("no welcome from host".into()))??;
        match welcome {
            Some(ToWorker::Welcome(w)) => {
                info!(
                    "joined as worker {} (heartbeat {} ms)",
                    w.worker, w.heartbeat_ms
                );
                watchdog::status(&format!("connected as worker {}", w.worker));
                if let Some(model) = self.board.clone().filter(|_| w.protocol_minor >= 1) {
                    write_msg(&mut link, &ToHost::Board { model }).await?;
                }
            }
            Some(ToWorker::Reject { reason }) => return Err(Lost(format!("rejected: {reason}"))),
            Some(other) => return Err(Lost(format!("expected welcome, got {other:?}"))),
            None => return Err(Lost("host closed the control stream".into())),
        }
        self.run_startup_command();
        self.feed(Input::Connected, &mut link).await?;
        let report = self.python.borrow_and_update().clone();
        if let Some(report) = report {
            write_msg(&mut link, &ToHost::Python(report)).await?;
        }
        // Staged files asked of the previous connection and not arrived.
        while self.stage_asks.try_recv().is_ok() {}
        for sha256 in self.stage.wanted() {
            write_msg(&mut link, &ToHost::FetchBlob { sha256 }).await?;
        }
        let mut tick = tokio::time::interval(self.telemetry_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tbuf = [0u8; 512];
        loop {
            tokio::select! {
                msg = frames.next::<ToWorker>() => {
                    let msg = msg?.ok_or_else(|| Lost("host closed the control stream".into()))?;
                    if let ToWorker::Reject { reason } = &msg {
                        return Err(Lost(format!("rejected: {reason}")));
                    }
                    self.feed(Input::Host(msg), &mut link).await?;
                }
                Some(result) = self.results_rx.recv() => {
                    self.feed(Input::TaskEnded(result), &mut link).await?;
                }
                Some(chunk) = self.output_rx.recv() => write_msg(&mut link, &ToHost::Output(chunk)).await?,
                Some(sha256) = self.stage_asks.recv() => {
                    write_msg(&mut link, &ToHost::FetchBlob { sha256 }).await?;
                }
                uni = conn.accept_uni() => {
                    // The host opens streams to this worker only to send staged files.
                    tokio::spawn(self.stage.clone().receive(uni?));
                }
                Ok(()) = self.python.changed() => {
                    let report = self.python.borrow_and_update().clone();
                    if let Some(report) = report {
                        write_msg(&mut link, &ToHost::Python(report)).await?;
                    }
                }
                _ = tick.tick() => {
                    watchdog::alive();
                    let report = ToHost::Telemetry(self.telemetry());
                    link.send.write_all(encode_frame_to_slice(&report, &mut tbuf)?).await?;
                }
                _ = self.shutdown.changed() => {
                    let _ = write_frame(link.send, &ToHost::Goodbye, &mut link.scratch).await;
                    return Ok(());
                }
            }
        }
    }

    /// One telemetry report: the sensors (or the simulated board) and the running tasks.
    fn telemetry(&mut self) -> bramble_wire::Telemetry {
        let running = self.core.running();
        let mut report = self.sensors.read(running);
        if let Some(sim) = &mut self.sim {
            let busy = f64::from(running) / f64::from(self.hello.slots.max(1));
            sim.report(busy, &mut report);
        }
        report.startup_error = self
            .startup_error
            .lock()
            .ok()
            .and_then(|e| e.as_deref().map(short));
        report
    }

    /// Gives the core an input and carries out the local actions it asks for (starting and
    /// killing processes, ending jobs); returns the frames it wants sent.
    fn step(&mut self, input: Input) -> Vec<ToHost> {
        if let Input::TaskEnded(result) = &input {
            self.cancels.remove(&result.task);
        }
        self.core.handle(input);
        let mut to_send = Vec::new();
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Start(start) => self.start(start),
                Action::Kill(task) => {
                    if let Some(cancel) = self.cancels.get(&task) {
                        let _ = cancel.send(true);
                    }
                }
                Action::EndJob(job) => {
                    self.pool.end_job(job);
                    self.engines.end_job(job);
                    self.stage.end_job(job);
                }
                Action::Send(msg) => to_send.push(msg),
            }
        }
        let dropped = self.core.take_dropped();
        if dropped > 0 {
            warn!("outbox full: dropped {dropped} old results (the host will re-run them)");
        }
        to_send
    }

    /// An input while no host is connected: the core sends nothing then.
    fn step_offline(&mut self, input: Input) {
        let unsent = self.step(input);
        debug_assert!(unsent.is_empty(), "the core sent while disconnected");
    }

    /// An input on a connection: local actions, then the frames, in order. After a failed
    /// write the rest is not attempted (the core keeps every result until it is confirmed).
    async fn feed(&mut self, input: Input, link: &mut Link<'_>) -> Result<(), Lost> {
        for msg in self.step(input) {
            write_msg(link, &msg).await?;
        }
        Ok(())
    }

    fn start(&mut self, start: Start) {
        let Start {
            spec,
            engine,
            function,
        } = start;
        let (cancel_tx, cancel_rx) = watch::channel(false);
        self.cancels.insert(spec.task, cancel_tx);
        let limits = self.limits.clone();
        let results = self.results_tx.clone();
        let pool = self.pool.clone();
        let engines = self.engines.clone();
        let output = self.output_tx.clone();
        let stage = self.stage.clone();
        tokio::spawn(async move {
            let result = match spec.work.clone() {
                Work::StagedCommand(staged) => {
                    stage::run_task(spec, &staged, &limits, &stage, &pool, cancel_rx).await
                }
                Work::Command {
                    command,
                    persistent: true,
                } => coproc::run_task(spec, &command, &limits, &pool, cancel_rx).await,
                Work::Command { command, .. } => {
                    exec::run_task(spec, &command, &limits, cancel_rx).await
                }
                Work::Python(_) => {
                    let run = engine::PythonRun {
                        engines: &engines,
                        limits: &limits,
                        function,
                        slot: engine.unwrap_or(0),
                        output,
                    };
                    engine::run_task(spec, run, cancel_rx).await
                }
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
            let outcome = startup::run_once(&argv, &limits, STARTUP_TIMEOUT).await;
            match &outcome {
                Ok(()) => info!("startup command succeeded"),
                Err(why) => warn!("startup command failed: {why}"),
            }
            if let Ok(mut slot) = slot.lock() {
                *slot = outcome.err();
            }
        });
    }
}

/// What board this is: the simulated one, or the device tree's model (a Pi's
/// `/proc/device-tree/model`, NUL-terminated); `None` elsewhere.
fn board(sim: Option<&crate::sim::SimConfig>) -> Option<String> {
    if let Some(sim) = sim {
        return Some(match &sim.preset {
            Some(p) => format!("simulated {}", p.name),
            None => "simulated".to_owned(),
        });
    }
    let model = std::fs::read_to_string("/proc/device-tree/model").ok()?;
    let model: String = model
        .trim_end_matches('\0')
        .trim()
        .chars()
        .take(120)
        .collect();
    (!model.is_empty()).then_some(model)
}

/// Probes the worker's Python in the background; the receiver holds the report once known.
fn probe_python(python: &str, limits: &Arc<ExecLimits>) -> watch::Receiver<Option<PythonReport>> {
    let (tx, rx) = watch::channel(None);
    let (python, limits) = (python.to_owned(), limits.clone());
    tokio::spawn(async move {
        let report = engine::probe(&python, &limits).await;
        match &report.problem {
            None => info!("python engines ready: {python}"),
            Some(why) => warn!("no python engines: {why}"),
        }
        let _ = tx.send(Some(report));
    });
    rx
}

/// Writes one frame: on the control stream, or a large result on a stream of its own.
async fn write_msg(link: &mut Link<'_>, msg: &ToHost) -> Result<(), Lost> {
    link.scratch.clear();
    bramble_wire::codec::encode_frame(msg, &mut link.scratch)?;
    if link.scratch.len() <= INLINE_LIMIT {
        link.send.write_all(&link.scratch).await?;
    } else {
        let mut uni = link.conn.open_uni().await?;
        uni.write_all(&link.scratch).await?;
        uni.finish()?;
    }
    if let ToHost::TaskFinished(r) = msg {
        debug!("sent the result of task {} (attempt {})", r.task, r.attempt);
    }
    Ok(())
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
