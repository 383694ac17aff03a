//! `netlab sim`: the simulated mesh (`streamr_mesh::sim`): thousands of virtual nodes running the mesh's
//! own decision code over a simulated network with virtual time, for audiences no machine here can hold.
//! Deterministic from the seed.

use std::process::ExitCode;
use std::time::Duration;

use streamr_mesh::sim::{self, SimConfig, SimReport};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nodes in all (the publisher included); several, comma separated, run one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    nodes: Vec<usize>,
    /// Seed of every random choice: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Viewers join evenly over this many seconds.
    #[arg(long, default_value_t = 60)]
    join_secs: u64,
    /// Seconds after the last join before relaying nodes are killed.
    #[arg(long, default_value_t = 30)]
    settle_secs: u64,
    /// Share of the relaying nodes killed at once.
    #[arg(long, default_value_t = 0.10)]
    kill_share: f64,
    /// Seconds observed after the kill.
    #[arg(long, default_value_t = 30)]
    observe_secs: u64,
    /// The stream's bitrate, kbit/s (one upload slot).
    #[arg(long, default_value_t = 2500)]
    stream_kbps: u64,
    /// Silence after which a viewer replaces its upstream, ms (the node's own default).
    #[arg(long)]
    stall_ms: Option<u64>,
    /// Every node's upload cap, kbit/s, the publisher's included (default: home caps of 4-80 Mbit/s drawn
    /// per viewer, 32 Mbit/s for the publisher).
    #[arg(long)]
    upload_kbps: Option<u64>,
    /// Served viewers stay where they attached instead of moving nearer the origin when room appears there
    /// (the tree before that rule, for comparison).
    #[arg(long)]
    no_climb: bool,
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut reports: Vec<SimReport> = Vec::new();
    for &n in &args.nodes {
        let mut cfg = SimConfig::new(n, args.seed);
        cfg.join = Duration::from_secs(args.join_secs);
        cfg.settle = Duration::from_secs(args.settle_secs);
        cfg.kill_share = args.kill_share;
        cfg.observe = Duration::from_secs(args.observe_secs);
        cfg.stream_kbps = args.stream_kbps;
        cfg.upload_kbps = args.upload_kbps;
        cfg.climb = !args.no_climb;
        if let Some(ms) = args.stall_ms {
            cfg.stall_timeout = Duration::from_millis(ms);
        }
        let r = sim::run(cfg);
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            eprintln!("{n} nodes: {} ms of wall-clock time", r.wall_ms);
        }
        reports.push(r);
    }
    if !args.json {
        print!("{}", table(&reports));
    }
    Ok(ExitCode::SUCCESS)
}

/// The Markdown table of the README.
fn table(reports: &[SimReport]) -> String {
    let mut out = String::from(
        "| nodes | served | max depth (best possible) | join p50 / p95 | relays killed | orphaned | repaired | repair p50 / p95 | served at end | moved up |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        out.push_str(&format!(
            "| {} | {}/{} | {} ({}) | {:.1} / {:.1} s | {} | {} | {:.0}% | {:.1} / {:.1} s | {}/{} | {} |\n",
            r.nodes,
            r.served,
            r.viewers,
            r.max_depth,
            r.best_depth,
            r.join_p50_ms as f64 / 1000.0,
            r.join_p95_ms as f64 / 1000.0,
            r.killed,
            r.orphaned,
            r.repaired * 100.0,
            r.repair_p50_ms as f64 / 1000.0,
            r.repair_p95_ms as f64 / 1000.0,
            r.served_at_end,
            r.alive_at_end,
            r.climbs,
        ));
    }
    out
}
