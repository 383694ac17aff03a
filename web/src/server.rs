//! The warp server: routes, binding, graceful shutdown. Every request passes the [`Guard`] first (Host,
//! CSRF, password); every answer gets the security headers.

use crate::api::{ApiError, InviteRequest, JoinRequest, NodeApi};
use crate::assets;
use crate::events::{self, Feed};
use crate::flv;
use crate::security::{CSP, Denied, Guard, RequestFacts};
use bytes::Bytes;
use serde::Serialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::{Filter, Rejection, Reply};

/// Largest request body accepted (settings, invites and join codes are small).
const MAX_BODY: u64 = 64 * 1024;

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The address is taken or not allowed.
    #[error(
        "cannot listen for HTTP on {addr}: {source}. Another program may use that port: stop it or choose \
         another address with --http-listen"
    )]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What the server needs besides the node.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The API key (contents of `DATA_DIR/api-key`): authorises the CLI and scripts.
    pub api_key: String,
    /// The argon2 hash of the dashboard password, needed by requests from other machines.
    pub password_hash: Option<String>,
}

/// A bound, not yet running HTTP server.
#[derive(Debug)]
pub struct WebServer {
    listener: TcpListener,
}

impl WebServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> Result<Self, BindError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BindError::Listen { addr, source })?;
        Ok(WebServer { listener })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, api: Arc<dyn NodeApi>, config: WebConfig, shutdown: CancellationToken) {
        let guard = Arc::new(Guard::new(
            self.local_addr(),
            config.api_key,
            config.password_hash,
        ));
        let feed = Feed::new(api.clone());
        events::spawn_sampler(feed.clone(), shutdown.clone());
        let routes = routes(api, guard, feed, shutdown.clone());
        warp::serve(routes)
            .incoming(self.listener)
            .graceful(async move { shutdown.cancelled().await })
            .run()
            .await;
    }
}

/// A request refused by the guard.
#[derive(Debug)]
struct Refused(Denied);
impl warp::reject::Reject for Refused {}

/// A request the node refused, with its explanation.
#[derive(Debug)]
struct Failed(ApiError);
impl warp::reject::Reject for Failed {}

fn fail(e: ApiError) -> Rejection {
    warp::reject::custom(Failed(e))
}

/// The guard as a filter: passes, or rejects with [`Refused`].
fn guarded(guard: Arc<Guard>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::method()
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and_then(
            move |method: warp::http::Method, headers: HeaderMap, remote: Option<SocketAddr>| {
                let guard = guard.clone();
                async move {
                    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
                    let facts = RequestFacts {
                        unsafe_method: !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS"),
                        host: h("host"),
                        origin: h("origin"),
                        api_key: h("x-api-key"),
                        csrf_header: h("x-csrf-token"),
                        cookie: h("cookie"),
                        authorization: h("authorization"),
                        remote,
                    };
                    guard
                        .check(&facts)
                        .map_err(|d| warp::reject::custom(Refused(d)))
                }
            },
        )
        .untuple_one()
}

fn json_body<T: serde::de::DeserializeOwned + Send>()
-> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::body::content_length_limit(MAX_BODY).and(warp::body::bytes().and_then(
        |b: Bytes| async move {
            let b = if b.iter().all(|c| c.is_ascii_whitespace()) {
                Bytes::from_static(b"{}")
            } else {
                b
            };
            serde_json::from_slice::<T>(&b).map_err(|e| {
                fail(ApiError::bad_request(format!(
                    "the request is not what this endpoint expects: {e}"
                )))
            })
        },
    ))
}

fn json_reply<T: Serialize>(v: &T) -> warp::reply::Response {
    warp::reply::json(v).into_response()
}

pub(crate) fn routes(
    api: Arc<dyn NodeApi>,
    guard: Arc<Guard>,
    feed: Arc<Feed>,
    shutdown: CancellationToken,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let with_api = {
        let api = api.clone();
        warp::any().map(move || api.clone())
    };
    let page = {
        let guard = guard.clone();
        warp::get()
            .and(warp::path::end().or(warp::path!("join")).unify())
            .and(warp::header::optional::<String>("accept-encoding"))
            .map(move |accept: Option<String>| {
                let mut r = assets::page(assets::accepts_gzip(accept.as_deref()));
                if let Ok(v) = HeaderValue::from_str(&guard.set_cookie()) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                r
            })
    };
    let asset = warp::get()
        .and(warp::path!("assets" / String))
        .and(warp::header::optional::<String>("accept-encoding"))
        .and_then(|name: String, accept: Option<String>| async move {
            assets::get(&name, assets::accepts_gzip(accept.as_deref()))
                .ok_or_else(warp::reject::not_found)
        });
    let status = warp::path!("api" / "v1" / "status")
        .and(warp::get())
        .and(warp::addr::remote())
        .and(with_api.clone())
        .map(|remote: Option<SocketAddr>, api: Arc<dyn NodeApi>| {
            let local = remote.is_some_and(|a| a.ip().is_loopback());
            json_reply(&api.status(local))
        });
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_api.clone())
        .map(|api: Arc<dyn NodeApi>| {
            warp::reply::with_header(
                api.metrics(),
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .into_response()
        });
    let overview = warp::path!("api" / "v1" / "overview")
        .and(warp::get())
        .and(with_api.clone())
        .map(|api: Arc<dyn NodeApi>| json_reply(&api.overview()));
    let sse = warp::path!("api" / "v1" / "events")
        .and(warp::get())
        .map(move || sse_reply(&feed));
    let invites = warp::path!("api" / "v1" / "invites")
        .and(warp::post())
        .and(json_body::<InviteRequest>())
        .and(with_api.clone())
        .and_then(|req: InviteRequest, api: Arc<dyn NodeApi>| async move {
            let invite = api.invite(req).await.map_err(fail)?;
            let qr_svg = crate::qr::svg(&invite.link).map_err(fail)?;
            Ok::<_, Rejection>(json_reply(&serde_json::json!({
                "code": invite.code,
                "link": invite.link,
                "qr_svg": qr_svg,
                "expires": invite.expires,
                "short_code": invite.short_code,
                "short_code_expires": invite.short_code_expires,
                "short_code_error": invite.short_code_error,
            })))
        });
    let join = warp::path!("api" / "v1" / "join")
        .and(warp::post())
        .and(json_body::<JoinRequest>())
        .and(with_api.clone())
        .and_then(|req: JoinRequest, api: Arc<dyn NodeApi>| async move {
            let joined = api.join(req.code).await.map_err(fail)?;
            Ok::<_, Rejection>(json_reply(&joined))
        });
    let node = warp::path!("api" / "v1" / "node" / String)
        .and(warp::post())
        .and(with_api.clone())
        .and_then(|what: String, api: Arc<dyn NodeApi>| async move {
            match what.as_str() {
                "stop" => api.set_running(false).await.map_err(fail)?,
                "start" => api.set_running(true).await.map_err(fail)?,
                "restart" => api.restart().await.map_err(fail)?,
                _ => return Err(warp::reject::not_found()),
            }
            Ok(json_reply(&api.overview()))
        });
    let settings_get = warp::path!("api" / "v1" / "settings")
        .and(warp::get())
        .and(with_api.clone())
        .map(|api: Arc<dyn NodeApi>| json_reply(&api.settings()));
    let settings_put = warp::path!("api" / "v1" / "settings")
        .and(warp::put())
        .and(json_body::<serde_json::Map<String, serde_json::Value>>())
        .and(with_api.clone())
        .and_then(
            |changes: serde_json::Map<String, serde_json::Value>, api: Arc<dyn NodeApi>| async move {
                let s = api.update_settings(changes).await.map_err(fail)?;
                Ok::<_, Rejection>(json_reply(&s))
            },
        );
    let live = warp::path!("live" / String)
        .and(warp::get())
        .and(with_api)
        .and_then(move |file: String, api: Arc<dyn NodeApi>| {
            let shutdown = shutdown.clone();
            async move {
                let Some(name) = file.strip_suffix(".flv") else {
                    return Err(warp::reject::not_found());
                };
                let streams = api.streams();
                let mut rx = flv::play(&streams, name, shutdown).await.map_err(|e| {
                    let status = match e {
                        flv::PlayError::BadName(_) => 400,
                        flv::PlayError::NotFound(_) => 404,
                    };
                    fail(ApiError::with_status(status, e.to_string()))
                })?;
                let body = futures::stream::poll_fn(move |cx| {
                    rx.poll_recv(cx).map(|o| o.map(Ok::<Bytes, Infallible>))
                });
                let mut r = warp::reply::stream(body).into_response();
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("video/x-flv"),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                Ok(r)
            }
        });
    let api_routes = status
        .or(metrics)
        .unify()
        .or(overview)
        .unify()
        .or(sse)
        .unify()
        .or(invites)
        .unify()
        .or(join)
        .unify()
        .or(node)
        .unify()
        .or(settings_get)
        .unify()
        .or(settings_put)
        .unify();
    let all = page
        .or(asset)
        .unify()
        .or(api_routes)
        .unify()
        .or(live)
        .unify();
    let mut headers = HeaderMap::new();
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    guarded(guard)
        .and(all)
        .recover(handle_rejection)
        .unify()
        .with(warp::reply::with::headers(headers))
}

/// The SSE answer: the traffic history and the current state at once, then each change.
fn sse_reply(feed: &Feed) -> warp::reply::Response {
    use warp::sse::Event;
    let (first, changes) = feed.open();
    let opening = futures::stream::iter([
        Ok::<Event, Infallible>(
            Event::default()
                .event("history")
                .retry(Duration::from_secs(2))
                .data(first.history.as_str()),
        ),
        Ok(Event::default().event("update").data(first.update.as_str())),
    ]);
    let changes = futures::stream::unfold(changes, |mut rx| async move {
        rx.changed().await.ok()?;
        let update = rx.borrow_and_update().clone();
        Some((
            Ok::<Event, Infallible>(Event::default().event("update").data(update.as_str())),
            rx,
        ))
    });
    use futures::StreamExt;
    let stream = opening.chain(changes);
    warp::sse::reply(
        warp::sse::keep_alive()
            .interval(Duration::from_secs(15))
            .stream(stream),
    )
    .into_response()
}

async fn handle_rejection(err: Rejection) -> Result<warp::reply::Response, Infallible> {
    let (code, body) = if let Some(Refused(d)) = err.find() {
        let mut r = warp::reply::with_status(
            json_reply(&serde_json::json!({ "error": d.to_string() })),
            if *d == Denied::Login {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::FORBIDDEN
            },
        )
        .into_response();
        if *d == Denied::Login {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"streamr-node\", charset=\"UTF-8\""),
            );
        }
        return Ok(r);
    } else if let Some(Failed(e)) = err.find() {
        (
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            serde_json::to_value(e).unwrap_or_default(),
        )
    } else if err.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "not found: the dashboard is at /, the API under /api/v1/" }),
        )
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({ "error": "method not allowed" }),
        )
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            serde_json::json!({ "error": "the request is too large" }),
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": "bad request" }),
        )
    };
    Ok(warp::reply::with_status(json_reply(&body), code).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::Fake;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn app() -> (
        impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone,
        Arc<Guard>,
    ) {
        let api: Arc<dyn NodeApi> = Arc::new(Fake::default());
        let guard = Arc::new(Guard::new(
            "127.0.0.1:8080".parse().unwrap(),
            KEY.into(),
            None,
        ));
        (
            routes(
                api.clone(),
                guard.clone(),
                Feed::new(api),
                CancellationToken::new(),
            ),
            guard,
        )
    }

    fn local() -> warp::test::RequestBuilder {
        warp::test::request()
            .remote_addr("127.0.0.1:5000".parse().unwrap())
            .header("host", "127.0.0.1:8080")
    }

    #[tokio::test]
    async fn publish_key_only_for_loopback_requests_and_metrics_as_text() {
        let (app, _) = app();
        let r = local().path("/api/v1/status").reply(&app).await;
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["publish_key"], "secret");
        let r = local()
            .path("/api/v1/status")
            .remote_addr("192.0.2.7:5000".parse().unwrap())
            .header("x-api-key", KEY)
            .reply(&app)
            .await;
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert!(v.get("publish_key").is_none(), "{v}");
        let r = local().path("/metrics").reply(&app).await;
        assert_eq!(r.body(), "m 1\n");
    }

    #[tokio::test]
    async fn the_page_gets_its_token_and_every_answer_the_security_headers() {
        let (app, guard) = app();
        for path in ["/", "/join"] {
            let r = local().path(path).reply(&app).await;
            assert_eq!(r.status(), 200, "{path}");
            assert!(String::from_utf8_lossy(r.body()).contains("/assets/app.js"));
            let cookie = r.headers()["set-cookie"].to_str().unwrap();
            assert!(cookie.starts_with(&guard.cookie_name()), "{cookie}");
            assert!(cookie.contains("SameSite=Strict"));
        }
        for path in ["/", "/assets/app.js", "/api/v1/nope", "/live/x.flv"] {
            let r = local().path(path).method("POST").reply(&app).await;
            let h = r.headers();
            assert_eq!(h["x-frame-options"], "DENY", "{path}");
            assert_eq!(h["x-content-type-options"], "nosniff");
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
        }
        let r = local().path("/assets/mpegts.js").reply(&app).await;
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .contains("javascript")
        );
    }

    /// Files go out gzipped to a client that takes gzip (every browser), unpacked to one that does not.
    #[tokio::test]
    async fn files_are_sent_gzipped_only_to_clients_that_take_it() {
        use std::io::Read;
        let (app, _) = app();
        let source = include_bytes!("../assets/app.js");
        for path in ["/assets/app.js", "/"] {
            let r = local()
                .path(path)
                .header("accept-encoding", "gzip, deflate, br")
                .reply(&app)
                .await;
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.headers()["content-encoding"], "gzip", "{path}");
            assert_eq!(r.headers()["vary"], "accept-encoding", "{path}");
            let mut unpacked = Vec::new();
            flate2::read::GzDecoder::new(&r.body()[..])
                .read_to_end(&mut unpacked)
                .expect("a gzip body");
            if path == "/assets/app.js" {
                assert_eq!(unpacked, source);
            } else {
                assert!(String::from_utf8_lossy(&unpacked).contains("/assets/app.js"));
            }
        }
        for accept in [None, Some("identity"), Some("gzip;q=0")] {
            let mut req = local().path("/assets/app.js");
            if let Some(a) = accept {
                req = req.header("accept-encoding", a);
            }
            let r = req.reply(&app).await;
            assert_eq!(r.status(), 200);
            assert!(r.headers().get("content-encoding").is_none(), "{accept:?}");
            assert_eq!(&r.body()[..], &source[..], "{accept:?}");
        }
    }

    #[tokio::test]
    async fn rebinding_and_cross_site_requests_get_403() {
        let (app, guard) = app();
        let r = local()
            .path("/api/v1/status")
            .header("host", "attacker.example:8080")
            .reply(&app)
            .await;
        assert_eq!(r.status(), 403);
        // A cross-site form post: no token, a foreign Origin.
        let r = local()
            .method("POST")
            .path("/api/v1/node/stop")
            .header("origin", "http://attacker.example")
            .reply(&app)
            .await;
        assert_eq!(r.status(), 403);
        let cookie = guard.set_cookie();
        let token = cookie
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_string();
        let page = || {
            local()
                .method("POST")
                .path("/api/v1/invites")
                .header("origin", "http://127.0.0.1:8080")
                .header("cookie", cookie.split(';').next().unwrap())
                .header("x-csrf-token", &token)
                .body(r#"{"stream":"cam"}"#)
        };
        let r = page().reply(&app).await;
        assert_eq!(r.status(), 200, "{:?}", r.body());
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["link"], "http://127.0.0.1:8080/join#ABCcam");
        assert!(v["qr_svg"].as_str().unwrap().contains("<svg"));
        let r = page().header("x-csrf-token", "stale").reply(&app).await;
        assert_eq!(r.status(), 403);
        // The CLI: the API key, no browser headers.
        let r = local()
            .method("POST")
            .path("/api/v1/node/stop")
            .header("x-api-key", KEY)
            .reply(&app)
            .await;
        assert_eq!(r.status(), 200);
    }

    #[tokio::test]
    async fn refusals_are_json_that_says_what_to_do() {
        let (app, _) = app();
        let key = |b: warp::test::RequestBuilder| b.header("x-api-key", KEY);
        let r = key(local().method("POST").path("/api/v1/join"))
            .body(r#"{"code":"X"}"#)
            .reply(&app)
            .await;
        assert_eq!(r.status(), 400);
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["error"], "cannot join X");
        assert_eq!(v["details"][0], "/ip4/192.0.2.1/udp/1/quic-v1: timed out");
        let r = key(local().method("PUT").path("/api/v1/settings"))
            .body(r#"{"max_upload_kbps":"lots"}"#)
            .reply(&app)
            .await;
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["field"], "max_upload_kbps");
        let r = key(local().method("POST").path("/api/v1/join"))
            .body("not json")
            .reply(&app)
            .await;
        assert_eq!(r.status(), 400);
        let r = local().path("/live/..%2Fx.flv").reply(&app).await;
        assert_eq!(r.status(), 400);
    }

    #[test]
    fn the_embedded_dashboard_fits_its_300_kb_gzipped_budget() {
        let mut total = 0;
        for (name, bytes, gzipped) in crate::assets::all() {
            let n = gzipped.len();
            eprintln!("{name}: {} bytes, {n} gzipped", bytes.len());
            total += n;
        }
        eprintln!("all assets: {total} bytes gzipped");
        assert!(total <= 300 * 1024, "{total} bytes gzipped");
    }
}
