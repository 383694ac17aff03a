//! The `ip` commands that wire the lab together, as pure functions (unit tested without root).
//!
//! The internet is routed, not bridged: `<prefix>-inet` is a router with one port per attached
//! namespace, a /32 route per public address, and the gateway address 203.0.113.1 on its loopback. Every
//! neighbour entry across an access link is static (MAC addresses are derived from addresses and port
//! numbers), so no ARP ever crosses an impaired link: on the real internet a home router's next hop is
//! resolved long before a call starts, and an ARP round trip over a 50 ms link would add 100 ms to the
//! first packet of every new destination.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Every link in the lab has this MTU, whatever the host's own links use.
pub const LAB_MTU: u32 = 1500;

/// The internet router's address (on its loopback), every public namespace's gateway.
pub const INTERNET_GATEWAY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

/// The internet router's IPv6 address (on its loopback), every public namespace's IPv6 gateway.
pub const INTERNET_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 1);

/// The MAC address of the interface that holds `addr`: locally administered, `02:00:` + the address.
pub fn mac_for_addr(addr: Ipv4Addr) -> String {
    let o = addr.octets();
    format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// The MAC address of upstream port number `id`: `02:01:` + the number.
pub fn mac_for_port(id: u32) -> String {
    let b = id.to_be_bytes();
    format!("02:01:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

/// The two ends of an access link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEnds {
    /// Interface name in the attached namespace (`wan`, `eth0`).
    pub inner_if: String,
    /// Its MAC address.
    pub inner_mac: String,
    /// Interface name in the upstream namespace (`r17`).
    pub port: String,
    /// Its MAC address.
    pub port_mac: String,
}

/// In the attached namespace: create both ends as a veth pair, the port directly in `up_ns`, so no
/// interface of the lab ever exists in the host namespace.
pub fn veth_lines(ends: &LinkEnds, up_ns: &str) -> Vec<String> {
    vec![
        format!(
            "link add {} address {} mtu {LAB_MTU} type veth peer name {} address {} netns {up_ns}",
            ends.inner_if, ends.inner_mac, ends.port, ends.port_mac
        ),
        format!("link set {} addrgenmode none", ends.inner_if),
    ]
}

/// In the attached namespace, after the wire created both ends as TAP devices: set their addresses and
/// move the port upstream.
pub fn tap_lines(ends: &LinkEnds, up_ns: &str) -> Vec<String> {
    vec![
        format!(
            "link set {} address {} mtu {LAB_MTU} addrgenmode none",
            ends.inner_if, ends.inner_mac
        ),
        format!(
            "link set {} address {} mtu {LAB_MTU}",
            ends.port, ends.port_mac
        ),
        format!("link set {} netns {up_ns}", ends.port),
    ]
}

/// In the upstream namespace: bring the port up, on `bridge` if the upstream is a bridged LAN.
pub fn port_up_lines(ends: &LinkEnds, bridge: Option<&str>) -> Vec<String> {
    let mut v = vec![format!("link set {} addrgenmode none", ends.port)];
    if let Some(b) = bridge {
        v.push(format!("link set {} master {b}", ends.port));
    }
    v.push(format!("link set {} up", ends.port));
    v
}

/// In the internet namespace: route `addrs` to the port and pin their neighbour entries.
pub fn internet_route_lines(ends: &LinkEnds, addrs: &[Ipv4Addr]) -> Vec<String> {
    addrs
        .iter()
        .flat_map(|a| {
            [
                format!("route add {a}/32 dev {}", ends.port),
                format!(
                    "neigh replace {a} lladdr {} dev {} nud permanent",
                    ends.inner_mac, ends.port
                ),
            ]
        })
        .collect()
}

/// In a namespace attached to the internet: its /32 addresses and the default route via the internet
/// gateway, with the gateway's neighbour entry pinned.
pub fn internet_client_lines(ends: &LinkEnds, addrs: &[Ipv4Addr]) -> Vec<String> {
    let dev = &ends.inner_if;
    let mut v: Vec<String> = addrs
        .iter()
        .map(|a| format!("addr add {a}/32 dev {dev}"))
        .collect();
    v.push(format!("link set {dev} up"));
    v.push(format!(
        "route add {INTERNET_GATEWAY}/32 dev {dev} scope link"
    ));
    v.push(format!(
        "neigh replace {INTERNET_GATEWAY} lladdr {} dev {dev} nud permanent",
        ends.port_mac
    ));
    v.push(format!(
        "route add default via {INTERNET_GATEWAY} dev {dev}"
    ));
    v
}

/// In a home router behind a carrier: its address on the carrier network and the default route via the
/// carrier, with the carrier's neighbour entry pinned (the access link may be impaired).
pub fn carrier_client_lines(
    ends: &LinkEnds,
    addr: Ipv4Addr,
    prefix_len: u8,
    gateway: Ipv4Addr,
) -> Vec<String> {
    let dev = &ends.inner_if;
    vec![
        format!("addr add {addr}/{prefix_len} dev {dev}"),
        format!("link set {dev} up"),
        format!(
            "neigh replace {gateway} lladdr {} dev {dev} nud permanent",
            mac_for_addr(gateway)
        ),
        format!("route add default via {gateway} dev {dev}"),
    ]
}

/// In a carrier router: pin the neighbour entry of a home router on its LAN bridge.
pub fn carrier_neighbour_lines(lan_if: &str, home_addr: Ipv4Addr) -> Vec<String> {
    vec![format!(
        "neigh replace {home_addr} lladdr {} dev {lan_if} nud permanent",
        mac_for_addr(home_addr)
    )]
}

/// In the internet namespace when it is created.
pub fn internet_lines() -> Vec<String> {
    vec![
        "link set lo up".into(),
        format!("addr add {INTERNET_GATEWAY}/32 dev lo"),
        format!("addr add {INTERNET_GATEWAY6}/128 dev lo nodad"),
    ]
}

/// In the internet namespace: route `addrs` (IPv6, /128 each) to the port with pinned neighbour entries,
/// and `prefixes` (a home's or a carrier's network) via the first of them.
pub fn internet_route_lines6(
    ends: &LinkEnds,
    addrs: &[Ipv6Addr],
    prefixes: &[(Ipv6Addr, u8)],
) -> Vec<String> {
    let mut v: Vec<String> = addrs
        .iter()
        .flat_map(|a| {
            [
                format!("route add {a}/128 dev {}", ends.port),
                format!(
                    "neigh replace {a} lladdr {} dev {} nud permanent",
                    ends.inner_mac, ends.port
                ),
            ]
        })
        .collect();
    if let Some(first) = addrs.first() {
        v.extend(
            prefixes
                .iter()
                .map(|(p, len)| format!("route add {p}/{len} via {first} dev {}", ends.port)),
        );
    }
    v
}

/// In a namespace attached to the internet: its IPv6 addresses (no duplicate address detection: an address
/// must work the moment the lab hands it out) and the default route via the internet's IPv6 gateway, whose
/// neighbour entry is pinned. Comes after [`internet_client_lines`], which brings the link up.
pub fn internet_client_lines6(ends: &LinkEnds, addrs: &[Ipv6Addr]) -> Vec<String> {
    let dev = &ends.inner_if;
    let mut v: Vec<String> = addrs
        .iter()
        .map(|a| format!("addr add {a}/128 dev {dev} nodad"))
        .collect();
    v.push(format!("route add {INTERNET_GATEWAY6}/128 dev {dev}"));
    v.push(format!(
        "neigh replace {INTERNET_GATEWAY6} lladdr {} dev {dev} nud permanent",
        ends.port_mac
    ));
    v.push(format!(
        "route add default via {INTERNET_GATEWAY6} dev {dev}"
    ));
    v
}

/// In a home router behind a carrier: its IPv6 address on the carrier network and the default route via
/// the carrier (`gateway`, whose interface has MAC `gateway_mac`), neighbour pinned.
pub fn carrier_client_lines6(
    ends: &LinkEnds,
    addr: Ipv6Addr,
    prefix_len: u8,
    gateway: Ipv6Addr,
    gateway_mac: &str,
) -> Vec<String> {
    let dev = &ends.inner_if;
    vec![
        format!("addr add {addr}/{prefix_len} dev {dev} nodad"),
        format!("neigh replace {gateway} lladdr {gateway_mac} dev {dev} nud permanent"),
        format!("route add default via {gateway} dev {dev}"),
    ]
}

/// In a carrier router: pin a home router's IPv6 neighbour entry (`home_mac` is its WAN interface's) and
/// route the home's delegated prefix to it.
pub fn carrier_home_lines6(
    lan_if: &str,
    home: Ipv6Addr,
    home_mac: &str,
    prefix: (Ipv6Addr, u8),
) -> Vec<String> {
    vec![
        format!("neigh replace {home} lladdr {home_mac} dev {lan_if} nud permanent"),
        format!(
            "route add {}/{} via {home} dev {lan_if}",
            prefix.0, prefix.1
        ),
    ]
}

/// On a LAN (router `router` with MAC `router_mac`, host `host` with MAC `host_mac`, both on the `/64`):
/// the host's address and default route, and the neighbour entries both ways (the lab's interfaces have
/// no link-local addresses to run neighbour discovery from). Returns (router's lines, host's lines).
pub fn lan_lines6(
    (router, router_mac, router_if): (Ipv6Addr, &str, &str),
    (host, host_mac, host_if): (Ipv6Addr, &str, &str),
    prefix_len: u8,
) -> (Vec<String>, Vec<String>) {
    (
        vec![format!(
            "neigh replace {host} lladdr {host_mac} dev {router_if} nud permanent"
        )],
        vec![
            format!("addr add {host}/{prefix_len} dev {host_if} nodad"),
            format!("neigh replace {router} lladdr {router_mac} dev {host_if} nud permanent"),
            format!("route add default via {router} dev {host_if}"),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends() -> LinkEnds {
        LinkEnds {
            inner_if: "wan".into(),
            inner_mac: mac_for_addr(Ipv4Addr::new(203, 0, 113, 5)),
            port: "r17".into(),
            port_mac: mac_for_port(17),
        }
    }

    #[test]
    fn macs_are_locally_administered_and_distinct() {
        assert_eq!(
            mac_for_addr(Ipv4Addr::new(203, 0, 113, 5)),
            "02:00:cb:00:71:05"
        );
        assert_eq!(mac_for_port(17), "02:01:00:00:00:11");
        assert_ne!(mac_for_port(1), mac_for_addr(Ipv4Addr::new(0, 0, 0, 1)));
    }

    #[test]
    fn veth_is_created_from_inside_the_lab() {
        let l = veth_lines(&ends(), "nlab0001-inet");
        assert_eq!(
            l[0],
            "link add wan address 02:00:cb:00:71:05 mtu 1500 type veth peer name r17 address 02:01:00:00:00:11 netns nlab0001-inet"
        );
        let t = tap_lines(&ends(), "nlab0001-inet");
        assert_eq!(t.last().unwrap(), "link set r17 netns nlab0001-inet");
    }

    #[test]
    fn internet_is_routed_with_pinned_neighbours() {
        let a = [
            Ipv4Addr::new(198, 51, 100, 10),
            Ipv4Addr::new(198, 51, 100, 11),
        ];
        let up = internet_route_lines(&ends(), &a);
        assert_eq!(up.len(), 4);
        assert_eq!(up[0], "route add 198.51.100.10/32 dev r17");
        assert_eq!(
            up[1],
            "neigh replace 198.51.100.10 lladdr 02:00:cb:00:71:05 dev r17 nud permanent"
        );
        let client = internet_client_lines(&ends(), &a);
        assert_eq!(client[0], "addr add 198.51.100.10/32 dev wan");
        assert!(client.contains(
            &"neigh replace 203.0.113.1 lladdr 02:01:00:00:00:11 dev wan nud permanent".into()
        ));
        assert_eq!(
            client.last().unwrap(),
            "route add default via 203.0.113.1 dev wan"
        );
        assert_eq!(
            port_up_lines(&ends(), None),
            vec!["link set r17 addrgenmode none", "link set r17 up"]
        );
    }

    #[test]
    fn ipv6_is_routed_with_pinned_neighbours_and_no_dad() {
        let a6: Ipv6Addr = "2001:db8:113::5".parse().unwrap();
        let prefix: Ipv6Addr = "2001:db8:1:3::".parse().unwrap();
        let up = internet_route_lines6(&ends(), &[a6], &[(prefix, 64)]);
        assert_eq!(
            up,
            vec![
                "route add 2001:db8:113::5/128 dev r17",
                "neigh replace 2001:db8:113::5 lladdr 02:00:cb:00:71:05 dev r17 nud permanent",
                "route add 2001:db8:1:3::/64 via 2001:db8:113::5 dev r17",
            ]
        );
        let client = internet_client_lines6(&ends(), &[a6]);
        assert_eq!(client[0], "addr add 2001:db8:113::5/128 dev wan nodad");
        assert_eq!(
            client.last().unwrap(),
            "route add default via 2001:db8:113::1 dev wan"
        );
        let (r, h) = lan_lines6(
            (
                "2001:db8:1:3::1".parse().unwrap(),
                "02:00:0a:00:03:01",
                "lan",
            ),
            (
                "2001:db8:1:3::2".parse().unwrap(),
                "02:00:0a:00:03:02",
                "eth0",
            ),
            64,
        );
        assert_eq!(
            r,
            vec!["neigh replace 2001:db8:1:3::2 lladdr 02:00:0a:00:03:02 dev lan nud permanent"]
        );
        assert_eq!(h[0], "addr add 2001:db8:1:3::2/64 dev eth0 nodad");
        assert_eq!(h[2], "route add default via 2001:db8:1:3::1 dev eth0");
        assert!(internet_lines()[2].ends_with("nodad"));
    }

    #[test]
    fn carrier_links_are_bridged_with_pinned_neighbours() {
        let gw = Ipv4Addr::new(100, 64, 3, 1);
        let me = Ipv4Addr::new(100, 64, 3, 2);
        let l = carrier_client_lines(&ends(), me, 24, gw);
        assert_eq!(l[0], "addr add 100.64.3.2/24 dev wan");
        assert_eq!(
            l[2],
            "neigh replace 100.64.3.1 lladdr 02:00:64:40:03:01 dev wan nud permanent"
        );
        assert_eq!(
            carrier_neighbour_lines("lan", me)[0],
            "neigh replace 100.64.3.2 lladdr 02:00:64:40:03:02 dev lan nud permanent"
        );
        assert_eq!(
            port_up_lines(&ends(), Some("lan"))[1],
            "link set r17 master lan"
        );
    }
}
