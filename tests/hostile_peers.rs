//! Hostile mesh peers against a node that serves an honest viewer: garbage on `/streamr/media/1`, a message
//! claiming 4 GiB, a subscription flood, and a forged announcement. Each is refused and counted; the honest
//! viewer keeps playing.

mod common;

use common::*;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use std::time::Duration;
use streamr_mesh::announce::Announcement;
use streamr_mesh::catalog::{self, CatalogEntry, ProviderRecord};
use streamr_mesh::net::{self, NetCommand, NetConfig, RelayLimits};
use streamr_mesh::wire::{self, Message};
use tokio_util::sync::CancellationToken;

/// Reads until the remote closes or `limit` passes; true if it closed.
async fn closed_within(s: &mut libp2p::Stream, limit: Duration) -> bool {
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn hostile_peers_are_refused_counted_and_honest_viewers_keep_playing() {
    if !have("ffmpeg", "publisher and player") {
        return;
    }
    let clip = clip(20, 60);
    let published = video_packets(&clip);
    let victim = TestNode::start(&[]).await;
    let honest = TestNode::start(&["--bootstrap", &victim.mesh_addr()]).await;
    let player = play(&honest.url("alice"), 6, 90);
    assert!(
        wait_until(Duration::from_secs(10), || honest
            .stream("alice")
            .is_some_and(|s| s.players == 1))
        .await
    );
    let mut publisher = publish(&clip, &victim.url("alice"));
    assert!(
        wait_until(Duration::from_secs(15), || honest
            .stream("alice")
            .is_some_and(|s| s.live))
        .await
    );

    // The attacker: a real libp2p node of our own kind, under the test's control.
    let victim_addr: Multiaddr = victim.mesh_addr().parse().unwrap();
    let victim_id: PeerId = victim.peer_id.parse().unwrap();
    let cancel = CancellationToken::new();
    let key = Keypair::generate_ed25519();
    let (h, _task) = net::start(
        NetConfig {
            key: key.clone(),
            port: 0,
            bootstrap: vec![victim_addr.clone()],
            relay: RelayLimits::new(8, 4, Duration::from_secs(3600), 1 << 30),
            upnp: false,
            traversal: Default::default(),
        },
        cancel.clone(),
    )
    .await
    .unwrap();
    h.send(NetCommand::Dial(victim_addr)).await;
    let mut control = h.control();

    // 1. Garbage on the media protocol.
    let mut s = control
        .open_stream(victim_id, wire::PROTOCOL)
        .await
        .unwrap();
    let garbage: Vec<u8> = (0..4000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let _ = s.write_all(&garbage).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(10)).await,
        "garbage stream was not closed"
    );

    // 2. A subscription, then a message that claims to be 4 GiB long.
    let mut s = control
        .open_stream(victim_id, wire::PROTOCOL)
        .await
        .unwrap();
    let sub = wire::encode(&Message::Subscribe {
        name: "alice".into(),
        origin: None,
        have_seq: 0,
    });
    s.write_all(&sub).await.unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0xff, 7]).await.unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(10)).await,
        "4 GiB claim was not refused"
    );

    // 3. A flood of subscriptions that never read or acknowledge.
    let mut flood = Vec::new();
    for _ in 0..60 {
        if let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_secs(2),
            control.open_stream(victim_id, wire::PROTOCOL),
        )
        .await
        {
            let _ = s.write_all(&sub).await;
            flood.push(s);
        }
    }

    let providers = || {
        victim
            .status()
            .mesh_streams
            .iter()
            .find(|s| s.name == "alice" && s.origin == victim.peer_id)
            .map_or(0, |s| s.providers)
    };
    let providers_before = providers();

    // 4. A catalog entry whose announcement claims the victim's stream but is signed by us.
    let forged = Announcement::sign(&key, "alice", 1)
        .unwrap()
        .forged_with_origin(victim_id);
    // (Our own signed record of our addresses: catalogs carry providers' records since /streamr/catalog/2.)
    let record = ProviderRecord::new(&key, vec![]).unwrap();
    let entry = CatalogEntry::new(forged, record, 0, 100_000);
    let mut s = control
        .open_stream(victim_id, catalog::PROTOCOL)
        .await
        .unwrap();
    s.write_all(&catalog::encode(&[entry])).await.unwrap();
    s.close().await.unwrap();

    let m = || http_get(victim.http, "/metrics").1;
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            &m(),
            "streamr_mesh_forged_announcements_total"
        ) >= 1)
        .await,
        "forged announcement not counted:\n{}",
        m()
    );
    assert!(
        metric(&m(), "streamr_mesh_protocol_violations_total") >= 2,
        "{}",
        m()
    );
    assert!(
        metric(
            &m(),
            r#"streamr_mesh_subscriptions_total{outcome="flooded"}"#
        ) >= 1,
        "flood not limited:\n{}",
        m()
    );
    // The forged entry was not learned: the victim knows no more providers of its stream than before.
    assert!(providers_before >= 1);
    assert_eq!(providers(), providers_before);
    assert!(publisher.wait().await.unwrap().success());
    let p = player.await.unwrap();
    assert!(
        p.video() * 100 >= published * 90,
        "the honest viewer got {} of {published} frames",
        p.video()
    );
    // The flood's subscriptions never acknowledged: the victim cut them off instead of buffering for them.
    assert!(
        metric(&m(), "streamr_mesh_stalled_downstreams_total") >= 1,
        "{}",
        m()
    );
    let mut victim = victim;
    assert!(victim.alive());
    drop(flood);
    cancel.cancel();
}
