//! Reachability and NAT traversal state, as plain code the event loop drives: whether we are reachable from
//! the internet (AutoNAT v2 results, UPnP mappings), which relays we hold reservations on, and the
//! hole-punch record (attempts, outcomes, time from a relayed to a direct connection).

use libp2p::{Multiaddr, PeerId};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// True for `/ip6` and `/dns6` addresses.
fn is_ipv6(addr: &Multiaddr) -> bool {
    matches!(
        addr.iter().next(),
        Some(libp2p::multiaddr::Protocol::Ip6(_) | libp2p::multiaddr::Protocol::Dns6(_))
    )
}

/// Relays a private node keeps reservations on.
pub const WANTED_RESERVATIONS: usize = 2;

/// Whether the internet can reach us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// A confirmed, non-relayed external address exists.
    Public,
    /// Probes of our addresses failed: we are behind a NAT or firewall.
    Private,
    /// Not known yet.
    Unknown,
}

impl Reachability {
    /// Lower-case name for the status API.
    pub fn as_str(self) -> &'static str {
        match self {
            Reachability::Public => "public",
            Reachability::Private => "private",
            Reachability::Unknown => "unknown",
        }
    }
}

/// What UPnP/NAT-PMP found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Upnp {
    /// No answer yet.
    #[default]
    Searching,
    /// The router mapped a port: this address reaches us.
    Mapped(Multiaddr),
    /// The router mapped a port on an external address that is not globally routable (carrier-grade
    /// NAT, or a lab); waiting for a peer's dial-back to tell whether it reaches us.
    Unverified(Multiaddr),
    /// The router refused or failed the mapping (the reason is logged).
    Failed(String),
    /// No UPnP router on the LAN.
    NoGateway,
    /// A UPnP router, but it is itself behind another NAT (the dial-back to the mapped port failed).
    NotRoutable,
}

/// A reservation we asked a relay for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The `/p2p-circuit` address we listen on through the relay.
    pub addr: Multiaddr,
    /// The relay accepted it.
    pub accepted: bool,
}

/// The NAT side of a node.
#[derive(Debug)]
pub struct NatState {
    started: Instant,
    /// Confirmed external addresses that are not relayed.
    confirmed: Vec<Multiaddr>,
    autonat_ok: u64,
    autonat_failed: u64,
    /// AutoNAT v2 failures of IPv6 addresses (the rest are IPv4).
    autonat_failed_v6: u64,
    /// UPnP outcome.
    pub upnp: Upnp,
    /// Reservations by relay.
    pub reservations: HashMap<PeerId, Reservation>,
    /// Peers reached through a relay, and since when (until a direct connection appears).
    relayed_since: HashMap<PeerId, Instant>,
    /// Time from relayed to direct per peer, last value.
    pub direct_after: HashMap<PeerId, Duration>,
    /// Recent times to a direct connection (for percentiles).
    recent_direct_ms: VecDeque<u64>,
    /// Hole punches tried.
    pub punch_attempts: u64,
    /// Hole punches that gave a direct connection.
    pub punch_successes: u64,
    /// Failed hole punches by reason.
    pub punch_failures: BTreeMap<String, u64>,
    /// Port prediction attempts started here.
    pub prediction_attempts: u64,
    /// Port predictions that gave a direct connection.
    pub prediction_successes: u64,
}

impl Default for NatState {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl NatState {
    /// Fresh state at `now`.
    pub fn new(now: Instant) -> Self {
        NatState {
            started: now,
            confirmed: Vec::new(),
            autonat_ok: 0,
            autonat_failed: 0,
            autonat_failed_v6: 0,
            upnp: Upnp::Searching,
            reservations: HashMap::new(),
            relayed_since: HashMap::new(),
            direct_after: HashMap::new(),
            recent_direct_ms: VecDeque::new(),
            punch_attempts: 0,
            punch_successes: 0,
            punch_failures: BTreeMap::new(),
            prediction_attempts: 0,
            prediction_successes: 0,
        }
    }

    /// An external address was confirmed. Relayed (`/p2p-circuit`) addresses do not make us public: a relay
    /// client's circuit address is "confirmed" as soon as a reservation is accepted.
    pub fn confirmed(&mut self, addr: &Multiaddr) {
        if !super::is_relayed(addr) && !self.confirmed.contains(addr) {
            self.confirmed.push(addr.clone());
        }
    }

    /// An external address expired.
    pub fn expired(&mut self, addr: &Multiaddr) {
        self.confirmed.retain(|a| a != addr);
    }

    /// An AutoNAT v2 probe of one of our addresses finished.
    pub fn autonat_result(&mut self, ok: bool) {
        if ok {
            self.autonat_ok += 1;
        } else {
            self.autonat_failed += 1;
        }
    }

    /// An AutoNAT v2 probe of `addr` finished: counted overall and for its address family.
    pub fn autonat_result_for(&mut self, addr: &Multiaddr, ok: bool) {
        self.autonat_result(ok);
        if !ok && is_ipv6(addr) {
            self.autonat_failed_v6 += 1;
        }
    }

    /// Reachability over one address family (`ipv6`: IPv6, else IPv4): public once an address of that
    /// family is confirmed, private once a probe of one failed. An IPv6 address behind a home router's
    /// firewall is private; a public IPv6 address beside a carrier-grade NATed IPv4 one is public.
    pub fn reachability_of(&self, ipv6: bool) -> Reachability {
        let failed = if ipv6 {
            self.autonat_failed_v6
        } else {
            self.autonat_failed - self.autonat_failed_v6
        };
        if self.confirmed.iter().any(|a| is_ipv6(a) == ipv6) {
            Reachability::Public
        } else if failed > 0 || (!ipv6 && matches!(self.upnp, Upnp::NotRoutable)) {
            Reachability::Private
        } else {
            Reachability::Unknown
        }
    }

    /// Confirmed, non-relayed external addresses.
    pub fn public_addrs(&self) -> &[Multiaddr] {
        &self.confirmed
    }

    /// Our reachability now.
    pub fn reachability(&self) -> Reachability {
        if !self.confirmed.is_empty() {
            Reachability::Public
        } else if self.autonat_failed > 0 || matches!(self.upnp, Upnp::NotRoutable) {
            Reachability::Private
        } else {
            Reachability::Unknown
        }
    }

    /// Relay reservations to hold: two when not public, and still one when public. AutoNAT cannot tell a
    /// restricted-cone NAT (address-dependent filtering) from a public address: the server that dials back
    /// is one we already talked to, so the NAT lets it in, while anyone else is filtered. Measured in
    /// netlab: a publisher behind such a NAT called itself public, held no reservation, and port-restricted
    /// viewers could not reach it at all. One reservation keeps it reachable through a relay, from which
    /// DCUtR then punches a direct path.
    pub fn wanted_reservations(&self) -> usize {
        if self.reachability() == Reachability::Public {
            1
        } else {
            WANTED_RESERVATIONS
        }
    }

    /// Relays to reserve on next, from connected relay-capable peers; none when we have enough.
    pub fn relays_to_add(&self, candidates: &[PeerId]) -> Vec<PeerId> {
        let need = self
            .wanted_reservations()
            .saturating_sub(self.reservations.len());
        candidates
            .iter()
            .filter(|p| !self.reservations.contains_key(p))
            .take(need)
            .copied()
            .collect()
    }

    /// A connection to `peer` was established.
    pub fn connection(&mut self, peer: PeerId, relayed: bool, already_direct: bool, now: Instant) {
        if relayed {
            if !already_direct {
                self.relayed_since.entry(peer).or_insert(now);
            }
        } else if let Some(since) = self.relayed_since.remove(&peer) {
            let d = now.duration_since(since);
            self.direct_after.insert(peer, d);
            self.recent_direct_ms.push_back(d.as_millis() as u64);
            if self.recent_direct_ms.len() > 1000 {
                self.recent_direct_ms.pop_front();
            }
        }
    }

    /// All connections to `peer` closed: what was kept per peer goes (the status pages show connected peers
    /// only; the record of upgrades keeps its own bounded history).
    pub fn disconnected(&mut self, peer: &PeerId) {
        self.relayed_since.remove(peer);
        self.direct_after.remove(peer);
    }

    /// A DCUtR hole punch finished.
    pub fn punch(&mut self, result: Result<(), String>) {
        self.punch_attempts += 1;
        match result {
            Ok(()) => self.punch_successes += 1,
            Err(reason) => *self.punch_failures.entry(reason).or_default() += 1,
        }
    }

    /// A port prediction attempt finished (the failure reason is logged).
    pub fn prediction(&mut self, result: Result<(), String>) {
        self.prediction_attempts += 1;
        if result.is_ok() {
            self.prediction_successes += 1;
        }
    }

    /// Median and maximum time from relayed to direct, ms.
    pub fn direct_percentiles(&self) -> Option<(u64, u64)> {
        let mut v: Vec<u64> = self.recent_direct_ms.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        Some((v[v.len() / 2], v[v.len() - 1]))
    }

    /// Number of relayed-to-direct upgrades measured.
    pub fn upgrades(&self) -> usize {
        self.recent_direct_ms.len()
    }

    /// A plain-language hint for the person running the node.
    pub fn hint(&self, now: Instant) -> String {
        let accepted: Vec<&PeerId> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.accepted)
            .map(|(p, _)| p)
            .collect();
        match self.reachability() {
            Reachability::Public => match &self.upnp {
                Upnp::Mapped(a) => format!(
                    "Reachable from the internet at {a} (your router opened the port for it). Friends connect \
                     directly, and your node helps friends behind stricter routers."
                ),
                _ => "Reachable from the internet. Friends connect directly, and your node relays for friends \
                      behind stricter routers."
                    .into(),
            },
            _ if !accepted.is_empty() => format!(
                "Behind a router (NAT), which is fine: friends reach you through {} relay(s), and a direct \
                 connection is set up automatically whenever the routers allow it. No port forwarding needed.",
                accepted.len()
            ),
            Reachability::Private => "Behind a router (NAT) and no relay found yet. Join a friend's node or a \
                                      public node (--bootstrap or a join code) so friends can reach you."
                .into(),
            Reachability::Unknown if now.duration_since(self.started) < Duration::from_secs(30) => {
                "Checking how the internet sees this node...".into()
            }
            Reachability::Unknown => "Reachability unknown: no other node has tested it yet. Connect to a \
                                      friend's node (--bootstrap or a join code)."
                .into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn relay_addresses_never_make_a_node_public() {
        let mut n = NatState::default();
        assert_eq!(n.reachability(), Reachability::Unknown);
        assert_eq!(n.wanted_reservations(), 2);
        n.confirmed(&addr("/ip4/198.51.100.1/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"));
        assert_eq!(n.reachability(), Reachability::Unknown);
        n.autonat_result(false);
        assert_eq!(n.reachability(), Reachability::Private);
        n.confirmed(&addr("/ip4/203.0.113.9/udp/4001/quic-v1"));
        assert_eq!(n.reachability(), Reachability::Public);
        assert_eq!(n.wanted_reservations(), 1);
        n.expired(&addr("/ip4/203.0.113.9/udp/4001/quic-v1"));
        assert_eq!(n.reachability(), Reachability::Private);
    }

    #[test]
    fn reachability_is_known_per_address_family() {
        let mut n = NatState::default();
        let v6: Multiaddr = addr("/ip6/2001:db8:1:3::2/udp/4001/quic-v1");
        let v4: Multiaddr = addr("/ip4/203.0.113.2/udp/4001/quic-v1");
        n.autonat_result_for(&v6, false);
        assert_eq!(n.reachability_of(true), Reachability::Private);
        assert_eq!(n.reachability_of(false), Reachability::Unknown);
        n.confirmed(&v4);
        assert_eq!(n.reachability_of(false), Reachability::Public);
        assert_eq!(n.reachability_of(true), Reachability::Private);
        assert_eq!(n.reachability(), Reachability::Public);
    }

    #[test]
    fn keeps_two_reservations() {
        let mut n = NatState::default();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        assert_eq!(n.relays_to_add(&[a, b, c]), vec![a, b]);
        n.reservations.insert(
            a,
            Reservation {
                addr: addr("/p2p-circuit"),
                accepted: true,
            },
        );
        assert_eq!(n.relays_to_add(&[a, b, c]), vec![b]);
        n.confirmed(&addr("/ip4/203.0.113.9/tcp/1"));
        assert!(
            n.relays_to_add(&[b, c]).is_empty(),
            "public nodes keep one reservation, and have it"
        );
    }

    #[test]
    fn measures_time_from_relayed_to_direct_and_punch_outcomes() {
        let t = Instant::now();
        let mut n = NatState::new(t);
        let p = PeerId::random();
        n.connection(p, true, false, t);
        n.connection(p, true, false, t + Duration::from_millis(100)); // a second circuit: keeps the first time
        n.connection(p, false, false, t + Duration::from_millis(700));
        assert_eq!(n.direct_after[&p], Duration::from_millis(700));
        assert_eq!(n.direct_percentiles(), Some((700, 700)));
        n.punch(Ok(()));
        n.punch(Err("no addresses".into()));
        n.punch(Err("no addresses".into()));
        assert_eq!((n.punch_attempts, n.punch_successes), (3, 1));
        assert_eq!(n.punch_failures["no addresses"], 2);
        // A direct connection with no relayed one before it is not an upgrade.
        n.connection(PeerId::random(), false, false, t);
        assert_eq!(n.upgrades(), 1);
        // Per-peer state goes with the peer; the history of upgrades stays.
        n.disconnected(&p);
        assert!(n.direct_after.is_empty());
        assert_eq!(n.direct_percentiles(), Some((700, 700)));
    }

    #[test]
    fn hints_say_what_to_do() {
        let t = Instant::now();
        let mut n = NatState::new(t);
        assert!(n.hint(t).contains("Checking"));
        n.autonat_result(false);
        assert!(n.hint(t).contains("no relay found"));
        n.reservations.insert(
            PeerId::random(),
            Reservation {
                addr: addr("/p2p-circuit"),
                accepted: true,
            },
        );
        assert!(n.hint(t).contains("No port forwarding"));
    }
}
