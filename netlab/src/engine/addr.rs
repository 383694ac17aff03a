//! The lab's address plan: which address every interface gets, as pure functions of small slot numbers.
//!
//! The "internet" uses only the documentation ranges (RFC 5737), so nothing the lab sends can ever be
//! mistaken for a real destination: public hosts live in 198.51.100.0/24, NAT routers' external addresses in
//! 203.0.113.0/24. Carrier networks use the shared address space 100.64.0.0/10 (RFC 6598) and home LANs
//! 10.0.0.0/8, each only inside the lab's own namespaces.
//!
//! IPv6 comes from the documentation prefix 2001:db8::/32 (RFC 3849) only, and mirrors the IPv4 plan:
//! public hosts `2001:db8:100::<slot>`, routers' WAN `2001:db8:113::<slot>` (gateway `::1`), a home's
//! delegated prefix `2001:db8:1:<lan>::/64` (router `::1`), a carrier's network `2001:db8:64:<c>::/64`.
//! IPv6 is never translated: a site that has it is reachable at its hosts' own addresses, through whatever
//! firewall its router runs.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Prefix length of every segment in the lab.
pub const PREFIX_LEN: u8 = 24;

/// First host number handed out on the public hosts' range (below it is kept free for humans).
const FIRST_PUBLIC_HOST: u8 = 10;
/// First host number for routers on the routers' range and for routers on a carrier network.
const FIRST_ROUTER: u8 = 2;
/// First host number for hosts on a LAN (`.1` is the router).
const FIRST_LAN_HOST: u8 = 2;
/// Highest usable host number on a /24.
const LAST_HOST: u8 = 254;

/// An address from the public hosts' documentation range, 198.51.100.0/24.
pub fn public_host_addr(slot: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, slot)
}

/// A NAT router's (or carrier's) external address, from 203.0.113.0/24.
pub fn router_wan_addr(slot: u8) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, slot)
}

/// The network of a home LAN: `10.<lan / 256>.<lan % 256>.0/24`.
pub fn lan_network(lan: u16) -> Ipv4Addr {
    let [hi, lo] = lan.to_be_bytes();
    Ipv4Addr::new(10, hi, lo, 0)
}

/// The address of host `host` (1 is the router) on home LAN `lan`.
pub fn lan_addr(lan: u16, host: u8) -> Ipv4Addr {
    let n = lan_network(lan).octets();
    Ipv4Addr::new(n[0], n[1], n[2], host)
}

/// The address of host `host` (1 is the carrier's router) on carrier network `carrier`: `100.64.<c>.<host>`.
pub fn carrier_addr(carrier: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, carrier, host)
}

/// Prefix length of a home's or a carrier's IPv6 network.
pub const PREFIX_LEN6: u8 = 64;

/// A public host's IPv6 address, `2001:db8:100::<slot>`.
pub fn public_host_addr6(slot: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, slot.into())
}

/// A router's (or carrier's) IPv6 address on the internet, `2001:db8:113::<slot>`.
pub fn router_wan_addr6(slot: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, slot.into())
}

/// The IPv6 prefix (/64) delegated to home LAN `lan` of a router on the internet: `2001:db8:1:<lan>::/64`.
pub fn lan_prefix6(lan: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, lan, 0, 0, 0, 0)
}

/// Host `host` (1 is the router) in the IPv6 prefix delegated to home LAN `lan`: `2001:db8:1:<lan>::<host>`.
pub fn lan_addr6(lan: u16, host: u8) -> Ipv6Addr {
    in_prefix6(lan_prefix6(lan), host)
}

/// Host `host` (1 is the carrier's router) on carrier network `carrier`: `2001:db8:64:<c>::<host>`.
pub fn carrier_addr6(carrier: u8, host: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x64, carrier.into(), 0, 0, 0, host.into())
}

/// The IPv6 prefix a carrier delegates to home router `home` on its network `carrier`:
/// `2001:db8:65:<carrier><home>::/64`, inside the carrier's aggregate [`carrier_aggregate6`].
pub fn carrier_home_prefix6(carrier: u8, home: u8) -> Ipv6Addr {
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x65,
        u16::from_be_bytes([carrier, home]),
        0,
        0,
        0,
        0,
    )
}

/// The /56 a carrier holds for its customers' prefixes, which the internet routes to the carrier.
pub fn carrier_aggregate6(carrier: u8) -> (Ipv6Addr, u8) {
    (carrier_home_prefix6(carrier, 0), 56)
}

/// Host `host` of the /64 `prefix`.
pub fn in_prefix6(prefix: Ipv6Addr, host: u8) -> Ipv6Addr {
    let mut s = prefix.segments();
    s[7] = host.into();
    Ipv6Addr::from(s)
}

/// True for addresses in the IPv6 documentation prefix, the only IPv6 the lab configures.
pub fn is_lab_addr6(addr: Ipv6Addr) -> bool {
    let s = addr.segments();
    s[0] == 0x2001 && s[1] == 0xdb8
}

/// True when `addr` is in one of the ranges the lab hands out; the lab never configures anything else.
pub fn is_lab_addr(addr: Ipv4Addr) -> bool {
    let o = addr.octets();
    matches!(o, [198, 51, 100, _] | [203, 0, 113, _] | [10, ..])
        || (o[0] == 100 && (64..128).contains(&o[1]))
}

/// A pool of small numbers that are handed out and given back.
///
/// Given-back numbers are reused so long runs (the punch matrix) fit in a /24, but only after every other
/// free number: the kernel deletes a namespace asynchronously, and an address handed out again at once
/// could meet its previous owner still answering ARP on the bridge.
#[derive(Debug, Clone)]
pub struct SlotPool {
    /// Numbers currently free, in the order they will be handed out.
    free: VecDeque<u16>,
    /// What the pool hands out, for error messages.
    what: &'static str,
}

/// The pool is empty: the lab has as many of these as its address plan allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the lab has no free {0} left: its address plan allows fewer; use a smaller topology")]
pub struct PoolExhausted(pub &'static str);

impl SlotPool {
    /// A pool holding `first..=last`.
    pub fn new(what: &'static str, first: u16, last: u16) -> SlotPool {
        SlotPool {
            free: (first..=last).collect(),
            what,
        }
    }

    /// Public host numbers on 198.51.100.0/24.
    pub fn public_hosts() -> SlotPool {
        SlotPool::new(
            "public host addresses",
            FIRST_PUBLIC_HOST.into(),
            LAST_HOST.into(),
        )
    }

    /// Router numbers on 203.0.113.0/24.
    pub fn routers() -> SlotPool {
        SlotPool::new(
            "public router addresses",
            FIRST_ROUTER.into(),
            LAST_HOST.into(),
        )
    }

    /// Routers on one carrier network.
    pub fn carrier_routers() -> SlotPool {
        SlotPool::new(
            "addresses on the carrier network",
            FIRST_ROUTER.into(),
            LAST_HOST.into(),
        )
    }

    /// Hosts on one LAN.
    pub fn lan_hosts() -> SlotPool {
        SlotPool::new(
            "LAN host addresses",
            FIRST_LAN_HOST.into(),
            LAST_HOST.into(),
        )
    }

    /// Home LAN networks (10.0.0.0/24 .. 10.15.255.0/24).
    pub fn lans() -> SlotPool {
        SlotPool::new("home LAN networks", 0, 4095)
    }

    /// Carrier networks (100.64.0.0/24 .. 100.64.255.0/24).
    pub fn carriers() -> SlotPool {
        SlotPool::new("carrier networks", 0, 255)
    }

    /// Takes the free number that has been free longest (initially the lowest).
    pub fn take(&mut self) -> Result<u16, PoolExhausted> {
        self.free.pop_front().ok_or(PoolExhausted(self.what))
    }

    /// Takes the lowest free number, which must fit in a byte (all pools but `lans` do).
    pub fn take_u8(&mut self) -> Result<u8, PoolExhausted> {
        let n = self.take()?;
        u8::try_from(n).map_err(|_| PoolExhausted(self.what))
    }

    /// Takes `n` consecutive numbers (a public host with several addresses), preferring the run whose
    /// first number has been free longest.
    pub fn take_run(&mut self, n: usize) -> Result<Vec<u16>, PoolExhausted> {
        let start = self
            .free
            .iter()
            .copied()
            .find(|&s| {
                (0..n as u16).all(|i| s.checked_add(i).is_some_and(|x| self.free.contains(&x)))
            })
            .ok_or(PoolExhausted(self.what))?;
        let run: Vec<u16> = (start..start + n as u16).collect();
        self.free.retain(|x| !run.contains(x));
        Ok(run)
    }

    /// Gives a number back; it is handed out again after every number that is free now.
    pub fn give_back(&mut self, n: u16) {
        if !self.free.contains(&n) {
            self.free.push_back(n);
        }
    }

    /// How many numbers are free.
    pub fn available(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_side_uses_only_documentation_ranges() {
        let mut hosts = SlotPool::public_hosts();
        let mut routers = SlotPool::routers();
        assert_eq!(
            public_host_addr(hosts.take_u8().unwrap()),
            Ipv4Addr::new(198, 51, 100, 10)
        );
        assert_eq!(
            router_wan_addr(routers.take_u8().unwrap()),
            Ipv4Addr::new(203, 0, 113, 2)
        );
        assert_eq!(routers.available(), 252);
        for _ in 0..252 {
            let a = router_wan_addr(routers.take_u8().unwrap());
            assert!(is_lab_addr(a) && a.octets()[3] <= 254);
        }
        assert!(routers.take().is_err());
    }

    #[test]
    fn lans_and_carriers_are_private_and_distinct() {
        assert_eq!(lan_network(0), Ipv4Addr::new(10, 0, 0, 0));
        assert_eq!(lan_network(300), Ipv4Addr::new(10, 1, 44, 0));
        assert_eq!(lan_addr(3, 1), Ipv4Addr::new(10, 0, 3, 1));
        assert_eq!(carrier_addr(7, 2), Ipv4Addr::new(100, 64, 7, 2));
        assert!(lan_addr(4095, 254).is_private());
        assert!(is_lab_addr(carrier_addr(255, 254)));
        assert!(!is_lab_addr(Ipv4Addr::new(192, 168, 1, 1)));
        assert!(!is_lab_addr(Ipv4Addr::new(8, 8, 8, 8)));
        assert!(!is_lab_addr(Ipv4Addr::new(100, 128, 0, 1)));
    }

    #[test]
    fn ipv6_mirrors_the_ipv4_plan_inside_the_documentation_prefix() {
        assert_eq!(public_host_addr6(10).to_string(), "2001:db8:100::a");
        assert_eq!(router_wan_addr6(2).to_string(), "2001:db8:113::2");
        assert_eq!(lan_addr6(300, 1).to_string(), "2001:db8:1:12c::1");
        assert_eq!(carrier_addr6(7, 2).to_string(), "2001:db8:64:7::2");
        for a in [
            public_host_addr6(254),
            router_wan_addr6(1),
            lan_addr6(4095, 254),
            carrier_addr6(255, 254),
        ] {
            assert!(is_lab_addr6(a), "{a}");
        }
        assert!(!is_lab_addr6("2001:db9::1".parse().unwrap()));
        assert_eq!(carrier_home_prefix6(3, 2).to_string(), "2001:db8:65:302::");
        assert_eq!(
            carrier_aggregate6(3),
            ("2001:db8:65:300::".parse().unwrap(), 56)
        );
        assert_eq!(
            in_prefix6(carrier_home_prefix6(3, 2), 1).to_string(),
            "2001:db8:65:302::1"
        );
        assert!(!is_lab_addr6("::1".parse().unwrap()));
    }

    #[test]
    fn pool_reuses_given_back_numbers_last() {
        let mut p = SlotPool::new("things", 1, 5);
        assert_eq!(
            (p.take().unwrap(), p.take().unwrap(), p.take().unwrap()),
            (1, 2, 3)
        );
        p.give_back(2);
        p.give_back(2);
        assert_eq!(p.take().unwrap(), 4);
        assert_eq!(p.take().unwrap(), 5);
        assert_eq!(p.take().unwrap(), 2);
        let err = p.take().unwrap_err();
        assert!(err.to_string().contains("no free things"));
    }

    #[test]
    fn runs_are_consecutive() {
        let mut p = SlotPool::new("things", 1, 6);
        p.take().unwrap();
        p.take().unwrap();
        p.give_back(1);
        // 1 is free but 2 is not, so the first run of two starts at 3.
        assert_eq!(p.take_run(2).unwrap(), vec![3, 4]);
        assert!(p.take_run(3).is_err());
    }
}
