//! What every task process gets: its own process group (so timeouts and cancel kill all of
//! it), capped output, the work dir, the simulated speed when simulating, none of systemd's
//! notify variables, and the worker's allow list checked before it starts.

use std::path::PathBuf;
use std::process::Stdio;

/// Limits applied to every process.
#[derive(Clone, Debug)]
pub(crate) struct ExecLimits {
    /// Per stream (stdout, stderr) bytes kept; the rest is counted and dropped.
    pub(crate) max_output_bytes: usize,
    /// Working directory of task processes; the worker's own when `None`.
    pub(crate) work_dir: Option<PathBuf>,
    /// Programs tasks may start (by name or full path); anything when `None`.
    pub(crate) allow: Option<Vec<String>>,
    /// Simulation: tasks get `BRAMBLE_SIM_SPEED` and are duty-cycled to the simulated clock.
    pub(crate) sim: Option<std::sync::Arc<crate::sim::SimHooks>>,
}

impl ExecLimits {
    /// A task process: its own process group (so timeouts and cancel kill all of it), pipes
    /// for output, the work dir, `BRAMBLE_SIM_SPEED` when simulating, and none of systemd's
    /// notify variables (a task must not speak for the worker).
    pub(crate) fn command(
        &self,
        program: &str,
        args: &[String],
        stdin: Stdio,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .process_group(0)
            .kill_on_drop(true)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &self.work_dir {
            cmd.current_dir(dir);
        }
        if let Some(sim) = &self.sim {
            cmd.env("BRAMBLE_SIM_SPEED", format!("{:.4}", sim.speed()));
            if let Some(file) = sim.speed_file() {
                cmd.env("BRAMBLE_SIM_SPEED_FILE", file);
            }
        }
        for var in crate::watchdog::PRIVATE_ENV {
            cmd.env_remove(var);
        }
        cmd
    }
}

/// Refuses a program the worker's allow list does not name. With `--shell` the program is
/// `sh`, which can run anything: it must be allowed explicitly.
pub(crate) fn check_allowed(program: &str, limits: &ExecLimits) -> Result<(), String> {
    let Some(allow) = &limits.allow else {
        return Ok(());
    };
    let name = std::path::Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program);
    if allow.iter().any(|a| a == program || a == name) {
        Ok(())
    } else {
        Err(format!("{program} is not in this worker's allow list"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_names_and_paths() {
        let limits = ExecLimits {
            max_output_bytes: 10,
            work_dir: None,
            allow: Some(vec!["echo".into(), "/opt/x/run".into()]),
            sim: None,
        };
        assert!(check_allowed("echo", &limits).is_ok());
        assert!(check_allowed("/bin/echo", &limits).is_ok());
        assert!(check_allowed("/opt/x/run", &limits).is_ok());
        assert!(
            check_allowed("sh", &limits)
                .unwrap_err()
                .contains("allow list")
        );
        let open = ExecLimits {
            allow: None,
            ..limits
        };
        assert!(check_allowed("anything", &open).is_ok());
    }
}
