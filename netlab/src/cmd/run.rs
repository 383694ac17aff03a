//! `netlab run FILE`: runs a scenario file (see `streamr_netlab::scenario` for the format) and writes its
//! JSON, Markdown and SVG reports with every node's log into an output folder.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use streamr_netlab::LabConfig;
use streamr_netlab::scenario::{
    self,
    runner::{self, RunOptions},
};

use super::EXIT_MISMATCH;
use super::bench::sibling_node;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file (e.g. netlab/scenarios/smoke.toml).
    file: PathBuf,
    /// Output folder [default: /tmp/netlab-runs/<scenario>-<unix time>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The streamr-node binary [default: next to netlab].
    #[arg(long)]
    node: Option<PathBuf>,
    /// Trials per case, instead of the file's.
    #[arg(long)]
    trials: Option<u32>,
    /// Seconds per trial, instead of the file's duration_s.
    #[arg(long)]
    duration: Option<f64>,
    /// The probe publisher's bitrate in kbit/s, instead of the file's (e.g. 1000 for issue 13's 1 Mbit/s
    /// figures).
    #[arg(long, value_parser = clap::value_parser!(u32).range(8..=100_000))]
    kbps: Option<u32>,
    /// Only these cases (comma separated; `ROW/COLUMN` for a matrix, `main` otherwise).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Trials run at the same time, each in a lab of its own. A trial of the NAT matrix keeps a core about
    /// 3% busy, so several fit on two cores; times to direct are then a little slower than alone.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=32))]
    jobs: u16,
    /// Also copy the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let scenario = scenario::load(&args.file)?;
    let duration = match args.duration {
        Some(d) if d.is_finite() && d > 0.0 && d <= 86_400.0 => Some(Duration::from_secs_f64(d)),
        Some(d) => anyhow::bail!("--duration {d}: give seconds from 0 to 86400"),
        None => None,
    };
    let out = args.out.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from("/tmp/netlab-runs").join(format!("{}-{now}", scenario.name))
    });
    let opts = RunOptions {
        node_exe: args.node.unwrap_or_else(sibling_node),
        out_dir: out.clone(),
        trials: args.trials,
        duration,
        kbps: args.kbps,
        only: args.only,
        jobs: usize::from(args.jobs),
        lab: LabConfig::default(),
    };
    // Needs root before anything starts: say so at once rather than per trial.
    streamr_netlab::engine::sys::check_privileges()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(runner::run(&scenario, &opts))?;
    println!("{}", report.summary_table().to_text());
    if let Some(g) = report.grid() {
        println!("{}", g.to_markdown());
    }
    println!(
        "netlab run: {} (mesh: {}); files in {}",
        report.scenario,
        if report.mesh { "yes" } else { "no" },
        out.display()
    );
    if let Some(p) = &args.json {
        super::write_file(p, &serde_json::to_string_pretty(&report)?)?;
    }
    Ok(if report.failures() == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "netlab run: {} player(s) did not get the stream or trial(s) failed; see {}",
            report.failures(),
            out.join("report.md").display()
        );
        ExitCode::from(EXIT_MISMATCH)
    })
}
