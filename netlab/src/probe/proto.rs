//! The probes' wire format: one JSON object per UDP datagram. Text is slower than a binary STUN header but
//! the probes send a handful of packets, and `tcpdump -A` in a lab namespace shows what happened.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Which side of a punch a peer plays; the rendezvous introduces an `A` to a `B` of the same session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The first peer.
    A,
    /// The second peer (the late one in a staggered start).
    B,
}

impl Role {
    /// The other role.
    pub fn other(self) -> Role {
        match self {
            Role::A => Role::B,
            Role::B => Role::A,
        }
    }
}

/// Every message of the probes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Message {
    /// Client to STUN-like server: "what is my address?", optionally answered from the other address
    /// and/or port of the server (the filtering tests).
    BindingRequest {
        /// Matches the response to the request.
        id: u64,
        /// Answer from the server's other IP address.
        change_ip: bool,
        /// Answer from the server's other port.
        change_port: bool,
    },
    /// Server to client.
    BindingResponse {
        /// The request's id.
        id: u64,
        /// The source address the server saw: the client's reflexive (mapped) address.
        observed: SocketAddr,
        /// The server address this response is sent from.
        responder: SocketAddr,
    },
    /// Peer to rendezvous: "I am `role` of `session`" (sent from the socket that will punch).
    Register {
        /// Pairs the two peers.
        session: String,
        /// Which peer.
        role: Role,
    },
    /// Rendezvous to peer: the other peer's address as the rendezvous saw it.
    Introduce {
        /// The session.
        session: String,
        /// The other peer's observed address.
        peer: SocketAddr,
        /// This peer's own observed address.
        observed: SocketAddr,
    },
    /// Peer to peer: a hole-punching probe.
    Probe {
        /// The session (a stray packet from another session is ignored).
        session: String,
        /// Sequence number.
        seq: u32,
    },
    /// Peer to peer: answer to a probe, sent to the address the probe came from.
    ProbeAck {
        /// The session.
        session: String,
        /// The probe's sequence number.
        seq: u32,
        /// Where the probe came from, as this side saw it.
        observed: SocketAddr,
    },
    /// Echo client to echo server and back.
    Echo {
        /// Sequence number.
        seq: u32,
    },
}

impl Message {
    /// The datagram for this message.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("messages always serialize")
    }

    /// Parses a datagram; anything that is not a message is `None` and gets ignored.
    pub fn decode(datagram: &[u8]) -> Option<Message> {
        serde_json::from_slice(datagram).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = Message::Introduce {
            session: "s1".into(),
            peer: "203.0.113.5:4000".parse().unwrap(),
            observed: "203.0.113.6:4001".parse().unwrap(),
        };
        assert_eq!(Message::decode(&m.encode()), Some(m));
        assert_eq!(Message::decode(b"garbage"), None);
        let text = String::from_utf8(
            Message::Probe {
                session: "x".into(),
                seq: 3,
            }
            .encode(),
        )
        .unwrap();
        assert_eq!(text, r#"{"t":"probe","session":"x","seq":3}"#);
        assert_eq!(Role::A.other(), Role::B);
    }
}
