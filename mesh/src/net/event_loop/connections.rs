//! What the swarm itself reports, as opposed to its behaviours: our listen and external addresses,
//! connections opening, closing and failing, and the relay reservations whose listeners close. Each keeps
//! the snapshot that status pages read, the NAT state and the callers waiting for a connection in step.

use super::{ConnInfo, EventLoop, RELAYED_CLOSE_GRACE, dualstack, with_p2p};
use crate::net::is_relayed;
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{ConnectionId, DialError, ListenError};
use libp2p::{Multiaddr, PeerId};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tracing::{debug, info};

/// True for a circuit address through `relay` (`.../p2p/<relay>/p2p-circuit...`).
fn relayed_through(addr: &Multiaddr, relay: &PeerId) -> bool {
    let parts: Vec<Protocol> = addr.iter().collect();
    parts
        .windows(2)
        .any(|w| matches!((&w[0], &w[1]), (Protocol::P2p(p), Protocol::P2pCircuit) if p == relay))
}

/// An address through a relay that is itself reached through a relay (two `/p2p-circuit`). Relays do
/// not relay over relayed connections, so nobody can dial it; one turns up when a relay we reserve on
/// lists among its addresses its own circuit address through another relay (a public node keeps one
/// reservation too), and it outlived that other relay: tests/relay_failover.rs saw one through the dead
/// relay 20 s after the reservation moved.
fn nested_circuit(addr: &Multiaddr) -> bool {
    addr.iter()
        .filter(|p| matches!(p, Protocol::P2pCircuit))
        .count()
        > 1
}

/// Adds `addr` to a list of our addresses unless it is there.
fn add_once(list: &mut Vec<Multiaddr>, addr: Multiaddr) {
    if !list.contains(&addr) {
        list.push(addr);
    }
}

impl EventLoop {
    /// Our address with `/p2p/<us>`, as status pages show it.
    fn ours(&self, addr: &Multiaddr) -> Multiaddr {
        with_p2p(addr, *self.swarm.local_peer_id())
    }

    /// A listener reports an address.
    pub(super) fn on_listen_addr(&mut self, addr: &Multiaddr) {
        if nested_circuit(addr) {
            debug!(address = %addr, "ignoring an address through a relay reached through a relay");
            return;
        }
        let a = self.ours(addr);
        add_once(&mut self.snapshot.write().listen_addrs, a);
    }

    /// A listener's address went away.
    pub(super) fn on_listen_addr_expired(&mut self, addr: &Multiaddr) {
        let a = self.ours(addr);
        self.snapshot.write().listen_addrs.retain(|x| *x != a);
    }

    /// An address of ours is confirmed reachable from outside (AutoNAT, UPnP, a relay reservation).
    pub(super) fn on_external_addr_confirmed(&mut self, addr: &Multiaddr) {
        if nested_circuit(addr) {
            debug!(address = %addr, "not confirming an address through a relay reached through a relay");
            self.swarm.remove_external_address(addr);
            return;
        }
        info!(address = %addr, "external address confirmed");
        self.nat.confirmed(addr);
        let a = self.ours(addr);
        add_once(&mut self.snapshot.write().external_addrs, a);
    }

    /// A confirmed external address is no longer.
    pub(super) fn on_external_addr_expired(&mut self, addr: &Multiaddr) {
        self.nat.expired(addr);
        let a = self.ours(addr);
        self.snapshot.write().external_addrs.retain(|x| *x != a);
    }

    /// A connection is up: callers waiting for the peer are answered, the connection is recorded, and a
    /// relayed connection that a direct one supersedes is scheduled for closing.
    pub(super) fn on_connection_established(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        self.stats.connections_established.fetch_add(1, Relaxed);
        self.pending_dials.remove(&connection_id);
        self.dialed_with.remove(&peer_id);
        self.answer_connect(&peer_id, Ok(()));
        self.note_port_use(connection_id, endpoint);
        let (remote, dialer) = match endpoint {
            ConnectedPoint::Dialer { address, .. } => (address.clone(), true),
            ConnectedPoint::Listener { send_back_addr, .. } => {
                (self.real_remote(send_back_addr.clone()), false)
            }
        };
        // An inbound circuit's send-back address is only `/p2p/<peer>`; the relayed listen
        // address it arrived on (`local_addr`) is what shows it is relayed.
        let relayed = is_relayed(&remote) || endpoint.is_relayed();
        if !relayed && dualstack::family(&remote) == Some(dualstack::Family::V6) {
            self.ipv6_reached.insert(peer_id);
        }
        self.prediction_connected(peer_id, relayed);
        debug!(%peer_id, %remote, relayed, "connected");
        let mut snap = self.snapshot.write();
        let info = snap.peers.entry(peer_id).or_default();
        let already_direct = info.is_direct();
        self.nat
            .connection(peer_id, relayed, already_direct, Instant::now());
        let conn = ConnInfo {
            id: connection_id,
            remote,
            relayed,
            dialer,
            established: Instant::now(),
        };
        if dualstack::needs_sorting(&info.connections, dualstack::path_rank(&conn)) {
            info!(%peer_id, remote = %conn.remote, relayed, "a direct and a relayed connection to the peer; the relayed one will be closed");
            self.close_relayed_at
                .insert(peer_id, Instant::now() + RELAYED_CLOSE_GRACE);
        }
        info.connections.push(conn);
    }

    /// A connection closed; a peer with none left is forgotten by the snapshot, the NAT state and the
    /// relay service's member list.
    pub(super) fn on_connection_closed(&mut self, peer_id: PeerId, connection_id: ConnectionId) {
        self.stats.connections_closed.fetch_add(1, Relaxed);
        self.fresh_port_conns.remove(&connection_id);
        let mut s = self.snapshot.write();
        if let Some(p) = s.peers.get_mut(&peer_id) {
            p.connections.retain(|c| c.id != connection_id);
            if p.connections.is_empty() {
                s.peers.remove(&peer_id);
                self.ipv6_reached.remove(&peer_id);
                self.nat.disconnected(&peer_id);
                self.members.remove(&peer_id);
            }
        }
    }

    /// An incoming connection failed. Only refusals by our own limits are counted; the rest is the
    /// network's ordinary noise.
    pub(super) fn on_incoming_failed(&mut self, error: &ListenError, send_back_addr: &Multiaddr) {
        if let ListenError::Denied { cause } = error {
            self.stats.connections_denied.fetch_add(1, Relaxed);
            debug!(%send_back_addr, error = %cause, "refused a connection: a limit is reached");
        }
    }

    /// One of our dials failed; callers waiting for the peer hear it once no other dial to it is left.
    pub(super) fn on_dial_failed(
        &mut self,
        peer_id: Option<PeerId>,
        connection_id: ConnectionId,
        error: &DialError,
    ) {
        if matches!(error, DialError::Denied { .. }) {
            self.stats.connections_denied.fetch_add(1, Relaxed);
        }
        self.stats.dial_failures.fetch_add(1, Relaxed);
        self.pending_dials.remove(&connection_id);
        // Answer waiters only when none of our dials to the peer is still running.
        if let Some(p) = peer_id
            && !self.swarm.is_connected(&p)
            && !self.pending_dials.values().any(|x| *x == p)
        {
            self.dialed_with.remove(&p);
            self.answer_connect(&p, Err(error.to_string()));
        }
        debug!(peer = ?peer_id, error = %error, "outgoing connection failed");
        if let (Some(p), DialError::Transport(tried)) = (peer_id, error)
            && tried.iter().any(|(a, _)| !is_relayed(a))
        {
            self.on_direct_dial_failed(p);
        }
    }

    /// A listener closed: its addresses are gone (the swarm reports them here, not one by one), and when
    /// it was a relay reservation's, the reservation is over and our addresses through that relay with it.
    pub(super) fn on_listener_closed(&mut self, listener_id: ListenerId, addresses: &[Multiaddr]) {
        for a in addresses {
            self.on_listen_addr_expired(a);
        }
        if let Some(relay) = self.reservation_listeners.remove(&listener_id) {
            info!(%relay, "relay reservation ended");
            self.nat.reservations.remove(&relay);
            if !self.reservation_listeners.values().any(|r| *r == relay) {
                self.forget_circuits_through(relay);
            }
        }
    }

    /// Drops our confirmed external addresses through `relay`: AutoNAT confirms circuit addresses too
    /// (one per address of the relay), and nothing expires them when the relay goes away. Kept, they were
    /// advertised to every peer for ever (two new ones per relay restart in a soak: 127 addresses after 22
    /// minutes) and pushed live addresses out of the ones we gossip.
    fn forget_circuits_through(&mut self, relay: PeerId) {
        let stale: Vec<Multiaddr> = self
            .swarm
            .external_addresses()
            .filter(|a| relayed_through(a, &relay))
            .cloned()
            .collect();
        for a in stale {
            debug!(address = %a, %relay, "forgetting an address through a relay we no longer hold");
            self.swarm.remove_external_address(&a);
            self.on_external_addr_expired(&a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_addresses_are_told_by_their_relay() {
        let (relay, other, me) = (PeerId::random(), PeerId::random(), PeerId::random());
        let through = |relay: PeerId| -> Multiaddr {
            format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{relay}/p2p-circuit/p2p/{me}")
                .parse()
                .unwrap()
        };
        assert!(relayed_through(&through(relay), &relay));
        assert!(!relayed_through(&through(other), &relay));
        let direct: Multiaddr = format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{relay}")
            .parse()
            .unwrap();
        assert!(
            !relayed_through(&direct, &relay),
            "the relay's own address is no circuit"
        );
    }

    #[test]
    fn an_address_through_a_relay_reached_through_a_relay_is_nested() {
        let (outer, inner, me) = (PeerId::random(), PeerId::random(), PeerId::random());
        let one: Multiaddr =
            format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{inner}/p2p-circuit/p2p/{me}")
                .parse()
                .unwrap();
        let two: Multiaddr = format!(
            "/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{outer}/p2p-circuit/p2p/{inner}/p2p-circuit/p2p/{me}"
        )
        .parse()
        .unwrap();
        assert!(!nested_circuit(&one));
        assert!(nested_circuit(&two));
        assert!(!nested_circuit(
            &"/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap()
        ));
    }
}
