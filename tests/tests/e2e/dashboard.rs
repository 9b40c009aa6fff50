use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bramble_tests::{Cluster, hot_pi4_and_steady, lease_port, stderr, stdout};

/// One GET over plain HTTP/1.1; the body.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

fn snapshot(port: u16) -> Option<serde_json::Value> {
    serde_json::from_str(&get(port, "/snapshot")?).ok()
}

/// Headless Chromium (Debian's, installed by scripts/setup-test-tools.sh) loading `url`.
fn chromium(args: &[&str], url: &str) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--timeout=5000",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("chromium (scripts/setup-test-tools.sh installs it)")
}

#[test]
fn the_dashboard_shows_a_rack_heating_up_and_throttling_in_a_real_browser() {
    let metrics = lease_port();
    let web = lease_port();
    let metrics_flag = format!("127.0.0.1:{}", metrics.port);
    let mut c = Cluster::init();
    c.spawn_host_with(&["--metrics", &metrics_flag]);
    // w0: a bare Pi 4 in a hot rack, thermal time 60x; w1: a constant-speed worker.
    c.add_workers(2, hot_pi4_and_steady);
    let listen = format!("127.0.0.1:{}", web.port);
    let dashboard = c.command("bramble", &["dashboard", "--listen", &listen]);
    c.spawn_logged("dashboard", dashboard);
    c.wait_until(20, "the dashboard answers", || snapshot(web.port).is_some());

    // Heat w0 until the model caps its clock.
    let out = c.bramble(&[
        "submit",
        "map",
        "--targets",
        "0",
        "--range",
        "0..400",
        "--",
        "sleep",
        "0.1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait_until(40, "w0 throttled", || {
        snapshot(web.port).is_some_and(|s| {
            s["workers"][0]["throttle_words"]
                .as_str()
                .is_some_and(|w| w.contains("freq-capped"))
        })
    });

    // The page in a browser: a card per worker, the throttling in words, the charts' data.
    let url = format!("http://{listen}/");
    let out = chromium(&["--dump-dom"], &url);
    let dom = stdout(&out);
    assert!(
        dom.contains("data-worker=\"w0\"") && dom.contains("data-worker=\"w1\""),
        "{dom}"
    );
    let w0 = &dom[dom.find("data-worker=\"w0\"").unwrap()..dom.find("data-worker=\"w1\"").unwrap()];
    // Capped now, or (the firmware's hysteresis: it may have cooled a little by now) since
    // boot: either way said in words.
    assert!(w0.contains("freq-capped"), "{w0}");
    assert!(
        w0.contains("class=\"flags bad\"") || w0.contains("class=\"flags was\""),
        "{w0}"
    );
    assert!(w0.contains("<polyline"), "w0 has a temperature chart: {w0}");
    assert!(w0.contains("simulated pi4-bare"), "the board: {w0}");
    assert!(
        dom.contains("class=\"bar"),
        "jobs with progress bars: {dom}"
    );
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("dashboard.png");
    let arg = format!("--screenshot={}", shot.display());
    chromium(&[&arg, "--hide-scrollbars", "--window-size=1100,800"], &url);
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a screenshot"
    );
    // A phone's width: still every card.
    let out = chromium(&["--dump-dom", "--window-size=390,844"], &url);
    assert!(stdout(&out).contains("data-worker=\"w1\""));

    // Pushed: the event stream sends a snapshot a second.
    let mut events = TcpStream::connect(("127.0.0.1", web.port)).unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(events, "GET /events HTTP/1.1\r\n\r\n").unwrap();
    let mut lines = BufReader::new(events).lines();
    let mut times = Vec::new();
    while times.len() < 2 {
        let line = lines.next().unwrap().unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            let snap: serde_json::Value = serde_json::from_str(data).unwrap();
            assert_eq!(snap["host"], "ok");
            assert_eq!(snap["workers"].as_array().unwrap().len(), 2);
            times.push(snap["time_ms"].as_u64().unwrap());
        }
    }
    assert!(times[1] > times[0]);

    // Prometheus: every sample parses; w0's temperature and its sticky freq-capped bit.
    let text = get(metrics.port, "/metrics").expect("metrics");
    let mut samples = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        samples.insert(name.to_owned(), value);
    }
    let w0 = |metric: &str| samples[&format!("{metric}{{worker=\"w0\",id=\"0\"}}")];
    assert!(w0("bramble_worker_temperature_celsius") > 70.0, "{text}");
    assert_eq!(w0("bramble_worker_clock_max_hertz"), 1.5e9);
    assert_ne!(
        w0("bramble_worker_throttle_flags") as u32 & 0x20000,
        0,
        "{text}"
    );
    assert_eq!(
        samples["bramble_worker_connected{worker=\"w1\",id=\"1\"}"],
        1.0
    );
    assert!(
        samples["bramble_results_total{outcome=\"exited\"}"] > 0.0,
        "{text}"
    );
    assert!(samples["bramble_scheduler_pass_seconds_count"] > 0.0);

    // The host goes away and comes back: the page says so, then carries on by itself.
    c.signal("host", rustix::process::Signal::KILL);
    c.wait_until(20, "the dashboard sees the host gone", || {
        snapshot(web.port).is_some_and(|s| s["host"].as_str().is_some_and(|h| h != "ok"))
    });
    let out = chromium(&["--dump-dom"], &url);
    assert!(
        stdout(&out).contains("host unreachable"),
        "{}",
        stdout(&out)
    );
    c.spawn_host_with(&["--metrics", &metrics_flag]);
    c.wait_until(30, "the dashboard sees the host back", || {
        snapshot(web.port).is_some_and(|s| s["host"] == "ok")
    });
}
