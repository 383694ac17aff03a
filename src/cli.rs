//! Command line. Every flag also reads a `STREAMR_*` environment variable; flags win over the environment,
//! which wins over `config.toml`, which wins over the defaults.

use crate::config::{FileConfig, LogFormat, PublishAuth, RelaySpec};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
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
    Config(RunArgs),
    /// Run the node as a background service: install, uninstall, status (systemd, launchd, Windows).
    #[command(subcommand)]
    Service(crate::service::ServiceCommand),
}

/// Options of a node.
#[derive(Debug, Args, Default, Clone)]
pub struct RunArgs {
    /// Folder for the node's identity key, publish key and config.toml
    /// [default: the OS data dir, e.g. ~/.local/share/streamr-node].
    #[arg(long, env = "STREAMR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the RTMP edge (OBS and players) [default: 127.0.0.1:1935].
    #[arg(long, env = "STREAMR_RTMP_LISTEN", value_name = "ADDR")]
    pub rtmp_listen: Option<SocketAddr>,
    /// Address of the dashboard and API [default: 127.0.0.1:8080].
    #[arg(long, env = "STREAMR_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// UDP (QUIC) and TCP port of the mesh; 0 picks a free one [default: 4001].
    #[arg(long, env = "STREAMR_P2P_PORT", value_name = "PORT")]
    pub p2p_port: Option<u16>,
    /// Log format [default: text].
    #[arg(long, env = "STREAMR_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter in RUST_LOG syntax, e.g. `info` or `streamr_edge=debug` [default: info; RUST_LOG also works].
    #[arg(long, env = "STREAMR_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// When a publish needs the node's publish key: auto (only when RTMP listens beyond loopback), always,
    /// never [default: auto].
    #[arg(long, env = "STREAMR_PUBLISH_AUTH", value_enum)]
    pub publish_auth: Option<PublishAuth>,
    /// Merged writes to RTMP players in milliseconds: frames are written in groups, which saves CPU with
    /// many players; 0 writes every message at once [default: 40].
    #[arg(long, env = "STREAMR_RTMP_MERGE_MS", value_name = "MS")]
    pub rtmp_merge_ms: Option<u64>,
    /// Join the mesh through this peer (repeatable): a multiaddr ending in /p2p/<peer id>, as shown in the
    /// other node's status (`listen_addrs`) or log.
    #[arg(
        long,
        env = "STREAMR_BOOTSTRAP",
        value_delimiter = ',',
        value_name = "MULTIADDR"
    )]
    pub bootstrap: Vec<String>,
    /// Upload this node may spend relaying streams to other nodes, in kbit/s; 0 = unlimited [default: 8000].
    #[arg(long, env = "STREAMR_MAX_UPLOAD_KBPS", value_name = "KBPS")]
    pub max_upload_kbps: Option<u32>,
    /// Ask the home router to open the mesh port by UPnP [default: true].
    #[arg(long, env = "STREAMR_UPNP", value_name = "true|false")]
    pub upnp: Option<bool>,
    /// Relay service (when this node is public): circuits relayed at once [default: 8].
    #[arg(long, env = "STREAMR_RELAY_MAX_CIRCUITS", value_name = "N")]
    pub relay_max_circuits: Option<usize>,
    /// Relay service: circuits per source peer [default: 4].
    #[arg(long, env = "STREAMR_RELAY_MAX_CIRCUITS_PER_PEER", value_name = "N")]
    pub relay_max_circuits_per_peer: Option<usize>,
    /// Relay service: longest life of one circuit, minutes [default: 240].
    #[arg(long, env = "STREAMR_RELAY_MAX_CIRCUIT_MINUTES", value_name = "MIN")]
    pub relay_max_circuit_minutes: Option<u64>,
    /// Relay service: most data one circuit may carry, MiB [default: 8192].
    #[arg(long, env = "STREAMR_RELAY_MAX_CIRCUIT_MIB", value_name = "MIB")]
    pub relay_max_circuit_mib: Option<u64>,
    /// Pull an upstream RTMP stream into local stream NAME (repeatable): NAME=rtmp://HOST/APP/KEY.
    #[arg(
        long,
        env = "STREAMR_PULL",
        value_delimiter = ',',
        value_name = "NAME=URL"
    )]
    pub pull: Vec<RelaySpec>,
    /// Push local stream NAME to an upstream RTMP server (repeatable): NAME=rtmp://HOST/APP/KEY.
    #[arg(
        long,
        env = "STREAMR_PUSH",
        value_delimiter = ',',
        value_name = "NAME=URL"
    )]
    pub push: Vec<RelaySpec>,
    /// Check this URL for newer releases (a latest.json signed with the release key) and show a notice
    /// with the download link; nothing is ever installed [default: off].
    #[arg(long, env = "STREAMR_UPDATE_URL", value_name = "URL")]
    pub update_url: Option<String>,
}

impl RunArgs {
    /// The flags/environment layer, in the same shape as a config file layer (empty lists mean unset).
    pub fn into_layer(self) -> FileConfig {
        FileConfig {
            rtmp_listen: self.rtmp_listen,
            http_listen: self.http_listen,
            p2p_port: self.p2p_port,
            log_format: self.log_format,
            log: self.log,
            publish_auth: self.publish_auth,
            rtmp_merge_ms: self.rtmp_merge_ms,
            pull: non_empty(self.pull),
            push: non_empty(self.push),
            bootstrap: non_empty(self.bootstrap),
            max_upload_kbps: self.max_upload_kbps,
            upnp: self.upnp,
            relay_max_circuits: self.relay_max_circuits,
            relay_max_circuits_per_peer: self.relay_max_circuits_per_peer,
            relay_max_circuit_minutes: self.relay_max_circuit_minutes,
            relay_max_circuit_mib: self.relay_max_circuit_mib,
            update_url: self.update_url,
        }
    }
}

/// A repeatable flag given zero times leaves the lower layers alone.
fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
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
