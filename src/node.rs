//! `Node`: wires the parts together (hubs, RTMP edge, relays, mesh, web) and supervises them. The web server
//! runs for the whole life of the process; the rest (the mesh, the RTMP edge, the pull/push relays) is the
//! node's *engine*, which the dashboard's Stop pauses and Start resumes (the choice is kept in the data dir
//! and survives a restart), and which settings that apply at once restart. Each part is a task under a
//! cancellation token; if one dies unexpectedly, the node stops everything and reports it. Relays and the
//! mesh are restarted instead: they talk to other machines, and what those send must not stop the node.

use crate::config::{Config, FileConfig};
use crate::coordinator::{self, Coordinator};
use crate::dashboard::Api;
use crate::datafile::{self, NodeState};
use crate::friends::FriendBook;
use crate::identity;
use crate::metrics::render;
use crate::update::UpdateNotices;
use anyhow::Context;
use backon::{BackoffBuilder, ExponentialBuilder};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use parking_lot::{Mutex, RwLock};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use streamr_edge::{EdgeConfig, EdgeStats, RtmpServer};
use streamr_media::Streams;
use streamr_mesh::{Friends, Mesh, MeshConfig};
use streamr_web::{WebConfig, WebServer};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How long the parts of the engine get to close when it stops.
const ENGINE_STOP_GRACE: Duration = Duration::from_secs(5);

/// How a node's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Stopped (Ctrl-C, SIGTERM).
    Stopped,
    /// The dashboard asked for a restart of the program (after settings that need one).
    Restart,
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// The node id.
    pub peer_id: PeerId,
    /// RTMP edge address (bound, or to be bound when the node starts after a Stop).
    pub rtmp_addr: SocketAddr,
    /// HTTP address actually bound.
    pub http_addr: SocketAddr,
    /// The publish key (secret).
    pub publish_key: String,
    /// Whether publishing needs the key.
    pub publish_key_required: bool,
    /// The node was stopped from the dashboard before this start: it serves the dashboard only.
    pub paused: bool,
    shutdown: CancellationToken,
    restart: CancellationToken,
    tasks: JoinSet<&'static str>,
}

/// The running mesh: the last one started (its counters stay readable while the node is stopped; none
/// when the node has not run since the process started) and whether it is active. If libp2p fails (a
/// panic in one of its behaviours), the node starts a new mesh and puts it here; hubs, players and
/// publishers are untouched meanwhile.
#[derive(Debug, Clone, Default)]
pub struct MeshSlot(Arc<RwLock<(Option<Mesh>, bool)>>);

impl MeshSlot {
    /// The mesh now (possibly stopped: for counters).
    pub fn get(&self) -> Option<Mesh> {
        self.0.read().0.clone()
    }

    /// The mesh, if the node is running.
    pub fn active(&self) -> Option<Mesh> {
        let g = self.0.read();
        if g.1 { g.0.clone() } else { None }
    }

    pub(crate) fn set(&self, mesh: Mesh) {
        *self.0.write() = (Some(mesh), true);
    }

    fn deactivate(&self) {
        self.0.write().1 = false;
    }
}

/// The RTMP edge's counters; a new edge (after Stop/Start) brings new ones.
#[derive(Debug, Clone, Default)]
pub struct EdgeSlot(Arc<RwLock<Arc<EdgeStats>>>);

impl EdgeSlot {
    /// The counters of the current (or last) edge.
    pub fn get(&self) -> Arc<EdgeStats> {
        self.0.read().clone()
    }
}

/// What the node's parts and its dashboard share.
#[derive(Debug)]
pub struct Shared {
    /// The data dir.
    pub data_dir: std::path::PathBuf,
    /// The node key.
    pub key: Keypair,
    /// The node id.
    pub peer_id: PeerId,
    /// The publish key.
    pub publish_key: String,
    /// The configuration in effect (settings that apply at once update it).
    pub config: RwLock<Config>,
    /// The configuration the process started with (settings that need a restart compare with it).
    pub boot_config: Config,
    /// The command-line flags and environment (they win over `config.toml`).
    pub flags: FileConfig,
    /// The node's hubs.
    pub streams: Streams,
    /// The mesh.
    pub mesh: MeshSlot,
    /// The RTMP edge's counters.
    pub edge: EdgeSlot,
    /// RTMP address bound (or to bind on Start).
    pub rtmp_addr: RwLock<SocketAddr>,
    /// HTTP address bound.
    pub http_addr: SocketAddr,
    /// When the process started.
    pub started: Instant,
    /// The friend list.
    pub friends: Mutex<FriendBook>,
    /// The friends, for the mesh's choice of origin.
    pub friend_set: Friends,
    /// Whether the engine should run (Start/Stop).
    pub want_running: watch::Sender<bool>,
    /// Whether it runs now.
    pub running: watch::Sender<bool>,
    /// Bumped to restart the engine with the current configuration.
    pub reconnect: watch::Sender<u64>,
    /// Serialises Start, Stop and settings changes.
    pub control: tokio::sync::Mutex<()>,
    /// A saved setting waits for a restart of the program.
    pub restart_needed: AtomicBool,
    /// Cancelled to restart the program.
    pub restart: CancellationToken,
    /// Newer releases.
    pub updates: UpdateNotices,
    /// Prometheus registry.
    pub registry: Registry,
    /// The coordinator, when the `coordinator` setting is set (set once, right after start).
    pub coordinator: OnceLock<Arc<Coordinator>>,
}

impl Shared {
    /// The configuration in effect.
    pub fn config(&self) -> Config {
        self.config.read().clone()
    }

    /// The coordinator, if the node has one.
    pub fn coordinator(&self) -> Option<&Arc<Coordinator>> {
        self.coordinator.get()
    }

    /// The mesh's settings now, with the friends as extra bootstrap peers and, with a coordinator, the
    /// bandwidth receipts.
    fn mesh_config(&self) -> anyhow::Result<MeshConfig> {
        let mut cfg = self.config().mesh_config(self.key.clone())?;
        cfg.bootstrap.extend(self.friends.lock().bootstrap_addrs());
        cfg.friends = self.friend_set.clone();
        cfg.receipts = self.coordinator().map(|c| c.receipt_hook(self.key.clone()));
        Ok(cfg)
    }

    /// The Prometheus text.
    pub fn metrics(&self) -> String {
        render(&self.registry)
    }
}

/// The engine's running parts: the mesh, the RTMP edge and the relays.
struct Parts {
    token: CancellationToken,
    tasks: JoinSet<&'static str>,
}

impl Parts {
    /// Binds the RTMP edge and starts the mesh and the relays. Errors name the setting to change.
    async fn start(shared: &Arc<Shared>, parent: &CancellationToken) -> anyhow::Result<Parts> {
        let config = shared.config();
        let mut edge_cfg = EdgeConfig::new(*shared.rtmp_addr.read());
        let key_required = config.publish_key_required();
        edge_cfg.publish_key = key_required.then(|| shared.publish_key.clone());
        edge_cfg.play_merge = Duration::from_millis(config.rtmp_merge_ms);
        let rtmp = RtmpServer::bind(edge_cfg).await?;
        *shared.rtmp_addr.write() = rtmp.local_addr();
        *shared.edge.0.write() = rtmp.stats();
        let token = parent.child_token();
        let mesh_cfg = shared.mesh_config()?;
        let mesh = Mesh::start(
            mesh_cfg.clone(),
            shared.streams.clone(),
            token.child_token(),
        )
        .await?;
        shared.streams.set_finder(Some(mesh.finder()));
        shared.mesh.set(mesh);
        let mut tasks = JoinSet::new();
        {
            let (slot, streams, token) =
                (shared.mesh.clone(), shared.streams.clone(), token.clone());
            tasks.spawn(async move {
                supervise_mesh(slot, mesh_cfg, streams, token).await;
                "mesh"
            });
        }
        {
            let (streams, token) = (shared.streams.clone(), token.child_token());
            tasks.spawn(async move {
                rtmp.run(streams, token).await;
                "rtmp edge"
            });
        }
        let relay_stats = shared.edge.0.read().clone();
        for (what, specs) in [("pull", &config.pull), ("push", &config.push)] {
            for spec in specs {
                let (streams, token, spec) =
                    (shared.streams.clone(), token.child_token(), spec.clone());
                let stats = relay_stats.clone();
                tasks.spawn(async move {
                    let restarts = stats.clone();
                    supervise_relay(
                        what,
                        &spec.name,
                        &restarts.relays.task_restarts,
                        token,
                        |t| {
                            let (name, url, streams, stats) = (
                                spec.name.clone(),
                                spec.url.clone(),
                                streams.clone(),
                                stats.clone(),
                            );
                            async move {
                                if what == "pull" {
                                    streamr_edge::relay::pull(name, url, streams, stats, t).await
                                } else {
                                    streamr_edge::relay::push(name, url, streams, stats, t).await
                                }
                            }
                        },
                    )
                    .await;
                    "relay supervisor"
                });
            }
        }
        if let Some(c) = shared.coordinator() {
            let own_pulls = config.pull.iter().map(|p| p.name.clone()).collect();
            let (c, streams, token) = (c.clone(), shared.streams.clone(), token.child_token());
            let stats = relay_stats.clone();
            tasks.spawn(async move {
                coordinator::assignments::run(c, streams, stats, own_pulls, token).await;
                "coordinator assignments"
            });
        }
        {
            // Friends added while running are dialed by the join; this reconnects them after they went
            // away (their node restarted, a network change), as bootstrap peers are.
            let (shared, token) = (shared.clone(), token.clone());
            tasks.spawn(async move {
                keep_friends_connected(shared, token).await;
                "friend reconnects"
            });
        }
        {
            let token = token.clone();
            tasks.spawn(async move {
                crate::memory::trim_periodically(token).await;
                "memory trim"
            });
        }
        let _ = shared.running.send_replace(true);
        Ok(Parts { token, tasks })
    }

    /// Stops every part (players, publishers and peers are disconnected); the web server stays.
    async fn stop(mut self, shared: &Shared) {
        self.token.cancel();
        shared.streams.set_finder(None);
        shared.mesh.deactivate();
        let drained = tokio::time::timeout(ENGINE_STOP_GRACE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("some connections did not close in time; stopping them now");
            self.tasks.abort_all();
        }
        let _ = shared.running.send_replace(false);
    }
}

/// Dials friends that are not connected, every 30 s.
async fn keep_friends_connected(shared: Arc<Shared>, token: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(mesh) = shared.mesh.active() else {
            continue;
        };
        let connected: Vec<String> = mesh.status().peers.into_iter().map(|p| p.peer_id).collect();
        let friends = shared.friends.lock().list().to_vec();
        for f in friends {
            if connected.contains(&f.peer_id) {
                continue;
            }
            if let Some(id) = f.id() {
                let addrs = f.bootstrap_addrs();
                let mesh = mesh.clone();
                tokio::spawn(async move {
                    let _ = mesh.dial(id, addrs, Duration::from_secs(10)).await;
                });
            }
        }
    }
}

/// Runs the engine while it is wanted; restarts it when asked to reconnect. Returns only when a part
/// stops on its own (the node then stops: that is a bug or a broken machine) or at shutdown.
async fn run_engine(
    shared: Arc<Shared>,
    mut parts: Option<Parts>,
    shutdown: CancellationToken,
) -> &'static str {
    let mut want = shared.want_running.subscribe();
    let mut reconnect = shared.reconnect.subscribe();
    loop {
        if parts.is_none() && *want.borrow_and_update() {
            match Parts::start(&shared, &shutdown).await {
                Ok(p) => {
                    info!("the node started: mesh and RTMP edge are up");
                    parts = Some(p);
                }
                Err(e) => {
                    error!(error = %format!("{e:#}"), "cannot start the node; it stays stopped");
                    let _ = shared.want_running.send_replace(false);
                    let _ = shared.running.send_replace(false);
                }
            }
        }
        let died = async {
            match parts.as_mut() {
                Some(p) => p.tasks.join_next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {
                if let Some(p) = parts.take() {
                    p.stop(&shared).await;
                }
                return "engine";
            }
            r = died => {
                let name = match r {
                    Some(Ok(name)) => name,
                    _ => "engine part",
                };
                if let Some(p) = parts.take() {
                    p.stop(&shared).await;
                }
                return name;
            }
            r = want.changed() => {
                if r.is_err() {
                    return "engine";
                }
                if !*want.borrow_and_update()
                    && let Some(p) = parts.take()
                {
                    p.stop(&shared).await;
                    info!("the node stopped: the dashboard stays up");
                }
            }
            r = reconnect.changed() => {
                if r.is_err() {
                    return "engine";
                }
                if let Some(p) = parts.take() {
                    info!("restarting the mesh and the RTMP edge with the new settings");
                    p.stop(&shared).await;
                }
            }
        }
    }
}

impl Node {
    /// Binds every listener and starts every part (unless the node was stopped from the dashboard).
    /// `flags` is the command line and environment layer of `config`. Returns once the node serves.
    pub async fn start(
        config: Config,
        flags: FileConfig,
        updates: UpdateNotices,
    ) -> anyhow::Result<Node> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data dir {}: choose another with --data-dir",
                config.data_dir.display()
            )
        })?;
        let key = identity::load_or_create_identity(&config.data_dir)?;
        let peer_id = key.public().to_peer_id();
        let publish_key = identity::load_or_create_publish_key(&config.data_dir)?;
        let api_key = datafile::load_or_create_api_key(&config.data_dir)?;
        let friends = FriendBook::load(&config.data_dir)?;
        let friend_set = Friends::new(friends.list().iter().filter_map(|f| f.id()));
        let paused = NodeState::load(&config.data_dir).paused;

        let web = WebServer::bind(config.http_listen).await?;
        let http_addr = web.local_addr();
        // The CLI (`invite`, `join`) finds the running node's dashboard here.
        datafile::write_atomic(
            &config.data_dir.join(datafile::HTTP_ADDRESS_FILE),
            http_addr.to_string().as_bytes(),
            false,
        )?;

        let streams = Streams::new(config.hub_config());
        let shutdown = CancellationToken::new();
        let edge = EdgeSlot::default();
        let mesh = MeshSlot::default();

        let registry = crate::metrics::registry(&streams, &edge, &mesh);
        let shared = Arc::new(Shared {
            data_dir: config.data_dir.clone(),
            key,
            peer_id,
            publish_key: publish_key.clone(),
            boot_config: config.clone(),
            config: RwLock::new(config.clone()),
            flags,
            streams,
            mesh,
            edge,
            rtmp_addr: RwLock::new(config.rtmp_listen),
            http_addr,
            started: Instant::now(),
            friends: Mutex::new(friends),
            friend_set,
            want_running: watch::channel(!paused).0,
            running: watch::channel(false).0,
            reconnect: watch::channel(0).0,
            control: tokio::sync::Mutex::new(()),
            restart_needed: AtomicBool::new(false),
            restart: CancellationToken::new(),
            updates,
            registry,
            coordinator: OnceLock::new(),
        });
        if let Some(url) = config.coordinator_url() {
            let figures = Arc::new(coordinator::report::NodeFigures::new(Arc::downgrade(
                &shared,
            )));
            let c = Coordinator::start(url, shared.key.clone(), &config.data_dir, figures)?;
            let _ = shared.coordinator.set(c);
        }
        let first_parts = if paused {
            info!("the node was stopped from the dashboard: only the dashboard runs until Start");
            None
        } else {
            Some(Parts::start(&shared, &shutdown).await?)
        };
        let rtmp_addr = *shared.rtmp_addr.read();
        let publish_key_required = config.publish_key_required();

        let mut tasks = JoinSet::new();
        {
            let (shared, token) = (shared.clone(), shutdown.clone());
            tasks.spawn(run_engine(shared, first_parts, token));
        }
        if let Some(c) = shared.coordinator() {
            let (c, shared, token) = (c.clone(), shared.clone(), shutdown.clone());
            tasks.spawn(async move {
                c.run(shared, token).await;
                "coordinator"
            });
        }
        {
            let token = shutdown.child_token();
            let api = Arc::new(Api::new(shared.clone()));
            let web_config = WebConfig {
                api_key,
                password_hash: config.http_password.clone(),
            };
            tasks.spawn(async move {
                web.run(api, web_config, token).await;
                "web server"
            });
        }
        let listen_addrs = shared
            .mesh
            .active()
            .map(|m| m.status().listen_addrs.join(" "))
            .unwrap_or_default();
        info!(
            %peer_id,
            listen_addrs,
            rtmp_listen = %rtmp_addr,
            http_listen = %http_addr,
            publish_key_required,
            paused,
            version = env!("CARGO_PKG_VERSION"),
            "streamr-node ready"
        );
        Ok(Node {
            peer_id,
            rtmp_addr,
            http_addr,
            publish_key,
            publish_key_required,
            paused,
            restart: shared.restart.clone(),
            shutdown,
            tasks,
        })
    }

    /// Runs until `stop` resolves (Ctrl-C, SIGTERM), the dashboard asks for a restart, or a part dies;
    /// then shuts down within `grace`.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) -> anyhow::Result<Exit> {
        let mut exit = Exit::Stopped;
        let failure = tokio::select! {
            _ = stop => None,
            _ = self.restart.cancelled() => {
                exit = Exit::Restart;
                None
            }
            Some(r) = self.tasks.join_next() => Some(match r {
                Ok(name) => format!("the {name} stopped unexpectedly"),
                Err(e) => format!("a part of the node failed: {e}"),
            }),
        };
        if let Some(f) = &failure {
            error!("{f}; stopping the node");
        }
        info!(
            grace_secs = grace.as_secs(),
            "shutting down: closing players and publishers"
        );
        self.shutdown.cancel();
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("some connections did not close within the grace period; stopping them now");
            self.tasks.abort_all();
        }
        info!("stopped");
        match failure {
            Some(f) => Err(anyhow::anyhow!(f)),
            None => Ok(exit),
        }
    }
}

/// The URL OBS publishes to, without the stream name.
pub fn rtmp_url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    format!("rtmp://{host}:{}/live", addr.port())
}

/// Restarts the mesh whenever it stops on its own, until the node shuts down.
async fn supervise_mesh(
    slot: MeshSlot,
    cfg: MeshConfig,
    streams: Streams,
    token: CancellationToken,
) {
    loop {
        let Some(mesh) = slot.get() else {
            return;
        };
        mesh.stopped().await;
        if token.is_cancelled() {
            return;
        }
        let why = mesh.failure().unwrap_or_else(|| "it stopped".into());
        error!(reason = %why, "the mesh failed; restarting it (players and publishers stay connected)");
        let mut delays = restart_delays();
        loop {
            let delay = delays.next().unwrap_or(RESTART_MAX);
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            match Mesh::start(cfg.clone(), streams.clone(), token.child_token()).await {
                Ok(m) => {
                    info!("mesh restarted");
                    streams.set_finder(Some(m.finder()));
                    slot.set(m);
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "cannot restart the mesh yet");
                }
            }
        }
    }
}

/// Delays before a failed part of the node (the mesh, a relay task) is started again: 1 s doubling to 30 s.
/// No jitter: nothing outside this process waits on these restarts.
fn restart_delays() -> backon::ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(RESTART_MAX)
        .without_max_times()
        .build()
}

/// The longest step of [`restart_delays`].
const RESTART_MAX: Duration = Duration::from_secs(30);

/// A part that ran this long before it ended had worked: its restart delays start over.
const RAN_STABLE: Duration = Duration::from_secs(30);

/// Runs a relay (`start` gives its future for a cancellation token) as a task of its own, and starts it again
/// whenever it ends or panics before `token` is cancelled, after [`restart_delays`]. A relay
/// catches the panics of its own attempts; this is the net under that, so that no relay can stop the node
/// (a relay task used to be one of the node's parts: its panic stopped everything).
pub(crate) async fn supervise_relay<F, Fut>(
    what: &'static str,
    name: &str,
    restarts: &AtomicU64,
    token: CancellationToken,
    mut start: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut delays = restart_delays();
    loop {
        let started = Instant::now();
        let mut task = tokio::spawn(start(token.child_token()));
        let ended = tokio::select! {
            _ = token.cancelled() => {
                let _ = task.await;
                return;
            }
            r = &mut task => r,
        };
        if token.is_cancelled() {
            return;
        }
        restarts.fetch_add(1, Relaxed);
        if started.elapsed() >= RAN_STABLE {
            delays = restart_delays();
        }
        let delay = delays.next().unwrap_or(RESTART_MAX);
        match ended {
            Err(e) if e.is_panic() => {
                error!(stream = %name, retry_in = ?delay, "the {what} relay panicked; starting it again")
            }
            _ => {
                warn!(stream = %name, retry_in = ?delay, "the {what} relay stopped; starting it again")
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Restarts the program: after this, `run_until` returns [`Exit::Restart`].
pub fn request_restart(shared: &Shared) {
    shared.restart.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(start_paused = true)]
    async fn a_relay_that_panics_or_ends_is_started_again_until_shutdown() {
        let restarts = Arc::new(AtomicU64::new(0));
        let runs = Arc::new(AtomicUsize::new(0));
        let token = CancellationToken::new();
        let sup = {
            let (restarts, runs, token) = (restarts.clone(), runs.clone(), token.clone());
            tokio::spawn(async move {
                supervise_relay("pull", "cam", &restarts, token, |t| {
                    let n = runs.fetch_add(1, Relaxed);
                    async move {
                        match n {
                            0 => panic!("a bug in a relay"),
                            1 => {} // ended on its own
                            _ => t.cancelled().await,
                        }
                    }
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            runs.load(Relaxed),
            3,
            "started again after a panic and after an end"
        );
        assert_eq!(restarts.load(Relaxed), 2);
        token.cancel();
        sup.await.expect("the supervisor returns on shutdown");
    }
}
