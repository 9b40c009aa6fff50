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
        assert!(
            text.contains(&format!("enroll {name} --reuse --out")),
            "{text}"
        );
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

/// A 96 MiB (sparse) Raspberry-Pi-OS-like image: MBR, FAT boot partition, ext4 root with the usual
/// directories. Returns the root partition's byte offset.
fn synthetic_pi_image(image: &Path) -> u64 {
    use std::io::{Seek, SeekFrom, Write};
    let (boot_start, boot_len, root_start) = (2048u32, 16384u32, 18432u32);
    let root_len = 96 * 2048 - root_start;
    let mut mbr = [0u8; 512];
    for (i, (kind, start, len)) in [(0x0cu8, boot_start, boot_len), (0x83, root_start, root_len)]
        .iter()
        .enumerate()
    {
        let e = 446 + 16 * i;
        mbr[e + 4] = *kind;
        mbr[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
        mbr[e + 12..e + 16].copy_from_slice(&len.to_le_bytes());
    }
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    let mut f = std::fs::File::create(image).unwrap();
    f.set_len(96 << 20).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(&mbr).unwrap();
    drop(f);
    let run = |cmd: &mut Command| assert!(cmd.status().unwrap().success(), "{cmd:?}");
    run(Command::new("mkfs.vfat")
        .args(["-n", "BOOT", "--offset", &boot_start.to_string()])
        .arg(image)
        .arg((boot_len / 2).to_string())
        .stdout(std::process::Stdio::null()));
    let tree = tempfile::tempdir().unwrap();
    for d in [
        "etc/systemd/system",
        "usr/local/bin",
        "usr/lib/sysusers.d",
        "usr/lib/tmpfiles.d",
        "var/lib",
    ] {
        std::fs::create_dir_all(tree.path().join(d)).unwrap();
    }
    std::fs::write(
        tree.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\n",
    )
    .unwrap();
    let offset = u64::from(root_start) * 512;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", &format!("offset={offset}"), "-d"])
        .arg(tree.path())
        .arg(image)
        .arg(format!("{}k", root_len / 2)));
    offset
}

fn debugfs(image: &Path, offset: u64, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(format!("{}?offset={offset}", image.display()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn bake(image: &Path, bundle: &Path) -> std::process::Output {
    Command::new("bash")
        .arg(scripts().join("bake-image.sh"))
        .arg(image)
        .args([
            "--bundle",
            bundle.to_str().unwrap(),
            "--binary",
            bin("bramble-worker").to_str().unwrap(),
        ])
        .output()
        .unwrap()
}

#[test]
fn bake_image_writes_the_worker_into_a_pi_os_image_without_mounting() {
    let c = Cluster::init();
    assert!(c.bramble(&["enroll", "pi-07"]).status.success());
    let bundle = c.profile_path("workers/pi-07.json");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("pi.img");
    let root = synthetic_pi_image(&image);
    let boot_before = std::fs::read(&image).unwrap()[1 << 20..root as usize].to_vec();
    for _ in 0..2 {
        let out = bake(&image, &bundle);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let mode = |path: &str| {
        let stat = debugfs(&image, root, &format!("stat {path}"));
        stat.split("Mode:")
            .nth(1)
            .and_then(|m| m.split_whitespace().next())
            .unwrap_or("missing")
            .to_owned()
    };
    assert_eq!(mode("/usr/local/bin/bramble-worker"), "0755");
    assert_eq!(mode("/etc/bramble/bundle.json"), "0600");
    assert_eq!(mode("/etc/bramble/worker.toml"), "0640");
    assert_eq!(mode("/etc/systemd/system/bramble-worker.service"), "0644");
    assert_eq!(
        debugfs(&image, root, "cat /etc/bramble/bundle.json"),
        std::fs::read_to_string(&bundle).unwrap()
    );
    assert!(
        debugfs(&image, root, "cat /usr/lib/sysusers.d/bramble.conf").contains("m bramble video")
    );
    assert!(
        debugfs(&image, root, "cat /usr/lib/tmpfiles.d/bramble.conf")
            .contains("/etc/bramble/bundle.json 0600 bramble")
    );
    let link = debugfs(
        &image,
        root,
        "stat /etc/systemd/system/multi-user.target.wants/bramble-worker.service",
    );
    assert!(
        link.contains("Fast link dest: \"/etc/systemd/system/bramble-worker.service\""),
        "{link}"
    );
    assert_eq!(
        std::fs::read(&image).unwrap()[1 << 20..root as usize],
        boot_before[..],
        "the boot partition changed"
    );

    // Not an image, or a client bundle: refused with exit 2.
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0u8; 4096]).unwrap();
    let out = bake(&junk, &bundle);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no MBR"), "{}", stderr(&out));
    let out = bake(&image, &c.profile_path("security/client.json"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a worker bundle"),
        "{}",
        stderr(&out)
    );
}
