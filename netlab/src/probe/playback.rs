//! What a probe player saw, and the summary it prints: frames by kind, loss from the probe sequence
//! numbers, gaps in wall time, and one-way latency percentiles. Plain code fed with explicit times, so it is
//! tested without a network or a clock.

use serde::{Deserialize, Serialize};
use streamr_media::FrameKind;

use super::media::{self, Received};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest sample.
    pub max: Option<f64>,
    /// Mean.
    pub mean: Option<f64>,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (any order).
    pub fn of(samples: &[f64]) -> Percentiles {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[i.clamp(1, v.len()) - 1]
        };
        Percentiles {
            count: v.len() as u64,
            p50: Some(rank(50.0)),
            p95: Some(rank(95.0)),
            p99: Some(rank(99.0)),
            max: v.last().copied(),
            mean: Some(v.iter().sum::<f64>() / v.len() as f64),
        }
    }
}

/// The summary a probe player prints (`netlab agent play`), one JSON object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlayReport {
    /// The URL played.
    pub url: String,
    /// Connection attempts (more than one when the stream did not exist yet).
    pub attempts: u32,
    /// RTMP connect (TCP + handshake + `connect`) of the attempt that played, ms.
    pub connect_ms: Option<f64>,
    /// From the player's start (first attempt) to the first video frame, ms: what a viewer waits.
    pub first_frame_ms: Option<f64>,
    /// From the play request that succeeded to the first video frame, ms.
    pub first_frame_after_play_ms: Option<f64>,
    /// Whether the first video frame was a keyframe (a decoder can start at once).
    pub first_frame_keyframe: Option<bool>,
    /// Video frames received (probe and foreign, not sequence headers).
    pub video_frames: u64,
    /// Audio frames received (not sequence headers).
    pub audio_frames: u64,
    /// Probe frames (audio and video) received.
    pub probe_frames: u64,
    /// Media frames without the probe magic.
    pub foreign_frames: u64,
    /// Codec sequence headers received.
    pub header_frames: u64,
    /// `onMetaData` messages received.
    pub metadata_frames: u64,
    /// Probe frames sent before this player asked to play: the node's keyframe cache. They have no live
    /// latency and are left out of [`PlayReport::latency_ms`].
    pub cached_frames: u64,
    /// Probe frames sent after the play request but before the first frame arrived: the backlog of the
    /// join (the node was finding the stream). Their delay is the join time, reported as
    /// `first_frame_ms`; they are left out of [`PlayReport::latency_ms`], which is the steady-state latency.
    pub catchup_frames: u64,
    /// Lowest and highest probe sequence number received.
    pub first_seq: Option<u64>,
    /// See `first_seq`.
    pub last_seq: Option<u64>,
    /// Probe sequence numbers missing between the first and the last received.
    pub missing: u64,
    /// Runs of consecutive missing sequence numbers.
    pub gap_events: u64,
    /// Probe frames received twice.
    pub duplicates: u64,
    /// Probe frames that arrived after a higher sequence number.
    pub reordered: u64,
    /// Longest wall time between two consecutive media frames after the first, ms.
    pub longest_gap_ms: Option<f64>,
    /// One-way latency (receive time - embedded send time) of live probe frames, ms.
    pub latency_ms: Percentiles,
    /// From the player's start to its end, s.
    pub duration_s: f64,
    /// Why it stopped: `duration`, `idle`, `stopped` (signal), `closed` (by the server), `error`, or
    /// `not-found` (the stream never appeared before the retry deadline).
    pub ended: String,
    /// The last error, if any.
    pub error: Option<String>,
}

impl PlayReport {
    /// True when probe frames arrived: the stream was delivered.
    pub fn delivered(&self) -> bool {
        self.probe_frames > 0
    }
}

/// Accumulates what a player receives. Times are Unix microseconds, given by the caller.
#[derive(Debug, Clone, Default)]
pub struct Playback {
    /// When the successful play request was sent; probe frames sent before it are cache.
    play_requested_us: Option<u64>,
    /// When the first video frame arrived, and whether it was a keyframe.
    first_video: Option<(u64, bool)>,
    video: u64,
    audio: u64,
    probe: u64,
    foreign: u64,
    headers: u64,
    metadata: u64,
    cached: u64,
    catchup: u64,
    /// When the first media frame arrived.
    first_media_us: Option<u64>,
    /// Every probe sequence number received, in arrival order.
    seqs: Vec<u64>,
    /// Latencies of live probe frames, µs.
    latencies_us: Vec<i64>,
    last_media_us: Option<u64>,
    longest_gap_us: Option<u64>,
}

impl Playback {
    /// A fresh record.
    pub fn new() -> Playback {
        Playback::default()
    }

    /// Marks the play request that delivered: earlier probe frames count as cached from here on.
    pub fn play_requested(&mut self, at_us: u64) {
        self.play_requested_us = Some(at_us);
    }

    /// When the first video frame arrived, if any.
    pub fn first_video_us(&self) -> Option<u64> {
        self.first_video.map(|(t, _)| t)
    }

    /// Media frames (audio and video) received so far, headers excluded.
    pub fn media_frames(&self) -> u64 {
        self.video + self.audio
    }

    /// Records one received message.
    pub fn record(&mut self, kind: FrameKind, payload: &[u8], received_us: u64) {
        let what = media::decode(kind, payload);
        let keyframe = match what {
            Received::Metadata => {
                self.metadata += 1;
                return;
            }
            Received::Header => {
                self.headers += 1;
                return;
            }
            Received::Foreign { keyframe } => {
                self.foreign += 1;
                keyframe
            }
            Received::Probe { stamp, keyframe } => {
                self.probe += 1;
                self.seqs.push(stamp.seq);
                let first_media = *self.first_media_us.get_or_insert(received_us);
                let requested = self.play_requested_us.unwrap_or(0);
                if stamp.sent_unix_us < requested {
                    self.cached += 1;
                } else if stamp.sent_unix_us < first_media {
                    self.catchup += 1;
                } else {
                    self.latencies_us
                        .push(received_us as i64 - stamp.sent_unix_us as i64);
                }
                keyframe
            }
        };
        match kind {
            FrameKind::Video => {
                self.video += 1;
                if self.first_video.is_none() {
                    self.first_video = Some((received_us, keyframe));
                }
            }
            _ => self.audio += 1,
        }
        if let Some(last) = self.last_media_us {
            let gap = received_us.saturating_sub(last);
            self.longest_gap_us = Some(self.longest_gap_us.map_or(gap, |g| g.max(gap)));
        }
        self.last_media_us = Some(received_us);
    }

    /// Fills the frame statistics of `report` (the caller sets URL, attempts, times and the ending).
    pub fn fill(&self, report: &mut PlayReport) {
        report.video_frames = self.video;
        report.audio_frames = self.audio;
        report.probe_frames = self.probe;
        report.foreign_frames = self.foreign;
        report.header_frames = self.headers;
        report.metadata_frames = self.metadata;
        report.cached_frames = self.cached;
        report.catchup_frames = self.catchup;
        report.first_frame_keyframe = self.first_video.map(|(_, k)| k);
        report.longest_gap_ms = self.longest_gap_us.map(|g| g as f64 / 1000.0);
        let mut reordered = 0;
        let mut highest: Option<u64> = None;
        for &s in &self.seqs {
            if highest.is_some_and(|h| s < h) {
                reordered += 1;
            }
            highest = Some(highest.map_or(s, |h| h.max(s)));
        }
        report.reordered = reordered;
        let mut unique = self.seqs.clone();
        unique.sort_unstable();
        unique.dedup();
        report.duplicates = self.seqs.len() as u64 - unique.len() as u64;
        report.first_seq = unique.first().copied();
        report.last_seq = unique.last().copied();
        report.missing = match (unique.first(), unique.last()) {
            (Some(&lo), Some(&hi)) => (hi - lo + 1) - unique.len() as u64,
            _ => 0,
        };
        report.gap_events = unique.windows(2).filter(|w| w[1] > w[0] + 1).count() as u64;
        let ms: Vec<f64> = self
            .latencies_us
            .iter()
            .map(|&us| us as f64 / 1000.0)
            .collect();
        report.latency_ms = Percentiles::of(&ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::media::{
        Stamp, aac_sequence_header, audio_frame, avc_sequence_header, video_frame,
    };

    fn stamp(seq: u64, sent_unix_us: u64) -> Stamp {
        Stamp { seq, sent_unix_us }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&v);
        assert_eq!(
            (p.count, p.p50, p.p95, p.p99, p.max),
            (100, Some(50.0), Some(95.0), Some(99.0), Some(100.0))
        );
        assert_eq!(p.mean, Some(50.5));
        let p = Percentiles::of(&[7.0]);
        assert_eq!((p.p50, p.p99, p.max), (Some(7.0), Some(7.0), Some(7.0)));
        let p = Percentiles::of(&[3.0, f64::NAN, 1.0, 2.0]);
        assert_eq!((p.count, p.p50, p.max), (3, Some(2.0), Some(3.0)));
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
    }

    #[test]
    fn frames_sent_while_the_player_waited_are_catch_up_not_latency() {
        let mut p = Playback::new();
        p.play_requested(1_000_000);
        // The node took 1.5 s to find the stream; frames sent meanwhile arrive in a burst.
        for (seq, sent) in [(1, 1_100_000), (2, 1_200_000), (3, 2_400_000)] {
            p.record(
                FrameKind::Video,
                &video_frame(seq == 1, stamp(seq, sent), 10),
                2_500_000,
            );
        }
        // Then live frames with 5 ms latency.
        p.record(
            FrameKind::Video,
            &video_frame(false, stamp(4, 2_600_000), 10),
            2_605_000,
        );
        let mut r = PlayReport::default();
        p.fill(&mut r);
        assert_eq!((r.cached_frames, r.catchup_frames), (0, 3));
        assert_eq!(r.latency_ms.count, 1);
        assert_eq!(r.latency_ms.p50, Some(5.0));
    }

    #[test]
    fn counts_loss_gaps_latency_and_cache() {
        let mut p = Playback::new();
        p.play_requested(1_000_000);
        p.record(FrameKind::Data, &media::metadata(30, 2500), 1_000_100);
        p.record(FrameKind::Video, &avc_sequence_header(), 1_000_100);
        p.record(FrameKind::Audio, &aac_sequence_header(), 1_000_100);
        // The cached GOP: sent before the play request.
        p.record(
            FrameKind::Video,
            &video_frame(true, stamp(10, 900_000), 100),
            1_000_200,
        );
        p.record(
            FrameKind::Audio,
            &audio_frame(stamp(11, 920_000), 50),
            1_000_300,
        );
        // Live frames (sent, received): 12 and 13 lost, 15 twice, 16 overtaken by 17.
        let live = [
            (14, 1_010_000, 1_015_000),
            (15, 1_030_000, 1_035_000),
            (15, 1_030_000, 1_036_000),
            (17, 1_070_000, 1_075_000),
            (16, 1_050_000, 1_080_000),
            (18, 1_300_000, 1_305_000),
        ];
        for (seq, sent, received) in live {
            p.record(
                FrameKind::Video,
                &video_frame(false, stamp(seq, sent), 100),
                received,
            );
        }
        p.record(FrameKind::Video, &[0x27, 0x01, 0, 0, 0, 1, 2, 3], 1_400_000);
        let mut r = PlayReport::default();
        p.fill(&mut r);
        assert_eq!((r.metadata_frames, r.header_frames), (1, 2));
        assert_eq!((r.video_frames, r.audio_frames), (8, 1));
        assert_eq!(
            (r.probe_frames, r.foreign_frames, r.cached_frames),
            (8, 1, 2)
        );
        assert_eq!((r.first_seq, r.last_seq), (Some(10), Some(18)));
        assert_eq!((r.missing, r.gap_events), (2, 1));
        assert_eq!((r.duplicates, r.reordered), (1, 1));
        assert_eq!(r.first_frame_keyframe, Some(true));
        assert_eq!(p.first_video_us(), Some(1_000_200));
        assert_eq!(r.latency_ms.count, 6);
        assert_eq!(r.latency_ms.p50, Some(5.0));
        assert_eq!(r.latency_ms.max, Some(30.0));
        // The longest silence: 16 at 1.080 s, then 18 at 1.305 s.
        assert_eq!(r.longest_gap_ms, Some(225.0));
        assert!(r.delivered());
    }

    #[test]
    fn nothing_received_is_not_delivered() {
        let mut r = PlayReport::default();
        Playback::new().fill(&mut r);
        assert!(!r.delivered());
        assert_eq!((r.missing, r.gap_events, r.longest_gap_ms), (0, 0, None));
        assert_eq!(r.latency_ms.count, 0);
        // Serialises with nulls, and parses back even with fields missing (older or newer agents).
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"first_frame_ms\":null"), "{json}");
        let back: PlayReport = serde_json::from_str(r#"{"url":"rtmp://x/live/a"}"#).unwrap();
        assert_eq!(back.url, "rtmp://x/live/a");
    }
}
