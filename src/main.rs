//! streamr-node: parse the command line, build the configuration, run the node until Ctrl-C or SIGTERM.

mod cli;
mod config;
mod crash;
mod identity;
mod logging;
mod metrics;
mod node;
mod service;
mod settings;
mod update;

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;

/// How long connections get to close cleanly on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
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
        None => (false, cli.run),
    };
    let config = match build_config(args) {
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
    serve(config, stop_signal())
}

/// Runs the node on a new runtime until `stop` resolves or a part of it fails.
fn serve(config: config::Config, stop: impl std::future::Future<Output = ()>) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamr-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(config, stop)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("streamr-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn build_config(args: cli::RunArgs) -> anyhow::Result<config::Config> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(config::default_data_dir);
    let mut c = config::Config::defaults(data_dir.clone());
    c.apply_file(config::read_file(&data_dir)?);
    c.apply_file(args.into_layer());
    c.validate()?;
    Ok(c)
}

async fn run(
    config: config::Config,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let update_url = config
        .update_url
        .as_deref()
        .map(update::parse_url)
        .transpose()?;
    let node = node::Node::start(config).await?;
    // Checks for newer releases until the runtime stops; the dashboard reads `_updates.latest()`.
    let _updates = update::spawn(update_url);
    let url = node::rtmp_url(node.rtmp_addr);
    let key_hint = if node.publish_key_required {
        format!("?key={}", node.publish_key)
    } else {
        String::new()
    };
    eprintln!(
        "\n  streamr-node {} is running (node id {})\n  Publish from OBS:  Server {url}   Stream Key NAME{key_hint}\n  \
         Play in VLC/ffplay: {url}/NAME\n  Dashboard:         http://{}\n  Stop with Ctrl-C.\n",
        env!("CARGO_PKG_VERSION"),
        node.peer_id,
        node.http_addr
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
