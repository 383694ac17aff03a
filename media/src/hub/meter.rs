//! `BitrateMeter`: a hub's incoming bitrate, measured over one-second windows, with an estimate usable from
//! the first frames on (admission to a node's upload needs a figure before a full second has passed).

use tokio::time::{Duration, Instant};

/// The bitrate state of one hub.
#[derive(Debug)]
pub(crate) struct BitrateMeter {
    window_start: Instant,
    window_bytes: u64,
    last_frame_at: Option<Instant>,
    /// Rate over the last complete window.
    bitrate_bps: u64,
    /// First and last emitted timestamps of the current source (for early estimates).
    first_ts: Option<u32>,
    last_ts: Option<u32>,
    /// Bytes emitted from the current source.
    source_bytes: u64,
}

impl BitrateMeter {
    pub(crate) fn new(now: Instant) -> Self {
        BitrateMeter {
            window_start: now,
            window_bytes: 0,
            last_frame_at: None,
            bitrate_bps: 0,
            first_ts: None,
            last_ts: None,
            source_bytes: 0,
        }
    }

    /// A new source attached: early estimates start over.
    pub(crate) fn restart_source(&mut self) {
        self.first_ts = None;
        self.source_bytes = 0;
    }

    /// A frame of `len` payload bytes arrived from the source (emitted or not).
    pub(crate) fn arrived(&mut self, len: u64, now: Instant) {
        self.last_frame_at = Some(now);
        self.window_bytes += len;
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= Duration::from_secs(1) {
            self.bitrate_bps = self.window_bytes * 8 * 1000 / elapsed.as_millis().max(1) as u64;
            self.window_bytes = 0;
            self.window_start = now;
        }
    }

    /// A frame with media timestamp `ts` and `len` payload bytes was emitted.
    pub(crate) fn emitted(&mut self, ts: u32, len: u64) {
        self.first_ts.get_or_insert(ts);
        self.last_ts = Some(ts);
        self.source_bytes += len;
    }

    /// The measured rate, 0 when no frame arrived for 2 s.
    pub(crate) fn current(&self, now: Instant) -> u64 {
        let fresh = self
            .last_frame_at
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(2));
        if fresh { self.bitrate_bps } else { 0 }
    }

    /// The measured rate once a full second has been seen, before that the bytes so far over their media
    /// time (at least 200 ms, so a first keyframe does not look like a huge rate), never below what the
    /// encoder declared (early measurements are noisy).
    pub(crate) fn estimate(&self, now: Instant, declared_bps: u64) -> u64 {
        let measured = self.current(now);
        if measured > 0 {
            return measured;
        }
        let (Some(first), Some(last)) = (self.first_ts, self.last_ts) else {
            return declared_bps;
        };
        let span_ms = u64::from(last.wrapping_sub(first)).clamp(200, 60_000);
        (self.source_bytes * 8 * 1000 / span_ms).max(declared_bps)
    }
}

/// The bitrate an encoder declares in `onMetaData` (`videodatarate` + `audiodatarate`, in kbit/s), in bit/s.
/// Reads the two AMF0 number properties directly from the payload; 0 when absent.
pub(crate) fn declared_bitrate_bps(amf: &[u8]) -> u64 {
    let number = |key: &[u8]| -> f64 {
        let mut pat = Vec::with_capacity(key.len() + 3);
        pat.extend_from_slice(&(key.len() as u16).to_be_bytes());
        pat.extend_from_slice(key);
        pat.push(0x00); // AMF0 number marker
        amf.windows(pat.len())
            .position(|w| w == pat.as_slice())
            .and_then(|i| amf.get(i + pat.len()..i + pat.len() + 8))
            .and_then(|b| b.try_into().ok())
            .map(f64::from_be_bytes)
            .filter(|v| v.is_finite() && *v > 0.0 && *v < 1_000_000.0)
            .unwrap_or(0.0)
    };
    ((number(b"videodatarate") + number(b"audiodatarate")) * 1000.0) as u64
}
