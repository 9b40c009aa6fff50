use bramble_tests::{Cluster, hot_pi4_and_steady, stderr, stdout};

fn status(c: &Cluster) -> Vec<serde_json::Value> {
    let rows: serde_json::Value =
        serde_json::from_str(&stdout(&c.bramble(&["status", "--json"]))).unwrap();
    rows.as_array().unwrap().clone()
}

#[test]
fn a_simulated_cluster_throttles_visibly_in_status() {
    // w0: a bare Pi 4 in a hot rack, thermal time 60x; w1: a constant-speed worker.
    let c = Cluster::start_split(2, hot_pi4_and_steady);
    let out = c.bramble(&[
        "apply",
        "--targets",
        "1",
        "--",
        "sh",
        "-c",
        "echo $BRAMBLE_SIM_SPEED $(cat $BRAMBLE_SIM_SPEED_FILE)",
    ]);
    assert_eq!(
        stdout(&out),
        "[stdout:1] 0.5000 0.5000\n",
        "{}",
        stderr(&out)
    );
    let rows = status(&c);
    assert_eq!(rows[0]["arm_max_mhz"], 1500);
    assert!(
        rows[1]["temp_c"].is_null() && rows[1]["arm_mhz"].is_null(),
        "a constant-speed worker has no sensors"
    );

    // Keep both slots of w0 busy until the model throttles it.
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
    let job = stdout(&out).trim().to_owned();
    // Checked on the row that shows the capped clock: a moment later the board may have
    // cooled just below the throttle point again (the firmware's hysteresis is 1.5 °C).
    let mut throttled = serde_json::Value::Null;
    c.wait_until(40, "w0 throttled", || {
        throttled = status(&c)[0].clone();
        throttled["arm_mhz"].as_u64().is_some_and(|m| m < 1500)
    });
    let row = &throttled;
    // Capped from 80 °C until it cools below 78.5 °C.
    assert!(row["temp_c"].as_f64().unwrap() >= 78.0, "{row}");
    assert!(
        row["throttle_words"]
            .as_str()
            .unwrap()
            .contains("freq-capped"),
        "{row}"
    );
    let table = stdout(&c.bramble(&["status"]));
    assert!(
        table.contains("freq-capped") && table.contains("/1500") && table.contains("SPEED"),
        "{table}"
    );
    assert!(
        row["speed"].as_f64().is_some_and(|s| s > 0.0 && s <= 1.0),
        "the scheduler's estimate: {row}"
    );
    assert!(c.bramble(&["cancel", &job]).status.success());
}
