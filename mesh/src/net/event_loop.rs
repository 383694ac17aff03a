//! The swarm's event loop: the only code that touches the `Swarm`. Commands come in on a channel; a snapshot
//! of peers and addresses goes out through a shared lock that readers never hold for long.

use super::addrbook::{AddressBook, Source, is_local};
use super::behaviour::{Behaviour, BehaviourEvent, MeshMembers, RelayLimits};
use super::keep_alive;
use super::nat::{NatState, Reachability, Reservation, Upnp};
use super::resolve;
use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, identity::Keypair, kad, noise, relay, tcp, yamux,
};
use parking_lot::RwLock;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod behaviours;
mod connections;
pub(super) mod dualstack;
mod predict;
mod relays;

/// The DHT's routing table is refreshed by a walk at least this often.
const KAD_REFRESH_EVERY: Duration = Duration::from_secs(300);
/// How long a QUIC connection may hear nothing before it counts as dead: libp2p's default. quinn
/// restarts it when it sends a keep-alive, so a vanished peer is noticed 10-15 s after it went. Media does
/// not wait for it (a stalled upstream is left after a second, `session::upstream`); what it bounds is how
/// long a vanished relay or neighbour stays on our books (a reservation moves in about 15 s, and a node
/// behind NAT holds two). It was 4 s until issue 13 (a reservation moved in 5.5 s), and the keep-alives
/// that made that safe were most of an idle node's packets.
const QUIC_IDLE: Duration = Duration::from_secs(10);
/// A QUIC handshake that has not completed by then fails: a hole punch that did not open, a dead
/// address. Kept at the 4 s it had as the idle timeout's share, so punches and dials fail as fast as
/// before (quinn takes the shorter of this and [`QUIC_IDLE`]).
const QUIC_HANDSHAKE: Duration = Duration::from_secs(4);
/// A quiet QUIC connection sends a keep-alive once it has heard nothing for this node's interval, drawn
/// once per node between these two (see [`quic_keep_alive`]); both leave two chances within [`QUIC_IDLE`].
const QUIC_KEEP_ALIVE_MIN: Duration = Duration::from_millis(4000);
/// ...
const QUIC_KEEP_ALIVE_MAX: Duration = Duration::from_millis(4800);

/// This node's QUIC keep-alive interval, drawn from [`QUIC_KEEP_ALIVE_MIN`]..=[`QUIC_KEEP_ALIVE_MAX`].
///
/// Not one fixed value, because with one value keep-alives synchronise: quinn restarts the keep-alive
/// timer on every packet it receives, and a round where both sides sent a PING ends with their two ACKs
/// crossing, so both timers restart together and fire together again, for the life of the connection.
/// Measured on an idle mesh (strace of one node): every connection exchanged four packets every 2.03 s,
/// a PING each way within 0.5 ms and an ACK each way 26 ms later, where two do (one PING, one ACK). The
/// synchronisation of periodic messages (Floyd and Jacobson, 1993), cured as they advise, with jitter:
/// when two nodes' intervals differ by more than the path's one-way delay, the shorter one fires first,
/// its PING restarts the other side's timer, and the other side only answers.
pub(super) fn quic_keep_alive(rng: &mut impl rand::Rng) -> Duration {
    Duration::from_millis(rng.random_range(
        QUIC_KEEP_ALIVE_MIN.as_millis() as u64..=QUIC_KEEP_ALIVE_MAX.as_millis() as u64,
    ))
}

/// How often NAT upkeep (reservations, relayed connections giving way to direct ones, port predictions,
/// the neighbours kept open) runs while anything moves: a connection, an address, a relay, a punch.
const NAT_TICK_BUSY: Duration = Duration::from_millis(500);
/// How often it runs once nothing has moved for [`NAT_QUIET_AFTER`]: an idle node's upkeep finds
/// nothing to do, and at 0.5 s it was two of a lone node's nine wake-ups a second.
const NAT_TICK_QUIET: Duration = Duration::from_secs(5);
/// ...
const NAT_QUIET_AFTER: Duration = Duration::from_secs(10);

/// The wait before the next NAT upkeep: short while anything moved lately or an attempt is in flight.
fn nat_tick_period(quiet_for: Duration, in_flight: bool) -> Duration {
    if in_flight || quiet_for < NAT_QUIET_AFTER {
        NAT_TICK_BUSY
    } else {
        NAT_TICK_QUIET
    }
}

/// Whether a swarm event is news for NAT upkeep: everything but a ping's round trip (every
/// `PING_EVERY` on every connection, also on an idle node).
fn stirs_nat(ev: &SwarmEvent<BehaviourEvent>) -> bool {
    !matches!(ev, SwarmEvent::Behaviour(BehaviourEvent::Ping(_)))
}

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
    /// Ask the home router to open our port (PCP, NAT-PMP or UPnP IGD).
    pub upnp: bool,
    /// How to get through NATs beyond the defaults: relay candidates, port prediction.
    pub traversal: Traversal,
}

/// NAT traversal options of the libp2p side.
#[derive(Debug, Clone)]
pub struct Traversal {
    /// Try port prediction when a hole punch to a peer behind a symmetric NAT failed.
    pub port_prediction: bool,
    /// Public nodes to use as relays besides bootstrap peers (a coordinator's list), with `/p2p/<id>`.
    pub relay_candidates: Vec<Multiaddr>,
    /// The node's friends: preferred relays when they offer one.
    pub friends: crate::Friends,
}

impl Default for Traversal {
    fn default() -> Self {
        Traversal {
            port_prediction: true,
            relay_candidates: Vec::new(),
            friends: crate::Friends::default(),
        }
    }
}

/// The protocol a relay server offers.
const HOP_PROTOCOL: StreamProtocol = StreamProtocol::new("/libp2p/circuit/relay/0.2.0/hop");
/// A relayed connection to a peer we also reach directly is closed after this, so media moves to the
/// direct path (libp2p-stream may open streams on either connection).
const RELAYED_CLOSE_GRACE: Duration = Duration::from_millis(500);
/// Relays tried at once for a peer whose address we do not know (see `EventLoop::circuits_to`).
const MAX_GUESSED_CIRCUITS: usize = 3;

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
    /// Remember addresses of `peer` that `via` gave us: the peer's own signed record (a catalog entry,
    /// `signed`), or a hint (a redirect, a fallback) that nobody signed.
    AddAddresses {
        /// Whose addresses.
        peer: PeerId,
        /// The addresses.
        addrs: Vec<Multiaddr>,
        /// The peer that told us.
        via: PeerId,
        /// They come from `peer`'s own signed record.
        signed: bool,
    },
    /// Announce in the DHT that we provide this key.
    StartProviding(kad::RecordKey),
    /// Stop announcing.
    StopProviding(kad::RecordKey),
    /// Ask the DHT who provides this key.
    GetProviders(kad::RecordKey, oneshot::Sender<Vec<PeerId>>),
    /// Be connected to a peer (dialing its known addresses and these); answers when connected or failed.
    Connect(PeerId, Vec<Multiaddr>, oneshot::Sender<Result<(), String>>),
    /// More public nodes to use as relays (a coordinator's list), addresses with `/p2p/<id>`.
    RelayCandidates(Vec<Multiaddr>),
    /// Port prediction's guesses of a peer's QUIC address, dialed all at once (sent by the mesh itself).
    PredictDial(PeerId, Vec<Multiaddr>),
    /// The addresses a host name in `original` resolved to, to dial now (sent by the mesh itself).
    Resolved {
        /// The address as configured, with its name.
        original: Multiaddr,
        /// What the name resolved to.
        addrs: Vec<Multiaddr>,
    },
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
    /// The peer offers a relay service.
    pub supports_hop: bool,
    /// Time from the first relayed connection to the first direct one, if we upgraded.
    pub direct_after: Option<Duration>,
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
    /// NAT traversal state.
    pub nat: NatSnapshot,
}

/// NAT traversal, for status pages.
#[derive(Debug, Clone, Default)]
pub struct NatSnapshot {
    /// "public", "private" or "unknown".
    pub reachability: &'static str,
    /// The same over IPv4 alone.
    pub reachability_v4: &'static str,
    /// The same over IPv6 alone.
    pub reachability_v6: &'static str,
    /// Confirmed external addresses that are not relayed.
    pub public_addrs: Vec<Multiaddr>,
    /// Relays we hold (accepted) reservations on.
    pub relays: Vec<PeerId>,
    /// UPnP: "searching", "mapped", "no-gateway", "not-routable", "off".
    pub upnp: String,
    /// What the user should know.
    pub hint: String,
    /// Hole punches tried.
    pub punch_attempts: u64,
    /// Hole punches that succeeded.
    pub punch_successes: u64,
    /// Failed hole punches by reason.
    pub punch_failures: BTreeMap<String, u64>,
    /// Relayed-to-direct upgrades measured.
    pub upgrades: usize,
    /// Port prediction attempts this node started.
    pub prediction_attempts: u64,
    /// Those that gave a direct connection.
    pub prediction_successes: u64,
    /// Median and longest time from relayed to direct, ms.
    pub time_to_direct_ms: Option<(u64, u64)>,
    /// We serve as a relay (HOP advertised).
    pub relay_service: bool,
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
    /// Relay service: reservations accepted for NATed peers.
    pub relay_reservations_accepted: AtomicU64,
    /// Relay service: reservations denied (limits).
    pub relay_reservations_denied: AtomicU64,
    /// Relay service: circuits opened for others.
    pub relay_circuits_accepted: AtomicU64,
    /// Relay service: circuits denied (limits).
    pub relay_circuits_denied: AtomicU64,
    /// Relay service: circuits closed (ended or hit the byte/time limit).
    pub relay_circuits_closed: AtomicU64,
    /// Relayed connections closed because a direct one to the same peer exists.
    pub relayed_connections_replaced: AtomicU64,
    /// Addresses a peer gave us that we will not dial (local ones from a peer not on our network, hints
    /// beyond a peer's share).
    pub addresses_refused: AtomicU64,
    /// Connections refused by the connection or memory limits.
    pub connections_denied: AtomicU64,
    /// Relay service: reservations refused because the peer is not a node of this mesh.
    pub relay_outsiders_refused: AtomicU64,
    /// Relay service: circuits open now (each is counted in the upload this node spends).
    pub relay_circuits_active: AtomicU64,
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
    member_joined: Arc<tokio::sync::Notify>,
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

    /// Connects to `peer` (known addresses plus `addrs`) unless connected; errors say why not.
    pub async fn connect(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        limit: Duration,
    ) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.send(NetCommand::Connect(peer, addrs, tx)).await;
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the mesh is shutting down".into()),
            Err(_) => Err(format!("no connection within {limit:?}")),
        }
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

    /// Notified when a connected peer identifies as a node of this mesh for the first time since it
    /// connected (one waiter; a notification nobody waits for is kept for the next).
    pub fn member_joined(&self) -> Arc<tokio::sync::Notify> {
        self.member_joined.clone()
    }

    /// Adds public nodes (addresses with `/p2p/<id>`, e.g. from a coordinator) as relay candidates.
    pub async fn add_relay_candidates(&self, addrs: Vec<Multiaddr>) {
        self.send(NetCommand::RelayCandidates(addrs)).await;
    }
}

/// Builds the swarm, listens (QUIC first, TCP on the same port), dials the bootstrap peers and starts the
/// event loop. Returns once listening.
pub async fn start(
    cfg: NetConfig,
    cancel: CancellationToken,
) -> Result<(NetHandle, tokio::task::JoinHandle<()>), NetError> {
    let relay_cfg = cfg.relay.clone();
    let members = MeshMembers::default();
    let stats = Arc::new(NetStats::default());
    let relay_refused = Arc::new(AtomicU64::new(0));
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(cfg.key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_quic_config(|mut c| {
            // A peer that vanished (crash, pulled plug) is noticed after QUIC_IDLE, so a dead relay is
            // replaced within seconds (tests/relay_failover.rs); the keep-alive that makes this safe costs
            // a PING and its ACK every 4-4.8 s per quiet connection (two chances within QUIC_IDLE).
            c.max_idle_timeout = QUIC_IDLE.as_millis() as u32;
            c.handshake_timeout = QUIC_HANDSHAKE;
            c.keep_alive_interval = quic_keep_alive(&mut rand::rng());
            c
        })
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_behaviour(|key, relay_client| {
            Behaviour::new(
                key,
                relay_client,
                &relay_cfg,
                cfg.upnp,
                members.clone(),
                relay_refused.clone(),
            )
        })
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

    dualstack::listen_ipv6(&mut swarm, quic_port, quic_port);

    // We decide when to offer a relay (nat_maintain, from confirmed non-relayed addresses): left in its
    // automatic mode, the relay service switches on as soon as our own relay circuit address is confirmed.
    swarm
        .behaviour_mut()
        .relay
        .set_status(Some(relay::Status::Disable));
    let (tx, rx) = mpsc::channel(256);
    let control = swarm.behaviour().stream.new_control();
    let predict = cfg.traversal.port_prediction.then(|| predict::Ctx {
        me: peer_id,
        control: control.clone(),
        shared: Arc::new(parking_lot::Mutex::new(predict::Shared {
            quic_port,
            ..predict::Shared::default()
        })),
        commands: tx.clone(),
        cancel: cancel.clone(),
    });
    if let Some(ctx) = &predict {
        tokio::spawn(predict::serve(ctx.clone()));
    }
    let member_joined = Arc::new(tokio::sync::Notify::new());
    let handle = NetHandle {
        peer_id,
        tx,
        snapshot: snapshot.clone(),
        control,
        stats: stats.clone(),
        member_joined: member_joined.clone(),
    };
    let mut lp = EventLoop {
        swarm,
        rx,
        snapshot,
        stats,
        pending_providers: HashMap::new(),
        bootstrap: cfg.bootstrap,
        last_kad_bootstrap: None,
        nat: NatState::default(),
        reservation_listeners: HashMap::new(),
        public: false,
        upnp_enabled: cfg.upnp,
        close_relayed_at: HashMap::new(),
        book: AddressBook::default(),
        connect_waiters: HashMap::new(),
        pending_dials: HashMap::new(),
        autonat_dialed_back: HashMap::new(),
        members,
        member_joined,
        relay_refused,
        dialed_with: HashMap::new(),
        ipv6_upgrade_tried: HashMap::new(),
        ipv6_reached: HashSet::new(),
        relay_candidates: {
            let mut c = relays::RelayCandidates::default();
            c.add(cfg.traversal.relay_candidates.iter().cloned());
            c
        },
        friends: cfg.traversal.friends.clone(),
        predict,
        predicting: HashMap::new(),
        fresh_port_conns: HashSet::new(),
        commands: handle.tx.downgrade(),
    };
    for addr in lp.bootstrap.clone() {
        lp.dial_resolving(addr);
    }
    let task = tokio::spawn(async move { lp.run(cancel).await });
    Ok((handle, task))
}

/// The peer an address ends with (`.../p2p/<peer>`), if it names one.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(p)) => Some(p),
        _ => None,
    }
}

/// The address without a trailing `/p2p/<peer>` (a circuit address keeps its relay's `/p2p/<relay>`).
fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    let mut a = addr.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
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
    /// The loop's own command queue, for work it finishes later (a host name resolved); weak, so that
    /// the loop still ends when every handle is gone.
    commands: mpsc::WeakSender<NetCommand>,
    rx: mpsc::Receiver<NetCommand>,
    snapshot: Arc<RwLock<NetSnapshot>>,
    stats: Arc<NetStats>,
    pending_providers: HashMap<kad::QueryId, (Vec<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
    bootstrap: Vec<Multiaddr>,
    last_kad_bootstrap: Option<Instant>,
    nat: NatState,
    /// The listener of each relay reservation.
    reservation_listeners: HashMap<ListenerId, PeerId>,
    /// Relay service and DHT server mode are on.
    public: bool,
    upnp_enabled: bool,
    /// Peers whose relayed connections are closed at this time (a direct one exists).
    close_relayed_at: HashMap<PeerId, Instant>,
    /// Where we can dial peers (identify, signed records, hints).
    book: AddressBook,
    /// Callers waiting for a connection to a peer.
    connect_waiters: HashMap<PeerId, Vec<oneshot::Sender<Result<(), String>>>>,
    /// Our own dials in flight.
    pending_dials: HashMap<ConnectionId, PeerId>,
    /// Peers we dialed back for AutoNAT, and when.
    autonat_dialed_back: HashMap<PeerId, Instant>,
    /// The addresses of our last dial per peer (a dial with the same ones is not repeated while it runs).
    dialed_with: HashMap<PeerId, Vec<Multiaddr>>,
    /// Peers reached over IPv4 that we dialed over IPv6, and when (see `dualstack`).
    ipv6_upgrade_tried: HashMap<PeerId, Instant>,
    /// Connected peers that have had a direct IPv6 connection since they connected (see `dualstack`).
    ipv6_reached: HashSet<PeerId>,
    /// Listed relay candidates (see `relays`).
    relay_candidates: relays::RelayCandidates,
    /// The node's friends.
    friends: crate::Friends,
    /// Port prediction, when on.
    predict: Option<predict::Ctx>,
    /// Port prediction attempts we started, by peer, awaiting their outcome.
    predicting: HashMap<PeerId, Instant>,
    /// Open connections we dialed from a fresh port, whose peers' view of our address port prediction
    /// does not count (see `predict`).
    fresh_port_conns: HashSet<ConnectionId>,
    /// Connected peers that identified as nodes of this mesh (the relay service reserves only for them).
    members: MeshMembers,
    /// Told when a peer joins `members` (see [`NetHandle::member_joined`]).
    member_joined: Arc<tokio::sync::Notify>,
    /// Reservations the relay service refused to outsiders (counted inside the relay's limiter).
    relay_refused: Arc<AtomicU64>,
}

impl EventLoop {
    async fn run(&mut self, cancel: CancellationToken) {
        let mut maintenance = tokio::time::interval(Duration::from_secs(30));
        let nat_tick = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(nat_tick);
        let mut stirred_at = Instant::now();
        loop {
            let stirred = tokio::select! {
                _ = cancel.cancelled() => break,
                Some(cmd) = self.rx.recv() => {
                    self.command(cmd);
                    true
                }
                ev = self.swarm.select_next_some() => {
                    let stirs = stirs_nat(&ev);
                    self.event(ev);
                    stirs
                }
                _ = maintenance.tick() => {
                    self.maintain();
                    false
                }
                () = &mut nat_tick => {
                    self.nat_maintain();
                    let now = Instant::now();
                    let in_flight = !self.predicting.is_empty()
                        || !self.close_relayed_at.is_empty()
                        || self.nat.reservations.values().any(|r| !r.accepted);
                    let wait = nat_tick_period(now.duration_since(stirred_at), in_flight);
                    nat_tick.as_mut().reset((now + wait).into());
                    false
                }
            };
            if stirred {
                // News: upkeep within NAT_TICK_BUSY, as before the quiet period began.
                stirred_at = Instant::now();
                let soon = tokio::time::Instant::from(stirred_at + NAT_TICK_BUSY);
                if nat_tick.deadline() > soon {
                    nat_tick.as_mut().reset(soon);
                }
            }
        }
        debug!("mesh event loop stopped");
    }

    /// Keeps the DHT's routing table fresh and reconnects to bootstrap peers that went away; forgets
    /// callers that stopped waiting for a connection.
    fn maintain(&mut self) {
        self.connect_waiters.retain(|_, w| {
            w.retain(|tx| !tx.is_closed());
            !w.is_empty()
        });
        // A walk of the DHT costs a query to every close peer. Joins and new peers start one (see
        // `add_to_dht`); the tick only refreshes a table that saw no walk for a while, as libp2p's own
        // periodic bootstrap (5 minutes) would.
        if self
            .last_kad_bootstrap
            .is_none_or(|t| t.elapsed() >= KAD_REFRESH_EVERY)
        {
            self.last_kad_bootstrap = Some(Instant::now());
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
        for addr in self.bootstrap.clone() {
            if !peer_of(&addr).is_some_and(|p| self.swarm.is_connected(&p)) {
                self.dial_resolving(addr);
            }
        }
    }

    /// Tells the keep-alive behaviour which connections stay open while idle (see `keep_alive`):
    /// bootstrap peers and friends first; for a relay, the connection its reservation lives on.
    fn keep_neighbours(&mut self) {
        let bootstrap: Vec<PeerId> = self.bootstrap.iter().filter_map(peer_of).collect();
        let keep = {
            let snap = self.snapshot.read();
            keep_alive::choose(
                &snap.peers,
                |p| bootstrap.contains(p) || self.friends.contains(p),
                |p| self.nat.reservations.contains_key(p),
                keep_alive::MAX_NEIGHBOURS,
            )
        };
        self.swarm.behaviour_mut().keep_alive.set(keep);
    }

    /// Reachability decides the relay service and the DHT mode; private nodes keep relay reservations;
    /// relayed connections give way to direct ones.
    fn nat_maintain(&mut self) {
        let now = Instant::now();
        let public = self.nat.reachability() == Reachability::Public;
        if public != self.public {
            self.public = public;
            info!(
                public,
                "reachability changed: relay service and DHT server mode {}",
                if public { "on" } else { "off" }
            );
            let b = self.swarm.behaviour_mut();
            b.relay.set_status(Some(if public {
                relay::Status::Enable
            } else {
                relay::Status::Disable
            }));
            b.kad.set_mode(Some(if public {
                kad::Mode::Server
            } else {
                kad::Mode::Client
            }));
            // Reservations held so far are kept even when public: removing their listeners while a renewal is
            // in flight makes libp2p-relay 0.22 panic ("Relay connection exist", priv_client.rs), and they
            // are cheap. A public node keeps one (see `NatState::wanted_reservations`).
        }
        self.open_outbound_for_autonat(now);
        self.prefer_ipv6(now);
        self.keep_neighbours();
        self.expire_predictions(now);
        let candidates = self.relays_reached_directly();
        let ids = relays::rank(
            candidates.iter().map(|(p, _)| *p).collect(),
            |p| self.friends.contains(p),
            &self.relay_candidates,
        );
        let spare = ids
            .iter()
            .filter(|p| !self.nat.reservations.contains_key(p))
            .count();
        self.keep_relay_candidates(self.nat.reservations.len() + spare, now);
        for relay in self.nat.relays_to_add(&ids) {
            let Some((_, addr)) = candidates.iter().find(|(p, _)| *p == relay) else {
                continue;
            };
            let circuit = addr
                .clone()
                .with(Protocol::P2p(relay))
                .with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    info!(%relay, "asking a relay for a reservation");
                    self.reservation_listeners.insert(id, relay);
                    self.nat.reservations.insert(
                        relay,
                        Reservation {
                            addr: circuit,
                            accepted: false,
                        },
                    );
                }
                Err(e) => debug!(%relay, error = %e, "cannot listen through relay"),
            }
        }
        // Close relayed connections to peers we now reach directly (see `dualstack::superseded`).
        let mut due = Vec::new();
        self.close_relayed_at.retain(|p, at| {
            if *at <= now {
                due.push(*p);
                false
            } else {
                true
            }
        });
        for peer in due {
            let relayed: Vec<ConnectionId> = self
                .snapshot
                .read()
                .peers
                .get(&peer)
                .map(|p| dualstack::superseded(&p.connections))
                .unwrap_or_default();
            for id in relayed {
                if self.swarm.close_connection(id) {
                    self.stats
                        .relayed_connections_replaced
                        .fetch_add(1, Relaxed);
                    debug!(%peer, "closed a relayed connection: a direct one exists");
                }
            }
        }
        self.stats
            .relay_outsiders_refused
            .store(self.relay_refused.load(Relaxed), Relaxed);
        let nat = &self.nat;
        let snap = NatSnapshot {
            reachability: nat.reachability().as_str(),
            reachability_v4: nat.reachability_of(false).as_str(),
            reachability_v6: nat.reachability_of(true).as_str(),
            public_addrs: nat.public_addrs().to_vec(),
            relays: nat
                .reservations
                .iter()
                .filter(|(_, r)| r.accepted)
                .map(|(p, _)| *p)
                .collect(),
            upnp: if !self.upnp_enabled {
                "off".into()
            } else {
                match &nat.upnp {
                    Upnp::Searching => "searching".into(),
                    Upnp::Mapped(a) => format!("mapped {a}"),
                    Upnp::Unverified(a) => format!("mapped-unverified {a}"),
                    Upnp::Failed(_) => "failed".into(),
                    Upnp::NoGateway => "no-gateway".into(),
                    Upnp::NotRoutable => "not-routable".into(),
                }
            },
            hint: nat.hint(now),
            punch_attempts: nat.punch_attempts,
            punch_successes: nat.punch_successes,
            punch_failures: nat.punch_failures.clone(),
            upgrades: nat.upgrades(),
            prediction_attempts: nat.prediction_attempts,
            prediction_successes: nat.prediction_successes,
            time_to_direct_ms: nat.direct_percentiles(),
            relay_service: self.public,
        };
        let mut s = self.snapshot.write();
        for (peer, d) in &nat.direct_after {
            if let Some(p) = s.peers.get_mut(peer) {
                p.direct_after = Some(*d);
            }
        }
        s.nat = snap;
    }

    /// AutoNAT v2 asks for dial-backs only over connections we dialed. A public node that only ever gets
    /// dialed (a bootstrap node whose peers are all behind NAT) would never learn it is public, so it would
    /// never offer its relay. Dial a couple of those peers back at the address their connection came from:
    /// their NAT lets it through, since they just sent packets to us from there.
    fn open_outbound_for_autonat(&mut self, now: Instant) {
        if self.nat.reachability() == Reachability::Public {
            return;
        }
        let targets: Vec<(PeerId, Multiaddr)> = {
            let snap = self.snapshot.read();
            if snap
                .peers
                .values()
                .any(|p| p.connections.iter().any(|c| c.dialer && !c.relayed))
            {
                return;
            }
            snap.peers
                .iter()
                .filter(|(id, _)| {
                    self.autonat_dialed_back
                        .get(*id)
                        .is_none_or(|t| now.duration_since(*t) > Duration::from_secs(60))
                })
                .filter_map(|(id, p)| {
                    p.connections
                        .iter()
                        .find(|c| !c.dialer && !c.relayed)
                        .map(|c| (*id, strip_p2p(&c.remote)))
                })
                .take(2)
                .collect()
        };
        // Only the last minute matters (see the filter above): older entries are forgotten.
        self.autonat_dialed_back
            .retain(|_, t| now.duration_since(*t) <= Duration::from_secs(60));
        for (peer, addr) in targets {
            self.autonat_dialed_back.insert(peer, now);
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
                .build();
            debug!(%peer, %addr, "dialing a peer back so AutoNAT can test our address");
            let _ = self.swarm.dial(opts);
        }
    }

    fn command(&mut self, cmd: NetCommand) {
        match cmd {
            NetCommand::Dial(addr) => self.dial_resolving(addr),
            NetCommand::Resolved { original, addrs } => self.dial_resolved(&original, addrs),
            NetCommand::AddAddresses {
                peer,
                addrs,
                via,
                signed,
            } => {
                let local = self.is_local_peer(&via);
                let source = if signed {
                    Source::Own { via_local: local }
                } else {
                    Source::Hint {
                        from: via,
                        from_local: local,
                    }
                };
                // Someone waits to connect to this peer and we just learned new addresses: try them now.
                if self.learn(peer, addrs, source) && self.connect_waiters.contains_key(&peer) {
                    self.dial_known(peer);
                }
            }
            NetCommand::Connect(peer, addrs, reply) => {
                // Addresses from this node's own caller (the user, a test) are believed.
                let _ = self.learn(peer, addrs, Source::Own { via_local: true });
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                let known = self.book.addresses(&peer);
                if known.is_empty() {
                    // A provider in the catalog whose record carries no address we can use yet (it
                    // announced before its public address was confirmed; the update comes with the next
                    // gossip): ask our relays for it. Most nodes hold a reservation at the bootstrap
                    // nodes we reach too, and a hole punch follows the circuit.
                    let circuits = self.circuits_to(peer);
                    if circuits.is_empty() {
                        let _ = reply.send(Err(format!("no address known for {peer}")));
                        return;
                    }
                    debug!(%peer, n = circuits.len(), "no address known; dialing through our relays");
                    self.connect_waiters.entry(peer).or_default().push(reply);
                    self.dial_through(peer, circuits);
                    return;
                }
                self.connect_waiters.entry(peer).or_default().push(reply);
                self.dial_known(peer);
            }
            NetCommand::StartProviding(key) => {
                if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
                    debug!(error = ?e, "cannot provide");
                }
            }
            NetCommand::StopProviding(key) => self.swarm.behaviour_mut().kad.stop_providing(&key),
            NetCommand::PredictDial(peer, addrs) => self.predict_dial(peer, addrs),
            NetCommand::RelayCandidates(addrs) => {
                let new = self.relay_candidates.add(addrs);
                debug!(new, "relay candidates added");
            }
            NetCommand::GetProviders(key, reply) => {
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                self.pending_providers.insert(id, (Vec::new(), reply));
            }
        }
    }

    /// Dials an address given by the node's configuration (bootstrap peers, relay candidates) or its user;
    /// one with a host name is resolved first, off the loop, and dialed when the answer comes
    /// ([`NetCommand::Resolved`]). A bootstrap peer's address also goes into the DHT's routing table.
    fn dial_resolving(&mut self, addr: Multiaddr) {
        if resolve::has_name(&addr) {
            let commands = self.commands.clone();
            tokio::spawn(async move {
                match resolve::resolve(&addr).await {
                    Ok(addrs) => {
                        if let Some(tx) = commands.upgrade() {
                            let _ = tx
                                .send(NetCommand::Resolved {
                                    original: addr,
                                    addrs,
                                })
                                .await;
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot dial a configured peer"),
                }
            });
            return;
        }
        self.dial_resolved(&addr.clone(), vec![addr]);
    }

    /// Dials `addrs`, what `original` names (itself when it has no host name).
    fn dial_resolved(&mut self, original: &Multiaddr, addrs: Vec<Multiaddr>) {
        if let Some(p) = peer_of(original).filter(|_| self.bootstrap.contains(original)) {
            for a in &addrs {
                self.swarm.behaviour_mut().kad.add_address(&p, strip_p2p(a));
            }
        }
        for addr in addrs {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                debug!(%addr, error = %e, "dial failed");
            }
        }
    }

    /// Dials `peer` with every address we know, even if an older dial is still running: the addresses may
    /// be new (a relay reservation), and an older dial on dead addresses can hang for seconds.
    fn dial_known(&mut self, peer: PeerId) {
        let known = self.book.addresses(&peer);
        if known.is_empty() || self.dialed_with.get(&peer) == Some(&known) {
            return;
        }
        if self.dial_through(peer, known.clone()) {
            self.dialed_with.insert(peer, known);
        }
    }

    /// Circuit addresses to `peer` through relays we reach directly: those holding our reservations
    /// first, then other peers that offer the relay service; at most [`MAX_GUESSED_CIRCUITS`].
    fn circuits_to(&self, peer: PeerId) -> Vec<Multiaddr> {
        let mut relays = self.relays_reached_directly();
        relays.retain(|(relay, _)| *relay != peer);
        relays.sort_by_key(|(relay, _)| (!self.nat.reservations.contains_key(relay), *relay));
        relays
            .into_iter()
            .take(MAX_GUESSED_CIRCUITS)
            .map(|(relay, addr)| addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit))
            .collect()
    }

    /// Peers that offer the relay service and that we reach directly, with the address of that connection.
    fn relays_reached_directly(&self) -> Vec<(PeerId, Multiaddr)> {
        self.snapshot
            .read()
            .peers
            .iter()
            .filter(|(_, p)| p.supports_hop)
            .filter_map(|(id, p)| {
                p.connections
                    .iter()
                    .find(|c| !c.relayed)
                    .map(|c| (*id, strip_p2p(&c.remote)))
            })
            .collect()
    }

    /// Dials `peer` with `addrs` unless connected; the callers waiting in [`NetCommand::Connect`] hear of a
    /// failure to start. Returns whether a dial started.
    fn dial_through(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) -> bool {
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(libp2p::swarm::dial_opts::PeerCondition::Disconnected)
            .build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(id, peer);
                true
            }
            Err(e) => {
                if !self.pending_dials.values().any(|p| *p == peer) {
                    self.answer_connect(&peer, Err(e.to_string()));
                }
                false
            }
        }
    }

    /// True when `peer` reaches us directly from an address on our network (or this machine): the
    /// local addresses it gives are then worth dialing.
    fn is_local_peer(&self, peer: &PeerId) -> bool {
        self.snapshot.read().peers.get(peer).is_some_and(|p| {
            p.connections
                .iter()
                .any(|c| !c.relayed && is_local(&c.remote))
        })
    }

    /// Remembers addresses of a peer (bounded, filtered; see `addrbook`). Returns whether anything was new.
    fn learn(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, source: Source) -> bool {
        let refused = self.book.refused();
        let addrs: Vec<Multiaddr> = addrs.iter().map(strip_p2p).collect();
        let changed = self.book.learn(peer, addrs, source, Instant::now());
        self.stats
            .addresses_refused
            .fetch_add(self.book.refused() - refused, Relaxed);
        if self.book.len() > super::addrbook::MAX_PEERS {
            let connected: std::collections::HashSet<PeerId> =
                self.swarm.connected_peers().copied().collect();
            self.book.prune(|p| connected.contains(p));
        }
        changed
    }

    fn answer_connect(&mut self, peer: &PeerId, result: Result<(), String>) {
        for w in self.connect_waiters.remove(peer).unwrap_or_default() {
            let _ = w.send(result.clone());
        }
    }

    /// Hands what the swarm reports to its handler: the swarm's own events (addresses, connections) in
    /// `connections`, each behaviour's in `behaviours`.
    fn event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev),
            SwarmEvent::NewListenAddr { address, .. } => self.on_listen_addr(&address),
            SwarmEvent::ExpiredListenAddr { address, .. } => self.on_listen_addr_expired(&address),
            SwarmEvent::ExternalAddrConfirmed { address } => {
                self.on_external_addr_confirmed(&address)
            }
            SwarmEvent::ExternalAddrExpired { address } => self.on_external_addr_expired(&address),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => self.on_connection_established(peer_id, connection_id, &endpoint),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => self.on_connection_closed(peer_id, connection_id),
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => self.on_incoming_failed(&error, &send_back_addr),
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                error,
                connection_id,
            } => self.on_dial_failed(peer_id, connection_id, &error),
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                ..
            } => self.on_listener_closed(listener_id, &addresses),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_upkeep_slows_down_only_when_quiet_and_nothing_is_in_flight() {
        assert_eq!(nat_tick_period(Duration::ZERO, false), NAT_TICK_BUSY);
        assert_eq!(nat_tick_period(NAT_QUIET_AFTER / 2, false), NAT_TICK_BUSY);
        assert_eq!(nat_tick_period(NAT_QUIET_AFTER, false), NAT_TICK_QUIET);
        assert_eq!(nat_tick_period(NAT_QUIET_AFTER * 10, true), NAT_TICK_BUSY);
        assert!(NAT_TICK_QUIET > NAT_TICK_BUSY);
    }

    #[test]
    fn each_node_draws_its_own_keep_alive_within_two_chances_of_the_idle_timeout() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let draws: Vec<Duration> = (0..200).map(|_| quic_keep_alive(&mut rng)).collect();
        for d in &draws {
            assert!(
                (QUIC_KEEP_ALIVE_MIN..=QUIC_KEEP_ALIVE_MAX).contains(d),
                "{d:?}"
            );
            assert!(
                *d * 2 <= QUIC_IDLE,
                "{d:?}: one lost keep-alive would end the connection"
            );
        }
        // Spread over the range: two nodes seldom share an interval (within a few ms they would
        // synchronise again).
        let distinct: HashSet<Duration> = draws.iter().copied().collect();
        assert!(distinct.len() > 150, "{} distinct of 200", distinct.len());
        let (lo, hi) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
        assert!(*hi - *lo >= Duration::from_millis(350), "{lo:?}..{hi:?}");
    }

    #[test]
    fn strip_p2p_keeps_the_relay_of_a_circuit_address() {
        let relay = PeerId::random();
        let me = PeerId::random();
        let circuit: Multiaddr =
            format!("/ip4/198.51.100.10/udp/4001/quic-v1/p2p/{relay}/p2p-circuit/p2p/{me}")
                .parse()
                .unwrap();
        let stripped = strip_p2p(&circuit);
        assert_eq!(
            stripped.to_string(),
            format!("/ip4/198.51.100.10/udp/4001/quic-v1/p2p/{relay}/p2p-circuit")
        );
        assert_eq!(with_p2p(&stripped, me), circuit);
        let plain: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert_eq!(strip_p2p(&plain), plain);
    }
}
