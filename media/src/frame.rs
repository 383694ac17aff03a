//! `Frame`: one media message of a live stream (audio, video or script data), the unit that every part of
//! the node moves around. Payloads are FLV tag bodies (what RTMP carries), shared and never copied.

use bytes::Bytes;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// An FLV AUDIODATA body.
    Audio,
    /// An FLV VIDEODATA body.
    Video,
    /// An AMF0 script data message (`onMetaData` and friends).
    Data,
}

impl FrameKind {
    /// Stable small number used on the wire.
    pub fn code(self) -> u8 {
        match self {
            FrameKind::Audio => 8,
            FrameKind::Video => 9,
            FrameKind::Data => 18,
        }
    }

    /// Inverse of [`FrameKind::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            8 => Some(FrameKind::Audio),
            9 => Some(FrameKind::Video),
            18 => Some(FrameKind::Data),
            _ => None,
        }
    }
}

/// Encodings of a frame that consumers compute once and share between all their sessions (for example the
/// RTMP chunk bytes every player receives, or the mesh wire form every downstream peer receives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingSlot {
    /// Owned by the RTMP edge.
    Edge = 0,
    /// Owned by the mesh wire protocol.
    Wire = 1,
}

const SLOTS: usize = 2;

/// One media message. Cloning is cheap (a reference count).
#[derive(Clone)]
pub struct Frame(Arc<Inner>);

struct Inner {
    kind: FrameKind,
    /// Milliseconds, RTMP timestamp semantics (decode time, wraps at 2^32).
    timestamp: u32,
    /// Position in the origin's stream; strictly increasing per stream and origin.
    seq: u64,
    keyframe: bool,
    sequence_header: bool,
    payload: Bytes,
    encodings: [OnceLock<Bytes>; SLOTS],
}

impl Frame {
    /// Builds a frame and classifies it (keyframe, codec sequence header) from its payload.
    pub fn new(kind: FrameKind, timestamp: u32, seq: u64, payload: Bytes) -> Self {
        let class = classify(kind, &payload);
        Frame(Arc::new(Inner {
            kind,
            timestamp,
            seq,
            keyframe: class.keyframe,
            sequence_header: class.sequence_header,
            payload,
            encodings: Default::default(),
        }))
    }

    /// The same frame with another timestamp and sequence number (the hub rebases a reconnecting publisher).
    pub fn restamped(&self, timestamp: u32, seq: u64) -> Self {
        if timestamp == self.0.timestamp && seq == self.0.seq {
            return self.clone();
        }
        Frame(Arc::new(Inner {
            kind: self.0.kind,
            timestamp,
            seq,
            keyframe: self.0.keyframe,
            sequence_header: self.0.sequence_header,
            payload: self.0.payload.clone(),
            encodings: Default::default(),
        }))
    }

    /// The same frame shown to this node's subscribers at another timestamp, keeping its sequence number
    /// and its mesh wire form ([`EncodingSlot::Wire`]). A hub relaying a mesh stream shifts the timestamps
    /// of a restarted origin's frames so that its players see time go forward, while downstream peers must
    /// get the frame exactly as its origin signed it.
    pub fn shown_at(&self, timestamp: u32) -> Self {
        if timestamp == self.0.timestamp {
            return self.clone();
        }
        let shifted = Frame(Arc::new(Inner {
            kind: self.0.kind,
            timestamp,
            seq: self.0.seq,
            keyframe: self.0.keyframe,
            sequence_header: self.0.sequence_header,
            payload: self.0.payload.clone(),
            encodings: Default::default(),
        }));
        if let Some(wire) = self.0.encodings[EncodingSlot::Wire as usize].get() {
            let _ = shifted.set_encoded(EncodingSlot::Wire, wire.clone());
        }
        shifted
    }

    /// Stores an encoding computed elsewhere: the mesh keeps the bytes a frame arrived in, which carry its
    /// origin's signature, and passes them on unchanged. Returns false when the slot was filled already.
    pub fn set_encoded(&self, slot: EncodingSlot, bytes: Bytes) -> bool {
        self.0.encodings[slot as usize].set(bytes).is_ok()
    }

    /// Audio, video or data.
    pub fn kind(&self) -> FrameKind {
        self.0.kind
    }

    /// Timestamp in milliseconds.
    pub fn timestamp(&self) -> u32 {
        self.0.timestamp
    }

    /// Sequence number assigned by the stream's origin.
    pub fn seq(&self) -> u64 {
        self.0.seq
    }

    /// A video frame a decoder can start from.
    pub fn is_keyframe(&self) -> bool {
        self.0.keyframe
    }

    /// A codec configuration record (AVC/HEVC decoder configuration, AAC AudioSpecificConfig).
    pub fn is_sequence_header(&self) -> bool {
        self.0.sequence_header
    }

    /// Audio or video a player plays: not metadata (`Data`), not a sequence header.
    pub fn is_media(&self) -> bool {
        self.kind() != FrameKind::Data && !self.is_sequence_header()
    }

    /// The FLV tag body.
    pub fn payload(&self) -> &Bytes {
        &self.0.payload
    }

    /// Length of the payload in bytes.
    pub fn len(&self) -> usize {
        self.0.payload.len()
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.0.payload.is_empty()
    }

    /// The cached encoding in `slot`, if one was made.
    pub fn cached(&self, slot: EncodingSlot) -> Option<Bytes> {
        self.0.encodings[slot as usize].get().cloned()
    }

    /// Returns the cached encoding in `slot`, computing it with `encode` the first time.
    pub fn encoded(&self, slot: EncodingSlot, encode: impl FnOnce(&Frame) -> Bytes) -> Bytes {
        self.0.encodings[slot as usize]
            .get_or_init(|| encode(self))
            .clone()
    }
}

/// Frames are equal when they carry the same message at the same position (cached encodings aside).
impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        self.0.kind == other.0.kind
            && self.0.timestamp == other.0.timestamp
            && self.0.seq == other.0.seq
            && self.0.payload == other.0.payload
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("kind", &self.0.kind)
            .field("timestamp", &self.0.timestamp)
            .field("seq", &self.0.seq)
            .field("keyframe", &self.0.keyframe)
            .field("sequence_header", &self.0.sequence_header)
            .field("len", &self.0.payload.len())
            .finish()
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Class {
    keyframe: bool,
    sequence_header: bool,
}

/// Reads the FLV tag body headers. Understands legacy FLV (AVC, HEVC as codec 12, AAC) and Enhanced RTMP
/// video (the FourCC form, first byte bit 0x80), so HEVC/AV1 from recent OBS is classified too.
fn classify(kind: FrameKind, payload: &[u8]) -> Class {
    let Some(&b0) = payload.first() else {
        return Class::default();
    };
    match kind {
        FrameKind::Video => {
            if b0 & 0x80 != 0 {
                // Enhanced RTMP: frame type in bits 4-6, packet type in the low nibble.
                let frame_type = (b0 >> 4) & 0x07;
                let packet_type = b0 & 0x0f;
                Class {
                    // PacketType 0 = SequenceStart; 5 = MPEG2TSSequenceStart.
                    sequence_header: packet_type == 0 || packet_type == 5,
                    keyframe: frame_type == 1 && packet_type != 0 && packet_type != 5,
                }
            } else {
                let frame_type = b0 >> 4;
                let codec = b0 & 0x0f;
                // AVC (7) and HEVC (12) carry an AVCPacketType byte: 0 = sequence header.
                let has_packet_type = codec == 7 || codec == 12;
                let sequence_header = has_packet_type && payload.get(1) == Some(&0);
                Class {
                    sequence_header,
                    keyframe: frame_type == 1 && !sequence_header,
                }
            }
        }
        FrameKind::Audio => {
            // AAC (sound format 10) carries an AACPacketType byte: 0 = AudioSpecificConfig.
            let sequence_header = (b0 >> 4) == 10 && payload.get(1) == Some(&0);
            Class {
                sequence_header,
                keyframe: false,
            }
        }
        FrameKind::Data => Class::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(bytes: &[u8]) -> Frame {
        Frame::new(FrameKind::Video, 0, 0, Bytes::copy_from_slice(bytes))
    }

    #[test]
    fn classifies_avc() {
        assert!(video(&[0x17, 0x00, 0, 0, 0]).is_sequence_header());
        assert!(!video(&[0x17, 0x00, 0, 0, 0]).is_keyframe());
        assert!(video(&[0x17, 0x01, 0, 0, 0]).is_keyframe());
        assert!(!video(&[0x27, 0x01, 0, 0, 0]).is_keyframe());
        assert!(!video(&[0x27, 0x01, 0, 0, 0]).is_sequence_header());
    }

    #[test]
    fn classifies_enhanced_rtmp() {
        // keyframe (1) | ex header, SequenceStart, FourCC hvc1
        assert!(video(&[0x90, b'h', b'v', b'c', b'1']).is_sequence_header());
        // keyframe, CodedFrames (1)
        assert!(video(&[0x91, b'h', b'v', b'c', b'1']).is_keyframe());
        // inter frame (2), CodedFramesX (3)
        assert!(!video(&[0xa3, b'a', b'v', b'0', b'1']).is_keyframe());
    }

    #[test]
    fn classifies_aac() {
        let a = Frame::new(
            FrameKind::Audio,
            0,
            0,
            Bytes::from_static(&[0xaf, 0x00, 0x12, 0x10]),
        );
        assert!(a.is_sequence_header());
        let a = Frame::new(
            FrameKind::Audio,
            0,
            0,
            Bytes::from_static(&[0xaf, 0x01, 0x21]),
        );
        assert!(!a.is_sequence_header());
        let empty = Frame::new(FrameKind::Audio, 0, 0, Bytes::new());
        assert!(!empty.is_sequence_header());
    }

    #[test]
    fn encodings_are_computed_once_per_slot() {
        let f = video(&[0x17, 0x01]);
        let mut calls = 0;
        for _ in 0..3 {
            let e = f.encoded(EncodingSlot::Edge, |_| {
                calls += 1;
                Bytes::from_static(b"edge")
            });
            assert_eq!(&e[..], b"edge");
        }
        assert_eq!(calls, 1);
        let w = f
            .clone()
            .encoded(EncodingSlot::Wire, |_| Bytes::from_static(b"wire"));
        assert_eq!(&w[..], b"wire");
        // A restamped copy must not reuse encodings that contain the old timestamp.
        let r = f.restamped(5, 1);
        assert_eq!(
            &r.encoded(EncodingSlot::Edge, |_| Bytes::from_static(b"new"))[..],
            b"new"
        );
    }

    #[test]
    fn a_frame_shown_at_another_time_keeps_its_wire_form_only() {
        let f = video(&[0x17, 0x01]);
        assert!(f.set_encoded(EncodingSlot::Wire, Bytes::from_static(b"signed")));
        assert!(!f.set_encoded(EncodingSlot::Wire, Bytes::from_static(b"again")));
        let _ = f.encoded(EncodingSlot::Edge, |_| Bytes::from_static(b"edge@0"));
        let g = f.shown_at(500);
        assert_eq!((g.timestamp(), g.seq()), (500, f.seq()));
        assert_eq!(
            &g.encoded(EncodingSlot::Wire, |_| Bytes::from_static(b"x"))[..],
            b"signed"
        );
        assert_eq!(
            &g.encoded(EncodingSlot::Edge, |_| Bytes::from_static(b"edge@500"))[..],
            b"edge@500"
        );
    }

    #[test]
    fn kind_codes_round_trip() {
        for k in [FrameKind::Audio, FrameKind::Video, FrameKind::Data] {
            assert_eq!(FrameKind::from_code(k.code()), Some(k));
        }
        assert_eq!(FrameKind::from_code(0), None);
    }
}
