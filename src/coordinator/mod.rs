//! The coordinator, on the node's side (the `coordinator` setting, off by default). The client library
//! (`streamr_coordinator::client`) registers and heartbeats in its own task and keeps receipts and session
//! ends on disk until they are delivered; this module connects it to the node:
//!
//! - [`report`]: the node's figures for registration and heartbeats;
//! - [`bootstrap`]: the coordinator's public nodes are dialed (zero-configuration join), and the node
//!   registers again when it becomes public or its addresses change;
//! - [`receipts`]: the mesh's receipt hook: sign what upstreams deliver, check and queue what downstreams
//!   sign;
//! - [`sessions`]: one viewing session per stream watched here from another node;
//! - [`assignments`]: the operator's "pull this RTMP URL into the mesh", run with the pull relay;
//! - the network's stream list, short invite codes, and the `coordinator` section of the status.
//!
//! The runner lives as long as the process (through the dashboard's Stop/Start); the assignments are part
//! of the engine and stop with it. A coordinator that is away changes nothing for viewers.

pub mod assignments;
pub mod bootstrap;
pub mod receipts;
pub mod report;
pub mod sessions;

use crate::node::Shared;
use bootstrap::Bootstrap;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use parking_lot::{Mutex, RwLock};
use receipts::{ReceiptBook, ReceiptHook};
use report::{NodeFigures, plain_name};
use sessions::{Change, SessionFile, SessionTracker, Watching};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamr_coordinator::api::{RegisterRequest, StreamEntry};
use streamr_coordinator::client::{
    ClientError, CoordinatorClient, CoordinatorHandle, NodeReport, RunnerConfig,
};
use streamr_media::SourceKind;
use streamr_web::{
    AssignmentStatus, CoordinatorStatus, EarningsStatus, NetworkStream, TrustStatus, VersionStatus,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Directory of the coordinator's queue (and open sessions) inside the data dir.
pub const QUEUE_DIR: &str = "coordinator";
/// Most network streams kept for the dashboard.
const MAX_NETWORK_STREAMS: usize = 100;
/// Open sessions are saved at least this often (their byte counts move).
const SESSION_SAVE_EVERY: Duration = Duration::from_secs(30);
/// The user waits for a short invite code at most this long; the long code works without it.
const SHORT_CODE_LIMIT: Duration = Duration::from_secs(5);
/// Time to dial one bootstrap peer.
const DIAL_LIMIT: Duration = Duration::from_secs(10);
/// The coordinator's public nodes are given to the mesh as relay candidates again this often.
const RELAY_CANDIDATES_AGAIN: Duration = Duration::from_secs(60);

/// The node's coordinator: the runner's handle and what the node keeps beside it.
#[derive(Debug)]
pub struct Coordinator {
    handle: CoordinatorHandle,
    /// Stops the runner (after the node queued its last session closes).
    runner_cancel: CancellationToken,
    me: PeerId,
    report: Arc<NodeFigures>,
    book: Arc<ReceiptBook>,
    network: RwLock<Vec<StreamEntry>>,
    sessions: Mutex<SessionTracker>,
    session_file: SessionFile,
    assignments: RwLock<Vec<AssignmentStatus>>,
    refusals_logged: Mutex<HashSet<(String, String)>>,
    bootstrap: Mutex<Bootstrap>,
}

impl Coordinator {
    /// Starts the runner for `url` with the node key, its queue in `DATA_DIR/coordinator`.
    pub fn start(
        url: &str,
        key: Keypair,
        data_dir: &Path,
        report: Arc<NodeFigures>,
    ) -> anyhow::Result<Arc<Coordinator>> {
        let client = CoordinatorClient::new(url, key.clone())?;
        let queue_dir: PathBuf = data_dir.join(QUEUE_DIR);
        std::fs::create_dir_all(&queue_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create {}: {e}; check that the data folder is writable",
                queue_dir.display()
            )
        })?;
        let runner_cancel = CancellationToken::new();
        let handle = streamr_coordinator::client::spawn(
            RunnerConfig::new(client, &queue_dir),
            report.clone(),
            runner_cancel.clone(),
        );
        info!(%url, "coordinator set: registering in the background");
        Ok(Arc::new(Coordinator {
            handle,
            runner_cancel,
            me: key.public().to_peer_id(),
            report,
            book: Arc::default(),
            network: RwLock::default(),
            sessions: Mutex::default(),
            session_file: SessionFile::new(&queue_dir),
            assignments: RwLock::default(),
            refusals_logged: Mutex::default(),
            bootstrap: Mutex::default(),
        }))
    }

    /// The runner.
    pub fn handle(&self) -> &CoordinatorHandle {
        &self.handle
    }

    /// The mesh's receipt hook (signs with `key`, queues downstreams' receipts).
    pub fn receipt_hook(&self, key: Keypair) -> Arc<dyn streamr_mesh::Receipts> {
        Arc::new(ReceiptHook::new(
            key,
            self.handle.clone(),
            self.book.clone(),
        ))
    }

    /// What the assignments part runs now.
    pub fn set_assignments(&self, view: Vec<AssignmentStatus>) {
        *self.assignments.write() = view;
    }

    /// Whether this refusal was logged already (each is logged once).
    pub fn assignment_refused_before(&self, id: &str, why: &str) -> bool {
        !self
            .refusals_logged
            .lock()
            .insert((id.to_string(), why.to_string()))
    }

    /// The coordinator's update notice, when it names a newer version: (version, URL or "").
    pub fn update_notice(&self) -> Option<(String, String)> {
        let s = self.handle.state();
        let v = s.latest_version.filter(|_| s.update_available)?;
        // The page makes a link of it: only a web address (never `javascript:` from an untrusted answer).
        let url = v
            .url
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .unwrap_or_default();
        Some((v.version, url))
    }

    /// The `coordinator` section of the status.
    pub fn status(&self) -> CoordinatorStatus {
        let s = self.handle.state();
        let mut bootstrap_peers: Vec<String> = s
            .bootstrap_peers
            .iter()
            .map(|p| p.peer_id.to_string())
            .collect();
        for p in &self.bootstrap.lock().extra {
            let id = p.peer_id.to_string();
            if !bootstrap_peers.contains(&id) {
                bootstrap_peers.push(id);
            }
        }
        let mut assignments = self.assignments.read().clone();
        if assignments.is_empty() {
            // The engine is stopped (or not started yet): nothing runs.
            assignments = s
                .assignments
                .iter()
                .map(|a| AssignmentStatus {
                    id: a.id.clone(),
                    stream_name: a.stream_name.clone(),
                    rtmp_url: a.rtmp_url.clone(),
                    state: "stopped".into(),
                })
                .collect();
        }
        let mut receipts = self.book.status();
        receipts.refused_by_coordinator = s.receipts_refused;
        CoordinatorStatus {
            url: s.url,
            online: s.online,
            registered: s.registered,
            last_error: s.last_error,
            last_contact_ms: s.last_contact_ms,
            heartbeat_interval_secs: s.heartbeat_interval_secs,
            bootstrap_peers,
            earnings: s.earnings.map(|e| EarningsStatus {
                verified_bytes: e.verified_bytes,
                claimed_bytes: e.claimed_bytes,
                rate_per_gb: e.rate_per_gb,
                earnings_today: e.earnings_today,
                earnings_total: e.earnings_total,
            }),
            trust: s.trust.map(|t| {
                let c = &t.components;
                TrustStatus {
                    score: t.score,
                    components: [
                        ("uptime", c.uptime),
                        ("receipt_backing", c.receipt_backing),
                        ("reachability", c.reachability),
                        ("age", c.age),
                        ("conduct", c.conduct),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                    reasons: t.reasons,
                }
            }),
            latest_version: s.latest_version.map(|v| VersionStatus {
                version: v.version,
                url: v.url,
                notes: v.notes,
            }),
            update_available: s.update_available,
            assignments,
            streams: self
                .network
                .read()
                .iter()
                .map(|e| {
                    let origin = e.origin_peer.to_string();
                    NetworkStream {
                        play_as: format!("{}@{}", e.name, &origin[..origin.len().min(12)]),
                        name: e.name.clone(),
                        origin_peer: origin,
                        viewers: e.viewers,
                        bitrate_kbps: e.bitrate_kbps,
                        started_at_ms: e.started_at_ms,
                    }
                })
                .collect(),
            sessions: self.sessions.lock().status(),
            receipts,
            queued_receipts: s.queued_receipts,
            queued_session_events: s.queued_session_events,
            queue_dropped: s.queue_dropped,
        }
    }

    /// Stores `invite` (a long join code) at the coordinator under a short code: (code, expiry in unix
    /// seconds).
    pub async fn short_code(&self, invite: &str) -> Result<(String, u64), String> {
        match tokio::time::timeout(SHORT_CODE_LIMIT, self.handle.create_invite(invite)).await {
            Ok(Ok(c)) => Ok((c.code, u64::try_from(c.expires_at_ms / 1000).unwrap_or(0))),
            Ok(Err(e)) => Err(format!(
                "the coordinator could not store a short code ({e}); the long code works without it"
            )),
            Err(_) => {
                Err("the coordinator did not answer in time; the long code works without it".into())
            }
        }
    }

    /// The long invite a short code stands for, or what to tell the person who typed it (with an HTTP
    /// status).
    pub async fn resolve_short_code(&self, code: &str) -> Result<String, (u16, String)> {
        match self.handle.client().invite(code).await {
            Ok(i) => Ok(i.invite),
            Err(ClientError::Refused { status: 404, .. }) => Err((
                404,
                "no invite has this short code: check the letters and digits (0 and O, 1 and I are the \
                 same), or ask your friend for the long code"
                    .into(),
            )),
            Err(ClientError::Refused { status: 410, .. }) => Err((
                410,
                "this short code has expired (they last 24 hours): ask your friend for a new invite".into(),
            )),
            Err(e @ ClientError::Refused { .. }) => Err((400, e.to_string())),
            Err(e) => Err((
                502,
                format!(
                    "cannot ask the coordinator for this short code ({e}); try again, or ask your friend for \
                     the long code"
                ),
            )),
        }
    }

    /// The node's coordinator work until `shutdown`: sessions from the hubs, bootstrap dials and
    /// re-registrations, the network's stream list. Then it queues the last session closes and stops the
    /// runner, which saves its queue.
    pub async fn run(self: Arc<Self>, shared: Arc<Shared>, shutdown: CancellationToken) {
        for s in self.session_file.leftovers() {
            debug!(session = %s.session_id, "closing a session the previous run left open");
            self.handle.close_session(&s.session_id, s.bytes);
        }
        self.save_sessions();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One registration and one stream listing at a time; dials run on their own (each is bounded).
        let mut registering: Option<JoinHandle<()>> = None;
        let mut fetching: Option<JoinHandle<()>> = None;
        let busy = |t: &Option<JoinHandle<()>>| t.as_ref().is_some_and(|t| !t.is_finished());
        let mut last_fetch: Option<Instant> = None;
        let mut last_save = Instant::now();
        let mut was_registered = false;
        // Given again now and then: a mesh restarted by Stop/Start or a failure starts with none.
        let mut relay_candidates_given: (Vec<Multiaddr>, Option<Instant>) = (Vec::new(), None);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let changed = self.track_sessions(&shared);
            if changed || last_save.elapsed() >= SESSION_SAVE_EVERY {
                self.save_sessions();
                last_save = Instant::now();
            }
            let state = self.handle.state();
            if state.registered != was_registered {
                was_registered = state.registered;
                if !state.registered {
                    self.bootstrap.lock().forget_registration();
                }
            }
            if let Some(mesh) = shared.mesh.active()
                && state.registered
            {
                let now = Instant::now();
                let current = self.report.registration();
                let connected: Vec<PeerId> = mesh
                    .status()
                    .peers
                    .iter()
                    .filter_map(|p| p.peer_id.parse().ok())
                    .collect();
                let (dials, candidates) = {
                    let mut b = self.bootstrap.lock();
                    b.runner_registered(&current, now);
                    (
                        b.dials_due(&state.bootstrap_peers, &self.me, &connected, now),
                        bootstrap::relay_candidates(&state.bootstrap_peers, &b.extra, &self.me),
                    )
                };
                let stale = relay_candidates_given
                    .1
                    .is_none_or(|t| now.duration_since(t) >= RELAY_CANDIDATES_AGAIN);
                if !candidates.is_empty() && (candidates != relay_candidates_given.0 || stale) {
                    mesh.add_relay_candidates(candidates.clone()).await;
                    relay_candidates_given = (candidates, Some(now));
                }
                for (peer, addrs) in dials {
                    let mesh = mesh.clone();
                    tokio::spawn(async move {
                        match mesh.dial(peer, addrs, DIAL_LIMIT).await {
                            Ok(()) => {
                                info!(%peer, "joined the mesh through a node the coordinator listed")
                            }
                            Err(e) => {
                                debug!(%peer, error = %e, "cannot reach a node the coordinator listed")
                            }
                        }
                    });
                }
                let again = !busy(&registering)
                    && self
                        .bootstrap
                        .lock()
                        .should_register(&current, connected.len(), now);
                if again {
                    registering = Some(tokio::spawn(self.clone().register_again(current)));
                }
            }
            let every = Duration::from_secs(state.heartbeat_interval_secs.clamp(2, 30));
            if state.online && !busy(&fetching) && last_fetch.is_none_or(|t| t.elapsed() >= every) {
                last_fetch = Some(Instant::now());
                fetching = Some(tokio::spawn(self.clone().fetch_streams()));
            }
        }
        for t in [registering, fetching].into_iter().flatten() {
            t.abort();
        }
        // Tell the coordinator the players left; the file keeps the sessions, so that a close lost now is
        // sent again at the next start (closing is idempotent).
        for c in self.sessions.lock().close_all() {
            if let Change::Closed { session_id, bytes } = c {
                self.handle.close_session(&session_id, bytes);
            }
        }
        // Let the runner take the closes into its queue before it stops and saves it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.runner_cancel.cancel();
        self.handle.wait().await;
    }

    /// Registers again with what the node would register now; dials happen on the next ticks.
    async fn register_again(
        self: Arc<Self>,
        current: streamr_coordinator::client::NodeRegistration,
    ) {
        let client = self.handle.client();
        let req = RegisterRequest {
            peer_id: client.peer_id(),
            version: current.version.clone(),
            nickname: current.nickname.clone(),
            external_addrs: current.external_addrs.clone(),
            relay_addrs: current.relay_addrs.clone(),
            listen_addrs: current.listen_addrs.clone(),
            reachability: current.reachability,
            upload_cap_kbps: current.upload_cap_kbps,
            os: current.os.clone(),
            arch: current.arch.clone(),
        };
        match client.register(&req).await {
            Ok(resp) => {
                info!(
                    reachability = current.reachability.as_str(),
                    addrs = current.external_addrs.len(),
                    bootstrap_peers = resp.bootstrap_peers.len(),
                    "registered again with the coordinator"
                );
                self.bootstrap
                    .lock()
                    .registered(&current, resp.bootstrap_peers, Instant::now());
            }
            Err(e) => {
                debug!(error = %e, "cannot register again with the coordinator; trying later");
                self.bootstrap.lock().register_failed(Instant::now());
            }
        }
    }

    /// `GET /api/v1/streams` for the dashboard's "Live in your mesh".
    async fn fetch_streams(self: Arc<Self>) {
        match self.handle.streams().await {
            Ok(mut r) => {
                r.streams.truncate(MAX_NETWORK_STREAMS);
                *self.network.write() = r.streams;
            }
            Err(e) => {
                debug!(error = %e, "cannot list the coordinator's streams");
                self.network.write().clear();
            }
        }
    }

    /// One look at the hubs for viewing sessions; true when a session opened or closed.
    fn track_sessions(&self, shared: &Shared) -> bool {
        let mesh = shared.mesh.active();
        let seen: Vec<Watching> = shared
            .streams
            .hubs()
            .iter()
            .map(|hub| {
                let h = hub.snapshot();
                let origin = mesh
                    .as_ref()
                    .and_then(|m| m.stream(hub))
                    .and_then(|s| s.origin.parse::<PeerId>().ok());
                Watching {
                    stream: plain_name(&h.name).to_string(),
                    from_mesh: h.live && h.source == Some(SourceKind::Mesh) && origin.is_some(),
                    origin,
                    players: h.players,
                    bytes_in: h.bytes_in,
                }
            })
            .collect();
        let handle = &self.handle;
        let changes = self
            .sessions
            .lock()
            .observe(&seen, |stream, origin| handle.open_session(stream, origin));
        for c in &changes {
            match c {
                Change::Opened { session_id, stream } => {
                    info!(session = %session_id, %stream, "viewing session opened");
                }
                Change::Closed { session_id, bytes } => {
                    info!(session = %session_id, bytes, "viewing session closed");
                    handle.close_session(session_id, *bytes);
                }
            }
        }
        !changes.is_empty()
    }

    fn save_sessions(&self) {
        let open = self.sessions.lock().saved();
        if let Err(e) = self.session_file.save(&open) {
            warn!(error = %format!("{e:#}"), "cannot save the open viewing sessions");
        }
    }
}
