//! Which connections stay open while nothing runs on them.
//!
//! libp2p closes a connection that carried no stream for the swarm's idle timeout. Until issue 13 the
//! catalog's gossip (an empty catalog to every peer every 5 s) kept every connection busy, so an idle
//! mesh paid for streams nobody needed, and every duplicate connection to a peer (IPv4 and IPv6, QUIC and
//! TCP, AutoNAT's dial-backs) lived as long as the gossip picked it now and then. Now gossip goes only
//! when there is news, and this behaviour says which connections are worth keeping: one per neighbour
//! (the best path: direct IPv6, direct IPv4, relayed; QUIC before TCP; then the oldest), for at most
//! [`MAX_NEIGHBOURS`] peers, bootstrap peers and friends first, then peers in the order they connected.
//! Every other connection closes once idle, as libp2p does by default; the mesh still reaches any peer
//! through the DHT, and gossip reaches the whole mesh through the neighbours.
//!
//! The handler opens no stream and speaks no protocol: it only answers libp2p's question whether its
//! connection may close, from a set the event loop updates (`EventLoop::keep_neighbours`).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use parking_lot::RwLock;

use super::event_loop::{ConnInfo, PeerInfo};

/// Peers whose connection is kept open while idle. Enough for gossip to reach a mesh of thousands in a
/// few hops (each neighbour has its own), few enough that an idle node's keep-alives stay cheap.
pub const MAX_NEIGHBOURS: usize = 12;

/// The connections to keep: one per neighbour, at most `max` neighbours, the `preferred` peers first,
/// then the others by when their best connection was established (oldest first, so the choice is stable).
///
/// For a peer we hold a relay reservation on (`reserved`), the one kept is the connection the reservation
/// lives on: libp2p's relay client reserves on the oldest direct connection to the relay, and that one
/// stays open as long as the reservation does. Keeping the best path instead kept two connections to
/// every relay of a dual-stack node (its first dial went over IPv4, the best path is IPv6), each with its
/// own keep-alives: the most common neighbour paid twice.
pub fn choose<'a>(
    peers: impl IntoIterator<Item = (&'a PeerId, &'a PeerInfo)>,
    preferred: impl Fn(&PeerId) -> bool,
    reserved: impl Fn(&PeerId) -> bool,
    max: usize,
) -> HashSet<ConnectionId> {
    let mut best: Vec<(bool, &ConnInfo, &PeerId)> = peers
        .into_iter()
        .filter_map(|(id, p)| {
            let reservation = reserved(id)
                .then(|| {
                    p.connections
                        .iter()
                        .filter(|c| !c.relayed)
                        .min_by_key(|c| c.established)
                })
                .flatten();
            let c = reservation.or_else(|| {
                p.connections.iter().min_by_key(|c| {
                    (
                        super::event_loop::dualstack::path_rank(c),
                        !super::is_quic(&c.remote),
                        c.established,
                    )
                })
            })?;
            Some((!preferred(id), c, id))
        })
        .collect();
    best.sort_by_key(|(not_preferred, c, id)| (*not_preferred, c.established, **id));
    best.into_iter().take(max).map(|(_, c, _)| c.id).collect()
}

/// The behaviour: hands each connection's handler the shared set of kept connections.
#[derive(Debug, Default)]
pub struct Behaviour {
    keep: Arc<RwLock<HashSet<ConnectionId>>>,
}

impl Behaviour {
    /// Replaces the set of connections kept open (see [`choose`]).
    pub fn set(&mut self, keep: HashSet<ConnectionId>) {
        let mut k = self.keep.write();
        if *k != keep {
            tracing::debug!(kept = keep.len(), "connections kept open while idle");
            *k = keep;
        }
    }

    fn handler(&self, id: ConnectionId) -> Handler {
        Handler {
            id,
            keep: self.keep.clone(),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(id))
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(id))
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        ev: THandlerOutEvent<Self>,
    ) {
        match ev {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// One connection's handler: keeps it open while it is in the set.
#[derive(Debug)]
pub struct Handler {
    id: ConnectionId,
    keep: Arc<RwLock<HashSet<ConnectionId>>>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade, ()> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep.read().contains(&self.id)
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Infallible>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, ev: Infallible) {
        match ev {}
    }

    fn on_connection_event(&mut self, _: ConnectionEvent<DeniedUpgrade, DeniedUpgrade, (), ()>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn conn(id: usize, remote: &str, relayed: bool, age_s: u64) -> ConnInfo {
        ConnInfo {
            id: ConnectionId::new_unchecked(id),
            remote: remote.parse().unwrap(),
            relayed,
            dialer: true,
            established: Instant::now() - Duration::from_secs(age_s),
        }
    }

    fn peer(conns: Vec<ConnInfo>) -> PeerInfo {
        PeerInfo {
            connections: conns,
            ..PeerInfo::default()
        }
    }

    #[test]
    fn one_connection_per_peer_the_best_path() {
        let p = PeerId::random();
        let info = peer(vec![
            conn(1, "/ip4/203.0.113.2/tcp/4001", false, 50),
            conn(2, "/ip4/203.0.113.2/udp/4001/quic-v1", false, 40),
            conn(3, "/ip6/2001:db8::2/tcp/4001", false, 30),
            conn(4, "/ip6/2001:db8::2/udp/4001/quic-v1", false, 20),
            conn(5, "/ip6/2001:db8::2/udp/4001/quic-v1", false, 10),
            conn(
                6,
                "/ip4/198.51.100.1/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
                true,
                60,
            ),
        ]);
        let kept = choose([(&p, &info)], |_| false, |_| false, 12);
        assert_eq!(kept, HashSet::from([ConnectionId::new_unchecked(4)]));
        // Only relayed: the relayed one is kept.
        let relayed = peer(vec![info.connections[5].clone()]);
        assert_eq!(
            choose([(&p, &relayed)], |_| false, |_| false, 12),
            HashSet::from([ConnectionId::new_unchecked(6)])
        );
        // A peer without connections has nothing to keep.
        assert!(choose([(&p, &peer(Vec::new()))], |_| false, |_| false, 12).is_empty());
    }

    #[test]
    fn preferred_peers_first_then_the_oldest_up_to_the_cap() {
        let ids: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        // Peer k connected k * 10 s ago: peer 4 is the oldest.
        let infos: Vec<PeerInfo> = (0..5)
            .map(|k| {
                peer(vec![conn(
                    k,
                    "/ip4/203.0.113.2/udp/4001/quic-v1",
                    false,
                    k as u64 * 10,
                )])
            })
            .collect();
        let friend = ids[0];
        let kept = choose(ids.iter().zip(&infos), |p| *p == friend, |_| false, 3);
        let expected: HashSet<ConnectionId> = [0, 4, 3].map(ConnectionId::new_unchecked).into();
        assert_eq!(kept, expected);
        assert_eq!(
            choose(ids.iter().zip(&infos), |_| false, |_| false, 0).len(),
            0
        );
    }

    #[test]
    fn a_relay_keeps_the_connection_its_reservation_lives_on() {
        let relay = PeerId::random();
        // Dialed over IPv4 first (where the reservation went), then found over IPv6 too.
        let info = peer(vec![
            conn(1, "/ip4/203.0.113.2/udp/4001/quic-v1", false, 50),
            conn(2, "/ip6/2001:db8::2/udp/4001/quic-v1", false, 40),
        ]);
        // Not a relay of ours: the best path.
        assert_eq!(
            choose([(&relay, &info)], |_| false, |_| false, 12),
            HashSet::from([ConnectionId::new_unchecked(2)])
        );
        // A relay: the oldest direct connection, the one libp2p's relay client reserved on, and only it.
        assert_eq!(
            choose([(&relay, &info)], |_| false, |p| *p == relay, 12),
            HashSet::from([ConnectionId::new_unchecked(1)])
        );
        // A relay reached only through another relay: that connection, as before.
        let relayed = peer(vec![conn(
            3,
            "/ip4/198.51.100.1/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
            true,
            60,
        )]);
        assert_eq!(
            choose([(&relay, &relayed)], |_| false, |_| true, 12),
            HashSet::from([ConnectionId::new_unchecked(3)])
        );
    }
}
