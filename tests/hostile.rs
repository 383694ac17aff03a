//! Hostile and broken clients against a node that is serving an honest publisher and player: garbage, a
//! truncated handshake, an absurd chunk size, input that made rml_rtmp panic, and a player that never reads.
//! Each ends or stalls only its own session; the honest player keeps receiving and memory stays bounded.

mod common;

use bytes::Bytes;
use common::*;
use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::{MessagePayload, RtmpMessage};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Handshakes and connects to app `live` with rml_rtmp's client session.
async fn connect(addr: SocketAddr, rcvbuf: Option<u32>) -> (TcpStream, ClientSession) {
    let sock = TcpSocket::new_v4().unwrap();
    if let Some(size) = rcvbuf {
        sock.set_recv_buffer_size(size).unwrap();
    }
    let mut s = sock.connect(addr).await.unwrap();
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1().unwrap())
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let rest = loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "server closed during handshake");
        match hs.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes).await.unwrap()
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                s.write_all(&response_bytes).await.unwrap();
                break remaining_bytes;
            }
        }
    };
    let (mut session, _) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    let mut events = apply(&mut s, session.handle_input(&rest).unwrap()).await;
    let r = session.request_connection("live".into()).unwrap();
    events.extend(apply(&mut s, vec![r]).await);
    wait_for(&mut s, &mut session, events, |e| {
        matches!(e, ClientSessionEvent::ConnectionRequestAccepted)
    })
    .await;
    (s, session)
}

async fn apply(s: &mut TcpStream, results: Vec<ClientSessionResult>) -> Vec<ClientSessionEvent> {
    let mut events = Vec::new();
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => s.write_all(&p.bytes).await.unwrap(),
            ClientSessionResult::RaisedEvent(e) => events.push(e),
            _ => {}
        }
    }
    events
}

async fn wait_for(
    s: &mut TcpStream,
    session: &mut ClientSession,
    mut events: Vec<ClientSessionEvent>,
    want: impl Fn(&ClientSessionEvent) -> bool,
) {
    let mut buf = vec![0u8; 8192];
    loop {
        if events.iter().any(&want) {
            return;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "server closed the connection");
        let results = session.handle_input(&buf[..n]).unwrap();
        events = apply(s, results).await;
    }
}

#[tokio::test]
async fn hostile_clients_end_only_their_own_sessions() {
    if !have("ffmpeg", "honest publisher and player") {
        return;
    }
    let clip = clip(24, 60);
    let published = video_packets(&clip);
    let node = TestNode::start(&[]).await;
    let url = node.url("alice");
    let honest = play(&url, 5, 90);
    assert!(
        wait_until(Duration::from_secs(10), || node
            .stream("alice")
            .is_some_and(|s| s.players == 1))
        .await
    );
    let mut publisher = publish(&clip, &url);
    assert!(
        wait_until(Duration::from_secs(10), || node
            .stream("alice")
            .is_some_and(|s| s.live))
        .await
    );
    let rss_before = node.rss_kib();

    // 1. Garbage instead of a handshake.
    let mut g = TcpStream::connect(node.rtmp).await.unwrap();
    let garbage: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = g.write_all(&garbage).await;
    assert!(
        rtmp_closed_within(&mut g, Duration::from_secs(5)).await,
        "garbage session was not closed"
    );

    // 2. A truncated handshake: C0 and half of C1, then silence. It must not block anyone else.
    let mut t = TcpStream::connect(node.rtmp).await.unwrap();
    t.write_all(&[3u8]).await.unwrap();
    t.write_all(&[0u8; 700]).await.unwrap();

    // 3. An absurd chunk size, then a message header announcing 16 MiB that never arrives.
    let (mut c, _) = connect(node.rtmp, None).await;
    let mut ser = ChunkSerializer::new();
    let p = ser
        .set_max_chunk_size(0x7fff_ffff, RtmpTimestamp::new(0))
        .unwrap();
    c.write_all(&p.bytes).await.unwrap();
    let mut header = vec![0x04u8, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0];
    header.extend_from_slice(&[0u8; 1000]);
    c.write_all(&header).await.unwrap();

    // 4. `@setDataFrame` with no values after it: rml_rtmp's session indexed an empty vector and panicked; the
    // edge's own command flow drops the message and the publisher stays connected.
    let (mut evil, mut session) = connect(node.rtmp, None).await;
    let r = session
        .request_publishing("evil".into(), PublishRequestType::Live)
        .unwrap();
    let ev = apply(&mut evil, vec![r]).await;
    wait_for(&mut evil, &mut session, ev, |e| {
        matches!(e, ClientSessionEvent::PublishRequestAccepted)
    })
    .await;
    let msg = RtmpMessage::Amf0Data {
        values: vec![
            Amf0Value::Utf8String("@setDataFrame".into()),
            Amf0Value::Utf8String("onMetaData".into()),
        ],
    };
    let payload: MessagePayload = msg.into_message_payload(RtmpTimestamp::new(0), 1).unwrap();
    let p = ChunkSerializer::new()
        .serialize(&payload, true, false)
        .unwrap();
    evil.write_all(&p.bytes).await.unwrap();
    assert!(
        !rtmp_closed_within(&mut evil, Duration::from_secs(2)).await,
        "a bare @setDataFrame is dropped, not a reason to close"
    );

    // 5. A player that never reads, with a tiny receive buffer.
    let (mut stalled, mut session) = connect(node.rtmp, Some(4096)).await;
    let r = session.request_playback("alice".into()).unwrap();
    let _ = apply(&mut stalled, vec![r]).await;

    // 6. A burst of connections that do nothing.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(TcpStream::connect(node.rtmp).await.unwrap());
    }

    let st = publisher.wait().await.unwrap();
    assert!(st.success(), "the honest publisher was disturbed");
    let p = honest.await.unwrap();
    assert!(
        p.video() * 100 >= published * 95,
        "honest player got {} of {published} frames",
        p.video()
    );
    let rss_after = node.rss_kib();
    let mut node = node;
    assert!(node.alive(), "node died:\n{}", node.log_text());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    let m = http_get(node.http, "/metrics").1;
    assert_eq!(
        metric(
            &m,
            r#"streamr_rtmp_sessions_rejected_total{reason="panic"}"#
        ),
        0,
        "{m}"
    );
    // The 16 MiB message header before any publish is over the limit for commands.
    assert!(
        metric(&m, r#"streamr_rtmp_limit_hits_total{limit="message_size"}"#) >= 1,
        "{m}"
    );
    assert!(
        metric(
            &m,
            r#"streamr_rtmp_sessions_rejected_total{reason="protocol_error"}"#
        ) >= 1,
        "{m}"
    );
    // The stalled player was cut off by the write timeout (the clip outlasts it).
    assert!(
        metric(
            &m,
            r#"streamr_rtmp_sessions_rejected_total{reason="timeout"}"#
        ) >= 1,
        "{m}"
    );
    drop((t, c, evil, stalled, idle, Bytes::new()));
}
