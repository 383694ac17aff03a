//! The RTMP listener: accepts connections, caps their number, and runs each as an isolated session task so
//! that malformed input, a stalled peer or a panic ends that one connection and nothing else.

use crate::admission::{Admission, Refusal};
use crate::session;
use futures::FutureExt;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use std::time::Instant;
use streamr_media::Streams;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, warn};

/// Settings of the RTMP edge. The limits are described, with their reasons, in `docs/security.md`.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Where to listen, e.g. `127.0.0.1:1935`.
    pub listen: SocketAddr,
    /// The RTMP application in URLs (`rtmp://HOST/APP/NAME`).
    pub app: String,
    /// When set, a publish must carry `?key=` with this value.
    pub publish_key: Option<String>,
    /// From accept until the session publishes or plays: the handshake, `connect`, `createStream` and
    /// `publish`/`play` together, however slowly the bytes come. Default 10 s.
    pub setup_timeout: Duration,
    /// A publisher that sends no media for this long is closed, and so is a session that stopped publishing or
    /// playing. Bytes that are not media do not count. Default 30 s.
    pub idle_timeout: Duration,
    /// A player whose socket accepts no bytes for this long is closed. Default 15 s.
    pub write_timeout: Duration,
    /// Connections served at once; more are closed on accept. Default 512.
    pub max_sessions: usize,
    /// Of `max_sessions`, how many peers on other machines may hold: the rest stay free for this machine's
    /// OBS and players, whatever arrives from the network. Default 448.
    pub max_remote_sessions: usize,
    /// Connections one remote address (an IPv4 address, or an IPv6 /64) may hold at once. Loopback is not
    /// limited: it is this machine. Default 32.
    pub max_sessions_per_address: usize,
    /// Largest message a session may send before a publish is authorised: commands only. Default 64 KiB.
    pub max_setup_message: usize,
    /// Largest message of an authorised publisher (a video frame; the mesh carries at most 8 MiB). Default
    /// 8 MiB.
    pub max_publish_message: usize,
    /// Message streams (`createStream`) one connection may hold at once; clients use one. Default 8.
    pub max_streams_per_connection: usize,
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
            setup_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(15),
            max_sessions: 512,
            max_remote_sessions: 448,
            max_sessions_per_address: 32,
            max_setup_message: 64 * 1024,
            max_publish_message: 8 << 20,
            max_streams_per_connection: 8,
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
    /// Connections refused because `max_sessions` (or `max_remote_sessions`) were open.
    pub rejected_full: AtomicU64,
    /// Plays that ended with `NetStream.Play.StreamNotFound`.
    pub not_found: AtomicU64,
    /// Sessions ended by malformed RTMP.
    pub protocol_errors: AtomicU64,
    /// Sessions ended by an idle or write timeout.
    pub timeouts: AtomicU64,
    /// Sessions ended by a panic (in rml_rtmp or here); the node kept running.
    pub panics: AtomicU64,
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Sessions ended (or refused) because they ran into a limit.
    pub limits: LimitStats,
    /// Pull and push relays.
    pub relays: crate::relay::RelayStats,
}

/// Sessions ended or refused by each limit of the edge (see [`EdgeConfig`] and `docs/security.md`).
#[derive(Debug, Default)]
pub struct LimitStats {
    /// AMF0 nested deeper than 64 levels.
    pub amf_depth: AtomicU64,
    /// More than 65,536 AMF0 values in one message.
    pub amf_values: AtomicU64,
    /// A message longer than allowed at its stage (`max_setup_message`, `max_publish_message`).
    pub message_size: AtomicU64,
    /// Partial messages holding more than twice the message limit.
    pub buffered_bytes: AtomicU64,
    /// More chunk streams than 32.
    pub chunk_streams: AtomicU64,
    /// More `createStream`s than `max_streams_per_connection`.
    pub streams_per_connection: AtomicU64,
    /// No publish or play within `setup_timeout`.
    pub setup_deadline: AtomicU64,
    /// Connections refused: their address already held `max_sessions_per_address`.
    pub per_address: AtomicU64,
}

impl LimitStats {
    pub(crate) fn counter(&self, l: session::Limit) -> &AtomicU64 {
        use session::Limit::*;
        match l {
            AmfDepth => &self.amf_depth,
            AmfValues => &self.amf_values,
            MessageSize => &self.message_size,
            BufferedBytes => &self.buffered_bytes,
            ChunkStreams => &self.chunk_streams,
            StreamsPerConnection => &self.streams_per_connection,
            SetupDeadline => &self.setup_deadline,
        }
    }

    /// Every counter with its metric label, for `/metrics`.
    pub fn by_label(&self) -> [(&'static str, u64); 8] {
        let l = |a: &AtomicU64| a.load(Relaxed);
        [
            ("amf_depth", l(&self.amf_depth)),
            ("amf_values", l(&self.amf_values)),
            ("message_size", l(&self.message_size)),
            ("buffered_bytes", l(&self.buffered_bytes)),
            ("chunk_streams", l(&self.chunk_streams)),
            ("streams_per_connection", l(&self.streams_per_connection)),
            ("setup_deadline", l(&self.setup_deadline)),
            ("per_address", l(&self.per_address)),
        ]
    }
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
        let admission = Admission::new(
            self.config.max_sessions,
            self.config.max_remote_sessions,
            self.config.max_sessions_per_address,
        );
        let tracker = TaskTracker::new();
        let mut next_id: u64 = 0;
        // Refusals come in floods: one warning per 10 s says so, the rest go to debug.
        let mut last_warning: Option<Instant> = None;
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
            let ticket = match admission.admit(peer.ip()) {
                Ok(t) => t,
                Err(why) => {
                    let (counter, text) = match why {
                        Refusal::Full => (&ctx.stats.rejected_full, "too many sessions"),
                        Refusal::RemoteFull => (
                            &ctx.stats.rejected_full,
                            "too many sessions from other machines (the rest are kept for this one)",
                        ),
                        Refusal::PerAddress => (
                            &ctx.stats.limits.per_address,
                            "too many sessions from this address",
                        ),
                    };
                    counter.fetch_add(1, Relaxed);
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        last_warning = Some(Instant::now());
                        warn!(%peer, "RTMP connection refused: {text} (further refusals in the next 10 s are logged at debug level)");
                    } else {
                        debug!(%peer, "RTMP connection refused: {text}");
                    }
                    continue;
                }
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
                    drop(ticket);
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
