//! `bramble serve --metrics ADDR`: Prometheus text format. Per connected worker its
//! temperature, measured and maximum clock, throttle bits, running tasks and speed; results
//! and ended jobs counted by outcome since the host started; the scheduler's placement passes.
//! What to say is [`render`], pure; the driver keeps the counters.

use std::collections::BTreeMap;
use std::fmt::Write;

use bramble_wire::WorkerStatus;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::driver::ToDriver;

/// Counted by the driver since the host started.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    /// Results recorded, by outcome word (`exited`, `timed-out`, ...).
    pub results: BTreeMap<&'static str, u64>,
    /// Failed results (anything but exit 0 or a returned Python item).
    pub failed: u64,
    /// Jobs ended, by state (`done`, `cancelled`).
    pub jobs: BTreeMap<&'static str, u64>,
    /// Placement passes and the time they took.
    pub passes: u64,
    pub pass_seconds: f64,
}

/// A per-worker gauge: its name, its help text and how to read it from a status row.
type Gauge = (&'static str, &'static str, fn(&WorkerStatus) -> Option<f64>);

/// The metrics page.
pub(crate) fn render(workers: &[WorkerStatus], c: &Counters) -> String {
    let mut out = String::new();
    let gauges: [Gauge; 7] = [
        (
            "bramble_worker_connected",
            "1 for each connected worker",
            |_| Some(1.0),
        ),
        (
            "bramble_worker_temperature_celsius",
            "CPU (SoC) temperature",
            |w| w.telemetry.as_ref()?.cpu_temp.map(|t| t.celsius()),
        ),
        ("bramble_worker_clock_hertz", "ARM clock as measured", |w| {
            Some(f64::from(w.telemetry.as_ref()?.arm_clock?.0) * 1e6)
        }),
        (
            "bramble_worker_clock_max_hertz",
            "ARM clock's configured maximum",
            |w| Some(f64::from(w.telemetry.as_ref()?.arm_max?.0) * 1e6),
        ),
        (
            "bramble_worker_throttle_flags",
            "Raspberry Pi firmware throttle bits (vcgencmd get_throttled)",
            |w| Some(f64::from(w.telemetry.as_ref()?.throttle?.0)),
        ),
        (
            "bramble_worker_running_tasks",
            "tasks placed on the worker and not finished",
            |w| Some(f64::from(w.running)),
        ),
        (
            "bramble_worker_speed_ratio",
            "estimated speed against the fastest connected worker (1 = fastest)",
            |w| w.speed_milli.map(|s| f64::from(s) / 1000.0),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for w in workers {
            if let Some(v) = value(w) {
                let _ = writeln!(
                    out,
                    "{name}{{worker=\"{}\",id=\"{}\"}} {v}",
                    escape(&w.name),
                    w.id
                );
            }
        }
    }
    counter_family(
        &mut out,
        "bramble_results_total",
        "results recorded since the host started, by outcome",
        "outcome",
        &c.results,
    );
    let _ = writeln!(
        out,
        "# HELP bramble_results_failed_total results that did not succeed\n\
         # TYPE bramble_results_failed_total counter\nbramble_results_failed_total {}",
        c.failed
    );
    counter_family(
        &mut out,
        "bramble_jobs_ended_total",
        "jobs ended since the host started, by state",
        "state",
        &c.jobs,
    );
    let _ = writeln!(
        out,
        "# HELP bramble_scheduler_pass_seconds time the scheduler took to place work per batch\n\
         # TYPE bramble_scheduler_pass_seconds summary\n\
         bramble_scheduler_pass_seconds_sum {}\nbramble_scheduler_pass_seconds_count {}",
        c.pass_seconds, c.passes
    );
    out
}

/// A counter with one sample per value of `label`.
fn counter_family(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    counts: &BTreeMap<&'static str, u64>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, n) in counts {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

/// A label value with `\`, `"` and line breaks escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` until the host stops.
pub(crate) async fn serve(listener: TcpListener, to_driver: mpsc::Sender<ToDriver>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let to_driver = to_driver.clone();
        tokio::spawn(async move {
            let Some(path) = crate::http::read_get(&mut stream).await else {
                return;
            };
            if path != "/metrics" {
                let body = b"bramble serves /metrics\n";
                return crate::http::respond(&mut stream, "404 Not Found", "text/plain", body)
                    .await;
            }
            let (reply, rx) = oneshot::channel();
            if to_driver.send(ToDriver::Metrics { reply }).await.is_err() {
                return;
            }
            match rx.await {
                Ok(text) => {
                    let kind = "text/plain; version=0.0.4; charset=utf-8";
                    crate::http::respond(&mut stream, "200 OK", kind, text.as_bytes()).await;
                }
                Err(e) => warn!("metrics: no answer from the driver: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::{Megahertz, MilliCelsius, Telemetry, ThrottleFlags, WorkerId};

    #[test]
    fn prometheus_text() {
        let w = WorkerStatus {
            id: WorkerId(2),
            name: "pi-\"2\"".into(),
            address: "a".into(),
            slots: 4,
            running: 3,
            done: 0,
            connected_ms: 0,
            arch: "aarch64".into(),
            labels: vec![],
            telemetry: Some(Telemetry {
                seq: 1,
                cpu_temp: Some(MilliCelsius(81_500)),
                arm_clock: Some(Megahertz(1000)),
                arm_max: Some(Megahertz(1800)),
                throttle: Some(ThrottleFlags(0x20002)),
                load_milli: None,
                mem_available_kib: None,
                mem_total_kib: None,
                running: 3,
                startup_error: None,
            }),
            speed_milli: Some(550),
            draining: false,
            python: None,
            engines: vec![],
        };
        let mut c = Counters::default();
        c.results.insert("exited", 7);
        c.jobs.insert("done", 2);
        c.passes = 4;
        c.pass_seconds = 0.002;
        let text = render(&[w], &c);
        for line in [
            "bramble_worker_temperature_celsius{worker=\"pi-\\\"2\\\"\",id=\"2\"} 81.5",
            "bramble_worker_clock_hertz{worker=\"pi-\\\"2\\\"\",id=\"2\"} 1000000000",
            "bramble_worker_throttle_flags{worker=\"pi-\\\"2\\\"\",id=\"2\"} 131074",
            "bramble_worker_speed_ratio{worker=\"pi-\\\"2\\\"\",id=\"2\"} 0.55",
            "bramble_results_total{outcome=\"exited\"} 7",
            "bramble_jobs_ended_total{state=\"done\"} 2",
            "bramble_scheduler_pass_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
        // Every sample line belongs to a declared family.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let family = name.trim_end_matches("_sum").trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {family} ")), "{l}");
        }
    }
}
