//! `netlab wires`: the userspace wire hub, one process for every impaired link of a lab (see
//! `streamr_netlab::engine::wire`).

use std::process::ExitCode;

use streamr_netlab::engine::wire;

#[derive(Debug, clap::Args)]
pub struct Args {}

/// The hub's real-time priority (SCHED_FIFO, the lowest of 1-99): above every ordinary process.
const HUB_PRIORITY: &str = "1";

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    // The lab's wires stand for the internet between the nodes, which does not wait for a CPU behind
    // them: at the default priority, in scale-50 (50 nodes on 2 cores), a ping across one 20 ms access
    // link averaged 195-254 ms instead of 40, every frame queued in the hub while the nodes ran. With a
    // real-time priority it stays at 40-45 ms. (The highest nice value did that too, but then the nodes
    // waited for a CPU as much as with this, and the hub could still be made to wait.) Set before the
    // runtime starts, for the process's only thread, so that threads started after it inherit it; through
    // util-linux's `chrt` (the workspace has no unsafe code for `sched_setscheduler`). Without the right
    // to (not root), the lab still works, and says its delays grow under CPU load.
    real_time();
    // One thread for all links: every wake-up forwards every frame that is ready, on any link.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(wire::run_hub())?;
    Ok(ExitCode::SUCCESS)
}

/// Puts this process on the real-time scheduler, or says why it could not.
fn real_time() {
    let pid = std::process::id().to_string();
    let out = std::process::Command::new("chrt")
        .args(["--fifo", "--all-tasks", "--pid", HUB_PRIORITY, &pid])
        .output();
    let why = match out {
        Ok(o) if o.status.success() => return,
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => format!("cannot run chrt (util-linux): {e}"),
    };
    eprintln!(
        "netlab wires: cannot give the wire a real-time priority ({why}); under CPU load its delays \
         will be longer than asked"
    );
}
