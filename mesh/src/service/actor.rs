//! The mesh service's actor: the one task that owns the service's tables and supervises its other tasks.
//! Everything that decides something about more than one session happens here, one command at a time:
//! admitting a subscriber within the upload cap, merging a catalog, choosing what to gossip, starting and
//! restarting fetches. Tasks ask through a [`Client`]; status pages read the [`View`] the actor publishes.

use super::heard::Heard;
use super::{
    MeshConfig, MeshStats, StreamMesh, View, fetch, gossip, matches_request, provider_key, serve,
    stream_kbps,
};
use crate::announce::Announcement;
use crate::catalog::{self, Catalog, CatalogEntry, ProviderRecord};
use crate::net::{NetCommand, NetHandle, RELAY_CIRCUIT_KBPS};
use crate::routes::{Lineage, Routes};
use crate::session::downstream::{HINT_SILENT_AFTER, Promised, admits, fallbacks, redirect_hints};
use crate::wire::{Message, ProviderHint};
use futures::StreamExt;
use libp2p::{Multiaddr, PeerId};
use parking_lot::RwLock;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use streamr_media::{Hub, LookupState, StreamEvent, Streams};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Commands waiting for the actor; tasks wait when it is full.
const INBOX: usize = 1024;
/// Least time between two gossips triggered by news (the timer gossips every `gossip_interval` anyway).
const TRIGGERED_GOSSIP_SPACING: Duration = Duration::from_secs(1);
/// The actor's tick (our catalog entries refreshed, gossip, the view) while the catalog is empty: there
/// is nothing to refresh or repeat then, and news (a stream published here, a peer's catalog) is acted on
/// when it comes, not at a tick. Every 2 s it was one of the few things waking an idle node.
const QUIET_TICK: Duration = Duration::from_secs(10);
/// Most of our addresses in a catalog entry.
const MAX_GOSSIP_ADDRS: usize = 8;
/// Most `/streamr/media/3` streams served to one peer at once (including ones not yet subscribed); more
/// are dropped (a subscription flood).
const MAX_SERVE_PER_PEER: usize = 16;
/// Most served at once in total.
const MAX_SERVE: usize = 512;
/// Most catalog transfers read from one peer at once (an honest peer sends one every few seconds).
const MAX_CATALOG_READS_PER_PEER: usize = 4;
/// Most catalog transfers read at once in all (each may check up to 512 signatures).
const MAX_CATALOG_READS: usize = 64;
/// New subscriptions a peer may open in a burst, and per second after it.
const SUBSCRIBE_BURST: f64 = 20.0;
const SUBSCRIBE_RATE: f64 = 2.0;
/// Catalog transfers a peer may open in a burst, and per second after it: an honest peer sends one every
/// gossip interval, and one more at most every second when something changed.
const CATALOG_BURST: f64 = 8.0;
const CATALOG_RATE: f64 = 1.0;
/// Signatures a peer's catalogs may make us check that we had not checked before, in a burst and per
/// second after it: a first catalog of a large mesh needs two per entry (512 for a full message); a peer
/// that sends ever new entries then costs about 3 ms of one core a second.
const VERIFY_BURST: f64 = 512.0;
const VERIFY_RATE: f64 = 64.0;

/// The actor's tick period: the gossip interval while the catalog holds anything (ours or learned),
/// [`QUIET_TICK`] while it is empty, as in a mesh where nobody publishes.
fn tick_period(catalog_empty: bool, gossip_interval: Duration) -> Duration {
    if catalog_empty {
        QUIET_TICK.max(gossip_interval)
    } else {
        gossip_interval
    }
}

/// What a task asks of the actor.
#[derive(Debug)]
pub(super) enum Command {
    /// A local player wants hub `key` (`NAME` or `NAME@ORIGIN-PREFIX`); `reply` follows the fetch.
    Want {
        key: String,
        reply: watch::Sender<LookupState>,
    },
    /// A fetch reports where it stands, for waiting players.
    FetchState { key: String, state: LookupState },
    /// What a fetch needs to choose providers.
    Known {
        hub: Arc<Hub>,
        name: String,
        reply: oneshot::Sender<Known>,
    },
    /// A fetch subscribed, or its upstream's path or publish changed; `done` answers once it is recorded.
    SetLineage {
        hub: Arc<Hub>,
        lineage: Arc<Lineage>,
        done: oneshot::Sender<()>,
    },
    /// A subscriber asks to be served.
    Admit {
        peer: PeerId,
        id: u64,
        name: String,
        origin: Option<PeerId>,
        reply: oneshot::Sender<Admission>,
    },
    /// A stream of one of our protocols arrived.
    Inbound {
        peer: PeerId,
        stream: libp2p::Stream,
        protocol: Inbound,
    },
    /// A peer's catalog arrived (and was checked); `refund` is the part of its allowance of new signatures
    /// that it did not use.
    Merge {
        peer: PeerId,
        entries: catalog::Checked,
        refund: usize,
    },
}

/// Which protocol an inbound stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Inbound {
    Media,
    Catalog,
}

/// The answer to [`Command::Known`].
#[derive(Debug, Default)]
pub(super) struct Known {
    /// Catalog providers of the stream name (every origin, newest publish of each).
    pub entries: Vec<CatalogEntry>,
    /// The origin this hub already plays, if any.
    pub origin: Option<PeerId>,
    /// The nodes above our (lost) upstream.
    pub fallbacks: Vec<ProviderHint>,
    /// When this node first heard of each stream in `entries`.
    pub first_seen: HashMap<crate::announce::StreamId, Instant>,
    /// Our (lost) upstream, which named the fallbacks.
    pub upstream: Option<PeerId>,
    /// Our distance from the origin with that upstream.
    pub hops: Option<u8>,
    /// Providers of the name that told us themselves, lately, that they provide it (alive).
    pub heard: HashSet<PeerId>,
    /// Peers we serve this hub to (whatever their state: they are below us).
    pub serving: usize,
}

/// The answer to [`Command::Admit`].
#[derive(Debug)]
pub(super) enum Admission {
    /// Serve: send `accept`, then frames of `hub`; follow `lineage` for path changes.
    Accepted {
        hub: Arc<Hub>,
        accept: Box<Message>,
        first: Arc<Lineage>,
        lineage: watch::Receiver<Option<Arc<Lineage>>>,
        /// Where the serve task tells the actor whether the subscriber still acknowledges.
        heard: Arc<Heard>,
    },
    /// Full: send this redirect (or reject when there is nobody to redirect to).
    Full(Vec<ProviderHint>),
    /// The stream is not live here.
    NotHere,
    /// The subscriber is upstream of us.
    Loop,
}

/// The actor's address, for tasks (cloneable).
#[derive(Debug, Clone)]
pub(super) struct Client {
    tx: mpsc::Sender<Command>,
}

impl Client {
    /// Sends a command (waits while the inbox is full; dropped if the actor is gone).
    pub async fn send(&self, cmd: Command) {
        let _ = self.tx.send(cmd).await;
    }

    /// Sends a command without waiting; dropped when the inbox is full or the actor gone.
    pub fn try_send(&self, cmd: Command) {
        let _ = self.tx.try_send(cmd);
    }

    /// Sends a command made around a reply channel and waits for the reply (None if the actor is gone).
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await;
        rx.await.ok()
    }
}

/// What every task of the service shares (immutable, or atomics).
#[derive(Debug)]
pub(super) struct Ctx {
    pub me: PeerId,
    pub config: MeshConfig,
    pub streams: Streams,
    pub net: NetHandle,
    pub stats: Arc<MeshStats>,
    pub client: Client,
    pub cancel: CancellationToken,
    /// Woken when the catalog learned something: fetches waiting for providers look again.
    pub catalog_changed: Notify,
    /// Catalog signatures already checked, shared by the tasks that read catalogs.
    pub verified: catalog::SharedCache,
    /// One catalog is checked at a time (on a blocking thread): a flood of them never takes every core.
    pub checking: tokio::sync::Semaphore,
    /// The sealers of our own streams' publishes (see [`super::seal`]).
    pub sealers: super::seal::Sealers,
}

impl Ctx {
    /// How this node sees `peer` now.
    pub fn view(&self, peer: &PeerId) -> catalog::PeerView {
        self.net.with_snapshot(|s| match s.peers.get(peer) {
            Some(p) => catalog::PeerView {
                connected: true,
                direct: p.is_direct(),
                rtt_ms: p.rtt.map(|d| d.as_millis() as u32),
                heard: false,
            },
            None => catalog::PeerView::default(),
        })
    }
}

/// What a supervised task is, so that its end can be acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Task {
    AcceptMedia,
    AcceptCatalog,
    Fetch { key: String },
    Serve { peer: PeerId, id: u64 },
    CatalogRead { peer: PeerId },
    GossipSend,
    Dht,
}

/// A token bucket per peer: a peer that opens streams faster than any honest node would is refused.
#[derive(Debug)]
struct RateLimit {
    burst: f64,
    per_second: f64,
    buckets: HashMap<PeerId, (f64, Instant)>,
}

impl RateLimit {
    fn new(burst: f64, per_second: f64) -> Self {
        RateLimit {
            burst,
            per_second,
            buckets: HashMap::new(),
        }
    }

    fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.buckets.len() > 4096 {
            self.buckets
                .retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(60));
        }
        let (tokens, last) = self.buckets.entry(peer).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes up to `most` tokens at once; returns how many.
    fn take(&mut self, peer: PeerId, now: Instant, most: usize) -> usize {
        if !self.allow(peer, now) {
            return 0;
        }
        let (tokens, _) = self.buckets.get_mut(&peer).expect("allow made it");
        let n = (*tokens + 1.0).floor().min(most as f64).max(1.0);
        *tokens -= n - 1.0;
        n as usize
    }

    /// Gives back `n` tokens taken but not used.
    fn refund(&mut self, peer: PeerId, n: usize) {
        if let Some((tokens, _)) = self.buckets.get_mut(&peer) {
            *tokens = (*tokens + n as f64).min(self.burst);
        }
    }
}

/// A subscription admitted: the hub it reads, and whether its subscriber still acknowledges.
struct Served {
    hub: String,
    heard: Arc<Heard>,
}

impl Served {
    /// Counted for the upload cap and named in redirects: not silent for long (see [`Heard`]).
    fn is_heard(&self, now: Instant) -> bool {
        !self.heard.is_silent(now)
    }

    /// Named in redirects: silent for less than [`HINT_SILENT_AFTER`], a shorter grace (an orphan sent to
    /// a dead relay loses a connect timeout).
    fn is_nameable(&self, now: Instant) -> bool {
        !self.heard.silent_for(now, HINT_SILENT_AFTER)
    }
}

/// The actor. See the module docs.
pub(super) struct Actor {
    ctx: Arc<Ctx>,
    inbox: mpsc::Receiver<Command>,
    key: libp2p::identity::Keypair,
    catalog: Catalog,
    routes: Routes,
    /// Subscriptions admitted, by (peer, serve id).
    serving: HashMap<(PeerId, u64), Served>,
    /// DHT keys we provide.
    providing: HashSet<String>,
    /// Providers we recently sent redirected subscribers to.
    promised: Promised,
    /// What each peer was last sent (the message's digest and streams) and when.
    last_sent: HashMap<PeerId, (catalog::Sent, Instant)>,
    last_triggered_gossip: Option<Instant>,
    /// Subscriptions opened, per peer.
    rate: RateLimit,
    /// Catalog transfers opened, per peer.
    catalog_rate: RateLimit,
    /// New signatures each peer's catalogs may make us check.
    verify_budget: RateLimit,
    /// Our signed peer record and the addresses it holds (signed again when they change).
    record: Option<ProviderRecord>,
    next_serve_id: u64,
    tasks: JoinSet<()>,
    kinds: HashMap<tokio::task::Id, Task>,
    view: Arc<RwLock<View>>,
    /// The view needs publishing.
    dirty: bool,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor").field("me", &self.ctx.me).finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// True for 127.0.0.0/8 and ::1 addresses.
fn is_loopback(a: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    match a.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

impl Actor {
    pub(super) fn new(
        config: MeshConfig,
        streams: Streams,
        net: NetHandle,
        stats: Arc<MeshStats>,
        view: Arc<RwLock<View>>,
        cancel: CancellationToken,
    ) -> (Actor, Client) {
        let (tx, inbox) = mpsc::channel(INBOX);
        let client = Client { tx };
        let key = config.key.clone();
        let ctx = Arc::new(Ctx {
            me: net.peer_id,
            config,
            streams,
            net,
            stats,
            client: client.clone(),
            cancel,
            catalog_changed: Notify::new(),
            verified: Arc::default(),
            checking: tokio::sync::Semaphore::new(1),
            sealers: Default::default(),
        });
        let actor = Actor {
            ctx,
            inbox,
            key,
            catalog: Catalog::default(),
            routes: Routes::default(),
            serving: HashMap::new(),
            providing: HashSet::new(),
            promised: Promised::default(),
            last_sent: HashMap::new(),
            last_triggered_gossip: None,
            rate: RateLimit::new(SUBSCRIBE_BURST, SUBSCRIBE_RATE),
            catalog_rate: RateLimit::new(CATALOG_BURST, CATALOG_RATE),
            verify_budget: RateLimit::new(VERIFY_BURST, VERIFY_RATE),
            record: None,
            next_serve_id: 0,
            tasks: JoinSet::new(),
            kinds: HashMap::new(),
            view,
            dirty: true,
        };
        (actor, client)
    }

    /// Runs until cancelled; then stops every task.
    pub(super) async fn run(mut self) {
        let mut events = self.ctx.streams.events();
        // The first tick comes at once (our catalog entries, a first gossip); each later one
        // `tick_period` after the one before.
        let mut ticked: Option<tokio::time::Instant> = None;
        let tick = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(tick);
        self.spawn(Task::AcceptMedia);
        self.spawn(Task::AcceptCatalog);
        for hub in self.ctx.streams.hubs() {
            // A stream published between the mesh's start and this subscription sent its
            // SourceAttached before anyone listened: announce what is live here already (announcing
            // twice is a no-op). Without this a publish right after a mesh (re)start was never announced.
            if hub.is_live() && hub.snapshot().source.is_some_and(|k| k.is_local()) {
                self.originate(&hub);
            }
            // Players may be waiting for streams this mesh's predecessor was fetching (it failed and the
            // node restarted it): look for them again.
            if !hub.is_live() && hub.subscribers() > 0 {
                self.want(
                    hub.name().to_string(),
                    watch::channel(LookupState::Searching).0,
                );
            }
        }
        let cancel = self.ctx.cancel.clone();
        let joined = self.ctx.net.member_joined();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(r) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.task_ended(r),
                Some(cmd) = self.inbox.recv() => self.command(cmd),
                ev = events.recv() => match ev {
                    Ok(ev) => self.stream_event(ev),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.refresh_local(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = &mut tick => {
                    ticked = Some(tokio::time::Instant::now());
                    self.refresh_local();
                    self.gossip();
                }
                _ = joined.notified() => self.gossip_to_new_peers(),
            }
            let due = ticked.map_or(tick.deadline(), |t| t + self.tick_period());
            if tick.deadline() != due {
                tick.as_mut().reset(due);
            }
            if self.dirty {
                self.publish_view();
            }
        }
        self.tasks.shutdown().await;
    }

    /// How long after the last tick the next one comes (see [`tick_period`]).
    fn tick_period(&self) -> Duration {
        tick_period(
            self.catalog.local().is_empty() && self.catalog.learned_len() == 0,
            self.ctx.config.tuning.gossip_interval,
        )
    }

    fn spawn(&mut self, task: Task) {
        let ctx = self.ctx.clone();
        let handle = match task.clone() {
            Task::AcceptMedia => self.tasks.spawn(accept(ctx, Inbound::Media)),
            Task::AcceptCatalog => self.tasks.spawn(accept(ctx, Inbound::Catalog)),
            _ => unreachable!("tasks with inputs are spawned with spawn_with"),
        };
        self.kinds.insert(handle.id(), task);
    }

    fn spawn_with(
        &mut self,
        task: Task,
        fut: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let cancel = self.ctx.cancel.clone();
        let handle = self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
        self.kinds.insert(handle.id(), task);
    }

    /// A supervised task ended: clean up after it, and restart what should run.
    fn task_ended(&mut self, r: Result<(tokio::task::Id, ()), JoinError>) {
        let (id, panicked) = match r {
            Ok((id, ())) => (id, None),
            Err(e) => {
                let id = e.id();
                (id, e.is_panic().then(|| super::panic_text(e)))
            }
        };
        let Some(task) = self.kinds.remove(&id) else {
            return;
        };
        if let Some(p) = &panicked {
            self.ctx.stats.task_panics.fetch_add(1, Relaxed);
            error!(task = ?task, panic = %p, "a mesh task panicked; the mesh goes on without it");
        }
        let stopping = self.ctx.cancel.is_cancelled();
        match task {
            Task::Fetch { key } => {
                let still_wanted = self
                    .ctx
                    .streams
                    .get(&key)
                    .is_some_and(|h| h.subscribers() > 0 && !h.is_live());
                if panicked.is_some() && still_wanted && !stopping {
                    // Keep the waiting players: the route's fetch goes on with a new task.
                    warn!(stream = %key, "restarting the fetch");
                    self.spawn_fetch(key);
                } else {
                    self.routes.end_fetch(&key);
                }
            }
            Task::Serve { peer, id } => {
                self.dirty |= self.serving.remove(&(peer, id)).is_some();
            }
            Task::AcceptMedia | Task::AcceptCatalog if panicked.is_some() && !stopping => {
                self.spawn(task);
            }
            Task::AcceptMedia | Task::AcceptCatalog if !stopping => {
                warn!(task = ?task, "an accept loop ended; that protocol is no longer served");
            }
            _ => {}
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Want { key, reply } => self.want(key, reply),
            Command::FetchState { key, state } => self.routes.set_fetch_state(&key, state),
            Command::Known { hub, name, reply } => {
                let lineage = self.routes.lineage(&hub);
                let entries = self
                    .catalog
                    .providers_first_hand(&name, None, Instant::now());
                let first_seen = entries
                    .iter()
                    .filter_map(|e| {
                        let id = &e.announcement.id;
                        Some((id.clone(), self.catalog.first_seen(id)?))
                    })
                    .collect();
                let _ = reply.send(Known {
                    entries,
                    origin: lineage.as_ref().map(|l| l.announcement.id.origin),
                    fallbacks: lineage
                        .as_ref()
                        .map(|l| l.fallbacks.clone())
                        .unwrap_or_default(),
                    first_seen,
                    hops: lineage.as_ref().map(|l| l.hops),
                    heard: self.catalog.heard_first_hand(&name, Instant::now()),
                    upstream: lineage.and_then(|l| l.upstream),
                    serving: self
                        .serving
                        .values()
                        .filter(|s| s.hub == hub.name())
                        .count(),
                });
            }
            Command::SetLineage { hub, lineage, done } => {
                self.routes.set_lineage(&hub, lineage);
                let _ = done.send(());
                self.dirty = true;
                self.refresh_local();
            }
            Command::Admit {
                peer,
                id,
                name,
                origin,
                reply,
            } => {
                let a = self.admit(peer, id, &name, origin);
                let _ = reply.send(a);
            }
            Command::Inbound {
                peer,
                stream,
                protocol,
            } => self.inbound(peer, stream, protocol),
            Command::Merge {
                peer,
                entries,
                refund,
            } => {
                self.verify_budget.refund(peer, refund);
                self.merge(peer, entries)
            }
        }
    }

    /// Starts fetching hub `key` unless a fetch is running; `reply` follows it.
    fn want(&mut self, key: String, reply: watch::Sender<LookupState>) {
        let hub = self.ctx.streams.get_or_create(&key);
        if self.routes.start_fetch(&hub, reply) {
            self.spawn_fetch(key);
        }
    }

    fn spawn_fetch(&mut self, key: String) {
        let hub = self.ctx.streams.get_or_create(&key);
        let ctx = self.ctx.clone();
        self.spawn_with(
            Task::Fetch { key: key.clone() },
            fetch::fetch(ctx, hub, key),
        );
    }

    fn stream_event(&mut self, ev: StreamEvent) {
        match ev {
            StreamEvent::SourceAttached { name, kind } => {
                if kind.is_local()
                    && let Some(hub) = self.ctx.streams.get(&name)
                {
                    self.originate(&hub);
                }
                // Tell the mesh at once rather than at the next tick: viewers may be waiting.
                self.refresh_local();
                self.gossip();
            }
            StreamEvent::SourceDetached { name } => {
                debug!(stream = %name, "source detached");
                // A mesh source that went without a fetch behind it (the previous mesh's, stopped after this
                // one started) leaves players waiting: fetch the stream for them.
                if let Some(hub) = self.ctx.streams.get(&name)
                    && hub.subscribers() > 0
                    && !hub.is_live()
                    && hub.snapshot().source == Some(streamr_media::SourceKind::Mesh)
                    && !self.routes.is_fetching(&name)
                {
                    self.want(name, watch::channel(LookupState::Searching).0);
                }
                self.refresh_local();
            }
        }
        self.dirty = true;
    }

    /// Signs and records the lineage of a stream published on this node. A publisher that reconnects keeps
    /// the announcement: the hub continues the stream (timestamps and sequence numbers go on), so for the
    /// mesh it is the same publish, and frames on their way stay valid.
    fn originate(&mut self, hub: &Arc<Hub>) {
        if self
            .routes
            .lineage(hub)
            .is_some_and(|l| l.upstream.is_none() && l.announcement.id.origin == self.ctx.me)
        {
            return;
        }
        match Announcement::sign(&self.key, hub.name(), now_ms()) {
            Ok(a) => {
                info!(stream = %hub.name(), origin = %self.ctx.me, "announcing stream to the mesh");
                self.routes.set_lineage(
                    hub,
                    Arc::new(Lineage {
                        announcement: a,
                        hops: 0,
                        path: vec![self.ctx.me],
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

    /// Upload in use: each served subscription at its stream's bitrate, and each circuit our relay service
    /// carries at a typical stream's (libp2p's relay does not say how many bytes a circuit carries, and a
    /// circuit that lasts carries media between two nodes that cannot punch through).
    fn upload_kbps(&self) -> u64 {
        let now = Instant::now();
        self.serving_kbps(|s| s.is_heard(now))
    }

    /// [`Actor::upload_kbps`] with the subscriptions `counted`.
    fn serving_kbps(&self, counted: impl Fn(&Served) -> bool) -> u64 {
        let relayed = self.ctx.net.stats().relay_circuits_active.load(Relaxed) * RELAY_CIRCUIT_KBPS;
        self.serving
            .values()
            .filter(|s| counted(s))
            .filter_map(|s| self.ctx.streams.get(&s.hub))
            .map(|h| stream_kbps(&h))
            .sum::<u64>()
            + relayed
    }

    /// The spare upload our catalog entries claim: every subscription we serve counts, silent or not.
    /// Admission lets a silent subscriber's slot go (a dead relay's orphans ask here at once, and a
    /// subscriber that is only slow keeps its stream), but the catalog is what viewers moving up the tree
    /// and joiners choose by: when a momentary silence (a node waiting for a CPU, on 2 cores at 50 nodes)
    /// showed as room, providers took in 6-8 subscribers against room for 3. The simulator always
    /// counted this way.
    fn spare_kbps(&self) -> u32 {
        let cap = u64::from(self.ctx.config.max_upload_kbps);
        if cap == 0 {
            return u32::MAX;
        }
        cap.saturating_sub(self.serving_kbps(|_| true)) as u32
    }

    /// Addresses others can dial us at: confirmed external ones, then our listen addresses; loopback ones
    /// only when there is nothing else (nodes on one machine), since elsewhere they lead back to the dialer.
    fn my_addrs(&self) -> Vec<Multiaddr> {
        self.ctx.net.with_snapshot(|s| {
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

    /// Our catalog entries (every live hub with a lineage) and the DHT records that follow them.
    fn refresh_local(&mut self) {
        self.routes.prune();
        let addrs = self.my_addrs();
        if self.record.as_ref().is_none_or(|r| r.addrs() != addrs) {
            match ProviderRecord::new(&self.key, addrs) {
                Ok(r) => self.record = Some(r),
                Err(e) => warn!(error = %e, "cannot sign our peer record"),
            }
        }
        let spare = self.spare_kbps();
        let mut entries = Vec::new();
        let mut keys = HashSet::new();
        for (_, l) in self.routes.provided() {
            keys.insert(l.announcement.id.name.clone());
            if let Some(record) = &self.record {
                entries.push(CatalogEntry::new(
                    l.announcement.clone(),
                    record.clone(),
                    l.hops,
                    spare,
                ));
            }
        }
        self.catalog.set_local(entries);
        let start: Vec<String> = keys.difference(&self.providing).cloned().collect();
        let stop: Vec<String> = self.providing.difference(&keys).cloned().collect();
        self.providing = keys;
        if !start.is_empty() || !stop.is_empty() {
            let net = self.ctx.net.clone();
            self.spawn_with(Task::Dht, async move {
                for k in start {
                    net.send(NetCommand::StartProviding(provider_key(&k))).await;
                }
                for k in stop {
                    net.send(NetCommand::StopProviding(provider_key(&k))).await;
                }
            });
        }
        self.dirty = true;
    }

    /// Sends every connected peer the catalog meant for it when [`catalog::Sent::due`] says so (news at
    /// once, a change after [`catalog::change_spacing`], an unchanged one only every
    /// [`catalog::GOSSIP_REPEAT`], to keep its entries alive there: they live [`catalog::ENTRY_TTL`]).
    fn gossip(&mut self) {
        let now = Instant::now();
        self.catalog.expire(now);
        self.ctx
            .stats
            .catalog_entries
            .store(self.catalog.learned_len() as u64, Relaxed);
        let peers: Vec<PeerId> = self
            .ctx
            .net
            .with_snapshot(|s| s.peers.keys().copied().collect());
        self.last_sent.retain(|p, _| peers.contains(p));
        self.send_catalogs(peers, now);
    }

    /// Sends the catalog at once to connected peers that never had it from us, instead of at the next
    /// tick: a node that just joined looks for its stream in what its first peers tell it, and waited up
    /// to a gossip interval (2 s) for it.
    fn gossip_to_new_peers(&mut self) {
        let now = Instant::now();
        let fresh: Vec<PeerId> = self.ctx.net.with_snapshot(|s| {
            s.peers
                .keys()
                .filter(|p| !self.last_sent.contains_key(p))
                .copied()
                .collect()
        });
        if !fresh.is_empty() {
            self.send_catalogs(fresh, now);
        }
    }

    /// The catalog to each of `peers` that is due one (see [`Actor::gossip`]).
    fn send_catalogs(&mut self, peers: Vec<PeerId>, now: Instant) {
        let plan = self.catalog.gossip_plan(now);
        let spacing = catalog::change_spacing(self.ctx.config.tuning.gossip_interval);
        for peer in peers {
            let entries = plan.for_peer(&peer);
            let bytes = catalog::encode(&entries);
            let digest = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                h.finish()
            };
            // An unchanged empty catalog never goes again: it keeps nothing alive, and an idle mesh sends
            // nothing.
            if self.last_sent.get(&peer).is_some_and(|(sent, at)| {
                !sent.due(digest, &entries, now.duration_since(*at), spacing)
            }) {
                continue;
            }
            self.last_sent
                .insert(peer, (catalog::Sent::new(digest, &entries), now));
            let ctx = self.ctx.clone();
            self.spawn_with(Task::GossipSend, gossip::send(ctx, peer, bytes));
        }
    }

    fn inbound(&mut self, peer: PeerId, stream: libp2p::Stream, protocol: Inbound) {
        match protocol {
            Inbound::Media => {
                let serving = |p: Option<PeerId>| {
                    self.kinds
                        .values()
                        .filter(|t| matches!(t, Task::Serve { peer: q, .. } if p.is_none_or(|p| p == *q)))
                        .count()
                };
                if serving(Some(peer)) >= MAX_SERVE_PER_PEER
                    || serving(None) >= MAX_SERVE
                    || !self.rate.allow(peer, Instant::now())
                {
                    self.ctx.stats.subscriptions_flooded.fetch_add(1, Relaxed);
                    debug!(%peer, "too many subscriptions from this peer; stream dropped");
                    return;
                }
                self.next_serve_id += 1;
                let id = self.next_serve_id;
                let ctx = self.ctx.clone();
                self.spawn_with(
                    Task::Serve { peer, id },
                    serve::serve(ctx, peer, id, stream),
                );
            }
            Inbound::Catalog => {
                let reads = |p: Option<PeerId>| {
                    self.kinds
                        .values()
                        .filter(|t| matches!(t, Task::CatalogRead { peer: q } if p.is_none_or(|p| p == *q)))
                        .count()
                };
                if reads(Some(peer)) >= MAX_CATALOG_READS_PER_PEER
                    || reads(None) >= MAX_CATALOG_READS
                    || !self.catalog_rate.allow(peer, Instant::now())
                {
                    self.ctx.stats.catalogs_flooded.fetch_add(1, Relaxed);
                    debug!(%peer, "too many catalog transfers from this peer; stream dropped");
                    return;
                }
                let allowance =
                    self.verify_budget
                        .take(peer, Instant::now(), 2 * catalog::MAX_ENTRIES);
                let ctx = self.ctx.clone();
                self.spawn_with(
                    Task::CatalogRead { peer },
                    gossip::receive(ctx, peer, stream, allowance),
                );
            }
        }
    }

    /// Admission: the stream, loops and the upload cap, decided in one place.
    fn admit(&mut self, peer: PeerId, id: u64, name: &str, origin: Option<PeerId>) -> Admission {
        let stats = &self.ctx.stats;
        let prefix = origin.map(|o| o.to_string());
        let Some((hub, lineage)) = self
            .routes
            .provided()
            .into_iter()
            .find(|(_, l)| matches_request(&l.announcement.id, name, prefix.as_deref()))
        else {
            stats.subscriptions_rejected.fetch_add(1, Relaxed);
            return Admission::NotHere;
        };
        // A relay with nothing to give yet (we subscribed and our first media is still on its way): the
        // subscriber looks elsewhere at once instead of waiting on us, and nobody queues up behind it on
        // nothing. The origin admits before its publisher's first frame: that is where everyone starts.
        if lineage.upstream.is_some() && !hub.has_media() {
            stats.subscriptions_rejected.fetch_add(1, Relaxed);
            return Admission::NotHere;
        }
        if lineage.path.contains(&peer) {
            stats.loops_prevented.fetch_add(1, Relaxed);
            stats.subscriptions_rejected.fetch_add(1, Relaxed);
            return Admission::Loop;
        }
        let cap = u64::from(self.ctx.config.max_upload_kbps);
        let now = Instant::now();
        let need = stream_kbps(&hub);
        if !admits(
            cap,
            self.upload_kbps(),
            need,
            self.serving.values().filter(|s| s.is_heard(now)).count(),
        ) {
            let mut listed = self.catalog.providers_first_hand(
                name,
                Some(&lineage.announcement.id.origin.to_string()),
                now,
            );
            let promised_away = self.promised.discount(&mut listed, need, now);
            let hints = redirect_hints(
                self.own_downstreams(hub.name(), &peer),
                listed,
                &promised_away,
                &peer,
                &self.ctx.me,
                lineage.hops,
                need,
            );
            if let Some(first) = hints.first() {
                self.promised.promise(first.peer, now);
            }
            if hints.is_empty() {
                stats.subscriptions_rejected.fetch_add(1, Relaxed);
            } else {
                stats.subscriptions_redirected.fetch_add(1, Relaxed);
            }
            return Admission::Full(hints);
        }
        let heard = Arc::new(Heard::default());
        self.serving.insert(
            (peer, id),
            Served {
                hub: hub.name().to_string(),
                heard: heard.clone(),
            },
        );
        self.dirty = true;
        stats.subscriptions_accepted.fetch_add(1, Relaxed);
        let upstream = lineage.upstream.map(|up| ProviderHint {
            peer: up,
            addrs: self.addrs_of(&up),
        });
        let accept = Message::Accept {
            announcement: lineage.announcement.clone(),
            hops: lineage.hops,
            path: lineage.path.clone(),
            fallbacks: fallbacks(&lineage, upstream, &peer),
        };
        Admission::Accepted {
            lineage: self.routes.watch_lineage(&hub),
            hub,
            accept: Box::new(accept),
            first: lineage,
            heard,
        }
    }

    /// Our downstream peers of hub `name` (they hold the stream), with the addresses they listen on.
    fn own_downstreams(&self, name: &str, requester: &PeerId) -> Vec<ProviderHint> {
        let now = Instant::now();
        let mine: Vec<PeerId> = self
            .serving
            .iter()
            .filter(|(_, s)| s.hub == name && s.is_nameable(now))
            .map(|((p, _), _)| *p)
            .filter(|p| p != requester)
            .collect();
        self.ctx.net.with_snapshot(|s| {
            mine.iter()
                .map(|p| ProviderHint {
                    peer: *p,
                    addrs: s
                        .peers
                        .get(p)
                        .map(|i| i.listen_addrs.clone())
                        .unwrap_or_default(),
                })
                .collect()
        })
    }

    /// The addresses we reach `peer` at directly (the ones we dialed, then its listen addresses).
    fn addrs_of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.ctx.net.with_snapshot(|s| {
            s.peers
                .get(peer)
                .map(|p| {
                    let mut a: Vec<Multiaddr> = p
                        .connections
                        .iter()
                        .filter(|c| c.dialer && !crate::net::is_relayed(&c.remote))
                        .map(|c| c.remote.clone())
                        .collect();
                    a.extend(p.listen_addrs.iter().cloned());
                    a.truncate(8);
                    a
                })
                .unwrap_or_default()
        })
    }

    fn merge(&mut self, peer: PeerId, entries: catalog::Checked) {
        let mut merged = self
            .catalog
            .merge(&self.ctx.me, peer, entries, Instant::now());
        self.ctx
            .stats
            .catalog_entries
            .store(self.catalog.learned_len() as u64, Relaxed);
        if merged.dropped > 0 {
            self.ctx
                .stats
                .catalog_entries_dropped
                .fetch_add(merged.dropped as u64, Relaxed);
            debug!(%peer, n = merged.dropped, "catalog full for these entries; not kept");
        }
        if !merged.changed {
            return;
        }
        self.dirty = true;
        // New addresses (a relay reservation) help a connection attempt under way.
        let addresses = std::mem::take(&mut merged.addresses);
        if !addresses.is_empty() {
            let net = self.ctx.net.clone();
            let via = peer;
            self.spawn_with(Task::Dht, async move {
                for (peer, addrs) in addresses {
                    net.send(NetCommand::AddAddresses {
                        peer,
                        addrs,
                        via,
                        signed: true,
                    })
                    .await;
                }
            });
        }
        self.ctx.catalog_changed.notify_waiters();
        // Pass news on soon (a viewer may be waiting), but at most once a second: in a large mesh
        // something changes all the time, and every gossip goes to every peer.
        let due = self
            .last_triggered_gossip
            .is_none_or(|t| t.elapsed() > TRIGGERED_GOSSIP_SPACING);
        if due {
            self.last_triggered_gossip = Some(Instant::now());
            self.gossip();
        }
    }

    fn publish_view(&mut self) {
        self.dirty = false;
        self.ctx
            .stats
            .catalog_entries
            .store(self.catalog.learned_len() as u64, Relaxed);
        let streams = self
            .routes
            .all()
            .into_iter()
            .map(|(hub, l)| {
                (
                    hub.name().to_string(),
                    (
                        Arc::downgrade(&hub),
                        StreamMesh {
                            origin: l.announcement.id.origin.to_string(),
                            upstream: l.upstream.map(|p| p.to_string()),
                            hops: l.hops,
                        },
                    ),
                )
            })
            .collect();
        let view = View {
            known: self.catalog.streams(Instant::now()),
            upload_kbps: self.upload_kbps(),
            streams,
        };
        *self.view.write() = view;
    }
}

/// Accepts streams of one protocol and hands them to the actor. Kept tight: libp2p-stream drops inbound
/// streams if the accept loop falls behind.
async fn accept(ctx: Arc<Ctx>, protocol: Inbound) {
    let mut control = ctx.net.control();
    let name = match protocol {
        Inbound::Media => crate::wire::PROTOCOL,
        Inbound::Catalog => catalog::PROTOCOL,
    };
    let mut incoming = match control.accept(name.clone()) {
        Ok(i) => i,
        Err(e) => {
            warn!(protocol = %name, error = %e, "cannot accept streams of this protocol");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            next = incoming.next() => match next {
                Some((peer, stream)) => {
                    ctx.client.send(Command::Inbound { peer, stream, protocol }).await;
                }
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_catalog_ticks_slowly_and_a_filled_one_at_the_gossip_interval() {
        let two = Duration::from_secs(2);
        assert_eq!(tick_period(true, two), QUIET_TICK);
        assert_eq!(tick_period(false, two), two);
        // A gossip interval set longer than the quiet tick is never shortened.
        assert_eq!(tick_period(true, QUIET_TICK * 2), QUIET_TICK * 2);
    }

    #[test]
    fn subscription_rate_limit_allows_a_burst_then_a_trickle() {
        let mut r = RateLimit::new(SUBSCRIBE_BURST, SUBSCRIBE_RATE);
        let p = PeerId::random();
        let t = Instant::now();
        let allowed = (0..60).filter(|_| r.allow(p, t)).count();
        assert_eq!(allowed, SUBSCRIBE_BURST as usize);
        assert!(r.allow(p, t + Duration::from_millis(600)));
        assert!(!r.allow(p, t + Duration::from_millis(600)));
        assert!(r.allow(PeerId::random(), t), "other peers are not affected");
    }

    #[test]
    fn a_peers_allowance_of_new_signatures_is_taken_at_once_and_refunded() {
        let mut r = RateLimit::new(VERIFY_BURST, VERIFY_RATE);
        let (p, t) = (PeerId::random(), Instant::now());
        assert_eq!(r.take(p, t, 512), 512);
        assert_eq!(r.take(p, t, 512), 0, "spent");
        r.refund(p, 100);
        assert_eq!(r.take(p, t, 512), 100);
        assert_eq!(r.take(p, t + Duration::from_secs(1), 512), 64);
    }
}
