//! Printing results: `[stdout:ID]` lines for apply, raw output in input order (or completion
//! order) for map, one JSON object per item with `--json`. Failures and truncation are
//! reported on stderr, never silently.

use std::collections::BTreeMap;
use std::io::{self, Write};

use bramble_host::index_set::IndexSet;
use bramble_wire::{ItemOutput, JobSummary, Outcome, WorkerId, WorkerStatus};
use serde_json::json;

/// How results are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Order {
    /// `apply`: grouped by worker, in id order, once all are in.
    ByWorker,
    /// `map`: input order, each as soon as it and all before it are in.
    Input,
    /// `map --unordered`: completion order.
    Completion,
}

/// Collects results as they arrive and prints them in the chosen order.
pub(super) struct Printer {
    order: Order,
    json: bool,
    /// The items as submitted, for `--json`'s `item` field (empty for apply).
    items: Vec<String>,
    pending: BTreeMap<u64, (WorkerId, ItemOutput)>,
    /// Input order: every index below this was printed.
    next: u64,
    /// Indices received, so a result sent twice (after a reconnect) is shown once.
    seen: IndexSet,
    /// Results that did not exit 0.
    pub(super) failed: u64,
}

impl Printer {
    pub(super) fn new(order: Order, json: bool, items: Vec<String>) -> Self {
        Self {
            order,
            json,
            items,
            pending: BTreeMap::new(),
            next: 0,
            seen: IndexSet::default(),
            failed: 0,
        }
    }

    /// The first index to ask for when (re)connecting: everything before it is printed.
    pub(super) fn resume_from(&self) -> u64 {
        if self.order == Order::Input {
            self.next
        } else {
            0
        }
    }

    /// Takes one result; returns false if it was a duplicate.
    pub(super) fn push(&mut self, worker: WorkerId, output: ItemOutput) -> io::Result<bool> {
        if !self.seen.insert(output.index) {
            return Ok(false);
        }
        if !output.outcome.is_success() {
            self.failed += 1;
        }
        self.place(worker, output)?;
        Ok(true)
    }

    fn place(&mut self, worker: WorkerId, output: ItemOutput) -> io::Result<()> {
        match self.order {
            Order::Completion => self.print(worker, &output),
            Order::ByWorker => {
                self.pending.insert(output.index, (worker, output));
                Ok(())
            }
            Order::Input => {
                self.pending.insert(output.index, (worker, output));
                while let Some((w, out)) = self.pending.remove(&self.next) {
                    self.print(w, &out)?;
                    self.next += 1;
                }
                Ok(())
            }
        }
    }

    /// Prints whatever is still held back.
    pub(super) fn finish(&mut self) -> io::Result<()> {
        let mut rest: Vec<(WorkerId, ItemOutput)> =
            std::mem::take(&mut self.pending).into_values().collect();
        if self.order == Order::ByWorker {
            rest.sort_by_key(|(w, o)| (*w, o.index));
        }
        for (w, out) in rest {
            self.print(w, &out)?;
        }
        io::stdout().flush()
    }

    fn print(&self, worker: WorkerId, out: &ItemOutput) -> io::Result<()> {
        if self.json {
            let item = usize::try_from(out.index)
                .ok()
                .and_then(|i| self.items.get(i));
            let line = json!({
                "index": out.index,
                "item": item,
                "worker": worker.0,
                "outcome": outcome_word(&out.outcome),
                "exit": match out.outcome { Outcome::Exited(c) => Some(c), _ => None },
                "signal": match out.outcome { Outcome::Signaled(s) => Some(s), _ => None },
                "stdout": String::from_utf8_lossy(&out.stdout),
                "stderr": String::from_utf8_lossy(&out.stderr),
                "truncated_bytes": out.truncated_bytes,
                "ms": out.duration_ms,
            });
            return writeln!(io::stdout().lock(), "{line}");
        }
        if self.order == Order::ByWorker {
            let mut stdout = io::stdout().lock();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                writeln!(stdout, "[stdout:{worker}] {line}")?;
            }
            let mut stderr = io::stderr().lock();
            for line in String::from_utf8_lossy(&out.stderr).lines() {
                writeln!(stderr, "[stderr:{worker}] {line}")?;
            }
        } else {
            io::stdout().lock().write_all(&out.stdout)?;
            io::stderr().lock().write_all(&out.stderr)?;
        }
        let mut stderr = io::stderr().lock();
        if out.truncated_bytes > 0 {
            writeln!(
                stderr,
                "bramble: [item {} on worker {worker}] output truncated: {} bytes dropped (worker max_output_bytes)",
                out.index, out.truncated_bytes
            )?;
        }
        if !out.outcome.is_success() {
            writeln!(
                stderr,
                "bramble: [item {} on worker {worker}] {}",
                out.index,
                describe(&out.outcome)
            )?;
        }
        Ok(())
    }
}

fn outcome_word(o: &Outcome) -> &'static str {
    match o {
        Outcome::Exited(_) => "exited",
        Outcome::Signaled(_) => "signaled",
        Outcome::StartFailed(_) => "start-failed",
        Outcome::TimedOut => "timed-out",
        Outcome::Cancelled => "cancelled",
        Outcome::Lost => "lost",
    }
}

/// A failed outcome in words.
pub(super) fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Exited(c) => format!("exit status {c}"),
        Outcome::Signaled(s) => format!("killed by signal {s}"),
        Outcome::StartFailed(why) => format!("could not start: {why}"),
        Outcome::TimedOut => "timed out (process group killed)".into(),
        Outcome::Cancelled => "cancelled".into(),
        Outcome::Lost => "lost with its worker".into(),
    }
}

/// `jobs` as a table.
pub(super) fn jobs_table(jobs: &[JobSummary]) -> String {
    let mut lines = vec![format!(
        "{:>5}  {:<8} {:<10} {:>15} {:>7} {:>9}  COMMAND",
        "JOB", "KIND", "STATE", "DONE/TOTAL", "FAILED", "ELAPSED"
    )];
    for j in jobs {
        lines.push(format!(
            "{:>5}  {:<8} {:<10} {:>15} {:>7} {:>9}  {}",
            j.job.0,
            format!("{:?}", j.kind).to_lowercase(),
            format!("{:?}", j.state).to_lowercase(),
            format!("{}/{}", j.done, j.total),
            j.failed,
            format!("{:.1}s", j.elapsed_ms as f64 / 1000.0),
            j.command
        ));
    }
    lines.join("\n")
}

/// `jobs --json`.
pub(super) fn jobs_json(jobs: &[JobSummary]) -> serde_json::Result<String> {
    let rows: Vec<serde_json::Value> = jobs
        .iter()
        .map(|j| {
            json!({
                "job": j.job.0,
                "kind": format!("{:?}", j.kind).to_lowercase(),
                "state": format!("{:?}", j.state).to_lowercase(),
                "done": j.done,
                "total": j.total,
                "failed": j.failed,
                "elapsed_ms": j.elapsed_ms,
                "command": j.command,
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows)
}

/// `status --json`.
pub(super) fn status_json(rows: &[WorkerStatus]) -> serde_json::Result<String> {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let t = r.telemetry.as_ref();
            json!({
                "id": r.id.0,
                "name": r.name,
                "address": r.address,
                "arch": r.arch,
                "labels": r.labels,
                "slots": r.slots,
                "running": r.running,
                "done": r.done,
                "uptime_ms": r.connected_ms,
                "temp_c": t.and_then(|t| t.cpu_temp).map(|c| c.celsius()),
                "arm_mhz": t.and_then(|t| t.arm_clock).map(|m| m.0),
                "arm_max_mhz": t.and_then(|t| t.arm_max).map(|m| m.0),
                "throttled": t.and_then(|t| t.throttle).map(|f| format!("{:#x}", f.0)),
                "throttle_words": t.and_then(|t| t.throttle).map(|f| f.to_string()),
                "load1": t.and_then(|t| t.load_milli).map(|l| f64::from(l) / 1000.0),
                "mem_available_kib": t.and_then(|t| t.mem_available_kib),
                "mem_total_kib": t.and_then(|t| t.mem_total_kib),
                "startup_error": t.and_then(|t| t.startup_error.as_ref()).map(|e| e.as_str()),
                "speed": r.speed_milli.map(|s| f64::from(s) / 1000.0),
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows)
}
