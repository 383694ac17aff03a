//! `netlab bench mesh`: what each mesh hop costs. Chains of streamr-node on loopback (node k bootstraps only
//! from node k-1), the probe publisher into node 0, a probe player on the last node and, as the baseline
//! measured on the same frames at the same time, a probe player on node 0 (the single-node path). A chain
//! of 0 hops is one node alone. Reports latency p50/p99, the latency each hop adds over the baseline,
//! frames lost, the remote player's time to first frame, CPU per node per relayed Mbps and RSS per node.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::node::{self, Launcher, NodeLog, NodeProcess, Ready, StatusExt};
use crate::probe::playback::PlayReport;
use crate::probe::rtmp::{self, PlayOptions, PublishOptions, PublishReport};
use crate::report::Table;

/// Options of the mesh bench.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// Chain lengths in hops (a 0-hop chain, one node alone, is always measured first).
    pub hops: Vec<usize>,
    /// From the players' start to the CPU window (mesh lookup, caches filling).
    pub warmup: Duration,
    /// The CPU window.
    pub window: Duration,
    /// Bitrate of the probe stream.
    pub kbps: u32,
    /// Video frames per second.
    pub fps: u32,
    /// The streamr-node binary.
    pub node: PathBuf,
    /// Where node logs go (one folder per chain).
    pub work_dir: PathBuf,
    /// Makes the stream cross the whole chain: a player on every node (a node only relays a stream
    /// someone wants), started in chain order, and every node's mesh upload capped to one copy of the
    /// stream (`--max-upload-kbps`), so no node can feed two others. Without it only node 0 and the last
    /// node play, and the mesh may connect the last node straight to the origin.
    pub force_chain: bool,
}

/// Upload cap per node with `force_chain`: room for one copy of the stream, not two.
pub(crate) fn chain_upload_kbps(kbps: u32) -> u32 {
    kbps.saturating_mul(3) / 2
}

/// What a probe player saw, in short.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlayerFigures {
    /// Probe frames arrived.
    pub delivered: bool,
    /// Probe frames received.
    pub probe_frames: u64,
    /// One-way latency of live frames, ms.
    pub latency_p50_ms: Option<f64>,
    /// See `latency_p50_ms`.
    pub latency_p99_ms: Option<f64>,
    /// Probe sequence numbers missing.
    pub frames_lost: u64,
    /// From the player's start to the first video frame (includes the mesh lookup), ms.
    pub first_frame_ms: Option<f64>,
    /// How it ended, and its error if any.
    pub ended: String,
    /// Its error, if any.
    pub error: Option<String>,
}

impl From<&PlayReport> for PlayerFigures {
    fn from(r: &PlayReport) -> Self {
        PlayerFigures {
            delivered: r.delivered(),
            probe_frames: r.probe_frames,
            latency_p50_ms: r.latency_ms.p50,
            latency_p99_ms: r.latency_ms.p99,
            frames_lost: r.missing,
            first_frame_ms: r.first_frame_ms,
            ended: r.ended.clone(),
            error: r.error.clone(),
        }
    }
}

/// CPU and memory of one node over the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeUsage {
    /// Position in the chain (0 = the publisher's node).
    pub index: usize,
    /// CPU over the window, percent of one core.
    pub cpu_percent: f64,
    /// CPU seconds per second per relayed Mbps (`cpu_percent / 100 / Mbps`).
    pub cpu_s_per_mbps: f64,
    /// RSS at the end of the window, MiB.
    pub rss_mib: f64,
}

/// One chain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChainResult {
    /// Mesh hops between the publisher's node and the remote player's node.
    pub hops: usize,
    /// Nodes in the chain.
    pub nodes: usize,
    /// The player on the last node.
    pub remote: PlayerFigures,
    /// The player on node 0 (the publisher's node): the single-node baseline.
    pub local: PlayerFigures,
    /// The player of every node that had one (all of them with `force_chain`), by chain position.
    pub per_node: Vec<Option<PlayerFigures>>,
    /// Hops the last node reports for the stream (its status' `streams[].hops`): shows whether the stream
    /// really crossed the whole chain or the nodes found a shortcut.
    pub reported_hops: Option<u32>,
    /// Chain position of the node the last node receives from (from `streams[].upstream`).
    pub upstream_index: Option<usize>,
    /// (remote p50 - local p50) / hops the stream crossed (reported, else the chain's), ms.
    pub added_latency_per_hop_ms: Option<f64>,
    /// The stream's bitrate as published, Mbps.
    pub relayed_mbps: f64,
    /// Per node.
    pub usage: Vec<NodeUsage>,
    /// The publisher's report.
    pub publisher: Option<PublishReport>,
    /// Why the chain could not be measured.
    pub error: Option<String>,
}

/// Runs the bench: a single node first, then each chain.
pub async fn run(opts: &MeshOptions) -> anyhow::Result<Vec<ChainResult>> {
    super::require_nodes([opts.node.as_path()])?;
    let bootstrap_flag = node::supports_flag(&opts.node, "--bootstrap")?;
    let upload_flag = node::supports_flag(&opts.node, "--max-upload-kbps")?;
    if opts.force_chain && !upload_flag {
        eprintln!("note: the node has no --max-upload-kbps; the mesh may shortcut the chain");
    }
    let extra: Vec<String> = if opts.force_chain && upload_flag {
        vec![
            "--max-upload-kbps".into(),
            chain_upload_kbps(opts.kbps).to_string(),
        ]
    } else {
        Vec::new()
    };
    std::fs::create_dir_all(&opts.work_dir)
        .with_context(|| format!("cannot create {}", opts.work_dir.display()))?;
    let mut lengths = vec![0];
    lengths.extend(opts.hops.iter().copied().filter(|h| *h > 0));
    let mut results = Vec::new();
    for hops in lengths {
        eprintln!(
            "measuring a chain of {hops} hop(s) ({} node(s)) ...",
            hops + 1
        );
        let mut r = ChainResult {
            hops,
            nodes: hops + 1,
            ..ChainResult::default()
        };
        if hops > 0 && !bootstrap_flag {
            r.error = Some(format!(
                "{} has no --bootstrap flag: the mesh is not built into this node yet",
                opts.node.display()
            ));
        } else if let Err(e) = measure_chain(opts, &extra, &mut r).await {
            r.error = Some(format!("{e:#}"));
        }
        if let Some(e) = &r.error {
            eprintln!("  {e}");
        }
        results.push(r);
    }
    Ok(results)
}

/// The bench stream's RTMP URL on a node.
pub(crate) fn url(n: &ChainNode) -> String {
    format!("rtmp://{}/live/bench", n.ready.rtmp_listen)
}

/// The probe publisher and the probe players of a bench, which stop together on one signal.
pub(crate) struct Rig {
    publisher: tokio::task::JoinHandle<PublishReport>,
    stop_publisher: Option<oneshot::Sender<()>>,
    stop_players: tokio::sync::broadcast::Sender<()>,
}

impl Rig {
    /// Starts publishing to `url` (a keyframe every 2 s), and gives the stream a second so that players
    /// start from the keyframe cache.
    pub(crate) async fn start(url: String, kbps: u32, fps: u32) -> Rig {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let publish_opts = PublishOptions {
            url,
            kbps,
            fps,
            gop: fps * 2,
            ..PublishOptions::default()
        };
        let publisher = tokio::spawn(async move {
            rtmp::publish(&publish_opts, async {
                let _ = stop_rx.await;
            })
            .await
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        Rig {
            publisher,
            stop_publisher: Some(stop_tx),
            stop_players: tokio::sync::broadcast::channel::<()>(1).0,
        }
    }

    /// Starts a player of `url` (retrying for 20 s) that runs until [`Rig::stop_players`].
    pub(crate) fn player(&self, url: String) -> tokio::task::JoinHandle<PlayReport> {
        let o = PlayOptions {
            url,
            retry_for: Some(Duration::from_secs(20)),
            ..PlayOptions::default()
        };
        let mut stop = self.stop_players.subscribe();
        tokio::spawn(async move {
            rtmp::play(&o, async move {
                let _ = stop.recv().await;
            })
            .await
        })
    }

    /// Stops every player.
    pub(crate) fn stop_players(&self) {
        let _ = self.stop_players.send(());
    }

    /// Stops the publisher and returns its report.
    pub(crate) async fn stop_publisher(mut self) -> anyhow::Result<PublishReport> {
        if let Some(tx) = self.stop_publisher.take() {
            let _ = tx.send(());
        }
        self.publisher.await.context("publisher")
    }
}

/// A node of the chain.
pub(crate) struct ChainNode {
    pub(crate) process: NodeProcess,
    pub(crate) ready: Ready,
    _data: tempfile::TempDir,
}

async fn measure_chain(
    opts: &MeshOptions,
    extra: &[String],
    r: &mut ChainResult,
) -> anyhow::Result<()> {
    let dir = opts.work_dir.join(format!("mesh-{}", r.hops));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut nodes: Vec<ChainNode> = Vec::new();
    let outcome = async {
        for k in 0..r.nodes {
            let bootstrap = match nodes.last() {
                None => Vec::new(),
                Some(prev) => vec![loopback_addr(&prev.ready).await?],
            };
            nodes.push(start_node(&opts.node, &format!("node-{k}"), bootstrap, extra, &dir).await?);
        }
        measure(opts, &nodes, r).await
    }
    .await;
    for n in &mut nodes {
        n.process.stop(Duration::from_secs(7)).await;
    }
    outcome
}

/// Starts one node on loopback, logging into `dir/NAME.log`.
pub(crate) async fn start_node(
    exe: &std::path::Path,
    name: &str,
    bootstrap: Vec<String>,
    extra: &[String],
    dir: &std::path::Path,
) -> anyhow::Result<ChainNode> {
    let data = tempfile::Builder::new()
        .prefix("netlab-mesh-node-")
        .tempdir()?;
    let name = name.to_string();
    let launcher = Launcher {
        bootstrap,
        extra: extra.to_vec(),
        log: NodeLog::File(dir.join(format!("{name}.log"))),
        name,
        ..Launcher::new(exe, data.path())
    };
    let process = launcher.start(Duration::from_secs(30)).await?;
    let ready = process
        .ready()
        .cloned()
        .context("the node has no ready line")?;
    Ok(ChainNode {
        process,
        ready,
        _data: data,
    })
}

/// The previous node's loopback QUIC address, from its status (the mesh may list it a moment after the
/// ready line).
pub(crate) async fn loopback_addr(prev: &Ready) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = node::fetch_status(prev.http_listen, Duration::from_secs(2)).await?;
        let addrs = &status.listen_addrs;
        if let Some(a) = node::pick_bootstrap_addr(addrs, Some(std::net::Ipv4Addr::LOCALHOST)) {
            return Ok(a);
        }
        if Instant::now() > deadline {
            bail!("the node lists no 127.0.0.1 address with /p2p/: {addrs:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn measure(
    opts: &MeshOptions,
    nodes: &[ChainNode],
    r: &mut ChainResult,
) -> anyhow::Result<()> {
    let first = nodes.first().context("empty chain")?;
    let last = nodes.last().context("empty chain")?;
    let rig = Rig::start(url(first), opts.kbps, opts.fps).await;
    let player = |u: String| rig.player(u);
    // A player on node 0 (the baseline) and on the last node; with force_chain on every node, started in
    // chain order, each once the previous node has the stream: a node relays only a stream someone wants,
    // and with one copy of upload each node can only feed the next.
    let mut players = Vec::new();
    for (k, n) in nodes.iter().enumerate() {
        let wanted = k == 0 || k + 1 == nodes.len() || opts.force_chain;
        if !wanted {
            players.push(None);
            continue;
        }
        players.push(Some(player(url(n))));
        if opts.force_chain && k + 1 < nodes.len() {
            wait_for_stream(n, Duration::from_secs(20)).await;
        }
    }
    tokio::time::sleep(opts.warmup).await;
    let before: Vec<Option<(f64, u64)>> = nodes.iter().map(|n| n.process.usage()).collect();
    let t0 = Instant::now();
    tokio::time::sleep(opts.window).await;
    let after: Vec<Option<(f64, u64)>> = nodes.iter().map(|n| n.process.usage()).collect();
    let window = t0.elapsed().as_secs_f64();
    if let Ok(status) = node::fetch_status(last.ready.http_listen, Duration::from_secs(2)).await
        && let Some(stream) = status.stream("bench")
    {
        r.reported_hops = stream.hops.map(u32::from);
        r.upstream_index = stream
            .upstream
            .as_ref()
            .and_then(|u| nodes.iter().position(|n| &n.ready.peer_id == u));
    }
    rig.stop_players();
    let mut reports = Vec::new();
    for p in players {
        reports.push(match p {
            Some(task) => Some(task.await.context("player")?),
            None => None,
        });
    }
    r.per_node = reports
        .iter()
        .map(|p| p.as_ref().map(PlayerFigures::from))
        .collect();
    let local = reports
        .first()
        .cloned()
        .flatten()
        .context("no player on node 0")?;
    let remote = reports
        .last()
        .cloned()
        .flatten()
        .context("no player on the last node")?;
    let published = rig.stop_publisher().await?;
    r.relayed_mbps = if published.duration_s > 0.0 {
        published.bytes as f64 * 8.0 / published.duration_s / 1e6
    } else {
        f64::from(opts.kbps) / 1000.0
    };
    r.local = PlayerFigures::from(&local);
    r.remote = PlayerFigures::from(&remote);
    // Per hop the stream really crossed: the mesh may have taken a shortcut.
    let hops = match r.reported_hops {
        Some(h) if h > 0 => h as usize,
        _ => r.hops,
    };
    r.added_latency_per_hop_ms = match (r.remote.latency_p50_ms, r.local.latency_p50_ms) {
        (Some(remote), Some(local)) if hops > 0 => Some((remote - local) / hops as f64),
        _ => None,
    };
    for (index, (b, a)) in before.iter().zip(&after).enumerate() {
        let (Some((c0, _)), Some((c1, rss))) = (b, a) else {
            bail!("node {index} exited during the measurement (see its log)");
        };
        let cpu = (c1 - c0) / window;
        r.usage.push(NodeUsage {
            index,
            cpu_percent: cpu * 100.0,
            cpu_s_per_mbps: cpu / r.relayed_mbps.max(1e-9),
            rss_mib: *rss as f64 / 1024.0,
        });
    }
    r.publisher = Some(published);
    Ok(())
}

/// Waits until node `n` has the stream live with frames (bounded; a node that never gets it shows up in
/// the results).
/// Waits (up to `limit`) until the node holds the bench stream live with frames.
pub(crate) async fn wait_for_stream(n: &ChainNode, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(s) = node::fetch_status(n.ready.http_listen, Duration::from_secs(2)).await
            && s.stream("bench").is_some_and(|st| st.live && st.frames > 0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn mean_max(v: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let v: Vec<f64> = v.collect();
    if v.is_empty() {
        return None;
    }
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    Some((v.iter().sum::<f64>() / v.len() as f64, max))
}

/// The results as a table.
pub fn table(results: &[ChainResult]) -> Table {
    let ms = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
    let mut t = Table::new([
        "hops",
        "nodes",
        "hops reported (upstream)",
        "last node p50 / p99 ms",
        "node 0 (baseline) p50 / p99 ms",
        "added per hop ms",
        "lost last / node 0",
        "last node first frame ms",
        "CPU % of a core per Mbps, per node mean / max",
        "RSS MiB per node mean / max",
        "note",
    ]);
    for r in results {
        let cpu = mean_max(r.usage.iter().map(|u| u.cpu_s_per_mbps * 100.0));
        let rss = mean_max(r.usage.iter().map(|u| u.rss_mib));
        let pair = |v: Option<(f64, f64)>, digits: usize| {
            v.map(|(a, b)| format!("{a:.digits$} / {b:.digits$}"))
                .unwrap_or_else(|| "-".into())
        };
        let shortcut = match r.reported_hops {
            Some(h) if h as usize != r.hops => {
                Some(format!("the mesh took {h} hop(s), not {}", r.hops))
            }
            _ => None,
        };
        let note = r
            .error
            .clone()
            .or_else(|| r.remote.error.clone())
            .or(shortcut)
            .unwrap_or_default();
        t.push([
            r.hops.to_string(),
            r.nodes.to_string(),
            match (r.reported_hops, r.upstream_index) {
                (Some(h), Some(u)) => format!("{h} (node {u})"),
                (Some(h), None) => h.to_string(),
                _ => "-".into(),
            },
            format!(
                "{} / {}",
                ms(r.remote.latency_p50_ms),
                ms(r.remote.latency_p99_ms)
            ),
            format!(
                "{} / {}",
                ms(r.local.latency_p50_ms),
                ms(r.local.latency_p99_ms)
            ),
            ms(r.added_latency_per_hop_ms),
            format!("{} / {}", r.remote.frames_lost, r.local.frames_lost),
            ms(r.remote.first_frame_ms),
            pair(cpu, 2),
            pair(rss, 1),
            note,
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_added_latency_and_errors() {
        let figures = |p50: f64| PlayerFigures {
            delivered: true,
            latency_p50_ms: Some(p50),
            latency_p99_ms: Some(p50 * 2.0),
            first_frame_ms: Some(300.0),
            ..PlayerFigures::default()
        };
        let ok = ChainResult {
            hops: 2,
            nodes: 3,
            remote: figures(30.0),
            local: figures(20.0),
            added_latency_per_hop_ms: Some(5.0),
            relayed_mbps: 2.5,
            usage: vec![
                NodeUsage {
                    index: 0,
                    cpu_percent: 5.0,
                    cpu_s_per_mbps: 0.02,
                    rss_mib: 10.0,
                },
                NodeUsage {
                    index: 1,
                    cpu_percent: 2.5,
                    cpu_s_per_mbps: 0.01,
                    rss_mib: 20.0,
                },
            ],
            ..ChainResult::default()
        };
        let ok = ChainResult {
            reported_hops: Some(2),
            upstream_index: Some(1),
            ..ok
        };
        let failed = ChainResult {
            hops: 4,
            nodes: 5,
            error: Some("no --bootstrap".into()),
            ..ChainResult::default()
        };
        let text = table(&[ok, failed]).to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].contains("30.0 / 60.0"), "{text}");
        assert!(lines[2].contains("2 (node 1)"), "{text}");
        assert!(lines[2].contains("5.0"), "{text}");
        assert!(lines[2].contains("1.50 / 2.00"), "{text}");
        assert!(lines[2].contains("15.0 / 20.0"), "{text}");
        assert!(lines[3].contains("no --bootstrap"), "{text}");
        let shortcut = ChainResult {
            hops: 4,
            reported_hops: Some(1),
            ..ChainResult::default()
        };
        assert!(
            table(&[shortcut])
                .to_text()
                .contains("the mesh took 1 hop(s), not 4")
        );
        assert_eq!(chain_upload_kbps(2500), 3750);
        assert_eq!(mean_max(std::iter::empty()), None);
    }
}
