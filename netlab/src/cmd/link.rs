//! `netlab link`: what an impaired access link really does (round trip and loss).

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use streamr_netlab::proof::scale;
use streamr_netlab::{Lab, LabConfig, LinkConditions, NatPreset};

use super::write_file;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One-way delay in ms.
    #[arg(long, default_value_t = 25)]
    delay_ms: u32,
    /// Jitter in ms (delay ± jitter).
    #[arg(long, default_value_t = 0)]
    jitter_ms: u32,
    /// Loss per direction in percent.
    #[arg(long, default_value_t = 0.0)]
    loss_percent: f32,
    /// NAT in front of the measuring host.
    #[arg(long, default_value = "port-restricted")]
    preset: NatPreset,
    /// Echo requests to send.
    #[arg(long, default_value_t = 50)]
    count: u32,
    /// Time between echo requests, in ms.
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
    /// Write the measurement as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let link = LinkConditions {
        delay_ms: args.delay_ms,
        jitter_ms: args.jitter_ms,
        loss_percent: args.loss_percent,
    };
    link.validate()?;
    let lab = Lab::new(LabConfig::default())?;
    let mechanism = lab.impairment();
    let report = scale::measure_link(
        &lab,
        args.preset,
        link,
        args.count,
        std::time::Duration::from_millis(args.interval_ms),
    );
    lab.shutdown()?;
    let r = report?;
    let ms = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
    println!(
        "link {link} via {mechanism} behind {}: rtt min/median/max {}/{}/{} ms, loss {:.1}% ({}/{} replies)",
        args.preset,
        ms(r.min_ms()),
        ms(r.median_ms()),
        ms(r.max_ms()),
        r.loss_percent(),
        r.received,
        r.sent
    );
    if let Some(p) = &args.json {
        let doc = json!({
            "conditions": link,
            "mechanism": mechanism,
            "preset": args.preset,
            "median_ms": r.median_ms(),
            "min_ms": r.min_ms(),
            "max_ms": r.max_ms(),
            "loss_percent": r.loss_percent(),
            "report": r,
        });
        write_file(p, &serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(ExitCode::SUCCESS)
}
