//! `netlab bench ...`: benchmarks that print figures beside a baseline measured in the same run.

use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use streamr_netlab::bench::fanout::{self, FanoutOptions};
use streamr_netlab::bench::heal::{self, HealOptions};
use streamr_netlab::bench::idle::{self, IdleOptions};
use streamr_netlab::bench::mesh::{self, MeshOptions};

/// Which benchmark.
#[derive(Debug, Subcommand)]
pub enum Args {
    /// One publisher, N ffmpeg players: streamr-node against nginx-rtmp (CPU, RSS, frames, late joiner,
    /// startup).
    Fanout(FanoutArgs),
    /// Chains of streamr-node on loopback: latency each mesh hop adds over the single-node path, frames
    /// lost, time to first frame, CPU per node per relayed Mbps, RSS.
    Mesh(MeshArgs),
    /// Healing: A serves B, C is redirected to B; B is killed and C's player counts the gap until frames
    /// come again (through A). Per trial, for each binary (the baseline first).
    Heal(HealArgs),
    /// An idle mesh: N nodes on loopback, nothing published; CPU, wake-ups and RSS per node over a window
    /// (goal: <= 0.1% of a core), for each binary (the baseline first).
    Idle(IdleArgs),
}

/// Options of `bench idle`.
#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// Nodes in the mesh (1: a lone node, the floor every peer adds to).
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Seconds from the last node's start to the window.
    #[arg(long, default_value_t = 60)]
    pub warmup: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 300)]
    pub window: u64,
    /// The streamr-node binary [default: next to netlab].
    #[arg(long)]
    pub node: Option<PathBuf>,
    /// A baseline binary measured first, in the same run.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Folder for the nodes' logs.
    #[arg(long, default_value = "/tmp/streamr-bench")]
    pub work_dir: PathBuf,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Options of `bench heal`.
#[derive(Debug, clap::Args)]
pub struct HealArgs {
    /// Trials per binary.
    #[arg(long, default_value_t = 5)]
    pub trials: usize,
    /// Seconds observed after the kill.
    #[arg(long, default_value_t = 10)]
    pub after: u64,
    /// Bitrate of the probe stream in kbps.
    #[arg(long, default_value_t = 2500)]
    pub kbps: u32,
    /// The streamr-node binary [default: next to netlab].
    #[arg(long)]
    pub node: Option<PathBuf>,
    /// A baseline binary measured first, in the same run (e.g. the previous release).
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Folder for the nodes' logs.
    #[arg(long, default_value = "/tmp/streamr-bench")]
    pub work_dir: PathBuf,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Options of `bench mesh`.
#[derive(Debug, clap::Args)]
pub struct MeshArgs {
    /// Chain lengths in hops, comma separated (a single node, 0 hops, is always measured too).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub hops: Vec<usize>,
    /// Seconds from the players' start to the CPU window (mesh lookup, caches).
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Seconds of the CPU window.
    #[arg(long, default_value_t = 20)]
    pub window: u64,
    /// Bitrate of the probe stream in kbps.
    #[arg(long, default_value_t = 2500)]
    pub kbps: u32,
    /// Video frames per second (keyframe every 2 s).
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// The streamr-node binary [default: next to netlab].
    #[arg(long)]
    pub node: Option<PathBuf>,
    /// Only node 0 and the last node play, and no upload cap: the mesh may shortcut the chain. By default
    /// every node plays (in chain order) and uploads at most 1.5x the stream, so the stream crosses every
    /// hop.
    #[arg(long)]
    pub no_force_chain: bool,
    /// Folder for the nodes' logs (one subfolder per chain).
    #[arg(long, default_value = "/tmp/streamr-bench")]
    pub work_dir: PathBuf,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Options of `bench fanout`.
#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    /// Player counts, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "20,100")]
    pub players: Vec<usize>,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 6)]
    pub warmup: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 20)]
    pub window: u64,
    /// Late players measured per configuration.
    #[arg(long, default_value_t = 5)]
    pub late: usize,
    /// The streamr-node binary [default: next to netlab].
    #[arg(long)]
    pub node: Option<PathBuf>,
    /// Folder for the clip (kept between runs) and scratch files.
    #[arg(long, default_value = "/tmp/streamr-bench")]
    pub work_dir: PathBuf,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The streamr-node binary beside this executable (cargo puts both in target/<profile>/).
pub fn sibling_node() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("streamr-node")))
        .unwrap_or_else(|| PathBuf::from("streamr-node"))
}

/// Writes the results as JSON to `path`, if one was given.
fn write_json(path: Option<PathBuf>, results: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(results)?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a benchmark.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args {
        Args::Fanout(a) => {
            let opts = FanoutOptions {
                players: a.players,
                warmup: Duration::from_secs(a.warmup),
                window: Duration::from_secs(a.window),
                node: a.node.unwrap_or_else(sibling_node),
                work_dir: a.work_dir,
                late_samples: a.late.max(1),
            };
            let results = rt.block_on(fanout::run(&opts))?;
            println!("{}", fanout::table(&results).to_text());
            write_json(a.json, &results)
        }
        Args::Heal(a) => {
            if a.trials == 0 || a.trials > 100 || a.after < 3 {
                anyhow::bail!("--trials takes 1 to 100 and --after at least 3 seconds");
            }
            let mut nodes: Vec<PathBuf> = a.baseline.into_iter().collect();
            nodes.push(a.node.unwrap_or_else(sibling_node));
            let opts = HealOptions {
                nodes,
                trials: a.trials,
                kbps: a.kbps.clamp(8, 100_000),
                fps: 30,
                after: Duration::from_secs(a.after),
                work_dir: a.work_dir.join("heal"),
            };
            let results = rt.block_on(heal::run(&opts))?;
            println!("{}", heal::table(&results).to_text());
            println!("node logs: {}", opts.work_dir.display());
            write_json(a.json, &results)
        }
        Args::Idle(a) => {
            if !(1..=64).contains(&a.nodes) || a.window == 0 {
                anyhow::bail!("--nodes takes 1 to 64 and --window at least 1 second");
            }
            let mut nodes: Vec<PathBuf> = a.baseline.into_iter().collect();
            nodes.push(a.node.unwrap_or_else(sibling_node));
            let opts = IdleOptions {
                nodes,
                count: a.nodes,
                warmup: Duration::from_secs(a.warmup),
                window: Duration::from_secs(a.window),
                work_dir: a.work_dir.join("idle"),
            };
            let results = rt.block_on(idle::run(&opts))?;
            println!("{}", idle::table(&results).to_text());
            println!("node logs: {}", opts.work_dir.display());
            write_json(a.json, &results)
        }
        Args::Mesh(a) => {
            if a.hops.iter().any(|h| *h > 64) || a.window == 0 {
                anyhow::bail!("--hops takes chain lengths up to 64 and --window at least 1 second");
            }
            let opts = MeshOptions {
                hops: a.hops,
                warmup: Duration::from_secs(a.warmup),
                window: Duration::from_secs(a.window),
                kbps: a.kbps.clamp(8, 100_000),
                fps: a.fps.clamp(1, 240),
                node: a.node.unwrap_or_else(sibling_node),
                work_dir: a.work_dir.join("mesh"),
                force_chain: !a.no_force_chain,
            };
            let results = rt.block_on(mesh::run(&opts))?;
            println!("{}", mesh::table(&results).to_text());
            println!("node logs: {}", opts.work_dir.display());
            write_json(a.json, &results)
        }
    }
}
