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
//! Bounded: H sends at most 3 probes per socket (1536 packets) and keeps its sockets 6 s; E sends 255
//! handshakes (each retried by QUIC within libp2p's 5 s handshake timeout); once per peer per
//! [`RETRY_AFTER`]; off with the `port_prediction` setting. Two symmetric NATs leave nothing known to aim
//! at: the attempt is still made (and counted) when both are hard, with the expected poor odds.

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::multiaddr::Protocol;
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
/// Ports the easy side tries (libp2p dials at most 255 addresses of one dial at once).
pub const EASY_GUESSES: usize = 255;
/// How long the hard side waits for a guess to land.
const WINDOW: Duration = Duration::from_secs(6);
/// When the hard side sends its probes, from its start.
const PROBE_AT_MS: [u64; 3] = [0, 1500, 3000];
/// The easy side starts this long after the agreement, so H's mappings exist when its guesses arrive.
const EASY_DELAY: Duration = Duration::from_millis(300);
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
    /// Dial these guesses of the hard side's QUIC address.
    Easy(Vec<Multiaddr>),
    /// Open sockets towards the easy side's QUIC address and relay the one that is hit.
    Hard(SocketAddrV4),
}

/// Whether our router keeps ports: every observer saw us on our own QUIC port.
pub fn is_hard(observed: &[SocketAddrV4], quic_port: u16) -> bool {
    observed.iter().any(|a| a.port() != quic_port)
}

/// The roles, the same on both sides: the hard side opens sockets, the easy side guesses; when both are
/// hard the smaller id guesses. Err: nothing to do, and why.
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
        Ok(Role::Easy(
            guesses(EASY_GUESSES, rng)
                .into_iter()
                .map(|p| {
                    Multiaddr::empty()
                        .with(Protocol::Ip4(*theirs.ip()))
                        .with(Protocol::Udp(p))
                        .with(Protocol::QuicV1)
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
        tokio::time::timeout(Duration::from_secs(5), control.open_stream(peer, PROTOCOL)).await;
    let Ok(Ok(mut stream)) = stream else {
        debug!(%peer, "port prediction: no coordination stream");
        return;
    };
    let mine = ctx.shared.lock().hello();
    let mut buf = [0u8; 8];
    let exchanged = tokio::time::timeout(Duration::from_secs(5), async {
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
            let r = tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf)).await;
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
    let role = plan((ctx.me, mine), (peer, theirs), &mut rand::rng());
    match role {
        Err(why) => debug!(%peer, why, "port prediction: nothing to do"),
        Ok(Role::Easy(addrs)) => {
            info!(%peer, guesses = addrs.len(), odds = odds(HARD_SOCKETS, addrs.len(), 64512), "port prediction: guessing the peer's ports");
            tokio::time::sleep(EASY_DELAY).await;
            let _ = ctx
                .commands
                .send(NetCommand::PredictDial(peer, addrs))
                .await;
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
            info!(%peer, %easy, sockets, "port prediction: opening mappings towards the peer");
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

/// How long after its start an attempt counts as failed if no direct connection came.
const OUTCOME_AFTER: Duration = Duration::from_secs(15);

impl super::EventLoop {
    /// A hole punch with `peer` failed: try port prediction, once per [`RETRY_AFTER`].
    pub(super) fn on_punch_failed(&mut self, peer: PeerId) {
        let Some(ctx) = self.predict.clone() else {
            debug!(%peer, "port prediction is off");
            return;
        };
        if self
            .snapshot
            .read()
            .peers
            .get(&peer)
            .is_some_and(|p| p.is_direct())
        {
            debug!(%peer, "port prediction not needed: a direct connection exists");
            return;
        }
        let now = Instant::now();
        if !ctx.shared.lock().begin(peer, now) {
            debug!(%peer, "port prediction tried with this peer recently");
            return;
        }
        debug!(%peer, "port prediction: asking the peer");
        self.predicting.insert(peer, now);
        tokio::spawn(initiate(ctx, peer));
    }

    /// Remembers how a directly connected peer sees our IPv4 QUIC address.
    pub(super) fn observed_by(&mut self, peer: PeerId, observed: &Multiaddr) {
        let Some(ctx) = &self.predict else {
            return;
        };
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

    /// The easy side's guesses: one dial of all of them at once, from our QUIC socket.
    pub(super) fn predict_dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
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
            Role::Easy(addrs) => {
                assert_eq!(addrs.len(), EASY_GUESSES);
                assert!(
                    addrs
                        .iter()
                        .all(|m| m.to_string().starts_with("/ip4/203.0.113.3/udp/"))
                );
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(
            plan((b, hard), (a, easy), &mut rng).unwrap(),
            Role::Hard("203.0.113.2:4001".parse().unwrap())
        );
        assert!(plan((a, easy), (b, easy), &mut rng).is_err());
        // Both hard: exactly one side guesses.
        let roles = [
            plan((a, hard), (b, hard), &mut rng).unwrap(),
            plan((b, hard), (a, hard), &mut rng).unwrap(),
        ];
        assert_eq!(
            roles.iter().filter(|r| matches!(r, Role::Easy(_))).count(),
            1
        );
        let unknown = Hello {
            hard: true,
            observed: None,
        };
        assert!(plan((a, easy), (b, unknown), &mut rng).is_err());
    }

    #[test]
    fn guesses_are_distinct_ports_of_the_nat_range_and_the_odds_are_the_birthday_odds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let g = guesses(EASY_GUESSES, &mut rng);
        assert_eq!(g.iter().collect::<HashSet<_>>().len(), EASY_GUESSES);
        assert!(g.iter().all(|p| PORTS.contains(p)));
        let o = odds(HARD_SOCKETS, EASY_GUESSES, 64512);
        assert!((0.86..0.88).contains(&o), "{o}");
        assert!(odds(256, 255, 64512) > 0.5);
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
