//! Zero-configuration bootstrap, as plain code: which of the coordinator's public nodes to dial now, and
//! when to register again. The coordinator lists a node as a bootstrap peer only once it reports itself
//! public with addresses, and the runner registers once per run; so the node registers again when what it
//! registered changed (it became public, its addresses moved) and, while it has no peer at all, now and then
//! to learn of public nodes that came online since. Dialed peers that offer a relay become relay candidates
//! of the mesh as any connected peer does (identify tells the mesh they speak the relay protocol).

use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use streamr_coordinator::api::BootstrapPeer;
use streamr_coordinator::client::NodeRegistration;

/// A bootstrap peer is dialed again at most this often while it is not connected.
pub const REDIAL_AFTER: Duration = Duration::from_secs(30);
/// Least time between two registrations for changed data (addresses come and go while AutoNAT probes).
pub const REREGISTER_SPACING: Duration = Duration::from_secs(5);
/// A node with no peer asks for bootstrap peers this often.
pub const LONELY_REFRESH: Duration = Duration::from_secs(30);
/// Most bootstrap dials started at once.
pub const MAX_DIALS: usize = 4;

/// What the node last registered, and which peers it dialed when.
#[derive(Debug, Default)]
pub struct Bootstrap {
    registered: Option<(NodeRegistration, Instant)>,
    dialed: HashMap<PeerId, Instant>,
    /// Bootstrap peers from the node's own registrations (the runner's are in its state).
    pub extra: Vec<BootstrapPeer>,
}

/// The registration in a form that compares equal when nothing that matters changed.
fn normalized(r: &NodeRegistration) -> NodeRegistration {
    let mut r = r.clone();
    r.external_addrs.sort();
    r.relay_addrs.sort();
    r.listen_addrs.sort();
    r
}

impl Bootstrap {
    /// The runner registered (with about what `current` says): changes are measured from there.
    pub fn runner_registered(&mut self, current: &NodeRegistration, now: Instant) {
        if self.registered.is_none() {
            self.registered = Some((normalized(current), now));
        }
    }

    /// The runner registered again on its own (the coordinator had lost the node).
    pub fn forget_registration(&mut self) {
        self.registered = None;
    }

    /// Whether to register again now: what the node would register changed, or it is alone.
    pub fn should_register(&self, current: &NodeRegistration, peers: usize, now: Instant) -> bool {
        let Some((last, at)) = &self.registered else {
            return false;
        };
        let since = now.duration_since(*at);
        (since >= REREGISTER_SPACING && *last != normalized(current))
            || (peers == 0 && since >= LONELY_REFRESH)
    }

    /// The node registered `current` and was given `peers`.
    pub fn registered(
        &mut self,
        current: &NodeRegistration,
        peers: Vec<BootstrapPeer>,
        now: Instant,
    ) {
        self.registered = Some((normalized(current), now));
        self.extra = peers;
    }

    /// A registration failed: try again after the spacing, not at once.
    pub fn register_failed(&mut self, now: Instant) {
        if let Some((_, at)) = &mut self.registered {
            *at = now;
        }
    }

    /// Peers to dial now: listed, not us, not connected, not dialed lately; with their addresses.
    pub fn dials_due(
        &mut self,
        listed: &[BootstrapPeer],
        me: &PeerId,
        connected: &[PeerId],
        now: Instant,
    ) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut out: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        for p in listed.iter().chain(self.extra.iter()) {
            if out.len() >= MAX_DIALS {
                break;
            }
            if p.peer_id == *me
                || connected.contains(&p.peer_id)
                || out.iter().any(|(id, _)| *id == p.peer_id)
                || self
                    .dialed
                    .get(&p.peer_id)
                    .is_some_and(|t| now.duration_since(*t) < REDIAL_AFTER)
            {
                continue;
            }
            let addrs: Vec<Multiaddr> = p.addrs.iter().filter_map(|a| a.parse().ok()).collect();
            if addrs.is_empty() {
                continue;
            }
            self.dialed.insert(p.peer_id, now);
            out.push((p.peer_id, addrs));
        }
        self.dialed
            .retain(|_, t| now.duration_since(*t) < REDIAL_AFTER * 4);
        out
    }
}

/// The coordinator's public nodes as relay candidates of the mesh (issue 15: not only bootstrap peers hold a
/// node's reservation): each address with its `/p2p/` id, this node left out, at most `MAX_DIALS * 4`.
/// Nodes listed unconfirmed (a young network's, by the addresses they listen on) are dialed but are no
/// relay candidates: a relay must be reachable by whoever wants to reach us through it.
pub fn relay_candidates(
    listed: &[BootstrapPeer],
    extra: &[BootstrapPeer],
    me: &PeerId,
) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    for p in listed
        .iter()
        .chain(extra)
        .filter(|p| p.peer_id != *me && p.confirmed)
    {
        for a in p.addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
            let a = a.with_p2p(p.peer_id).unwrap_or_else(|a| a);
            if !out.contains(&a) && out.len() < MAX_DIALS * 4 {
                out.push(a);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamr_coordinator::api::Reachability;

    fn peer(addr: &str) -> BootstrapPeer {
        BootstrapPeer {
            peer_id: PeerId::random(),
            addrs: vec![addr.into()],
            confirmed: true,
        }
    }

    #[test]
    fn dials_listed_peers_once_in_a_while_but_never_us_or_the_connected() {
        let mut b = Bootstrap::default();
        let me = PeerId::random();
        let t0 = Instant::now();
        let (a, c, bad) = (
            peer("/ip4/127.0.0.1/udp/1/quic-v1"),
            peer("/ip4/127.0.0.1/udp/2/quic-v1"),
            peer("not an address"),
        );
        let mine = BootstrapPeer {
            peer_id: me,
            addrs: vec!["/ip4/127.0.0.1/udp/3/quic-v1".into()],
            confirmed: true,
        };
        let listed = vec![a.clone(), c.clone(), bad, mine];
        let d = b.dials_due(&listed, &me, &[c.peer_id], t0);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, a.peer_id);
        assert!(
            b.dials_due(&listed, &me, &[], t0 + Duration::from_secs(1))
                .iter()
                .all(|(p, _)| *p == c.peer_id)
        );
        assert!(
            b.dials_due(&listed, &me, &[], t0 + Duration::from_secs(2))
                .is_empty()
        );
        let later = t0 + REDIAL_AFTER + Duration::from_secs(2);
        assert_eq!(b.dials_due(&listed, &me, &[], later).len(), 2);
    }

    #[test]
    fn registers_again_when_it_became_public_or_is_alone() {
        let mut b = Bootstrap::default();
        let t0 = Instant::now();
        let mut r = NodeRegistration {
            version: "0.1.0".into(),
            ..NodeRegistration::default()
        };
        assert!(!b.should_register(&r, 0, t0), "the runner registers first");
        b.runner_registered(&r, t0);
        assert!(!b.should_register(&r, 3, t0 + Duration::from_secs(60)));
        r.reachability = Reachability::Public;
        r.external_addrs = vec![
            "/ip4/127.0.0.1/udp/1/quic-v1".into(),
            "/ip4/127.0.0.1/tcp/1".into(),
        ];
        assert!(
            !b.should_register(&r, 3, t0 + Duration::from_secs(1)),
            "spaced"
        );
        let t1 = t0 + REREGISTER_SPACING;
        assert!(b.should_register(&r, 3, t1));
        b.registered(&r, vec![], t1);
        // The same addresses in another order are no change.
        r.external_addrs.reverse();
        assert!(!b.should_register(&r, 3, t1 + Duration::from_secs(10)));
        // Alone for a while: ask again for peers.
        assert!(b.should_register(&r, 0, t1 + LONELY_REFRESH));
        b.register_failed(t1 + LONELY_REFRESH);
        assert!(!b.should_register(&r, 0, t1 + LONELY_REFRESH + Duration::from_secs(1)));
    }

    #[test]
    fn listed_public_nodes_become_relay_candidates_with_their_ids() {
        let (me, a, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let peer = |id: PeerId, addrs: &[&str]| BootstrapPeer {
            peer_id: id,
            addrs: addrs.iter().map(|s| s.to_string()).collect(),
            confirmed: true,
        };
        let listed = vec![
            peer(me, &["/ip4/198.51.100.1/udp/4001/quic-v1"]),
            peer(a, &["/ip4/198.51.100.2/udp/4001/quic-v1", "not an address"]),
        ];
        let unconfirmed = BootstrapPeer {
            confirmed: false,
            ..peer(PeerId::random(), &["/ip4/192.168.1.9/udp/4001/quic-v1"])
        };
        let extra = vec![peer(b, &["/ip4/198.51.100.3/tcp/4001"]), unconfirmed];
        let c = relay_candidates(&listed, &extra, &me);
        assert_eq!(
            c,
            vec![
                format!("/ip4/198.51.100.2/udp/4001/quic-v1/p2p/{a}")
                    .parse::<Multiaddr>()
                    .unwrap(),
                format!("/ip4/198.51.100.3/tcp/4001/p2p/{b}")
                    .parse()
                    .unwrap(),
            ]
        );
    }
}
