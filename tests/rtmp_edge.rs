//! The RTMP edge end to end: the real binary, ffmpeg as publisher, ffprobe as players.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn three_players_get_every_frame_and_see_h264_and_aac() {
    if !have("ffmpeg", "publisher and players") {
        return;
    }
    let clip = clip(6, 60);
    let published = video_packets(&clip);
    let node = TestNode::start(&[]).await;
    let url = node.url("alice");
    // Players arrive first and wait for the publisher, so they can receive every frame.
    let players: Vec<_> = (0..3).map(|_| play(&url, 4, 40)).collect();
    assert!(
        wait_until(Duration::from_secs(10), || node
            .stream("alice")
            .is_some_and(|s| s.players == 3))
        .await,
        "players did not register: {:?}",
        node.status()
    );
    let mut publisher = publish(&clip, &url);
    let st = publisher.wait().await.unwrap();
    assert!(st.success(), "publisher failed");
    // The players are still connected (waiting for a publisher to come back).
    let s = node.stream("alice").unwrap();
    assert!(s.frames >= published);
    assert!(!s.live);
    assert!(!s.local_publisher);
    for p in players {
        let p = p.await.unwrap();
        assert_eq!(
            p.sorted_codecs(),
            ["aac", "h264"],
            "ffprobe stderr: {}",
            p.stderr
        );
        assert!(
            p.video() * 100 >= published * 95,
            "player got {} of {published} video frames",
            p.video()
        );
        assert!(p.audio() > 0);
        p.assert_monotonic();
    }
}

#[tokio::test]
async fn late_player_starts_at_once_on_the_cached_keyframe() {
    if !have("ffmpeg", "publisher and players") {
        return;
    }
    // 2 s keyframe interval; the player joins 3 s in, between the keyframes at 2 s and 4 s.
    let clip = clip(12, 60);
    let node = TestNode::start(&[]).await;
    let url = node.url("late");
    let _publisher = publish(&clip, &url);
    assert!(
        wait_until(Duration::from_secs(10), || node
            .stream("late")
            .is_some_and(|s| s.frames > 0))
        .await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = play_with(&url, 4, 20, Some(10)).await.unwrap();
    let first = p
        .first_video()
        .unwrap_or_else(|| panic!("no video: {}", p.stderr));
    assert!(
        first.key,
        "the first video frame must be a keyframe: {first:?}"
    );
    // Without a keyframe cache the first frame would be the keyframe at 4000 ms (or later).
    assert!(
        (2000..4000).contains(&first.dts),
        "first frame should be the cached keyframe from 2000 ms, got {}",
        first.dts
    );
}

#[tokio::test]
async fn reconnecting_publisher_keeps_players_with_monotonic_timestamps() {
    if !have("ffmpeg", "publisher and players") {
        return;
    }
    let clip = clip(4, 60);
    let per_publish = video_packets(&clip);
    let node = TestNode::start(&[]).await;
    let url = node.url("obs");
    let player = play(&url, 5, 60);
    assert!(
        wait_until(Duration::from_secs(10), || node
            .stream("obs")
            .is_some_and(|s| s.players == 1))
        .await
    );
    for _ in 0..2 {
        let st = publish(&clip, &url).wait().await.unwrap();
        assert!(st.success());
        // The player is still connected between the two publishes.
        assert_eq!(node.stream("obs").unwrap().players, 1);
    }
    let p = player.await.unwrap();
    assert!(
        p.video() * 100 >= 2 * per_publish * 90,
        "player got {} video frames over two publishes of {per_publish}",
        p.video()
    );
    p.assert_monotonic();
}

#[tokio::test]
async fn publish_without_the_key_is_refused_with_a_status_and_with_it_works() {
    if !have("ffmpeg", "publisher") {
        return;
    }
    let clip = clip(3, 30);
    let node = TestNode::start(&["--publish-auth", "always"]).await;
    let status = node.status();
    assert!(status.publish_key_required);
    let key = status
        .publish_key
        .expect("the key is shown to local requests");

    let out = publish(&clip, &node.url("cam"))
        .wait_with_output()
        .await
        .unwrap();
    assert!(!out.status.success(), "a publish without the key must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("publish key"),
        "ffmpeg should show our reason, got: {err}"
    );
    let out = publish(&clip, &node.url("cam?key=wrongwrong"))
        .wait_with_output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let metrics = http_get(node.http, "/metrics").1;
    assert!(
        metrics.contains(r#"streamr_rtmp_sessions_rejected_total{reason="unauthorized"} 2"#),
        "{metrics}"
    );

    let player = play(&node.url("cam"), 3, 30);
    assert!(
        wait_until(Duration::from_secs(10), || node
            .stream("cam")
            .is_some_and(|s| s.players == 1))
        .await
    );
    let st = publish(&clip, &node.url(&format!("cam?key={key}")))
        .wait()
        .await
        .unwrap();
    assert!(st.success());
    assert!(player.await.unwrap().video() > 0);
}

#[tokio::test]
async fn status_hides_the_publish_key_from_other_machines_and_reports_streams() {
    let node = TestNode::start(&[]).await;
    // The JSON itself, not the typed status: external checks read these exact field names.
    let s = node.status_json();
    assert_eq!(s["peer_id"], node.peer_id);
    assert_eq!(s["rtmp_listen"], node.rtmp.to_string());
    assert_eq!(s["http_listen"], node.http.to_string());
    assert_eq!(s["publish_key_required"], false);
    assert!(s["streams"].as_array().unwrap().is_empty());
    // Requests from loopback see the key; the API never shows it otherwise (checked in the web crate).
    assert!(s["publish_key"].as_str().is_some_and(|k| k.len() >= 16));
    let (code, _) = http_get(node.http, "/nope");
    assert_eq!(code, 404);
}

#[tokio::test]
async fn player_of_a_missing_stream_gets_stream_not_found() {
    if !have("ffmpeg", "player") {
        return;
    }
    let node = TestNode::start(&[]).await;
    let started = std::time::Instant::now();
    let p = play(&node.url("nobody"), 30, 40).await.unwrap();
    assert_eq!(p.video(), 0);
    assert!(
        p.stderr.contains("StreamNotFound") || p.stderr.contains("no stream named"),
        "{}",
        p.stderr
    );
    // The player was told (after the 10 s wait), not left hanging until its own 30 s timeout.
    assert!(started.elapsed() < Duration::from_secs(25));
}
