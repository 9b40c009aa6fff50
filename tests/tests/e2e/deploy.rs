use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bramble_tests::{Cluster, bin, stderr};

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// The dpkg architecture of the binaries this test built.
fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armhf",
        other => panic!("no dpkg name for {other}"),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn install(root: &Path, bundle: &Path, arch: &str) -> std::process::Output {
    Command::new("bash")
        .arg(scripts().join("install-worker.sh"))
        .args([
            "--root",
            root.to_str().unwrap(),
            "--bundle",
            bundle.to_str().unwrap(),
        ])
        .args(["--binary", bin("bramble-worker").to_str().unwrap()])
        .env("BRAMBLE_DPKG_ARCH", arch)
        .output()
        .unwrap()
}

#[test]
fn install_worker_into_a_root_directory_is_complete_and_idempotent() {
    let c = Cluster::init();
    assert!(c.bramble(&["enroll", "pi-01"]).status.success());
    let bundle = c.profile_path("workers/pi-01.json");
    let root = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = install(root.path(), &bundle, native_arch());
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let r = root.path();
    assert_eq!(mode(&r.join("usr/local/bin/bramble-worker")), 0o755);
    assert_eq!(mode(&r.join("etc/bramble/bundle.json")), 0o600);
    assert_eq!(mode(&r.join("etc/bramble/worker.toml")), 0o640);
    assert_eq!(
        std::fs::read(r.join("etc/bramble/bundle.json")).unwrap(),
        std::fs::read(&bundle).unwrap()
    );
    let sysusers = std::fs::read_to_string(r.join("usr/lib/sysusers.d/bramble.conf")).unwrap();
    assert!(sysusers.contains("m bramble video"), "{sysusers}");
    let link = r.join("etc/systemd/system/multi-user.target.wants/bramble-worker.service");
    assert_eq!(
        std::fs::read_link(link).unwrap(),
        Path::new("/etc/systemd/system/bramble-worker.service")
    );
    // The installed config and bundle really start a worker.
    let out = Command::new(r.join("usr/local/bin/bramble-worker"))
        .args([
            "--bundle",
            r.join("etc/bramble/bundle.json").to_str().unwrap(),
            "--help",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());

    // A binary for another architecture, or a client bundle, is refused with exit 2.
    let other = if native_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let out = install(root.path(), &bundle, other);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is built for"), "{}", stderr(&out));
    let out = install(
        root.path(),
        &c.profile_path("security/client.json"),
        native_arch(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a worker bundle"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_systemd_unit_verifies_cleanly() {
    // `systemd-analyze verify` wants the ExecStart binary to exist: point it at ours.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(scripts().join("bramble-worker.service")).unwrap();
    let directives: Vec<&str> = unit.lines().filter(|l| !l.starts_with('#')).collect();
    for needed in [
        "Type=notify",
        "WatchdogSec=30s",
        "SupplementaryGroups=video",
        "Restart=always",
    ] {
        assert!(directives.contains(&needed), "missing {needed}");
    }
    for breaks_sensors in ["PrivateDevices=yes", "ProcSubset=pid"] {
        assert!(
            !directives.contains(&breaks_sensors),
            "{breaks_sensors} hides what the sensors read"
        );
    }
    let path = dir.path().join("bramble-worker.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/bramble-worker",
            bin("bramble-worker").to_str().unwrap(),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) is needed by this test");
    assert!(out.status.success(), "{}", stderr(&out));
    // verify only warns about unknown or misspelt keys: any output is a failure.
    assert_eq!(stderr(&out), "", "systemd-analyze complained");
}

#[test]
fn the_worker_speaks_systemd_notify_and_hides_it_from_tasks() {
    use std::os::unix::net::UnixDatagram;
    let mut c = Cluster::start_split(0, |_| vec![]);
    assert!(c.bramble(&["enroll", "pi-01"]).status.success());
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .unwrap();
    let bundle = c.profile_path("workers/pi-01.json");
    let mut worker = c
        .command(
            "bramble-worker",
            &["--bundle", bundle.to_str().unwrap(), "--slots", "1"],
        )
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "30000000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 512];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !(seen.contains("READY=1")
        && seen.contains("WATCHDOG=1")
        && seen.contains("STATUS=connected"))
        && std::time::Instant::now() < deadline
    {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
    }
    assert!(
        seen.contains("READY=1") && seen.contains("WATCHDOG=1"),
        "{seen}"
    );
    assert!(seen.contains("STATUS=connected as worker 0"), "{seen}");
    let out = c.bramble(&["apply", "--", "sh", "-c", "echo [${NOTIFY_SOCKET:-unset}]"]);
    assert_eq!(
        bramble_tests::stdout(&out),
        "[stdout:0] [unset]\n",
        "a task inherited NOTIFY_SOCKET"
    );
    let _ = worker.kill();
    let _ = worker.wait();
    c.stop();
}

#[test]
fn deploy_dry_run_prints_every_step_and_changes_nothing() {
    let c = Cluster::init();
    let out = Command::new("bash")
        .arg(scripts().join("deploy.sh"))
        .args([
            "--dry-run",
            "--binary",
            bin("bramble-worker").to_str().unwrap(),
        ])
        .args(["pi@pi-01.local", "admin@10.0.0.7"])
        .env("BRAMBLE_HOME", c.home.path())
        .env("BRAMBLE", bin("bramble"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = bramble_tests::stdout(&out);
    for name in ["pi-01", "pi-10-0-0-7"] {
        assert!(text.contains(&format!("enroll {name} --out")), "{text}");
        assert!(
            text.contains(&format!(
                "install-worker.sh --bundle /tmp/bramble-install/{name}.json"
            )),
            "{text}"
        );
        assert!(
            !c.profile_path(&format!("workers/{name}.json")).exists(),
            "a dry run enrolled {name}"
        );
    }
    assert!(
        text.contains("scp ") && text.contains("pi@pi-01.local:/tmp/bramble-install/"),
        "{text}"
    );
    let out = Command::new("bash")
        .arg(scripts().join("deploy.sh"))
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
