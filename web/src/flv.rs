//! HTTP-FLV: `GET /live/NAME.flv` plays a stream of this node or of the mesh in the browser (mpegts.js) or
//! in any FLV player. The answer comes from the same hub as RTMP players get: its keyframe cache gives
//! metadata, codec headers and the current GOP at once, so playback starts without waiting for the next
//! keyframe. A stream that is not live here waits for the mesh exactly as an RTMP player does (the
//! stream's lookup); if it is not found, the answer is a 404 saying why.

use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use streamr_media::{Frame, FrameKind, Streams, SubscriberKind, Subscription};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The FLV file header (audio and video present) and the first `PreviousTagSize0`.
const FLV_HEADER: &[u8] = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00";
/// Tags queued for one HTTP client before its stream waits (the hub's own lag rule then skips it ahead
/// to the next keyframe).
const QUEUE: usize = 64;

/// Whether `name` (`NAME` or `NAME@ORIGIN-PREFIX`) may be asked for: the stream names the node accepts.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
        && name.matches('@').count() <= 1
        && !name.starts_with(['.', '@'])
}

/// One FLV tag (header, body, `PreviousTagSize`) for a frame at `timestamp` ms.
pub fn tag(frame: &Frame, timestamp: u32) -> Bytes {
    let body = frame.payload();
    let kind = match frame.kind() {
        FrameKind::Audio => 8u8,
        FrameKind::Video => 9,
        FrameKind::Data => 18,
    };
    let size = body.len() as u32;
    let mut b = BytesMut::with_capacity(11 + body.len() + 4);
    b.put_u8(kind);
    b.put_uint(u64::from(size), 3);
    b.put_uint(u64::from(timestamp & 0x00ff_ffff), 3);
    b.put_u8((timestamp >> 24) as u8);
    b.put_uint(0, 3);
    b.put_slice(body);
    b.put_u32(size + 11);
    b.freeze()
}

/// Rebases timestamps so that the first frame plays at 0 (a player joining an hour into a stream would
/// otherwise start an hour in, which some players show as a long wait).
#[derive(Debug, Default)]
pub struct Rebase {
    base: Option<u32>,
}

impl Rebase {
    /// The timestamp to write for a frame stamped `ts`; frames stamped before the first one (codec
    /// headers of the start bundle) play at 0.
    pub fn map(&mut self, ts: u32) -> u32 {
        let base = *self.base.get_or_insert(ts);
        let d = ts.wrapping_sub(base);
        if (d as i32) < 0 { 0 } else { d }
    }
}

/// Why playback cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PlayError {
    /// Not a stream name.
    #[error("{0:?} is not a stream name: use letters, digits, '-', '_' or '.'")]
    BadName(String),
    /// Not found here or in the mesh.
    #[error("{0}")]
    NotFound(String),
}

/// Waits until `name` is live here (asking the mesh if needed), then returns the FLV bytes as a channel
/// fed by a task that ends when the client goes away, the stream ends, or the server shuts down.
pub async fn play(
    streams: &Streams,
    name: &str,
    shutdown: CancellationToken,
) -> Result<mpsc::Receiver<Bytes>, PlayError> {
    if !valid_name(name) {
        return Err(PlayError::BadName(name.to_string()));
    }
    let hub = streams.get_or_create(name);
    // Subscribed before the lookup, as an RTMP player: a waiting subscriber keeps the mesh's fetch going.
    let sub = hub.subscribe(SubscriberKind::Player);
    let mut lookup = streams.request(&hub);
    lookup
        .settled()
        .await
        .map_err(|e| PlayError::NotFound(e.to_string()))?;
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(feed(sub, tx, hub, shutdown));
    Ok(rx)
}

async fn feed(
    mut sub: Subscription,
    tx: mpsc::Sender<Bytes>,
    _hub: Arc<streamr_media::Hub>,
    shutdown: CancellationToken,
) {
    if tx.send(Bytes::from_static(FLV_HEADER)).await.is_err() {
        return;
    }
    let mut rebase = Rebase::default();
    loop {
        let frame = tokio::select! {
            f = sub.next() => match f {
                Ok(f) => f,
                Err(_) => return,
            },
            _ = tx.closed() => return,
            _ = shutdown.cancelled() => return,
        };
        let ts = rebase.map(frame.timestamp());
        if tx.send(tag(&frame, ts)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamr_media::{HubConfig, SourceKind};

    #[test]
    fn names_are_checked() {
        assert!(valid_name("alice") && valid_name("cam-1.hd") && valid_name("alice@12D3KooW"));
        for bad in ["", "../etc", "a/b", "a b", "@x", "a@b@c", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn tags_are_framed_as_flv_says() {
        let f = Frame::new(
            FrameKind::Video,
            0,
            1,
            Bytes::from_static(&[0x17, 0x01, 0, 0, 0, 0xaa]),
        );
        let t = tag(&f, 0x0102_0304);
        assert_eq!(&t[..11], &[9, 0, 0, 6, 0x02, 0x03, 0x04, 0x01, 0, 0, 0]);
        assert_eq!(&t[11..17], f.payload().as_ref());
        assert_eq!(&t[17..], &17u32.to_be_bytes());
    }

    #[test]
    fn timestamps_start_at_zero_and_headers_before_the_first_frame_play_at_zero() {
        let mut r = Rebase::default();
        assert_eq!(r.map(5000), 0);
        assert_eq!(r.map(5040), 40);
        assert_eq!(r.map(4000), 0);
        let mut w = Rebase::default();
        assert_eq!(w.map(u32::MAX - 10), 0);
        assert_eq!(w.map(5), 16, "the 32-bit clock wraps");
    }

    #[tokio::test]
    async fn a_live_stream_starts_with_the_header_and_the_cached_frames() {
        let streams = Streams::new(HubConfig::default());
        let hub = streams.get_or_create("a");
        let src = hub.attach(SourceKind::Publisher);
        src.push_media(
            FrameKind::Video,
            0,
            Bytes::from_static(&[0x17, 0x00, 0, 0, 0, 1]),
        )
        .unwrap();
        src.push_media(
            FrameKind::Video,
            0,
            Bytes::from_static(&[0x17, 0x01, 0, 0, 0, 2]),
        )
        .unwrap();
        let mut rx = play(&streams, "a", CancellationToken::new()).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(FLV_HEADER));
        let first = rx.recv().await.unwrap();
        assert_eq!(first[0], 9);
        assert!(matches!(
            play(&streams, "../x", CancellationToken::new()).await,
            Err(PlayError::BadName(_))
        ));
        drop(src);
    }
}
