//! The dashboard offers the newest crash report for a bug report (issue 14): the overview that feeds the page
//! carries it, and the page has the banner with a copy button for it.

mod common;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn the_newest_crash_report_reaches_the_dashboard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crashes = dir.path().join("crashes");
    std::fs::create_dir_all(&crashes).unwrap();
    std::fs::write(
        crashes.join("crash-2026-11-01T10-00-00Z.txt"),
        "an older report\n",
    )
    .unwrap();
    let report = "streamr-node panicked in thread 'tokio-rt-worker' at edge/src/session.rs:1:1\nsession: rtmp peer=127.0.0.1:5000\n";
    std::fs::write(crashes.join("crash-2026-11-02T10-00-00Z.txt"), report).unwrap();
    let node = TestNode::start_in(dir, &[]).await;

    let (code, body) = http_get(node.http, "/api/v1/overview");
    assert_eq!(code, 200, "{body}");
    let overview: Value = serde_json::from_str(&body).expect("overview JSON");
    assert_eq!(
        overview["last_crash"]["text"], report,
        "the newest report, whole: {overview}"
    );
    assert!(
        overview["last_crash"]["time"]
            .as_str()
            .is_some_and(|t| t.len() >= 20),
        "{overview}"
    );

    let (_, page) = http_get(node.http, "/");
    assert!(
        page.contains("id=\"crash-banner\"") && page.contains("data-copy=\"crash-report\""),
        "the page has the crash banner and its copy button"
    );
}

#[tokio::test]
async fn no_crash_no_banner_data() {
    let node = TestNode::start(&[]).await;
    let (code, body) = http_get(node.http, "/api/v1/overview");
    assert_eq!(code, 200, "{body}");
    let overview: Value = serde_json::from_str(&body).expect("overview JSON");
    assert!(overview["last_crash"].is_null(), "{overview}");
}
