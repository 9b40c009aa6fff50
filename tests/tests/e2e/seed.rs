use bramble_tests::{Cluster, stderr, stdout};

#[test]
fn ids_apply_and_map_on_four_workers() {
    let c = Cluster::start(4);
    let out = c.bramble(&["ids"]);
    assert_eq!(stdout(&out).trim(), "[0, 1, 2, 3]");

    let out = c.bramble(&["apply", "--", "echo", "Hello World"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let want: String = (0..4)
        .map(|i| format!("[stdout:{i}] Hello World\n"))
        .collect();
    assert_eq!(stdout(&out), want);

    let out = c.bramble(&[
        "map",
        "--range",
        "0..64",
        "--chunksize",
        "10",
        "--",
        "python3",
        "-c",
        "print({}**10)",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let want: String = (0u64..64).map(|i| format!("{}\n", i.pow(10))).collect();
    assert_eq!(stdout(&out), want);

    // Every worker took part (7 chunks over 4 single-slot workers).
    let out = c.bramble(&["status", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let done: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["done"].as_u64().unwrap())
        .collect();
    assert_eq!(done.iter().sum::<u64>(), 64 + 4, "{done:?}");
    assert!(done.iter().all(|d| *d > 0), "an idle worker: {done:?}");
}

#[test]
fn map_inputs_stdin_unordered_json_and_targets() {
    let c = Cluster::start(2);
    // GNU parallel style items, item on stdin when there is no {}.
    let out = c.bramble(&["map", "--", "wc", "-c", ":::", "a", "bb", "ccc"]);
    assert_eq!(stdout(&out), "2\n3\n4\n");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("items.txt");
    std::fs::write(&file, "x\ny\n").unwrap();
    let out = c.bramble(&[
        "--json",
        "map",
        "--inputs",
        file.to_str().unwrap(),
        "--targets",
        "1",
        "--",
        "echo",
        "{#}:{}",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["stdout"], "1:y\n");
    assert_eq!(lines[1]["item"], "y");
    assert!(lines.iter().all(|l| l["worker"] == 1 && l["exit"] == 0));

    let out = c.bramble(&[
        "map",
        "--unordered",
        "--shell",
        "--range",
        "0..6",
        "--",
        "echo",
        "{}",
        "|",
        "tr",
        "0-9",
        "a-j",
    ]);
    let mut got: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    got.sort();
    assert_eq!(got, ["a", "b", "c", "d", "e", "f"]);
}

#[test]
fn failing_tasks_exit_1_and_bad_usage_exits_2() {
    let c = Cluster::start(2);
    let out = c.bramble(&["map", "--", "sh", "-c", "exit {}", ":::", "0", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("exit status 3"), "{}", stderr(&out));

    let out = c.bramble(&["apply", "--", "/nonexistent/program"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("could not start"), "{}", stderr(&out));

    for args in [
        &["map", "--", "echo"][..],
        &["map", "--range", "9..2", "--", "echo"],
        &["apply", "--targets", "7", "--", "true"],
        &["map", "--chunksize", "0", "--range", "0..2", "--", "true"],
        &["frobnicate"],
    ] {
        let out = c.bramble(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).trim().is_empty(),
            "{args:?} printed no reason"
        );
    }
    let out = c.bramble(&["apply", "--targets", "7", "--", "true"]);
    assert_eq!(stderr(&out).trim(), "bramble: worker 7 is not connected");
}

#[test]
fn timeout_kills_the_process_group_and_output_cap_is_visible() {
    let c = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
    let out = c.bramble(&["apply", "--timeout", "0.5", "--", "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
    let grandchild = std::fs::read_to_string(&pid_file).unwrap();
    let proc_dir = format!("/proc/{}", grandchild.trim());
    c.wait_until(5, "the grandchild killed", || {
        !std::path::Path::new(&proc_dir).exists()
    });

    let out = c.bramble(&[
        "map",
        "--",
        "sh",
        "-c",
        "head -c 2000000 /dev/zero",
        ":::",
        "x",
    ]);
    assert!(out.status.success());
    assert_eq!(
        out.stdout.len(),
        1 << 20,
        "stdout capped at the default 1 MiB"
    );
    assert!(
        stderr(&out).contains("output truncated: 951424 bytes dropped"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn cli_on_another_machine_with_only_a_client_bundle() {
    let c = Cluster::start(3);
    let elsewhere = tempfile::tempdir().unwrap();
    let bundle = elsewhere.path().join("laptop.json");
    let out = c.bramble(&["client-bundle", "laptop", "--out", bundle.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let empty_home = tempfile::tempdir().unwrap();
    let run = |use_env: bool| {
        let mut cmd = std::process::Command::new(bramble_tests::bin("bramble"));
        cmd.env("BRAMBLE_HOME", empty_home.path());
        if use_env {
            cmd.env("BRAMBLE_BUNDLE", &bundle).arg("ids");
        } else {
            cmd.env_remove("BRAMBLE_BUNDLE")
                .args(["--bundle", bundle.to_str().unwrap(), "ids"]);
        }
        cmd.output().unwrap()
    };
    for use_env in [false, true] {
        let out = run(use_env);
        assert_eq!(stdout(&out).trim(), "[0, 1, 2]", "{}", stderr(&out));
    }
    // Without a bundle and without a profile: one clear line, exit 2.
    let out = std::process::Command::new(bramble_tests::bin("bramble"))
        .env("BRAMBLE_HOME", empty_home.path())
        .env_remove("BRAMBLE_BUNDLE")
        .arg("ids")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bramble init"), "{}", stderr(&out));
}

#[test]
fn worker_ids_survive_a_host_restart() {
    let mut c = Cluster::start(2);
    let names = |c: &Cluster| -> Vec<(u64, String)> {
        let rows: serde_json::Value =
            serde_json::from_str(&stdout(&c.bramble(&["status", "--json"]))).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_u64().unwrap(),
                    r["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let before = names(&c);
    assert_eq!(
        before,
        [(0, "local-0".to_owned()), (1, "local-1".to_owned())]
    );
    c.stop();
    c.run(2);
    assert_eq!(names(&c), before);
}
