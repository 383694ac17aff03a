//! The dashboard in a real browser (Debian's chromium driven through chromedriver): the page loads with no
//! console errors, a stream started by ffmpeg appears without a reload, the in-page player plays, invites
//! make a QR code that zbarimg (not our decoder) reads back to the invite link, a second node's browser
//! joins with the code and plays the first node's stream, typos are located, settings persist, Stop and
//! Start work and survive a restart, and rebinding and cross-site requests get 403. The coordinator card
//! shows a real `streamr-coordinator`'s answers, and says in words when it is down. Screenshots of each
//! page go to `target/tmp/screenshots/`; the newcomer flow's clicks and seconds are printed.

mod common;

use common::coordinator::{Coordinator, coord, coordinator_binary};
use common::{TestNode, clip, have, publish, require_external};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// One browser: chromedriver, its Chromium session, a fresh profile. Everything is stopped on drop.
struct Browser {
    client: Client,
    driver: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

/// The browser, and what the main test also needs (QR decoding, a publisher).
const ALL_TOOLS: &[(&str, &str)] = &[
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
    ("zbarimg", "zbar-tools"),
    ("ffmpeg", "ffmpeg"),
];

/// Whether each `(tool, package)` is installed; otherwise prints SKIP (or panics under
/// `STREAMR_REQUIRE_EXTERNAL=1`).
fn tools_present(tools: &[(&str, &str)]) -> bool {
    let mut ok = true;
    for &(tool, pkg) in tools {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if require_external() {
                panic!("{tool} is required (apt-get install {pkg}) and STREAMR_REQUIRE_EXTERNAL=1");
            }
            eprintln!("SKIP: {tool} not found: apt-get install {pkg} to run the browser tests");
            ok = false;
        }
    }
    ok && (!tools.iter().any(|(t, _)| *t == "ffmpeg")
        || have("ffmpeg", "publishes the test stream"))
}

impl Browser {
    async fn start() -> Browser {
        let port = common::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chromedriver");
        let up = common::wait_until(Duration::from_secs(15), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        assert!(up, "chromedriver did not listen");
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--window-size=1280,1000", "--autoplay-policy=no-user-gesture-required",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("start a chromium session");
        Browser {
            client,
            driver,
            port,
            _profile: profile,
        }
    }

    /// Console messages of level SEVERE since the last call (chromedriver's log endpoint).
    async fn console_errors(&self) -> Vec<String> {
        let id = self.client.session_id().await.unwrap().unwrap();
        let url = format!("http://127.0.0.1:{}/session/{id}/se/log", self.port);
        let text = reqwest::Client::new()
            .post(url)
            .body(r#"{"type":"browser"}"#)
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        v["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect()
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Waits until `script` returns true (polled every 100 ms).
    async fn until(&self, what: &str, limit: Duration, script: &str) {
        let deadline = Instant::now() + limit;
        loop {
            if self.js(script).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let shot = self.shot("failure").await;
                panic!(
                    "timed out waiting for {what} ({script}); screenshot {}",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    async fn value(&self, id: &str) -> String {
        self.js(&format!("return document.getElementById('{id}').value"))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn shot(&self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
        path
    }

    async fn close(self) {
        let _ = self.client.close().await;
        let mut d = self.driver;
        let _ = d.kill().await;
    }
}

/// A raw HTTP request; returns the status code.
fn raw(addr: SocketAddr, request: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

const PLAYING: &str =
    "const v = document.getElementById('player'); return !!v && v.currentTime > 1.0;";

fn live_here(name: &str) -> String {
    format!("return !!document.querySelector('#local-streams li[data-stream=\"{name}\"]');")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    if !tools_present(ALL_TOOLS) {
        return;
    }
    let _serial = common::serial().await;
    let a = TestNode::start(&["--upnp", "false", "--nickname", "Alice"]).await;
    let ba = Browser::start().await;
    let home_a = format!("http://{}/", a.http);
    ba.client.goto(&home_a).await.unwrap();
    ba.until(
        "the node's state",
        Duration::from_secs(10),
        "return document.getElementById('state-pill').textContent === 'Running';",
    )
    .await;
    ba.shot("home-empty").await;

    // A stream appears without a reload (the event stream).
    let file = clip(120, 30);
    let _ffmpeg = publish(&file, &a.url("alice"));
    ba.until(
        "the stream to appear",
        Duration::from_secs(20),
        &live_here("alice"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ba.shot("home").await;

    // The in-page player plays it.
    ba.click("#local-streams button.play").await;
    ba.until("the player to advance", Duration::from_secs(20), PLAYING)
        .await;
    ba.shot("watch").await;
    ba.click("#watch-close").await;

    // The newcomer flow, as a person does it: A invites, B opens the link and joins; B plays.
    let flow_started = Instant::now();
    let mut clicks = 0;
    ba.click("#invite-open").await;
    clicks += 1;
    ba.click("#invite-create").await;
    clicks += 1;
    ba.until(
        "the invite",
        Duration::from_secs(10),
        "return !document.getElementById('invite-result').hidden;",
    )
    .await;
    ba.click("button[data-copy=invite-link]").await;
    clicks += 1;
    let code = ba.value("invite-code").await;
    let link = ba.value("invite-link").await;
    assert!(link.starts_with("http://127.0.0.1:8080/join#"), "{link}");
    assert!(link.ends_with(&code.replace('-', "")), "{link} / {code}");
    let qr_shot = ba.shot("invite").await;
    // The QR code, read by zbarimg from the screenshot of the page.
    let out = std::process::Command::new("zbarimg")
        .args(["--quiet", "--raw"])
        .arg(&qr_shot)
        .output()
        .expect("run zbarimg");
    let decoded = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(decoded, link, "zbarimg read {decoded:?}");
    ba.click("#invite-result button[value=done]").await;

    let b = TestNode::start(&["--upnp", "false"]).await;
    let bb = Browser::start().await;
    // The link names the default dashboard port; this test's B listens elsewhere.
    let join_b = format!("http://{}/join#{}", b.http, link.split_once('#').unwrap().1);
    bb.client.goto(&join_b).await.unwrap();
    bb.until(
        "the code filled in",
        Duration::from_secs(10),
        "return document.getElementById('join-code').value.length > 100;",
    )
    .await;
    bb.shot("join").await;
    bb.click("#join-button").await;
    clicks += 1;
    bb.until("B to play A's stream", Duration::from_secs(40), PLAYING)
        .await;
    let flow = flow_started.elapsed();
    bb.shot("watch-friend").await;
    println!(
        "newcomer flow (invite -> join -> playing in B's browser): {clicks} clicks, {:.1} s",
        flow.as_secs_f64()
    );

    // B's home lists Alice as an online friend and her stream as hers.
    bb.click("#nav-home").await;
    bb.until(
        "Alice on B's home",
        Duration::from_secs(15),
        "const f = document.querySelector('#friends li'); const m = document.querySelector('#mesh-streams li[data-stream=\"alice\"]');\
         return !!f && f.textContent.includes('Alice') && f.textContent.includes('online') && !!m && m.textContent.includes('from Alice');",
    )
    .await;
    bb.shot("home-friend").await;
    let friends: Value =
        serde_json::from_str(&std::fs::read_to_string(b.dir.path().join("friends.json")).unwrap())
            .unwrap();
    assert_eq!(friends[0]["peer_id"], a.peer_id);

    // No console errors in B's browser through the join and playback (the typo below answers 400, which
    // the browser logs).
    let errors_b = bb.console_errors().await;
    assert!(
        errors_b.is_empty(),
        "console errors in B's browser: {errors_b:#?}"
    );

    // A typo is located.
    let mut typo: Vec<char> = code.chars().collect();
    typo[12] = if typo[12] == 'X' { 'Y' } else { 'X' };
    let typo: String = typo.into_iter().collect();
    bb.client
        .goto(&format!("http://{}/join", b.http))
        .await
        .unwrap();
    bb.until(
        "the join page",
        Duration::from_secs(10),
        "return !document.getElementById('view-join').hidden;",
    )
    .await;
    bb.js(&format!(
        "document.getElementById('join-code').value = '{typo}'; return true;"
    ))
    .await;
    bb.click("#join-button").await;
    bb.until(
        "the typo message",
        Duration::from_secs(10),
        "return document.getElementById('join-status').textContent.includes('typo near character');",
    )
    .await;
    bb.shot("join-typo").await;

    // A cross-site request from B's page to A's API is refused; A keeps running.
    bb.js(&format!(
        "fetch('http://{}/api/v1/node/stop', {{method: 'POST', mode: 'no-cors', credentials: 'include'}}); return true;",
        a.http
    ))
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let overview: Value =
        serde_json::from_str(&common::http_get(a.http, "/api/v1/overview").1).unwrap();
    assert_eq!(
        overview["running"], true,
        "a cross-site request stopped the node"
    );
    let s = raw(
        a.http,
        "POST /api/v1/node/stop HTTP/1.0\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n\r\n",
    );
    assert_eq!(s, 403);
    let s = raw(
        a.http,
        "GET /api/v1/status HTTP/1.0\r\nHost: rebind.evil.example\r\n\r\n",
    );
    assert_eq!(s, 403, "DNS rebinding");

    // Settings persist.
    ba.client.goto(&format!("{home_a}#settings")).await.unwrap();
    ba.until(
        "the settings form",
        Duration::from_secs(10),
        "return !!document.getElementById('setting-max_upload_kbps');",
    )
    .await;
    let upload = ba
        .client
        .find(Locator::Id("setting-max_upload_kbps"))
        .await
        .unwrap();
    upload.clear().await.unwrap();
    upload.send_keys("4000").await.unwrap();
    ba.click("#settings-save").await;
    ba.until(
        "the settings saved",
        Duration::from_secs(30),
        "return document.getElementById('settings-status').textContent.startsWith('Saved');",
    )
    .await;
    ba.shot("settings").await;
    let toml = std::fs::read_to_string(a.dir.path().join("config.toml")).unwrap();
    assert!(toml.contains("max_upload_kbps = 4000"), "{toml}");
    assert_eq!(a.status().max_upload_kbps, 4000);
    let errors_a = ba.console_errors().await;
    assert!(
        errors_a.is_empty(),
        "console errors in A's browser: {errors_a:#?}"
    );
    // A bad value says what is wrong, next to the field (the form was drawn anew after saving).
    let upload = ba
        .client
        .find(Locator::Id("setting-max_upload_kbps"))
        .await
        .unwrap();
    upload.clear().await.unwrap();
    upload.send_keys("-5").await.unwrap();
    ba.click("#settings-save").await;
    ba.until(
        "the field's error",
        Duration::from_secs(10),
        "return document.querySelector('.field[data-key=max_upload_kbps] .err').textContent.length > 0;",
    )
    .await;

    // Stop, then Start, and the state survives a restart of the process.
    ba.client.goto(&home_a).await.unwrap();
    ba.until(
        "A running",
        Duration::from_secs(10),
        "return document.getElementById('state-pill').textContent === 'Running';",
    )
    .await;
    ba.click("#power-button").await;
    ba.until(
        "A stopped",
        Duration::from_secs(20),
        "return document.getElementById('state-pill').textContent === 'Stopped';",
    )
    .await;
    ba.shot("stopped").await;
    assert!(
        TcpStream::connect(a.rtmp).is_err(),
        "the RTMP edge is closed"
    );
    // Restart A's process on the same data dir.
    let TestNode {
        mut process, dir, ..
    } = a;
    process.stop(Duration::from_secs(15)).await;
    let a2 = TestNode::start_in(dir, &["--upnp", "false"]).await;
    let home_a2 = format!("http://{}/", a2.http);
    ba.client.goto(&home_a2).await.unwrap();
    ba.until(
        "A still stopped after a restart",
        Duration::from_secs(10),
        "return document.getElementById('state-pill').textContent === 'Stopped';",
    )
    .await;
    ba.click("#power-button").await;
    ba.until(
        "A running again",
        Duration::from_secs(30),
        "return document.getElementById('state-pill').textContent === 'Running';",
    )
    .await;
    // Port 0 in the test: the edge bound a new port when it started again.
    let rtmp: SocketAddr = a2.status().rtmp_listen.parse().unwrap();
    assert!(
        TcpStream::connect(rtmp).is_ok(),
        "the RTMP edge is open again"
    );

    ba.close().await;
    bb.close().await;
}

/// The card's state line, its help, and whether the card is shown.
const CARD: &str = "const card = document.getElementById('coordinator-card'); \
    const state = document.getElementById('coordinator-state').textContent; \
    const help = document.getElementById('coordinator-help');";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_card_in_a_real_browser() {
    if !tools_present(&ALL_TOOLS[..2]) {
        return;
    }
    let Some(bin) = coordinator_binary() else {
        return;
    };
    let _serial = common::serial().await;
    let mut coordinator = Coordinator::start(&bin, common::free_port()).await;
    coordinator.set_rate(0.5).await;
    let url = coordinator.url();
    let a = TestNode::start(&["--upnp", "false", "--coordinator", &url]).await;
    assert!(
        common::wait_until(Duration::from_secs(20), || {
            let c = coord(&a);
            c.online && c.registered && c.trust.is_some() && c.earnings.is_some()
        })
        .await,
        "A never registered: {:?}",
        coord(&a)
    );

    let b = Browser::start().await;
    b.client.goto(&format!("http://{}/", a.http)).await.unwrap();
    b.until(
        "the card to say the node is connected and registered",
        Duration::from_secs(15),
        &format!(
            "{CARD} return !card.hidden && state === 'Connected to {url}' \
             && !document.getElementById('coordinator-figures').hidden;"
        ),
    )
    .await;
    // The figures are the coordinator's: its trust score for this node, its rate, nothing earned yet.
    let trust_shown = || async {
        b.js("return document.getElementById('coordinator-trust').textContent;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let shown = trust_shown().await;
        let score = coordinator.node(&a.peer_id)["trust_score"].clone();
        if shown == format!("{score} / 100") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the card shows trust {shown:?}, the coordinator says {score}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let earnings = b
        .js("return document.getElementById('coordinator-earnings').textContent;")
        .await;
    assert_eq!(
        earnings.as_str(),
        Some("0.0000 today, 0.0000 in all (0.5 per GB relayed)"),
        "{earnings}"
    );
    let bytes = b
        .js("return document.getElementById('coordinator-bytes').textContent;")
        .await;
    assert!(
        bytes
            .as_str()
            .is_some_and(|t| t.contains("Only signed bytes are paid")),
        "{bytes}"
    );
    b.shot("coordinator-online").await;

    // The coordinator dies: the card says so in words, and that the node keeps working.
    coordinator.kill().await;
    b.until(
        "the card to say the coordinator is unreachable",
        Duration::from_secs(20),
        &format!(
            "{CARD} return state === 'Coordinator unreachable' && !help.hidden \
             && help.textContent.startsWith('Your node keeps working: friends can still watch and relay.') \
             && help.textContent.includes('does not answer') \
             && help.textContent.includes('It tries again by itself') \
             && !help.textContent.includes('os error');"
        ),
    )
    .await;
    let pill = b
        .js("return document.getElementById('state-pill').textContent;")
        .await;
    assert_eq!(pill.as_str(), Some("Running"), "the node itself is fine");
    b.shot("coordinator-down").await;

    // It comes back on the same database: the card follows (the node retries with a backoff).
    coordinator.restart().await;
    b.until(
        "the card to say the node is connected again",
        Duration::from_secs(45),
        &format!("{CARD} return state === 'Connected to {url}';"),
    )
    .await;
    let errors = b.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");

    b.close().await;
    assert_eq!(a.stop().await, Some(0));
}
