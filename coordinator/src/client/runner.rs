//! The background task a node runs when it has a coordinator: register, heartbeat at the interval the
//! coordinator gives, deliver queued session events and receipts, and back off with jitter while the
//! coordinator is unreachable, slow or failing. The node never waits for it: it reads [`CoordinatorState`]
//! snapshots and hands over receipts and session events through a channel.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p_identity::PeerId;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::outbox::{Outbox, OutboxLimits, SessionEvent};
use super::{ClientError, CoordinatorClient};
use crate::api::*;
use crate::receipt::{ReceiptError, SignedReceipt};
use crate::time::now_ms;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// What the node registers with (everything but its id, which the key gives).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeRegistration {
    /// Node version, e.g. `0.1.0` (also compared with the coordinator's latest version).
    pub version: String,
    /// The owner's chosen name.
    pub nickname: String,
    /// Confirmed external addresses.
    pub external_addrs: Vec<String>,
    /// Relay circuit addresses.
    pub relay_addrs: Vec<String>,
    /// Addresses it listens on, unconfirmed (see [`RegisterRequest::listen_addrs`]).
    pub listen_addrs: Vec<String>,
    /// NAT reachability.
    pub reachability: Reachability,
    /// Upload cap, kbit/s.
    pub upload_cap_kbps: u64,
    /// `std::env::consts::OS`.
    pub os: String,
    /// `std::env::consts::ARCH`.
    pub arch: String,
}

/// What the node reports in each heartbeat.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeartbeatFigures {
    /// Streams held (relayed or played).
    pub streams_held: Vec<String>,
    /// Streams published here.
    pub streams_published: Vec<PublishedStream>,
    /// Local players.
    pub players: u32,
    /// Connected mesh peers.
    pub peers: u32,
    /// Bytes sent to other nodes since the node started (the runner sends the difference).
    pub bytes_relayed_total: u64,
    /// NAT reachability now.
    pub reachability: Reachability,
}

/// Implemented by the node: the runner asks it for current figures; calls must be quick and not block.
pub trait NodeReport: Send + Sync + 'static {
    /// Data for registration (asked again at every re-registration).
    fn registration(&self) -> NodeRegistration;
    /// Figures for the next heartbeat.
    fn heartbeat(&self) -> HeartbeatFigures;
}

/// How the runner runs.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The signed client (built with [`CoordinatorClient::new`], which checks the URL).
    pub client: CoordinatorClient,
    /// Directory for the outbox file (e.g. `DATA_DIR/coordinator`).
    pub queue_dir: PathBuf,
    /// Outbox bounds.
    pub limits: OutboxLimits,
    /// First backoff step after a failure.
    pub backoff_base: Duration,
    /// Longest wait between attempts while the coordinator is away.
    pub backoff_max: Duration,
}

impl RunnerConfig {
    /// Defaults: backoff 1 s doubling to 5 min, default outbox bounds.
    pub fn new(client: CoordinatorClient, queue_dir: impl Into<PathBuf>) -> Self {
        RunnerConfig {
            client,
            queue_dir: queue_dir.into(),
            limits: OutboxLimits::default(),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// A snapshot of the runner's view, for the dashboard and status JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct CoordinatorState {
    /// The coordinator's URL.
    pub url: String,
    /// The last request succeeded.
    pub online: bool,
    /// Registered in this run.
    pub registered: bool,
    /// The last error, while not online.
    pub last_error: Option<String>,
    /// Unix ms of the last successful request.
    pub last_contact_ms: Option<i64>,
    /// Peers to dial to join the mesh, from the last registration.
    pub bootstrap_peers: Vec<BootstrapPeer>,
    /// The operator's assignments for this node (run these, stop any other).
    pub assignments: Vec<Assignment>,
    /// Earnings, from the last heartbeat.
    pub earnings: Option<EarningsSnapshot>,
    /// Trust score and reasons, from the last heartbeat.
    pub trust: Option<TrustSnapshot>,
    /// The coordinator's latest version notice.
    pub latest_version: Option<VersionNotice>,
    /// Set when `latest_version` is newer than this node's version.
    pub update_available: bool,
    /// Seconds between heartbeats.
    pub heartbeat_interval_secs: u64,
    /// Receipts waiting for delivery.
    pub queued_receipts: usize,
    /// Session events waiting for delivery.
    pub queued_session_events: usize,
    /// Receipts the coordinator refused for good (forged, duplicate...), this run.
    pub receipts_refused: u64,
    /// Queue items dropped because a bound was reached (or too old), this run.
    pub queue_dropped: u64,
}

/// The node's handle on the runner. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CoordinatorHandle {
    client: CoordinatorClient,
    state: watch::Receiver<CoordinatorState>,
    commands: mpsc::UnboundedSender<CommandBox>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// What the node hands the runner.
#[derive(Debug)]
struct CommandBox(CommandInner);

#[derive(Debug)]
enum CommandInner {
    Receipt(Box<SignedReceipt>),
    Session(SessionEvent),
}

impl CoordinatorHandle {
    /// The current state.
    pub fn state(&self) -> CoordinatorState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every state change (for an event stream).
    pub fn watch(&self) -> watch::Receiver<CoordinatorState> {
        self.state.clone()
    }

    /// The signed client, for on-demand calls (streams, invites, node info).
    pub fn client(&self) -> &CoordinatorClient {
        &self.client
    }

    /// Queues a receipt a downstream peer signed for this node. Receipts that are not for this node or
    /// whose signature fails are refused here (the mesh hands over untrusted bytes).
    pub fn submit_receipt(&self, receipt: SignedReceipt) -> Result<(), ReceiptError> {
        if receipt.receipt.provider != self.client.peer_id() {
            return Err(ReceiptError::Malformed("receipt names another provider"));
        }
        receipt.verify()?;
        let _ = self
            .commands
            .send(CommandBox(CommandInner::Receipt(Box::new(receipt))));
        Ok(())
    }

    /// A local player started playing `stream` (`NAME` or `NAME@ORIGIN`); returns the session id to close
    /// it with.
    pub fn open_session(&self, stream: &str, origin: Option<PeerId>) -> String {
        let session_id = hex::encode(rand::random::<[u8; 16]>());
        let _ = self
            .commands
            .send(CommandBox(CommandInner::Session(SessionEvent::Open(
                SessionOpenRequest {
                    session_id: session_id.clone(),
                    stream: stream.to_string(),
                    origin_peer: origin,
                    opened_at_ms: now_ms(),
                },
            ))));
        session_id
    }

    /// The player of session `session_id` left after receiving `bytes_received` bytes.
    pub fn close_session(&self, session_id: &str, bytes_received: u64) {
        let _ = self
            .commands
            .send(CommandBox(CommandInner::Session(SessionEvent::Close(
                SessionCloseRequest {
                    session_id: session_id.to_string(),
                    bytes_received,
                    closed_at_ms: now_ms(),
                },
            ))));
    }

    /// `POST /api/v1/invites` now (not queued: the user waits for the code).
    pub async fn create_invite(&self, invite: &str) -> Result<InviteCreated, ClientError> {
        self.client.create_invite(invite).await
    }

    /// `GET /api/v1/streams` now.
    pub async fn streams(&self) -> Result<StreamsResponse, ClientError> {
        self.client.streams().await
    }

    /// Waits for the runner to finish (after its cancellation token was cancelled); the outbox is saved.
    pub async fn wait(&self) {
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Starts the runner. It stops when `cancel` is cancelled, saving its outbox.
pub fn spawn(
    config: RunnerConfig,
    report: Arc<dyn NodeReport>,
    cancel: CancellationToken,
) -> CoordinatorHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let initial = CoordinatorState {
        url: config.client.base_url().to_string(),
        heartbeat_interval_secs: 30,
        ..Default::default()
    };
    let (state_tx, state_rx) = watch::channel(initial);
    let client = config.client.clone();
    let task = tokio::spawn(run(config, report, rx, state_tx, cancel));
    CoordinatorHandle {
        client,
        state: state_rx,
        commands: tx,
        task: Arc::new(Mutex::new(Some(task))),
    }
}

struct Runner {
    client: CoordinatorClient,
    report: Arc<dyn NodeReport>,
    outbox: Outbox,
    state: watch::Sender<CoordinatorState>,
    /// Retry steps after failures: doubling from the configured base to its max, jittered so that
    /// thousands of nodes that lost the coordinator at one moment do not come back at one moment.
    retry_policy: ExponentialBuilder,
    retry_delays: ExponentialBackoff,
    /// The longest retry step (before jitter).
    max_retry_delay: Duration,
    /// Failures since the last success.
    failures: u32,
    version: String,
    registered: bool,
    interval: Duration,
    next_heartbeat: Instant,
    /// Earliest next contact (backoff after failures).
    not_before: Instant,
    /// Cumulative relayed bytes at the last accepted heartbeat.
    acked_bytes_total: u64,
    announced_version: Option<String>,
}

/// Retry delays from `base` doubling to `max`, each stretched by up to as much again at random.
fn retry_policy(base: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(base)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
}

async fn run(
    config: RunnerConfig,
    report: Arc<dyn NodeReport>,
    mut commands: mpsc::UnboundedReceiver<CommandBox>,
    state: watch::Sender<CoordinatorState>,
    cancel: CancellationToken,
) {
    let (outbox, warning) = Outbox::open(&config.queue_dir, config.limits);
    if let Some(w) = &warning {
        warn!("{w}");
    }
    let now = Instant::now();
    let mut r = Runner {
        client: config.client,
        version: report.registration().version,
        report,
        outbox,
        state,
        retry_policy: retry_policy(config.backoff_base, config.backoff_max),
        retry_delays: retry_policy(config.backoff_base, config.backoff_max).build(),
        max_retry_delay: config.backoff_max,
        failures: 0,
        registered: false,
        interval: Duration::from_secs(30),
        next_heartbeat: now,
        not_before: now,
        acked_bytes_total: 0,
        announced_version: None,
    };
    r.publish_queue();
    loop {
        let wake = r.next_wake();
        tokio::select! {
            _ = cancel.cancelled() => break,
            cmd = commands.recv() => match cmd {
                Some(CommandBox(cmd)) => {
                    r.accept(cmd);
                    // Take whatever else is waiting, then save once.
                    while let Ok(CommandBox(cmd)) = commands.try_recv() {
                        r.accept(cmd);
                    }
                    r.save();
                }
                None => break,
            },
            _ = tokio::time::sleep_until(wake) => {
                let done = tokio::select! {
                    _ = cancel.cancelled() => None,
                    res = r.step() => Some(res),
                };
                match done {
                    None => break,
                    Some(Ok(())) => r.succeeded(),
                    Some(Err(e)) => r.failed(e),
                }
                r.save();
            }
        }
    }
    r.save();
    debug!("coordinator runner stopped");
}

impl Runner {
    fn accept(&mut self, cmd: CommandInner) {
        match cmd {
            CommandInner::Receipt(r) => self.outbox.push_receipt(*r),
            CommandInner::Session(e) => self.outbox.push_session(e),
        }
        self.publish_queue();
    }

    fn save(&mut self) {
        self.outbox.expire(now_ms());
        if let Err(e) = self.outbox.save() {
            warn!(error = %e, "cannot save the coordinator queue; it stays in memory");
        }
        self.publish_queue();
    }

    fn publish_queue(&self) {
        let (receipts, sessions, dropped) = (
            self.outbox.receipt_count(),
            self.outbox.session_count(),
            self.outbox.dropped(),
        );
        self.state.send_if_modified(|s| {
            let changed = s.queued_receipts != receipts
                || s.queued_session_events != sessions
                || s.queue_dropped != dropped;
            s.queued_receipts = receipts;
            s.queued_session_events = sessions;
            s.queue_dropped = dropped;
            changed
        });
    }

    /// When to act next: registration and session events as soon as backoff allows, heartbeats on time.
    fn next_wake(&self) -> Instant {
        let due = if !self.registered || self.outbox.front_session().is_some() {
            Instant::now()
        } else {
            self.next_heartbeat
        };
        due.max(self.not_before)
    }

    async fn step(&mut self) -> Result<(), ClientError> {
        if !self.registered {
            self.register().await?;
        }
        self.deliver_sessions().await?;
        if Instant::now() >= self.next_heartbeat {
            match self.heartbeat().await {
                Err(e) if e.code() == Some("not_registered") => {
                    // The coordinator lost us (new database): register again at once.
                    self.registered = false;
                    return Err(e);
                }
                other => other?,
            }
        }
        Ok(())
    }

    async fn register(&mut self) -> Result<(), ClientError> {
        let reg = self.report.registration();
        let req = RegisterRequest {
            peer_id: self.client.peer_id(),
            version: reg.version,
            nickname: reg.nickname,
            external_addrs: reg.external_addrs,
            relay_addrs: reg.relay_addrs,
            listen_addrs: reg.listen_addrs,
            reachability: reg.reachability,
            upload_cap_kbps: reg.upload_cap_kbps,
            os: reg.os,
            arch: reg.arch,
        };
        let resp = self.client.register(&req).await?;
        self.registered = true;
        self.interval = Duration::from_secs(resp.heartbeat_interval_secs);
        // The first heartbeat right away: it delivers what the outbox kept from an outage.
        self.next_heartbeat = Instant::now();
        info!(
            url = %self.client.base_url(),
            bootstrap_peers = resp.bootstrap_peers.len(),
            interval_secs = resp.heartbeat_interval_secs,
            "registered with the coordinator"
        );
        self.note_version(resp.latest_version.as_ref());
        self.state.send_modify(|s| {
            s.registered = true;
            s.bootstrap_peers = resp.bootstrap_peers;
            s.heartbeat_interval_secs = resp.heartbeat_interval_secs;
            s.latest_version = resp.latest_version;
        });
        self.contact();
        Ok(())
    }

    async fn deliver_sessions(&mut self) -> Result<(), ClientError> {
        while let Some(event) = self.outbox.front_session().cloned() {
            let result = match &event {
                SessionEvent::Open(req) => self.client.open_session(req).await.map(|_| ()),
                SessionEvent::Close(req) => self.client.close_session(req).await.map(|_| ()),
            };
            match result {
                Ok(()) => self.outbox.pop_session(),
                Err(e) if e.code() == Some("not_registered") => {
                    self.registered = false;
                    return Err(e);
                }
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    // Refused for good (unknown session, bad name): retrying cannot help.
                    warn!(error = %e, "coordinator refused a session event; dropped");
                    self.outbox.pop_session();
                }
            }
            self.contact();
        }
        Ok(())
    }

    async fn heartbeat(&mut self) -> Result<(), ClientError> {
        let figures = self.report.heartbeat();
        let total = figures.bytes_relayed_total;
        // A smaller total means the node restarted its counter.
        let delta = if total >= self.acked_bytes_total {
            total - self.acked_bytes_total
        } else {
            total
        };
        let receipts = self.outbox.receipts_batch(MAX_RECEIPTS_PER_HEARTBEAT);
        let mut streams_held = figures.streams_held;
        streams_held.retain(|s| validate_stream_name(s).is_ok());
        streams_held.truncate(MAX_STREAMS);
        let mut streams_published = figures.streams_published;
        streams_published.retain(|s| validate_stream_name(&s.name).is_ok());
        streams_published.truncate(MAX_STREAMS);
        let req = HeartbeatRequest {
            streams_held,
            streams_published,
            players: figures.players,
            peers: figures.peers,
            bytes_relayed: delta,
            reachability: figures.reachability,
            receipts,
        };
        let resp = self.client.heartbeat(&req).await?;
        self.acked_bytes_total = total;
        let retry: std::collections::HashSet<usize> = resp
            .receipts
            .rejected
            .iter()
            .filter(|r| r.reason.is_retryable())
            .map(|r| r.index)
            .collect();
        let refused = resp
            .receipts
            .rejected
            .iter()
            .filter(|r| !r.reason.is_retryable())
            .count() as u64;
        for (i, r) in req.receipts.iter().enumerate() {
            if !retry.contains(&i) {
                self.outbox.acknowledge_receipt(r);
            }
        }
        if refused > 0 {
            warn!(refused, "coordinator refused receipts for good");
        }
        self.interval = Duration::from_secs(resp.heartbeat_interval_secs);
        self.next_heartbeat = Instant::now() + self.interval;
        self.note_version(resp.latest_version.as_ref());
        let update = self.update_available(resp.latest_version.as_ref());
        self.state.send_modify(|s| {
            s.assignments = resp.assignments;
            s.earnings = Some(resp.earnings);
            s.trust = Some(resp.trust);
            s.latest_version = resp.latest_version;
            s.update_available = update;
            s.heartbeat_interval_secs = resp.heartbeat_interval_secs;
            s.receipts_refused += refused;
        });
        self.contact();
        Ok(())
    }

    fn update_available(&self, notice: Option<&VersionNotice>) -> bool {
        notice.is_some_and(|n| version_newer(&n.version, &self.version))
    }

    /// Logs a newer version once per version named.
    fn note_version(&mut self, notice: Option<&VersionNotice>) {
        if let Some(n) = notice
            && self.update_available(Some(n))
            && self.announced_version.as_deref() != Some(n.version.as_str())
        {
            info!(
                latest = %n.version,
                running = %self.version,
                url = n.url.as_deref().unwrap_or(""),
                "a newer streamr-node version is available"
            );
            self.announced_version = Some(n.version.clone());
        }
    }

    fn contact(&mut self) {
        self.state.send_modify(|s| {
            s.online = true;
            s.last_error = None;
            s.last_contact_ms = Some(now_ms());
        });
    }

    /// A request went through: the retry steps start over.
    fn succeeded(&mut self) {
        self.retry_delays = self.retry_policy.build();
        self.failures = 0;
    }

    fn failed(&mut self, e: ClientError) {
        let delay = self.retry_delays.next().unwrap_or(self.max_retry_delay);
        self.failures = self.failures.saturating_add(1);
        self.not_before = Instant::now() + delay;
        let first = self.failures == 1;
        if first {
            warn!(error = %e, retry_in = ?delay, "coordinator request failed; the node keeps working without it");
        } else {
            debug!(error = %e, retry_in = ?delay, "coordinator still unavailable");
        }
        let registered = self.registered;
        self.state.send_modify(|s| {
            s.online = false;
            s.registered = registered;
            s.last_error = Some(e.to_string());
        });
    }
}

/// Whether dotted version `a` is newer than `b` (numeric parts compared; a pre-release suffix after `-`
/// ranks below the release).
pub fn version_newer(a: &str, b: &str) -> bool {
    fn parts(v: &str) -> (Vec<u64>, bool) {
        let v = v.trim_start_matches('v');
        let (core, pre) = match v.split_once('-') {
            Some((c, _)) => (c, true),
            None => (v, false),
        };
        (
            core.split('.').map(|p| p.parse().unwrap_or(0)).collect(),
            pre,
        )
    }
    let (mut pa, pre_a) = parts(a);
    let (mut pb, pre_b) = parts(b);
    let n = pa.len().max(pb.len());
    pa.resize(n, 0);
    pb.resize(n, 0);
    match pa.cmp(&pb) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => pre_b && !pre_a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_newer("0.10.0", "0.9.1"));
        assert!(version_newer("v1.0", "0.99.99"));
        assert!(version_newer("1.0.0", "1.0.0-rc1"));
        assert!(!version_newer("1.0.0-rc1", "1.0.0"));
        assert!(!version_newer("0.1.0", "0.1.0"));
        assert!(!version_newer("0.1", "0.1.0"));
    }
}
