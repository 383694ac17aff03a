//! Shared helpers of the integration tests: the skip rule and running the real `netlab` binary.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Environment variable that turns a skip into a failure (CI sets it).
pub const REQUIRE_EXTERNAL: &str = "STREAMR_REQUIRE_EXTERNAL";

/// The skip rule: true when the lab can run here (root, `ip`, `nft`). Otherwise prints why the test is
/// skipped and returns false, unless `STREAMR_REQUIRE_EXTERNAL=1`, where it panics instead.
pub fn lab_available(test: &str) -> bool {
    match streamr_netlab::engine::sys::check_privileges() {
        Ok(()) => true,
        Err(e) => {
            skip(&format!("{test} needs root, ip and nft: {e}"));
            false
        }
    }
}

/// The skip rule's verdict on a missing tool: prints why the test is skipped, or panics when
/// `STREAMR_REQUIRE_EXTERNAL=1` forbids skipping.
pub fn skip(why: &str) {
    if std::env::var(REQUIRE_EXTERNAL).as_deref() == Ok("1") {
        panic!("{why} ({REQUIRE_EXTERNAL}=1 forbids skipping)");
    }
    eprintln!("SKIP: {why}");
}

/// The `netlab` binary built for these tests.
pub fn netlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netlab"))
}

/// Runs `netlab ARGS`, echoing its output into the test log.
pub fn run(args: &[&str]) -> Output {
    let out = netlab().args(args).output().expect("netlab starts");
    eprintln!(
        "$ netlab {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fresh path in Cargo's temporary directory for integration tests.
pub fn temp_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-{name}", std::process::id()))
}

/// Reads a JSON file the binary wrote.
pub fn read_json(path: &PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("netlab wrote its JSON file");
    serde_json::from_str(&text).expect("valid JSON")
}

/// Namespaces on the machine whose name starts with `prefix-`.
pub fn namespaces_of(prefix: &str) -> Vec<String> {
    streamr_netlab::engine::sys::netns_list()
        .unwrap()
        .into_iter()
        .filter(|n| streamr_netlab::engine::names::prefix_of(n) == Some(prefix))
        .collect()
}
