//! `netlab soak`: one node under test on loopback for a long time (default an hour) with an ffmpeg
//! publisher, N ffmpeg players and two mesh peers that play its stream through the mesh, one of them
//! restarted every 30 s. Samples the node's RSS and open file descriptors every few seconds and reports
//! RSS growth after warm-up (the goal is at most 5%), descriptors at start and end, and every error line
//! of the nodes' logs. Not run in CI: it measures, it does not assert.

use crate::bench::fanout::{clip, progress_frames};
use crate::engine::procstat;
use crate::node::{self, Launcher, NodeLog, NodeProcess, Ready};
use anyhow::{Context, bail};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The goal for RSS growth after warm-up, percent.
pub const RSS_GROWTH_GOAL_PERCENT: f64 = 5.0;

/// Options of the soak.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// How long the whole soak runs.
    pub duration: Duration,
    /// Players on the node under test.
    pub players: usize,
    /// One mesh peer is restarted this often (in turns).
    pub churn: Duration,
    /// How often RSS and descriptors are sampled.
    pub sample_every: Duration,
    /// The streamr-node binary.
    pub node: PathBuf,
    /// Where the clip (kept) and the nodes' logs go.
    pub work_dir: PathBuf,
}

/// One sample of the node under test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the node started.
    pub at_s: f64,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Heap bytes the node has allocated and not freed, KiB (`streamr_process_heap_allocated_bytes`;
    /// `None` when the node does not report it).
    pub heap_kib: Option<u64>,
    /// Async tasks alive in the node (`streamr_process_tasks`).
    pub tasks: Option<u64>,
    /// Of the RSS: anonymous memory (heaps, stacks), KiB (`RssAnon`).
    pub anon_kib: Option<u64>,
    /// Of the RSS: pages of files, the executable's code above all, KiB (`RssFile`): these grow as code
    /// that had not run yet runs for the first time, and the kernel can drop them at any time.
    pub file_kib: Option<u64>,
    /// What the Rust side's allocator keeps resident (live data, free pages not yet handed back, its own
    /// tables), KiB (`streamr_process_heap_resident_bytes`).
    pub allocator_kib: Option<u64>,
}

/// What the soak found.
#[derive(Debug, Clone, Serialize)]
pub struct SoakResult {
    /// Seconds run.
    pub duration_s: f64,
    /// Seconds of warm-up excluded from the growth figure.
    pub warmup_s: f64,
    /// Players started on the node under test.
    pub players: usize,
    /// Players still running at the end.
    pub players_alive_at_end: usize,
    /// Video frames each player received: minimum.
    pub player_frames_min: u64,
    /// Mesh peer restarts done.
    pub mesh_restarts: u64,
    /// Mean RSS over the first minute after warm-up, MiB.
    pub rss_after_warmup_mib: f64,
    /// Mean RSS over the last minute, MiB.
    pub rss_end_mib: f64,
    /// Highest RSS sampled, MiB.
    pub rss_peak_mib: f64,
    /// Growth from after warm-up to the end, percent (goal: <= 5).
    pub rss_growth_percent: f64,
    /// RSS's trend after warm-up: the least-squares slope of every sample, as percent of the RSS after
    /// warm-up per hour (what the growth would be over an hour, from all samples instead of two windows).
    pub rss_trend_percent_per_hour: f64,
    /// Growth within each whole hour after warm-up, percent, by the same rule as `rss_growth_percent`
    /// (each hour's first and last `window`): whether a rise levels off.
    pub rss_growth_by_hour_percent: Vec<f64>,
    /// The live heap (bytes allocated and not freed), the same two windows as RSS, MiB; NaN when the node
    /// does not report it.
    pub heap_after_warmup_mib: f64,
    /// ...
    pub heap_end_mib: f64,
    /// Its growth, percent.
    pub heap_growth_percent: f64,
    /// Where RSS's growth is, each the same two windows as RSS, MiB (NaN when not reported): anonymous
    /// memory after warm-up and at the end ...
    pub anon_after_warmup_mib: f64,
    /// ...
    pub anon_end_mib: f64,
    /// ... pages of files (the executable's code) ...
    pub file_after_warmup_mib: f64,
    /// ...
    pub file_end_mib: f64,
    /// ... and what the allocator keeps resident (part of the anonymous memory).
    pub allocator_after_warmup_mib: f64,
    /// ...
    pub allocator_end_mib: f64,
    /// Least-squares slopes after warm-up, MiB per hour (NaN when not reported): anonymous memory ...
    pub anon_trend_mib_per_hour: f64,
    /// ... and the allocator's resident bytes.
    pub allocator_trend_mib_per_hour: f64,
    /// Async tasks alive in the node: median of the same two windows.
    pub tasks_after_warmup: f64,
    /// ...
    pub tasks_end: f64,
    /// Open descriptors at the first sample (before any client), after warm-up, and at the last sample.
    pub fds_start: u64,
    /// ...
    pub fds_after_warmup: u64,
    /// ...
    pub fds_end: u64,
    /// Most descriptors sampled.
    pub fds_peak: u64,
    /// Whether the node under test was still running at the end.
    pub node_alive_at_end: bool,
    /// Error lines of the node under test's log (at most 50 kept).
    pub node_errors: Vec<String>,
    /// Error lines counted in the mesh peers' logs (all their lives).
    pub peer_error_count: usize,
    /// Every sample.
    pub samples: Vec<Sample>,
}

/// Growth of one figure of the samples (`value`) from warm-up's end to the end: the median of the samples
/// within `window` after `warmup`, against the median of the last `window`; (after warm-up, end, growth
/// percent). `None` if either window has no sample with the figure (too short a run). Medians over
/// minutes, because a node's RSS swings by several MiB within a minute (its players' buffers, the keyframe
/// cache): one-minute means made the figure move by ±10% from run to run.
pub fn growth(
    samples: &[Sample],
    warmup: Duration,
    window: Duration,
    value: impl Fn(&Sample) -> Option<u64>,
) -> Option<(f64, f64, f64)> {
    let (w, win) = (warmup.as_secs_f64(), window.as_secs_f64());
    let last = samples.last()?.at_s;
    let median = |f: &dyn Fn(&Sample) -> bool| {
        let mut v: Vec<u64> = samples.iter().filter(|s| f(s)).filter_map(&value).collect();
        v.sort_unstable();
        let n = v.len();
        (n > 0).then(|| {
            if n % 2 == 1 {
                v[n / 2] as f64
            } else {
                (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0
            }
        })
    };
    let start = median(&|s| s.at_s >= w && s.at_s < w + win)?;
    let end = median(&|s| s.at_s > last - win && s.at_s >= w + win)?;
    Some((start, end, (end - start) / start * 100.0))
}

/// RSS growth (see [`growth`]).
pub fn rss_growth(
    samples: &[Sample],
    warmup: Duration,
    window: Duration,
) -> Option<(f64, f64, f64)> {
    growth(samples, warmup, window, |s| Some(s.rss_kib))
}

/// RSS growth (see [`growth`]) within each whole hour after `warmup`: the first hour's growth, the
/// second's, ... (an hour the samples do not cover to its end is left out).
pub fn rss_growth_by_hour(samples: &[Sample], warmup: Duration, window: Duration) -> Vec<f64> {
    const HOUR: f64 = 3600.0;
    let last = samples.last().map_or(0.0, |s| s.at_s);
    (0..)
        .map(|h| warmup.as_secs_f64() + f64::from(h) * HOUR)
        .take_while(|start| start + HOUR <= last)
        .filter_map(|start| {
            let within = samples.partition_point(|s| s.at_s <= start + HOUR);
            rss_growth(&samples[..within], Duration::from_secs_f64(start), window)
                .map(|(_, _, pct)| pct)
        })
        .collect()
}

/// RSS's least-squares slope over the samples from `warmup` on, in percent of `base` per hour; `None`
/// with fewer than two samples.
pub fn rss_trend_percent_per_hour(samples: &[Sample], warmup: Duration, base: f64) -> Option<f64> {
    if base <= 0.0 {
        return None;
    }
    trend_per_hour(samples, warmup, |s| Some(s.rss_kib)).map(|kib| kib / base * 100.0)
}

/// The least-squares slope of one figure of the samples (`value`) from `warmup` on, in its unit per hour;
/// `None` with fewer than two samples that have it.
pub fn trend_per_hour(
    samples: &[Sample],
    warmup: Duration,
    value: impl Fn(&Sample) -> Option<u64>,
) -> Option<f64> {
    let pts: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.at_s >= warmup.as_secs_f64())
        .filter_map(|s| Some((s.at_s, value(s)? as f64)))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    Some(sxy / sxx * 3600.0)
}

/// The error lines of a node's JSON log (`"level":"ERROR"`), and the lines it printed that are not JSON
/// but speak of a panic or an error (its start banner is plain text too, and is no error).
pub fn error_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let l = l.trim();
            match serde_json::from_str::<serde_json::Value>(l) {
                Ok(v) => v.get("level").and_then(|x| x.as_str()) == Some("ERROR"),
                Err(_) => {
                    let l = l.to_lowercase();
                    l.contains("panic") || l.contains("error")
                }
            }
        })
        .map(str::to_string)
        .collect()
}

/// One sample of `pid`, or `None` once it is gone; the heap and task figures from its `/metrics` at
/// `http` (`None` each when it does not answer or does not report them).
async fn sample(pid: u32, http: SocketAddr, started: Instant) -> Option<Sample> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let at_s = started.elapsed().as_secs_f64();
    let rss_kib = procstat::rss_kib(pid)?;
    let metrics = metrics_text(http).await.unwrap_or_default();
    Some(Sample {
        at_s,
        rss_kib,
        fds,
        heap_kib: metric(&metrics, "streamr_process_heap_allocated_bytes").map(|b| b / 1024),
        tasks: metric(&metrics, "streamr_process_tasks"),
        anon_kib: procstat::status_kib(pid, "RssAnon"),
        file_kib: procstat::status_kib(pid, "RssFile"),
        allocator_kib: metric(&metrics, "streamr_process_heap_resident_bytes").map(|b| b / 1024),
    })
}

/// A node's `/metrics` at `http`, or `None` when it does not answer with one.
pub async fn metrics_text(http: SocketAddr) -> Option<String> {
    node::http::get(http, "/metrics", Duration::from_secs(2))
        .await
        .ok()
        .filter(|a| a.code == 200)
        .map(|a| a.body)
}

/// The value of an unlabelled family in a Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// A mesh peer: its data dir (same identity across restarts), its log folder, the node and its player.
struct Peer {
    name: String,
    data: tempfile::TempDir,
    bootstrap: String,
    node: Option<NodeProcess>,
    player: Option<Child>,
    starts: u64,
}

impl Peer {
    async fn start(&mut self, opts: &SoakOptions) -> anyhow::Result<()> {
        let launcher = Launcher {
            name: self.name.clone(),
            bootstrap: vec![self.bootstrap.clone()],
            log: NodeLog::File(
                opts.work_dir
                    .join(format!("{}-{}.log", self.name, self.starts)),
            ),
            ..Launcher::new(&opts.node, self.data.path())
        };
        let node = launcher.start(Duration::from_secs(30)).await?;
        let ready = node.ready().cloned().context("no ready line")?;
        self.player = Some(player(&ready, None)?);
        self.node = Some(node);
        self.starts += 1;
        Ok(())
    }

    /// Stops the node and its player, and keeps its crash reports in the work dir (its data dir goes
    /// away with the soak).
    async fn stop(&mut self, work_dir: &Path) {
        if let Some(mut p) = self.player.take() {
            let _ = p.kill().await;
        }
        if let Some(mut n) = self.node.take() {
            n.stop(Duration::from_secs(5)).await;
        }
        if let Ok(reports) = std::fs::read_dir(self.data.path().join("crashes")) {
            for r in reports.flatten() {
                let to =
                    work_dir.join(format!("{}-{}", self.name, r.file_name().to_string_lossy()));
                let _ = std::fs::copy(r.path(), to);
            }
        }
    }
}

/// An ffmpeg player of the stream on `node`, writing its progress to `progress` if given.
fn player(node: &Ready, progress: Option<&Path>) -> anyhow::Result<Child> {
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-loglevel", "error", "-nostats"])
        .args(["-rw_timeout", "15000000", "-i"])
        .arg(format!("rtmp://{}/live/soak", node.rtmp_listen))
        .args(["-map", "0:v", "-c", "copy", "-f", "null"]);
    if let Some(p) = progress {
        c.arg("-progress").arg(p);
    }
    c.arg("-")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start an ffmpeg player")
}

/// The node's loopback QUIC address from its status.
async fn bootstrap_addr(ready: &Ready) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = node::fetch_status(ready.http_listen, Duration::from_secs(2)).await?;
        if let Some(a) =
            node::pick_bootstrap_addr(&status.listen_addrs, Some(std::net::Ipv4Addr::LOCALHOST))
        {
            return Ok(a);
        }
        if Instant::now() > deadline {
            bail!("the node under test lists no 127.0.0.1 address with /p2p/");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the soak.
pub async fn run(opts: &SoakOptions) -> anyhow::Result<SoakResult> {
    super::require_nodes([opts.node.as_path()])?;
    std::fs::create_dir_all(&opts.work_dir)?;
    let clip = clip(&opts.work_dir).context("the soak needs ffmpeg: apt-get install ffmpeg")?;
    let data = tempfile::Builder::new().prefix("netlab-soak-").tempdir()?;
    let launcher = Launcher {
        name: "under-test".into(),
        log: NodeLog::File(opts.work_dir.join("under-test.log")),
        ..Launcher::new(&opts.node, data.path())
    };
    let started = Instant::now();
    let mut node = launcher.start(Duration::from_secs(30)).await?;
    let ready = node.ready().cloned().context("no ready line")?;
    let pid = node.pid;
    let mut samples: Vec<Sample> = sample(pid, ready.http_listen, started)
        .await
        .into_iter()
        .collect();

    let mut publisher = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostats", "-re"])
        .args(["-stream_loop", "-1", "-i"])
        .arg(&clip)
        .args(["-c", "copy", "-f", "flv"])
        .arg(format!("rtmp://{}/live/soak", ready.rtmp_listen))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the ffmpeg publisher")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let scratch = tempfile::tempdir_in(&opts.work_dir)?;
    let mut players = Vec::with_capacity(opts.players);
    for i in 0..opts.players {
        let progress = scratch.path().join(format!("player-{i}.progress"));
        players.push((player(&ready, Some(&progress))?, progress));
    }
    let bootstrap = bootstrap_addr(&ready).await?;
    let mut peers = Vec::new();
    for k in 0..2 {
        let mut p = Peer {
            name: format!("peer-{k}"),
            data: tempfile::Builder::new()
                .prefix("netlab-soak-peer-")
                .tempdir()?,
            bootstrap: bootstrap.clone(),
            node: None,
            player: None,
            starts: 0,
        };
        p.start(opts).await?;
        peers.push(p);
    }

    let mut next_churn = Instant::now() + opts.churn;
    let mut turn = 0;
    let mut restarts = 0;
    let mut node_alive = true;
    while started.elapsed() < opts.duration {
        tokio::time::sleep(opts.sample_every).await;
        match sample(pid, ready.http_listen, started).await {
            Some(s) => samples.push(s),
            None => {
                node_alive = false;
                eprintln!("the node under test exited after {:?}", started.elapsed());
                break;
            }
        }
        if Instant::now() >= next_churn {
            let p = &mut peers[turn % 2];
            p.stop(&opts.work_dir).await;
            if let Err(e) = p.start(opts).await {
                eprintln!("{} did not come back: {e:#}", p.name);
            }
            restarts += 1;
            turn += 1;
            next_churn = Instant::now() + opts.churn;
        }
    }
    let duration = started.elapsed();
    node_alive &= node.alive();

    let mut players_alive = 0;
    for (child, _) in &mut players {
        if child.try_wait().ok().flatten().is_none() {
            players_alive += 1;
        }
        if let Some(id) = child.id().and_then(|p| i32::try_from(p).ok()) {
            // SIGTERM: ffmpeg writes its final progress.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(id),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let mut frames = Vec::new();
    for (mut child, progress) in players {
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        let _ = child.kill().await;
        frames.push(progress_frames(&progress));
    }
    for p in &mut peers {
        p.stop(&opts.work_dir).await;
    }
    let _ = publisher.kill().await;
    node.stop(Duration::from_secs(5)).await;

    let warmup = (opts.duration / 5).min(Duration::from_secs(300));
    let window = Duration::from_secs(300).min(opts.duration / 5);
    let (after, end, rss_growth_pct) =
        rss_growth(&samples, warmup, window).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
    let trend = rss_trend_percent_per_hour(&samples, warmup, after).unwrap_or(f64::NAN);
    let by_hour = rss_growth_by_hour(&samples, warmup, window);
    let (heap_after, heap_end, heap_growth) =
        growth(&samples, warmup, window, |s| s.heap_kib).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
    let two_windows = |value: fn(&Sample) -> Option<u64>| {
        growth(&samples, warmup, window, value)
            .map_or((f64::NAN, f64::NAN), |(a, e, _)| (a / 1024.0, e / 1024.0))
    };
    let (anon_after, anon_end) = two_windows(|s| s.anon_kib);
    let (file_after, file_end) = two_windows(|s| s.file_kib);
    let (allocator_after, allocator_end) = two_windows(|s| s.allocator_kib);
    let mib_per_hour = |value: fn(&Sample) -> Option<u64>| {
        trend_per_hour(&samples, warmup, value).map_or(f64::NAN, |kib| kib / 1024.0)
    };
    let (tasks_after, tasks_end, _) =
        growth(&samples, warmup, window, |s| s.tasks).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
    let mut node_errors = error_lines(&node.log_text());
    node_errors.truncate(50);
    let mut peer_error_count = 0;
    for entry in std::fs::read_dir(&opts.work_dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("peer-") && name.ends_with(".log") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            peer_error_count += error_lines(&text).len();
        }
    }
    Ok(SoakResult {
        duration_s: duration.as_secs_f64(),
        warmup_s: warmup.as_secs_f64(),
        players: opts.players,
        players_alive_at_end: players_alive,
        player_frames_min: frames.iter().copied().min().unwrap_or(0),
        mesh_restarts: restarts,
        rss_after_warmup_mib: after / 1024.0,
        rss_end_mib: end / 1024.0,
        rss_peak_mib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0,
        rss_growth_percent: rss_growth_pct,
        rss_trend_percent_per_hour: trend,
        rss_growth_by_hour_percent: by_hour,
        heap_after_warmup_mib: heap_after / 1024.0,
        heap_end_mib: heap_end / 1024.0,
        heap_growth_percent: heap_growth,
        anon_after_warmup_mib: anon_after,
        anon_end_mib: anon_end,
        file_after_warmup_mib: file_after,
        file_end_mib: file_end,
        allocator_after_warmup_mib: allocator_after,
        allocator_end_mib: allocator_end,
        anon_trend_mib_per_hour: mib_per_hour(|s| s.anon_kib),
        allocator_trend_mib_per_hour: mib_per_hour(|s| s.allocator_kib),
        tasks_after_warmup: tasks_after,
        tasks_end,
        fds_start: samples.first().map_or(0, |s| s.fds),
        fds_after_warmup: samples
            .iter()
            .find(|s| s.at_s >= warmup.as_secs_f64())
            .map_or(0, |s| s.fds),
        fds_end: samples.last().map_or(0, |s| s.fds),
        fds_peak: samples.iter().map(|s| s.fds).max().unwrap_or(0),
        node_alive_at_end: node_alive,
        node_errors,
        peer_error_count,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at_s: f64, rss_kib: u64) -> Sample {
        Sample {
            at_s,
            rss_kib,
            fds: 10,
            heap_kib: None,
            tasks: None,
            anon_kib: None,
            file_kib: None,
            allocator_kib: None,
        }
    }

    #[test]
    fn the_trend_is_the_slope_of_every_sample() {
        // Warm-up to 100 s at 5000 KiB, then +1 KiB a second: 3600 KiB an hour, 72% of 5000.
        let mut v: Vec<Sample> = (0..100).map(|i| s(f64::from(i), 5000)).collect();
        v.extend((100..400).map(|i| s(f64::from(i), 5000 + (i - 100) as u64)));
        let t = rss_trend_percent_per_hour(&v, Duration::from_secs(100), 5000.0).unwrap();
        assert!((t - 72.0).abs() < 1e-6, "{t}");
        // Flat after warm-up: no trend, whatever warm-up did.
        let flat: Vec<Sample> = (0..400)
            .map(|i| s(f64::from(i), if i < 100 { i as u64 } else { 5000 }))
            .collect();
        let t = rss_trend_percent_per_hour(&flat, Duration::from_secs(100), 5000.0).unwrap();
        assert!(t.abs() < 1e-9, "{t}");
        assert!(rss_trend_percent_per_hour(&v[..101], Duration::from_secs(100), 5000.0).is_none());
        // Any figure, in its own unit per hour; none where the samples lack it.
        let kib = trend_per_hour(&v, Duration::from_secs(100), |s| Some(s.rss_kib)).unwrap();
        assert!((kib - 3600.0).abs() < 1e-6, "{kib}");
        assert!(trend_per_hour(&v, Duration::from_secs(100), |s| s.anon_kib).is_none());
    }

    #[test]
    fn growth_by_hour_shows_a_rise_that_levels_off() {
        // Warm-up to 300 s; +10% over the first hour, flat over the second, half a third hour (left out).
        let v: Vec<Sample> = (0..=9000)
            .step_by(5)
            .map(|t| {
                let rise = (f64::from(t) - 300.0).clamp(0.0, 3600.0) / 3600.0 * 1000.0;
                s(f64::from(t), 10_000 + rise as u64)
            })
            .collect();
        let h = rss_growth_by_hour(&v, Duration::from_secs(300), Duration::from_secs(300));
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(
            h[0] > 8.0 && h[0] < 10.0,
            "the first hour's windows are 5 min in: {h:?}"
        );
        assert!(h[1].abs() < 1e-9, "{h:?}");
    }

    #[test]
    fn figures_are_read_from_metrics() {
        let text = "# HELP streamr_process_tasks Async tasks alive\n# TYPE streamr_process_tasks gauge\n\
                    streamr_process_tasks 42\nstreamr_process_tasks_total 7\n\
                    streamr_process_heap_allocated_bytes 1048576\n";
        assert_eq!(metric(text, "streamr_process_tasks"), Some(42));
        assert_eq!(
            metric(text, "streamr_process_heap_allocated_bytes"),
            Some(1 << 20)
        );
        assert_eq!(metric(text, "streamr_process_heap_resident_bytes"), None);
    }

    #[test]
    fn heap_growth_uses_the_samples_that_have_it() {
        let v: Vec<Sample> = (0..40)
            .map(|i| Sample {
                heap_kib: (i % 3 != 0).then_some(if i < 20 { 2000 } else { 2100 }),
                ..s(f64::from(i), 1000)
            })
            .collect();
        let (a, e, g) = growth(&v, Duration::from_secs(10), Duration::from_secs(10), |s| {
            s.heap_kib
        })
        .unwrap();
        assert_eq!((a, e), (2000.0, 2100.0));
        assert!((g - 5.0).abs() < 1e-9);
        assert!(
            growth(&v, Duration::from_secs(10), Duration::from_secs(10), |s| s
                .tasks)
            .is_none()
        );
    }

    #[test]
    fn growth_is_measured_after_warm_up() {
        // Warm-up to 10 s grows from 100 to 1000; then 1000 to 1050 (5%).
        let mut v: Vec<Sample> = (0..10)
            .map(|i| s(f64::from(i), 100 + 100 * i as u64))
            .collect();
        v.extend((10..=40).map(|i| {
            s(
                f64::from(i),
                if i < 20 {
                    1000
                } else if i > 30 {
                    1050
                } else {
                    1020
                },
            )
        }));
        let (after, end, growth) =
            rss_growth(&v, Duration::from_secs(10), Duration::from_secs(10)).unwrap();
        assert_eq!((after, end), (1000.0, 1050.0));
        assert!((growth - 5.0).abs() < 1e-9);
        // A spike inside a window moves the median, not the figure.
        let mut spiky = v.clone();
        spiky[35].rss_kib = 9_000;
        spiky[12].rss_kib = 1;
        assert_eq!(
            rss_growth(&spiky, Duration::from_secs(10), Duration::from_secs(10)).unwrap(),
            (1000.0, 1050.0, growth)
        );
        assert!(rss_growth(&v[..12], Duration::from_secs(10), Duration::from_secs(10)).is_none());
    }

    #[test]
    fn error_lines_are_found() {
        let log = concat!(
            r#"{"level":"INFO","fields":{"message":"ready"}}"#,
            "\n",
            r#"{"level":"ERROR","fields":{"message":"boom"}}"#,
            "\n\nthread 'main' panicked at src/x.rs:1:1\n",
            "  streamr-node 0.1.0 is running (node id 12D3KooW)\n",
        );
        let e = error_lines(log);
        assert_eq!(e.len(), 2);
        assert!(e[0].contains("boom") && e[1].contains("panicked"));
    }
}
