//! `--sim`: a worker that pretends to be a Pi. The thermal model replaces the sensors and is
//! heated by the worker's real slot utilisation; task processes are really slowed to the
//! simulated clock by SIGSTOP/SIGCONT duty cycling of their process groups; every task gets
//! `BRAMBLE_SIM_SPEED` (current speed relative to a Pi 5, when it starts) so sleep-based
//! synthetic workloads can scale, and `BRAMBLE_SIM_SPEED_FILE`, a file that always holds the
//! current speed, so they can follow the clock while they run as CPU-bound work does.
//! `--sim-speed F` without a preset is a constant-speed worker.

pub(crate) mod model;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bramble_wire::{Megahertz, MilliCelsius, Telemetry};
use rustix::process::{Pid, Signal, kill_process_group};

use model::{Model, Preset};

/// What `--sim*` asked for.
#[derive(Clone, Debug)]
pub(crate) struct SimConfig {
    pub(crate) preset: Option<Preset>,
    pub(crate) ambient: f64,
    /// Overrides the preset's speed relative to a Pi 5 (or sets it, without a preset).
    pub(crate) speed: Option<f64>,
    /// Thermal time runs this many times faster than real time.
    pub(crate) time_scale: f64,
    /// SIGSTOP/SIGCONT task groups to the simulated speed. Off for workloads that scale
    /// themselves by `BRAMBLE_SIM_SPEED` (sleeps), which would otherwise be slowed twice.
    pub(crate) duty_cycle: bool,
}

/// Shared between the telemetry loop, the task runners and the duty cycler.
#[derive(Debug, Default)]
pub(crate) struct SimHooks {
    /// Current speed relative to a Pi 5, as f64 bits.
    speed: AtomicU64,
    /// Process groups of running tasks, slowed by the duty cycler.
    groups: Mutex<BTreeSet<u32>>,
    /// `BRAMBLE_SIM_SPEED_FILE`: the current speed as text, rewritten in place.
    speed_file: Option<(PathBuf, File)>,
}

impl SimHooks {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("bramble-sim-{}-{n}.speed", std::process::id()));
        // Without the file, tasks still get BRAMBLE_SIM_SPEED.
        let speed_file = File::create(&path).ok().map(|f| (path, f));
        Self {
            speed_file,
            ..Self::default()
        }
    }

    pub(crate) fn speed(&self) -> f64 {
        f64::from_bits(self.speed.load(Ordering::Relaxed))
    }

    /// The file that holds the current speed, for tasks that follow it while they run.
    pub(crate) fn speed_file(&self) -> Option<&Path> {
        self.speed_file.as_ref().map(|(p, _)| p.as_path())
    }

    fn set_speed(&self, s: f64) {
        self.speed.store(s.to_bits(), Ordering::Relaxed);
        if let Some((_, file)) = &self.speed_file {
            // Fixed width ("0.4500\n"), written at offset 0 in one call: a reader sees the
            // old or the new value, never a mix of lengths. No allocation.
            let mut text = [0u8; 7];
            if writeln!(&mut text[..], "{:.4}", s.clamp(0.0, 9.9999)).is_ok() {
                let _ = file.write_all_at(&text, 0);
            }
        }
    }

    /// A task process group started (`pid` leads it).
    pub(crate) fn track(&self, pid: u32) {
        if let Ok(mut g) = self.groups.lock() {
            g.insert(pid);
        }
    }

    /// It ended; make sure it is not left stopped.
    pub(crate) fn untrack(&self, pid: u32) {
        if let Ok(mut g) = self.groups.lock() {
            g.remove(&pid);
        }
        signal(pid, Signal::CONT);
    }

    fn signal_all(&self, sig: Signal) {
        let groups: Vec<u32> = self
            .groups
            .lock()
            .map(|g| g.iter().copied().collect())
            .unwrap_or_default();
        for pid in groups {
            signal(pid, sig);
        }
    }
}

fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process_group(pid, sig);
    }
}

/// The simulated board of one worker.
pub(crate) struct Sim {
    config: SimConfig,
    model: Option<Model>,
    hooks: Arc<SimHooks>,
    last: Instant,
}

impl Sim {
    pub(crate) fn new(config: SimConfig) -> Self {
        let model = config.preset.map(|p| Model::new(p, config.ambient));
        let sim = Self {
            config,
            model,
            hooks: Arc::new(SimHooks::new()),
            last: Instant::now(),
        };
        sim.hooks.set_speed(sim.current_speed());
        sim
    }

    pub(crate) fn hooks(&self) -> Arc<SimHooks> {
        self.hooks.clone()
    }

    fn current_speed(&self) -> f64 {
        let base = self.config.speed.unwrap_or(1.0);
        match &self.model {
            // A preset's own speed, unless --sim-speed overrides it.
            Some(m) => self
                .config
                .speed
                .map_or(m.speed(), |s| s * m.clock() / m.f_max()),
            None => base,
        }
    }

    /// Advances the model to now at `utilisation` and fills the sensor fields of `t`.
    pub(crate) fn report(&mut self, utilisation: f64, t: &mut Telemetry) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64() * self.config.time_scale;
        self.last = now;
        if let Some(m) = &mut self.model {
            m.advance(dt, utilisation);
            t.cpu_temp = Some(MilliCelsius((m.temperature() * 1000.0).round() as i32));
            t.arm_clock = Some(Megahertz(m.clock().round() as u32));
            t.arm_max = Some(Megahertz(m.f_max().round() as u32));
            t.throttle = Some(m.throttle());
        } else {
            // A constant-speed worker has no sensors to report.
            t.cpu_temp = None;
            t.arm_clock = None;
            t.arm_max = None;
            t.throttle = None;
        }
        self.hooks.set_speed(self.current_speed());
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(path) = self.hooks.speed_file() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Duty-cycles the running task groups to the simulated speed (a speed of 0.4 lets them run
/// 40 ms of every 100 ms). Runs for the worker's lifetime.
pub(crate) async fn duty_cycle(hooks: Arc<SimHooks>) {
    const PERIOD: Duration = Duration::from_millis(100);
    loop {
        let duty = hooks.speed().clamp(0.05, 1.0);
        if duty >= 0.999 {
            tokio::time::sleep(PERIOD).await;
            continue;
        }
        hooks.signal_all(Signal::CONT);
        tokio::time::sleep(PERIOD.mul_f64(duty)).await;
        hooks.signal_all(Signal::STOP);
        tokio::time::sleep(PERIOD.mul_f64(1.0 - duty)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_speed_workers_report_no_sensors() {
        let config = SimConfig {
            preset: None,
            ambient: 25.0,
            speed: Some(0.33),
            time_scale: 1.0,
            duty_cycle: true,
        };
        let mut sim = Sim::new(config);
        let mut t = Telemetry {
            cpu_temp: Some(MilliCelsius(1)),
            ..Telemetry::default()
        };
        sim.report(1.0, &mut t);
        assert_eq!((t.cpu_temp, t.arm_clock, t.throttle), (None, None, None));
        assert!((sim.hooks().speed() - 0.33).abs() < 1e-9);
    }

    #[test]
    fn a_preset_reports_its_model_and_speed() {
        let config = SimConfig {
            preset: model::preset("pi4-bare"),
            ambient: 25.0,
            speed: None,
            time_scale: 1.0,
            duty_cycle: true,
        };
        let mut sim = Sim::new(config);
        let mut t = Telemetry::default();
        sim.report(0.0, &mut t);
        assert_eq!(t.arm_max, Some(Megahertz(1500)));
        assert_eq!(t.arm_clock, Some(Megahertz(1500)));
        assert!((sim.hooks().speed() - 0.45).abs() < 1e-9);
        assert!(
            t.cpu_temp
                .is_some_and(|c| c.celsius() > 40.0 && c.celsius() < 50.0)
        );
    }

    #[test]
    fn the_speed_file_follows_the_model_and_goes_with_the_worker() {
        let mut sim = Sim::new(SimConfig {
            preset: model::preset("pi4-bare"),
            ambient: 35.0,
            speed: None,
            time_scale: 1.0,
            duty_cycle: false,
        });
        let file = sim.hooks().speed_file().map(Path::to_owned).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "0.4500\n");
        // Ten minutes flat out: a bare Pi 4 throttles, and the file says so.
        let mut t = Telemetry::default();
        for _ in 0..600 {
            sim.model.as_mut().unwrap().advance(1.0, 1.0);
            sim.report(1.0, &mut t);
        }
        let now: f64 = std::fs::read_to_string(&file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            now < 0.45 && (now - sim.hooks().speed()).abs() < 1e-4,
            "{now}"
        );
        drop(sim);
        assert!(!file.exists());
    }
}
