//! What each endpoint does, against the database: registration, heartbeats with receipts, streams,
//! sessions, invites, node reports, operator settings, and the periodic sweep. No HTTP here: callers pass
//! the already authenticated peer id and the parsed body.
//!
//! Every piece of state lives in the database (nonces and rate limits too), so any number of instances can
//! share one Postgres. Times come from the [`Clock`].

use libp2p_identity::PeerId;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe, Row};
use tracing::{info, warn};

use super::accounting::{self, SeriesState};
use super::clock::Clock;
use super::metrics::Metrics;
use super::store::Store;
use crate::api::*;
use crate::auth::{self, AuthError, NONCE_RETENTION_MS, SignedHeaders};
use crate::receipt::SignedReceipt;
use crate::time::{DAY_MS, day_of, format_day};
use crate::trust::{self, TrustInputs};

/// Invites one node may create per hour.
pub const INVITES_PER_HOUR: i64 = 20;
/// Invite lookups one address may make per minute (codes are 50 random bits; this makes guessing slower).
pub const INVITE_LOOKUPS_PER_MINUTE: i64 = 60;
/// How long an invite code works.
pub const INVITE_TTL_MS: i64 = DAY_MS;
/// Missed intervals after which a node is offline.
pub const OFFLINE_AFTER_INTERVALS: i64 = 3;

/// An answer that is not 2xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// HTTP status.
    pub status: u16,
    /// Machine-readable code.
    pub code: &'static str,
    /// For a person: what happened, what to do.
    pub message: String,
}

impl HttpError {
    /// Builds one.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        HttpError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for HttpError {
    fn from(e: sqlx::Error) -> Self {
        warn!(error = %e, "storage error");
        HttpError::new(
            503,
            "storage_unavailable",
            "the coordinator's database did not answer; try again later",
        )
    }
}

/// The coordinator's logic and its storage.
#[derive(Debug)]
pub struct Service {
    /// Database.
    pub store: Store,
    /// Now.
    pub clock: Clock,
    /// This instance's counters.
    pub metrics: Metrics,
    /// Seconds between heartbeats that nodes are told.
    pub heartbeat_interval_secs: u64,
    /// Operator bearer token; `None` disables operator endpoints.
    pub operator_token: Option<String>,
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn not_registered() -> HttpError {
    HttpError::new(
        404,
        "not_registered",
        "this node is not registered: POST /api/v1/nodes/register first",
    )
}

fn invalid(e: impl std::fmt::Display) -> HttpError {
    HttpError::new(400, "invalid", e.to_string())
}

impl Service {
    fn interval_ms(&self) -> i64 {
        i(self.heartbeat_interval_secs).saturating_mul(1000)
    }

    /// Last-seen time before which a node is offline.
    pub fn offline_cutoff(&self, now: i64) -> i64 {
        now - OFFLINE_AFTER_INTERVALS * self.interval_ms()
    }

    /// Checks a signed request: signature, skew, and that the nonce is new (stored for every instance).
    pub async fn authenticate(
        &self,
        headers: Result<SignedHeaders, AuthError>,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Result<PeerId, HttpError> {
        let now = self.clock.now_ms();
        let checked = headers.and_then(|h| {
            auth::verify_request(&h, method, target, body, now)?;
            Ok(h)
        });
        let h = match checked {
            Ok(h) => h,
            Err(e) => {
                self.metrics.reject_request(e.code());
                return Err(HttpError::new(401, e.code(), e.to_string()));
            }
        };
        let peer = h.peer_id.to_base58();
        let inserted = sqlx::query(
            "INSERT INTO nonces (peer_id, nonce, seen_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&peer)
        .bind(&h.nonce)
        .bind(now)
        .execute(&self.store.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            let e = AuthError::ReplayedNonce;
            self.metrics.reject_request(e.code());
            self.count_rejection(&peer, now).await;
            return Err(HttpError::new(401, e.code(), e.to_string()));
        }
        Ok(h.peer_id)
    }

    /// Counts a refused signed request against the node's conduct (best effort).
    pub async fn count_rejection(&self, peer: &str, now: i64) {
        let r = sqlx::query(
            "INSERT INTO node_days (peer_id, day, rejected) VALUES ($1, $2, 1) \
             ON CONFLICT (peer_id, day) DO UPDATE SET rejected = node_days.rejected + 1",
        )
        .bind(peer)
        .bind(day_of(now))
        .execute(&self.store.pool)
        .await;
        if let Err(e) = r {
            warn!(error = %e, "could not count a rejection");
        }
    }

    /// `POST /api/v1/nodes/register`.
    pub async fn register(
        &self,
        signer: PeerId,
        req: RegisterRequest,
    ) -> Result<RegisterResponse, HttpError> {
        if req.peer_id != signer {
            return Err(HttpError::new(
                400,
                "peer_mismatch",
                "peer_id in the body differs from the signing key",
            ));
        }
        req.validate().map_err(invalid)?;
        let now = self.clock.now_ms();
        let me = signer.to_base58();
        let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO nodes (peer_id, version, nickname, external_addrs, relay_addrs, listen_addrs, \
               reachability, upload_cap_kbps, os, arch, registered_at, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (peer_id) DO UPDATE SET version = excluded.version, nickname = excluded.nickname, \
               external_addrs = excluded.external_addrs, relay_addrs = excluded.relay_addrs, \
               listen_addrs = excluded.listen_addrs, \
               reachability = excluded.reachability, upload_cap_kbps = excluded.upload_cap_kbps, \
               os = excluded.os, arch = excluded.arch, last_seen = excluded.last_seen",
        )
        .bind(&me)
        .bind(&req.version)
        .bind(&req.nickname)
        .bind(json(&req.external_addrs))
        .bind(json(&req.relay_addrs))
        .bind(json(&req.listen_addrs))
        .bind(req.reachability.as_str())
        .bind(i(req.upload_cap_kbps))
        .bind(&req.os)
        .bind(&req.arch)
        .bind(now)
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        let bootstrap_peers = self.bootstrap_peers(&me, now).await?;
        info!(peer = %me, version = %req.version, reachability = req.reachability.as_str(), "node registered");
        Ok(RegisterResponse {
            bootstrap_peers,
            heartbeat_interval_secs: self.heartbeat_interval_secs,
            latest_version: self.latest_version().await?,
        })
    }

    /// Up to [`MAX_BOOTSTRAP_PEERS`] online nodes for `me` to join through, never `me`: public ones with
    /// their confirmed addresses, newest heartbeat first; while fewer than [`MIN_PUBLIC_BOOTSTRAP_PEERS`]
    /// are public, other online nodes follow with the addresses they listen on (`confirmed: false`). Without
    /// them, a network whose nodes all joined through the coordinator never starts: AutoNAT confirms an
    /// address only through a peer, and no node would have one.
    async fn bootstrap_peers(&self, me: &str, now: i64) -> Result<Vec<BootstrapPeer>, HttpError> {
        // Two queries rather than one sorted by reachability: the second runs only in a young network,
        // and the first stays an index range on public nodes however many private ones there are.
        let mut peers = self
            .online_nodes(me, now, true, MAX_BOOTSTRAP_PEERS)
            .await?;
        if peers.len() < MIN_PUBLIC_BOOTSTRAP_PEERS {
            let more = MAX_BOOTSTRAP_PEERS - peers.len();
            peers.extend(self.online_nodes(me, now, false, more).await?);
        }
        Ok(peers)
    }

    /// At most `limit` online nodes but `me`, newest heartbeat first, that are public (with their confirmed
    /// addresses) or not (with the addresses they listen on); nodes without such addresses are left out.
    async fn online_nodes(
        &self,
        me: &str,
        now: i64,
        public: bool,
        limit: usize,
    ) -> Result<Vec<BootstrapPeer>, HttpError> {
        let (column, test) = if public {
            ("external_addrs", "=")
        } else {
            ("listen_addrs", "<>")
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT peer_id, {column} FROM nodes \
             WHERE reachability {test} 'public' AND last_seen >= $1 AND peer_id <> $2 \
             ORDER BY last_seen DESC LIMIT $3"
        )))
        .bind(self.offline_cutoff(now))
        .bind(me)
        .bind(limit as i64)
        .fetch_all(&self.store.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let peer_id: PeerId = row.try_get::<String, _>(0).ok()?.parse().ok()?;
                let addrs: Vec<String> =
                    serde_json::from_str(&row.try_get::<String, _>(1).ok()?).ok()?;
                (!addrs.is_empty()).then_some(BootstrapPeer {
                    peer_id,
                    addrs,
                    confirmed: public,
                })
            })
            .collect())
    }

    /// `POST /api/v1/nodes/heartbeat`.
    pub async fn heartbeat(
        &self,
        signer: PeerId,
        req: HeartbeatRequest,
    ) -> Result<HeartbeatResponse, HttpError> {
        req.validate().map_err(invalid)?;
        let now = self.clock.now_ms();
        let today = day_of(now);
        let cutoff = self.offline_cutoff(now);
        let me = signer.to_base58();
        // Signatures first, outside the transaction: they are the CPU-heavy part.
        let prechecked: Vec<Result<&SignedReceipt, ReceiptRejection>> = req
            .receipts
            .iter()
            .map(|sr| {
                let r = &sr.receipt;
                if r.provider != signer {
                    Err(ReceiptRejection::NotProvider)
                } else if r.receiver == r.provider {
                    Err(ReceiptRejection::SelfReceipt)
                } else if sr.verify().is_err() {
                    Err(ReceiptRejection::Forged)
                } else {
                    Ok(sr)
                }
            })
            .collect();

        let mut tx = self.store.pool.begin().await?;
        let node = sqlx::query(
            "SELECT registered_at, last_seen, claimed_bytes, verified_bytes, earnings FROM nodes WHERE peer_id = $1",
        )
        .bind(&me)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(not_registered)?;
        let registered_at: i64 = node.try_get(0)?;
        let last_seen: i64 = node.try_get(1)?;
        let claimed_total: i64 = node.try_get(2)?;
        let verified_total: i64 = node.try_get(3)?;
        let earnings_total: f64 = node.try_get(4)?;
        // Time online since the last heartbeat, if the node was online then.
        let online_add = if last_seen >= cutoff {
            (now - last_seen).clamp(0, OFFLINE_AFTER_INTERVALS * self.interval_ms())
        } else {
            0
        };
        let rate = rate_per_gb(&mut tx).await?;

        let mut outcome = ReceiptOutcome::default();
        let mut rejected_against_me = 0i64;
        for (index, pre) in prechecked.into_iter().enumerate() {
            let result = match pre {
                Ok(sr) => self.credit_receipt(&mut tx, sr, cutoff, now).await?,
                Err(reason) => Err(reason),
            };
            match result {
                Ok(bytes) => {
                    outcome.accepted += 1;
                    outcome.credited_bytes += bytes;
                }
                Err(reason) => {
                    self.metrics.reject_receipt(reason.as_str());
                    if accounting::counts_against_provider(reason) {
                        rejected_against_me += 1;
                    }
                    outcome.rejected.push(RejectedReceipt { index, reason });
                }
            }
        }
        let credited = outcome.credited_bytes;
        let earned = credited as f64 / 1e9 * rate;
        let streams_held = serde_json::to_string(&req.streams_held).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "UPDATE nodes SET last_seen = $1, reachability = $2, players = $3, peers = $4, streams_held = $5, \
               claimed_bytes = claimed_bytes + $6, verified_bytes = verified_bytes + $7, earnings = earnings + $8 \
             WHERE peer_id = $9",
        )
        .bind(now)
        .bind(req.reachability.as_str())
        .bind(i64::from(req.players))
        .bind(i64::from(req.peers))
        .bind(streams_held)
        .bind(i(req.bytes_relayed))
        .bind(i(credited))
        .bind(earned)
        .bind(&me)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO node_days (peer_id, day, online_ms, claimed_bytes, verified_bytes, earnings, rejected) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (peer_id, day) DO UPDATE SET online_ms = node_days.online_ms + excluded.online_ms, \
               claimed_bytes = node_days.claimed_bytes + excluded.claimed_bytes, \
               verified_bytes = node_days.verified_bytes + excluded.verified_bytes, \
               earnings = node_days.earnings + excluded.earnings, \
               rejected = node_days.rejected + excluded.rejected",
        )
        .bind(&me)
        .bind(today)
        .bind(online_add)
        .bind(i(req.bytes_relayed))
        .bind(i(credited))
        .bind(earned)
        .bind(rejected_against_me)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM streams WHERE origin_peer = $1")
            .bind(&me)
            .execute(&mut *tx)
            .await?;
        for s in &req.streams_published {
            sqlx::query(
                "INSERT INTO streams (origin_peer, name, started_at, bitrate_kbps, players) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (origin_peer, name) DO NOTHING",
            )
            .bind(&me)
            .bind(&s.name)
            .bind(s.started_at_ms)
            .bind(i(s.bitrate_kbps))
            .bind(i64::from(s.players))
            .execute(&mut *tx)
            .await?;
        }
        let assignments = sqlx::query(
            "SELECT id, stream_name, rtmp_url FROM assignments WHERE node = $1 AND stopped_at IS NULL \
             ORDER BY created_at LIMIT $2",
        )
        .bind(&me)
        .bind(MAX_ASSIGNMENTS as i64)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok(Assignment {
                id: r.try_get(0)?,
                stream_name: r.try_get(1)?,
                rtmp_url: r.try_get(2)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let window = window_sums(&mut tx, &me, today).await?;
        tx.commit().await?;

        self.metrics
            .receipts_accepted
            .inc_by(u64::from(outcome.accepted));
        self.metrics.credited_bytes.inc_by(credited);
        let trust = trust::score(&TrustInputs {
            now_ms: now,
            registered_at_ms: registered_at,
            online_ms: window.online_ms,
            claimed_bytes: window.claimed,
            verified_bytes: window.verified,
            reachability: req.reachability,
            rejected: window.rejected,
        });
        Ok(HeartbeatResponse {
            heartbeat_interval_secs: self.heartbeat_interval_secs,
            assignments,
            receipts: outcome,
            earnings: EarningsSnapshot {
                verified_bytes: u(verified_total) + credited,
                claimed_bytes: u(claimed_total) + req.bytes_relayed,
                rate_per_gb: rate,
                earnings_today: window.earnings_today,
                earnings_total: earnings_total + earned,
            },
            trust,
            latest_version: self.latest_version().await?,
        })
    }

    /// Judges one signature-checked receipt and credits it. `Ok(Err(..))` is a rejection.
    async fn credit_receipt(
        &self,
        tx: &mut AnyConnection,
        sr: &SignedReceipt,
        cutoff: i64,
        now: i64,
    ) -> Result<Result<u64, ReceiptRejection>, HttpError> {
        let r = &sr.receipt;
        let receiver = r.receiver.to_base58();
        let receiver_seen: Option<i64> =
            sqlx::query("SELECT last_seen FROM nodes WHERE peer_id = $1")
                .bind(&receiver)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get(0))
                .transpose()?;
        match receiver_seen {
            None => return Ok(Err(ReceiptRejection::ReceiverUnregistered)),
            Some(seen) if seen < cutoff => return Ok(Err(ReceiptRejection::ReceiverOffline)),
            Some(_) => {}
        }
        let provider = r.provider.to_base58();
        let select = format!(
            "SELECT counter, bytes, window_end FROM receipt_series \
             WHERE provider = $1 AND receiver = $2 AND stream = $3 AND window_start = $4{}",
            self.store.for_update()
        );
        // Two attempts: a new series may be inserted by another instance between our read and our insert.
        for _ in 0..2 {
            let prev = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
                .bind(&provider)
                .bind(&receiver)
                .bind(&r.stream)
                .bind(i(r.window_start_ms))
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| -> Result<SeriesState, sqlx::Error> {
                    Ok(SeriesState {
                        counter: u(row.try_get(0)?),
                        bytes: u(row.try_get(1)?),
                        window_end_ms: u(row.try_get(2)?),
                    })
                })
                .transpose()?;
            let credit = match accounting::judge(prev, r, now) {
                Ok(c) => c,
                Err(reason) => return Ok(Err(reason)),
            };
            let written = if prev.is_none() {
                sqlx::query(
                    "INSERT INTO receipt_series (provider, receiver, stream, window_start, counter, bytes, window_end, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                )
                .bind(&provider)
                .bind(&receiver)
                .bind(&r.stream)
                .bind(i(r.window_start_ms))
                .bind(i(r.counter))
                .bind(i(r.bytes))
                .bind(i(r.window_end_ms))
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
            } else {
                sqlx::query(
                    "UPDATE receipt_series SET counter = $1, bytes = $2, window_end = $3, updated_at = $4 \
                     WHERE provider = $5 AND receiver = $6 AND stream = $7 AND window_start = $8 AND counter < $1",
                )
                .bind(i(r.counter))
                .bind(i(r.bytes))
                .bind(i(r.window_end_ms))
                .bind(now)
                .bind(&provider)
                .bind(&receiver)
                .bind(&r.stream)
                .bind(i(r.window_start_ms))
                .execute(&mut *tx)
                .await?
                .rows_affected()
            };
            if written == 1 {
                return Ok(Ok(credit));
            }
        }
        Ok(Err(ReceiptRejection::Duplicate))
    }

    /// `GET /api/v1/streams`.
    pub async fn streams(&self) -> Result<StreamsResponse, HttpError> {
        let now = self.clock.now_ms();
        let rows = sqlx::query(
            "SELECT s.origin_peer, s.name, s.started_at, s.bitrate_kbps, s.players, \
               (SELECT COUNT(*) FROM sessions x WHERE x.closed_at IS NULL AND x.stream = s.name \
                  AND (x.origin_peer IS NULL OR x.origin_peer = s.origin_peer)) \
             FROM streams s JOIN nodes n ON n.peer_id = s.origin_peer \
             WHERE n.last_seen >= $1 ORDER BY s.started_at LIMIT 1000",
        )
        .bind(self.offline_cutoff(now))
        .fetch_all(&self.store.pool)
        .await?;
        let mut streams = Vec::with_capacity(rows.len());
        for row in rows {
            let Ok(origin_peer) = row.try_get::<String, _>(0)?.parse::<PeerId>() else {
                continue;
            };
            let name: String = row.try_get(1)?;
            let players: i64 = row.try_get(4)?;
            let sessions: i64 = row.try_get(5)?;
            streams.push(StreamEntry {
                play_name: play_name(&name, &origin_peer),
                name,
                origin_peer,
                viewers: u(players) + u(sessions),
                bitrate_kbps: u(row.try_get(3)?),
                started_at_ms: row.try_get(2)?,
            });
        }
        streams.sort_by_key(|s| std::cmp::Reverse(s.viewers));
        Ok(StreamsResponse { streams })
    }

    async fn require_registered(&self, peer: &str) -> Result<(), HttpError> {
        sqlx::query("SELECT 1 FROM nodes WHERE peer_id = $1")
            .bind(peer)
            .fetch_optional(&self.store.pool)
            .await?
            .map(|_| ())
            .ok_or_else(not_registered)
    }

    /// `POST /api/v1/sessions/open`.
    pub async fn session_open(
        &self,
        viewer: PeerId,
        req: SessionOpenRequest,
    ) -> Result<SessionResponse, HttpError> {
        validate_session_id(&req.session_id).map_err(invalid)?;
        let (name, origin_in_name) = match req.stream.split_once('@') {
            Some((n, o)) => (n, o.parse::<PeerId>().ok()),
            None => (req.stream.as_str(), None),
        };
        validate_stream_name(name).map_err(invalid)?;
        let origin = req.origin_peer.or(origin_in_name).map(|p| p.to_base58());
        let me = viewer.to_base58();
        self.require_registered(&me).await?;
        let now = self.clock.now_ms();
        // A queued open may arrive late; a time in the future is not believed.
        let opened_at = req.opened_at_ms.min(now);
        let inserted = sqlx::query(
            "INSERT INTO sessions (id, viewer, stream, origin_peer, opened_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&req.session_id)
        .bind(&me)
        .bind(name)
        .bind(origin)
        .bind(opened_at)
        .execute(&self.store.pool)
        .await?
        .rows_affected();
        let state = self.session_state(&req.session_id, &me).await?;
        if inserted == 1 {
            info!(viewer = %me, stream = name, "session opened");
        }
        Ok(SessionResponse {
            session_id: req.session_id,
            state,
        })
    }

    async fn session_state(&self, id: &str, viewer: &str) -> Result<String, HttpError> {
        let row = sqlx::query("SELECT viewer, closed_at FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.store.pool)
            .await?
            .ok_or_else(|| HttpError::new(404, "unknown_session", "no session with this id"))?;
        let owner: String = row.try_get(0)?;
        if owner != viewer {
            return Err(HttpError::new(
                403,
                "not_your_session",
                "this session belongs to another node",
            ));
        }
        let closed: Option<i64> = row.try_get(1)?;
        Ok(if closed.is_some() { "closed" } else { "open" }.to_string())
    }

    /// `POST /api/v1/sessions/close`.
    pub async fn session_close(
        &self,
        viewer: PeerId,
        req: SessionCloseRequest,
    ) -> Result<SessionResponse, HttpError> {
        validate_session_id(&req.session_id).map_err(invalid)?;
        let me = viewer.to_base58();
        self.session_state(&req.session_id, &me).await?;
        let now = self.clock.now_ms();
        // Idempotent; a close with the node's own totals replaces the sweep's "offline" close.
        let updated = sqlx::query(
            "UPDATE sessions SET closed_at = $1, bytes_received = $2, close_reason = 'closed' \
             WHERE id = $3 AND viewer = $4 AND (closed_at IS NULL OR close_reason = 'offline')",
        )
        .bind(req.closed_at_ms.min(now))
        .bind(i(req.bytes_received))
        .bind(&req.session_id)
        .bind(&me)
        .execute(&self.store.pool)
        .await?
        .rows_affected();
        if updated == 1 {
            info!(viewer = %me, session = %req.session_id, bytes = req.bytes_received, "session closed");
        }
        Ok(SessionResponse {
            session_id: req.session_id,
            state: "closed".into(),
        })
    }

    /// Counts one use of a rate-limited action; `Err` when over `limit` in the current window.
    async fn rate_limit(&self, key: &str, window_ms: i64, limit: i64) -> Result<(), HttpError> {
        let now = self.clock.now_ms();
        let window_start = now - now.rem_euclid(window_ms);
        let count: i64 = sqlx::query(
            "INSERT INTO rate_limits (key, window_start, count) VALUES ($1, $2, 1) \
             ON CONFLICT (key, window_start) DO UPDATE SET count = rate_limits.count + 1 RETURNING count",
        )
        .bind(key)
        .bind(window_start)
        .fetch_one(&self.store.pool)
        .await?
        .try_get(0)?;
        if count > limit {
            self.metrics.reject_request("rate_limited");
            return Err(HttpError::new(
                429,
                "rate_limited",
                format!(
                    "too many requests: at most {limit} per {} s; try again later",
                    window_ms / 1000
                ),
            ));
        }
        Ok(())
    }

    /// `POST /api/v1/invites`.
    pub async fn invite_create(
        &self,
        creator: PeerId,
        req: InviteRequest,
    ) -> Result<InviteCreated, HttpError> {
        if req.invite.is_empty() || req.invite.len() > MAX_INVITE {
            return Err(invalid(format!(
                "the invite must be 1 to {MAX_INVITE} bytes"
            )));
        }
        let me = creator.to_base58();
        self.require_registered(&me).await?;
        self.rate_limit(&format!("invite:{me}"), 3_600_000, INVITES_PER_HOUR)
            .await?;
        let now = self.clock.now_ms();
        let expires_at_ms = now + INVITE_TTL_MS;
        for _ in 0..8 {
            let code: String = (0..INVITE_CODE_LEN)
                .map(|_| INVITE_ALPHABET[rand::random_range(0..INVITE_ALPHABET.len())] as char)
                .collect();
            let inserted = sqlx::query(
                "INSERT INTO invites (code, created_by, body, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (code) DO NOTHING",
            )
            .bind(&code)
            .bind(&me)
            .bind(&req.invite)
            .bind(now)
            .bind(expires_at_ms)
            .execute(&self.store.pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(InviteCreated {
                    code,
                    expires_at_ms,
                });
            }
        }
        Err(HttpError::new(
            503,
            "no_code",
            "could not find a free invite code; try again",
        ))
    }

    /// `GET /api/v1/invites/{code}`; `client` is the asker's address (rate limit).
    pub async fn invite_get(&self, typed: &str, client: &str) -> Result<Invite, HttpError> {
        self.rate_limit(
            &format!("invite-get:{client}"),
            60_000,
            INVITE_LOOKUPS_PER_MINUTE,
        )
        .await?;
        let code = normalize_invite_code(typed).ok_or_else(|| {
            invalid(format!(
                "an invite code is {INVITE_CODE_LEN} letters and digits"
            ))
        })?;
        let row = sqlx::query(
            "SELECT created_by, body, created_at, expires_at FROM invites WHERE code = $1",
        )
        .bind(&code)
        .fetch_optional(&self.store.pool)
        .await?
        .ok_or_else(|| {
            HttpError::new(
                404,
                "unknown_invite",
                "no invite with this code: check the code, or ask for a new one",
            )
        })?;
        let expires_at_ms: i64 = row.try_get(3)?;
        if expires_at_ms <= self.clock.now_ms() {
            return Err(HttpError::new(
                410,
                "invite_expired",
                "this invite code has expired (codes last 24 hours): ask for a new one",
            ));
        }
        let created_by: PeerId = row
            .try_get::<String, _>(0)?
            .parse()
            .map_err(|_| HttpError::new(500, "corrupt", "stored invite has a bad creator"))?;
        Ok(Invite {
            code,
            invite: row.try_get(1)?,
            created_by,
            created_at_ms: row.try_get(2)?,
            expires_at_ms,
        })
    }

    async fn node_row(&self, peer: &str) -> Result<AnyRow, HttpError> {
        sqlx::query(
            "SELECT last_seen, verified_bytes, claimed_bytes, earnings, registered_at, reachability \
             FROM nodes WHERE peer_id = $1",
        )
        .bind(peer)
        .fetch_optional(&self.store.pool)
        .await?
        .ok_or_else(|| HttpError::new(404, "unknown_node", "no node with this id is registered"))
    }

    async fn trust_of(&self, peer: &str, row: &AnyRow) -> Result<TrustSnapshot, HttpError> {
        let now = self.clock.now_ms();
        let mut conn = self.store.pool.acquire().await?;
        let window = window_sums(&mut conn, peer, day_of(now)).await?;
        Ok(trust::score(&TrustInputs {
            now_ms: now,
            registered_at_ms: row.try_get(4)?,
            online_ms: window.online_ms,
            claimed_bytes: window.claimed,
            verified_bytes: window.verified,
            reachability: Reachability::parse(&row.try_get::<String, _>(5)?),
            rejected: window.rejected,
        }))
    }

    /// `GET /api/v1/nodes/{peer_id}`.
    pub async fn node_info(&self, peer: &str) -> Result<NodeInfo, HttpError> {
        let peer = parse_peer(peer)?;
        let row = self.node_row(&peer).await?;
        let trust = self.trust_of(&peer, &row).await?;
        let last_seen: i64 = row.try_get(0)?;
        Ok(NodeInfo {
            online: last_seen >= self.offline_cutoff(self.clock.now_ms()),
            trust_score: trust.score,
            verified_bytes: u(row.try_get(1)?),
            claimed_bytes: u(row.try_get(2)?),
            earnings: row.try_get(3)?,
            peer_id: peer,
        })
    }

    /// `GET /api/v1/nodes/{peer_id}/trust`.
    pub async fn node_trust(&self, peer: &str) -> Result<TrustReport, HttpError> {
        let peer = parse_peer(peer)?;
        let row = self.node_row(&peer).await?;
        let trust = self.trust_of(&peer, &row).await?;
        Ok(TrustReport {
            peer_id: peer,
            trust,
        })
    }

    /// `GET /api/v1/nodes/{peer_id}/earnings`.
    pub async fn node_earnings(&self, peer: &str) -> Result<EarningsReport, HttpError> {
        let peer = parse_peer(peer)?;
        let row = self.node_row(&peer).await?;
        let today = day_of(self.clock.now_ms());
        let days = sqlx::query(
            "SELECT day, verified_bytes, claimed_bytes, earnings FROM node_days \
             WHERE peer_id = $1 AND day > $2 AND (verified_bytes > 0 OR claimed_bytes > 0) ORDER BY day DESC",
        )
        .bind(&peer)
        .bind(today - 30)
        .fetch_all(&self.store.pool)
        .await?
        .iter()
        .map(|r| {
            let verified = u(r.try_get(1)?);
            let earnings: f64 = r.try_get(3)?;
            Ok(DayEarnings {
                day: format_day(r.try_get(0)?),
                verified_bytes: verified,
                claimed_bytes: u(r.try_get(2)?),
                rate_per_gb: if verified > 0 {
                    earnings / (verified as f64 / 1e9)
                } else {
                    0.0
                },
                earnings,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(EarningsReport {
            peer_id: peer,
            days,
            earnings_total: row.try_get(3)?,
        })
    }

    /// The operator's announced release.
    pub async fn latest_version(&self) -> Result<Option<VersionNotice>, HttpError> {
        let raw = setting(&self.store, "latest_version").await?;
        Ok(raw.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// `PUT /api/v1/operator/version`.
    pub async fn set_latest_version(&self, v: VersionNotice) -> Result<VersionNotice, HttpError> {
        validate_label(&v.version, "version").map_err(invalid)?;
        if v.url.as_ref().is_some_and(|u| u.len() > 512)
            || v.notes.as_ref().is_some_and(|n| n.len() > 512)
        {
            return Err(invalid("url and notes are at most 512 characters"));
        }
        let json = serde_json::to_string(&v).map_err(invalid)?;
        put_setting(&self.store, "latest_version", &json).await?;
        Ok(v)
    }

    /// `GET /api/v1/operator/rate`.
    pub async fn rate(&self) -> Result<RateRequest, HttpError> {
        let mut conn = self.store.pool.acquire().await?;
        Ok(RateRequest {
            rate_per_gb: rate_per_gb(&mut conn).await?,
        })
    }

    /// `PUT /api/v1/operator/rate`: applies to bytes credited from now on.
    pub async fn set_rate(&self, req: RateRequest) -> Result<RateRequest, HttpError> {
        if !req.rate_per_gb.is_finite() || req.rate_per_gb < 0.0 {
            return Err(invalid("rate_per_gb must be a finite number >= 0"));
        }
        put_setting(&self.store, "rate_per_gb", &req.rate_per_gb.to_string()).await?;
        info!(rate_per_gb = req.rate_per_gb, "rate set");
        Ok(req)
    }

    /// `POST /api/v1/operator/assignments`.
    pub async fn add_assignment(
        &self,
        req: AssignmentRequest,
    ) -> Result<OperatorAssignment, HttpError> {
        validate_stream_name(&req.stream_name).map_err(invalid)?;
        validate_rtmp_url(&req.rtmp_url).map_err(invalid)?;
        let node = req.node.to_base58();
        self.require_registered(&node).await?;
        let id = hex::encode(rand::random::<[u8; 8]>());
        let now = self.clock.now_ms();
        sqlx::query(
            "INSERT INTO assignments (id, node, stream_name, rtmp_url, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(&node)
        .bind(&req.stream_name)
        .bind(&req.rtmp_url)
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        info!(%id, %node, stream = %req.stream_name, "assignment added");
        Ok(OperatorAssignment {
            id,
            node: req.node,
            stream_name: req.stream_name,
            rtmp_url: req.rtmp_url,
            created_at_ms: now,
        })
    }

    /// `DELETE /api/v1/operator/assignments/{id}`: the node stops it at its next heartbeat.
    pub async fn stop_assignment(&self, id: &str) -> Result<(), HttpError> {
        let n = sqlx::query(
            "UPDATE assignments SET stopped_at = $1 WHERE id = $2 AND stopped_at IS NULL",
        )
        .bind(self.clock.now_ms())
        .bind(id)
        .execute(&self.store.pool)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(HttpError::new(
                404,
                "unknown_assignment",
                "no running assignment with this id",
            ));
        }
        Ok(())
    }

    /// `GET /api/v1/operator/assignments`.
    pub async fn assignments(&self) -> Result<AssignmentList, HttpError> {
        let rows = sqlx::query(
            "SELECT id, node, stream_name, rtmp_url, created_at FROM assignments WHERE stopped_at IS NULL \
             ORDER BY created_at",
        )
        .fetch_all(&self.store.pool)
        .await?;
        let mut assignments = Vec::with_capacity(rows.len());
        for r in rows {
            let Ok(node) = r.try_get::<String, _>(1)?.parse() else {
                continue;
            };
            assignments.push(OperatorAssignment {
                id: r.try_get(0)?,
                node,
                stream_name: r.try_get(2)?,
                rtmp_url: r.try_get(3)?,
                created_at_ms: r.try_get(4)?,
            });
        }
        Ok(AssignmentList { assignments })
    }

    /// Periodic work any instance may do (idempotent): close the sessions of nodes that went offline, forget
    /// old nonces, rate-limit windows and long-expired invites. Returns the sessions closed.
    pub async fn sweep(&self) -> Result<u64, HttpError> {
        let now = self.clock.now_ms();
        let closed = sqlx::query(
            "UPDATE sessions SET closed_at = $1, close_reason = 'offline' WHERE closed_at IS NULL \
             AND viewer IN (SELECT peer_id FROM nodes WHERE last_seen < $2)",
        )
        .bind(now)
        .bind(self.offline_cutoff(now))
        .execute(&self.store.pool)
        .await?
        .rows_affected();
        if closed > 0 {
            info!(closed, "sessions of offline nodes closed");
            self.metrics.sessions_closed_offline.inc_by(closed);
        }
        sqlx::query("DELETE FROM nonces WHERE seen_at < $1")
            .bind(now - NONCE_RETENTION_MS)
            .execute(&self.store.pool)
            .await?;
        sqlx::query("DELETE FROM rate_limits WHERE window_start < $1")
            .bind(now - 2 * 3_600_000)
            .execute(&self.store.pool)
            .await?;
        sqlx::query("DELETE FROM invites WHERE expires_at < $1")
            .bind(now - 7 * DAY_MS)
            .execute(&self.store.pool)
            .await?;
        Ok(closed)
    }

    /// Checks `Authorization: Bearer TOKEN` for operator endpoints.
    pub fn check_operator(&self, authorization: Option<&str>) -> Result<(), HttpError> {
        let Some(expected) = &self.operator_token else {
            self.metrics.reject_request("operator_disabled");
            return Err(HttpError::new(
                403,
                "operator_disabled",
                "operator endpoints are off: start the coordinator with --operator-token",
            ));
        };
        let given = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            self.metrics.reject_request("operator_unauthorized");
            Err(HttpError::new(
                401,
                "operator_unauthorized",
                "operator endpoints need Authorization: Bearer <the --operator-token value>",
            ))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_peer(text: &str) -> Result<String, HttpError> {
    text.parse::<PeerId>()
        .map(|p| p.to_base58())
        .map_err(|_| HttpError::new(400, "invalid", "not a peer id"))
}

/// Sums over a node's last 7 days.
struct WindowSums {
    online_ms: i64,
    claimed: u64,
    verified: u64,
    rejected: u64,
    earnings_today: f64,
}

async fn window_sums(
    conn: &mut AnyConnection,
    peer: &str,
    today: i64,
) -> Result<WindowSums, sqlx::Error> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(online_ms), 0) AS BIGINT), CAST(COALESCE(SUM(claimed_bytes), 0) AS BIGINT), \
           CAST(COALESCE(SUM(verified_bytes), 0) AS BIGINT), CAST(COALESCE(SUM(rejected), 0) AS BIGINT), \
           COALESCE(SUM(CASE WHEN day = $3 THEN earnings ELSE 0.0 END), 0.0) \
         FROM node_days WHERE peer_id = $1 AND day >= $2",
    )
    .bind(peer)
    .bind(today - 6)
    .bind(today)
    .fetch_one(&mut *conn)
    .await?;
    Ok(WindowSums {
        online_ms: row.try_get(0)?,
        claimed: u(row.try_get(1)?),
        verified: u(row.try_get(2)?),
        rejected: u(row.try_get(3)?),
        earnings_today: row.try_get(4)?,
    })
}

async fn rate_per_gb(conn: &mut AnyConnection) -> Result<f64, sqlx::Error> {
    let v: Option<String> = sqlx::query("SELECT value FROM settings WHERE key = 'rate_per_gb'")
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0.0))
}

async fn setting(store: &Store, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_optional(&store.pool)
        .await?
        .map(|r| r.try_get(0))
        .transpose()
}

async fn put_setting(store: &Store, key: &str, value: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(&store.pool)
    .await?;
    Ok(())
}
