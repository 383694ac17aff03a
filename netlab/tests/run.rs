//! `netlab run` with the real node: `scenarios/smoke.toml` (the stream reaches the player on the publisher's
//! node and the player behind another NAT), and a reduced NAT matrix (pairs that must end direct, and one
//! that must fall back to the relay and still deliver).

mod common;

use std::path::PathBuf;
use std::time::Instant;

/// The streamr-node binary cargo built beside netlab, or the skip rule's verdict.
fn node_binary() -> Option<PathBuf> {
    let node = PathBuf::from(env!("CARGO_BIN_EXE_netlab")).with_file_name("streamr-node");
    if node.exists() {
        return Some(node);
    }
    common::skip(&format!(
        "{} not found: build it with `cargo build -p streamr-node`",
        node.display()
    ));
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
        // Not the file's 1000: the override reaches the publisher and the report.
        "--kbps",
        "800",
    ]);
    let took = started.elapsed();
    let r = common::read_json(&out.join("result.json"));
    assert_eq!(r["cases"][0]["kbps"], 800);
    let trial = &r["cases"][0]["trials"][0];
    assert!(trial["error"].is_null(), "trial error: {}", trial["error"]);
    // Bits per second of media (frames at 30 fps), not of wall time.
    let publisher = &trial["publisher"];
    let media_s = publisher["video_frames"].as_f64().unwrap() / 30.0;
    let kbps = publisher["bytes"].as_f64().unwrap() * 8.0 / media_s / 1000.0;
    assert!(
        (640.0..960.0).contains(&kbps),
        "published {kbps:.0} kbit/s: {publisher}"
    );
    // Mode detection must not hide a failure: every node ran and its status was read.
    for n in trial["nodes"].as_array().unwrap() {
        assert!(n["error"].is_null(), "node {}: {}", n["name"], n["error"]);
        assert!(
            !n["final_status"].is_null(),
            "node {} status never read",
            n["name"]
        );
        assert!(n["nice"].is_i64(), "node {} niceness not read", n["name"]);
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
    // The node runs the mesh: bob, behind another NAT, gets the stream through it.
    assert_eq!(
        r["mesh"], true,
        "the nodes do not list listen_addrs in their status"
    );
    let remote = player("bob");
    assert_eq!(remote["expected"], true);
    assert_eq!(remote["delivered"], true, "through the mesh: {remote}");
    assert!(
        remote["play"]["probe_frames"].as_u64().unwrap() > 50,
        "{remote}"
    );
    assert!(o.status.success(), "netlab run failed");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("- probe stream: 800 kbit/s"), "{md}");
    let prefix = trial["lab"].as_str().unwrap();
    assert!(
        common::namespaces_of(prefix).is_empty(),
        "namespaces of {prefix} left behind"
    );
    eprintln!("smoke scenario took {took:?}");
}

/// One 15 s trial of each `ROW/COLUMN` cell in `only` of `scenarios/nat-matrix.toml`; the output and
/// the parsed `result.json`.
fn run_matrix_cells(
    node: &std::path::Path,
    out_name: &str,
    only: &str,
) -> (std::process::Output, serde_json::Value) {
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/nat-matrix.toml");
    let out = common::temp_file(out_name);
    let o = common::run(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--node",
        node.to_str().unwrap(),
        "--trials",
        "1",
        "--duration",
        "15",
        "--only",
        only,
    ]);
    let r = common::read_json(&out.join("result.json"));
    (o, r)
}

/// One trial each of representative pairs of `scenarios/nat-matrix.toml`: two that hole punching must turn
/// direct (port-restricted on both sides; full cone against symmetric, which works because the cone side
/// answers the address it saw) and one that cannot be punched (symmetric on both sides) and must be
/// delivered through the relay.
#[test]
fn reduced_nat_matrix_goes_direct_where_punchable_and_relays_otherwise() {
    if !common::lab_available("run nat-matrix (reduced)") {
        return;
    }
    let Some(node) = node_binary() else { return };
    let (o, r) = run_matrix_cells(
        &node,
        "matrix-run",
        "port-restricted/port-restricted,full-cone/symmetric,symmetric/symmetric",
    );
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3, "{r}");
    for case in cases {
        let label = case["label"].as_str().unwrap();
        let viewer = case["trials"][0]["players"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "viewer")
            .unwrap_or_else(|| panic!("{label}: no viewer"))
            .clone();
        assert_eq!(viewer["delivered"], true, "{label}: {viewer}");
        let want = if label == "symmetric/symmetric" {
            "relayed"
        } else {
            "direct"
        };
        assert_eq!(viewer["connection"], want, "{label}: {viewer}");
        eprintln!(
            "{label}: {} (time to direct from the play request {} ms, first frame {} ms)",
            viewer["connection"], viewer["time_to_direct_ms"], viewer["first_frame_ms"]
        );
    }
    assert!(
        o.status.success(),
        "netlab run failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// True when miniupnpd is on the PATH; otherwise the skip rule.
fn miniupnpd_available(test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("miniupnpd").is_file()));
    if !found {
        common::skip(&format!(
            "{test} needs miniupnpd (Debian: apt install miniupnpd-nftables miniupnpd)"
        ));
    }
    found
}

/// A publisher behind a UPnP router (miniupnpd) and a viewer behind a symmetric NAT: no hole punch can
/// join them (port-restricted x symmetric), but the publisher's node asks the router to open its port,
/// a dial-back confirms the mapped address, and the viewer reaches it directly.
#[test]
fn upnp_router_turns_an_unpunchable_pair_direct() {
    if !common::lab_available("run nat-matrix upnp/symmetric")
        || !miniupnpd_available("run nat-matrix upnp/symmetric")
    {
        return;
    }
    let Some(node) = node_binary() else { return };
    let (o, r) = run_matrix_cells(&node, "matrix-upnp", "upnp/symmetric");
    let trial = &r["cases"][0]["trials"][0];
    assert!(trial["error"].is_null(), "trial error: {}", trial["error"]);
    let publisher = trial["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "publisher")
        .expect("publisher node")
        .clone();
    let nat = &publisher["final_status"]["nat"];
    assert!(
        nat["upnp"]
            .as_str()
            .unwrap_or("")
            .starts_with("mapped /ip4/"),
        "the router did not map the publisher's port: {nat}"
    );
    assert_eq!(nat["reachability"], "public", "{nat}");
    let viewer = trial["players"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "viewer")
        .expect("viewer")
        .clone();
    assert_eq!(viewer["delivered"], true, "{viewer}");
    assert_eq!(viewer["connection"], "direct", "{viewer}");
    assert!(o.status.success(), "netlab run failed");
    let prefix = trial["lab"].as_str().unwrap();
    assert!(
        common::namespaces_of(prefix).is_empty(),
        "namespaces of {prefix} left behind"
    );
}
