//! `Subscription`: one subscriber's view of a hub: the start bundle, then live frames from the shared ring,
//! skipping ahead to the next keyframe when it falls behind.

use super::{Hub, SubscriberKind};
use crate::frame::{Frame, FrameKind};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tokio::time::Duration;

/// Why a subscription stopped yielding frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    /// The source left and none came back within the grace period.
    #[error("the stream's source left and did not come back")]
    SourceGone,
    /// The hub was dropped.
    #[error("the stream was closed")]
    Closed,
}

/// One subscriber's view of a hub. See [`Hub::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    kind: SubscriberKind,
    start: VecDeque<Frame>,
    rx: broadcast::Receiver<Frame>,
    live: watch::Receiver<bool>,
    skipping: bool,
    dropped: u64,
}

impl Subscription {
    pub(super) fn new(
        hub: Arc<Hub>,
        kind: SubscriberKind,
        start: VecDeque<Frame>,
        rx: broadcast::Receiver<Frame>,
        live: watch::Receiver<bool>,
        skipping: bool,
    ) -> Self {
        Subscription {
            hub,
            kind,
            start,
            rx,
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
        loop {
            if let Some(frame) = self.try_next_inner()? {
                return Ok(frame);
            }
            let grace = self.hub.config.source_grace;
            tokio::select! {
                r = self.rx.recv() => {
                    if let Some(f) = self.filter(r)? {
                        return Ok(f);
                    }
                }
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
            match self.rx.try_recv() {
                Err(broadcast::error::TryRecvError::Empty) => return Ok(None),
                r => {
                    let r = r.map_err(|e| match e {
                        broadcast::error::TryRecvError::Lagged(n) => {
                            broadcast::error::RecvError::Lagged(n)
                        }
                        _ => broadcast::error::RecvError::Closed,
                    });
                    if let Some(f) = self.filter(r)? {
                        return Ok(Some(f));
                    }
                }
            }
        }
    }

    /// Applies lag handling to one receive result: `Ok(None)` means "skipped, try again".
    fn filter(
        &mut self,
        r: Result<Frame, broadcast::error::RecvError>,
    ) -> Result<Option<Frame>, Ended> {
        let frame = match r {
            Ok(f) => f,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                self.skip(n);
                return Ok(None);
            }
            Err(broadcast::error::RecvError::Closed) => return Err(Ended::Closed),
        };
        if !self.skipping && self.rx.len() > self.hub.config.max_lag_frames {
            self.skip(0);
        }
        if self.skipping {
            let passes = frame.kind() == FrameKind::Data || frame.is_sequence_header();
            if frame.is_keyframe() || !self.hub.has_video() {
                self.skipping = false;
            } else if !passes {
                self.skip(1);
                return Ok(None);
            }
        }
        Ok(Some(self.count(frame)))
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
