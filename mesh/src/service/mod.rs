//! The mesh service: carries the node's streams to other nodes and fetches theirs. It listens to the hubs
//! (a local publish is signed and announced; a local player's wish starts a fetch), gossips the catalog,
//! serves `/streamr/media/1` to downstream peers within the upload cap, and keeps one upstream per fetched
//! stream, replacing it when it dies or stalls.

mod fetch;
mod serve;
mod stats;

pub use stats::MeshStats;

use crate::announce::{Announcement, StreamId};
use crate::catalog::{self, Catalog, CatalogEntry, KnownStream, PeerView};
use crate::net::{self, NetCommand, NetConfig, NetHandle, RelayLimits};
use crate::routes::{Lineage, Routes};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId, kad};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use streamr_media::{Finder, Hub, LookupState, StreamEvent, Streams};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use crate::net::NetError;

/// Settings of the mesh. The node fills the user's settings in from its configuration (they are defined
/// once, in the node's settings); [`MeshTuning`] holds the protocol's own constants.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// The node key (its PeerId is the node id).
    pub key: Keypair,
    /// UDP (QUIC) and TCP port.
    pub port: u16,
    /// Peers to join the mesh through.
    pub bootstrap: Vec<Multiaddr>,
    /// Upload this node spends on downstream peers, kbit/s (0 = unlimited).
    pub max_upload_kbps: u32,
    /// Relay service limits.
    pub relay: RelayLimits,
    /// Ask the home router to open our port (UPnP IGD).
    pub upnp: bool,
    /// Timers and windows of the protocols.
    pub tuning: MeshTuning,
}

/// Timers and windows of the mesh's protocols.
#[derive(Debug, Clone)]
pub struct MeshTuning {
    /// How often the catalog is gossiped.
    pub gossip_interval: Duration,
    /// An upstream that sends nothing for this long is replaced.
    pub stall_timeout: Duration,
    /// Unacknowledged bytes allowed in flight to one downstream peer; beyond, it skips to a keyframe.
    pub max_inflight: u64,
}

impl Default for MeshTuning {
    fn default() -> Self {
        MeshTuning {
            gossip_interval: Duration::from_secs(2),
            stall_timeout: Duration::from_secs(2),
            max_inflight: 1 << 20,
        }
    }
}

/// One downstream subscription being served.
#[derive(Debug, Clone)]
struct Downstream {
    /// Hub name it reads.
    hub: String,
}

/// State shared by the mesh's tasks.
struct Shared {
    me: PeerId,
    key: Keypair,
    config: MeshConfig,
    streams: Streams,
    net: NetHandle,
    catalog: Mutex<Catalog>,
    stats: MeshStats,
    /// Where each stream on this node comes from, and the fetches under way.
    routes: Routes,
    /// Woken when the catalog learned something: fetches waiting for providers look again.
    catalog_changed: tokio::sync::Notify,
    /// When the last catalog-triggered gossip went out (they are spaced a little).
    last_triggered_gossip: Mutex<Option<Instant>>,
    /// What each peer was last sent (a hash of the message) and when: an unchanged catalog is sent again
    /// only every [`GOSSIP_REPEAT`], well inside the receiver's entry lifetime.
    last_sent: Mutex<HashMap<PeerId, (u64, Instant)>>,
    /// Downstream subscriptions by (peer, serve id).
    downstream: Mutex<HashMap<(PeerId, u64), Downstream>>,
    /// Keys we announced in the DHT.
    providing: Mutex<HashSet<String>>,
    tasks: Mutex<JoinSet<()>>,
    cancel: CancellationToken,
    /// Why the mesh stopped on its own (set when the libp2p task died).
    failure: Mutex<Option<String>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("me", &self.me).finish()
    }
}

/// A handle to the running mesh.
#[derive(Debug, Clone)]
pub struct Mesh {
    shared: Arc<Shared>,
}

/// A connected peer, for status pages.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    /// Node id.
    pub peer_id: String,
    /// "direct" or "relayed".
    pub connection: &'static str,
    /// Last ping round trip.
    pub rtt_ms: Option<f64>,
    /// Remote address of the preferred connection.
    pub addr: String,
    /// Time from the first relayed to the first direct connection, if this peer was upgraded.
    pub direct_after_ms: Option<u64>,
}

/// A stream on this node as the mesh sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMesh {
    /// Origin node id.
    pub origin: String,
    /// Peer we receive it from.
    pub upstream: Option<String>,
    /// Distance from the origin.
    pub hops: u8,
}

/// Everything the status page shows about the mesh.
#[derive(Debug, Clone)]
pub struct MeshStatus {
    /// Our addresses with `/p2p/<id>`.
    pub listen_addrs: Vec<String>,
    /// Confirmed external addresses.
    pub external_addrs: Vec<String>,
    /// Connected peers.
    pub peers: Vec<PeerStatus>,
    /// Streams known in the mesh.
    pub known: Vec<KnownStream>,
    /// Upload in use for downstream peers, kbit/s.
    pub upload_kbps: u64,
    /// NAT traversal.
    pub nat: net::NatSnapshot,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a stream costs per downstream peer, kbit/s, for admission: its measured or declared bitrate, or a
/// typical 2.5 Mbit/s before its first frames tell (subscribers often arrive before the first frame).
pub(crate) fn stream_kbps(hub: &Hub) -> u64 {
    match hub.bitrate_estimate_bps() / 1000 {
        0 => 2500,
        k => k,
    }
}

/// The DHT key of a stream name.
pub fn provider_key(name: &str) -> kad::RecordKey {
    kad::RecordKey::new(&format!("/streamr/stream/{name}"))
}

/// Splits a hub key `NAME` or `NAME@ORIGIN-PREFIX`.
pub fn split_key(key: &str) -> (&str, Option<&str>) {
    match key.split_once('@') {
        Some((n, o)) => (n, Some(o)),
        None => (key, None),
    }
}

impl Mesh {
    /// Starts the mesh: listens, joins through the bootstrap peers, and serves until `cancel`.
    pub async fn start(
        config: MeshConfig,
        streams: Streams,
        cancel: CancellationToken,
    ) -> Result<Mesh, NetError> {
        let (net, net_task) = net::start(
            NetConfig {
                key: config.key.clone(),
                port: config.port,
                bootstrap: config.bootstrap.clone(),
                relay: config.relay.clone(),
                upnp: config.upnp,
            },
            cancel.clone(),
        )
        .await?;
        let shared = Arc::new(Shared {
            me: net.peer_id,
            key: config.key.clone(),
            config,
            streams,
            net,
            catalog: Mutex::new(Catalog::default()),
            stats: MeshStats::default(),
            routes: Routes::default(),
            catalog_changed: tokio::sync::Notify::new(),
            last_triggered_gossip: Mutex::new(None),
            last_sent: Mutex::new(HashMap::new()),
            downstream: Mutex::new(HashMap::new()),
            providing: Mutex::new(HashSet::new()),
            tasks: Mutex::new(JoinSet::new()),
            cancel: cancel.clone(),
            failure: Mutex::new(None),
        });
        {
            let mut tasks = shared.tasks.lock();
            let watcher = shared.clone();
            tasks.spawn(async move {
                // The swarm's task ending before we were cancelled means libp2p failed (a panic in a
                // behaviour): say so, and let the node restart the mesh.
                let r = net_task.await;
                if !watcher.cancel.is_cancelled() {
                    let why = match r {
                        Err(e) if e.is_panic() => "the libp2p event loop panicked".to_string(),
                        Err(e) => format!("the libp2p event loop failed: {e}"),
                        Ok(()) => "the libp2p event loop stopped".to_string(),
                    };
                    warn!("{why}; the mesh stops");
                    *watcher.failure.lock() = Some(why);
                    watcher.cancel.cancel();
                }
            });
            tasks.spawn(run_events(shared.clone()));
            tasks.spawn(accept_media(shared.clone()));
            tasks.spawn(accept_catalog(shared.clone()));
        }
        // Players may be waiting for streams this mesh's predecessor was fetching (it failed and the node
        // restarted it): look for them again.
        for hub in shared.streams.hubs() {
            if !hub.is_live() && hub.subscribers() > 0 {
                shared.want(hub.name());
            }
        }
        Ok(Mesh { shared })
    }

    /// What looks for streams on behalf of local players: give it to [`Streams::set_finder`].
    pub fn finder(&self) -> Arc<dyn Finder> {
        Arc::new(MeshFinder(Arc::downgrade(&self.shared)))
    }

    /// This node's id.
    pub fn peer_id(&self) -> PeerId {
        self.shared.me
    }

    /// Counters.
    pub fn stats(&self) -> &MeshStats {
        &self.shared.stats
    }

    /// libp2p counters.
    pub fn net_stats(&self) -> &net::NetStats {
        self.shared.net.stats()
    }

    /// Why the mesh stopped on its own, if it did (as opposed to being cancelled).
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.lock().clone()
    }

    /// Waits until the mesh's tasks have stopped (after the cancel token fired, or a failure).
    pub async fn stopped(&self) {
        self.shared.cancel.cancelled().await;
        loop {
            let next = {
                let mut t = self.shared.tasks.lock();
                if t.is_empty() {
                    return;
                }
                t.try_join_next()
            };
            if next.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// What the mesh knows about a hub.
    pub fn stream(&self, hub: &Arc<Hub>) -> Option<StreamMesh> {
        let l = self.shared.routes.lineage(hub)?;
        Some(StreamMesh {
            origin: l.announcement.id.origin.to_string(),
            upstream: l.upstream.map(|p| p.to_string()),
            hops: l.hops,
        })
    }

    /// The mesh's status.
    pub fn status(&self) -> MeshStatus {
        let snap = self.shared.net.snapshot();
        let peers = snap
            .peers
            .iter()
            .map(|(id, p)| {
                let best = p
                    .connections
                    .iter()
                    .find(|c| !c.relayed)
                    .or_else(|| p.connections.first());
                PeerStatus {
                    peer_id: id.to_string(),
                    connection: if p.is_direct() { "direct" } else { "relayed" },
                    rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                    addr: best.map(|c| c.remote.to_string()).unwrap_or_default(),
                    direct_after_ms: p.direct_after.map(|d| d.as_millis() as u64),
                }
            })
            .collect();
        MeshStatus {
            listen_addrs: snap.listen_addrs.iter().map(|a| a.to_string()).collect(),
            external_addrs: snap.external_addrs.iter().map(|a| a.to_string()).collect(),
            peers,
            known: self.shared.catalog.lock().streams(Instant::now()),
            upload_kbps: self.shared.upload_kbps(),
            nat: snap.nat.clone(),
        }
    }
}

impl Shared {
    fn view(&self, peer: &PeerId) -> PeerView {
        self.net.with_snapshot(|s| match s.peers.get(peer) {
            Some(p) => PeerView {
                connected: true,
                direct: p.is_direct(),
                rtt_ms: p.rtt.map(|d| d.as_millis() as u32),
            },
            None => PeerView::default(),
        })
    }

    /// Upload in use for downstream peers: each served subscription at its stream's bitrate.
    fn upload_kbps(&self) -> u64 {
        self.upload_kbps_of(&self.downstream.lock())
    }

    fn upload_kbps_of(&self, downstream: &HashMap<(PeerId, u64), Downstream>) -> u64 {
        downstream
            .values()
            .filter_map(|d| self.streams.get(&d.hub))
            .map(|h| stream_kbps(&h))
            .sum()
    }

    fn spare_kbps(&self) -> u32 {
        let cap = u64::from(self.config.max_upload_kbps);
        if cap == 0 {
            return u32::MAX;
        }
        cap.saturating_sub(self.upload_kbps()) as u32
    }

    /// Addresses others can dial us at: confirmed external ones, then our listen addresses; loopback ones
    /// only when there is nothing else (nodes on one machine), since elsewhere they lead back to the dialer.
    fn my_addrs(&self) -> Vec<Multiaddr> {
        self.net.with_snapshot(|s| {
            let mut v: Vec<Multiaddr> = Vec::new();
            for a in s.external_addrs.iter().chain(s.listen_addrs.iter()) {
                if !v.contains(a) {
                    v.push(a.clone());
                }
            }
            if v.iter().any(|a| !is_loopback(a)) {
                v.retain(|a| !is_loopback(a));
            }
            v.truncate(MAX_GOSSIP_ADDRS);
            v
        })
    }

    /// Our catalog entries: every live hub with a lineage.
    fn refresh_local(&self) {
        let addrs = self.my_addrs();
        let spare = self.spare_kbps();
        let mut entries = Vec::new();
        let mut keys = HashSet::new();
        self.routes.prune();
        for (_, l) in self.routes.provided() {
            keys.insert(l.announcement.id.name.clone());
            entries.push(CatalogEntry {
                announcement: l.announcement.clone(),
                provider: self.me,
                addrs: addrs.clone(),
                hops: l.hops,
                spare_kbps: spare,
            });
        }
        self.catalog.lock().set_local(entries);
        // Provider records in the DHT follow the same set.
        let mut providing = self.providing.lock();
        let start: Vec<String> = keys.difference(&providing).cloned().collect();
        let stop: Vec<String> = providing.difference(&keys).cloned().collect();
        *providing = keys;
        drop(providing);
        let net = self.net.clone();
        if !start.is_empty() || !stop.is_empty() {
            tokio::spawn(async move {
                for k in start {
                    net.send(NetCommand::StartProviding(provider_key(&k))).await;
                }
                for k in stop {
                    net.send(NetCommand::StopProviding(provider_key(&k))).await;
                }
            });
        }
    }

    fn spawn(self: &Arc<Self>, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tasks.lock().spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Starts fetching hub `key` unless a fetch is running; returns the fetch's progress for a player.
    fn want(self: &Arc<Self>, key: &str) -> watch::Receiver<LookupState> {
        let hub = self.streams.get_or_create(key);
        let (started, state) = self.routes.start_fetch(&hub);
        if started {
            let me = self.clone();
            let key = key.to_string();
            self.spawn(async move {
                // However the fetch ends, waiting players stop following it.
                struct EndFetch(Arc<Shared>, String);
                impl Drop for EndFetch {
                    fn drop(&mut self) {
                        self.0.routes.end_fetch(&self.1);
                    }
                }
                let _end = EndFetch(me.clone(), key.clone());
                fetch::fetch(me, hub, key).await;
            });
        }
        state
    }

    /// Signs and records the lineage of a stream published on this node.
    fn originate(&self, hub: &Arc<Hub>) {
        match Announcement::sign(&self.key, hub.name(), now_ms()) {
            Ok(a) => {
                info!(stream = %hub.name(), origin = %self.me, "announcing stream to the mesh");
                self.routes.set_lineage(
                    hub,
                    Arc::new(Lineage {
                        announcement: a,
                        hops: 0,
                        path: vec![self.me],
                        upstream: None,
                        fallbacks: Vec::new(),
                    }),
                );
            }
            Err(e) => {
                warn!(stream = %hub.name(), error = %e, "cannot sign the stream announcement")
            }
        }
    }

    /// Sends every connected peer the catalog meant for it.
    fn gossip(self: &Arc<Self>) {
        let now = Instant::now();
        self.catalog.lock().expire(now);
        let peers: Vec<PeerId> = self
            .net
            .with_snapshot(|s| s.peers.keys().copied().collect());
        self.last_sent.lock().retain(|p, _| peers.contains(p));
        for peer in peers {
            let entries = self.catalog.lock().gossip_for(&peer, now);
            let bytes = catalog::encode(&entries);
            let digest = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                h.finish()
            };
            {
                let mut sent = self.last_sent.lock();
                if sent
                    .get(&peer)
                    .is_some_and(|(d, at)| *d == digest && now.duration_since(*at) < GOSSIP_REPEAT)
                {
                    continue;
                }
                sent.insert(peer, (digest, now));
            }
            let mut control = self.net.control();
            self.spawn(async move {
                let send = async {
                    let mut s = control.open_stream(peer, catalog::PROTOCOL).await.ok()?;
                    s.write_all(&bytes).await.ok()?;
                    s.close().await.ok()
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), send).await;
            });
        }
    }
}

/// The mesh as the node's [`Finder`]. Weak: a mesh that stopped answers "not found" instead of living on.
#[derive(Debug)]
struct MeshFinder(std::sync::Weak<Shared>);

impl Finder for MeshFinder {
    fn find(&self, name: &str) -> watch::Receiver<LookupState> {
        match self.0.upgrade() {
            Some(shared) if !shared.cancel.is_cancelled() => shared.want(name),
            // A closed channel: the player's lookup goes on by the clock alone.
            _ => watch::channel(LookupState::Searching).1,
        }
    }
}

/// Reacts to hub events and runs the gossip timer.
async fn run_events(shared: Arc<Shared>) {
    let mut events = shared.streams.events();
    let mut tick = tokio::time::interval(shared.config.tuning.gossip_interval);
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tick.tick() => {
                shared.refresh_local();
                shared.gossip();
            }
            ev = events.recv() => match ev {
                Ok(StreamEvent::SourceAttached { name, kind }) => {
                    if kind.is_local()
                        && let Some(hub) = shared.streams.get(&name)
                    {
                        shared.originate(&hub);
                    }
                    // Tell the mesh at once rather than at the next tick: viewers may be waiting.
                    shared.refresh_local();
                    shared.gossip();
                }
                Ok(StreamEvent::SourceDetached { name }) => {
                    debug!(stream = %name, "source detached");
                    shared.refresh_local();
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => shared.refresh_local(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// An unchanged catalog is sent to a peer again after this long (entries live [`catalog::ENTRY_TTL`]).
const GOSSIP_REPEAT: Duration = Duration::from_secs(5);
/// Least time between two gossips triggered by news (the timer gossips every `gossip_interval` anyway).
const TRIGGERED_GOSSIP_SPACING: Duration = Duration::from_secs(1);
/// Most of our addresses in a catalog entry.
const MAX_GOSSIP_ADDRS: usize = 8;

/// True for 127.0.0.0/8 and ::1 addresses.
fn is_loopback(a: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    match a.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// Most `/streamr/media/1` streams served to one peer at once; more are dropped (a subscription flood).
const MAX_SERVE_PER_PEER: usize = 16;
/// Most served at once in total.
const MAX_SERVE: usize = 512;
/// New subscriptions a peer may open in a burst, and per second after it.
const SUBSCRIBE_BURST: f64 = 20.0;
const SUBSCRIBE_RATE: f64 = 2.0;

/// A token bucket per peer: a peer that opens subscriptions faster than any honest node would is refused.
#[derive(Debug, Default)]
struct RateLimit {
    buckets: HashMap<PeerId, (f64, Instant)>,
}

impl RateLimit {
    fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.buckets.len() > 4096 {
            self.buckets
                .retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(60));
        }
        let (tokens, last) = self.buckets.entry(peer).or_insert((SUBSCRIBE_BURST, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * SUBSCRIBE_RATE)
            .min(SUBSCRIBE_BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn accept_media(shared: Arc<Shared>) {
    let mut control = shared.net.control();
    let Ok(mut incoming) = control.accept(crate::wire::PROTOCOL) else {
        warn!("media protocol already registered");
        return;
    };
    let mut next_id = 0u64;
    let mut rate = RateLimit::default();
    // Keep this loop tight: libp2p-stream drops inbound streams if the accept loop falls behind.
    while let Some((peer, stream)) = incoming.next().await {
        let (per_peer, total) = {
            let d = shared.downstream.lock();
            (d.keys().filter(|(p, _)| *p == peer).count(), d.len())
        };
        if per_peer >= MAX_SERVE_PER_PEER || total >= MAX_SERVE || !rate.allow(peer, Instant::now())
        {
            shared.stats.subscriptions_flooded.fetch_add(1, Relaxed);
            debug!(%peer, "too many subscriptions from this peer; stream dropped");
            continue;
        }
        next_id += 1;
        let id = next_id;
        let s = shared.clone();
        shared.spawn(async move {
            if let Err(e) = serve::serve(s.clone(), peer, id, stream).await {
                e.count(&s.stats);
                debug!(%peer, error = %e, "served subscription ended");
            }
            s.downstream.lock().remove(&(peer, id));
        });
    }
}

async fn accept_catalog(shared: Arc<Shared>) {
    let mut control = shared.net.control();
    let Ok(mut incoming) = control.accept(catalog::PROTOCOL) else {
        warn!("catalog protocol already registered");
        return;
    };
    while let Some((peer, mut stream)) = incoming.next().await {
        let s = shared.clone();
        shared.spawn(async move {
            let mut buf = Vec::new();
            let mut limited = (&mut stream).take(catalog::MAX_MESSAGE as u64 + 1);
            let read = limited.read_to_end(&mut buf);
            match tokio::time::timeout(Duration::from_secs(5), read).await {
                Ok(Ok(_)) => {}
                // A transfer that broke off (the sender gave up, the connection closed) is not the peer
                // lying: drop it quietly, the next gossip brings the catalog again.
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "catalog transfer broke off");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "catalog transfer too slow; dropped");
                    return;
                }
            }
            match catalog::decode(&buf) {
                Ok(entries) => {
                    let mut merged = s.catalog.lock().merge(&s.me, entries, Instant::now());
                    for id in &merged.forged {
                        s.stats.forged_announcements.fetch_add(1, Relaxed);
                        warn!(%peer, stream = %id, "refused a forged stream announcement in a catalog");
                    }
                    if merged.changed {
                        // New addresses (a relay reservation) help a connection attempt under way.
                        for (peer, addrs) in merged.addresses.drain(..) {
                            s.net.send(NetCommand::AddAddresses(peer, addrs)).await;
                        }
                        // Pass news on soon (a viewer may be waiting), but at most once a second: in a
                        // large mesh something changes all the time, and every gossip goes to every peer.
                        s.catalog_changed.notify_waiters();
                        let due = {
                            let mut last = s.last_triggered_gossip.lock();
                            let due = last.is_none_or(|t| t.elapsed() > TRIGGERED_GOSSIP_SPACING);
                            if due {
                                *last = Some(Instant::now());
                            }
                            due
                        };
                        if due {
                            s.gossip();
                        }
                    }
                }
                Err(e) => {
                    s.stats.protocol_violations.fetch_add(1, Relaxed);
                    warn!(%peer, error = %e, "peer sent a malformed catalog");
                }
            }
        });
    }
}

/// The announcement a hub carries must be for this stream.
fn matches_request(id: &StreamId, name: &str, origin_prefix: Option<&str>) -> bool {
    id.name == name && origin_prefix.is_none_or(|p| id.origin.to_string().starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_rate_limit_allows_a_burst_then_a_trickle() {
        let mut r = RateLimit::default();
        let p = PeerId::random();
        let t = Instant::now();
        let allowed = (0..60).filter(|_| r.allow(p, t)).count();
        assert_eq!(allowed, SUBSCRIBE_BURST as usize);
        assert!(r.allow(p, t + Duration::from_millis(600)));
        assert!(!r.allow(p, t + Duration::from_millis(600)));
        assert!(r.allow(PeerId::random(), t), "other peers are not affected");
    }
}
