//! `netlab soak`: a node under a publisher, players and mesh churn for a long time; RSS, descriptors and
//! errors (not run in CI).

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use streamr_netlab::bench::soak::{self, RSS_GROWTH_GOAL_PERCENT, SoakOptions};

/// Options of `soak`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long to run, seconds.
    #[arg(long, default_value_t = 3600)]
    pub duration: u64,
    /// ffmpeg players on the node under test.
    #[arg(long, default_value_t = 20)]
    pub players: usize,
    /// Seconds between restarts of a mesh peer (the two take turns).
    #[arg(long, default_value_t = 30)]
    pub churn: u64,
    /// Seconds between samples of RSS and descriptors.
    #[arg(long, default_value_t = 5)]
    pub sample: u64,
    /// The streamr-node binary [default: next to netlab].
    #[arg(long)]
    pub node: Option<PathBuf>,
    /// Folder for the clip (kept between runs) and the nodes' logs.
    #[arg(long, default_value = "/tmp/streamr-soak")]
    pub work_dir: PathBuf,
    /// Print the result as JSON (with every sample) instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// Runs the soak and prints what it found.
pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.duration < 60 || a.churn == 0 || a.sample == 0 {
        anyhow::bail!("--duration takes at least 60 seconds; --churn and --sample at least 1");
    }
    let opts = SoakOptions {
        duration: Duration::from_secs(a.duration),
        players: a.players,
        churn: Duration::from_secs(a.churn),
        sample_every: Duration::from_secs(a.sample),
        node: a.node.unwrap_or_else(super::bench::sibling_node),
        work_dir: a.work_dir,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let r = rt.block_on(soak::run(&opts))?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).context("cannot write JSON")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "soak of {:.0} s (warm-up {:.0} s), {} players, {} mesh restarts",
        r.duration_s, r.warmup_s, r.players, r.mesh_restarts
    );
    println!(
        "RSS: {:.1} MiB after warm-up, {:.1} MiB at the end, peak {:.1} MiB; growth {:.2}% (goal <= {RSS_GROWTH_GOAL_PERCENT}%)",
        r.rss_after_warmup_mib, r.rss_end_mib, r.rss_peak_mib, r.rss_growth_percent
    );
    println!(
        "RSS trend after warm-up (least squares over every sample): {:+.2}% an hour",
        r.rss_trend_percent_per_hour
    );
    if !r.rss_growth_by_hour_percent.is_empty() {
        let hours: Vec<String> = r
            .rss_growth_by_hour_percent
            .iter()
            .map(|p| format!("{p:+.2}%"))
            .collect();
        println!("RSS growth by hour after warm-up: {}", hours.join(", "));
    }
    println!(
        "live heap: {:.1} MiB after warm-up, {:.1} MiB at the end ({:+.2}%); tasks alive: {:.0} after warm-up, {:.0} at the end",
        r.heap_after_warmup_mib,
        r.heap_end_mib,
        r.heap_growth_percent,
        r.tasks_after_warmup,
        r.tasks_end
    );
    println!(
        "of the RSS: anonymous {:.1} -> {:.1} MiB ({:+.2} MiB an hour), the allocator's resident {:.1} -> {:.1} MiB ({:+.2} MiB an hour), files {:.1} -> {:.1} MiB",
        r.anon_after_warmup_mib,
        r.anon_end_mib,
        r.anon_trend_mib_per_hour,
        r.allocator_after_warmup_mib,
        r.allocator_end_mib,
        r.allocator_trend_mib_per_hour,
        r.file_after_warmup_mib,
        r.file_end_mib
    );
    println!(
        "open descriptors: {} at start (no clients yet), {} after warm-up, {} at the end, peak {}",
        r.fds_start, r.fds_after_warmup, r.fds_end, r.fds_peak
    );
    println!(
        "node alive at the end: {}; players alive: {}/{}; fewest frames a player got: {}",
        r.node_alive_at_end, r.players_alive_at_end, r.players, r.player_frames_min
    );
    println!(
        "error lines: {} from the node under test, {} from the mesh peers",
        r.node_errors.len(),
        r.peer_error_count
    );
    for l in &r.node_errors {
        println!("  {l}");
    }
    println!("logs: {}", opts.work_dir.display());
    Ok(ExitCode::SUCCESS)
}
