//! Nodes with a coordinator, end to end: the real `streamr-coordinator` binary (SQLite in a temp dir) and
//! real `streamr-node` processes. A node registers and heartbeats; a node with no `--bootstrap` joins the
//! mesh through the public node the coordinator lists; a published stream is listed; an ffmpeg player on
//! the other node opens a viewing session and closes it when it stops; the receiving node's signed
//! receipts reach the coordinator through the provider and are credited; an operator's assignment is
//! ingested (ffmpeg publishes to nginx-rtmp, the node pulls it) and stopped. A coordinator that is down
//! changes nothing for the node, which registers once it comes up; invites get a short code that a friend
//! types to join.

mod common;

use common::coordinator::*;
use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// `ffmpeg -re -stream_loop -1 -i FILE -c copy -f flv URL`: a publisher that runs until killed.
fn publish_looped(file: &Path, url: &str) -> Child {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(file)
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg publisher")
}

#[tokio::test]
async fn two_nodes_register_list_view_sign_receipts_and_run_assignments() {
    let _serial = serial().await;
    if !have("ffmpeg", "publisher and player") {
        return;
    }
    let Some(bin) = coordinator_binary() else {
        return;
    };
    let Some(nginx) = Nginx::start().await else {
        return;
    };
    let coordinator = Coordinator::start(&bin, free_port()).await;
    let with = ["--coordinator", &coordinator.url()];

    // Registration and heartbeats.
    let a = TestNode::start(&with).await;
    assert!(
        wait_until(Duration::from_secs(20), || {
            let c = coord(&a);
            c.registered
                && c.online
                && c.heartbeat_interval_secs == 2
                && c.last_contact_ms.is_some()
        })
        .await,
        "A never registered: {:?}\n{}",
        coord(&a),
        a.log_text()
    );
    let info = coordinator.get(&format!("/api/v1/nodes/{}", a.peer_id));
    assert_eq!(info["online"], true, "{info}");

    // A becomes public once a peer's AutoNAT server confirmed its address (H knows A only by
    // --bootstrap and has no coordinator); A registers again and the coordinator lists it as a bootstrap
    // peer.
    let h = TestNode::start(&["--bootstrap", &a.mesh_addr()]).await;
    assert!(
        wait_until(Duration::from_secs(60), || a.status().nat.reachability
            == "public")
        .await,
        "A never became public: {:?}",
        a.status().nat
    );

    // B has a coordinator and nothing else: it joins the mesh through A.
    let b = TestNode::start(&with).await;
    assert!(
        wait_until(Duration::from_secs(60), || connected(&b, &a.peer_id)).await,
        "B never reached A through the coordinator's bootstrap peers: {:?}\nB:\n{}",
        coord(&b),
        b.log_text()
    );
    assert!(
        coord(&b).bootstrap_peers.contains(&a.peer_id),
        "{:?}",
        coord(&b).bootstrap_peers
    );
    drop(h);

    // The operator names a newer release: the nodes show it.
    let (code, v) = coordinator
        .operator(
            reqwest::Method::PUT,
            "/api/v1/operator/version",
            Some(json!({"version": "99.0.0", "url": "https://example.org/releases/99.0.0", "notes": "test"})),
        )
        .await;
    assert!((200..300).contains(&code), "{code} {v}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let c = coord(&b);
            c.update_available && c.latest_version.is_some_and(|v| v.version == "99.0.0")
        })
        .await,
        "{:?}",
        coord(&b)
    );
    let overview = serde_json::from_str::<Value>(&http_get(b.http, "/api/v1/overview").1)
        .unwrap_or(Value::Null);
    assert_eq!(overview["update"]["version"], "99.0.0", "{overview}");

    // A publishes: the coordinator lists the stream, and B's dashboard shows it.
    let clip = clip(10, 60);
    let mut publisher = publish_looped(&clip, &a.url("cam"));
    assert!(
        wait_until(Duration::from_secs(20), || coordinator
            .listed("cam")
            .is_some_and(|s| s["origin_peer"] == a.peer_id.as_str()))
        .await,
        "cam never listed: {}",
        coordinator.get("/api/v1/streams")
    );
    assert!(
        wait_until(Duration::from_secs(20), || coord(&b)
            .streams
            .iter()
            .any(|s| s.name == "cam" && s.origin_peer == a.peer_id))
        .await,
        "B's status never listed cam: {:?}",
        coord(&b).streams
    );

    // A player on B: one viewing session while it plays, counted by the coordinator.
    // About 30 s of packets (30 video + 47 audio a second): long enough for B to sign receipts (every
    // 10 s). ffprobe must end by itself: killed, it prints nothing.
    let player = play_with(&b.url("cam"), 5, 90, Some(2300));
    assert!(
        wait_until(Duration::from_secs(20), || coord(&b)
            .sessions
            .iter()
            .any(|s| s.stream == "cam" && s.players == 1))
        .await,
        "no session on B: {:?}\n{}",
        coord(&b),
        b.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(10), || coordinator
            .listed("cam")
            .is_some_and(|s| s["viewers"] == 1))
        .await,
        "the coordinator never counted B's viewer: {:?}",
        coordinator.listed("cam")
    );

    // B signs receipts for what A sent it; A hands them to the coordinator, which credits A.
    assert!(
        wait_until(Duration::from_secs(40), || {
            coordinator.get(&format!("/api/v1/nodes/{}", a.peer_id))["verified_bytes"]
                .as_u64()
                .is_some_and(|v| v > 0)
        })
        .await,
        "A was never credited: A {:?}\nB {:?}",
        coord(&a).receipts,
        coord(&b).receipts
    );
    // A's dashboard shows what the coordinator says: earnings backed by receipts, and a trust score.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let c = coord(&a);
            c.earnings.is_some_and(|e| e.verified_bytes > 0) && c.trust.is_some()
        })
        .await,
        "{:?}",
        coord(&a)
    );
    let (ra, rb) = (coord(&a).receipts, coord(&b).receipts);
    assert!(rb.signed > 0 && rb.signed_bytes > 0, "{rb:?}");
    assert!(ra.received > 0 && ra.received_bytes > 0, "{ra:?}");
    assert_eq!((ra.refused, ra.refused_by_coordinator), (0, 0), "{ra:?}");
    // B relayed nothing and no one signed for it.
    let info_b = coordinator.get(&format!("/api/v1/nodes/{}", b.peer_id));
    assert_eq!(info_b["verified_bytes"], 0, "{info_b}");

    // The player stops: the session closes with what B received.
    let played = player.await.unwrap();
    assert!(
        played.video() > 0,
        "B's player got nothing: {}",
        played.stderr
    );
    assert!(
        wait_until(Duration::from_secs(10), || coord(&b).sessions.is_empty()).await,
        "{:?}",
        coord(&b).sessions
    );
    assert!(
        wait_until(Duration::from_secs(10), || coordinator
            .listed("cam")
            .is_some_and(|s| s["viewers"] == 0))
        .await,
        "the coordinator still counts B's viewer: {:?}",
        coordinator.listed("cam")
    );
    let closed = b
        .log_text()
        .lines()
        .find(|l| l.contains("viewing session closed"))
        .map(str::to_string)
        .unwrap_or_default();
    // The node logs JSON lines here.
    let bytes = serde_json::from_str::<Value>(&closed)
        .ok()
        .and_then(|v| v["bytes"].as_u64())
        .unwrap_or(0);
    assert!(
        bytes > 100_000,
        "the session closed with {bytes} bytes: {closed:?}"
    );
    publisher.kill().await.ok();

    // The operator assigns B to ingest an RTMP source: ffmpeg publishes to nginx-rtmp, B pulls it.
    let mut source = publish_looped(&clip, &nginx.url("src"));
    let (code, created) = coordinator
        .operator(
            reqwest::Method::POST,
            "/api/v1/operator/assignments",
            Some(
                json!({"node": b.peer_id, "stream_name": "ingested", "rtmp_url": nginx.url("src")}),
            ),
        )
        .await;
    assert_eq!(code, 200, "{created}");
    let id = created["id"].as_str().expect("assignment id").to_string();
    assert!(
        wait_until(Duration::from_secs(30), || b
            .stream("ingested")
            .is_some_and(|s| s.live && s.frames > 30))
        .await,
        "B never ingested the assignment: {:?}\n{}",
        coord(&b).assignments,
        b.log_text()
    );
    let running = coord(&b).assignments;
    assert!(
        running.iter().any(|x| x.id == id && x.state == "running"),
        "{running:?}"
    );
    // Ingested into the mesh: A can play it, and the coordinator lists it with B as origin.
    let on_a = play_with(&a.url("ingested"), 5, 30, Some(60));
    let p = on_a.await.unwrap();
    assert!(
        p.video() > 0,
        "A could not play the ingested stream: {}",
        p.stderr
    );
    assert!(
        wait_until(Duration::from_secs(10), || coordinator
            .listed("ingested")
            .is_some_and(|s| s["origin_peer"] == b.peer_id.as_str()))
        .await
    );

    // Stopped by the operator: B stops pulling.
    let (code, _) = coordinator
        .operator(
            reqwest::Method::DELETE,
            &format!("/api/v1/operator/assignments/{id}"),
            None,
        )
        .await;
    assert!((200..300).contains(&code), "delete answered {code}");
    assert!(
        wait_until(Duration::from_secs(15), || !b
            .stream("ingested")
            .is_some_and(|s| s.live))
        .await,
        "B still ingests after the assignment was deleted"
    );
    assert!(
        wait_until(Duration::from_secs(5), || coord(&b).assignments.is_empty()).await,
        "{:?}",
        coord(&b).assignments
    );
    source.kill().await.ok();

    assert_eq!(b.stop().await, Some(0));
    assert_eq!(a.stop().await, Some(0));
    drop(coordinator);
}

#[tokio::test]
async fn a_coordinator_that_is_down_changes_nothing_then_registers_and_stores_short_invite_codes() {
    let _serial = serial().await;
    let Some(bin) = coordinator_binary() else {
        return;
    };
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let node = TestNode::start(&["--coordinator", &url]).await;
    // The node serves (its status answers at once) and says what is wrong.
    assert!(
        wait_until(Duration::from_secs(10), || coord(&node)
            .last_error
            .is_some())
        .await,
        "{:?}",
        coord(&node)
    );
    let c = coord(&node);
    assert!(!c.online && !c.registered, "{c:?}");
    assert_eq!(c.url.trim_end_matches('/'), url);
    let page = http_get(node.http, "/").1;
    assert!(
        page.contains("coordinator-card"),
        "the page has no coordinator card"
    );
    // It comes up: the node registers on its next retry (backoff starts at 1 s and doubles).
    let coordinator = Coordinator::start(&bin, port).await;
    assert!(
        wait_until(Duration::from_secs(40), || {
            let c = coord(&node);
            c.online && c.registered && c.last_error.is_none()
        })
        .await,
        "never registered after the coordinator came up: {:?}\n{}",
        coord(&node),
        coordinator.log()
    );
    let info = coordinator.get(&format!("/api/v1/nodes/{}", node.peer_id));
    assert_eq!(info["online"], true);

    // Invites get a short code at the coordinator; a friend types it (any case, with a dash) and joins.
    let (code, invite) = post(&node, "/api/v1/invites", json!({})).await;
    assert_eq!(code, 200, "{invite}");
    let short = invite["short_code"]
        .as_str()
        .unwrap_or_else(|| panic!("no short code: {invite}"));
    assert_eq!(short.len(), 10, "{short}");
    let typed = format!("{}-{}", &short[..5], &short[5..]).to_lowercase();
    let friend = TestNode::start(&["--coordinator", &url]).await;
    let (code, joined) = post(&friend, "/api/v1/join", json!({ "code": typed })).await;
    assert_eq!(code, 200, "{joined}");
    assert!(
        wait_until(Duration::from_secs(20), || connected(
            &friend,
            &node.peer_id
        ))
        .await,
        "the friend never connected after joining with the short code"
    );
    // Without a coordinator a short code cannot work, and the answer says what to do instead.
    let alone = TestNode::start(&[]).await;
    let (code, refused) = post(&alone, "/api/v1/join", json!({ "code": short })).await;
    assert_eq!(code, 400, "{refused}");
    assert!(refused.to_string().contains("long code"), "{refused}");

    assert_eq!(alone.stop().await, Some(0));
    assert_eq!(friend.stop().await, Some(0));
    assert_eq!(node.stop().await, Some(0));
}

/// POST `path` with the node's API key.
async fn post(node: &TestNode, path: &str, body: Value) -> (u16, Value) {
    api_post(node, path, body, Duration::from_secs(30)).await
}

/// `ffmpeg -i URL -c copy -f flv FILE`: a viewer that keeps what it receives in `file` until killed, so
/// that the test sees it keep receiving (the file grows) whatever happens elsewhere.
fn record(url: &str, file: &Path) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-rw_timeout", "30000000", "-i", url])
        .args(["-c", "copy", "-f", "flv"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg viewer")
}

fn file_len(file: &Path) -> u64 {
    std::fs::metadata(file).map(|m| m.len()).unwrap_or(0)
}

/// `verified_bytes` of `peer` at the coordinator.
fn verified(coordinator: &Coordinator, peer: &str) -> u64 {
    coordinator.node(peer)["verified_bytes"]
        .as_u64()
        .unwrap_or(0)
}

/// Earnings are verified GB x the operator's rate (constant during these tests), in floating point.
fn assert_earnings_match(info: &Value, rate: f64) {
    let v = info["verified_bytes"].as_u64().unwrap_or(0) as f64;
    let e = info["earnings"].as_f64().unwrap_or(-1.0);
    let want = v / 1e9 * rate;
    assert!(
        (e - want).abs() <= want * 1e-9,
        "earnings {e} for {v} verified bytes at {rate} per GB (want {want}): {info}"
    );
}

/// The `field=value` of the coordinator's (plain-text) log line `message` that also names `session`.
fn coordinator_log_field(log: &str, message: &str, session: &str, field: &str) -> Option<u64> {
    let line = log
        .lines()
        .find(|l| l.contains(message) && l.contains(&format!("session={session}")))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{field}=")))?
        .parse()
        .ok()
}

#[tokio::test]
async fn three_nodes_join_through_the_coordinator_alone_and_only_signed_bytes_are_paid() {
    let _serial = serial().await;
    if !have("ffmpeg", "publisher and player") {
        return;
    }
    let Some(bin) = coordinator_binary() else {
        return;
    };
    let coordinator = Coordinator::start(&bin, free_port()).await;
    const RATE: f64 = 0.5;
    coordinator.set_rate(RATE).await;
    let with = ["--coordinator", &coordinator.url()];

    // No --bootstrap anywhere, and no node is public yet (no peer has confirmed an address): the
    // coordinator lists the young network's nodes by the addresses they listen on.
    let a = TestNode::start(&with).await;
    let b = TestNode::start(&with).await;
    let c = TestNode::start(&with).await;
    let nodes = [&a, &b, &c];
    let all_connected = || {
        nodes.iter().all(|n| {
            nodes
                .iter()
                .filter(|m| m.peer_id != n.peer_id)
                .all(|m| connected(n, &m.peer_id))
        })
    };
    assert!(
        wait_until(Duration::from_secs(60), all_connected).await,
        "the three nodes never all met: A {:?} B {:?} C {:?}\nC's coordinator view: {:?}\nC:\n{}",
        a.status().peers.len(),
        b.status().peers.len(),
        c.status().peers.len(),
        coord(&c),
        c.log_text()
    );
    for n in nodes {
        let info = coordinator.node(&n.peer_id);
        assert_eq!(info["online"], true, "{info}");
    }

    // A publishes; the coordinator lists it.
    let clip = clip(10, 60);
    let mut publisher = publish_looped(&clip, &a.url("cam"));
    assert!(
        wait_until(Duration::from_secs(20), || coordinator
            .listed("cam")
            .is_some_and(|s| s["origin_peer"] == a.peer_id.as_str()
                && s["play_name"] == format!("cam@{}", a.peer_id).as_str()))
        .await,
        "cam never listed: {}",
        coordinator.get("/api/v1/streams")
    );

    // A player on C: a session while it plays. About 25 s of packets (30 video + 47 audio a second), so
    // that C signs receipts (every 10 s) for what A sent it.
    let player = play_with(&c.url("cam"), 5, 90, Some(1900));
    assert!(
        wait_until(Duration::from_secs(20), || coord(&c)
            .sessions
            .iter()
            .any(|s| s.stream == "cam" && s.players == 1))
        .await,
        "no session on C: {:?}\n{}",
        coord(&c),
        c.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(10), || coordinator
            .listed("cam")
            .is_some_and(|s| s["viewers"] == 1))
        .await,
        "the coordinator never counted C's viewer: {:?}",
        coordinator.listed("cam")
    );

    // A relays to C and C signs for it: A earns, backed by receipts.
    assert!(
        wait_until(Duration::from_secs(40), || {
            let i = coordinator.node(&a.peer_id);
            i["verified_bytes"].as_u64().is_some_and(|v| v > 0)
                && i["earnings"].as_f64().is_some_and(|e| e > 0.0)
        })
        .await,
        "A never earned: {}\nA {:?}\nC {:?}",
        coordinator.node(&a.peer_id),
        coord(&a).receipts,
        coord(&c).receipts
    );
    let info_a = coordinator.node(&a.peer_id);
    assert_earnings_match(&info_a, RATE);
    assert!(coord(&c).receipts.signed > 0, "{:?}", coord(&c).receipts);
    // Every verified byte is one a receiver signed for: never more than C signed.
    assert!(
        info_a["verified_bytes"].as_u64().unwrap() <= coord(&c).receipts.signed_bytes,
        "{info_a} {:?}",
        coord(&c).receipts
    );

    // The player stops: the session closes, and the coordinator has the totals C counted.
    let played = player.await.unwrap();
    assert!(
        played.video() > 0,
        "C's player got nothing: {}",
        played.stderr
    );
    assert!(
        wait_until(Duration::from_secs(10), || coord(&c).sessions.is_empty()).await,
        "{:?}",
        coord(&c).sessions
    );
    // The node drops the session from its status a moment before it logs the close, and the log reaches
    // this test through a pipe: wait for the line rather than read once (a full run once read too early).
    wait_until(Duration::from_secs(5), || {
        c.log_text().contains("viewing session closed")
    })
    .await;
    let closed = c
        .log_text()
        .lines()
        .find(|l| l.contains("viewing session closed"))
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null);
    let session = closed["session"].as_str().unwrap_or_default().to_string();
    let bytes = closed["bytes"].as_u64().unwrap_or(0);
    assert!(
        bytes > 100_000,
        "C closed the session with {bytes} bytes: {closed}\nC's session lines:\n{}",
        c.log_text()
            .lines()
            .filter(|l| l.contains("session"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        wait_until(Duration::from_secs(15), || coordinator_log_field(
            &coordinator.log(),
            "session closed",
            &session,
            "bytes"
        ) == Some(bytes))
        .await,
        "the coordinator never closed session {session} with C's {bytes} bytes:\n{}",
        coordinator
            .log()
            .lines()
            .filter(|l| l.contains("session"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        wait_until(Duration::from_secs(10), || coordinator
            .listed("cam")
            .is_some_and(|s| s["viewers"] == 0))
        .await,
        "the coordinator still counts C's viewer: {:?}",
        coordinator.listed("cam")
    );
    publisher.kill().await.ok();

    // B relayed nothing, and nobody signed for C (it only received): neither earns.
    for n in [&b, &c] {
        let info = coordinator.node(&n.peer_id);
        assert_eq!(info["verified_bytes"], 0, "{info}");
        assert_eq!(info["earnings"], 0.0, "{info}");
    }

    // A node that claims bytes it relayed, with no receipt: its claim is shown, never paid. It signs its
    // requests with its own registered key, as a real node does.
    let liar_key = libp2p::identity::Keypair::generate_ed25519();
    let liar = streamr_coordinator::client::CoordinatorClient::new(&coordinator.url(), liar_key)
        .expect("a client");
    liar.register(&streamr_coordinator::api::RegisterRequest {
        peer_id: liar.peer_id(),
        version: env!("CARGO_PKG_VERSION").into(),
        nickname: "liar".into(),
        external_addrs: vec![],
        relay_addrs: vec![],
        listen_addrs: vec![],
        reachability: streamr_coordinator::api::Reachability::Private,
        upload_cap_kbps: 8000,
        os: "linux".into(),
        arch: "x86_64".into(),
    })
    .await
    .expect("register");
    const CLAIM: u64 = 300_000_000;
    for _ in 0..3 {
        let answer = liar
            .heartbeat(&streamr_coordinator::api::HeartbeatRequest {
                bytes_relayed: CLAIM,
                peers: 2,
                ..Default::default()
            })
            .await
            .expect("heartbeat");
        assert_eq!(answer.receipts.accepted, 0);
    }
    let info = coordinator.node(&liar.peer_id().to_string());
    assert_eq!(info["claimed_bytes"], 3 * CLAIM, "{info}");
    assert_eq!(info["verified_bytes"], 0, "{info}");
    assert_eq!(info["earnings"], 0.0, "{info}");
    let trust = coordinator.get(&format!("/api/v1/nodes/{}/trust", liar.peer_id()));
    assert!(
        trust["trust"]["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r
                .as_str()
                .is_some_and(|r| r.contains("backed by receivers")))),
        "{trust}"
    );
    // A's claim is backed by receipts and it still earns.
    assert!(verified(&coordinator, &a.peer_id) > 0);

    for n in [c, b, a] {
        assert_eq!(n.stop().await, Some(0));
    }
}

#[tokio::test]
async fn killing_the_coordinator_mid_stream_changes_nothing_for_viewers_and_earnings_catch_up_exactly()
 {
    let _serial = serial().await;
    if !have("ffmpeg", "publisher and player") {
        return;
    }
    let Some(bin) = coordinator_binary() else {
        return;
    };
    let port = free_port();
    let mut coordinator = Coordinator::start(&bin, port).await;
    const RATE: f64 = 0.5;
    coordinator.set_rate(RATE).await;
    let with = ["--coordinator", &coordinator.url()];
    let a = TestNode::start(&with).await;
    let b = TestNode::start(&with).await;
    assert!(
        wait_until(Duration::from_secs(60), || connected(&b, &a.peer_id)).await,
        "B never reached A through the coordinator: {:?}",
        coord(&b)
    );

    // A publishes, a viewer on B keeps what it receives in a file.
    let clip = clip(10, 60);
    let mut publisher = publish_looped(&clip, &a.url("cam"));
    assert!(
        wait_until(Duration::from_secs(20), || a
            .stream("cam")
            .is_some_and(|s| s.live))
        .await
    );
    let out = tempfile::tempdir().unwrap();
    let recording = out.path().join("viewer.flv");
    let mut viewer = record(&b.url("cam"), &recording);
    // B signed for what A sent it, and the coordinator credited A.
    assert!(
        wait_until(Duration::from_secs(40), || verified(
            &coordinator,
            &a.peer_id
        ) > 0)
        .await,
        "A was never credited before the outage: A {:?}\nB {:?}",
        coord(&a).receipts,
        coord(&b).receipts
    );
    let before_outage = verified(&coordinator, &a.peer_id);
    let received_at_kill = coord(&a).receipts.received;

    // The coordinator dies (SIGKILL by PID).
    coordinator.kill().await;
    let seen_at_kill = file_len(&recording);
    let frames_at_kill = b.stream("cam").map_or(0, |s| s.frames);
    // The viewer keeps receiving.
    assert!(
        wait_until(Duration::from_secs(30), || file_len(&recording)
            > seen_at_kill + 100_000)
        .await,
        "the viewer stopped receiving when the coordinator died: {} bytes at the kill, {} now",
        seen_at_kill,
        file_len(&recording)
    );
    // The recording's bytes can come from ffmpeg's buffers in a burst: B's own count is what says its
    // stream goes on (one second of video more), in its own time on a loaded machine.
    assert!(
        wait_until(Duration::from_secs(30), || b
            .stream("cam")
            .is_some_and(|s| s.frames > frames_at_kill + 30))
        .await,
        "B's frames did not grow: {frames_at_kill} then {:?}",
        b.stream("cam").map(|s| s.frames)
    );
    // Both nodes noticed (at their next heartbeat) and say so, and the viewer still receives.
    for n in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(10), || {
                let c = coord(n);
                !c.online && c.last_error.is_some()
            })
            .await,
            "{:?}",
            coord(n)
        );
    }
    let seen = file_len(&recording);
    assert!(
        wait_until(Duration::from_secs(10), || file_len(&recording) > seen).await,
        "the viewer stopped receiving"
    );
    // B keeps signing receipts, which A can only queue.
    let received_now = coord(&a).receipts.received.max(received_at_kill);
    assert!(
        wait_until(Duration::from_secs(15), || coord(&a).receipts.received
            > received_now)
        .await,
        "A got no receipt while the coordinator was down: {:?}",
        coord(&a).receipts
    );
    // Stop the stream just after a receipt came (the next is 10 s away): no receipt is in flight when
    // the flow stops, so what B signed is exactly what A holds.
    publisher.kill().await.ok();
    viewer.kill().await.ok();
    // B's subscription to A ends (its player is gone; A's keepalives hold it for a while): only then can
    // no receipt follow for the bytes that came after the last one.
    assert!(
        wait_until(Duration::from_secs(40), || b
            .stream("cam")
            .is_none_or(|s| s.upstream.is_none()))
        .await,
        "B still receives from A: {:?}",
        b.stream("cam")
    );
    // The flow has stopped; wait until the receipts are the same on both sides for 3 s in a row.
    let settled = || {
        let (ra, rb) = (coord(&a).receipts, coord(&b).receipts);
        (ra.received_bytes, rb.signed_bytes)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (mut last, mut same) = (settled(), 0);
    while same < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "receipts never settled: {last:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = settled();
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    let (held_by_a, signed_by_b) = last;
    assert_eq!(
        held_by_a, signed_by_b,
        "A holds the latest receipts B signed"
    );
    assert!(
        held_by_a > before_outage,
        "receipts signed during the outage should wait at A: {held_by_a} vs {before_outage}"
    );
    assert!(coord(&a).queued_receipts > 0, "{:?}", coord(&a));

    // Back on the same database and port: the queued receipts are delivered, each byte credited once.
    coordinator.restart().await;
    assert!(
        wait_until(Duration::from_secs(60), || verified(
            &coordinator,
            &a.peer_id
        ) >= held_by_a)
        .await,
        "earnings never caught up: {} of {held_by_a}\nA {:?}\n{}",
        verified(&coordinator, &a.peer_id),
        coord(&a),
        coordinator.log()
    );
    assert_eq!(verified(&coordinator, &a.peer_id), held_by_a);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let c = coord(&a);
            c.online && c.queued_receipts == 0
        })
        .await,
        "{:?}",
        coord(&a)
    );
    // More heartbeats change nothing: nothing is credited twice.
    let contact = coord(&a).last_contact_ms.unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(20), || coord(&a)
            .last_contact_ms
            .is_some_and(|t| t >= contact + 4_000))
        .await
    );
    let info = coordinator.node(&a.peer_id);
    assert_eq!(info["verified_bytes"], held_by_a, "{info}");
    assert_earnings_match(&info, RATE);
    assert_eq!(
        coord(&a).earnings.map(|e| e.verified_bytes),
        Some(held_by_a)
    );

    assert_eq!(b.stop().await, Some(0));
    assert_eq!(a.stop().await, Some(0));
}
