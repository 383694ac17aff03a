//! What the node tells the coordinator, from the figures it already keeps for its own status: the hubs
//! (streams held and published, players), the mesh (peers, reachability, addresses, bytes sent to other
//! nodes) and the configuration (nickname, upload cap). The runner asks on its own task; every answer is
//! built from snapshots and never waits for the mesh.

use crate::node::Shared;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Weak;
use std::sync::atomic::Ordering::Relaxed;
use streamr_coordinator::api::{
    MAX_ADDR, MAX_ADDRS, MAX_LABEL, PublishedStream, Reachability, validate_stream_name,
};
use streamr_coordinator::client::{HeartbeatFigures, NodeRegistration, NodeReport};
use streamr_coordinator::time::now_ms;
use streamr_media::SourceKind;

/// The node's figures for the coordinator's runner.
#[derive(Debug)]
pub struct NodeFigures {
    shared: Weak<Shared>,
    /// When each locally published stream was first seen live (Unix ms), while it stays live.
    started: Mutex<HashMap<String, i64>>,
    /// Bytes sent to other nodes, kept growing across mesh restarts (Stop/Start starts new counters).
    relayed: Mutex<RelayedTotal>,
}

/// A counter that survives the counters it is read from being replaced.
#[derive(Debug, Default)]
struct RelayedTotal {
    /// Address of the mesh counters last read (a new mesh has new counters).
    source: usize,
    /// Their value when last read.
    last: u64,
    /// What earlier meshes had counted.
    base: u64,
}

impl RelayedTotal {
    /// The total, given the current counters' identity and value.
    fn observe(&mut self, source: usize, value: u64) -> u64 {
        if source != self.source {
            self.base += self.last;
            self.source = source;
            self.last = 0;
        }
        self.last = self.last.max(value);
        self.base + self.last
    }
}

impl NodeFigures {
    /// Figures of the node `shared` describes (weak: the node owns the runner, not the other way round).
    pub fn new(shared: Weak<Shared>) -> Self {
        NodeFigures {
            shared,
            started: Mutex::new(HashMap::new()),
            relayed: Mutex::new(RelayedTotal::default()),
        }
    }
}

/// A multiaddr as the coordinator stores it: without a trailing `/p2p/<id>` (a circuit address keeps its
/// relay's), at most [`MAX_ADDR`] characters.
fn addr_text(a: &Multiaddr) -> Option<String> {
    let mut a = a.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    let s = a.to_string();
    (s.len() <= MAX_ADDR && s.starts_with('/')).then_some(s)
}

/// Whether the coordinator at `url` runs on this machine (a lab, a test): then loopback addresses reach
/// the other nodes it lists, which run here too; otherwise they would only lead each node to itself.
pub fn coordinator_is_local(url: &str) -> bool {
    let Some(host) = reqwest::Url::parse(url.trim())
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
    else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    }
}

/// The listen addresses worth registering: concrete IPs (not `0.0.0.0`), no circuits, no IPv6 link-local
/// (useless without an interface), loopback only when `local` (the coordinator runs here).
fn listen_candidates<'a>(
    addrs: impl IntoIterator<Item = &'a Multiaddr>,
    local: bool,
) -> Vec<String> {
    addrs
        .into_iter()
        .filter(|a| !is_circuit(a))
        .filter(|a| match a.iter().next() {
            Some(Protocol::Ip4(ip)) => !ip.is_unspecified() && (local || !ip.is_loopback()),
            Some(Protocol::Ip6(ip)) => {
                !ip.is_unspecified()
                    && (local || !ip.is_loopback())
                    && (ip.segments()[0] & 0xffc0) != 0xfe80
            }
            _ => false,
        })
        .filter_map(addr_text)
        .take(MAX_ADDRS)
        .collect()
}

fn is_circuit(a: &Multiaddr) -> bool {
    a.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The coordinator's reachability for the mesh's word.
pub fn reachability(word: &str) -> Reachability {
    Reachability::parse(word)
}

/// At most [`MAX_LABEL`] bytes, cut at a character boundary, one line.
fn label(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_LABEL {
            break;
        }
        out.push(c);
    }
    out
}

/// The stream name without a `@ORIGIN` choice (hubs of players that asked for one carry it).
pub fn plain_name(hub_name: &str) -> &str {
    hub_name.split_once('@').map_or(hub_name, |(n, _)| n)
}

impl NodeReport for NodeFigures {
    fn registration(&self) -> NodeRegistration {
        let mut reg = NodeRegistration {
            version: env!("CARGO_PKG_VERSION").to_string(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            ..NodeRegistration::default()
        };
        let Some(shared) = self.shared.upgrade() else {
            return reg;
        };
        let config = shared.config();
        reg.nickname = label(config.nickname.trim());
        reg.upload_cap_kbps = u64::from(config.max_upload_kbps);
        if let Some(mesh) = shared.mesh.active() {
            let status = mesh.status();
            reg.reachability = reachability(status.nat.reachability);
            reg.external_addrs = status
                .nat
                .public_addrs
                .iter()
                .filter_map(addr_text)
                .take(MAX_ADDRS)
                .collect();
            reg.relay_addrs = status
                .external_addrs
                .iter()
                .filter_map(|a| a.parse::<Multiaddr>().ok())
                .filter(is_circuit)
                .filter_map(|a| addr_text(&a))
                .take(MAX_ADDRS)
                .collect();
            let local = config.coordinator_url().is_some_and(coordinator_is_local);
            let listening: Vec<Multiaddr> = status
                .listen_addrs
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect();
            reg.listen_addrs = listen_candidates(&listening, local);
        }
        reg
    }

    fn heartbeat(&self) -> HeartbeatFigures {
        let mut f = HeartbeatFigures::default();
        let Some(shared) = self.shared.upgrade() else {
            return f;
        };
        let now = now_ms();
        let mut started = self.started.lock();
        let mut live_local = Vec::new();
        for hub in shared.streams.hubs() {
            let h = hub.snapshot();
            f.players += u32::try_from(h.players).unwrap_or(u32::MAX);
            if !h.live {
                continue;
            }
            let name = plain_name(&h.name).to_string();
            if validate_stream_name(&name).is_err() {
                continue;
            }
            if h.source.is_some_and(SourceKind::is_local) {
                let since = *started.entry(name.clone()).or_insert(now);
                live_local.push(name.clone());
                f.streams_published.push(PublishedStream {
                    name: name.clone(),
                    started_at_ms: since,
                    bitrate_kbps: h.bitrate_bps / 1000,
                    players: u32::try_from(h.players).unwrap_or(u32::MAX),
                });
            }
            if !f.streams_held.contains(&name) {
                f.streams_held.push(name);
            }
        }
        // A stream that went off the air starts again with a new start time.
        started.retain(|name, _| live_local.contains(name));
        drop(started);
        if let Some(mesh) = shared.mesh.get() {
            let stats = mesh.stats();
            let sent = stats.bytes_sent.load(Relaxed);
            f.bytes_relayed_total = self
                .relayed
                .lock()
                .observe(stats as *const _ as usize, sent);
        }
        if let Some(mesh) = shared.mesh.active() {
            let status = mesh.status();
            f.peers = u32::try_from(status.peers.len()).unwrap_or(u32::MAX);
            f.reachability = reachability(status.nat.reachability);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_bytes_keep_growing_when_the_mesh_is_replaced() {
        let mut t = RelayedTotal::default();
        assert_eq!(t.observe(1, 100), 100);
        assert_eq!(t.observe(1, 250), 250);
        // Stop/Start: new counters from 0.
        assert_eq!(t.observe(2, 0), 250);
        assert_eq!(t.observe(2, 40), 290);
    }

    #[test]
    fn addresses_lose_our_id_and_labels_fit() {
        let me = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let a: Multiaddr = format!("/ip4/198.51.100.7/udp/4001/quic-v1/p2p/{me}")
            .parse()
            .unwrap();
        assert_eq!(
            addr_text(&a).as_deref(),
            Some("/ip4/198.51.100.7/udp/4001/quic-v1")
        );
        let relay = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp";
        let c: Multiaddr = format!("/ip4/203.0.113.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{me}")
            .parse()
            .unwrap();
        assert!(is_circuit(&c));
        assert_eq!(
            addr_text(&c).unwrap(),
            format!("/ip4/203.0.113.1/tcp/4001/p2p/{relay}/p2p-circuit")
        );
        let long = "é".repeat(40);
        let l = label(&long);
        assert!(l.len() <= MAX_LABEL && long.starts_with(&l));
        assert_eq!(label("a\nb"), "ab");
        assert_eq!(plain_name("cam@12D3KooW"), "cam");
        assert_eq!(plain_name("cam"), "cam");
    }

    #[test]
    fn listen_addresses_are_registered_without_loopback_unless_the_coordinator_is_local() {
        let addrs: Vec<Multiaddr> = [
            "/ip4/127.0.0.1/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
            "/ip4/192.168.1.20/udp/4001/quic-v1",
            "/ip4/0.0.0.0/tcp/4001",
            "/ip6/fe80::1/udp/4001/quic-v1",
            "/ip6/::1/tcp/4001",
            "/ip6/2001:db8::5/tcp/4001",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        assert_eq!(
            listen_candidates(&addrs, false),
            [
                "/ip4/192.168.1.20/udp/4001/quic-v1",
                "/ip6/2001:db8::5/tcp/4001"
            ]
        );
        assert_eq!(
            listen_candidates(&addrs, true),
            [
                "/ip4/127.0.0.1/udp/4001/quic-v1",
                "/ip4/192.168.1.20/udp/4001/quic-v1",
                "/ip6/::1/tcp/4001",
                "/ip6/2001:db8::5/tcp/4001"
            ]
        );
        assert!(coordinator_is_local("http://127.0.0.1:8090"));
        assert!(coordinator_is_local("http://[::1]:8090/"));
        assert!(coordinator_is_local("http://LOCALHOST:8090"));
        assert!(!coordinator_is_local("https://coordinator.example.org"));
        assert!(!coordinator_is_local("http://192.168.1.2:8090"));
    }
}
