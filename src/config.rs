//! The node's configuration: one model, four layers. Defaults < `config.toml` in the data dir <
//! environment `STREAMR_*` (and a `.env` file in the working directory) < command-line flags.
//! Every setting is defined once in [`crate::settings`]; this module adds what the node derives from them and
//! reads the file layer.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Name of the config file inside the data dir.
pub const CONFIG_FILE: &str = "config.toml";
/// Longest relay circuit an operator may allow, minutes: a day.
pub const MAX_RELAY_CIRCUIT_MINUTES: u64 = 24 * 60;
/// Most data an operator may allow one relay circuit, MiB (64 GiB: a day at 6 Mbit/s).
pub const MAX_RELAY_CIRCUIT_MIB: u64 = 64 << 10;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// An upstream RTMP relay: pull `url` into local stream `name`, or push `name` to `url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySpec {
    /// Local stream name.
    pub name: String,
    /// Upstream `rtmp://HOST[:PORT]/APP/KEY`.
    pub url: String,
}

impl std::str::FromStr for RelaySpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, url) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not NAME=rtmp://HOST/APP/KEY"))?;
        Ok(RelaySpec {
            name: name.trim().to_string(),
            url: url.trim().to_string(),
        })
    }
}

/// When the publish key is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum PublishAuth {
    /// Required when the RTMP edge listens beyond loopback.
    #[default]
    Auto,
    /// Always required.
    Always,
    /// Never required (anyone who can reach the RTMP port can publish).
    Never,
}

pub use crate::settings::{Config, FileConfig};

impl Config {
    /// The relay service limits.
    pub fn relay_limits(&self) -> streamr_mesh::net::RelayLimits {
        use streamr_mesh::net::RelayLimits;
        // Saturating: `validate` bounds both, but a config that skipped it must not overflow.
        let duration =
            std::time::Duration::from_secs(self.relay_max_circuit_minutes.saturating_mul(60));
        let bytes = match self.relay_max_circuit_mib {
            0 => RelayLimits::circuit_bytes_for(self.max_upload_kbps, duration),
            mib => mib.saturating_mul(1 << 20),
        };
        RelayLimits::new(
            self.relay_max_circuits,
            self.relay_max_circuits_per_peer,
            duration,
            bytes,
        )
    }

    /// The mesh's settings, with the node key.
    pub fn mesh_config(
        &self,
        key: libp2p::identity::Keypair,
    ) -> anyhow::Result<streamr_mesh::MeshConfig> {
        Ok(streamr_mesh::MeshConfig {
            key,
            port: self.p2p_port,
            bootstrap: self.bootstrap_addrs()?,
            max_upload_kbps: self.max_upload_kbps,
            relay: self.relay_limits(),
            upnp: self.upnp,
            port_prediction: self.port_prediction,
            relay_candidates: Vec::new(),
            friends: streamr_mesh::Friends::default(),
            tuning: streamr_mesh::MeshTuning {
                max_queue_delay: self.max_queue_delay(),
                seal_window: std::time::Duration::from_millis(self.seal_window_ms),
                move_up: self.move_up,
                ..streamr_mesh::MeshTuning::default()
            },
            receipts: None,
        })
    }

    /// The hubs' limits: the queue delay from the settings, the rest built in.
    pub fn hub_config(&self) -> streamr_media::HubConfig {
        streamr_media::HubConfig {
            max_queue_delay: self.max_queue_delay(),
            ..streamr_media::HubConfig::default()
        }
    }

    fn max_queue_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.max_queue_ms)
    }

    /// Whether a publish must carry the key.
    pub fn publish_key_required(&self) -> bool {
        match self.publish_auth {
            PublishAuth::Always => true,
            PublishAuth::Never => false,
            PublishAuth::Auto => !self.rtmp_listen.ip().is_loopback(),
        }
    }

    /// The coordinator's URL, if one is set (an empty value means none, so that `STREAMR_COORDINATOR_URL=`
    /// turns it off).
    pub fn coordinator_url(&self) -> Option<&str> {
        self.coordinator
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.bootstrap_addrs()?;
        if let Some(url) = &self.update_url {
            crate::update::parse_url(url)?;
        }
        if let Some(url) = self.coordinator_url() {
            check_coordinator_url(url)?;
        }
        if self.nickname.chars().count() > 32 || self.nickname.chars().any(char::is_control) {
            bail!("nickname: use at most 32 characters, on one line");
        }
        if let Some(h) = &self.http_password
            && !streamr_web::is_password_hash(h)
        {
            bail!(
                "http_password is not a password hash: set the password with `streamr-node password` (it \
                 writes the hash into config.toml)"
            );
        }
        if !self.http_listen.ip().is_loopback() && self.http_password.is_none() {
            bail!(
                "http_listen = {} lets other machines open the dashboard, which needs a password first: run \
                 `streamr-node password`, or listen on 127.0.0.1",
                self.http_listen
            );
        }
        if self.rtmp_merge_ms > 1000 {
            bail!(
                "rtmp_merge_ms = {} is too long: use 0 to 1000 (default 40)",
                self.rtmp_merge_ms
            );
        }
        if !(50..=10_000).contains(&self.max_queue_ms) {
            bail!(
                "max_queue_ms = {} is out of range: use 50 to 10000 (default 400)",
                self.max_queue_ms
            );
        }
        if self.seal_window_ms > 200 {
            bail!(
                "seal_window_ms = {} is too long: use 0 to 200 (default 50)",
                self.seal_window_ms
            );
        }
        if !(1..=MAX_RELAY_CIRCUIT_MINUTES).contains(&self.relay_max_circuit_minutes) {
            bail!(
                "relay_max_circuit_minutes = {} is out of range: use 1 to {MAX_RELAY_CIRCUIT_MINUTES} \
                 (default 60)",
                self.relay_max_circuit_minutes
            );
        }
        if self.relay_max_circuit_mib > MAX_RELAY_CIRCUIT_MIB {
            bail!(
                "relay_max_circuit_mib = {} is too much: use 0 (sized from max_upload_kbps) to \
                 {MAX_RELAY_CIRCUIT_MIB}",
                self.relay_max_circuit_mib
            );
        }
        for r in self.pull.iter().chain(&self.push) {
            streamr_edge::names::validate(&r.name)
                .with_context(|| format!("relay {}={}", r.name, r.url))?;
            if !r.url.starts_with("rtmp://") {
                bail!(
                    "relay {}={}: only rtmp:// URLs are supported (rtmp://HOST[:PORT]/APP/KEY)",
                    r.name,
                    r.url
                );
            }
        }
        Ok(())
    }
}

impl Config {
    /// The bootstrap peers as multiaddrs; an error names the bad one and shows the expected form.
    pub fn bootstrap_addrs(&self) -> anyhow::Result<Vec<libp2p::Multiaddr>> {
        self.bootstrap
            .iter()
            .map(|s| {
                let a: libp2p::Multiaddr = s.trim().parse().map_err(|e| {
                    anyhow::anyhow!(
                        "bootstrap address {s:?} is not a multiaddr ({e}); expected something like \
                         /ip4/203.0.113.7/udp/4001/quic-v1/p2p/12D3KooW... (copy it from the other node's \
                         status page or log)"
                    )
                })?;
                if !a.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_))) {
                    bail!("bootstrap address {s:?} lacks /p2p/<peer id> at the end: copy the whole address");
                }
                if a.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::Dnsaddr(_))) {
                    bail!(
                        "bootstrap address {s:?}: /dnsaddr is not supported; give the host name with its port \
                         and transport, like /dns4/boot.example.org/udp/4001/quic-v1/p2p/12D3KooW..."
                    );
                }
                Ok(a)
            })
            .collect()
    }
}

/// Reads `config.toml` from `data_dir`; a missing file is an empty config, a broken one an error naming it.
pub fn read_file(data_dir: &Path) -> anyhow::Result<FileConfig> {
    let path = data_dir.join(CONFIG_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    parse_file(&path, &bytes)
}

/// Parses the bytes of a config file read from `path`: whatever they are, the result is the file layer or
/// an error that names the file and says what to do (fuzzed by `fuzz/fuzz_targets/config_file.rs`).
pub fn parse_file(path: &Path, bytes: &[u8]) -> anyhow::Result<FileConfig> {
    let advice = "Fix or delete that file (every setting is optional; see docs/configuration.md).";
    let text = std::str::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a valid streamr-node config: it is not UTF-8 text ({e})\n{advice}",
            path.display()
        )
    })?;
    toml::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a valid streamr-node config: {e}\n{advice}",
            path.display()
        )
    })
}

/// The data dir used when none is configured: the OS's per-user data dir.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("streamr-node"))
        .unwrap_or_else(|| PathBuf::from("streamr-data"))
}

/// Checks a coordinator URL as the client will (`http(s)://host[:port][/prefix]`), for the settings.
pub fn check_coordinator_url(url: &str) -> anyhow::Result<()> {
    let u = reqwest::Url::parse(url.trim()).map_err(|e| {
        anyhow::anyhow!(
            "coordinator {url:?} is not a URL ({e}): use e.g. https://coordinator.example.org"
        )
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
        anyhow::bail!(
            "coordinator {url:?} must be http:// or https:// with a host, e.g. https://coordinator.example.org"
        );
    }
    if u.query().is_some() || u.fragment().is_some() {
        anyhow::bail!("coordinator {url:?}: remove the part after '?' or '#'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_override_defaults() {
        let mut c = Config::defaults("/tmp/x".into());
        let f: FileConfig = toml::from_str(
            r#"
            rtmp_listen = "0.0.0.0:1936"
            p2p_port = 0
            publish_auth = "never"
            [[pull]]
            name = "cam"
            url = "rtmp://example.test/live/cam"
            "#,
        )
        .unwrap();
        c.apply_file(f);
        assert_eq!(c.rtmp_listen, "0.0.0.0:1936".parse().unwrap());
        assert_eq!(c.p2p_port, 0);
        assert_eq!(c.http_listen, "127.0.0.1:8080".parse().unwrap());
        assert!(!c.publish_key_required());
        assert_eq!(c.pull[0].name, "cam");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "rtmp_listn = \"x\"\n").unwrap();
        let e = read_file(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.toml") && e.contains("rtmp_listn"), "{e}");
        std::fs::write(dir.path().join(CONFIG_FILE), "p2p_port = 70000\n").unwrap();
        assert!(read_file(dir.path()).is_err());
        std::fs::remove_file(dir.path().join(CONFIG_FILE)).unwrap();
        assert_eq!(read_file(dir.path()).unwrap(), FileConfig::default());
        // Bytes that are not UTF-8 used to be "stream did not contain valid UTF-8": now they say which
        // file and what to do, like any other broken file.
        std::fs::write(dir.path().join(CONFIG_FILE), b"nickname = \"\xff\"\n").unwrap();
        let e = read_file(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("config.toml") && e.contains("UTF-8") && e.contains("Fix or delete"),
            "{e}"
        );
    }

    #[test]
    fn moving_up_the_tree_is_on_unless_turned_off() {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let mut c = Config::defaults("/tmp/x".into());
        assert!(c.mesh_config(key.clone()).unwrap().tuning.move_up);
        c.move_up = false;
        assert!(!c.mesh_config(key).unwrap().tuning.move_up);
    }

    #[test]
    fn relay_circuits_are_sized_from_the_upload_cap() {
        let mut c = Config::defaults("/tmp/x".into());
        c.validate().unwrap();
        let l = c.relay_limits();
        assert_eq!(l.max_circuit_duration, std::time::Duration::from_secs(3600));
        assert_eq!(
            l.max_circuit_bytes, 2_250_000_000,
            "5 Mbit/s for an hour, not 8 GiB"
        );
        c.max_upload_kbps = 2_000;
        assert_eq!(c.relay_limits().max_circuit_bytes, 900_000_000);
        c.relay_max_circuit_mib = 100;
        assert_eq!(c.relay_limits().max_circuit_bytes, 100 << 20);
        // Values that used to overflow `minutes * 60` are refused with the range to use.
        c.relay_max_circuit_minutes = u64::MAX / 2;
        let _ = c.relay_limits();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("relay_max_circuit_minutes") && e.contains("1 to 1440"),
            "{e}"
        );
        c.relay_max_circuit_minutes = 60;
        c.relay_max_circuit_mib = u64::MAX;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("relay_max_circuit_mib")
        );
    }

    #[test]
    fn publish_key_is_required_beyond_loopback_by_default() {
        let mut c = Config::defaults("/tmp/x".into());
        assert!(!c.publish_key_required());
        c.rtmp_listen = "0.0.0.0:1935".parse().unwrap();
        assert!(c.publish_key_required());
        c.publish_auth = PublishAuth::Never;
        assert!(!c.publish_key_required());
    }

    #[test]
    fn bootstrap_addresses_are_checked() {
        let mut c = Config::defaults("/tmp/x".into());
        c.bootstrap = vec!["/ip4/127.0.0.1/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into()];
        assert_eq!(c.bootstrap_addrs().unwrap().len(), 1);
        c.bootstrap = vec!["/ip4/127.0.0.1/udp/4001/quic-v1".into()];
        assert!(
            c.bootstrap_addrs()
                .unwrap_err()
                .to_string()
                .contains("/p2p/")
        );
        c.bootstrap = vec!["127.0.0.1:4001".into()];
        assert!(c.validate().is_err());
        // A host name is resolved at every dial; /dnsaddr (a TXT lookup) is refused with what to give.
        c.bootstrap = vec!["/dns4/boot.example.org/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into()];
        assert_eq!(c.bootstrap_addrs().unwrap().len(), 1);
        c.bootstrap = vec![
            "/dnsaddr/boot.example.org/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
                .into(),
        ];
        let e = c.bootstrap_addrs().unwrap_err().to_string();
        assert!(
            e.contains("/dnsaddr is not supported") && e.contains("/dns4/"),
            "{e}"
        );
    }

    #[test]
    fn relay_specs_parse() {
        let r: RelaySpec = "cam=rtmp://h/live/k".parse().unwrap();
        assert_eq!(r.url, "rtmp://h/live/k");
        assert!("nope".parse::<RelaySpec>().is_err());
    }
}
