//! The coordinator's HTTP API as serde types: every request and answer body, their limits, and the checks
//! both sides apply to untrusted values (stream names, RTMP URLs, addresses).
//!
//! Paths are under [`API_PREFIX`]. Node requests are signed (see [`crate::auth`]); operator requests carry
//! `Authorization: Bearer TOKEN`. Errors answer [`ApiError`] with a non-2xx status.

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::receipt::SignedReceipt;

/// Every path starts with this.
pub const API_PREFIX: &str = "/api/v1";
/// Largest request body the server reads.
pub const MAX_REQUEST_BODY: usize = 256 * 1024;
/// Largest answer body the client reads.
pub const MAX_RESPONSE_BODY: usize = 1024 * 1024;
/// Most receipts in one heartbeat (the client sends the rest in the next one).
pub const MAX_RECEIPTS_PER_HEARTBEAT: usize = 256;
/// Longest stream name (the edge's limit).
pub const MAX_STREAM_NAME: usize = 64;
/// Longest RTMP URL in an assignment.
pub const MAX_RTMP_URL: usize = 512;
/// Longest multiaddr string accepted.
pub const MAX_ADDR: usize = 256;
/// Most addresses of one kind in a registration or a bootstrap peer.
pub const MAX_ADDRS: usize = 16;
/// Most bootstrap peers in a registration answer.
pub const MAX_BOOTSTRAP_PEERS: usize = 16;
/// While fewer public nodes than this are online, a registration's answer adds other online nodes with the
/// addresses they listen on, so that a network whose nodes all joined through the coordinator can start.
pub const MIN_PUBLIC_BOOTSTRAP_PEERS: usize = 4;
/// Most streams in one heartbeat list.
pub const MAX_STREAMS: usize = 256;
/// Most assignments for one node.
pub const MAX_ASSIGNMENTS: usize = 32;
/// Longest invite body (opaque to the coordinator).
pub const MAX_INVITE: usize = 2048;
/// Longest nickname, version, OS or architecture string.
pub const MAX_LABEL: usize = 64;

/// Serde for a [`PeerId`] as its base58 text.
pub mod peer_id_text {
    use libp2p_identity::PeerId;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes the base58 form.
    pub fn serialize<S: Serializer>(peer: &PeerId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(peer)
    }

    /// Parses the base58 form.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PeerId, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e| D::Error::custom(format!("not a peer id: {e}")))
    }
}

/// Serde for an optional [`PeerId`].
pub mod opt_peer_id_text {
    use libp2p_identity::PeerId;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes the base58 form or null.
    pub fn serialize<S: Serializer>(peer: &Option<PeerId>, s: S) -> Result<S::Ok, S::Error> {
        match peer {
            Some(p) => s.collect_str(p),
            None => s.serialize_none(),
        }
    }

    /// Parses the base58 form or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PeerId>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| {
            t.parse()
                .map_err(|e| D::Error::custom(format!("not a peer id: {e}")))
        })
        .transpose()
    }
}

/// The error body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Machine-readable reason, e.g. `bad_signature`, `replayed_nonce`, `not_registered`.
    pub code: String,
    /// What happened and what to do next, for a person.
    pub error: String,
}

/// How a node can be reached from the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    /// Confirmed public address (directly or through a UPnP mapping): can serve as bootstrap and relay.
    Public,
    /// Behind NAT: reachable through relays and hole punching.
    Private,
    /// Not determined yet.
    #[default]
    Unknown,
}

impl Reachability {
    /// The lowercase name used in JSON and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Reachability::Public => "public",
            Reachability::Private => "private",
            Reachability::Unknown => "unknown",
        }
    }

    /// Parses [`Reachability::as_str`]; anything else is `Unknown`.
    pub fn parse(s: &str) -> Self {
        match s {
            "public" => Reachability::Public,
            "private" => Reachability::Private,
            _ => Reachability::Unknown,
        }
    }
}

/// `POST /api/v1/nodes/register` (signed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The node's id; must be the signer.
    #[serde(with = "peer_id_text")]
    pub peer_id: PeerId,
    /// The node's version, e.g. `0.1.0`.
    pub version: String,
    /// A name the node's owner chose (may be empty).
    #[serde(default)]
    pub nickname: String,
    /// Confirmed external addresses (multiaddrs, without `/p2p/`).
    #[serde(default)]
    pub external_addrs: Vec<String>,
    /// Relay circuit addresses the node listens on.
    #[serde(default)]
    pub relay_addrs: Vec<String>,
    /// Addresses the node listens on, not confirmed reachable from outside. A network's first nodes have
    /// no peer yet to confirm any address (AutoNAT needs one), so until enough nodes are public the
    /// coordinator hands these out: nodes on one LAN or machine, or with a forwarded port, then meet.
    #[serde(default)]
    pub listen_addrs: Vec<String>,
    /// NAT reachability as the node measured it.
    #[serde(default)]
    pub reachability: Reachability,
    /// The node's upload cap in kbit/s.
    #[serde(default)]
    pub upload_cap_kbps: u64,
    /// Operating system (`linux`, `windows`, `macos`...).
    #[serde(default)]
    pub os: String,
    /// CPU architecture (`x86_64`, `aarch64`...).
    #[serde(default)]
    pub arch: String,
}

/// A peer a new node can dial to join the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapPeer {
    /// Its node id.
    #[serde(with = "peer_id_text")]
    pub peer_id: PeerId,
    /// Its addresses (multiaddrs without `/p2p/`): confirmed external ones, or, when `confirmed` is
    /// false, the ones it listens on.
    pub addrs: Vec<String>,
    /// The node is public (its addresses were confirmed by a peer's dial-back); false for a node listed
    /// only because a young network has too few public ones. A coordinator without this field lists only
    /// public nodes.
    #[serde(default = "yes")]
    pub confirmed: bool,
}

fn yes() -> bool {
    true
}

/// The newest node release the operator announces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionNotice {
    /// Version, e.g. `0.2.0`.
    pub version: String,
    /// Where to read about it / get it (the release itself is signed; this is only a pointer).
    #[serde(default)]
    pub url: Option<String>,
    /// One line for the dashboard.
    #[serde(default)]
    pub notes: Option<String>,
}

/// Answer to a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// Online public nodes to dial (never the node itself); while fewer than
    /// [`MIN_PUBLIC_BOOTSTRAP_PEERS`] are public, other online nodes fill the list (`confirmed: false`).
    pub bootstrap_peers: Vec<BootstrapPeer>,
    /// Seconds between heartbeats.
    pub heartbeat_interval_secs: u64,
    /// The newest release, when the operator set one.
    pub latest_version: Option<VersionNotice>,
}

/// A stream this node publishes (its origin is this node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedStream {
    /// Stream name.
    pub name: String,
    /// When publishing started (Unix ms).
    pub started_at_ms: i64,
    /// Measured bitrate in kbit/s.
    #[serde(default)]
    pub bitrate_kbps: u64,
    /// Local players of it on the origin node.
    #[serde(default)]
    pub players: u32,
}

/// `POST /api/v1/nodes/heartbeat` (signed), every `heartbeat_interval_secs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HeartbeatRequest {
    /// Names of the streams the node holds (relays or plays).
    #[serde(default)]
    pub streams_held: Vec<String>,
    /// Streams the node publishes.
    #[serde(default)]
    pub streams_published: Vec<PublishedStream>,
    /// Local players connected.
    #[serde(default)]
    pub players: u32,
    /// Mesh peers connected.
    #[serde(default)]
    pub peers: u32,
    /// Bytes relayed to other nodes since the previous accepted heartbeat, as the node says (shown, not paid).
    #[serde(default)]
    pub bytes_relayed: u64,
    /// Current reachability.
    #[serde(default)]
    pub reachability: Reachability,
    /// Latest receipts the node's downstream peers signed for it (at most [`MAX_RECEIPTS_PER_HEARTBEAT`]).
    #[serde(default)]
    pub receipts: Vec<SignedReceipt>,
}

/// Something the operator wants this node to do: pull `rtmp_url` and publish it into the mesh as
/// `stream_name`. An assignment missing from a later heartbeat answer means stop it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Assignment id (stable while it runs).
    pub id: String,
    /// Name in the mesh.
    pub stream_name: String,
    /// `rtmp://` URL to pull from.
    pub rtmp_url: String,
}

/// Why a receipt was not credited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptRejection {
    /// Not decodable.
    Malformed,
    /// The receiver's signature does not verify.
    Forged,
    /// The receipt names another provider than the node submitting it.
    NotProvider,
    /// Provider and receiver are the same node.
    SelfReceipt,
    /// The receiver never registered.
    ReceiverUnregistered,
    /// The receiver is not online.
    ReceiverOffline,
    /// This counter was already accepted (the same receipt again).
    Duplicate,
    /// The counter is lower than one already accepted.
    CounterWentBack,
    /// A newer counter with fewer bytes, a window ending before it started or in the future.
    Inconsistent,
    /// More bytes than any home link carries in the time between two receipts.
    Implausible,
}

impl ReceiptRejection {
    /// Label for metrics and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptRejection::Malformed => "malformed",
            ReceiptRejection::Forged => "forged",
            ReceiptRejection::NotProvider => "not_provider",
            ReceiptRejection::SelfReceipt => "self_receipt",
            ReceiptRejection::ReceiverUnregistered => "receiver_unregistered",
            ReceiptRejection::ReceiverOffline => "receiver_offline",
            ReceiptRejection::Duplicate => "duplicate",
            ReceiptRejection::CounterWentBack => "counter_went_back",
            ReceiptRejection::Inconsistent => "inconsistent",
            ReceiptRejection::Implausible => "implausible",
        }
    }

    /// Whether sending the same receipt later could succeed (the receiver may come online). The client
    /// keeps such receipts queued; the others it drops.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ReceiptRejection::ReceiverOffline | ReceiptRejection::ReceiverUnregistered
        )
    }
}

/// One rejected receipt of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedReceipt {
    /// Index in the heartbeat's `receipts`.
    pub index: usize,
    /// Why.
    pub reason: ReceiptRejection,
}

/// What became of a heartbeat's receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReceiptOutcome {
    /// Receipts accepted (including those that credited 0 new bytes).
    pub accepted: u32,
    /// New bytes credited by them.
    pub credited_bytes: u64,
    /// The rejected ones.
    pub rejected: Vec<RejectedReceipt>,
}

/// Earnings as the coordinator computed them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EarningsSnapshot {
    /// Bytes relayed and signed for by receivers, all time.
    pub verified_bytes: u64,
    /// Bytes the node said it relayed, all time (shown, never paid).
    pub claimed_bytes: u64,
    /// The operator's current rate per GB (10^9 bytes) verified.
    pub rate_per_gb: f64,
    /// Earned today (UTC).
    pub earnings_today: f64,
    /// Earned all time.
    pub earnings_total: f64,
}

/// The parts of the trust score, in points (see [`crate::trust`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrustComponents {
    /// Uptime over 7 days (0-35).
    pub uptime: f64,
    /// Share of claimed bytes backed by receipts (0-30).
    pub receipt_backing: f64,
    /// Reachability and relay service (0-15).
    pub reachability: f64,
    /// Age of the registration (0-10).
    pub age: f64,
    /// Few rejected requests and receipts (0-10).
    pub conduct: f64,
}

/// A trust score with its parts and the reasons it is below 100.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrustSnapshot {
    /// 0-100.
    pub score: u8,
    /// The parts it is the sum of.
    pub components: TrustComponents,
    /// Why points were lost, one sentence each.
    pub reasons: Vec<String>,
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// Seconds until the next heartbeat.
    pub heartbeat_interval_secs: u64,
    /// The operator's assignments for this node (the full set: anything absent is to be stopped).
    pub assignments: Vec<Assignment>,
    /// What became of the receipts sent.
    pub receipts: ReceiptOutcome,
    /// Earnings so far.
    pub earnings: EarningsSnapshot,
    /// Trust score so far.
    pub trust: TrustSnapshot,
    /// The newest release, when the operator set one.
    pub latest_version: Option<VersionNotice>,
}

/// One live stream of the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEntry {
    /// Stream name as published.
    pub name: String,
    /// The publishing node.
    #[serde(with = "peer_id_text")]
    pub origin_peer: PeerId,
    /// What to play on any node: `NAME@ORIGIN` (unambiguous when two nodes publish the same name).
    pub play_name: String,
    /// Open viewing sessions plus the origin's own players.
    pub viewers: u64,
    /// kbit/s as the origin measured it.
    pub bitrate_kbps: u64,
    /// When publishing started (Unix ms).
    pub started_at_ms: i64,
}

/// `GET /api/v1/streams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamsResponse {
    /// Streams of online nodes, most viewers first.
    pub streams: Vec<StreamEntry>,
}

/// `POST /api/v1/sessions/open` (signed by the viewer node). Idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOpenRequest {
    /// Chosen by the node: 32 lowercase hex characters, so the open can be queued and retried.
    pub session_id: String,
    /// Stream name played.
    pub stream: String,
    /// The origin, when known.
    #[serde(default, with = "opt_peer_id_text")]
    pub origin_peer: Option<PeerId>,
    /// When the local player started (Unix ms).
    pub opened_at_ms: i64,
}

/// `POST /api/v1/sessions/close` (signed by the viewer node). Idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCloseRequest {
    /// The id given at open.
    pub session_id: String,
    /// Bytes the player received.
    pub bytes_received: u64,
    /// When the player left (Unix ms).
    pub closed_at_ms: i64,
}

/// Answer to a session open or close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionResponse {
    /// The session.
    pub session_id: String,
    /// `open` or `closed`.
    pub state: String,
}

/// `POST /api/v1/invites` (signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRequest {
    /// The invite as the node made it (a join string); opaque here, at most [`MAX_INVITE`] bytes.
    pub invite: String,
}

/// Answer to an invite creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteCreated {
    /// 10 characters from [`INVITE_ALPHABET`], to read aloud.
    pub code: String,
    /// When the code stops working (Unix ms).
    pub expires_at_ms: i64,
}

/// `GET /api/v1/invites/{code}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The code (normalised).
    pub code: String,
    /// The invite body the node stored.
    pub invite: String,
    /// Node that created it (it signed the request that stored it).
    #[serde(with = "peer_id_text")]
    pub created_by: PeerId,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms.
    pub expires_at_ms: i64,
}

/// Invite code alphabet: Crockford's base32 (no I, L, O, U), so a code survives being read aloud.
pub const INVITE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Length of an invite code.
pub const INVITE_CODE_LEN: usize = 10;

/// Normalises a code as a person typed it: case, spaces and dashes ignored, `I`/`L` read as `1`, `O` as `0`.
/// `None` when it cannot be a code.
pub fn normalize_invite_code(typed: &str) -> Option<String> {
    let mut out = String::with_capacity(INVITE_CODE_LEN);
    for c in typed.chars() {
        let c = match c.to_ascii_uppercase() {
            ' ' | '-' => continue,
            'I' | 'L' => '1',
            'O' => '0',
            c => c,
        };
        if !c.is_ascii() || !INVITE_ALPHABET.contains(&(c as u8)) || out.len() == INVITE_CODE_LEN {
            return None;
        }
        out.push(c);
    }
    (out.len() == INVITE_CODE_LEN).then_some(out)
}

/// `GET /api/v1/nodes/{peer_id}`: exactly these fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node.
    pub peer_id: String,
    /// Heartbeat seen within 3 intervals.
    pub online: bool,
    /// 0-100.
    pub trust_score: u8,
    /// Bytes backed by receipts, all time.
    pub verified_bytes: u64,
    /// Bytes self-reported, all time (never paid).
    pub claimed_bytes: u64,
    /// Earned all time (verified GB x the rate of each day).
    pub earnings: f64,
}

/// `GET /api/v1/nodes/{peer_id}/trust`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustReport {
    /// The node.
    pub peer_id: String,
    /// Score, parts, reasons.
    pub trust: TrustSnapshot,
}

/// One UTC day of a node's accounting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayEarnings {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Verified bytes that day.
    pub verified_bytes: u64,
    /// Claimed bytes that day.
    pub claimed_bytes: u64,
    /// The rate in force that day.
    pub rate_per_gb: f64,
    /// verified GB x rate.
    pub earnings: f64,
}

/// `GET /api/v1/nodes/{peer_id}/earnings`: the last 30 days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarningsReport {
    /// The node.
    pub peer_id: String,
    /// Newest first; days without traffic left out.
    pub days: Vec<DayEarnings>,
    /// All time.
    pub earnings_total: f64,
}

/// `PUT /api/v1/operator/rate` and its `GET`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateRequest {
    /// Paid per 10^9 verified bytes, from today (UTC) on.
    pub rate_per_gb: f64,
}

/// `POST /api/v1/operator/assignments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRequest {
    /// Node that is to ingest.
    #[serde(with = "peer_id_text")]
    pub node: PeerId,
    /// Name in the mesh.
    pub stream_name: String,
    /// `rtmp://` URL to pull.
    pub rtmp_url: String,
}

/// An assignment as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorAssignment {
    /// Id.
    pub id: String,
    /// Node.
    #[serde(with = "peer_id_text")]
    pub node: PeerId,
    /// Name in the mesh.
    pub stream_name: String,
    /// URL pulled.
    pub rtmp_url: String,
    /// Unix ms.
    pub created_at_ms: i64,
}

/// `GET /api/v1/operator/assignments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentList {
    /// Running assignments.
    pub assignments: Vec<OperatorAssignment>,
}

/// Why a value from the other side was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Empty, too long or with a character outside `[A-Za-z0-9._-]`.
    #[error(
        "stream name {0:?} is invalid: 1 to {MAX_STREAM_NAME} letters, digits, '.', '_' or '-'"
    )]
    StreamName(String),
    /// Not an `rtmp://host/...` URL of sane length.
    #[error("RTMP URL is invalid: {0}")]
    RtmpUrl(String),
    /// A multiaddr that is too long or not a multiaddr.
    #[error(
        "address {0:?} is invalid: a multiaddr of at most {MAX_ADDR} characters starting with '/'"
    )]
    Addr(String),
    /// A label (nickname, version, OS) too long or with control characters.
    #[error("{0} is invalid: at most {MAX_LABEL} characters, no control characters")]
    Label(&'static str),
    /// Too many items in a list.
    #[error("too many {what}: at most {max}")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Its limit.
        max: usize,
    },
    /// A session id that is not 32 lowercase hex characters.
    #[error("session id is invalid: 32 lowercase hex characters")]
    SessionId,
}

/// Checks a stream name as the edge does.
pub fn validate_stream_name(name: &str) -> Result<(), ValueError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_STREAM_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ValueError::StreamName(truncate(name, 80)))
    }
}

/// Checks an assignment URL: `rtmp://` with a host, at most [`MAX_RTMP_URL`] bytes, no control characters.
pub fn validate_rtmp_url(raw: &str) -> Result<(), ValueError> {
    if raw.len() > MAX_RTMP_URL {
        return Err(ValueError::RtmpUrl(format!(
            "longer than {MAX_RTMP_URL} characters"
        )));
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ValueError::RtmpUrl(
            "contains spaces or control characters".into(),
        ));
    }
    let url = url::Url::parse(raw).map_err(|e| ValueError::RtmpUrl(e.to_string()))?;
    if url.scheme() != "rtmp" {
        return Err(ValueError::RtmpUrl(format!(
            "scheme {:?}: only rtmp:// is accepted",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ValueError::RtmpUrl("no host".into()));
    }
    if url.path().trim_matches('/').is_empty() {
        return Err(ValueError::RtmpUrl(
            "no application/stream path (rtmp://HOST/APP/STREAM)".into(),
        ));
    }
    Ok(())
}

/// Checks a multiaddr string (shape only: the node parses it with libp2p).
pub fn validate_addr(addr: &str) -> Result<(), ValueError> {
    if addr.starts_with('/') && addr.len() <= MAX_ADDR && addr.bytes().all(|b| b.is_ascii_graphic())
    {
        Ok(())
    } else {
        Err(ValueError::Addr(truncate(addr, 80)))
    }
}

/// Checks a list of addresses.
pub fn validate_addrs(addrs: &[String], what: &'static str) -> Result<(), ValueError> {
    if addrs.len() > MAX_ADDRS {
        return Err(ValueError::TooMany {
            what,
            max: MAX_ADDRS,
        });
    }
    addrs.iter().try_for_each(|a| validate_addr(a))
}

/// Checks a short free-text label.
pub fn validate_label(value: &str, what: &'static str) -> Result<(), ValueError> {
    if value.len() <= MAX_LABEL && !value.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(ValueError::Label(what))
    }
}

/// Checks a session id.
pub fn validate_session_id(id: &str) -> Result<(), ValueError> {
    if id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(ValueError::SessionId)
    }
}

impl RegisterRequest {
    /// Checks every field's shape and size.
    pub fn validate(&self) -> Result<(), ValueError> {
        validate_label(&self.version, "version")?;
        validate_label(&self.nickname, "nickname")?;
        validate_label(&self.os, "os")?;
        validate_label(&self.arch, "arch")?;
        validate_addrs(&self.external_addrs, "external addresses")?;
        validate_addrs(&self.relay_addrs, "relay addresses")?;
        validate_addrs(&self.listen_addrs, "listen addresses")
    }
}

impl HeartbeatRequest {
    /// Checks list sizes and stream names (receipts are judged one by one).
    pub fn validate(&self) -> Result<(), ValueError> {
        if self.streams_held.len() > MAX_STREAMS {
            return Err(ValueError::TooMany {
                what: "streams held",
                max: MAX_STREAMS,
            });
        }
        if self.streams_published.len() > MAX_STREAMS {
            return Err(ValueError::TooMany {
                what: "streams published",
                max: MAX_STREAMS,
            });
        }
        if self.receipts.len() > MAX_RECEIPTS_PER_HEARTBEAT {
            return Err(ValueError::TooMany {
                what: "receipts",
                max: MAX_RECEIPTS_PER_HEARTBEAT,
            });
        }
        self.streams_held
            .iter()
            .try_for_each(|s| validate_stream_name(s))?;
        self.streams_published
            .iter()
            .try_for_each(|s| validate_stream_name(&s.name))
    }
}

/// The play name of a stream: `NAME@ORIGIN`.
pub fn play_name(name: &str, origin: &PeerId) -> String {
    format!("{name}@{origin}")
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_urls_are_checked() {
        assert!(validate_rtmp_url("rtmp://example.org/live/cam").is_ok());
        assert!(validate_rtmp_url("rtmp://10.0.0.1:1935/live/cam?key=x").is_ok());
        for bad in [
            "http://example.org/live/cam",
            "file:///etc/passwd",
            "rtmp:///live/x",
            "rtmp://example.org",
            "rtmp://example.org/live/a b",
            "rtmp://example.org/live/\u{7}",
            "not a url",
        ] {
            assert!(validate_rtmp_url(bad).is_err(), "{bad} accepted");
        }
        let long = format!("rtmp://example.org/live/{}", "a".repeat(600));
        assert!(validate_rtmp_url(&long).is_err());
    }

    #[test]
    fn stream_names_follow_the_edge() {
        assert!(validate_stream_name("alice_1.hd-2").is_ok());
        assert!(validate_stream_name("").is_err());
        assert!(validate_stream_name("a/b").is_err());
        assert!(validate_stream_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn invite_codes_normalise_what_people_type() {
        assert_eq!(
            normalize_invite_code("abcde-fghjk").as_deref(),
            Some("ABCDEFGHJK")
        );
        assert_eq!(
            normalize_invite_code("0O1Il 23456").as_deref(),
            Some("0011123456")
        );
        assert_eq!(normalize_invite_code("ABCDEFGHJ"), None);
        assert_eq!(normalize_invite_code("ABCDEFGHJKM"), None);
        assert_eq!(normalize_invite_code("ABCDEFGHJU"), None);
        assert_eq!(normalize_invite_code("ABCDEFGHJ\u{e9}"), None);
    }

    #[test]
    fn node_info_has_exactly_the_agreed_fields() {
        let info = NodeInfo {
            peer_id: "p".into(),
            online: true,
            trust_score: 50,
            verified_bytes: 1,
            claimed_bytes: 2,
            earnings: 0.5,
        };
        let v = serde_json::to_value(&info).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "claimed_bytes",
                "earnings",
                "online",
                "peer_id",
                "trust_score",
                "verified_bytes"
            ]
        );
    }
}
