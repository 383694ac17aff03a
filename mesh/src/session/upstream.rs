//! The subscriber's side of one `/streamr/media/3` subscription, as a state machine with no I/O: feed it
//! the provider's messages and the clock, and it says what to push into the hub, what to send back
//! (acknowledgements) and, in the end, how the subscription ended ([`Outcome`]). The shell in
//! `service/fetch.rs` moves the bytes.
//!
//! Nothing the provider says is taken on trust where it can be checked: the announcement must verify and
//! be the stream asked for, the path must lead from the origin to the provider without us or repeats and
//! match the hop count, and every frame must carry its origin's signature for the announced publish and
//! come in order ([`crate::auth`]). A provider caught lying about media is dropped at once.

use crate::announce::Announcement;
use crate::auth::{Check, FrameVerifier};
use crate::routes::Lineage;
use crate::wire::{Message, ProviderHint, SignedFrame};
use libp2p::PeerId;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamr_media::{Frame, MAX_SEQ_JUMP};

/// How often acknowledgements are sent.
pub const ACK_INTERVAL: Duration = Duration::from_millis(100);
/// ... and sooner once this much arrived unacknowledged: the provider's window is bounded in media time
/// (a few hundred ms), so that a keyframe's burst would otherwise wait for the timer.
pub const ACK_BYTES: u64 = 32 << 10;
/// A provider's keepalives ([`Message::Waiting`]) hold us for at most this long without frames: then the
/// stall timeout applies again, and we look for frames elsewhere.
pub const HOLD_MAX: Duration = Duration::from_secs(10);

/// A provider we have heard nothing from (no frame, no keepalive) for this long is suspect, and the fetch
/// starts looking for another one, though it stays with this one until the stall timeout (1 s). A live
/// provider sends something at least every [`crate::session::downstream::KEEPALIVE`] (400 ms): this is a
/// missed keepalive with 200 ms to spare. Why: when a relay dies, its subscribers used to start looking
/// only at the stall timeout, and the search (a redirect or two, each a new connection through a relay and
/// a hole punch, about 0.4 s) came on top; measured in `netlab sim` at 10,000 nodes, the repair's 95th
/// percentile was 2.2-2.4 s. Searching during the last 0.4 s of the wait takes that much off, and deciding
/// stays where it was: a provider that is only slow (a lossy link) is kept if it speaks up within the
/// stall timeout, and what the search found is dropped (it costs a few messages and a slot held for a
/// moment).
pub const SUSPECT_AFTER: Duration = Duration::from_millis(600);

/// A timer that fires later than this after it was due says this node did not run meanwhile (a machine
/// short of CPU, a laptop waking up): what the provider sent in that time may still wait unread in the
/// connection, behind the QUIC task that has not run either. See [`Upstream::woke_late`].
pub const LATE_WAKE: Duration = Duration::from_millis(200);
/// ... and how long the provider then gets, from the late wake-up, to show what it sent, once per quiet
/// spell, before it counts as suspect or stalled.
pub const WAKE_GRACE: Duration = Duration::from_millis(300);

/// Why a provider would not serve us.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It said no (not live there, a loop, full with nobody to redirect to).
    #[error("refused: {0}")]
    Rejected(String),
    /// Its announcement does not verify: it lies about the origin.
    #[error("forged announcement: {0}")]
    Forged(String),
    /// It answered with another stream than the one asked for.
    #[error("answered with another stream: {0}")]
    WrongStream(String),
    /// Its path from the origin contains us or does not lead from the origin to it.
    #[error("its path contains us or does not lead to the origin")]
    Loop,
    /// It claims something about its place in the tree that cannot be true (hops that do not match its
    /// path, a peer twice on the path).
    #[error("false claim: {0}")]
    FalseClaim(String),
    /// It broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// It did not answer in time, or the stream could not be opened.
    #[error("no answer: {0}")]
    NoAnswer(String),
}

/// Why a running subscription was lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Loss {
    /// No frame for the stall timeout.
    #[error("no frame for {0:?}")]
    Stalled(Duration),
    /// The provider closed the stream.
    #[error("upstream closed")]
    Closed,
    /// The stream broke (the connection under it closed: for example a relayed connection closed in favour
    /// of a direct one).
    #[error("stream error: {0}")]
    Broken(String),
    /// The provider said the stream ended.
    #[error("upstream ended the stream: {0}")]
    Ended(String),
    /// The provider's new path runs through us.
    #[error("upstream's new path runs through us")]
    Loop,
    /// The provider broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The provider sent media its origin did not sign, or out of order: it (or a node above it) injects,
    /// alters, replaces or reorders frames.
    #[error("forged media: {0}")]
    Forged(String),
    /// The provider's path or announcement update cannot be true.
    #[error("false claim: {0}")]
    FalseClaim(String),
}

/// How one subscription attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Full: try these providers next.
    Redirected(Vec<ProviderHint>),
    /// This provider will not serve us; try another.
    Refused(Refusal),
    /// We could not connect to this provider.
    Unreachable(String),
    /// We were receiving, then lost it.
    Lost {
        /// Why.
        loss: Loss,
        /// When the last frame from this provider arrived.
        last_frame: Option<Instant>,
    },
    /// A local source took over the hub, or the mesh stops: stop fetching.
    Superseded,
}

/// What the subscription asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Stream name.
    pub name: String,
    /// The origin this node already plays, if any (it stays with it).
    pub origin: Option<PeerId>,
    /// Otherwise, a prefix of the wanted origin's id (`NAME@PREFIX`), if given.
    pub prefix: Option<String>,
    /// The last sequence number the hub emitted (0: none).
    pub have_seq: u64,
}

impl Request {
    /// The `Subscribe` message.
    pub fn subscribe(&self) -> Message {
        Message::Subscribe {
            name: self.name.clone(),
            origin: self.origin,
            have_seq: self.have_seq,
        }
    }

    fn matches(&self, id: &crate::announce::StreamId) -> bool {
        let wanted = self.origin.map(|o| o.to_string());
        let prefix = wanted.as_deref().or(self.prefix.as_deref());
        id.name == self.name && prefix.is_none_or(|p| id.origin.to_string().starts_with(p))
    }
}

/// What the machine wants done after an input.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// Push this frame into the hub (`gap_ms`: on the first frame after a failover, how long the stream
    /// was silent).
    Frame {
        /// The frame.
        frame: Frame,
        /// Time since the previous upstream's last frame, on the first frame of this one.
        gap_ms: Option<u64>,
        /// Bytes of its message, as the provider counted them.
        wire_len: usize,
    },
    /// The provider's own upstream changed: our lineage is now this. `new_publish` says the origin
    /// published again (a newer announcement): the hub starts a new session before the frames that follow.
    Path {
        /// Our lineage now.
        lineage: Arc<Lineage>,
        /// The announcement changed (the origin restarted its stream).
        new_publish: bool,
    },
    /// A frame of an older publish than the one announced (it was on its way when the provider moved to
    /// the newer one): not for the hub.
    Stale,
    /// A frame no seal we hold covers (its batch's first frame was dropped on the way): it cannot be
    /// checked, so it is not for the hub.
    Unsealed,
    /// The provider is alive but has no frames now (its own upstream is being replaced): we hold on.
    Waiting,
}

/// Most peers on a path from the origin (a hop count is one byte).
pub const MAX_PATH: usize = 64;

/// Checks a provider's claimed place in the tree: the path leads from the origin to the provider, contains
/// neither us nor any peer twice, and the hop count is the path's length. Returns the refusal otherwise.
fn check_path(
    path: &[PeerId],
    hops: u8,
    origin: &PeerId,
    provider: &PeerId,
    me: &PeerId,
) -> Result<(), Refusal> {
    if path.contains(me) || path.first() != Some(origin) || path.last() != Some(provider) {
        return Err(Refusal::Loop);
    }
    if path.len() > MAX_PATH {
        return Err(Refusal::FalseClaim(format!(
            "a path of {} peers",
            path.len()
        )));
    }
    if usize::from(hops) + 1 != path.len() {
        return Err(Refusal::FalseClaim(format!(
            "{hops} hops on a path of {} peers",
            path.len()
        )));
    }
    let distinct: HashSet<&PeerId> = path.iter().collect();
    if distinct.len() != path.len() {
        return Err(Refusal::FalseClaim("a peer twice on its path".into()));
    }
    Ok(())
}

/// One subscription, subscriber side. See the module docs.
#[derive(Debug)]
pub struct Upstream {
    me: PeerId,
    provider: PeerId,
    request: Request,
    stall: Duration,
    lineage: Option<Arc<Lineage>>,
    /// Checks frames against the announced publish (set by the accept).
    verifier: Option<FrameVerifier>,
    /// Highest sequence number of an audio or video frame received: media comes in order.
    last_media_seq: Option<u64>,
    /// Frame bytes received (as the provider counts them: with the wire header).
    bytes: u64,
    acked_bytes: u64,
    seq: u64,
    next_ack: Instant,
    deadline: Instant,
    /// When the provider accepted us (created, until then): where a wait without frames is counted from.
    accepted_at: Instant,
    last_frame: Option<Instant>,
    /// The previous upstream's last frame, until our first.
    previous_last_frame: Option<Instant>,
    /// Set when a late wake-up deferred judgement (see [`Upstream::woke_late`]), until the next frame.
    grace_until: Option<Instant>,
}

impl Upstream {
    /// A subscription to `provider`; send [`Request::subscribe`] first. `previous_last_frame` is when the
    /// last upstream's last frame came (to measure the failover gap).
    pub fn new(
        me: PeerId,
        provider: PeerId,
        request: Request,
        stall: Duration,
        previous_last_frame: Option<Instant>,
        now: Instant,
    ) -> Self {
        Upstream {
            me,
            provider,
            request,
            stall,
            lineage: None,
            verifier: None,
            last_media_seq: None,
            bytes: 0,
            acked_bytes: 0,
            seq: 0,
            next_ack: now + ACK_INTERVAL,
            deadline: now + stall,
            accepted_at: now,
            last_frame: None,
            previous_last_frame,
            grace_until: None,
        }
    }

    /// The last upstream's last frame came at `previous_last_frame` (to measure the failover gap): for a
    /// subscription made while that upstream was still held, which takes over when it is lost.
    pub fn follows(&mut self, previous_last_frame: Option<Instant>) {
        if self.last_frame.is_none() {
            self.previous_last_frame = previous_last_frame;
        }
    }

    /// The provider.
    pub fn provider(&self) -> PeerId {
        self.provider
    }

    /// Takes the provider's answer: `Ok(lineage)` when accepted (the announcement verified, the stream is
    /// the one asked for, its path is loop-free), else how the attempt ended.
    pub fn on_answer(&mut self, answer: Message, now: Instant) -> Result<Arc<Lineage>, Outcome> {
        let refuse = |r| Err(Outcome::Refused(r));
        let (announcement, hops, mut path, fallbacks) = match answer {
            Message::Accept {
                announcement,
                hops,
                path,
                fallbacks,
            } => (announcement, hops, path, fallbacks),
            Message::Redirect { providers, .. } => return Err(Outcome::Redirected(providers)),
            Message::Reject { reason } => return refuse(Refusal::Rejected(reason)),
            m => return refuse(Refusal::Protocol(format!("unexpected answer {m:?}"))),
        };
        let verifier = match FrameVerifier::new(&announcement) {
            Ok(v) => v,
            Err(e) => return refuse(Refusal::Forged(e.to_string())),
        };
        if !self.request.matches(&announcement.id) {
            return refuse(Refusal::WrongStream(announcement.id.to_string()));
        }
        if let Err(r) = check_path(
            &path,
            hops,
            &announcement.id.origin,
            &self.provider,
            &self.me,
        ) {
            return refuse(r);
        }
        self.verifier = Some(verifier);
        path.push(self.me);
        let lineage = Arc::new(Lineage {
            announcement,
            hops: hops.saturating_add(1),
            path,
            upstream: Some(self.provider),
            fallbacks: fallbacks
                .into_iter()
                .filter(|h| h.peer != self.me)
                .collect(),
        });
        self.lineage = Some(lineage.clone());
        self.deadline = now + self.stall;
        self.accepted_at = now;
        Ok(lineage)
    }

    /// Takes one message after the answer.
    pub fn on_message(&mut self, msg: Message, now: Instant) -> Result<Event, Outcome> {
        match msg {
            Message::Frame(signed) => self.on_frame(signed, now),
            Message::Path {
                announcement,
                hops,
                path,
            } => self.on_path(announcement, hops, path),
            Message::End { reason } => Err(self.lost(Loss::Ended(reason))),
            Message::Waiting => {
                // Only a provider that is on the path knows its upstream is being replaced; its own
                // subscribers hold on instead of all looking for another provider at once. Bounded, so that
                // a provider that keeps nothing but promises is left in the end. Only a provider that has
                // sent us media is waited for: one that never did (it has nothing itself; the metadata and
                // sequence headers it starts with are not media) held newcomers for HOLD_MAX, and in a
                // crowd they then served others nothing in turn.
                if self.last_media_seq.is_some()
                    && let Some(last) = self.last_frame
                    && now.saturating_duration_since(last) < HOLD_MAX
                {
                    self.deadline = self.deadline.max(now + self.stall);
                }
                Ok(Event::Waiting)
            }
            m => Err(self.lost(Loss::Protocol(format!("unexpected {m:?}")))),
        }
    }

    fn on_frame(&mut self, signed: SignedFrame, now: Instant) -> Result<Event, Outcome> {
        let wire_len = signed.wire_len();
        let SignedFrame { frame, epoch, seal } = signed;
        // The provider counts every frame it sends against its window, stale ones too.
        self.bytes += wire_len as u64;
        if self.bytes - self.acked_bytes >= ACK_BYTES {
            self.next_ack = self.next_ack.min(now);
        }
        let Some(announced) = self.lineage.as_ref().map(|l| l.announcement.started_ms) else {
            return Err(self.lost(Loss::Protocol("frame before accept".into())));
        };
        if epoch < announced {
            return Ok(Event::Stale);
        }
        if epoch > announced {
            return Err(self.lost(Loss::Forged(format!(
                "a frame of publish {epoch}, which was never announced"
            ))));
        }
        let checked = match self.verifier.as_mut() {
            Some(verifier) => verifier.check(&frame, seal),
            None => Check::Forged("no key to check frames against".into()),
        };
        match checked {
            Check::Authentic => {}
            Check::Unsealed => return Ok(Event::Unsealed),
            Check::Forged(why) => return Err(self.lost(Loss::Forged(why))),
        }
        let media = frame.is_media();
        if media {
            if let Some(last) = self.last_media_seq {
                if frame.seq() <= last {
                    return Err(self.lost(Loss::Forged(format!(
                        "frame {} after frame {last}: out of order or repeated",
                        frame.seq()
                    ))));
                }
                if frame.seq() - last > MAX_SEQ_JUMP {
                    return Err(self.lost(Loss::Protocol(format!(
                        "sequence jumps from {last} to {}",
                        frame.seq()
                    ))));
                }
            }
            self.last_media_seq = Some(frame.seq());
        }
        self.deadline = now + self.stall;
        self.grace_until = None;
        let gap_ms = match self.last_frame {
            None => self
                .previous_last_frame
                .take()
                .map(|prev| now.duration_since(prev).as_millis() as u64),
            Some(_) => None,
        };
        self.last_frame = Some(now);
        self.seq = frame.seq();
        Ok(Event::Frame {
            frame,
            gap_ms,
            wire_len,
        })
    }

    fn on_path(
        &mut self,
        announcement: Announcement,
        hops: u8,
        mut path: Vec<PeerId>,
    ) -> Result<Event, Outcome> {
        let Some(old) = self.lineage.clone() else {
            return Err(self.lost(Loss::Protocol("path before accept".into())));
        };
        if let Err(r) = check_path(
            &path,
            hops,
            &old.announcement.id.origin,
            &self.provider,
            &self.me,
        ) {
            return Err(self.lost(match r {
                Refusal::Loop => Loss::Loop,
                other => Loss::FalseClaim(other.to_string()),
            }));
        }
        let new_publish = announcement != old.announcement;
        if new_publish {
            if announcement.id != old.announcement.id
                || announcement.started_ms <= old.announcement.started_ms
            {
                return Err(self.lost(Loss::FalseClaim(format!(
                    "switched from {} (started {}) to {} (started {})",
                    old.announcement.id,
                    old.announcement.started_ms,
                    announcement.id,
                    announcement.started_ms
                ))));
            }
            match FrameVerifier::new(&announcement) {
                Ok(v) => self.verifier = Some(v),
                Err(e) => return Err(self.lost(Loss::Forged(e.to_string()))),
            }
            // The new publish numbers its frames from the start again.
            self.last_media_seq = None;
        }
        path.push(self.me);
        let lineage = Arc::new(Lineage {
            announcement,
            hops: hops.saturating_add(1),
            path,
            upstream: Some(self.provider),
            fallbacks: old.fallbacks.clone(),
        });
        self.lineage = Some(lineage.clone());
        Ok(Event::Path {
            lineage,
            new_publish,
        })
    }

    /// The stream from the provider ended (`None`) or failed.
    pub fn on_closed(&self, error: Option<String>) -> Outcome {
        self.lost(match error {
            None => Loss::Closed,
            Some(e) => Loss::Broken(e),
        })
    }

    /// The provider's bytes do not decode.
    pub fn on_protocol_error(&self, error: String) -> Outcome {
        self.lost(Loss::Protocol(error))
    }

    /// When the provider turns suspect unless something arrives before (see [`SUSPECT_AFTER`]): the shell
    /// then looks for another provider, and keeps what it finds in reserve until this one stalls. None
    /// before the first frame: a new subscription may wait for a keyframe or for the provider's own
    /// upstream, and a node whose frames stopped mid-stream is what this is for.
    pub fn suspect_at(&self) -> Option<Instant> {
        self.last_frame?;
        let heard = self
            .deadline
            .checked_sub(self.stall)
            .unwrap_or(self.deadline);
        let suspect = heard + SUSPECT_AFTER.min(self.stall);
        Some(self.grace_until.map_or(suspect, |g| suspect.max(g)))
    }

    /// A timer of this subscription that was due at `due` fired at `now`. When it is later than
    /// [`LATE_WAKE`], this node did not run in between, and the silence it measured is partly its own:
    /// frames may be waiting unread. Judgement (suspect, stalled) is then put off to `now +`
    /// [`WAKE_GRACE`], once per quiet spell, and true is returned: the shell reads before it judges. Why: in
    /// a 50-node lab on 2 cores, most "no frame for 1s" losses came from providers whose own upstream was
    /// fine, and each one moved a subtree to another provider (new connections, more CPU, more late
    /// wake-ups). A provider that is really gone costs at most the grace more.
    pub fn woke_late(&mut self, due: Instant, now: Instant) -> bool {
        if self.grace_until.is_some() || now.saturating_duration_since(due) <= LATE_WAKE {
            return false;
        }
        let until = now + WAKE_GRACE;
        self.grace_until = Some(until);
        self.deadline = self.deadline.max(until);
        true
    }

    /// The next instant [`Upstream::on_timeout`] must be called at.
    pub fn poll_timeout(&self) -> Instant {
        self.deadline.min(self.next_ack)
    }

    /// The clock reached [`Upstream::poll_timeout`]: an acknowledgement to send, or the upstream stalled.
    pub fn on_timeout(&mut self, now: Instant) -> Result<Option<Message>, Outcome> {
        if now >= self.deadline {
            return Err(self.lost(Loss::Stalled(self.stall)));
        }
        if now < self.next_ack {
            return Ok(None);
        }
        self.next_ack = now + ACK_INTERVAL;
        if self.bytes == self.acked_bytes {
            return Ok(None);
        }
        self.acked_bytes = self.bytes;
        Ok(Some(Message::Ack {
            seq: self.seq,
            bytes: self.bytes,
        }))
    }

    fn lost(&self, loss: Loss) -> Outcome {
        Outcome::Lost {
            loss,
            last_frame: self.last_frame,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::Announcement;
    use crate::auth::FrameSigner;
    use bytes::Bytes;
    use libp2p::identity::Keypair;
    use streamr_media::FrameKind;

    struct World {
        origin: Keypair,
        announcement: Announcement,
        me: PeerId,
        provider: PeerId,
        t0: Instant,
    }

    fn world() -> World {
        let origin = Keypair::generate_ed25519();
        World {
            announcement: Announcement::sign(&origin, "s", 1).unwrap(),
            origin,
            me: PeerId::random(),
            provider: PeerId::random(),
            t0: Instant::now(),
        }
    }

    fn request(name: &str) -> Request {
        Request {
            name: name.into(),
            origin: None,
            prefix: None,
            have_seq: 0,
        }
    }

    fn accept(w: &World, path: Vec<PeerId>) -> Message {
        Message::Accept {
            announcement: w.announcement.clone(),
            hops: (path.len() - 1) as u8,
            path,
            fallbacks: vec![],
        }
    }

    fn video(seq: u64) -> Frame {
        Frame::new(
            FrameKind::Video,
            seq as u32 * 33,
            seq,
            Bytes::from_static(&[0x27, 1, 0, 0, 0]),
        )
    }

    /// A frame sealed alone (a batch of one).
    fn signed_by(key: &Keypair, ann: &Announcement, frame: Frame) -> Message {
        let seal = FrameSigner::new(key, ann)
            .unwrap()
            .seal(std::slice::from_ref(&frame));
        Message::Frame(SignedFrame {
            frame,
            epoch: ann.started_ms,
            seal: Some(seal),
        })
    }

    /// Frames `first..first + n` sealed as one batch: the seal travels in the first.
    fn batch(w: &World, first: u64, n: u64) -> Vec<Message> {
        let frames: Vec<Frame> = (first..first + n).map(video).collect();
        let seal = FrameSigner::new(&w.origin, &w.announcement)
            .unwrap()
            .seal(&frames);
        frames
            .into_iter()
            .enumerate()
            .map(|(i, frame)| {
                Message::Frame(SignedFrame {
                    frame,
                    epoch: w.announcement.started_ms,
                    seal: (i == 0).then(|| seal.clone()),
                })
            })
            .collect()
    }

    fn frame(w: &World, seq: u64) -> Message {
        signed_by(&w.origin, &w.announcement, video(seq))
    }

    fn up(w: &World) -> Upstream {
        Upstream::new(
            w.me,
            w.provider,
            request("s"),
            Duration::from_secs(2),
            None,
            w.t0,
        )
    }

    fn accepted(w: &World) -> Upstream {
        let mut u = up(w);
        let origin = w.origin.public().to_peer_id();
        u.on_answer(accept(w, vec![origin, w.provider]), w.t0)
            .unwrap();
        u
    }

    fn forged(r: Result<Event, Outcome>) -> bool {
        matches!(
            r,
            Err(Outcome::Lost {
                loss: Loss::Forged(_),
                ..
            })
        )
    }

    #[test]
    fn accepts_a_loop_free_path_from_the_origin_and_extends_it() {
        let w = world();
        let origin = w.origin.public().to_peer_id();
        let mut u = up(&w);
        let l = u
            .on_answer(accept(&w, vec![origin, w.provider]), w.t0)
            .unwrap();
        assert_eq!(l.hops, 2);
        assert_eq!(l.path, vec![origin, w.provider, w.me]);
        assert_eq!(l.upstream, Some(w.provider));
    }

    #[test]
    fn refuses_loops_forgeries_false_claims_and_other_streams() {
        let w = world();
        let origin = w.origin.public().to_peer_id();
        let mut u = up(&w);
        let looped = accept(&w, vec![origin, w.me, w.provider]);
        assert_eq!(
            u.on_answer(looped, w.t0),
            Err(Outcome::Refused(Refusal::Loop))
        );
        let not_from_origin = accept(&w, vec![PeerId::random(), w.provider]);
        assert_eq!(
            u.on_answer(not_from_origin, w.t0),
            Err(Outcome::Refused(Refusal::Loop))
        );
        // A relay that claims to be the origin's direct peer while its path says otherwise, or that names a
        // peer twice: a false claim.
        let lying_hops = Message::Accept {
            announcement: w.announcement.clone(),
            hops: 0,
            path: vec![origin, PeerId::random(), w.provider],
            fallbacks: vec![],
        };
        assert!(matches!(
            u.on_answer(lying_hops, w.t0),
            Err(Outcome::Refused(Refusal::FalseClaim(_)))
        ));
        let x = PeerId::random();
        assert!(matches!(
            u.on_answer(accept(&w, vec![origin, x, x, w.provider]), w.t0),
            Err(Outcome::Refused(Refusal::FalseClaim(_)))
        ));
        let forged = Message::Accept {
            announcement: w.announcement.forged_with_start(7),
            hops: 1,
            path: vec![origin, w.provider],
            fallbacks: vec![],
        };
        assert!(matches!(
            u.on_answer(forged, w.t0),
            Err(Outcome::Refused(Refusal::Forged(_)))
        ));
        let mut other = Upstream::new(
            w.me,
            w.provider,
            request("t"),
            Duration::from_secs(2),
            None,
            w.t0,
        );
        assert!(matches!(
            other.on_answer(accept(&w, vec![origin, w.provider]), w.t0),
            Err(Outcome::Refused(Refusal::WrongStream(_)))
        ));
        assert!(matches!(
            u.on_answer(
                Message::Reject {
                    reason: "no".into()
                },
                w.t0
            ),
            Err(Outcome::Refused(Refusal::Rejected(_)))
        ));
    }

    #[test]
    fn acknowledges_what_arrived_measures_the_gap_and_detects_a_stall() {
        let w = world();
        let origin = w.origin.public().to_peer_id();
        let previous = w.t0 - Duration::from_millis(700);
        let mut u = Upstream::new(
            w.me,
            w.provider,
            request("s"),
            Duration::from_secs(2),
            Some(previous),
            w.t0,
        );
        u.on_answer(accept(&w, vec![origin, w.provider]), w.t0)
            .unwrap();
        let t = w.t0 + Duration::from_millis(50);
        match u.on_message(frame(&w, 1), t).unwrap() {
            Event::Frame { gap_ms, .. } => assert_eq!(gap_ms, Some(750)),
            e => panic!("{e:?}"),
        }
        match u.on_message(frame(&w, 2), t).unwrap() {
            Event::Frame { gap_ms, .. } => assert_eq!(gap_ms, None),
            e => panic!("{e:?}"),
        }
        let t = u.poll_timeout();
        assert_eq!(t, w.t0 + ACK_INTERVAL);
        let Ok(Some(Message::Ack { seq, bytes })) = u.on_timeout(t) else {
            panic!("an ack is due")
        };
        assert_eq!(seq, 2);
        // Every byte of both messages, the seals they carry included.
        let sent =
            crate::wire::encode(&frame(&w, 1)).len() + crate::wire::encode(&frame(&w, 2)).len();
        assert_eq!(bytes, sent as u64);
        // Nothing new: no ack. Then silence until the stall timeout.
        assert_eq!(u.on_timeout(t + ACK_INTERVAL), Ok(None));
        let stall_at = w.t0 + Duration::from_millis(50) + Duration::from_secs(2);
        assert!(matches!(
            u.on_timeout(stall_at),
            Err(Outcome::Lost {
                loss: Loss::Stalled(_),
                ..
            })
        ));
    }

    #[test]
    fn a_provider_silent_past_a_missed_keepalive_is_suspect_before_it_stalls() {
        let w = world();
        let mut u = accepted(&w);
        let stall = Duration::from_secs(2);
        // Not before the first frame: a new subscription may wait for a keyframe.
        assert_eq!(u.suspect_at(), None);
        let t = w.t0 + Duration::from_millis(300);
        u.on_message(frame(&w, 1), t).unwrap();
        assert_eq!(u.suspect_at(), Some(t + SUSPECT_AFTER));
        // A keepalive counts as much as a frame: a provider that repairs is not suspect.
        let later = t + Duration::from_millis(500);
        u.on_message(Message::Waiting, later).unwrap();
        let at = u.suspect_at().expect("frames came");
        assert_eq!(at, later + SUSPECT_AFTER);
        // Suspect well before the stall, and after a missed keepalive.
        assert!(SUSPECT_AFTER > crate::session::downstream::KEEPALIVE);
        assert!(at < later + stall);
        assert!(u.on_timeout(at).is_ok(), "suspect is not stalled");
    }

    #[test]
    fn a_late_wake_up_reads_before_it_judges_once_per_quiet_spell() {
        let w = world();
        let mut u = accepted(&w);
        let stall = Duration::from_secs(2);
        let t = w.t0 + Duration::from_millis(100);
        u.on_message(frame(&w, 1), t).unwrap();
        let deadline = t + stall;
        // On time (or a little late): nothing changes.
        assert!(!u.woke_late(deadline, deadline + LATE_WAKE));
        // This node slept through its deadline: not stalled yet, nor suspect, for the grace.
        let woke = deadline + Duration::from_millis(800);
        assert!(u.woke_late(deadline, woke));
        assert_eq!(u.on_timeout(woke).map(|_| ()), Ok(()));
        assert_eq!(u.suspect_at(), Some(woke + WAKE_GRACE));
        assert_eq!(
            u.poll_timeout(),
            (woke + WAKE_GRACE).min(woke + ACK_INTERVAL)
        );
        // Once per quiet spell: a provider that sent nothing meanwhile stalls after the grace.
        let again = woke + WAKE_GRACE + Duration::from_millis(500);
        assert!(!u.woke_late(woke + WAKE_GRACE, again));
        assert!(matches!(
            u.on_timeout(again),
            Err(Outcome::Lost {
                loss: Loss::Stalled(_),
                ..
            })
        ));
        // A frame that was waiting ends the spell: the next late wake-up is forgiven again.
        let mut u = accepted(&w);
        u.on_message(frame(&w, 1), t).unwrap();
        assert!(u.woke_late(deadline, woke));
        u.on_message(frame(&w, 2), woke + Duration::from_millis(1))
            .unwrap();
        let next = woke + Duration::from_millis(1) + stall;
        assert_eq!(
            u.suspect_at(),
            Some(woke + Duration::from_millis(1) + SUSPECT_AFTER)
        );
        assert!(u.woke_late(next, next + Duration::from_secs(1)));
    }

    #[test]
    fn keepalives_hold_a_quiet_provider_for_a_while_but_not_forever() {
        let w = world();
        let mut u = accepted(&w);
        let stall = Duration::from_secs(2);
        u.on_message(frame(&w, 1), w.t0).unwrap();
        // The provider's own upstream died: it has no frames but says it is alive.
        let mut t = w.t0;
        while t < w.t0 + HOLD_MAX - stall {
            t += KEEPALIVE_EVERY;
            assert_eq!(u.on_message(Message::Waiting, t), Ok(Event::Waiting));
            assert!(
                u.on_timeout(t + stall - Duration::from_millis(1)).is_ok(),
                "held at {t:?}"
            );
        }
        // Frames again: the count of quiet time starts over.
        u.on_message(frame(&w, 2), t).unwrap();
        let t = t + Duration::from_millis(100);
        assert_eq!(u.on_message(Message::Waiting, t), Ok(Event::Waiting));
        assert!(u.on_timeout(t + stall - Duration::from_millis(1)).is_ok());
        // A provider that has never sent us media is not waited for: its keepalives do not hold, not even
        // after the sequence header that starts every subscription.
        let mut u = accepted(&w);
        let header = Frame::new(
            FrameKind::Video,
            0,
            1,
            Bytes::from_static(&[0x17, 0, 0, 0, 0]),
        );
        assert!(header.is_sequence_header());
        u.on_message(signed_by(&w.origin, &w.announcement, header), w.t0)
            .unwrap();
        let soon = w.t0 + stall / 2;
        assert_eq!(u.on_message(Message::Waiting, soon), Ok(Event::Waiting));
        assert!(matches!(
            u.on_timeout(w.t0 + stall),
            Err(Outcome::Lost {
                loss: Loss::Stalled(_),
                ..
            })
        ));
        // A provider that only ever promises: after HOLD_MAX without frames, keepalives no longer hold.
        let mut u = accepted(&w);
        u.on_message(frame(&w, 1), w.t0).unwrap();
        let late = w.t0 + HOLD_MAX;
        assert_eq!(u.on_message(Message::Waiting, late), Ok(Event::Waiting));
        assert!(matches!(
            u.on_timeout(late),
            Err(Outcome::Lost {
                loss: Loss::Stalled(_),
                ..
            })
        ));
    }

    const KEEPALIVE_EVERY: Duration = Duration::from_millis(400);

    #[test]
    fn a_burst_is_acknowledged_at_once_instead_of_at_the_next_tick() {
        let w = world();
        let mut u = accepted(&w);
        let big = |seq: u64| {
            let f = Frame::new(
                FrameKind::Video,
                seq as u32 * 33,
                seq,
                Bytes::from(vec![0x17u8; (ACK_BYTES / 2) as usize]),
            );
            signed_by(&w.origin, &w.announcement, f)
        };
        let t = w.t0 + Duration::from_millis(10);
        u.on_message(big(1), t).unwrap();
        assert_eq!(u.poll_timeout(), w.t0 + ACK_INTERVAL, "half of it waits");
        u.on_message(big(2), t).unwrap();
        assert_eq!(u.poll_timeout(), t, "due now");
        let Ok(Some(Message::Ack { seq: 2, bytes })) = u.on_timeout(t) else {
            panic!("an ack is due")
        };
        assert!(bytes >= ACK_BYTES);
        assert_eq!(u.poll_timeout(), t + ACK_INTERVAL);
    }

    #[test]
    fn injected_altered_replaced_or_reordered_frames_end_the_subscription() {
        let w = world();
        // Injected: signed by someone else.
        let mut u = accepted(&w);
        u.on_message(frame(&w, 1), w.t0).unwrap();
        let mallory = Keypair::generate_ed25519();
        let theirs = Announcement::sign(&mallory, "s", 1).unwrap();
        assert!(forged(
            u.on_message(signed_by(&mallory, &theirs, video(2)), w.t0)
        ));
        // Altered: the origin's signature over other bytes.
        let mut u = accepted(&w);
        let Message::Frame(mut good) = frame(&w, 1) else {
            unreachable!()
        };
        good.frame = Frame::new(
            FrameKind::Video,
            33,
            1,
            Bytes::from_static(&[0x27, 1, 0, 0, 1]),
        );
        assert!(forged(u.on_message(Message::Frame(good), w.t0)));
        // Reordered or replayed: a genuine frame that is not newer than the last one.
        let mut u = accepted(&w);
        u.on_message(frame(&w, 5), w.t0).unwrap();
        assert!(forged(u.on_message(frame(&w, 4), w.t0)));
        let mut u = accepted(&w);
        u.on_message(frame(&w, 5), w.t0).unwrap();
        assert!(forged(u.on_message(frame(&w, 5), w.t0)));
        // A frame of a publish nobody announced.
        let mut u = accepted(&w);
        let later = Announcement::sign(&w.origin, "s", 2).unwrap();
        assert!(forged(
            u.on_message(signed_by(&w.origin, &later, video(1)), w.t0)
        ));
        // A genuine frame that jumps further than any origin numbers: a protocol violation.
        let mut u = accepted(&w);
        u.on_message(frame(&w, 1), w.t0).unwrap();
        assert!(matches!(
            u.on_message(frame(&w, 2 + MAX_SEQ_JUMP), w.t0),
            Err(Outcome::Lost {
                loss: Loss::Protocol(_),
                ..
            })
        ));
    }

    #[test]
    fn frames_of_a_batch_are_checked_one_by_one_against_its_seal() {
        let w = world();
        let is_frame = |r: Result<Event, Outcome>| matches!(r, Ok(Event::Frame { .. }));
        // Honest: the seal opens the batch, every frame of it checks on arrival.
        let mut u = accepted(&w);
        for m in batch(&w, 1, 4) {
            assert!(is_frame(u.on_message(m, w.t0)));
        }
        // A frame inside the batch altered on the way: caught on arrival, not at the batch's end.
        let mut u = accepted(&w);
        let mut frames = batch(&w, 1, 4);
        let Message::Frame(third) = &mut frames[2] else {
            unreachable!()
        };
        third.frame = Frame::new(
            FrameKind::Video,
            66,
            3,
            Bytes::from_static(&[0x27, 1, 0, 0, 9]),
        );
        let mut frames = frames.into_iter();
        assert!(is_frame(u.on_message(frames.next().unwrap(), w.t0)));
        assert!(is_frame(u.on_message(frames.next().unwrap(), w.t0)));
        assert!(forged(u.on_message(frames.next().unwrap(), w.t0)));
        // An injected frame numbered past the batch, without a seal: cannot be checked, not for the hub;
        // the next batch goes on.
        let mut u = accepted(&w);
        for m in batch(&w, 1, 2) {
            assert!(is_frame(u.on_message(m, w.t0)));
        }
        assert!(matches!(
            u.on_message(batch(&w, 3, 2).remove(1), w.t0),
            Ok(Event::Unsealed)
        ));
        for m in batch(&w, 5, 2) {
            assert!(is_frame(u.on_message(m, w.t0)));
        }
        // A batch's first frame dropped on the way (a relay skipped it): the rest of it is dropped too.
        let mut u = accepted(&w);
        let mut frames = batch(&w, 1, 3);
        frames.remove(0);
        for m in frames {
            assert!(matches!(u.on_message(m, w.t0), Ok(Event::Unsealed)));
        }
        // The byte count is the message's, seal included, as the provider counts it.
        let mut u = accepted(&w);
        let first = batch(&w, 1, 3).remove(0);
        let len = crate::wire::encode(&first).len();
        assert!(matches!(
            u.on_message(first, w.t0),
            Ok(Event::Frame { wire_len, .. }) if wire_len == len
        ));
    }

    #[test]
    fn a_restarted_origins_new_publish_arrives_with_the_path_and_older_frames_are_stale() {
        let w = world();
        let origin = w.origin.public().to_peer_id();
        let mut u = accepted(&w);
        u.on_message(frame(&w, 40), w.t0).unwrap();
        let later = Announcement::sign(&w.origin, "s", 2).unwrap();
        let moved = Message::Path {
            announcement: later.clone(),
            hops: 1,
            path: vec![origin, w.provider],
        };
        match u.on_message(moved, w.t0).unwrap() {
            Event::Path { new_publish, .. } => assert!(new_publish),
            e => panic!("{e:?}"),
        }
        // A frame of the old publish still on its way: ignored, not an offence.
        assert_eq!(u.on_message(frame(&w, 41), w.t0), Ok(Event::Stale));
        // The new publish numbers from 1 again.
        assert!(matches!(
            u.on_message(signed_by(&w.origin, &later, video(1)), w.t0),
            Ok(Event::Frame { .. })
        ));
        // Going back to an older publish, or to another stream, is a false claim.
        let back = Message::Path {
            announcement: w.announcement.clone(),
            hops: 1,
            path: vec![origin, w.provider],
        };
        assert!(matches!(
            u.on_message(back, w.t0),
            Err(Outcome::Lost {
                loss: Loss::FalseClaim(_),
                ..
            })
        ));
    }

    #[test]
    fn a_new_path_through_us_is_a_loss() {
        let w = world();
        let origin = w.origin.public().to_peer_id();
        let mut u = accepted(&w);
        let moved = Message::Path {
            announcement: w.announcement.clone(),
            hops: 2,
            path: vec![origin, PeerId::random(), w.provider],
        };
        match u.on_message(moved, w.t0).unwrap() {
            Event::Path {
                lineage,
                new_publish,
            } => {
                assert_eq!(lineage.hops, 3);
                assert!(!new_publish);
            }
            e => panic!("{e:?}"),
        }
        let looped = Message::Path {
            announcement: w.announcement.clone(),
            hops: 2,
            path: vec![origin, w.me, w.provider],
        };
        assert!(matches!(
            u.on_message(looped, w.t0),
            Err(Outcome::Lost {
                loss: Loss::Loop,
                ..
            })
        ));
    }
}
