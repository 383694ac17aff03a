//! `Ring`: the frames a hub emitted last, which every subscriber reads at its own position. Bounded in frames
//! and in bytes: a source that sends huge frames (a hostile origin may send 8 MiB ones) shortens the ring
//! instead of making it hold a thousand of them. A subscriber whose position fell out of the ring lagged,
//! and skips to the next keyframe. Each frame keeps the instant it entered the ring, so that a subscriber can
//! tell how long a frame waited for it, and the ring keeps the positions of its video keyframes, so that a
//! late subscriber can jump to the newest one: latency is bounded in time, not only in frames.

use crate::frame::{Frame, FrameKind};
use std::collections::VecDeque;
use tokio::time::Instant;

/// What reading at a position found.
#[derive(Debug)]
pub(crate) enum Read {
    /// The frame at the position, and when it entered the ring.
    Frame(Frame, Instant),
    /// Nothing yet: the position is the head.
    Empty,
    /// The position fell out of the ring: this many frames were lost, and reading goes on at the tail.
    Lagged(u64),
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Ring {
    frames: VecDeque<(Frame, Instant)>,
    /// Position of `frames[0]`.
    tail: u64,
    /// Positions of the video keyframes held, oldest first.
    keyframes: VecDeque<u64>,
    /// Payload bytes held.
    bytes: usize,
    max_frames: usize,
    max_bytes: usize,
}

impl Ring {
    pub(crate) fn new(max_frames: usize, max_bytes: usize) -> Self {
        Ring {
            frames: VecDeque::new(),
            tail: 0,
            keyframes: VecDeque::new(),
            bytes: 0,
            max_frames: max_frames.max(1),
            max_bytes,
        }
    }

    /// Position the next frame will have: where a new subscriber starts reading.
    pub(crate) fn head(&self) -> u64 {
        self.tail + self.frames.len() as u64
    }

    /// Appends a frame that arrived at `now`, dropping the oldest ones beyond the bounds (the newest frame
    /// always stays).
    pub(crate) fn push(&mut self, frame: Frame, now: Instant) {
        self.bytes += frame.len();
        if frame.kind() == FrameKind::Video && frame.is_keyframe() && !frame.is_sequence_header() {
            self.keyframes.push_back(self.head());
        }
        self.frames.push_back((frame, now));
        while self.frames.len() > self.max_frames
            || (self.bytes > self.max_bytes && self.frames.len() > 1)
        {
            if let Some((old, _)) = self.frames.pop_front() {
                self.bytes -= old.len();
                self.tail += 1;
            }
        }
        while self.keyframes.front().is_some_and(|&k| k < self.tail) {
            self.keyframes.pop_front();
        }
    }

    /// Moves `pos` (just after the frame read last) to the newest keyframe at or after it, if there is one,
    /// and returns the frames passed over
    /// (the caller keeps what a decoder needs and counts the rest as dropped).
    pub(crate) fn jump_to_newest_keyframe(&self, pos: &mut u64) -> Option<Vec<Frame>> {
        let newest = *self.keyframes.back()?;
        if newest < *pos || *pos < self.tail {
            return None;
        }
        let from = (*pos - self.tail) as usize;
        let to = (newest - self.tail) as usize;
        let passed = self
            .frames
            .range(from..to)
            .map(|(f, _)| f.clone())
            .collect();
        *pos = newest;
        Some(passed)
    }

    /// The frame at `pos`, advancing it.
    pub(crate) fn read(&self, pos: &mut u64) -> Read {
        if *pos < self.tail {
            let lost = self.tail - *pos;
            *pos = self.tail;
            return Read::Lagged(lost);
        }
        match self.frames.get((*pos - self.tail) as usize) {
            Some((f, at)) => {
                *pos += 1;
                Read::Frame(f.clone(), *at)
            }
            None => Read::Empty,
        }
    }

    /// Payload bytes held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameKind;
    use bytes::Bytes;

    fn f(n: usize) -> Frame {
        Frame::new(FrameKind::Video, 0, 0, Bytes::from(vec![0x27u8; n]))
    }

    #[test]
    fn bounded_in_frames_and_bytes_and_readers_that_fall_out_lag() {
        let mut r = Ring::new(4, 1000);
        let now = Instant::now();
        let mut pos = r.head();
        for _ in 0..3 {
            r.push(f(100), now);
        }
        assert!(matches!(r.read(&mut pos), Read::Frame(..)));
        for _ in 0..3 {
            r.push(f(100), now);
        }
        assert_eq!((r.frames.len(), r.bytes()), (4, 400), "four frames at most");
        // The reader was at position 1; frames 1 and 2 are gone.
        assert!(matches!(r.read(&mut pos), Read::Lagged(1)));
        assert!(matches!(r.read(&mut pos), Read::Frame(..)));
        // Huge frames: the byte bound shortens the ring, and the newest frame always stays.
        r.push(f(600), now);
        r.push(f(600), now);
        assert_eq!((r.frames.len(), r.bytes()), (1, 600));
        r.push(f(5000), now);
        assert_eq!((r.frames.len(), r.bytes()), (1, 5000));
        let mut at_head = r.head();
        assert!(matches!(r.read(&mut at_head), Read::Empty));
    }

    #[test]
    fn the_keyframe_index_follows_evictions() {
        let key = || {
            Frame::new(
                FrameKind::Video,
                0,
                0,
                Bytes::from_static(&[0x17, 1, 0, 0, 0, 9]),
            )
        };
        let now = Instant::now();
        let mut r = Ring::new(4, 1 << 20);
        let mut pos = r.head();
        r.push(key(), now);
        r.push(f(10), now);
        r.push(f(10), now);
        // Reading the keyframe itself: nothing newer to jump to.
        assert!(matches!(r.read(&mut pos), Read::Frame(..)));
        assert!(r.jump_to_newest_keyframe(&mut pos).is_none());
        r.push(key(), now);
        let passed = r
            .jump_to_newest_keyframe(&mut pos)
            .expect("a newer keyframe");
        assert_eq!((passed.len(), pos), (2, 3));
        // Both keyframes evicted: the index forgets them.
        for _ in 0..4 {
            r.push(f(10), now);
        }
        assert!(r.keyframes.is_empty());
        let mut pos = r.head() - 2;
        assert!(r.jump_to_newest_keyframe(&mut pos).is_none());
    }
}
