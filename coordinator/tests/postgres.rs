//! Two coordinator instances on one Postgres, as behind a load balancer: whatever one instance learned,
//! the other knows (nodes, nonces, receipts, invites, rate limits), and a receipt sent to both at once is
//! credited once. Needs `STREAMR_TEST_POSTGRES_URL` (SKIP otherwise, FAIL with STREAMR_REQUIRE_EXTERNAL=1).

mod common;

use common::*;
use streamr_coordinator::api::*;
use streamr_coordinator::auth::new_nonce;
use streamr_coordinator::receipt::Receipt;
use streamr_coordinator::server::Clock;
use streamr_coordinator::time::now_ms;

#[tokio::test]
async fn two_instances_share_one_postgres() {
    let Some(tdb) = TestDb::new(Db::Postgres).await else {
        return;
    };
    let (a, cancel_a) = start(&tdb.url, Clock::System).await;
    let (b, cancel_b) = start(&tdb.url, Clock::System).await;
    let (ua, ub) = (a.url(), b.url());

    // Registered on A, heartbeating on B.
    let provider = new_node(&ua).await;
    let receiver = new_node(&ub).await;
    let hb = heartbeat(&ub, &provider, &HeartbeatRequest::default()).await;
    assert_eq!(hb.status, 200, "{}", hb.body);

    // A request replayed to the other instance is refused there: nonces live in the database.
    let body = serde_json::to_vec(&HeartbeatRequest::default()).unwrap();
    let (ts, nonce) = (now_ms(), new_nonce());
    let path = "/api/v1/nodes/heartbeat";
    let first = raw(
        &ua,
        "POST",
        path,
        &body,
        Some((&provider, ts, nonce.clone())),
        &[],
    )
    .await;
    assert_eq!(first.status, 200);
    let replay = raw(&ub, "POST", path, &body, Some((&provider, ts, nonce)), &[]).await;
    assert_eq!((replay.status, replay.code()), (401, "replayed_nonce"));

    // The same receipts sent to both instances at the same moment, many times over: each byte once.
    let start_ms = now_ms() as u64 - 600_000;
    let mut expected = 0;
    for counter in 1..=10u64 {
        let bytes = counter * 10_000_000;
        expected = bytes;
        let r = Receipt {
            stream: "cam".into(),
            provider: provider.public().to_peer_id(),
            receiver: receiver.public().to_peer_id(),
            bytes,
            frames: counter,
            window_start_ms: start_ms,
            window_end_ms: now_ms() as u64,
            counter,
        }
        .sign(&receiver);
        let req = HeartbeatRequest {
            receipts: vec![r],
            ..Default::default()
        };
        let (x, y) = tokio::join!(
            heartbeat(&ua, &provider, &req),
            heartbeat(&ub, &provider, &req)
        );
        let x: HeartbeatResponse = x.parse();
        let y: HeartbeatResponse = y.parse();
        assert_eq!(x.receipts.accepted + y.receipts.accepted, 1, "{x:?} {y:?}");
    }
    assert_eq!(node_info(&ua, &provider).await.verified_bytes, expected);
    assert_eq!(node_info(&ub, &provider).await.verified_bytes, expected);
    let dup_a = metric(
        &ua,
        "coordinator_rejected_receipts_total{reason=\"duplicate\"}",
    )
    .await;
    let dup_b = metric(
        &ub,
        "coordinator_rejected_receipts_total{reason=\"duplicate\"}",
    )
    .await;
    assert_eq!(dup_a + dup_b, 10);

    // An invite stored through A is read through B; the hourly limit counts across both.
    let created: InviteCreated = signed(
        &ua,
        "POST",
        "/api/v1/invites",
        &provider,
        &InviteRequest {
            invite: "hello".into(),
        },
    )
    .await
    .parse();
    let got: Invite = raw(
        &ub,
        "GET",
        &format!("/api/v1/invites/{}", created.code),
        b"",
        None,
        &[],
    )
    .await
    .parse();
    assert_eq!(got.invite, "hello");
    let mut last = 0;
    for i in 0..20 {
        let base = if i % 2 == 0 { &ua } else { &ub };
        last = signed(
            base,
            "POST",
            "/api/v1/invites",
            &provider,
            &InviteRequest { invite: "x".into() },
        )
        .await
        .status;
    }
    assert_eq!(
        last, 429,
        "the 21st invite in an hour is refused, whichever instance takes it"
    );

    // Either instance lists the stream the other heard about.
    heartbeat(
        &ua,
        &receiver,
        &HeartbeatRequest {
            streams_published: vec![PublishedStream {
                name: "live1".into(),
                started_at_ms: now_ms(),
                bitrate_kbps: 3000,
                players: 0,
            }],
            ..Default::default()
        },
    )
    .await;
    let streams: StreamsResponse = raw(&ub, "GET", "/api/v1/streams", b"", None, &[])
        .await
        .parse();
    assert_eq!(streams.streams.len(), 1);
    stop(a, cancel_a).await;
    stop(b, cancel_b).await;
    tdb.cleanup().await;
}
