//! `netlab bench fanout`: one publisher, N ffmpeg players, our node against nginx-rtmp on loopback, in one run.
//! Reports CPU of one core, RSS, frames per player, time to first frame of a late player, and startup time.

use crate::engine::procstat;
use crate::report::Table;
use anyhow::{Context, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use streamr_edge::client::{RtmpClient, RtmpUrl};
use streamr_media::FrameKind;
use tokio::process::{Child, Command};

/// Options of the fan-out bench.
#[derive(Debug, Clone)]
pub struct FanoutOptions {
    /// Player counts to measure, e.g. [20, 100].
    pub players: Vec<usize>,
    /// Seconds before the measurement window (players connect, caches fill).
    pub warmup: Duration,
    /// Length of the measurement window.
    pub window: Duration,
    /// The streamr-node binary.
    pub node: PathBuf,
    /// Where the clip and scratch files go.
    pub work_dir: PathBuf,
    /// Late players measured per configuration.
    pub late_samples: usize,
}

/// The figures of one server at one player count.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutResult {
    /// "streamr-node" or "nginx-rtmp".
    pub server: String,
    /// Players.
    pub players: usize,
    /// CPU of the server process tree over the window, in percent of one core.
    pub cpu_percent: f64,
    /// RSS of the server at the end of the window, MiB.
    pub rss_mib: f64,
    /// Video frames each player received over its whole life: minimum.
    pub frames_min: u64,
    /// ... and mean.
    pub frames_mean: f64,
    /// Video frames the publisher sent while the players ran.
    pub frames_published: u64,
    /// Late player: connect to first video frame, median of the samples, ms.
    pub late_first_frame_ms: f64,
    /// Late players whose first video frame was a keyframe.
    pub late_first_is_keyframe: usize,
    /// Late players measured.
    pub late_samples: usize,
    /// Process start to first successful RTMP connect, ms.
    pub startup_ms: f64,
}

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Streamr,
    Nginx,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Streamr => "streamr-node",
            Server::Nginx => "nginx-rtmp",
        }
    }
}

const NGINX: &str = "/usr/sbin/nginx";
const NGINX_RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// Runs the bench and returns one result per server and player count.
pub async fn run(opts: &FanoutOptions) -> anyhow::Result<Vec<FanoutResult>> {
    for tool in ["ffmpeg", "ffprobe", "timeout"] {
        which(tool)
            .with_context(|| format!("the fan-out bench needs {tool}: apt-get install ffmpeg"))?;
    }
    if !Path::new(NGINX).exists() || !Path::new(NGINX_RTMP_MODULE).exists() {
        bail!(
            "the fan-out bench compares with nginx-rtmp: apt-get install nginx libnginx-mod-rtmp"
        );
    }
    super::require_nodes([opts.node.as_path()])?;
    std::fs::create_dir_all(&opts.work_dir)?;
    let clip = clip(&opts.work_dir)?;
    eprintln!("clip: {} (2.5 Mbps H.264 720p30 + AAC)", clip.display());
    let mut results = Vec::new();
    for &n in &opts.players {
        for server in [Server::Streamr, Server::Nginx] {
            eprintln!("measuring {} with {n} players ...", server.name());
            results.push(measure(server, n, &clip, opts).await?);
        }
    }
    Ok(results)
}

/// Prints the results with ratios ours/nginx.
pub fn table(results: &[FanoutResult]) -> Table {
    let mut t = Table::new([
        "server",
        "players",
        "CPU % of 1 core",
        "RSS MiB",
        "frames/player min / mean (published)",
        "late player first frame ms (p50)",
        "late starts on keyframe",
        "startup ms",
    ]);
    for r in results {
        t.push([
            r.server.clone(),
            r.players.to_string(),
            format!("{:.2}", r.cpu_percent),
            format!("{:.1}", r.rss_mib),
            format!(
                "{} / {:.0} ({})",
                r.frames_min, r.frames_mean, r.frames_published
            ),
            format!("{:.0}", r.late_first_frame_ms),
            format!("{}/{}", r.late_first_is_keyframe, r.late_samples),
            format!("{:.0}", r.startup_ms),
        ]);
    }
    for pair in results.chunks(2) {
        if let [a, b] = pair {
            t.push([
                "ratio streamr/nginx".to_string(),
                a.players.to_string(),
                format!("{:.2}", a.cpu_percent / b.cpu_percent.max(1e-9)),
                format!("{:.2}", a.rss_mib / b.rss_mib.max(1e-9)),
                String::new(),
                format!(
                    "{:.2}",
                    a.late_first_frame_ms / b.late_first_frame_ms.max(1e-9)
                ),
                String::new(),
                format!("{:.2}", a.startup_ms / b.startup_ms.max(1e-9)),
            ]);
        }
    }
    t
}

fn which(tool: &str) -> anyhow::Result<()> {
    let ok = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        bail!("{tool} not found in PATH")
    }
}

/// A ~2.5 Mbps 720p30 H.264 + AAC clip with a 2 s keyframe interval, encoded once and reused.
pub(crate) fn clip(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("fanout-720p-2500k.flv");
    if path.exists() {
        return Ok(path);
    }
    eprintln!("encoding the bench clip once (about a minute) ...");
    let tmp = dir.join("fanout-720p-2500k.tmp.flv");
    let st = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args([
            "-b:v",
            "2400k",
            "-maxrate",
            "2500k",
            "-bufsize",
            "2500k",
            "-g",
            "60",
            "-keyint_min",
            "60",
        ])
        .args([
            "-sc_threshold",
            "0",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ar",
            "48000",
            "-t",
            "60",
            "-f",
            "flv",
        ])
        .arg(&tmp)
        .status()
        .context("cannot run ffmpeg")?;
    if !st.success() {
        bail!("ffmpeg could not encode the bench clip");
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Running {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    /// nginx runs a master and a worker: killing the master alone leaves the worker running, so the
    /// server gets its own process group and the whole group is stopped.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

async fn start_server(
    server: Server,
    node: &Path,
    port: u16,
) -> anyhow::Result<(Running, Duration)> {
    let dir = tempfile::tempdir()?;
    let mut cmd = match server {
        Server::Streamr => {
            let mut c = Command::new(node);
            c.arg("run")
                .arg("--data-dir")
                .arg(dir.path())
                .args(["--rtmp-listen", &format!("127.0.0.1:{port}")])
                .args([
                    "--http-listen",
                    "127.0.0.1:0",
                    "--p2p-port",
                    "0",
                    "--log",
                    "warn",
                ]);
            c
        }
        Server::Nginx => {
            let d = dir.path().display();
            let conf = format!(
                "load_module {NGINX_RTMP_MODULE};\nworker_processes 1;\ndaemon off;\nerror_log {d}/error.log;\n\
                 pid {d}/nginx.pid;\nevents {{ worker_connections 4096; }}\n\
                 http {{ client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; \
                 uwsgi_temp_path {d}/u; scgi_temp_path {d}/s; access_log off; }}\n\
                 rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096; \
                 application live {{ live on; record off; }} }} }}\n"
            );
            std::fs::write(dir.path().join("nginx.conf"), conf)?;
            let mut c = Command::new(NGINX);
            c.arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(dir.path().join("nginx.conf"));
            c
        }
    };
    let started_at = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", server.name()))?;
    let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/probe"))?;
    loop {
        if RtmpClient::connect(&url, Duration::from_secs(1))
            .await
            .is_ok()
        {
            break;
        }
        if started_at.elapsed() > Duration::from_secs(20) {
            bail!("{} did not accept RTMP within 20 s", server.name());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let startup = started_at.elapsed();
    Ok((Running { child, _dir: dir }, startup))
}

async fn measure(
    server: Server,
    n: usize,
    clip: &Path,
    opts: &FanoutOptions,
) -> anyhow::Result<FanoutResult> {
    let port = free_port()?;
    let (srv, startup) = start_server(server, &opts.node, port).await?;
    let pid = srv.child.id().context("server exited at once")?;
    let url = format!("rtmp://127.0.0.1:{port}/live/bench");
    let scratch = tempfile::tempdir_in(&opts.work_dir)?;

    let pub_progress = scratch.path().join("publisher.progress");
    let mut publisher = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostats",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(clip)
        .args(["-c", "copy", "-f", "flv", "-progress"])
        .arg(&pub_progress)
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the ffmpeg publisher")?;
    // Let the publisher get going so players find the stream (nginx has no wait-for-publisher).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let frames_before = progress_frames(&pub_progress);

    let life = opts.warmup + opts.window + Duration::from_secs(10);
    let mut players = Vec::with_capacity(n);
    for i in 0..n {
        let progress = scratch.path().join(format!("player-{i}.progress"));
        let child = Command::new("timeout")
            .args([
                "-k",
                "2",
                &life.as_secs().to_string(),
                "ffmpeg",
                "-hide_banner",
                "-loglevel",
                "error",
            ])
            .args([
                "-nostats",
                "-rw_timeout",
                "5000000",
                "-i",
                &url,
                "-map",
                "0:v",
                "-c",
                "copy",
                "-f",
                "null",
            ])
            .arg("-progress")
            .arg(&progress)
            .arg("-")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start an ffmpeg player")?;
        players.push((child, progress));
    }
    tokio::time::sleep(opts.warmup).await;

    let cpu0 = procstat::tree_cpu_secs(pid);
    let t0 = Instant::now();
    // Late players join during the window, spread over it.
    let mut late = Vec::new();
    let gap = opts.window / (opts.late_samples as u32 + 1);
    for _ in 0..opts.late_samples {
        tokio::time::sleep(gap).await;
        late.push(late_player(&url).await);
    }
    let rest = opts.window.saturating_sub(t0.elapsed());
    tokio::time::sleep(rest).await;
    let cpu1 = procstat::tree_cpu_secs(pid);
    let window = t0.elapsed().as_secs_f64();
    let rss = procstat::tree_rss_kib(pid);
    let frames_published = progress_frames(&pub_progress).saturating_sub(frames_before);

    for (child, _) in &mut players {
        if let Some(id) = child.id() {
            let _ = nix_kill(id);
        }
    }
    let mut frames = Vec::with_capacity(n);
    for (mut child, progress) in players {
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        let _ = child.kill().await;
        frames.push(progress_frames(&progress));
    }
    let _ = publisher.kill().await;
    drop(srv);

    let mut ttff: Vec<f64> = late
        .iter()
        .filter_map(|l| l.as_ref().ok().map(|x| x.0))
        .collect();
    ttff.sort_by(f64::total_cmp);
    let late_key = late
        .iter()
        .filter(|l| l.as_ref().is_ok_and(|x| x.1))
        .count();
    Ok(FanoutResult {
        server: server.name().into(),
        players: n,
        cpu_percent: (cpu1 - cpu0) / window * 100.0,
        rss_mib: rss as f64 / 1024.0,
        frames_min: frames.iter().copied().min().unwrap_or(0),
        frames_mean: frames.iter().sum::<u64>() as f64 / n.max(1) as f64,
        frames_published,
        late_first_frame_ms: ttff.get(ttff.len() / 2).copied().unwrap_or(f64::NAN),
        late_first_is_keyframe: late_key,
        late_samples: opts.late_samples,
        startup_ms: startup.as_secs_f64() * 1000.0,
    })
}

/// SIGTERM to a pid (ffmpeg writes its final progress on SIGTERM).
fn nix_kill(pid: u32) -> anyhow::Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    Ok(())
}

/// Connect-to-first-video-frame time of a new player, and whether that frame is a keyframe.
async fn late_player(url: &str) -> anyhow::Result<(f64, bool)> {
    let url = RtmpUrl::parse(url)?;
    let t = Instant::now();
    let client = RtmpClient::connect(&url, Duration::from_secs(5)).await?;
    let mut player = client.play(Duration::from_secs(5)).await?;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), player.next()).await??;
        if m.kind == FrameKind::Video {
            let is_header = m.payload.get(1) == Some(&0) && (m.payload[0] & 0x0f) == 7;
            if is_header {
                continue;
            }
            let key = m.payload.first().is_some_and(|b| b >> 4 == 1);
            return Ok((t.elapsed().as_secs_f64() * 1000.0, key));
        }
    }
}

/// The last `frame=` value of an ffmpeg `-progress` file.
pub(crate) fn progress_frames(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("frame="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_progress_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p");
        std::fs::write(
            &p,
            "frame=10\nfps=30\nprogress=continue\nframe=42\nprogress=end\n",
        )
        .unwrap();
        assert_eq!(progress_frames(&p), 42);
        assert_eq!(progress_frames(&dir.path().join("missing")), 0);
    }

    #[test]
    fn table_has_ratios() {
        let r = |server: &str, cpu: f64| FanoutResult {
            server: server.into(),
            players: 20,
            cpu_percent: cpu,
            rss_mib: 10.0,
            frames_min: 1,
            frames_mean: 1.0,
            frames_published: 1,
            late_first_frame_ms: 100.0,
            late_first_is_keyframe: 1,
            late_samples: 1,
            startup_ms: 5.0,
        };
        let t = table(&[r("streamr-node", 1.0), r("nginx-rtmp", 2.0)]).to_text();
        assert!(t.contains("ratio streamr/nginx"));
        assert!(t.contains("0.50"));
    }
}
