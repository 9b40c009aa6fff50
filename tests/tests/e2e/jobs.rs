use bramble_tests::{Cluster, Signal, lines, stderr, stdout};

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn job_state(c: &Cluster, job: &str) -> String {
    let jobs: serde_json::Value =
        serde_json::from_str(&stdout(&c.bramble(&["--json", "jobs"]))).unwrap();
    let j = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"].as_u64().map(|n| n.to_string()).as_deref() == Some(job))
        .expect("job listed");
    j["state"].as_str().unwrap().to_owned()
}

#[test]
fn scatter_gathers_64_items_in_target_order() {
    let c = Cluster::start(4);
    // Each target reads its contiguous chunk on stdin and prints its first item and count.
    let script = "import sys; l=sys.stdin.read().split(); print(l[0], len(l))";
    let out = c.bramble(&["scatter", "--range", "0..64", "--", "python3", "-c", script]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "0 16\n16 16\n32 16\n48 16\n");
    let out = c.bramble(&[
        "--json",
        "scatter",
        "--targets",
        "3,1",
        "--range",
        "0..5",
        "--",
        "wc",
        "-l",
    ]);
    let lines = json_lines(&out);
    assert_eq!(
        (lines[0]["worker"].as_u64(), lines[0]["stdout"].as_str()),
        (Some(3), Some("3\n"))
    );
    assert_eq!(
        (lines[1]["worker"].as_u64(), lines[1]["stdout"].as_str()),
        (Some(1), Some("2\n"))
    );
}

#[test]
fn submit_jobs_wait_results_and_cancel() {
    let c = Cluster::start(2);
    let out = c.bramble(&[
        "submit",
        "map",
        "--range",
        "0..6",
        "--",
        "sh",
        "-c",
        "sleep 0.2; echo {}",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job = stdout(&out).trim().to_owned();
    assert_eq!(c.bramble(&["wait", &job]).status.code(), Some(0));
    let out = c.bramble(&["results", &job]);
    assert_eq!(stdout(&out), "0\n1\n2\n3\n4\n5\n");
    assert_eq!(job_state(&c, &job), "done");

    // A long job: wait times out, cancel stops it, wait then reports it cancelled.
    let out = c.bramble(&["submit", "map", "--range", "0..4", "--", "sleep", "30"]);
    let long = stdout(&out).trim().to_owned();
    let out = c.bramble(&["wait", &long, "--timeout", "0.5"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    let out = c.bramble(&["cancel", &long]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.bramble(&["wait", &long]).status.code(), Some(1));
    assert_eq!(job_state(&c, &long), "cancelled");
    let out = c.bramble(&["cancel", &long]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
    let out = c.bramble(&["results", "999"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no job 999"), "{}", stderr(&out));
}

#[test]
fn results_follow_prints_as_results_arrive() {
    let c = Cluster::start(2);
    let out = c.bramble(&[
        "submit",
        "map",
        "--range",
        "0..4",
        "--",
        "sh",
        "-c",
        "sleep 0.{}; echo {}",
    ]);
    let job = stdout(&out).trim().to_owned();
    let out = c.bramble(&["results", &job, "--follow"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "0\n1\n2\n3\n");
}

#[test]
fn cancel_kills_running_process_groups() {
    let c = Cluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = format!("sh -c 'sleep 60' & echo $! >> {}; wait", pids.display());
    let out = c.bramble(&[
        "submit", "map", "--range", "0..6", "--", "sh", "-c", &script,
    ]);
    let job = stdout(&out).trim().to_owned();
    c.wait_until(10, "two running tasks", || {
        std::fs::read_to_string(&pids)
            .map(|s| s.lines().count())
            .unwrap_or(0)
            == 2
    });
    assert!(c.bramble(&["cancel", &job]).status.success());
    let alive = |pid: &str| std::path::Path::new(&format!("/proc/{pid}")).exists();
    let text = std::fs::read_to_string(&pids).unwrap();
    c.wait_until(10, "grandchildren killed", || {
        text.lines().all(|p| !alive(p))
    });
    // Nothing else of the job starts afterwards. A marker on every worker, sent after the
    // cancel, runs after anything of the job that each worker was still given or held
    // waiting (a worker takes tasks in order): so once the markers ran, the file is final.
    let marker = format!("echo marker >> {}", pids.display());
    let out = c.bramble(&["apply", "--", "sh", "-c", &marker]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after: Vec<String> = lines(&pids);
    assert_eq!(after.len(), 4, "{after:?}");
    assert_eq!(
        &after[2..],
        ["marker", "marker"],
        "a task of the cancelled job started"
    );
}

#[test]
fn ctrl_c_on_a_blocking_map_cancels_its_job() {
    let c = Cluster::start(1);
    let mut map = c
        .command("bramble", &["map", "--range", "0..3", "--", "sleep", "30"])
        .spawn()
        .unwrap();
    c.wait_until(10, "the job to start", || {
        stdout(&c.bramble(&["--json", "jobs"])).contains("running")
    });
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(map.id() as i32).unwrap(),
        Signal::INT,
    )
    .unwrap();
    let status = map.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    c.wait_until(10, "the job cancelled", || {
        job_state(&c, "1") == "cancelled"
    });
}

#[test]
fn persistent_coprocesses_answer_one_line_per_item() {
    let c = Cluster::start(2);
    let script = "import sys\nfor l in sys.stdin: print(int(l)**2, flush=True)";
    let out = c.bramble(&[
        "map",
        "--persistent",
        "--chunksize",
        "5",
        "--range",
        "0..100",
        "--",
        "python3",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let want: String = (0..100).map(|i| format!("{}\n", i * i)).collect();
    assert_eq!(stdout(&out), want);
    // A co-process that dies on item 3 fails that item only, and is restarted.
    let script = "import sys\nfor l in sys.stdin:\n    if l.strip() == '3': sys.exit(9)\n    print(l.strip(), flush=True)";
    let out = c.bramble(&[
        "map",
        "--persistent",
        "--range",
        "0..6",
        "--",
        "python3",
        "-c",
        script,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "0\n1\n2\n4\n5\n");
    assert!(
        stderr(&out).contains("[item 3 on worker"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn worker_config_allow_list_labels_and_startup_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("worker.toml");
    std::fs::write(&config, "allow = [\"echo\"]\nlabels = [\"gpu\"]\nstartup_command = [\"sh\", \"-c\", \"echo no disk >&2; exit 4\"]\n").unwrap();
    let path = config.to_str().unwrap().to_owned();
    let c = Cluster::start_split(2, |i| {
        if i == 1 {
            vec!["--config".into(), path.clone()]
        } else {
            vec![]
        }
    });

    let out = c.bramble(&["apply", "--targets", "gpu", "--", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not in this worker's allow list"),
        "{}",
        stderr(&out)
    );
    let out = c.bramble(&[
        "--json",
        "map",
        "--targets",
        "gpu",
        "--range",
        "0..3",
        "--",
        "echo",
        "{}",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(json_lines(&out).iter().all(|l| l["worker"] == 1));

    c.wait_until(10, "the startup error in status", || {
        stdout(&c.bramble(&["status", "--json"])).contains("exit status 4")
    });
    let status = stdout(&c.bramble(&["status", "--json"]));
    assert!(status.contains("no disk"), "{status}");
    assert!(stdout(&c.bramble(&["status"])).contains("startup command failed"));
}
