//! Command line. Every flag also reads a `STREAMR_*` environment variable; flags win over the environment,
//! which wins over `config.toml`, which wins over the defaults.

use crate::config::{Config, LogFormat, PublishAuth, RelaySpec, set};
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
}

impl RunArgs {
    /// Applies the flags/environment layer.
    pub fn apply(self, c: &mut Config) {
        let RunArgs {
            data_dir: _,
            rtmp_listen,
            http_listen,
            p2p_port,
            log_format,
            log,
            publish_auth,
            rtmp_merge_ms,
            pull,
            push,
            bootstrap,
            max_upload_kbps,
            upnp,
            relay_max_circuits,
            relay_max_circuits_per_peer,
            relay_max_circuit_minutes,
            relay_max_circuit_mib,
        } = self;
        set(&mut c.rtmp_listen, rtmp_listen);
        set(&mut c.http_listen, http_listen);
        set(&mut c.p2p_port, p2p_port);
        set(&mut c.log_format, log_format);
        set(&mut c.log, log);
        set(&mut c.publish_auth, publish_auth);
        set(&mut c.rtmp_merge_ms, rtmp_merge_ms);
        if !pull.is_empty() {
            c.pull = pull;
        }
        if !push.is_empty() {
            c.push = push;
        }
        if !bootstrap.is_empty() {
            c.bootstrap = bootstrap;
        }
        set(&mut c.max_upload_kbps, max_upload_kbps);
        set(&mut c.upnp, upnp);
        set(&mut c.relay_max_circuits, relay_max_circuits);
        set(
            &mut c.relay_max_circuits_per_peer,
            relay_max_circuits_per_peer,
        );
        set(&mut c.relay_max_circuit_minutes, relay_max_circuit_minutes);
        set(&mut c.relay_max_circuit_mib, relay_max_circuit_mib);
    }
}
