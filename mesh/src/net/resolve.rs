//! Host names in the addresses a user or a coordinator gives (`/dns4/boot.example.org/udp/4001/quic-v1/...`),
//! resolved with the system's resolver (`getaddrinfo`: `/etc/hosts`, the network's DNS servers, whatever
//! the system is set up to use) just before each dial, so a bootstrap host whose address changes (dynamic
//! DNS) is found again on the next redial.
//!
//! Not libp2p's DNS transport: it brings its own resolver (hickory), which made up about 650 KB of the
//! node's 13 MB binary (issue 13's size goal), for the few addresses a node dials by name. Peers never give
//! names (the address book refuses them from remote peers), so only the node's own configuration needs
//! this. `/dnsaddr` (a TXT lookup, IPFS's bootstrap style) is refused with a message saying what to give.

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use std::net::IpAddr;

/// Why a name in an address gave no address to dial.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// `/dnsaddr` is not supported.
    #[error(
        "{0}: /dnsaddr addresses are not supported; give /dns4/HOST/... (or /dns6, /dns) with the port and transport, or an IP address"
    )]
    DnsAddr(Multiaddr),
    /// A name with no port after it.
    #[error("{0}: a host name must be followed by /tcp/PORT or /udp/PORT")]
    NoPort(Multiaddr),
    /// The system's resolver failed.
    #[error(
        "cannot resolve the host name in {addr}: {source}; check the name and this computer's network"
    )]
    Lookup {
        /// The address.
        addr: Multiaddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The name has no address of the family asked for.
    #[error("{0}: the host name has no address of the kind asked for (dns4: IPv4, dns6: IPv6)")]
    NoAddress(Multiaddr),
}

/// True when `addr` holds a host name to resolve before it can be dialed.
pub fn has_name(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| {
        matches!(
            p,
            Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_)
        )
    })
}

/// Which addresses a name's component accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Any,
    V4,
    V6,
}

/// The addresses `addr` names: its first host-name component replaced by each address the system's
/// resolver gives (of the family `/dns4` or `/dns6` asks for), the rest kept. An address without a name
/// comes back as it is.
pub async fn resolve(addr: &Multiaddr) -> Result<Vec<Multiaddr>, ResolveError> {
    let Some((index, host, wanted)) = name_of(addr)? else {
        return Ok(vec![addr.clone()]);
    };
    let port = addr
        .iter()
        .skip(index + 1)
        .find_map(|p| match p {
            Protocol::Tcp(p) | Protocol::Udp(p) => Some(p),
            _ => None,
        })
        .ok_or_else(|| ResolveError::NoPort(addr.clone()))?;
    let found = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|source| ResolveError::Lookup {
            addr: addr.clone(),
            source,
        })?;
    let ips: Vec<IpAddr> = found.map(|s| s.ip()).collect();
    let out = substitute(addr, index, wanted, &ips);
    if out.is_empty() {
        return Err(ResolveError::NoAddress(addr.clone()));
    }
    Ok(out)
}

/// The first host-name component of `addr`: its index, the name and the family it asks for.
fn name_of(addr: &Multiaddr) -> Result<Option<(usize, String, Wanted)>, ResolveError> {
    for (i, p) in addr.iter().enumerate() {
        match p {
            Protocol::Dns(h) => return Ok(Some((i, h.to_string(), Wanted::Any))),
            Protocol::Dns4(h) => return Ok(Some((i, h.to_string(), Wanted::V4))),
            Protocol::Dns6(h) => return Ok(Some((i, h.to_string(), Wanted::V6))),
            Protocol::Dnsaddr(_) => return Err(ResolveError::DnsAddr(addr.clone())),
            _ => {}
        }
    }
    Ok(None)
}

/// `addr` with component `index` replaced by each of `ips` the family allows, without repeats (the
/// resolver gives one entry per socket type).
fn substitute(addr: &Multiaddr, index: usize, wanted: Wanted, ips: &[IpAddr]) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    for ip in ips {
        let component = match (ip, wanted) {
            (IpAddr::V4(v4), Wanted::Any | Wanted::V4) => Protocol::Ip4(*v4),
            (IpAddr::V6(v6), Wanted::Any | Wanted::V6) => Protocol::Ip6(*v6),
            _ => continue,
        };
        let a: Multiaddr = addr
            .iter()
            .enumerate()
            .map(|(i, p)| if i == index { component.clone() } else { p })
            .collect();
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Multiaddr {
        s.parse().expect("a multiaddr")
    }

    const PEER: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

    #[tokio::test]
    async fn a_name_becomes_the_addresses_of_its_family() {
        // `localhost` is in /etc/hosts on every system this runs on (and getaddrinfo knows it anyway).
        let got = resolve(&a(&format!("/dns4/localhost/udp/4001/quic-v1/p2p/{PEER}")))
            .await
            .expect("localhost resolves");
        assert_eq!(
            got,
            vec![a(&format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{PEER}"))]
        );
        let any = resolve(&a("/dns/localhost/tcp/4001"))
            .await
            .expect("localhost resolves");
        assert!(any.contains(&a("/ip4/127.0.0.1/tcp/4001")), "{any:?}");
        assert!(any.iter().all(|x| !has_name(x)), "{any:?}");
    }

    #[tokio::test]
    async fn an_address_without_a_name_is_left_alone() {
        let plain = a(&format!("/ip4/198.51.100.7/udp/4001/quic-v1/p2p/{PEER}"));
        assert!(!has_name(&plain));
        assert_eq!(resolve(&plain).await.expect("nothing to do"), vec![plain]);
    }

    #[tokio::test]
    async fn what_cannot_be_resolved_says_why() {
        let e = resolve(&a("/dnsaddr/bootstrap.libp2p.io"))
            .await
            .unwrap_err();
        assert!(matches!(e, ResolveError::DnsAddr(_)) && e.to_string().contains("/dns4/HOST"));
        let e = resolve(&a("/dns4/localhost")).await.unwrap_err();
        assert!(matches!(e, ResolveError::NoPort(_)), "{e}");
        // (A name that does not resolve is not tried here: the lookup would leave this machine.)
    }

    #[test]
    fn the_family_asked_for_is_kept() {
        let ips: Vec<IpAddr> = vec![
            "198.51.100.1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        ];
        let addr = a("/dns6/x.example/udp/1/quic-v1");
        assert_eq!(
            substitute(&addr, 0, Wanted::V6, &ips),
            vec![a("/ip6/2001:db8::1/udp/1/quic-v1")]
        );
        assert_eq!(
            substitute(&addr, 0, Wanted::V4, &ips),
            vec![a("/ip4/198.51.100.1/udp/1/quic-v1")]
        );
        assert_eq!(substitute(&addr, 0, Wanted::Any, &ips).len(), 2);
    }
}
