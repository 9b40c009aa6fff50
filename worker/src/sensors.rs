//! Reads this machine's sensors into a [`Telemetry`] report. What the machine lacks is `None`.
//!
//! Temperature, load and memory come through sysinfo; the clock maximum from cpufreq. The Pi
//! firmware's throttle bits and measured ARM clock (mailbox) come with the thermal issue.

use std::fs;
use std::path::{Path, PathBuf};

use bramble_wire::{Megahertz, MilliCelsius, Telemetry};
use sysinfo::{Components, System};

/// Sensor state kept between reports.
pub(crate) struct Sensors {
    system: Option<System>,
    components: Option<Components>,
    /// Root of the sysfs tree (`/sys`; a fake tree in tests).
    sys_root: PathBuf,
    seq: u64,
}

impl Sensors {
    pub(crate) fn new(sys_root: &Path) -> Self {
        Self {
            system: System::new().ok(),
            components: Components::new_with_refreshed_list().ok(),
            sys_root: sys_root.to_owned(),
            seq: 0,
        }
    }

    /// One report; `running` is the number of tasks running now.
    pub(crate) fn read(&mut self, running: u16) -> Telemetry {
        self.seq += 1;
        let (mem_available_kib, mem_total_kib) = match &mut self.system {
            Some(sys) => {
                sys.refresh_memory();
                (
                    Some(sys.available_memory() / 1024),
                    Some(sys.total_memory() / 1024),
                )
            }
            None => (None, None),
        };
        let load_milli = System::load_average()
            .ok()
            .map(|l| (l.one * 1000.0).round() as u32);
        Telemetry {
            seq: self.seq,
            cpu_temp: self.cpu_temp(),
            arm_clock: None,
            arm_max: read_khz(
                &self
                    .sys_root
                    .join("devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"),
            )
            .map(|khz| Megahertz(khz / 1000)),
            throttle: None,
            load_milli,
            mem_available_kib,
            mem_total_kib,
            running,
            startup_error: None,
        }
    }

    fn cpu_temp(&mut self) -> Option<MilliCelsius> {
        let components = self.components.as_mut()?;
        components.refresh(false);
        let readings: Vec<(&str, f32)> = components
            .iter()
            .filter_map(|c| Some((c.label(), c.temperature()?)))
            .collect();
        pick_cpu_temp(&readings).map(|c| MilliCelsius((c * 1000.0).round() as i32))
    }
}

/// Picks the CPU temperature among labelled readings: the Pi's `cpu_thermal` first, then the
/// usual x86 package sensors, then anything with "cpu" in its name. `None` if nothing fits:
/// an unrelated sensor (a disk, a wifi card) is not the CPU.
fn pick_cpu_temp(readings: &[(&str, f32)]) -> Option<f32> {
    const PREFERRED: [&str; 4] = [
        "cpu_thermal",
        "coretemp Package",
        "k10temp Tctl",
        "zenpower Tctl",
    ];
    PREFERRED
        .iter()
        .find_map(|p| readings.iter().find(|(l, _)| l.starts_with(p)))
        .or_else(|| {
            readings
                .iter()
                .find(|(l, _)| l.to_ascii_lowercase().contains("cpu"))
        })
        .map(|(_, t)| *t)
        .filter(|t| t.is_finite())
}

/// Parses a cpufreq file (kHz as decimal text, e.g. "1800000\n").
fn read_khz(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_cpu_sensor() {
        let pi = [
            ("rp1_adc temp1", 50.0),
            ("cpu_thermal temp1", 61.5),
            ("nvme Composite", 40.0),
        ];
        assert_eq!(pick_cpu_temp(&pi), Some(61.5));
        let intel = [
            ("acpitz temp1", 27.8),
            ("coretemp Package id 0", 45.0),
            ("coretemp Core 0", 44.0),
        ];
        assert_eq!(pick_cpu_temp(&intel), Some(45.0));
        assert_eq!(pick_cpu_temp(&[("nvme Composite", 40.0)]), None);
        assert_eq!(pick_cpu_temp(&[]), None);
    }

    #[test]
    fn cpufreq_max_from_a_sysfs_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let f = dir.join("devices/system/cpu/cpu0/cpufreq");
        fs::create_dir_all(&f).unwrap();
        fs::write(f.join("cpuinfo_max_freq"), "1800000\n").unwrap();
        let mut s = Sensors::new(&dir);
        let t = s.read(3);
        assert_eq!((t.arm_max, t.running, t.seq), (Some(Megahertz(1800)), 3, 1));
        assert_eq!(
            t.arm_clock, None,
            "no measured clock off a Pi: absent, not invented"
        );
        let empty = Sensors::new(Path::new("/nonexistent")).read(0);
        assert_eq!(empty.arm_max, None);
    }
}
