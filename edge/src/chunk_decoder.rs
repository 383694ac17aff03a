//! A bounded RTMP chunk decoder: bytes from a peer in, whole messages out, with no I/O.
//!
//! rml_rtmp's decoder reserves the full declared length of a message (up to 16 MiB) on its first chunk, keeps
//! one partial message for all chunk streams, and panics on some header sequences. This one checks a
//! message's declared length against a limit before it buffers a byte of it (the limit is small until a
//! publish is authorised), grows buffers only as bytes arrive, keeps one partial message per chunk stream
//! (chunks of different streams may interleave, as the specification allows), caps the number of chunk
//! streams and the bytes held in partial messages, and never panics on any input: every inconsistency is an
//! error that ends the one connection.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::HashMap;

/// Chunk size every RTMP peer starts with.
pub const INITIAL_CHUNK_SIZE: usize = 128;
/// Largest chunk size the specification allows (31 bits).
pub const MAX_CHUNK_SIZE: u32 = 0x7fff_ffff;
/// Chunk streams a connection may use. Clients use a handful (ffmpeg and OBS: 2 to 8).
pub const MAX_CHUNK_STREAMS: usize = 32;

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The chunk stream it came on.
    pub csid: u32,
    /// Message type (8 audio, 9 video, 18 data, 20 command, 1-6 protocol control...).
    pub type_id: u8,
    /// Message stream id (0 for the connection, else a stream from `createStream`).
    pub stream_id: u32,
    /// Timestamp in milliseconds (wrapping).
    pub timestamp: u32,
    /// The message body.
    pub payload: Bytes,
}

/// Why a peer's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A message longer than allowed at this stage of the session.
    #[error("a message of {length} bytes is over the {limit}-byte limit")]
    MessageTooLarge {
        /// Declared length.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// More chunk streams than [`MAX_CHUNK_STREAMS`].
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams")]
    TooManyChunkStreams,
    /// Partial messages together hold more than allowed.
    #[error("partial messages hold more than {0} bytes")]
    TooMuchBuffered(usize),
    /// A compressed header on a chunk stream that had no message yet.
    #[error("chunk stream {0} continues a header it never sent")]
    NoPreviousHeader(u32),
    /// A new message header on a chunk stream whose message is not complete.
    #[error("chunk stream {0} starts a new message inside another")]
    Interrupted(u32),
    /// A Set Chunk Size outside 1..=2^31-1.
    #[error("chunk size {0} is not allowed (1 to 2147483647)")]
    BadChunkSize(u32),
}

impl ChunkError {
    /// True for the errors that are a limit being hit (counted as such), not merely malformed input.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            ChunkError::MessageTooLarge { .. }
                | ChunkError::TooManyChunkStreams
                | ChunkError::TooMuchBuffered(_)
        )
    }
}

/// What one chunk stream remembers for header compression, and its message in progress.
#[derive(Debug, Default)]
struct ChunkStream {
    timestamp: u32,
    /// The last timestamp field (absolute for a type 0 header, else a delta): a type 3 header that starts a
    /// new message adds it again.
    delta: u32,
    /// The last header carried an extended timestamp, so type 3 chunks repeat one.
    extended: bool,
    length: usize,
    type_id: u8,
    stream_id: u32,
    /// The body received so far; empty between messages.
    partial: BytesMut,
}

/// What reading a chunk header gave.
enum Header {
    /// The header is not all there yet.
    NeedMore,
    /// A message with an empty body, complete with its header.
    EmptyMessage(Message),
    /// The chunk's payload follows.
    Payload,
}

#[derive(Debug, Clone, Copy)]
enum Stage {
    Header,
    /// Inside a chunk's payload: `left` bytes of this chunk still to come.
    Payload {
        csid: u32,
        left: usize,
    },
}

/// Decodes the chunk stream of one connection. See the module docs.
#[derive(Debug)]
pub struct ChunkDecoder {
    chunk_size: usize,
    max_message: usize,
    max_buffered: usize,
    streams: HashMap<u32, ChunkStream>,
    buffered: usize,
    input: BytesMut,
    stage: Stage,
}

impl ChunkDecoder {
    /// A decoder that accepts messages up to `max_message` bytes (and twice that in partial messages).
    pub fn new(max_message: usize) -> Self {
        ChunkDecoder {
            chunk_size: INITIAL_CHUNK_SIZE,
            max_message,
            max_buffered: max_message.saturating_mul(2),
            streams: HashMap::new(),
            buffered: 0,
            input: BytesMut::new(),
            stage: Stage::Header,
        }
    }

    /// Changes the message size limit (raised once a publish is authorised). It applies to messages whose
    /// first chunk arrives from now on.
    pub fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
        self.max_buffered = max_message.saturating_mul(2);
    }

    /// Applies the peer's Set Chunk Size; call it before asking for the next message.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(ChunkError::BadChunkSize(size));
        }
        self.chunk_size = size as usize;
        Ok(())
    }

    /// The peer's chunk size now.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Applies the peer's Abort Message: drops the partial message of `csid`.
    pub fn abort(&mut self, csid: u32) {
        if let Some(s) = self.streams.get_mut(&csid) {
            self.buffered -= s.partial.len();
            s.partial = BytesMut::new();
        }
    }

    /// Bytes held: unread input plus partial messages.
    pub fn held(&self) -> usize {
        self.input.len() + self.buffered
    }

    /// Adds bytes read from the peer. Call [`ChunkDecoder::next_message`] until it returns `None` before
    /// pushing more, so that at most one read's worth of input waits here.
    pub fn push(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// The next whole message, `None` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, ChunkError> {
        loop {
            match self.stage {
                Stage::Header => match self.header()? {
                    Header::NeedMore => return Ok(None),
                    Header::EmptyMessage(m) => return Ok(Some(m)),
                    Header::Payload => {}
                },
                Stage::Payload { csid, left } => {
                    let n = left.min(self.input.len());
                    if n == 0 {
                        return Ok(None);
                    }
                    if self.buffered + n > self.max_buffered {
                        return Err(ChunkError::TooMuchBuffered(self.max_buffered));
                    }
                    let Some(s) = self.streams.get_mut(&csid) else {
                        // The header stage created it; unreachable, but an error is cheaper than a panic.
                        return Err(ChunkError::NoPreviousHeader(csid));
                    };
                    let complete = s.partial.len() + n == s.length;
                    let message = if complete && s.partial.is_empty() {
                        // The whole body in one piece: hand it on without a copy.
                        Some(self.input.split_to(n).freeze())
                    } else {
                        if s.partial.is_empty() {
                            s.partial.reserve(s.length.min(64 * 1024));
                        }
                        s.partial.extend_from_slice(&self.input[..n]);
                        self.input.advance(n);
                        self.buffered += n;
                        if complete {
                            self.buffered -= s.partial.len();
                            Some(std::mem::take(&mut s.partial).freeze())
                        } else {
                            None
                        }
                    };
                    self.stage = if left > n {
                        Stage::Payload {
                            csid,
                            left: left - n,
                        }
                    } else {
                        Stage::Header
                    };
                    if let Some(payload) = message {
                        self.stage = Stage::Header;
                        return Ok(Some(Message {
                            csid,
                            type_id: s.type_id,
                            stream_id: s.stream_id,
                            timestamp: s.timestamp,
                            payload,
                        }));
                    }
                }
            }
        }
    }

    /// Reads one chunk header if it is all there.
    fn header(&mut self) -> Result<Header, ChunkError> {
        let b = &self.input[..];
        let Some(&first) = b.first() else {
            return Ok(Header::NeedMore);
        };
        let fmt = first >> 6;
        let (csid, mut at) = match first & 0x3f {
            0 => match b.get(1) {
                Some(&x) => (64 + u32::from(x), 2),
                None => return Ok(Header::NeedMore),
            },
            1 => match (b.get(1), b.get(2)) {
                (Some(&x), Some(&y)) => (64 + u32::from(x) + 256 * u32::from(y), 3),
                _ => return Ok(Header::NeedMore),
            },
            c => (u32::from(c), 1),
        };
        let fields = [11, 7, 3, 0][usize::from(fmt)];
        if b.len() < at + fields {
            return Ok(Header::NeedMore);
        }
        let u24 = |i: usize| u32::from_be_bytes([0, b[i], b[i + 1], b[i + 2]]);
        let field = (fmt < 3).then(|| u24(at));
        let length = (fmt < 2).then(|| u24(at + 3) as usize);
        let type_id = (fmt < 2).then(|| b[at + 6]);
        let stream_id =
            (fmt == 0).then(|| u32::from_le_bytes([b[at + 7], b[at + 8], b[at + 9], b[at + 10]]));
        at += fields;

        let known = self.streams.get(&csid);
        if fmt > 0 && known.is_none() {
            return Err(ChunkError::NoPreviousHeader(csid));
        }
        if known.is_none() && self.streams.len() >= MAX_CHUNK_STREAMS {
            return Err(ChunkError::TooManyChunkStreams);
        }
        let in_message = known.is_some_and(|s| !s.partial.is_empty());
        if in_message && fmt != 3 {
            return Err(ChunkError::Interrupted(csid));
        }
        let extended = match field {
            Some(f) => f == 0x00ff_ffff,
            None => known.is_some_and(|s| s.extended),
        };
        let ext_value = if extended {
            let Some(e) = b.get(at..at + 4) else {
                return Ok(Header::NeedMore);
            };
            at += 4;
            Some(u32::from_be_bytes([e[0], e[1], e[2], e[3]]))
        } else {
            None
        };
        // The whole header is here: from now on nothing needs more bytes.
        let new_length = length.unwrap_or_else(|| known.map_or(0, |s| s.length));
        if !in_message && new_length > self.max_message {
            return Err(ChunkError::MessageTooLarge {
                length: new_length,
                limit: self.max_message,
            });
        }
        self.input.advance(at);
        let s = self.streams.entry(csid).or_default();
        if !in_message {
            // A new message: take the header's fields, apply its timestamp.
            let value = ext_value.or(field);
            match (fmt, value) {
                (0, Some(ts)) => {
                    s.timestamp = ts;
                    s.delta = ts;
                }
                (_, Some(delta)) => {
                    s.timestamp = s.timestamp.wrapping_add(delta);
                    s.delta = delta;
                }
                (_, None) => s.timestamp = s.timestamp.wrapping_add(s.delta),
            }
            if field.is_some() {
                s.extended = extended;
            }
            s.length = new_length;
            if let Some(t) = type_id {
                s.type_id = t;
            }
            if let Some(id) = stream_id {
                s.stream_id = id;
            }
            if s.length == 0 {
                return Ok(Header::EmptyMessage(Message {
                    csid,
                    type_id: s.type_id,
                    stream_id: s.stream_id,
                    timestamp: s.timestamp,
                    payload: Bytes::new(),
                }));
            }
        }
        let left = (s.length - s.partial.len()).min(self.chunk_size);
        self.stage = Stage::Payload { csid, left };
        Ok(Header::Payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::encode_message;

    fn all(d: &mut ChunkDecoder) -> Result<Vec<Message>, ChunkError> {
        let mut v = Vec::new();
        while let Some(m) = d.next_message()? {
            v.push(m);
        }
        Ok(v)
    }

    #[test]
    fn decodes_our_encoder_byte_by_byte_and_at_once() {
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut wire = encode_message(6, 9, 1, 1234, &body, 128).to_vec();
        wire.extend_from_slice(&encode_message(6, 9, 1, 0x0100_0000, &body[..300], 128));
        wire.extend_from_slice(&encode_message(4, 8, 1, 7, &[], 128));
        for step in [1, 7, 128, 129, wire.len()] {
            let mut d = ChunkDecoder::new(1 << 20);
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                d.push(piece);
                got.extend(all(&mut d).unwrap());
            }
            assert_eq!(got.len(), 3, "step {step}");
            assert_eq!(&got[0].payload[..], &body[..]);
            assert_eq!(
                (got[0].type_id, got[0].stream_id, got[0].timestamp),
                (9, 1, 1234)
            );
            assert_eq!(got[1].timestamp, 0x0100_0000);
            assert_eq!(&got[1].payload[..], &body[..300]);
            assert_eq!((got[2].type_id, got[2].payload.len()), (8, 0));
            assert_eq!(d.held(), 0);
        }
    }

    #[test]
    fn compressed_headers_and_interleaved_chunk_streams() {
        let mut d = ChunkDecoder::new(1 << 20);
        // csid 4: type 0 (ts 100, len 200, video, stream 1), first 128 bytes...
        let mut w = vec![0x04, 0, 0, 100, 0, 0, 200, 9, 1, 0, 0, 0];
        w.extend(std::iter::repeat_n(1u8, 128));
        // ...interleaved with a whole message on csid 5...
        w.extend_from_slice(&[0x05, 0, 0, 5, 0, 0, 2, 8, 1, 0, 0, 0, 7, 7]);
        // ...then the rest of csid 4's message.
        w.push(0xc4);
        w.extend(std::iter::repeat_n(2u8, 72));
        // type 2 on csid 4 (delta 40, same length and type), in two chunks.
        w.extend_from_slice(&[0x84, 0, 0, 40]);
        w.extend(std::iter::repeat_n(3u8, 128));
        w.push(0xc4);
        w.extend(std::iter::repeat_n(3u8, 72));
        // type 3 starting a new message: the delta again.
        w.push(0xc4);
        w.extend(std::iter::repeat_n(4u8, 128));
        w.push(0xc4);
        w.extend(std::iter::repeat_n(4u8, 72));
        d.push(&w);
        let got = all(&mut d).unwrap();
        let ts: Vec<(u32, u32, usize)> = got
            .iter()
            .map(|m| (m.csid, m.timestamp, m.payload.len()))
            .collect();
        assert_eq!(ts, [(5, 5, 2), (4, 100, 200), (4, 140, 200), (4, 180, 200)]);
        assert_eq!(got[1].payload[127], 1);
        assert_eq!(got[1].payload[128], 2);
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_buffering() {
        let mut d = ChunkDecoder::new(64 * 1024);
        d.push(&[0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0]);
        assert_eq!(
            d.next_message(),
            Err(ChunkError::MessageTooLarge {
                length: 0xff_ffff,
                limit: 64 * 1024
            })
        );
        assert!(d.held() <= 12);
        // Raised after an authorised publish.
        let mut d = ChunkDecoder::new(64 * 1024);
        d.set_max_message(16 << 20);
        d.push(&[0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0, 1, 2, 3]);
        assert_eq!(d.next_message(), Ok(None));
        assert_eq!(d.held(), 3, "only bytes that arrived are held");
    }

    #[test]
    fn chunk_streams_and_partial_bytes_are_capped() {
        let mut d = ChunkDecoder::new(1000);
        for csid in 3..3 + MAX_CHUNK_STREAMS as u8 {
            // A message of 500 bytes, its first chunk (128 bytes) sent: a partial on each stream.
            d.push(&[csid, 0, 0, 0, 0, 1, 0xf4, 9, 1, 0, 0, 0]);
            d.push(&[1u8; 128]);
            if let Err(e) = all(&mut d) {
                assert_eq!(e, ChunkError::TooMuchBuffered(2000));
                return;
            }
        }
        panic!("no limit hit");
    }

    #[test]
    fn too_many_chunk_streams() {
        let mut d = ChunkDecoder::new(1000);
        let mut r = Ok(vec![]);
        for i in 0..=MAX_CHUNK_STREAMS as u8 {
            d.push(&[0, i, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 0]);
            r = all(&mut d);
        }
        assert_eq!(r, Err(ChunkError::TooManyChunkStreams));
    }

    #[test]
    fn inconsistent_headers_are_errors() {
        let mut d = ChunkDecoder::new(1000);
        d.push(&[0xc5]);
        assert_eq!(d.next_message(), Err(ChunkError::NoPreviousHeader(5)));
        let mut d = ChunkDecoder::new(1000);
        d.push(&[0x04, 0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0]);
        d.push(&[0u8; 128]);
        d.push(&[0x04, 0, 0, 0, 0, 0, 10, 9, 1, 0, 0, 0]);
        assert_eq!(d.next_message(), Err(ChunkError::Interrupted(4)));
        let mut d = ChunkDecoder::new(1000);
        assert_eq!(d.set_chunk_size(0), Err(ChunkError::BadChunkSize(0)));
        assert!(d.set_chunk_size(0x8000_0000).is_err());
        assert!(d.set_chunk_size(MAX_CHUNK_SIZE).is_ok());
    }

    #[test]
    fn abort_drops_a_partial_message() {
        let mut d = ChunkDecoder::new(1000);
        d.push(&[0x04, 0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0]);
        d.push(&[0u8; 128]);
        assert_eq!(d.next_message(), Ok(None));
        assert_eq!(d.held(), 128);
        d.abort(4);
        assert_eq!(d.held(), 0);
        d.push(&[0x04, 0, 0, 0, 0, 0, 1, 9, 1, 0, 0, 0, 42]);
        assert_eq!(&d.next_message().unwrap().unwrap().payload[..], &[42]);
    }
}
