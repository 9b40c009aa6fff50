use bramble_tests::{Cluster, stderr, stdout};

#[test]
fn gnu_parallel_placeholders_sources_and_tags() {
    let c = Cluster::start(2);
    let out = c.bramble(&[
        "map",
        "--",
        "echo",
        "{}",
        "{.}",
        "{/}",
        "{//}",
        "{/.}",
        "#{#}",
        ":::",
        "dir/a.tar.gz",
        "b.txt",
    ]);
    assert_eq!(
        stdout(&out),
        "dir/a.tar.gz dir/a.tar a.tar.gz dir a.tar #0\nb.txt b b.txt . b #1\n",
        "{}",
        stderr(&out)
    );
    // Several sources: every combination, the first varying slowest; `::::` reads a file.
    let out = c.bramble(&[
        "map", "--", "echo", "{1}-{2}", ":::", "a", "b", ":::", "1", "2",
    ]);
    assert_eq!(stdout(&out), "a-1\na-2\nb-1\nb-2\n", "{}", stderr(&out));
    let list = c.home_path("list.txt");
    std::fs::write(&list, "x\ny\n").unwrap();
    let out = c.bramble(&[
        "map",
        "--",
        "echo",
        "{}",
        "::::",
        list.to_str().unwrap(),
        ":::",
        "1",
    ]);
    assert_eq!(stdout(&out), "x 1\ny 1\n", "{}", stderr(&out));
    // --tag: each line starts with its item's values.
    let out = c.bramble(&[
        "map",
        "--tag",
        "--",
        "printf",
        "%s\\n%s\\n",
        "{1}",
        "{2}",
        ":::",
        "a",
        ":::",
        "1",
        "2",
    ]);
    assert_eq!(
        stdout(&out),
        "a\t1\ta\na\t1\t1\na\t2\ta\na\t2\t2\n",
        "{}",
        stderr(&out)
    );
    // --joblog and --results, as GNU parallel writes them.
    let (log, res) = (c.home_path("joblog.tsv"), c.home_path("res"));
    let out = c.bramble(&[
        "map",
        "--joblog",
        log.to_str().unwrap(),
        "--results",
        res.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo out $0; exit $1",
        "{1}",
        "{2}",
        ":::",
        "a/b",
        ":::",
        "0",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = std::fs::read_to_string(log).unwrap();
    let rows: Vec<Vec<&str>> = log.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows[0][0], "Seq");
    assert_eq!(rows.len(), 3, "{log}");
    assert_eq!(
        (rows[1][0], rows[1][6], rows[1][8]),
        ("1", "0", "sh -c echo out $0; exit $1 a/b 0")
    );
    assert_eq!((rows[2][0], rows[2][6]), ("2", "3"));
    let dir = res.join("1/a\\_b/2/3");
    assert_eq!(
        std::fs::read_to_string(dir.join("stdout")).unwrap(),
        "out a/b\n"
    );
    assert_eq!(std::fs::read_to_string(dir.join("seq")).unwrap(), "2\n");
}

#[test]
fn halt_cancels_after_failures_and_jobs_can_be_listed_by_state_and_forgotten() {
    let c = Cluster::start(2);
    // Item 0 succeeds at once; the other nineteen fail after a second each, two at a time:
    // the first failure comes about nine seconds before the job could end.
    let mut args = vec![
        "map",
        "--halt",
        "now,fail=1",
        "--",
        "sh",
        "-c",
        "sleep $0; exit $0",
    ];
    args.extend([":::", "0"]);
    args.extend(std::iter::repeat_n("1", 19));
    let out = c.bramble(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--halt: 1 item(s) failed; cancelling job 1"),
        "{}",
        stderr(&out)
    );
    // soon: item 0 fails at once; what runs then finishes, nothing more starts (the other
    // eleven would take six seconds on two workers).
    let mut args = vec![
        "map",
        "--halt",
        "soon,fail=1",
        "--",
        "sh",
        "-c",
        "sleep $0; test $0 = 1",
    ];
    args.extend([":::", "0"]);
    args.extend(std::iter::repeat_n("1", 11));
    let out = c.bramble(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("job 2 starts nothing more, waiting for what runs"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("job 2 was cancelled"),
        "{}",
        stderr(&out)
    );
    let out = c.bramble(&["--json", "jobs"]);
    let jobs: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let (done, total) = (
        jobs[1]["done"].as_u64().unwrap(),
        jobs[1]["total"].as_u64().unwrap(),
    );
    assert!(done >= 2 && done < total, "{done}/{total}");
    let out = c.bramble(&["map", "--halt", "later,fail=1", "--", "true", ":::", "a"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));

    for _ in 0..2 {
        assert!(
            c.bramble(&["map", "--", "true", ":::", "a"])
                .status
                .success()
        );
    }
    let running = c.bramble(&["submit", "map", "--", "sleep", "30", ":::", "a"]);
    let running = stdout(&running).trim().to_owned();
    let ids = |state: &str| -> Vec<u64> {
        let out = c.bramble(&["--json", "jobs", "--state", state]);
        let jobs: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        jobs.as_array()
            .unwrap()
            .iter()
            .map(|j| j["job"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids("cancelled"), [1, 2]);
    assert_eq!(ids("done"), [3, 4]);
    assert_eq!(ids("running"), [running.parse::<u64>().unwrap()]);

    let out = c.bramble(&["forget", &running]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is running"), "{}", stderr(&out));
    let out = c.bramble(&["forget", "1", "2"]);
    assert_eq!(stdout(&out), "forgot 1, 2\n", "{}", stderr(&out));
    let out = c.bramble(&["results", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let out = c.bramble(&["prune", "--keep", "1"]);
    assert_eq!(stdout(&out), "forgot 1 job(s): 3\n", "{}", stderr(&out));
    let out = c.bramble(&["prune", "--older-than", "1h"]);
    assert_eq!(stdout(&out), "nothing to prune\n", "{}", stderr(&out));
    assert_eq!(ids("done"), [4]);
    let out = c.bramble(&["prune"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "prune needs --older-than or --keep"
    );
    // Names: a job named at submission is listed and addressed by its name.
    let out = c.bramble(&[
        "submit", "map", "--name", "nightly", "--", "sleep", "30", ":::", "a",
    ]);
    let nightly = stdout(&out).trim().to_owned();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.bramble(&["--json", "jobs", "--state", "running"]);
    assert!(
        stdout(&out).contains("\"name\": \"nightly\""),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&c.bramble(&["jobs"])).contains("nightly"));
    let out = c.bramble(&[
        "submit", "map", "--name", "nightly", "--", "true", ":::", "a",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("taken by job {nightly}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&c.bramble(&["cancel", "nightly"])),
        format!("cancelled job {nightly}\n")
    );
    assert_eq!(c.bramble(&["wait", "nightly"]).status.code(), Some(1));
    let out = c.bramble(&["forget", "nightly"]);
    assert_eq!(
        stdout(&out),
        format!("forgot {nightly}\n"),
        "{}",
        stderr(&out)
    );
    let out = c.bramble(&["wait", "nightly"]);
    assert!(
        stderr(&out).contains("no job named \"nightly\""),
        "{}",
        stderr(&out)
    );
    let out = c.bramble(&["map", "--name", "123", "--", "true", ":::", "a"]);
    assert_eq!(out.status.code(), Some(2));
    // New jobs never get a forgotten job's id.
    let out = c.bramble(&["submit", "map", "--", "true", ":::", "a"]);
    let next: u64 = stdout(&out).trim().parse().unwrap();
    assert!(next > nightly.parse().unwrap(), "{next}");
}
