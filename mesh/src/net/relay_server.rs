//! libp2p's relay service (`relay::Behaviour`), with one of its messages filtered out.
//!
//! libp2p-relay 0.22 gives relayed connections a dummy handler (a relay does not serve over a circuit)
//! but still records them, and when its status changes (`set_status`: this node found it is public, or
//! stopped being so) it tells every recorded connection, the relayed ones too. Such a message reaching the
//! dummy handler is `unreachable!()` in libp2p-swarm (`handler/either.rs`): the panic ends that
//! connection's task and with it the relayed connection and whatever media it carried. `netlab soak` saw
//! it three times in 45 minutes, each right after a restarted peer turned public while it still had a
//! relayed connection (compare rust-libp2p issue #5412). This wrapper remembers which connections are
//! relayed and drops the relay's messages to them; everything else passes through unchanged.

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::relay;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use std::collections::HashSet;
use std::task::{Context, Poll};

/// The relay service, minus messages to relayed connections (see the module's notes).
pub struct RelayServer {
    inner: relay::Behaviour,
    relayed: HashSet<ConnectionId>,
}

impl std::fmt::Debug for RelayServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayServer")
            .field("relayed", &self.relayed.len())
            .finish_non_exhaustive()
    }
}

impl RelayServer {
    /// Wraps the relay service.
    pub fn new(inner: relay::Behaviour) -> Self {
        RelayServer {
            inner,
            relayed: HashSet::new(),
        }
    }

    /// See [`relay::Behaviour::set_status`].
    pub fn set_status(&mut self, status: Option<relay::Status>) {
        self.inner.set_status(status);
    }
}

impl NetworkBehaviour for RelayServer {
    type ConnectionHandler = <relay::Behaviour as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = relay::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // The relay's own test: an inbound circuit arrives on a relayed listen address.
        if super::is_relayed(local_addr) {
            self.relayed.insert(connection_id);
        }
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if super::is_relayed(addr) {
            self.relayed.insert(connection_id);
        }
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(c) = &event {
            self.relayed.remove(&c.connection_id);
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::NotifyHandler {
                    handler: NotifyHandler::One(id),
                    ..
                }) if self.relayed.contains(&id) => {
                    tracing::debug!(connection = ?id, "dropped a relay-service message to a relayed connection");
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::ConnectedPoint;
    use libp2p::swarm::behaviour::ConnectionEstablished;

    fn relay() -> relay::Behaviour {
        let id = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        relay::Behaviour::new(id, relay::Config::default())
    }

    /// The connections the behaviour sends a handler message to, of everything it has for the swarm now.
    fn drain(b: &mut impl NetworkBehaviour) -> Vec<ConnectionId> {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut notified = Vec::new();
        while let Poll::Ready(ev) = b.poll(&mut cx) {
            if let ToSwarm::NotifyHandler {
                handler: NotifyHandler::One(id),
                ..
            } = ev
            {
                notified.push(id);
            }
        }
        notified
    }

    /// A direct and a relayed inbound connection from one peer, both announced to `b`.
    fn connect(b: &mut impl NetworkBehaviour) -> (ConnectionId, ConnectionId) {
        let peer = PeerId::random();
        let direct_local: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        let relayed_local: Multiaddr = format!(
            "/ip4/127.0.0.1/udp/4002/quic-v1/p2p/{}/p2p-circuit",
            PeerId::random()
        )
        .parse()
        .unwrap();
        let remote: Multiaddr = "/ip4/127.0.0.1/udp/5000/quic-v1".parse().unwrap();
        let (direct, relayed) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        for (id, local) in [(direct, &direct_local), (relayed, &relayed_local)] {
            b.handle_established_inbound_connection(id, peer, local, &remote)
                .map_err(|_| "denied")
                .unwrap();
            let endpoint = ConnectedPoint::Listener {
                local_addr: local.clone(),
                send_back_addr: remote.clone(),
            };
            b.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id: peer,
                connection_id: id,
                endpoint: &endpoint,
                failed_addresses: &[],
                other_established: 0,
            }));
        }
        (direct, relayed)
    }

    #[test]
    fn libp2p_relay_tells_relayed_connections_of_a_status_change() {
        // The bug this module works around: if this starts failing, libp2p-relay fixed it upstream and
        // the wrapper may go.
        let mut b = relay();
        let (direct, relayed) = connect(&mut b);
        b.set_status(Some(relay::Status::Enable));
        let mut notified = drain(&mut b);
        notified.sort();
        assert_eq!(notified, vec![direct, relayed]);
    }

    #[test]
    fn a_status_change_reaches_direct_connections_only() {
        let mut b = RelayServer::new(relay());
        let (direct, relayed) = connect(&mut b);
        b.set_status(Some(relay::Status::Enable));
        assert_eq!(drain(&mut b), vec![direct]);
        b.set_status(Some(relay::Status::Disable));
        assert_eq!(drain(&mut b), vec![direct]);
        assert!(b.relayed.contains(&relayed));
    }
}
