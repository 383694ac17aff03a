//! Which relays a node behind NAT reserves on, and keeping them alive.
//!
//! Candidates are the connected peers that offer a relay (HOP), ranked: friends first (people the user
//! invited or was invited by), then the public nodes a coordinator listed (`NetCommand::RelayCandidates`),
//! then anyone else (bootstrap peers, peers met in the mesh). Listed candidates that are not connected are
//! dialed while the node has fewer relay-capable peers than it wants reservations plus one spare, so that
//! when a relay dies (its connection closes and with it the reservation's listener) another one is
//! already connected and takes over on the next tick (half a second).

use super::EventLoop;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tracing::debug;

/// How often one listed candidate is dialed at most.
const CANDIDATE_REDIAL: Duration = Duration::from_secs(30);
/// Most relay candidates remembered.
const MAX_CANDIDATES: usize = 64;

/// Relay candidates a node was given, and when each was last dialed.
#[derive(Debug, Default)]
pub(super) struct RelayCandidates {
    /// Addresses with `/p2p/<id>`, by peer, in the order they were given.
    listed: Vec<(PeerId, Multiaddr)>,
    dialed: HashMap<PeerId, Instant>,
}

impl RelayCandidates {
    /// Adds candidates (addresses ending in `/p2p/<id>`; others are ignored). Returns how many were new.
    pub(super) fn add(&mut self, addrs: impl IntoIterator<Item = Multiaddr>) -> usize {
        let mut new = 0;
        for a in addrs {
            let Some(Protocol::P2p(peer)) = a.iter().last() else {
                continue;
            };
            if self.listed.iter().any(|(_, x)| *x == a) {
                continue;
            }
            if self.listed.len() >= MAX_CANDIDATES {
                self.listed.remove(0);
            }
            self.listed.push((peer, a));
            new += 1;
        }
        new
    }

    fn is_listed(&self, peer: &PeerId) -> bool {
        self.listed.iter().any(|(p, _)| p == peer)
    }
}

/// Orders relay-capable peers: friends, then listed candidates, then the rest (stable within a group).
pub(super) fn rank(
    mut hop_peers: Vec<PeerId>,
    is_friend: impl Fn(&PeerId) -> bool,
    listed: &RelayCandidates,
) -> Vec<PeerId> {
    hop_peers.sort_by_key(|p| {
        if is_friend(p) {
            0
        } else if listed.is_listed(p) {
            1
        } else {
            2
        }
    });
    hop_peers
}

/// The listed candidates to dial now: not connected, not dialed recently, as many as are missing.
pub(super) fn to_dial(
    listed: &RelayCandidates,
    connected: impl Fn(&PeerId) -> bool,
    missing: usize,
    now: Instant,
) -> Vec<(PeerId, Multiaddr)> {
    let mut out: Vec<(PeerId, Multiaddr)> = Vec::new();
    for (peer, addr) in &listed.listed {
        if out.len() >= missing {
            break;
        }
        if connected(peer) || out.iter().any(|(p, _)| p == peer) {
            continue;
        }
        if listed
            .dialed
            .get(peer)
            .is_some_and(|t| now.duration_since(*t) < CANDIDATE_REDIAL)
        {
            continue;
        }
        out.push((*peer, addr.clone()));
    }
    out
}

impl EventLoop {
    /// Keeps enough relay-capable peers connected: reservations wanted plus one spare.
    pub(super) fn keep_relay_candidates(&mut self, hop_peers: usize, now: Instant) {
        if self.nat.reachability() == super::Reachability::Public {
            return;
        }
        let want = self.nat.wanted_reservations() + 1;
        let missing = want.saturating_sub(hop_peers);
        if missing == 0 {
            return;
        }
        let dial = to_dial(
            &self.relay_candidates,
            |p| self.swarm.is_connected(p),
            missing,
            now,
        );
        for (peer, addr) in dial {
            self.relay_candidates.dialed.insert(peer, now);
            debug!(%peer, %addr, "dialing a relay candidate");
            self.dial_resolving(addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: PeerId) -> Multiaddr {
        format!("/ip4/198.51.100.20/udp/4001/quic-v1/p2p/{p}")
            .parse()
            .unwrap()
    }

    #[test]
    fn friends_first_then_listed_nodes_then_the_rest() {
        let (friend, listed, other) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut c = RelayCandidates::default();
        assert_eq!(
            c.add([addr(listed), "/ip4/1.2.3.4/tcp/1".parse().unwrap()]),
            1
        );
        assert_eq!(c.add([addr(listed)]), 0);
        assert_eq!(
            rank(vec![other, listed, friend], |p| *p == friend, &c),
            vec![friend, listed, other]
        );
    }

    #[test]
    fn listed_candidates_are_dialed_when_missing_and_not_too_often() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut c = RelayCandidates::default();
        c.add([addr(a), addr(b)]);
        let t = Instant::now();
        assert_eq!(to_dial(&c, |_| false, 1, t), vec![(a, addr(a))]);
        assert_eq!(to_dial(&c, |p| *p == a, 2, t), vec![(b, addr(b))]);
        c.dialed.insert(a, t);
        assert_eq!(to_dial(&c, |_| false, 2, t), vec![(b, addr(b))]);
        assert_eq!(
            to_dial(&c, |_| false, 2, t + CANDIDATE_REDIAL).len(),
            2,
            "dialed again after the pause"
        );
        assert!(to_dial(&c, |_| false, 0, t).is_empty());
    }
}
