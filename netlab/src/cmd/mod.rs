//! Subcommands, one module each. A new subcommand is a module with `Args` and `run`, plus a variant here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod bench;
mod classify;
mod clean;
mod link;
mod punch;
mod report;
mod run;
mod scale;
mod sim;
mod soak;
mod wire;

/// Exit code when the lab worked but a result differs from the theory.
pub const EXIT_MISMATCH: u8 = 1;
/// Exit code when the lab could not run (not root, tool missing, set-up failed).
pub const EXIT_ERROR: u8 = 2;
/// Exit code after Ctrl-C or SIGTERM (the lab was torn down).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Real NATs of every type in network namespaces, and the probes that prove them.
#[derive(Debug, Parser)]
#[command(name = "netlab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure each NAT preset's mapping and filtering with a STUN-like probe; exit 1 on a mismatch.
    Classify(classify::Args),
    /// UDP hole punching between every ordered pair of presets; exit 1 if a cell differs from theory.
    Punch(punch::Args),
    /// Build N NAT sites, optionally check them, tear them down, and print the times.
    Scale(scale::Args),
    /// Measure round-trip time and loss through an access link with the given conditions.
    Link(link::Args),
    /// Run a scenario file: streamr-node in the lab, probe publisher and players; JSON, Markdown, SVG.
    Run(run::Args),
    /// Rebuild the Markdown and SVG of `netlab run` results; several result.json of one scenario merge.
    Report(report::Args),
    /// Benchmarks against a baseline measured in the same run (e.g. `bench fanout` against nginx-rtmp).
    #[command(subcommand)]
    Bench(bench::Args),
    /// The simulated mesh: many virtual nodes running the mesh's own decision code, deterministic from a
    /// seed (no namespaces, no root).
    Sim(sim::Args),
    /// A node under a publisher, N players and two churning mesh peers for an hour (not in CI): RSS
    /// growth after warm-up, open descriptors, error lines.
    Soak(soak::Args),
    /// Remove namespaces left by crashed runs (never a live run's, unless --force).
    Clean(clean::Args),
    /// Probe programs that run inside the lab's namespaces (used by the lab itself).
    #[command(hide = true)]
    Agent(agent::Args),
    /// The userspace wire hub: every impaired link of one lab (used by the lab itself).
    #[command(hide = true)]
    Wires(wire::Args),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Agent(a) => report(agent::run(a)),
        Command::Wires(a) => report(wire::run(a)),
        Command::Classify(a) => with_lab_teardown(move || classify::run(a)),
        Command::Punch(a) => with_lab_teardown(move || punch::run(a)),
        Command::Scale(a) => with_lab_teardown(move || scale::run(a)),
        Command::Link(a) => with_lab_teardown(move || link::run(a)),
        Command::Run(a) => with_lab_teardown(move || run::run(a)),
        Command::Report(a) => report(report::run(a)),
        Command::Clean(a) => report(clean::run(a)),
        Command::Sim(a) => report(sim::run(a)),
        Command::Soak(a) => report(soak::run(a)),
        Command::Bench(a) => report(bench::run(a)),
    }
}

fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("netlab: {e:#}");
        ExitCode::from(EXIT_ERROR)
    })
}

/// Runs `work` (which builds labs) while listening for Ctrl-C and SIGTERM; on a signal every lab of the
/// process is torn down before exiting, so an interrupted run leaves nothing behind.
fn with_lab_teardown(work: impl FnOnce() -> anyhow::Result<ExitCode> + Send + 'static) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return report(Err(e.into())),
    };
    runtime.block_on(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => return report(Err(e.into())),
            };
        let job = tokio::task::spawn_blocking(work);
        let signal = tokio::select! {
            done = job => {
                return match done {
                    Ok(result) => report(result),
                    // The lab's Drop already ran during unwinding; say what happened.
                    Err(e) => report(Err(anyhow::anyhow!("netlab crashed: {e}"))),
                };
            }
            _ = tokio::signal::ctrl_c() => "interrupted",
            _ = term.recv() => "terminated",
        };
        eprintln!("netlab: {signal}: tearing the lab down");
        streamr_netlab::teardown_all();
        // The worker thread may be blocked in a child process; the lab is gone, so leave without it.
        std::process::exit(EXIT_INTERRUPTED.into());
    })
}

/// Writes `text` to `path`, saying which file failed.
fn write_file(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
