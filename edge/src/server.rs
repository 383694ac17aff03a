//! The RTMP listener: accepts connections, caps their number, and runs each as an isolated session task so
//! that malformed input, a stalled peer or a panic ends that one connection and nothing else.

use crate::session;
use futures::FutureExt;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use streamr_media::Streams;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, warn};

/// Settings of the RTMP edge.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Where to listen, e.g. `127.0.0.1:1935`.
    pub listen: SocketAddr,
    /// The RTMP application in URLs (`rtmp://HOST/APP/NAME`).
    pub app: String,
    /// When set, a publish must carry `?key=` with this value.
    pub publish_key: Option<String>,
    /// Time allowed for the RTMP handshake.
    pub handshake_timeout: Duration,
    /// A session that is not playing and sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A player whose socket accepts no bytes for this long is closed.
    pub write_timeout: Duration,
    /// Connections served at once; more are closed on accept.
    pub max_sessions: usize,
    /// Merged writes to players: after a write, frames are collected for this long and written together.
    /// Each player then wakes and calls `writev` about 1/merge times a second instead of once per audio and
    /// video message (~77/s for 30 fps + 48 kHz AAC), which is most of the fan-out CPU. Players buffer far
    /// more than this; SRS does the same (`mw_latency`). Zero writes every message at once.
    pub play_merge: Duration,
}

impl EdgeConfig {
    /// Defaults for `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        EdgeConfig {
            listen,
            app: "live".into(),
            publish_key: None,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(15),
            max_sessions: 512,
            play_merge: Duration::from_millis(40),
        }
    }
}

/// Counters of the RTMP edge.
#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Connections accepted since start.
    pub sessions_total: AtomicU64,
    /// Connections open now.
    pub sessions_active: AtomicU64,
    /// Publishes accepted.
    pub publishes: AtomicU64,
    /// Plays accepted.
    pub plays: AtomicU64,
    /// Publishes refused for a missing or wrong key.
    pub rejected_unauthorized: AtomicU64,
    /// Requests refused for a bad application or stream name.
    pub rejected_bad_name: AtomicU64,
    /// Connections refused because `max_sessions` were open.
    pub rejected_full: AtomicU64,
    /// Plays that ended with `NetStream.Play.StreamNotFound`.
    pub not_found: AtomicU64,
    /// Sessions ended by malformed RTMP.
    pub protocol_errors: AtomicU64,
    /// Sessions ended by a handshake, idle or write timeout.
    pub timeouts: AtomicU64,
    /// Sessions ended by a panic (in rml_rtmp or here); the node kept running.
    pub panics: AtomicU64,
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
}

/// Why the RTMP edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The address is taken or not allowed.
    #[error(
        "cannot listen for RTMP on {addr}: {source}. Another program (another streamr-node, OBS's own server, \
         nginx) may use that port: stop it or choose another address with --rtmp-listen"
    )]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A bound, not yet running RTMP edge.
#[derive(Debug)]
pub struct RtmpServer {
    listener: TcpListener,
    config: Arc<EdgeConfig>,
    stats: Arc<EdgeStats>,
}

/// What sessions share.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub config: Arc<EdgeConfig>,
    pub streams: Streams,
    pub stats: Arc<EdgeStats>,
}

impl RtmpServer {
    /// Binds the listener (port 0 picks a free port; see [`RtmpServer::local_addr`]).
    pub async fn bind(config: EdgeConfig) -> Result<Self, BindError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| BindError::Listen {
                    addr: config.listen,
                    source,
                })?;
        Ok(RtmpServer {
            listener,
            config: Arc::new(config),
            stats: Arc::default(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// Counters, shared with the running server.
    pub fn stats(&self) -> Arc<EdgeStats> {
        self.stats.clone()
    }

    /// Serves until `shutdown` is cancelled, then closes every session and returns when all have ended.
    pub async fn run(self, streams: Streams, shutdown: CancellationToken) {
        let ctx = Arc::new(Ctx {
            config: self.config.clone(),
            streams,
            stats: self.stats.clone(),
        });
        let slots = Arc::new(Semaphore::new(self.config.max_sessions));
        let tracker = TaskTracker::new();
        let mut next_id: u64 = 0;
        loop {
            let (socket, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "RTMP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                ctx.stats.rejected_full.fetch_add(1, Relaxed);
                warn!(%peer, max = self.config.max_sessions, "RTMP connection refused: too many sessions");
                continue;
            };
            next_id += 1;
            let id = next_id;
            let ctx = ctx.clone();
            let cancel = shutdown.child_token();
            ctx.stats.sessions_total.fetch_add(1, Relaxed);
            ctx.stats.sessions_active.fetch_add(1, Relaxed);
            let span = tracing::info_span!("rtmp", session = id, %peer);
            tracker.spawn(
                async move {
                    let _ = socket.set_nodelay(true);
                    let stats = ctx.stats.clone();
                    let run = AssertUnwindSafe(session::serve(socket, ctx, cancel)).catch_unwind();
                    match run.await {
                        Ok(Ok(end)) => debug!(reason = %end, "session ended"),
                        Ok(Err(e)) => {
                            e.count(&stats);
                            info!(error = %e, "session ended");
                        }
                        Err(panic) => {
                            stats.panics.fetch_add(1, Relaxed);
                            error!(panic = %panic_message(&panic), "session panicked; only this connection was closed");
                        }
                    }
                    stats.sessions_active.fetch_sub(1, Relaxed);
                    drop(permit);
                }
                .instrument(span),
            );
        }
        tracker.close();
        tracker.wait().await;
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}
