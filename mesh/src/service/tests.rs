//! The mesh service end to end inside one process: real swarms on loopback, hubs fed by hand.

use super::*;
use crate::net::RelayLimits;
use bytes::Bytes;
use std::time::Duration;
use streamr_media::{Frame, FrameKind, HubConfig, SourceKind, SubscriberKind};

fn config(bootstrap: Vec<Multiaddr>) -> MeshConfig {
    MeshConfig {
        key: Keypair::generate_ed25519(),
        port: 0,
        bootstrap,
        max_upload_kbps: 0,
        relay: RelayLimits::new(8, 4, Duration::from_secs(3600), 1 << 30),
        upnp: false,
        port_prediction: false,
        relay_candidates: Vec::new(),
        friends: crate::Friends::default(),
        receipts: None,
        tuning: MeshTuning {
            gossip_interval: Duration::from_millis(300),
            ..MeshTuning::default()
        },
    }
}

fn loopback_quic(m: &Mesh) -> Multiaddr {
    m.status()
        .listen_addrs
        .iter()
        .find(|a| a.starts_with("/ip4/127.0.0.1/") && a.contains("quic-v1"))
        .expect("a loopback QUIC address")
        .parse()
        .unwrap()
}

/// Publishes a stream into `hub` until dropped: a keyframe every 30 frames, one frame every 20 ms.
fn publish(hub: Arc<Hub>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let src = hub.attach(SourceKind::Publisher);
        src.push(Frame::new(
            FrameKind::Video,
            0,
            0,
            Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]),
        ))
        .unwrap();
        for i in 0u32.. {
            let body: &'static [u8] = if i % 30 == 0 {
                &[0x17, 1, 0, 0, 0, 7, 7, 7]
            } else {
                &[0x27, 1, 0, 0, 0, 7]
            };
            let _ = src.push(Frame::new(
                FrameKind::Video,
                i * 20,
                0,
                Bytes::from_static(body),
            ));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// Waits until `sub` yields a video frame, up to `limit`.
async fn plays(sub: &mut streamr_media::Subscription, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        loop {
            match sub.next().await {
                Ok(f) if f.kind() == FrameKind::Video && !f.is_sequence_header() => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// An origin mesh with no bootstrap peers, publishing `name` until the handle is dropped.
async fn start_origin(name: &str) -> (Mesh, CancellationToken, tokio::task::JoinHandle<()>) {
    let streams = Streams::new(HubConfig::default());
    let cancel = CancellationToken::new();
    let mesh = Mesh::start(config(vec![]), streams.clone(), cancel.clone())
        .await
        .unwrap();
    let publisher = publish(streams.get_or_create(name));
    (mesh, cancel, publisher)
}

/// Starts a viewer mesh bootstrapped from `bootstrap` and a player of `name` on it: whether the player gets
/// a video frame within 20 s. The viewer stops before this returns.
async fn viewer_plays(bootstrap: Multiaddr, name: &str) -> bool {
    let streams = Streams::new(HubConfig::default());
    let cancel = CancellationToken::new();
    let viewer = Mesh::start(config(vec![bootstrap]), streams.clone(), cancel.clone())
        .await
        .unwrap();
    streams.set_finder(Some(viewer.finder()));
    let hub = streams.get_or_create(name);
    let mut player = hub.subscribe(SubscriberKind::Player);
    let _lookup = streams.request(&hub);
    let played = plays(&mut player, Duration::from_secs(20)).await;
    cancel.cancel();
    played
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_waiting_when_the_mesh_restarts_get_the_stream_again() {
    let (origin, origin_cancel, _publisher) = start_origin("s").await;

    let streams = Streams::new(HubConfig::default());
    let cfg = config(vec![loopback_quic(&origin)]);
    let first_cancel = CancellationToken::new();
    let first = Mesh::start(cfg.clone(), streams.clone(), first_cancel.clone())
        .await
        .unwrap();
    streams.set_finder(Some(first.finder()));
    let hub = streams.get_or_create("s");
    let mut player = hub.subscribe(SubscriberKind::Player);
    let _lookup = streams.request(&hub);
    assert!(
        plays(&mut player, Duration::from_secs(20)).await,
        "the viewer never got the stream"
    );

    // The mesh stops (as when libp2p panics) and the node starts a new one at once; the player stays.
    first_cancel.cancel();
    first.stopped().await;
    assert!(
        !hub.is_live(),
        "the stopped mesh's fetch let go of the stream before the mesh said it stopped"
    );
    while player.try_next().ok().flatten().is_some() {}
    let second = Mesh::start(cfg, streams.clone(), CancellationToken::new())
        .await
        .unwrap();
    streams.set_finder(Some(second.finder()));
    assert!(
        plays(&mut player, Duration::from_secs(20)).await,
        "the waiting player never got the stream from the new mesh"
    );
    assert!(hub.is_live());
    origin_cancel.cancel();
}

/// A bootstrap peer configured by host name (`/dns4/localhost/...`) is resolved by the system's resolver
/// and dialed: the viewer finds the origin's stream through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_peer_given_by_host_name_is_reached() {
    let (origin, origin_cancel, _publisher) = start_origin("named").await;
    let by_ip = loopback_quic(&origin).to_string();
    let by_name: Multiaddr = by_ip
        .replacen("/ip4/127.0.0.1/", "/dns4/localhost/", 1)
        .parse()
        .unwrap();
    assert!(crate::net::resolve::has_name(&by_name), "{by_name}");

    assert!(
        viewer_plays(by_name, "named").await,
        "the viewer never reached the origin it was given by name"
    );
    origin_cancel.cancel();
}

/// A stream already live when the mesh starts (published before it, or between a mesh's start and its
/// actor listening for streams) is announced: before, only a `SourceAttached` heard later announced one,
/// and a viewer never found it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_live_before_the_mesh_starts_is_announced() {
    let origin_streams = Streams::new(HubConfig::default());
    let origin_hub = origin_streams.get_or_create("early");
    let _publisher = publish(origin_hub.clone());
    while !origin_hub.is_live() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let origin_cancel = CancellationToken::new();
    let origin = Mesh::start(
        config(vec![]),
        origin_streams.clone(),
        origin_cancel.clone(),
    )
    .await
    .unwrap();

    assert!(
        viewer_plays(loopback_quic(&origin), "early").await,
        "the viewer never found a stream that was live before its origin's mesh started"
    );
    origin_cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_connects_gets_the_catalog_at_once_not_at_the_next_tick() {
    // Ticks far apart: within the test only a gossip triggered by the newcomer's arrival can tell it.
    let slow = |bootstrap| {
        let mut c = config(bootstrap);
        c.tuning.gossip_interval = Duration::from_secs(600);
        c
    };
    let origin_streams = Streams::new(HubConfig::default());
    let origin_cancel = CancellationToken::new();
    let origin = Mesh::start(slow(vec![]), origin_streams.clone(), origin_cancel.clone())
        .await
        .unwrap();
    let hub = origin_streams.get_or_create("news");
    let _publisher = publish(hub.clone());
    // The announcement and the gossip it triggers (to nobody yet) are done once the origin lists it.
    let listed = |m: &Mesh| m.status().known.iter().any(|k| k.id.name == "news");
    tokio::time::timeout(Duration::from_secs(10), async {
        while !listed(&origin) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the origin lists its own stream");

    let viewer_cancel = CancellationToken::new();
    let viewer = Mesh::start(
        slow(vec![loopback_quic(&origin)]),
        Streams::new(HubConfig::default()),
        viewer_cancel.clone(),
    )
    .await
    .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(20), async {
        while !listed(&viewer) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        heard.is_ok(),
        "a node that connected did not hear of the stream before the origin's next gossip tick"
    );
    viewer_cancel.cancel();
    origin_cancel.cancel();
}
