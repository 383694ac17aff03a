//! The libp2p side of the mesh: one swarm owned by one event-loop task, driven through a cloneable
//! [`NetHandle`]. It keeps a snapshot of peers, connections and addresses that status pages read without
//! waiting for the loop.

pub mod addrbook;
mod behaviour;
mod event_loop;
mod keep_alive;
pub(crate) mod metrics;
pub mod nat;
mod paced;
pub mod pcp;
pub mod portmap;
mod relay_server;
pub mod resolve;

pub use behaviour::{Behaviour, BehaviourEvent, RELAY_CIRCUIT_KBPS, RelayLimits};
pub use event_loop::{
    ConnInfo, NatSnapshot, NetCommand, NetConfig, NetError, NetHandle, NetSnapshot, NetStats,
    PeerInfo, Traversal, start,
};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// True for addresses through a relay (`/p2p-circuit`).
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// True for QUIC addresses.
pub fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::QuicV1))
}
