//! The node's status API, read into the web crate's own types (the one status schema: the node fills
//! them, netlab and the tests read them). Every field of them has a default, so an older or newer node
//! never breaks a run; [`StatusExt`] and [`PeerStatusExt`] are the questions netlab asks of them.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

pub use streamr_web::{MeshStream, NatStatus, PeerStatus, Status, StreamStatus};

use super::http::{self, HttpError};

/// The status API path.
pub const STATUS_PATH: &str = "/api/v1/status";

/// What netlab asks of a [`Status`].
pub trait StatusExt {
    /// True when the node runs the mesh: it reports where it listens.
    fn has_mesh(&self) -> bool;
    /// True when the node reports its NAT (a node without the mesh has nothing to say).
    fn reports_nat(&self) -> bool;
    /// The peer entry for `peer_id`.
    fn peer(&self, peer_id: &str) -> Option<&PeerStatus>;
    /// The stream called `name`.
    fn stream(&self, name: &str) -> Option<&StreamStatus>;
}

impl StatusExt for Status {
    fn has_mesh(&self) -> bool {
        !self.listen_addrs.is_empty()
    }

    fn reports_nat(&self) -> bool {
        !self.nat.reachability.is_empty()
    }

    fn peer(&self, peer_id: &str) -> Option<&PeerStatus> {
        self.peers.iter().find(|p| p.peer_id == peer_id)
    }

    fn stream(&self, name: &str) -> Option<&StreamStatus> {
        self.streams.iter().find(|s| s.name == name)
    }
}

/// What netlab asks of a [`PeerStatus`].
pub trait PeerStatusExt {
    /// True for a direct connection.
    fn is_direct(&self) -> bool;
}

impl PeerStatusExt for PeerStatus {
    fn is_direct(&self) -> bool {
        self.connection == "direct"
    }
}

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The GET failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The answer is not a status.
    #[error("the status is not the JSON netlab expects")]
    Json(#[source] serde_json::Error),
}

/// Fetches and parses the status of the node whose HTTP API is at `addr`.
pub async fn fetch_status(addr: SocketAddr, limit: Duration) -> Result<Status, StatusError> {
    let body = http::get(addr, STATUS_PATH, limit).await?.ok()?;
    serde_json::from_str(&body).map_err(StatusError::Json)
}

/// [`fetch_status`] for synchronous callers (it blocks the thread).
pub fn fetch_status_blocking(addr: SocketAddr, limit: Duration) -> Result<Status, StatusError> {
    let body = http::get_blocking(addr, STATUS_PATH, limit)?.ok()?;
    serde_json::from_str(&body).map_err(StatusError::Json)
}

/// The listen address another node should bootstrap from: one on `ip` (QUIC first, then TCP), or with
/// no `ip` the first QUIC/TCP address that is not loopback. Only addresses that name the peer qualify.
pub fn pick_bootstrap_addr(addrs: &[String], ip: Option<Ipv4Addr>) -> Option<String> {
    let with_peer: Vec<&String> = addrs.iter().filter(|a| a.contains("/p2p/")).collect();
    let on_ip = |a: &&String| match ip {
        Some(ip) => a.starts_with(&format!("/ip4/{ip}/")),
        None => a.starts_with("/ip4/") && !a.starts_with("/ip4/127."),
    };
    let quic = |a: &&String| a.contains("/quic-v1/");
    let tcp = |a: &&String| a.contains("/tcp/");
    with_peer
        .iter()
        .find(|a| on_ip(a) && quic(a))
        .or_else(|| with_peer.iter().find(|a| on_ip(a) && tcp(a)))
        .map(|a| (*a).clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn status_of_a_node_without_the_mesh_and_of_one_with_it_both_parse() {
        let today = r#"{"peer_id":"A","version":"0.1.0","streams":[{"name":"probe","live":true,"players":1,"frames":9}]}"#;
        let s: Status = serde_json::from_str(today).unwrap();
        assert!(!s.has_mesh());
        assert!(!s.reports_nat());
        assert_eq!(s.stream("probe").unwrap().frames, 9);
        assert!(s.peers.is_empty());
        let mesh = r#"{"peer_id":"B","listen_addrs":["/ip4/127.0.0.1/udp/4001/quic-v1/p2p/B"],
            "peers":[{"peer_id":"A","connection":"direct","rtt_ms":50.5,"addr":"/ip4/1.2.3.4/udp/1/quic-v1","direct_after_ms":1200,"future":1}],
            "streams":[{"name":"probe","origin":"A","upstream":"A","hops":1,"subscribers":0}],
            "nat":{"reachability":"private","external_addrs":[],"hint":"behind NAT","hole_punch_attempts":2,
                   "hole_punch_successes":1,"hole_punch_failures":{"timeout":1},"upgrades":1,"upnp":"no-gateway"}}"#;
        let s: Status = serde_json::from_str(mesh).unwrap();
        assert!(s.has_mesh());
        assert!(s.reports_nat());
        assert!(s.peer("A").unwrap().is_direct());
        assert_eq!(s.peer("A").unwrap().direct_after_ms, Some(1200));
        assert_eq!(s.stream("probe").unwrap().hops, Some(1));
        assert_eq!(s.nat.reachability, "private");
        assert_eq!(s.nat.hole_punch_failures["timeout"], 1);
    }

    #[test]
    fn what_the_node_writes_reads_back_the_same() {
        let s = Status {
            peer_id: "P".into(),
            publish_key: Some("k".into()),
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/1/p2p/P".into()],
            peers: vec![PeerStatus {
                peer_id: "Q".into(),
                connection: "relayed".into(),
                rtt_ms: Some(1.5),
                ..PeerStatus::default()
            }],
            mesh_streams: vec![MeshStream {
                name: "a".into(),
                min_hops: 2,
                ..MeshStream::default()
            }],
            ..Status::default()
        };
        let back: Status = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn picks_a_reachable_bootstrap_address() {
        let addrs: Vec<String> = [
            "/ip4/127.0.0.1/udp/4001/quic-v1/p2p/P",
            "/ip4/127.0.0.1/tcp/4001/p2p/P",
            "/ip4/10.0.1.2/tcp/4001/p2p/P",
            "/ip4/10.0.1.2/udp/4001/quic-v1/p2p/P",
            "/ip4/198.51.100.2/udp/4001/quic-v1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let lo = Some(Ipv4Addr::LOCALHOST);
        assert_eq!(
            pick_bootstrap_addr(&addrs, lo).as_deref(),
            Some("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/P")
        );
        assert_eq!(
            pick_bootstrap_addr(&addrs, Some(Ipv4Addr::new(10, 0, 1, 2))).as_deref(),
            Some("/ip4/10.0.1.2/udp/4001/quic-v1/p2p/P")
        );
        assert_eq!(
            pick_bootstrap_addr(&addrs, None).as_deref(),
            Some("/ip4/10.0.1.2/udp/4001/quic-v1/p2p/P")
        );
        // Without /p2p/ the address cannot be dialled as a bootstrap peer.
        assert_eq!(
            pick_bootstrap_addr(&addrs, Some(Ipv4Addr::new(198, 51, 100, 2))),
            None
        );
        assert_eq!(
            pick_bootstrap_addr(&addrs[1..2], lo).as_deref(),
            Some("/ip4/127.0.0.1/tcp/4001/p2p/P")
        );
    }

    #[tokio::test]
    async fn fetch_status_reads_a_status_and_refuses_errors() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"peer_id\":\"X\"}",
                "HTTP/1.0 404 Not Found\r\n\r\nno",
                "HTTP/1.0 200 OK\r\n\r\n[1,2]",
            ] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let st = fetch_status(addr, Duration::from_secs(2)).await.unwrap();
        assert_eq!(st.peer_id, "X");
        let e = fetch_status(addr, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("HTTP 404"), "{e}");
        let e = fetch_status(addr, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(e, StatusError::Json(_)), "{e}");
    }
}
