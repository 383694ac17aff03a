//! Pull and push relays against hostile or broken upstream servers, with an honest publisher and player on
//! the node all along: an upstream that answers with AMF nested 200,000 deep (it used to abort the node), one
//! whose bytes made rml_rtmp's chunk decoder panic in the push relay (the panic stopped the node), one that
//! goes silent after accepting a play (the relay hung forever), and one that echoes the stream key in its
//! refusal (keys were logged in full). Each relay failure is counted and retried; the node keeps serving.

mod common;

use common::*;
use rml_amf0::Amf0Value;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the fake upstream does once the client's handshake is done.
#[derive(Clone, Copy)]
enum Upstream {
    /// Answers `connect` with a `_result` whose argument nests 200,000 objects.
    NestedResult,
    /// Accepts a publish, then sends a chunk header that starts a shorter message inside a longer one.
    BrokenChunks,
    /// Accepts a play, then sends nothing and reads nothing.
    SilentAfterPlay,
    /// Refuses the play with a status that repeats the stream key.
    EchoesKey,
}

/// A fake RTMP server on loopback: counts connections, handles each as `script` says.
async fn fake_upstream(script: Upstream) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let n = connections.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s, script));
        }
    });
    (port, connections)
}

async fn server_handshake(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut hs = Handshake::new(PeerType::Server);
    let mut buf = vec![0u8; 8192];
    loop {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        match hs.process_bytes(&buf[..n]).ok()? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes).await.ok()?
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                s.write_all(&response_bytes).await.ok()?;
                return Some(remaining_bytes);
            }
        }
    }
}

fn status(stream_id: u32, level: &str, code: &str, description: &str) -> Vec<u8> {
    let mut info = std::collections::HashMap::new();
    for (k, v) in [
        ("level", level),
        ("code", code),
        ("description", description),
    ] {
        info.insert(k.to_string(), Amf0Value::Utf8String(v.into()));
    }
    rtmp_command(
        stream_id,
        "onStatus",
        0.0,
        vec![Amf0Value::Null, Amf0Value::Object(info)],
    )
}

fn result(transaction: f64, value: Amf0Value) -> Vec<u8> {
    rtmp_command(0, "_result", transaction, vec![Amf0Value::Null, value])
}

/// Reads until `needle` has arrived (the client's commands, which our client numbers 1, 2, 3...).
async fn wait_for(s: &mut TcpStream, seen: &mut Vec<u8>, needle: &[u8]) -> Option<()> {
    let mut buf = vec![0u8; 65536];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Some(())
}

async fn serve(mut s: TcpStream, script: Upstream) -> Option<()> {
    let mut seen = server_handshake(&mut s).await?;
    wait_for(&mut s, &mut seen, b"connect").await?;
    if let Upstream::NestedResult = script {
        let mut body = vec![0x02, 0x00, 0x07];
        body.extend_from_slice(b"_result");
        body.push(0x00);
        body.extend_from_slice(&1f64.to_be_bytes());
        // The nested objects of `amf0_nested_command`, without its name (4 bytes) and transaction (9 bytes).
        body.extend_from_slice(&amf0_nested_command("x", 200_000)[13..]);
        s.write_all(&rtmp_chunks(3, 20, 0, &body, 128)).await.ok()?;
        return hold(s).await;
    }
    s.write_all(&result(1.0, Amf0Value::Null)).await.ok()?;
    match script {
        Upstream::BrokenChunks => {
            // Our client publishes: connect=1, releaseStream=2, FCPublish=3, createStream=4, publish=5.
            wait_for(&mut s, &mut seen, b"createStream").await?;
            s.write_all(&result(4.0, Amf0Value::Number(1.0)))
                .await
                .ok()?;
            wait_for(&mut s, &mut seen, b"publish").await?;
            s.write_all(&status(1, "status", "NetStream.Publish.Start", "go"))
                .await
                .ok()?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            // A message of 200 bytes, its first 128, then a new header for a 10-byte message on the same
            // chunk stream: rml_rtmp computed 10 - 128.
            let mut b = vec![0x04u8, 0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0];
            b.extend_from_slice(&[0u8; 128]);
            b.extend_from_slice(&[0x04, 0, 0, 0, 0, 0, 10, 9, 1, 0, 0, 0]);
            b.extend_from_slice(&[0u8; 10]);
            s.write_all(&b).await.ok()?;
        }
        Upstream::SilentAfterPlay | Upstream::EchoesKey => {
            // Our client plays: connect=1, createStream=2, play=3.
            wait_for(&mut s, &mut seen, b"createStream").await?;
            s.write_all(&result(2.0, Amf0Value::Number(1.0)))
                .await
                .ok()?;
            wait_for(&mut s, &mut seen, b"play").await?;
            if let Upstream::EchoesKey = script {
                let text = String::from_utf8_lossy(&seen);
                let key = text
                    .split("cam42")
                    .nth(1)
                    .map(|rest| {
                        format!(
                            "cam42{}",
                            &rest[..rest.find('\0').unwrap_or(rest.len()).min(40)]
                        )
                    })
                    .unwrap_or_default();
                s.write_all(&status(
                    1,
                    "error",
                    "NetStream.Play.StreamNotFound",
                    &format!("no stream {key} here"),
                ))
                .await
                .ok()?;
            } else {
                s.write_all(&status(1, "status", "NetStream.Play.Start", "go"))
                    .await
                    .ok()?;
                // Silence: neither a byte out nor a byte read, the socket open.
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
        }
        Upstream::NestedResult => {}
    }
    hold(s).await
}

/// Keeps the connection open, reading and dropping what comes, until the client closes it.
async fn hold(mut s: TcpStream) -> Option<()> {
    let mut buf = vec![0u8; 65536];
    while s.read(&mut buf).await.ok()? > 0 {}
    Some(())
}

fn relay_failures(node: &TestNode, reason: &str) -> u64 {
    let m = http_get(node.http, "/metrics").1;
    metric(
        &m,
        &format!(r#"streamr_rtmp_relay_failures_total{{reason="{reason}"}}"#),
    )
}

/// Fails at once if the node exits within `limit` (an abort happens within moments of the bytes).
async fn assert_stays_up(node: &mut TestNode, limit: Duration) {
    tokio::time::sleep(limit).await;
    assert!(node.process.alive(), "the node died:\n{}", node.log_text());
}

#[tokio::test]
async fn an_upstream_sending_nested_amf_fails_the_pull_not_the_node() {
    if !have("ffmpeg", "honest publisher and player") {
        return;
    }
    let _serial = serial().await;
    let clip = clip(12, 60);
    let published = video_packets(&clip);
    let (port, connections) = fake_upstream(Upstream::NestedResult).await;
    let mut node =
        TestNode::start(&["--pull", &format!("evil=rtmp://127.0.0.1:{port}/live/src")]).await;
    let (player, publisher) = honest_stream(&node, "alice", &clip, None).await;
    let rss_before = node.rss_kib();
    assert!(
        wait_until(Duration::from_secs(20), || relay_failures(&node, "limit")
            >= 1)
        .await,
        "the nesting was not refused and counted:\n{}",
        node.log_text()
    );
    assert_stays_up(&mut node, Duration::from_secs(1)).await;
    // The pull keeps trying (with backoff).
    assert!(
        wait_until(Duration::from_secs(10), || connections
            .load(Ordering::SeqCst)
            >= 2)
        .await
    );
    assert_honest_served(&mut node, player, publisher, published, rss_before).await;
}

#[tokio::test]
async fn an_upstream_breaking_the_chunk_stream_fails_the_push_not_the_node() {
    if !have("ffmpeg", "honest publisher and player") {
        return;
    }
    let _serial = serial().await;
    let clip = clip(12, 60);
    let published = video_packets(&clip);
    let (port, connections) = fake_upstream(Upstream::BrokenChunks).await;
    let mut node =
        TestNode::start(&["--push", &format!("alice=rtmp://127.0.0.1:{port}/live/dst")]).await;
    // The push connects once "alice" is live: the honest stream is what it pushes.
    let (player, publisher) = honest_stream(&node, "alice", &clip, None).await;
    let rss_before = node.rss_kib();
    assert!(
        wait_until(Duration::from_secs(20), || relay_failures(&node, "other")
            >= 1)
        .await,
        "the broken chunk stream was not refused and counted:\n{}",
        node.log_text()
    );
    assert_stays_up(&mut node, Duration::from_secs(1)).await;
    assert!(
        wait_until(Duration::from_secs(10), || connections
            .load(Ordering::SeqCst)
            >= 2)
        .await
    );
    assert_honest_served(&mut node, player, publisher, published, rss_before).await;
}

#[tokio::test]
async fn a_silent_upstream_is_given_up_and_the_pull_reconnects() {
    if !have("ffmpeg", "honest publisher and player") {
        return;
    }
    let _serial = serial().await;
    let clip = clip(30, 60);
    let published = video_packets(&clip);
    let (port, connections) = fake_upstream(Upstream::SilentAfterPlay).await;
    let mut node =
        TestNode::start(&["--pull", &format!("quiet=rtmp://127.0.0.1:{port}/live/src")]).await;
    let (player, publisher) = honest_stream(&node, "alice", &clip, None).await;
    let rss_before = node.rss_kib();
    // Silence for 15 s (with a ping after 5 s) ends the attempt; the retry connects again.
    assert!(
        wait_until(Duration::from_secs(30), || connections
            .load(Ordering::SeqCst)
            >= 2)
        .await,
        "the pull hung on a silent upstream:\n{}",
        node.log_text()
    );
    assert!(relay_failures(&node, "timeout") >= 1);
    assert_honest_served(&mut node, player, publisher, published, rss_before).await;
}

#[tokio::test]
async fn stream_keys_of_upstreams_never_reach_logs_or_status() {
    if !have("ffmpeg", "a publisher for the pushed stream") {
        return;
    }
    let _serial = serial().await;
    let (port, connections) = fake_upstream(Upstream::EchoesKey).await;
    let secret = "cam42/T0PSECRETKEY?key=ALSOSECRET";
    let node = TestNode::start(&[
        "--pull",
        &format!("up=rtmp://127.0.0.1:{port}/live/{secret}"),
        "--push",
        // Nothing listens there: each attempt fails (connection refused) and is logged with the URL.
        &format!("cam=rtmp://127.0.0.1:{}/app/PUSHSECRETKEY", free_port()),
    ])
    .await;
    // The push relay connects once "cam" is live.
    let st = publish(&clip(3, 30), &node.url("cam"))
        .wait()
        .await
        .unwrap();
    assert!(st.success());
    assert!(
        wait_until(Duration::from_secs(20), || connections
            .load(Ordering::SeqCst)
            >= 2)
        .await
    );
    assert!(
        wait_until(Duration::from_secs(10), || relay_failures(&node, "other")
            >= 3)
        .await,
        "{}",
        node.log_text()
    );
    let log = node.log_text();
    assert!(
        log.contains("pull failed") && log.contains("push failed"),
        "{log}"
    );
    let status = node.status_json().to_string();
    for shown in [&log, &status] {
        for secret in ["T0PSECRETKEY", "ALSOSECRET", "PUSHSECRETKEY", "cam42"] {
            assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        }
    }
    assert!(
        log.contains("live/***") && log.contains("app/***"),
        "the redacted URLs are logged:\n{log}"
    );
}
