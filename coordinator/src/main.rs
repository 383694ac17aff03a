//! `streamr-coordinator`: serve the coordinator API (the default), or `bench` it.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use streamr_coordinator::bench::{self, BenchConfig};
use streamr_coordinator::server::{self, Clock, ServerConfig};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The reference coordinator for streamr-node: signed node registration and heartbeats, stream list,
/// sessions, invites, and bandwidth paid only when the receiver signed for it.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Simulated nodes with real keys heartbeating against coordinator processes; prints req/s, latency, CPU.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "STREAMR_COORDINATOR_LISTEN", default_value = server::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// sqlite://PATH (created when missing) or postgres://USER:PASSWORD@HOST/DB.
    #[arg(long, env = "STREAMR_COORDINATOR_DATABASE_URL", default_value = server::DEFAULT_DATABASE_URL)]
    database_url: String,
    /// Bearer token for /api/v1/operator/* (rates, assignments, version); unset = operator endpoints off.
    #[arg(
        long,
        env = "STREAMR_COORDINATOR_OPERATOR_TOKEN",
        hide_env_values = true
    )]
    operator_token: Option<String>,
    /// Heartbeat interval told to nodes; a node is offline after 3 intervals without one.
    #[arg(long, env = "STREAMR_COORDINATOR_HEARTBEAT_INTERVAL_SECS", default_value_t = server::DEFAULT_HEARTBEAT_INTERVAL_SECS)]
    heartbeat_interval_secs: u64,
    /// Postgres connections per instance.
    #[arg(long, default_value_t = 16)]
    postgres_connections: u32,
    /// Tokio worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Database shared by the instances (default: a fresh SQLite file in a temporary directory).
    #[arg(long)]
    database_url: Option<String>,
    /// Coordinator processes.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Heartbeat interval in seconds (30 is the real one; shorter multiplies the load).
    #[arg(long, default_value_t = 30)]
    interval_secs: u64,
    /// Measured phase in seconds.
    #[arg(long, default_value_t = 120)]
    duration_secs: u64,
    /// `taskset -c` CPU list for the coordinator processes ("none" = not pinned).
    #[arg(long, default_value = "1")]
    server_cpus: String,
    /// Tokio worker threads per coordinator process.
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Concurrent registrations while setting up.
    #[arg(long, default_value_t = 32)]
    register_concurrency: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        // Logs on stderr (stdout is the bench's figures), with colour codes only on a terminal: logs that
        // go to a file or journald stay plain text.
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    match cli.command {
        Some(Cmd::Bench(b)) => {
            let rt = rt.worker_threads(1).build()?;
            rt.block_on(bench::run(BenchConfig {
                nodes: b.nodes,
                database_url: b.database_url,
                instances: b.instances,
                interval_secs: b.interval_secs,
                duration_secs: b.duration_secs,
                server_cpus: Some(b.server_cpus).filter(|c| c != "none"),
                server_threads: b.server_threads,
                register_concurrency: b.register_concurrency,
            }))
        }
        None => {
            if let Some(n) = cli.serve.threads {
                rt.worker_threads(n.max(1));
            }
            rt.build()?.block_on(serve(cli.serve))
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let running = server::start(
        ServerConfig {
            listen: args.listen,
            database_url: args.database_url,
            operator_token: args.operator_token,
            heartbeat_interval_secs: args.heartbeat_interval_secs,
            postgres_connections: args.postgres_connections,
            clock: Clock::System,
        },
        cancel.clone(),
    )
    .await
    .context("the coordinator could not start")?;
    shutdown_signal().await;
    info!("shutting down");
    cancel.cancel();
    running.wait().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
