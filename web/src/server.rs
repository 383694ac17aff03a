//! The warp server: routes, binding, graceful shutdown.

use crate::api::NodeApi;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::Filter;

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
    pub async fn run(self, api: Arc<dyn NodeApi>, shutdown: CancellationToken) {
        let routes = routes(api);
        warp::serve(routes)
            .incoming(self.listener)
            .graceful(async move { shutdown.cancelled().await })
            .run()
            .await;
    }
}

fn routes(
    api: Arc<dyn NodeApi>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let with_api = warp::any().map(move || api.clone());
    let status = warp::path!("api" / "v1" / "status")
        .and(warp::get())
        .and(warp::addr::remote())
        .and(with_api.clone())
        .map(|remote: Option<SocketAddr>, api: Arc<dyn NodeApi>| {
            let local = remote.is_some_and(|a| a.ip().is_loopback());
            warp::reply::json(&api.status(local))
        });
    let metrics =
        warp::path!("metrics")
            .and(warp::get())
            .and(with_api)
            .map(|api: Arc<dyn NodeApi>| {
                warp::reply::with_header(
                    api.metrics(),
                    "content-type",
                    "text/plain; version=0.0.4; charset=utf-8",
                )
            });
    status.or(metrics).recover(handle_rejection)
}

async fn handle_rejection(
    err: warp::Rejection,
) -> Result<warp::reply::WithStatus<warp::reply::Json>, std::convert::Infallible> {
    let (code, msg) = if err.is_not_found() {
        (
            warp::http::StatusCode::NOT_FOUND,
            "not found: see /api/v1/status",
        )
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            warp::http::StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        )
    } else {
        (warp::http::StatusCode::BAD_REQUEST, "bad request")
    };
    Ok(warp::reply::with_status(
        warp::reply::json(&serde_json::json!({ "error": msg })),
        code,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Status;

    struct Fake;
    impl NodeApi for Fake {
        fn status(&self, local: bool) -> Status {
            Status {
                peer_id: "p".into(),
                version: "v".into(),
                rtmp_listen: "r".into(),
                http_listen: "h".into(),
                rtmp_url: "u".into(),
                publish_key_required: true,
                publish_key: local.then(|| "secret".into()),
                uptime_secs: 1,
                listen_addrs: vec![],
                external_addrs: vec![],
                peers: vec![],
                streams: vec![],
                mesh_streams: vec![],
                upload_kbps: 0,
                max_upload_kbps: 0,
                nat: Default::default(),
            }
        }
        fn metrics(&self) -> String {
            "m 1\n".into()
        }
    }

    #[tokio::test]
    async fn publish_key_only_for_loopback_requests() {
        let api: Arc<dyn NodeApi> = Arc::new(Fake);
        let r = warp::test::request()
            .path("/api/v1/status")
            .remote_addr("127.0.0.1:5000".parse().unwrap())
            .reply(&routes(api.clone()))
            .await;
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["publish_key"], "secret");
        let r = warp::test::request()
            .path("/api/v1/status")
            .remote_addr("192.0.2.7:5000".parse().unwrap())
            .reply(&routes(api.clone()))
            .await;
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert!(v.get("publish_key").is_none(), "{v}");
        let r = warp::test::request()
            .path("/metrics")
            .reply(&routes(api))
            .await;
        assert_eq!(r.body(), "m 1\n");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
    }
}
