//! What this worker's Python can do, found once at start: its version, and whether
//! cloudpickle imports. When it cannot run engines, the report says why and how to fix it,
//! and `bramble status` shows that.

use std::process::Stdio;
use std::time::Duration;

use bramble_wire::PythonReport;

use crate::limits::{ExecLimits, check_allowed};

const PROBE: &str = "import sys; v = sys.version_info; print(v[0], v[1], v[2], flush=True)\n\
import cloudpickle; print(cloudpickle.__version__)";
/// A cold Pi may take a few seconds to start Python.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// The oldest Python the engine runs on.
const OLDEST: (u8, u8) = (3, 9);

/// Probes `python` as task processes would run it.
pub(crate) async fn probe(python: &str, limits: &ExecLimits) -> PythonReport {
    let report = |version, problem: Option<String>| PythonReport {
        interpreter: python.to_owned(),
        version,
        problem,
    };
    if let Err(why) = check_allowed(python, limits) {
        let fix = format!("{why}: add it to `allow` in worker.toml to run Python engines");
        return report(None, Some(fix));
    }
    let args = ["-c".to_owned(), PROBE.to_owned()];
    let mut cmd = limits.command(python, &args, Stdio::null());
    let out = match tokio::time::timeout(PROBE_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            let fix = format!(
                "{python}: {e} (install it: `sudo apt install python3 python3-cloudpickle`, or set `python` in worker.toml)"
            );
            return report(None, Some(fix));
        }
        Err(_) => return report(None, Some(format!("{python} did not answer within 30s"))),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.lines().next().and_then(parse_version);
    let problem = match version {
        None => Some(format!(
            "{python} is not a usable Python: {}",
            first_line(&out.stderr)
        )),
        Some((major, minor, _)) if (major, minor) < OLDEST => Some(format!(
            "{python} is Python {major}.{minor}; engines need {}.{} or newer",
            OLDEST.0, OLDEST.1
        )),
        Some(_) if !out.status.success() => Some(format!(
            "{python} has no cloudpickle ({}): `sudo apt install python3-cloudpickle`, or `pip install cloudpickle` into that Python",
            first_line(&out.stderr)
        )),
        Some(_) => None,
    };
    report(version, problem)
}

fn parse_version(line: &str) -> Option<(u8, u8, u8)> {
    let mut parts = line.split_whitespace().map(|p| p.parse::<u8>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// The last line of stderr, which for a failed import names the missing module.
fn first_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no error message")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(allow: Option<Vec<String>>) -> ExecLimits {
        ExecLimits {
            max_output_bytes: 1024,
            work_dir: None,
            allow,
            sim: None,
        }
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_missing_interpreter_and_an_allow_list_say_why_and_how_to_fix_it() {
        let r = block_on(probe("/nonexistent/python3", &limits(None)));
        assert_eq!(r.version, None);
        assert!(r.problem.unwrap().contains("apt install python3"));
        let r = block_on(probe("python3", &limits(Some(vec!["echo".into()]))));
        let why = r.problem.unwrap();
        assert!(
            why.contains("allow list") && why.contains("worker.toml"),
            "{why}"
        );
    }

    #[test]
    fn python_without_cloudpickle_is_named_with_its_version() {
        // `-I -S` (isolated, no `site`) keeps every site-packages out: no cloudpickle,
        // whatever is installed.
        let dir = tempfile::tempdir().unwrap();
        let isolated = dir.path().join("python-isolated");
        std::fs::write(&isolated, "#!/bin/sh\nexec python3 -I -S \"$@\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&isolated, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = block_on(probe(isolated.to_str().unwrap(), &limits(None)));
        assert!(r.version.is_some_and(|v| v.0 == 3), "{r:?}");
        let why = r.problem.unwrap();
        assert!(
            why.contains("no cloudpickle") && why.contains("cloudpickle"),
            "{why}"
        );
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("3 11 2"), Some((3, 11, 2)));
        assert_eq!(parse_version("3 11"), None);
    }
}
