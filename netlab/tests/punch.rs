//! A reduced `netlab punch` through the real binary: every cell equals the theory.

mod common;

#[test]
fn reduced_punch_matrix_equals_the_theory() {
    if !common::lab_available("punch --quick") {
        return;
    }
    let json = common::temp_file("punch.json");
    let out = common::run(&["punch", "--quick", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "punch exited {}", out.status);
    let outcomes = common::read_json(&json);
    let outcomes = outcomes.as_array().unwrap();
    // 3 presets x 3 presets x 2 starts x 2 delays.
    assert_eq!(outcomes.len(), 36);
    assert!(
        outcomes
            .iter()
            .all(|o| o["matches"] == true && o["error"].is_null())
    );
    let cell = |a: &str, b: &str, start: &str, delay: u64| {
        outcomes
            .iter()
            .find(|o| {
                o["case"]["a"] == a
                    && o["case"]["b"] == b
                    && o["case"]["start"] == start
                    && o["case"]["delay_ms"] == delay
            })
            .unwrap_or_else(|| panic!("no case {a} x {b} {start} {delay}"))
    };
    for (start, delay) in [
        ("simultaneous", 0),
        ("staggered", 0),
        ("simultaneous", 50),
        ("staggered", 50),
    ] {
        assert_eq!(
            cell("port-restricted", "port-restricted", start, delay)["direct"],
            true
        );
        assert_eq!(
            cell("port-restricted", "symmetric", start, delay)["direct"],
            false
        );
        assert_eq!(
            cell("symmetric", "symmetric", start, delay)["direct"],
            false
        );
        let via = cell("none", "symmetric", start, delay);
        assert_eq!(via["direct"], true);
        assert_eq!(via["via_observed_source"], true);
    }
    // With 50 ms each way on both access links the peers are 200 ms apart: a direct path needs at least
    // one round trip.
    let t = cell("port-restricted", "port-restricted", "simultaneous", 50)["time_to_direct_ms"]
        .as_u64()
        .unwrap();
    assert!((190..1500).contains(&t), "{t}");
}

#[test]
fn without_following_the_source_symmetric_pairs_fail() {
    if !common::lab_available("punch --no-follow-source") {
        return;
    }
    let json = common::temp_file("punch-nofollow.json");
    let out = common::run(&[
        "punch",
        "--presets",
        "full-cone,symmetric",
        "--starts",
        "simultaneous",
        "--delays",
        "0",
        "--no-follow-source",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "punch exited {}", out.status);
    let outcomes = common::read_json(&json);
    let direct: Vec<(String, String, bool)> = outcomes
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["case"]["a"].as_str().unwrap().into(),
                o["case"]["b"].as_str().unwrap().into(),
                o["direct"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        direct,
        vec![
            ("full-cone".into(), "full-cone".into(), true),
            ("full-cone".into(), "symmetric".into(), false),
            ("symmetric".into(), "full-cone".into(), false),
            ("symmetric".into(), "symmetric".into(), false),
        ]
    );
}
