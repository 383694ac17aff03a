//! streamr-node: parse the command line, build the configuration, run the node until Ctrl-C or SIGTERM.

mod cli;
mod client;
mod coordinator;
mod crash;
mod dashboard;
mod datafile;
mod friends;
mod identity;
mod logging;
mod memory;
mod metrics;
mod node;
mod service;

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use streamr_node::{config, invite, settings, update};

/// jemalloc allocates for Rust code on Linux (see memory.rs: glibc's malloc let a node's RSS creep up).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long connections get to close cleanly on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    // Before any thread exists (see memory.rs: why glibc's defaults let a node's RSS creep up).
    memory::tune();
    // A .env file in the working directory fills in STREAMR_* variables that are not set.
    let _ = dotenvy::dotenv();
    let cli = cli::Cli::parse();
    let (print_config, args) = match cli.command {
        Some(cli::Command::Run(a)) => (false, a),
        Some(cli::Command::Config(a)) if a.markdown => {
            print!("{}", settings::markdown_table());
            return ExitCode::SUCCESS;
        }
        Some(cli::Command::Config(a)) => (true, a.run),
        Some(cli::Command::Service(s)) => return service::main(s),
        Some(cli::Command::Invite(a)) => return client::invite(a),
        Some(cli::Command::Join(a)) => return client::join(a),
        Some(cli::Command::Password(a)) => return client::password(a),
        None => (false, cli.run),
    };
    let (config, flags) = match build_config_with_flags(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamr-node: {e:#}");
            return ExitCode::from(2);
        }
    };
    if print_config {
        match toml::to_string_pretty(&config) {
            Ok(t) => print!("{t}"),
            Err(e) => eprintln!("cannot print the configuration: {e}"),
        }
        return ExitCode::SUCCESS;
    }
    logging::init(config.log_format, &config.log);
    crash::install_panic_hook(&config.data_dir);
    serve_with(config, flags, stop_signal())
}

/// [`serve_with`] for a node whose settings all come from its config file (a service).
fn serve(config: config::Config, stop: impl std::future::Future<Output = ()>) -> ExitCode {
    serve_with(config, config::FileConfig::default(), stop)
}

/// Runs the node on a new runtime until `stop` resolves or a part of it fails; a restart asked for by the
/// dashboard runs the program again in place. `flags` is the command line and environment layer.
fn serve_with(
    config: config::Config,
    flags: config::FileConfig,
    stop: impl std::future::Future<Output = ()>,
) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamr-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(config, flags, stop)) {
        Ok(node::Exit::Stopped) => ExitCode::SUCCESS,
        Ok(node::Exit::Restart) => {
            drop(rt);
            restart_in_place()
        }
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("streamr-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Worker threads of the node's runtime, unless `TOKIO_WORKER_THREADS` says otherwise.
///
/// One: a node's work is many small wake-ups (a QUIC packet, a frame for a player), and with a worker
/// per core every one of them also woke the other worker to look for work to steal. Measured on an idle
/// 10-node mesh (`netlab bench idle`, same run): one worker 0.150% of a core and 28.7 wake-ups a second
/// per node, two workers 0.217% and 53.0. One core carries far more than a home uplink (the fan-out
/// bench's 100 players at 2.5 Mbit/s take a few percent of one); heavy work (catalog signatures, the
/// allocator's purge) runs on the blocking pool.
const WORKER_THREADS: usize = 1;

/// The node's runtime: [`WORKER_THREADS`] workers (the environment's `TOKIO_WORKER_THREADS` wins), timers
/// and I/O.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(WORKER_THREADS);
    }
    builder.enable_all().build()
}

/// Runs this program again with the same arguments, in place of this process (same pid: a service
/// manager or a terminal keeps it).
fn restart_in_place() -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("streamr-node: cannot restart: {e}; start it again by hand");
            return ExitCode::FAILURE;
        }
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let e = cmd.exec();
        eprintln!("streamr-node: cannot restart: {e}; start it again by hand");
        ExitCode::FAILURE
    }
    #[cfg(not(unix))]
    match cmd.spawn() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamr-node: cannot restart: {e}; start it again by hand");
            ExitCode::FAILURE
        }
    }
}

/// The effective configuration.
fn build_config(args: cli::RunArgs) -> anyhow::Result<config::Config> {
    build_config_with_flags(args).map(|(c, _)| c)
}

/// The effective configuration and the flags/environment layer in it.
fn build_config_with_flags(
    args: cli::RunArgs,
) -> anyhow::Result<(config::Config, config::FileConfig)> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(config::default_data_dir);
    let mut c = config::Config::defaults(data_dir.clone());
    c.apply_file(config::read_file(&data_dir)?);
    let mut flags = args.into_layer();
    // The coordinator's URL is also found under the name the coordinator's docs give nodes (the
    // environment layer, below the flag and the setting's own variable).
    if flags.coordinator.is_none()
        && let Ok(url) = std::env::var("STREAMR_COORDINATOR_URL")
    {
        flags.coordinator = Some(Some(url));
    }
    c.apply_file(flags.clone());
    c.validate()?;
    Ok((c, flags))
}

async fn run(
    config: config::Config,
    flags: config::FileConfig,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<node::Exit> {
    let update_url = config
        .update_url
        .as_deref()
        .map(update::parse_url)
        .transpose()?;
    // Checks for newer releases until the runtime stops; the dashboard shows them.
    let updates = update::spawn(update_url);
    let node = node::Node::start(config, flags, updates).await?;
    let url = node::rtmp_url(node.rtmp_addr);
    let key_hint = if node.publish_key_required {
        format!("?key={}", node.publish_key)
    } else {
        String::new()
    };
    eprintln!(
        "\n  streamr-node {} is running (node id {})\n  Open http://{} to invite friends and watch.\n  \
         Publish from OBS:  Server {url}   Stream Key NAME{key_hint}\n  Play in VLC/ffplay: {url}/NAME\n  \
         Stop with Ctrl-C.{}\n",
        env!("CARGO_PKG_VERSION"),
        node.peer_id,
        node.http_addr,
        if node.paused {
            "\n  The node was stopped from the dashboard: press Start there to go on."
        } else {
            ""
        }
    );
    node.run_until(stop, SHUTDOWN_GRACE).await
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_node_runs_on_one_worker_unless_the_environment_asks_for_more() {
        let rt = super::runtime().expect("a runtime");
        let workers = rt.metrics().num_workers();
        match std::env::var("TOKIO_WORKER_THREADS") {
            Ok(n) => assert_eq!(workers.to_string(), n),
            Err(_) => assert_eq!(workers, super::WORKER_THREADS),
        }
        // Timers and I/O are on: a sleep and a socket work.
        rt.block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind");
        });
    }
}
