//! The swarm's event loop: the only code that touches the `Swarm`. Commands come in on a channel; a snapshot
//! of peers and addresses goes out through a shared lock that readers never hold for long.

use super::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL, RelayLimits};
use super::is_relayed;
use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, identity::Keypair, kad, noise, ping, tcp, yamux};
use parking_lot::RwLock;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Settings of the libp2p side.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The node key.
    pub key: Keypair,
    /// UDP (QUIC) and TCP port; 0 picks a free one (the same number for both when possible).
    pub port: u16,
    /// Peers to connect to at start.
    pub bootstrap: Vec<Multiaddr>,
    /// Limits of the relay service this node offers.
    pub relay: RelayLimits,
}

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Transport setup failed.
    #[error("cannot set up the mesh transports: {0}")]
    Transport(String),
    /// Listening failed.
    #[error(
        "cannot listen for the mesh on port {port}: {reason}. Another program (or another streamr-node) may \
         use it: choose another with --p2p-port"
    )]
    Listen {
        /// Port asked for.
        port: u16,
        /// What went wrong.
        reason: String,
    },
}

/// A request to the event loop.
#[derive(Debug)]
pub enum NetCommand {
    /// Connect to an address.
    Dial(Multiaddr),
    /// Remember addresses of a peer (from a catalog entry or a redirect).
    AddAddresses(PeerId, Vec<Multiaddr>),
    /// Announce in the DHT that we provide this key.
    StartProviding(kad::RecordKey),
    /// Stop announcing.
    StopProviding(kad::RecordKey),
    /// Ask the DHT who provides this key.
    GetProviders(kad::RecordKey, oneshot::Sender<Vec<PeerId>>),
}

/// One connection to a peer.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// libp2p's id of the connection.
    pub id: ConnectionId,
    /// The remote address.
    pub remote: Multiaddr,
    /// Through a relay.
    pub relayed: bool,
    /// We dialed it.
    pub dialer: bool,
    /// When it was established.
    pub established: Instant,
}

/// What we know of a connected peer.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// Open connections.
    pub connections: Vec<ConnInfo>,
    /// Last ping round trip.
    pub rtt: Option<Duration>,
    /// The peer's agent string.
    pub agent: Option<String>,
    /// Addresses the peer listens on (from identify).
    pub listen_addrs: Vec<Multiaddr>,
}

impl PeerInfo {
    /// Has at least one direct (not relayed) connection.
    pub fn is_direct(&self) -> bool {
        self.connections.iter().any(|c| !c.relayed)
    }
}

/// Peers and addresses, as last seen by the event loop.
#[derive(Debug, Clone, Default)]
pub struct NetSnapshot {
    /// Addresses we listen on, with `/p2p/<us>`.
    pub listen_addrs: Vec<Multiaddr>,
    /// Confirmed external addresses.
    pub external_addrs: Vec<Multiaddr>,
    /// Connected peers.
    pub peers: BTreeMap<PeerId, PeerInfo>,
}

/// Counters of the libp2p side.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Connections established.
    pub connections_established: AtomicU64,
    /// Connections closed.
    pub connections_closed: AtomicU64,
    /// Outgoing connection attempts that failed.
    pub dial_failures: AtomicU64,
}

/// A cloneable handle to the event loop.
#[derive(Clone)]
pub struct NetHandle {
    /// This node's id.
    pub peer_id: PeerId,
    tx: mpsc::Sender<NetCommand>,
    snapshot: Arc<RwLock<NetSnapshot>>,
    control: libp2p_stream::Control,
    stats: Arc<NetStats>,
}

impl std::fmt::Debug for NetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetHandle")
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

impl NetHandle {
    /// Sends a command (waits if the loop is busy; drops it if the loop is gone).
    pub async fn send(&self, cmd: NetCommand) {
        let _ = self.tx.send(cmd).await;
    }

    /// The DHT's providers of `key` (empty on failure or timeout).
    pub async fn providers(&self, key: kad::RecordKey) -> Vec<PeerId> {
        let (tx, rx) = oneshot::channel();
        self.send(NetCommand::GetProviders(key, tx)).await;
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// A copy of the current snapshot.
    pub fn snapshot(&self) -> NetSnapshot {
        self.snapshot.read().clone()
    }

    /// Reads the snapshot without copying it.
    pub fn with_snapshot<R>(&self, f: impl FnOnce(&NetSnapshot) -> R) -> R {
        f(&self.snapshot.read())
    }

    /// A stream control for opening and accepting our protocols.
    pub fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Counters.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }
}

/// Builds the swarm, listens (QUIC first, TCP on the same port), dials the bootstrap peers and starts the
/// event loop. Returns once listening.
pub async fn start(
    cfg: NetConfig,
    cancel: CancellationToken,
) -> Result<(NetHandle, tokio::task::JoinHandle<()>), NetError> {
    let relay_cfg = cfg.relay.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(cfg.key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_quic()
        .with_dns()
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_behaviour(|key, relay_client| Behaviour::new(key, relay_client, &relay_cfg))
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let peer_id = *swarm.local_peer_id();
    let snapshot = Arc::new(RwLock::new(NetSnapshot::default()));

    // QUIC first: its port is then reused for TCP, so one number is all a user has to know.
    let quic: Multiaddr = format!("/ip4/0.0.0.0/udp/{}/quic-v1", cfg.port)
        .parse()
        .expect("valid");
    let listen_err = |reason: String| NetError::Listen {
        port: cfg.port,
        reason,
    };
    swarm
        .listen_on(quic)
        .map_err(|e| listen_err(e.to_string()))?;
    let quic_port = wait_listen(&mut swarm, &snapshot, peer_id, true)
        .await
        .map_err(listen_err)?;
    let tcp: Multiaddr = format!("/ip4/0.0.0.0/tcp/{quic_port}")
        .parse()
        .expect("valid");
    let tcp_ok = match swarm.listen_on(tcp) {
        Ok(_) => wait_listen(&mut swarm, &snapshot, peer_id, false)
            .await
            .is_ok(),
        Err(_) => false,
    };
    if !tcp_ok {
        if cfg.port != 0 {
            return Err(listen_err(format!("TCP port {quic_port} is not free")));
        }
        let tcp: Multiaddr = "/ip4/0.0.0.0/tcp/0".parse().expect("valid");
        swarm
            .listen_on(tcp)
            .map_err(|e| listen_err(e.to_string()))?;
        wait_listen(&mut swarm, &snapshot, peer_id, false)
            .await
            .map_err(listen_err)?;
    }

    for addr in &cfg.bootstrap {
        if let Some(Protocol::P2p(p)) = addr.iter().last() {
            swarm.behaviour_mut().kad.add_address(&p, strip_p2p(addr));
        }
        if let Err(e) = swarm.dial(addr.clone()) {
            warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }

    let (tx, rx) = mpsc::channel(256);
    let control = swarm.behaviour().stream.new_control();
    let stats = Arc::new(NetStats::default());
    let handle = NetHandle {
        peer_id,
        tx,
        snapshot: snapshot.clone(),
        control,
        stats: stats.clone(),
    };
    let mut lp = EventLoop {
        swarm,
        rx,
        snapshot,
        stats,
        pending_providers: HashMap::new(),
        bootstrap: cfg.bootstrap,
        last_kad_bootstrap: None,
    };
    let task = tokio::spawn(async move { lp.run(cancel).await });
    Ok((handle, task))
}

fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

fn with_p2p(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.clone()
    } else {
        addr.clone().with(Protocol::P2p(peer))
    }
}

/// Polls the swarm until a listener of the wanted kind reports an address; returns its port.
async fn wait_listen(
    swarm: &mut Swarm<Behaviour>,
    snapshot: &RwLock<NetSnapshot>,
    me: PeerId,
    quic: bool,
) -> Result<u16, String> {
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return Err("timed out waiting for the listener".into()),
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::NewListenAddr { address, .. } => {
                    snapshot.write().listen_addrs.push(with_p2p(&address, me));
                    if super::is_quic(&address) == quic {
                        let port = address.iter().find_map(|p| match p {
                            Protocol::Udp(p) | Protocol::Tcp(p) => Some(p),
                            _ => None,
                        });
                        if let Some(port) = port {
                            return Ok(port);
                        }
                    }
                }
                SwarmEvent::ListenerError { error, .. } => return Err(error.to_string()),
                SwarmEvent::ListenerClosed { reason: Err(e), .. } => return Err(e.to_string()),
                _ => {}
            }
        }
    }
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    rx: mpsc::Receiver<NetCommand>,
    snapshot: Arc<RwLock<NetSnapshot>>,
    stats: Arc<NetStats>,
    pending_providers: HashMap<kad::QueryId, (Vec<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
    bootstrap: Vec<Multiaddr>,
    last_kad_bootstrap: Option<Instant>,
}

impl EventLoop {
    async fn run(&mut self, cancel: CancellationToken) {
        let mut maintenance = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(cmd) = self.rx.recv() => self.command(cmd),
                ev = self.swarm.select_next_some() => self.event(ev),
                _ = maintenance.tick() => self.maintain(),
            }
        }
        debug!("mesh event loop stopped");
    }

    /// Keeps the DHT's routing table fresh and reconnects to bootstrap peers that went away.
    fn maintain(&mut self) {
        let _ = self.swarm.behaviour_mut().kad.bootstrap();
        for addr in self.bootstrap.clone() {
            let connected = match addr.iter().last() {
                Some(Protocol::P2p(p)) => self.swarm.is_connected(&p),
                _ => false,
            };
            if !connected {
                let _ = self.swarm.dial(addr);
            }
        }
    }

    fn command(&mut self, cmd: NetCommand) {
        match cmd {
            NetCommand::Dial(addr) => {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    debug!(%addr, error = %e, "dial failed");
                }
            }
            NetCommand::AddAddresses(peer, addrs) => {
                for a in addrs {
                    self.swarm.add_peer_address(peer, strip_p2p(&a));
                }
            }
            NetCommand::StartProviding(key) => {
                if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
                    debug!(error = ?e, "cannot provide");
                }
            }
            NetCommand::StopProviding(key) => self.swarm.behaviour_mut().kad.stop_providing(&key),
            NetCommand::GetProviders(key, reply) => {
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                self.pending_providers.insert(id, (Vec::new(), reply));
            }
        }
    }

    fn event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        let me = *self.swarm.local_peer_id();
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                let a = with_p2p(&address, me);
                let mut s = self.snapshot.write();
                if !s.listen_addrs.contains(&a) {
                    s.listen_addrs.push(a);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let a = with_p2p(&address, me);
                self.snapshot.write().listen_addrs.retain(|x| *x != a);
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                info!(%address, "external address confirmed");
                let a = with_p2p(&address, me);
                let mut s = self.snapshot.write();
                if !s.external_addrs.contains(&a) {
                    s.external_addrs.push(a);
                }
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                let a = with_p2p(&address, me);
                self.snapshot.write().external_addrs.retain(|x| *x != a);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.stats.connections_established.fetch_add(1, Relaxed);
                let (remote, dialer) = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => (address.clone(), true),
                    ConnectedPoint::Listener { send_back_addr, .. } => {
                        (send_back_addr.clone(), false)
                    }
                };
                let relayed = is_relayed(&remote);
                debug!(%peer_id, %remote, relayed, "connected");
                self.snapshot
                    .write()
                    .peers
                    .entry(peer_id)
                    .or_default()
                    .connections
                    .push(ConnInfo {
                        id: connection_id,
                        remote,
                        relayed,
                        dialer,
                        established: Instant::now(),
                    });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                self.stats.connections_closed.fetch_add(1, Relaxed);
                let mut s = self.snapshot.write();
                if let Some(p) = s.peers.get_mut(&peer_id) {
                    p.connections.retain(|c| c.id != connection_id);
                    if p.connections.is_empty() {
                        s.peers.remove(&peer_id);
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                self.stats.dial_failures.fetch_add(1, Relaxed);
                debug!(peer = ?peer_id, error = %error, "outgoing connection failed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let kad = info.protocols.contains(&KAD_PROTOCOL);
                if kad {
                    for a in &info.listen_addrs {
                        if !is_relayed(a) {
                            self.swarm
                                .behaviour_mut()
                                .kad
                                .add_address(&peer_id, a.clone());
                        }
                    }
                    // Fill the routing table soon after joining, not only on the periodic tick.
                    if self
                        .last_kad_bootstrap
                        .is_none_or(|t| t.elapsed() > Duration::from_secs(20))
                    {
                        self.last_kad_bootstrap = Some(Instant::now());
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
                let mut s = self.snapshot.write();
                if let Some(p) = s.peers.get_mut(&peer_id) {
                    p.agent = Some(info.agent_version);
                    p.listen_addrs = info.listen_addrs;
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) => {
                if let Some(p) = self.snapshot.write().peers.get_mut(&peer) {
                    p.rtt = Some(rtt);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(r),
                step,
                ..
            })) => {
                if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = r
                    && let Some((found, _)) = self.pending_providers.get_mut(&id)
                {
                    found.extend(providers);
                }
                if step.last
                    && let Some((found, reply)) = self.pending_providers.remove(&id)
                {
                    let _ = reply.send(found);
                } else if let Some((found, _)) = self.pending_providers.get(&id)
                    && !found.is_empty()
                {
                    // Enough to start with: answer now, let the query finish in the background.
                    if let Some((found, reply)) = self.pending_providers.remove(&id) {
                        let _ = reply.send(found);
                    }
                }
            }
            _ => {}
        }
    }
}
