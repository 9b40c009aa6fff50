use std::path::{Path, PathBuf};
use std::process::Command;

use bramble_tests::{Cluster, Signal, lines, stderr, stdout};

/// A tmpfs of `size` mounted over `dir` (which keeps its files), unmounted when dropped.
/// Needs root, like the deployment tests' tools (CI runs as root).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn over(dir: &Path, size: &str) -> Self {
        let keep = dir.with_extension("kept");
        std::fs::rename(dir, &keep).unwrap();
        std::fs::create_dir(dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(mounted.success(), "mounting a tmpfs needs root");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(keep.join("."))
            .arg(dir)
            .status()
            .unwrap();
        assert!(copied.success());
        Self(dir.to_owned())
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: processes of the cluster may still hold files open.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Issue 11, item 1: with the job store on a full disk the host acknowledges and reports
/// nothing it has not written. It says so (to followers, in `status`, by refusing new jobs),
/// survives a SIGKILL while full, and carries on by itself once there is room: every item
/// printed once, executed once, stored once.
#[test]
fn a_full_disk_holds_results_back_until_they_are_written() {
    let mut c = Cluster::init();
    let disk = Tmpfs::over(&c.profile_path(""), "2m");
    // leastload: the thermal policy may re-run a straggler, and this test counts executions.
    let policy = ["--policy", "leastload"];
    c.spawn_host_with(&policy);
    c.add_workers(2, |_| vec![]);
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    // 64 KiB of output per item: 200 items need 13 MiB, the disk has 2.
    let script = format!(
        "head -c 65536 /dev/zero | tr '\\0' x; echo; echo {{}} >> {}",
        runs.display()
    );
    let (said, printed) = (dir.path().join("stderr"), dir.path().join("stdout"));
    let mut map = c
        .command(
            "bramble",
            &["map", "--range", "0..200", "--shell", "--", &script],
        )
        .stdout(std::fs::File::create(&printed).unwrap())
        .stderr(std::fs::File::create(&said).unwrap())
        .spawn()
        .unwrap();
    // The follower hears it (after the results before it).
    c.wait_until(60, "the map to say the store is full", || {
        let said = std::fs::read_to_string(&said).unwrap_or_default();
        said.contains("host: the host cannot write its job store")
    });

    let refused = c.bramble(&["map", "--range", "0..2", "--", "echo"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("not accepting jobs: the host cannot write its job store"),
        "{}",
        stderr(&refused)
    );
    let status = c.bramble(&["status"]);
    assert!(
        stdout(&status).contains("CANNOT WRITE THE JOB STORE"),
        "{}",
        stdout(&status)
    );

    // Killed while full, restarted while still full (it cannot even open the store, or it
    // opens it and cannot write): what the workers hold waits for it.
    c.signal("host", Signal::KILL);
    c.spawn_host_with(&policy);
    c.wait_until(60, "the restarted host to meet the full disk", || {
        let log = c.log_of("host");
        log.contains("waiting for free space")
            || log.matches("cannot write its job store").count() == 2
    });
    disk.resize("64m");

    let status = map.wait().unwrap();
    let said = std::fs::read_to_string(&said).unwrap();
    assert_eq!(status.code(), Some(0), "{said}");
    let printed = lines(&printed).len();
    let ran = lines(&runs);
    let jobs = stdout(&c.bramble(&["jobs"]));
    eprintln!(
        "full disk: 200 items, {printed} printed, {} executions, jobs: {jobs}",
        ran.len()
    );
    assert_eq!(printed, 200);
    assert!(jobs.contains("done               200/200"), "{jobs}");
    let mut unique = ran.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 200);
    assert_eq!(ran.len(), 200, "an item ran twice:\n{}", c.log_of("host"));
    let results = c.bramble(&["results", "1"]);
    assert_eq!(stdout(&results).lines().count(), 200);
    let status = stdout(&c.bramble(&["status"]));
    assert!(status.contains(" MiB free"), "{status}");
}
