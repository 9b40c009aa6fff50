//! Test harness: real `bramble` and `bramble-worker` processes on loopback, each cluster in
//! its own temporary `BRAMBLE_HOME` on its own UDP port. The binaries come from the same
//! cargo target directory (`cargo build --workspace --bins` first; `scripts/test.sh` does).

pub mod relay;

use std::fs::File;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use rustix::process::Signal;
use tempfile::TempDir;

/// A binary of this workspace, next to the test executable's `deps/` directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A loopback UDP port for one test cluster's host, held until the lease is dropped.
///
/// Ports come from below the kernel's ephemeral range, so no socket bound to port 0 (every
/// worker's and client's QUIC endpoint) can be given one meanwhile; a lock file per port
/// keeps test processes running at once (nextest runs one per test) off each other's.
pub struct PortLease {
    pub port: u16,
    _lock: File,
}

pub fn lease_port() -> PortLease {
    let dir = std::env::temp_dir().join("bramble-test-ports");
    std::fs::create_dir_all(&dir).expect("port lock directory");
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (20_000u16, ephemeral.max(21_000));
    let span = u32::from(high - low);
    let start = std::process::id().wrapping_mul(7919) % span;
    for k in 0..span {
        let port = low + ((start + k) % span) as u16;
        let lock = File::create(dir.join(format!("{port}.lock"))).expect("port lock file");
        let locked = rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive);
        if locked.is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return PortLease { port, _lock: lock };
        }
    }
    panic!("no free UDP port in {low}..{high}");
}

/// The lines of a text file (none if it does not exist yet).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Resident memory of a process, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// `stdout` of a command as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `stderr` of a command as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A profile in a temporary `BRAMBLE_HOME` and, once started, `bramble cluster start`.
pub struct Cluster {
    pub home: TempDir,
    pub port: u16,
    _lease: PortLease,
    process: Option<Child>,
    /// Split mode: `host`, `w0`, `w1`, … as separate processes.
    procs: Vec<(String, Child)>,
}

impl Cluster {
    /// An initialised profile listening on a fresh loopback port; nothing running yet.
    pub fn init() -> Self {
        let home = tempfile::tempdir().expect("temp dir");
        let lease = lease_port();
        let port = lease.port;
        let c = Self {
            home,
            port,
            _lease: lease,
            process: None,
            procs: Vec::new(),
        };
        let out = c.bramble(&["init", "--listen", &format!("127.0.0.1:{port}")]);
        assert!(out.status.success(), "init failed: {}", stderr(&out));
        c
    }

    /// `bramble cluster start -n N` with the profile, waiting until all N workers joined.
    pub fn start(n: usize) -> Self {
        let mut c = Self::init();
        c.run(n);
        c
    }

    /// Starts `bramble cluster start -n N` on this profile and waits for the N workers.
    pub fn run(&mut self, n: usize) {
        assert!(self.process.is_none(), "cluster already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.path().join("cluster.log"))
            .expect("log file");
        let child = Command::new(bin("bramble"))
            .env("BRAMBLE_HOME", self.home.path())
            .args(["cluster", "start", "-n", &n.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn bramble cluster start");
        self.process = Some(child);
        self.wait_for_workers(n);
    }

    /// Polls `bramble ids` until `n` workers are connected (20 s at most).
    pub fn wait_for_workers(&self, n: usize) {
        self.wait_for_workers_within(n, 20);
    }

    /// Polls `bramble ids` until `n` workers are connected (`secs` at most).
    pub fn wait_for_workers_within(&self, n: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let out = self.bramble(&["ids"]);
            if out.status.success() && self.parse_ids(&out).len() == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} workers never joined; log:\n{}{}",
                self.log(),
                self.log_of("host")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The JSON array `bramble ids` printed.
    pub fn parse_ids(&self, out: &Output) -> Vec<u32> {
        serde_json::from_str(stdout(out).trim()).unwrap_or_default()
    }

    /// Runs `bramble ARGS..` against this profile.
    pub fn bramble(&self, args: &[&str]) -> Output {
        self.command("bramble", args).output().expect("run bramble")
    }

    /// A command for one of the binaries with this cluster's `BRAMBLE_HOME`.
    pub fn command(&self, binary: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin(binary));
        cmd.env("BRAMBLE_HOME", self.home.path())
            .env_remove("BRAMBLE_BUNDLE")
            .args(args);
        cmd
    }

    /// Path inside the profile directory.
    pub fn profile_path(&self, rel: &str) -> PathBuf {
        self.home.path().join("default").join(rel)
    }

    /// Path inside the cluster's `BRAMBLE_HOME` (logs, worker caches).
    pub fn home_path(&self, rel: &str) -> PathBuf {
        self.home.path().join(rel)
    }

    /// What the cluster process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("cluster.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `sig` to a child process.
fn signal(child: &Child, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// SIGTERM, then SIGKILL after 5 s.
fn terminate(child: &mut Child) {
    signal(child, rustix::process::Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Worker flags of a small simulated rack: worker 0 a bare Pi 4 in a hot rack (35 °C ambient,
/// thermal time 60×, two slots), the others constant-speed workers at half a Pi 5's speed.
pub fn hot_pi4_and_steady(i: usize) -> Vec<String> {
    let flags: &[&str] = match i {
        0 => &[
            "--slots",
            "2",
            "--sim",
            "pi4-bare",
            "--sim-ambient",
            "35",
            "--sim-time-scale",
            "60",
        ],
        _ => &["--sim-speed", "0.5"],
    };
    flags.iter().map(|f| (*f).to_owned()).collect()
}

/// Split mode: the host and each worker as their own processes, so tests can kill, stop and
/// restart them one by one. Workers are enrolled as `w0`, `w1`, …; logs go to `<name>.log`.
impl Cluster {
    /// A profile, `bramble serve`, and `n` workers (`extra(i)` adds flags to worker i); worker
    /// `w<i>` has id `i`.
    pub fn start_split(n: usize, extra: impl Fn(usize) -> Vec<String>) -> Self {
        let mut c = Self::init();
        c.spawn_host();
        c.add_workers(n, extra);
        c
    }

    /// Enrolls and starts workers `w0`..`w<n-1>` (the host is up), waiting for each.
    pub fn add_workers(&mut self, n: usize, extra: impl Fn(usize) -> Vec<String>) {
        // Enrollment gives w<i> id i; one at a time all the same, so each has joined
        // before the next starts.
        for i in 0..n {
            let out = self.bramble(&["enroll", &format!("w{i}")]);
            assert!(out.status.success(), "enroll: {}", stderr(&out));
            self.spawn_worker(i, &extra(i));
            self.wait_for_workers(i + 1);
        }
    }

    /// Starts `cmd` as process `name` of the cluster, logging to `<name>.log`.
    pub fn spawn_logged(&mut self, name: &str, mut cmd: Command) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.path().join(format!("{name}.log")))
            .expect("log file");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn");
        self.procs.retain(|(n, _)| n != name);
        self.procs.push((name.to_owned(), child));
    }

    /// Starts `bramble serve` on the profile.
    pub fn spawn_host(&mut self) {
        self.spawn_host_with(&[]);
    }

    /// Starts `bramble serve EXTRA..` on the profile.
    pub fn spawn_host_with(&mut self, extra: &[&str]) {
        let mut cmd = self.command("bramble", &["serve"]);
        cmd.args(extra);
        self.spawn_logged("host", cmd);
    }

    /// Starts worker `i` with bundle `w<i>` and extra flags, logging at debug level (tests
    /// wait for some of its debug lines).
    pub fn spawn_worker(&mut self, i: usize, extra: &[String]) {
        let bundle = self.profile_path(&format!("workers/w{i}.json"));
        let cache = self.home.path().join(format!("w{i}.cache"));
        let mut cmd = self.command(
            "bramble-worker",
            &[
                "--bundle",
                bundle.to_str().expect("utf-8 path"),
                "--slots",
                "1",
                "--cache-dir",
                cache.to_str().expect("utf-8 path"),
            ],
        );
        cmd.args(extra).env("BRAMBLE_LOG", "debug");
        self.spawn_logged(&format!("w{i}"), cmd);
    }

    fn proc(&mut self, name: &str) -> &mut Child {
        &mut self
            .procs
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no process {name}"))
            .1
    }

    /// Sends a signal to `host` or `w<i>`; after SIGKILL, reaps it.
    pub fn signal(&mut self, name: &str, sig: rustix::process::Signal) {
        let child = self.proc(name);
        signal(child, sig);
        if sig == rustix::process::Signal::KILL {
            let _ = child.wait();
        }
    }

    /// The process id of `host` or `w<i>`.
    pub fn pid(&mut self, name: &str) -> u32 {
        self.proc(name).id()
    }

    /// The log of `host` or `w<i>` so far.
    pub fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.home.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Polls until `f` is true (panics after `secs` with `what`).
    pub fn wait_until(&self, secs: u64, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Cluster {
    /// Stops every process of the cluster (SIGTERM lets them clean up; SIGKILL if they hang).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            terminate(&mut child);
        }
        // Workers first, so the host does not see them as lost work.
        for (_, child) in self.procs.iter_mut().rev() {
            terminate(child);
        }
        self.procs.clear();
    }
}
