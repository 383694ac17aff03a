//! The node's side of the coordinator API: [`CoordinatorClient`] signs every request with the node key and
//! treats every answer as untrusted (bounded size, values checked); [`spawn`] runs registration and
//! heartbeats in the background and keeps receipts and session ends on disk until they are delivered.

mod outbox;
mod runner;

use std::time::Duration;

use libp2p_identity::{Keypair, PeerId};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::api::*;
use crate::auth::{new_nonce, sign_request};
use crate::time::now_ms;

pub use outbox::{Outbox, OutboxLimits, SessionEvent};
pub use runner::{
    CoordinatorHandle, CoordinatorState, HeartbeatFigures, NodeRegistration, NodeReport,
    RunnerConfig, spawn,
};

/// Why a coordinator request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configured URL is not `http(s)://host[:port][/prefix]`.
    #[error(
        "coordinator URL {url:?} is invalid: {reason} (expected e.g. https://coordinator.example.org)"
    )]
    InvalidUrl {
        /// As given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// No connection, or it broke.
    #[error("coordinator unreachable: {0}")]
    Unreachable(String),
    /// No answer in time.
    #[error("coordinator did not answer within {0:?}")]
    Timeout(Duration),
    /// 5xx or 429: the coordinator has trouble or asks us to slow down.
    #[error("coordinator is unavailable ({status}): {message}")]
    Unavailable {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// 4xx: the coordinator refused this request.
    #[error("coordinator refused the request ({status} {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its machine-readable code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The answer is larger than [`MAX_RESPONSE_BODY`].
    #[error("coordinator answer larger than {MAX_RESPONSE_BODY} bytes; ignored")]
    TooLarge,
    /// The answer is not what the API says.
    #[error("coordinator answer is malformed: {0}")]
    Malformed(String),
}

impl ClientError {
    /// Whether trying again later may work (the runner backs off and retries these).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable(_)
                | ClientError::Timeout(_)
                | ClientError::Unavailable { .. }
                | ClientError::TooLarge
                | ClientError::Malformed(_)
        ) || matches!(self, ClientError::Refused { code, .. } if code == "clock_skew" || code == "replayed_nonce")
    }

    /// The coordinator's error code, for 4xx answers.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A signed HTTP client for one coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    http: reqwest::Client,
    base: String,
    keypair: Keypair,
    timeout: Duration,
}

/// Per-request timeout of [`CoordinatorClient::new`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl CoordinatorClient {
    /// A client for `base_url` (`http://` or `https://`, optionally with a path prefix) signing with `keypair`.
    pub fn new(base_url: &str, keypair: Keypair) -> Result<Self, ClientError> {
        Self::with_timeout(base_url, keypair, DEFAULT_TIMEOUT)
    }

    /// As [`CoordinatorClient::new`] with another per-request timeout.
    pub fn with_timeout(
        base_url: &str,
        keypair: Keypair,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // Answers are untrusted: no redirects to elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "streamr-node-coordinator-client/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| ClientError::InvalidUrl {
                url: base_url.to_string(),
                reason: format!("HTTP client: {e}"),
            })?;
        Self::with_http(base_url, keypair, http, timeout)
    }

    /// A client sharing `http`'s connection pool (many simulated nodes in the bench share one). `timeout`
    /// is only what errors report; the pool's own timeout applies.
    pub fn with_http(
        base_url: &str,
        keypair: Keypair,
        http: reqwest::Client,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: base_url.to_string(),
            reason: reason.to_string(),
        };
        let url = url::Url::parse(base_url.trim()).map_err(|e| invalid(&e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(invalid("only http:// and https:// are supported"));
        }
        if url.host_str().is_none() {
            return Err(invalid("no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("no query or fragment allowed"));
        }
        Ok(CoordinatorClient {
            http,
            base: url.as_str().trim_end_matches('/').to_string(),
            keypair,
            timeout,
        })
    }

    /// The node id requests are signed as.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// The node key (receipts are signed with it too).
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The coordinator's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST /api/v1/nodes/register`.
    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, ClientError> {
        let resp: RegisterResponse = self
            .call(Method::POST, "/nodes/register", Some(req))
            .await?;
        Ok(sanitize_register(resp, &self.peer_id()))
    }

    /// `POST /api/v1/nodes/heartbeat`.
    pub async fn heartbeat(
        &self,
        req: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        let resp: HeartbeatResponse = self
            .call(Method::POST, "/nodes/heartbeat", Some(req))
            .await?;
        Ok(sanitize_heartbeat(resp))
    }

    /// `GET /api/v1/streams` (streams with invalid names are dropped).
    pub async fn streams(&self) -> Result<StreamsResponse, ClientError> {
        let mut resp: StreamsResponse = self.call::<(), _>(Method::GET, "/streams", None).await?;
        resp.streams
            .retain(|s| validate_stream_name(&s.name).is_ok() && s.play_name.len() <= 160);
        resp.streams.truncate(1000);
        Ok(resp)
    }

    /// `POST /api/v1/sessions/open`.
    pub async fn open_session(
        &self,
        req: &SessionOpenRequest,
    ) -> Result<SessionResponse, ClientError> {
        self.call(Method::POST, "/sessions/open", Some(req)).await
    }

    /// `POST /api/v1/sessions/close`.
    pub async fn close_session(
        &self,
        req: &SessionCloseRequest,
    ) -> Result<SessionResponse, ClientError> {
        self.call(Method::POST, "/sessions/close", Some(req)).await
    }

    /// `POST /api/v1/invites`: stores `invite` (at most [`MAX_INVITE`] bytes) under a short code.
    pub async fn create_invite(&self, invite: &str) -> Result<InviteCreated, ClientError> {
        let created: InviteCreated = self
            .call(
                Method::POST,
                "/invites",
                Some(&InviteRequest {
                    invite: invite.to_string(),
                }),
            )
            .await?;
        normalize_invite_code(&created.code)
            .map(|code| InviteCreated { code, ..created })
            .ok_or_else(|| ClientError::Malformed("invite code is not 10 code characters".into()))
    }

    /// `GET /api/v1/invites/{code}`.
    pub async fn invite(&self, code: &str) -> Result<Invite, ClientError> {
        let code = normalize_invite_code(code).ok_or_else(|| ClientError::Refused {
            status: 400,
            code: "invalid".into(),
            message: format!("an invite code is {INVITE_CODE_LEN} letters and digits"),
        })?;
        let invite: Invite = self
            .call::<(), _>(Method::GET, &format!("/invites/{code}"), None)
            .await?;
        if invite.invite.len() > MAX_INVITE {
            return Err(ClientError::Malformed("invite longer than 2 KB".into()));
        }
        Ok(invite)
    }

    /// `GET /api/v1/nodes/{peer_id}`.
    pub async fn node_info(&self, peer: &PeerId) -> Result<NodeInfo, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/nodes/{peer}"), None)
            .await
    }

    /// `GET /api/v1/nodes/{peer_id}/trust`.
    pub async fn node_trust(&self, peer: &PeerId) -> Result<TrustReport, ClientError> {
        let mut r: TrustReport = self
            .call::<(), _>(Method::GET, &format!("/nodes/{peer}/trust"), None)
            .await?;
        r.trust = sanitize_trust(r.trust);
        Ok(r)
    }

    /// A signed request to `API_PREFIX + path`, its answer read up to [`MAX_RESPONSE_BODY`] bytes.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Malformed(e.to_string()))?,
            None => Vec::new(),
        };
        let url = format!("{}{API_PREFIX}{path}", self.base);
        // The signature covers the path as the server sees it (including any prefix of the base URL).
        let target = url::Url::parse(&url)
            .map(|u| u.path().to_string())
            .map_err(|e| ClientError::Malformed(e.to_string()))?;
        let signed = sign_request(
            &self.keypair,
            method.as_str(),
            &target,
            &body,
            now_ms(),
            new_nonce(),
        );
        let mut rb = self.http.request(method.clone(), &url);
        for (name, value) in signed.to_pairs() {
            rb = rb.header(name, value);
        }
        if method != Method::GET {
            rb = rb.header("content-type", "application/json").body(body);
        }
        let mut resp = rb.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        if let Some(len) = resp.content_length()
            && len > MAX_RESPONSE_BODY as u64
        {
            return Err(ClientError::TooLarge);
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(e))? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BODY {
                return Err(ClientError::TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Malformed(e.to_string()));
        }
        let err: Option<ApiError> = serde_json::from_slice(&bytes).ok();
        let (code, message) = match err {
            Some(e) => (truncate(&e.code, 64), truncate(&e.error, 300)),
            None => (String::new(), format!("HTTP {status}")),
        };
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Err(ClientError::Unavailable {
                status: status.as_u16(),
                message,
            })
        } else {
            Err(ClientError::Refused {
                status: status.as_u16(),
                code,
                message,
            })
        }
    }

    fn transport(&self, e: reqwest::Error) -> ClientError {
        if e.is_timeout() {
            ClientError::Timeout(self.timeout)
        } else {
            ClientError::Unreachable(error_chain(&e))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    truncate(&s, 300)
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

fn sanitize_version(v: Option<VersionNotice>) -> Option<VersionNotice> {
    let v = v?;
    if validate_label(&v.version, "version").is_err() || v.version.is_empty() {
        warn!("coordinator named a malformed latest version; ignored");
        return None;
    }
    Some(VersionNotice {
        version: v.version,
        url: v
            .url
            .filter(|u| u.len() <= 512 && (u.starts_with("https://") || u.starts_with("http://"))),
        notes: v.notes.map(|n| truncate(&n, 300)),
    })
}

/// Clamps the interval to 1 s..1 h: a coordinator cannot make the node fall silent for long.
fn sanitize_interval(secs: u64) -> u64 {
    secs.clamp(1, 3600)
}

fn sanitize_register(mut r: RegisterResponse, me: &PeerId) -> RegisterResponse {
    r.bootstrap_peers.truncate(MAX_BOOTSTRAP_PEERS);
    r.bootstrap_peers.retain(|p| &p.peer_id != me);
    for p in &mut r.bootstrap_peers {
        p.addrs.retain(|a| validate_addr(a).is_ok());
        p.addrs.truncate(MAX_ADDRS);
    }
    r.bootstrap_peers.retain(|p| !p.addrs.is_empty());
    r.heartbeat_interval_secs = sanitize_interval(r.heartbeat_interval_secs);
    r.latest_version = sanitize_version(r.latest_version);
    r
}

fn finite(v: f64) -> f64 {
    if v.is_finite() && v >= 0.0 { v } else { 0.0 }
}

fn sanitize_trust(mut t: TrustSnapshot) -> TrustSnapshot {
    t.score = t.score.min(100);
    t.reasons.truncate(10);
    t.reasons = t.reasons.iter().map(|r| truncate(r, 200)).collect();
    let c = &mut t.components;
    for v in [
        &mut c.uptime,
        &mut c.receipt_backing,
        &mut c.reachability,
        &mut c.age,
        &mut c.conduct,
    ] {
        *v = finite(*v).min(100.0);
    }
    t
}

fn sanitize_heartbeat(mut r: HeartbeatResponse) -> HeartbeatResponse {
    r.heartbeat_interval_secs = sanitize_interval(r.heartbeat_interval_secs);
    r.assignments.truncate(MAX_ASSIGNMENTS);
    r.assignments.retain(|a| {
        let ok = a.id.len() <= 64
            && !a.id.is_empty()
            && a.id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && validate_stream_name(&a.stream_name).is_ok()
            && validate_rtmp_url(&a.rtmp_url).is_ok();
        if !ok {
            warn!(id = %truncate(&a.id, 64), "coordinator sent an invalid assignment; ignored");
        }
        ok
    });
    r.receipts.rejected.truncate(MAX_RECEIPTS_PER_HEARTBEAT);
    let e = &mut r.earnings;
    e.rate_per_gb = finite(e.rate_per_gb);
    e.earnings_today = finite(e.earnings_today);
    e.earnings_total = finite(e.earnings_total);
    r.trust = sanitize_trust(r.trust);
    r.latest_version = sanitize_version(r.latest_version);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_are_accepted() {
        let kp = Keypair::generate_ed25519();
        assert!(CoordinatorClient::new("https://c.example.org", kp.clone()).is_ok());
        assert!(CoordinatorClient::new("http://127.0.0.1:8090/", kp.clone()).is_ok());
        for bad in ["ftp://x", "c.example.org", "https://c.example.org/?a=1", ""] {
            assert!(CoordinatorClient::new(bad, kp.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostile_heartbeat_answers_are_tamed() {
        let resp = HeartbeatResponse {
            heartbeat_interval_secs: 0,
            assignments: vec![
                Assignment {
                    id: "a1".into(),
                    stream_name: "cam".into(),
                    rtmp_url: "rtmp://example.org/live/cam".into(),
                },
                Assignment {
                    id: "a2".into(),
                    stream_name: "cam".into(),
                    rtmp_url: "file:///etc/passwd".into(),
                },
                Assignment {
                    id: "a3".into(),
                    stream_name: "../../x".into(),
                    rtmp_url: "rtmp://example.org/live/cam".into(),
                },
            ],
            receipts: ReceiptOutcome::default(),
            earnings: EarningsSnapshot {
                earnings_total: f64::NAN,
                rate_per_gb: -1.0,
                ..Default::default()
            },
            trust: TrustSnapshot {
                score: 250,
                components: Default::default(),
                reasons: vec!["x".repeat(10_000); 50],
            },
            latest_version: Some(VersionNotice {
                version: "9\n9".into(),
                url: None,
                notes: None,
            }),
        };
        let r = sanitize_heartbeat(resp);
        assert_eq!(r.heartbeat_interval_secs, 1);
        assert_eq!(r.assignments.len(), 1);
        assert_eq!(r.assignments[0].id, "a1");
        assert_eq!(r.earnings.earnings_total, 0.0);
        assert_eq!(r.earnings.rate_per_gb, 0.0);
        assert_eq!(r.trust.score, 100);
        assert_eq!(r.trust.reasons.len(), 10);
        assert!(r.trust.reasons.iter().all(|s| s.len() <= 200));
        assert!(r.latest_version.is_none());
    }
}
