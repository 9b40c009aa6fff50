//! Printing results: `[stdout:ID]` lines for apply, raw output in input order (or completion
//! order) for map, one JSON object per item with `--json`. Failures and truncation are
//! reported on stderr, never silently.

use std::collections::BTreeMap;
use std::io::{self, Write};

use bramble_wire::{ItemOutput, Outcome, WorkerId, WorkerStatus};
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
    next: u64,
}

impl Printer {
    pub(super) fn new(order: Order, json: bool, items: Vec<String>) -> Self {
        Self {
            order,
            json,
            items,
            pending: BTreeMap::new(),
            next: 0,
        }
    }

    pub(super) fn push(&mut self, worker: WorkerId, output: ItemOutput) -> io::Result<()> {
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
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows)
}
