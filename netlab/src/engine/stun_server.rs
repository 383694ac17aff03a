//! The lab's STUN server: where it listens and the command the lab starts it with. UPnP routers learn
//! their public address from it (miniupnpd's `-o STUN:...`) and `classify` measures every preset against
//! it; the server itself (the protocol) is the probe [`crate::probe::stun`], which the lab runs as an agent.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The server's two addresses and two ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerAddrs {
    /// The primary address (IP1, port1).
    pub primary: SocketAddr,
    /// The alternate address (IP2, port2).
    pub alternate: SocketAddr,
}

impl ServerAddrs {
    /// The four sockets: (ip1,p1), (ip1,p2), (ip2,p1), (ip2,p2).
    pub fn all(&self) -> [SocketAddr; 4] {
        let (i1, i2) = (self.primary.ip(), self.alternate.ip());
        let (p1, p2) = (self.primary.port(), self.alternate.port());
        [
            SocketAddr::new(i1, p1),
            SocketAddr::new(i1, p2),
            SocketAddr::new(i2, p1),
            SocketAddr::new(i2, p2),
        ]
    }
}

/// Arguments of the server agent (`netlab agent stun-server ...`).
pub fn server_args(addrs: &ServerAddrs) -> Vec<String> {
    [
        "agent",
        "stun-server",
        "--primary",
        &addrs.primary.to_string(),
        "--alternate",
        &addrs.alternate.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_sockets_and_the_agent_command() {
        let addrs = ServerAddrs {
            primary: "198.51.100.10:3478".parse().unwrap(),
            alternate: "198.51.100.11:3479".parse().unwrap(),
        };
        assert_eq!(
            addrs.all().map(|a| a.to_string()),
            [
                "198.51.100.10:3478",
                "198.51.100.10:3479",
                "198.51.100.11:3478",
                "198.51.100.11:3479"
            ]
        );
        assert_eq!(
            server_args(&addrs).join(" "),
            "agent stun-server --primary 198.51.100.10:3478 --alternate 198.51.100.11:3479"
        );
    }
}
