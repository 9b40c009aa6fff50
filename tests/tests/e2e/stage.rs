use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bramble_tests::{Cluster, stderr, stdout};

/// A user's project: a script and a directory of data, one file large enough to be linked
/// rather than copied into each item's directory.
fn project(dir: &Path) {
    let script = dir.join("count.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n# counts the lines of data/$1.txt into $1.out\nwc -l < data/$1.txt > $1.out\n\
         echo \"$1: $(cat $1.out) lines, big has $(wc -c < data/big.bin) bytes\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        let text: String = (0..=i).map(|n| format!("line {n}\n")).collect();
        std::fs::write(dir.join(format!("data/{name}.txt")), text).unwrap();
    }
    std::fs::write(dir.join("data/big.bin"), vec![b'x'; 300_000]).unwrap();
}

/// How often a worker asked the host for staged files (its debug log).
fn asks(c: &Cluster, worker: &str) -> usize {
    c.log_of(worker)
        .matches("asking the host for staged file")
        .count()
}

#[test]
fn a_script_and_its_data_travel_with_the_job_once_per_worker() {
    let c = Cluster::start_split(2, |_| vec![]);
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path());
    let out_dir = tmp.path().join("results");
    let run = |c: &Cluster| {
        c.command(
            "bramble",
            &[
                "map",
                "--stage",
                "count.sh",
                "data",
                "--fetch",
                "*.out",
                "--fetch-dir",
                out_dir.to_str().unwrap(),
                "--",
                "./count.sh",
                "{}",
                ":::",
                "a",
                "b",
                "c",
                "d",
            ],
        )
        .current_dir(tmp.path())
        .output()
        .unwrap()
    };
    let out = run(&c);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "a: 1 lines, big has 300000 bytes\nb: 2 lines, big has 300000 bytes\n\
         c: 3 lines, big has 300000 bytes\nd: 4 lines, big has 300000 bytes\n"
    );
    for (name, lines) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        let got = std::fs::read_to_string(out_dir.join(format!("{name}.out"))).unwrap();
        assert_eq!(got.trim(), lines.to_string());
    }
    // Six files (count.sh, four texts, big.bin): each worker asked for each at most once.
    let first = (asks(&c, "w0"), asks(&c, "w1"));
    assert!(
        first.0 <= 6 && first.1 <= 6 && first.0 + first.1 >= 6,
        "{first:?}"
    );
    // Again: nothing is sent, to the host or to a worker; the item directories are gone.
    let out = run(&c);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!((asks(&c, "w0"), asks(&c, "w1")), first);
    // (A backup attempt that lost its race may still be cleaning up after the job ended.)
    for w in ["w0", "w1"] {
        let run_dir = c.home_path(&format!("{w}.cache/run"));
        let items_left = || -> usize {
            std::fs::read_dir(&run_dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|own| std::fs::read_dir(own.path()).map_or(0, Iterator::count))
                .sum()
        };
        c.wait_until(10, "item directories removed", || items_left() == 0);
    }
    let blobs = std::fs::read_dir(c.profile_path("blobs")).unwrap().count();
    assert_eq!(blobs, 6, "the host keeps each staged file once");

    // A submitted job keeps what it fetched with its results: `results --fetch-dir` writes it.
    let out = c
        .command(
            "bramble",
            &[
                "submit",
                "map",
                "--stage",
                "count.sh",
                "data",
                "--fetch",
                "*.out",
                "--",
                "./count.sh",
                "{}",
                ":::",
                "c",
            ],
        )
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let job = stdout(&out).trim().to_owned();
    assert!(c.bramble(&["wait", &job]).status.success());
    let later = tmp.path().join("later");
    let out = c.bramble(&["results", &job, "--fetch-dir", later.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(later.join("c.out")).unwrap().trim(),
        "3"
    );
    let out = c.bramble(&["submit", "map", "--tag", "--", "true", ":::", "a"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // A co-process runs in its job's directory, with the files.
    let lines = tmp.path().join("lines.sh");
    std::fs::write(
        &lines,
        "#!/bin/sh\nwhile read x; do echo \"$x $(cat data/$x.txt | wc -l)\"; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&lines, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = c
        .command(
            "bramble",
            &[
                "map",
                "--persistent",
                "--stage",
                "lines.sh",
                "data",
                "--",
                "./lines.sh",
                ":::",
                "a",
                "d",
            ],
        )
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "a 1\nd 4\n", "{}", stderr(&out));
}

#[test]
fn bad_stage_and_fetch_arguments_are_one_line_errors() {
    let c = Cluster::start_split(1, |_| vec![]);
    let cases: [(&[&str], &str); 4] = [
        (&["--stage", "/nonexistent/x"], "cannot read it"),
        (&["--fetch", "../up"], "must be relative"),
        (&["--persistent", "--fetch", "*.out"], "--persistent"),
        (&["--stage", "/dev/null"], "not a file or directory"),
    ];
    for (flags, says) in cases {
        let mut args = vec!["map"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "true", ":::", "a"]);
        let out = c.bramble(&args);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(says), "{flags:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
