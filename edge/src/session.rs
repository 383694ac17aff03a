//! One RTMP connection, server side: the handshake, then rml_rtmp's `ServerSession` for the command protocol,
//! with media in (publish) going to a hub and media out (play) written from the hub with shared chunk bytes.

use crate::chunk::{self, CHUNK_SIZE, COMMON_STREAM_ID};
use crate::metadata;
use crate::names;
use crate::server::{Ctx, EdgeStats, panic_message};
use crate::status;
use bytes::{Buf, Bytes};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use std::fmt;
use std::io::IoSlice;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use streamr_media::{
    EncodingSlot, Frame, FrameKind, Lookup, NotFound, Source, SourceKind, SubscriberKind,
    Subscription,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How a session ended normally.
#[derive(Debug)]
pub(crate) enum End {
    PeerClosed,
    Shutdown,
    StreamEnded,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            End::PeerClosed => "peer closed the connection",
            End::Shutdown => "node shutting down",
            End::StreamEnded => "stream ended",
        })
    }
}

/// How a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("malformed RTMP: {0}")]
    Protocol(String),
    #[error("rml_rtmp panicked on this peer's input ({0}); closing this connection only")]
    LibraryPanic(String),
    #[error("no data for {0:?}; closing")]
    Idle(Duration),
    #[error("player stopped reading for {0:?}; closing")]
    WriteStalled(Duration),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("refused: {0}")]
    Refused(String),
    #[error("another publisher took over stream {0:?}")]
    Replaced(String),
    #[error("stream {0:?} not found")]
    NotFound(String),
}

impl SessionError {
    pub(crate) fn count(&self, stats: &EdgeStats) {
        let c = match self {
            SessionError::Handshake(_) | SessionError::Protocol(_) => &stats.protocol_errors,
            SessionError::LibraryPanic(_) => &stats.panics,
            SessionError::HandshakeTimeout
            | SessionError::Idle(_)
            | SessionError::WriteStalled(_) => &stats.timeouts,
            _ => return,
        };
        c.fetch_add(1, Relaxed);
    }
}

/// Frames written to a player in one `writev`.
const BATCH: usize = 64;

struct Playing {
    name: String,
    stream_id: u32,
    sub: Subscription,
    live: bool,
    /// The wait for a stream that is not live yet (the mesh may be looking for it).
    lookup: Lookup,
    /// Merged writes: frames that arrive before this instant are written together with later ones.
    hold_until: Option<Instant>,
}

struct Publishing {
    name: String,
    source: Source,
}

/// Runs one connection to completion.
pub(crate) async fn serve(
    socket: TcpStream,
    ctx: Arc<Ctx>,
    cancel: CancellationToken,
) -> Result<End, SessionError> {
    let (mut rd, mut wr) = socket.into_split();
    let mut buf = vec![0u8; 8 * 1024];
    let leftover = tokio::select! {
        _ = cancel.cancelled() => return Ok(End::Shutdown),
        r = timeout(ctx.config.handshake_timeout, handshake(&mut rd, &mut wr, &mut buf, &ctx.stats)) => {
            r.map_err(|_| SessionError::HandshakeTimeout)??
        }
    };
    let mut cfg = ServerSessionConfig::new();
    cfg.chunk_size = CHUNK_SIZE as u32;
    let (rml, initial) =
        ServerSession::new(cfg).map_err(|e| SessionError::Protocol(e.to_string()))?;
    let mut s = Session {
        ctx,
        rml,
        out: Vec::new(),
        playing: None,
        publishing: None,
        pending_close: None,
    };
    s.queue_results(initial);
    s.input(&leftover)?;
    s.flush(&mut wr).await?;
    s.run(&mut rd, &mut wr, &mut buf, &cancel).await
}

async fn handshake<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    rd: &mut R,
    wr: &mut W,
    buf: &mut [u8],
    stats: &EdgeStats,
) -> Result<Vec<u8>, SessionError> {
    let mut hs = Handshake::new(PeerType::Server);
    loop {
        let n = rd.read(buf).await?;
        if n == 0 {
            return Err(SessionError::Handshake(
                "peer closed during handshake".into(),
            ));
        }
        stats.bytes_in.fetch_add(n as u64, Relaxed);
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| hs.process_bytes(&buf[..n])))
            .map_err(|p| SessionError::LibraryPanic(panic_message(&p)))?
            .map_err(|e| SessionError::Handshake(format!("{e:?}")))?;
        match r {
            HandshakeProcessResult::InProgress { response_bytes } => {
                wr.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                wr.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

struct Session {
    ctx: Arc<Ctx>,
    rml: ServerSession,
    /// Bytes to send, in order.
    out: Vec<Bytes>,
    playing: Option<Playing>,
    publishing: Option<Publishing>,
    /// Set after a refusal: the status was queued; close once it is written.
    pending_close: Option<SessionError>,
}

impl Session {
    async fn run<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        buf: &mut [u8],
        cancel: &CancellationToken,
    ) -> Result<End, SessionError> {
        loop {
            if let Some(e) = self.pending_close.take() {
                self.flush(wr).await?;
                // Give the client a moment to read the status before the socket closes.
                let _ = timeout(Duration::from_secs(2), rd.read(buf)).await;
                return Err(e);
            }
            // A player sends almost nothing, so only non-players are subject to the idle timeout.
            let idle = match &self.playing {
                Some(_) => Duration::from_secs(24 * 3600),
                None => self.ctx.config.idle_timeout,
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    let _ = self.flush(wr).await;
                    return Ok(End::Shutdown);
                }
                r = timeout(idle, rd.read(buf)) => {
                    let n = r.map_err(|_| SessionError::Idle(idle))??;
                    if n == 0 {
                        return Ok(End::PeerClosed);
                    }
                    self.ctx.stats.bytes_in.fetch_add(n as u64, Relaxed);
                    self.input(&buf[..n])?;
                }
                ev = play_event(self.playing.as_mut()) => match ev {
                    PlayEvent::Frame(frame) => {
                        self.queue_frames(frame);
                        let merge = self.ctx.config.play_merge;
                        if let Some(p) = self.playing.as_mut().filter(|_| !merge.is_zero()) {
                            p.hold_until = Some(Instant::now() + merge);
                        }
                    }
                    PlayEvent::Ended(e) => {
                        info!(reason = %e, "play ended");
                        self.queue_status("status", "NetStream.Play.UnpublishNotify", &e.to_string());
                        let _ = self.flush(wr).await;
                        return Ok(End::StreamEnded);
                    }
                    PlayEvent::Live => {
                        if let Some(p) = self.playing.as_mut() {
                            p.live = true;
                        }
                    }
                    PlayEvent::NotFound(why) => {
                        let name = self.playing.as_ref().map(|p| p.name.clone()).unwrap_or_default();
                        self.ctx.stats.not_found.fetch_add(1, Relaxed);
                        self.queue_status("error", "NetStream.Play.StreamNotFound", &why.to_string());
                        self.playing = None;
                        self.pending_close = Some(SessionError::NotFound(name));
                        continue;
                    }
                },
            }
            self.flush(wr).await?;
        }
    }

    /// Feeds bytes from the peer to rml_rtmp and acts on what it raises.
    fn input(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let results = std::panic::catch_unwind(AssertUnwindSafe(|| self.rml.handle_input(bytes)))
            .map_err(|p| SessionError::LibraryPanic(panic_message(&p)))?
            .map_err(|e| SessionError::Protocol(e.to_string()))?;
        self.queue_results(results);
        // queue_results may raise events that refuse the session; they set pending_close.
        Ok(())
    }

    fn queue_results(&mut self, results: Vec<ServerSessionResult>) {
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(p) => self.out.push(Bytes::from(p.bytes)),
                ServerSessionResult::RaisedEvent(e) => {
                    if let Err(e) = self.event(e)
                        && self.pending_close.is_none()
                    {
                        self.pending_close = Some(e);
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    fn accept(&mut self, request_id: u32) -> Result<(), SessionError> {
        let mut results =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.rml.accept_request(request_id)))
                .map_err(|p| SessionError::LibraryPanic(panic_message(&p)))?
                .map_err(|e| SessionError::Protocol(e.to_string()))?;
        // rml_rtmp answers a play with two data messages (`|RtmpSampleAccess` stamped with its session clock,
        // and an `onStatus` NetStream.Data.Start) that ffmpeg and VLC expose as two bogus extra streams. They are
        // the last messages rml_rtmp ever sends on its data chunk stream (metadata goes through our own
        // chunks), so dropping them cannot desynchronise its header compression.
        results.retain(|r| match r {
            ServerSessionResult::OutboundResponse(p) => !is_play_data_noise(&p.bytes),
            _ => true,
        });
        self.queue_results(results);
        Ok(())
    }

    /// Refuses a request with an `onStatus` error the client shows to its user, then closes.
    fn refuse(&mut self, request_id: u32, stream_id: u32, code: &str, msg: String) -> SessionError {
        // rml_rtmp's own rejection is an `_error` command that OBS does not treat as final; ours is an
        // `onStatus` with level "error". The connection closes after it, so the serializer state rml_rtmp
        // keeps for its dropped packet does not matter.
        let _ = self.rml.reject_request(request_id, code, &msg);
        self.out
            .push(status::on_status(stream_id, "error", code, &msg));
        SessionError::Refused(format!("{code}: {msg}"))
    }

    fn queue_status(&mut self, level: &str, code: &str, msg: &str) {
        let stream_id = self
            .playing
            .as_ref()
            .map_or(COMMON_STREAM_ID, |p| p.stream_id);
        self.out
            .push(status::on_status(stream_id, level, code, msg));
    }

    fn event(&mut self, e: ServerSessionEvent) -> Result<(), SessionError> {
        match e {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                let app = app_name.trim_end_matches('/');
                if app != self.ctx.config.app {
                    self.ctx.stats.rejected_bad_name.fetch_add(1, Relaxed);
                    let msg = format!(
                        "unknown application {app_name:?}: use rtmp://HOST:PORT/{}/NAME",
                        self.ctx.config.app
                    );
                    return Err(self.refuse(request_id, 0, "NetConnection.Connect.Rejected", msg));
                }
                self.accept(request_id)
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => self.publish(request_id, &stream_key),
            ServerSessionEvent::PlayStreamRequested {
                request_id,
                stream_key,
                stream_id,
                ..
            } => self.play(request_id, &stream_key, stream_id),
            ServerSessionEvent::StreamMetadataChanged { metadata: m, .. } => {
                let payload = metadata::to_payload(&m);
                self.push(FrameKind::Data, 0, payload)
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => self.push(FrameKind::Video, timestamp.value, data),
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => self.push(FrameKind::Audio, timestamp.value, data),
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if let Some(p) = self.publishing.take() {
                    info!(stream = %p.name, "publish finished");
                }
                Ok(())
            }
            ServerSessionEvent::PlayStreamFinished { .. } => {
                if let Some(p) = self.playing.take() {
                    info!(stream = %p.name, "play finished");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn publish(&mut self, request_id: u32, raw: &str) -> Result<(), SessionError> {
        let stream_id = COMMON_STREAM_ID;
        if self.publishing.is_some() || self.playing.is_some() {
            let msg = "this connection already publishes or plays a stream".to_string();
            return Err(self.refuse(request_id, stream_id, "NetStream.Publish.BadName", msg));
        }
        let key = match names::parse(raw) {
            Ok(k) => k,
            Err(e) => {
                self.ctx.stats.rejected_bad_name.fetch_add(1, Relaxed);
                return Err(self.refuse(
                    request_id,
                    stream_id,
                    "NetStream.Publish.BadName",
                    e.to_string(),
                ));
            }
        };
        if let Some(expected) = &self.ctx.config.publish_key
            && !names::key_matches(expected, key.key.as_deref())
        {
            self.ctx.stats.rejected_unauthorized.fetch_add(1, Relaxed);
            let what = if key.key.is_some() { "a wrong" } else { "no" };
            let msg = format!(
                "publishing to this node needs its publish key, and {what} key was given: in OBS set \
                     Server to rtmp://HOST:PORT/{}/ and Stream Key to {}?key=YOUR_KEY (the key is shown when \
                     streamr-node starts and on its dashboard)",
                self.ctx.config.app, key.name
            );
            warn!(stream = %key.name, "publish refused: {what} publish key");
            return Err(self.refuse(request_id, stream_id, "NetStream.Publish.Unauthorized", msg));
        }
        let hub = self.ctx.streams.get_or_create(&key.name);
        let replaced = hub.is_live();
        let source = hub.attach(SourceKind::Publisher);
        self.accept(request_id)?;
        self.ctx.stats.publishes.fetch_add(1, Relaxed);
        info!(stream = %key.name, took_over = replaced, "publish started");
        self.publishing = Some(Publishing {
            name: key.name,
            source,
        });
        Ok(())
    }

    fn play(&mut self, request_id: u32, raw: &str, stream_id: u32) -> Result<(), SessionError> {
        if self.publishing.is_some() || self.playing.is_some() {
            let msg = "this connection already publishes or plays a stream".to_string();
            return Err(self.refuse(request_id, stream_id, "NetStream.Play.Failed", msg));
        }
        let key = match names::parse_play(raw) {
            Ok(k) => k,
            Err(e) => {
                self.ctx.stats.rejected_bad_name.fetch_add(1, Relaxed);
                return Err(self.refuse(
                    request_id,
                    stream_id,
                    "NetStream.Play.StreamNotFound",
                    e.to_string(),
                ));
            }
        };
        let hub = self.ctx.streams.get_or_create(&key.name);
        let sub = hub.subscribe(SubscriberKind::Player);
        self.accept(request_id)?;
        self.ctx.stats.plays.fetch_add(1, Relaxed);
        // Not live here (yet): the lookup asks the mesh to find it while the player waits.
        let lookup = self.ctx.streams.request(&hub);
        let live = hub.is_live();
        info!(stream = %key.name, live, "play started");
        self.playing = Some(Playing {
            name: key.name,
            stream_id,
            sub,
            live,
            lookup,
            hold_until: None,
        });
        Ok(())
    }

    fn push(&mut self, kind: FrameKind, ts: u32, payload: Bytes) -> Result<(), SessionError> {
        let Some(p) = &self.publishing else {
            return Ok(()); // media outside a publish: ignore, as other servers do
        };
        p.source
            .push_media(kind, ts, payload)
            .map_err(|_| SessionError::Replaced(p.name.clone()))
    }

    /// Queues `first` and whatever else is ready, as shared chunk bytes.
    fn queue_frames(&mut self, first: Frame) {
        let Some(p) = self.playing.as_mut() else {
            return;
        };
        let stream_id = p.stream_id;
        let mut frame = Some(first);
        let mut n = 0;
        while let Some(f) = frame {
            let bytes = if stream_id == COMMON_STREAM_ID {
                f.encoded(EncodingSlot::Edge, |f| {
                    chunk::encode(f, f.timestamp(), COMMON_STREAM_ID, CHUNK_SIZE)
                })
            } else {
                chunk::encode(&f, f.timestamp(), stream_id, CHUNK_SIZE)
            };
            self.out.push(bytes);
            n += 1;
            frame = if n < BATCH {
                p.sub.try_next().ok().flatten()
            } else {
                None
            };
        }
    }

    /// Writes everything queued, with one `writev` per batch, bounded by the write timeout.
    async fn flush<W: AsyncWrite + Unpin>(&mut self, wr: &mut W) -> Result<(), SessionError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let limit = self.ctx.config.write_timeout;
        let total: usize = self.out.iter().map(|b| b.len()).sum();
        timeout(limit, write_all(wr, &mut self.out))
            .await
            .map_err(|_| SessionError::WriteStalled(limit))??;
        self.ctx.stats.bytes_out.fetch_add(total as u64, Relaxed);
        self.out.clear();
        Ok(())
    }
}

/// The data messages rml_rtmp sends on play that players show as extra streams.
fn is_play_data_noise(packet: &[u8]) -> bool {
    let has = |needle: &[u8]| packet.windows(needle.len()).any(|w| w == needle);
    has(b"|RtmpSampleAccess") || has(b"NetStream.Data.Start")
}

enum PlayEvent {
    Frame(Frame),
    Ended(streamr_media::Ended),
    Live,
    NotFound(NotFound),
}

/// What the play side of a session waits for: the stream to go live (as long as its lookup allows), then
/// frames.
async fn play_event(p: Option<&mut Playing>) -> PlayEvent {
    let Some(p) = p else {
        return std::future::pending().await;
    };
    if p.live {
        if let Some(at) = p.hold_until {
            tokio::time::sleep_until(at).await;
            p.hold_until = None;
        }
        match p.sub.next().await {
            Ok(f) => PlayEvent::Frame(f),
            Err(e) => PlayEvent::Ended(e),
        }
    } else {
        match p.lookup.settled().await {
            Ok(()) => PlayEvent::Live,
            Err(why) => PlayEvent::NotFound(why),
        }
    }
}

/// Writes all buffers in order with vectored writes.
async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, bufs: &mut [Bytes]) -> std::io::Result<()> {
    let mut i = 0;
    while i < bufs.len() {
        let n = {
            let slices: Vec<IoSlice<'_>> = bufs[i..]
                .iter()
                .take(BATCH)
                .map(|b| IoSlice::new(b))
                .collect();
            w.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut n = n;
        while n > 0 && i < bufs.len() {
            let len = bufs[i].len();
            if n >= len {
                n -= len;
                i += 1;
            } else {
                bufs[i].advance(n);
                n = 0;
            }
        }
        while i < bufs.len() && bufs[i].is_empty() {
            i += 1;
        }
    }
    w.flush().await
}
