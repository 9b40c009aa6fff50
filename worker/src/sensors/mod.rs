//! Reads this machine's sensors into a [`Telemetry`] report. What the machine lacks is `None`,
//! never a made-up value.
//!
//! On a Raspberry Pi (`pi.rs`): the `cpu-thermal` zone, the firmware's throttle bits and
//! measured ARM clock (mailbox, else `vcgencmd` polled on its own thread; hwmon `rpi_volt` for
//! under-voltage), cpufreq's maximum. Elsewhere: temperature from sysinfo's hwmon sensors.
//! Load and memory from sysinfo.

mod mailbox;
mod parse;
mod pi;
mod vcgencmd;

use std::path::Path;

use bramble_wire::{MilliCelsius, Telemetry};
use sysinfo::{Components, System};

use pi::PiSources;

/// Sensor state kept between reports.
pub(crate) struct Sensors {
    system: Option<System>,
    /// sysinfo's temperature sensors, only used off a Pi.
    components: Option<Components>,
    pi: PiSources,
    seq: u64,
}

impl Sensors {
    /// Sensors under `root` (`/`; a fake tree in tests).
    pub(crate) fn new(root: &Path) -> Self {
        let pi = PiSources::discover(root);
        let components = if pi.is_pi() {
            None
        } else {
            Components::new_with_refreshed_list().ok()
        };
        Self {
            system: System::new().ok(),
            components,
            pi,
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
            cpu_temp: self.pi.cpu_temp().or_else(|| self.hwmon_temp()),
            arm_clock: self.pi.arm_clock(),
            arm_max: self.pi.arm_max(),
            throttle: self.pi.throttle(),
            load_milli,
            mem_available_kib,
            mem_total_kib,
            running,
            startup_error: None,
        }
    }

    fn hwmon_temp(&mut self) -> Option<MilliCelsius> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::Megahertz;

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
        let f = tmp.path().join("sys/devices/system/cpu/cpu0/cpufreq");
        std::fs::create_dir_all(&f).unwrap();
        std::fs::write(f.join("cpuinfo_max_freq"), "1800000\n").unwrap();
        let mut s = Sensors::new(tmp.path());
        let t = s.read(3);
        assert_eq!((t.arm_max, t.running, t.seq), (Some(Megahertz(1800)), 3, 1));
        assert_eq!(
            t.arm_clock, None,
            "no measured clock off a Pi: absent, not invented"
        );
        assert_eq!(t.throttle, None);
    }
}
