//! The origin's sealer: one task per publish of a local stream that reads the hub's frames in order, groups
//! them into batches and seals each batch once ([`crate::auth`]), writing every frame's wire form into the
//! frame itself ([`EncodingSlot::Wire`]), where every serve task at the origin finds it. A batch closes
//! after the seal window (`MeshTuning::seal_window`, default [`DEFAULT_SEAL_WINDOW`]), at [`MAX_SEAL_FRAMES`], before a keyframe (so a subscriber that a hub starts or
//! skips ahead at a keyframe gets the seal with it) and around codec headers and metadata (sealed alone:
//! hubs resend them out of order). The window is what sealing adds to a viewer's latency, once, at the
//! origin; relays add nothing to check.
//!
//! The sealer lives while a serve task holds it: the last one to end stops it.

use crate::announce::Announcement;
use crate::auth::{FrameSigner, MAX_SEAL_FRAMES, PublishId};
use crate::wire;
use bytes::Bytes;
use libp2p::identity::Keypair;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use streamr_media::{EncodingSlot, Frame, Hub, SubscriberKind};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Longest a batch stays open, in arrival time and in media time: what sealing adds to the latency at the
/// origin (and the bound on how many signatures a second every hop checks: about 1 / window).
pub const DEFAULT_SEAL_WINDOW: Duration = Duration::from_millis(50);
/// Longest a serve task waits for the sealer to pass a frame before it seals the frame alone (the sealer
/// skipped it or stopped).
const SEAL_WAIT: Duration = Duration::from_millis(250);

/// The running sealers of this node's own streams, by publish.
#[derive(Default)]
pub(super) struct Sealers(Mutex<HashMap<PublishId, Weak<Sealer>>>);

impl std::fmt::Debug for Sealers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealers")
            .field("publishes", &self.0.lock().len())
            .finish()
    }
}

impl Sealers {
    /// The sealer of `announcement`'s publish, started if none runs; None when we are not its origin.
    pub fn get(
        &self,
        key: &Keypair,
        announcement: &Announcement,
        hub: &Arc<Hub>,
        window: Duration,
    ) -> Option<Arc<Sealer>> {
        let signer = FrameSigner::new(key, announcement)?;
        let publish = signer.publish();
        let mut map = self.0.lock();
        if let Some(s) = map.get(&publish).and_then(Weak::upgrade) {
            return Some(s);
        }
        map.retain(|_, s| s.strong_count() > 0);
        let (passed_tx, passed) = watch::channel(0);
        let stop = CancellationToken::new();
        let sealer = Arc::new(Sealer {
            signer: signer.clone(),
            epoch: announcement.started_ms,
            passed,
            _stop: stop.clone().drop_guard(),
        });
        // Subscribed before the caller's own subscription: the sealer sees every frame the caller will.
        let sub = hub.subscribe(SubscriberKind::Relay);
        tokio::spawn(run(
            sub,
            Batcher::new(signer, announcement.started_ms, window),
            passed_tx,
            stop,
        ));
        map.insert(publish, Arc::downgrade(&sealer));
        Some(sealer)
    }
}

/// A running sealer, as the serve tasks hold it.
pub(super) struct Sealer {
    signer: FrameSigner,
    epoch: u64,
    /// Highest sequence number the sealer has passed (sealed, or found sealed).
    passed: watch::Receiver<u64>,
    _stop: DropGuard,
}

impl Sealer {
    /// `frame`'s wire form: as its batch was sealed, once the sealer passed it; sealed alone if the sealer
    /// does not pass it within [`SEAL_WAIT`].
    pub async fn wire(&self, frame: &Frame) -> Bytes {
        if let Some(b) = frame.cached(EncodingSlot::Wire) {
            return b;
        }
        let mut passed = self.passed.clone();
        let _ = tokio::time::timeout(SEAL_WAIT, passed.wait_for(|&p| p >= frame.seq())).await;
        frame.encoded(EncodingSlot::Wire, |f| {
            let seal = self.signer.seal(std::slice::from_ref(f));
            wire::encode_frame(f, self.epoch, Some(&seal))
        })
    }
}

async fn run(
    mut sub: streamr_media::Subscription,
    mut batcher: Batcher,
    passed: watch::Sender<u64>,
    stop: CancellationToken,
) {
    loop {
        let due = batcher.due();
        tokio::select! {
            _ = stop.cancelled() => break,
            f = sub.next() => match f {
                Ok(frame) => batcher.push(frame, Instant::now()),
                Err(_) => break,
            },
            _ = async { tokio::time::sleep_until(due.unwrap_or_else(Instant::now)).await }, if due.is_some() => {
                batcher.close();
            }
        }
        if let Some(seq) = batcher.take_passed() {
            passed.send_replace(seq);
        }
    }
    batcher.close();
    if let Some(seq) = batcher.take_passed() {
        passed.send_replace(seq);
    }
}

/// Groups frames into batches and seals them: plain code, driven by [`run`] and by tests.
struct Batcher {
    signer: FrameSigner,
    epoch: u64,
    window: Duration,
    open: Vec<Frame>,
    opened_at: Option<Instant>,
    passed: Option<u64>,
}

impl Batcher {
    fn new(signer: FrameSigner, epoch: u64, window: Duration) -> Self {
        Batcher {
            signer,
            epoch,
            window,
            open: Vec::with_capacity(MAX_SEAL_FRAMES),
            opened_at: None,
            passed: None,
        }
    }

    /// When the open batch must close, if one is open.
    fn due(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.window)
    }

    /// The highest frame passed since the last call.
    fn take_passed(&mut self) -> Option<u64> {
        self.passed.take()
    }

    fn pass(&mut self, seq: u64) {
        self.passed = Some(self.passed.map_or(seq, |p| p.max(seq)));
    }

    fn push(&mut self, frame: Frame, now: Instant) {
        if frame.cached(EncodingSlot::Wire).is_some() {
            // Sealed already (alone, by a serve task that could not wait).
            self.close();
            self.pass(frame.seq());
            return;
        }
        if !frame.is_media() {
            self.close();
            self.open.push(frame);
            self.close();
            return;
        }
        let joins = self.open.last().is_some_and(|last| {
            frame.seq() == last.seq().wrapping_add(1)
                && !frame.is_keyframe()
                && self.open.len() < MAX_SEAL_FRAMES
                && frame.timestamp().wrapping_sub(self.open[0].timestamp())
                    < self.window.as_millis() as u32
        });
        if !joins {
            self.close();
            self.opened_at = Some(now);
        }
        self.open.push(frame);
        if self.window.is_zero() {
            self.close();
        }
    }

    /// Seals the open batch: the seal goes into its first frame's wire form.
    fn close(&mut self) {
        self.opened_at = None;
        if self.open.is_empty() {
            return;
        }
        let seal = self.signer.seal(&self.open);
        for (i, f) in self.open.iter().enumerate() {
            let _ = f.set_encoded(
                EncodingSlot::Wire,
                wire::encode_frame(f, self.epoch, (i == 0).then_some(&seal)),
            );
        }
        let last = self.open.last().map(Frame::seq).unwrap_or_default();
        self.open.clear();
        self.pass(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Check, FrameVerifier};
    use crate::wire::{Decoder, Message};
    use bytes::BytesMut;
    use streamr_media::FrameKind;
    use tokio_util::codec::Decoder as _;

    fn video(seq: u64, ts: u32, key: bool) -> Frame {
        let head = if key { 0x17 } else { 0x27 };
        Frame::new(
            FrameKind::Video,
            ts,
            seq,
            Bytes::from(vec![head, 1, 0, 0, 0, seq as u8]),
        )
    }

    fn audio(seq: u64, ts: u32) -> Frame {
        Frame::new(
            FrameKind::Audio,
            ts,
            seq,
            Bytes::from(vec![0xaf, 1, seq as u8]),
        )
    }

    /// What a receiver makes of `frames` sent in order, each as its wire form.
    fn receive(ann: &Announcement, frames: &[Frame]) -> Vec<Check> {
        let mut v = FrameVerifier::new(ann).unwrap();
        frames
            .iter()
            .map(|f| {
                let raw = f.cached(EncodingSlot::Wire).expect("sealed");
                let mut src = BytesMut::from(&raw[..]);
                let Some(Message::Frame(got)) = Decoder::subscriber().decode(&mut src).unwrap()
                else {
                    panic!("a frame")
                };
                v.check(&got.frame, got.seal)
            })
            .collect()
    }

    fn seals(frames: &[Frame]) -> Vec<bool> {
        frames
            .iter()
            .map(|f| f.cached(EncodingSlot::Wire).unwrap()[6] & 4 != 0)
            .collect()
    }

    #[test]
    fn batches_close_at_keyframes_headers_the_window_and_the_size_limit() {
        let key = Keypair::generate_ed25519();
        let ann = Announcement::sign(&key, "s", 1).unwrap();
        let mut b = Batcher::new(
            FrameSigner::new(&key, &ann).unwrap(),
            1,
            DEFAULT_SEAL_WINDOW,
        );
        let t0 = Instant::now();
        let header = Frame::new(
            FrameKind::Video,
            0,
            1,
            Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]),
        );
        let frames = vec![
            header,
            video(2, 0, true),
            audio(3, 10),
            video(4, 33, false),
            audio(5, 40),
            // 50 ms of media after the batch's first frame: a new batch.
            video(6, 66, false),
            audio(7, 70),
            video(8, 100, true),
        ];
        for f in &frames {
            b.push(f.clone(), t0);
        }
        assert_eq!(b.due(), Some(t0 + DEFAULT_SEAL_WINDOW));
        b.close();
        assert_eq!(b.due(), None);
        assert_eq!(b.take_passed(), Some(8));
        assert_eq!(
            seals(&frames),
            [true, true, false, false, false, true, false, true]
        );
        assert!(
            receive(&ann, &frames)
                .iter()
                .all(|c| *c == Check::Authentic)
        );
        // A receiver that starts at the second batch checks everything from there.
        assert!(
            receive(&ann, &frames[5..])
                .iter()
                .all(|c| *c == Check::Authentic)
        );
        // One that missed a batch's first frame cannot check the rest of that batch.
        assert_eq!(receive(&ann, &frames[2..5]), vec![Check::Unsealed; 3]);

        // At most MAX_SEAL_FRAMES per seal, and a gap in the numbers closes a batch.
        let mut b = Batcher::new(
            FrameSigner::new(&key, &ann).unwrap(),
            1,
            DEFAULT_SEAL_WINDOW,
        );
        let long: Vec<Frame> = (0..MAX_SEAL_FRAMES as u64 + 1)
            .map(|i| audio(100 + i, 0))
            .chain([audio(300, 0)])
            .collect();
        for f in &long {
            b.push(f.clone(), t0);
        }
        b.close();
        let sealed = seals(&long);
        assert!(sealed[0] && sealed[MAX_SEAL_FRAMES] && sealed[MAX_SEAL_FRAMES + 1]);
        assert_eq!(sealed.iter().filter(|s| **s).count(), 3);
        assert!(receive(&ann, &long).iter().all(|c| *c == Check::Authentic));

        // A zero window seals every frame alone, at once.
        let mut b = Batcher::new(FrameSigner::new(&key, &ann).unwrap(), 1, Duration::ZERO);
        let alone: Vec<Frame> = (0..3).map(|i| audio(400 + i, i as u32)).collect();
        for f in &alone {
            b.push(f.clone(), t0);
            assert_eq!(b.due(), None);
        }
        assert_eq!(seals(&alone), [true, true, true]);
        assert_eq!(receive(&ann, &alone[1..]), vec![Check::Authentic; 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn serve_tasks_get_sealed_frames_and_an_idle_batch_closes_on_time() {
        let key = Keypair::generate_ed25519();
        let ann = Announcement::sign(&key, "s", 1).unwrap();
        let hub = Hub::new("s", streamr_media::HubConfig::default());
        let source = hub.attach(streamr_media::SourceKind::Publisher);
        let sealers = Sealers::default();
        let sealer = sealers
            .get(&key, &ann, &hub, DEFAULT_SEAL_WINDOW)
            .expect("we are the origin");
        assert!(Arc::ptr_eq(
            &sealer,
            &sealers.get(&key, &ann, &hub, DEFAULT_SEAL_WINDOW).unwrap()
        ));
        let other = Keypair::generate_ed25519();
        assert!(
            sealers
                .get(&other, &ann, &hub, DEFAULT_SEAL_WINDOW)
                .is_none(),
            "only the origin seals"
        );
        let mut sub = hub.subscribe(SubscriberKind::Peer);
        source
            .push_media(
                FrameKind::Video,
                0,
                Bytes::from_static(&[0x17, 1, 0, 0, 0, 7]),
            )
            .unwrap();
        let f = sub.next().await.unwrap();
        let started = Instant::now();
        let raw = sealer.wire(&f).await;
        // Nothing else came: the batch closed at the window's end.
        assert_eq!(started.elapsed(), DEFAULT_SEAL_WINDOW);
        assert_eq!(raw[6] & 4, 4, "a batch of one carries its seal");
        assert_eq!(receive(&ann, &[f]), vec![Check::Authentic]);
        // The last holder gone, the sealer stops and a new one starts for the next caller.
        drop(sealer);
        tokio::task::yield_now().await;
        assert_eq!(
            hub.subscribers(),
            1,
            "only the serve task's own subscription is left"
        );
    }
}
