//! An RTMP client: plays from or publishes to an upstream RTMP server. Used by the pull/push relays and by
//! netlab's probes.
//!
//! It speaks the command flow itself on rml_rtmp's chunk and message codecs instead of using rml_rtmp's
//! `ClientSession`, because that session drops media whose message stream id differs from the one its
//! `createStream` returned, and ffmpeg's `-listen 1` server sends media on another id: a pull from it
//! received nothing. Media is accepted on any message stream id here, as ffmpeg and nginx do.

use crate::metadata;
use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::{MessagePayload, RtmpMessage, UserControlEventType};
use rml_rtmp::time::RtmpTimestamp;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use streamr_media::FrameKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A parsed `rtmp://HOST[:PORT]/APP/KEY` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port (1935 when absent).
    pub port: u16,
    /// Application (first path segment).
    pub app: String,
    /// Stream key (the rest, including any query).
    pub key: String,
}

impl RtmpUrl {
    /// Parses an RTMP URL.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = |why: &str| {
            ClientError::BadUrl(format!(
                "{url:?}: {why}; expected rtmp://HOST[:PORT]/APP/KEY"
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

    /// The `tcUrl` sent with `connect` (some servers require it).
    pub fn tc_url(&self) -> String {
        format!("rtmp://{}:{}/{}", self.host, self.port, self.app)
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

/// A connected RTMP client (handshake and `connect` done).
pub struct RtmpClient {
    stream: TcpStream,
    de: ChunkDeserializer,
    ser: ChunkSerializer,
    buf: Vec<u8>,
    /// Bytes read but not yet given to the chunk deserializer.
    buf_leftover: Vec<u8>,
    url: RtmpUrl,
    next_txn: f64,
    /// The peer's window acknowledgement size, once it told us.
    ack_window: Option<u32>,
    received: u64,
    since_ack: u64,
    epoch: Instant,
}

impl std::fmt::Debug for RtmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmpClient")
            .field("url", &self.url)
            .finish()
    }
}

/// Outbound chunk size we announce.
const OUT_CHUNK_SIZE: u32 = 4096;

/// A message received from the server. Its message stream id is not kept: media is accepted on any.
struct Received {
    type_id: u8,
    timestamp: u32,
    data: Bytes,
}

fn protocol<E: std::fmt::Debug>(e: E) -> ClientError {
    ClientError::Protocol(format!("{e:?}"))
}

impl RtmpClient {
    /// Connects, handshakes and sends `connect` for the URL's application.
    pub async fn connect(url: &RtmpUrl, limit: Duration) -> Result<Self, ClientError> {
        timeout(limit, Self::connect_inner(url))
            .await
            .map_err(|_| ClientError::Timeout("connecting"))?
    }

    async fn connect_inner(url: &RtmpUrl) -> Result<Self, ClientError> {
        let mut stream = TcpStream::connect((url.host.as_str(), url.port)).await?;
        stream.set_nodelay(true)?;
        let mut hs = Handshake::new(PeerType::Client);
        let p0p1 = hs.generate_outbound_p0_and_p1().map_err(protocol)?;
        stream.write_all(&p0p1).await?;
        let mut buf = vec![0u8; 64 * 1024];
        let leftover = loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            match hs.process_bytes(&buf[..n]).map_err(protocol)? {
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
            de: ChunkDeserializer::new(),
            ser: ChunkSerializer::new(),
            buf,
            buf_leftover: Vec::new(),
            url: url.clone(),
            next_txn: 1.0,
            ack_window: None,
            received: 0,
            since_ack: 0,
            epoch: Instant::now(),
        };
        c.pending_input(leftover);
        let p = c
            .ser
            .set_max_chunk_size(OUT_CHUNK_SIZE, RtmpTimestamp::new(0))
            .map_err(protocol)?;
        c.stream.write_all(&p.bytes).await?;
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
                let m = self.recv().await?;
                if let Some(media) = to_media(&m) {
                    return Ok::<_, ClientError>(Some(media));
                }
                if m.type_id == 20
                    && status_code(&m.data).as_deref() == Some("NetStream.Play.Start")
                {
                    return Ok(None);
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
                let m = self.recv().await?;
                if m.type_id == 20
                    && status_code(&m.data).as_deref() == Some("NetStream.Publish.Start")
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
        let msg = RtmpMessage::Amf0Command {
            command_name: name.into(),
            transaction_id: txn,
            command_object: object,
            additional_arguments: args,
        };
        self.send_message(msg, stream_id).await?;
        Ok(txn)
    }

    async fn send_message(&mut self, msg: RtmpMessage, stream_id: u32) -> Result<(), ClientError> {
        let ts = RtmpTimestamp::new(self.epoch.elapsed().as_millis() as u32);
        let payload = msg.into_message_payload(ts, stream_id).map_err(protocol)?;
        self.send_payload(&payload).await
    }

    async fn send_payload(&mut self, payload: &MessagePayload) -> Result<(), ClientError> {
        let p = self
            .ser
            .serialize(payload, false, false)
            .map_err(protocol)?;
        self.stream.write_all(&p.bytes).await?;
        Ok(())
    }

    /// Waits for `_result` of `txn`; `_error` or an error status is a refusal.
    async fn await_result(&mut self, txn: f64) -> Result<Vec<Amf0Value>, ClientError> {
        loop {
            let m = self.recv().await?;
            if m.type_id != 20 {
                continue;
            }
            let mut values = rml_amf0::deserialize(&mut &m.data[..])
                .map_err(protocol)?
                .into_iter();
            let name = values
                .next()
                .and_then(|v| v.get_string())
                .unwrap_or_default();
            let id = values.next().and_then(|v| v.get_number()).unwrap_or(-1.0);
            if id != txn {
                continue;
            }
            let _object = values.next();
            let rest: Vec<Amf0Value> = values.collect();
            match name.as_str() {
                "_result" => return Ok(rest),
                "_error" => return Err(ClientError::Refused(describe(&rest))),
                _ => {}
            }
        }
    }

    /// Queues bytes that arrived with the handshake.
    fn pending_input(&mut self, bytes: Vec<u8>) {
        self.buf_leftover = bytes;
    }

    /// The next message, handling chunk size, acknowledgements, pings and error statuses on the way.
    async fn recv(&mut self) -> Result<Received, ClientError> {
        loop {
            let input = std::mem::take(&mut self.buf_leftover);
            let de = &mut self.de;
            let next = std::panic::catch_unwind(AssertUnwindSafe(|| de.get_next_message(&input)))
                .map_err(|_| {
                    ClientError::Protocol("rml_rtmp panicked on the server's bytes".into())
                })?
                .map_err(protocol)?;
            let Some(payload) = next else {
                let n = self.stream.read(&mut self.buf).await?;
                if n == 0 {
                    return Err(ClientError::Closed);
                }
                self.buf_leftover = self.buf[..n].to_vec();
                self.count_received(n).await?;
                continue;
            };
            match payload.type_id {
                1 | 3 | 4 | 5 | 6 => match payload.to_rtmp_message().map_err(protocol)? {
                    RtmpMessage::SetChunkSize { size } => {
                        self.de
                            .set_max_chunk_size(size as usize)
                            .map_err(protocol)?;
                    }
                    RtmpMessage::WindowAcknowledgement { size } => self.ack_window = Some(size),
                    RtmpMessage::UserControl {
                        event_type: UserControlEventType::PingRequest,
                        timestamp,
                        ..
                    } => {
                        let pong = RtmpMessage::UserControl {
                            event_type: UserControlEventType::PingResponse,
                            stream_id: None,
                            buffer_length: None,
                            timestamp,
                        };
                        self.send_message(pong, 0).await?;
                    }
                    _ => {}
                },
                20 => {
                    if let Some(err) = error_status(&payload.data) {
                        return Err(ClientError::Refused(err));
                    }
                    return Ok(received(payload));
                }
                _ => return Ok(received(payload)),
            }
        }
    }

    async fn count_received(&mut self, n: usize) -> Result<(), ClientError> {
        self.received += n as u64;
        self.since_ack += n as u64;
        if let Some(window) = self.ack_window
            && window > 0
            && self.since_ack >= u64::from(window)
        {
            self.since_ack = 0;
            let ack = RtmpMessage::Acknowledgement {
                sequence_number: self.received as u32,
            };
            self.send_message(ack, 0).await?;
        }
        Ok(())
    }
}

fn received(p: MessagePayload) -> Received {
    Received {
        type_id: p.type_id,
        timestamp: p.timestamp.value,
        data: p.data,
    }
}

/// Media from a received message (audio, video, `onMetaData`).
fn to_media(m: &Received) -> Option<Media> {
    let kind = match m.type_id {
        8 => FrameKind::Audio,
        9 => FrameKind::Video,
        18 => FrameKind::Data,
        _ => return None,
    };
    if kind == FrameKind::Data {
        // Only metadata travels as data; a publisher's `@setDataFrame` wrapper is removed.
        let payload = strip_set_data_frame(&m.data)?;
        metadata::from_payload(&payload)?;
        return Some(Media {
            kind,
            timestamp: m.timestamp,
            payload,
        });
    }
    Some(Media {
        kind,
        timestamp: m.timestamp,
        payload: m.data.clone(),
    })
}

/// `"@setDataFrame", "onMetaData", {..}` -> `"onMetaData", {..}`; other payloads unchanged.
fn strip_set_data_frame(data: &Bytes) -> Option<Bytes> {
    const PREFIX: &[u8] = b"\x02\x00\x0d@setDataFrame";
    Some(match data.strip_prefix(PREFIX) {
        Some(_) => data.slice(PREFIX.len()..),
        None => data.clone(),
    })
}

/// The `code` of an `onStatus` command.
fn status_code(data: &[u8]) -> Option<String> {
    let values = rml_amf0::deserialize(&mut &data[..]).ok()?;
    if values.first()?.clone().get_string()? != "onStatus" {
        return None;
    }
    let props = values.into_iter().find_map(|v| v.get_object_properties())?;
    props.get("code")?.clone().get_string()
}

/// An `onStatus` with level "error" (or `_error` outside a transaction we wait for), as text.
fn error_status(data: &[u8]) -> Option<String> {
    let values = rml_amf0::deserialize(&mut &data[..]).ok()?;
    let name = values.first()?.clone().get_string()?;
    if name != "onStatus" {
        return None;
    }
    let props = values
        .iter()
        .find_map(|v| v.clone().get_object_properties())?;
    let level = props.get("level").and_then(|v| v.clone().get_string());
    if level.as_deref() != Some("error") {
        return None;
    }
    Some(describe(&values[1..]))
}

fn describe(values: &[Amf0Value]) -> String {
    for v in values {
        if let Some(props) = v.clone().get_object_properties() {
            let get = |k: &str| props.get(k).and_then(|v| v.clone().get_string());
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

/// A client that plays a stream.
#[derive(Debug)]
pub struct RtmpPlayer {
    client: RtmpClient,
    first: Option<Media>,
}

impl RtmpPlayer {
    /// The next media message; `Err(Closed)` when the server ends the connection, `Err(Refused)` when it
    /// reports an error (for example the stream was unpublished with an error status).
    pub async fn next(&mut self) -> Result<Media, ClientError> {
        if let Some(m) = self.first.take() {
            return Ok(m);
        }
        loop {
            let m = self.client.recv().await?;
            if let Some(media) = to_media(&m) {
                return Ok(media);
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
    /// Sends one media message. Data payloads must be AMF0 `onMetaData` (they are sent as `@setDataFrame`).
    pub async fn send(
        &mut self,
        kind: FrameKind,
        timestamp: u32,
        payload: Bytes,
    ) -> Result<(), ClientError> {
        let (type_id, data) = match kind {
            FrameKind::Video => (9, payload),
            FrameKind::Audio => (8, payload),
            FrameKind::Data => {
                let mut d = b"\x02\x00\x0d@setDataFrame".to_vec();
                d.extend_from_slice(&payload);
                (18, Bytes::from(d))
            }
        };
        let p = MessagePayload {
            timestamp: RtmpTimestamp::new(timestamp),
            type_id,
            message_stream_id: self.stream_id,
            data,
        };
        self.client.send_payload(&p).await
    }

    /// Handles whatever the server sent (acks, pings, errors) without waiting.
    /// Returns an error if the server refused or closed.
    pub async fn poll_server(&mut self) -> Result<(), ClientError> {
        loop {
            match self.client.stream.try_read(&mut self.client.buf) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => {
                    let mut pending = std::mem::take(&mut self.client.buf_leftover);
                    pending.extend_from_slice(&self.client.buf[..n]);
                    self.client.buf_leftover = pending;
                    self.client.count_received(n).await?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        // Drain complete messages without blocking on the socket.
        let mut input = std::mem::take(&mut self.client.buf_leftover);
        while let Some(p) = self.client.de.get_next_message(&input).map_err(protocol)? {
            input.clear();
            match p.type_id {
                20 => {
                    if let Some(err) = error_status(&p.data) {
                        return Err(ClientError::Refused(err));
                    }
                }
                1 => {
                    if let Ok(RtmpMessage::SetChunkSize { size }) = p.to_rtmp_message() {
                        self.client
                            .de
                            .set_max_chunk_size(size as usize)
                            .map_err(protocol)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
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
}
