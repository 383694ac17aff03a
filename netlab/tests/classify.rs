//! `netlab classify` through the real binary: every preset measures as defined.

mod common;

#[test]
fn classify_table_equals_the_preset_definitions() {
    if !common::lab_available("classify") {
        return;
    }
    let json = common::temp_file("classify.json");
    let out = common::run(&["classify", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "classify exited {}", out.status);
    let rows = common::read_json(&json);
    let rows = rows.as_array().expect("a list of rows");
    let measured: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            let m = &r["measured"]["Ok"];
            (
                r["preset"].as_str().unwrap().to_string(),
                m["mapping"].as_str().unwrap_or("?").to_string(),
                m["filtering"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    let expected = [
        ("none", "none", "none"),
        ("full-cone", "endpoint-independent", "endpoint-independent"),
        ("restricted", "endpoint-independent", "address-dependent"),
        (
            "port-restricted",
            "endpoint-independent",
            "address-and-port-dependent",
        ),
        (
            "symmetric",
            "endpoint-dependent",
            "address-and-port-dependent",
        ),
        (
            "double",
            "endpoint-independent",
            "address-and-port-dependent",
        ),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(p, m, f)| (p.to_string(), m.to_string(), f.to_string()))
        .collect();
    assert_eq!(measured, expected);
    assert!(rows.iter().all(|r| r["ok"] == true));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("symmetric        EDM               APDF                EDM               APDF                ok"), "{text}");
}

#[test]
fn a_symmetric_nat_gives_a_new_port_per_destination() {
    if !common::lab_available("classify symmetric") {
        return;
    }
    let json = common::temp_file("classify-sym.json");
    let out = common::run(&[
        "classify",
        "--presets",
        "symmetric,port-restricted",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let rows = common::read_json(&json);
    let mapped = |i: usize| -> Vec<String> {
        rows[i]["observation"]["mapped"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect()
    };
    let sym = mapped(0);
    assert!(
        sym[0] != sym[1] && sym[0] != sym[2] && sym[1] != sym[2],
        "{sym:?}"
    );
    let pr = mapped(1);
    assert!(pr.iter().all(|m| *m == pr[0]), "{pr:?}");
    // The port-restricted router kept the host's own port (the cone maps rely on it).
    let local = rows[1]["observation"]["local"].as_str().unwrap();
    assert_eq!(pr[0].rsplit(':').next(), local.rsplit(':').next());
}
