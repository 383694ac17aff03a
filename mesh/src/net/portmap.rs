//! Asks the home router to open our mesh port (PCP or NAT-PMP, see [`super::pcp`], else UPnP IGD through
//! `igd-next`), and offers what it opened to the swarm.
//!
//! This replaces `libp2p-upnp`, which drops a gateway whose external address is not globally routable
//! and never tries again after a failed search. A router behind carrier-grade NAT (100.64.0.0/10) does
//! have a useless external address, but that is for a peer to find out, not for a list of ranges: a
//! mapping on a routable address is confirmed at once, any other mapping becomes an address *candidate*
//! that AutoNAT v2 dials back, and only a successful dial-back confirms it. That is also what lets the
//! lab (netlab's `upnp` router preset, miniupnpd on a documentation-range address) exercise the real
//! code path.
//!
//! One background task owns the gateway: it first asks the default gateway by PCP (falling back to NAT-PMP
//! when the router answers that it speaks only that), which takes milliseconds and fails at once where
//! nothing listens on port 5351; otherwise it searches for a UPnP IGD (again every [`RESEARCH_EVERY`]
//! while there is none). It maps every LAN listen address the swarm reports for TCP and QUIC with a lease
//! of [`LEASE_S`] seconds, renews at half the lease, and reports each outcome to [`Behaviour`]. PCP and
//! NAT-PMP mappings follow the same rule as UPnP's: confirmed at once only on a global address, else a
//! candidate that a peer's dial-back must confirm.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::task::{Context, Poll};
use std::time::Duration;

use igd_next::{PortMappingProtocol, SearchOptions};
use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr, multiaddr::Protocol};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::pcp;

/// Lease of a mapping on the router, in seconds; renewed at half of it.
pub const LEASE_S: u32 = 3600;
/// How often to look for a router again when none answered.
pub const RESEARCH_EVERY: Duration = Duration::from_secs(300);
/// Description of our mappings in the router's table.
const DESCRIPTION: &str = "streamr-node";

/// What the port mapper tells the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The router forwards `addr` to us. `routable`: the router's external address is a global one, so
    /// the address was confirmed at once; otherwise it waits for a dial-back.
    Mapped {
        /// Our address on the router's external side.
        addr: Multiaddr,
        /// The external address is globally routable.
        routable: bool,
        /// The protocol that mapped it: "PCP", "NAT-PMP" or "UPnP".
        via: &'static str,
    },
    /// No UPnP router answered on the LAN.
    NoGateway(String),
    /// The router answered but refused or failed the mapping.
    Failed(String),
}

/// Transport of one mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// QUIC v1 over UDP.
    Quic,
    /// TCP.
    Tcp,
}

impl Transport {
    fn igd(self) -> PortMappingProtocol {
        match self {
            Transport::Quic => PortMappingProtocol::UDP,
            Transport::Tcp => PortMappingProtocol::TCP,
        }
    }

    /// The multiaddr of `ip:port` on this transport.
    pub fn multiaddr(self, ip: IpAddr, port: u16) -> Multiaddr {
        let base = Multiaddr::empty().with(ip.into());
        match self {
            Transport::Quic => base.with(Protocol::Udp(port)).with(Protocol::QuicV1),
            Transport::Tcp => base.with(Protocol::Tcp(port)),
        }
    }
}

/// A listen address worth mapping: IPv4 on a private LAN, TCP or QUIC v1, nothing after that.
pub fn mappable(addr: &Multiaddr) -> Option<(Transport, SocketAddrV4)> {
    let mut it = addr.iter();
    let Some(Protocol::Ip4(ip)) = it.next() else {
        return None;
    };
    if !ip.is_private() {
        return None;
    }
    let found = match (it.next(), it.next()) {
        (Some(Protocol::Tcp(port)), None) => (Transport::Tcp, port),
        (Some(Protocol::Udp(port)), Some(Protocol::QuicV1)) => (Transport::Quic, port),
        _ => return None,
    };
    if it.next().is_some() || found.1 == 0 {
        return None;
    }
    Some((found.0, SocketAddrV4::new(ip, found.1)))
}

/// Whether an external address can be reached from the whole internet (RFC 6890 special ranges out).
pub fn is_global(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0
        || ip.is_private()
        || (a == 100 && (b & 0xc0) == 64)
        || ip.is_loopback()
        || ip.is_link_local()
        || (a == 192 && b == 0 && c == 0)
        || ip.is_documentation()
        || (a == 198 && (b & 0xfe) == 18)
        || a >= 224)
}

/// The behaviour: feeds listen addresses to the task and its results to the swarm.
#[derive(Debug)]
pub struct Behaviour {
    wants: mpsc::UnboundedSender<(Transport, SocketAddrV4)>,
    results: mpsc::UnboundedReceiver<Event>,
    /// What has been announced to the swarm, so a renewal does not announce again.
    announced: BTreeMap<Transport, Multiaddr>,
    pending: VecDeque<ToSwarm<Event, Infallible>>,
}

impl Behaviour {
    /// Starts the task on the current tokio runtime.
    pub fn new() -> Self {
        let (wants, wants_rx) = mpsc::unbounded_channel();
        let (results_tx, results) = mpsc::unbounded_channel();
        tokio::spawn(run(wants_rx, results_tx));
        Behaviour {
            wants,
            results,
            announced: BTreeMap::new(),
            pending: VecDeque::new(),
        }
    }

    fn on_result(&mut self, event: Event) {
        if let Event::Mapped { addr, routable, .. } = &event {
            let transport = if addr.iter().any(|p| matches!(p, Protocol::Tcp(_))) {
                Transport::Tcp
            } else {
                Transport::Quic
            };
            if self.announced.get(&transport) == Some(addr) {
                return;
            }
            if let Some(old) = self.announced.insert(transport, addr.clone()) {
                self.pending.push_back(ToSwarm::ExternalAddrExpired(old));
            }
            self.pending.push_back(if *routable {
                ToSwarm::ExternalAddrConfirmed(addr.clone())
            } else {
                ToSwarm::NewExternalAddrCandidate(addr.clone())
            });
        }
        self.pending.push_back(ToSwarm::GenerateEvent(event));
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Self::new()
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::NewListenAddr(e) = event
            && let Some(want) = mappable(e.addr)
        {
            let _ = self.wants.send(want);
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        while let Poll::Ready(Some(event)) = self.results.poll_recv(cx) {
            self.on_result(event);
        }
        match self.pending.pop_front() {
            Some(e) => Poll::Ready(e),
            None => Poll::Pending,
        }
    }
}

/// The task that talks to the router.
async fn run(
    mut wants_rx: mpsc::UnboundedReceiver<(Transport, SocketAddrV4)>,
    results: mpsc::UnboundedSender<Event>,
) {
    // One local address per transport: the first LAN address the swarm reported.
    let mut wants: BTreeMap<Transport, SocketAddrV4> = BTreeMap::new();
    let options = || SearchOptions {
        timeout: Some(Duration::from_secs(5)),
        ..SearchOptions::default()
    };
    loop {
        // PCP/NAT-PMP need our LAN address: wait for the swarm's first one.
        while wants.is_empty() {
            match wants_rx.recv().await {
                Some((t, a)) => {
                    wants.insert(t, a);
                }
                None => return,
            }
        }
        while let Ok((t, a)) = wants_rx.try_recv() {
            wants.entry(t).or_insert(a);
        }
        match map_by_pcp(&wants).await {
            Ok(events) => {
                for e in events {
                    if results.send(e).is_err() {
                        return;
                    }
                }
                if !wait(
                    &mut wants_rx,
                    &mut wants,
                    Duration::from_secs(u64::from(LEASE_S / 2)),
                )
                .await
                {
                    return;
                }
                continue;
            }
            Err(e) => debug!(error = %e, "no PCP or NAT-PMP mapping; trying UPnP IGD"),
        }
        let gateway = match igd_next::aio::tokio::search_gateway(options()).await {
            Ok(g) => g,
            Err(e) => {
                debug!(error = %e, "no UPnP router answered");
                if results.send(Event::NoGateway(e.to_string())).is_err() {
                    return;
                }
                if !wait(&mut wants_rx, &mut wants, RESEARCH_EVERY).await {
                    return;
                }
                continue;
            }
        };
        info!(router = %gateway.addr, "found a UPnP router");
        loop {
            while let Ok((t, a)) = wants_rx.try_recv() {
                wants.entry(t).or_insert(a);
            }
            let ext = match gateway.get_external_ip().await {
                Ok(IpAddr::V4(ip)) => ip,
                Ok(other) => {
                    let _ = results.send(Event::Failed(format!(
                        "the router reports a non-IPv4 external address {other}"
                    )));
                    break;
                }
                Err(e) => {
                    let _ = results.send(Event::Failed(format!(
                        "the router did not tell its external address: {e}"
                    )));
                    break;
                }
            };
            for (&transport, &local) in &wants {
                let proto = transport.igd();
                let mapped = match gateway
                    .add_port(proto, local.port(), local.into(), LEASE_S, DESCRIPTION)
                    .await
                {
                    Ok(()) => Ok(local.port()),
                    // Someone else holds our port on the router: take any free one.
                    Err(e) => {
                        debug!(error = %e, port = local.port(), "same-port mapping refused");
                        gateway
                            .add_any_port(proto, local.into(), LEASE_S, DESCRIPTION)
                            .await
                            .map_err(|e| e.to_string())
                    }
                };
                let event = match mapped {
                    Ok(port) => Event::Mapped {
                        addr: transport.multiaddr(IpAddr::V4(ext), port),
                        routable: is_global(ext),
                        via: "UPnP",
                    },
                    Err(e) => {
                        Event::Failed(format!("the router refused to open {proto} {local}: {e}"))
                    }
                };
                if results.send(event).is_err() {
                    return;
                }
            }
            if !wait(
                &mut wants_rx,
                &mut wants,
                Duration::from_secs(u64::from(LEASE_S / 2)),
            )
            .await
            {
                return;
            }
        }
        if !wait(&mut wants_rx, &mut wants, RESEARCH_EVERY).await {
            return;
        }
    }
}

/// Maps every wanted transport at the default gateway by PCP, or by NAT-PMP when the router speaks only
/// that. An error says why neither worked (nothing listens, no answer, refused).
async fn map_by_pcp(wants: &BTreeMap<Transport, SocketAddrV4>) -> Result<Vec<Event>, String> {
    let Some(local) = wants.values().next().copied() else {
        return Err("no LAN address to map".into());
    };
    let gateway = std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|t| pcp::default_gateway_from_proc_route(&t))
        .unwrap_or_else(|| {
            // Elsewhere: the usual home router address, .1 of our /24.
            let o = local.ip().octets();
            Ipv4Addr::new(o[0], o[1], o[2], 1)
        });
    let sock = tokio::net::UdpSocket::bind(SocketAddrV4::new(*local.ip(), 0))
        .await
        .map_err(|e| e.to_string())?;
    sock.connect(SocketAddrV4::new(gateway, pcp::SERVER_PORT))
        .await
        .map_err(|e| e.to_string())?;
    let mut events = Vec::new();
    let mut natpmp = false;
    let mut natpmp_ext: Option<Ipv4Addr> = None;
    for (&transport, &local) in wants {
        let proto = match transport {
            Transport::Quic => pcp::Proto::Udp,
            Transport::Tcp => pcp::Proto::Tcp,
        };
        let granted = if !natpmp {
            let nonce: [u8; 12] = rand::random();
            let req =
                pcp::pcp_map_request(IpAddr::V4(*local.ip()), proto, local.port(), LEASE_S, nonce);
            match ask(&sock, &req, |b| pcp::pcp_map_response(b, nonce)).await? {
                Err(pcp::PcpError::NatPmpOnly) => {
                    natpmp = true;
                    None
                }
                Err(e) => return Err(format!("PCP at {gateway}: {e}")),
                Ok(g) => Some((g, "PCP")),
            }
        } else {
            None
        };
        let (granted, via) = match granted {
            Some(g) => g,
            None => {
                if natpmp_ext.is_none() {
                    let ext = ask(
                        &sock,
                        &pcp::natpmp_address_request(),
                        pcp::natpmp_address_response,
                    )
                    .await?
                    .map_err(|e| format!("NAT-PMP at {gateway}: {e}"))?;
                    natpmp_ext = Some(ext);
                }
                let req = pcp::natpmp_map_request(proto, local.port(), LEASE_S);
                let g = ask(&sock, &req, |b| {
                    pcp::natpmp_map_response(b, proto, local.port())
                })
                .await?
                .map_err(|e| format!("NAT-PMP at {gateway}: {e}"))?;
                (g, "NAT-PMP")
            }
        };
        let ip = granted
            .external_ip
            .or(natpmp_ext.map(IpAddr::V4))
            .ok_or("the router did not tell its external address")?;
        let routable = match ip {
            IpAddr::V4(v4) => is_global(v4),
            IpAddr::V6(_) => false,
        };
        info!(%ip, port = granted.external_port, via, "the router mapped a port");
        events.push(Event::Mapped {
            addr: transport.multiaddr(ip, granted.external_port),
            routable,
            via,
        });
    }
    Ok(events)
}

/// Sends `request` and waits for an answer `read` accepts (retries at 250, 500 and 1000 ms, as RFC 6886
/// suggests for a start). Err: nothing answered (or the gateway's port is closed); Ok(Err): the answer.
async fn ask<T>(
    sock: &tokio::net::UdpSocket,
    request: &[u8],
    read: impl Fn(&[u8]) -> Result<T, pcp::PcpError>,
) -> Result<Result<T, pcp::PcpError>, String> {
    let mut buf = [0u8; 1100];
    for wait_ms in [250u64, 500, 1000] {
        sock.send(request).await.map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(format!("no PCP/NAT-PMP server: {e}")),
                Ok(Ok(n)) => match read(&buf[..n]) {
                    Err(pcp::PcpError::Malformed(_)) => continue,
                    other => return Ok(other),
                },
            }
        }
    }
    Err("no answer on port 5351".into())
}

/// Waits `delay`, or less when the swarm reports an address not mapped yet. False once the swarm is gone.
async fn wait(
    wants_rx: &mut mpsc::UnboundedReceiver<(Transport, SocketAddrV4)>,
    wants: &mut BTreeMap<Transport, SocketAddrV4>,
    delay: Duration,
) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return true,
            want = wants_rx.recv() => match want {
                None => return false,
                Some((t, a)) => {
                    if let std::collections::btree_map::Entry::Vacant(e) = wants.entry(t) {
                        e.insert(a);
                        return true;
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_ipv4_tcp_and_quic_listen_addresses_are_mapped() {
        let m = |s: &str| mappable(&s.parse().unwrap());
        assert_eq!(
            m("/ip4/192.168.1.5/udp/4001/quic-v1"),
            Some((Transport::Quic, "192.168.1.5:4001".parse().unwrap()))
        );
        assert_eq!(
            m("/ip4/10.0.0.2/tcp/4001"),
            Some((Transport::Tcp, "10.0.0.2:4001".parse().unwrap()))
        );
        assert_eq!(m("/ip4/127.0.0.1/tcp/4001"), None);
        assert_eq!(m("/ip4/203.0.113.4/tcp/4001"), None);
        assert_eq!(m("/ip6/::1/tcp/4001"), None);
        assert_eq!(m("/ip4/192.168.1.5/udp/4001"), None);
        assert_eq!(m("/ip4/192.168.1.5/tcp/4001/ws"), None);
        assert_eq!(m("/ip4/192.168.1.5/tcp/0"), None);
    }

    #[test]
    fn special_ranges_are_not_global() {
        for ip in [
            "100.64.1.1",
            "10.1.1.1",
            "192.168.0.1",
            "203.0.113.5",
            "198.51.100.1",
            "127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(!is_global(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.4.4", "100.128.0.1", "203.0.114.1"] {
            assert!(is_global(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn multiaddrs_per_transport() {
        let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
        assert_eq!(
            Transport::Quic.multiaddr(ip, 4001).to_string(),
            "/ip4/203.0.113.9/udp/4001/quic-v1"
        );
        assert_eq!(
            Transport::Tcp.multiaddr(ip, 4001).to_string(),
            "/ip4/203.0.113.9/tcp/4001"
        );
    }

    #[tokio::test]
    async fn a_renewal_is_not_announced_twice_and_a_new_port_expires_the_old() {
        let mut b = Behaviour::new();
        let a1: Multiaddr = "/ip4/203.0.113.9/udp/4001/quic-v1".parse().unwrap();
        let a2: Multiaddr = "/ip4/203.0.113.9/udp/4002/quic-v1".parse().unwrap();
        let mapped = |addr: &Multiaddr| Event::Mapped {
            addr: addr.clone(),
            routable: false,
            via: "PCP",
        };
        b.on_result(mapped(&a1));
        assert!(
            matches!(b.pending.pop_front(), Some(ToSwarm::NewExternalAddrCandidate(a)) if a == a1)
        );
        assert!(matches!(
            b.pending.pop_front(),
            Some(ToSwarm::GenerateEvent(_))
        ));
        b.on_result(mapped(&a1));
        assert!(b.pending.is_empty());
        b.on_result(Event::Mapped {
            addr: a2.clone(),
            routable: true,
            via: "UPnP",
        });
        assert!(matches!(b.pending.pop_front(), Some(ToSwarm::ExternalAddrExpired(a)) if a == a1));
        assert!(
            matches!(b.pending.pop_front(), Some(ToSwarm::ExternalAddrConfirmed(a)) if a == a2)
        );
    }
}
