//! Set-up, teardown, interruption and clean-up through the real binary: nothing of a run survives it.

mod common;

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn sites_are_built_reachable_and_removed() {
    if !common::lab_available("scale") {
        return;
    }
    let json = common::temp_file("scale.json");
    let out = common::run(&[
        "scale",
        "--sites",
        "6",
        "--preset",
        "mixed",
        "--check",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let r = common::read_json(&json);
    assert_eq!(r["sites"], 6);
    assert_eq!(r["reachable"], 6);
    assert_eq!(r["leftover_namespaces"], 0);
    // inet + none(1) + full/restricted/port-restricted/symmetric (2 each) + double (3).
    assert_eq!(r["namespaces"], 1 + 1 + 8 + 3);
}

/// The prefix of the lab owned by `pid`, from its owner record.
fn prefix_owned_by(pid: u32) -> Option<String> {
    std::fs::read_dir(streamr_netlab::engine::names::OWNER_DIR)
        .ok()?
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let record = std::fs::read_to_string(e.path()).ok()?;
            (record.split_whitespace().next() == Some(&pid.to_string()))
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
}

#[test]
fn ctrl_c_tears_the_lab_down() {
    if !common::lab_available("interrupt") {
        return;
    }
    let mut child = common::netlab()
        .args(["punch", "--delays", "50"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the lab exists and has sites.
    let deadline = Instant::now() + Duration::from_secs(20);
    let prefix = loop {
        if let Some(p) = prefix_owned_by(pid).filter(|p| common::namespaces_of(p).len() > 3) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the punch run never built its lab"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    kill(Pid::from_raw(pid as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        common::namespaces_of(&prefix).is_empty(),
        "{:?}",
        common::namespaces_of(&prefix)
    );
    assert!(!streamr_netlab::engine::names::owner_file(&prefix).exists());
}

#[test]
fn clean_removes_a_killed_run_and_nothing_else() {
    if !common::lab_available("clean") {
        return;
    }
    let mut child = common::netlab()
        .args(["scale", "--sites", "30", "--delay-ms", "10", "--check"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    let prefix = loop {
        if let Some(p) = prefix_owned_by(pid).filter(|p| common::namespaces_of(p).len() > 5) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the scale run never built its lab"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // A crash: no teardown at all.
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert!(!common::namespaces_of(&prefix).is_empty());
    let out = common::run(&["clean"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("removed {prefix}")));
    assert!(common::namespaces_of(&prefix).is_empty());
    assert!(!streamr_netlab::engine::names::owner_file(&prefix).exists());
}
