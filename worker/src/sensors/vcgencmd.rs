//! The `vcgencmd` fallback for the firmware's throttle bits and measured ARM clock, used only
//! where `/dev/vcio` cannot be opened. Each call starts a process (about 10 ms on a Pi), so a
//! thread of its own polls it and the telemetry tick reads the latest answers: the worker's
//! event loop never waits on a child process.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bramble_wire::{Megahertz, ThrottleFlags};

use super::parse;

/// How often the thread asks the firmware.
const PERIOD: Duration = Duration::from_secs(1);

/// The latest answers; `None` until the first one (or when `vcgencmd` stops answering).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Reading {
    pub(crate) throttle: Option<ThrottleFlags>,
    pub(crate) arm_clock: Option<Megahertz>,
}

/// A running poller; the thread ends soon after this is dropped.
pub(crate) struct Vcgencmd {
    latest: Arc<Mutex<Reading>>,
}

impl Vcgencmd {
    /// Starts polling `program` if it answers `version`; `None` if it does not.
    pub(crate) fn start(program: &Path) -> Option<Self> {
        run(program, &["version"])?;
        let latest = Arc::new(Mutex::new(Reading::default()));
        let weak = Arc::downgrade(&latest);
        let program = program.to_owned();
        std::thread::Builder::new()
            .name("vcgencmd".into())
            .spawn(move || poll(&program, &weak))
            .ok()?;
        Some(Self { latest })
    }

    pub(crate) fn latest(&self) -> Reading {
        self.latest.lock().map(|r| *r).unwrap_or_default()
    }
}

fn poll(program: &Path, latest: &Weak<Mutex<Reading>>) {
    loop {
        let reading = Reading {
            throttle: run(program, &["get_throttled"])
                .as_deref()
                .and_then(parse::vcgencmd_throttled),
            arm_clock: run(program, &["measure_clock", "arm"])
                .as_deref()
                .and_then(parse::vcgencmd_clock),
        };
        let Some(latest) = latest.upgrade() else {
            return;
        };
        if let Ok(mut l) = latest.lock() {
            *l = reading;
        }
        drop(latest);
        std::thread::sleep(PERIOD);
    }
}

fn run(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::time::Instant;

    use super::*;

    /// A `vcgencmd` that answers like a throttled Pi 4, after `delay` seconds.
    fn fake(dir: &Path, delay: &str) -> PathBuf {
        let path = dir.join("vcgencmd");
        let script = format!(
            "#!/bin/sh\ncase \"$1\" in\n  version) echo 'Mar 17 2023 10:50:39' ;;\n  \
             get_throttled) sleep {delay}; echo 'throttled=0x50005' ;;\n  \
             measure_clock) echo 'frequency(48)=1000404480' ;;\n  *) exit 1 ;;\nesac\n"
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn answers_arrive_from_the_thread_and_reads_never_wait_for_them() {
        let tmp = tempfile::tempdir().unwrap();
        let v = Vcgencmd::start(&fake(tmp.path(), "2")).expect("answers version");
        // The first get_throttled takes two seconds: a read now returns at once, with nothing.
        assert_eq!(v.latest(), Reading::default());
        let deadline = Instant::now() + Duration::from_secs(20);
        while v.latest() == Reading::default() {
            assert!(Instant::now() < deadline, "no reading from the poller");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            v.latest(),
            Reading {
                throttle: Some(ThrottleFlags(0x50005)),
                arm_clock: Some(Megahertz(1000)),
            }
        );
    }

    #[test]
    fn a_missing_program_is_no_source() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(Vcgencmd::start(&tmp.path().join("vcgencmd")).is_none());
    }
}
