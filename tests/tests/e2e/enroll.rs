use bramble_certs::Bundle;
use bramble_tests::{Cluster, stderr, stdout};
use bramble_wire::close;

use crate::peer::{self, closed_by_host};

/// A connection with `bundle` from the local address `from`.
async fn connect_from(c: &Cluster, bundle: &Bundle, from: &str) -> quinn::Connection {
    let tls = bramble_certs::tls::client_config(bundle).unwrap();
    peer::connect_from(c, tls, from).await.unwrap()
}

fn status_ids(c: &Cluster) -> Vec<(String, u64)> {
    let out = c.bramble(&["--json", "status"]);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["id"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn one_bundle_is_one_pi_and_enroll_force_retires_the_old_one() {
    let mut c = Cluster::start_split(1, |_| vec![]);
    let kept = c.profile_path("workers/w0.json");
    let old = Bundle::load(&kept).unwrap();

    // Enrolling a name again is refused, and changes nothing; --reuse gives the same bundle.
    let out = c.bramble(&["enroll", "w0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("w0 is enrolled already (id 0): one bundle per Pi") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(Bundle::load(&kept).unwrap(), old);
    let copy = c.profile_path("copy.json");
    let out = c.bramble(&["enroll", "w0", "--reuse", "--out", copy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(Bundle::load(&copy).unwrap(), old);

    // The same bundle on a second machine while the first is connected: refused with the
    // first one's address; the first keeps running, not superseded.
    let second = connect_from(&c, &old, "127.0.0.2:0").await;
    let (code, reason) = closed_by_host(&second).await;
    assert_eq!(code, close::REJECTED);
    assert!(
        reason.contains("w0 is already connected from 127.0.0.1:")
            && reason.contains("one bundle per Pi"),
        "{reason}"
    );
    let status = stdout(&c.bramble(&["status"]));
    assert!(
        status.contains("refused w0 from 127.0.0.2:") && status.contains("one bundle per Pi"),
        "{status}"
    );
    assert_eq!(status_ids(&c), [("w0".to_owned(), 0)]);
    let out = c.bramble(&["apply", "--", "echo", "still here"]);
    assert_eq!(stdout(&out), "[stdout:0] still here\n", "{}", stderr(&out));
    assert!(
        !c.log_of("host").contains("superseded"),
        "{}",
        c.log_of("host")
    );
    assert!(c.log_of("host").contains("one bundle per Pi"));

    // --force: a new bundle with the same id. The old Pi's live connection is closed when the
    // new one joins, and the old bundle is refused from then on.
    let out = c.bramble(&["--json", "enroll", "w0", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let issued: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(issued["id"], 0);
    let new = Bundle::load(&kept).unwrap();
    assert_ne!(new.cert, old.cert);
    let mut cmd = c.command(
        "bramble-worker",
        &["--bundle", kept.to_str().unwrap(), "--slots", "1"],
    );
    cmd.env("BRAMBLE_LOG", "debug");
    c.spawn_logged("w0-new", cmd);
    c.wait_until(20, "the old connection closed", || {
        c.log_of("w0").contains("replaced by a newer enrollment")
    });
    c.wait_for_workers(1);
    assert_eq!(status_ids(&c), [("w0".to_owned(), 0)]);
    let out = c.bramble(&["apply", "--", "echo", "new"]);
    assert_eq!(stdout(&out), "[stdout:0] new\n", "{}", stderr(&out));
    let stale = connect_from(&c, &old, "127.0.0.1:0").await;
    let (code, reason) = closed_by_host(&stale).await;
    assert_eq!(code, close::REJECTED);
    assert!(
        reason.contains("replaced by `bramble enroll w0 --force`"),
        "{reason}"
    );
}

#[test]
fn ids_follow_enrollment_and_names_work_as_targets() {
    let mut c = Cluster::init();
    c.spawn_host();
    for i in 0..3 {
        let out = c.bramble(&["--json", "enroll", &format!("w{i}")]);
        assert!(out.status.success(), "{}", stderr(&out));
        let issued: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(issued["id"], i);
    }
    // They join in another order; ids are those given at enrollment.
    for (joined, i) in [2, 0, 1].into_iter().enumerate() {
        c.spawn_worker(i, &[]);
        c.wait_for_workers(joined + 1);
    }
    let mut ids = status_ids(&c);
    ids.sort();
    assert_eq!(
        ids,
        [
            ("w0".to_owned(), 0),
            ("w1".to_owned(), 1),
            ("w2".to_owned(), 2)
        ]
    );
    let out = c.bramble(&["apply", "--targets", "w2,w0", "--", "echo", "hi"]);
    assert_eq!(
        stdout(&out),
        "[stdout:0] hi\n[stdout:2] hi\n",
        "{}",
        stderr(&out)
    );
    let out = c.bramble(&[
        "map",
        "--targets",
        "w1",
        "--range",
        "0..3",
        "--",
        "echo",
        "{}",
    ]);
    assert_eq!(stdout(&out), "0\n1\n2\n", "{}", stderr(&out));
    let out = c.bramble(&[
        "--json",
        "map",
        "--targets",
        "w1",
        "--range",
        "0..3",
        "--",
        "true",
    ]);
    let on: Vec<u64> = stdout(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["worker"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(on, [1, 1, 1]);
    let out = c.bramble(&["apply", "--targets", "pi-99", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no connected worker is named or labelled \"pi-99\""),
        "{}",
        stderr(&out)
    );
}
