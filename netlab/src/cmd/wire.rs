//! `netlab wire ...`: the userspace wire process (see `streamr_netlab::engine::wire`).

use std::process::ExitCode;

use streamr_netlab::LinkConditions;
use streamr_netlab::engine::wire::{self, WireConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// First TAP device (stays in this namespace).
    #[arg(long)]
    tap_a: String,
    /// Second TAP device (the lab moves it to the other namespace).
    #[arg(long)]
    tap_b: String,
    #[arg(long, default_value_t = 0)]
    delay_ms: u32,
    #[arg(long, default_value_t = 0)]
    jitter_ms: u32,
    #[arg(long, default_value_t = 0.0)]
    loss_percent: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let conditions = LinkConditions {
        delay_ms: args.delay_ms,
        jitter_ms: args.jitter_ms,
        loss_percent: args.loss_percent,
    };
    conditions.validate()?;
    let config = WireConfig {
        tap_a: args.tap_a,
        tap_b: args.tap_b,
        conditions,
        seed: args.seed,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(wire::run(config))?;
    Ok(ExitCode::SUCCESS)
}
