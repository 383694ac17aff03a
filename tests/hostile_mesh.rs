//! Hostile mesh peers against real nodes that serve honest viewers (issue 10, the mesh part): a relay that
//! alters the media it passes on, subscribers that never read (over TCP and over QUIC), a catalog flood and a
//! connection flood. Each attack is caught or bounded and counted in `/metrics`; the node stays up, within
//! bounded memory, and its honest viewers keep their frames.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use streamr_media::EncodingSlot;
use streamr_mesh::announce::Announcement;
use streamr_mesh::catalog::{self, CatalogEntry, ProviderRecord};
use streamr_mesh::net::{self, NetConfig, NetHandle, RelayLimits};
use streamr_mesh::wire::{self, Message, ProviderHint};
use tokio::sync::Notify;
use tokio_util::codec::Decoder as _;
use tokio_util::sync::CancellationToken;

/// A node's resident memory may not grow past this while it is attacked (it idles at about 25 MiB).
const RSS_LIMIT_KIB: u64 = 200 << 10;

fn metrics(node: &TestNode) -> String {
    http_get(node.http, "/metrics").1
}

/// A full mesh node of our own kind, driven by the test (the attacker's machine).
async fn hostile_node(
    bootstrap: Vec<Multiaddr>,
    cancel: &CancellationToken,
) -> (NetHandle, Keypair) {
    let key = Keypair::generate_ed25519();
    let (h, _task) = net::start(
        NetConfig {
            key: key.clone(),
            port: 0,
            bootstrap,
            relay: RelayLimits::new(8, 4, Duration::from_secs(3600), 1 << 30),
            upnp: false,
            traversal: Default::default(),
        },
        cancel.clone(),
    )
    .await
    .expect("hostile node starts");
    (h, key)
}

/// The node's loopback QUIC address, with `/p2p/<id>`.
fn loopback_quic(h: &NetHandle) -> Multiaddr {
    h.snapshot()
        .listen_addrs
        .into_iter()
        .find(|a| a.to_string().starts_with("/ip4/127.0.0.1/") && net::is_quic(a))
        .expect("a loopback QUIC address")
}

fn without_p2p(a: &Multiaddr) -> Multiaddr {
    let mut a = a.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

/// Reads the next message; None when the stream ends or breaks.
async fn next_message<R: futures::AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    decoder: &mut wire::Decoder,
) -> Option<Message> {
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        match decoder.decode(buf) {
            Ok(Some(m)) => return Some(m),
            Ok(None) => {}
            Err(_) => return None,
        }
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What the hostile relay received from the origin: its announcement and every frame as it arrived.
#[derive(Default)]
struct Relayed {
    announcement: Mutex<Option<Announcement>>,
    frames: Mutex<Vec<Bytes>>,
    arrived: Notify,
}

/// Subscribes to the origin's `name` like any node would (acknowledging what arrives) and records it.
async fn record_from(h: NetHandle, origin: PeerId, name: &'static str, store: Arc<Relayed>) {
    let mut control = h.control();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Ok(s) = control.open_stream(origin, wire::PROTOCOL).await else {
            continue;
        };
        let (mut rd, mut wr) = s.split();
        let subscribe = wire::encode(&Message::Subscribe {
            name: name.into(),
            origin: None,
            have_seq: 0,
        });
        if wr.write_all(&subscribe).await.is_err() {
            continue;
        }
        let (mut buf, mut dec) = (BytesMut::new(), wire::Decoder::subscriber());
        match next_message(&mut rd, &mut buf, &mut dec).await {
            Some(Message::Accept { announcement, .. }) => {
                *store.announcement.lock() = Some(announcement);
            }
            _ => continue,
        }
        let mut received = 0u64;
        let mut ack = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                m = next_message(&mut rd, &mut buf, &mut dec) => match m {
                    Some(Message::Frame(f)) => {
                        received += f.wire_len() as u64;
                        let raw = f.frame.encoded(EncodingSlot::Wire, |_| Bytes::new());
                        store.frames.lock().push(raw);
                        store.arrived.notify_waiters();
                    }
                    Some(_) => {}
                    None => return,
                },
                _ = ack.tick() => {
                    let a = wire::encode(&Message::Ack { seq: 0, bytes: received });
                    if wr.write_all(&a).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Tells `to`, every half second, that this node provides the origin's stream one hop from it.
async fn advertise(h: NetHandle, key: Keypair, to: PeerId, store: Arc<Relayed>) {
    let mut control = h.control();
    let record = ProviderRecord::new(&key, vec![without_p2p(&loopback_quic(&h))]).unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(ann) = store.announcement.lock().clone() else {
            continue;
        };
        let msg = catalog::encode(&[CatalogEntry::new(ann, record.clone(), 1, 100_000)]);
        if let Ok(mut s) = control.open_stream(to, catalog::PROTOCOL).await {
            let _ = s.write_all(&msg).await;
            let _ = s.close().await;
        }
    }
}

/// Serves what it recorded to whoever subscribes (from the start of the stream), honestly until
/// `tamper_after` live frames went out, then with one byte of the next frame's payload changed (the
/// origin's signature left as it was), then honestly again.
async fn serve_altered(
    h: NetHandle,
    origin: PeerId,
    origin_addr: Multiaddr,
    store: Arc<Relayed>,
    tamper_after: usize,
) {
    let mut control = h.control();
    let mut incoming = control.accept(wire::PROTOCOL).unwrap();
    while let Some((_, stream)) = incoming.next().await {
        let store = store.clone();
        let me = h.peer_id;
        let origin_addr = origin_addr.clone();
        tokio::spawn(async move {
            let (mut rd, mut wr) = stream.split();
            let (mut buf, mut dec) = (BytesMut::new(), wire::Decoder::provider());
            let Some(Message::Subscribe { .. }) = next_message(&mut rd, &mut buf, &mut dec).await
            else {
                return;
            };
            let Some(announcement) = store.announcement.lock().clone() else {
                return;
            };
            let accept = wire::encode(&Message::Accept {
                announcement,
                hops: 1,
                path: vec![origin, me],
                fallbacks: vec![ProviderHint {
                    peer: origin,
                    addrs: vec![without_p2p(&origin_addr)],
                }],
            });
            if wr.write_all(&accept).await.is_err() {
                return;
            }
            let mut sent = 0;
            let tamper_at = store.frames.lock().len() + tamper_after;
            loop {
                let waiting = store.arrived.notified();
                let frames: Vec<Bytes> = store.frames.lock()[sent..].to_vec();
                for raw in frames {
                    let out = if sent == tamper_at {
                        let mut b = raw.to_vec();
                        let last = b.len() - 1;
                        b[last] ^= 0x5a;
                        Bytes::from(b)
                    } else {
                        raw
                    };
                    if wr.write_all(&out).await.is_err() {
                        return;
                    }
                    sent += 1;
                }
                let _ = wr.flush().await;
                let _ = tokio::time::timeout(Duration::from_millis(200), waiting).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_that_alters_media_is_caught_counted_and_replaced() {
    let _serial = serial().await;
    if !have("ffmpeg", "publisher and player") {
        return;
    }
    let clip = clip(20, 60);
    let published = video_packets(&clip);
    let origin = TestNode::start(&[]).await;
    let origin_id: PeerId = origin.peer_id.parse().unwrap();
    let origin_addr: Multiaddr = origin.mesh_addr().parse().unwrap();
    let cancel = CancellationToken::new();
    let (h, key) = hostile_node(vec![origin_addr.clone()], &cancel).await;
    // The viewer knows only the hostile relay: it can only learn of the stream through it.
    let viewer = TestNode::start(&["--bootstrap", &loopback_quic(&h).to_string()]).await;
    let viewer_id: PeerId = viewer.peer_id.parse().unwrap();
    let store = Arc::new(Relayed::default());
    tokio::spawn(record_from(h.clone(), origin_id, "alice", store.clone()));
    tokio::spawn(advertise(h.clone(), key, viewer_id, store.clone()));
    tokio::spawn(serve_altered(
        h.clone(),
        origin_id,
        origin_addr,
        store.clone(),
        90,
    ));
    let mut publisher = publish(&clip, &origin.url("alice"));
    // The viewer hears of the stream from the relay alone, then its player asks for it. The relay serves it
    // from the start of the stream, so the player misses nothing for coming late.
    assert!(
        wait_until(Duration::from_secs(15), || viewer
            .status()
            .mesh_streams
            .iter()
            .any(|s| s.name == "alice"))
        .await,
        "the viewer never heard of the stream:\n{}",
        viewer.log_text()
    );
    let player = play(&viewer.url("alice"), 8, 90);

    // The viewer first plays through the relay, catches the altered frame, drops the relay and goes to the
    // origin it named as a fallback.
    let upstream = |who: &str| {
        viewer
            .stream("alice")
            .is_some_and(|s| s.upstream.as_deref() == Some(who) && s.live)
    };
    assert!(
        wait_until(Duration::from_secs(20), || upstream(&h.peer_id.to_string())).await,
        "the viewer never played through the relay: {:?}\n{}",
        viewer.stream("alice"),
        viewer.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(20), || upstream(&origin.peer_id)).await,
        "the viewer did not leave the relay for the origin: {:?}\n{}",
        viewer.stream("alice"),
        viewer.log_text()
    );
    let m = metrics(&viewer);
    assert!(
        metric(&m, "streamr_mesh_forged_frames_total") >= 1,
        "the altered frame was not counted:\n{m}"
    );
    assert!(publisher.wait().await.unwrap().success());
    let p = player.await.unwrap();
    assert!(
        p.video() * 100 >= published * 95,
        "the viewer got {} of {published} frames",
        p.video()
    );
    p.assert_monotonic();
    let mut viewer = viewer;
    assert!(viewer.alive());
    assert!(viewer.rss_kib() < RSS_LIMIT_KIB, "{} KiB", viewer.rss_kib());
    cancel.cancel();
}

/// A bare libp2p peer that speaks nothing but streams, over one transport only: a subscriber with no
/// reason to be polite.
fn bare_peer(tcp: bool) -> libp2p::swarm::Swarm<libp2p_stream::Behaviour> {
    let key = Keypair::generate_ed25519();
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(120));
    if tcp {
        libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(idle)
            .build()
    } else {
        libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_quic()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(idle)
            .build()
    }
}

/// Drives `swarm` until `cancel`; returns its stream control.
fn drive(
    mut swarm: libp2p::swarm::Swarm<libp2p_stream::Behaviour>,
    cancel: CancellationToken,
) -> libp2p_stream::Control {
    let control = swarm.behaviour().new_control();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = swarm.select_next_some() => {}
            }
        }
    });
    control
}

/// The node's loopback address of one transport, without `/p2p`.
fn node_addr(node: &TestNode, tcp: bool) -> Multiaddr {
    let s = node.status();
    s.listen_addrs
        .iter()
        .filter(|a| a.starts_with("/ip4/127.0.0.1/"))
        .find(|a| a.contains("/tcp/") == tcp && !a.contains("p2p-circuit"))
        .map(|a| without_p2p(&a.parse().unwrap()))
        .unwrap_or_else(|| panic!("no loopback address in {:?}", s.listen_addrs))
}

async fn subscribers_that_never_read_cannot_hold_the_upload(tcp: bool) {
    let _serial = serial().await;
    if !have("ffmpeg", "publisher and player") {
        return;
    }
    let clip = clip(24, 60);
    // Room for two copies of the stream (about 0.7 Mbit/s): two subscribers that never read fill it.
    let victim = TestNode::start(&["--max-upload-kbps", "1500"]).await;
    let victim_id: PeerId = victim.peer_id.parse().unwrap();
    let viewer = TestNode::start(&["--bootstrap", &victim.mesh_addr()]).await;
    let mut publisher = publish(&clip, &victim.url("alice"));
    assert!(
        wait_until(Duration::from_secs(10), || victim
            .stream("alice")
            .is_some_and(|s| s.live))
        .await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Three subscriptions over one transport that read nothing after subscribing.
    let cancel = CancellationToken::new();
    let mut swarm = bare_peer(tcp);
    swarm
        .dial(
            DialOpts::peer_id(victim_id)
                .addresses(vec![node_addr(&victim, tcp)])
                .build(),
        )
        .unwrap();
    let mut control = drive(swarm, cancel.clone());
    let mut hostile = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::time::timeout(
            Duration::from_secs(10),
            control.open_stream(victim_id, wire::PROTOCOL),
        )
        .await
        .expect("stream opens in time")
        .expect("stream opens");
        s.write_all(&wire::encode(&Message::Subscribe {
            name: "alice".into(),
            origin: None,
            have_seq: 0,
        }))
        .await
        .unwrap();
        hostile.push(s);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // An honest viewer asks now: the victim must free the slots the silent subscribers hold and serve it.
    let player = play(&viewer.url("alice"), 8, 90);
    assert!(publisher.wait().await.unwrap().success());
    let p = player.await.unwrap();
    let m = metrics(&victim);
    assert!(
        p.video() >= 24 * 30 / 2 && p.video_continuity(30.0) >= 0.95,
        "the honest viewer got {} frames, continuity {:.2}:\n{m}\n{}",
        p.video(),
        p.video_continuity(30.0),
        viewer.log_text()
    );
    // Each silent subscriber is cut off, by the acknowledgement timeout, or, over TCP (yamux), where a write
    // waits once the reader's window is full, by the write timeout: whichever window fills first (ours is
    // a few hundred ms of the stream, yamux's is 256 KiB).
    assert!(
        metric(&m, "streamr_mesh_stalled_downstreams_total")
            + metric(&m, "streamr_mesh_write_stalls_total")
            >= 2,
        "the silent subscribers were not cut off:\n{m}"
    );
    let mut victim = victim;
    assert!(victim.alive());
    assert!(victim.rss_kib() < RSS_LIMIT_KIB, "{} KiB", victim.rss_kib());
    drop(hostile);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_that_never_read_over_tcp_cannot_hold_the_upload() {
    subscribers_that_never_read_cannot_hold_the_upload(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_that_never_read_over_quic_cannot_hold_the_upload() {
    subscribers_that_never_read_cannot_hold_the_upload(false).await;
}

/// Catalog messages of many origins (one provider record for all), and one origin with more streams than
/// a node keeps.
fn flood_messages(key: &Keypair, addr: Multiaddr) -> Vec<Vec<u8>> {
    let record = ProviderRecord::new(key, vec![addr]).unwrap();
    let mut messages = Vec::new();
    let greedy = Keypair::generate_ed25519();
    messages.push(catalog::encode(
        &(0..40)
            .map(|i| {
                let a = Announcement::sign(&greedy, &format!("g{i}"), 1).unwrap();
                CatalogEntry::new(a, record.clone(), 1, u32::MAX)
            })
            .collect::<Vec<_>>(),
    ));
    for _ in 0..4 {
        let entries: Vec<CatalogEntry> = (0..16)
            .flat_map(|_| {
                let origin = Keypair::generate_ed25519();
                (0..16)
                    .map(|i| {
                        let a = Announcement::sign(&origin, &format!("a{i}"), 1).unwrap();
                        CatalogEntry::new(a, record.clone(), 1, u32::MAX)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        messages.push(catalog::encode(&entries));
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_catalog_and_connection_flood_is_bounded_and_the_real_stream_still_spreads() {
    let _serial = serial().await;
    if !have("ffmpeg", "publisher and player") {
        return;
    }
    let clip = clip(24, 60);
    let published = video_packets(&clip);
    let victim = TestNode::start(&[]).await;
    let victim_id: PeerId = victim.peer_id.parse().unwrap();
    // The viewer learns of the stream only through the victim's gossip.
    let viewer = TestNode::start(&["--bootstrap", &victim.mesh_addr()]).await;
    let player = play(&viewer.url("alice"), 8, 90);
    assert!(
        wait_until(Duration::from_secs(10), || viewer
            .stream("alice")
            .is_some_and(|s| s.players == 1))
        .await
    );

    let cancel = CancellationToken::new();
    let (h, key) = hostile_node(vec![victim.mesh_addr().parse().unwrap()], &cancel).await;
    let messages = flood_messages(&key, without_p2p(&loopback_quic(&h)));
    let mut publisher = publish(&clip, &victim.url("alice"));
    let flood = {
        let mut control = h.control();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut i = 0;
            while !cancel.is_cancelled() {
                if let Ok(Ok(mut s)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    control.open_stream(victim_id, catalog::PROTOCOL),
                )
                .await
                {
                    let _ = s.write_all(&messages[i % messages.len()]).await;
                    let _ = s.close().await;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // And connections: more from one peer than any honest peer needs.
    let mut swarm = bare_peer(true);
    for _ in 0..30 {
        let _ = swarm.dial(
            DialOpts::peer_id(victim_id)
                .addresses(vec![node_addr(&victim, true)])
                .condition(PeerCondition::Always)
                .build(),
        );
    }
    let _connections = drive(swarm, cancel.clone());

    assert!(publisher.wait().await.unwrap().success());
    let p = player.await.unwrap();
    let m = metrics(&victim);
    assert!(
        p.video() * 100 >= published * 95,
        "the viewer got {} of {published} frames:\n{m}\n{}",
        p.video(),
        viewer.log_text()
    );
    assert!(
        metric(&m, "streamr_mesh_catalogs_flooded_total") >= 1,
        "the catalog flood was not limited:\n{m}"
    );
    assert!(
        metric(&m, "streamr_mesh_catalog_entries_dropped_total") >= 24,
        "the greedy origin's extra streams were kept:\n{m}"
    );
    assert!(
        metric(&m, "streamr_mesh_catalog_entries ") <= catalog::MAX_LEARNED as u64,
        "{m}"
    );
    assert!(
        metric(&m, "streamr_mesh_connections_denied_total") >= 1,
        "the connection flood was not limited:\n{m}"
    );
    let mut victim = victim;
    assert!(victim.alive());
    assert!(victim.rss_kib() < RSS_LIMIT_KIB, "{} KiB", victim.rss_kib());
    cancel.cancel();
    let _ = flood.await;
}
