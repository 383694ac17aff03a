//! One RTMP connection, server side: the handshake (rml_rtmp's), then the command protocol, done here on the
//! bounded chunk decoder and AMF0 decoder, with media in (publish) going to a hub and media out (play) written
//! from the hub with shared chunk bytes.
//!
//! The command flow is ours rather than rml_rtmp's `ServerSession` because that session takes raw bytes: a
//! message only becomes visible once rml_rtmp has buffered it (reserving its declared length, up to 16 MiB)
//! and decoded its AMF with a recursive decoder, which is how one nested command aborted the node. Seeing
//! whole messages first would have meant decoding every chunk twice, in step with rml_rtmp's own quirks. The
//! RTMP client already ran the command flow itself for another reason; the server now does too.
//!
//! [`Session`] is plain code (bytes in, bytes out, hubs touched); [`serve`] is the socket shell around it.

use crate::chunk::{self, CHUNK_SIZE, COMMON_STREAM_ID};
use crate::chunk_decoder::{ChunkDecoder, ChunkError, Message};
use crate::message::{self, Command, Inbound, MessageError, events, types};
use crate::metadata;
use crate::names;
use crate::server::{Ctx, EdgeStats, panic_message};
use crate::status;
use bytes::{Buf, Bytes};
use rml_amf0::Amf0Value;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use std::collections::HashMap;
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
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

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

/// A limit a peer ran into; each is counted on its own (see `LimitStats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    AmfDepth,
    AmfValues,
    MessageSize,
    BufferedBytes,
    ChunkStreams,
    StreamsPerConnection,
    SetupDeadline,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::AmfDepth => "AMF values nested too deep",
            Limit::AmfValues => "too many AMF values in one message",
            Limit::MessageSize => "a message over the size limit",
            Limit::BufferedBytes => "too many bytes in partial messages",
            Limit::ChunkStreams => "too many chunk streams",
            Limit::StreamsPerConnection => "too many createStream on one connection",
            Limit::SetupDeadline => "no publish or play within the setup deadline",
        })
    }
}

/// How a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("malformed RTMP: {0}")]
    Protocol(String),
    #[error("limit hit ({0}); closing this connection")]
    Limit(Limit),
    #[error("rml_rtmp panicked on this peer's input ({0}); closing this connection only")]
    LibraryPanic(String),
    #[error("no media for {0:?}; closing")]
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
            SessionError::Limit(l) => stats.limits.counter(*l),
            SessionError::LibraryPanic(_) => &stats.panics,
            SessionError::Idle(_) | SessionError::WriteStalled(_) => &stats.timeouts,
            _ => return,
        };
        c.fetch_add(1, Relaxed);
    }
}

impl From<ChunkError> for SessionError {
    fn from(e: ChunkError) -> Self {
        match e {
            ChunkError::MessageTooLarge { .. } => SessionError::Limit(Limit::MessageSize),
            ChunkError::TooMuchBuffered(_) => SessionError::Limit(Limit::BufferedBytes),
            ChunkError::TooManyChunkStreams => SessionError::Limit(Limit::ChunkStreams),
            other => SessionError::Protocol(other.to_string()),
        }
    }
}

/// Frames written to a player in one `writev`.
const BATCH: usize = 64;
/// Window acknowledgement size we ask of clients, peer bandwidth we announce, `onBWDone`'s figure: what
/// rml_rtmp sent, which OBS, ffmpeg and VLC are used to from this edge.
const WINDOW_ACK_SIZE: u32 = 1_073_741_824;
const PEER_BANDWIDTH: u32 = 2_500_000;

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
    stream_id: u32,
    source: Source,
}

/// Runs one connection to completion.
pub(crate) async fn serve(
    socket: TcpStream,
    ctx: Arc<Ctx>,
    cancel: CancellationToken,
) -> Result<End, SessionError> {
    // One deadline from accept to an authorised publish or play, however the bytes trickle in.
    let setup_deadline = Instant::now() + ctx.config.setup_timeout;
    let (mut rd, mut wr) = socket.into_split();
    let mut buf = vec![0u8; 8 * 1024];
    let leftover = tokio::select! {
        _ = cancel.cancelled() => return Ok(End::Shutdown),
        r = timeout_at(setup_deadline, handshake(&mut rd, &mut wr, &mut buf, &ctx.stats)) => {
            r.map_err(|_| SessionError::Limit(Limit::SetupDeadline))??
        }
    };
    let mut s = Session::new(ctx, setup_deadline);
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
        match handshake_step(&mut hs, &buf[..n])? {
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

/// One step of rml_rtmp's handshake (fixed-size packets, but still its code on a peer's bytes: isolated).
fn handshake_step(
    hs: &mut Handshake,
    bytes: &[u8],
) -> Result<HandshakeProcessResult, SessionError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| hs.process_bytes(bytes)))
        .map_err(|p| SessionError::LibraryPanic(panic_message(&p)))?
        .map_err(|e| SessionError::Handshake(format!("{e:?}")))
}

/// The protocol state of one connection, with no socket: bytes from the peer go in through
/// [`Session::input`], bytes for the peer collect in `out`.
pub(crate) struct Session {
    ctx: Arc<Ctx>,
    decoder: ChunkDecoder,
    /// Bytes to send, in order.
    pub(crate) out: Vec<Bytes>,
    /// `connect` was accepted.
    connected: bool,
    /// Message streams from `createStream` not deleted yet.
    streams: Vec<u32>,
    next_stream_id: u32,
    /// The peer asked for an acknowledgement every this many bytes.
    peer_window: Option<u32>,
    received: u64,
    since_ack: u64,
    playing: Option<Playing>,
    publishing: Option<Publishing>,
    /// Until the session first publishes or plays, it must get there by this instant.
    setup_deadline: Instant,
    /// It published or played once: the setup deadline no longer applies.
    set_up: bool,
    /// The last media from the publisher, or when the session last stopped publishing or playing: the idle
    /// timeout runs from here (bytes alone do not restart it).
    last_activity: Instant,
    /// Set after a refusal: the status was queued; close once it is written.
    pub(crate) pending_close: Option<SessionError>,
}

impl Session {
    pub(crate) fn new(ctx: Arc<Ctx>, setup_deadline: Instant) -> Self {
        let decoder = ChunkDecoder::new(ctx.config.max_setup_message);
        let mut s = Session {
            ctx,
            decoder,
            out: Vec::new(),
            connected: false,
            streams: Vec::new(),
            next_stream_id: 1,
            peer_window: None,
            received: 0,
            since_ack: 0,
            playing: None,
            publishing: None,
            setup_deadline,
            set_up: false,
            last_activity: Instant::now(),
            pending_close: None,
        };
        // What rml_rtmp's session sent first, in its order: the players in use know it.
        s.out.push(message::set_chunk_size(CHUNK_SIZE as u32));
        s.out.push(message::window_ack_size(WINDOW_ACK_SIZE));
        s.out.push(message::user_control(
            events::STREAM_BEGIN,
            &0u32.to_be_bytes(),
        ));
        s.out.push(message::set_peer_bandwidth(PEER_BANDWIDTH));
        s.out.push(message::command_message(
            0,
            "onBWDone",
            0.0,
            vec![Amf0Value::Null, Amf0Value::Number(8192.0)],
        ));
        s
    }

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
            let (at, expired) = match self.deadline() {
                Some((at, why)) => (at, Some(why)),
                None => (far_future(), None),
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    let _ = self.flush(wr).await;
                    return Ok(End::Shutdown);
                }
                _ = sleep_until(at) => {
                    return Err(expired.unwrap_or(SessionError::Limit(Limit::SetupDeadline)));
                }
                r = rd.read(buf) => {
                    let n = r?;
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
                            p.hold_until = Some(merge_deadline(Instant::now(), merge));
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

    /// When this session is closed unless something happens, and why: the setup deadline until it publishes
    /// or plays; then nothing while it plays, the idle timeout from its last media while it publishes, and
    /// the idle timeout from when it stopped otherwise.
    fn deadline(&self) -> Option<(Instant, SessionError)> {
        let idle = self.ctx.config.idle_timeout;
        if self.playing.is_some() {
            None
        } else if !self.set_up {
            Some((
                self.setup_deadline,
                SessionError::Limit(Limit::SetupDeadline),
            ))
        } else {
            Some((self.last_activity + idle, SessionError::Idle(idle)))
        }
    }

    /// Feeds bytes from the peer and acts on every whole message in them.
    pub(crate) fn input(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.acknowledge(bytes.len());
        self.decoder.push(bytes);
        while self.pending_close.is_none() {
            let Some(m) = self.decoder.next_message()? else {
                break;
            };
            self.message(m)?;
        }
        Ok(())
    }

    /// Acknowledgements when the peer asked for them (ffmpeg and OBS do not wait for them, some clients do).
    fn acknowledge(&mut self, n: usize) {
        self.received += n as u64;
        self.since_ack += n as u64;
        if let Some(window) = self.peer_window.filter(|w| *w > 0)
            && self.since_ack >= u64::from(window)
        {
            self.since_ack = 0;
            self.out.push(message::acknowledgement(self.received));
        }
    }

    fn message(&mut self, m: Message) -> Result<(), SessionError> {
        let inbound = match message::parse(&m) {
            Ok(i) => i,
            Err(e) => return self.unparsable(&m, e),
        };
        match inbound {
            Inbound::SetChunkSize(size) => self.decoder.set_chunk_size(size)?,
            Inbound::Abort(csid) => self.decoder.abort(csid),
            Inbound::UserControl { event, data } if event == events::PING_REQUEST => {
                let ts = data.get(..4).unwrap_or(&[0, 0, 0, 0]);
                self.out
                    .push(message::user_control(events::PING_RESPONSE, ts));
            }
            Inbound::WindowAckSize(size) => self.peer_window = Some(size),
            Inbound::Media => self.media(m)?,
            Inbound::Data(values) => self.data(m.stream_id, values)?,
            Inbound::Command(c) => self.command(m.stream_id, c)?,
            Inbound::Acknowledgement(_)
            | Inbound::UserControl { .. }
            | Inbound::SetPeerBandwidth(_)
            | Inbound::Other => {}
        }
        Ok(())
    }

    /// A message that does not parse: limits end the session and are counted; a malformed data message is
    /// dropped (it carries only metadata); anything else malformed ends the session.
    fn unparsable(&mut self, m: &Message, e: MessageError) -> Result<(), SessionError> {
        match e {
            MessageError::Amf(crate::amf0::AmfError::TooDeep) => {
                Err(SessionError::Limit(Limit::AmfDepth))
            }
            e if e.is_limit() => Err(SessionError::Limit(Limit::AmfValues)),
            e if matches!(m.type_id, types::DATA_AMF0 | types::DATA_AMF3) => {
                debug!(error = %e, "malformed data message dropped");
                Ok(())
            }
            e => Err(SessionError::Protocol(e.to_string())),
        }
    }

    fn command(&mut self, stream_id: u32, c: Command) -> Result<(), SessionError> {
        match c.name.as_str() {
            "connect" => self.connect(c),
            "createStream" => self.create_stream(c.transaction),
            "publish" => self.publish(stream_id, c),
            "play" => self.play(stream_id, c),
            "deleteStream" => {
                if let Some(id) = c.args.first().and_then(stream_id_of) {
                    self.streams.retain(|s| *s != id);
                    self.stream_closed(id);
                }
                Ok(())
            }
            "closeStream" => {
                let id = c.args.first().and_then(stream_id_of).unwrap_or(stream_id);
                self.stream_closed(id);
                Ok(())
            }
            // releaseStream, FCPublish, FCUnpublish, getStreamLength, receiveAudio, pause...: rml_rtmp did not
            // answer them either, and the clients in use do not wait for an answer.
            _ => Ok(()),
        }
    }

    fn connect(&mut self, c: Command) -> Result<(), SessionError> {
        if self.connected {
            return Err(SessionError::Protocol("connect sent twice".into()));
        }
        let none = HashMap::new();
        let props = match &c.object {
            Amf0Value::Object(p) => p,
            _ => &none,
        };
        let Some(Amf0Value::Utf8String(app_name)) = props.get("app") else {
            return Err(SessionError::Protocol(format!(
                "connect without an application name: use rtmp://HOST:PORT/{}/NAME",
                self.ctx.config.app
            )));
        };
        let app = app_name.trim_end_matches('/');
        if app != self.ctx.config.app {
            self.ctx.stats.rejected_bad_name.fetch_add(1, Relaxed);
            let msg = format!(
                "unknown application {app_name:?}: use rtmp://HOST:PORT/{}/NAME",
                self.ctx.config.app
            );
            self.refuse(c.transaction, 0, "NetConnection.Connect.Rejected", msg);
            return Ok(());
        }
        let encoding = match props.get("objectEncoding") {
            Some(Amf0Value::Number(n)) => *n,
            _ => 0.0,
        };
        let mut server = HashMap::new();
        server.insert(
            "fmsVer".to_string(),
            Amf0Value::Utf8String("FMS/3,0,1,123".into()),
        );
        server.insert("capabilities".to_string(), Amf0Value::Number(31.0));
        let mut info = match message::status_object(
            "status",
            "NetConnection.Connect.Success",
            &format!("Successfully connected on app: {app}"),
        ) {
            Amf0Value::Object(p) => p,
            _ => HashMap::new(),
        };
        info.insert("objectEncoding".into(), Amf0Value::Number(encoding));
        self.out.push(message::command_message(
            0,
            "_result",
            c.transaction,
            vec![Amf0Value::Object(server), Amf0Value::Object(info)],
        ));
        self.connected = true;
        Ok(())
    }

    fn create_stream(&mut self, transaction: f64) -> Result<(), SessionError> {
        if !self.connected {
            return Err(SessionError::Protocol("createStream before connect".into()));
        }
        if self.streams.len() >= self.ctx.config.max_streams_per_connection {
            return Err(SessionError::Limit(Limit::StreamsPerConnection));
        }
        let id = self.next_stream_id;
        self.next_stream_id = id
            .checked_add(1)
            .ok_or_else(|| SessionError::Protocol("stream ids exhausted".into()))?;
        self.streams.push(id);
        self.out.push(message::command_message(
            0,
            "_result",
            transaction,
            vec![Amf0Value::Null, Amf0Value::Number(f64::from(id))],
        ));
        Ok(())
    }

    /// The stream `id` was closed or deleted: end a publish or play on it.
    fn stream_closed(&mut self, id: u32) {
        if self.publishing.as_ref().is_some_and(|p| p.stream_id == id)
            && let Some(p) = self.publishing.take()
        {
            info!(stream = %p.name, "publish finished");
            self.last_activity = Instant::now();
        }
        if self.playing.as_ref().is_some_and(|p| p.stream_id == id)
            && let Some(p) = self.playing.take()
        {
            info!(stream = %p.name, "play finished");
            self.last_activity = Instant::now();
        }
    }

    /// Checks what `publish` and `play` need before their own checks; the stream name argument, or `None`
    /// when the request was refused.
    fn stream_request(
        &mut self,
        stream_id: u32,
        c: &Command,
        refusal_code: &str,
    ) -> Result<Option<String>, SessionError> {
        if !self.connected {
            return Err(SessionError::Protocol(format!("{} before connect", c.name)));
        }
        if !self.streams.contains(&stream_id) {
            return Err(SessionError::Protocol(format!(
                "{} on stream {stream_id}, which createStream did not create",
                c.name
            )));
        }
        if self.publishing.is_some() || self.playing.is_some() {
            let msg = "this connection already publishes or plays a stream".to_string();
            self.refuse(c.transaction, stream_id, refusal_code, msg);
            return Ok(None);
        }
        match c.args.first() {
            Some(Amf0Value::Utf8String(s)) => Ok(Some(s.clone())),
            _ => {
                let msg = format!("{} without a stream name", c.name);
                self.refuse(c.transaction, stream_id, refusal_code, msg);
                Ok(None)
            }
        }
    }

    /// Refuses a request with an `_error` and an `onStatus` error the client shows to its user. The session
    /// reads no further message and closes once they are written (see `pending_close`): a refusal is an
    /// answer, not a broken connection, so it must reach the client.
    fn refuse(&mut self, transaction: f64, stream_id: u32, code: &str, msg: String) {
        self.out.push(message::command_message(
            stream_id,
            "_error",
            transaction,
            vec![Amf0Value::Null, message::status_object("error", code, &msg)],
        ));
        self.out
            .push(status::on_status(stream_id, "error", code, &msg));
        if self.pending_close.is_none() {
            self.pending_close = Some(SessionError::Refused(format!("{code}: {msg}")));
        }
    }

    fn queue_status(&mut self, level: &str, code: &str, msg: &str) {
        let stream_id = self
            .playing
            .as_ref()
            .map_or(COMMON_STREAM_ID, |p| p.stream_id);
        self.out
            .push(status::on_status(stream_id, level, code, msg));
    }

    fn publish(&mut self, stream_id: u32, c: Command) -> Result<(), SessionError> {
        let code = "NetStream.Publish.BadName";
        let Some(raw) = self.stream_request(stream_id, &c, code)? else {
            return Ok(());
        };
        let key = match names::parse(&raw) {
            Ok(k) => k,
            Err(e) => {
                self.ctx.stats.rejected_bad_name.fetch_add(1, Relaxed);
                self.refuse(c.transaction, stream_id, code, e.to_string());
                return Ok(());
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
            self.refuse(
                c.transaction,
                stream_id,
                "NetStream.Publish.Unauthorized",
                msg,
            );
            return Ok(());
        }
        let hub = self.ctx.streams.get_or_create(&key.name);
        let replaced = hub.is_live();
        let source = hub.attach(SourceKind::Publisher);
        self.out.push(message::user_control(
            events::STREAM_BEGIN,
            &stream_id.to_be_bytes(),
        ));
        self.out.push(status::on_status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            &format!("Successfully started publishing on stream key {}", key.name),
        ));
        // Authorised: media messages (video frames) may now be large.
        self.decoder
            .set_max_message(self.ctx.config.max_publish_message);
        self.ctx.stats.publishes.fetch_add(1, Relaxed);
        info!(stream = %key.name, took_over = replaced, "publish started");
        self.set_up = true;
        self.last_activity = Instant::now();
        self.publishing = Some(Publishing {
            name: key.name,
            stream_id,
            source,
        });
        Ok(())
    }

    fn play(&mut self, stream_id: u32, c: Command) -> Result<(), SessionError> {
        let code = "NetStream.Play.StreamNotFound";
        let Some(raw) = self.stream_request(stream_id, &c, "NetStream.Play.Failed")? else {
            return Ok(());
        };
        let key = match names::parse_play(&raw) {
            Ok(k) => k,
            Err(e) => {
                self.ctx.stats.rejected_bad_name.fetch_add(1, Relaxed);
                self.refuse(c.transaction, stream_id, code, e.to_string());
                return Ok(());
            }
        };
        let hub = self.ctx.streams.get_or_create(&key.name);
        let sub = hub.subscribe(SubscriberKind::Player);
        self.out.push(status::on_status(
            stream_id,
            "status",
            "NetStream.Play.Reset",
            "Reset stream",
        ));
        self.out.push(message::user_control(
            events::STREAM_BEGIN,
            &stream_id.to_be_bytes(),
        ));
        self.out.push(status::on_status(
            stream_id,
            "status",
            "NetStream.Play.Start",
            &format!("Successfully started playback on stream key {}", key.name),
        ));
        self.ctx.stats.plays.fetch_add(1, Relaxed);
        // Not live here (yet): the lookup asks the mesh to find it while the player waits.
        let lookup = self.ctx.streams.request(&hub);
        let live = hub.is_live();
        info!(stream = %key.name, live, "play started");
        self.set_up = true;
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

    fn media(&mut self, m: Message) -> Result<(), SessionError> {
        let Some(p) = self
            .publishing
            .as_ref()
            .filter(|p| p.stream_id == m.stream_id)
        else {
            return Ok(()); // media outside a publish: ignore, as other servers do
        };
        let kind = if m.type_id == types::AUDIO {
            FrameKind::Audio
        } else {
            FrameKind::Video
        };
        self.last_activity = Instant::now();
        p.source
            .push_media(kind, m.timestamp, m.payload)
            .map_err(|_| SessionError::Replaced(p.name.clone()))
    }

    /// `@setDataFrame("onMetaData", {..})` (or a bare `onMetaData`) from the publisher: the metadata goes to
    /// the hub, re-encoded from the fields we know. Other data messages are dropped.
    fn data(&mut self, stream_id: u32, values: Vec<Amf0Value>) -> Result<(), SessionError> {
        let Some(p) = self
            .publishing
            .as_ref()
            .filter(|p| p.stream_id == stream_id)
        else {
            return Ok(());
        };
        let mut values = values.into_iter().peekable();
        if matches!(values.peek(), Some(Amf0Value::Utf8String(s)) if s == "@setDataFrame") {
            values.next();
        }
        if !matches!(values.next(), Some(Amf0Value::Utf8String(s)) if s == "onMetaData") {
            return Ok(());
        }
        let Some(Amf0Value::Object(props)) = values.next() else {
            return Ok(());
        };
        let payload = metadata::to_payload(&metadata::from_properties(&props));
        self.last_activity = Instant::now();
        p.source
            .push_media(FrameKind::Data, 0, payload)
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

/// A stream id argument (`deleteStream(id)`), if it is one.
fn stream_id_of(v: &Amf0Value) -> Option<u32> {
    match v {
        Amf0Value::Number(n) if n.is_finite() && *n >= 0.0 && *n <= f64::from(u32::MAX) => {
            Some(*n as u32)
        }
        _ => None,
    }
}

/// The end of a merge window that starts `now`: the next multiple of `merge` on a clock all sessions of the
/// process share, so that every player's window ends at the same instant and one wake-up of the runtime
/// writes to all of them. Windows timed from each player's own last write drift apart, and 20 players then
/// cost 20 timer wake-ups a window (a sleep and a wake of the worker each, most of the edge's fan-out CPU
/// beside the writes themselves). Never later than `now + merge`.
fn merge_deadline(now: Instant, merge: Duration) -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now);
    let step = merge.as_nanos().max(1);
    let windows = now.saturating_duration_since(epoch).as_nanos() / step + 1;
    let aligned = u64::try_from(windows * step)
        .map(|ns| epoch + Duration::from_nanos(ns))
        .unwrap_or(now + merge);
    // A clock that started after `now` (another runtime's paused clock in tests) must not push it out.
    aligned.min(now + merge)
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
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

/// Runs the server side of one connection over bytes in memory, as a peer would send them, with no socket
/// and no clock: the handshake (when `handshake` is set), then every message, including publishes into and
/// plays from hubs of a private [`streamr_media::Streams`]. For fuzzing and tests; returns how it ended.
pub fn run_bytes(
    config: crate::EdgeConfig,
    handshake: bool,
    reads: &mut dyn Iterator<Item = &[u8]>,
) -> Result<(), String> {
    let ctx = Arc::new(Ctx {
        config: Arc::new(config),
        streams: streamr_media::Streams::default(),
        stats: Arc::default(),
    });
    let mut hs = handshake.then(|| Handshake::new(PeerType::Server));
    let mut s = Session::new(ctx, Instant::now());
    for bytes in reads {
        let bytes = match hs.as_mut() {
            Some(h) => match handshake_step(h, bytes).map_err(|e| e.to_string())? {
                HandshakeProcessResult::InProgress { .. } => continue,
                HandshakeProcessResult::Completed {
                    remaining_bytes, ..
                } => {
                    hs = None;
                    remaining_bytes
                }
            },
            None => bytes.to_vec(),
        };
        s.input(&bytes).map_err(|e| e.to_string())?;
        if let Some(e) = s.pending_close.take() {
            return Err(e.to_string());
        }
        // What would be written; dropped here so that memory stays that of one read.
        s.out.clear();
        if let Some(p) = s.playing.as_mut() {
            while let Ok(Some(_)) = p.sub.try_next() {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_windows_of_all_players_end_together() {
        let merge = Duration::from_millis(40);
        let now = Instant::now();
        let end = merge_deadline(now, merge);
        assert!(end > now && end <= now + merge, "within one window of now");
        // Players whose windows start anywhere in the same window wait for the same instant.
        for early in [1, 10, 39] {
            let start = end - Duration::from_millis(early);
            assert_eq!(
                merge_deadline(start, merge),
                end,
                "started {early} ms before the end"
            );
        }
        // A window that starts at the end runs to the next end, a whole window on.
        assert_eq!(merge_deadline(end, merge), end + merge);
        // A start before the shared clock's first reading is never held longer than a window.
        let before = now - Duration::from_secs(5);
        let held = merge_deadline(before, merge);
        assert!(held > before && held <= before + merge);
    }

    fn command(stream_id: u32, name: &str, txn: f64, rest: Vec<Amf0Value>) -> Vec<u8> {
        let mut v = vec![Amf0Value::Utf8String(name.into()), Amf0Value::Number(txn)];
        v.extend(rest);
        chunk::encode_message(3, 20, stream_id, 0, &crate::amf0::encode(&v), 128).to_vec()
    }

    fn session(publish_key: Option<&str>) -> Session {
        let mut config = crate::EdgeConfig::new(([127, 0, 0, 1], 0).into());
        config.publish_key = publish_key.map(String::from);
        let ctx = Arc::new(Ctx {
            config: Arc::new(config),
            streams: streamr_media::Streams::default(),
            stats: Arc::default(),
        });
        Session::new(ctx, Instant::now())
    }

    fn connect(app: &str) -> Vec<u8> {
        let mut props = HashMap::new();
        props.insert("app".to_string(), Amf0Value::Utf8String(app.into()));
        command(0, "connect", 1.0, vec![Amf0Value::Object(props)])
    }

    fn sent(s: &Session) -> Vec<u8> {
        s.out.iter().flat_map(|b| b.iter().copied()).collect()
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    #[tokio::test]
    async fn a_refused_publish_is_answered_before_the_session_closes() {
        let mut s = session(Some("s3cretkey"));
        let mut bytes = connect("live");
        bytes.extend(command(0, "createStream", 2.0, vec![Amf0Value::Null]));
        let publish = |key: &str| {
            command(
                1,
                "publish",
                3.0,
                vec![
                    Amf0Value::Null,
                    Amf0Value::Utf8String(key.into()),
                    Amf0Value::Utf8String("live".into()),
                ],
            )
        };
        bytes.extend(publish("cam?key=wrong"));
        // Whatever follows a refusal is not acted on.
        bytes.extend(publish("cam?key=s3cretkey"));
        s.input(&bytes).unwrap();
        let out = sent(&s);
        assert!(contains(&out, "NetConnection.Connect.Success"));
        assert!(contains(&out, "_error") && contains(&out, "NetStream.Publish.Unauthorized"));
        assert!(contains(&out, "publish key"), "the reason is told");
        assert!(!contains(&out, "NetStream.Publish.Start"));
        assert!(matches!(s.pending_close, Some(SessionError::Refused(_))));
        assert!(s.publishing.is_none());
    }

    #[tokio::test]
    async fn an_unknown_application_is_answered_before_the_session_closes() {
        let mut s = session(None);
        s.input(&connect("other")).unwrap();
        let out = sent(&s);
        assert!(contains(&out, "NetConnection.Connect.Rejected"));
        assert!(contains(&out, "unknown application"));
        assert!(matches!(s.pending_close, Some(SessionError::Refused(_))));
    }

    #[tokio::test]
    async fn publish_reaches_the_hub_and_a_stream_flood_ends_the_session() {
        let mut s = session(None);
        let mut bytes = connect("live");
        bytes.extend(command(0, "createStream", 2.0, vec![Amf0Value::Null]));
        bytes.extend(command(
            1,
            "publish",
            3.0,
            vec![Amf0Value::Null, Amf0Value::Utf8String("cam".into())],
        ));
        s.input(&bytes).unwrap();
        assert!(contains(&sent(&s), "NetStream.Publish.Start"));
        assert!(s.publishing.is_some() && s.set_up);
        // Media on the publishing stream reaches the hub.
        s.input(&chunk::encode_message(
            6,
            9,
            1,
            40,
            &[0x17, 0, 0, 0, 0],
            4096,
        ))
        .unwrap();
        assert!(s.ctx.streams.get("cam").unwrap().is_live());
        // A createStream flood ends the session at the cap.
        let mut flood = Vec::new();
        for i in 0..20 {
            flood.extend(command(0, "createStream", 10.0 + f64::from(i), vec![]));
        }
        assert!(matches!(
            s.input(&flood),
            Err(SessionError::Limit(Limit::StreamsPerConnection))
        ));
    }
}
