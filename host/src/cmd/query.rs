//! `ids`, `status`, `jobs`, `forget` and `prune`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use bramble_client::Client;
use bramble_wire::{HostHealth, JobId, JobState, Refusal, WorkerStatus};

use super::output::{jobs_json, jobs_table};
use crate::cli::JobStateArg;

pub(super) async fn ids(client: Client) -> anyhow::Result<ExitCode> {
    let ids = client.ids().await?;
    let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
    println!("[{}]", list.join(", "));
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn jobs(
    client: Client,
    state: Option<JobStateArg>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (jobs, names) = tokio::join!(client.jobs(), client.job_names());
    let (mut jobs, names) = (jobs?, names?.into_iter().collect());
    if let Some(state) = state {
        let want = match state {
            JobStateArg::Running => JobState::Running,
            JobStateArg::Done => JobState::Done,
            JobStateArg::Cancelled => JobState::Cancelled,
        };
        jobs.retain(|j| j.state == want);
    }
    println!(
        "{}",
        if json {
            jobs_json(&jobs, &names)?
        } else {
            jobs_table(&jobs, &names)
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `forget JOB...`.
pub(super) async fn forget(client: Client, jobs: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut ids = Vec::with_capacity(jobs.len());
    for job in &jobs {
        ids.push(super::work::resolve_job(&client, job).await?);
    }
    let gone = client.forget(ids).await?;
    println!("forgot {}", list(&gone));
    Ok(ExitCode::SUCCESS)
}

/// `prune [--older-than AGE] [--keep N]`.
pub(super) async fn prune(
    client: Client,
    older_than_ms: Option<u64>,
    keep: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let gone = client.prune(older_than_ms, keep).await?;
    if gone.is_empty() {
        println!("nothing to prune");
    } else {
        println!("forgot {} job(s): {}", gone.len(), list(&gone));
    }
    Ok(ExitCode::SUCCESS)
}

fn list(jobs: &[JobId]) -> String {
    let ids: Vec<String> = jobs.iter().map(ToString::to_string).collect();
    ids.join(", ")
}

pub(super) async fn status(client: Client, json: bool, watch: bool) -> anyhow::Result<ExitCode> {
    loop {
        let rows = client.status().await?;
        let text = if json {
            super::output::status_json(&rows)?
        } else {
            let (health, refusals) = tokio::join!(client.health(), client.refusals());
            let mut text = format!("{}\n{}", table(&rows), host_line(&health?));
            for r in refusals? {
                text.push('\n');
                text.push_str(&refusal_line(&r));
            }
            text
        };
        let mut out = std::io::stdout().lock();
        if watch && out.is_terminal() {
            write!(out, "\x1b[2J\x1b[H")?; // clear screen, cursor home
        } else if watch {
            // Into a file or a pipe: one snapshot after another, told apart by a time line.
            writeln!(out, "--- {}", utc_clock())?;
        }
        writeln!(out, "{text}")?;
        drop(out);
        if !watch {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The time of day in UTC, `HH:MM:SS UTC`.
fn utc_clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn table(rows: &[WorkerStatus]) -> String {
    let mut lines = vec![format!(
        "{:>3}  {:<16} {:<8} {:<22} {:>5} {:>7} {:>6} {:>11}  {:<16} {:>5} {:>8} {:>9}",
        "ID",
        "NAME",
        "STATE",
        "ADDRESS",
        "SLOTS",
        "RUNNING",
        "°C",
        "MHz",
        "THROTTLE",
        "SPEED",
        "DONE",
        "UPTIME"
    )];
    for r in rows {
        let t = r.telemetry.as_ref();
        let temp = t
            .and_then(|t| t.cpu_temp)
            .map_or("-".into(), |c| format!("{:.1}", c.celsius()));
        let mhz = match (t.and_then(|t| t.arm_clock), t.and_then(|t| t.arm_max)) {
            (Some(c), Some(m)) => format!("{}/{}", c.0, m.0),
            (None, Some(m)) => format!("-/{}", m.0),
            (Some(c), None) => c.0.to_string(),
            (None, None) => "-".into(),
        };
        let throttle = t
            .and_then(|t| t.throttle)
            .map_or("-".into(), |f| f.to_string());
        lines.push(format!(
            "{:>3}  {:<16} {:<8} {:<22} {:>5} {:>7} {:>6} {:>11}  {:<16} {:>5} {:>8} {:>9}",
            r.id.0,
            r.name,
            if r.draining { "draining" } else { "up" },
            r.address,
            r.slots,
            r.running,
            temp,
            mhz,
            throttle,
            r.speed_milli
                .map_or("-".into(), |s| format!("{:.2}", f64::from(s) / 1000.0)),
            r.done,
            uptime(r.connected_ms)
        ));
    }
    for r in rows {
        if let Some(e) = r.telemetry.as_ref().and_then(|t| t.startup_error.as_ref()) {
            lines.push(format!("worker {}: startup command failed: {e}", r.id));
        }
        if let Some(p) = &r.python {
            let engines: Vec<String> = r.engines.iter().map(ToString::to_string).collect();
            let version = p
                .version
                .map_or("-".into(), |(a, b, c)| format!("Python {a}.{b}.{c}"));
            let state = p.problem.as_deref().unwrap_or("ready");
            lines.push(format!(
                "worker {}: engines {} ({version}): {state}",
                r.id,
                engines.join(",")
            ));
        }
    }
    lines.join("\n")
}

/// A connection the host refused lately: who, from where, how often, why.
fn refusal_line(r: &Refusal) -> String {
    let who = r.name.as_deref().map_or_else(
        || format!("a connection from {}", r.address),
        |name| format!("{name} from {}", r.address),
    );
    let times = if r.count == 1 {
        String::new()
    } else {
        format!("{} times, ", r.count)
    };
    let hint = if r.reason.contains("UnknownIssuer") || r.reason.contains("BadSignature") {
        " (a bundle of another profile or an older `bramble init`?)"
    } else {
        ""
    };
    format!(
        "refused {who} ({times}last {} ago): {}{hint}",
        uptime(r.ago_ms),
        r.reason
    )
}

/// Below this much free space the job store's disk is shown as low.
const LOW_DISK: u64 = 64 << 20;

/// The host's own line under the table: its job store, free space, and a failing write.
fn host_line(h: &HostHealth) -> String {
    if let Some(e) = &h.store_error {
        return format!(
            "host: CANNOT WRITE THE JOB STORE {} for {}: {e}. Results wait, unacknowledged, \
             until it can; new jobs are refused. Free space there.",
            h.store,
            uptime(h.stalled_ms)
        );
    }
    match h.store_free_bytes {
        Some(free) if free < LOW_DISK => format!(
            "host: job store {}: only {} free; when the disk is full, results wait",
            h.store,
            mib(free)
        ),
        Some(free) => format!("host: job store {}: {} free", h.store, mib(free)),
        None => format!("host: job store {}", h.store),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_in_words() {
        let r = Refusal {
            name: Some("pi-01".into()),
            address: "10.0.0.5:4000".into(),
            reason: "pi-01 is already connected from 10.0.0.4:4000; one bundle per Pi".into(),
            count: 3,
            ago_ms: 2_000,
        };
        assert_eq!(
            refusal_line(&r),
            "refused pi-01 from 10.0.0.5:4000 (3 times, last 2s ago): pi-01 is already \
             connected from 10.0.0.4:4000; one bundle per Pi"
        );
        let r = Refusal {
            name: None,
            count: 1,
            reason: "invalid peer certificate: UnknownIssuer".into(),
            ..r
        };
        assert!(refusal_line(&r).starts_with("refused a connection from 10.0.0.5:4000 (last 2s"));
        assert!(refusal_line(&r).ends_with("older `bramble init`?)"));
    }

    #[test]
    fn uptimes() {
        assert_eq!(uptime(59_999), "59s");
        assert_eq!(uptime(61_000), "1m01s");
        assert_eq!(uptime(7_380_000), "2h03m");
    }
}
