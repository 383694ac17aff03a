//! `Hub`: the meeting point of one live stream on this node. One source (a local RTMP publisher, a pull relay
//! or an upstream mesh peer) pushes frames in; any number of subscribers (local players, downstream peers,
//! push relays) take them out. A new subscriber first gets metadata, codec headers and the frames since the
//! last keyframe, so it can start decoding at once. The source is never blocked: every subscriber reads from
//! one bounded ring, and one that falls behind skips ahead to the next keyframe (counted) instead of making
//! memory grow.
//!
//! The hub is the frame path only. Its parts: [`Restamper`](restamp) (which frames are emitted, with which
//! timestamps), [`KeyframeCache`](keyframes) (the start bundle), [`BitrateMeter`](meter). Where a stream
//! comes from in the mesh is the mesh's business, not the hub's.

mod keyframes;
mod meter;
mod restamp;
mod ring;
mod subscription;

pub use restamp::{Continuity, MAX_SEQ_JUMP};
pub use subscription::{Ended, Subscription};

use crate::frame::{Frame, FrameKind};
use bytes::Bytes;
use keyframes::KeyframeCache;
use meter::{BitrateMeter, declared_bitrate_bps};
use parking_lot::Mutex;
use restamp::{Admit, Restamper};
use ring::Ring;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::{Duration, Instant};

/// Default of [`HubConfig::max_queue_delay`]: a few frame intervals of scheduling and network jitter pass, a
/// slow subscriber does not accumulate latency.
pub const DEFAULT_MAX_QUEUE_DELAY: Duration = Duration::from_millis(400);

/// Limits of one hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Frames held in the shared ring; a subscriber further behind than this loses frames and skips.
    pub ring_frames: usize,
    /// ... and payload bytes: a stream of huge frames gets a shorter ring, not more memory.
    pub ring_max_bytes: usize,
    /// A subscriber with more than this many frames queued skips ahead to the next keyframe (a bound on
    /// memory and on bursts; latency is bounded by `max_queue_delay`).
    pub max_lag_frames: usize,
    /// A frame that waited in the ring longer than this for a subscriber is too late for it: the subscriber
    /// skips ahead to the next keyframe that is not, so that no subscriber (a player, or a peer whose link
    /// is slower than the stream) falls further behind live than this at this hop.
    pub max_queue_delay: Duration,
    /// The keyframe cache is dropped (until the next keyframe) when it would exceed this many bytes.
    pub gop_max_bytes: usize,
    /// ... or this many frames.
    pub gop_max_frames: usize,
    /// How long subscribers wait for a source to come back after it left, before their stream ends.
    pub source_grace: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            ring_frames: 1024,
            ring_max_bytes: 32 << 20,
            max_lag_frames: 512,
            max_queue_delay: DEFAULT_MAX_QUEUE_DELAY,
            gop_max_bytes: 16 << 20,
            gop_max_frames: 2048,
            source_grace: Duration::from_secs(30),
        }
    }
}

/// Where a hub's frames come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// An encoder publishing to this node's RTMP edge.
    Publisher,
    /// An upstream RTMP server this node pulls from.
    Pull,
    /// An upstream mesh peer relaying another node's stream.
    Mesh,
}

impl SourceKind {
    /// How frames of this kind of source join up with earlier ones.
    pub fn continuity(self) -> Continuity {
        match self {
            SourceKind::Publisher | SourceKind::Pull => Continuity::Rebase,
            SourceKind::Mesh => Continuity::SameOrigin,
        }
    }

    /// True for sources that make this node a stream's origin (a local encoder or a pulled RTMP stream).
    pub fn is_local(self) -> bool {
        matches!(self, SourceKind::Publisher | SourceKind::Pull)
    }
}

/// A hub's source changed; the mesh listens to announce or withdraw streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A source attached.
    SourceAttached {
        /// Hub name.
        name: String,
        /// Kind of the source.
        kind: SourceKind,
    },
    /// The source left (no new one yet).
    SourceDetached {
        /// Hub name.
        name: String,
    },
}

/// What kind of subscriber, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriberKind {
    /// A local player on the RTMP edge (or HTTP-FLV).
    Player,
    /// A downstream mesh peer.
    Peer,
    /// An outbound relay (RTMP push) or an internal consumer.
    Relay,
}

/// A source was replaced by a newer one, or the hub is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("another source took over stream {0:?}")]
pub struct Replaced(pub String);

/// Counters of one hub, readable without locking.
#[derive(Debug, Default)]
struct Counters {
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
    players: AtomicU64,
    peers: AtomicU64,
    relays: AtomicU64,
    sources: AtomicU64,
}

/// A point-in-time view of a hub for status pages and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSnapshot {
    /// Stream name.
    pub name: String,
    /// A source is attached now.
    pub live: bool,
    /// The kind of the current (or last) source.
    pub source: Option<SourceKind>,
    /// Frames pushed by sources.
    pub frames_in: u64,
    /// Payload bytes pushed by sources.
    pub bytes_in: u64,
    /// Frames delivered to subscribers (sum over subscribers).
    pub frames_out: u64,
    /// Payload bytes delivered to subscribers.
    pub bytes_out: u64,
    /// Frames skipped by slow subscribers.
    pub dropped: u64,
    /// Frames refused because their sequence number jumped further than an origin can (forged or corrupt;
    /// see [`MAX_SEQ_JUMP`]).
    pub refused: u64,
    /// Local players now.
    pub players: u64,
    /// Downstream peers now.
    pub peers: u64,
    /// Outbound relays now.
    pub relays: u64,
    /// Sources attached so far (more than one means reconnects or failovers).
    pub sources: u64,
    /// Incoming bitrate over the last second or so, 0 when no frame arrived for 2 s.
    pub bitrate_bps: u64,
}

/// Everything behind the hub's lock: the source and the three parts it feeds.
#[derive(Debug)]
struct State {
    /// Generation of the attached source; frames from older generations are refused.
    generation: u64,
    attached: bool,
    kind: Option<SourceKind>,
    restamp: Restamper,
    cache: KeyframeCache,
    meter: BitrateMeter,
    /// An audio or video frame was emitted (metadata and sequence headers are not media).
    media_seen: bool,
}

/// One live stream on this node. See the module docs.
pub struct Hub {
    name: String,
    config: HubConfig,
    state: Mutex<State>,
    /// The frames emitted last, which subscribers read at their own position (taken after `state` when
    /// both are).
    ring: Mutex<Ring>,
    /// Wakes subscribers waiting at the ring's head.
    arrived: Notify,
    live: watch::Sender<bool>,
    counters: Counters,
    events: Option<broadcast::Sender<StreamEvent>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("name", &self.name).finish()
    }
}

impl Hub {
    /// Creates an empty hub (no source yet; subscribers may wait for one).
    pub fn new(name: impl Into<String>, config: HubConfig) -> Arc<Self> {
        Self::with_events(name, config, None)
    }

    /// Like [`Hub::new`], reporting source changes on `events`.
    pub fn with_events(
        name: impl Into<String>,
        config: HubConfig,
        events: Option<broadcast::Sender<StreamEvent>>,
    ) -> Arc<Self> {
        let (live, _) = watch::channel(false);
        let ring = Ring::new(config.ring_frames, config.ring_max_bytes);
        Arc::new(Hub {
            name: name.into(),
            state: Mutex::new(State {
                generation: 0,
                attached: false,
                kind: None,
                restamp: Restamper::new(),
                cache: KeyframeCache::new(config.gop_max_frames, config.gop_max_bytes),
                meter: BitrateMeter::new(Instant::now()),
                media_seen: false,
            }),
            config,
            ring: Mutex::new(ring),
            arrived: Notify::new(),
            live,
            counters: Counters::default(),
            events,
        })
    }

    fn emit(&self, event: StreamEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(event);
        }
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True while a source is attached.
    pub fn is_live(&self) -> bool {
        *self.live.borrow()
    }

    /// Follows [`Hub::is_live`].
    pub fn watch_live(&self) -> watch::Receiver<bool> {
        self.live.subscribe()
    }

    /// Attaches a new source; a previous one is cut off (its next push fails with [`Replaced`]).
    pub fn attach(self: &Arc<Self>, kind: SourceKind) -> Source {
        self.attach_inner(kind, None)
    }

    /// Attaches a mesh upstream that relays its origin's publish `session` (a number that changes when the
    /// origin starts its stream again). The same session through another path joins up with what was
    /// emitted; a new one starts over: sequence numbers, metadata, headers and the keyframe cache are the
    /// new session's, and timestamps continue after the last emitted one.
    pub fn attach_mesh(self: &Arc<Self>, session: u64) -> Source {
        self.attach_inner(SourceKind::Mesh, Some(session))
    }

    fn attach_inner(self: &Arc<Self>, kind: SourceKind, session: Option<u64>) -> Source {
        let continuity = kind.continuity();
        let mut st = self.state.lock();
        st.generation += 1;
        st.attached = true;
        st.kind = Some(kind);
        st.meter.restart_source();
        let new_session = st.restamp.start(continuity, session);
        if continuity == Continuity::Rebase {
            // A new encoder session: old keyframes do not decode with its headers.
            st.cache.reset_gop();
        } else if new_session {
            st.cache.reset_all();
        }
        let generation = st.generation;
        drop(st);
        self.counters.sources.fetch_add(1, Relaxed);
        self.live.send_replace(true);
        self.emit(StreamEvent::SourceAttached {
            name: self.name.clone(),
            kind,
        });
        Source {
            hub: self.clone(),
            generation,
        }
    }

    /// Subscribes: the returned subscription yields metadata, headers and the keyframe cache, then live frames.
    pub fn subscribe(self: &Arc<Self>, kind: SubscriberKind) -> Subscription {
        // Under the lock: the subscriber gets either the cache with a frame or the ring with it, never both
        // and never neither.
        let st = self.state.lock();
        let position = self.ring.lock().head();
        let start = st.cache.start_bundle();
        let skipping = !st.cache.joinable();
        self.kind_counter(kind).fetch_add(1, Relaxed);
        drop(st);
        Subscription::new(
            self.clone(),
            kind,
            start,
            position,
            self.live.subscribe(),
            skipping,
        )
    }

    /// Payload bytes in and out so far, read without a lock (what a traffic meter needs every second).
    pub fn bytes(&self) -> (u64, u64) {
        let c = &self.counters;
        (c.bytes_in.load(Relaxed), c.bytes_out.load(Relaxed))
    }

    /// Counters and state for status pages.
    pub fn snapshot(&self) -> HubSnapshot {
        let c = &self.counters;
        let st = self.state.lock();
        let bitrate_bps = st.meter.current(Instant::now());
        let source = st.kind;
        drop(st);
        HubSnapshot {
            name: self.name.clone(),
            live: self.is_live(),
            source,
            frames_in: c.frames_in.load(Relaxed),
            bytes_in: c.bytes_in.load(Relaxed),
            frames_out: c.frames_out.load(Relaxed),
            bytes_out: c.bytes_out.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            refused: c.refused.load(Relaxed),
            players: c.players.load(Relaxed),
            peers: c.peers.load(Relaxed),
            relays: c.relays.load(Relaxed),
            sources: c.sources.load(Relaxed),
            bitrate_bps,
        }
    }

    /// The incoming bitrate, usable from the first frames on (see `BitrateMeter::estimate`).
    pub fn bitrate_estimate_bps(&self) -> u64 {
        let st = self.state.lock();
        let declared = st
            .cache
            .metadata()
            .map_or(0, |m| declared_bitrate_bps(m.payload()));
        st.meter.estimate(Instant::now(), declared)
    }

    /// No source and nobody subscribed: the hub can be forgotten.
    pub fn is_idle(&self) -> bool {
        !self.is_live() && self.subscribers() == 0
    }

    /// Subscribers now (players, peers and relays).
    pub fn subscribers(&self) -> u64 {
        let c = &self.counters;
        c.players.load(Relaxed) + c.peers.load(Relaxed) + c.relays.load(Relaxed)
    }

    /// True once an audio or video frame was emitted: a subscriber gets more than metadata and sequence
    /// headers from this hub.
    pub fn has_media(&self) -> bool {
        self.state.lock().media_seen
    }

    /// The last frame's sequence number and timestamp, if any was emitted.
    pub fn position(&self) -> Option<(u64, u32)> {
        self.state.lock().restamp.position()
    }

    fn kind_counter(&self, kind: SubscriberKind) -> &AtomicU64 {
        match kind {
            SubscriberKind::Player => &self.counters.players,
            SubscriberKind::Peer => &self.counters.peers,
            SubscriberKind::Relay => &self.counters.relays,
        }
    }

    fn push(&self, generation: u64, frame: Frame) -> Result<(), Replaced> {
        let mut st = self.state.lock();
        if st.generation != generation || !st.attached {
            return Err(Replaced(self.name.clone()));
        }
        let len = frame.len() as u64;
        self.counters.frames_in.fetch_add(1, Relaxed);
        self.counters.bytes_in.fetch_add(len, Relaxed);
        let now = Instant::now();
        st.meter.arrived(len, now);
        let has_video = st.cache.has_video();
        let frame = match st.restamp.admit(frame, has_video) {
            Admit::Emit(f) => f,
            Admit::Duplicate => return Ok(()),
            Admit::Gap => {
                self.counters.dropped.fetch_add(1, Relaxed);
                return Ok(());
            }
            Admit::Implausible => {
                self.counters.refused.fetch_add(1, Relaxed);
                return Ok(());
            }
        };
        st.meter.emitted(frame.timestamp(), len);
        st.media_seen |= frame.is_media();
        st.cache.remember(&frame);
        // Into the ring under the lock, so that subscribe() sees either the cache with this frame or the ring
        // with it.
        self.ring.lock().push(frame, now);
        drop(st);
        self.arrived.notify_waiters();
        Ok(())
    }

    fn detach(&self, generation: u64) {
        let mut st = self.state.lock();
        if st.generation == generation && st.attached {
            st.attached = false;
            drop(st);
            self.live.send_replace(false);
            self.emit(StreamEvent::SourceDetached {
                name: self.name.clone(),
            });
        }
    }

    /// True when the stream carries video (a subscriber that skips must wait for a keyframe).
    fn has_video(&self) -> bool {
        self.state.lock().cache.has_video()
    }

    fn count_out(&self, frame: &Frame) {
        self.counters.frames_out.fetch_add(1, Relaxed);
        self.counters
            .bytes_out
            .fetch_add(frame.len() as u64, Relaxed);
    }

    fn count_dropped(&self, n: u64) {
        self.counters.dropped.fetch_add(n, Relaxed);
    }

    fn unsubscribed(&self, kind: SubscriberKind) {
        self.kind_counter(kind).fetch_sub(1, Relaxed);
    }
}

/// The right to push frames into a hub. Dropping it detaches the source (subscribers wait for another).
#[derive(Debug)]
pub struct Source {
    hub: Arc<Hub>,
    generation: u64,
}

impl Source {
    /// Pushes a frame as this source received it (for [`Continuity::Rebase`], its timestamp is shifted and its
    /// sequence number assigned by the hub).
    pub fn push(&self, frame: Frame) -> Result<(), Replaced> {
        self.hub.push(self.generation, frame)
    }

    /// Convenience for edge publishers: builds the frame and pushes it.
    pub fn push_media(
        &self,
        kind: FrameKind,
        timestamp: u32,
        payload: Bytes,
    ) -> Result<(), Replaced> {
        self.push(Frame::new(kind, timestamp, 0, payload))
    }

    /// True when another source has taken over.
    pub fn is_replaced(&self) -> bool {
        let st = self.hub.state.lock();
        st.generation != self.generation || !st.attached
    }

    /// The hub this source feeds.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.hub.detach(self.generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ts: u32) -> Frame {
        Frame::new(
            FrameKind::Video,
            ts,
            0,
            Bytes::from_static(&[0x17, 1, 0, 0, 0, 9]),
        )
    }
    fn inter(ts: u32) -> Frame {
        Frame::new(
            FrameKind::Video,
            ts,
            0,
            Bytes::from_static(&[0x27, 1, 0, 0, 0, 9]),
        )
    }
    fn vheader() -> Frame {
        Frame::new(
            FrameKind::Video,
            0,
            0,
            Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]),
        )
    }
    fn aheader() -> Frame {
        Frame::new(
            FrameKind::Audio,
            0,
            0,
            Bytes::from_static(&[0xaf, 0, 0x12, 0x10]),
        )
    }
    fn audio(ts: u32) -> Frame {
        Frame::new(
            FrameKind::Audio,
            ts,
            0,
            Bytes::from_static(&[0xaf, 1, 0x21]),
        )
    }
    fn meta() -> Frame {
        Frame::new(FrameKind::Data, 0, 0, Bytes::from_static(b"onMetaData"))
    }

    fn small() -> HubConfig {
        HubConfig {
            ring_frames: 16,
            max_lag_frames: 12,
            ..HubConfig::default()
        }
    }

    #[test]
    fn a_subscriber_that_holds_frames_resumes_after_them_at_a_batch_start() {
        let hub = Hub::new("s", HubConfig::default());
        let src = hub.attach(SourceKind::Publisher);
        // Numbered 1..=9 by the hub: metadata, two headers, then the keyframe interval 4..=9.
        for f in [
            meta(),
            vheader(),
            aheader(),
            key(0),
            inter(33),
            audio(40),
            inter(66),
            inter(100),
            inter(133),
        ] {
            src.push(f).unwrap();
        }
        // Batches open at 4 and 6 and 9.
        let opens = |f: &Frame| [4, 6, 9].contains(&f.seq());
        let resumed = |seq| {
            let mut sub = hub.subscribe(SubscriberKind::Peer);
            let left_out = sub.resume_after(seq, opens);
            let mut got = Vec::new();
            while let Some(f) = sub.try_next().unwrap() {
                got.push(f.seq());
            }
            (left_out, got)
        };
        // Holds 5: the batch of 6 (which opens it) and what follows; 4 and 5 are left out.
        assert_eq!(resumed(5), (2, vec![1, 2, 3, 6, 7, 8, 9]));
        // Holds 7: 8 belongs to the batch opened by 6, which is sent whole.
        assert_eq!(resumed(7), (2, vec![1, 2, 3, 6, 7, 8, 9]));
        // Holds 8: 9 opens a batch of its own.
        assert_eq!(resumed(8), (5, vec![1, 2, 3, 9]));
        // Holds the last: its batch, since the next frame (live) may belong to it.
        assert_eq!(resumed(9), (5, vec![1, 2, 3, 9]));
        // A number the bundle does not hold (another publish, a header, one before the keyframe, ahead
        // of us) says nothing: the whole bundle.
        let whole = vec![1, 2, 3, 4, 5, 6, 7, 8, 9];
        for seq in [0, 2, 99] {
            assert_eq!(resumed(seq), (0, whole.clone()), "{seq}");
        }
        // No batch start known up to there: the whole bundle.
        let mut sub = hub.subscribe(SubscriberKind::Peer);
        assert_eq!(sub.resume_after(5, |f| f.seq() == 9), 0);
    }

    #[tokio::test]
    async fn late_joiner_starts_at_last_keyframe() {
        let hub = Hub::new("s", HubConfig::default());
        let src = hub.attach(SourceKind::Publisher);
        for f in [
            meta(),
            vheader(),
            aheader(),
            key(0),
            inter(33),
            audio(40),
            key(2000),
            inter(2033),
        ] {
            src.push(f).unwrap();
        }
        let mut sub = hub.subscribe(SubscriberKind::Player);
        let mut got = Vec::new();
        while let Some(f) = sub.try_next().unwrap() {
            got.push(f);
        }
        assert_eq!(got[0].kind(), FrameKind::Data);
        assert!(got[1].is_sequence_header() && got[1].kind() == FrameKind::Video);
        assert!(got[2].is_sequence_header() && got[2].kind() == FrameKind::Audio);
        assert!(got[3].is_keyframe());
        assert_eq!(got[3].timestamp(), 2000);
        assert_eq!(got[4].timestamp(), 2033);
        assert_eq!(got.len(), 5);
        // Live frames follow, in order, without duplicates.
        src.push(inter(2066)).unwrap();
        assert_eq!(sub.next().await.unwrap().timestamp(), 2066);
        assert_eq!(hub.snapshot().players, 1);
        drop(sub);
        assert_eq!(hub.snapshot().players, 0);
    }

    #[tokio::test]
    async fn slow_subscriber_skips_to_next_keyframe_and_source_never_blocks() {
        let hub = Hub::new("s", small());
        let src = hub.attach(SourceKind::Publisher);
        src.push(vheader()).unwrap();
        src.push(key(0)).unwrap();
        let mut slow = hub.subscribe(SubscriberKind::Player);
        // Drain the start bundle.
        while slow.try_next().unwrap().is_some() {}
        // The source pushes far more than the ring holds; no push blocks or fails.
        for i in 1..100u32 {
            src.push(inter(i * 33)).unwrap();
        }
        src.push(key(100 * 33)).unwrap();
        src.push(inter(101 * 33)).unwrap();
        let first = slow.next().await.unwrap();
        assert!(first.is_keyframe(), "resumes on a keyframe, got {first:?}");
        assert_eq!(first.timestamp(), 3300);
        assert!(slow.dropped() >= 80, "dropped {}", slow.dropped());
        assert_eq!(hub.snapshot().dropped, slow.dropped());
        assert_eq!(slow.next().await.unwrap().timestamp(), 101 * 33);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_subscriber_jumps_to_the_newest_keyframe_and_loses_only_the_backlog() {
        let hub = Hub::new("s", HubConfig::default());
        let delay = hub.config.max_queue_delay;
        let src = hub.attach(SourceKind::Publisher);
        src.push(vheader()).unwrap();
        src.push(key(0)).unwrap();
        let mut sub = hub.subscribe(SubscriberKind::Player);
        while sub.try_next().unwrap().is_some() {}
        // A burst that arrives all at once is read at once: nothing waited, nothing is skipped, however much
        // media time it spans.
        for i in 1..30u32 {
            src.push(inter(i * 33)).unwrap();
        }
        for i in 1..30u32 {
            assert_eq!(sub.try_next().unwrap().unwrap().timestamp(), i * 33);
        }
        // Now the subscriber stalls: a few frames, far fewer than the frame bound, wait longer than the delay;
        // a keyframe among them is late as well.
        src.push(inter(1000)).unwrap();
        src.push(key(1033)).unwrap();
        src.push(inter(1066)).unwrap();
        tokio::time::advance(delay + Duration::from_millis(1)).await;
        // It jumps to the newest keyframe in the ring: the backlog before it is dropped.
        src.push(inter(1500)).unwrap();
        src.push(key(1533)).unwrap();
        src.push(inter(1566)).unwrap();
        let next = sub.try_next().unwrap().unwrap();
        assert!(next.is_keyframe(), "resumes on a keyframe, got {next:?}");
        assert_eq!(
            next.timestamp(),
            1533,
            "the older, late keyframe is passed over"
        );
        assert_eq!(sub.dropped(), 4);
        assert_eq!(sub.try_next().unwrap().unwrap().timestamp(), 1566);
        // A subscriber that keeps up again skips nothing more.
        tokio::time::advance(delay / 2).await;
        src.push(inter(1600)).unwrap();
        tokio::time::advance(delay / 2).await;
        assert_eq!(sub.try_next().unwrap().unwrap().timestamp(), 1600);
        // Late with no keyframe to jump to: the frames go out late rather than not at all (a moment of
        // starvation costs nothing once the subscriber drains its backlog)...
        src.push(inter(1700)).unwrap();
        src.push(inter(1733)).unwrap();
        tokio::time::advance(delay * 2).await;
        assert_eq!(sub.try_next().unwrap().unwrap().timestamp(), 1700);
        // ... until a keyframe arrives behind the backlog: then it jumps.
        src.push(key(2000)).unwrap();
        assert_eq!(sub.try_next().unwrap().unwrap().timestamp(), 2000);
        assert_eq!(sub.dropped(), 5, "only 1733 was dropped");
        // Metadata and sequence headers in a backlog jumped over still go out, before the keyframe.
        src.push(inter(2033)).unwrap();
        src.push(meta()).unwrap();
        src.push(vheader()).unwrap();
        src.push(inter(2066)).unwrap();
        tokio::time::advance(delay * 2).await;
        src.push(key(3000)).unwrap();
        let got: Vec<Frame> = std::iter::from_fn(|| sub.try_next().unwrap()).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].kind(), FrameKind::Data);
        assert!(got[1].is_sequence_header());
        assert_eq!(got[2].timestamp(), 3000);
        assert_eq!(sub.dropped(), 7);
        assert_eq!(hub.snapshot().dropped, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn late_frames_of_a_stream_without_video_are_dropped_one_by_one() {
        let hub = Hub::new("s", HubConfig::default());
        let delay = hub.config.max_queue_delay;
        let src = hub.attach(SourceKind::Publisher);
        src.push(aheader()).unwrap();
        let mut sub = hub.subscribe(SubscriberKind::Player);
        while sub.try_next().unwrap().is_some() {}
        src.push(audio(0)).unwrap();
        src.push(audio(23)).unwrap();
        tokio::time::advance(delay * 2).await;
        src.push(audio(46)).unwrap();
        assert_eq!(sub.try_next().unwrap().unwrap().timestamp(), 46);
        assert_eq!(sub.dropped(), 2);
    }

    #[tokio::test]
    async fn metadata_and_headers_are_not_media() {
        let hub = Hub::new("s", small());
        let src = hub.attach(SourceKind::Publisher);
        src.push(meta()).unwrap();
        src.push(vheader()).unwrap();
        assert!(hub.position().is_some());
        assert!(
            !hub.has_media(),
            "only metadata and a sequence header so far"
        );
        src.push(key(0)).unwrap();
        assert!(hub.has_media());
    }

    #[tokio::test]
    async fn headers_and_metadata_pass_while_skipping() {
        let hub = Hub::new("s", small());
        let src = hub.attach(SourceKind::Publisher);
        src.push(key(0)).unwrap();
        let mut slow = hub.subscribe(SubscriberKind::Player);
        while slow.try_next().unwrap().is_some() {}
        for i in 1..40u32 {
            src.push(inter(i)).unwrap();
        }
        src.push(meta()).unwrap();
        src.push(inter(41)).unwrap();
        let f = slow.next().await.unwrap();
        assert_eq!(f.kind(), FrameKind::Data);
    }

    #[tokio::test]
    async fn reconnecting_publisher_takes_over_with_monotonic_timestamps() {
        let hub = Hub::new("s", HubConfig::default());
        let first = hub.attach(SourceKind::Publisher);
        first.push(key(1000)).unwrap();
        first.push(inter(1033)).unwrap();
        let mut sub = hub.subscribe(SubscriberKind::Player);
        while sub.try_next().unwrap().is_some() {}

        // OBS reconnects while its old TCP connection is still open: the new publish wins.
        let second = hub.attach(SourceKind::Publisher);
        assert!(first.is_replaced());
        assert_eq!(first.push(inter(1066)), Err(Replaced("s".into())));
        second.push(vheader()).unwrap();
        second.push(key(0)).unwrap();
        second.push(inter(33)).unwrap();
        let h = sub.next().await.unwrap();
        assert!(h.is_sequence_header());
        let k = sub.next().await.unwrap();
        let i = sub.next().await.unwrap();
        assert!(k.is_keyframe());
        assert!(h.timestamp() > 1033 && k.timestamp() > 1033);
        assert_eq!(i.timestamp() - k.timestamp(), 33);
        assert!(i.seq() > k.seq() && k.seq() > h.seq());
        // Dropping the replaced source must not detach the new one.
        drop(first);
        assert!(hub.is_live());
        assert_eq!(hub.snapshot().sources, 2);
    }

    #[tokio::test]
    async fn same_origin_failover_skips_duplicates_and_bridges_gaps_at_keyframes() {
        let hub = Hub::new("s", HubConfig::default());
        let origin = |seq: u64, f: Frame| f.restamped(f.timestamp(), seq);
        let up1 = hub.attach(SourceKind::Mesh);
        up1.push(origin(1, vheader())).unwrap();
        up1.push(origin(2, key(0))).unwrap();
        up1.push(origin(3, inter(33))).unwrap();
        let mut sub = hub.subscribe(SubscriberKind::Peer);
        while sub.try_next().unwrap().is_some() {}
        drop(up1);

        // The new upstream replays its cache: header, keyframe, 33 (seen) then 66 (new, contiguous).
        let up2 = hub.attach(SourceKind::Mesh);
        for f in [
            origin(1, vheader()),
            origin(2, key(0)),
            origin(3, inter(33)),
            origin(4, inter(66)),
        ] {
            up2.push(f).unwrap();
        }
        let f = sub.next().await.unwrap();
        assert_eq!((f.seq(), f.timestamp()), (4, 66));
        drop(up2);

        // A third upstream that starts after a gap, mid-GOP, is held until its keyframe.
        let up3 = hub.attach(SourceKind::Mesh);
        up3.push(origin(9, inter(300))).unwrap();
        up3.push(origin(10, key(333))).unwrap();
        let f = sub.next().await.unwrap();
        assert_eq!(f.seq(), 10);
        assert!(f.is_keyframe());
        assert_eq!(hub.snapshot().dropped, 1);
    }

    #[tokio::test]
    async fn a_forged_sequence_number_freezes_nothing_and_an_origin_restart_starts_over() {
        let hub = Hub::new("s", HubConfig::default());
        let origin = |seq: u64, f: Frame| f.restamped(f.timestamp(), seq);
        let up = hub.attach_mesh(1);
        up.push(origin(1, vheader())).unwrap();
        up.push(origin(2, key(0))).unwrap();
        up.push(origin(3, inter(33))).unwrap();
        up.push(origin(u64::MAX, inter(50))).unwrap();
        let mut sub = hub.subscribe(SubscriberKind::Player);
        let mut n = 0;
        while sub.try_next().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 3, "the forged frame was not emitted");
        up.push(origin(4, inter(66))).unwrap();
        assert_eq!(sub.next().await.unwrap().seq(), 4);
        assert_eq!(hub.snapshot().refused, 1);
        drop(up);

        // The origin restarted: its sequence numbers start again at 1, its clock at 0.
        let up = hub.attach_mesh(2);
        let mut late = hub.subscribe(SubscriberKind::Player);
        assert!(
            late.try_next().unwrap().is_none(),
            "nothing of the old session is offered to a new subscriber"
        );
        up.push(origin(1, vheader())).unwrap();
        up.push(origin(2, key(0))).unwrap();
        let h = sub.next().await.unwrap();
        let k = sub.next().await.unwrap();
        assert!(h.is_sequence_header() && k.is_keyframe());
        assert_eq!(k.seq(), 2);
        assert!(k.timestamp() > 66, "time goes forward for players");
    }

    #[tokio::test(start_paused = true)]
    async fn subscribers_wait_for_a_source_then_end_after_grace() {
        let hub = Hub::new("s", HubConfig::default());
        let mut sub = hub.subscribe(SubscriberKind::Player);
        assert!(!sub.wait_live(Duration::from_secs(1)).await);
        let src = hub.attach(SourceKind::Publisher);
        assert!(sub.wait_live(Duration::from_secs(1)).await);
        src.push(key(0)).unwrap();
        assert!(sub.next().await.unwrap().is_keyframe());
        drop(src);
        let started = Instant::now();
        assert_eq!(sub.next().await.unwrap_err(), Ended::SourceGone);
        assert!(started.elapsed() >= HubConfig::default().source_grace);
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_returning_within_grace_keeps_subscribers() {
        let hub = Hub::new("s", HubConfig::default());
        let src = hub.attach(SourceKind::Publisher);
        src.push(key(0)).unwrap();
        let mut sub = hub.subscribe(SubscriberKind::Player);
        while sub.try_next().unwrap().is_some() {}
        drop(src);
        let hub2 = hub.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let src = hub2.attach(SourceKind::Publisher);
            src.push(key(0)).unwrap();
            std::mem::forget(src);
        });
        assert!(sub.next().await.unwrap().is_keyframe());
    }

    #[tokio::test]
    async fn memory_is_bounded_by_the_ring_and_gop_limits() {
        let hub = Hub::new(
            "s",
            HubConfig {
                ring_frames: 8,
                gop_max_frames: 10,
                ..HubConfig::default()
            },
        );
        let src = hub.attach(SourceKind::Publisher);
        let _idle = hub.subscribe(SubscriberKind::Player); // never reads
        src.push(key(0)).unwrap();
        for i in 0..1000 {
            src.push(inter(i)).unwrap();
        }
        {
            let st = hub.state.lock();
            assert!(st.cache.gop_len() <= 10);
            assert!(
                !st.cache.gop_valid(),
                "an over-long GOP is dropped, not grown"
            );
        }
        // A subscriber joining now has no keyframe to start from and waits for the next one.
        let mut late = hub.subscribe(SubscriberKind::Player);
        src.push(inter(2000)).unwrap();
        src.push(key(2033)).unwrap();
        assert!(late.next().await.unwrap().is_keyframe());
    }

    #[tokio::test]
    async fn a_stream_of_huge_frames_shortens_the_ring_instead_of_filling_memory() {
        let hub = Hub::new(
            "s",
            HubConfig {
                ring_max_bytes: 4 << 20,
                ..HubConfig::default()
            },
        );
        let src = hub.attach(SourceKind::Publisher);
        let mut idle = hub.subscribe(SubscriberKind::Player); // never reads
        let huge = Bytes::from(vec![0x27u8; 1 << 20]);
        src.push(key(0)).unwrap();
        for i in 0..200 {
            src.push_media(FrameKind::Video, i, huge.clone()).unwrap();
        }
        assert!(hub.ring.lock().bytes() <= 4 << 20);
        // The idle subscriber lost what fell out, and says so when it reads again.
        src.push(key(300)).unwrap();
        assert!(idle.next().await.unwrap().is_keyframe());
        assert!(idle.dropped() >= 190, "dropped {}", idle.dropped());
    }

    #[test]
    fn declared_bitrate_is_read_from_metadata() {
        // "onMetaData", ECMA array with videodatarate = 600, audiodatarate = 62.5
        let mut amf = vec![0x02, 0x00, 0x0a];
        amf.extend_from_slice(b"onMetaData");
        amf.extend_from_slice(&[0x08, 0, 0, 0, 2]);
        for (k, v) in [
            (&b"videodatarate"[..], 600.0f64),
            (&b"audiodatarate"[..], 62.5),
        ] {
            amf.extend_from_slice(&(k.len() as u16).to_be_bytes());
            amf.extend_from_slice(k);
            amf.push(0x00);
            amf.extend_from_slice(&v.to_be_bytes());
        }
        amf.extend_from_slice(&[0, 0, 9]);
        assert_eq!(declared_bitrate_bps(&amf), 662_500);
        assert_eq!(declared_bitrate_bps(b"garbage"), 0);
        let hub = Hub::new("s", HubConfig::default());
        let src = hub.attach(SourceKind::Publisher);
        src.push_media(FrameKind::Data, 0, Bytes::from(amf))
            .unwrap();
        assert_eq!(hub.bitrate_estimate_bps(), 662_500);
    }

    #[test]
    fn early_bitrate_estimate_uses_media_time() {
        let hub = Hub::new("s", HubConfig::default());
        assert_eq!(hub.bitrate_estimate_bps(), 0);
        let src = hub.attach(SourceKind::Publisher);
        // Half a second of media in a burst (a keyframe cache arriving at once): 50 KB over 500 ms.
        for i in 0..=10u32 {
            src.push_media(
                FrameKind::Video,
                i * 50,
                Bytes::from(vec![0x27u8; 50_000 / 11]),
            )
            .unwrap();
        }
        let bps = hub.bitrate_estimate_bps();
        assert!((700_000..=900_000).contains(&bps), "estimate {bps}");
    }

    #[test]
    fn bitrate_is_measured_and_decays() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let hub = Hub::new("s", HubConfig::default());
            let src = hub.attach(SourceKind::Publisher);
            let payload = Bytes::from(vec![0x27u8; 1250]);
            for i in 0..=40 {
                src.push_media(FrameKind::Video, i * 25, payload.clone())
                    .unwrap();
                tokio::time::advance(Duration::from_millis(25)).await;
            }
            // 1250 bytes every 25 ms = 400 kbit/s.
            let bps = hub.snapshot().bitrate_bps;
            assert!((390_000..=410_000).contains(&bps), "bitrate {bps}");
            tokio::time::advance(Duration::from_secs(3)).await;
            assert_eq!(hub.snapshot().bitrate_bps, 0);
        });
    }
}
