//! Where a Raspberry Pi keeps its sensors, read from a root directory (`/` on a Pi, a fake
//! tree in tests): the `cpu-thermal` thermal zone, hwmon `rpi_volt`, cpufreq's maximum, and
//! the firmware's throttle bits and measured clock (mailbox, else `vcgencmd`). Never
//! `scaling_cur_freq`: it shows the clock Linux asked for, not the one firmware throttling
//! left (`pi-deploy-wire.md` §A4).

use std::fs;
use std::path::{Path, PathBuf};

use bramble_wire::{Megahertz, MilliCelsius, ThrottleFlags};

use super::mailbox::Mailbox;
use super::parse;
use super::vcgencmd::Vcgencmd;

/// The Pi-specific sources found under a root directory.
pub(crate) struct PiSources {
    root: PathBuf,
    /// `class/thermal/thermal_zoneN/temp` whose `type` is `cpu-thermal`.
    thermal_zone: Option<PathBuf>,
    /// `class/hwmon/hwmonN/in0_lcrit_alarm` of `rpi_volt`.
    undervolt_alarm: Option<PathBuf>,
    mailbox: Option<Mailbox>,
    /// `vcgencmd`, polled on its own thread (only tried when there is no mailbox).
    vcgencmd: Option<Vcgencmd>,
}

impl PiSources {
    /// Looks for the sources under `root` (`/` on a real Pi).
    pub(crate) fn discover(root: &Path) -> Self {
        let sys = root.join("sys");
        let thermal_zone = find_dir(
            &sys.join("class/thermal"),
            "thermal_zone",
            "type",
            "cpu-thermal",
        )
        .map(|d| d.join("temp"));
        let undervolt_alarm = find_dir(&sys.join("class/hwmon"), "hwmon", "name", "rpi_volt")
            .map(|d| d.join("in0_lcrit_alarm"));
        let mailbox = Mailbox::open(&root.join("dev/vcio"));
        let vcgencmd = (mailbox.is_none() && thermal_zone.is_some())
            .then(|| Vcgencmd::start(Path::new("vcgencmd")))
            .flatten();
        Self {
            root: root.to_owned(),
            thermal_zone,
            undervolt_alarm,
            mailbox,
            vcgencmd,
        }
    }

    /// True if this looks like a Raspberry Pi at all.
    pub(crate) fn is_pi(&self) -> bool {
        self.thermal_zone.is_some() || self.mailbox.is_some() || self.undervolt_alarm.is_some()
    }

    pub(crate) fn cpu_temp(&self) -> Option<MilliCelsius> {
        parse::millidegrees(&fs::read_to_string(self.thermal_zone.as_ref()?).ok()?)
    }

    pub(crate) fn arm_max(&self) -> Option<Megahertz> {
        let path = self
            .root
            .join("sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq");
        parse::khz_to_mhz(&fs::read_to_string(path).ok()?)
    }

    /// All eight bits from the firmware; only under-voltage from hwmon as a last resort.
    pub(crate) fn throttle(&self) -> Option<ThrottleFlags> {
        if let Some(mb) = &self.mailbox {
            // Value 0: do not clear the sticky bits (the kernel's poller sends 0xffff).
            return mb
                .property(parse::TAG_GET_THROTTLED, &[0])
                .and_then(|v| v.first().copied())
                .map(ThrottleFlags);
        }
        if let Some(v) = &self.vcgencmd {
            return v.latest().throttle;
        }
        parse::undervolt_alarm(&fs::read_to_string(self.undervolt_alarm.as_ref()?).ok()?)
    }

    /// The ARM clock as measured by the firmware.
    pub(crate) fn arm_clock(&self) -> Option<Megahertz> {
        if let Some(mb) = &self.mailbox {
            let v = mb.property(parse::TAG_GET_CLOCK_MEASURED, &[parse::CLOCK_ARM, 0])?;
            return parse::hz_to_mhz(u64::from(*v.get(1)?));
        }
        if let Some(v) = &self.vcgencmd {
            return v.latest().arm_clock;
        }
        None
    }
}

/// The entry `prefix*` of `dir` whose file `key` reads `value`.
fn find_dir(dir: &Path, prefix: &str, key: &str, value: &str) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    entries.sort();
    entries
        .into_iter()
        .find(|d| fs::read_to_string(d.join(key)).is_ok_and(|v| v.trim() == value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Pi 4's sysfs as far as we read it, without /dev/vcio (so: the hwmon fallback).
    fn fake_pi(root: &Path, temp: &str, alarm: &str) {
        let zone0 = root.join("sys/class/thermal/thermal_zone0");
        let zone1 = root.join("sys/class/thermal/thermal_zone1");
        let hwmon = root.join("sys/class/hwmon/hwmon1");
        let cpufreq = root.join("sys/devices/system/cpu/cpu0/cpufreq");
        for d in [
            &zone0,
            &zone1,
            &hwmon,
            &cpufreq,
            &root.join("sys/class/hwmon/hwmon0"),
        ] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(zone0.join("type"), "soc-dummy\n").unwrap();
        fs::write(zone0.join("temp"), "1000\n").unwrap();
        fs::write(zone1.join("type"), "cpu-thermal\n").unwrap();
        fs::write(zone1.join("temp"), temp).unwrap();
        fs::write(root.join("sys/class/hwmon/hwmon0/name"), "cpu_thermal\n").unwrap();
        fs::write(hwmon.join("name"), "rpi_volt\n").unwrap();
        fs::write(hwmon.join("in0_lcrit_alarm"), alarm).unwrap();
        fs::write(cpufreq.join("cpuinfo_max_freq"), "1800000\n").unwrap();
        // Linux's requested clock: must never be reported as the measured one.
        fs::write(cpufreq.join("scaling_cur_freq"), "1800000\n").unwrap();
    }

    #[test]
    fn reads_a_fake_pi_tree() {
        let tmp = tempfile::tempdir().unwrap();
        fake_pi(tmp.path(), "61234\n", "1\n");
        let pi = PiSources::discover(tmp.path());
        assert!(pi.is_pi());
        assert_eq!(pi.cpu_temp(), Some(MilliCelsius(61_234)));
        assert_eq!(pi.arm_max(), Some(Megahertz(1800)));
        assert_eq!(pi.throttle(), Some(ThrottleFlags(0x10001)));
        assert_eq!(
            pi.arm_clock(),
            None,
            "no mailbox, no vcgencmd: absent, not scaling_cur_freq"
        );
    }

    #[test]
    fn a_non_pi_tree_has_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let pi = PiSources::discover(tmp.path());
        assert!(!pi.is_pi());
        assert_eq!(
            (pi.cpu_temp(), pi.throttle(), pi.arm_max()),
            (None, None, None)
        );
    }
}
