//! Command line. Every flag also reads a `STREAMR_*` environment variable; flags win over the environment,
//! which wins over `config.toml`, which wins over the defaults.

use crate::config::FileConfig;
use crate::settings::SettingArgs;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Relay live video to friends: OBS publishes to this node, players play from it, and nodes share streams
/// over a peer-to-peer mesh.
///
/// Run with no arguments to start a node with its defaults: publish from OBS to
/// rtmp://127.0.0.1:1935/live/NAME, play the same URL in VLC or ffplay, and open http://127.0.0.1:8080.
#[derive(Debug, Parser)]
#[command(name = "streamr-node", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `run`, accepted without the word `run`.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the default).
    Run(RunArgs),
    /// Print the effective configuration (all layers applied) as TOML and exit.
    Config(ConfigArgs),
    /// Run the node as a background service: install, uninstall, status (systemd, launchd, Windows).
    #[command(subcommand)]
    Service(crate::service::ServiceCommand),
    /// Make an invite (join code) for a friend; the node must be running.
    Invite(InviteArgs),
    /// Join a friend with the invite code (or link) they sent you; the node must be running.
    Join(JoinArgs),
    /// Set the dashboard's password (needed before it listens beyond this computer); reads it from the
    /// terminal, or from standard input with --stdin.
    Password(PasswordArgs),
}

/// Where the CLI finds the running node.
#[derive(Debug, Args, Default, Clone)]
pub struct ClientArgs {
    /// The running node's data folder (its api-key and dashboard address are read from there)
    /// [default: the OS data dir].
    #[arg(long, env = "STREAMR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The dashboard's address [default: the one the running node wrote in its data folder].
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
}

/// Options of `invite`.
#[derive(Debug, Args, Default, Clone)]
pub struct InviteArgs {
    /// A stream your friend's node opens once joined.
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
    /// How long the invite works: 30m, 24h, 7d, never.
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    pub expires: String,
    /// Where the node runs.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `join`.
#[derive(Debug, Args, Default, Clone)]
pub struct JoinArgs {
    /// The invite code, or the whole link.
    #[arg(value_name = "CODE")]
    pub code: String,
    /// Where the node runs.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `password`.
#[derive(Debug, Args, Default, Clone)]
pub struct PasswordArgs {
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub stdin: bool,
    /// The data folder whose config.toml gets the hash [default: the OS data dir].
    #[arg(long, env = "STREAMR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Options of a node: where its data lives, and every setting (see [`crate::settings`]).
#[derive(Debug, Args, Default, Clone)]
pub struct RunArgs {
    /// Folder for the node's identity key, publish key, friends and config.toml
    /// [default: the OS data dir, e.g. ~/.local/share/streamr-node].
    #[arg(long, env = "STREAMR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The settings.
    #[command(flatten)]
    pub settings: SettingArgs,
}

impl RunArgs {
    /// The flags/environment layer, in the same shape as a config file layer.
    pub fn into_layer(self) -> FileConfig {
        self.settings.into_layer()
    }
}

/// Options of `config`.
#[derive(Debug, Args, Default, Clone)]
pub struct ConfigArgs {
    /// Print the reference table of every setting (Markdown, as in docs/configuration.md) instead.
    #[arg(long)]
    pub markdown: bool,
    /// The node's options, whose effect is printed.
    #[command(flatten)]
    pub run: RunArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn flags_override_the_file_and_unset_flags_keep_it() {
        let mut c = Config::defaults("/tmp/x".into());
        let file: FileConfig = toml::from_str(
            r#"
            rtmp_listen = "0.0.0.0:1936"
            max_upload_kbps = 1000
            bootstrap = ["/ip4/198.51.100.1/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]
            "#,
        )
        .unwrap();
        c.apply_file(file);
        let cli = Cli::try_parse_from([
            "streamr-node",
            "--rtmp-listen",
            "127.0.0.1:0",
            "--upnp",
            "false",
        ])
        .unwrap();
        c.apply_file(cli.run.into_layer());
        assert_eq!(c.rtmp_listen, "127.0.0.1:0".parse().unwrap());
        assert!(!c.upnp);
        assert_eq!(c.max_upload_kbps, 1000, "unset flags keep the file's value");
        assert_eq!(c.bootstrap.len(), 1, "no --bootstrap keeps the file's list");
    }

    #[test]
    fn run_is_the_default_command_and_bad_flags_are_errors() {
        assert!(
            Cli::try_parse_from(["streamr-node"])
                .unwrap()
                .command
                .is_none()
        );
        assert!(matches!(
            Cli::try_parse_from(["streamr-node", "run", "--p2p-port", "5"])
                .unwrap()
                .command,
            Some(Command::Run(_))
        ));
        assert!(Cli::try_parse_from(["streamr-node", "--p2p-port", "70000"]).is_err());
        assert!(Cli::try_parse_from(["streamr-node", "--rtmp-listen", "nonsense"]).is_err());
    }
}
