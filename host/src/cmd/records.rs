//! `--joblog FILE` and `--results DIR`: GNU parallel's records of a run, written as results
//! are printed. The joblog has GNU parallel's columns; `--results` keeps each item's stdout,
//! stderr and sequence number under `DIR/1/VALUE/` (`DIR/1/A/2/B/` for several sources).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bramble_wire::template::{SOURCE_SEPARATOR, fill};
use bramble_wire::{ItemOutput, JobSpec, Outcome, WorkerId};

/// Where a run's records go.
pub(super) struct Records {
    joblog: Option<std::fs::File>,
    results: Option<PathBuf>,
}

impl Records {
    /// Opens the joblog (writing its header) and creates the results directory.
    pub(super) fn open(joblog: Option<&Path>, results: Option<&Path>) -> anyhow::Result<Self> {
        let joblog = match joblog {
            Some(path) => {
                let mut f = std::fs::File::create(path)
                    .with_context(|| format!("--joblog {}", path.display()))?;
                writeln!(
                    f,
                    "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"
                )?;
                Some(f)
            }
            None => None,
        };
        if let Some(dir) = results {
            std::fs::create_dir_all(dir).with_context(|| format!("--results {}", dir.display()))?;
        }
        Ok(Self {
            joblog,
            results: results.map(Path::to_owned),
        })
    }

    /// Records one item's result.
    pub(super) fn write(
        &mut self,
        worker: WorkerId,
        out: &ItemOutput,
        spec: &JobSpec,
    ) -> anyhow::Result<()> {
        let item = spec
            .item(out.index)
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        if let Some(f) = &mut self.joblog {
            let argv = spec.work.command().map_or_else(
                || vec![spec.work.describe()],
                |(c, _)| {
                    c.argv
                        .iter()
                        .map(|a| fill(a, out.index, item.as_deref(), false))
                        .collect()
                },
            );
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let runtime = out.duration_ms as f64 / 1000.0;
            writeln!(
                f,
                "{}\tworker {worker}\t{:.3}\t{runtime:.3}\t0\t{}\t{}\t{}\t{}",
                out.index + 1,
                now - runtime,
                out.stdout.len() + out.stderr.len(),
                exit_value(&out.outcome),
                match out.outcome {
                    Outcome::Signaled(s) => s,
                    _ => 0,
                },
                argv.join(" ")
            )?;
        }
        if let Some(root) = &self.results {
            let mut dir = root.clone();
            let values: Vec<&str> = item
                .as_deref()
                .map_or_else(Vec::new, |v| v.split(SOURCE_SEPARATOR).collect());
            for (n, value) in values.iter().enumerate() {
                dir.push((n + 1).to_string());
                dir.push(escape(value));
            }
            if values.is_empty() {
                dir.push("1");
                dir.push(format!("worker-{worker}"));
            }
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("--results {}", dir.display()))?;
            std::fs::write(dir.join("stdout"), &out.stdout)?;
            std::fs::write(dir.join("stderr"), &out.stderr)?;
            std::fs::write(dir.join("seq"), format!("{}\n", out.index + 1))?;
        }
        Ok(())
    }
}

/// GNU parallel's Exitval: the exit status; -1 when the item did not exit by itself.
fn exit_value(outcome: &Outcome) -> i32 {
    match outcome {
        Outcome::Exited(c) => *c,
        Outcome::Returned => 0,
        Outcome::Raised => 1,
        _ => -1,
    }
}

/// A value as one path component, as GNU parallel writes it: `\` → `\\`, `/` → `\_`; an empty
/// value or a dot-name gets a leading `\`.
fn escape(value: &str) -> String {
    let v = value.replace('\\', "\\\\").replace('/', "\\_");
    if v.is_empty() || v == "." || v == ".." {
        format!("\\{v}")
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_single_path_components() {
        assert_eq!(escape("a/b"), "a\\_b");
        assert_eq!(escape("c:\\x"), "c:\\\\x");
        assert_eq!(escape(".."), "\\..");
        assert_eq!(escape(""), "\\");
        assert_eq!(exit_value(&Outcome::Signaled(9)), -1);
    }
}
