//! The RTMP edge's limits against hostile clients, with an honest publisher and player on the same node
//! all along: deeply nested AMF (which used to overflow the stack and abort the whole node), oversized
//! messages, slow-loris setups, connection floods from one address and `createStream` floods. Each attack
//! ends only its own sessions, is counted in `/metrics`, and the honest player keeps its frames.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The limit counter `limit` in `/metrics`.
fn limit_hits(node: &TestNode, limit: &str) -> u64 {
    let m = http_get(node.http, "/metrics").1;
    metric(
        &m,
        &format!(r#"streamr_rtmp_limit_hits_total{{limit="{limit}"}}"#),
    )
}

/// Waits (up to 5 s) until the limit counter `limit` reaches `n`: a session is counted just after its
/// socket closes, so the attacker may see the close first.
async fn assert_limit_hits(node: &TestNode, limit: &str, n: u64) {
    let ok = wait_until(Duration::from_secs(5), || limit_hits(node, limit) >= n).await;
    assert!(
        ok,
        "limit {limit:?} counted {} times, expected at least {n}",
        limit_hits(node, limit)
    );
}

#[tokio::test]
async fn deeply_nested_amf_right_after_the_handshake_ends_one_session_not_the_node() {
    if !have("ffmpeg", "honest publisher and player") {
        return;
    }
    let clip = clip(12, 60);
    let published = video_packets(&clip);
    let mut node = TestNode::start(&[]).await;
    let (player, publisher) = honest_stream(&node, "alice", &clip, None).await;
    let rss_before = node.rss_kib();

    // The message from the issue: right after the handshake, before any `connect`, an AMF0 command whose
    // command object nests 200,000 objects (1.4 MB), in 128-byte chunks (the initial chunk size).
    let (mut evil, _) = rtmp_handshake(node.rtmp).await;
    let payload = amf0_nested_command("connect", 200_000);
    assert!(payload.len() > 1_400_000);
    let _ = evil.write_all(&rtmp_chunks(3, 20, 0, &payload, 128)).await;
    assert!(
        rtmp_closed_within(&mut evil, Duration::from_secs(10)).await,
        "the hostile session was not closed"
    );
    // A node that aborts does so within moments of the message.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(node.process.alive(), "the node died:\n{}", node.log_text());

    // The same nesting in a message small enough for a command (100 levels): refused for its depth.
    let (mut evil, _) = rtmp_handshake(node.rtmp).await;
    let payload = amf0_nested_command("connect", 100);
    evil.write_all(&rtmp_chunks(3, 20, 0, &payload, 128))
        .await
        .unwrap();
    assert!(rtmp_closed_within(&mut evil, Duration::from_secs(10)).await);
    // The 1.4 MB command is over the size limit for commands.
    assert_limit_hits(&node, "message_size", 1).await;
    assert_limit_hits(&node, "amf_depth", 1).await;

    // An authorised publisher may send large messages (video frames): the same nesting in a 1.4 MB data
    // message (`@setDataFrame`, type 18) is refused for its depth.
    let mut evil = rtmp_connected(node.rtmp, Some("evil")).await;
    let mut data = vec![0x02, 0x00, 0x0d];
    data.extend_from_slice(b"@setDataFrame");
    data.extend_from_slice(&amf0_nested_command("onMetaData", 200_000)[..]);
    evil.write_all(&rtmp_chunks(4, 18, 1, &data, 128))
        .await
        .unwrap();
    assert!(rtmp_closed_within(&mut evil, Duration::from_secs(10)).await);
    assert_limit_hits(&node, "amf_depth", 2).await;

    assert_honest_served(&mut node, player, publisher, published, rss_before).await;
}

#[tokio::test]
async fn slow_setups_are_closed_at_one_deadline_however_the_bytes_trickle() {
    if !have("ffmpeg", "honest publisher and player") {
        return;
    }
    let clip = clip(20, 60);
    let published = video_packets(&clip);
    let mut node = TestNode::start(&[]).await;
    let (player, publisher) = honest_stream(&node, "alice", &clip, None).await;
    let rss_before = node.rss_kib();
    let started = tokio::time::Instant::now();

    // One byte of the handshake every 2 s: each byte used to restart the 30 s idle timeout.
    let mut trickle = tokio::net::TcpStream::connect(node.rtmp).await.unwrap();
    // A client that connects properly, then only pings: it never publishes or plays.
    let mut idler = rtmp_connected(node.rtmp, None).await;
    let ping = rtmp_chunks(2, 4, 0, &[0, 6, 0, 0, 0, 1], 128);
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let (mut t_closed, mut i_closed) = (false, false);
        while !(t_closed && i_closed) {
            t_closed = t_closed || trickle.write_all(&[3]).await.is_err();
            i_closed = i_closed || idler.write_all(&ping).await.is_err();
            if !t_closed {
                t_closed = rtmp_closed_within(&mut trickle, Duration::from_secs(1)).await;
            }
            if !i_closed {
                i_closed = rtmp_closed_within(&mut idler, Duration::from_secs(1)).await;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "sessions that never publish or play were still open after 20 s"
    );
    // The deadline is 10 s from accept.
    assert!(started.elapsed() >= Duration::from_secs(9));
    assert_limit_hits(&node, "setup_deadline", 2).await;
    assert_honest_served(&mut node, player, publisher, published, rss_before).await;
}

#[tokio::test]
async fn a_create_stream_flood_ends_its_connection() {
    if !have("ffmpeg", "honest publisher and player") {
        return;
    }
    let clip = clip(12, 60);
    let published = video_packets(&clip);
    let mut node = TestNode::start(&[]).await;
    let (player, publisher) = honest_stream(&node, "alice", &clip, None).await;
    let rss_before = node.rss_kib();

    let mut evil = rtmp_connected(node.rtmp, None).await;
    let mut flood = Vec::new();
    for i in 0..100_000 {
        flood.extend_from_slice(&rtmp_command(
            0,
            "createStream",
            f64::from(i + 2),
            vec![rml_amf0::Amf0Value::Null],
        ));
    }
    let _ = evil.write_all(&flood).await;
    assert!(
        rtmp_closed_within(&mut evil, Duration::from_secs(10)).await,
        "a connection creating 100,000 streams was not closed"
    );
    assert_limit_hits(&node, "streams_per_connection", 1).await;
    assert_honest_served(&mut node, player, publisher, published, rss_before).await;
}

#[tokio::test]
async fn one_address_cannot_take_every_session_and_this_machine_keeps_its_share() {
    if !have("ffmpeg", "honest publisher and player") {
        return;
    }
    let Some(lan) = lan_ipv4() else {
        return;
    };
    let clip = clip(16, 60);
    let published = video_packets(&clip);
    // Listening beyond loopback, as for friends on the LAN: publishing needs the key.
    let mut node = TestNode::start(&["--rtmp-listen", "0.0.0.0:0"]).await;
    let key = node
        .status()
        .publish_key
        .expect("the status shows the publish key");
    let (player, publisher) = honest_stream(&node, "alice", &clip, Some(&key)).await;
    let rss_before = node.rss_kib();

    // 40 connections from one LAN address that send nothing.
    let target = std::net::SocketAddr::from((lan, node.rtmp.port()));
    let mut held = Vec::new();
    for _ in 0..40 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind((lan, 0).into()).unwrap();
        held.push(sock.connect(target).await.unwrap());
    }
    // The ones beyond the cap are closed at once, before any byte is read (all looked at together, well
    // within the 10 s setup deadline that closes the others later).
    let closed = futures::future::join_all(
        held.iter_mut()
            .map(|s| rtmp_closed_within(s, Duration::from_millis(500))),
    )
    .await;
    let closed_at_once = closed.iter().filter(|c| **c).count();
    assert_eq!(
        closed_at_once, 8,
        "32 sessions per address are allowed, the other 8 refused"
    );
    assert_limit_hits(&node, "per_address", 8).await;
    // This machine is not limited per address: a second honest player from loopback still plays.
    let late = play_with(&node.url("alice"), 5, 30, Some(30))
        .await
        .unwrap();
    assert!(
        late.video() > 0,
        "a local player was refused: {}",
        late.stderr
    );
    drop(held);
    assert_honest_served(&mut node, player, publisher, published, rss_before).await;
}

#[tokio::test]
async fn declared_message_lengths_buy_no_memory_before_a_publish() {
    if !have("ffmpeg", "honest publisher and player") {
        return;
    }
    let clip = clip(12, 60);
    let published = video_packets(&clip);
    let mut node = TestNode::start(&[]).await;
    let (player, publisher) = honest_stream(&node, "alice", &clip, None).await;
    let rss_before = node.rss_kib();

    // 100 connections, each announcing a 16 MiB message in one huge chunk and sending 1 MiB of it: rml_rtmp
    // reserved the 16 MiB and kept every byte that arrived (100 MiB here) before any key was checked.
    let mut prefix = rtmp_chunks(2, 1, 0, &0x7fff_ffffu32.to_be_bytes(), 128);
    prefix.extend_from_slice(&[0x06, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0]);
    let body = vec![0x17u8; 1 << 20];
    let mut attackers = Vec::new();
    for _ in 0..100 {
        let (mut s, _) = rtmp_handshake(node.rtmp).await;
        let (prefix, body) = (prefix.clone(), body.clone());
        attackers.push(tokio::spawn(async move {
            let _ = s.write_all(&prefix).await;
            let _ = s.write_all(&body).await;
            rtmp_closed_within(&mut s, Duration::from_secs(10)).await
        }));
    }
    for a in attackers {
        assert!(
            a.await.unwrap(),
            "a connection announcing 16 MiB was kept open"
        );
    }
    assert_limit_hits(&node, "message_size", 100).await;
    assert_honest_served(&mut node, player, publisher, published, rss_before).await;
}
