//! Upstream relays against real RTMP servers: ffmpeg in `-listen 1` mode and nginx-rtmp.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn pull_from_ffmpeg_listen() {
    if !have("ffmpeg", "upstream server and player") {
        return;
    }
    let clip = clip(5, 30);
    let published = video_packets(&clip);
    let port = free_port();
    let upstream = format!("rtmp://127.0.0.1:{port}/live/src");
    let node = TestNode::start(&["--pull", &format!("up={upstream}")]).await;
    let player = play(&node.url("up"), 4, 60);
    assert!(
        wait_until(Duration::from_secs(10), || node
            .stream("up")
            .is_some_and(|s| s.players == 1))
        .await
    );
    // ffmpeg as a one-shot RTMP server: it waits for our pull, then sends the clip in real time.
    let mut server = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(&clip)
        .args(["-c", "copy", "-f", "flv", "-listen", "1", &upstream])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let p = player.await.unwrap();
    let _ = server.wait().await;
    assert_eq!(
        p.sorted_codecs(),
        ["aac", "h264"],
        "{}\n{}",
        p.stderr,
        node.log_text()
    );
    assert!(
        p.video() * 100 >= published * 90,
        "got {} of {published}",
        p.video()
    );
    p.assert_monotonic();
}

#[tokio::test]
async fn push_to_ffmpeg_listen() {
    if !have("ffmpeg", "publisher and upstream server") {
        return;
    }
    let clip = clip(5, 30);
    let published = video_packets(&clip);
    let port = free_port();
    let upstream = listen_and_play(port, 4, 60);
    let node = TestNode::start(&["--push", &format!("cam=rtmp://127.0.0.1:{port}/live/dst")]).await;
    let st = publish(&clip, &node.url("cam")).wait().await.unwrap();
    assert!(st.success());
    let p = upstream.await.unwrap();
    assert_eq!(p.sorted_codecs(), ["aac", "h264"], "{}", p.stderr);
    assert!(
        p.video() * 100 >= published * 90,
        "upstream got {} of {published}",
        p.video()
    );
}

#[tokio::test]
async fn push_to_and_pull_from_nginx_rtmp() {
    if !have("ffmpeg", "publisher and players") {
        return;
    }
    let Some(nginx) = Nginx::start().await else {
        return;
    };
    let clip = clip(6, 30);
    let published = video_packets(&clip);
    // Node A pushes its stream "cam" to nginx; node B pulls it back from nginx as "copy".
    let a = TestNode::start(&["--push", &format!("cam={}", nginx.url("cam"))]).await;
    let b = TestNode::start(&["--pull", &format!("copy={}", nginx.url("cam"))]).await;
    let from_nginx = play(&nginx.url("cam"), 5, 60);
    let from_b = play(&b.url("copy"), 5, 60);
    assert!(
        wait_until(Duration::from_secs(10), || b
            .stream("copy")
            .is_some_and(|s| s.players == 1))
        .await
    );
    let st = publish(&clip, &a.url("cam")).wait().await.unwrap();
    assert!(st.success());
    let n = from_nginx.await.unwrap();
    let c = from_b.await.unwrap();
    assert!(
        n.codecs.contains(&"h264".to_string()),
        "nginx player: {}",
        n.stderr
    );
    assert!(
        n.video() * 100 >= published * 80,
        "nginx player got {} of {published}",
        n.video()
    );
    assert_eq!(c.sorted_codecs(), ["aac", "h264"], "{}", c.stderr);
    assert!(
        c.video() * 100 >= published * 80,
        "pull from nginx got {} of {published}",
        c.video()
    );
    drop(nginx);
}
