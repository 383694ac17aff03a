//! The set of libp2p protocols every node runs.

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, autonat, dcutr, identify, identity::Keypair, kad, ping, relay};

use super::portmap;
use std::time::Duration;

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

    fn to_config(&self) -> relay::Config {
        relay::Config {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: self.max_reservations_per_peer,
            reservation_duration: self.reservation_duration,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: self.max_circuit_duration,
            max_circuit_bytes: self.max_circuit_bytes,
            ..relay::Config::default()
        }
        // libp2p's default rate limits (one circuit per source peer every 2 minutes) are kept: a viewer needs
        // one circuit per stream, and re-subscribing after a failure must not be refused for minutes.
    }
}

/// Every protocol of a node.
#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)] // the derived event type and most behaviours have no Debug
pub struct Behaviour {
    /// Learns peers' addresses and protocols, and our observed address.
    pub identify: identify::Behaviour,
    /// Liveness and round-trip time.
    pub ping: ping::Behaviour,
    /// Discovery: provider records per stream, peer routing.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Our own protocols (`/streamr/media/1`, `/streamr/catalog/1`) as plain streams.
    pub stream: libp2p_stream::Behaviour,
    /// Reservations on relays, for nodes behind NAT.
    pub relay_client: relay::client::Behaviour,
    /// Relay service for others (only advertised once we have a confirmed public address).
    pub relay: relay::Behaviour,
    /// Hole punching over relayed connections.
    pub dcutr: dcutr::Behaviour,
    /// Asks other nodes to dial our candidate addresses back: are we reachable?
    pub autonat_client: autonat::v2::client::Behaviour,
    /// Dials other nodes' candidate addresses back for them.
    pub autonat_server: autonat::v2::server::Behaviour,
    /// Asks the home router (UPnP IGD) to open our port, where it offers that.
    pub upnp: Toggle<portmap::Behaviour>,
}

impl Behaviour {
    /// Builds the protocols for `key`.
    pub fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        relay_limits: &RelayLimits,
        use_upnp: bool,
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
        Behaviour {
            identify,
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(5))),
            kad,
            stream: libp2p_stream::Behaviour::new(),
            relay_client,
            relay: relay::Behaviour::new(peer_id, relay_limits.to_config()),
            dcutr: dcutr::Behaviour::new(peer_id),
            // Probe candidate addresses every 2 s (default 5 s): a node learns sooner that it is public
            // and can relay, which is what NATed friends wait for.
            autonat_client: autonat::v2::client::Behaviour::new(
                rand010::make_rng::<rand010::rngs::StdRng>(),
                autonat::v2::client::Config::default().with_probe_interval(Duration::from_secs(2)),
            ),
            autonat_server: autonat::v2::server::Behaviour::default(),
            upnp: Toggle::from(use_upnp.then(portmap::Behaviour::new)),
        }
    }
}
