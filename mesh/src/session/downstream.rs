//! The provider's side of one `/streamr/media/3` subscription, as plain code with no I/O: whether to admit
//! a subscriber within the upload cap, what to answer, where to redirect it, and the flow control that
//! bounds unacknowledged bytes in flight and cuts off a subscriber that stops acknowledging. The shell in
//! `service/serve.rs` moves the bytes.

use crate::catalog::{CatalogEntry, has_room};
use crate::routes::Lineage;
use crate::wire::{Message, ProviderHint};
use libp2p::PeerId;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A subscriber that acknowledges nothing for this long while frames are outstanding is cut off (it
/// acknowledges every 100 ms while it receives): a dead peer frees its upload slot quickly.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// A write to a subscriber that does not complete in this time ends the subscription. Over TCP (yamux) and
/// relay circuits a write waits once the subscriber's window is full, so without a bound a subscriber that
/// never reads would hold its upload slot, and the task, forever (its acknowledgement deadline is never
/// looked at while the write waits).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Least flow-control window: room for a keyframe and the frames behind it while an acknowledgement makes
/// its round trip (the subscriber acknowledges every 100 ms, and at once after 32 KiB).
pub const MIN_WINDOW: u64 = 128 << 10;
/// A provider with no frames to send for this long sends a keepalive ([`Message::Waiting`]): its
/// subscribers' stall timeout (1 s) then detects a dead provider, not a quiet stream, and only the
/// subscribers of a dead relay look for another provider, not everyone below them.
pub const KEEPALIVE: Duration = Duration::from_millis(400);
/// Most providers named in one redirect.
pub const MAX_REDIRECT_HINTS: usize = 16;
/// Most fallbacks named in an accept.
pub const MAX_FALLBACKS: usize = 4;
/// Least time between two receipts passed on from one subscriber. An honest one signs every 10 s; each
/// receipt costs the node a signature check, so a flood is cut down to one a second.
pub const MIN_RECEIPT_SPACING: Duration = Duration::from_secs(1);

/// Why serving a subscriber ended abnormally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServeError {
    /// The subscriber broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The stream under the subscription failed.
    #[error("stream error: {0}")]
    Io(String),
    /// It stopped acknowledging.
    #[error("subscriber stopped acknowledging")]
    Stalled,
    /// It stopped reading: a write did not complete within [`WRITE_TIMEOUT`].
    #[error("subscriber stopped reading")]
    WriteStalled,
    /// We would not (or could no longer) serve it.
    #[error("refused: {0}")]
    Refused(String),
}

/// A subscriber that has acknowledged nothing for this long while frames are outstanding (it acknowledges
/// every 100 ms while it receives) no longer holds its upload slot for admission, though it is cut off only
/// at [`ACK_TIMEOUT`]: when a relay dies, its orphans come to its upstream after their stall timeout, and
/// find the dead relay's slot free instead of being redirected down the tree.
pub const SILENT_AFTER: Duration = Duration::from_millis(750);

/// A subscriber silent this long (frames outstanding, nothing acknowledged; it acknowledges every 100 ms
/// while it receives) is no longer named in redirects, though it holds its slot until [`SILENT_AFTER`]:
/// when relays die, their upstreams redirect the orphans, and an orphan sent to a dead relay loses a
/// connect timeout (3 s).
pub const HINT_SILENT_AFTER: Duration = Duration::from_millis(400);

/// Whether one more subscriber needing `need_kbps` fits: the cap (0 = none) minus what the `serving`
/// subscriptions use. A node always serves at least one peer, or a stream could never leave it.
pub fn admits(cap_kbps: u64, in_use_kbps: u64, need_kbps: u64, serving: usize) -> bool {
    cap_kbps == 0 || serving == 0 || in_use_kbps + need_kbps <= cap_kbps
}

/// The flow-control window for a stream of `bitrate_bps`: `delay` worth of it, at least [`MIN_WINDOW`] and at
/// most `max` bytes. Bounded in media time so that a subscriber whose link is slower than the stream has no
/// more than about `delay` of it in flight (beyond, frames wait in the hub, which skips them when late).
pub fn window(bitrate_bps: u64, delay: Duration, max: u64) -> u64 {
    let bytes = u128::from(bitrate_bps).saturating_mul(delay.as_millis()) / 8000;
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    bytes.clamp(MIN_WINDOW.min(max), max)
}

/// Providers to redirect a full node's subscriber to, best first, so that it attaches as close to the
/// origin as capacity allows in as few round trips as possible: those the catalog says have room for a
/// subscriber of a `need_kbps` stream, then those whose room we already promised to others
/// (`promised_away`, see [`Promised::discount`]), then those it says nothing about, then full ones (a full
/// one only redirects again, a level further down); within each, fewer hops from the origin first, then our
/// own downstream peers (we hear from them, so they are alive; a catalog entry may outlive its provider by
/// [`crate::catalog::ENTRY_TTL`]), then more spare upload. Our own downstreams are at `own_hops + 1`. Never
/// the subscriber or us.
///
/// Why the promised-away before the full: when a relay near the origin dies, hundreds of orphans ask the
/// same well-connected provider within a second; its promises use up every provider with room it knows
/// (it keeps [`crate::catalog::MAX_PROVIDERS_PER_STREAM`]) after a hundred or so, and it then named only
/// its own full subscribers, near the origin, each of which redirects again a level further down (a new
/// connection each, about 0.4 s). A provider that had room a moment ago most likely still has some (the
/// orphans ask several at once and drop all but one), and if not, its own redirect starts from there.
pub fn redirect_hints(
    own_downstreams: Vec<ProviderHint>,
    catalog: Vec<CatalogEntry>,
    promised_away: &[PeerId],
    requester: &PeerId,
    me: &PeerId,
    own_hops: u8,
    need_kbps: u64,
) -> Vec<ProviderHint> {
    // (room class: 0 room, 1 room promised away, 2 unknown, 3 full; not ours; hops; spread), and the hint.
    type Key = (u8, bool, u8, u64);
    let class = |peer: &PeerId, spare: u32| {
        if has_room(spare, need_kbps) {
            0
        } else if promised_away.contains(peer) {
            1
        } else {
            3
        }
    };
    // Subscribers redirected at once (the orphans of a dead relay) would all go to the same best provider,
    // which fills, and redirect them again: each subscriber gets its own order among equals, a provider
    // with more free slots coming first for proportionally more of them.
    let spread = |peer: &PeerId, spare: u32| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (requester, peer).hash(&mut h);
        let slots = (u64::from(spare) / need_kbps.max(1)).max(1);
        (h.finish() % 65_536) / slots
    };
    let mut ranked: Vec<(Key, ProviderHint)> = Vec::new();
    let mut seen: std::collections::HashSet<PeerId> = std::collections::HashSet::new();
    for h in own_downstreams {
        if h.peer == *requester || h.peer == *me || !seen.insert(h.peer) {
            continue;
        }
        let listed = catalog.iter().find(|e| e.provider == h.peer);
        let key = match listed {
            Some(e) => (
                class(&e.provider, e.spare_kbps),
                false,
                e.hops,
                spread(&h.peer, e.spare_kbps),
            ),
            None => (2, false, own_hops.saturating_add(1), spread(&h.peer, 0)),
        };
        ranked.push((key, h));
    }
    for e in catalog {
        // A full provider we do not serve ourselves would only redirect the subscriber again.
        let full = class(&e.provider, e.spare_kbps) == 3;
        if e.provider == *requester || e.provider == *me || full || !seen.insert(e.provider) {
            continue;
        }
        let key = (
            class(&e.provider, e.spare_kbps),
            true,
            e.hops,
            spread(&e.provider, e.spare_kbps),
        );
        ranked.push((
            key,
            ProviderHint {
                peer: e.provider,
                addrs: e.addrs,
            },
        ));
    }
    ranked.sort_by_key(|(k, _)| *k);
    ranked
        .into_iter()
        .take(MAX_REDIRECT_HINTS)
        .map(|(_, h)| h)
        .collect()
}

/// How long the first provider named in a redirect counts as one slot fuller: until its own gossip (every
/// round, 2 s, in a busy mesh) has had time to say so.
pub const PROMISE_FOR: Duration = Duration::from_secs(2);
/// Most providers [`Promised`] remembers.
pub const MAX_PROMISES: usize = 1024;

/// The slots a full provider recently sent subscribers to: when the orphans of a dead relay come at once,
/// the first is sent to the best provider with room, and the next ones elsewhere, instead of all to the
/// same provider, which fills and redirects them again (each a round trip).
#[derive(Debug, Default)]
pub struct Promised {
    given: std::collections::HashMap<PeerId, (u32, Instant)>,
}

impl Promised {
    /// Lowers the spare upload of `entries` by the slots of a `need_kbps` stream we sent subscribers to
    /// within [`PROMISE_FOR`]. Returns the providers that had room before and have none left after: a
    /// second choice for [`redirect_hints`], better than a full provider.
    pub fn discount(
        &self,
        entries: &mut [CatalogEntry],
        need_kbps: u64,
        now: Instant,
    ) -> Vec<PeerId> {
        let mut promised_away = Vec::new();
        for e in entries {
            if let Some((n, at)) = self.given.get(&e.provider)
                && now.saturating_duration_since(*at) < PROMISE_FOR
            {
                let had_room = has_room(e.spare_kbps, need_kbps);
                let taken = u64::from(*n).saturating_mul(need_kbps);
                e.spare_kbps = u64::from(e.spare_kbps).saturating_sub(taken) as u32;
                if had_room && !has_room(e.spare_kbps, need_kbps) {
                    promised_away.push(e.provider);
                }
            }
        }
        promised_away
    }

    /// We named `peer` first in a redirect.
    pub fn promise(&mut self, peer: PeerId, now: Instant) {
        self.given
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < PROMISE_FOR);
        if self.given.len() >= MAX_PROMISES && !self.given.contains_key(&peer) {
            return;
        }
        let (n, at) = self.given.entry(peer).or_insert((0, now));
        *n += 1;
        *at = now;
    }
}

/// Where a subscriber should go if we die: our upstream (with the addresses we know it by), then the
/// nodes above it that our own upstream named.
pub fn fallbacks(
    lineage: &Lineage,
    upstream: Option<ProviderHint>,
    requester: &PeerId,
) -> Vec<ProviderHint> {
    let mut out: Vec<ProviderHint> = upstream.into_iter().collect();
    out.extend(lineage.fallbacks.iter().cloned());
    out.retain(|h| h.peer != *requester);
    out.truncate(MAX_FALLBACKS);
    out
}

/// One subscription being served: flow control and the path we told the subscriber.
#[derive(Debug)]
pub struct Downstream {
    peer: PeerId,
    lineage: Arc<Lineage>,
    max_inflight: u64,
    sent: u64,
    acked: u64,
    last_ack: Instant,
    last_receipt: Option<Instant>,
}

impl Downstream {
    /// Serving `peer`, which was told `lineage` in our accept.
    pub fn new(peer: PeerId, lineage: Arc<Lineage>, max_inflight: u64, now: Instant) -> Self {
        Downstream {
            peer,
            lineage,
            max_inflight,
            sent: 0,
            acked: 0,
            last_ack: now,
            last_receipt: None,
        }
    }

    /// True while more frames may be sent (unacknowledged bytes below the window). While the window is
    /// full the hub skips this subscriber ahead to the next keyframe.
    pub fn has_room(&self) -> bool {
        self.sent.saturating_sub(self.acked) < self.max_inflight
    }

    /// Resizes the flow-control window (see [`window`]); bytes already in flight stay in flight.
    pub fn set_window(&mut self, bytes: u64) {
        self.max_inflight = bytes;
    }

    /// Bytes of frames written and acknowledged so far.
    pub fn bytes(&self) -> (u64, u64) {
        (self.sent, self.acked)
    }

    /// `bytes` of frames were written.
    pub fn on_sent(&mut self, bytes: u64) {
        self.sent += bytes;
    }

    /// A message from the subscriber.
    pub fn on_message(&mut self, msg: Message, now: Instant) -> Result<(), ServeError> {
        match msg {
            Message::Ack { bytes, .. } => {
                self.acked = self.acked.max(bytes.min(self.sent));
                self.last_ack = now;
                Ok(())
            }
            m => Err(ServeError::Protocol(format!("unexpected {m:?}"))),
        }
    }

    /// The subscriber sent a receipt: whether to hand it to the node (at most one per
    /// [`MIN_RECEIPT_SPACING`]; the others are dropped).
    pub fn on_receipt(&mut self, now: Instant) -> bool {
        if self
            .last_receipt
            .is_some_and(|t| now.duration_since(t) < MIN_RECEIPT_SPACING)
        {
            return false;
        }
        self.last_receipt = Some(now);
        true
    }

    /// Since when the subscriber has acknowledged nothing while bytes are outstanding (None: up to date).
    pub fn silent_since(&self) -> Option<Instant> {
        (self.sent > self.acked).then_some(self.last_ack)
    }

    /// When the subscriber is cut off unless it acknowledges: only while bytes are outstanding.
    pub fn deadline(&self) -> Option<Instant> {
        self.silent_since().map(|t| t + ACK_TIMEOUT)
    }

    /// The clock reached [`Downstream::deadline`].
    pub fn on_timeout(&self, now: Instant) -> Result<(), ServeError> {
        match self.deadline() {
            Some(d) if now >= d => Err(ServeError::Stalled),
            _ => Ok(()),
        }
    }

    /// Our own lineage may have changed (our upstream moved): a `Path` to send before the next frames, or
    /// an error when the new path runs through the subscriber (serving it would make a loop).
    pub fn on_lineage(&mut self, now: &Arc<Lineage>) -> Result<Option<Message>, ServeError> {
        if Arc::ptr_eq(now, &self.lineage) {
            return Ok(None);
        }
        if now.path.contains(&self.peer) {
            return Err(ServeError::Refused(
                "our new upstream path contains the subscriber".into(),
            ));
        }
        self.lineage = now.clone();
        Ok(Some(Message::Path {
            announcement: now.announcement.clone(),
            hops: now.hops,
            path: now.path.clone(),
        }))
    }

    /// The announcement the subscriber was last told about: frames are signed for its publish.
    pub fn announcement(&self) -> &crate::announce::Announcement {
        &self.lineage.announcement
    }

    /// Whether an encoded frame goes to the subscriber: only frames of the publish it was told about. A frame
    /// of an older publish (still in our ring when our upstream moved to the origin's newer one) is skipped,
    /// and so is one we hold no signature for (empty).
    pub fn sends(&self, encoded: &[u8]) -> bool {
        crate::wire::frame_epoch(encoded) == Some(self.lineage.announcement.started_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::Announcement;
    use libp2p::identity::Keypair;

    fn lineage(path: Vec<PeerId>) -> Arc<Lineage> {
        let k = Keypair::generate_ed25519();
        Arc::new(Lineage {
            announcement: Announcement::sign(&k, "s", 1).unwrap(),
            hops: (path.len() - 1) as u8,
            path,
            upstream: None,
            fallbacks: vec![],
        })
    }

    #[test]
    fn admission_respects_the_cap_but_always_serves_one() {
        assert!(admits(8000, 0, 2500, 0));
        assert!(admits(8000, 5000, 2500, 2));
        assert!(!admits(8000, 7500, 2500, 3));
        assert!(admits(1000, 0, 2500, 0), "the first subscriber always fits");
        assert!(admits(0, 1 << 40, 2500, 100), "0 = unlimited");
    }

    #[test]
    fn a_subscriber_is_silent_only_while_bytes_are_outstanding_and_unacknowledged() {
        let t0 = Instant::now();
        let mut d = Downstream::new(PeerId::random(), lineage(vec![PeerId::random()]), 1000, t0);
        assert_eq!(d.silent_since(), None);
        d.on_sent(500);
        assert_eq!(d.silent_since(), Some(t0));
        let t1 = t0 + Duration::from_millis(100);
        d.on_message(Message::Ack { seq: 1, bytes: 200 }, t1)
            .unwrap();
        assert_eq!(d.silent_since(), Some(t1), "still owes 300 bytes");
        d.on_message(Message::Ack { seq: 2, bytes: 500 }, t1)
            .unwrap();
        assert_eq!(d.silent_since(), None);
    }

    #[test]
    fn the_window_holds_the_queue_delay_of_the_stream_within_its_bounds() {
        let d = Duration::from_millis(400);
        // 2.5 Mbit/s for 400 ms is 125,000 bytes, below the floor.
        assert_eq!(window(2_500_000, d, 1 << 20), MIN_WINDOW);
        assert_eq!(window(8_000_000, d, 1 << 20), 400_000);
        assert_eq!(window(100_000_000, d, 1 << 20), 1 << 20);
        assert_eq!(window(0, d, 1 << 20), MIN_WINDOW, "no bitrate known yet");
        assert_eq!(
            window(8_000_000, d, 1000),
            1000,
            "the ceiling wins over the floor"
        );
        assert_eq!(window(u64::MAX, Duration::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn the_window_bounds_bytes_in_flight_and_silence_cuts_off() {
        let t0 = Instant::now();
        let mut d = Downstream::new(PeerId::random(), lineage(vec![PeerId::random()]), 1000, t0);
        assert!(d.has_room());
        assert_eq!(d.deadline(), None, "nothing outstanding: no deadline");
        d.on_sent(1200);
        assert!(!d.has_room());
        assert_eq!(d.deadline(), Some(t0 + ACK_TIMEOUT));
        d.on_message(
            Message::Ack { seq: 1, bytes: 600 },
            t0 + Duration::from_millis(100),
        )
        .unwrap();
        assert!(d.has_room());
        // An ack for more than was sent counts only what was sent.
        d.on_message(
            Message::Ack {
                seq: 2,
                bytes: 99_999,
            },
            t0 + Duration::from_millis(200),
        )
        .unwrap();
        assert_eq!(d.deadline(), None);
        d.on_sent(10);
        let late = t0 + Duration::from_millis(200) + ACK_TIMEOUT;
        assert_eq!(d.on_timeout(late), Err(ServeError::Stalled));
        assert!(
            d.on_message(Message::End { reason: "x".into() }, late)
                .is_err()
        );
    }

    #[test]
    fn receipts_are_passed_on_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut d = Downstream::new(PeerId::random(), lineage(vec![PeerId::random()]), 1000, t0);
        assert!(d.on_receipt(t0));
        assert!(!d.on_receipt(t0 + Duration::from_millis(10)));
        assert!(!d.on_receipt(t0 + Duration::from_millis(999)));
        assert!(d.on_receipt(t0 + MIN_RECEIPT_SPACING));
        assert!(d.on_receipt(t0 + Duration::from_secs(11)));
    }

    #[test]
    fn a_changed_path_is_announced_unless_it_runs_through_the_subscriber() {
        let t0 = Instant::now();
        let (origin, sub) = (PeerId::random(), PeerId::random());
        let first = lineage(vec![origin]);
        let mut d = Downstream::new(sub, first.clone(), 1000, t0);
        assert_eq!(d.on_lineage(&first), Ok(None));
        let moved = lineage(vec![origin, PeerId::random()]);
        assert!(matches!(
            d.on_lineage(&moved),
            Ok(Some(Message::Path { hops: 1, .. }))
        ));
        let through_sub = lineage(vec![origin, sub]);
        assert!(d.on_lineage(&through_sub).is_err());
    }

    #[test]
    fn only_frames_of_the_announced_publish_are_sent() {
        let t0 = Instant::now();
        let k = Keypair::generate_ed25519();
        let first = Arc::new(Lineage {
            announcement: Announcement::sign(&k, "s", 10).unwrap(),
            hops: 0,
            path: vec![k.public().to_peer_id()],
            upstream: None,
            fallbacks: vec![],
        });
        let mut d = Downstream::new(PeerId::random(), first.clone(), 1000, t0);
        let f = streamr_media::Frame::new(
            streamr_media::FrameKind::Audio,
            0,
            1,
            bytes::Bytes::from_static(&[0xaf, 1]),
        );
        assert!(d.sends(&crate::wire::encode_frame(&f, 10, None)));
        assert!(!d.sends(&crate::wire::encode_frame(&f, 11, None)));
        assert!(!d.sends(&[]), "a frame with no signature is never sent");
        // The origin published again: the subscriber hears of it, then gets the new publish's frames only.
        let later = Arc::new(Lineage {
            announcement: Announcement::sign(&k, "s", 11).unwrap(),
            ..(*first).clone()
        });
        assert!(matches!(
            d.on_lineage(&later),
            Ok(Some(Message::Path { announcement, .. })) if announcement.started_ms == 11
        ));
        assert!(!d.sends(&crate::wire::encode_frame(&f, 10, None)));
        assert!(d.sends(&crate::wire::encode_frame(&f, 11, None)));
    }

    #[test]
    fn redirects_name_our_downstreams_first_and_never_the_requester() {
        let (me, req, a, b) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let k = Keypair::generate_ed25519();
        let entry = |p: PeerId| CatalogEntry {
            announcement: Announcement::sign(&k, "s", 1).unwrap(),
            provider: p,
            addrs: vec![],
            record: None,
            hops: 1,
            spare_kbps: 2500,
        };
        let hint = |p: PeerId| ProviderHint {
            peer: p,
            addrs: vec![],
        };
        let hints = redirect_hints(
            vec![hint(a), hint(req)],
            vec![entry(b), entry(a), entry(me), entry(req)],
            &[],
            &req,
            &me,
            0,
            2500,
        );
        let peers: Vec<PeerId> = hints.iter().map(|h| h.peer).collect();
        assert_eq!(peers, vec![a, b]);
    }

    #[test]
    fn redirects_name_providers_with_room_first_then_the_shallowest() {
        let me = PeerId::random();
        let req = PeerId::random();
        let k = Keypair::generate_ed25519();
        let entry = |p: PeerId, hops: u8, spare_kbps: u32| CatalogEntry {
            announcement: Announcement::sign(&k, "s", 1).unwrap(),
            provider: p,
            addrs: vec![],
            record: None,
            hops,
            spare_kbps,
        };
        let hint = |p: PeerId| ProviderHint {
            peer: p,
            addrs: vec![],
        };
        // We are at hop 1: our downstreams are at 2.
        let (own_full, own_room, own_unlisted) =
            (PeerId::random(), PeerId::random(), PeerId::random());
        let (far_room, near_room, near_full) =
            (PeerId::random(), PeerId::random(), PeerId::random());
        let hints = redirect_hints(
            vec![hint(own_full), hint(own_unlisted), hint(own_room)],
            vec![
                entry(own_full, 2, 1000),
                entry(own_room, 2, 5000),
                entry(far_room, 4, 20_000),
                entry(near_room, 2, 2500),
                entry(near_full, 1, 0),
            ],
            &[],
            &req,
            &me,
            1,
            2500,
        );
        let peers: Vec<PeerId> = hints.iter().map(|h| h.peer).collect();
        assert_eq!(
            peers,
            vec![own_room, near_room, far_room, own_unlisted, own_full],
            "room first (ours first: we hear from them, so they are alive), then unknown, then our full \
             ones; never a full provider that is not ours"
        );
        assert!(!peers.contains(&near_full));
        // At most MAX_REDIRECT_HINTS, the best kept.
        let many: Vec<CatalogEntry> = (0..40)
            .map(|i| entry(PeerId::random(), 1 + (i % 5) as u8, 2500))
            .collect();
        let hints = redirect_hints(vec![], many.clone(), &[], &req, &me, 0, 2500);
        assert_eq!(hints.len(), MAX_REDIRECT_HINTS);
        let levels: Vec<u8> = hints
            .iter()
            .map(|h| many.iter().find(|e| e.provider == h.peer).unwrap().hops)
            .collect();
        assert!(
            levels.iter().all(|&l| l <= 2),
            "the nearest kept: {levels:?}"
        );
        // Equals come in an order of each subscriber's own, so that orphans redirected at once spread
        // over the providers with room instead of all filling the same one.
        let orders: std::collections::HashSet<PeerId> = (0..8)
            .map(|_| {
                redirect_hints(vec![], many.clone(), &[], &PeerId::random(), &me, 0, 2500)[0].peer
            })
            .collect();
        assert!(orders.len() > 1, "{orders:?}");
        let again = redirect_hints(vec![], many.clone(), &[], &req, &me, 0, 2500);
        assert_eq!(again, hints, "the same subscriber gets the same order");
    }

    #[test]
    fn a_provider_named_first_counts_one_slot_fuller_for_a_while() {
        let k = Keypair::generate_ed25519();
        let (me, p, q) = (PeerId::random(), PeerId::random(), PeerId::random());
        let entry = |provider: PeerId, spare_kbps: u32| CatalogEntry {
            announcement: Announcement::sign(&k, "s", 1).unwrap(),
            provider,
            addrs: vec![],
            record: None,
            hops: 2,
            spare_kbps,
        };
        let t0 = Instant::now();
        let mut promised = Promised::default();
        let hints_at = |promised: &Promised, now: Instant| {
            let mut listed = vec![entry(p, 5000), entry(q, 2500)];
            let away = promised.discount(&mut listed, 2500, now);
            let hints = redirect_hints(vec![], listed, &away, &PeerId::random(), &me, 1, 2500);
            hints.iter().map(|h| h.peer).collect::<Vec<_>>()
        };
        // p has two slots, q one: p is named first to most, q to some; say p.
        promised.promise(p, t0);
        // One slot of p's is promised: both have one left now, and both are still named.
        assert_eq!(hints_at(&promised, t0).len(), 2);
        promised.promise(p, t0);
        assert_eq!(
            hints_at(&promised, t0),
            vec![q, p],
            "p has no slot left that we know of: after q, which has"
        );
        // Until its own gossip has had time to say how full it is.
        let later = t0 + PROMISE_FOR;
        assert_eq!(hints_at(&promised, later).len(), 2);
    }

    #[test]
    fn providers_whose_room_we_promised_away_come_before_full_ones() {
        // A provider near the origin, asked by hundreds of orphans at once, has promised every slot it
        // knows of: it names those providers again, after any with room left, rather than only its own full
        // subscribers (each of which would redirect again, a level further down).
        let k = Keypair::generate_ed25519();
        let (me, req) = (PeerId::random(), PeerId::random());
        let (own_full, promised_deep, room) =
            (PeerId::random(), PeerId::random(), PeerId::random());
        let never_roomy = PeerId::random();
        let entry = |provider: PeerId, hops: u8, spare_kbps: u32| CatalogEntry {
            announcement: Announcement::sign(&k, "s", 1).unwrap(),
            provider,
            addrs: vec![],
            record: None,
            hops,
            spare_kbps,
        };
        let t0 = Instant::now();
        let mut promised = Promised::default();
        promised.promise(promised_deep, t0);
        let mut listed = vec![
            entry(own_full, 1, 0),
            entry(promised_deep, 4, 2500),
            entry(room, 5, 5000),
            entry(never_roomy, 2, 0),
        ];
        let away = promised.discount(&mut listed, 2500, t0);
        assert_eq!(away, vec![promised_deep], "only what had room before");
        let own = vec![ProviderHint {
            peer: own_full,
            addrs: vec![],
        }];
        let hints = redirect_hints(own, listed, &away, &req, &me, 0, 2500);
        let peers: Vec<PeerId> = hints.iter().map(|h| h.peer).collect();
        assert_eq!(peers, vec![room, promised_deep, own_full]);
        assert!(!peers.contains(&never_roomy));
    }
}
