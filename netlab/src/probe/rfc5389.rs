//! Just enough of STUN (RFC 5389, with RFC 5780's CHANGE-REQUEST) for a real router daemon to learn its
//! public address from the lab: miniupnpd (`ext_perform_stun`) refuses to open ports while its WAN
//! address is in a reserved range, which every lab address is (documentation ranges), unless a STUN
//! server confirms that nothing between it and the internet translates or filters. Its test sends four
//! binding requests (no change, change port, change address, both) and needs all four answers, each from
//! the server socket the request asked for; [`super::stun::serve`] answers them from the right socket.
//!
//! The lab's own probes keep their JSON messages; this is a second dialect of the same server.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

/// The RFC 5389 magic cookie.
const MAGIC: u32 = 0x2112_A442;
/// Binding request and success response message types.
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
/// Attribute types.
const MAPPED_ADDRESS: u16 = 0x0001;
const CHANGE_REQUEST: u16 = 0x0003;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const RESPONSE_ORIGIN: u16 = 0x802b;
const OTHER_ADDRESS: u16 = 0x802c;

/// A parsed binding request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingRequest {
    /// The 96-bit transaction id, echoed in the response.
    pub transaction: [u8; 12],
    /// CHANGE-REQUEST "change IP" flag.
    pub change_ip: bool,
    /// CHANGE-REQUEST "change port" flag.
    pub change_port: bool,
}

/// Parses a datagram as a STUN binding request; anything else (including the lab's JSON) is `None`.
pub fn decode_request(d: &[u8]) -> Option<BindingRequest> {
    if d.len() < 20 || u16::from_be_bytes([d[0], d[1]]) != BINDING_REQUEST {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([d[2], d[3]]));
    if u32::from_be_bytes([d[4], d[5], d[6], d[7]]) != MAGIC || len % 4 != 0 || 20 + len > d.len() {
        return None;
    }
    let mut transaction = [0u8; 12];
    transaction.copy_from_slice(&d[8..20]);
    let (mut change_ip, mut change_port) = (false, false);
    let mut rest = &d[20..20 + len];
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let alen = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let padded = alen.div_ceil(4) * 4;
        if 4 + padded > rest.len() {
            return None;
        }
        if kind == CHANGE_REQUEST && alen == 4 {
            change_ip = rest[7] & 0x4 != 0;
            change_port = rest[7] & 0x2 != 0;
        }
        rest = &rest[4 + padded..];
    }
    Some(BindingRequest {
        transaction,
        change_ip,
        change_port,
    })
}

/// The success response to `req`: the client's reflexive address (plain and XORed), the socket the
/// answer comes from and the server's other address, as RFC 5780 servers report them.
pub fn encode_response(
    req: &BindingRequest,
    observed: SocketAddrV4,
    origin: SocketAddrV4,
    other: SocketAddrV4,
) -> Vec<u8> {
    let mut attrs = Vec::with_capacity(48);
    let mut attr = |kind: u16, addr: SocketAddrV4, xor: bool| {
        let (mut port, mut ip) = (addr.port(), u32::from(*addr.ip()));
        if xor {
            port ^= (MAGIC >> 16) as u16;
            ip ^= MAGIC;
        }
        attrs.extend_from_slice(&kind.to_be_bytes());
        attrs.extend_from_slice(&8u16.to_be_bytes());
        attrs.extend_from_slice(&[0, 0x01]);
        attrs.extend_from_slice(&port.to_be_bytes());
        attrs.extend_from_slice(&ip.to_be_bytes());
    };
    attr(MAPPED_ADDRESS, observed, false);
    attr(XOR_MAPPED_ADDRESS, observed, true);
    attr(RESPONSE_ORIGIN, origin, false);
    attr(OTHER_ADDRESS, other, false);
    let mut out = Vec::with_capacity(20 + attrs.len());
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&req.transaction);
    out.extend_from_slice(&attrs);
    out
}

/// Reads the XOR-MAPPED-ADDRESS of a success response (what a STUN client does); for tests and tools.
pub fn decode_xor_mapped(d: &[u8]) -> Option<SocketAddr> {
    if d.len() < 20 || u16::from_be_bytes([d[0], d[1]]) != BINDING_SUCCESS {
        return None;
    }
    let mut rest = d.get(20..)?;
    while rest.len() >= 12 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let alen = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if kind == XOR_MAPPED_ADDRESS && alen == 8 && rest[5] == 0x01 {
            let port = u16::from_be_bytes([rest[6], rest[7]]) ^ (MAGIC >> 16) as u16;
            let ip = u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]) ^ MAGIC;
            return Some(SocketAddr::new(IpAddr::V4(ip.into()), port));
        }
        rest = rest.get(4 + alen.div_ceil(4) * 4..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request miniupnpd's `perform_stun` sends: one CHANGE-REQUEST attribute.
    fn miniupnpd_request(change_ip: bool, change_port: bool) -> Vec<u8> {
        let mut r = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42];
        r.extend_from_slice(&[7u8; 12]);
        r.extend_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0]);
        r.push(if change_ip { 4 } else { 0 } | if change_port { 2 } else { 0 });
        r
    }

    #[test]
    fn change_flags_are_read() {
        for (ip, port) in [(false, false), (false, true), (true, false), (true, true)] {
            let req = decode_request(&miniupnpd_request(ip, port)).unwrap();
            assert_eq!((req.change_ip, req.change_port), (ip, port));
            assert_eq!(req.transaction, [7u8; 12]);
        }
    }

    #[test]
    fn anything_else_is_not_a_request() {
        assert_eq!(decode_request(br#"{"t":"echo","seq":1}"#), None);
        let mut bad_cookie = miniupnpd_request(false, false);
        bad_cookie[4] = 0;
        assert_eq!(decode_request(&bad_cookie), None);
        let mut too_long = miniupnpd_request(false, false);
        too_long[3] = 0x40;
        assert_eq!(decode_request(&too_long), None);
        let mut truncated_attr = miniupnpd_request(false, false);
        truncated_attr[23] = 0x20;
        assert_eq!(decode_request(&truncated_attr), None);
        assert_eq!(decode_request(&[0u8; 5]), None);
    }

    #[test]
    fn response_carries_the_reflexive_address_both_ways() {
        let req = decode_request(&miniupnpd_request(true, false)).unwrap();
        let observed: SocketAddrV4 = "203.0.113.9:40000".parse().unwrap();
        let resp = encode_response(
            &req,
            observed,
            "198.51.100.3:3479".parse().unwrap(),
            "198.51.100.2:3478".parse().unwrap(),
        );
        assert_eq!(&resp[0..2], &[0x01, 0x01]);
        assert_eq!(
            usize::from(u16::from_be_bytes([resp[2], resp[3]])) + 20,
            resp.len()
        );
        assert_eq!(&resp[8..20], &[7u8; 12]);
        assert_eq!(decode_xor_mapped(&resp), Some(SocketAddr::V4(observed)));
        // MAPPED-ADDRESS comes first, unXORed: what miniupnpd's parser accepts.
        assert_eq!(&resp[20..24], &[0x00, 0x01, 0x00, 0x08]);
        assert_eq!(&resp[26..28], &40000u16.to_be_bytes());
        assert_eq!(&resp[28..32], &[203, 0, 113, 9]);
    }
}
