//! `netlab wires`: the userspace wire hub, one process for every impaired link of a lab (see
//! `streamr_netlab::engine::wire`).

use std::process::ExitCode;

use streamr_netlab::engine::wire;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    // One thread for all links: every wake-up forwards every frame that is ready, on any link.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(wire::run_hub())?;
    Ok(ExitCode::SUCCESS)
}
