//! Link conditions through the real binary: 25 ms each way gives a round trip of about 50 ms.

mod common;

#[test]
fn delay_each_way_adds_up_to_the_round_trip() {
    if !common::lab_available("link") {
        return;
    }
    let json = common::temp_file("link.json");
    let out = common::run(&[
        "link",
        "--delay-ms",
        "25",
        "--count",
        "30",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let r = common::read_json(&json);
    let median = r["median_ms"].as_f64().unwrap();
    assert!(
        (48.0..58.0).contains(&median),
        "median RTT {median} ms for 25 ms each way"
    );
    assert_eq!(r["loss_percent"].as_f64().unwrap(), 0.0);
}

#[test]
fn loss_is_applied_each_way() {
    if !common::lab_available("link loss") {
        return;
    }
    let json = common::temp_file("link-loss.json");
    let args = [
        "link",
        "--delay-ms",
        "1",
        "--loss-percent",
        "20",
        "--count",
        "300",
        "--interval-ms",
        "5",
        "--json",
        json.to_str().unwrap(),
    ];
    let out = common::run(&args);
    assert!(out.status.success());
    let loss = common::read_json(&json)["loss_percent"].as_f64().unwrap();
    // 20% each way loses 36% of round trips; 300 samples keep it well inside this band.
    assert!((22.0..50.0).contains(&loss), "{loss}");
}
