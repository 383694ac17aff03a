//! A fake node for the web crate's unit tests.

use crate::api::{ApiError, Invite, InviteRequest, Joined, NodeApi, Overview, Settings, Status};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

/// A node with nothing in it; counts how often the dashboard's overview is built.
#[derive(Default)]
pub(crate) struct Fake {
    pub streams: streamr_media::Streams,
    pub overviews: AtomicUsize,
}

fn status(local: bool) -> Status {
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
        coordinator: None,
    }
}

impl NodeApi for Fake {
    fn status(&self, local: bool) -> Status {
        status(local)
    }
    fn metrics(&self) -> String {
        "m 1\n".into()
    }
    fn overview(&self) -> Overview {
        self.overviews.fetch_add(1, Relaxed);
        Overview {
            running: true,
            nickname: String::new(),
            friends: vec![],
            restart_needed: false,
            update: None,
            last_crash: None,
            status: status(true),
        }
    }
    fn streams(&self) -> streamr_media::Streams {
        self.streams.clone()
    }
    fn invite(&self, req: InviteRequest) -> crate::ApiFuture<Invite> {
        Box::pin(async move {
            Ok(Invite {
                code: "ABC".into(),
                link: format!(
                    "http://127.0.0.1:8080/join#ABC{}",
                    req.stream.unwrap_or_default()
                ),
                expires: None,
                short_code: None,
                short_code_expires: None,
                short_code_error: None,
            })
        })
    }
    fn join(&self, code: String) -> crate::ApiFuture<Joined> {
        Box::pin(async move {
            Err(ApiError {
                details: vec!["/ip4/192.0.2.1/udp/1/quic-v1: timed out".into()],
                ..ApiError::bad_request(format!("cannot join {code}"))
            })
        })
    }
    fn set_running(&self, _running: bool) -> crate::ApiFuture<()> {
        Box::pin(async { Ok(()) })
    }
    fn settings(&self) -> Settings {
        Settings {
            settings: vec![],
            restart_needed: false,
            message: None,
        }
    }
    fn update_settings(
        &self,
        _changes: serde_json::Map<String, serde_json::Value>,
    ) -> crate::ApiFuture<Settings> {
        Box::pin(async {
            Err(ApiError {
                field: Some("max_upload_kbps".into()),
                ..ApiError::bad_request("enter a whole number")
            })
        })
    }
    fn restart(&self) -> crate::ApiFuture<()> {
        Box::pin(async { Ok(()) })
    }
}
