//! An RTMP client (rml_rtmp's `ClientSession` over tokio): plays from or publishes to an upstream RTMP server.
//! Used by the pull/push relays and by netlab's probes.

use crate::metadata;
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use streamr_mesh::FrameKind;
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
#[derive(Debug)]
pub struct RtmpClient {
    stream: TcpStream,
    session: ClientSessionBox,
    buf: Vec<u8>,
    events: VecDeque<ClientSessionEvent>,
    url: RtmpUrl,
}

/// rml_rtmp's session does not implement Debug.
struct ClientSessionBox(ClientSession);

impl std::fmt::Debug for ClientSessionBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSession")
    }
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
            match hs
                .process_bytes(&buf[..n])
                .map_err(|e| ClientError::Protocol(format!("handshake: {e:?}")))?
            {
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
        let mut cfg = ClientSessionConfig::new();
        cfg.tc_url = Some(url.tc_url());
        let (session, initial) =
            ClientSession::new(cfg).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut c = RtmpClient {
            stream,
            session: ClientSessionBox(session),
            buf,
            events: VecDeque::new(),
            url: url.clone(),
        };
        c.apply(initial).await?;
        c.feed(&leftover).await?;
        let req = c
            .session
            .0
            .request_connection(url.app.clone())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        c.apply(vec![req]).await?;
        loop {
            match c.next_event().await? {
                ClientSessionEvent::ConnectionRequestAccepted => return Ok(c),
                ClientSessionEvent::ConnectionRequestRejected { description } => {
                    return Err(ClientError::Refused(description));
                }
                e => c.check_refusal(&e)?,
            }
        }
    }

    /// Asks to play the URL's stream key; returns once the server accepted.
    pub async fn play(mut self, limit: Duration) -> Result<RtmpPlayer, ClientError> {
        let req = self
            .session
            .0
            .request_playback(self.url.key.clone())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.apply(vec![req]).await?;
        timeout(limit, async {
            loop {
                match self.next_event().await? {
                    ClientSessionEvent::PlaybackRequestAccepted => return Ok::<(), ClientError>(()),
                    e => self.check_refusal(&e)?,
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout("waiting for the server to accept play"))??;
        Ok(RtmpPlayer { client: self })
    }

    /// Asks to publish on the URL's stream key; returns once the server accepted.
    pub async fn publish(mut self, limit: Duration) -> Result<RtmpPublisher, ClientError> {
        let req = self
            .session
            .0
            .request_publishing(self.url.key.clone(), PublishRequestType::Live)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.apply(vec![req]).await?;
        timeout(limit, async {
            loop {
                match self.next_event().await? {
                    ClientSessionEvent::PublishRequestAccepted => return Ok::<(), ClientError>(()),
                    e => self.check_refusal(&e)?,
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout("waiting for the server to accept publish"))??;
        Ok(RtmpPublisher { client: self })
    }

    /// Turns a server's error status into an error.
    fn check_refusal(&self, e: &ClientSessionEvent) -> Result<(), ClientError> {
        match e {
            ClientSessionEvent::UnhandleableOnStatusCode { code }
                if code.contains("Failed")
                    || code.contains("BadName")
                    || code.contains("Unauthorized")
                    || code.contains("NotFound")
                    || code.contains("Rejected")
                    || code.contains("Unpublish") =>
            {
                Err(ClientError::Refused(code.clone()))
            }
            ClientSessionEvent::UnhandleableAmf0Command {
                command_name,
                additional_values,
                ..
            } if command_name == "_error" => Err(ClientError::Refused(describe(additional_values))),
            _ => Ok(()),
        }
    }

    async fn next_event(&mut self) -> Result<ClientSessionEvent, ClientError> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            let n = self.stream.read(&mut self.buf).await?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            let bytes = self.buf[..n].to_vec();
            self.feed(&bytes).await?;
        }
    }

    async fn feed(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let session = &mut self.session.0;
        let results = std::panic::catch_unwind(AssertUnwindSafe(|| session.handle_input(bytes)))
            .map_err(|_| ClientError::Protocol("rml_rtmp panicked on the server's bytes".into()))?
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.apply(results).await
    }

    async fn apply(&mut self, results: Vec<ClientSessionResult>) -> Result<(), ClientError> {
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => self.stream.write_all(&p.bytes).await?,
                ClientSessionResult::RaisedEvent(e) => self.events.push_back(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }
}

fn describe(values: &[rml_amf0::Amf0Value]) -> String {
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
}

impl RtmpPlayer {
    /// The next media message; `Err(Closed)` when the server ends the connection.
    pub async fn next(&mut self) -> Result<Media, ClientError> {
        loop {
            match self.client.next_event().await? {
                ClientSessionEvent::VideoDataReceived { timestamp, data } => {
                    return Ok(Media {
                        kind: FrameKind::Video,
                        timestamp: timestamp.value,
                        payload: data,
                    });
                }
                ClientSessionEvent::AudioDataReceived { timestamp, data } => {
                    return Ok(Media {
                        kind: FrameKind::Audio,
                        timestamp: timestamp.value,
                        payload: data,
                    });
                }
                ClientSessionEvent::StreamMetadataReceived { metadata: m } => {
                    return Ok(Media {
                        kind: FrameKind::Data,
                        timestamp: 0,
                        payload: metadata::to_payload(&m),
                    });
                }
                e => self.client.check_refusal(&e)?,
            }
        }
    }
}

/// A client that publishes a stream.
#[derive(Debug)]
pub struct RtmpPublisher {
    client: RtmpClient,
}

impl RtmpPublisher {
    /// Sends one media message. Data payloads must be AMF0 `onMetaData` (others are skipped).
    pub async fn send(
        &mut self,
        kind: FrameKind,
        timestamp: u32,
        payload: Bytes,
    ) -> Result<(), ClientError> {
        let s = &mut self.client.session.0;
        let ts = RtmpTimestamp::new(timestamp);
        let r = match kind {
            FrameKind::Video => s.publish_video_data(payload, ts, false),
            FrameKind::Audio => s.publish_audio_data(payload, ts, false),
            FrameKind::Data => match metadata::from_payload(&payload) {
                Some(m) => s.publish_metadata(&m),
                None => return Ok(()),
            },
        }
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.client.apply(vec![r]).await
    }

    /// Reads and handles whatever the server sent (acks, pings, errors) without waiting.
    /// Returns an error if the server refused or closed.
    pub async fn poll_server(&mut self) -> Result<(), ClientError> {
        let mut buf = [0u8; 4096];
        match self.client.stream.try_read(&mut buf) {
            Ok(0) => Err(ClientError::Closed),
            Ok(n) => {
                self.client.feed(&buf[..n]).await?;
                while let Some(e) = self.client.events.pop_front() {
                    self.client.check_refusal(&e)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e.into()),
        }
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
