use bramble_tests::{Cluster, Signal, stderr, stdout};

fn draining(c: &Cluster) -> Vec<(u64, bool)> {
    let rows: serde_json::Value =
        serde_json::from_str(&stdout(&c.bramble(&["status", "--json"]))).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_u64().unwrap(), r["draining"].as_bool().unwrap()))
        .collect()
}

#[test]
fn a_drained_worker_finishes_its_task_takes_no_new_work_and_comes_back() {
    let mut c = Cluster::start_split(2, |_| vec![]);
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let script = format!("echo {{}} >> {}; sleep 1; echo done", started.display());
    let out = c.bramble(&[
        "submit",
        "map",
        "--targets",
        "1",
        "--range",
        "0..1",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let running = stdout(&out).trim().to_owned();
    c.wait_until(20, "the task on w1 started", || started.exists());

    let out = c.bramble(&["drain", "w1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(draining(&c), [(0, false), (1, true)]);
    assert!(stdout(&c.bramble(&["status"])).contains("draining"));
    // Its running task finishes; new work goes elsewhere; naming it is refused.
    assert_eq!(c.bramble(&["wait", &running]).status.code(), Some(0));
    let out = c.bramble(&["--json", "map", "--range", "0..6", "--", "echo", "{}"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).lines().all(|l| l.contains("\"worker\":0")),
        "{}",
        stdout(&out)
    );
    let out = c.bramble(&["apply", "--targets", "1", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("drained"), "{}", stderr(&out));

    // Kept across a host restart.
    c.signal("host", Signal::KILL);
    c.spawn_host();
    c.wait_for_workers(2);
    assert_eq!(draining(&c), [(0, false), (1, true)]);

    let out = c.bramble(&["undrain", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(draining(&c), [(0, false), (1, false)]);
    let out = c.bramble(&["apply", "--targets", "1", "--", "echo", "back"]);
    assert_eq!(stdout(&out), "[stdout:1] back\n", "{}", stderr(&out));

    let out = c.bramble(&["drain", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no worker \"nosuch\""),
        "{}",
        stderr(&out)
    );
}
