//! `Subscription`: one subscriber's view of a hub: the start bundle, then live frames from the shared ring,
//! skipping ahead when it falls behind. Two bounds: in time, a frame that waited longer than the hub's
//! `max_queue_delay` for the subscriber makes it jump to the newest keyframe already in the ring (what lies
//! before it is the backlog; with no keyframe ahead it goes on, late, and jumps when one arrives, so that a
//! moment of starvation costs the backlog and not a whole keyframe interval); in frames, more than
//! `max_lag_frames` queued (or falling out of the ring) skips up to the next keyframe.

use super::ring::Read;
use super::{Hub, SubscriberKind};
use crate::frame::Frame;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Duration;

/// Why a subscription stopped yielding frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    /// The source left and none came back within the grace period.
    #[error("the stream's source left and did not come back")]
    SourceGone,
    /// The hub was closed (kept for callers that match on it; a subscription keeps its hub alive).
    #[error("the stream was closed")]
    Closed,
}

/// One subscriber's view of a hub. See [`Hub::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    kind: SubscriberKind,
    start: VecDeque<Frame>,
    /// Where this subscriber reads the hub's ring next.
    position: u64,
    live: watch::Receiver<bool>,
    skipping: bool,
    dropped: u64,
}

impl Subscription {
    pub(super) fn new(
        hub: Arc<Hub>,
        kind: SubscriberKind,
        start: VecDeque<Frame>,
        position: u64,
        live: watch::Receiver<bool>,
        skipping: bool,
    ) -> Self {
        Subscription {
            hub,
            kind,
            start,
            position,
            live,
            skipping,
            dropped: 0,
        }
    }

    /// The hub subscribed to.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Frames this subscriber skipped because it fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Waits until the hub has a source, or the timeout passes. Returns whether it is live.
    pub async fn wait_live(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.live.wait_for(|live| *live))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Leaves out of the start bundle the audio and video frames that a subscriber holding every frame up
    /// to `seq` (in the origin's numbering) would only drop as duplicates: a mesh peer that moves to us
    /// from another provider, or takes over after its provider stalled, then gets what it lacks instead
    /// of a whole keyframe interval first, with the frames it lacks behind it. The bundle starts again at
    /// the last frame at or before `seq + 1` for which `starts_batch` holds (a mesh peer checks frames a
    /// batch at a time, and only the batch's first frame carries what checks the rest). Only when the
    /// bundle holds the frame `seq` itself, which says the subscriber counts as we do (the same publish);
    /// otherwise nothing changes. Metadata and sequence headers stay. Returns how many frames it left out.
    pub fn resume_after(&mut self, seq: u64, starts_batch: impl Fn(&Frame) -> bool) -> usize {
        let Some(at) = self
            .start
            .iter()
            .position(|f| f.is_media() && f.seq() == seq)
        else {
            return 0;
        };
        let last = (at + 1).min(self.start.len() - 1);
        let Some(from) = (0..=last)
            .rev()
            .find(|&i| self.start[i].is_media() && starts_batch(&self.start[i]))
        else {
            return 0;
        };
        let before = self.start.len();
        let mut i = 0;
        self.start.retain(|f| {
            let keep = !f.is_media() || i >= from;
            i += 1;
            keep
        });
        before - self.start.len()
    }

    /// The next frame. Cancel-safe.
    pub async fn next(&mut self) -> Result<Frame, Ended> {
        let hub = self.hub.clone();
        loop {
            // Registered before looking, so that a frame pushed meanwhile wakes us.
            let arrived = hub.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(frame) = self.try_next_inner()? {
                return Ok(frame);
            }
            let grace = self.hub.config.source_grace;
            tokio::select! {
                _ = &mut arrived => {}
                _ = async {
                    // Sleep the grace period only while no source is attached.
                    let _ = self.live.wait_for(|live| !*live).await;
                    tokio::time::sleep(grace).await;
                } => {
                    if !*self.live.borrow() {
                        return Err(Ended::SourceGone);
                    }
                }
            }
        }
    }

    /// The next frame if one is ready now, without waiting.
    pub fn try_next(&mut self) -> Result<Option<Frame>, Ended> {
        self.try_next_inner()
    }

    fn try_next_inner(&mut self) -> Result<Option<Frame>, Ended> {
        let max_delay = self.hub.config.max_queue_delay;
        loop {
            // The start bundle, and what a decoder needs out of a backlog jumped over.
            if let Some(frame) = self.start.pop_front() {
                return Ok(Some(self.count(frame)));
            }
            let (read, queued, jumped, late) = {
                let ring = self.hub.ring.lock();
                let read = ring.read(&mut self.position);
                let late = matches!(&read, Read::Frame(_, at) if at.elapsed() > max_delay);
                let jumped = if late && !self.skipping {
                    ring.jump_to_newest_keyframe(&mut self.position)
                } else {
                    None
                };
                (read, ring.head() - self.position, jumped, late)
            };
            match read {
                Read::Empty => return Ok(None),
                Read::Lagged(n) => self.skip(n),
                Read::Frame(f, _) => {
                    if let Some(backlog) = jumped {
                        self.drop_backlog(std::iter::once(f).chain(backlog));
                        continue;
                    }
                    // A stream without video has no keyframe to jump to: a late frame is dropped.
                    if late && !self.hub.has_video() {
                        self.dropped += 1;
                        self.hub.count_dropped(1);
                        continue;
                    }
                    if let Some(f) = self.filter(f, queued) {
                        return Ok(Some(f));
                    }
                }
            }
        }
    }

    /// The frames a late subscriber jumps over: metadata and sequence headers are kept, the decoder needs
    /// them; the rest is dropped and counted.
    fn drop_backlog(&mut self, frames: impl Iterator<Item = Frame>) {
        let mut dropped = 0;
        for f in frames {
            if !f.is_media() {
                self.start.push_back(f);
            } else {
                dropped += 1;
            }
        }
        self.dropped += dropped;
        self.hub.count_dropped(dropped);
    }

    /// Applies the frame bound to one frame (`queued`: frames after it in the ring); None means "skipped".
    /// Skipping ends at a keyframe (any frame of a stream without video); metadata and sequence headers
    /// always pass, the decoder needs them.
    fn filter(&mut self, frame: Frame, queued: u64) -> Option<Frame> {
        if !self.skipping && queued > self.hub.config.max_lag_frames as u64 {
            self.skip(0);
        }
        if self.skipping {
            let passes = !frame.is_media();
            if frame.is_keyframe() || !self.hub.has_video() {
                self.skipping = false;
            } else if !passes {
                self.skip(1);
                return None;
            }
        }
        Some(self.count(frame))
    }

    fn skip(&mut self, n: u64) {
        self.skipping = true;
        self.dropped += n;
        self.hub.count_dropped(n);
    }

    fn count(&self, frame: Frame) -> Frame {
        self.hub.count_out(&frame);
        frame
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribed(self.kind);
    }
}
