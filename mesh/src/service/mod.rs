//! The mesh service: carries the node's streams to other nodes and fetches theirs. One actor
//! ([`actor`]) owns the service's tables (the catalog, the routing table, the subscriptions served, the DHT
//! records, gossip bookkeeping) and supervises every task of the service: fetches (the subscriber side,
//! [`fetch`]), served subscriptions ([`serve`]), catalog transfers ([`gossip`]) and the accept loops. A task
//! that panics is seen, logged, counted, and restarted where that makes sense; the tasks talk to the actor
//! through a [`Client`] (commands, some with a reply). Frames never pass through the actor: they go from
//! the wire into a hub and from a hub onto the wire inside the tasks.
//!
//! Where a peer's request goes: a `/streamr/media/3` stream arrives at the accept loop, which hands it to the
//! actor; the actor applies the flood limits and starts a `serve` task; that task reads the `Subscribe` and
//! asks the actor to admit it (stream, loops, upload cap: one place decides, so simultaneous subscribers
//! cannot all slip in); then it sends frames from the hub under the flow control of
//! [`crate::session::Downstream`]. A catalog stream goes the same way to a `gossip` reader, whose entries
//! the actor merges.

mod actor;
mod fetch;
mod gossip;
mod heard;
mod metrics;
mod seal;
mod serve;
mod stats;
#[cfg(test)]
mod tests;

pub use seal::DEFAULT_SEAL_WINDOW;
pub use stats::MeshStats;

use crate::announce::StreamId;
use crate::catalog::KnownStream;
use crate::net::{self, NetConfig, RelayLimits};
use actor::{Actor, Client, Command};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId, kad};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use streamr_media::{Finder, Hub, LookupState, Streams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

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
    /// Ask the home router to open our port (PCP, NAT-PMP or UPnP IGD).
    pub upnp: bool,
    /// Try port prediction when a hole punch to a peer behind a symmetric NAT failed.
    pub port_prediction: bool,
    /// Public nodes to use as relays besides the bootstrap peers (a coordinator's list), with `/p2p/<id>`.
    pub relay_candidates: Vec<Multiaddr>,
    /// The node's friends: their streams win for a plain name (the node adds to the set live).
    pub friends: crate::Friends,
    /// Timers and windows of the protocols.
    pub tuning: MeshTuning,
    /// Bandwidth receipts: signs what this node receives and takes what its subscribers sign (none: the
    /// node signs and forwards nothing).
    pub receipts: Option<Arc<dyn crate::Receipts>>,
}

/// Why [`Mesh::dial`] found no connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot reach {peer} at {} address(es): {reason}", tried.len())]
pub struct DialFailure {
    /// The peer dialed.
    pub peer: PeerId,
    /// The addresses tried (those given, and any the node knew already).
    pub tried: Vec<Multiaddr>,
    /// What went wrong, as libp2p reports it (per address when it can tell).
    pub reason: String,
}

/// Timers and windows of the mesh's protocols.
#[derive(Debug, Clone)]
pub struct MeshTuning {
    /// How often the catalog is gossiped.
    pub gossip_interval: Duration,
    /// An upstream that sends nothing for this long (no frame, no keepalive: it sends one every
    /// `KEEPALIVE` while it has no frames) is replaced.
    pub stall_timeout: Duration,
    /// Most unacknowledged bytes in flight to one downstream peer, whatever the stream's bitrate.
    pub max_inflight: u64,
    /// Media time allowed in flight to one downstream peer (the window is this much of the stream's bitrate,
    /// within `MIN_WINDOW..=max_inflight`); beyond, frames wait in the hub, which skips them when late.
    pub max_queue_delay: Duration,
    /// At the origin, longest a batch of frames waits to be sealed ([`crate::auth`]); zero seals every frame
    /// alone.
    pub seal_window: Duration,
    /// A served node moves nearer the origin when a provider there has room
    /// ([`crate::session::Fetcher::climb`]).
    pub move_up: bool,
}

impl Default for MeshTuning {
    fn default() -> Self {
        MeshTuning {
            gossip_interval: Duration::from_secs(2),
            stall_timeout: Duration::from_secs(1),
            max_inflight: 1 << 20,
            max_queue_delay: streamr_media::DEFAULT_MAX_QUEUE_DELAY,
            seal_window: DEFAULT_SEAL_WINDOW,
            move_up: true,
        }
    }
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

/// What the actor publishes for status pages after each change, so that they never wait for it.
#[derive(Debug, Default)]
struct View {
    /// Streams known in the mesh.
    known: Vec<KnownStream>,
    /// Upload in use for downstream peers, kbit/s.
    upload_kbps: u64,
    /// Streams on this node with a lineage, by hub name, with the hub they describe.
    streams: HashMap<String, (std::sync::Weak<Hub>, StreamMesh)>,
}

/// A handle to the running mesh.
#[derive(Debug, Clone)]
pub struct Mesh {
    me: PeerId,
    client: Client,
    net: net::NetHandle,
    stats: Arc<MeshStats>,
    view: Arc<RwLock<View>>,
    cancel: CancellationToken,
    /// Set when the service stopped on its own (the libp2p task or the actor died); `Some(None)` after a
    /// normal stop.
    done: watch::Receiver<Option<Option<String>>>,
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

/// The announcement a hub carries must be for this stream.
fn matches_request(id: &StreamId, name: &str, origin_prefix: Option<&str>) -> bool {
    id.name == name && origin_prefix.is_none_or(|p| id.origin.to_string().starts_with(p))
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
                traversal: net::Traversal {
                    port_prediction: config.port_prediction,
                    relay_candidates: config.relay_candidates.clone(),
                    friends: config.friends.clone(),
                },
            },
            cancel.clone(),
        )
        .await?;
        let stats = Arc::new(MeshStats::default());
        let view = Arc::new(RwLock::new(View::default()));
        let (actor, client) = Actor::new(
            config,
            streams,
            net.clone(),
            stats.clone(),
            view.clone(),
            cancel.clone(),
        );
        let (done_tx, done) = watch::channel(None);
        let me = net.peer_id;
        let watch_cancel = cancel.clone();
        tokio::spawn(async move {
            let mut actor_task = tokio::spawn(actor.run());
            let mut actor_done = false;
            // Whichever ends first: libp2p's task ending before we were cancelled means it failed (a panic
            // in a behaviour); the actor ending before means it panicked. Either way the service stops and
            // the node starts a new one.
            let why = tokio::select! {
                r = net_task => match r {
                    Err(e) if e.is_panic() => Some("the libp2p event loop panicked".to_string()),
                    Err(e) => Some(format!("the libp2p event loop failed: {e}")),
                    Ok(()) => Some("the libp2p event loop stopped".to_string()),
                },
                r = &mut actor_task => {
                    actor_done = true;
                    match r {
                        Err(e) if e.is_panic() => Some(format!("the mesh service panicked: {}", panic_text(e))),
                        Err(e) => Some(format!("the mesh service failed: {e}")),
                        Ok(()) => None,
                    }
                }
            };
            let why = why.filter(|_| !watch_cancel.is_cancelled());
            if let Some(w) = &why {
                warn!("{w}; the mesh stops");
            }
            watch_cancel.cancel();
            // The actor stops its tasks before anyone hears that the mesh stopped: fetches drop their
            // sources, so the next mesh sees which streams players still wait for and fetches them again.
            if !actor_done {
                let _ = actor_task.await;
            }
            let _ = done_tx.send(Some(why));
        });
        Ok(Mesh {
            me,
            client,
            net,
            stats,
            view,
            cancel,
            done,
        })
    }

    /// What looks for streams on behalf of local players: give it to [`Streams::set_finder`].
    pub fn finder(&self) -> Arc<dyn Finder> {
        Arc::new(MeshFinder {
            client: self.client.clone(),
            cancel: self.cancel.clone(),
        })
    }

    /// Connects to `peer` at `addrs` (an invite's addresses, with or without `/p2p/<peer>`) within
    /// `limit`, and remembers the addresses for later dials. Already connected is success.
    pub async fn dial(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        limit: Duration,
    ) -> Result<(), DialFailure> {
        let addrs: Vec<Multiaddr> = addrs
            .into_iter()
            .map(|a| match a.iter().last() {
                Some(libp2p::multiaddr::Protocol::P2p(p)) if p == peer => {
                    let mut a = a;
                    a.pop();
                    a
                }
                _ => a,
            })
            .collect();
        self.net
            .connect(peer, addrs.clone(), limit)
            .await
            .map_err(|reason| DialFailure {
                peer,
                tried: addrs,
                reason,
            })
    }

    /// This node's id.
    pub fn peer_id(&self) -> PeerId {
        self.me
    }

    /// Adds public nodes (addresses ending in `/p2p/<id>`, e.g. a coordinator's list) as relay candidates.
    pub async fn add_relay_candidates(&self, addrs: Vec<Multiaddr>) {
        self.net.add_relay_candidates(addrs).await;
    }

    /// Counters.
    pub fn stats(&self) -> &MeshStats {
        &self.stats
    }

    /// libp2p counters.
    pub fn net_stats(&self) -> &net::NetStats {
        self.net.stats()
    }

    /// Why the mesh stopped on its own, if it did (as opposed to being cancelled).
    pub fn failure(&self) -> Option<String> {
        self.done.borrow().clone().flatten()
    }

    /// Waits until the mesh has stopped (after the cancel token fired, or a failure).
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| d.is_some()).await;
    }

    /// What the mesh knows about a hub.
    pub fn stream(&self, hub: &Arc<Hub>) -> Option<StreamMesh> {
        let view = self.view.read();
        let (weak, s) = view.streams.get(hub.name())?;
        std::ptr::eq(weak.as_ptr(), Arc::as_ptr(hub)).then(|| s.clone())
    }

    /// The mesh's status.
    pub fn status(&self) -> MeshStatus {
        let snap = self.net.snapshot();
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
        let view = self.view.read();
        MeshStatus {
            listen_addrs: snap.listen_addrs.iter().map(|a| a.to_string()).collect(),
            external_addrs: snap.external_addrs.iter().map(|a| a.to_string()).collect(),
            peers,
            known: view.known.clone(),
            upload_kbps: view.upload_kbps,
            nat: snap.nat.clone(),
        }
    }
}

/// The text of a panic payload.
fn panic_text(e: tokio::task::JoinError) -> String {
    let p = e.into_panic();
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The mesh as the node's [`Finder`]: a player's wish becomes a fetch in the actor.
#[derive(Debug)]
struct MeshFinder {
    client: Client,
    cancel: CancellationToken,
}

impl Finder for MeshFinder {
    fn find(&self, name: &str) -> watch::Receiver<LookupState> {
        let (tx, rx) = watch::channel(LookupState::Searching);
        if !self.cancel.is_cancelled() {
            self.client.try_send(Command::Want {
                key: name.to_string(),
                reply: tx,
            });
        }
        rx
    }
}
