//! Shared helpers of the integration tests: start the real `streamr-node` binary on free ports (through
//! netlab's node launcher, the one netlab itself uses), read its typed status, and drive real ffmpeg
//! publishers and players. Every process started here is killed on drop.
#![allow(dead_code)] // each test binary uses a different subset

pub mod coordinator;

use serde_json::Value;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use streamr_netlab::node::{
    Launcher, NodeProcess, STATUS_PATH, Status, StatusExt, StreamStatus, http,
};
use tokio::process::{Child, Command};

/// True when the tests must not skip for a missing external tool (CI sets it after installing them).
pub fn require_external() -> bool {
    std::env::var("STREAMR_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1")
}

/// Returns whether `tool` can run; otherwise prints why the test skips, or panics under
/// `STREAMR_REQUIRE_EXTERNAL=1`.
pub fn have(tool: &str, why: &str) -> bool {
    let ok = std::process::Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        if require_external() {
            panic!(
                "{tool} is required ({why}) and STREAMR_REQUIRE_EXTERNAL=1, but it cannot be run"
            );
        }
        eprintln!(
            "SKIP: {tool} not found ({why}); install it (e.g. apt-get install ffmpeg) to run this test"
        );
    }
    ok
}

/// The `streamr-node` binary under test: `STREAMR_TEST_NODE_BIN` when set (a copy of this worktree's build,
/// when several worktrees share one cargo target dir and overwrite each other's binary), else cargo's.
pub fn node_binary() -> PathBuf {
    std::env::var_os("STREAMR_TEST_NODE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_streamr-node").into())
}

/// A `streamr-node` process on free loopback ports with its own data dir, started through netlab's
/// launcher (the one both netlab and these tests use).
pub struct TestNode {
    /// The process (killed on drop).
    pub process: NodeProcess,
    /// RTMP address.
    pub rtmp: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// Node id.
    pub peer_id: String,
    /// Data dir (removed on drop).
    pub dir: tempfile::TempDir,
}

/// How long a node may take to print its ready line.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// How long a node gets to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(15);

impl TestNode {
    /// Starts a node with `extra` flags and waits until it is ready.
    pub async fn start(extra: &[&str]) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, extra).await
    }

    /// Starts a node with an existing data dir.
    pub async fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> TestNode {
        // A test may bind the RTMP edge elsewhere (e.g. 0.0.0.0:0 to be reached from a LAN address).
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut rtmp_listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        if let Some(i) = extra.iter().position(|a| a == "--rtmp-listen") {
            rtmp_listen = extra[i + 1].parse().expect("--rtmp-listen ADDR");
            extra.drain(i..=i + 1);
        }
        let launcher = Launcher {
            extra,
            rtmp_listen,
            env_remove: vec!["RUST_LOG".into()],
            // STREAMR_TEST_LOG raises the nodes' log level when debugging a test.
            env: vec![(
                "STREAMR_LOG".into(),
                std::env::var("STREAMR_TEST_LOG")
                    .unwrap_or_else(|_| "info,streamr_edge=debug".into()),
            )],
            ..Launcher::new(node_binary(), dir.path())
        };
        let mut process = launcher.spawn().expect("spawn streamr-node");
        let ready = match process.wait_ready(READY_LIMIT).await {
            Ok(r) => r,
            Err(e) => panic!("{e}\nthe whole log:\n{}", process.log_text()),
        };
        let mut rtmp = ready.rtmp_listen;
        if rtmp.ip().is_unspecified() {
            rtmp.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        TestNode {
            process,
            rtmp,
            http: ready.http_listen,
            peer_id: ready.peer_id,
            dir,
        }
    }

    /// `rtmp://127.0.0.1:PORT/live/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("rtmp://{}/live/{name}", self.rtmp)
    }

    /// GET `/api/v1/status`, typed.
    pub fn status(&self) -> Status {
        self.process
            .status_blocking()
            .unwrap_or_else(|e| panic!("status of {}: {e:#}", self.http))
    }

    /// GET `/api/v1/status` as raw JSON, for tests of the JSON itself (field names, what is absent).
    pub fn status_json(&self) -> Value {
        let body = http_get(self.http, STATUS_PATH).1;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad status JSON ({e}): {body}"))
    }

    /// The status entry of stream `name`.
    pub fn stream(&self, name: &str) -> Option<StreamStatus> {
        self.status().stream(name).cloned()
    }

    /// The node's loopback QUIC multiaddr (with `/p2p/<id>`), for another node's `--bootstrap`.
    pub fn mesh_addr(&self) -> String {
        let s = self.status();
        s.listen_addrs
            .iter()
            .find(|a| a.starts_with("/ip4/127.0.0.1/") && a.contains("quic-v1"))
            .unwrap_or_else(|| panic!("no loopback QUIC address in {:?}", s.listen_addrs))
            .clone()
    }

    /// Resident memory of the node process in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.process.rss_kib().unwrap_or(0)
    }

    /// Kills the node at once (SIGKILL), as a crash or a pulled plug would.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.process.alive()
    }

    /// The log so far, joined.
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status code.
    pub async fn stop(mut self) -> Option<i32> {
        self.process.stop(STOP_GRACE).await
    }
}

/// POST `path` on a node with its API key (as the CLI does), waiting at most `limit`; returns the status and
/// the JSON body.
pub async fn api_post(node: &TestNode, path: &str, body: Value, limit: Duration) -> (u16, Value) {
    let key = std::fs::read_to_string(node.dir.path().join("api-key")).expect("the api-key file");
    let resp = reqwest::Client::new()
        .post(format!("http://{}{path}", node.http))
        .header("X-API-Key", key.trim())
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .timeout(limit)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("a body");
    let json =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} answered {text} ({e})"));
    (status, json)
}

/// A plain HTTP/1.0 GET; returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let a = http::get_blocking(addr, path, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e:#}"));
    (a.code, a.body)
}

/// A test clip: H.264 + AAC in FLV, 30 fps, keyframe every `gop` frames, encoded once per test binary.
pub fn clip(secs: u32, gop: u32) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let path = dir.path().join(format!("clip-{secs}s-g{gop}.flv"));
    if !path.exists() {
        let st = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=426x240:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-tune",
                "zerolatency",
                "-pix_fmt",
                "yuv420p",
            ])
            .args([
                "-b:v",
                "600k",
                "-g",
                &gop.to_string(),
                "-keyint_min",
                &gop.to_string(),
            ])
            .args([
                "-sc_threshold",
                "0",
                "-c:a",
                "aac",
                "-b:a",
                "64k",
                "-ar",
                "48000",
            ])
            .args(["-t", &secs.to_string(), "-f", "flv"])
            .arg(&path)
            .status()
            .expect("run ffmpeg");
        assert!(st.success(), "ffmpeg could not encode the test clip");
    }
    path
}

/// Number of video packets in a file.
pub fn video_packets(file: &Path) -> u64 {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("packet count")
}

/// `ffmpeg -re -i FILE -c copy -f flv URL`: a publisher that sends in real time.
pub fn publish(file: &Path, url: &str) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(file)
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg publisher")
}

/// One packet a player received.
#[derive(Debug, Clone)]
pub struct Packet {
    /// "video" or "audio" (or "data").
    pub kind: String,
    /// Decode timestamp in milliseconds.
    pub dts: i64,
    /// A keyframe.
    pub key: bool,
}

/// What a player received.
#[derive(Debug, Default, Clone)]
pub struct Played {
    /// Codec names of the streams, in order.
    pub codecs: Vec<String>,
    /// Every packet, in arrival order.
    pub packets: Vec<Packet>,
    /// Everything ffprobe printed on stderr.
    pub stderr: String,
}

impl Played {
    /// Video packets received.
    pub fn video(&self) -> u64 {
        self.packets.iter().filter(|p| p.kind == "video").count() as u64
    }
    /// Audio packets received.
    pub fn audio(&self) -> u64 {
        self.packets.iter().filter(|p| p.kind == "audio").count() as u64
    }
    /// Codec names, sorted (track order depends on which packet arrives first).
    pub fn sorted_codecs(&self) -> Vec<String> {
        let mut c = self.codecs.clone();
        c.sort();
        c
    }
    /// The first video packet.
    pub fn first_video(&self) -> Option<&Packet> {
        self.packets.iter().find(|p| p.kind == "video")
    }
    /// Video frames received over the frames that the span of their timestamps should hold at `fps`: 1.0
    /// when nothing was lost between the first and the last frame received.
    pub fn video_continuity(&self, fps: f64) -> f64 {
        let dts: Vec<i64> = self
            .packets
            .iter()
            .filter(|p| p.kind == "video")
            .map(|p| p.dts)
            .collect();
        let (Some(first), Some(last)) = (dts.iter().min(), dts.iter().max()) else {
            return 0.0;
        };
        let expected = ((last - first) as f64 / 1000.0 * fps).round() + 1.0;
        dts.len() as f64 / expected
    }
    /// Checks that decode timestamps never go back within a track.
    pub fn assert_monotonic(&self) {
        for kind in ["video", "audio"] {
            let dts: Vec<i64> = self
                .packets
                .iter()
                .filter(|p| p.kind == kind)
                .map(|p| p.dts)
                .collect();
            for w in dts.windows(2) {
                assert!(
                    w[1] >= w[0],
                    "{kind} timestamps went back: {} then {}",
                    w[0],
                    w[1]
                );
            }
        }
    }
}

/// An ffprobe player that records every packet until the stream stops for `idle_secs` (its `-rw_timeout`),
/// or until `max_packets` packets when given. Wrapped in `timeout -k` so it can never hang a test.
pub fn play(url: &str, idle_secs: u32, max_secs: u32) -> tokio::task::JoinHandle<Played> {
    play_with(url, idle_secs, max_secs, None)
}

/// [`play`] that stops after `max_packets` packets.
pub fn play_with(
    url: &str,
    idle_secs: u32,
    max_secs: u32,
    max_packets: Option<u32>,
) -> tokio::task::JoinHandle<Played> {
    let mut extra = Vec::new();
    if let Some(n) = max_packets {
        extra = vec!["-read_intervals".to_string(), format!("%+#{n}")];
    }
    ffprobe_player(url.to_string(), extra, idle_secs, max_secs)
}

/// Runs ffprobe as a player of `url` (with `extra` options before the URL), under `timeout -k`.
fn ffprobe_player(
    url: String,
    extra: Vec<String>,
    idle_secs: u32,
    max_secs: u32,
) -> tokio::task::JoinHandle<Played> {
    tokio::spawn(async move {
        let out = Command::new("timeout")
            .args(["-k", "2", &max_secs.to_string(), "ffprobe", "-v", "error"])
            .args([
                "-rw_timeout",
                &(u64::from(idle_secs) * 1_000_000).to_string(),
            ])
            .args([
                "-show_entries",
                "stream=codec_type,codec_name:packet=codec_type,dts,flags",
            ])
            .args(["-of", "json"])
            .args(&extra)
            .arg(&url)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .expect("run ffprobe");
        parse_played(&out)
    })
}

/// Runs heavy multi-node tests of one binary one at a time: on two cores, several at once starve each
/// other's nodes and measure the machine instead of the code.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// Waits until `cond` holds, polling every 100 ms, up to `limit`.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}

/// The value of the first metric line that starts with `line_prefix` (0 when absent).
pub fn metric(text: &str, line_prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A free TCP port on loopback (bound and released; fine for tests that start a server on it at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An ffprobe that listens as an RTMP server (`-listen 1`) and records what one publisher sends it.
pub fn listen_and_play(
    port: u16,
    idle_secs: u32,
    max_secs: u32,
) -> tokio::task::JoinHandle<Played> {
    let url = format!("rtmp://127.0.0.1:{port}/live/dst");
    ffprobe_player(url, vec!["-listen".into(), "1".into()], idle_secs, max_secs)
}

fn parse_played(out: &std::process::Output) -> Played {
    let mut p = Played {
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        ..Played::default()
    };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    for s in v["streams"].as_array().into_iter().flatten() {
        p.codecs
            .push(s["codec_name"].as_str().unwrap_or("?").to_string());
    }
    for k in v["packets"].as_array().into_iter().flatten() {
        p.packets.push(Packet {
            kind: k["codec_type"].as_str().unwrap_or("?").to_string(),
            dts: k["dts"].as_i64().unwrap_or(-1),
            key: k["flags"].as_str().is_some_and(|f| f.starts_with('K')),
        });
    }
    p
}

/// nginx with the RTMP module, in the foreground, on a free loopback port (Debian `nginx` +
/// `libnginx-mod-rtmp`). Killed on drop.
pub struct Nginx {
    /// The process.
    pub child: Child,
    /// RTMP port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    /// nginx runs a master and a worker; killing the master alone leaves the worker behind, so nginx gets
    /// its own process group and the whole group is stopped.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Where Debian installs the RTMP module.
pub const NGINX_RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

impl Nginx {
    /// Starts nginx-rtmp, or returns None (after the skip rule) when it is not installed.
    pub async fn start() -> Option<Nginx> {
        if !Path::new(NGINX_RTMP_MODULE).exists() || !Path::new("/usr/sbin/nginx").exists() {
            if require_external() {
                panic!("nginx with libnginx-mod-rtmp is required and STREAMR_REQUIRE_EXTERNAL=1");
            }
            eprintln!("SKIP: nginx-rtmp not installed (apt-get install nginx libnginx-mod-rtmp)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "load_module {NGINX_RTMP_MODULE};\nworker_processes 1;\ndaemon off;\nerror_log {d}/error.log;\n\
             pid {d}/nginx.pid;\nevents {{ worker_connections 1024; }}\n\
             http {{ client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; \
             uwsgi_temp_path {d}/u; scgi_temp_path {d}/s; access_log off; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096; \
             application live {{ live on; record off; }} }} }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .expect("spawn nginx");
        let up = wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        assert!(
            up,
            "nginx-rtmp did not start: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
        Some(Nginx {
            child,
            port,
            _dir: dir,
        })
    }

    /// `rtmp://127.0.0.1:PORT/live/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name}", self.port)
    }
}

// ---- Raw RTMP for hostile tests (edge hardening) ----

/// A TCP connection to an RTMP server with the handshake done (rml_rtmp's client handshake), as an attacker
/// would start; returns the socket and any bytes the server sent after its handshake.
pub async fn rtmp_handshake(addr: SocketAddr) -> (tokio::net::TcpStream, Vec<u8>) {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect rtmp");
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1().unwrap())
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("handshake timed out")
            .expect("handshake read");
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
                return (s, remaining_bytes);
            }
        }
    }
}

/// One RTMP message as chunks: a full (type 0) header on chunk stream `csid` (3..=63), then continuation
/// (type 3) chunks of `chunk_size` bytes.
pub fn rtmp_chunks(
    csid: u8,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
    chunk_size: usize,
) -> Vec<u8> {
    assert!((2..=63).contains(&csid) && payload.len() < 1 << 24);
    let mut out = Vec::with_capacity(payload.len() + payload.len() / chunk_size + 12);
    out.push(csid);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&stream_id.to_le_bytes());
    for (i, piece) in payload.chunks(chunk_size).enumerate() {
        if i > 0 {
            out.push(0xc0 | csid);
        }
        out.extend_from_slice(piece);
    }
    out
}

/// AMF0 bytes: a command `name` with transaction id 1 whose command object nests `depth` objects, each the
/// value of key `abcd` in the one above (7 bytes a level: 200,000 levels are 1.4 MB).
pub fn amf0_nested_command(name: &str, depth: usize) -> Vec<u8> {
    let mut p = vec![0x02];
    p.extend_from_slice(&(name.len() as u16).to_be_bytes());
    p.extend_from_slice(name.as_bytes());
    p.push(0x00);
    p.extend_from_slice(&1f64.to_be_bytes());
    p.reserve(depth * 7);
    for _ in 0..depth {
        p.extend_from_slice(&[0x03, 0x00, 0x04, b'a', b'b', b'c', b'd']);
    }
    // The innermost value, then no closing markers: a decoder that recurses overflows before it gets here.
    p.push(0x05);
    p
}

/// True when the server closes the connection within `limit` (reading and discarding what it sends).
pub async fn rtmp_closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 65536];
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

/// An honest stream on `node`: an ffprobe player that waits for stream `name`, then an ffmpeg publisher of
/// `clip` (with `?key=` when `key` is given). Returns once the stream is live.
pub async fn honest_stream(
    node: &TestNode,
    name: &str,
    clip: &Path,
    key: Option<&str>,
) -> (tokio::task::JoinHandle<Played>, Child) {
    let player = play(&node.url(name), 6, 120);
    assert!(
        wait_until(Duration::from_secs(10), || node
            .stream(name)
            .is_some_and(|s| s.players == 1))
        .await,
        "the honest player did not register"
    );
    let url = match key {
        Some(k) => node.url(&format!("{name}?key={k}")),
        None => node.url(name),
    };
    let publisher = publish(clip, &url);
    assert!(
        wait_until(Duration::from_secs(10), || node
            .stream(name)
            .is_some_and(|s| s.live))
        .await,
        "the honest publisher did not go live"
    );
    (player, publisher)
}

/// An AMF0 command message `name(transaction, values...)` on message stream `stream_id`, as chunks of 128
/// bytes on chunk stream 3.
pub fn rtmp_command(
    stream_id: u32,
    name: &str,
    transaction: f64,
    values: Vec<rml_amf0::Amf0Value>,
) -> Vec<u8> {
    use rml_amf0::Amf0Value;
    let mut all = vec![
        Amf0Value::Utf8String(name.into()),
        Amf0Value::Number(transaction),
    ];
    all.extend(values);
    rtmp_chunks(3, 20, stream_id, &rml_amf0::serialize(&all).unwrap(), 128)
}

/// Reads from `s` until what arrived contains `needle` (true) or `limit` passes or the server closes (false).
pub async fn rtmp_read_until(
    s: &mut tokio::net::TcpStream,
    needle: &[u8],
    limit: Duration,
) -> bool {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 65536];
    tokio::time::timeout(limit, async {
        loop {
            if seen.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// A raw RTMP client that did the handshake and `connect` to app `live` (and, with `publish`, created a
/// stream and got `NetStream.Publish.Start` for it on message stream 1).
pub async fn rtmp_connected(addr: SocketAddr, publish: Option<&str>) -> tokio::net::TcpStream {
    use rml_amf0::Amf0Value;
    use tokio::io::AsyncWriteExt;
    let (mut s, _) = rtmp_handshake(addr).await;
    let mut app = std::collections::HashMap::new();
    app.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
    s.write_all(&rtmp_command(
        0,
        "connect",
        1.0,
        vec![Amf0Value::Object(app)],
    ))
    .await
    .unwrap();
    assert!(
        rtmp_read_until(
            &mut s,
            b"NetConnection.Connect.Success",
            Duration::from_secs(10)
        )
        .await,
        "connect was not accepted"
    );
    if let Some(name) = publish {
        s.write_all(&rtmp_command(0, "createStream", 2.0, vec![Amf0Value::Null]))
            .await
            .unwrap();
        s.write_all(&rtmp_command(
            1,
            "publish",
            3.0,
            vec![
                Amf0Value::Null,
                Amf0Value::Utf8String(name.into()),
                Amf0Value::Utf8String("live".into()),
            ],
        ))
        .await
        .unwrap();
        assert!(
            rtmp_read_until(&mut s, b"NetStream.Publish.Start", Duration::from_secs(10)).await,
            "publish was not accepted"
        );
    }
    s
}

/// A global (non-loopback) IPv4 address of this machine, to reach the node as another machine on the LAN
/// would; `None` (after the skip rule) when there is none.
pub fn lan_ipv4() -> Option<std::net::Ipv4Addr> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output();
    let found = out.ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next()?.parse().ok())
    });
    if found.is_none() {
        if require_external() {
            panic!("a non-loopback IPv4 address is required and STREAMR_REQUIRE_EXTERNAL=1");
        }
        eprintln!("SKIP: no non-loopback IPv4 address on this machine (`ip -4 addr` shows none)");
    }
    found
}

/// Checks what every attack test ends with: the node is up, the honest player got >= 95% of the frames,
/// memory stayed within `rss_before` + 64 MiB.
pub async fn assert_honest_served(
    node: &mut TestNode,
    player: tokio::task::JoinHandle<Played>,
    mut publisher: tokio::process::Child,
    published: u64,
    rss_before: u64,
) {
    let st = publisher.wait().await.unwrap();
    assert!(
        st.success(),
        "the honest publisher was disturbed:\n{}",
        node.log_text()
    );
    let p = player.await.unwrap();
    assert!(node.alive(), "the node died:\n{}", node.log_text());
    assert!(
        p.video() * 100 >= published * 95,
        "the honest player got {} of {published} frames",
        p.video()
    );
    let rss_after = node.rss_kib();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
}
