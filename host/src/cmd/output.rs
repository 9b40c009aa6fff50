//! Printing: `[stdout:ID]` lines for apply, raw output for map and scatter (in the order the
//! client library gives results), one JSON object per item with `--json`; job and status
//! tables. Failures and truncation are reported on stderr, never silently.

use std::io::{self, Write};
use std::path::PathBuf;

use std::collections::BTreeMap;

use bramble_wire::{ItemOutput, JobId, JobSpec, JobSummary, WorkerId, WorkerStatus};

use super::records::Records;
use serde_json::json;

/// How results are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    /// `apply`: `[stdout:ID] line`, grouped by worker in id order, once all are in.
    ByWorker,
    /// `map`, `scatter`, `results`: each result's raw output as it is given (the client
    /// library puts them in input or completion order).
    Lines,
}

/// Prints results as they are given (or, by worker, at the end).
pub(super) struct Printer {
    layout: Layout,
    json: bool,
    /// The job as submitted, for `--json`'s `item` field.
    spec: Option<JobSpec>,
    /// `ByWorker`: everything, until `finish`.
    held: Vec<(WorkerId, ItemOutput)>,
    /// Results that did not exit 0.
    pub(super) failed: u64,
    /// `--fetch`: where items' fetched files are written.
    pub(super) fetch_dir: Option<PathBuf>,
    /// `--tag`: each line of output starts with its item (needs `spec`).
    pub(super) tag: bool,
    /// `--joblog`, `--results` (need `spec`).
    pub(super) records: Option<Records>,
}

impl Printer {
    pub(super) fn new(layout: Layout, json: bool, spec: Option<JobSpec>) -> Self {
        Self {
            layout,
            json,
            spec,
            held: Vec::new(),
            failed: 0,
            fetch_dir: None,
            tag: false,
            records: None,
        }
    }

    /// Takes one result (each index comes once).
    pub(super) fn push(&mut self, worker: WorkerId, output: ItemOutput) -> io::Result<()> {
        if !output.outcome.is_success() {
            self.failed += 1;
        }
        if let (Some(records), Some(spec)) = (&mut self.records, &self.spec)
            && let Err(e) = records.write(worker, &output, spec)
        {
            eprintln!("bramble: [item {}] {e:#}", output.index);
        }
        match self.layout {
            Layout::Lines => self.print(worker, &output),
            Layout::ByWorker => {
                self.held.push((worker, output));
                Ok(())
            }
        }
    }

    /// Prints whatever is still held back.
    pub(super) fn finish(&mut self) -> io::Result<()> {
        let mut rest = std::mem::take(&mut self.held);
        rest.sort_by_key(|(w, o)| (*w, o.index));
        for (w, out) in rest {
            self.print(w, &out)?;
        }
        io::stdout().flush()
    }

    /// `--tag`'s prefix for an item: its values, tab-separated.
    fn tag_of(&self, index: u64) -> Option<String> {
        if !self.tag {
            return None;
        }
        let item = self.spec.as_ref()?.item(index)?;
        let text = String::from_utf8_lossy(&item);
        Some(text.replace(bramble_wire::template::SOURCE_SEPARATOR, "\t"))
    }

    fn print(&self, worker: WorkerId, out: &ItemOutput) -> io::Result<()> {
        let fetched = match &self.fetch_dir {
            Some(dir) if !out.value.is_empty() => super::stage::write_fetched(dir, &out.value)
                .unwrap_or_else(|e| {
                    eprintln!("bramble: [item {} on worker {worker}] {e:#}", out.index);
                    Vec::new()
                }),
            _ => Vec::new(),
        };
        if self.json {
            let item = self.spec.as_ref().and_then(|s| s.item(out.index));
            let item = item.as_deref().map(String::from_utf8_lossy);
            let line = json!({
                "index": out.index,
                "item": item,
                "worker": worker.0,
                "outcome": out.outcome.word(),
                "exit": match out.outcome { bramble_wire::Outcome::Exited(c) => Some(c), _ => None },
                "signal": match out.outcome { bramble_wire::Outcome::Signaled(s) => Some(s), _ => None },
                "stdout": String::from_utf8_lossy(&out.stdout),
                "stderr": String::from_utf8_lossy(&out.stderr),
                "truncated_bytes": out.truncated_bytes,
                "ms": out.duration_ms,
                "fetched": fetched,
            });
            return writeln!(io::stdout().lock(), "{line}");
        }
        if self.layout == Layout::ByWorker {
            let mut stdout = io::stdout().lock();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                writeln!(stdout, "[stdout:{worker}] {line}")?;
            }
            let mut stderr = io::stderr().lock();
            for line in String::from_utf8_lossy(&out.stderr).lines() {
                writeln!(stderr, "[stderr:{worker}] {line}")?;
            }
        } else if let Some(tag) = self.tag_of(out.index) {
            let mut stdout = io::stdout().lock();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                writeln!(stdout, "{tag}\t{line}")?;
            }
            let mut stderr = io::stderr().lock();
            for line in String::from_utf8_lossy(&out.stderr).lines() {
                writeln!(stderr, "{tag}\t{line}")?;
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
                out.index, out.outcome
            )?;
        }
        Ok(())
    }
}

/// `jobs` as a table.
pub(super) fn jobs_table(jobs: &[JobSummary], names: &BTreeMap<JobId, String>) -> String {
    let mut lines = vec![format!(
        "{:>5}  {:<16} {:<8} {:<10} {:>15} {:>7} {:>9}  COMMAND",
        "JOB", "NAME", "KIND", "STATE", "DONE/TOTAL", "FAILED", "ELAPSED"
    )];
    for j in jobs {
        lines.push(format!(
            "{:>5}  {:<16} {:<8} {:<10} {:>15} {:>7} {:>9}  {}",
            j.job.0,
            names.get(&j.job).map_or("-", String::as_str),
            format!("{:?}", j.kind).to_lowercase(),
            format!("{:?}", j.state).to_lowercase(),
            format!("{}/{}", j.done, j.total),
            j.failed,
            format!("{:.1}s", j.elapsed_ms as f64 / 1000.0),
            one_line(&j.command, COMMAND_WIDTH)
        ));
    }
    lines.join("\n")
}

/// Characters of a job's command shown in the `jobs` table (`--json` has all of it).
const COMMAND_WIDTH: usize = 60;

/// `text` on one line of at most `width` characters: line breaks and tabs as `\n` and `\t`,
/// other control characters dropped, the cut marked with `…`.
fn one_line(text: &str, width: usize) -> String {
    let mut line = String::new();
    for c in text.chars() {
        match c {
            '\n' => line.push_str("\\n"),
            '\t' => line.push_str("\\t"),
            c if c.is_control() => {}
            c => line.push(c),
        }
    }
    if line.chars().count() > width {
        line = line.chars().take(width.saturating_sub(1)).collect();
        line.push('…');
    }
    line
}

/// `jobs --json`.
pub(super) fn jobs_json(
    jobs: &[JobSummary],
    names: &BTreeMap<JobId, String>,
) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&jobs_values(jobs, names))
}

/// `jobs --json`'s objects (the dashboard sends them too).
pub(super) fn jobs_values(
    jobs: &[JobSummary],
    names: &BTreeMap<JobId, String>,
) -> Vec<serde_json::Value> {
    jobs.iter()
        .map(|j| {
            json!({
                "job": j.job.0,
                "name": names.get(&j.job),
                "kind": format!("{:?}", j.kind).to_lowercase(),
                "state": format!("{:?}", j.state).to_lowercase(),
                "done": j.done,
                "total": j.total,
                "failed": j.failed,
                "elapsed_ms": j.elapsed_ms,
                "command": j.command,
            })
        })
        .collect()
}

/// `status --json`.
pub(super) fn status_json(rows: &[WorkerStatus]) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&status_values(rows))
}

/// `status --json`'s objects (the dashboard sends them too).
pub(super) fn status_values(rows: &[WorkerStatus]) -> Vec<serde_json::Value> {
    rows.iter()
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
                "draining": r.draining,
                "engines": r.engines.iter().map(|e| e.0).collect::<Vec<_>>(),
                "python": r.python.as_ref().map(|p| json!({
                    "interpreter": p.interpreter,
                    "version": p.version.map(|(a, b, c)| format!("{a}.{b}.{c}")),
                    "problem": p.problem,
                })),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_line_script_stays_on_its_row() {
        assert_eq!(one_line("sh -c 'a\n\tb'", 60), r"sh -c 'a\n\tb'");
        let long = "x".repeat(100);
        let cut = one_line(&long, 10);
        assert_eq!(cut.chars().count(), 10);
        assert!(cut.ends_with('…'));
        assert_eq!(one_line("a\x1b[2Jb", 60), "a[2Jb");
    }
}
