//! `Subscription`: one subscriber's view of a hub: the start bundle, then live frames from the shared ring,
//! skipping ahead to the next keyframe when it falls behind: when frames queue for it beyond the ring's frame
//! bound, or when the frame it reads waited longer than the hub's `max_queue_delay` (a bound in time, so
//! that latency does not depend on the frame rate or on how many frames a keyframe interval holds).

use super::ring::Read;
use super::{Hub, SubscriberKind};
use crate::frame::{Frame, FrameKind};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::{Duration, Instant};

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
        if let Some(frame) = self.start.pop_front() {
            return Ok(Some(self.count(frame)));
        }
        loop {
            let (read, queued) = {
                let ring = self.hub.ring.lock();
                let read = ring.read(&mut self.position);
                (read, ring.head() - self.position)
            };
            match read {
                Read::Empty => return Ok(None),
                Read::Lagged(n) => self.skip(n),
                Read::Frame(f, arrived) => {
                    let waited = Instant::now().saturating_duration_since(arrived);
                    if let Some(f) = self.filter(f, queued, waited) {
                        return Ok(Some(f));
                    }
                }
            }
        }
    }

    /// Applies lag handling to one frame (`queued`: frames after it in the ring; `waited`: how long it was in
    /// the ring); None means "skipped". Skipping ends at a keyframe (any frame of a stream without video)
    /// that is itself on time; metadata and sequence headers always pass, the decoder needs them.
    fn filter(&mut self, frame: Frame, queued: u64, waited: Duration) -> Option<Frame> {
        let late = waited > self.hub.config.max_queue_delay;
        if !self.skipping && (late || queued > self.hub.config.max_lag_frames as u64) {
            self.skip(0);
        }
        if self.skipping {
            let passes = frame.kind() == FrameKind::Data || frame.is_sequence_header();
            if !late && (frame.is_keyframe() || !self.hub.has_video()) {
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
