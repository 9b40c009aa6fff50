use std::collections::BTreeMap;

use bramble_tests::{Cluster, Signal, lines, stderr, stdout};

/// `results JOB --json` as index → (worker, stdout).
fn results(c: &Cluster, job: &str) -> BTreeMap<u64, (u64, String)> {
    let out = c.bramble(&["--json", "results", job]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut map = BTreeMap::new();
    for line in stdout(&out).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let index = v["index"].as_u64().unwrap();
        let prev = map.insert(
            index,
            (
                v["worker"].as_u64().unwrap(),
                v["stdout"].as_str().unwrap().to_owned(),
            ),
        );
        assert!(prev.is_none(), "index {index} printed twice");
    }
    map
}

#[test]
fn host_sigkill_and_restart_keeps_every_result_exactly_once() {
    let mut c = Cluster::start_split(3, |_| vec![]);
    let dir = tempfile::tempdir().unwrap();
    let (runs, finished) = (dir.path().join("runs"), dir.path().join("finished"));
    let script = format!(
        "echo {{}} >> {}; sleep 0.4; echo {{}} >> {}; echo item-{{}}",
        runs.display(),
        finished.display()
    );
    let out = c.bramble(&[
        "submit", "map", "--range", "0..24", "--", "sh", "-c", &script,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job = stdout(&out).trim().to_owned();
    c.wait_until(20, "some results", || lines(&runs).len() >= 6);

    c.signal("host", Signal::KILL);
    // A task finishes while no host is up: its result waits in a worker's outbox.
    let before = lines(&finished).len();
    c.wait_until(20, "a task finished with the host down", || {
        lines(&finished).len() > before
    });
    c.spawn_host();
    let out = c.bramble(&["wait", &job, "--timeout", "60"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nhost log:\n{}",
        stderr(&out),
        c.log_of("host")
    );

    let got = results(&c, &job);
    assert_eq!(got.len(), 24);
    for (i, (_, text)) in &got {
        assert_eq!(text, &format!("item-{i}\n"));
    }
    let ran = lines(&runs).len();
    eprintln!("host SIGKILL: 24 items, {ran} runs, 24 results, 0 duplicates");
    // The restarted host gives each worker back the tasks it had (and it runs them once).
    assert_eq!(ran, 24, "a task ran twice:\n{}", c.log_of("host"));
    assert!(
        c.log_of("host").contains("resuming 1 unfinished job"),
        "{}",
        c.log_of("host")
    );
}

#[test]
fn worker_sigkill_mid_job_loses_nothing() {
    let mut c = Cluster::start_split(3, |_| vec![]);
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let script = format!("echo {{}} >> {}; sleep 0.5; echo {{}}", started.display());
    let mut map = c.command(
        "bramble",
        &["map", "--range", "0..15", "--", "sh", "-c", &script],
    );
    let map = map
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.wait_until(20, "work started", || lines(&started).len() >= 4);
    c.signal("w1", Signal::KILL);
    let out = map.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want: String = (0..15).map(|i| format!("{i}\n")).collect();
    assert_eq!(stdout(&out), want);
}

#[test]
fn stopped_worker_past_the_heartbeat_delivers_its_result_once() {
    let mut c = Cluster::start_split(2, |_| vec![]);
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let script = format!(
        "echo {{}} >> {}; sleep 1; echo done-{{}}",
        started.display()
    );
    let out = c.bramble(&[
        "submit", "map", "--range", "0..6", "--", "sh", "-c", &script,
    ]);
    let job = stdout(&out).trim().to_owned();
    c.wait_until(20, "both workers busy", || lines(&started).len() >= 2);
    c.signal("w0", Signal::STOP);
    // The host declares w0 lost after 5 s of silence and re-runs its task elsewhere.
    c.wait_until(20, "w0 declared lost", || {
        c.log_of("host").contains("no heartbeat")
    });
    c.signal("w0", Signal::CONT);
    c.wait_until(30, "w0 back", || {
        stdout(&c.bramble(&["ids"])).trim() == "[0, 1]"
    });
    assert_eq!(
        c.bramble(&["wait", &job, "--timeout", "60"]).status.code(),
        Some(0)
    );
    let got = results(&c, &job);
    assert_eq!(got.len(), 6);
    assert!(got.iter().all(|(i, (_, s))| *s == format!("done-{i}\n")));
    c.wait_until(10, "w0 delivered its buffered result", || {
        c.log_of("w0").contains("finished while disconnected")
    });
}

#[test]
fn retries_move_failures_to_another_worker() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    std::fs::write(dirs[0].path().join("broken"), "").unwrap();
    let paths: Vec<String> = dirs
        .iter()
        .map(|d| d.path().to_str().unwrap().to_owned())
        .collect();
    let c = Cluster::start_split(3, |i| vec!["--work-dir".into(), paths[i].clone()]);
    let task = ["sh", "-c", "test ! -e broken && echo ok-{}"];

    let mut args = vec!["--json", "map", "--retries", "2", "--range", "0..9", "--"];
    args.extend(task);
    let out = c.bramble(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for line in stdout(&out).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_ne!(v["worker"], 0, "a result from the broken worker: {v}");
    }
    // Without retries the broken worker's items fail.
    let mut args = vec!["map", "--range", "0..9", "--"];
    args.extend(task);
    assert_eq!(c.bramble(&args).status.code(), Some(1));
}

#[test]
fn revoked_worker_is_dropped_and_refused() {
    let mut c = Cluster::start_split(2, |_| vec![]);
    let out = c.bramble(&["revoke", "w1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait_until(10, "w1 gone", || {
        stdout(&c.bramble(&["ids"])).trim() == "[0]"
    });
    c.wait_until(10, "w1 told", || c.log_of("w1").contains("revoked"));
    // Still refused after a host restart (revoked.txt).
    c.signal("host", Signal::KILL);
    c.spawn_host();
    // A fresh w1 process dials at once (the old one backs off after a refusal).
    c.signal("w1", Signal::KILL);
    c.spawn_worker(1, &[]);
    c.wait_until(20, "w1 refused at connect", || {
        c.log_of("host").contains("certificate revoked")
    });
    c.wait_until(20, "w0 back", || {
        stdout(&c.bramble(&["ids"])).trim() == "[0]"
    });
    assert!(
        c.log_of("w1").contains("refused this worker"),
        "{}",
        c.log_of("w1")
    );
}

#[test]
fn a_following_map_resumes_after_a_host_restart_without_downloading_again() {
    // `--unordered` used to ask again from the first result after a reconnect; now the CLI
    // asks for what comes after the last result it has (a cursor), and gets only that.
    let mut c = Cluster::start_split(2, |_| vec![]);
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let script = format!("echo {{}} >> {}; sleep 0.3; echo {{}}", started.display());
    let mut map = c.command(
        "bramble",
        &[
            "map",
            "--unordered",
            "--range",
            "0..10",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let map = map
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Two rounds of results are in before the host dies.
    c.wait_until(20, "results before the restart", || {
        lines(&started).len() >= 5
    });
    c.signal("host", Signal::KILL);
    c.spawn_host();
    let out = map.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut got: Vec<u64> = stdout(&out).lines().map(|l| l.parse().unwrap()).collect();
    got.sort();
    assert_eq!(got, (0..10).collect::<Vec<_>>(), "each result printed once");
    assert!(stderr(&out).contains("reconnecting"), "{}", stderr(&out));
    // The restarted host's log: what the resumed stream asked for and got from the store.
    let log = c.log_of("host");
    let resumed: Vec<(u64, u64)> = log
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("job 1, ")?;
            let (stored, after) = rest.split_once(" stored results after seq ")?;
            Some((stored.parse().ok()?, after.trim().parse().ok()?))
        })
        .collect();
    eprintln!("results requests of job 1 (stored results sent, after seq): {resumed:?}");
    let (stored, after) = *resumed.last().expect("a resumed results request");
    assert!(
        after >= 2,
        "resumed from seq {after}, not from its cursor:\n{log}"
    );
    assert!(
        stored + after <= 10,
        "{stored} stored results sent after seq {after}: something was sent twice"
    );
}

#[test]
fn a_result_written_into_a_dead_connection_is_delivered_not_run_again() {
    // The host freezes while the task finishes, so the worker writes its result into a
    // connection whose other end will never read it; then the host dies and comes back.
    let mut c = Cluster::start_split(1, |_| vec![]);
    let dir = tempfile::tempdir().unwrap();
    let (started, finished) = (dir.path().join("started"), dir.path().join("finished"));
    let script = format!(
        "echo {{}} >> {}; sleep 1; echo {{}} >> {}; echo item-{{}}",
        started.display(),
        finished.display()
    );
    let out = c.bramble(&[
        "submit", "map", "--range", "0..1", "--", "sh", "-c", &script,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job = stdout(&out).trim().to_owned();
    c.wait_until(20, "the task started", || lines(&started).len() == 1);
    c.signal("host", Signal::STOP);
    c.wait_until(20, "the task finished", || lines(&finished).len() == 1);
    c.wait_until(20, "the worker wrote the result", || {
        c.log_of("w0").contains("sent the result of task")
    });
    c.signal("host", Signal::KILL);
    c.spawn_host();
    let out = c.bramble(&["wait", &job, "--timeout", "60"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = results(&c, &job);
    assert_eq!(got.get(&0).map(|r| r.1.as_str()), Some("item-0\n"));
    assert_eq!(
        lines(&started),
        ["0"],
        "the task ran again: its result was lost with the connection\nworker log:\n{}",
        c.log_of("w0")
    );
    assert!(
        c.log_of("w0").contains("delivering task"),
        "{}",
        c.log_of("w0")
    );
}

#[test]
fn a_retry_on_the_only_worker_runs() {
    // Each item fails once, then succeeds: its retry can only go back to the same worker,
    // which must not mistake it for the failed attempt whose result it still holds.
    let c = Cluster::start_split(1, |_| vec![]);
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "cd {}; if [ -e seen-{{}} ]; then echo ok-{{}}; else touch seen-{{}}; exit 1; fi",
        dir.path().display()
    );
    let out = c.bramble(&[
        "submit",
        "map",
        "--retries",
        "1",
        "--range",
        "0..4",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job = stdout(&out).trim().to_owned();
    let out = c.bramble(&["wait", &job, "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got: Vec<String> = results(&c, &job).into_values().map(|r| r.1).collect();
    assert_eq!(got, ["ok-0\n", "ok-1\n", "ok-2\n", "ok-3\n"]);
}
