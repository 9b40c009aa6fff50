use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bramble_tests::{Cluster, stderr, stdout};

#[test]
fn version_names_the_commit_it_was_built_from() {
    let c = Cluster::init();
    let out = c.bramble(&["--version"]);
    let text = stdout(&out);
    let commit = text
        .trim()
        .strip_prefix(concat!("bramble ", env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{text:?}"));
    assert!(
        commit == "unknown"
            || commit
                .trim_end_matches("-dirty")
                .chars()
                .all(|ch| ch.is_ascii_hexdigit()),
        "{text:?}"
    );
}

#[test]
fn positional_arguments_and_submit_kinds_are_explained() {
    let c = Cluster::init();
    let help = stdout(&c.bramble(&["submit", "--help"]));
    assert!(help.contains("once per input item"), "{help}");
    assert!(!help.contains("Where a job's items come from"), "{help}");
    let status = stdout(&c.bramble(&["status", "--help"]));
    assert!(status.contains("SPEED, how fast"), "{status}");
    for (cmd, arg) in [("cancel", "<JOB>"), ("wait", "<JOB>"), ("enroll", "<NAME>")] {
        let help = stdout(&c.bramble(&[cmd, "--help"]));
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(arg))
            .unwrap_or_else(|| panic!("{cmd}: {help}"));
        assert!(line.trim() != arg, "{cmd}: {arg} has no description");
    }
}

#[test]
fn a_host_that_is_down_is_reported_in_about_a_second() {
    // The profile's host is not running: nothing answers on its port.
    let c = Cluster::init();
    let started = Instant::now();
    let out = c.bramble(&["ids"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no answer within 1s"), "{err}");
    assert!(err.contains("bramble serve"), "{err}");
    eprintln!("reported after {took:?}");
}

#[test]
fn status_watch_into_a_pipe_writes_snapshots_not_escape_codes() {
    let c = Cluster::start(1);
    let mut child = c
        .command("bramble", &["status", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut pipe = child.stdout.take().unwrap();
    // Read until two snapshots have arrived (one a second), then stop it.
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    while text.matches("--- ").count() < 2 && Instant::now() < deadline {
        let n = pipe.read(&mut buf).unwrap();
        assert!(n > 0, "status --watch ended: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(text.matches("--- ").count() >= 2, "{text}");
    assert!(!text.contains('\x1b'), "escape codes in a pipe: {text:?}");
    assert!(text.contains("UTC"), "{text}");
    assert!(text.contains("NAME"), "{text}");
}

#[test]
fn jobs_show_commands_quoted_and_on_one_line() {
    let c = Cluster::start(1);
    let out = c.bramble(&["apply", "--", "sh", "-c", "echo 'a b'\necho c"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.bramble(&["jobs"]);
    let table = stdout(&out);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows[1].ends_with(r"sh -c 'echo '\''a b'\''\necho c'"),
        "{table}"
    );
}

#[test]
fn init_enroll_and_client_bundle_answer_json() {
    let c = Cluster::init();
    let home = c.profile_path("");
    let out = c.bramble(&[
        "init",
        "--force",
        "--listen",
        "127.0.0.1:1",
        "--public",
        "10.0.0.2:7707",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let init: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(init["listen"], "127.0.0.1:1");
    assert_eq!(init["public"], serde_json::json!(["10.0.0.2:7707"]));
    assert!(
        std::path::Path::new(init["client_bundle"].as_str().unwrap()).exists(),
        "{init}"
    );
    let out = c.bramble(&["enroll", "pi-01", "--json"]);
    let enrolled: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(enrolled["name"], "pi-01");
    assert_eq!(enrolled["role"], "worker");
    assert_eq!(enrolled["hosts"], serde_json::json!(["10.0.0.2:7707"]));
    let path = std::path::PathBuf::from(enrolled["bundle"].as_str().unwrap());
    assert!(path.starts_with(&home), "{enrolled}");
    let laptop = home.join("laptop.json");
    let out = c.bramble(&[
        "client-bundle",
        "laptop",
        "--out",
        laptop.to_str().unwrap(),
        "--json",
    ]);
    let issued: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(issued["role"], "client");
    assert!(laptop.exists());
}

#[test]
fn a_bundle_that_dials_only_this_machine_is_called_out() {
    // Cluster::init listens on 127.0.0.1: only this machine can reach it.
    let c = Cluster::init();
    let out = c.bramble(&["enroll", "pi-01"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning") && err.contains("dials only 127.0.0.1"),
        "{err}"
    );
    assert!(err.contains("public"), "{err}");

    let out = c.bramble(&["init", "--force", "--listen", "127.0.0.1:1"]);
    assert!(
        stdout(&out).contains("only this machine can reach"),
        "{}",
        stdout(&out)
    );
    // With an address the Pis reach, nothing to warn about (no packet goes there: the
    // bundle only records it).
    let out = c.bramble(&["init", "--force", "--public", "10.0.0.2:7707"]);
    assert!(
        !stdout(&out).contains("only this machine"),
        "{}",
        stdout(&out)
    );
    let out = c.bramble(&["enroll", "pi-01"]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn init_gives_pis_this_machines_addresses_and_its_own_cli_loopback() {
    // Only bundles are written: nothing dials the addresses they record.
    let c = Cluster::init();
    let out = c.bramble(&["--json", "init", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let public: Vec<String> = serde_json::from_value(report["public"].clone()).unwrap();
    let lan: Vec<String> = std::fs::read_to_string("/proc/net/fib_trie")
        .unwrap_or_default()
        .lines()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[1].trim() == "/32 host LOCAL")
        .filter_map(|w| w[0].trim().strip_prefix("|-- "))
        .filter(|ip| !ip.starts_with("127."))
        .map(|ip| format!("{ip}:7707"))
        .fold(Vec::new(), |mut v, a| {
            if !v.contains(&a) {
                v.push(a);
            }
            v
        });
    if lan.is_empty() {
        assert_eq!(public, ["127.0.0.1:7707"]);
    } else {
        // The addresses, then (for a plain host name) HOSTNAME.local.
        assert_eq!(public[..lan.len()], lan[..]);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let rest: Vec<String> = public[lan.len()..].to_vec();
        let mdns = format!("{}.local:7707", host.trim());
        assert!(rest.is_empty() || rest == [mdns], "{rest:?}");
    }
    assert_eq!(report["local"], serde_json::json!(["127.0.0.1:7707"]));
    let local = bramble_certs::Bundle::load(&c.profile_path("security/client.json")).unwrap();
    assert_eq!(local.hosts, ["127.0.0.1:7707"]);
    let out = c.bramble(&["--json", "enroll", "pi-01"]);
    let issued: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(issued["hosts"], serde_json::json!(public));
    // A warning only when the Pis would be given loopback.
    assert_eq!(
        stderr(&out).contains("warning"),
        lan.is_empty(),
        "{}",
        stderr(&out)
    );
}

#[test]
fn man_pages_local_commands_and_missing_bundles() {
    let c = Cluster::init();
    let dir = c.home_path("man");
    let out = c.bramble(&["man", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let map = std::fs::read_to_string(dir.join("bramble-map.1")).unwrap();
    assert!(
        map.starts_with(".ie") || map.contains(".TH bramble-map"),
        "{map}"
    );
    assert!(map.contains("stage") && map.contains("halt"), "{map}");
    assert!(dir.join("bramble.1").exists() && dir.join("bramble-submit-map.1").exists());
    // --bundle is for commands that talk to the host: not offered by those that do not.
    for cmd in ["init", "enroll", "serve", "client-bundle"] {
        let help = stdout(&c.bramble(&[cmd, "--help"]));
        assert!(!help.contains("--bundle"), "{cmd}: {help}");
    }
    assert!(stdout(&c.bramble(&["map", "--help"])).contains("--bundle"));
    // A missing bundle is said once, with where to get one.
    let out = c
        .command("bramble-worker", &["--bundle", "/nonexistent/pi.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.matches("/nonexistent/pi.json").count(), 1, "{err}");
    assert!(
        err.contains("bramble enroll NAME") && !err.contains("os error 2): "),
        "{err}"
    );
    let out = c.bramble(&["--bundle", "/nonexistent/laptop.json", "ids"]);
    assert!(
        stderr(&out).contains("bramble client-bundle NAME"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn completions_are_scripts_the_shell_accepts() {
    let c = Cluster::init();
    let out = c.bramble(&["completions", "bash"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = stdout(&out);
    assert!(script.contains("_bramble()"), "{script}");
    for word in ["map", "scatter", "--targets", "--persistent"] {
        assert!(script.contains(word), "no {word} in the completions");
    }
    // bash itself parses it (-n: read, do not run).
    let path = c.profile_path("bramble.bash");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &script).unwrap();
    let parsed = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .unwrap();
    assert!(parsed.status.success(), "{}", stderr(&parsed));
    let out = c.bramble(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}
