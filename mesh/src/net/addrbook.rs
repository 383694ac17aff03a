//! The address book: where we can dial each peer, as plain code. Addresses a peer states itself (identify
//! over a connection to it, its signed peer record in a catalog) are kept apart from addresses others give
//! for it (hints in redirects and fallbacks, which nobody signed): its own come first, hints fill in after
//! them, and no source can fill more than a few hint slots or push the peer's own addresses out.
//!
//! Addresses on a private network, on this machine or given as DNS names are only taken from a peer that is
//! itself on our network (it reaches us from such an address): otherwise a remote peer could make us dial
//! into our own LAN, or at a victim, on its behalf.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

/// Most addresses a peer's own statements keep.
pub const MAX_OWN: usize = 16;
/// Most hint addresses kept per peer, and per peer that gave them.
pub const MAX_HINTS: usize = 8;
/// See [`MAX_HINTS`].
pub const MAX_HINTS_PER_SOURCE: usize = 2;
/// Most peers with addresses kept.
pub const MAX_PEERS: usize = 4096;

/// Who says where a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The peer itself (identify, its signed record), as passed on by `via` (the peer itself for
    /// identify), whose place in the network decides whether local addresses are believed.
    Own {
        /// Whether the peer that passed the addresses on is on our network.
        via_local: bool,
    },
    /// Another peer, `from`, unsigned.
    Hint {
        /// The peer that gave the addresses.
        from: PeerId,
        /// Whether it is on our network.
        from_local: bool,
    },
}

/// True for addresses that only mean something on a private network or this machine: loopback, RFC 1918,
/// link-local, carrier-grade NAT, unique-local IPv6, unspecified, and DNS names (which may resolve to any
/// of those).
pub fn is_local(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => local_v4(ip),
        Some(Protocol::Ip6(ip)) => local_v6(ip),
        Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_)) => {
            true
        }
        _ => true,
    }
}

fn local_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        // 100.64.0.0/10: carrier-grade NAT.
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
}

fn local_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return local_v4(v4);
    }
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        // fc00::/7 unique local, fe80::/10 link-local.
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
}

/// True when `ip` is a local address in the sense of [`is_local`].
pub fn ip_is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => local_v4(v4),
        IpAddr::V6(v6) => local_v6(v6),
    }
}

#[derive(Debug, Default)]
struct Book {
    own: Vec<Multiaddr>,
    hints: Vec<(Multiaddr, PeerId)>,
    touched: Option<Instant>,
}

/// Where we can dial each peer. See the module docs.
#[derive(Debug, Default)]
pub struct AddressBook {
    peers: HashMap<PeerId, Book>,
    /// Addresses refused (local ones from remote peers, hints beyond a source's share).
    refused: u64,
}

impl AddressBook {
    /// Records addresses of `peer`; returns whether its list changed. A newer statement comes first.
    pub fn learn(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        source: Source,
        now: Instant,
    ) -> bool {
        let local_ok = match source {
            Source::Own { via_local } => via_local,
            Source::Hint { from_local, .. } => from_local,
        };
        let mut accepted: Vec<Multiaddr> = Vec::new();
        for a in addrs {
            if local_ok || !is_local(&a) {
                if !accepted.contains(&a) {
                    accepted.push(a);
                }
            } else {
                self.refused += 1;
            }
        }
        if accepted.is_empty() {
            return false;
        }
        let book = self.peers.entry(peer).or_default();
        book.touched = Some(now);
        let before = (book.own.clone(), book.hints.clone());
        match source {
            Source::Own { .. } => {
                for a in accepted.into_iter().rev() {
                    book.own.retain(|x| *x != a);
                    book.own.insert(0, a);
                }
                book.own.truncate(MAX_OWN);
                // A hint the peer itself now states is no longer a hint.
                let own = book.own.clone();
                book.hints.retain(|(a, _)| !own.contains(a));
            }
            Source::Hint { from, .. } => {
                for a in accepted {
                    if book.own.contains(&a) || book.hints.iter().any(|(x, _)| *x == a) {
                        continue;
                    }
                    if book.hints.iter().filter(|(_, f)| *f == from).count() >= MAX_HINTS_PER_SOURCE
                    {
                        self.refused += 1;
                        continue;
                    }
                    book.hints.insert(0, (a, from));
                }
                book.hints.truncate(MAX_HINTS);
            }
        }
        (book.own.clone(), book.hints.clone()) != before
    }

    /// Where to dial `peer`: its own addresses first, then hints.
    pub fn addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.peers
            .get(peer)
            .map(|b| {
                b.own
                    .iter()
                    .cloned()
                    .chain(b.hints.iter().map(|(a, _)| a.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Keeps at most [`MAX_PEERS`] peers: the least recently heard of that `keep` does not hold (connected
    /// peers) are forgotten first.
    pub fn prune(&mut self, keep: impl Fn(&PeerId) -> bool) {
        if self.peers.len() <= MAX_PEERS {
            return;
        }
        let mut old: Vec<(Option<Instant>, PeerId)> = self
            .peers
            .iter()
            .filter(|(p, _)| !keep(p))
            .map(|(p, b)| (b.touched, *p))
            .collect();
        old.sort();
        let excess = self.peers.len() - MAX_PEERS;
        for (_, p) in old.into_iter().take(excess) {
            self.peers.remove(&p);
        }
    }

    /// Peers with addresses.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// No peer has addresses.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Addresses refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn local_addresses_are_recognised() {
        for s in [
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/10.1.2.3/tcp/1",
            "/ip4/192.168.0.9/udp/1/quic-v1",
            "/ip4/172.20.0.1/tcp/1",
            "/ip4/169.254.1.1/tcp/1",
            "/ip4/100.100.0.1/tcp/1",
            "/ip4/0.0.0.0/tcp/1",
            "/ip6/::1/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
            "/ip6/::ffff:192.168.1.1/tcp/1",
            "/dns4/example.com/tcp/1",
        ] {
            assert!(is_local(&a(s)), "{s}");
        }
        for s in [
            "/ip4/198.51.100.1/tcp/1",
            "/ip4/8.8.8.8/udp/4001/quic-v1",
            "/ip6/2001:db8::1/tcp/1",
            "/ip4/100.128.0.1/tcp/1",
        ] {
            assert!(!is_local(&a(s)), "{s}");
        }
    }

    #[test]
    fn a_remote_peer_cannot_make_us_dial_into_our_network() {
        let mut book = AddressBook::default();
        let (p, remote, lan) = (PeerId::random(), PeerId::random(), PeerId::random());
        let t = Instant::now();
        let given = vec![
            a("/ip4/192.168.1.1/tcp/80"),
            a("/ip4/198.51.100.1/tcp/4001"),
        ];
        book.learn(
            p,
            given.clone(),
            Source::Hint {
                from: remote,
                from_local: false,
            },
            t,
        );
        assert_eq!(book.addresses(&p), vec![a("/ip4/198.51.100.1/tcp/4001")]);
        assert_eq!(book.refused(), 1);
        // The same from a peer on our LAN is believed.
        book.learn(
            p,
            given,
            Source::Hint {
                from: lan,
                from_local: true,
            },
            t,
        );
        assert!(book.addresses(&p).contains(&a("/ip4/192.168.1.1/tcp/80")));
    }

    #[test]
    fn hints_never_push_out_the_peers_own_addresses_and_each_source_gets_a_share() {
        let mut book = AddressBook::default();
        let (p, liar) = (PeerId::random(), PeerId::random());
        let t = Instant::now();
        let own: Vec<Multiaddr> = (1..=3)
            .map(|i| a(&format!("/ip4/198.51.100.{i}/tcp/4001")))
            .collect();
        book.learn(p, own.clone(), Source::Own { via_local: false }, t);
        let flood: Vec<Multiaddr> = (1..=100)
            .map(|i| a(&format!("/ip4/203.0.113.{i}/tcp/4001")))
            .collect();
        book.learn(
            p,
            flood,
            Source::Hint {
                from: liar,
                from_local: false,
            },
            t,
        );
        let got = book.addresses(&p);
        assert_eq!(&got[..3], &own[..], "own addresses first, all of them");
        assert_eq!(got.len(), 3 + MAX_HINTS_PER_SOURCE);
        // Another source still gets its share.
        book.learn(
            p,
            vec![a("/ip4/192.0.2.1/tcp/1")],
            Source::Hint {
                from: PeerId::random(),
                from_local: false,
            },
            t,
        );
        assert!(book.addresses(&p).contains(&a("/ip4/192.0.2.1/tcp/1")));
        // A newer statement of its own comes first.
        book.learn(p, vec![own[2].clone()], Source::Own { via_local: false }, t);
        assert_eq!(book.addresses(&p)[0], own[2]);
    }

    #[test]
    fn the_book_is_bounded_and_keeps_connected_peers() {
        let mut book = AddressBook::default();
        let t0 = Instant::now();
        let kept = PeerId::random();
        book.learn(
            kept,
            vec![a("/ip4/198.51.100.1/tcp/1")],
            Source::Own { via_local: false },
            t0,
        );
        for i in 0..(MAX_PEERS + 10) {
            book.learn(
                PeerId::random(),
                vec![a("/ip4/198.51.100.2/tcp/1")],
                Source::Own { via_local: false },
                t0 + std::time::Duration::from_millis(i as u64 + 1),
            );
        }
        book.prune(|p| *p == kept);
        assert_eq!(book.len(), MAX_PEERS);
        assert!(!book.addresses(&kept).is_empty());
    }
}
