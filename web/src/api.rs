//! The JSON shapes of the HTTP API and the trait through which the web server asks the node for them.
//! The web crate knows nothing of libp2p or RTMP: the node fills these in.

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

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
    /// The coordinator, when the node has one (the `coordinator` setting): absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<CoordinatorStatus>,
}

/// The coordinator in [`Status`]: whether it answers, what it says about this node (earnings, trust,
/// assignments, the latest version), the network's streams it lists, and the node's receipts and sessions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct CoordinatorStatus {
    /// Its URL.
    pub url: String,
    /// The last request to it succeeded.
    pub online: bool,
    /// This node is registered with it (in this run).
    pub registered: bool,
    /// Why the last request failed, while it is offline.
    pub last_error: Option<String>,
    /// Unix ms of the last successful request.
    pub last_contact_ms: Option<i64>,
    /// Seconds between heartbeats, as the coordinator asks.
    pub heartbeat_interval_secs: u64,
    /// Node ids of the public nodes it gave to join the mesh through.
    pub bootstrap_peers: Vec<String>,
    /// What this node earned (from the last heartbeat).
    pub earnings: Option<EarningsStatus>,
    /// This node's trust score (from the last heartbeat).
    pub trust: Option<TrustStatus>,
    /// The newest release, as the coordinator names it.
    pub latest_version: Option<VersionStatus>,
    /// `latest_version` is newer than this node.
    pub update_available: bool,
    /// Streams the operator asked this node to pull into the mesh.
    pub assignments: Vec<AssignmentStatus>,
    /// The network's live streams, as the coordinator lists them (`GET /api/v1/streams`).
    pub streams: Vec<NetworkStream>,
    /// Viewing sessions open now (one per stream watched here from another node).
    pub sessions: Vec<SessionStatus>,
    /// Bandwidth receipts, both ways.
    pub receipts: ReceiptStatus,
    /// Receipts and session events waiting for the coordinator (kept on disk).
    pub queued_receipts: usize,
    /// Session events waiting for the coordinator.
    pub queued_session_events: usize,
    /// Queued items dropped because the queue was full (or too old).
    pub queue_dropped: u64,
}

/// Earnings in [`CoordinatorStatus`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct EarningsStatus {
    /// Bytes relayed and signed for by the nodes that received them, all time.
    pub verified_bytes: u64,
    /// Bytes this node said it relayed, all time (shown, never paid).
    pub claimed_bytes: u64,
    /// The operator's rate per GB (10^9 bytes) verified.
    pub rate_per_gb: f64,
    /// Earned today (UTC).
    pub earnings_today: f64,
    /// Earned all time.
    pub earnings_total: f64,
}

/// Trust in [`CoordinatorStatus`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct TrustStatus {
    /// 0-100.
    pub score: u8,
    /// Points per part: uptime (of 35), receipt backing (30), reachability (15), age (10), conduct (10).
    pub components: std::collections::BTreeMap<String, f64>,
    /// Why points were lost, one sentence each.
    pub reasons: Vec<String>,
}

/// A release the coordinator names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct VersionStatus {
    /// Its version.
    pub version: String,
    /// Where to read about it.
    pub url: Option<String>,
    /// One line about it.
    pub notes: Option<String>,
}

/// An operator's assignment in [`CoordinatorStatus`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct AssignmentStatus {
    /// The coordinator's id for it.
    pub id: String,
    /// The name it is published under.
    pub stream_name: String,
    /// The `rtmp://` URL pulled.
    pub rtmp_url: String,
    /// "running", "stopped" (the node is stopped) or why it was refused.
    pub state: String,
}

/// A stream of the network in [`CoordinatorStatus`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct NetworkStream {
    /// Stream name.
    pub name: String,
    /// The publishing node.
    pub origin_peer: String,
    /// What to play to get exactly this stream: `NAME@<first 12 characters of the origin id>`.
    pub play_as: String,
    /// Viewers the coordinator counts (the origin's players and open sessions).
    pub viewers: u64,
    /// kbit/s as the origin measured it.
    pub bitrate_kbps: u64,
    /// When publishing started (Unix ms).
    pub started_at_ms: i64,
}

/// An open viewing session in [`CoordinatorStatus`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct SessionStatus {
    /// The session id told to the coordinator.
    pub session_id: String,
    /// Stream watched.
    pub stream: String,
    /// Its origin, when known.
    pub origin: Option<String>,
    /// Local players now.
    pub players: u64,
    /// Bytes of the stream received since the session opened.
    pub bytes: u64,
}

/// Bandwidth receipts in [`CoordinatorStatus`]: what this node signed for what it received, and what the
/// nodes it relays to signed for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct ReceiptStatus {
    /// Receipts this node signed and sent to its upstreams.
    pub signed: u64,
    /// Bytes in the latest receipt of each series it signed, summed.
    pub signed_bytes: u64,
    /// Receipts its downstream peers sent that it accepted and queued for the coordinator.
    pub received: u64,
    /// Bytes in the latest accepted receipt of each series, summed: what the coordinator pays once it has
    /// them all.
    pub received_bytes: u64,
    /// Receipts refused here (bad signature, for another node or stream, undecodable).
    pub refused: u64,
    /// Receipts the coordinator refused for good (forged, duplicate...), this run.
    pub refused_by_coordinator: u64,
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

/// What the dashboard shows beyond [`Status`] (which stays as scripts and netlab know it). Pushed by
/// `GET /api/v1/events` whenever it changes, at most once a second.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Overview {
    /// The node takes part in the mesh and serves RTMP (false: paused with Stop).
    pub running: bool,
    /// The name this node shows to friends ("" = none set).
    pub nickname: String,
    /// The people whose invites this node accepted.
    pub friends: Vec<FriendStatus>,
    /// A setting was saved that only takes effect after a restart of the program.
    pub restart_needed: bool,
    /// A newer release, if the update check found one: (version, download page).
    pub update: Option<UpdateNotice>,
    /// The newest crash report in the data dir, for a bug report (nothing leaves the machine by itself).
    pub last_crash: Option<LastCrash>,
    /// Everything else, as `GET /api/v1/status` has it (with the publish key: the dashboard is local).
    pub status: Status,
}

/// A crash report the dashboard offers to copy.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LastCrash {
    /// When it was written (RFC 3339, UTC).
    pub time: String,
    /// The report (what panicked, where, in which session, the log lines before it).
    pub text: String,
}

/// A newer release than the one running.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UpdateNotice {
    /// Its version.
    pub version: String,
    /// Where to get it.
    pub url: String,
}

/// A friend in [`Overview`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FriendStatus {
    /// Their node id.
    pub peer_id: String,
    /// Their nickname (from their invite), if they had one.
    pub nickname: Option<String>,
    /// Connected now.
    pub online: bool,
    /// "direct" or "relayed" while online.
    pub connection: Option<String>,
    /// Last ping round trip, ms.
    pub rtt_ms: Option<f64>,
}

/// `POST /api/v1/invites`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// A stream the friend's node opens once joined.
    #[serde(default)]
    pub stream: Option<String>,
    /// How long the invite stays valid: `30m`, `24h`, `7d`, `never` (default 7d).
    #[serde(default)]
    pub expires: Option<String>,
}

/// An invite, as the node makes it (the web server adds the QR code).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Invite {
    /// The join code, for people (dash-separated groups).
    pub code: String,
    /// `http://127.0.0.1:8080/join#CODE`: opens the friend's own dashboard with the code filled in.
    pub link: String,
    /// When it expires (unix seconds), if ever.
    pub expires: Option<u64>,
    /// With a coordinator: the same invite under a 10-character code to read aloud (it stands for the
    /// long code at the coordinator).
    pub short_code: Option<String>,
    /// When the short code stops working (unix seconds).
    pub short_code_expires: Option<u64>,
    /// Why there is no short code although a coordinator is set.
    pub short_code_error: Option<String>,
}

/// `POST /api/v1/join`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The code, or the whole link.
    pub code: String,
}

/// What a successful join did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Joined {
    /// The friend's node id.
    pub peer_id: String,
    /// Their nickname, if their invite had one.
    pub nickname: Option<String>,
    /// The stream the invite opens, if any (play it at `/live/NAME.flv`).
    pub stream: Option<String>,
    /// In words, for the page.
    pub message: String,
}

/// One setting, as `GET /api/v1/settings` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SettingView {
    /// Key in `config.toml` (and in `PUT /api/v1/settings`).
    pub key: String,
    /// The value in effect now (as JSON); secrets are shown as `"set"` or null.
    pub value: serde_json::Value,
    /// The value saved in `config.toml`, if any (it may wait for a restart).
    pub saved: Option<serde_json::Value>,
    /// The built-in default, as `config.toml` spells it.
    pub default: String,
    /// What it does.
    pub doc: String,
    /// "live" (applied at once), "reconnect" (applied at once by reconnecting the mesh and the RTMP
    /// edge: players and OBS reconnect), or "restart" (after a restart of the program).
    pub applies: String,
    /// Set by a command-line flag or an environment variable, which win over `config.toml`.
    pub overridden: Option<String>,
    /// Can be changed through the API (secrets and files are not).
    pub editable: bool,
}

/// `GET|PUT /api/v1/settings`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Settings {
    /// Every setting, in definition order.
    pub settings: Vec<SettingView>,
    /// A saved change waits for a restart of the program.
    pub restart_needed: bool,
    /// After a PUT: what happened, in words.
    pub message: Option<String>,
}

/// A refusal the API explains.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: u16,
    /// What happened and what to do next.
    pub error: String,
    /// The setting or field at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Details for people who want them (e.g. each address tried and why it failed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl ApiError {
    /// A 400 with this message.
    pub fn bad_request(error: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            error: error.into(),
            field: None,
            details: Vec::new(),
        }
    }

    /// An error with this status.
    pub fn with_status(status: u16, error: impl Into<String>) -> Self {
        ApiError {
            status,
            ..Self::bad_request(error)
        }
    }
}

/// What an asynchronous API call returns.
pub type ApiFuture<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send>>;

/// What the web server needs from the node.
pub trait NodeApi: Send + Sync + 'static {
    /// The status; `local` says whether the request came from this machine (secrets are only shown then).
    fn status(&self, local: bool) -> Status;
    /// Prometheus text exposition.
    fn metrics(&self) -> String;
    /// What the dashboard shows.
    fn overview(&self) -> Overview;
    /// The node's streams, for HTTP-FLV playback.
    fn streams(&self) -> streamr_media::Streams;
    /// Makes an invite.
    fn invite(&self, request: InviteRequest) -> ApiFuture<Invite>;
    /// Joins a friend by their invite: dial, remember, open the invited stream.
    fn join(&self, code: String) -> ApiFuture<Joined>;
    /// Stop (false) or start (true) the node; the dashboard stays up either way.
    fn set_running(&self, running: bool) -> ApiFuture<()>;
    /// The settings.
    fn settings(&self) -> Settings;
    /// Changes settings: `changes` maps keys to new values (JSON). Validates all before saving any.
    fn update_settings(
        &self,
        changes: serde_json::Map<String, serde_json::Value>,
    ) -> ApiFuture<Settings>;
    /// Restarts the program (after settings that need it).
    fn restart(&self) -> ApiFuture<()>;
}
