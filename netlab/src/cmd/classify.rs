//! `netlab classify`: the classify table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use streamr_netlab::engine::nat::parse_preset_list;
use streamr_netlab::proof::classify;
use streamr_netlab::{Lab, LabConfig};

use super::{EXIT_MISMATCH, write_file};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Presets to classify, comma-separated (none, full-cone, restricted, port-restricted, symmetric,
    /// double, double:CARRIER+HOME, upnp, pcp, v6-firewall, cgnat-v6), or `all` (the IPv4 types). Sites
    /// behind an IPv6 firewall are measured over IPv6 too.
    #[arg(long, default_value = "all")]
    presets: String,
    /// Also write the rows as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the table as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let presets = parse_preset_list(&args.presets)?;
    let start = Instant::now();
    let lab = Lab::new(LabConfig::default())?;
    let rows = classify::run(&lab, &presets);
    let teardown = lab.shutdown()?;
    let rows = rows?;
    let table = classify::table(&rows);
    print!("{}", table.to_text());
    println!(
        "classify: {} preset(s), {} as defined, lab {} in {:.1} s (teardown {:.2} s)",
        rows.len(),
        rows.iter().filter(|r| r.ok).count(),
        lab.prefix(),
        start.elapsed().as_secs_f64(),
        teardown.elapsed.as_secs_f64()
    );
    if let Some(p) = &args.json {
        write_file(p, &serde_json::to_string_pretty(&rows)?)?;
    }
    if let Some(p) = &args.markdown {
        write_file(p, &table.to_markdown())?;
    }
    Ok(if rows.iter().all(|r| r.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_MISMATCH)
    })
}
