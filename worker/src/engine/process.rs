//! One engine process: `python -c <engine source>` in its own process group, frames written
//! to its stdin and read from its stdout, the tail of its own stderr kept for when it dies.
//!
//! Frames to the engine are queued and written together (a job's FORGETs, LOAD and RUN in one
//! write, so the engine wakes once for them); frames from it are read through a buffer.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::frames::{self, FromEngine, MAX_FROM_ENGINE, ToEngine};
use crate::exec::{exit_outcome, kill_group};
use crate::limits::{ExecLimits, check_allowed};
use crate::tail::StderrTail;

/// The engine program, carried inside the worker.
const ENGINE_SOURCE: &str = include_str!("../../../python/bramble/_engine.py");
/// Starting python and importing cloudpickle takes a while on a Pi (seconds with a cold SD
/// card): the engine's HELLO may take this long.
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);

/// A running engine.
pub(crate) struct Engine {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: StderrTail,
    /// Frames queued for the next write.
    queued: Vec<u8>,
    sim: Option<Arc<crate::sim::SimHooks>>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        kill_group(self.child.id());
        if let (Some(sim), Some(pid)) = (&self.sim, self.child.id()) {
            sim.untrack(pid);
        }
    }
}

impl Engine {
    /// Starts an engine with `python` and waits for its HELLO.
    pub(crate) async fn start(python: &str, limits: &ExecLimits) -> Result<Self, String> {
        check_allowed(python, limits)?;
        let args = ["-c".to_owned(), ENGINE_SOURCE.to_owned()];
        let mut cmd = limits.command(python, &args, Stdio::piped());
        cmd.env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let mut child = cmd.spawn().map_err(|e| format!("{python}: {e}"))?;
        if let (Some(sim), Some(pid)) = (&limits.sim, child.id()) {
            sim.track(pid);
        }
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("engine pipes missing".into());
        };
        let mut engine = Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            stderr: StderrTail::follow(stderr),
            queued: Vec::new(),
            sim: limits.sim.clone(),
        };
        match tokio::time::timeout(HELLO_TIMEOUT, engine.next()).await {
            Ok(Ok(FromEngine::Hello { .. })) => Ok(engine),
            Ok(Ok(other)) => Err(format!("the engine said {other:?} before hello")),
            Ok(Err(())) => Err(engine.death().await),
            Err(_) => Err(format!(
                "{python} did not start an engine within {}s",
                HELLO_TIMEOUT.as_secs()
            )),
        }
    }

    /// Queues one frame for the next [`Engine::send`].
    pub(crate) fn queue(&mut self, msg: &ToEngine<'_>) {
        frames::encode(msg, &mut self.queued);
    }

    /// Sends `msg` after what is queued, in one write; `Err` if the engine is gone.
    pub(crate) async fn send(&mut self, msg: &ToEngine<'_>) -> Result<(), ()> {
        self.queue(msg);
        let written = self.stdin.write_all(&self.queued).await;
        self.queued.clear();
        written.map_err(drop)?;
        self.stdin.flush().await.map_err(drop)
    }

    /// The next frame; `Err` if the engine died or broke the protocol (see [`Engine::death`]).
    pub(crate) async fn next(&mut self) -> Result<FromEngine, ()> {
        let mut len = [0u8; 4];
        self.stdout.read_exact(&mut len).await.map_err(drop)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FROM_ENGINE {
            return Err(());
        }
        let mut body = vec![0u8; len];
        self.stdout.read_exact(&mut body).await.map_err(drop)?;
        frames::decode(&body).map_err(drop)
    }

    /// Interrupts the running item (SIGINT, as Ctrl-C would).
    pub(crate) fn interrupt(&self) {
        let pid = self
            .child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
    }

    /// Kills the engine's whole process group at once.
    pub(crate) fn kill(&self) {
        kill_group(self.child.id());
    }

    /// Says how the engine ended (it is killed if it has not): exit status and the tail of its
    /// stderr.
    pub(crate) async fn death(mut self) -> String {
        let status = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        kill_group(self.child.id());
        let how = match status {
            Ok(Ok(status)) => exit_outcome(status).to_string(),
            _ => "stopped answering; killed".to_owned(),
        };
        let tail = self.stderr.finish().await;
        let tail = String::from_utf8_lossy(&tail);
        let last: Vec<&str> = tail.lines().rev().take(40).collect();
        let mut msg = format!("{how}; it was restarted with an empty namespace");
        if !last.is_empty() {
            msg.push_str("; its stderr ended with:\n");
            for line in last.iter().rev() {
                msg.push_str(line);
                msg.push('\n');
            }
        }
        msg
    }
}
