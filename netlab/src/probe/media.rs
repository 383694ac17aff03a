//! The probe stream's payloads and pacing: synthetic FLV tag bodies that look like H.264 + AAC to a node
//! and carry a magic, a sequence number and the send time, so a player anywhere in the lab can count loss
//! and measure one-way latency. Plain code without I/O or clocks; [`super::rtmp`] is the shell around it.
//!
//! Layout of a probe payload (big endian):
//! ```text
//! video: 0x17|0x27 0x01 0 0 0 | "SRPB" | seq u64 | sent unix µs u64 | padding
//! audio: 0xAF 0x01            | "SRPB" | seq u64 | sent unix µs u64 | padding
//! ```
//! Namespaces share the host's CLOCK_REALTIME, so a send time written in one namespace and a receive time
//! read in another give the one-way latency through the lab.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rml_rtmp::sessions::StreamMetadata;
use streamr_media::FrameKind;

/// Marks a probe payload.
pub const MAGIC: &[u8; 4] = b"SRPB";
/// FLV video tag header: frame type + codec, AVC packet type, composition time (3 bytes).
pub const VIDEO_HEADER_LEN: usize = 5;
/// FLV audio tag header: format/rate/size/channels, AAC packet type.
pub const AUDIO_HEADER_LEN: usize = 2;
/// Magic, sequence number and send time.
pub const STAMP_LEN: usize = 4 + 8 + 8;
/// AAC at 48 kHz: 1024 samples per frame, 46.875 frames per second.
pub const AUDIO_FRAME: Duration = Duration::from_nanos(1_000_000_000 * 1024 / 48_000);
/// Audio share of the bitrate, at most this many kbps (a typical AAC stream).
const AUDIO_KBPS_MAX: u32 = 128;
/// A keyframe is this many times the size of an inter frame (the usual order of magnitude for H.264).
const KEYFRAME_WEIGHT: usize = 8;

/// What a probe payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Sequence number over all media frames of the stream (audio and video), from 0.
    pub seq: u64,
    /// When the publisher sent it, Unix time in microseconds.
    pub sent_unix_us: u64,
}

/// What a received payload turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A probe frame.
    Probe {
        /// Its stamp.
        stamp: Stamp,
        /// For video: whether it is a keyframe.
        keyframe: bool,
    },
    /// An AVC or AAC sequence header (codec configuration).
    Header,
    /// `onMetaData`.
    Metadata,
    /// Media that is not from a probe publisher (another encoder on the same stream name).
    Foreign {
        /// For video: whether the FLV header says keyframe.
        keyframe: bool,
    },
}

/// The AVC sequence header: `0x17 0x00` + composition time + an AVCDecoderConfigurationRecord for High
/// profile level 3.1 with a tiny SPS/PPS. Nothing decodes it; it only has to look like one to the node.
pub fn avc_sequence_header() -> Bytes {
    Bytes::from_static(&[
        0x17, 0x00, 0, 0, 0, // header
        0x01, 0x64, 0x00, 0x1f, 0xff,
        0xe1, // version, profile, compat, level, NALU length 4, 1 SPS
        0x00, 0x04, 0x67, 0x64, 0x00, 0x1f, // SPS
        0x01, 0x00, 0x02, 0x68, 0xee, // 1 PPS
    ])
}

/// The AAC sequence header: `0xAF 0x00` + AudioSpecificConfig (AAC-LC, 48 kHz, stereo).
pub fn aac_sequence_header() -> Bytes {
    Bytes::from_static(&[0xAF, 0x00, 0x11, 0x90])
}

/// `onMetaData` for the probe stream.
pub fn metadata(fps: u32, kbps: u32) -> Bytes {
    let mut m = StreamMetadata::new();
    m.video_width = Some(1280);
    m.video_height = Some(720);
    m.video_codec_id = Some(7);
    m.video_frame_rate = Some(fps as f32);
    m.video_bitrate_kbps = Some(kbps.saturating_sub(audio_kbps(kbps)));
    m.audio_codec_id = Some(10);
    m.audio_bitrate_kbps = Some(audio_kbps(kbps));
    m.audio_sample_rate = Some(48_000);
    m.audio_channels = Some(2);
    m.audio_is_stereo = Some(true);
    m.encoder = Some("netlab probe".into());
    streamr_edge::metadata::to_payload(&m)
}

fn audio_kbps(kbps: u32) -> u32 {
    AUDIO_KBPS_MAX.min(kbps / 5)
}

/// A probe video frame of `size` bytes (at least the header and the stamp).
pub fn video_frame(keyframe: bool, stamp: Stamp, size: usize) -> Bytes {
    let first = if keyframe { 0x17 } else { 0x27 };
    frame(&[first, 0x01, 0, 0, 0], stamp, size)
}

/// A probe audio frame of `size` bytes (at least the header and the stamp).
pub fn audio_frame(stamp: Stamp, size: usize) -> Bytes {
    frame(&[0xAF, 0x01], stamp, size)
}

fn frame(header: &[u8], stamp: Stamp, size: usize) -> Bytes {
    let len = size.max(header.len() + STAMP_LEN);
    let mut b = BytesMut::with_capacity(len);
    b.put_slice(header);
    b.put_slice(MAGIC);
    b.put_u64(stamp.seq);
    b.put_u64(stamp.sent_unix_us);
    // Non-zero padding, so nothing on the way can compress it into a misleadingly cheap stream.
    let pad = len - b.len();
    b.extend((0..pad).map(|i| (i as u8).wrapping_mul(31).wrapping_add(7)));
    b.freeze()
}

/// Classifies a received message. Never fails: anything unexpected is [`Received::Foreign`].
pub fn decode(kind: FrameKind, payload: &[u8]) -> Received {
    let header_len = match kind {
        FrameKind::Data => return Received::Metadata,
        FrameKind::Video => VIDEO_HEADER_LEN,
        FrameKind::Audio => AUDIO_HEADER_LEN,
    };
    // Legacy FLV: the high nibble of the first byte is the frame type (1 = key); Enhanced RTMP keeps it.
    let keyframe = kind == FrameKind::Video && payload.first().is_some_and(|b| (b >> 4) & 0x7 == 1);
    let is_sequence_header = match kind {
        FrameKind::Video => {
            payload.first().is_some_and(|b| b & 0x0f == 7) && payload.get(1) == Some(&0)
        }
        _ => payload.first().is_some_and(|b| b >> 4 == 10) && payload.get(1) == Some(&0),
    };
    if is_sequence_header {
        return Received::Header;
    }
    let stamp = payload
        .get(header_len..header_len + STAMP_LEN)
        .filter(|s| s.starts_with(MAGIC))
        .map(|s| Stamp {
            seq: u64::from_be_bytes(s[4..12].try_into().unwrap_or_default()),
            sent_unix_us: u64::from_be_bytes(s[12..20].try_into().unwrap_or_default()),
        });
    match stamp {
        Some(stamp) => Received::Probe { stamp, keyframe },
        None => Received::Foreign { keyframe },
    }
}

/// Payload sizes that make the stream's bitrate what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSizes {
    /// Bytes of a keyframe.
    pub keyframe: usize,
    /// Bytes of an inter frame.
    pub inter: usize,
    /// Bytes of an audio frame.
    pub audio: usize,
}

impl FrameSizes {
    /// Sizes for `kbps` in total (audio up to 128 kbps of it), `fps` video frames per second and a keyframe
    /// every `gop` frames.
    pub fn for_bitrate(kbps: u32, fps: u32, gop: u32) -> FrameSizes {
        let fps = fps.max(1) as f64;
        let gop = gop.max(1) as usize;
        let audio_bytes_per_s = f64::from(audio_kbps(kbps)) * 1000.0 / 8.0;
        let audio = (audio_bytes_per_s * AUDIO_FRAME.as_secs_f64()).round() as usize;
        let video_bytes_per_s = f64::from(kbps.saturating_sub(audio_kbps(kbps))) * 1000.0 / 8.0;
        let per_gop = video_bytes_per_s / fps * gop as f64;
        // keyframe = W * inter and keyframe + (gop - 1) * inter = per_gop; with gop 1 all are keyframes.
        let (keyframe, inter) = if gop == 1 {
            (per_gop.round() as usize, per_gop.round() as usize)
        } else {
            let inter = (per_gop / (KEYFRAME_WEIGHT + gop - 1) as f64).round() as usize;
            (inter * KEYFRAME_WEIGHT, inter)
        };
        FrameSizes {
            keyframe: keyframe.max(VIDEO_HEADER_LEN + STAMP_LEN),
            inter: inter.max(VIDEO_HEADER_LEN + STAMP_LEN),
            audio: audio.max(AUDIO_HEADER_LEN + STAMP_LEN),
        }
    }
}

/// One frame due in the probe stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Video frame number `index` (from 0).
    Video {
        /// Frame number.
        index: u64,
        /// A keyframe (every `gop` frames, starting with the first).
        keyframe: bool,
    },
    /// Audio frame number `index`.
    Audio {
        /// Frame number.
        index: u64,
    },
}

/// When each frame of the probe stream is due, from the stream's start: video every 1/fps, audio every
/// 1024/48000 s, merged in time order. Times are computed from the frame number, never accumulated, so the
/// stream cannot drift however late a send is.
#[derive(Debug, Clone)]
pub struct Schedule {
    fps: u32,
    gop: u64,
    next_video: u64,
    next_audio: u64,
}

impl Schedule {
    /// A schedule at `fps` with a keyframe every `gop` video frames.
    pub fn new(fps: u32, gop: u32) -> Schedule {
        Schedule {
            fps: fps.max(1),
            gop: u64::from(gop.max(1)),
            next_video: 0,
            next_audio: 0,
        }
    }

    fn video_at(&self, i: u64) -> Duration {
        nanos(u128::from(i) * 1_000_000_000 / u128::from(self.fps))
    }

    fn audio_at(&self, i: u64) -> Duration {
        nanos(u128::from(i) * 1_000_000_000 * 1024 / 48_000)
    }

    /// The next frame and its time since the start (video first when both are due at once).
    pub fn next_due(&mut self) -> (Duration, Due) {
        let (v, a) = (
            self.video_at(self.next_video),
            self.audio_at(self.next_audio),
        );
        if v <= a {
            let index = self.next_video;
            self.next_video += 1;
            let keyframe = index.is_multiple_of(self.gop);
            (v, Due::Video { index, keyframe })
        } else {
            let index = self.next_audio;
            self.next_audio += 1;
            (a, Due::Audio { index })
        }
    }
}

/// Nanoseconds as a duration (u128 arithmetic above never overflows for any frame number).
fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_payloads_round_trip() {
        let stamp = Stamp {
            seq: 0x0102_0304_0506_0708,
            sent_unix_us: 1_700_000_000_123_456,
        };
        let v = video_frame(true, stamp, 1000);
        assert_eq!(v.len(), 1000);
        assert_eq!(&v[..9], &[0x17, 0x01, 0, 0, 0, b'S', b'R', b'P', b'B']);
        assert_eq!(
            decode(FrameKind::Video, &v),
            Received::Probe {
                stamp,
                keyframe: true
            }
        );
        let v = video_frame(false, stamp, 0);
        assert_eq!(v.len(), VIDEO_HEADER_LEN + STAMP_LEN);
        assert_eq!(v[0], 0x27);
        assert_eq!(
            decode(FrameKind::Video, &v),
            Received::Probe {
                stamp,
                keyframe: false
            }
        );
        let a = audio_frame(stamp, 300);
        assert_eq!((a.len(), a[0], a[1]), (300, 0xAF, 0x01));
        assert_eq!(&a[2..6], MAGIC);
        assert_eq!(
            decode(FrameKind::Audio, &a),
            Received::Probe {
                stamp,
                keyframe: false
            }
        );
    }

    #[test]
    fn headers_metadata_and_foreign_frames_are_told_apart() {
        assert_eq!(
            decode(FrameKind::Video, &avc_sequence_header()),
            Received::Header
        );
        assert_eq!(
            decode(FrameKind::Audio, &aac_sequence_header()),
            Received::Header
        );
        let meta = metadata(30, 2500);
        assert_eq!(decode(FrameKind::Data, &meta), Received::Metadata);
        let parsed = streamr_edge::metadata::from_payload(&meta).unwrap();
        assert_eq!(parsed.video_frame_rate, Some(30.0));
        assert_eq!(parsed.audio_bitrate_kbps, Some(128));
        // An encoder's real frames, truncated payloads and garbage never panic and are foreign.
        let h264_key = [0x17, 0x01, 0, 0, 0, 0, 0, 0, 1, 0x65, 0x88];
        assert_eq!(
            decode(FrameKind::Video, &h264_key),
            Received::Foreign { keyframe: true }
        );
        for bad in [
            &[][..],
            &[0x27],
            &[0x27, 0x01, 0, 0, 0, b'S', b'R', b'P', b'B', 1],
        ] {
            assert_eq!(
                decode(FrameKind::Video, bad),
                Received::Foreign { keyframe: false },
                "{bad:?}"
            );
        }
        assert_eq!(
            decode(FrameKind::Audio, &[0xAF, 0x01, 1, 2]),
            Received::Foreign { keyframe: false }
        );
    }

    #[test]
    fn sizes_give_the_requested_bitrate() {
        for (kbps, fps, gop) in [
            (2500, 30, 60),
            (800, 25, 50),
            (6000, 60, 120),
            (2500, 30, 1),
        ] {
            let s = FrameSizes::for_bitrate(kbps, fps, gop);
            let gop_secs = f64::from(gop) / f64::from(fps);
            let video = (s.keyframe + (gop as usize - 1) * s.inter) as f64 / gop_secs;
            let audio = s.audio as f64 / AUDIO_FRAME.as_secs_f64();
            let got_kbps = (video + audio) * 8.0 / 1000.0;
            assert!(
                (got_kbps - f64::from(kbps)).abs() / f64::from(kbps) < 0.01,
                "{kbps} kbps {fps} fps gop {gop}: {got_kbps}"
            );
            if gop > 1 {
                assert_eq!(s.keyframe, s.inter * KEYFRAME_WEIGHT);
            }
        }
        // A tiny bitrate still leaves room for the stamp.
        let s = FrameSizes::for_bitrate(1, 30, 60);
        assert!(s.inter >= VIDEO_HEADER_LEN + STAMP_LEN && s.audio >= AUDIO_HEADER_LEN + STAMP_LEN);
    }

    #[test]
    fn schedule_interleaves_without_drift() {
        let mut s = Schedule::new(30, 60);
        let mut last = Duration::ZERO;
        let (mut video, mut audio, mut keys) = (0u64, 0u64, Vec::new());
        loop {
            let (at, due) = s.next_due();
            if at >= Duration::from_secs(10) {
                break;
            }
            assert!(at >= last, "times go forward");
            last = at;
            match due {
                Due::Video { index, keyframe } => {
                    assert_eq!(index, video);
                    video += 1;
                    if keyframe {
                        keys.push(index);
                    }
                }
                Due::Audio { index } => {
                    assert_eq!(index, audio);
                    audio += 1;
                }
            }
        }
        assert_eq!(video, 300);
        assert_eq!(audio, 469); // 10 s * 46.875, rounded up: frame 0 is at 0
        assert_eq!(keys, vec![0, 60, 120, 180, 240]);
        // Times come from frame numbers: exact after any number of frames.
        let s = Schedule::new(30, 60);
        assert_eq!(s.video_at(3000), Duration::from_secs(100));
        assert_eq!(s.audio_at(46_875), Duration::from_secs(1000));
        assert_eq!(s.audio_at(u64::MAX), Duration::from_nanos(u64::MAX));
    }
}
