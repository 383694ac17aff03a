//! The HTTP shell: one warp filter takes method, target, headers and a size-bounded body, a plain `match`
//! routes it, signed routes are authenticated before their body is parsed, and every error answers
//! [`ApiError`] JSON.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use warp::Filter;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::{Reply, Response};

use super::service::{HttpError, Service};
use crate::api::{ApiError, MAX_REQUEST_BODY};
use crate::auth::{
    HEADER_NONCE, HEADER_PEER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SignedHeaders,
};

/// All routes.
pub fn routes(
    service: Arc<Service>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::any()
        .map(move || service.clone())
        .and(warp::method())
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(warp::body::stream())
        .then(
            |service: Arc<Service>,
             method: Method,
             path: warp::path::FullPath,
             query: String,
             headers: HeaderMap,
             remote: Option<SocketAddr>,
             body| async move {
                let request = Request {
                    method,
                    path: path.as_str().to_string(),
                    query,
                    headers,
                    remote,
                };
                match read_body(body).await {
                    Ok(body) => handle(&service, request, body).await,
                    Err(e) => error_reply(&e),
                }
            },
        )
}

struct Request {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    remote: Option<SocketAddr>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// What the signature covers: path plus query.
    fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    fn signed_headers(&self) -> Result<SignedHeaders, crate::auth::AuthError> {
        SignedHeaders::parse(
            self.header(HEADER_PEER_ID),
            self.header(HEADER_TIMESTAMP),
            self.header(HEADER_NONCE),
            self.header(HEADER_SIGNATURE),
        )
    }
}

async fn read_body<S, B>(body: S) -> Result<Bytes, HttpError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut out = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            HttpError::new(400, "bad_body", format!("could not read the body: {e}"))
        })?;
        if out.len() + chunk.remaining() > MAX_REQUEST_BODY {
            return Err(HttpError::new(
                413,
                "body_too_large",
                format!("request body over {MAX_REQUEST_BODY} bytes"),
            ));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

fn json_reply<T: Serialize>(status: StatusCode, value: &T) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

fn error_reply(e: &HttpError) -> Response {
    json_reply(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &ApiError {
            code: e.code.to_string(),
            error: e.message.clone(),
        },
    )
}

fn answer<T: Serialize>(result: Result<T, HttpError>) -> Response {
    match result {
        Ok(v) => json_reply(StatusCode::OK, &v),
        Err(e) => error_reply(&e),
    }
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(body).map_err(|e| {
        HttpError::new(
            400,
            "invalid",
            format!("request body is not what this endpoint takes: {e}"),
        )
    })
}

async fn handle(service: &Service, req: Request, body: Bytes) -> Response {
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let route = route_name(&req.method, &segments);
    service
        .metrics
        .requests
        .get_or_create(&[("route", route)])
        .inc();
    match (&req.method, segments.as_slice()) {
        (&Method::GET, ["metrics"]) => warp::reply::with_header(
            service.metrics.render(),
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .into_response(),
        (&Method::GET, ["healthz"]) => answer(
            sqlx::query("SELECT 1")
                .execute(&service.store.pool)
                .await
                .map(|_| serde_json::json!({"ok": true}))
                .map_err(HttpError::from),
        ),
        (&Method::POST, ["api", "v1", "nodes", "register"]) => {
            answer(signed(service, &req, &body, |peer, b| service.register(peer, b)).await)
        }
        (&Method::POST, ["api", "v1", "nodes", "heartbeat"]) => {
            answer(signed(service, &req, &body, |peer, b| service.heartbeat(peer, b)).await)
        }
        (&Method::POST, ["api", "v1", "sessions", "open"]) => answer(
            signed(service, &req, &body, |peer, b| {
                service.session_open(peer, b)
            })
            .await,
        ),
        (&Method::POST, ["api", "v1", "sessions", "close"]) => answer(
            signed(service, &req, &body, |peer, b| {
                service.session_close(peer, b)
            })
            .await,
        ),
        (&Method::POST, ["api", "v1", "invites"]) => answer(
            signed(service, &req, &body, |peer, b| {
                service.invite_create(peer, b)
            })
            .await,
        ),
        (&Method::GET, ["api", "v1", "invites", code]) => {
            let client = req
                .remote
                .map(|a| a.ip().to_string())
                .unwrap_or_else(|| "unknown".into());
            match optional_auth(service, &req, &body).await {
                Ok(()) => answer(service.invite_get(code, &client).await),
                Err(e) => error_reply(&e),
            }
        }
        (&Method::GET, ["api", "v1", "streams"]) => match optional_auth(service, &req, &body).await
        {
            Ok(()) => answer(service.streams().await),
            Err(e) => error_reply(&e),
        },
        (&Method::GET, ["api", "v1", "nodes", peer]) => {
            match optional_auth(service, &req, &body).await {
                Ok(()) => answer(service.node_info(peer).await),
                Err(e) => error_reply(&e),
            }
        }
        (&Method::GET, ["api", "v1", "nodes", peer, "trust"]) => {
            match optional_auth(service, &req, &body).await {
                Ok(()) => answer(service.node_trust(peer).await),
                Err(e) => error_reply(&e),
            }
        }
        (&Method::GET, ["api", "v1", "nodes", peer, "earnings"]) => {
            match optional_auth(service, &req, &body).await {
                Ok(()) => answer(service.node_earnings(peer).await),
                Err(e) => error_reply(&e),
            }
        }
        (_, ["api", "v1", "operator", ..]) => {
            if let Err(e) = service.check_operator(req.header("authorization")) {
                return error_reply(&e);
            }
            operator(service, &req, &segments[3..], &body).await
        }
        (_, _) => error_reply(&HttpError::new(
            404,
            "not_found",
            format!(
                "no endpoint {} {}: see docs/coordinator.md",
                req.method, req.path
            ),
        )),
    }
}

async fn operator(service: &Service, req: &Request, rest: &[&str], body: &[u8]) -> Response {
    match (&req.method, rest) {
        (&Method::GET, ["rate"]) => answer(service.rate().await),
        (&Method::PUT, ["rate"]) => match parse_json(body) {
            Ok(b) => answer(service.set_rate(b).await),
            Err(e) => error_reply(&e),
        },
        (&Method::PUT, ["version"]) => match parse_json(body) {
            Ok(b) => answer(service.set_latest_version(b).await),
            Err(e) => error_reply(&e),
        },
        (&Method::GET, ["assignments"]) => answer(service.assignments().await),
        (&Method::POST, ["assignments"]) => match parse_json(body) {
            Ok(b) => answer(service.add_assignment(b).await),
            Err(e) => error_reply(&e),
        },
        (&Method::DELETE, ["assignments", id]) => answer(
            service
                .stop_assignment(id)
                .await
                .map(|()| serde_json::json!({"id": id, "state": "stopped"})),
        ),
        _ => error_reply(&HttpError::new(
            404,
            "not_found",
            format!("no operator endpoint {} {}", req.method, req.path),
        )),
    }
}

/// Authenticates, parses the body as `B`, runs `f`. A refused body from a correctly signed request counts
/// against the signer's conduct.
async fn signed<B, T, F, Fut>(
    service: &Service,
    req: &Request,
    body: &[u8],
    f: F,
) -> Result<T, HttpError>
where
    B: DeserializeOwned,
    F: FnOnce(libp2p_identity::PeerId, B) -> Fut,
    Fut: Future<Output = Result<T, HttpError>>,
{
    let peer = service
        .authenticate(
            req.signed_headers(),
            req.method.as_str(),
            &req.target(),
            body,
        )
        .await?;
    let parsed = match parse_json::<B>(body) {
        Ok(b) => b,
        Err(e) => {
            service.metrics.reject_request("invalid");
            return Err(e);
        }
    };
    let result = f(peer, parsed).await;
    if let Err(e) = &result
        && e.status == 400
    {
        service.metrics.reject_request("invalid");
        service
            .count_rejection(&peer.to_base58(), service.clock.now_ms())
            .await;
    }
    result
}

/// Public reads need no signature; a signature that is present must be valid (a node's client signs all).
async fn optional_auth(service: &Service, req: &Request, body: &[u8]) -> Result<(), HttpError> {
    if req.header(HEADER_SIGNATURE).is_none() && req.header(HEADER_PEER_ID).is_none() {
        return Ok(());
    }
    service
        .authenticate(
            req.signed_headers(),
            req.method.as_str(),
            &req.target(),
            body,
        )
        .await
        .map(|_| ())
}

fn route_name(method: &Method, segments: &[&str]) -> &'static str {
    match (method, segments) {
        (_, ["metrics"]) => "metrics",
        (_, ["healthz"]) => "healthz",
        (_, ["api", "v1", "nodes", "register"]) => "register",
        (_, ["api", "v1", "nodes", "heartbeat"]) => "heartbeat",
        (_, ["api", "v1", "nodes", _]) => "node_info",
        (_, ["api", "v1", "nodes", _, "trust"]) => "node_trust",
        (_, ["api", "v1", "nodes", _, "earnings"]) => "node_earnings",
        (_, ["api", "v1", "streams"]) => "streams",
        (_, ["api", "v1", "sessions", "open"]) => "session_open",
        (_, ["api", "v1", "sessions", "close"]) => "session_close",
        (&Method::POST, ["api", "v1", "invites"]) => "invite_create",
        (_, ["api", "v1", "invites", ..]) => "invite_get",
        (_, ["api", "v1", "operator", ..]) => "operator",
        _ => "unknown",
    }
}
