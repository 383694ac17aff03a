//! `netlab clean`: removes leftovers of crashed runs.

use std::process::ExitCode;

use streamr_netlab::engine::{clean, sys};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also remove labs whose run is still alive.
    #[arg(long)]
    force: bool,
    /// Only list what would be removed.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    sys::check_privileges()?;
    let removed = clean::clean(args.force, args.dry_run)?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    if removed.is_empty() {
        println!("netlab clean: nothing to remove");
    }
    for run in &removed {
        let state = if run.owner_alive {
            " (its run is alive: --force)"
        } else {
            ""
        };
        println!(
            "netlab clean: {verb} {} with {} namespace(s){state}",
            run.prefix,
            run.namespaces.len()
        );
    }
    if !args.force {
        let live = clean::find()?.into_iter().filter(|r| r.owner_alive).count();
        if live > 0 {
            println!("netlab clean: kept {live} lab(s) of running processes");
        }
    }
    Ok(ExitCode::SUCCESS)
}
