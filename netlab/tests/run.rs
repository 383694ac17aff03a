//! `netlab run` on `scenarios/smoke.toml` with the real node: the stream reaches the player on the
//! publisher's node (the single-node path) and, when the nodes run the mesh (their status lists
//! `listen_addrs`), the player behind the other NAT too. Which of the two modes ran is printed.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The streamr-node binary cargo built beside netlab, or the skip rule's verdict.
fn node_binary() -> Option<PathBuf> {
    let node = PathBuf::from(env!("CARGO_BIN_EXE_netlab")).with_file_name("streamr-node");
    if node.exists() {
        return Some(node);
    }
    let why = format!(
        "{} not found: build it with `cargo build -p streamr-node`",
        node.display()
    );
    if std::env::var(common::REQUIRE_EXTERNAL).as_deref() == Ok("1") {
        panic!("{why} ({}=1 forbids skipping)", common::REQUIRE_EXTERNAL);
    }
    eprintln!("SKIP: {why}");
    None
}

#[test]
fn smoke_scenario_delivers_the_stream() {
    if !common::lab_available("run smoke") {
        return;
    }
    let Some(node) = node_binary() else { return };
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let out = common::temp_file("smoke-run");
    let started = Instant::now();
    let o = common::run(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--node",
        node.to_str().unwrap(),
    ]);
    let took = started.elapsed();
    let r = common::read_json(&out.join("result.json"));
    let trial = &r["cases"][0]["trials"][0];
    assert!(trial["error"].is_null(), "trial error: {}", trial["error"]);
    // Mode detection must not hide a failure: every node ran and its status was read.
    for n in trial["nodes"].as_array().unwrap() {
        assert!(n["error"].is_null(), "node {}: {}", n["name"], n["error"]);
        assert!(
            !n["final_status"].is_null(),
            "node {} status never read",
            n["name"]
        );
    }
    let player = |name: &str| {
        trial["players"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no player {name}"))
            .clone()
    };
    let local = player("alice");
    assert_eq!(local["delivered"], true, "single-node path: {local}");
    assert!(
        local["play"]["probe_frames"].as_u64().unwrap() > 100,
        "{local}"
    );
    assert_eq!(local["frames_lost"], 0, "{local}");
    let remote = player("bob");
    if r["mesh"] == true {
        eprintln!(
            "mode: multi-node (the nodes list listen_addrs): bob behind another NAT must get the stream"
        );
        assert_eq!(remote["expected"], true);
        assert_eq!(remote["delivered"], true, "through the mesh: {remote}");
        assert!(
            remote["play"]["probe_frames"].as_u64().unwrap() > 50,
            "{remote}"
        );
    } else {
        eprintln!(
            "mode: single-node (no listen_addrs in the nodes' status yet): only alice's local player is checked"
        );
        assert_eq!(remote["expected"], false, "{remote}");
    }
    assert!(o.status.success(), "netlab run failed");
    assert!(out.join("report.md").exists());
    let prefix = trial["lab"].as_str().unwrap();
    assert!(
        common::namespaces_of(prefix).is_empty(),
        "namespaces of {prefix} left behind"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
}
