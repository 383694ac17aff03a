//! The mesh end to end: real nodes on loopback, ffmpeg publishing on one node, ffprobe playing on others.

mod common;

use common::*;
use std::time::Duration;

async fn node_via(boot: &TestNode, extra: &[&str]) -> TestNode {
    let addr = boot.mesh_addr();
    let mut args = vec!["--bootstrap", addr.as_str()];
    args.extend_from_slice(extra);
    TestNode::start(&args).await
}

/// Whether `node` has stream `name` live.
fn live(node: &TestNode, name: &str) -> bool {
    node.stream(name).is_some_and(|s| s.live)
}

/// The node `node` receives stream `name` from.
fn upstream(node: &TestNode, name: &str) -> Option<String> {
    node.stream(name).and_then(|s| s.upstream)
}

/// Frames `node` has received of stream `name`.
fn frames(node: &TestNode, name: &str) -> u64 {
    node.stream(name).map_or(0, |s| s.frames)
}

#[tokio::test]
async fn chain_a_b_c_delivers_every_frame() {
    let _serial = serial().await;
    if !have("ffmpeg", "publisher and player") {
        return;
    }
    // A 5 s keyframe interval: while the path forms, the origin's keyframe cache still holds frame 0.
    let clip = clip(10, 150);
    let published = video_packets(&clip);
    let a = TestNode::start(&[]).await;
    let b = node_via(&a, &[]).await;
    let c = node_via(&b, &[]).await;
    let player = play(&c.url("alice"), 5, 60);
    assert!(
        wait_until(Duration::from_secs(10), || c
            .stream("alice")
            .is_some_and(|s| s.players == 1))
        .await
    );
    let mut publisher = publish(&clip, &a.url("alice"));
    // The stream reaches C through the mesh, and C names its origin.
    assert!(
        wait_until(Duration::from_secs(15), || live(&c, "alice")).await,
        "C never got the stream; C:\n{}\nB:\n{}",
        c.log_text(),
        b.log_text()
    );
    let at_c = c.stream("alice").unwrap();
    assert_eq!(at_c.origin.as_deref(), Some(a.peer_id.as_str()));
    assert!(at_c.hops >= Some(1), "{at_c:?}");
    assert!(publisher.wait().await.unwrap().success());
    let p = player.await.unwrap();
    assert_eq!(p.sorted_codecs(), ["aac", "h264"], "{}", p.stderr);
    assert!(
        p.video() * 100 >= published * 95,
        "C's player got {} of {published} frames",
        p.video()
    );
    p.assert_monotonic();
    // C knew only B, so the mesh (catalog, DHT) found the stream: C lists it with its origin.
    let listed = c.status().mesh_streams;
    assert!(
        listed
            .iter()
            .any(|s| s.name == "alice" && s.origin == a.peer_id),
        "{listed:?}"
    );
    // Gossip is counted both ways: B sent its catalog, C received catalogs (each at least its 4-byte
    // length prefix and an entry).
    let sent = metric(
        &http_get(b.http, "/metrics").1,
        "streamr_mesh_catalogs_sent_total",
    );
    assert!(sent >= 1, "B sent no catalog");
    let m = http_get(c.http, "/metrics").1;
    let received = metric(&m, "streamr_mesh_catalogs_received_total");
    assert!(received >= 1, "{m}");
    assert!(
        metric(&m, "streamr_mesh_catalog_bytes_received_total") > received * 4,
        "{m}"
    );
}

#[tokio::test]
async fn upload_cap_builds_a_tree_of_depth_two_and_every_viewer_plays() {
    let _serial = serial().await;
    if !have("ffmpeg", "publisher and players") {
        return;
    }
    let clip = clip(12, 60);
    let published = video_packets(&clip);
    // The origin serves one downstream peer (the clip is ~0.7 Mbit/s); the others must relay.
    let origin = TestNode::start(&["--max-upload-kbps", "800"]).await;
    let mut viewers = Vec::new();
    for _ in 0..6 {
        viewers.push(node_via(&origin, &["--max-upload-kbps", "1600"]).await);
    }
    let players: Vec<_> = viewers
        .iter()
        .map(|v| play(&v.url("tree"), 6, 90))
        .collect();
    for v in &viewers {
        assert!(
            wait_until(Duration::from_secs(10), || v
                .stream("tree")
                .is_some_and(|s| s.players == 1))
            .await
        );
    }
    let mut publisher = publish(&clip, &origin.url("tree"));
    // Wait for every viewer to be live, then look at the tree.
    for v in &viewers {
        assert!(
            wait_until(Duration::from_secs(20), || live(v, "tree")).await,
            "a viewer never got the stream:\n{}",
            v.log_text()
        );
    }
    let hops: Vec<u8> = viewers
        .iter()
        .map(|v| v.stream("tree").and_then(|s| s.hops).unwrap_or(0))
        .collect();
    let origin_subs = origin.stream("tree").map_or(99, |s| s.subscribers);
    assert!(
        origin_subs <= 1,
        "origin serves {origin_subs} peers despite its cap"
    );
    assert!(
        hops.iter().any(|h| *h >= 2),
        "tree depth must reach 2: hops {hops:?}"
    );
    assert!(publisher.wait().await.unwrap().success());
    for (i, p) in players.into_iter().enumerate() {
        let p = p.await.unwrap();
        // Every viewer plays: it joined at a keyframe some time after the start (the tree takes a moment to
        // form) and from then on lost nothing.
        assert!(
            p.video() * 100 >= published * 50 && p.video_continuity(30.0) >= 0.95,
            "viewer {i} (hops {}) got {} of {published} frames, continuity {:.2}: {}\n{}",
            hops[i],
            p.video(),
            p.video_continuity(30.0),
            p.stderr,
            viewers[i].log_text()
        );
    }
}

#[tokio::test]
async fn killing_the_middle_node_keeps_the_far_player_playing() {
    let _serial = serial().await;
    if !have("ffmpeg", "publisher and player") {
        return;
    }
    let clip = clip(24, 60);
    // A serves one peer, so C's stream goes through B; when B dies, A has room for C.
    let a = TestNode::start(&["--max-upload-kbps", "800"]).await;
    let mut b = node_via(&a, &[]).await;
    let c = node_via(&b, &[]).await;
    let _publisher = publish(&clip, &a.url("live1"));
    assert!(wait_until(Duration::from_secs(10), || live(&a, "live1")).await);
    let b_player = play(&b.url("live1"), 5, 60);
    assert!(wait_until(Duration::from_secs(15), || live(&b, "live1")).await);
    let c_player = play(&c.url("live1"), 6, 90);
    assert!(
        wait_until(Duration::from_secs(15), || upstream(&c, "live1")
            == Some(b.peer_id.clone()))
        .await,
        "C should first receive through B: {:?}",
        c.stream("live1")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = frames(&c, "live1");
    b.kill().await;
    drop(b_player);
    // C resubscribes (to A) without its player noticing: frames keep coming, now from A.
    assert!(
        wait_until(Duration::from_secs(15), || upstream(&c, "live1")
            == Some(a.peer_id.clone()))
        .await,
        "C did not fail over to A: {:?}\n{}",
        c.stream("live1"),
        c.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(10), || frames(&c, "live1")
            > before + 60)
        .await
    );
    assert_eq!(
        c.stream("live1").map(|s| s.players),
        Some(1),
        "the player stayed connected"
    );
    let metrics = http_get(c.http, "/metrics").1;
    assert!(
        metric(&metrics, "streamr_mesh_resubscriptions_total") >= 1,
        "{metrics}"
    );
    let p = c_player.await.unwrap();
    p.assert_monotonic();
    assert!(p.video() > 300, "far player got {} frames", p.video());
}

#[tokio::test]
async fn same_name_from_two_origins_is_told_apart_by_origin_prefix() {
    let _serial = serial().await;
    if !have("ffmpeg", "publishers and player") {
        return;
    }
    let clip = clip(12, 60);
    let a = TestNode::start(&[]).await;
    let b = TestNode::start(&[]).await;
    let c = TestNode::start(&["--bootstrap", &a.mesh_addr(), "--bootstrap", &b.mesh_addr()]).await;
    let _pa = publish(&clip, &a.url("same"));
    let _pb = publish(&clip, &b.url("same"));
    // C lists both, each with the name to play to pick it.
    let both = || {
        c.status()
            .mesh_streams
            .iter()
            .filter(|s| s.name == "same")
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || both() == 2).await,
        "{:?}",
        c.status()
    );
    // Enough of B's id that no other node can match it (see streamr_mesh::play_name).
    let pick_b = format!("same@{}", &b.peer_id[..24]);
    let listed = c.status().mesh_streams;
    assert!(listed.iter().any(|s| s.play_as == pick_b), "{listed:?}");
    let p = play_with(&c.url(&pick_b), 5, 30, Some(60)).await.unwrap();
    assert!(p.video() > 0, "{}", p.stderr);
    assert_eq!(
        c.stream(&pick_b).and_then(|s| s.origin),
        Some(b.peer_id.clone())
    );
}

#[tokio::test]
async fn a_viewer_moves_up_when_room_appears_nearer_the_origin() {
    let _serial = serial().await;
    if !have("ffmpeg", "publisher and players") {
        return;
    }
    let clip = clip(45, 60);
    // A serves three peers (the clip is 0.6-0.7 Mbit/s: three fit in 2.4 Mbit/s and four do not, and
    // with two gone, room for two is left): the Bs take them, so C lands below one of them.
    let a = TestNode::start(&["--max-upload-kbps", "2400"]).await;
    let mut bs = Vec::new();
    for _ in 0..3 {
        bs.push(node_via(&a, &[]).await);
    }
    let _publisher = publish(&clip, &a.url("up"));
    assert!(wait_until(Duration::from_secs(10), || live(&a, "up")).await);
    let mut players: Vec<_> = bs.iter().map(|b| play(&b.url("up"), 5, 60)).collect();
    for b in &bs {
        assert!(
            wait_until(Duration::from_secs(15), || upstream(b, "up")
                == Some(a.peer_id.clone()))
            .await,
            "B should receive from A: {:?}\n{}",
            b.stream("up"),
            b.log_text()
        );
    }
    let c = node_via(&a, &[]).await;
    let c_player = play(&c.url("up"), 6, 60);
    let hops = |n: &TestNode| n.stream("up").and_then(|s| s.hops);
    assert!(
        wait_until(Duration::from_secs(15), || hops(&c) == Some(2)).await,
        "C should first land below a B: {:?}\n{}",
        c.stream("up"),
        c.log_text()
    );
    let via = upstream(&c, "up").expect("C has an upstream");
    // The Bs that C does not hang from leave: A has room for two again (a mover wants room for itself
    // and one more), while C's own upstream goes on.
    for (b, player) in bs.iter_mut().zip(&mut players) {
        if b.peer_id != via {
            b.kill().await;
            player.abort();
        }
    }
    assert!(
        wait_until(Duration::from_secs(40), || upstream(&c, "up")
            == Some(a.peer_id.clone()))
        .await,
        "C did not move up to A: {:?}\n{}",
        c.stream("up"),
        c.log_text()
    );
    assert_eq!(hops(&c), Some(1));
    // A move, not a repair: C never lost an upstream.
    let metrics = http_get(c.http, "/metrics").1;
    assert_eq!(
        metric(&metrics, "streamr_mesh_climbs_total"),
        1,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "streamr_mesh_resubscriptions_total"),
        0,
        "{metrics}"
    );
    assert!(c.log_text().contains("moved nearer the origin"));
    let before = frames(&c, "up");
    assert!(
        wait_until(Duration::from_secs(10), || frames(&c, "up") > before + 60).await,
        "frames stopped after the move:\n{}",
        c.log_text()
    );
    // The player saw nothing of it: every frame, in order.
    let p = c_player.await.unwrap();
    p.assert_monotonic();
    assert!(
        p.video_continuity(30.0) >= 0.99,
        "continuity {:.3}: {}",
        p.video_continuity(30.0),
        p.stderr
    );
}
