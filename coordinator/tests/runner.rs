//! The node's background runner against the real server started in-process (SQLite): registration,
//! heartbeats, assignments, and an outage: receipts and session events queue on disk across a node restart
//! and are credited exactly once when the coordinator returns. Also a coordinator that hangs or answers 5xx.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use libp2p_identity::Keypair;
use streamr_coordinator::api::*;
use streamr_coordinator::client::{
    CoordinatorClient, CoordinatorHandle, CoordinatorState, HeartbeatFigures, NodeRegistration,
    NodeReport, RunnerConfig, spawn,
};
use streamr_coordinator::receipt::Receipt;
use streamr_coordinator::server::{self, Clock, ServerConfig};
use streamr_coordinator::time::now_ms;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct FakeNode {
    relayed: AtomicU64,
}

impl NodeReport for FakeNode {
    fn registration(&self) -> NodeRegistration {
        NodeRegistration {
            version: "0.1.0".into(),
            nickname: "runner-test".into(),
            external_addrs: vec!["/ip4/192.0.2.7/udp/4001/quic-v1".into()],
            reachability: Reachability::Public,
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            ..Default::default()
        }
    }
    fn heartbeat(&self) -> HeartbeatFigures {
        HeartbeatFigures {
            bytes_relayed_total: self.relayed.load(Ordering::SeqCst),
            reachability: Reachability::Public,
            peers: 3,
            ..Default::default()
        }
    }
}

/// A coordinator with a 1 s heartbeat interval on `url`, listening on `listen`.
async fn coordinator(url: &str, listen: &str) -> (server::RunningServer, CancellationToken) {
    let cancel = CancellationToken::new();
    let srv = server::start(
        ServerConfig {
            listen: listen.parse().unwrap(),
            database_url: url.into(),
            operator_token: Some(OPERATOR_TOKEN.into()),
            heartbeat_interval_secs: 1,
            postgres_connections: 2,
            clock: Clock::System,
        },
        cancel.clone(),
    )
    .await
    .unwrap();
    (srv, cancel)
}

fn runner(
    url: &str,
    key: &Keypair,
    queue: &std::path::Path,
    node: Arc<FakeNode>,
) -> (CoordinatorHandle, CancellationToken) {
    let client =
        CoordinatorClient::with_timeout(url, key.clone(), Duration::from_millis(700)).unwrap();
    let mut config = RunnerConfig::new(client, queue);
    config.backoff_base = Duration::from_millis(100);
    config.backoff_max = Duration::from_millis(500);
    let cancel = CancellationToken::new();
    (spawn(config, node, cancel.clone()), cancel)
}

async fn wait_for(
    handle: &CoordinatorHandle,
    what: &str,
    pred: impl Fn(&CoordinatorState) -> bool,
) -> CoordinatorState {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut rx = handle.watch();
    loop {
        let s = rx.borrow_and_update().clone();
        if pred(&s) {
            return s;
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            panic!("timed out waiting for {what}; state {s:#?}");
        }
    }
}

fn signed_receipt(
    receiver: &Keypair,
    provider: &Keypair,
    start: u64,
    counter: u64,
    bytes: u64,
) -> streamr_coordinator::receipt::SignedReceipt {
    let now = now_ms() as u64;
    Receipt {
        stream: "cam".into(),
        provider: provider.public().to_peer_id(),
        receiver: receiver.public().to_peer_id(),
        bytes,
        frames: counter,
        window_start_ms: start,
        window_end_ms: now,
        counter,
    }
    .sign(receiver)
}

#[tokio::test]
async fn runner_registers_heartbeats_and_follows_assignments() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let (srv, srv_cancel) = coordinator(&db.url, "127.0.0.1:0").await;
    // A public node already online: the runner's node gets it as a bootstrap peer.
    let other = new_node(&srv.url()).await;
    let key = Keypair::generate_ed25519();
    let queue = tempfile::tempdir().unwrap();
    let node = Arc::new(FakeNode {
        relayed: AtomicU64::new(0),
    });
    let (handle, cancel) = runner(&srv.url(), &key, queue.path(), node.clone());
    let s = wait_for(&handle, "registration", |s| s.registered && s.online).await;
    assert_eq!(s.bootstrap_peers.len(), 1);
    assert_eq!(s.bootstrap_peers[0].peer_id, other.public().to_peer_id());
    assert_eq!(s.heartbeat_interval_secs, 1);

    let created: OperatorAssignment = operator(
        &srv.url(),
        "POST",
        "/api/v1/operator/assignments",
        &AssignmentRequest {
            node: key.public().to_peer_id(),
            stream_name: "cam".into(),
            rtmp_url: "rtmp://203.0.113.9/live/cam".into(),
        },
    )
    .await
    .parse();
    operator(
        &srv.url(),
        "PUT",
        "/api/v1/operator/version",
        &VersionNotice {
            version: "9.0.0".into(),
            url: None,
            notes: None,
        },
    )
    .await;
    node.relayed.store(4_000_000, Ordering::SeqCst);
    let s = wait_for(&handle, "assignment", |s| {
        s.assignments.len() == 1 && s.update_available
    })
    .await;
    assert_eq!(s.assignments[0].id, created.id);
    assert_eq!(s.latest_version.as_ref().unwrap().version, "9.0.0");
    let s = wait_for(&handle, "claimed bytes", |s| {
        s.earnings.as_ref().is_some_and(|e| e.claimed_bytes > 0)
    })
    .await;
    assert_eq!(
        s.earnings.unwrap().claimed_bytes,
        4_000_000,
        "the total is sent as differences"
    );
    assert!(s.trust.unwrap().score > 0);
    operator(
        &srv.url(),
        "DELETE",
        &format!("/api/v1/operator/assignments/{}", created.id),
        &(),
    )
    .await;
    wait_for(&handle, "assignment stopped", |s| s.assignments.is_empty()).await;

    // Invites and streams go straight through the handle.
    let invite = handle.create_invite("join-me").await.unwrap();
    assert_eq!(
        handle.client().invite(&invite.code).await.unwrap().invite,
        "join-me"
    );
    assert!(handle.streams().await.unwrap().streams.is_empty());

    cancel.cancel();
    handle.wait().await;
    stop(srv, srv_cancel).await;
}

#[tokio::test]
async fn an_outage_loses_nothing_and_credits_exactly_once() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let (srv, srv_cancel) = coordinator(&db.url, "127.0.0.1:0").await;
    let addr = srv.local_addr.to_string();
    let base = srv.url();
    operator(
        &base,
        "PUT",
        "/api/v1/operator/rate",
        &RateRequest { rate_per_gb: 1.0 },
    )
    .await;
    let provider = Keypair::generate_ed25519();
    let receiver = new_node(&base).await;
    let queue = tempfile::tempdir().unwrap();
    let node = Arc::new(FakeNode {
        relayed: AtomicU64::new(0),
    });
    let (handle, cancel) = runner(&base, &provider, queue.path(), node.clone());
    wait_for(&handle, "registration", |s| s.registered && s.online).await;

    // The coordinator goes away.
    stop(srv, srv_cancel).await;
    let start = now_ms() as u64 - 60_000;
    let session = handle.open_session("cam", None);
    handle.close_session(&session, 123_456);
    handle
        .submit_receipt(signed_receipt(&receiver, &provider, start, 1, 100_000_000))
        .unwrap();
    handle
        .submit_receipt(signed_receipt(&receiver, &provider, start, 2, 250_000_000))
        .unwrap();
    // Receipts for someone else or with a bad signature never enter the queue.
    let stranger = Keypair::generate_ed25519();
    assert!(
        handle
            .submit_receipt(signed_receipt(&receiver, &stranger, start, 1, 1))
            .is_err()
    );
    let mut bad = signed_receipt(&receiver, &provider, start, 3, 300_000_000);
    bad.receipt.bytes += 1;
    assert!(handle.submit_receipt(bad).is_err());
    let s = wait_for(&handle, "offline with a queue", |s| {
        !s.online
            && s.last_error.is_some()
            && s.queued_receipts == 1
            && s.queued_session_events == 2
    })
    .await;
    assert!(s.last_error.unwrap().contains("unreachable"));
    // The node restarts during the outage: the queue is on disk.
    cancel.cancel();
    handle.wait().await;
    assert!(queue.path().join("coordinator-outbox.json").exists());
    let (handle, cancel) = runner(&base, &provider, queue.path(), node.clone());
    let s = wait_for(&handle, "queue reloaded", |s| {
        s.queued_receipts == 1 && s.queued_session_events == 2
    })
    .await;
    assert!(!s.online);

    // The coordinator comes back on the same address and database; the receiver is online again.
    let (srv, srv_cancel) = coordinator(&db.url, &addr).await;
    heartbeat(&base, &receiver, &HeartbeatRequest::default()).await;
    wait_for(&handle, "queue delivered", |s| {
        s.online && s.queued_receipts == 0 && s.queued_session_events == 0
    })
    .await;
    let info = node_info(&base, &provider).await;
    assert_eq!(info.verified_bytes, 250_000_000);
    assert!((info.earnings - 0.25).abs() < 1e-9);

    // The same receipt again (say, the answer was lost): refused as a duplicate, not credited twice.
    handle
        .submit_receipt(signed_receipt(&receiver, &provider, start, 2, 250_000_000))
        .unwrap();
    wait_for(&handle, "duplicate refused", |s| {
        s.receipts_refused == 1 && s.queued_receipts == 0
    })
    .await;
    assert_eq!(
        node_info(&base, &provider).await.verified_bytes,
        250_000_000
    );
    assert_eq!(
        metric(
            &base,
            "coordinator_rejected_receipts_total{reason=\"duplicate\"}"
        )
        .await,
        1
    );

    cancel.cancel();
    handle.wait().await;
    stop(srv, srv_cancel).await;
}

/// A "coordinator" that accepts connections and then either never answers or answers 503.
async fn broken_coordinator(answer_503: bool) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            if answer_503 {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let body = r#"{"code":"overloaded","error":"try later"}"#;
                    let resp = format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            } else {
                held.push(sock);
            }
        }
    });
    (format!("http://{addr}"), task)
}

#[tokio::test]
async fn a_hanging_or_failing_coordinator_only_shows_in_the_state() {
    for answer_503 in [false, true] {
        let (url, task) = broken_coordinator(answer_503).await;
        let key = Keypair::generate_ed25519();
        let queue = tempfile::tempdir().unwrap();
        let node = Arc::new(FakeNode {
            relayed: AtomicU64::new(0),
        });
        let (handle, cancel) = runner(&url, &key, queue.path(), node);
        let expected = if answer_503 {
            "unavailable (503)"
        } else {
            "did not answer"
        };
        let s = wait_for(&handle, expected, |s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains(expected))
        })
        .await;
        assert!(!s.online && !s.registered);
        // The node's calls keep returning at once.
        let t = std::time::Instant::now();
        let id = handle.open_session("cam", None);
        handle.close_session(&id, 1);
        assert!(t.elapsed() < Duration::from_millis(50));
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), handle.wait())
            .await
            .expect("runner stops while a request hangs");
        task.abort();
    }
}
