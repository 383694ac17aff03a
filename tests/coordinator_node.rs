//! Nodes with a coordinator, end to end: the real `streamr-coordinator` binary (SQLite in a temp dir) and
//! real `streamr-node` processes. A node registers and heartbeats; a node with no `--bootstrap` joins the
//! mesh through the public node the coordinator lists; a published stream is listed; an ffmpeg player on
//! the other node opens a viewing session and closes it when it stops; the receiving node's signed
//! receipts reach the coordinator through the provider and are credited; an operator's assignment is
//! ingested (ffmpeg publishes to nginx-rtmp, the node pulls it) and stopped. A coordinator that is down
//! changes nothing for the node, which registers once it comes up; invites get a short code that a friend
//! types to join.

mod common;

use common::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use streamr_web::CoordinatorStatus;
use tokio::process::{Child, Command};

const OPERATOR_TOKEN: &str = "test-operator-token";

/// The `streamr-coordinator` binary cargo built beside the node, or the skip rule's verdict.
fn coordinator_binary() -> Option<PathBuf> {
    let bin =
        PathBuf::from(env!("CARGO_BIN_EXE_streamr-node")).with_file_name("streamr-coordinator");
    if bin.exists() {
        return Some(bin);
    }
    let why = format!(
        "{} not found: build it with `cargo build -p streamr-coordinator` (a workspace build does)",
        bin.display()
    );
    if require_external() {
        panic!("{why}, and STREAMR_REQUIRE_EXTERNAL=1");
    }
    eprintln!("SKIP: {why}");
    None
}

/// A `streamr-coordinator` process on a loopback port with its SQLite file in a temp dir.
struct Coordinator {
    _child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Coordinator {
    /// Starts it on `port` (heartbeats every 2 s: a node is offline after 6 s without one).
    async fn start(bin: &PathBuf, port: u16) -> Coordinator {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let db = format!("sqlite://{}", dir.path().join("coordinator.db").display());
        let child = Command::new(bin)
            .args(["--listen", &addr.to_string(), "--database-url", &db])
            .args(["--operator-token", OPERATOR_TOKEN])
            .args(["--heartbeat-interval-secs", "2"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn streamr-coordinator");
        let c = Coordinator {
            _child: child,
            addr,
            _dir: dir,
        };
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(addr).is_ok()
        })
        .await;
        assert!(up, "the coordinator did not start:\n{}", c.log());
        c
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }

    /// GET `path` (public reads) as JSON.
    fn get(&self, path: &str) -> Value {
        let (code, body) = http_get(self.addr, path);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The stream `name` as `GET /api/v1/streams` lists it.
    fn listed(&self, name: &str) -> Option<Value> {
        self.get("/api/v1/streams")["streams"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
    }

    /// An operator request with the token; returns (status, JSON answer).
    async fn operator(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url()))
            .bearer_auth(OPERATOR_TOKEN);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&b).unwrap());
        }
        let resp = req.send().await.expect("operator request");
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// The node's `coordinator` status section (the node must have one).
fn coord(node: &TestNode) -> CoordinatorStatus {
    node.status()
        .coordinator
        .expect("a node with --coordinator has a coordinator section in its status")
}

fn connected(node: &TestNode, peer: &str) -> bool {
    node.status().peers.iter().any(|p| p.peer_id == peer)
}

/// `ffmpeg -re -stream_loop -1 -i FILE -c copy -f flv URL`: a publisher that runs until killed.
fn publish_looped(file: &std::path::Path, url: &str) -> Child {
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

/// POST `path` on a node with its API key (as the CLI does); returns the status and the JSON body.
async fn post(node: &TestNode, path: &str, body: Value) -> (u16, Value) {
    let key = std::fs::read_to_string(node.dir.path().join("api-key")).expect("the api-key file");
    let resp = reqwest::Client::new()
        .post(format!("http://{}{path}", node.http))
        .header("X-API-Key", key.trim())
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("a body");
    let json =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} answered {text} ({e})"));
    (status, json)
}
