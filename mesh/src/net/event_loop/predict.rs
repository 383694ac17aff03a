//! Port prediction for routers with endpoint-dependent mapping ("symmetric NAT"), after the usual hole punch
//! (DCUtR) failed. Tailscale's approach, birthday-paradox odds:
//!
//! - The *hard* side H (its router gives every destination a new, random port) opens [`HARD_SOCKETS`]
//!   UDP sockets and sends a few tiny probes from each to the *easy* side E's QUIC address (E's router keeps
//!   one external port for every destination, so that address is known from how the relay sees E). H's
//!   router now holds that many mappings towards E, on random external ports.
//! - E dials H's QUIC at [`EASY_GUESSES`] random ports of H's public address at once, from its own QUIC
//!   socket. A guess that equals one of H's mappings gets through H's router (it is the answer direction
//!   of that mapping) to the socket that opened it, and E's own router lets H's answer in (E sent to it).
//!   With M sockets and N guesses over the 64512 ports Linux picks from, the odds are
//!   1 - exp(-M N / 64512): 87% for 512 x 255.
//! - The socket that received E's handshake becomes a small relay on H's machine between E and H's own QUIC
//!   listener (127.0.0.1): libp2p-quic owns its socket and cannot take over another one. The connection is
//!   direct on the wire; the event loop shows E's real address instead of the loopback one.
//!
//! The two sides agree over the relayed connection (`/streamr/predict/1`): each says whether its router
//! keeps ports and where the relay sees it; the roles follow from that alone, so both compute the same.
//! Whether a router keeps ports is judged from how peers saw our QUIC socket; a connection libp2p dialed
//! from a fresh port (an AutoNAT dial-back we make for a peer) says nothing about it and is not counted
//! (it made port-keeping routers look symmetric, and then no guess could land).
//!
//! When: after the first direct dial to a peer we are only relayed to failed (DCUtR's first attempt), not
//! after DCUtR's third (about 10 s later), and again when DCUtR gives up if nothing was tried yet.
//!
//! Bounded ([`budget`]): E guesses in at most [`ROUNDS`] rounds of [`EASY_GUESSES`] fresh ports, a round
//! every [`ROUND_EVERY`] and only while no direct connection exists (each guess a QUIC handshake, retried
//! by QUIC within libp2p's 5 s handshake timeout); H sends at most [`PROBE_AT_MS`]`.len()` probes per
//! socket and keeps its sockets [`WINDOW`]; once per peer per [`RETRY_AFTER`]; off with the
//! `port_prediction` setting. Two symmetric NATs leave nothing known to aim at: the attempt is still made
//! (one round) when both look hard, in case one of them maps endpoint-independently but does not keep
//! ports, with the expected poor odds otherwise.

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use parking_lot::Mutex;
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::NetCommand;

/// The coordination protocol.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/streamr/predict/1");
/// Sockets the hard side opens.
pub const HARD_SOCKETS: usize = 512;
/// Ports the easy side tries per round (libp2p dials at most 255 addresses of one dial at once).
pub const EASY_GUESSES: usize = 255;
/// Rounds of guesses when exactly one side is hard: 87% for one round of 255 against 512 mappings, 98%
/// for two. The second round is dialed only if the first did not land.
pub const ROUNDS: usize = 2;
/// Time from one round of guesses to the next: libp2p-quic's 5 s handshake timeout (the first round's
/// dial has ended) and a little more.
pub const ROUND_EVERY: Duration = Duration::from_millis(5500);
/// libp2p-quic's handshake timeout (its default, which the mesh keeps): how long one round's dial lasts.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the hard side waits for a guess to land: every round's guesses and their QUIC retries.
const WINDOW: Duration = Duration::from_secs(12);
/// When the hard side sends its probes, from its start: three in the first round (against loss), then
/// one every few seconds so that its mappings stay open through the second round on routers that close
/// unanswered mappings early.
pub const PROBE_AT_MS: [u64; 5] = [0, 1500, 3000, 6000, 9000];
/// The easy side starts this long after the agreement, so H's mappings exist when its guesses arrive.
const EASY_DELAY: Duration = Duration::from_millis(300);
/// How long opening the coordination stream, and the exchange on it, may take each.
const COORDINATION_TIMEOUT: Duration = Duration::from_secs(5);
/// A relay for a predicted connection closes after this long without a datagram.
const PROXY_IDLE: Duration = Duration::from_secs(30);
/// One attempt per peer per this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(600);
/// The ports Linux's random source NAT picks from.
const PORTS: std::ops::RangeInclusive<u16> = 1024..=65535;
/// A probe: the first byte has QUIC's fixed bit clear, so a QUIC endpoint drops it without an answer.
const PROBE: [u8; 8] = [0, b's', b't', b'r', b'p', b'r', b'e', b'd'];

/// What a side tells the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Its router gives each destination a new port (or did not keep the node's port).
    pub hard: bool,
    /// Its QUIC address as a peer on the internet sees it (IPv4).
    pub observed: Option<SocketAddrV4>,
}

impl Hello {
    /// 8 bytes: version, hard, IPv4, port (all zero when unknown).
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [1, u8::from(self.hard), 0, 0, 0, 0, 0, 0];
        if let Some(a) = self.observed {
            b[2..6].copy_from_slice(&a.ip().octets());
            b[6..8].copy_from_slice(&a.port().to_be_bytes());
        }
        b
    }

    /// Reads [`Hello::encode`]'s bytes.
    pub fn decode(b: &[u8; 8]) -> Option<Hello> {
        if b[0] != 1 || b[1] > 1 {
            return None;
        }
        let ip = Ipv4Addr::new(b[2], b[3], b[4], b[5]);
        let port = u16::from_be_bytes([b[6], b[7]]);
        Some(Hello {
            hard: b[1] == 1,
            observed: (port != 0).then(|| SocketAddrV4::new(ip, port)),
        })
    }
}

/// What this side does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Dial these guesses of the hard side's QUIC address: one dial per round, [`ROUND_EVERY`] apart, each
    /// only while no direct connection exists. No port is guessed twice.
    Easy(Vec<Vec<Multiaddr>>),
    /// Open sockets towards the easy side's QUIC address and relay the one that is hit.
    Hard(SocketAddrV4),
}

/// The most an attempt may cost, on either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Probes the hard side sends (8-byte UDP datagrams).
    pub hard_probes: usize,
    /// QUIC handshakes the easy side starts (one per guessed port).
    pub easy_handshakes: usize,
    /// From the agreement until the easy side's last dial has ended.
    pub easy_time: Duration,
    /// How long the hard side keeps its sockets.
    pub hard_time: Duration,
}

/// The budget of an attempt with `sockets` sockets on the hard side.
pub fn budget(sockets: usize) -> Budget {
    Budget {
        hard_probes: sockets * PROBE_AT_MS.len(),
        easy_handshakes: ROUNDS * EASY_GUESSES,
        easy_time: EASY_DELAY + ROUND_EVERY * (ROUNDS as u32 - 1) + HANDSHAKE_TIMEOUT,
        hard_time: WINDOW,
    }
}

/// Whether our router keeps ports: every observer saw us on our own QUIC port.
pub fn is_hard(observed: &[SocketAddrV4], quic_port: u16) -> bool {
    observed.iter().any(|a| a.port() != quic_port)
}

/// The roles, the same on both sides: the hard side opens sockets, the easy side guesses in [`ROUNDS`]
/// rounds; when both are hard the smaller id guesses, one round only (see the module doc). Err: nothing to
/// do, and why.
pub fn plan(
    me: (PeerId, Hello),
    them: (PeerId, Hello),
    rng: &mut impl Rng,
) -> Result<Role, &'static str> {
    let (Some(mine), Some(theirs)) = (me.1.observed, them.1.observed) else {
        return Err("an address as the internet sees it is unknown");
    };
    let i_guess = match (me.1.hard, them.1.hard) {
        (false, false) => return Err("both routers keep ports: a plain hole punch should work"),
        (false, true) => true,
        (true, false) => false,
        (true, true) => me.0 < them.0,
    };
    if i_guess {
        let rounds = if me.1.hard { 1 } else { ROUNDS };
        let ports = guesses(EASY_GUESSES * rounds, rng);
        Ok(Role::Easy(
            ports
                .chunks(EASY_GUESSES)
                .map(|round| {
                    round
                        .iter()
                        .map(|p| {
                            Multiaddr::empty()
                                .with(Protocol::Ip4(*theirs.ip()))
                                .with(Protocol::Udp(*p))
                                .with(Protocol::QuicV1)
                        })
                        .collect()
                })
                .collect(),
        ))
    } else {
        let _ = mine;
        Ok(Role::Hard(theirs))
    }
}

/// `n` distinct random ports from the range Linux's random source NAT uses.
pub fn guesses(n: usize, rng: &mut impl Rng) -> Vec<u16> {
    let n = n.min(usize::from(*PORTS.end() - *PORTS.start()) + 1);
    let mut set = HashSet::with_capacity(n);
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let p = rng.random_range(PORTS);
        if set.insert(p) {
            v.push(p);
        }
    }
    v
}

/// The chance that one of `guesses` random ports hits one of `mappings` random ports out of `range`.
pub fn odds(mappings: usize, guesses: usize, range: usize) -> f64 {
    1.0 - (-(mappings as f64) * (guesses as f64) / range as f64).exp()
}

/// What the event loop shares with prediction tasks.
#[derive(Debug, Default)]
pub struct Shared {
    /// Our QUIC address as each directly connected peer saw it (IPv4).
    pub observed: HashMap<PeerId, SocketAddrV4>,
    /// Our IPv4 QUIC port.
    pub quic_port: u16,
    /// Attempts running or recent, by peer, with their start.
    pub sessions: HashMap<PeerId, Instant>,
    /// Local relay port -> the easy side's address, for connections that arrive through a relay socket.
    pub proxies: HashMap<u16, SocketAddrV4>,
    /// A hard side's sockets are open (one attempt at a time holds them).
    pub hard_running: bool,
}

impl Shared {
    fn hello(&self) -> Hello {
        let seen: Vec<SocketAddrV4> = self.observed.values().copied().collect();
        Hello {
            hard: is_hard(&seen, self.quic_port),
            observed: seen.first().copied(),
        }
    }

    /// Starts a session with `peer` unless one ran within [`RETRY_AFTER`].
    pub fn begin(&mut self, peer: PeerId, now: Instant) -> bool {
        if self
            .sessions
            .get(&peer)
            .is_some_and(|t| now.duration_since(*t) < RETRY_AFTER)
        {
            return false;
        }
        self.sessions.insert(peer, now);
        if self.sessions.len() > 1024 {
            self.sessions
                .retain(|_, t| now.duration_since(*t) < RETRY_AFTER);
        }
        true
    }
}

/// What a prediction task needs.
#[derive(Clone)]
pub struct Ctx {
    /// This node.
    pub me: PeerId,
    /// Opens and accepts the coordination streams.
    pub control: libp2p_stream::Control,
    /// Shared with the event loop.
    pub shared: Arc<Mutex<Shared>>,
    /// The event loop's commands (the easy side's dial).
    pub commands: mpsc::Sender<NetCommand>,
    /// The mesh's shutdown.
    pub cancel: CancellationToken,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("me", &self.me).finish()
    }
}

/// Starts an attempt with `peer` (after a failed hole punch), as the side that asks.
pub async fn initiate(ctx: Ctx, peer: PeerId) {
    let mut control = ctx.control.clone();
    let stream =
        tokio::time::timeout(COORDINATION_TIMEOUT, control.open_stream(peer, PROTOCOL)).await;
    let Ok(Ok(mut stream)) = stream else {
        debug!(%peer, "port prediction: no coordination stream");
        return;
    };
    let mine = ctx.shared.lock().hello();
    let mut buf = [0u8; 8];
    let exchanged = tokio::time::timeout(COORDINATION_TIMEOUT, async {
        stream.write_all(&mine.encode()).await?;
        stream.flush().await?;
        stream.read_exact(&mut buf).await
    })
    .await;
    if !matches!(exchanged, Ok(Ok(()))) {
        debug!(%peer, "port prediction: the peer did not answer");
        return;
    }
    let _ = stream.close().await;
    match Hello::decode(&buf) {
        Some(theirs) => execute(ctx, peer, mine, theirs).await,
        None => debug!(%peer, "port prediction: unreadable answer"),
    }
}

/// Accepts coordination streams for the life of the mesh.
pub async fn serve(ctx: Ctx) {
    let mut control = ctx.control.clone();
    let Ok(mut incoming) = control.accept(PROTOCOL) else {
        return;
    };
    loop {
        let next = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            n = futures::StreamExt::next(&mut incoming) => n,
        };
        let Some((peer, mut stream)) = next else {
            return;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let r = tokio::time::timeout(COORDINATION_TIMEOUT, stream.read_exact(&mut buf)).await;
            if !matches!(r, Ok(Ok(()))) {
                return;
            }
            let Some(theirs) = Hello::decode(&buf) else {
                return;
            };
            // A session of our own with this peer may be starting too: the one asked by the smaller id
            // goes ahead, so exactly one runs. Otherwise one per peer per RETRY_AFTER, whoever asks.
            let go = {
                let mut sh = ctx.shared.lock();
                let now = Instant::now();
                let since = sh.sessions.get(&peer).map(|t| now.duration_since(*t));
                let go = match since {
                    None => true,
                    Some(d) if d < WINDOW * 2 => ctx.me > peer,
                    Some(d) => d >= RETRY_AFTER,
                };
                if go {
                    sh.sessions.insert(peer, now);
                }
                go
            };
            if !go {
                return;
            }
            let mine = ctx.shared.lock().hello();
            if stream.write_all(&mine.encode()).await.is_err() || stream.flush().await.is_err() {
                return;
            }
            let _ = stream.close().await;
            execute(ctx, peer, mine, theirs).await;
        });
    }
}

async fn execute(ctx: Ctx, peer: PeerId, mine: Hello, theirs: Hello) {
    debug!(%peer, my_router_changes_ports = mine.hard, me_seen_at = ?mine.observed, their_router_changes_ports = theirs.hard, them_seen_at = ?theirs.observed, "port prediction: agreed");
    let role = plan((ctx.me, mine), (peer, theirs), &mut rand::rng());
    match role {
        Err(why) => debug!(%peer, why, "port prediction: nothing to do"),
        Ok(Role::Easy(rounds)) => {
            let total: usize = rounds.iter().map(Vec::len).sum();
            info!(%peer, guesses = total, rounds = rounds.len(), odds = odds(HARD_SOCKETS, total, 64512), at_most_ms = budget(HARD_SOCKETS).easy_time.as_millis() as u64, "port prediction: guessing the peer's ports");
            tokio::time::sleep(EASY_DELAY).await;
            for (i, addrs) in rounds.into_iter().enumerate() {
                if i > 0 {
                    tokio::select! {
                        _ = ctx.cancel.cancelled() => return,
                        _ = tokio::time::sleep(ROUND_EVERY) => {}
                    }
                }
                // The event loop dials only while no direct connection to the peer exists.
                if ctx
                    .commands
                    .send(NetCommand::PredictDial(peer, addrs))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        Ok(Role::Hard(easy)) => {
            let quic_port = {
                let mut sh = ctx.shared.lock();
                if sh.hard_running {
                    debug!(%peer, "port prediction: another attempt holds the sockets");
                    return;
                }
                sh.hard_running = true;
                sh.quic_port
            };
            let sockets = HARD_SOCKETS.min(fd_budget());
            let b = budget(sockets);
            info!(%peer, %easy, sockets, probes = b.hard_probes, for_ms = b.hard_time.as_millis() as u64, "port prediction: opening mappings towards the peer");
            let hit = hard_side(easy, sockets, &ctx.cancel).await;
            ctx.shared.lock().hard_running = false;
            match hit {
                Some((sock, first)) => {
                    let port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
                    info!(%peer, port, "port prediction: a guess landed; relaying it to the QUIC listener");
                    ctx.shared.lock().proxies.insert(port, easy);
                    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, quic_port));
                    relay(sock, SocketAddr::V4(easy), first, local, &ctx.cancel).await;
                    ctx.shared.lock().proxies.remove(&port);
                }
                None => info!(%peer, "port prediction: no guess landed"),
            }
        }
    }
}

/// Opens the sockets, probes `easy` from each, and returns the socket a datagram from `easy` reached,
/// with that datagram. Every other socket is closed when this returns.
async fn hard_side(
    easy: SocketAddrV4,
    count: usize,
    cancel: &CancellationToken,
) -> Option<(Arc<UdpSocket>, Vec<u8>)> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await {
            Ok(s) => sockets.push(Arc::new(s)),
            // Out of file descriptors: go with what we have.
            Err(_) => break,
        }
    }
    let (tx, mut rx) = mpsc::channel::<(usize, Vec<u8>)>(4);
    let stop = CancellationToken::new();
    for (i, s) in sockets.iter().enumerate() {
        let (s, tx, stop) = (s.clone(), tx.clone(), stop.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let start = tokio::time::Instant::now();
            let mut next = PROBE_AT_MS.iter();
            let mut at = next.next().copied();
            loop {
                let send_at = at.map(|ms| start + Duration::from_millis(ms));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = async { tokio::time::sleep_until(send_at.unwrap_or(start + WINDOW)).await }, if send_at.is_some() => {
                        let _ = s.send_to(&PROBE, easy).await;
                        at = next.next().copied();
                    }
                    r = s.recv_from(&mut buf) => {
                        if let Ok((n, from)) = r
                            && from == SocketAddr::V4(easy)
                        {
                            let _ = tx.send((i, buf[..n].to_vec())).await;
                            return;
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    let hit = tokio::select! {
        _ = cancel.cancelled() => None,
        _ = tokio::time::sleep(WINDOW) => None,
        h = rx.recv() => h,
    };
    stop.cancel();
    hit.map(|(i, first)| (sockets.swap_remove(i), first))
}

/// How many sockets the hard side may open: its share of the process's file descriptor limit, leaving 256
/// for everything else (Linux; elsewhere the default).
fn fd_budget() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse::<usize>().ok())
        });
    let open = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).ok();
    match (soft, open) {
        (Some(soft), Some(open)) => soft.saturating_sub(open + 256),
        _ => HARD_SOCKETS,
    }
}

/// Relays datagrams between `remote` and `local` through `sock` until neither side sends for
/// [`PROXY_IDLE`]. `first` (from `remote`) goes to `local` first.
async fn relay(
    sock: Arc<UdpSocket>,
    remote: SocketAddr,
    first: Vec<u8>,
    local: SocketAddr,
    cancel: &CancellationToken,
) {
    let _ = sock.send_to(&first, local).await;
    let mut buf = vec![0u8; 65_536];
    loop {
        let r = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(PROXY_IDLE, sock.recv_from(&mut buf)) => r,
        };
        let Ok(Ok((n, from))) = r else {
            return;
        };
        let to = if from == remote {
            local
        } else if from == local {
            remote
        } else {
            continue;
        };
        let _ = sock.send_to(&buf[..n], to).await;
    }
}

/// How long after its start an attempt counts as failed if no direct connection came: the coordination
/// (two timeouts) and the easy side's rounds.
const OUTCOME_AFTER: Duration = Duration::from_secs(25);

/// Whether a connection runs on our listening socket, so that the peer's view of its address shows how our
/// router maps that socket: not when libp2p dialed it from a fresh port (`PortUse::New`: AutoNAT's
/// dial-backs). Best effort on libp2p's side too (a dial without a listener to share uses a fresh port).
pub fn on_our_quic_socket(endpoint: &ConnectedPoint) -> bool {
    !matches!(
        endpoint,
        ConnectedPoint::Dialer {
            port_use: PortUse::New,
            ..
        }
    )
}

/// Whether this side asks for an attempt when a direct dial fails (both sides see their hole punch dials
/// fail): the smaller id, so that one asks. DCUtR's final failure lets either side ask.
pub fn asks_early(me: PeerId, peer: PeerId) -> bool {
    me < peer
}

impl super::EventLoop {
    /// Whether a direct (not relayed) connection to `peer` exists now.
    fn direct_to(&self, peer: PeerId) -> bool {
        self.snapshot
            .read()
            .peers
            .get(&peer)
            .is_some_and(|p| p.is_direct())
    }

    /// DCUtR gave up on `peer`: try port prediction, unless it was tried within [`RETRY_AFTER`].
    pub(super) fn on_punch_failed(&mut self, peer: PeerId) {
        self.start_prediction(peer, "the hole punch failed");
    }

    /// A dial to `peer` failed. If we are connected to it through a relay only, that was a hole punch
    /// (DCUtR's first attempt, or a dial before it): asking for port prediction now saves DCUtR's other two
    /// attempts (about 10 s). Both sides see this; one asks ([`asks_early`]).
    pub(super) fn on_direct_dial_failed(&mut self, peer: PeerId) {
        if self.predict.is_none() || !asks_early(*self.swarm.local_peer_id(), peer) {
            return;
        }
        let relayed_only = self
            .snapshot
            .read()
            .peers
            .get(&peer)
            .is_some_and(|p| !p.connections.is_empty() && !p.is_direct());
        if relayed_only && !self.predicting.contains_key(&peer) {
            self.start_prediction(peer, "a direct dial failed while relayed");
        }
    }

    fn start_prediction(&mut self, peer: PeerId, why: &'static str) {
        let Some(ctx) = self.predict.clone() else {
            debug!(%peer, "port prediction is off");
            return;
        };
        if self.direct_to(peer) {
            debug!(%peer, "port prediction not needed: a direct connection exists");
            return;
        }
        let now = Instant::now();
        if !ctx.shared.lock().begin(peer, now) {
            debug!(%peer, why, "port prediction tried with this peer recently");
            return;
        }
        debug!(%peer, why, "port prediction: asking the peer");
        self.predicting.insert(peer, now);
        tokio::spawn(initiate(ctx, peer));
    }

    /// A connection came up: one we dialed from a fresh port (`PortUse::New`, e.g. an AutoNAT dial-back
    /// we make for a peer) does not show how our router maps the QUIC socket, so its peer's view of us
    /// is not counted.
    pub(super) fn note_port_use(&mut self, connection_id: ConnectionId, endpoint: &ConnectedPoint) {
        if !on_our_quic_socket(endpoint) {
            self.fresh_port_conns.insert(connection_id);
        }
    }

    /// Remembers how a directly connected peer sees our IPv4 QUIC address, from a connection on our
    /// QUIC socket.
    pub(super) fn observed_by(
        &mut self,
        peer: PeerId,
        connection_id: ConnectionId,
        observed: &Multiaddr,
    ) {
        let Some(ctx) = &self.predict else {
            return;
        };
        if self.fresh_port_conns.contains(&connection_id) {
            debug!(%peer, %observed, "not counted for port prediction: a connection from a fresh port");
            return;
        }
        let mut it = observed.iter();
        if let (Some(Protocol::Ip4(ip)), Some(Protocol::Udp(port)), Some(Protocol::QuicV1)) =
            (it.next(), it.next(), it.next())
        {
            let mut sh = ctx.shared.lock();
            if sh.observed.len() < 64 || sh.observed.contains_key(&peer) {
                sh.observed.insert(peer, SocketAddrV4::new(ip, port));
            }
        }
    }

    /// The address a connection really comes from: a predicted connection arrives through a relay socket
    /// on loopback; the peer is at the address that socket talks to.
    pub(super) fn real_remote(&self, remote: Multiaddr) -> Multiaddr {
        let Some(ctx) = &self.predict else {
            return remote;
        };
        let mut it = remote.iter();
        if let (Some(Protocol::Ip4(ip)), Some(Protocol::Udp(port))) = (it.next(), it.next())
            && ip.is_loopback()
            && let Some(real) = ctx.shared.lock().proxies.get(&port)
        {
            return Multiaddr::empty()
                .with(Protocol::Ip4(*real.ip()))
                .with(Protocol::Udp(real.port()))
                .with(Protocol::QuicV1);
        }
        remote
    }

    /// A connection to `peer` came up: an attempt on it succeeded if it is direct.
    pub(super) fn prediction_connected(&mut self, peer: PeerId, relayed: bool) {
        if !relayed && self.predicting.remove(&peer).is_some() {
            info!(%peer, "port prediction succeeded: direct connection");
            self.nat.prediction(Ok(()));
        }
    }

    /// Attempts that saw no direct connection in time failed.
    pub(super) fn expire_predictions(&mut self, now: Instant) {
        let mut failed = Vec::new();
        self.predicting.retain(|p, t| {
            let keep = now.duration_since(*t) < OUTCOME_AFTER;
            if !keep {
                failed.push(*p);
            }
            keep
        });
        for peer in failed {
            info!(%peer, "port prediction failed: no guess landed; staying on the relay");
            self.nat.prediction(Err("no guess landed".into()));
        }
    }

    /// The easy side's guesses of one round: one dial of all of them at once, from our QUIC socket, unless
    /// a direct connection to the peer exists by now.
    pub(super) fn predict_dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if self.direct_to(peer) {
            debug!(%peer, "port prediction: direct by now, no more guesses");
            return;
        }
        debug!(%peer, guesses = addrs.len(), "port prediction: dialing a round of guesses");
        let n = addrs.len().clamp(1, 255) as u8;
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
            .override_dial_concurrency_factor(std::num::NonZeroU8::new(n).expect("at least 1"))
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(%peer, error = %e, "port prediction: dial refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn hello(hard: bool, addr: &str) -> Hello {
        Hello {
            hard,
            observed: Some(addr.parse().unwrap()),
        }
    }

    #[test]
    fn hello_round_trips() {
        let h = hello(true, "203.0.113.7:40123");
        assert_eq!(Hello::decode(&h.encode()), Some(h));
        let unknown = Hello {
            hard: false,
            observed: None,
        };
        assert_eq!(Hello::decode(&unknown.encode()), Some(unknown));
        assert_eq!(Hello::decode(&[9; 8]), None);
    }

    #[test]
    fn the_hard_side_opens_mappings_and_the_easy_side_guesses() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (a, b) = (PeerId::random(), PeerId::random());
        let easy = hello(false, "203.0.113.2:4001");
        let hard = hello(true, "203.0.113.3:51234");
        match plan((a, easy), (b, hard), &mut rng).unwrap() {
            Role::Easy(rounds) => {
                assert_eq!(rounds.len(), ROUNDS);
                assert!(rounds.iter().all(|r| r.len() == EASY_GUESSES));
                let all: Vec<&Multiaddr> = rounds.iter().flatten().collect();
                assert!(
                    all.iter()
                        .all(|m| m.to_string().starts_with("/ip4/203.0.113.3/udp/"))
                );
                // A later round never repeats a port an earlier one tried.
                assert_eq!(
                    all.iter().collect::<HashSet<_>>().len(),
                    ROUNDS * EASY_GUESSES
                );
            }
            r => panic!("{r:?}"),
        }
        // The roles do not depend on who asked: the other side computes the mirror image.
        assert_eq!(
            plan((b, hard), (a, easy), &mut rng).unwrap(),
            Role::Hard("203.0.113.2:4001".parse().unwrap())
        );
        assert!(plan((a, easy), (b, easy), &mut rng).is_err());
        // Both hard: exactly one side guesses, one round only.
        let roles = [
            plan((a, hard), (b, hard), &mut rng).unwrap(),
            plan((b, hard), (a, hard), &mut rng).unwrap(),
        ];
        let easy_rounds: Vec<usize> = roles
            .iter()
            .filter_map(|r| match r {
                Role::Easy(rounds) => Some(rounds.len()),
                Role::Hard(_) => None,
            })
            .collect();
        assert_eq!(easy_rounds, vec![1]);
        let unknown = Hello {
            hard: true,
            observed: None,
        };
        assert!(plan((a, easy), (b, unknown), &mut rng).is_err());
    }

    #[test]
    fn an_attempt_is_bounded_in_packets_and_time() {
        let b = budget(HARD_SOCKETS);
        assert_eq!(b.hard_probes, HARD_SOCKETS * PROBE_AT_MS.len());
        assert!(b.hard_probes <= 2560, "{b:?}");
        assert_eq!(b.easy_handshakes, ROUNDS * EASY_GUESSES);
        assert!(b.easy_handshakes <= 510, "{b:?}");
        // A round starts after the previous round's dial has ended (libp2p-quic's handshake timeout).
        assert!(ROUND_EVERY >= HANDSHAKE_TIMEOUT);
        // The hard side's sockets are open until the easy side's last dial has ended, and every probe is
        // sent while they are.
        assert!(b.easy_time <= b.hard_time, "{b:?}");
        assert!(
            PROBE_AT_MS
                .iter()
                .all(|ms| Duration::from_millis(*ms) < WINDOW)
        );
        assert!(PROBE_AT_MS.windows(2).all(|w| w[0] < w[1]));
        // An attempt is judged only after both sides are done, coordination included.
        assert!(b.easy_time + COORDINATION_TIMEOUT * 2 <= OUTCOME_AFTER);
        assert!(b.hard_time + COORDINATION_TIMEOUT * 2 <= OUTCOME_AFTER);
        assert!(OUTCOME_AFTER < RETRY_AFTER);
        // Fewer sockets (a small descriptor limit), fewer probes.
        assert_eq!(budget(100).hard_probes, 100 * PROBE_AT_MS.len());
    }

    #[test]
    fn one_side_asks_when_both_see_a_dial_fail() {
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_ne!(asks_early(a, b), asks_early(b, a));
    }

    #[test]
    fn only_connections_on_our_socket_show_how_our_router_maps_it() {
        let addr: Multiaddr = "/ip4/198.51.100.10/udp/4001/quic-v1".parse().unwrap();
        let dialed = |port_use| ConnectedPoint::Dialer {
            address: addr.clone(),
            role_override: libp2p::core::Endpoint::Dialer,
            port_use,
        };
        assert!(on_our_quic_socket(&dialed(PortUse::Reuse)));
        // An AutoNAT dial-back we make for a peer comes from a fresh port: the peer sees that port.
        assert!(!on_our_quic_socket(&dialed(PortUse::New)));
        assert!(on_our_quic_socket(&ConnectedPoint::Listener {
            local_addr: "/ip4/0.0.0.0/udp/4001/quic-v1".parse().unwrap(),
            send_back_addr: addr.clone(),
        }));
    }

    #[test]
    fn guesses_are_distinct_ports_of_the_nat_range_and_the_odds_are_the_birthday_odds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let g = guesses(EASY_GUESSES, &mut rng);
        assert_eq!(g.iter().collect::<HashSet<_>>().len(), EASY_GUESSES);
        assert!(g.iter().all(|p| PORTS.contains(p)));
        let o = odds(HARD_SOCKETS, EASY_GUESSES, 64512);
        assert!((0.86..0.88).contains(&o), "{o}");
        let two_rounds = odds(HARD_SOCKETS, ROUNDS * EASY_GUESSES, 64512);
        assert!((0.98..0.99).contains(&two_rounds), "{two_rounds}");
        assert!(odds(256, 255, 64512) > 0.5);
        // Asking for more ports than the range holds ends with the whole range, once each.
        let all = guesses(70_000, &mut rng);
        assert_eq!(all.len(), 64512);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 64512);
    }

    #[test]
    fn a_router_that_changes_our_port_is_hard() {
        let a = |s: &str| s.parse::<SocketAddrV4>().unwrap();
        assert!(!is_hard(&[a("203.0.113.2:4001")], 4001));
        assert!(is_hard(&[a("203.0.113.2:51000")], 4001));
        assert!(!is_hard(&[], 4001));
        let mut s = Shared {
            quic_port: 4001,
            ..Shared::default()
        };
        let p = PeerId::random();
        let t = Instant::now();
        assert!(s.begin(p, t));
        assert!(!s.begin(p, t + Duration::from_secs(1)));
        assert!(s.begin(p, t + RETRY_AFTER));
    }

    #[tokio::test]
    async fn the_hit_socket_relays_both_ways() {
        // "easy": a socket standing for the peer; "quic": one standing for our QUIC listener.
        let easy = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let quic = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let easy_addr = match easy.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let hard = tokio::spawn(async move { hard_side(easy_addr, 64, &c).await });
        // The first probe tells us where the hard side's sockets are; answer one of them.
        let mut buf = [0u8; 64];
        let (n, from) = easy.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &PROBE);
        easy.send_to(b"initial", from).await.unwrap();
        let (sock, first) = hard.await.unwrap().unwrap();
        assert_eq!(first, b"initial");
        assert_eq!(sock.local_addr().unwrap().port(), from.port());
        let quic_addr = quic.local_addr().unwrap();
        let c = cancel.clone();
        tokio::spawn(
            async move { relay(sock, SocketAddr::V4(easy_addr), first, quic_addr, &c).await },
        );
        let (n, relay_addr) = quic.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"initial");
        quic.send_to(b"handshake", relay_addr).await.unwrap();
        // The other sockets' probes are still queued at "easy": skip them.
        let (n, back) = loop {
            let (n, back) = easy.recv_from(&mut buf).await.unwrap();
            if buf[..n] != PROBE {
                break (n, back);
            }
        };
        assert_eq!(&buf[..n], b"handshake");
        assert_eq!(back, from);
        cancel.cancel();
    }
}
