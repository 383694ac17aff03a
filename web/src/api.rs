//! The JSON shapes of the HTTP API and the trait through which the web server asks the node for them.
//! The web crate knows nothing of libp2p or RTMP: the node fills these in.

use serde::{Deserialize, Serialize};

/// `GET /api/v1/status`. Readers (netlab, the tests) deserialize it too; every type here takes a default
/// for a field it lacks, so the status of an older or newer node still reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Status {
    /// The node id: the libp2p PeerId of its key.
    pub peer_id: String,
    /// Version of streamr-node.
    pub version: String,
    /// RTMP address actually bound.
    pub rtmp_listen: String,
    /// HTTP address actually bound.
    pub http_listen: String,
    /// URL that OBS publishes to (without the stream name).
    pub rtmp_url: String,
    /// Whether publishing needs the key.
    pub publish_key_required: bool,
    /// The publish key; only in answers to requests from this machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_key: Option<String>,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Mesh addresses of this node, each ending in `/p2p/<peer_id>`: give one to a friend's node as
    /// `--bootstrap`.
    pub listen_addrs: Vec<String>,
    /// Confirmed external (public) addresses.
    pub external_addrs: Vec<String>,
    /// Connected mesh peers.
    pub peers: Vec<PeerStatus>,
    /// Streams on this node.
    pub streams: Vec<StreamStatus>,
    /// Streams known in the mesh (from the catalog), playable here by name.
    pub mesh_streams: Vec<MeshStream>,
    /// Upload spent on downstream peers, kbit/s, and the cap (0 = none).
    pub upload_kbps: u64,
    /// The upload cap, kbit/s (0 = unlimited).
    pub max_upload_kbps: u32,
    /// How this node reaches and is reached through NATs.
    pub nat: NatStatus,
}

/// NAT traversal in [`Status`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct NatStatus {
    /// "public", "private" or "unknown".
    pub reachability: String,
    /// Confirmed external addresses that are not relayed.
    pub external_addrs: Vec<String>,
    /// Relays this node holds reservations on (node ids).
    pub relays: Vec<String>,
    /// UPnP port mapping state.
    pub upnp: String,
    /// What the person running the node should know, in plain words.
    pub hint: String,
    /// This node offers a relay to others.
    pub relay_service: bool,
    /// Hole punches tried.
    pub hole_punch_attempts: u64,
    /// Hole punches that gave a direct connection.
    pub hole_punch_successes: u64,
    /// Failed hole punches by reason.
    pub hole_punch_failures: std::collections::BTreeMap<String, u64>,
    /// Connections upgraded from relayed to direct.
    pub upgrades: usize,
    /// Median time from relayed to direct, ms.
    pub time_to_direct_p50_ms: Option<u64>,
    /// Longest time from relayed to direct, ms.
    pub time_to_direct_max_ms: Option<u64>,
    /// Media bytes sent to peers reached only through a relay.
    pub relayed_bytes_sent: u64,
    /// Media bytes received from peers reached only through a relay.
    pub relayed_bytes_received: u64,
}

/// A connected peer in [`Status`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct PeerStatus {
    /// Its node id.
    pub peer_id: String,
    /// "direct" or "relayed".
    pub connection: String,
    /// Last ping round trip, ms.
    pub rtt_ms: Option<f64>,
    /// Remote address of the connection in use.
    pub addr: String,
    /// Time from the first relayed to the first direct connection, if upgraded by hole punching.
    pub direct_after_ms: Option<u64>,
}

/// A stream known in the mesh, in [`Status`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct MeshStream {
    /// Stream name.
    pub name: String,
    /// Origin node id.
    pub origin: String,
    /// Nodes known to provide it.
    pub providers: usize,
    /// Fewest hops from the origin among them.
    pub min_hops: u8,
    /// What to play to pick exactly this stream: `NAME@<first 12 characters of the origin id>`.
    pub play_as: String,
}

/// One stream in [`Status`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct StreamStatus {
    /// Stream name.
    pub name: String,
    /// Published by an encoder connected to this node's RTMP edge.
    pub local_publisher: bool,
    /// A source is attached now.
    pub live: bool,
    /// Local players now.
    pub players: u64,
    /// Incoming bitrate.
    pub bitrate_bps: u64,
    /// Frames received from the source(s).
    pub frames: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Frames delivered to all subscribers.
    pub frames_out: u64,
    /// Payload bytes delivered to all subscribers.
    pub bytes_out: u64,
    /// Frames slow subscribers skipped.
    pub dropped_frames: u64,
    /// Origin node id (None until the stream has a mesh identity).
    pub origin: Option<String>,
    /// Peer this node receives the stream from (None at the origin).
    pub upstream: Option<String>,
    /// Distance from the origin in hops.
    pub hops: Option<u8>,
    /// Downstream mesh peers served now.
    pub subscribers: u64,
}

/// What the web server needs from the node.
pub trait NodeApi: Send + Sync + 'static {
    /// The status; `local` says whether the request came from this machine (secrets are only shown then).
    fn status(&self, local: bool) -> Status;
    /// Prometheus text exposition.
    fn metrics(&self) -> String;
}
