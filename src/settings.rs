//! Every setting of a node, defined once. From the one list below come: the effective [`Config`] with its
//! defaults, the `config.toml` layer ([`FileConfig`]), the command-line flags and their `STREAMR_*`
//! environment variables ([`SettingArgs`]), and the reference table of `docs/configuration.md`
//! ([`markdown_table`], checked by a test). A setting cannot disagree with itself across those places.
//!
//! Each entry: doc lines (the flag's help and the docs' meaning), `name: Type = default`, the environment
//! variable, the value's name in `--help`, and optional extra clap arguments (`value_delimiter` for lists).

use crate::config::{LogFormat, PublishAuth, RelaySpec};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// When a changed setting takes effect in a running node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// At once.
    Live,
    /// At once, by restarting the mesh and the RTMP edge (OBS and players reconnect).
    Reconnect,
    /// After a restart of the program.
    Restart,
}

impl Applies {
    /// As the settings API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Applies::Live => "live",
            Applies::Reconnect => "reconnect",
            Applies::Restart => "restart",
        }
    }
}

/// One setting, as documented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingDoc {
    /// Key in `config.toml` (and field name).
    pub key: &'static str,
    /// When a change takes effect in a running node.
    pub applies: Applies,
    /// The command-line flag.
    pub flag: String,
    /// The environment variable.
    pub env: &'static str,
    /// The value's name in `--help`.
    pub value: &'static str,
    /// The default, as it would be written in `config.toml`.
    pub default: String,
    /// What it does.
    pub doc: String,
}

/// A default as `config.toml` would spell it: `none` for an empty list.
fn shown<T: Serialize>(v: &T) -> String {
    match toml::Value::try_from(v) {
        Ok(toml::Value::String(s)) => s,
        Ok(toml::Value::Array(a)) if a.is_empty() => "none".into(),
        Ok(v) => v.to_string(),
        // `None` has no TOML spelling: the setting is off.
        Err(_) => "none".into(),
    }
}

/// The flag's help: its doc and its default.
fn help<T: Serialize>(doc: &str, default: &T) -> String {
    let doc: Vec<&str> = doc.split_whitespace().collect();
    format!("{} [default: {}]", doc.join(" "), shown(default))
}

macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident : $ty:ty = $default:expr ; env $env:literal ; value $value:literal ;
        applies $applies:ident $(; arg($($extra:tt)*))? ;
    )*) => {
        /// The effective configuration of a node (all layers applied).
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub struct Config {
            /// Where the node keeps its identity, keys, friends and `config.toml` (a flag or environment
            /// variable only: the config file lives in it).
            #[serde(skip)]
            pub data_dir: std::path::PathBuf,
            $( $(#[doc = $doc])+ pub $name: $ty, )*
        }

        impl Config {
            /// The built-in defaults, with `data_dir`.
            pub fn defaults(data_dir: std::path::PathBuf) -> Self {
                Config { data_dir, $( $name: $default, )* }
            }

            /// Applies one layer (a config file, or the flags and environment): what it sets wins.
            pub fn apply_file(&mut self, layer: FileConfig) {
                $( if let Some(v) = layer.$name { self.$name = v; } )*
            }
        }

        /// `config.toml`: every key optional; an unknown key is an error (a typo must not be ignored).
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FileConfig {
            $( $(#[doc = $doc])+ #[serde(skip_serializing_if = "Option::is_none")] pub $name: Option<$ty>, )*
        }

        /// The settings as flags; each also reads its `STREAMR_*` environment variable. A flag that is
        /// absent leaves the lower layers alone.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct SettingArgs {
            $(
                #[arg(long, env = $env, value_name = $value,
                      help = help(concat!($($doc, " "),+), &{ let d: $ty = $default; d }) $(, $($extra)*)?)]
                pub $name: Option<$ty>,
            )*
        }

        impl SettingArgs {
            /// The flags/environment layer, in the shape of a config file layer.
            pub fn into_layer(self) -> FileConfig {
                FileConfig { $( $name: self.$name, )* }
            }
        }

        /// Every setting with its documentation, in definition order.
        pub fn docs() -> Vec<SettingDoc> {
            vec![$(
                SettingDoc {
                    key: stringify!($name),
                    applies: Applies::$applies,
                    flag: format!("--{}", stringify!($name).replace('_', "-")),
                    env: $env,
                    value: $value,
                    default: shown(&{ let d: $ty = $default; d }),
                    doc: concat!($($doc, " "),+).split_whitespace().collect::<Vec<_>>().join(" "),
                },
            )*]
        }
    };
}

settings! {
    /// Address of the RTMP edge for OBS and players; port 0 picks a free port.
    rtmp_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 1935));
        env "STREAMR_RTMP_LISTEN"; value "ADDR"; applies Reconnect;
    /// Address of the dashboard and API.
    http_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080));
        env "STREAMR_HTTP_LISTEN"; value "ADDR"; applies Restart;
    /// Mesh port, UDP (QUIC) and TCP; 0 picks a free one.
    p2p_port: u16 = 4001;
        env "STREAMR_P2P_PORT"; value "PORT"; applies Reconnect;
    /// Log lines for people (text) or machines (json).
    log_format: LogFormat = LogFormat::Text;
        env "STREAMR_LOG_FORMAT"; value "text|json"; applies Restart;
    /// Log filter: a level and `target=level` directives, e.g. `info,streamr_edge=debug` (RUST_LOG also works and wins).
    log: String = "info".to_string();
        env "STREAMR_LOG"; value "FILTER"; applies Restart;
    /// When a publish needs `?key=` with the node's publish key: `auto` = only when the RTMP edge listens
    /// beyond loopback, `always`, `never`.
    publish_auth: PublishAuth = PublishAuth::Auto;
        env "STREAMR_PUBLISH_AUTH"; value "auto|always|never"; applies Reconnect;
    /// Merged writes to RTMP players in milliseconds: frames are written in groups, which saves CPU with
    /// many players (at the cost of this much latency at the edge); 0 writes every message at once.
    rtmp_merge_ms: u64 = 40;
        env "STREAMR_RTMP_MERGE_MS"; value "MS"; applies Reconnect;
    /// Most media time, in milliseconds, that waits for one subscriber at this node (a player, or a peer whose
    /// link is slower than the stream): frames later than this are skipped up to the next keyframe on time,
    /// so that a slow hop drops frames instead of making everyone behind it late. It also sizes how much a
    /// peer may have in flight. Raise it on a jittery network when viewers see skips.
    max_queue_ms: u64 = 400;
        env "STREAMR_MAX_QUEUE_MS"; value "MS"; applies Restart;
    /// At the origin, how long frames wait to be sealed together before they go into the mesh, in
    /// milliseconds: every node that relays the stream checks one signature per seal, so a longer window
    /// costs every relay less CPU, and adds this much latency, once, for every viewer in the mesh. 0 seals
    /// every frame alone (the least latency, about 40% more CPU on each relay).
    seal_window_ms: u64 = 50;
        env "STREAMR_SEAL_WINDOW_MS"; value "MS"; applies Restart;
    /// Mesh peers to join through (repeatable): a multiaddr ending in `/p2p/<peer id>`, as the other node's
    /// status shows under `listen_addrs`. A host name works in place of the IP address
    /// (`/dns4/boot.example.org/udp/4001/quic-v1/p2p/...`; resolved by the system at every dial).
    bootstrap: Vec<String> = Vec::new();
        env "STREAMR_BOOTSTRAP"; value "MULTIADDR"; applies Reconnect; arg(value_delimiter = ',');
    /// Upload this node spends relaying streams to other nodes, in kbit/s; when full, new subscribers are
    /// redirected; 0 = unlimited. A typical home uplink has 10-40 Mbit/s: the default leaves room for the
    /// household.
    max_upload_kbps: u32 = 8_000;
        env "STREAMR_MAX_UPLOAD_KBPS"; value "KBPS"; applies Reconnect;
    /// While it receives a stream, move nearer its origin when a node there has room (now and then, to
    /// a peer it is already connected to; the players notice nothing): fewer hops, less delay, fewer
    /// nodes whose failure reaches this one. Off: stay with the provider that took this node first.
    move_up: bool = true;
        env "STREAMR_MOVE_UP"; value "true|false"; applies Reconnect;
    /// Ask the home router to open the mesh port (PCP, NAT-PMP or UPnP IGD).
    upnp: bool = true;
        env "STREAMR_UPNP"; value "true|false"; applies Reconnect;
    /// When a hole punch to a friend behind a router that gives every destination a new port (symmetric
    /// NAT) fails, try port prediction: that side sends small probes from many ports and the other guesses
    /// which (at most about 2,500 probes and 510 connection attempts over 12 seconds, once per peer per 10
    /// minutes).
    port_prediction: bool = true;
        env "STREAMR_PORT_PREDICTION"; value "true|false"; applies Reconnect;
    /// Relay service of a public node: circuits relayed at once. Enough for friends to watch a 2.5 Mbit/s
    /// stream for an evening when no hole punch is possible.
    relay_max_circuits: usize = 8;
        env "STREAMR_RELAY_MAX_CIRCUITS"; value "N"; applies Reconnect;
    /// Relay service: circuits per source peer.
    relay_max_circuits_per_peer: usize = 4;
        env "STREAMR_RELAY_MAX_CIRCUITS_PER_PEER"; value "N"; applies Reconnect;
    /// Relay service: longest life of one circuit, minutes (1 to 1440). A relayed subscription that
    /// outlives it is opened again (a hole punch usually replaces the circuit long before).
    relay_max_circuit_minutes: u64 = 60;
        env "STREAMR_RELAY_MAX_CIRCUIT_MINUTES"; value "MIN"; applies Reconnect;
    /// Relay service: most data one circuit carries, MiB; 0 = a 5 Mbit/s stream (or the upload cap, if
    /// lower) for the circuit's whole life, about 2,150 MiB with the defaults.
    relay_max_circuit_mib: u64 = 0;
        env "STREAMR_RELAY_MAX_CIRCUIT_MIB"; value "MIB"; applies Reconnect;
    /// Pull an upstream RTMP stream into local stream NAME (repeatable): `NAME=rtmp://HOST/APP/KEY`; in
    /// `config.toml` a list of `[[pull]]` tables with `name` and `url`.
    pull: Vec<RelaySpec> = Vec::new();
        env "STREAMR_PULL"; value "NAME=URL"; applies Reconnect; arg(value_delimiter = ',');
    /// Push local stream NAME to an upstream RTMP server (repeatable): `NAME=rtmp://HOST/APP/KEY`; in
    /// `config.toml` a list of `[[push]]` tables.
    push: Vec<RelaySpec> = Vec::new();
        env "STREAMR_PUSH"; value "NAME=URL"; applies Reconnect; arg(value_delimiter = ',');
    /// Where to check for newer releases: a `latest.json` signed with the release key, e.g.
    /// `https://github.com/streamr-node/streamr-node/releases/latest/download/latest.json`; a newer version
    /// is logged once and shown in the dashboard with its download link, never installed. https only (http
    /// only to 127.0.0.1/localhost); none = no checks.
    update_url: Option<String> = None;
        env "STREAMR_UPDATE_URL"; value "URL"; applies Restart;
    /// Your name as friends see it: invites carry it, and their dashboards show it.
    nickname: String = String::new();
        env "STREAMR_NICKNAME"; value "NAME"; applies Live;
    /// A coordinator to register with, e.g. `https://coordinator.example.org`: it
    /// lists the network's streams, gives public nodes to join the mesh through (no `bootstrap` needed),
    /// pays for the bandwidth you relay when the receiving nodes sign for it, and shows your earnings and
    /// trust score on the dashboard. none (or empty) = no coordinator; the node works without one.
    /// `STREAMR_COORDINATOR_URL` is read too when `STREAMR_COORDINATOR` and the flag are not given.
    coordinator: Option<String> = None;
        env "STREAMR_COORDINATOR"; value "URL"; applies Restart;
    /// The dashboard's password, as an argon2 hash (set it with `streamr-node password`). Needed before
    /// the dashboard listens beyond this computer (`http_listen`); other machines then log in with it.
    http_password: Option<String> = None;
        env "STREAMR_HTTP_PASSWORD"; value "ARGON2-HASH"; applies Restart;
}

/// The reference table of `docs/configuration.md`.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| setting (`config.toml`) | flag | environment | default | meaning |\n|---|---|---|---|---|\n",
    );
    for d in docs() {
        out.push_str(&format!(
            "| `{}` | `{} {}` | `{}` | `{}` | {} |\n",
            d.key,
            d.flag,
            d.value.replace('|', "\\|"),
            d.env,
            d.default,
            d.doc.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_reads_the_environment_variable_its_name_says() {
        for d in docs() {
            assert_eq!(
                d.env,
                format!("STREAMR_{}", d.key.to_uppercase()),
                "{}",
                d.key
            );
        }
    }

    #[test]
    fn the_docs_table_is_the_one_the_settings_generate() {
        let doc = include_str!("../docs/configuration.md");
        let (begin, end) = ("<!-- settings:begin -->\n", "<!-- settings:end -->");
        let start = doc
            .find(begin)
            .expect("docs/configuration.md lacks the settings markers")
            + begin.len();
        let stop = doc
            .find(end)
            .expect("docs/configuration.md lacks the end marker");
        assert_eq!(
            &doc[start..stop],
            markdown_table(),
            "docs/configuration.md is out of date: run `cargo run -- config --markdown` and paste the table"
        );
    }

    #[test]
    fn defaults_are_shown_as_config_toml_spells_them() {
        let docs = docs();
        let get = |k: &str| docs.iter().find(|d| d.key == k).unwrap().default.clone();
        assert_eq!(get("rtmp_listen"), "127.0.0.1:1935");
        assert_eq!(get("log_format"), "text");
        assert_eq!(get("max_upload_kbps"), "8000");
        assert_eq!(get("bootstrap"), "none");
        assert_eq!(get("upnp"), "true");
    }
}
