//! The worker's configuration: command-line flags (lexopt) over `/etc/bramble/worker.toml`
//! over defaults. Parse, don't validate: what comes out is ready to use.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bramble_certs::{Bundle, Role};
use serde::Deserialize;

use crate::limits::ExecLimits;

const DEFAULT_CONFIG: &str = "/etc/bramble/worker.toml";
const DEFAULT_BUNDLE: &str = "/etc/bramble/bundle.json";

pub(crate) const USAGE: &str = "\
bramble-worker: the bramble agent for a Raspberry Pi (or any Linux machine)

Connects to the host in its bundle, reports telemetry, runs tasks; reconnects forever.

Usage: bramble-worker [OPTIONS]

Options:
  --bundle FILE            worker bundle from `bramble enroll` [env: BRAMBLE_BUNDLE]
                           [default: /etc/bramble/bundle.json]
  --config FILE            config file [default: /etc/bramble/worker.toml, if present]
  --slots N                tasks run at once [default: number of CPUs]
  --work-dir DIR           working directory of tasks (staged jobs: a fresh one per item)
  --cache-dir DIR          where staged files are kept [default: $CACHE_DIRECTORY (systemd),
                           else $XDG_CACHE_HOME/bramble-worker, else ~/.cache/bramble-worker]
  --label NAME             label usable as a target (repeatable)
  --max-output-bytes N     bytes of stdout and of stderr kept per task [default: 1048576]
  --python PROGRAM         the Python that runs engines (a virtualenv's python works)
                           [default: python3 on the PATH]
  --sim PRESET             simulate a Pi: pi3b-bare, pi3b-plus-bare, pi4-bare, pi4-case,
                           pi4-fan, pi5-bare, pi5-cooler (thermal model, slowed tasks)
  --sim-ambient C          simulated ambient temperature [default: 25]
  --sim-speed F            speed relative to a Pi 5 (alone: a constant-speed worker)
  --sim-time-scale K       simulated thermal time runs K times faster [default: 1]
  --sim-no-duty-cycle      do not SIGSTOP/SIGCONT tasks (for tasks that scale themselves
                           by BRAMBLE_SIM_SPEED or BRAMBLE_SIM_SPEED_FILE, e.g. sleeps)
  -h, --help               print this help
  -V, --version            print the version

Config file keys (all optional; flags override): bundle, slots, work_dir, cache_dir,
cache_max_mib (staged files kept, least recently used dropped first; default 2048), labels,
max_output_bytes, telemetry_interval_ms, startup_command (argv run after every connect),
allow (program names tasks may start; `sh` must be listed for --shell tasks, and the python
program for Python engines), python. An example with every key: docs/worker.toml.";

/// The worker config file, `worker.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bundle: Option<PathBuf>,
    slots: Option<u16>,
    work_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    cache_max_mib: Option<u64>,
    labels: Option<Vec<String>>,
    max_output_bytes: Option<u64>,
    telemetry_interval_ms: Option<u64>,
    startup_command: Option<Vec<String>>,
    allow: Option<Vec<String>>,
    python: Option<String>,
}

/// Everything the worker runs with.
#[derive(Debug)]
pub(crate) struct WorkerConfig {
    pub(crate) bundle: Bundle,
    pub(crate) slots: u16,
    pub(crate) labels: Vec<String>,
    pub(crate) limits: ExecLimits,
    pub(crate) telemetry_interval: Duration,
    /// Run after every connect; a failure is reported in telemetry, not fatal.
    pub(crate) startup_command: Option<Vec<String>>,
    /// `--sim*`: pretend to be a Pi (thermal model, slowed tasks).
    pub(crate) sim: Option<crate::sim::SimConfig>,
    /// The Python that runs engines.
    pub(crate) python: String,
    /// Where staged files are kept, and how many bytes of them at most.
    pub(crate) cache_dir: PathBuf,
    pub(crate) cache_max_bytes: u64,
}

/// What the command line asked for.
#[derive(Debug)]
pub(crate) enum Parsed {
    Run(Box<WorkerConfig>),
    Help,
    Version,
}

/// Flags as given, before the file and defaults fill the gaps.
#[derive(Debug, Default)]
struct Flags {
    bundle: Option<PathBuf>,
    config: Option<PathBuf>,
    slots: Option<u16>,
    work_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    labels: Vec<String>,
    max_output_bytes: Option<u64>,
    python: Option<String>,
    sim: Option<String>,
    sim_ambient: Option<f64>,
    sim_speed: Option<f64>,
    sim_time_scale: Option<f64>,
    sim_no_duty_cycle: bool,
}

/// Parses flags, reads the config file and the bundle.
pub(crate) fn load(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<Parsed> {
    use lexopt::prelude::*;
    let mut flags = Flags::default();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("bundle") => flags.bundle = Some(parser.value()?.into()),
            Long("config") => flags.config = Some(parser.value()?.into()),
            Long("slots") => flags.slots = Some(parser.value()?.parse()?),
            Long("work-dir") => flags.work_dir = Some(parser.value()?.into()),
            Long("cache-dir") => flags.cache_dir = Some(parser.value()?.into()),
            Long("label") => flags.labels.push(parser.value()?.string()?),
            Long("max-output-bytes") => flags.max_output_bytes = Some(parser.value()?.parse()?),
            Long("python") => flags.python = Some(parser.value()?.string()?),
            Long("sim") => flags.sim = Some(parser.value()?.string()?),
            Long("sim-ambient") => flags.sim_ambient = Some(parser.value()?.parse()?),
            Long("sim-speed") => flags.sim_speed = Some(parser.value()?.parse()?),
            Long("sim-time-scale") => flags.sim_time_scale = Some(parser.value()?.parse()?),
            Long("sim-no-duty-cycle") => flags.sim_no_duty_cycle = true,
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Short('V') | Long("version") => return Ok(Parsed::Version),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let file = match &flags.config {
        Some(path) => read_file_config(path)?,
        None if Path::new(DEFAULT_CONFIG).exists() => read_file_config(Path::new(DEFAULT_CONFIG))?,
        None => FileConfig::default(),
    };
    resolve(flags, file).map(|c| Parsed::Run(Box::new(c)))
}

fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))
}

fn resolve(flags: Flags, file: FileConfig) -> anyhow::Result<WorkerConfig> {
    let sim = sim_config(&flags)?;
    let bundle_path = flags
        .bundle
        .or_else(|| std::env::var_os("BRAMBLE_BUNDLE").map(PathBuf::from))
        .or(file.bundle)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BUNDLE));
    let bundle = Bundle::load(&bundle_path).map_err(|e| match e {
        bramble_certs::CertsError::Io { error, .. }
            if error.kind() == std::io::ErrorKind::NotFound =>
        {
            anyhow::anyhow!(
                "{}: no such bundle (issue one on the host with `bramble enroll NAME` and give \
                 it with --bundle FILE)",
                bundle_path.display()
            )
        }
        e => e.into(),
    })?;
    if bundle.role != Role::Worker {
        bail!(
            "{}: a {} bundle cannot run a worker (use `bramble enroll`)",
            bundle_path.display(),
            bundle.role
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slots = flags
        .slots
        .or(file.slots)
        .unwrap_or_else(|| u16::try_from(cpus).unwrap_or(u16::MAX));
    if slots == 0 {
        bail!("slots must be at least 1");
    }
    let max_output = flags
        .max_output_bytes
        .or(file.max_output_bytes)
        .unwrap_or(1 << 20);
    // Two capped streams must fit one frame with room to spare.
    if max_output > (bramble_wire::MAX_FRAME_LEN / 4) as u64 {
        bail!(
            "max_output_bytes is at most {}",
            bramble_wire::MAX_FRAME_LEN / 4
        );
    }
    let telemetry_ms = file.telemetry_interval_ms.unwrap_or(1000);
    if !(50..=1000).contains(&telemetry_ms) {
        bail!("telemetry_interval_ms must be between 50 and 1000 (it is the heartbeat)");
    }
    let mut labels = file.labels.unwrap_or_default();
    labels.extend(flags.labels);
    let cache_dir = flags
        .cache_dir
        .or(file.cache_dir)
        .or_else(default_cache_dir)
        .context("no cache directory: give --cache-dir")?;
    Ok(WorkerConfig {
        bundle,
        slots,
        labels,
        limits: ExecLimits {
            max_output_bytes: usize::try_from(max_output).unwrap_or(usize::MAX),
            work_dir: flags.work_dir.or(file.work_dir),
            allow: file.allow,
            sim: None,
        },
        telemetry_interval: Duration::from_millis(telemetry_ms),
        startup_command: file.startup_command.filter(|argv| !argv.is_empty()),
        sim,
        python: flags
            .python
            .or(file.python)
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "python3".into()),
        cache_dir,
        cache_max_bytes: file.cache_max_mib.unwrap_or(2048).saturating_mul(1 << 20),
    })
}

/// systemd's `CacheDirectory=` (`$CACHE_DIRECTORY`), else the user's cache directory.
fn default_cache_dir() -> Option<PathBuf> {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("CACHE_DIRECTORY")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("bramble-worker")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/bramble-worker")))
}

/// `--sim PRESET`, `--sim-ambient C`, `--sim-speed F`, `--sim-time-scale K`.
fn sim_config(flags: &Flags) -> anyhow::Result<Option<crate::sim::SimConfig>> {
    use crate::sim::model::{PRESETS, preset};
    let preset = match &flags.sim {
        Some(name) => Some(preset(name).ok_or_else(|| {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
            anyhow::anyhow!(
                "unknown --sim preset {name:?} (one of: {})",
                names.join(", ")
            )
        })?),
        None => None,
    };
    if preset.is_none() && flags.sim_speed.is_none() {
        if flags.sim_ambient.is_some() || flags.sim_time_scale.is_some() {
            bail!("--sim-ambient and --sim-time-scale need --sim PRESET");
        }
        return Ok(None);
    }
    let speed = flags.sim_speed;
    if speed.is_some_and(|s| !(s > 0.0 && s <= 10.0)) {
        bail!("--sim-speed must be in (0, 10]");
    }
    let time_scale = flags.sim_time_scale.unwrap_or(1.0);
    if !(time_scale > 0.0 && time_scale <= 10_000.0) {
        bail!("--sim-time-scale must be in (0, 10000]");
    }
    let ambient = flags.sim_ambient.unwrap_or(25.0);
    if !(-20.0..=60.0).contains(&ambient) {
        bail!("--sim-ambient must be between -20 and 60 °C");
    }
    Ok(Some(crate::sim::SimConfig {
        preset,
        ambient,
        speed,
        time_scale,
        duty_cycle: !flags.sim_no_duty_cycle,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn sim_flags_are_checked() {
        let flags = |sim: Option<&str>, speed: Option<f64>| Flags {
            sim: sim.map(str::to_owned),
            sim_speed: speed,
            ..Flags::default()
        };
        assert!(sim_config(&flags(None, None)).unwrap().is_none());
        let c = sim_config(&flags(Some("pi4-bare"), None)).unwrap().unwrap();
        assert_eq!(
            (c.preset.unwrap().name, c.ambient, c.time_scale),
            ("pi4-bare", 25.0, 1.0)
        );
        assert!(
            sim_config(&flags(None, Some(0.33)))
                .unwrap()
                .unwrap()
                .preset
                .is_none()
        );
        let e = sim_config(&flags(Some("pi9"), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pi5-cooler"), "{e}");
        assert!(sim_config(&flags(None, Some(-1.0))).is_err());
    }

    #[test]
    fn unknown_flags_and_missing_bundles_are_errors() {
        let e = load(args(&["--frobnicate"])).unwrap_err().to_string();
        assert!(e.contains("--frobnicate"), "{e}");
        let e = load(args(&["--bundle", "/nonexistent/b.json"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/b.json"), "{e}");
        assert!(matches!(load(args(&["--help"])).unwrap(), Parsed::Help));
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(&path, "slots = 2\nslotz = 3\n").unwrap();
        let e = read_file_config(&path).unwrap_err().to_string();
        assert!(e.contains("slotz"), "{e}");
        std::fs::write(
            &path,
            "slots = 2\nlabels = [\"rack1\"]\nallow = [\"echo\"]\nstartup_command = [\"true\"]\n",
        )
        .unwrap();
        let f = read_file_config(&path).unwrap();
        assert_eq!(
            (f.slots, f.labels),
            (Some(2), Some(vec!["rack1".to_owned()]))
        );
    }

    /// The example in docs/ parses and shows every key.
    #[test]
    fn the_documented_example_has_every_key() {
        let f: FileConfig = toml::from_str(include_str!("../../docs/worker.toml")).unwrap();
        let FileConfig {
            bundle,
            slots,
            work_dir,
            cache_dir,
            cache_max_mib,
            labels,
            max_output_bytes,
            telemetry_interval_ms,
            startup_command,
            allow,
            python,
        } = f;
        assert!(bundle.is_some() && slots.is_some() && work_dir.is_some());
        assert!(cache_dir.is_some() && cache_max_mib.is_some() && labels.is_some());
        assert!(max_output_bytes.is_some() && telemetry_interval_ms.is_some());
        assert!(startup_command.is_some() && allow.is_some() && python.is_some());
    }

    /// Bounded fuzz run (CI): `worker.toml` texts, random and mangled, give an error, never
    /// a panic.
    #[test]
    fn config_files_never_panic() {
        let sample = "slots = 4\nlabels = [\"gpu\", \"rack-2\"]\nallow = [\"python3\"]\n";
        bramble_wire::fuzz::run(&[sample.as_bytes()], 256, |input| {
            let _ = toml::from_str::<FileConfig>(&String::from_utf8_lossy(input));
        });
    }
}
