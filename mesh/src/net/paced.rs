//! A behaviour polled only while something happens around it: AutoNAT v2's client.
//!
//! The client wakes every probe interval (2 s here, `behaviour.rs`) to look for address candidates nobody
//! has tested yet, for the whole life of the node; once its addresses are tested, each wake finds
//! nothing. Its timer runs on `futures-timer`'s own thread, so every tick also woke that thread and the
//! tokio worker: one of the few things a lone idle node still did every couple of seconds (issue 13).
//!
//! There is something to test only after news: a new candidate address, a new connection (a server to
//! ask, or a server's answer on it). [`Paced`] forwards everything to the client as it comes, and polls
//! it only for [`AWAKE_AFTER_NEWS`] after the last such event. Left unpolled, the client's timer fires
//! once more and is not armed again; the next news polls it, and an overdue timer ticks at once.

use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};

/// How long the inner behaviour is polled after the last news: a few of AutoNAT's 2 s ticks, enough
/// for a new candidate to be sent to a server and for its answer to come back (an answer is news too).
pub const AWAKE_AFTER_NEWS: Duration = Duration::from_secs(6);

/// `inner`, polled only for [`AWAKE_AFTER_NEWS`] after news (see the module's notes).
#[derive(Debug)]
pub struct Paced<B> {
    inner: B,
    /// Polled until then; news moves it on.
    awake_until: Instant,
}

impl<B> Paced<B> {
    /// Wraps `inner`; it is polled from the start until [`AWAKE_AFTER_NEWS`] has passed.
    pub fn new(inner: B) -> Self {
        Paced {
            inner,
            awake_until: Instant::now() + AWAKE_AFTER_NEWS,
        }
    }

    fn news(&mut self) {
        self.awake_until = Instant::now() + AWAKE_AFTER_NEWS;
    }

    /// Whether the inner behaviour is polled now.
    pub fn awake(&self) -> bool {
        Instant::now() < self.awake_until
    }
}

/// The swarm events after which AutoNAT's client may have something to do.
fn is_news(ev: &FromSwarm) -> bool {
    matches!(
        ev,
        FromSwarm::NewExternalAddrCandidate(_)
            | FromSwarm::ConnectionEstablished(_)
            | FromSwarm::NewListenAddr(_)
            | FromSwarm::ExternalAddrExpired(_)
    )
}

impl<B: NetworkBehaviour> NetworkBehaviour for Paced<B> {
    type ConnectionHandler = B::ConnectionHandler;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner
            .handle_pending_outbound_connection(id, peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, ev: FromSwarm) {
        if is_news(&ev) {
            self.news();
        }
        self.inner.on_swarm_event(ev);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        ev: THandlerOutEvent<Self>,
    ) {
        self.news();
        self.inner.on_connection_handler_event(peer, id, ev);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<B::ToSwarm, THandlerInEvent<B>>> {
        if self.awake() {
            self.inner.poll(cx)
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::swarm::behaviour::ConnectionEstablished;
    use libp2p::swarm::dummy;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its polls.
    #[derive(Default)]
    struct Counting(Arc<AtomicUsize>);

    impl NetworkBehaviour for Counting {
        type ConnectionHandler = dummy::ConnectionHandler;
        type ToSwarm = ();

        fn handle_established_inbound_connection(
            &mut self,
            _: ConnectionId,
            _: PeerId,
            _: &Multiaddr,
            _: &Multiaddr,
        ) -> Result<THandler<Self>, ConnectionDenied> {
            Ok(dummy::ConnectionHandler)
        }

        fn handle_established_outbound_connection(
            &mut self,
            _: ConnectionId,
            _: PeerId,
            _: &Multiaddr,
            _: Endpoint,
            _: PortUse,
        ) -> Result<THandler<Self>, ConnectionDenied> {
            Ok(dummy::ConnectionHandler)
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

        fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<(), THandlerInEvent<Self>>> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Poll::Pending
        }
    }

    #[test]
    fn polled_after_news_and_left_alone_after_a_quiet_while() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut paced = Paced::new(Counting(polls.clone()));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut poll = |p: &mut Paced<Counting>| {
            let before = polls.load(Ordering::Relaxed);
            let _ = p.poll(&mut cx);
            polls.load(Ordering::Relaxed) > before
        };
        assert!(poll(&mut paced), "a new node's client is polled");

        // Quiet for longer than the window: not polled.
        paced.awake_until = Instant::now() - Duration::from_millis(1);
        assert!(!poll(&mut paced), "polled with nothing new");
        assert!(!paced.awake());

        // A new connection is news.
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/203.0.113.2/udp/4001/quic-v1".parse().unwrap();
        let endpoint = libp2p::core::ConnectedPoint::Dialer {
            address: addr.clone(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        };
        paced.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: peer,
            connection_id: ConnectionId::new_unchecked(1),
            endpoint: &endpoint,
            failed_addresses: &[],
            other_established: 0,
        }));
        assert!(paced.awake());
        assert!(poll(&mut paced), "not polled after a new connection");

        // So is a new candidate address.
        paced.awake_until = Instant::now() - Duration::from_millis(1);
        assert!(!poll(&mut paced));
        paced.on_swarm_event(FromSwarm::NewExternalAddrCandidate(
            libp2p::swarm::behaviour::NewExternalAddrCandidate { addr: &addr },
        ));
        assert!(poll(&mut paced), "not polled after a new candidate address");
    }
}
