//! NAT behaviour in RFC 4787 terms, the router presets of the lab, and the nftables rulesets that make a
//! Linux router namespace behave as each preset.
//!
//! Everything here is plain data and text generation, so it is unit tested without root. The rulesets follow
//! the measured recipes in the project's NAT notes: one native `ip` table per router, a stateful filter whose
//! `input` drop keeps unsolicited packets from creating conntrack entries (the hole-punch race), cone
//! behaviour from a dynamic map, and symmetric behaviour from `masquerade random`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::stun_server::ServerAddrs;

/// How a NAT chooses the external address and port for an internal endpoint (RFC 4787 section 4.1).
///
/// Ordered from the most to the least permissive, so the behaviour of two NATs in a row is the maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// No translation at all: the host's own address is what the world sees.
    None,
    /// Endpoint-independent mapping (EIM): one external port for every destination.
    EndpointIndependent,
    /// Address-dependent mapping (ADM): a new external port per destination address.
    AddressDependent,
    /// Address-and-port-dependent mapping, usually called endpoint-dependent (EDM): a new external port per
    /// destination address and port. This is the "symmetric" NAT.
    EndpointDependent,
}

impl Mapping {
    /// The short label used in tables.
    pub fn label(self) -> &'static str {
        match self {
            Mapping::None => "none",
            Mapping::EndpointIndependent => "EIM",
            Mapping::AddressDependent => "ADM",
            Mapping::EndpointDependent => "EDM",
        }
    }

    /// True when every destination sees the same external endpoint (no NAT counts as independent).
    pub fn is_endpoint_independent(self) -> bool {
        matches!(self, Mapping::None | Mapping::EndpointIndependent)
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Which inbound packets a NAT lets through to an existing mapping (RFC 4787 section 5).
///
/// Ordered from the most to the least permissive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    /// No filter: a public host accepts anything.
    None,
    /// Endpoint-independent filtering (EIF): anyone may send to an existing mapping.
    EndpointIndependent,
    /// Address-dependent filtering (ADF): only addresses the host has sent to.
    AddressDependent,
    /// Address-and-port-dependent filtering (APDF): only address and port pairs the host has sent to.
    AddressAndPortDependent,
}

impl Filtering {
    /// The short label used in tables.
    pub fn label(self) -> &'static str {
        match self {
            Filtering::None => "open",
            Filtering::EndpointIndependent => "EIF",
            Filtering::AddressDependent => "ADF",
            Filtering::AddressAndPortDependent => "APDF",
        }
    }
}

impl fmt::Display for Filtering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// An IP address family: the lab measures each separately.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4 (through the NAT).
    #[default]
    Ipv4,
    /// IPv6 (routed, through the firewall).
    Ipv6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}

/// Mapping and filtering together: what a host behind a NAT (or a chain of NATs) experiences.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Behaviour {
    /// How external endpoints are chosen.
    pub mapping: Mapping,
    /// Which inbound packets get through.
    pub filtering: Filtering,
}

impl Behaviour {
    /// A public host: no translation, no filter.
    pub const OPEN: Behaviour = Behaviour {
        mapping: Mapping::None,
        filtering: Filtering::None,
    };

    /// The behaviour of `inner` sitting behind `outer` (double NAT): each property is the more restrictive
    /// of the two, because a packet has to pass both and a new mapping in either layer changes the port.
    pub fn behind(self, outer: Behaviour) -> Behaviour {
        Behaviour {
            mapping: self.mapping.max(outer.mapping),
            filtering: self.filtering.max(outer.filtering),
        }
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.mapping, self.filtering)
    }
}

/// The behaviour of one NAT router, named the classic way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatType {
    /// EIM + EIF.
    FullCone,
    /// EIM + ADF.
    RestrictedCone,
    /// EIM + APDF: what most home routers do.
    PortRestrictedCone,
    /// EDM + APDF.
    Symmetric,
}

impl NatType {
    /// All router types, most permissive first.
    pub const ALL: [NatType; 4] = [
        NatType::FullCone,
        NatType::RestrictedCone,
        NatType::PortRestrictedCone,
        NatType::Symmetric,
    ];

    /// The RFC 4787 behaviour this router is built to have.
    pub fn behaviour(self) -> Behaviour {
        let (mapping, filtering) = match self {
            NatType::FullCone => (Mapping::EndpointIndependent, Filtering::EndpointIndependent),
            NatType::RestrictedCone => (Mapping::EndpointIndependent, Filtering::AddressDependent),
            NatType::PortRestrictedCone => (
                Mapping::EndpointIndependent,
                Filtering::AddressAndPortDependent,
            ),
            NatType::Symmetric => (
                Mapping::EndpointDependent,
                Filtering::AddressAndPortDependent,
            ),
        };
        Behaviour { mapping, filtering }
    }

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            NatType::FullCone => "full-cone",
            NatType::RestrictedCone => "restricted",
            NatType::PortRestrictedCone => "port-restricted",
            NatType::Symmetric => "symmetric",
        }
    }
}

impl fmt::Display for NatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a NAT type or preset; the message lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown NAT {0:?}: use one of none, full-cone, restricted, port-restricted, symmetric, double, double:CARRIER+HOME, upnp, pcp, v6-firewall, cgnat-v6"
)]
pub struct UnknownNat(pub String);

impl FromStr for NatType {
    type Err = UnknownNat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full-cone" | "fullcone" | "full" | "fc" => Ok(NatType::FullCone),
            "restricted" | "restricted-cone" | "rc" => Ok(NatType::RestrictedCone),
            "port-restricted" | "port-restricted-cone" | "prc" | "pr" => {
                Ok(NatType::PortRestrictedCone)
            }
            "symmetric" | "sym" => Ok(NatType::Symmetric),
            _ => Err(UnknownNat(s.to_string())),
        }
    }
}

/// What stands between a site's host and the internet: a preset of the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatPreset {
    /// No NAT: the host is on the internet segment with a public address.
    None,
    /// One home router of the given type.
    Single(NatType),
    /// A home router behind a carrier-grade NAT (the carrier router owns the public address).
    Double {
        /// The carrier's router, facing the internet.
        carrier: NatType,
        /// The customer's router, facing the carrier's network.
        home: NatType,
    },
    /// A port-restricted cone home router that also runs miniupnpd (UPnP IGD, NAT-PMP, PCP), so a host
    /// on its LAN can ask it to open a port. Without a request it behaves exactly like the port-restricted
    /// preset (which is what `classify` and `punch` see).
    Upnp,
    /// A port-restricted cone home router whose miniupnpd answers PCP and NAT-PMP only (UPnP IGD off), as
    /// Apple routers and many ISP boxes do.
    Pcp,
    /// A port-restricted cone for IPv4, and a global IPv6 prefix behind the router's stateful firewall
    /// (established and related traffic only, like home routers): the dual-stack home.
    V6Firewall,
    /// Carrier-grade NAT for IPv4 (a port-restricted home router behind a port-restricted carrier NAT),
    /// and a global IPv6 prefix behind the home router's stateful firewall: the mobile or fibre customer.
    CgnatV6,
}

impl NatPreset {
    /// The double NAT preset of the standard set: RFC 6888 asks carrier NATs for endpoint-independent
    /// mapping, and a port-restricted home router inside is the common case.
    pub const DOUBLE: NatPreset = NatPreset::Double {
        carrier: NatType::PortRestrictedCone,
        home: NatType::PortRestrictedCone,
    };

    /// The presets every lab report covers, in table order.
    pub const STANDARD: [NatPreset; 6] = [
        NatPreset::None,
        NatPreset::Single(NatType::FullCone),
        NatPreset::Single(NatType::RestrictedCone),
        NatPreset::Single(NatType::PortRestrictedCone),
        NatPreset::Single(NatType::Symmetric),
        NatPreset::DOUBLE,
    ];

    /// The presets with IPv6 or a PCP router, in table order (issue 15). Not in `all`, whose table is the
    /// IPv4 one of the classic types; `classify` and `punch` take them by name.
    pub const ROUND_TWO: [NatPreset; 3] =
        [NatPreset::V6Firewall, NatPreset::CgnatV6, NatPreset::Pcp];

    /// What a host behind this preset experiences over IPv4.
    pub fn behaviour(self) -> Behaviour {
        match self {
            NatPreset::None => Behaviour::OPEN,
            NatPreset::Single(t) => t.behaviour(),
            NatPreset::Double { carrier, home } => home.behaviour().behind(carrier.behaviour()),
            NatPreset::CgnatV6 => NatPreset::DOUBLE.behaviour(),
            NatPreset::Upnp | NatPreset::Pcp | NatPreset::V6Firewall => {
                NatType::PortRestrictedCone.behaviour()
            }
        }
    }

    /// What a host behind this preset experiences over IPv6, if the site has IPv6: no translation, and the
    /// home router's stateful firewall lets in only what answers the host's own traffic (address and port
    /// dependent). Public hosts are dual-stack and open.
    pub fn behaviour6(self) -> Option<Behaviour> {
        match self {
            NatPreset::None => Some(Behaviour::OPEN),
            NatPreset::V6Firewall | NatPreset::CgnatV6 => Some(Behaviour {
                mapping: Mapping::None,
                filtering: Filtering::AddressAndPortDependent,
            }),
            _ => None,
        }
    }

    /// Whether the site has IPv6.
    pub fn has_ipv6(self) -> bool {
        self.behaviour6().is_some()
    }

    /// Whether the site's IPv6 sits behind a home router's firewall (public hosts have open IPv6).
    pub fn has_firewalled_ipv6(self) -> bool {
        self.has_ipv6() && self != NatPreset::None
    }

    /// The behaviour over `family`, if the site has that family.
    pub fn behaviour_over(self, family: Family) -> Option<Behaviour> {
        match family {
            Family::Ipv4 => Some(self.behaviour()),
            Family::Ipv6 => self.behaviour6(),
        }
    }

    /// The IPv4 routers from the internet inwards.
    pub fn routers(self) -> Vec<NatType> {
        match self {
            NatPreset::None => Vec::new(),
            NatPreset::Single(t) => vec![t],
            NatPreset::Double { carrier, home } => vec![carrier, home],
            NatPreset::CgnatV6 => vec![NatType::PortRestrictedCone; 2],
            NatPreset::Upnp | NatPreset::Pcp | NatPreset::V6Firewall => {
                vec![NatType::PortRestrictedCone]
            }
        }
    }

    /// The port mapping protocols the home router answers, if it runs miniupnpd.
    pub fn port_mapper(self) -> Option<PortMapper> {
        match self {
            NatPreset::Upnp => Some(PortMapper::All),
            NatPreset::Pcp => Some(PortMapper::PcpOnly),
            _ => None,
        }
    }
}

/// What a router's miniupnpd answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortMapper {
    /// UPnP IGD, NAT-PMP and PCP.
    All,
    /// PCP and NAT-PMP only (`enable_upnp=no`).
    PcpOnly,
}

impl fmt::Display for NatPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatPreset::None => f.write_str("none"),
            NatPreset::Single(t) => f.write_str(t.name()),
            d if *d == NatPreset::DOUBLE => f.write_str("double"),
            NatPreset::Double { carrier, home } => write!(f, "double:{carrier}+{home}"),
            NatPreset::Upnp => f.write_str("upnp"),
            NatPreset::Pcp => f.write_str("pcp"),
            NatPreset::V6Firewall => f.write_str("v6-firewall"),
            NatPreset::CgnatV6 => f.write_str("cgnat-v6"),
        }
    }
}

impl FromStr for NatPreset {
    type Err = UnknownNat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "none" | "public" | "open" => return Ok(NatPreset::None),
            "double" | "double-nat" | "cgnat" => return Ok(NatPreset::DOUBLE),
            "upnp" | "upnp-igd" | "miniupnpd" => return Ok(NatPreset::Upnp),
            "pcp" | "nat-pmp" | "natpmp" => return Ok(NatPreset::Pcp),
            "v6-firewall" | "v6firewall" => return Ok(NatPreset::V6Firewall),
            "cgnat-v6" | "cgnatv6" => return Ok(NatPreset::CgnatV6),
            _ => {}
        }
        if let Some(rest) = lower.strip_prefix("double:") {
            let (carrier, home) = rest
                .split_once('+')
                .ok_or_else(|| UnknownNat(s.to_string()))?;
            let carrier = carrier.parse().map_err(|_| UnknownNat(s.to_string()))?;
            let home = home.parse().map_err(|_| UnknownNat(s.to_string()))?;
            return Ok(NatPreset::Double { carrier, home });
        }
        lower
            .parse()
            .map(NatPreset::Single)
            .map_err(|_| UnknownNat(s.to_string()))
    }
}

impl Serialize for NatPreset {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NatPreset {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a comma-separated list of presets, or `all` for [`NatPreset::STANDARD`].
pub fn parse_preset_list(s: &str) -> Result<Vec<NatPreset>, UnknownNat> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(NatPreset::STANDARD.to_vec());
    }
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// Conntrack and mapping lifetimes of a router, set explicitly so results never depend on kernel defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatTimeouts {
    /// UDP flow that has only seen packets one way, in seconds (Linux default 30).
    pub udp_unreplied_s: u32,
    /// UDP flow that has seen replies, in seconds (Linux default 120; RFC 4787 asks for at least 120).
    pub udp_stream_s: u32,
    /// Established TCP connection, in seconds (RFC 5382 asks for at least 7440).
    pub tcp_established_s: u32,
    /// Cone mapping and permission entries, refreshed by every outbound packet, in seconds.
    pub mapping_s: u32,
}

impl Default for NatTimeouts {
    fn default() -> Self {
        NatTimeouts {
            udp_unreplied_s: 30,
            udp_stream_s: 120,
            tcp_established_s: 7440,
            mapping_s: 300,
        }
    }
}

impl NatTimeouts {
    /// The per-namespace sysctls that apply the conntrack part.
    pub fn sysctls(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "net.netfilter.nf_conntrack_udp_timeout",
                self.udp_unreplied_s.to_string(),
            ),
            (
                "net.netfilter.nf_conntrack_udp_timeout_stream",
                self.udp_stream_s.to_string(),
            ),
            (
                "net.netfilter.nf_conntrack_tcp_timeout_established",
                self.tcp_established_s.to_string(),
            ),
        ]
    }
}

/// The interfaces and public address of one router namespace, as the ruleset needs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterPorts<'a> {
    /// The interface towards the internet (or the carrier's network).
    pub wan_if: &'a str,
    /// The interface (a bridge) towards the LAN.
    pub lan_if: &'a str,
    /// The router's address on `wan_if`: the NAT's external address.
    pub wan_ip: Ipv4Addr,
}

/// The nftables table every router gets; one native table, so `nft list ruleset` shows all of it.
pub const ROUTER_TABLE: &str = "netlab";

/// Generates the complete ruleset of a router of type `nat`, for `nft -f`.
///
/// Only UDP gets cone behaviour (the maps are keyed on UDP ports); TCP through any preset is
/// port-restricted, which is what the hole-punching tests need and what most home routers do.
pub fn router_ruleset(nat: NatType, ports: &RouterPorts<'_>, timeouts: &NatTimeouts) -> String {
    ruleset(nat, ports, timeouts, None)
}

/// [`router_ruleset`], with `input_allow` (an nft rule) accepted from the WAN before the input drop.
fn ruleset(
    nat: NatType,
    ports: &RouterPorts<'_>,
    timeouts: &NatTimeouts,
    input_allow: Option<&str>,
) -> String {
    let RouterPorts {
        wan_if: wan,
        lan_if: lan,
        wan_ip,
    } = ports;
    let t = timeouts.mapping_s;
    let cone = matches!(nat, NatType::FullCone | NatType::RestrictedCone);
    let restricted = nat == NatType::RestrictedCone;
    let mut r = String::new();
    r.push_str(&format!("table ip {ROUTER_TABLE} {{\n"));
    if cone {
        // External port -> internal address and port. Keyed on the internal port: the snat keeps it.
        r.push_str(&format!(
            "  map fcmap {{ type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout {t}s; }}\n"
        ));
    }
    if restricted {
        // (internal port, remote address) pairs the host has sent to: the address-dependent permission.
        r.push_str(&format!(
            "  set rcperm {{ type inet_service . ipv4_addr; flags dynamic,timeout; timeout {t}s; }}\n"
        ));
    }
    // The input drop keeps an early probe from a peer from creating an unreplied conntrack entry that the
    // host's own first packet would then collide with (and get a different port).
    let allow = input_allow
        .map(|rule| format!("    iifname \"{wan}\" {rule}\n"))
        .unwrap_or_default();
    r.push_str(&format!(
        "  chain input {{ type filter hook input priority filter; policy accept;\n    \
         iifname \"{wan}\" ct state established,related accept\n{allow}    \
         iifname \"{wan}\" drop\n  }}\n"
    ));
    r.push_str(&format!(
        "  chain forward {{ type filter hook forward priority filter; policy drop;\n    \
         iifname \"{lan}\" oifname \"{wan}\" accept\n    \
         iifname \"{wan}\" ct state established,related accept\n    \
         iifname \"{wan}\" ct status dnat accept\n  }}\n"
    ));
    if cone {
        // A filter chain sees every packet (a nat chain only the first of a flow), so an active mapping never
        // expires; it runs before the snat, so the source is still the internal one.
        r.push_str(
            "  chain refresh { type filter hook postrouting priority srcnat - 1; policy accept;\n",
        );
        r.push_str(&format!(
            "    oifname \"{wan}\" meta l4proto udp update @fcmap {{ udp sport timeout {t}s : ip saddr . udp sport }}\n"
        ));
        if restricted {
            r.push_str(&format!(
                "    oifname \"{wan}\" meta l4proto udp update @rcperm {{ udp sport . ip daddr timeout {t}s }}\n"
            ));
        }
        r.push_str("  }\n");
    }
    r.push_str("  chain prerouting { type nat hook prerouting priority dstnat; policy accept;\n");
    match nat {
        NatType::FullCone => {
            r.push_str(&format!(
                "    iifname \"{wan}\" meta l4proto udp dnat ip to udp dport map @fcmap\n"
            ));
        }
        NatType::RestrictedCone => {
            // No dnat without a permission: the packet is then addressed to the router and the input drop
            // takes it.
            r.push_str(&format!(
                "    iifname \"{wan}\" meta l4proto udp udp dport . ip saddr @rcperm dnat ip to udp dport map @fcmap\n"
            ));
        }
        NatType::PortRestrictedCone | NatType::Symmetric => {}
    }
    r.push_str("  }\n");
    r.push_str("  chain postrouting { type nat hook postrouting priority srcnat; policy accept;\n");
    match nat {
        NatType::Symmetric => r.push_str(&format!("    oifname \"{wan}\" masquerade random\n")),
        // Linux keeps the source port when it is free, which is what makes this endpoint-independent.
        _ => r.push_str(&format!("    oifname \"{wan}\" snat ip to {wan_ip}\n")),
    }
    r.push_str("  }\n}\n");
    r
}

/// The extra rules of a [`NatPreset::Upnp`] router, appended to its port-restricted ruleset:
///
/// - the router's own `input` accepts the lab's STUN server (both addresses and ports): miniupnpd's
///   start-up test needs all four answers, including those from the address and port it did not send to;
///   nothing else gets through, so the hole-punch race the input drop prevents stays prevented;
/// - the `inet filter` table with the chains miniupnpd's nftables backend adds its rules to (it creates
///   none itself): a dnat chain hooked at `dstnat`, a filter chain in `forward`, and its postrouting chain.
///   Packets it forwards are accepted by the main table's `ct status dnat` rule.
pub fn upnp_ruleset(ports: &RouterPorts<'_>, timeouts: &NatTimeouts, stun: &ServerAddrs) -> String {
    let stun_in = format!(
        "ip saddr {{ {}, {} }} udp sport {{ {}, {} }} accept",
        stun.primary.ip(),
        stun.alternate.ip(),
        stun.primary.port(),
        stun.alternate.port()
    );
    let mut r = ruleset(NatType::PortRestrictedCone, ports, timeouts, Some(&stun_in));
    r.push_str(
        "table inet filter {\n  \
         chain forward { type filter hook forward priority filter; policy accept;\n    jump miniupnpd\n  }\n  \
         chain miniupnpd {\n  }\n  \
         chain prerouting { type nat hook prerouting priority dstnat - 1; policy accept;\n    jump prerouting_miniupnpd\n  }\n  \
         chain prerouting_miniupnpd {\n  }\n  \
         chain postrouting { type nat hook postrouting priority srcnat - 1; policy accept;\n    jump postrouting_miniupnpd\n  }\n  \
         chain postrouting_miniupnpd {\n  }\n}\n",
    );
    r
}

/// The table of a router's IPv6 firewall.
pub const FIREWALL6_TABLE: &str = "netlab6";

/// The stateful IPv6 firewall of a home router whose site has a global IPv6 prefix: an `inet` table whose
/// rules match IPv6 only (the `ip` table beside it does IPv4 and its NAT). From the WAN only established
/// and related traffic gets in, to the LAN and to the router itself, as home routers do (RFC 6092's
/// recommended default). No translation: the LAN's hosts keep their own addresses and ports, so what a
/// host sends to a peer opens exactly that peer's address and port (address-and-port-dependent filtering).
/// A dropped packet never creates a conntrack entry (the entry is confirmed only when a packet leaves), so
/// the IPv4 hole-punch race has no IPv6 counterpart.
pub fn firewall6_ruleset(wan_if: &str, lan_if: &str) -> String {
    let v6 = "meta nfproto ipv6";
    format!(
        "table inet {FIREWALL6_TABLE} {{\n  \
         chain input {{ type filter hook input priority filter; policy accept;\n    \
         {v6} iifname \"{wan_if}\" ct state established,related accept\n    \
         {v6} iifname \"{wan_if}\" drop\n  }}\n  \
         chain forward {{ type filter hook forward priority filter; policy accept;\n    \
         {v6} iifname \"{lan_if}\" oifname \"{wan_if}\" accept\n    \
         {v6} iifname \"{wan_if}\" ct state established,related accept\n    \
         {v6} iifname \"{wan_if}\" drop\n  }}\n}}\n"
    )
}

/// The configuration file of a [`NatPreset::Pcp`] router's miniupnpd: UPnP IGD off (no SSDP, no HTTP), so
/// only PCP and NAT-PMP (port 5351) answer. The command line ([`miniupnpd_args`]) sets the rest.
pub fn miniupnpd_pcp_only_config() -> &'static str {
    "enable_upnp=no\nenable_natpmp=yes\n"
}

/// The miniupnpd command line of a [`NatPreset::Upnp`] router: no config file, foreground, IPv4, the
/// public address learnt from the lab's STUN server (miniupnpd refuses a WAN address in a reserved range
/// otherwise, and the lab only has those), NAT-PMP/PCP on, secure mode (a host maps only to itself).
pub fn miniupnpd_args(
    wan_if: &str,
    lan_if: &str,
    stun: &ServerAddrs,
    pid_file: &str,
    config_file: &str,
) -> Vec<String> {
    [
        "-f",
        config_file,
        "-d",
        "-4",
        "-i",
        wan_if,
        "-a",
        lan_if,
        "-o",
        &format!("STUN:{}:{}", stun.primary.ip(), stun.primary.port()),
        "-N",
        "-S",
        "-U",
        "-P",
        pid_file,
        "-A",
        "allow 1024-65535 0.0.0.0/0 1024-65535",
        "-A",
        "deny 0-65535 0.0.0.0/0 0-65535",
    ]
    .map(String::from)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> RouterPorts<'static> {
        RouterPorts {
            wan_if: "wan",
            lan_if: "lan",
            wan_ip: Ipv4Addr::new(203, 0, 113, 7),
        }
    }

    #[test]
    fn presets_have_the_classic_behaviours() {
        let b = |p: NatPreset| p.behaviour().to_string();
        assert_eq!(b(NatPreset::None), "none/open");
        assert_eq!(b(NatPreset::Single(NatType::FullCone)), "EIM/EIF");
        assert_eq!(b(NatPreset::Single(NatType::RestrictedCone)), "EIM/ADF");
        assert_eq!(
            b(NatPreset::Single(NatType::PortRestrictedCone)),
            "EIM/APDF"
        );
        assert_eq!(b(NatPreset::Single(NatType::Symmetric)), "EDM/APDF");
        assert_eq!(b(NatPreset::DOUBLE), "EIM/APDF");
    }

    #[test]
    fn double_nat_takes_the_stricter_layer() {
        let p = NatPreset::Double {
            carrier: NatType::Symmetric,
            home: NatType::FullCone,
        };
        assert_eq!(p.behaviour().to_string(), "EDM/APDF");
        let p = NatPreset::Double {
            carrier: NatType::FullCone,
            home: NatType::RestrictedCone,
        };
        assert_eq!(p.behaviour().to_string(), "EIM/ADF");
        assert_eq!(
            p.routers(),
            vec![NatType::FullCone, NatType::RestrictedCone]
        );
    }

    #[test]
    fn preset_names_round_trip() {
        for p in NatPreset::STANDARD {
            assert_eq!(p.to_string().parse::<NatPreset>().unwrap(), p);
        }
        let custom = NatPreset::Double {
            carrier: NatType::Symmetric,
            home: NatType::FullCone,
        };
        assert_eq!(custom.to_string(), "double:symmetric+full-cone");
        assert_eq!(custom.to_string().parse::<NatPreset>().unwrap(), custom);
        assert_eq!(
            "Port-Restricted-Cone".parse::<NatPreset>().unwrap(),
            NatPreset::STANDARD[3]
        );
        assert!("tornado".parse::<NatPreset>().is_err());
        assert_eq!("upnp".parse::<NatPreset>().unwrap(), NatPreset::Upnp);
        assert_eq!(NatPreset::Upnp.to_string(), "upnp");
        assert_eq!(NatPreset::Upnp.behaviour().to_string(), "EIM/APDF");
        assert!("double:symmetric".parse::<NatPreset>().is_err());
        assert_eq!(parse_preset_list("all").unwrap().len(), 6);
        assert_eq!(
            parse_preset_list("none,symmetric").unwrap(),
            vec![NatPreset::None, NatPreset::Single(NatType::Symmetric)]
        );
    }

    #[test]
    fn preset_serializes_as_its_name() {
        let json = serde_json::to_string(&NatPreset::DOUBLE).unwrap();
        assert_eq!(json, "\"double\"");
        let back: NatPreset = serde_json::from_str("\"restricted\"").unwrap();
        assert_eq!(back, NatPreset::Single(NatType::RestrictedCone));
    }

    #[test]
    fn every_ruleset_has_the_stateful_filter_with_the_input_drop() {
        for nat in NatType::ALL {
            let r = router_ruleset(nat, &ports(), &NatTimeouts::default());
            assert!(r.starts_with("table ip netlab {"), "{r}");
            assert!(r.contains(
                "iifname \"wan\" ct state established,related accept\n    iifname \"wan\" drop"
            ));
            assert!(r.contains("policy drop;\n    iifname \"lan\" oifname \"wan\" accept"));
            assert!(r.contains("iifname \"wan\" ct status dnat accept"));
            // nft 1.0.6 needs a newline or ';' before a block's closing brace; inline set/map expressions
            // (`{ udp sport ... }`) and one-line declarations ending in "; }" are fine.
            for line in r.lines().map(str::trim) {
                if line.ends_with('}') && line != "}" {
                    assert!(line.ends_with("; }") || line.contains("update @"), "{line}");
                }
            }
        }
    }

    #[test]
    fn port_restricted_is_plain_snat_and_symmetric_is_random_masquerade() {
        let pr = router_ruleset(
            NatType::PortRestrictedCone,
            &ports(),
            &NatTimeouts::default(),
        );
        assert!(pr.contains("oifname \"wan\" snat ip to 203.0.113.7"));
        assert!(!pr.contains("fcmap") && !pr.contains("random"));
        let sym = router_ruleset(NatType::Symmetric, &ports(), &NatTimeouts::default());
        assert!(sym.contains("oifname \"wan\" masquerade random"));
        assert!(!sym.contains("snat ip to"));
    }

    #[test]
    fn cones_use_the_dynamic_map_and_restricted_adds_the_permission_set() {
        let timeouts = NatTimeouts {
            mapping_s: 77,
            ..NatTimeouts::default()
        };
        let fc = router_ruleset(NatType::FullCone, &ports(), &timeouts);
        assert!(fc.contains("map fcmap { type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout 77s; }"));
        assert!(fc.contains("update @fcmap { udp sport timeout 77s : ip saddr . udp sport }"));
        assert!(fc.contains("iifname \"wan\" meta l4proto udp dnat ip to udp dport map @fcmap"));
        assert!(!fc.contains("rcperm"));
        let rc = router_ruleset(NatType::RestrictedCone, &ports(), &timeouts);
        assert!(rc.contains("update @rcperm { udp sport . ip daddr timeout 77s }"));
        assert!(rc.contains("udp dport . ip saddr @rcperm dnat ip to udp dport map @fcmap"));
        // The refresh happens before the snat so it records the internal source.
        let refresh = rc.find("chain refresh").unwrap();
        assert!(
            rc[refresh..]
                .starts_with("chain refresh { type filter hook postrouting priority srcnat - 1;")
        );
    }

    #[test]
    fn upnp_router_lets_only_the_stun_server_in_and_has_miniupnpds_chains() {
        let stun = ServerAddrs {
            primary: "198.51.100.2:3478".parse().unwrap(),
            alternate: "198.51.100.3:3479".parse().unwrap(),
        };
        let r = upnp_ruleset(&ports(), &NatTimeouts::default(), &stun);
        let accept = r
            .find("ip saddr { 198.51.100.2, 198.51.100.3 } udp sport { 3478, 3479 } accept")
            .unwrap();
        assert!(accept < r.find("iifname \"wan\" drop").unwrap());
        for chain in ["miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd"] {
            assert!(r.contains(&format!("chain {chain} {{\n  }}")), "{chain}");
        }
        assert!(r.contains("table inet filter {"));
        assert!(r.contains("oifname \"wan\" snat ip to 203.0.113.7"));
        let args = miniupnpd_args("wan", "lan", &stun, "/run/x.pid", "/dev/null").join(" ");
        assert!(
            args.contains("-i wan -a lan -o STUN:198.51.100.2:3478 -N -S"),
            "{args}"
        );
        assert!(args.starts_with("-f /dev/null -d"));
    }

    #[test]
    fn round_two_presets() {
        for p in NatPreset::ROUND_TWO {
            assert_eq!(p.to_string().parse::<NatPreset>().unwrap(), p);
        }
        assert_eq!(NatPreset::V6Firewall.to_string(), "v6-firewall");
        assert_eq!(NatPreset::CgnatV6.to_string(), "cgnat-v6");
        assert_eq!(NatPreset::Pcp.to_string(), "pcp");
        assert_eq!(NatPreset::V6Firewall.behaviour().to_string(), "EIM/APDF");
        assert_eq!(NatPreset::CgnatV6.behaviour().to_string(), "EIM/APDF");
        assert_eq!(NatPreset::CgnatV6.routers().len(), 2);
        let fw = NatPreset::V6Firewall.behaviour6().unwrap();
        assert_eq!(fw.to_string(), "none/APDF");
        assert_eq!(NatPreset::CgnatV6.behaviour6(), Some(fw));
        assert_eq!(NatPreset::None.behaviour6(), Some(Behaviour::OPEN));
        assert!(!NatPreset::Pcp.has_ipv6() && !NatPreset::DOUBLE.has_ipv6());
        assert_eq!(NatPreset::Pcp.port_mapper(), Some(PortMapper::PcpOnly));
        assert_eq!(NatPreset::Upnp.port_mapper(), Some(PortMapper::All));
        assert_eq!(NatPreset::V6Firewall.port_mapper(), None);
        assert_eq!(parse_preset_list("all").unwrap(), NatPreset::STANDARD);
    }

    #[test]
    fn ipv6_firewall_lets_in_only_answers_and_touches_no_ipv4() {
        let r = firewall6_ruleset("wan", "lan");
        assert!(r.starts_with("table inet netlab6 {"), "{r}");
        assert!(r.contains(
            "meta nfproto ipv6 iifname \"wan\" ct state established,related accept\n    meta nfproto ipv6 iifname \"wan\" drop"
        ));
        assert!(r.contains("meta nfproto ipv6 iifname \"lan\" oifname \"wan\" accept"));
        for line in r.lines().filter(|l| l.contains("iifname")) {
            assert!(line.contains("meta nfproto ipv6"), "{line}");
        }
        assert!(!r.contains("dnat") && !r.contains("snat") && !r.contains("masquerade"));
        assert!(miniupnpd_pcp_only_config().contains("enable_upnp=no"));
    }

    #[test]
    fn timeouts_become_sysctls() {
        let s = NatTimeouts::default().sysctls();
        assert!(s.contains(&("net.netfilter.nf_conntrack_udp_timeout", "30".to_string())));
        assert!(s.contains(&(
            "net.netfilter.nf_conntrack_udp_timeout_stream",
            "120".to_string()
        )));
    }
}
