//! `netlab report FILE...`: the Markdown and SVG of `netlab run` results again, from their `result.json`;
//! several files of one scenario (a full run and a later `--only` run of the cases it lacked) merge into
//! one report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use streamr_netlab::scenario::results::RunReport;
use streamr_netlab::scenario::runner;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `result.json` files written by `netlab run`.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Folder for result.json, report.md and grid.svg (created if missing).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let reports = args
        .files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            serde_json::from_str::<RunReport>(&text)
                .with_context(|| format!("{} is not a result.json of `netlab run`", f.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = RunReport::merge(reports).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    runner::write_outputs(&report, &args.out)?;
    println!("{}", report.summary_table().to_text());
    if let Some(g) = report.grid() {
        println!("{}", g.to_markdown());
    }
    println!("netlab report: files in {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
