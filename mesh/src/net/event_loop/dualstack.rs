//! Dual stack: the node listens on IPv6 beside IPv4 (QUIC and TCP, same port), keeps addresses that can
//! never work out of its books, and prefers a direct IPv6 path to a peer over a relayed or an IPv4 one.
//!
//! Why prefer IPv6: between two homes IPv6 needs no translation, so a path through two stateful firewalls
//! opens with one simultaneous open, and it survives the carrier-grade NATs that make IPv4 fragile.
//! A peer reached only over IPv4 whose IPv6 address we know is dialed over IPv6 once a minute at most,
//! until a direct IPv6 connection to it has been up once: when that one later idles out beside the IPv4
//! one (no streams on it for a minute), it did not fail, and dialing again every minute only made an idle
//! mesh reconnect (issue 13). Both ends do this at about the same moment (the IPv4 connection's
//! establishment), so between two firewalled homes the two dials cross and open both firewalls, like a
//! hole punch. Once a direct path exists, relayed connections to the peer close after a short grace, as
//! before.
//!
//! Direct IPv4 connections are kept beside IPv6 ones: closing them (tried first) killed AutoNAT v2, whose
//! server only tests an address of the family the request arrived over. In netlab a dual-stack public
//! relay then never confirmed its IPv4 address, never offered a relay, and `cgnat-v6 x cgnat-v6` viewers
//! got no stream at all.
//!
//! A host without IPv6 loses nothing: the IPv6 listeners fail at once (logged at debug), no IPv6 address
//! is advertised, and no upgrade is tried.

use super::EventLoop;
use crate::net::event_loop::ConnInfo;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm};
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};
use tracing::{debug, info};

use super::super::behaviour::Behaviour;

/// How long after a failed IPv6 upgrade dial to a peer we try again.
const UPGRADE_RETRY: Duration = Duration::from_secs(60);

/// An address's IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// The family of the address's first component (`/ip4`, `/ip6`, `/dns4`, `/dns6`).
pub fn family(addr: &Multiaddr) -> Option<Family> {
    match addr.iter().next()? {
        Protocol::Ip4(_) | Protocol::Dns4(_) => Some(Family::V4),
        Protocol::Ip6(_) | Protocol::Dns6(_) => Some(Family::V6),
        _ => None,
    }
}

/// IPv6 addresses that can never reach a peer from elsewhere: link-local (needs a zone we do not carry),
/// unspecified and multicast. Loopback stays (nodes on one machine, tests).
fn unreachable6(ip: &Ipv6Addr) -> bool {
    ip.is_unspecified() || ip.is_multicast() || (ip.segments()[0] & 0xffc0) == 0xfe80
}

/// Whether an address a peer told us about is worth remembering and dialing.
pub fn usable(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip6(ip)) => !unreachable6(&ip),
        Some(Protocol::Ip4(ip)) => !ip.is_unspecified() && !ip.is_multicast(),
        _ => true,
    }
}

/// An IPv6 address that other machines can reach (not loopback, not link-local): what makes a host
/// "have IPv6" for upgrades.
pub fn is_routable_v6(addr: &Multiaddr) -> bool {
    matches!(addr.iter().next(), Some(Protocol::Ip6(ip)) if !ip.is_loopback() && !unreachable6(&ip))
}

/// How good a path is, lower is better: direct IPv6, direct IPv4, relayed.
pub fn path_rank(conn: &ConnInfo) -> u8 {
    if conn.relayed {
        2
    } else if family(&conn.remote) == Some(Family::V6) {
        0
    } else {
        1
    }
}

/// The connections to close because a better path to the same peer exists: the relayed ones, once a
/// direct connection (either family) exists. Nothing while the peer has no direct connection.
pub fn superseded(conns: &[ConnInfo]) -> Vec<ConnectionId> {
    if !conns.iter().any(|c| !c.relayed) {
        return Vec::new();
    }
    conns.iter().filter(|c| c.relayed).map(|c| c.id).collect()
}

/// Whether a new connection ranked `new_rank` (see [`path_rank`]) makes one of `existing` superseded:
/// a direct one beside a relayed one. Then the peer's connections are sorted out after the grace period.
pub fn needs_sorting(existing: &[ConnInfo], new_rank: u8) -> bool {
    let relayed = |r: u8| r == 2;
    if relayed(new_rank) {
        existing.iter().any(|c| !c.relayed)
    } else {
        existing.iter().any(|c| c.relayed)
    }
}

/// Whether a peer is due an IPv6 upgrade dial: its best path is direct IPv4, no direct IPv6 connection
/// to it has been up since it connected (`reached_v6`), and the last try is older than [`UPGRADE_RETRY`].
pub fn wants_upgrade(
    conns: &[ConnInfo],
    reached_v6: bool,
    last_try: Option<Instant>,
    now: Instant,
) -> bool {
    !reached_v6
        && conns.iter().map(path_rank).min() == Some(1)
        && last_try.is_none_or(|t| now.duration_since(t) > UPGRADE_RETRY)
}

/// The IPv6 QUIC addresses of a peer worth an upgrade dial: routable, from what it listens on.
pub fn upgrade_targets(peer_listen: &[Multiaddr]) -> Vec<Multiaddr> {
    peer_listen
        .iter()
        .filter(|a| is_routable_v6(a) && crate::net::is_quic(a) && !crate::net::is_relayed(a))
        .cloned()
        .collect()
}

/// Listens on IPv6 beside the IPv4 listeners, same port numbers. Never waits and never fails: a host
/// without IPv6 reports the listener's error as an event, which the loop logs at debug level.
pub(super) fn listen_ipv6(swarm: &mut Swarm<Behaviour>, quic_port: u16, tcp_port: u16) {
    for addr in [
        format!("/ip6/::/udp/{quic_port}/quic-v1"),
        format!("/ip6/::/tcp/{tcp_port}"),
    ] {
        let addr: Multiaddr = addr.parse().expect("valid");
        if let Err(e) = swarm.listen_on(addr.clone()) {
            debug!(%addr, error = %e, "no IPv6 listener (the host may have no IPv6)");
        }
    }
}

impl EventLoop {
    /// Dials peers we reach only over IPv4 at their IPv6 addresses, once per [`UPGRADE_RETRY`], when we
    /// have a routable IPv6 address ourselves.
    pub(super) fn prefer_ipv6(&mut self, now: Instant) {
        let targets: Vec<(PeerId, Vec<Multiaddr>)> = {
            let snap = self.snapshot.read();
            if !snap.listen_addrs.iter().any(is_routable_v6) {
                return;
            }
            snap.peers
                .iter()
                .filter(|(id, p)| {
                    wants_upgrade(
                        &p.connections,
                        self.ipv6_reached.contains(*id),
                        self.ipv6_upgrade_tried.get(*id).copied(),
                        now,
                    )
                })
                .map(|(id, p)| (*id, upgrade_targets(&p.listen_addrs)))
                .filter(|(_, t)| !t.is_empty())
                .collect()
        };
        for (peer, addrs) in targets {
            self.ipv6_upgrade_tried.insert(peer, now);
            info!(%peer, "trying a direct IPv6 path to a peer reached over IPv4");
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::Always)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(%peer, error = %e, "IPv6 upgrade dial refused");
            }
        }
        if self.ipv6_upgrade_tried.len() > 4096 {
            self.ipv6_upgrade_tried
                .retain(|_, t| now.duration_since(*t) <= UPGRADE_RETRY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: usize, remote: &str, relayed: bool) -> ConnInfo {
        ConnInfo {
            id: ConnectionId::new_unchecked(id),
            remote: remote.parse().unwrap(),
            relayed,
            dialer: true,
            established: Instant::now(),
        }
    }

    #[test]
    fn families_and_usable_addresses() {
        let m = |s: &str| s.parse::<Multiaddr>().unwrap();
        assert_eq!(family(&m("/ip4/1.2.3.4/tcp/1")), Some(Family::V4));
        assert_eq!(
            family(&m("/ip6/2001:db8::1/udp/1/quic-v1")),
            Some(Family::V6)
        );
        assert!(!usable(&m("/ip6/fe80::1/udp/4001/quic-v1")));
        assert!(!usable(&m("/ip6/::/tcp/4001")));
        assert!(usable(&m("/ip6/::1/tcp/4001")));
        assert!(usable(&m("/ip6/2001:db8:1:3::2/udp/4001/quic-v1")));
        assert!(!usable(&m("/ip4/0.0.0.0/tcp/4001")));
        assert!(is_routable_v6(&m("/ip6/2001:db8:1:3::2/udp/4001/quic-v1")));
        assert!(!is_routable_v6(&m("/ip6/::1/udp/4001/quic-v1")));
        assert!(!is_routable_v6(&m("/ip4/203.0.113.2/udp/4001/quic-v1")));
        assert_eq!(
            upgrade_targets(&[
                m("/ip6/2001:db8:1:3::2/udp/4001/quic-v1"),
                m("/ip6/2001:db8:1:3::2/tcp/4001"),
                m("/ip6/::1/udp/4001/quic-v1"),
                m("/ip4/10.0.0.2/udp/4001/quic-v1"),
            ]),
            vec![m("/ip6/2001:db8:1:3::2/udp/4001/quic-v1")]
        );
    }

    #[test]
    fn an_ipv6_upgrade_is_retried_after_a_failure_but_not_after_an_idle_close() {
        let v4 = conn(1, "/ip4/203.0.113.2/udp/4001/quic-v1", false);
        let v6 = conn(2, "/ip6/2001:db8:1:3::2/udp/4001/quic-v1", false);
        let now = Instant::now();
        let later = now + UPGRADE_RETRY + Duration::from_secs(1);
        let ipv4_only = std::slice::from_ref(&v4);
        assert!(wants_upgrade(ipv4_only, false, None, now));
        assert!(!wants_upgrade(ipv4_only, false, Some(now), now));
        // The dial failed: tried again after UPGRADE_RETRY.
        assert!(wants_upgrade(ipv4_only, false, Some(now), later));
        // The IPv6 connection came up and idled out later: not dialed again while the peer stays.
        assert!(!wants_upgrade(ipv4_only, true, Some(now), later));
        // Up over IPv6 now: nothing to upgrade.
        assert!(!wants_upgrade(&[v4.clone(), v6], false, None, now));
    }

    #[test]
    fn a_direct_path_supersedes_relayed_ones_and_both_families_stay() {
        let v6 = conn(1, "/ip6/2001:db8:1:3::2/udp/4001/quic-v1", false);
        let v4 = conn(2, "/ip4/203.0.113.2/udp/4001/quic-v1", false);
        let relayed = conn(
            3,
            "/ip4/198.51.100.10/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
            true,
        );
        assert_eq!(
            superseded(&[v4.clone(), v6.clone(), relayed.clone()]),
            vec![relayed.id]
        );
        assert_eq!(superseded(&[v6.clone(), relayed.clone()]), vec![relayed.id]);
        assert!(superseded(&[v4.clone(), v6.clone()]).is_empty());
        assert!(superseded(std::slice::from_ref(&relayed)).is_empty());
        assert!(needs_sorting(
            std::slice::from_ref(&relayed),
            path_rank(&v6)
        ));
        assert!(needs_sorting(
            std::slice::from_ref(&v4),
            path_rank(&relayed)
        ));
        assert!(!needs_sorting(std::slice::from_ref(&v4), path_rank(&v6)));
        assert!(!needs_sorting(
            std::slice::from_ref(&relayed),
            path_rank(&relayed)
        ));
    }
}
