//! `netlab bench heal`: how long a viewer goes without frames when the relay it receives from dies. Three
//! nodes on loopback, each uploading at most one copy of the stream: A (the publisher's node) serves B, so
//! C, which asks A too, is redirected to B and receives A -> B -> C. B is then killed (SIGKILL, as a crash
//! or a pulled plug), and C must notice, go back to A (whose only slot the dead B still holds) and resume.
//! The figure is the longest gap between two frames at C's player, per trial; each binary given (the
//! baseline first) runs the same trials in the same run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::mesh::{
    ChainNode, Rig, chain_upload_kbps, loopback_addr, start_node, url, wait_for_stream,
};
use crate::node::{self, StatusExt};
use crate::probe::playback::PlayReport;
use crate::report::Table;

/// Options of the heal bench.
#[derive(Debug, Clone)]
pub struct HealOptions {
    /// The binaries to compare, baseline first.
    pub nodes: Vec<PathBuf>,
    /// Trials per binary.
    pub trials: usize,
    /// Bitrate of the probe stream.
    pub kbps: u32,
    /// Video frames per second (a keyframe every 2 s).
    pub fps: u32,
    /// Time observed after the kill.
    pub after: Duration,
    /// Where node logs go.
    pub work_dir: PathBuf,
}

/// One trial.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HealTrial {
    /// Longest time between two frames at C's player, ms (the gap the kill made).
    pub gap_ms: Option<f64>,
    /// Probe frames C's player never got.
    pub frames_lost: u64,
    /// C received through B before the kill (else the trial measured nothing).
    pub through_relay: bool,
    /// Who C received from at the end ("A", "B" or a peer id), from its status.
    pub upstream_after: Option<String>,
    /// Why the trial could not be measured.
    pub error: Option<String>,
}

/// The trials of one binary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HealResult {
    /// The binary.
    pub node: String,
    /// Its trials.
    pub trials: Vec<HealTrial>,
    /// Median gap over the measured trials, ms.
    pub gap_p50_ms: Option<f64>,
    /// 95th percentile (nearest rank) of the gaps, ms.
    pub gap_p95_ms: Option<f64>,
}

/// Runs the bench.
pub async fn run(opts: &HealOptions) -> anyhow::Result<Vec<HealResult>> {
    super::require_nodes(opts.nodes.iter().map(PathBuf::as_path))?;
    let mut results = Vec::new();
    for (b, exe) in opts.nodes.iter().enumerate() {
        let mut r = HealResult {
            node: exe.display().to_string(),
            ..HealResult::default()
        };
        for t in 0..opts.trials {
            eprintln!("{}: trial {}/{} ...", exe.display(), t + 1, opts.trials);
            let dir = opts.work_dir.join(format!("node{b}-trial{}", t + 1));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let trial = match trial(opts, exe, &dir).await {
                Ok(trial) => trial,
                Err(e) => HealTrial {
                    error: Some(format!("{e:#}")),
                    ..HealTrial::default()
                },
            };
            if let Some(e) = &trial.error {
                eprintln!("  {e}");
            }
            r.trials.push(trial);
        }
        let mut gaps: Vec<f64> = r
            .trials
            .iter()
            .filter(|t| t.through_relay && t.error.is_none())
            .filter_map(|t| t.gap_ms)
            .collect();
        gaps.sort_by(f64::total_cmp);
        r.gap_p50_ms = nearest_rank(&gaps, 0.50);
        r.gap_p95_ms = nearest_rank(&gaps, 0.95);
        results.push(r);
    }
    Ok(results)
}

fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

async fn trial(opts: &HealOptions, exe: &Path, dir: &Path) -> anyhow::Result<HealTrial> {
    let cap = vec![
        "--max-upload-kbps".to_string(),
        chain_upload_kbps(opts.kbps).to_string(),
    ];
    let mut nodes: Vec<ChainNode> = Vec::new();
    let outcome = async {
        nodes.push(start_node(exe, "A", Vec::new(), &cap, dir).await?);
        let a_addr = loopback_addr(&nodes[0].ready).await?;
        nodes.push(start_node(exe, "B", vec![a_addr.clone()], &cap, dir).await?);
        nodes.push(start_node(exe, "C", vec![a_addr], &cap, dir).await?);
        measure(opts, &mut nodes).await
    }
    .await;
    for n in &mut nodes {
        n.process.stop(Duration::from_secs(5)).await;
    }
    outcome
}

async fn measure(opts: &HealOptions, nodes: &mut [ChainNode]) -> anyhow::Result<HealTrial> {
    let rig = Rig::start(url(&nodes[0]), opts.kbps, opts.fps).await;
    let player = |u: String| rig.player(u);
    // B first, so that it takes A's only slot; then C, which A redirects to B.
    let b_player = player(url(&nodes[1]));
    wait_for_stream(&nodes[1], Duration::from_secs(20)).await;
    let c_player = player(url(&nodes[2]));
    let b_id = nodes[1].ready.peer_id.clone();
    let a_id = nodes[0].ready.peer_id.clone();
    let through_relay = upstream_becomes(&nodes[2], &b_id, Duration::from_secs(20)).await;
    // Steady streaming through B, then B dies.
    tokio::time::sleep(Duration::from_secs(3)).await;
    nodes[1].process.kill().await;
    tokio::time::sleep(opts.after).await;
    let upstream_after = node::fetch_status(nodes[2].ready.http_listen, Duration::from_secs(2))
        .await
        .ok()
        .and_then(|s| s.stream("bench").and_then(|st| st.upstream.clone()))
        .map(|u| match u {
            u if u == a_id => "A".to_string(),
            u if u == b_id => "B".to_string(),
            u => u,
        });
    rig.stop_players();
    let c: PlayReport = c_player.await.context("C's player task")?;
    let _ = b_player.await;
    let _ = rig.stop_publisher().await;
    Ok(HealTrial {
        gap_ms: c.longest_gap_ms,
        frames_lost: c.missing,
        through_relay,
        upstream_after,
        error: c.error.clone(),
    })
}

/// Waits until `n` receives the stream from `peer`.
async fn upstream_becomes(n: &ChainNode, peer: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(s) = node::fetch_status(n.ready.http_listen, Duration::from_secs(2)).await
            && s.stream("bench")
                .is_some_and(|st| st.frames > 0 && st.upstream.as_deref() == Some(peer))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The results as a table: one row per binary.
pub fn table(results: &[HealResult]) -> Table {
    let ms = |v: Option<f64>| v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into());
    let mut t = Table::new([
        "node",
        "trials (through B)",
        "gap per trial ms",
        "gap p50 ms",
        "gap p95 ms",
        "frames lost per trial",
        "C's upstream after",
    ]);
    for r in results {
        let through = r.trials.iter().filter(|t| t.through_relay).count();
        let join =
            |f: &dyn Fn(&HealTrial) -> String| r.trials.iter().map(f).collect::<Vec<_>>().join(" ");
        t.push([
            r.node.clone(),
            format!("{} ({through})", r.trials.len()),
            join(&|t| ms(t.gap_ms)),
            ms(r.gap_p50_ms),
            ms(r.gap_p95_ms),
            join(&|t| t.frames_lost.to_string()),
            join(&|t| t.upstream_after.clone().unwrap_or_else(|| "-".into())),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(nearest_rank(&[], 0.5), None);
        let v = [100.0, 200.0, 300.0, 400.0, 5000.0];
        assert_eq!(nearest_rank(&v, 0.5), Some(300.0));
        assert_eq!(nearest_rank(&v, 0.95), Some(5000.0));
        assert_eq!(nearest_rank(&v[..1], 0.95), Some(100.0));
    }
}
