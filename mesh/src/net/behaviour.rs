//! The set of libp2p protocols every node runs, and the limits that keep a hostile peer from taking the
//! node's connections, memory or relay service: connection limits (pending and established, in total, per
//! direction and per peer), a memory limit above which new connections are refused, and a relay service
//! that reserves only for peers of this mesh.

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, autonat, connection_limits, dcutr, identify,
    identity::Keypair, kad, memory_connection_limits, ping, relay,
};
use parking_lot::RwLock;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::portmap;
use std::time::Duration;

/// Connections being set up that others opened to us, at once: a handshake flood waits its turn.
pub const MAX_PENDING_INCOMING: u32 = 64;
/// Connections others opened to us, established, at once.
pub const MAX_ESTABLISHED_INCOMING: u32 = 256;
/// Connections established in all, at once.
pub const MAX_ESTABLISHED: u32 = 512;
/// Connections to one peer at once (QUIC, TCP, a relayed one and one being upgraded need four).
pub const MAX_ESTABLISHED_PER_PEER: u32 = 8;
/// Above this much memory in use by the whole process, new connections are refused until it falls: a
/// node uses tens of MiB; this much means something is flooding it.
pub const MAX_PROCESS_MEMORY: usize = 1 << 30;

/// What one circuit of our relay service counts in our upload, kbit/s: a typical stream (see
/// `stream_kbps`). The service charges each open circuit this much against `max_upload_kbps`, because
/// libp2p's relay does not report the bytes it relays.
pub const RELAY_CIRCUIT_KBPS: u64 = 2_500;
/// The rate one circuit's byte allowance is sized for: twice the charge, so a stream above the typical
/// rate (1080p, keyframe bursts) lasts the circuit's life, but never more than the whole upload cap.
pub const RELAY_CIRCUIT_PEAK_KBPS: u64 = 2 * RELAY_CIRCUIT_KBPS;
/// Reservations (new or renewed) one peer may ask for, per [`RELAY_RATE_INTERVAL`]: our nodes renew one
/// reservation every half hour or so, and ask again after a refusal while identify arrives.
pub const RELAY_RESERVATIONS_PER_PEER: u32 = 4;
/// Reservations one IP address may ask for, per [`RELAY_RATE_INTERVAL`] (a household of nodes).
pub const RELAY_RESERVATIONS_PER_IP: u32 = 16;
/// Circuits one source peer may open, per [`RELAY_RATE_INTERVAL`]: a node subscribes to a few streams
/// through a relay, and re-opens a circuit after failover; more is a flood.
pub const RELAY_CIRCUITS_PER_PEER: u32 = 8;
/// Circuits one source IP address may open, per [`RELAY_RATE_INTERVAL`].
pub const RELAY_CIRCUITS_PER_IP: u32 = 16;
/// The window of the relay service's rate limits.
pub const RELAY_RATE_INTERVAL: Duration = Duration::from_secs(60);
/// How often a connection's round trip is measured (libp2p's default). The first ping goes at once, so a
/// new peer's RTT is known for placement right away; later ones only follow a path that changed, and an
/// idle node pays for them (issue 13: 5 s made them a fifth of its wake-ups).
const PING_EVERY: Duration = Duration::from_secs(15);

/// Peers that speak our protocols (identify says so), while connected: the only peers the relay service
/// reserves a slot for, so it carries this mesh's traffic and nobody else's.
#[derive(Debug, Clone, Default)]
pub struct MeshMembers(Arc<RwLock<HashSet<PeerId>>>);

impl MeshMembers {
    /// Whether `peer` identified as a node of this mesh.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.0.read().contains(peer)
    }

    /// `peer` identified as a node of this mesh.
    pub fn insert(&self, peer: PeerId) {
        self.0.write().insert(peer);
    }

    /// `peer` disconnected (or identified as something else).
    pub fn remove(&self, peer: &PeerId) {
        self.0.write().remove(peer);
    }
}

/// Whether an identify answer comes from a node of this mesh: our protocol version, and our media
/// protocol among what it serves.
pub fn is_mesh_node(info: &identify::Info) -> bool {
    info.protocol_version == IDENTIFY_PROTOCOL && info.protocols.contains(&crate::wire::PROTOCOL)
}

/// Identify protocol version of streamr nodes.
pub const IDENTIFY_PROTOCOL: &str = "/streamr/1.0.0";
/// Kademlia protocol of the streamr mesh (a separate DHT from the public IPFS one).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/streamr/kad/1.0.0");

/// Limits of the relay service a public node offers. libp2p's defaults are for signalling (2 minutes and
/// 128 KiB per circuit); relayed circuits here may carry video when no hole punch is possible, so these are
/// set deliberately and metered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations held for NATed nodes at once.
    pub max_reservations: usize,
    /// Reservations per peer.
    pub max_reservations_per_peer: usize,
    /// How long a reservation lasts before it must be renewed.
    pub reservation_duration: Duration,
    /// Circuits relayed at once.
    pub max_circuits: usize,
    /// Circuits per source peer.
    pub max_circuits_per_peer: usize,
    /// Longest life of one circuit.
    pub max_circuit_duration: Duration,
    /// Most bytes one circuit may carry (both directions).
    pub max_circuit_bytes: u64,
}

impl RelayLimits {
    /// The operator's circuit limits (the node's settings say them; see docs/configuration.md), with the
    /// reservation limits every node uses.
    pub fn new(
        max_circuits: usize,
        max_circuits_per_peer: usize,
        max_circuit_duration: Duration,
        max_circuit_bytes: u64,
    ) -> Self {
        RelayLimits {
            max_reservations: 128,
            max_reservations_per_peer: 4,
            reservation_duration: Duration::from_secs(3600),
            max_circuits,
            max_circuits_per_peer,
            max_circuit_duration,
            max_circuit_bytes,
        }
    }

    /// The bytes one circuit may carry in `duration` with an upload cap of `max_upload_kbps` (0 =
    /// unlimited): a stream at [`RELAY_CIRCUIT_PEAK_KBPS`] for the whole life of the circuit, or the cap if
    /// it is lower. With the defaults (60 minutes, 8,000 kbit/s) that is about 2.1 GiB; libp2p's own
    /// default, 128 KiB, is for signalling only, and a circuit used to be allowed 8 GiB.
    pub fn circuit_bytes_for(max_upload_kbps: u32, duration: Duration) -> u64 {
        let kbps = match u64::from(max_upload_kbps) {
            0 => RELAY_CIRCUIT_PEAK_KBPS,
            cap => cap.min(RELAY_CIRCUIT_PEAK_KBPS),
        };
        // kbit/s to bytes/s is x125.
        (kbps * 125).saturating_mul(duration.as_secs())
    }

    fn to_config(&self, members: MeshMembers, refused: Arc<AtomicU64>) -> relay::Config {
        let rate = |n: u32| std::num::NonZeroU32::new(n).expect("relay rate limits are not zero");
        let mut config = relay::Config {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: self.max_reservations_per_peer,
            reservation_duration: self.reservation_duration,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: self.max_circuit_duration,
            max_circuit_bytes: self.max_circuit_bytes,
            // Ours below, instead of libp2p's (30 per peer in 2 minutes, 60 per IP a minute).
            reservation_rate_limiters: Vec::new(),
            circuit_src_rate_limiters: Vec::new(),
        }
        .reservation_rate_per_peer(rate(RELAY_RESERVATIONS_PER_PEER), RELAY_RATE_INTERVAL)
        .reservation_rate_per_ip(rate(RELAY_RESERVATIONS_PER_IP), RELAY_RATE_INTERVAL)
        .circuit_src_per_peer(rate(RELAY_CIRCUITS_PER_PEER), RELAY_RATE_INTERVAL)
        .circuit_src_per_ip(rate(RELAY_CIRCUITS_PER_IP), RELAY_RATE_INTERVAL);
        // On top of the rates, only peers of this mesh get a
        // reservation, so circuits only ever lead to them. A peer whose identify has not arrived yet is
        // refused too; our nodes ask again half a second later (see nat_maintain).
        config
            .reservation_rate_limiters
            .push(Box::new(move |peer: PeerId, _: &Multiaddr, _| {
                let member = members.contains(&peer);
                if !member {
                    refused.fetch_add(1, Relaxed);
                }
                member
            }));
        config
    }
}

/// Every protocol of a node.
#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)] // the derived event type and most behaviours have no Debug
pub struct Behaviour {
    /// Bounds connections (first, so that a refused connection costs nothing else).
    pub limits: connection_limits::Behaviour,
    /// Refuses new connections while the process uses too much memory.
    pub memory: memory_connection_limits::Behaviour,
    /// Learns peers' addresses and protocols, and our observed address.
    pub identify: identify::Behaviour,
    /// Liveness and round-trip time.
    pub ping: ping::Behaviour,
    /// Discovery: provider records per stream, peer routing.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Our own protocols (`/streamr/media/3`, `/streamr/catalog/1`) as plain streams.
    pub stream: libp2p_stream::Behaviour,
    /// Reservations on relays, for nodes behind NAT.
    pub relay_client: relay::client::Behaviour,
    /// Relay service for others (only advertised once we have a confirmed public address).
    pub relay: super::relay_server::RelayServer,
    /// Hole punching over relayed connections.
    pub dcutr: dcutr::Behaviour,
    /// Asks other nodes to dial our candidate addresses back: are we reachable? Polled only after news
    /// (see `paced`).
    pub autonat_client: super::paced::Paced<autonat::v2::client::Behaviour>,
    /// Dials other nodes' candidate addresses back for them.
    pub autonat_server: autonat::v2::server::Behaviour,
    /// Asks the home router (UPnP IGD) to open our port, where it offers that.
    pub upnp: Toggle<portmap::Behaviour>,
    /// Keeps one idle connection open to each neighbour (see `keep_alive`).
    pub keep_alive: super::keep_alive::Behaviour,
}

impl Behaviour {
    /// Builds the protocols for `key`; the relay service reserves only for `members`, counting refusals in
    /// `relay_refused`.
    pub fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        relay_limits: &RelayLimits,
        use_upnp: bool,
        members: MeshMembers,
        relay_refused: Arc<AtomicU64>,
    ) -> Self {
        let peer_id = key.public().to_peer_id();
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                .with_agent_version(format!("streamr-node/{}", env!("CARGO_PKG_VERSION")))
                .with_push_listen_addr_updates(true),
        );
        let mut kad_cfg = kad::Config::new(KAD_PROTOCOL);
        kad_cfg.set_query_timeout(Duration::from_secs(10));
        kad_cfg.set_provider_record_ttl(Some(Duration::from_secs(600)));
        kad_cfg.set_provider_publication_interval(Some(Duration::from_secs(300)));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_cfg);
        // Client until we know we are reachable (see nat.rs): a NATed node must not act as a DHT server.
        kad.set_mode(Some(kad::Mode::Client));
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
            .with_max_established_incoming(Some(MAX_ESTABLISHED_INCOMING))
            .with_max_established(Some(MAX_ESTABLISHED))
            .with_max_established_per_peer(Some(MAX_ESTABLISHED_PER_PEER));
        Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            memory: memory_connection_limits::Behaviour::with_max_bytes(MAX_PROCESS_MEMORY),
            identify,
            ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_EVERY)),
            kad,
            stream: libp2p_stream::Behaviour::new(),
            relay_client,
            relay: super::relay_server::RelayServer::new(relay::Behaviour::new(
                peer_id,
                relay_limits.to_config(members, relay_refused),
            )),
            dcutr: dcutr::Behaviour::new(peer_id),
            // Probe candidate addresses every 2 s (default 5 s): a node learns sooner that it is public
            // and can relay, which is what NATed friends wait for.
            autonat_client: super::paced::Paced::new(autonat::v2::client::Behaviour::new(
                rand010::make_rng::<rand010::rngs::StdRng>(),
                autonat::v2::client::Config::default().with_probe_interval(Duration::from_secs(2)),
            )),
            autonat_server: autonat::v2::server::Behaviour::default(),
            upnp: Toggle::from(use_upnp.then(portmap::Behaviour::new)),
            keep_alive: super::keep_alive::Behaviour::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: &str, protocols: Vec<StreamProtocol>) -> identify::Info {
        identify::Info {
            public_key: Keypair::generate_ed25519().public(),
            protocol_version: version.into(),
            agent_version: "x".into(),
            listen_addrs: vec![],
            protocols,
            observed_addr: "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
            signed_peer_record: None,
        }
    }

    #[test]
    fn only_nodes_of_this_mesh_get_a_relay_reservation() {
        assert!(is_mesh_node(&info(
            IDENTIFY_PROTOCOL,
            vec![crate::wire::PROTOCOL]
        )));
        assert!(!is_mesh_node(&info(
            "/ipfs/0.1.0",
            vec![crate::wire::PROTOCOL]
        )));
        assert!(!is_mesh_node(&info(IDENTIFY_PROTOCOL, vec![KAD_PROTOCOL])));

        let members = MeshMembers::default();
        let refused = Arc::new(AtomicU64::new(0));
        let limits = RelayLimits::new(8, 4, Duration::from_secs(60), 1 << 20);
        let mut config = limits.to_config(members.clone(), refused.clone());
        let limiter = config
            .reservation_rate_limiters
            .last_mut()
            .expect("our limiter is installed");
        let (friend, stranger) = (PeerId::random(), PeerId::random());
        members.insert(friend);
        let addr: Multiaddr = "/ip4/198.51.100.1/tcp/1".parse().unwrap();
        // web_time's Instant is std's on every platform we build for.
        let now = std::time::Instant::now();
        assert!(limiter.try_next(friend, &addr, now));
        assert!(!limiter.try_next(stranger, &addr, now));
        assert_eq!(refused.load(Relaxed), 1);
        // A member that disconnects is a stranger again.
        members.remove(&friend);
        assert!(!limiter.try_next(friend, &addr, now));
    }

    #[test]
    fn relay_circuits_are_sized_for_a_stream_and_rate_limited_per_source() {
        let hour = Duration::from_secs(3600);
        // A stream at twice the charged rate for the circuit's life: 5,000 kbit/s for an hour.
        assert_eq!(RelayLimits::circuit_bytes_for(8_000, hour), 625_000 * 3600);
        assert!(RelayLimits::circuit_bytes_for(8_000, hour) < 8 << 30);
        // A lower upload cap lowers it; unlimited (0) keeps the stream rate; no overflow.
        assert_eq!(RelayLimits::circuit_bytes_for(1_000, hour), 125_000 * 3600);
        assert_eq!(RelayLimits::circuit_bytes_for(0, hour), 625_000 * 3600);
        assert_eq!(RelayLimits::circuit_bytes_for(0, Duration::MAX), u64::MAX);

        let members = MeshMembers::default();
        let limits = RelayLimits::new(8, 4, hour, RelayLimits::circuit_bytes_for(8_000, hour));
        let mut config = limits.to_config(members.clone(), Arc::new(AtomicU64::new(0)));
        assert_eq!(config.max_circuit_bytes, 2_250_000_000);
        assert_eq!(config.max_circuit_duration, hour);
        // Per peer and per IP for each, and our members-only check last.
        assert_eq!(config.reservation_rate_limiters.len(), 3);
        assert_eq!(config.circuit_src_rate_limiters.len(), 2);

        let (a, b) = (PeerId::random(), PeerId::random());
        members.insert(a);
        members.insert(b);
        let ip1: Multiaddr = "/ip4/198.51.100.1/tcp/1".parse().unwrap();
        let ip2: Multiaddr = "/ip4/198.51.100.2/tcp/1".parse().unwrap();
        let now = std::time::Instant::now();
        let reserve = |config: &mut relay::Config, peer, addr: &Multiaddr| {
            config
                .reservation_rate_limiters
                .iter_mut()
                .all(|l| l.try_next(peer, addr, now))
        };
        for _ in 0..RELAY_RESERVATIONS_PER_PEER {
            assert!(reserve(&mut config, a, &ip1));
        }
        assert!(
            !reserve(&mut config, a, &ip1),
            "a peer's reservations are rate limited"
        );
        assert!(reserve(&mut config, b, &ip2), "another peer is not");
        let circuit = |config: &mut relay::Config, peer, addr: &Multiaddr| {
            config
                .circuit_src_rate_limiters
                .iter_mut()
                .all(|l| l.try_next(peer, addr, now))
        };
        for _ in 0..RELAY_CIRCUITS_PER_PEER {
            assert!(circuit(&mut config, a, &ip1));
        }
        assert!(
            !circuit(&mut config, a, &ip1),
            "a source's circuits are rate limited"
        );
        assert!(circuit(&mut config, b, &ip2));
        // Another peer id on the same address shares the address's allowance.
        let c = PeerId::random();
        for _ in RELAY_CIRCUITS_PER_PEER..RELAY_CIRCUITS_PER_IP {
            assert!(circuit(&mut config, c, &ip1));
        }
        let d = PeerId::random();
        assert!(
            !circuit(&mut config, d, &ip1),
            "an address's circuits are rate limited"
        );
        assert!(circuit(&mut config, d, &ip2));
    }
}
