//! `netlab scale`: set-up and teardown times for N NAT sites.

use std::path::PathBuf;
use std::process::ExitCode;

use streamr_netlab::proof::scale;
use streamr_netlab::{LabConfig, LinkConditions, NatPreset};

use super::{EXIT_MISMATCH, write_file};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of NAT sites.
    #[arg(long, default_value_t = 50)]
    sites: usize,
    /// Preset of every site, or `mixed` to cycle through all presets.
    #[arg(long, default_value = "port-restricted")]
    preset: String,
    /// One-way delay on every access link, in ms.
    #[arg(long, default_value_t = 0)]
    delay_ms: u32,
    /// Check that every site's host reaches a public echo server through its NAT.
    #[arg(long)]
    check: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let presets = if args.preset == "mixed" {
        scale::mixed_presets(args.sites)
    } else {
        vec![args.preset.parse::<NatPreset>()?; args.sites]
    };
    let r = scale::run(
        LabConfig::default(),
        &presets,
        LinkConditions::delay(args.delay_ms),
        args.check,
    )?;
    println!(
        "scale: {} sites ({} namespaces): setup {:.2} s, teardown {:.2} s, leftover namespaces {}",
        r.sites,
        r.namespaces,
        r.setup.as_secs_f64(),
        r.teardown.as_secs_f64(),
        r.leftover_namespaces
    );
    if let (Some(n), Some(t)) = (r.reachable, r.check) {
        println!(
            "scale: {n}/{} sites reached the public echo server ({:.2} s)",
            r.sites,
            t.as_secs_f64()
        );
    }
    if let Some(p) = &args.json {
        write_file(p, &serde_json::to_string_pretty(&r)?)?;
    }
    let all_reached = r.reachable.is_none_or(|n| n == r.sites);
    Ok(if all_reached && r.leftover_namespaces == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_MISMATCH)
    })
}
