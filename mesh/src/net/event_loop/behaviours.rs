//! What each of the swarm's behaviours reports, one handler per behaviour: identify (who a peer is, where
//! it listens, how it sees us), Kademlia (providers found), ping (round trips), the relay client (our
//! reservations) and service (circuits for others), DCUtR (hole punches), AutoNAT v2 (are we reachable) and
//! the port mapping (did the router open our port). Limits, the stream protocols and AutoNAT's server
//! report nothing the loop acts on.

use super::{EventLoop, HOP_PROTOCOL, dualstack};
use crate::net::addrbook::{Source, is_local};
use crate::net::behaviour::{BehaviourEvent, KAD_PROTOCOL, is_mesh_node};
use crate::net::nat::Upnp;
use crate::net::{is_quic, is_relayed, portmap};
use libp2p::{PeerId, autonat, dcutr, identify, kad, ping, relay};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Kademlia is bootstrapped at most this often when peers join (besides the loop's periodic maintenance).
const KAD_BOOTSTRAP_EVERY: Duration = Duration::from_secs(20);

impl EventLoop {
    /// Hands a behaviour's event to its handler.
    pub(super) fn on_behaviour(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Identify(ev) => self.on_identify(ev),
            BehaviourEvent::Kad(ev) => self.on_kad(ev),
            BehaviourEvent::Ping(ev) => self.on_ping(ev),
            BehaviourEvent::RelayClient(ev) => self.on_relay_client(ev),
            BehaviourEvent::Relay(ev) => self.on_relay_service(ev),
            BehaviourEvent::Dcutr(ev) => self.on_dcutr(ev),
            BehaviourEvent::AutonatClient(ev) => self.on_autonat(ev),
            BehaviourEvent::Upnp(ev) => self.on_portmap(ev),
            _ => {}
        }
    }

    /// A peer identified itself: how it sees us, whether it is a node of this mesh, its DHT addresses,
    /// the addresses it listens on and whether it offers a relay.
    fn on_identify(&mut self, ev: identify::Event) {
        let identify::Event::Received {
            peer_id,
            info,
            connection_id,
            ..
        } = ev
        else {
            return;
        };
        if !is_relayed(&info.observed_addr) {
            self.observed_by(peer_id, connection_id, &info.observed_addr);
        }
        if is_mesh_node(&info) {
            if !self.members.contains(&peer_id) {
                self.members.insert(peer_id);
                // The service sends it our catalog at once (a newcomer is looking for its stream).
                self.member_joined.notify_one();
            }
        } else {
            self.members.remove(&peer_id);
        }
        let via_local = self.is_local_peer(&peer_id);
        if info.protocols.contains(&KAD_PROTOCOL) {
            self.add_to_dht(peer_id, &info.listen_addrs, via_local);
        }
        let _ = self.learn(
            peer_id,
            info.listen_addrs
                .iter()
                .filter(|a| !is_relayed(a) && dualstack::usable(a))
                .cloned()
                .collect(),
            Source::Own { via_local },
        );
        let mut s = self.snapshot.write();
        if let Some(p) = s.peers.get_mut(&peer_id) {
            p.supports_hop = info.protocols.contains(&HOP_PROTOCOL);
            p.agent = Some(info.agent_version);
            p.listen_addrs = info.listen_addrs;
        }
    }

    /// Puts a DHT peer's direct addresses in the routing table, and fills the table soon after joining,
    /// not only on the periodic tick. Its addresses on a private network or its own machine only when it
    /// reaches us from our network (`via_local`), as in the address book: the DHT dials what it holds, and
    /// a remote node's `127.0.0.1:4001` is our own QUIC socket when we listen on the same port, so every
    /// query to it cost two handshakes with ourselves (6,452 such dials in one minute of scale-50).
    fn add_to_dht(&mut self, peer: PeerId, listen_addrs: &[libp2p::Multiaddr], via_local: bool) {
        for a in dht_addrs(listen_addrs, via_local) {
            self.swarm.behaviour_mut().kad.add_address(&peer, a);
        }
        if self
            .last_kad_bootstrap
            .is_none_or(|t| t.elapsed() > KAD_BOOTSTRAP_EVERY)
        {
            self.last_kad_bootstrap = Some(Instant::now());
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
    }

    /// Providers found by a `GetProviders` query: the caller is answered with the first ones, or with none
    /// when the query ends empty.
    fn on_kad(&mut self, ev: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id,
            result: kad::QueryResult::GetProviders(r),
            step,
            ..
        } = ev
        else {
            return;
        };
        if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = r
            && let Some((found, _)) = self.pending_providers.get_mut(&id)
        {
            found.extend(providers);
        }
        if step.last
            && let Some((found, reply)) = self.pending_providers.remove(&id)
        {
            let _ = reply.send(found);
        } else if let Some((found, _)) = self.pending_providers.get(&id)
            && !found.is_empty()
        {
            // Enough to start with: answer now, let the query finish in the background.
            if let Some((found, reply)) = self.pending_providers.remove(&id) {
                let _ = reply.send(found);
            }
        }
    }

    /// A ping's round trip, for status pages and the choice of upstream.
    fn on_ping(&mut self, ev: ping::Event) {
        if let Ok(rtt) = ev.result
            && let Some(p) = self.snapshot.write().peers.get_mut(&ev.peer)
        {
            p.rtt = Some(rtt);
        }
    }

    /// A relay accepted our reservation: we are reachable through it.
    fn on_relay_client(&mut self, ev: relay::client::Event) {
        let relay::client::Event::ReservationReqAccepted {
            relay_peer_id,
            renewal,
            ..
        } = ev
        else {
            return;
        };
        if !renewal {
            info!(relay = %relay_peer_id, "relay reservation accepted: reachable through it");
        }
        if let Some(r) = self.nat.reservations.get_mut(&relay_peer_id) {
            r.accepted = true;
        }
    }

    /// The relay service we offer: reservations and circuits, counted.
    fn on_relay_service(&mut self, ev: relay::Event) {
        let stats = &self.stats;
        match ev {
            relay::Event::ReservationReqAccepted { .. } => {
                stats.relay_reservations_accepted.fetch_add(1, Relaxed);
            }
            relay::Event::ReservationReqDenied { .. } => {
                stats.relay_reservations_denied.fetch_add(1, Relaxed);
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                stats.relay_circuits_accepted.fetch_add(1, Relaxed);
                stats.relay_circuits_active.fetch_add(1, Relaxed);
                debug!(%src_peer_id, %dst_peer_id, "relaying a circuit");
            }
            relay::Event::CircuitReqDenied {
                src_peer_id,
                dst_peer_id,
                status,
            } => {
                stats.relay_circuits_denied.fetch_add(1, Relaxed);
                debug!(
                    %src_peer_id,
                    %dst_peer_id,
                    ?status,
                    active = stats.relay_circuits_active.load(Relaxed),
                    "refused to relay a circuit (limits: relay_max_circuits, relay_max_circuits_per_peer, \
                     and a rate per source)"
                );
            }
            relay::Event::CircuitClosed { .. } => {
                stats.relay_circuits_closed.fetch_add(1, Relaxed);
                let _ = stats
                    .relay_circuits_active
                    .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
            }
            _ => {}
        }
    }

    /// A hole punch ended; a failed one may try port prediction next.
    fn on_dcutr(&mut self, ev: dcutr::Event) {
        let peer = ev.remote_peer_id;
        match ev.result {
            Ok(_) => {
                info!(%peer, "hole punch succeeded: direct connection");
                self.nat.punch(Ok(()));
            }
            Err(e) => {
                info!(%peer, error = %e, "hole punch failed; staying on the relay");
                self.nat.punch(Err(e.to_string()));
                self.on_punch_failed(peer);
            }
        }
    }

    /// A peer dialed one of our addresses back (or could not): reachability, and whether a router's
    /// unverified port mapping works.
    fn on_autonat(&mut self, ev: autonat::v2::client::Event) {
        let autonat::v2::client::Event {
            tested_addr,
            result,
            ..
        } = ev;
        debug!(%tested_addr, ok = result.is_ok(), "reachability probe");
        self.nat.autonat_result_for(&tested_addr, result.is_ok());
        if let Upnp::Unverified(a) = &self.nat.upnp
            && *a == tested_addr
        {
            self.nat.upnp = if result.is_ok() {
                Upnp::Mapped(tested_addr)
            } else {
                Upnp::NotRoutable
            };
        }
    }

    /// The router mapped a port for us, has no port mapping, or refused.
    fn on_portmap(&mut self, ev: portmap::Event) {
        match ev {
            portmap::Event::Mapped {
                addr,
                routable,
                via,
            } => {
                info!(%addr, routable, via, "the router opened a port for us");
                // The status shows one mapping: QUIC's, our preferred transport, once there is one.
                let shown_quic =
                    matches!(&self.nat.upnp, Upnp::Mapped(a) | Upnp::Unverified(a) if is_quic(a));
                if shown_quic && !is_quic(&addr) {
                    return;
                }
                self.nat.upnp = if routable {
                    Upnp::Mapped(addr)
                } else {
                    // A peer's dial-back (AutoNAT v2) decides; see portmap.rs.
                    Upnp::Unverified(addr)
                };
            }
            portmap::Event::NoGateway(_) => {
                if !matches!(self.nat.upnp, Upnp::Mapped(_)) {
                    self.nat.upnp = Upnp::NoGateway;
                }
            }
            portmap::Event::Failed(reason) => {
                warn!(%reason, "the router did not open a port for us (UPnP)");
                self.nat.upnp = Upnp::Failed(reason);
            }
        }
    }
}

/// The addresses of a DHT peer's listen addresses that go in the routing table: direct, dialable ones, and
/// those on a private network or this machine only when the peer reaches us from our network.
fn dht_addrs(listen_addrs: &[libp2p::Multiaddr], via_local: bool) -> Vec<libp2p::Multiaddr> {
    listen_addrs
        .iter()
        .filter(|a| !is_relayed(a) && dualstack::usable(a) && (via_local || !is_local(a)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<libp2p::Multiaddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_remote_dht_peer_gives_only_its_public_addresses() {
        let listen = addrs(&[
            "/ip4/127.0.0.1/udp/4001/quic-v1",
            "/ip6/::1/udp/4001/quic-v1",
            "/ip4/10.0.0.2/udp/4001/quic-v1",
            "/ip4/198.51.100.7/udp/4001/quic-v1",
            "/ip6/2001:db8:100::7/udp/4001/quic-v1",
            "/ip4/198.51.100.10/udp/4001/quic-v1/p2p/12D3KooWFA4wNkeB4t14SBCshFYNmGotkjD9RoXvtUpxsx5AuHkE/p2p-circuit",
        ]);
        assert_eq!(
            dht_addrs(&listen, false),
            addrs(&[
                "/ip4/198.51.100.7/udp/4001/quic-v1",
                "/ip6/2001:db8:100::7/udp/4001/quic-v1",
            ])
        );
        // A peer on our network or machine (nodes on one host, a LAN party) keeps its local ones.
        assert_eq!(dht_addrs(&listen, true), listen[..5].to_vec());
    }
}
