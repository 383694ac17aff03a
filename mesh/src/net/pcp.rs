//! PCP (RFC 6887) and NAT-PMP (RFC 6886) port mapping, as a sans-IO codec: requests to bytes, bytes to
//! results. Apple routers, many ISP boxes and miniupnpd speak these instead of (or beside) UPnP IGD. Both
//! run over UDP to the default gateway's port 5351; a PCP server that only knows NAT-PMP answers a PCP
//! request with a NAT-PMP "unsupported version", which is how a client tells them apart.
//!
//! No crate was used: the ones on crates.io bring their own socket handling and runtime choices, while the
//! protocol is two fixed-size messages each way. The I/O (one UDP socket, retries) is in `portmap.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The port PCP and NAT-PMP servers listen on.
pub const SERVER_PORT: u16 = 5351;

/// Transport of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// UDP (QUIC).
    Udp,
    /// TCP.
    Tcp,
}

impl Proto {
    fn iana(self) -> u8 {
        match self {
            Proto::Udp => 17,
            Proto::Tcp => 6,
        }
    }

    fn natpmp_opcode(self) -> u8 {
        match self {
            Proto::Udp => 1,
            Proto::Tcp => 2,
        }
    }
}

/// A mapping the router granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// The router's external address, when the answer says it (PCP does; NAT-PMP needs a second request).
    pub external_ip: Option<IpAddr>,
    /// The external port.
    pub external_port: u16,
    /// Seconds the mapping lasts.
    pub lifetime: u32,
}

/// Why a mapping failed, or what the answer was instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcpError {
    /// The bytes are not an answer to our request.
    #[error("not an answer to our request: {0}")]
    Malformed(&'static str),
    /// The server speaks NAT-PMP only (it answered our PCP request with NAT-PMP's "unsupported version").
    #[error("the router speaks NAT-PMP, not PCP")]
    NatPmpOnly,
    /// The server refused, with the protocol's result code and its meaning.
    #[error("the router refused ({code}: {meaning})")]
    Refused {
        /// The result code.
        code: u8,
        /// What the RFC calls it.
        meaning: &'static str,
    },
}

/// PCP's MAP request (RFC 6887 sections 7.1 and 11.1): 24-byte header, 36-byte MAP payload.
pub fn pcp_map_request(
    client: IpAddr,
    proto: Proto,
    internal_port: u16,
    lifetime: u32,
    nonce: [u8; 12],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(60);
    b.extend([2, 1, 0, 0]); // version 2, request, opcode MAP
    b.extend(lifetime.to_be_bytes());
    b.extend(mapped(client).octets());
    b.extend(nonce);
    b.extend([proto.iana(), 0, 0, 0]);
    b.extend(internal_port.to_be_bytes());
    b.extend(internal_port.to_be_bytes()); // suggest keeping the port
    // Suggested external address: "any" of the client's family.
    let any = match client {
        IpAddr::V4(_) => mapped(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED,
    };
    b.extend(any.octets());
    b
}

/// Reads the answer to [`pcp_map_request`] with this `nonce`.
pub fn pcp_map_response(bytes: &[u8], nonce: [u8; 12]) -> Result<Granted, PcpError> {
    if bytes.len() >= 4 && bytes[0] == 0 && bytes[3] == 1 {
        return Err(PcpError::NatPmpOnly);
    }
    if bytes.len() < 60 {
        return Err(PcpError::Malformed("shorter than a PCP MAP response"));
    }
    if bytes[0] != 2 || bytes[1] != 0x81 {
        return Err(PcpError::Malformed("not a PCP MAP response"));
    }
    let code = bytes[3];
    if code != 0 {
        return Err(PcpError::Refused {
            code,
            meaning: pcp_result(code),
        });
    }
    if bytes[24..36] != nonce {
        return Err(PcpError::Malformed("another request's nonce"));
    }
    let lifetime = u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let external_port = u16::from_be_bytes([bytes[42], bytes[43]]);
    let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[44..60]).expect("16 bytes"));
    let external_ip = match ip.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ip),
    };
    Ok(Granted {
        external_ip: Some(external_ip),
        external_port,
        lifetime,
    })
}

/// NAT-PMP's external address request (RFC 6886 section 3.2).
pub fn natpmp_address_request() -> Vec<u8> {
    vec![0, 0]
}

/// Reads the answer to [`natpmp_address_request`].
pub fn natpmp_address_response(bytes: &[u8]) -> Result<Ipv4Addr, PcpError> {
    if bytes.len() < 12 || bytes[0] != 0 || bytes[1] != 128 {
        return Err(PcpError::Malformed("not a NAT-PMP address response"));
    }
    natpmp_code(bytes)?;
    Ok(Ipv4Addr::new(bytes[8], bytes[9], bytes[10], bytes[11]))
}

/// NAT-PMP's mapping request (RFC 6886 section 3.3), suggesting the internal port as the external one.
pub fn natpmp_map_request(proto: Proto, internal_port: u16, lifetime: u32) -> Vec<u8> {
    let mut b = vec![0, proto.natpmp_opcode(), 0, 0];
    b.extend(internal_port.to_be_bytes());
    b.extend(internal_port.to_be_bytes());
    b.extend(lifetime.to_be_bytes());
    b
}

/// Reads the answer to [`natpmp_map_request`] for `proto` and `internal_port`.
pub fn natpmp_map_response(
    bytes: &[u8],
    proto: Proto,
    internal_port: u16,
) -> Result<Granted, PcpError> {
    if bytes.len() < 16 || bytes[0] != 0 || bytes[1] != 128 + proto.natpmp_opcode() {
        return Err(PcpError::Malformed("not a NAT-PMP mapping response"));
    }
    natpmp_code(bytes)?;
    if u16::from_be_bytes([bytes[8], bytes[9]]) != internal_port {
        return Err(PcpError::Malformed("a mapping of another port"));
    }
    Ok(Granted {
        external_ip: None,
        external_port: u16::from_be_bytes([bytes[10], bytes[11]]),
        lifetime: u32::from_be_bytes(bytes[12..16].try_into().expect("4 bytes")),
    })
}

fn natpmp_code(bytes: &[u8]) -> Result<(), PcpError> {
    let code = u16::from_be_bytes([bytes[2], bytes[3]]);
    if code == 0 {
        return Ok(());
    }
    let meaning = match code {
        1 => "unsupported version",
        2 => "not authorized or refused",
        3 => "network failure",
        4 => "out of resources",
        5 => "unsupported opcode",
        _ => "unknown result",
    };
    Err(PcpError::Refused {
        code: code.min(255) as u8,
        meaning,
    })
}

fn pcp_result(code: u8) -> &'static str {
    match code {
        1 => "UNSUPP_VERSION",
        2 => "NOT_AUTHORIZED",
        3 => "MALFORMED_REQUEST",
        4 => "UNSUPP_OPCODE",
        5 => "UNSUPP_OPTION",
        6 => "MALFORMED_OPTION",
        7 => "NETWORK_FAILURE",
        8 => "NO_RESOURCES",
        9 => "UNSUPP_PROTOCOL",
        10 => "USER_EX_QUOTA",
        11 => "CANNOT_PROVIDE_EXTERNAL",
        12 => "ADDRESS_MISMATCH",
        13 => "EXCESSIVE_REMOTE_PEERS",
        _ => "unknown result",
    }
}

/// An address as PCP carries it: IPv4 as IPv4-mapped IPv6.
fn mapped(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The IPv4 default gateway from Linux's routing table (`/proc/net/route`: hex, little-endian), where PCP
/// and NAT-PMP servers live.
pub fn default_gateway_from_proc_route(table: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || f[1] != "00000000" {
            return None;
        }
        let gw = u32::from_str_radix(f[2], 16).ok()?;
        (gw != 0).then(|| Ipv4Addr::from(gw.swap_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: [u8; 12] = [7; 12];

    #[test]
    fn pcp_map_request_layout() {
        let r = pcp_map_request("10.0.3.2".parse().unwrap(), Proto::Udp, 4001, 3600, NONCE);
        assert_eq!(r.len(), 60);
        assert_eq!(&r[..4], &[2, 1, 0, 0]);
        assert_eq!(&r[4..8], &3600u32.to_be_bytes());
        assert_eq!(
            &r[8..24],
            &"::ffff:10.0.3.2".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(&r[24..36], &NONCE);
        assert_eq!(r[36], 17);
        assert_eq!(&r[40..44], &[0x0f, 0xa1, 0x0f, 0xa1]);
        assert_eq!(
            &r[44..60],
            &"::ffff:0.0.0.0".parse::<Ipv6Addr>().unwrap().octets()
        );
    }

    fn pcp_answer(code: u8, nonce: [u8; 12], port: u16, ip: &str) -> Vec<u8> {
        let mut b = vec![2, 0x81, 0, code];
        b.extend(7200u32.to_be_bytes());
        b.extend([0; 16]); // epoch and reserved
        b.extend(nonce);
        b.extend([17, 0, 0, 0]);
        b.extend(4001u16.to_be_bytes());
        b.extend(port.to_be_bytes());
        b.extend(ip.parse::<Ipv6Addr>().unwrap().octets());
        b
    }

    #[test]
    fn pcp_answers() {
        let g =
            pcp_map_response(&pcp_answer(0, NONCE, 40001, "::ffff:203.0.113.5"), NONCE).unwrap();
        assert_eq!(
            g,
            Granted {
                external_ip: Some("203.0.113.5".parse().unwrap()),
                external_port: 40001,
                lifetime: 7200
            }
        );
        assert_eq!(
            pcp_map_response(&pcp_answer(2, NONCE, 0, "::"), NONCE),
            Err(PcpError::Refused {
                code: 2,
                meaning: "NOT_AUTHORIZED"
            })
        );
        assert!(matches!(
            pcp_map_response(&pcp_answer(0, [1; 12], 1, "::"), NONCE),
            Err(PcpError::Malformed(_))
        ));
        assert_eq!(
            pcp_map_response(&[0, 129, 0, 1, 0, 0, 0, 0], NONCE),
            Err(PcpError::NatPmpOnly)
        );
        assert!(pcp_map_response(&[2, 0x81, 0], NONCE).is_err());
        assert!(pcp_map_response(&[0xff; 60], NONCE).is_err());
    }

    #[test]
    fn natpmp_round_trip() {
        assert_eq!(natpmp_address_request(), vec![0, 0]);
        let ok = [0, 128, 0, 0, 0, 0, 0, 9, 203, 0, 113, 5];
        assert_eq!(
            natpmp_address_response(&ok),
            Ok("203.0.113.5".parse().unwrap())
        );
        let req = natpmp_map_request(Proto::Tcp, 4001, 3600);
        assert_eq!(
            req,
            vec![0, 2, 0, 0, 0x0f, 0xa1, 0x0f, 0xa1, 0, 0, 0x0e, 0x10]
        );
        let mut answer = vec![0, 130, 0, 0, 0, 0, 0, 9, 0x0f, 0xa1, 0x9c, 0x41];
        answer.extend(3600u32.to_be_bytes());
        assert_eq!(
            natpmp_map_response(&answer, Proto::Tcp, 4001),
            Ok(Granted {
                external_ip: None,
                external_port: 40001,
                lifetime: 3600
            })
        );
        assert!(natpmp_map_response(&answer, Proto::Udp, 4001).is_err());
        assert!(natpmp_map_response(&answer, Proto::Tcp, 4002).is_err());
        answer[3] = 2;
        assert!(matches!(
            natpmp_map_response(&answer, Proto::Tcp, 4001),
            Err(PcpError::Refused { code: 2, .. })
        ));
        assert!(natpmp_address_response(&[0, 128]).is_err());
    }

    #[test]
    fn default_gateway_from_the_routing_table() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0003000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0103000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(
            default_gateway_from_proc_route(table),
            Some("10.0.3.1".parse().unwrap())
        );
        assert_eq!(default_gateway_from_proc_route("Iface\n"), None);
    }
}
