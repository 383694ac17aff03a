//! An RTMP client: plays from or publishes to an upstream RTMP server. Used by the pull/push relays and by
//! netlab's probes.
//!
//! It speaks the command flow itself instead of using rml_rtmp's `ClientSession`, because that session drops
//! media whose message stream id differs from the one its `createStream` returned, and ffmpeg's `-listen 1`
//! server sends media on another id: a pull from it received nothing. Media is accepted on any message
//! stream id here, as ffmpeg and nginx do.
//!
//! The upstream is as untrusted as any peer (a relay may point at a server that turns hostile): what it sends
//! goes through the bounded chunk decoder and AMF0 decoder ([`ServerStream`], plain code with no socket), a
//! server that sends nothing for [`Timeouts::read`] despite pings is given up, and a write that does not
//! finish within [`Timeouts::write`] fails. URLs carry stream keys: they are shown redacted
//! ([`RtmpUrl`]'s `Display` and `Debug`, [`redact_url`]).

use crate::chunk::{self, CHUNK_SIZE};
use crate::chunk_decoder::{ChunkDecoder, ChunkError, Message};
use crate::message::{self, Command, Inbound, MessageError, events, types};
use crate::server::panic_message;
use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use streamr_media::FrameKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A parsed `rtmp://HOST[:PORT]/APP/KEY` URL. `Display` and `Debug` redact the key.
#[derive(Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port (1935 when absent).
    pub port: u16,
    /// Application (first path segment).
    pub app: String,
    /// Stream key (the rest, including any query): a secret for YouTube, Twitch and most services.
    pub key: String,
}

impl std::fmt::Debug for RtmpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmpUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("app", &self.app)
            .field("key", &"***")
            .finish()
    }
}

impl std::fmt::Display for RtmpUrl {
    /// `rtmp://HOST:PORT/APP/***`: safe for logs and status pages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/***", self.tc_url())
    }
}

/// `url` with its secrets replaced by `***`: user info, everything after the application (the stream key)
/// and every query value. Works on any text, even one that does not parse as a URL, so that an invalid URL
/// in an error message is safe too.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    let mut out = scheme;
    match authority.rsplit_once('@') {
        Some((_, host)) => {
            out.push_str("***@");
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    if let Some(path) = path {
        out.push('/');
        match path.split_once('/') {
            Some((app, _)) => {
                out.push_str(app);
                out.push_str("/***");
            }
            None => out.push_str(path),
        }
    }
    if let Some(q) = query {
        out.push('?');
        let parts: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) => format!("{k}=***"),
                None => "***".to_string(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out
}

impl RtmpUrl {
    /// Parses an RTMP URL. The error shows the URL redacted.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = |why: &str| {
            ClientError::BadUrl(format!(
                "{:?}: {why}; expected rtmp://HOST[:PORT]/APP/KEY",
                redact_url(url)
            ))
        };
        let rest = url
            .strip_prefix("rtmp://")
            .ok_or_else(|| bad("not an rtmp:// URL"))?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no application"))?;
        let (app, key) = path.split_once('/').ok_or_else(|| bad("no stream key"))?;
        if app.is_empty() || key.is_empty() {
            return Err(bad("empty application or stream key"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h.trim_matches(['[', ']']).to_string(),
                p.parse().map_err(|_| bad("bad port"))?,
            ),
            _ => (authority.to_string(), 1935),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(RtmpUrl {
            host,
            port,
            app: app.to_string(),
            key: key.to_string(),
        })
    }

    /// The `tcUrl` sent with `connect` (some servers require it). It has no key.
    pub fn tc_url(&self) -> String {
        format!("rtmp://{}:{}/{}", self.host, self.port, self.app)
    }

    /// `text` (a server's error, say) with this URL's secrets replaced by `***`: the key, its path segments
    /// and its query values, wherever a server echoed them.
    pub fn scrub(&self, text: &str) -> String {
        let (path, query) = self.key.split_once('?').unwrap_or((&self.key, ""));
        let mut secrets: Vec<&str> = vec![self.key.as_str(), path];
        secrets.extend(path.split('/'));
        secrets.extend(
            query
                .split('&')
                .filter_map(|kv| kv.split_once('=').map(|x| x.1)),
        );
        // Longest first, so that a secret containing another is replaced whole; very short pieces would
        // mangle ordinary words and are no secret.
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut out = text.to_string();
        for s in secrets {
            out = out.replace(s, "***");
        }
        out
    }
}

/// Why an RTMP client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL cannot be used.
    #[error("bad RTMP URL {0}")]
    BadUrl(String),
    /// TCP connect or I/O failed.
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
    /// The operation took too long.
    #[error("timed out while {0}")]
    Timeout(&'static str),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server refused (connect, play or publish).
    #[error("the server refused: {0}")]
    Refused(String),
    /// The bytes from the server are not valid RTMP.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server ran into one of our limits (message size, AMF nesting, chunk streams): a broken or
    /// hostile server.
    #[error("the server exceeded a limit: {0}")]
    Limit(String),
}

impl From<ChunkError> for ClientError {
    fn from(e: ChunkError) -> Self {
        if e.is_limit() {
            ClientError::Limit(e.to_string())
        } else {
            ClientError::Protocol(e.to_string())
        }
    }
}

impl From<MessageError> for ClientError {
    fn from(e: MessageError) -> Self {
        if e.is_limit() {
            ClientError::Limit(e.to_string())
        } else {
            ClientError::Protocol(e.to_string())
        }
    }
}

/// A media message received from the server.
#[derive(Debug, Clone)]
pub struct Media {
    /// Audio, video or (metadata) data.
    pub kind: FrameKind,
    /// RTMP timestamp.
    pub timestamp: u32,
    /// FLV tag body (for data: AMF0 `onMetaData`).
    pub payload: Bytes,
}

/// How long the client waits on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A server that sends nothing at all for this long is given up. After [`Timeouts::ping`] of silence the
    /// client asks for a ping response, so a server that is alive but has nothing to send (a stream not
    /// published yet) keeps the connection. Default 15 s.
    pub read: Duration,
    /// Silence after which the client pings the server. Default 5 s.
    pub ping: Duration,
    /// One write that does not finish within this fails (a server that stopped reading). Default 15 s.
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            read: Duration::from_secs(15),
            ping: Duration::from_secs(5),
            write: Duration::from_secs(15),
        }
    }
}

/// Largest message accepted from a server: a video frame (the mesh carries at most 8 MiB too).
pub const MAX_SERVER_MESSAGE: usize = 8 << 20;

/// What the server's bytes mean, with no socket: the chunk layer, protocol control, acknowledgements owed and
/// ping responses, media and command replies. Fed by [`RtmpClient`]; fuzzed on its own.
#[derive(Debug)]
pub struct ServerStream {
    decoder: ChunkDecoder,
    /// The server's window acknowledgement size, once it told us.
    ack_window: Option<u32>,
    received: u64,
    since_ack: u64,
    /// Messages to send back (acknowledgements, ping responses), in order.
    pub replies: Vec<Bytes>,
}

/// Something the server said.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// Audio, video or metadata.
    Media {
        /// Audio, video or data.
        kind: FrameKind,
        /// RTMP timestamp.
        timestamp: u32,
        /// FLV tag body (data: `onMetaData` without a `@setDataFrame` wrapper).
        payload: Bytes,
    },
    /// `_result` (`ok`) or `_error` of transaction `transaction`, with the arguments after the command object.
    Reply {
        /// Transaction id.
        transaction: f64,
        /// `_result` rather than `_error`.
        ok: bool,
        /// The arguments after the command object.
        args: Vec<Amf0Value>,
    },
    /// An `onStatus` that is not an error: its code.
    Status(String),
    /// Anything else (other commands, data, control we handled).
    Other,
}

impl Default for ServerStream {
    fn default() -> Self {
        ServerStream {
            decoder: ChunkDecoder::new(MAX_SERVER_MESSAGE),
            ack_window: None,
            received: 0,
            since_ack: 0,
            replies: Vec::new(),
        }
    }
}

impl ServerStream {
    /// Adds bytes read from the server; drain [`ServerStream::next_event`] before feeding more.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.received += bytes.len() as u64;
        self.since_ack += bytes.len() as u64;
        if let Some(window) = self.ack_window.filter(|w| *w > 0)
            && self.since_ack >= u64::from(window)
        {
            self.since_ack = 0;
            self.replies.push(message::acknowledgement(self.received));
        }
        self.decoder.push(bytes);
    }

    /// The next event, `None` when more bytes are needed. An `onStatus` with level `error` is
    /// `Err(Refused)`.
    pub fn next_event(&mut self) -> Result<Option<ServerEvent>, ClientError> {
        let Some(m) = self.decoder.next_message()? else {
            return Ok(None);
        };
        self.event(m).map(Some)
    }

    fn event(&mut self, m: Message) -> Result<ServerEvent, ClientError> {
        let inbound = match message::parse(&m) {
            Ok(i) => i,
            // Metadata that does not decode is dropped, as the server does with a publisher's; a limit is not.
            Err(e) if !e.is_limit() && matches!(m.type_id, types::DATA_AMF0 | types::DATA_AMF3) => {
                return Ok(ServerEvent::Other);
            }
            Err(e) => return Err(e.into()),
        };
        Ok(match inbound {
            Inbound::SetChunkSize(size) => {
                self.decoder.set_chunk_size(size)?;
                ServerEvent::Other
            }
            Inbound::Abort(csid) => {
                self.decoder.abort(csid);
                ServerEvent::Other
            }
            Inbound::WindowAckSize(size) => {
                self.ack_window = Some(size);
                ServerEvent::Other
            }
            Inbound::UserControl { event, data } if event == events::PING_REQUEST => {
                let ts = data.get(..4).unwrap_or(&[0, 0, 0, 0]);
                self.replies
                    .push(message::user_control(events::PING_RESPONSE, ts));
                ServerEvent::Other
            }
            Inbound::Media => ServerEvent::Media {
                kind: if m.type_id == types::AUDIO {
                    FrameKind::Audio
                } else {
                    FrameKind::Video
                },
                timestamp: m.timestamp,
                payload: m.payload,
            },
            Inbound::Data(values) => match metadata_payload(&m.payload, &values) {
                Some(payload) => ServerEvent::Media {
                    kind: FrameKind::Data,
                    timestamp: m.timestamp,
                    payload,
                },
                None => ServerEvent::Other,
            },
            Inbound::Command(c) => command_event(c)?,
            _ => ServerEvent::Other,
        })
    }
}

/// `"@setDataFrame", "onMetaData", {..}` or `"onMetaData", {..}` -> the payload `"onMetaData", {..}`; other
/// data messages -> `None`. `values` are the message's values, already decoded (bounded).
fn metadata_payload(data: &Bytes, values: &[Amf0Value]) -> Option<Bytes> {
    const PREFIX: &[u8] = b"\x02\x00\x0d@setDataFrame";
    let (payload, rest) = match values.first()? {
        // Encoded any other way (as a long string), the wrapper cannot be cut off: the message is dropped.
        Amf0Value::Utf8String(s) if s == "@setDataFrame" => data
            .starts_with(PREFIX)
            .then(|| (data.slice(PREFIX.len()..), &values[1..]))?,
        _ => (data.clone(), values),
    };
    match rest.first()? {
        Amf0Value::Utf8String(s) if s == "onMetaData" => {}
        _ => return None,
    }
    matches!(rest.get(1)?, Amf0Value::Object(_)).then_some(payload)
}

fn command_event(c: Command) -> Result<ServerEvent, ClientError> {
    Ok(match c.name.as_str() {
        "_result" | "_error" => ServerEvent::Reply {
            transaction: c.transaction,
            ok: c.name == "_result",
            args: c.args,
        },
        "onStatus" => match message::status_of(&c) {
            Some((_, level, _)) if level == "error" => {
                return Err(ClientError::Refused(describe(
                    &std::iter::once(c.object).chain(c.args).collect::<Vec<_>>(),
                )));
            }
            Some((code, _, _)) => ServerEvent::Status(code),
            None => ServerEvent::Other,
        },
        _ => ServerEvent::Other,
    })
}

fn describe(values: &[Amf0Value]) -> String {
    for v in values {
        if let Amf0Value::Object(props) = v {
            let get = |k: &str| match props.get(k) {
                Some(Amf0Value::Utf8String(s)) => Some(s.clone()),
                _ => None,
            };
            if let Some(code) = get("code") {
                return match get("description") {
                    Some(d) => format!("{code}: {d}"),
                    None => code,
                };
            }
        }
    }
    "error".into()
}

/// Runs the client's handling of a server's bytes (after the handshake) over bytes in memory, with no
/// socket: every event is taken and dropped. For fuzzing and tests; returns how it ended.
pub fn run_server_bytes(reads: &mut dyn Iterator<Item = &[u8]>) -> Result<(), String> {
    let mut s = ServerStream::default();
    for bytes in reads {
        s.feed(bytes);
        while let Some(_event) = s.next_event().map_err(|e| e.to_string())? {}
        s.replies.clear();
    }
    Ok(())
}

/// A connected RTMP client (handshake and `connect` done).
pub struct RtmpClient {
    stream: TcpStream,
    server: ServerStream,
    buf: Vec<u8>,
    url: RtmpUrl,
    next_txn: f64,
    epoch: Instant,
    timeouts: Timeouts,
}

impl std::fmt::Debug for RtmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmpClient")
            .field("url", &self.url)
            .finish()
    }
}

/// Outbound chunk size we announce.
const OUT_CHUNK_SIZE: u32 = CHUNK_SIZE as u32;
/// Chunk streams for what we send: commands, then media (every message with a full header).
const CSID_COMMAND: u8 = 3;
const CSID_AUDIO: u8 = 4;
const CSID_VIDEO: u8 = 6;
const CSID_DATA: u8 = 5;

impl RtmpClient {
    /// Connects, handshakes and sends `connect` for the URL's application, all within `limit`.
    pub async fn connect(url: &RtmpUrl, limit: Duration) -> Result<Self, ClientError> {
        timeout(limit, Self::connect_inner(url))
            .await
            .map_err(|_| ClientError::Timeout("connecting"))?
    }

    /// Changes how long this client waits on the server (see [`Timeouts`]).
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    async fn connect_inner(url: &RtmpUrl) -> Result<Self, ClientError> {
        let mut stream = TcpStream::connect((url.host.as_str(), url.port)).await?;
        stream.set_nodelay(true)?;
        let mut hs = Handshake::new(PeerType::Client);
        let p0p1 = hs
            .generate_outbound_p0_and_p1()
            .map_err(|e| ClientError::Protocol(format!("{e:?}")))?;
        stream.write_all(&p0p1).await?;
        let mut buf = vec![0u8; 64 * 1024];
        let leftover = loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            // rml_rtmp's code on the server's bytes: isolated.
            let step = std::panic::catch_unwind(AssertUnwindSafe(|| hs.process_bytes(&buf[..n])))
                .map_err(|p| {
                    ClientError::Protocol(format!(
                        "the handshake library panicked on the server's bytes: {}",
                        panic_message(&p)
                    ))
                })?
                .map_err(|e| ClientError::Protocol(format!("handshake: {e:?}")))?;
            match step {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    stream.write_all(&response_bytes).await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    stream.write_all(&response_bytes).await?;
                    break remaining_bytes;
                }
            }
        };
        let mut c = RtmpClient {
            stream,
            server: ServerStream::default(),
            buf,
            url: url.clone(),
            next_txn: 1.0,
            epoch: Instant::now(),
            timeouts: Timeouts::default(),
        };
        c.server.feed(&leftover);
        c.write(&message::set_chunk_size(OUT_CHUNK_SIZE)).await?;
        let mut props = HashMap::new();
        props.insert("app".into(), Amf0Value::Utf8String(url.app.clone()));
        props.insert("type".into(), Amf0Value::Utf8String("nonprivate".into()));
        props.insert(
            "flashVer".into(),
            Amf0Value::Utf8String("FMLE/3.0 (compatible; streamr-node)".into()),
        );
        props.insert("tcUrl".into(), Amf0Value::Utf8String(url.tc_url()));
        props.insert("objectEncoding".into(), Amf0Value::Number(0.0));
        let txn = c
            .command("connect", Amf0Value::Object(props), vec![], 0)
            .await?;
        c.await_result(txn).await?;
        Ok(c)
    }

    /// Asks to play the URL's stream key; returns once the server accepted.
    pub async fn play(mut self, limit: Duration) -> Result<RtmpPlayer, ClientError> {
        let stream_id = timeout(limit, self.create_stream())
            .await
            .map_err(|_| ClientError::Timeout("creating a stream"))??;
        let key = Amf0Value::Utf8String(self.url.key.clone());
        self.command(
            "play",
            Amf0Value::Null,
            vec![key, Amf0Value::Number(-2000.0)],
            stream_id,
        )
        .await?;
        // Some servers send media before (or instead of) NetStream.Play.Start: keep what arrives.
        let first = timeout(limit, async {
            loop {
                match self.recv().await? {
                    ServerEvent::Media {
                        kind,
                        timestamp,
                        payload,
                    } => {
                        return Ok::<_, ClientError>(Some(Media {
                            kind,
                            timestamp,
                            payload,
                        }));
                    }
                    ServerEvent::Status(code) if code == "NetStream.Play.Start" => return Ok(None),
                    _ => {}
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout("waiting for the server to accept play"))??;
        Ok(RtmpPlayer {
            client: self,
            first,
        })
    }

    /// Asks to publish on the URL's stream key; returns once the server accepted.
    pub async fn publish(mut self, limit: Duration) -> Result<RtmpPublisher, ClientError> {
        let key = Amf0Value::Utf8String(self.url.key.clone());
        // OBS and ffmpeg announce the publish this way; some servers (and their auth hooks) rely on it.
        self.command("releaseStream", Amf0Value::Null, vec![key.clone()], 0)
            .await?;
        self.command("FCPublish", Amf0Value::Null, vec![key.clone()], 0)
            .await?;
        let stream_id = timeout(limit, self.create_stream())
            .await
            .map_err(|_| ClientError::Timeout("creating a stream"))??;
        self.command(
            "publish",
            Amf0Value::Null,
            vec![key, Amf0Value::Utf8String("live".into())],
            stream_id,
        )
        .await?;
        timeout(limit, async {
            loop {
                if let ServerEvent::Status(code) = self.recv().await?
                    && code == "NetStream.Publish.Start"
                {
                    return Ok::<_, ClientError>(());
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout("waiting for the server to accept publish"))??;
        Ok(RtmpPublisher {
            client: self,
            stream_id,
        })
    }

    async fn create_stream(&mut self) -> Result<u32, ClientError> {
        let txn = self
            .command("createStream", Amf0Value::Null, vec![], 0)
            .await?;
        let args = self.await_result(txn).await?;
        args.into_iter()
            .find_map(|v| v.get_number())
            .filter(|n| *n >= 0.0 && *n <= f64::from(u32::MAX))
            .map(|n| n as u32)
            .ok_or_else(|| ClientError::Protocol("createStream returned no stream id".into()))
    }

    /// Sends a command; returns its transaction id.
    async fn command(
        &mut self,
        name: &str,
        object: Amf0Value,
        args: Vec<Amf0Value>,
        stream_id: u32,
    ) -> Result<f64, ClientError> {
        let txn = self.next_txn;
        self.next_txn += 1.0;
        let mut rest = vec![object];
        rest.extend(args);
        let body = {
            let mut values = vec![Amf0Value::Utf8String(name.into()), Amf0Value::Number(txn)];
            values.extend(rest);
            crate::amf0::encode(&values)
        };
        let ts = self.epoch.elapsed().as_millis() as u32;
        let bytes = chunk::encode_message(
            CSID_COMMAND,
            types::COMMAND_AMF0,
            stream_id,
            ts,
            &body,
            CHUNK_SIZE,
        );
        self.write(&bytes).await?;
        Ok(txn)
    }

    /// Writes bytes within the write timeout.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        timeout(self.timeouts.write, self.stream.write_all(bytes))
            .await
            .map_err(|_| ClientError::Timeout("sending to the server (it stopped reading)"))??;
        Ok(())
    }

    /// Sends the acknowledgements and ping responses owed.
    async fn send_replies(&mut self) -> Result<(), ClientError> {
        for r in std::mem::take(&mut self.server.replies) {
            self.write(&r).await?;
        }
        Ok(())
    }

    /// Waits for `_result` of `txn`; `_error` or an error status is a refusal.
    async fn await_result(&mut self, txn: f64) -> Result<Vec<Amf0Value>, ClientError> {
        loop {
            if let ServerEvent::Reply {
                transaction,
                ok,
                args,
            } = self.recv().await?
                && transaction == txn
            {
                return if ok {
                    Ok(args)
                } else {
                    Err(ClientError::Refused(describe(&args)))
                };
            }
        }
    }

    /// The next event from the server, answering pings and acknowledging on the way. Pings the server after
    /// [`Timeouts::ping`] of silence and gives up after [`Timeouts::read`].
    async fn recv(&mut self) -> Result<ServerEvent, ClientError> {
        let mut last_heard = tokio::time::Instant::now();
        let mut pinged = false;
        loop {
            let event = self.server.next_event()?;
            self.send_replies().await?;
            if let Some(e) = event {
                return Ok(e);
            }
            let since = last_heard.elapsed();
            if since >= self.timeouts.read {
                return Err(ClientError::Timeout(
                    "waiting for the server (it sent nothing, not even a ping response)",
                ));
            }
            let wait = if pinged {
                self.timeouts.read - since
            } else {
                self.timeouts.ping.saturating_sub(since)
            };
            match timeout(wait, self.stream.read(&mut self.buf)).await {
                Ok(r) => {
                    let n = r?;
                    if n == 0 {
                        return Err(ClientError::Closed);
                    }
                    last_heard = tokio::time::Instant::now();
                    pinged = false;
                    let (server, buf) = (&mut self.server, &self.buf);
                    server.feed(&buf[..n]);
                }
                Err(_) if !pinged => {
                    pinged = true;
                    let ts = self.epoch.elapsed().as_millis() as u32;
                    let ping = message::user_control(events::PING_REQUEST, &ts.to_be_bytes());
                    self.write(&ping).await?;
                }
                Err(_) => {}
            }
        }
    }
}

/// A client that plays a stream.
#[derive(Debug)]
pub struct RtmpPlayer {
    client: RtmpClient,
    first: Option<Media>,
}

impl RtmpPlayer {
    /// The next media message; `Err(Closed)` when the server ends the connection, `Err(Refused)` when it
    /// reports an error (for example the stream was unpublished with an error status), `Err(Timeout)` when it
    /// sends nothing for the read timeout.
    pub async fn next(&mut self) -> Result<Media, ClientError> {
        if let Some(m) = self.first.take() {
            return Ok(m);
        }
        loop {
            if let ServerEvent::Media {
                kind,
                timestamp,
                payload,
            } = self.client.recv().await?
            {
                return Ok(Media {
                    kind,
                    timestamp,
                    payload,
                });
            }
        }
    }
}

/// A client that publishes a stream.
#[derive(Debug)]
pub struct RtmpPublisher {
    client: RtmpClient,
    stream_id: u32,
}

impl RtmpPublisher {
    /// Sends one media message within the write timeout. Data payloads must be AMF0 `onMetaData` (they are
    /// sent as `@setDataFrame`).
    pub async fn send(
        &mut self,
        kind: FrameKind,
        timestamp: u32,
        payload: Bytes,
    ) -> Result<(), ClientError> {
        let bytes = match kind {
            FrameKind::Video => chunk::encode_message(
                CSID_VIDEO,
                types::VIDEO,
                self.stream_id,
                timestamp,
                &payload,
                CHUNK_SIZE,
            ),
            FrameKind::Audio => chunk::encode_message(
                CSID_AUDIO,
                types::AUDIO,
                self.stream_id,
                timestamp,
                &payload,
                CHUNK_SIZE,
            ),
            FrameKind::Data => {
                let mut d = b"\x02\x00\x0d@setDataFrame".to_vec();
                d.extend_from_slice(&payload);
                chunk::encode_message(
                    CSID_DATA,
                    types::DATA_AMF0,
                    self.stream_id,
                    timestamp,
                    &d,
                    CHUNK_SIZE,
                )
            }
        };
        self.client.write(&bytes).await
    }

    /// Handles whatever the server sent (acks, pings, errors) without waiting for more.
    /// Returns an error if the server refused, closed, or broke the protocol.
    pub async fn poll_server(&mut self) -> Result<(), ClientError> {
        loop {
            match self.client.stream.try_read(&mut self.client.buf) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => {
                    let (server, buf) = (&mut self.client.server, &self.client.buf);
                    server.feed(&buf[..n]);
                    while server.next_event()?.is_some() {}
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        self.client.send_replies().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = RtmpUrl::parse("rtmp://example.test/live/cam?key=abc").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.app.as_str(), u.key.as_str()),
            ("example.test", 1935, "live", "cam?key=abc")
        );
        let u = RtmpUrl::parse("rtmp://127.0.0.1:1936/app/a/b").unwrap();
        assert_eq!((u.port, u.key.as_str()), (1936, "a/b"));
        let u = RtmpUrl::parse("rtmp://[::1]:1937/live/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1937));
        for bad in [
            "http://x/live/a",
            "rtmp://x",
            "rtmp://x/live",
            "rtmp://x/live/",
            "rtmp://x:y/live/a",
            "rtmp:///live/a",
        ] {
            assert!(RtmpUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            RtmpUrl::parse("rtmp://h:1/live/k").unwrap().tc_url(),
            "rtmp://h:1/live"
        );
    }

    #[test]
    fn keys_never_show() {
        let secret = "rtmp://user:pw@a.rtmp.youtube.com/live2/abcd-efgh-ijkl?key=s3cr3t&x";
        let r = redact_url(secret);
        assert_eq!(r, "rtmp://***@a.rtmp.youtube.com/live2/***?key=***&***");
        assert_eq!(
            redact_url("rtmp://live.twitch.tv/app/live_123_abc"),
            "rtmp://live.twitch.tv/app/***"
        );
        assert_eq!(redact_url("rtmp://h/live"), "rtmp://h/live");
        assert_eq!(redact_url("not a url?token=zz"), "not a url?token=***");
        let u = RtmpUrl::parse("rtmp://h:1935/live/cam42/sub?key=T0PSECRET").unwrap();
        for shown in [
            format!("{u}"),
            format!("{u:?}"),
            RtmpUrl::parse("rtmp://h:bad/live/T0PSECRET")
                .unwrap_err()
                .to_string(),
        ] {
            assert!(
                !shown.contains("T0PSECRET") && !shown.contains("cam42"),
                "{shown}"
            );
        }
        assert_eq!(
            u.scrub("NetStream.Publish.BadName: cam42/sub?key=T0PSECRET is taken; T0PSECRET"),
            "NetStream.Publish.BadName: *** is taken; ***"
        );
    }

    fn server_bytes(messages: &[Bytes]) -> Vec<u8> {
        messages.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn server_stream_answers_pings_acknowledges_and_reports() {
        let mut s = ServerStream::default();
        let bytes = server_bytes(&[
            message::set_chunk_size(4096),
            message::window_ack_size(100),
            message::user_control(events::PING_REQUEST, &[0, 0, 0, 9]),
            message::command_message(
                0,
                "_result",
                1.0,
                vec![Amf0Value::Null, Amf0Value::Number(1.0)],
            ),
            crate::status::on_status(1, "status", "NetStream.Play.Start", "go"),
            crate::status::on_status(1, "error", "NetStream.Play.StreamNotFound", "gone"),
        ]);
        s.feed(&bytes);
        assert_eq!(s.next_event().unwrap(), Some(ServerEvent::Other));
        assert_eq!(s.next_event().unwrap(), Some(ServerEvent::Other));
        assert_eq!(s.next_event().unwrap(), Some(ServerEvent::Other));
        assert_eq!(
            s.next_event().unwrap(),
            Some(ServerEvent::Reply {
                transaction: 1.0,
                ok: true,
                args: vec![Amf0Value::Number(1.0)]
            })
        );
        assert_eq!(
            s.next_event().unwrap(),
            Some(ServerEvent::Status("NetStream.Play.Start".into()))
        );
        let e = s.next_event().unwrap_err().to_string();
        assert!(e.contains("StreamNotFound: gone"), "{e}");
        // A pong for the ping; an acknowledgement once 100 bytes arrived after the window was set.
        assert_eq!(s.replies.len(), 1);
        assert_eq!(&s.replies[0][12..], &[0, 7, 0, 0, 0, 9]);
        s.feed(&[0u8; 0]);
        s.feed(&message::set_chunk_size(4096));
        assert_eq!(s.replies.len(), 2, "acknowledged");
    }

    #[test]
    fn hostile_server_bytes_are_errors() {
        // Nesting deeper than the limit in a `_result`, in one message of 1.4 MB.
        let mut body = vec![0x02, 0x00, 0x07];
        body.extend_from_slice(b"_result");
        body.push(0x00);
        body.extend_from_slice(&1f64.to_be_bytes());
        for _ in 0..200_000 {
            body.extend_from_slice(&[0x03, 0x00, 0x04, b'a', b'b', b'c', b'd']);
        }
        let bytes = chunk::encode_message(3, 20, 0, 0, &body, 128);
        let e = run_server_bytes(&mut std::iter::once(&bytes[..])).unwrap_err();
        assert!(e.contains("nested deeper"), "{e}");
        // A declared message beyond the limit.
        let e = run_server_bytes(&mut std::iter::once(
            &[0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0][..],
        ))
        .unwrap_err();
        assert!(e.contains("limit"), "{e}");
        // rml_rtmp's decoder panicked on this (a new header inside a message whose length it shortens).
        let mut b = vec![0x04, 0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0];
        b.extend_from_slice(&[0u8; 128]);
        b.extend_from_slice(&[0x04, 0, 0, 0, 0, 0, 10, 9, 1, 0, 0, 0]);
        assert!(run_server_bytes(&mut std::iter::once(&b[..])).is_err());
    }
}
