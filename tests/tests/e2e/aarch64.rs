use std::path::PathBuf;
use std::process::Command;

use bramble_tests::{Cluster, stderr, stdout};

/// The worker cross-built by `scripts/build-aarch64.sh debug` (scripts/test.sh runs it).
fn aarch64_worker() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/aarch64-unknown-linux-gnu/debug/bramble-worker");
    assert!(
        path.exists(),
        "{} missing: run scripts/build-aarch64.sh debug",
        path.display()
    );
    path
}

#[test]
fn an_aarch64_worker_under_qemu_joins_an_x86_host() {
    let worker = aarch64_worker();
    // leastload: the thermal policy may rightly give every item to the x86 worker when it
    // estimates the emulated one slow (it did, now and then); leastload fills every free slot,
    // so both architectures take part.
    let mut c = Cluster::init();
    c.spawn_host_with(&["--policy", "leastload"]);
    c.add_workers(1, |_| vec![]);
    assert!(c.bramble(&["enroll", "w1"]).status.success());
    let bundle = c.profile_path("workers/w1.json");
    let mut qemu = Command::new("qemu-aarch64-static");
    qemu.arg(&worker)
        .args(["--bundle", bundle.to_str().unwrap(), "--slots", "1"])
        .env("QEMU_LD_PREFIX", "/usr/aarch64-linux-gnu")
        .env("BRAMBLE_HOME", c.home.path());
    c.spawn_logged("w1", qemu);
    c.wait_for_workers(2);

    // The worker reports the architecture it was built for: aarch64 code runs here (under
    // qemu-user). Its task processes are this machine's own programs, run natively, so
    // `uname -m` in a task says the host's architecture here (on a Pi it says aarch64).
    let rows: serde_json::Value =
        serde_json::from_str(&stdout(&c.bramble(&["status", "--json"]))).unwrap();
    let arches: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["arch"].as_str().unwrap())
        .collect();
    assert_eq!(arches, [std::env::consts::ARCH, "aarch64"]);
    let out = c.bramble(&["apply", "--", "uname", "-m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let answered: Vec<&str> = text.lines().map(|l| l.split(']').next().unwrap()).collect();
    assert_eq!(answered, ["[stdout:0", "[stdout:1"], "{}", c.log_of("w1"));

    // A map across both architectures completes, and both take part.
    let out = c.bramble(&[
        "--json",
        "map",
        "--range",
        "0..12",
        "--",
        "sh",
        "-c",
        "sleep 0.3; echo {}",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(i, l)| l["stdout"] == format!("{i}\n"))
    );
    let workers: std::collections::BTreeSet<u64> = lines
        .iter()
        .map(|l| l["worker"].as_u64().unwrap())
        .collect();
    assert_eq!(
        workers.into_iter().collect::<Vec<_>>(),
        [0, 1],
        "both architectures ran items"
    );
}
