//! RTMP chunk encoding of media messages, done once per frame and shared by every player.
//!
//! rml_rtmp's serializer compresses headers against the previous message of each chunk stream, so its output
//! differs per connection. Media goes out on chunk streams rml_rtmp never uses, each message starting with a
//! full (type 0) header, which makes the bytes identical for every player that shares the chunk size and the
//! message stream id.

use bytes::{BufMut, Bytes, BytesMut};
use streamr_media::{Frame, FrameKind};

/// Outbound chunk size that every server session announces (rml_rtmp's `ServerSessionConfig::chunk_size`).
pub const CHUNK_SIZE: usize = 4096;
/// The message stream id nearly every player gets for its first `createStream`.
pub const COMMON_STREAM_ID: u32 = 1;

/// Chunk stream ids for media; rml_rtmp uses 2 to 6.
const CSID_VIDEO: u8 = 7;
const CSID_AUDIO: u8 = 8;
const CSID_DATA: u8 = 9;

const EXTENDED: u32 = 0x00ff_ffff;

/// Encodes `frame` with `timestamp` as one RTMP message in chunks of `chunk_size`, with full headers.
pub fn encode(frame: &Frame, timestamp: u32, stream_id: u32, chunk_size: usize) -> Bytes {
    let (csid, type_id) = match frame.kind() {
        FrameKind::Video => (CSID_VIDEO, 9u8),
        FrameKind::Audio => (CSID_AUDIO, 8u8),
        FrameKind::Data => (CSID_DATA, 18u8),
    };
    encode_message(
        csid,
        type_id,
        stream_id,
        timestamp,
        frame.payload(),
        chunk_size,
    )
}

/// Encodes a message on chunk stream `csid` (2..=63; 2 is for protocol control).
pub fn encode_message(
    csid: u8,
    type_id: u8,
    stream_id: u32,
    timestamp: u32,
    payload: &[u8],
    chunk_size: usize,
) -> Bytes {
    debug_assert!((2..=63).contains(&csid));
    let chunk_size = chunk_size.max(1);
    let extended = timestamp >= EXTENDED;
    let chunks = payload.len().div_ceil(chunk_size).max(1);
    let ext_len = if extended { 4 } else { 0 };
    let mut out =
        BytesMut::with_capacity(payload.len() + 12 + ext_len + (chunks - 1) * (1 + ext_len));
    out.put_u8(csid); // fmt 0
    out.put_uint(u64::from(timestamp.min(EXTENDED)), 3);
    out.put_uint(payload.len() as u64, 3);
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    if extended {
        out.put_u32(timestamp);
    }
    for (i, piece) in payload.chunks(chunk_size).enumerate() {
        if i > 0 {
            out.put_u8(0xc0 | csid); // fmt 3: continuation
            if extended {
                out.put_u32(timestamp);
            }
        }
        out.put_slice(piece);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkDeserializer;

    fn roundtrip(ts: u32, len: usize, chunk: usize) {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let frame = Frame::new(FrameKind::Video, ts, 0, Bytes::from(payload.clone()));
        let mut bytes = encode(&frame, ts, 1, chunk).to_vec();
        // Two messages back to back, as a player receives them.
        bytes.extend_from_slice(&encode(&frame, ts.wrapping_add(1), 1, chunk));
        let mut de = ChunkDeserializer::new();
        de.set_max_chunk_size(chunk).unwrap();
        let m1 = de.get_next_message(&bytes).unwrap().expect("first message");
        let m2 = de.get_next_message(&[]).unwrap().expect("second message");
        for (m, t) in [(m1, ts), (m2, ts.wrapping_add(1))] {
            assert_eq!(m.type_id, 9);
            assert_eq!(m.message_stream_id, 1);
            assert_eq!(m.timestamp.value, t);
            assert_eq!(&m.data[..], &payload[..]);
        }
    }

    #[test]
    fn decodes_with_rml_rtmp() {
        roundtrip(0, 10, 128);
        roundtrip(1234, 4096, 4096);
        roundtrip(1234, 4097, 4096);
        roundtrip(99, 50_000, 4096);
        roundtrip(0x00ff_fffe, 9000, 4096);
    }

    #[test]
    fn extended_timestamps_repeat_on_continuation_chunks() {
        let frame = Frame::new(FrameKind::Audio, 0, 0, Bytes::from(vec![1u8; 300]));
        let b = encode(&frame, 0x0100_0000, 1, 128);
        // header 12 + ext 4 + 128, then 1 + 4 + 128, then 1 + 4 + 44
        assert_eq!(b.len(), 12 + 4 + 128 + 5 + 128 + 5 + 44);
        assert_eq!(b[12 + 4 + 128], 0xc0 | CSID_AUDIO);
        assert_eq!(
            &b[12 + 4 + 128 + 1..12 + 4 + 128 + 5],
            &0x0100_0000u32.to_be_bytes()
        );
    }

    #[test]
    fn empty_payload_is_one_header() {
        let frame = Frame::new(FrameKind::Data, 0, 0, Bytes::new());
        assert_eq!(encode(&frame, 5, 1, 4096).len(), 12);
    }
}
