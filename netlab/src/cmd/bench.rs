//! `netlab bench ...`: benchmarks that print figures beside a baseline measured in the same run.

use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use streamr_netlab::bench::fanout::{self, FanoutOptions};

/// Which benchmark.
#[derive(Debug, Subcommand)]
pub enum Args {
    /// One publisher, N ffmpeg players: streamr-node against nginx-rtmp (CPU, RSS, frames, late joiner,
    /// startup).
    Fanout(FanoutArgs),
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
            if let Some(path) = a.json {
                let text = serde_json::to_string_pretty(&results)?;
                std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
