//! The coordinator's HTTP API end to end, on real SQLite always and on real Postgres when
//! `STREAMR_TEST_POSTGRES_URL` is set: signatures, receipts, claims, offline detection, invites, operator.

mod common;

use common::*;
use libp2p_identity::Keypair;
use streamr_coordinator::api::*;
use streamr_coordinator::auth::{MAX_SKEW_MS, new_nonce};
use streamr_coordinator::receipt::{Receipt, SignedReceipt};
use streamr_coordinator::server::Clock;
use streamr_coordinator::time::{DAY_MS, now_ms};

/// Runs `$scenario(db)` as one test per backend.
macro_rules! on_both {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test]
            async fn sqlite() {
                super::$scenario(super::Db::Sqlite).await;
            }
            #[tokio::test]
            async fn postgres() {
                super::$scenario(super::Db::Postgres).await;
            }
        }
    };
}

on_both!(signatures_are_checked);
on_both!(receipts_are_credited_once_and_bad_ones_refused);
on_both!(claims_without_receipts_earn_nothing);
on_both!(silent_nodes_go_offline_and_their_sessions_close);
on_both!(invites_by_code_expire);
on_both!(operator_endpoints_need_the_token);
on_both!(a_young_network_lists_unconfirmed_nodes_until_enough_are_public);

async fn signatures_are_checked(db: Db) {
    let Some(tdb) = TestDb::new(db).await else {
        return;
    };
    let (srv, cancel) = start(&tdb.url, Clock::System).await;
    let base = srv.url();
    let kp = Keypair::generate_ed25519();
    let body = serde_json::to_vec(&registration(&kp, Reachability::Private)).unwrap();
    let path = "/api/v1/nodes/register";

    let ok = raw(
        &base,
        "POST",
        path,
        &body,
        Some((&kp, now_ms(), new_nonce())),
        &[],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    // Signed by another key under this peer id: the signature header of one, the peer id of the other.
    let other = Keypair::generate_ed25519();
    let mut forged_body = body.clone();
    forged_body.extend_from_slice(b" ");
    let a = raw(&base, "POST", path, &forged_body, None, &[]).await;
    assert_eq!((a.status, a.code()), (401, "unsigned"));
    let signed_other =
        streamr_coordinator::auth::sign_request(&other, "POST", path, &body, now_ms(), new_nonce());
    let pairs = signed_other.to_pairs();
    let a = raw(
        &base,
        "POST",
        path,
        &body,
        None,
        &[
            (pairs[0].0, &kp.public().to_peer_id().to_base58()),
            (pairs[1].0, &pairs[1].1),
            (pairs[2].0, &pairs[2].1),
            (pairs[3].0, &pairs[3].1),
        ],
    )
    .await;
    assert_eq!((a.status, a.code()), (401, "bad_signature"));

    // Body changed after signing.
    let nonce = new_nonce();
    let headers =
        streamr_coordinator::auth::sign_request(&kp, "POST", path, &body, now_ms(), nonce);
    let pairs = headers.to_pairs();
    let extra: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = raw(&base, "POST", path, &forged_body, None, &extra).await;
    assert_eq!((a.status, a.code()), (401, "bad_signature"));

    // Clock skew both ways.
    for skew in [MAX_SKEW_MS + 10_000, -(MAX_SKEW_MS + 10_000)] {
        let a = raw(
            &base,
            "POST",
            path,
            &body,
            Some((&kp, now_ms() + skew, new_nonce())),
            &[],
        )
        .await;
        assert_eq!((a.status, a.code()), (401, "clock_skew"), "{}", a.body);
    }

    // The same nonce twice: the second is a replay, even to a correctly signed request.
    let nonce = new_nonce();
    let ts = now_ms();
    let first = raw(
        &base,
        "POST",
        path,
        &body,
        Some((&kp, ts, nonce.clone())),
        &[],
    )
    .await;
    assert_eq!(first.status, 200);
    let replay = raw(&base, "POST", path, &body, Some((&kp, ts, nonce)), &[]).await;
    assert_eq!((replay.status, replay.code()), (401, "replayed_nonce"));

    assert_eq!(
        metric(
            &base,
            "coordinator_rejected_requests_total{reason=\"bad_signature\"}"
        )
        .await,
        2
    );
    assert_eq!(
        metric(
            &base,
            "coordinator_rejected_requests_total{reason=\"clock_skew\"}"
        )
        .await,
        2
    );
    assert_eq!(
        metric(
            &base,
            "coordinator_rejected_requests_total{reason=\"replayed_nonce\"}"
        )
        .await,
        1
    );
    assert_eq!(
        metric(
            &base,
            "coordinator_rejected_requests_total{reason=\"unsigned\"}"
        )
        .await,
        1
    );
    // A malformed body from a signed request is refused with a message.
    let a = signed(
        &base,
        "POST",
        "/api/v1/nodes/heartbeat",
        &kp,
        &serde_json::json!({"players": "many"}),
    )
    .await;
    assert_eq!((a.status, a.code()), (400, "invalid"));
    stop(srv, cancel).await;
    tdb.cleanup().await;
}

fn receipt(
    receiver: &Keypair,
    provider: &Keypair,
    start: u64,
    counter: u64,
    bytes: u64,
) -> SignedReceipt {
    let now = now_ms() as u64;
    Receipt {
        stream: "cam".into(),
        provider: provider.public().to_peer_id(),
        receiver: receiver.public().to_peer_id(),
        bytes,
        frames: counter * 100,
        window_start_ms: start,
        window_end_ms: now,
        counter,
    }
    .sign(receiver)
}

fn with_receipts(receipts: Vec<SignedReceipt>) -> HeartbeatRequest {
    HeartbeatRequest {
        receipts,
        ..Default::default()
    }
}

async fn receipts_are_credited_once_and_bad_ones_refused(db: Db) {
    let Some(tdb) = TestDb::new(db).await else {
        return;
    };
    let clock = Clock::manual(now_ms());
    let (srv, cancel) = start(&tdb.url, clock.clone()).await;
    let base = srv.url();
    let rate = operator(
        &base,
        "PUT",
        "/api/v1/operator/rate",
        &RateRequest { rate_per_gb: 2.0 },
    )
    .await;
    assert_eq!(rate.status, 200);
    let provider = new_node(&base).await;
    let receiver = new_node(&base).await;
    // 100 s of window: enough for 1.5 GB under the 1 Gbit/s plausibility bound.
    let start_ms = now_ms() as u64 - 100_000;

    let r1 = receipt(&receiver, &provider, start_ms, 1, 1_000_000_000);
    let hb: HeartbeatResponse = heartbeat(&base, &provider, &with_receipts(vec![r1.clone()]))
        .await
        .parse();
    assert_eq!(hb.receipts.accepted, 1);
    assert_eq!(hb.receipts.credited_bytes, 1_000_000_000);
    assert!(
        (hb.earnings.earnings_total - 2.0).abs() < 1e-9,
        "{:?}",
        hb.earnings
    );

    // Replayed (same receipt again), counter going back, forged (provider signs in the receiver's name),
    // another provider's receipt, a receipt to oneself, an unregistered receiver.
    let r3 = receipt(&receiver, &provider, start_ms, 3, 1_200_000_000);
    let back = receipt(&receiver, &provider, start_ms, 2, 1_100_000_000);
    let mut forged = receipt(&receiver, &provider, start_ms, 4, 1_300_000_000);
    forged.signature = forged.receipt.sign(&provider).signature;
    let stranger = Keypair::generate_ed25519();
    let not_mine = receipt(&receiver, &stranger, start_ms, 1, 1000);
    let to_self = receipt(&provider, &provider, start_ms, 1, 1000);
    let unregistered = receipt(&stranger, &provider, start_ms, 1, 1000);
    let hb: HeartbeatResponse = heartbeat(
        &base,
        &provider,
        &with_receipts(vec![
            r1.clone(),
            r3.clone(),
            back,
            forged,
            not_mine,
            to_self,
            unregistered,
        ]),
    )
    .await
    .parse();
    assert_eq!(hb.receipts.accepted, 1, "{:?}", hb.receipts);
    assert_eq!(hb.receipts.credited_bytes, 200_000_000);
    let reasons: Vec<_> = hb
        .receipts
        .rejected
        .iter()
        .map(|r| (r.index, r.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            (0, ReceiptRejection::Duplicate),
            (2, ReceiptRejection::CounterWentBack),
            (3, ReceiptRejection::Forged),
            (4, ReceiptRejection::NotProvider),
            (5, ReceiptRejection::SelfReceipt),
            (6, ReceiptRejection::ReceiverUnregistered),
        ]
    );

    // The receiver goes offline (3 intervals without a heartbeat) while the provider keeps going.
    clock.advance_ms(3 * INTERVAL_SECS as i64 * 1000 + 1000);
    let r5 = receipt(&receiver, &provider, start_ms, 5, 1_500_000_000);
    let hb: HeartbeatResponse = heartbeat(&base, &provider, &with_receipts(vec![r5.clone()]))
        .await
        .parse();
    assert_eq!(
        hb.receipts.rejected[0].reason,
        ReceiptRejection::ReceiverOffline
    );
    // Back online: the same receipt now counts, for the bytes not yet credited.
    let back_online = heartbeat(&base, &receiver, &HeartbeatRequest::default()).await;
    assert_eq!(back_online.status, 200);
    let hb: HeartbeatResponse = heartbeat(&base, &provider, &with_receipts(vec![r5]))
        .await
        .parse();
    assert_eq!(hb.receipts.credited_bytes, 300_000_000);

    let info = node_info(&base, &provider).await;
    assert_eq!(info.verified_bytes, 1_500_000_000);
    assert!((info.earnings - 3.0).abs() < 1e-9, "{info:?}");
    assert!(info.online);

    for (reason, n) in [
        ("duplicate", 1),
        ("counter_went_back", 1),
        ("forged", 1),
        ("not_provider", 1),
        ("self_receipt", 1),
        ("receiver_unregistered", 1),
        ("receiver_offline", 1),
    ] {
        let line = format!("coordinator_rejected_receipts_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&base, &line).await, n, "{reason}");
    }
    assert_eq!(
        metric(&base, "coordinator_credited_bytes_total").await,
        1_500_000_000
    );
    // The earnings report has today's line.
    let report: EarningsReport = raw(
        &base,
        "GET",
        &format!("/api/v1/nodes/{}/earnings", provider.public().to_peer_id()),
        b"",
        None,
        &[],
    )
    .await
    .parse();
    assert_eq!(report.days.len(), 1);
    assert_eq!(report.days[0].verified_bytes, 1_500_000_000);
    assert!((report.days[0].rate_per_gb - 2.0).abs() < 1e-9);
    stop(srv, cancel).await;
    tdb.cleanup().await;
}

async fn claims_without_receipts_earn_nothing(db: Db) {
    let Some(tdb) = TestDb::new(db).await else {
        return;
    };
    let (srv, cancel) = start(&tdb.url, Clock::System).await;
    let base = srv.url();
    operator(
        &base,
        "PUT",
        "/api/v1/operator/rate",
        &RateRequest { rate_per_gb: 5.0 },
    )
    .await;
    let liar = new_node(&base).await;
    for _ in 0..3 {
        let a = heartbeat(
            &base,
            &liar,
            &HeartbeatRequest {
                bytes_relayed: 5_000_000_000,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(a.status, 200);
    }
    let info = node_info(&base, &liar).await;
    assert_eq!(info.claimed_bytes, 15_000_000_000);
    assert_eq!(info.verified_bytes, 0);
    assert_eq!(info.earnings, 0.0);
    let trust: TrustReport = raw(
        &base,
        "GET",
        &format!("/api/v1/nodes/{}/trust", liar.public().to_peer_id()),
        b"",
        None,
        &[],
    )
    .await
    .parse();
    assert!(trust.trust.score <= 70, "{:?}", trust.trust);
    assert_eq!(trust.trust.components.receipt_backing, 0.0);
    assert!(
        trust
            .trust
            .reasons
            .iter()
            .any(|r| r.contains("backed by receivers")),
        "{:?}",
        trust.trust.reasons
    );
    assert_eq!(trust.trust.score, info.trust_score);
    stop(srv, cancel).await;
    tdb.cleanup().await;
}

/// Registers `kp` with `reachability` and returns the bootstrap peers of the answer.
async fn register_as(base: &str, kp: &Keypair, reachability: Reachability) -> Vec<BootstrapPeer> {
    let a = signed(
        base,
        "POST",
        "/api/v1/nodes/register",
        kp,
        &registration(kp, reachability),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.parse::<RegisterResponse>().bootstrap_peers
}

async fn a_young_network_lists_unconfirmed_nodes_until_enough_are_public(db: Db) {
    let Some(tdb) = TestDb::new(db).await else {
        return;
    };
    let (srv, cancel) = start(&tdb.url, Clock::System).await;
    let base = srv.url();
    // The first node has no one to join through; the second gets it by the address it listens on.
    let first = Keypair::generate_ed25519();
    assert!(
        register_as(&base, &first, Reachability::Unknown)
            .await
            .is_empty()
    );
    let second = Keypair::generate_ed25519();
    let peers = register_as(&base, &second, Reachability::Private).await;
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].peer_id, first.public().to_peer_id());
    assert!(!peers[0].confirmed);
    assert_eq!(
        peers[0].addrs,
        registration(&first, Reachability::Unknown).listen_addrs
    );
    // Public nodes come first, with their confirmed addresses.
    let mut public = Vec::new();
    for _ in 0..MIN_PUBLIC_BOOTSTRAP_PEERS - 1 {
        public.push(new_node(&base).await);
    }
    let third = Keypair::generate_ed25519();
    let peers = register_as(&base, &third, Reachability::Unknown).await;
    assert_eq!(peers.len(), MIN_PUBLIC_BOOTSTRAP_PEERS - 1 + 2, "{peers:?}");
    let confirmed = peers.iter().take_while(|p| p.confirmed).count();
    assert_eq!(confirmed, MIN_PUBLIC_BOOTSTRAP_PEERS - 1, "{peers:?}");
    let pub_reg = registration(&public[0], Reachability::Public);
    assert!(
        peers[..confirmed]
            .iter()
            .all(|p| p.addrs == pub_reg.external_addrs)
    );
    // Enough public nodes: only they are listed.
    public.push(new_node(&base).await);
    let peers = register_as(&base, &Keypair::generate_ed25519(), Reachability::Unknown).await;
    assert_eq!(peers.len(), MIN_PUBLIC_BOOTSTRAP_PEERS, "{peers:?}");
    assert!(peers.iter().all(|p| p.confirmed), "{peers:?}");
    let ids: Vec<_> = public.iter().map(|k| k.public().to_peer_id()).collect();
    assert!(peers.iter().all(|p| ids.contains(&p.peer_id)), "{peers:?}");
    stop(srv, cancel).await;
    tdb.cleanup().await;
}

async fn silent_nodes_go_offline_and_their_sessions_close(db: Db) {
    let Some(tdb) = TestDb::new(db).await else {
        return;
    };
    let clock = Clock::manual(now_ms());
    let (srv, cancel) = start(&tdb.url, clock.clone()).await;
    let base = srv.url();
    let origin = new_node(&base).await;
    let viewer = new_node(&base).await;
    let hb = heartbeat(
        &base,
        &origin,
        &HeartbeatRequest {
            streams_published: vec![PublishedStream {
                name: "alice".into(),
                started_at_ms: now_ms(),
                bitrate_kbps: 2500,
                players: 1,
            }],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(hb.status, 200);
    let session_id = hex::encode(rand::random::<[u8; 16]>());
    let origin_id = origin.public().to_peer_id();
    let open = SessionOpenRequest {
        session_id: session_id.clone(),
        stream: play_name("alice", &origin_id),
        origin_peer: None,
        opened_at_ms: now_ms(),
    };
    let a: SessionResponse = signed(&base, "POST", "/api/v1/sessions/open", &viewer, &open)
        .await
        .parse();
    assert_eq!(a.state, "open");
    // Idempotent: a queued open delivered twice is one session.
    let again: SessionResponse = signed(&base, "POST", "/api/v1/sessions/open", &viewer, &open)
        .await
        .parse();
    assert_eq!(again.state, "open");
    // Someone else cannot close it.
    let close = SessionCloseRequest {
        session_id: session_id.clone(),
        bytes_received: 10,
        closed_at_ms: now_ms(),
    };
    let a = signed(&base, "POST", "/api/v1/sessions/close", &origin, &close).await;
    assert_eq!((a.status, a.code()), (403, "not_your_session"));

    let streams: StreamsResponse = raw(&base, "GET", "/api/v1/streams", b"", None, &[])
        .await
        .parse();
    assert_eq!(streams.streams.len(), 1);
    assert_eq!(
        streams.streams[0].viewers, 2,
        "origin's player + one session"
    );
    assert_eq!(streams.streams[0].play_name, play_name("alice", &origin_id));

    // Two intervals of silence: still online. The origin keeps heartbeating; the viewer stops.
    clock.advance_ms(2 * INTERVAL_SECS as i64 * 1000);
    assert_eq!(srv.service.sweep().await.unwrap(), 0);
    assert!(node_info(&base, &viewer).await.online);
    heartbeat(
        &base,
        &origin,
        &HeartbeatRequest {
            streams_published: vec![PublishedStream {
                name: "alice".into(),
                started_at_ms: now_ms(),
                bitrate_kbps: 2500,
                players: 1,
            }],
            ..Default::default()
        },
    )
    .await;
    // The third interval passes: offline, and the sweep closes the viewer's session.
    clock.advance_ms(INTERVAL_SECS as i64 * 1000 + 1);
    assert!(!node_info(&base, &viewer).await.online);
    assert_eq!(srv.service.sweep().await.unwrap(), 1);
    assert_eq!(
        metric(&base, "coordinator_sessions_closed_offline_total").await,
        1
    );
    let streams: StreamsResponse = raw(&base, "GET", "/api/v1/streams", b"", None, &[])
        .await
        .parse();
    assert_eq!(
        streams.streams[0].viewers, 1,
        "the closed session no longer counts"
    );
    // The viewer's queued close arrives later with its real totals.
    let a: SessionResponse = signed(&base, "POST", "/api/v1/sessions/close", &viewer, &close)
        .await
        .parse();
    assert_eq!(a.state, "closed");
    // The origin goes silent too: its stream leaves the list.
    clock.advance_ms(3 * INTERVAL_SECS as i64 * 1000 + 1);
    let streams: StreamsResponse = raw(&base, "GET", "/api/v1/streams", b"", None, &[])
        .await
        .parse();
    assert!(streams.streams.is_empty());
    stop(srv, cancel).await;
    tdb.cleanup().await;
}

async fn invites_by_code_expire(db: Db) {
    let Some(tdb) = TestDb::new(db).await else {
        return;
    };
    let clock = Clock::manual(now_ms());
    let (srv, cancel) = start(&tdb.url, clock.clone()).await;
    let base = srv.url();
    let node = new_node(&base).await;
    let body = format!("streamr-join:{}", "x".repeat(1500));
    let created: InviteCreated = signed(
        &base,
        "POST",
        "/api/v1/invites",
        &node,
        &InviteRequest {
            invite: body.clone(),
        },
    )
    .await
    .parse();
    assert_eq!(created.code.len(), INVITE_CODE_LEN);
    assert!(created.code.bytes().all(|b| INVITE_ALPHABET.contains(&b)));
    let typed = format!("{}-{}", &created.code[..5], &created.code[5..]).to_lowercase();
    let got: Invite = raw(
        &base,
        "GET",
        &format!("/api/v1/invites/{typed}"),
        b"",
        None,
        &[],
    )
    .await
    .parse();
    assert_eq!(got.invite, body);
    assert_eq!(got.created_by, node.public().to_peer_id());

    let too_big = signed(
        &base,
        "POST",
        "/api/v1/invites",
        &node,
        &InviteRequest {
            invite: "x".repeat(MAX_INVITE + 1),
        },
    )
    .await;
    assert_eq!(too_big.status, 400);
    let unknown = raw(&base, "GET", "/api/v1/invites/0000000000", b"", None, &[]).await;
    assert_eq!((unknown.status, unknown.code()), (404, "unknown_invite"));
    let garbage = raw(&base, "GET", "/api/v1/invites/short", b"", None, &[]).await;
    assert_eq!(garbage.status, 400);

    // Rate limit: 20 per hour per node (1 made above).
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(
            signed(
                &base,
                "POST",
                "/api/v1/invites",
                &node,
                &InviteRequest { invite: "j".into() },
            )
            .await
            .status,
        );
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 19);
    assert_eq!(statuses.last(), Some(&429));

    clock.advance_ms(DAY_MS + 1);
    let expired = raw(
        &base,
        "GET",
        &format!("/api/v1/invites/{}", created.code),
        b"",
        None,
        &[],
    )
    .await;
    assert_eq!((expired.status, expired.code()), (410, "invite_expired"));
    stop(srv, cancel).await;
    tdb.cleanup().await;
}

async fn operator_endpoints_need_the_token(db: Db) {
    let Some(tdb) = TestDb::new(db).await else {
        return;
    };
    let (srv, cancel) = start(&tdb.url, Clock::System).await;
    let base = srv.url();
    let node = new_node(&base).await;
    let no_token = raw(
        &base,
        "PUT",
        "/api/v1/operator/rate",
        br#"{"rate_per_gb":1}"#,
        None,
        &[],
    )
    .await;
    assert_eq!(
        (no_token.status, no_token.code()),
        (401, "operator_unauthorized")
    );
    let wrong = raw(
        &base,
        "PUT",
        "/api/v1/operator/rate",
        br#"{"rate_per_gb":1}"#,
        None,
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    // A node's signature is not an operator token.
    let as_node = signed(&base, "GET", "/api/v1/operator/assignments", &node, &()).await;
    assert_eq!(as_node.status, 401);
    assert_eq!(
        metric(
            &base,
            "coordinator_rejected_requests_total{reason=\"operator_unauthorized\"}"
        )
        .await,
        3
    );

    let bad_url = operator(&base, "POST", "/api/v1/operator/assignments", &serde_json::json!({
        "node": node.public().to_peer_id().to_base58(), "stream_name": "cam", "rtmp_url": "http://example.org/x"
    })).await;
    assert_eq!(bad_url.status, 400);
    let created: OperatorAssignment = operator(
        &base,
        "POST",
        "/api/v1/operator/assignments",
        &AssignmentRequest {
            node: node.public().to_peer_id(),
            stream_name: "cam".into(),
            rtmp_url: "rtmp://203.0.113.5/live/cam".into(),
        },
    )
    .await
    .parse();
    let hb: HeartbeatResponse = heartbeat(&base, &node, &HeartbeatRequest::default())
        .await
        .parse();
    assert_eq!(hb.assignments.len(), 1);
    assert_eq!(hb.assignments[0].rtmp_url, "rtmp://203.0.113.5/live/cam");
    let v = operator(
        &base,
        "PUT",
        "/api/v1/operator/version",
        &VersionNotice {
            version: "0.2.0".into(),
            url: None,
            notes: Some("faster".into()),
        },
    )
    .await;
    assert_eq!(v.status, 200);
    let stopped = operator(
        &base,
        "DELETE",
        &format!("/api/v1/operator/assignments/{}", created.id),
        &(),
    )
    .await;
    assert_eq!(stopped.status, 200);
    let hb: HeartbeatResponse = heartbeat(&base, &node, &HeartbeatRequest::default())
        .await
        .parse();
    assert!(
        hb.assignments.is_empty(),
        "stopped assignments leave the set"
    );
    assert_eq!(hb.latest_version.unwrap().version, "0.2.0");
    stop(srv, cancel).await;

    // Without --operator-token the endpoints are off.
    let cancel = tokio_util::sync::CancellationToken::new();
    let srv = streamr_coordinator::server::start(
        streamr_coordinator::server::ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: tdb.url.clone(),
            operator_token: None,
            ..Default::default()
        },
        cancel.clone(),
    )
    .await
    .unwrap();
    let off = operator(&srv.url(), "GET", "/api/v1/operator/rate", &()).await;
    assert_eq!((off.status, off.code()), (403, "operator_disabled"));
    stop(srv, cancel).await;
    tdb.cleanup().await;
}
