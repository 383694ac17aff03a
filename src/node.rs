//! `Node`: wires the parts together (hubs, RTMP edge, relays, web) and supervises them. Each part is a task
//! under one cancellation token; if one dies unexpectedly, the node stops everything and reports it.

use crate::config::Config;
use crate::identity;
use crate::metrics::{NodeCollector, render};
use anyhow::Context;
use libp2p::PeerId;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use streamr_edge::{EdgeConfig, EdgeStats, RtmpServer};
use streamr_media::{HubConfig, SourceKind, Streams};
use streamr_mesh::{Mesh, MeshConfig};
use streamr_web::{MeshStream, NatStatus, NodeApi, PeerStatus, Status, StreamStatus, WebServer};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// The node id.
    pub peer_id: PeerId,
    /// RTMP edge address actually bound.
    pub rtmp_addr: SocketAddr,
    /// HTTP address actually bound.
    pub http_addr: SocketAddr,
    /// The publish key (secret).
    pub publish_key: String,
    /// Whether publishing needs the key.
    pub publish_key_required: bool,
    shutdown: CancellationToken,
    tasks: JoinSet<&'static str>,
}

/// The running mesh. If libp2p fails (a panic in one of its behaviours), the node starts a new mesh and
/// puts it here; hubs, players and publishers are untouched meanwhile.
#[derive(Debug, Clone)]
pub struct MeshSlot(Arc<parking_lot::RwLock<Mesh>>);

impl MeshSlot {
    /// The mesh now.
    pub fn get(&self) -> Mesh {
        self.0.read().clone()
    }

    fn set(&self, mesh: Mesh) {
        *self.0.write() = mesh;
    }
}

/// What the web server reads.
struct Api {
    peer_id: PeerId,
    rtmp_addr: SocketAddr,
    http_addr: SocketAddr,
    publish_key: String,
    publish_key_required: bool,
    started: Instant,
    streams: Streams,
    mesh: MeshSlot,
    max_upload_kbps: u32,
    registry: Registry,
}

impl NodeApi for Api {
    fn status(&self, local: bool) -> Status {
        let mesh_now = self.mesh.get();
        let mesh = mesh_now.status();
        let streams = self
            .streams
            .hubs()
            .into_iter()
            .filter(|hub| !hub.is_idle())
            .map(|hub| (hub.snapshot(), mesh_now.stream(&hub)))
            .map(|(h, m)| StreamStatus {
                local_publisher: h.live && h.source == Some(SourceKind::Publisher),
                live: h.live,
                players: h.players,
                bitrate_bps: h.bitrate_bps,
                frames: h.frames_in,
                bytes_in: h.bytes_in,
                frames_out: h.frames_out,
                bytes_out: h.bytes_out,
                dropped_frames: h.dropped,
                origin: m.as_ref().map(|m| m.origin.clone()),
                upstream: m.as_ref().and_then(|m| m.upstream.clone()),
                hops: m.as_ref().map(|m| m.hops),
                subscribers: h.peers,
                name: h.name,
            })
            .collect();
        let mesh_streams = mesh
            .known
            .iter()
            .map(|k| {
                let origin = k.id.origin.to_string();
                MeshStream {
                    play_as: streamr_mesh::play_name(&k.id.name, &k.id.origin),
                    name: k.id.name.clone(),
                    origin,
                    providers: k.providers,
                    min_hops: k.min_hops,
                }
            })
            .collect();
        let peers = mesh
            .peers
            .into_iter()
            .map(|p| PeerStatus {
                peer_id: p.peer_id,
                connection: p.connection.to_string(),
                rtt_ms: p.rtt_ms,
                addr: p.addr,
                direct_after_ms: p.direct_after_ms,
            })
            .collect();
        let n = &mesh.nat;
        let ms = mesh_now.stats();
        let nat = NatStatus {
            reachability: n.reachability.to_string(),
            external_addrs: n.public_addrs.iter().map(|a| a.to_string()).collect(),
            relays: n.relays.iter().map(|p| p.to_string()).collect(),
            upnp: n.upnp.clone(),
            hint: n.hint.clone(),
            relay_service: n.relay_service,
            hole_punch_attempts: n.punch_attempts,
            hole_punch_successes: n.punch_successes,
            hole_punch_failures: n.punch_failures.clone(),
            upgrades: n.upgrades,
            time_to_direct_p50_ms: n.time_to_direct_ms.map(|x| x.0),
            time_to_direct_max_ms: n.time_to_direct_ms.map(|x| x.1),
            relayed_bytes_sent: ms.relayed_bytes_sent.load(Relaxed),
            relayed_bytes_received: ms.relayed_bytes_received.load(Relaxed),
        };
        Status {
            peer_id: self.peer_id.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            rtmp_listen: self.rtmp_addr.to_string(),
            http_listen: self.http_addr.to_string(),
            rtmp_url: rtmp_url(self.rtmp_addr),
            publish_key_required: self.publish_key_required,
            publish_key: local.then(|| self.publish_key.clone()),
            uptime_secs: self.started.elapsed().as_secs(),
            listen_addrs: mesh.listen_addrs,
            external_addrs: mesh.external_addrs,
            peers,
            streams,
            mesh_streams,
            upload_kbps: mesh.upload_kbps,
            max_upload_kbps: self.max_upload_kbps,
            nat,
        }
    }

    fn metrics(&self) -> String {
        render(&self.registry)
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
        let mesh = slot.get();
        mesh.stopped().await;
        if token.is_cancelled() {
            return;
        }
        let why = mesh.failure().unwrap_or_else(|| "it stopped".into());
        error!(reason = %why, "the mesh failed; restarting it (players and publishers stay connected)");
        let mut delay = Duration::from_secs(1);
        loop {
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
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

impl Node {
    /// Binds every listener and starts every part. Returns once the node serves.
    pub async fn start(config: Config) -> anyhow::Result<Node> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data dir {}: choose another with --data-dir",
                config.data_dir.display()
            )
        })?;
        let key = identity::load_or_create_identity(&config.data_dir)?;
        let peer_id = key.public().to_peer_id();
        let publish_key = identity::load_or_create_publish_key(&config.data_dir)?;
        let publish_key_required = config.publish_key_required();

        let streams = Streams::new(HubConfig::default());
        let mut edge_cfg = EdgeConfig::new(config.rtmp_listen);
        edge_cfg.publish_key = publish_key_required.then(|| publish_key.clone());
        edge_cfg.play_merge = Duration::from_millis(config.rtmp_merge_ms);
        let rtmp = RtmpServer::bind(edge_cfg).await?;
        let rtmp_addr = rtmp.local_addr();
        let edge_stats: Arc<EdgeStats> = rtmp.stats();
        let web = WebServer::bind(config.http_listen).await?;
        let http_addr = web.local_addr();

        let shutdown = CancellationToken::new();
        let mesh_cfg = config.mesh_config(key.clone())?;
        let mesh_token = shutdown.child_token();
        let first_mesh =
            Mesh::start(mesh_cfg.clone(), streams.clone(), mesh_token.child_token()).await?;
        streams.set_finder(Some(first_mesh.finder()));
        let mesh = MeshSlot(Arc::new(parking_lot::RwLock::new(first_mesh)));

        let mut registry = Registry::default();
        registry.register_collector(Box::new(NodeCollector {
            streams: streams.clone(),
            edge: edge_stats,
            mesh: mesh.clone(),
        }));
        let api = Arc::new(Api {
            peer_id,
            rtmp_addr,
            http_addr,
            publish_key: publish_key.clone(),
            publish_key_required,
            started: Instant::now(),
            streams: streams.clone(),
            mesh: mesh.clone(),
            max_upload_kbps: config.max_upload_kbps,
            registry,
        });

        let mut tasks = JoinSet::new();
        {
            let (slot, streams) = (mesh.clone(), streams.clone());
            tasks.spawn(async move {
                supervise_mesh(slot, mesh_cfg, streams, mesh_token).await;
                "mesh"
            });
        }
        {
            let (streams, token) = (streams.clone(), shutdown.child_token());
            tasks.spawn(async move {
                rtmp.run(streams, token).await;
                "rtmp edge"
            });
        }
        {
            let token = shutdown.child_token();
            tasks.spawn(async move {
                web.run(api, token).await;
                "web server"
            });
        }
        for spec in &config.pull {
            let (streams, token, spec) = (streams.clone(), shutdown.child_token(), spec.clone());
            tasks.spawn(async move {
                streamr_edge::relay::pull(spec.name, spec.url, streams, token).await;
                "pull relay"
            });
        }
        for spec in &config.push {
            let (streams, token, spec) = (streams.clone(), shutdown.child_token(), spec.clone());
            tasks.spawn(async move {
                streamr_edge::relay::push(spec.name, spec.url, streams, token).await;
                "push relay"
            });
        }
        let listen_addrs = mesh.get().status().listen_addrs.join(" ");
        info!(
            %peer_id,
            listen_addrs,
            rtmp_listen = %rtmp_addr,
            http_listen = %http_addr,
            publish_key_required,
            version = env!("CARGO_PKG_VERSION"),
            "streamr-node ready"
        );
        Ok(Node {
            peer_id,
            rtmp_addr,
            http_addr,
            publish_key,
            publish_key_required,
            shutdown,
            tasks,
        })
    }

    /// Runs until `stop` resolves (Ctrl-C, SIGTERM) or a part dies; then shuts down within `grace`.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) -> anyhow::Result<()> {
        let failure = tokio::select! {
            _ = stop => None,
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
            None => Ok(()),
        }
    }
}
