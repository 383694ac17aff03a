//! The subscriber's side of one `/streamr/media/1` subscription, as a state machine with no I/O: feed it
//! the provider's messages and the clock, and it says what to push into the hub, what to send back
//! (acknowledgements) and, in the end, how the subscription ended ([`Outcome`]). The shell in
//! `service/fetch.rs` moves the bytes.

use crate::routes::Lineage;
use crate::wire::{Message, ProviderHint};
use libp2p::PeerId;
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamr_media::Frame;

/// How often acknowledgements are sent.
pub const ACK_INTERVAL: Duration = Duration::from_millis(100);

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
    },
    /// The provider's own upstream changed: our lineage is now this.
    Path(Arc<Lineage>),
}

/// One subscription, subscriber side. See the module docs.
#[derive(Debug)]
pub struct Upstream {
    me: PeerId,
    provider: PeerId,
    request: Request,
    stall: Duration,
    lineage: Option<Arc<Lineage>>,
    /// Frame bytes received (as the provider counts them: with the wire header).
    bytes: u64,
    acked_bytes: u64,
    seq: u64,
    next_ack: Instant,
    deadline: Instant,
    last_frame: Option<Instant>,
    /// The previous upstream's last frame, until our first.
    previous_last_frame: Option<Instant>,
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
            bytes: 0,
            acked_bytes: 0,
            seq: 0,
            next_ack: now + ACK_INTERVAL,
            deadline: now + stall,
            last_frame: None,
            previous_last_frame,
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
        if let Err(e) = announcement.verify() {
            return refuse(Refusal::Forged(e.to_string()));
        }
        if !self.request.matches(&announcement.id) {
            return refuse(Refusal::WrongStream(announcement.id.to_string()));
        }
        if path.contains(&self.me)
            || path.first() != Some(&announcement.id.origin)
            || path.last() != Some(&self.provider)
        {
            return refuse(Refusal::Loop);
        }
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
        Ok(lineage)
    }

    /// Takes one message after the answer.
    pub fn on_message(&mut self, msg: Message, now: Instant) -> Result<Event, Outcome> {
        match msg {
            Message::Frame(frame) => {
                self.deadline = now + self.stall;
                let gap_ms = match self.last_frame {
                    None => self
                        .previous_last_frame
                        .take()
                        .map(|prev| now.duration_since(prev).as_millis() as u64),
                    Some(_) => None,
                };
                self.last_frame = Some(now);
                self.bytes += crate::wire::FRAME_HEADER as u64 + frame.len() as u64;
                self.seq = frame.seq();
                Ok(Event::Frame { frame, gap_ms })
            }
            Message::Path { hops, mut path } => {
                if path.contains(&self.me) {
                    return Err(self.lost(Loss::Loop));
                }
                path.push(self.me);
                let Some(old) = &self.lineage else {
                    return Err(self.lost(Loss::Protocol("path before accept".into())));
                };
                let lineage = Arc::new(Lineage {
                    announcement: old.announcement.clone(),
                    hops: hops.saturating_add(1),
                    path,
                    upstream: Some(self.provider),
                    fallbacks: old.fallbacks.clone(),
                });
                self.lineage = Some(lineage.clone());
                Ok(Event::Path(lineage))
            }
            Message::End { reason } => Err(self.lost(Loss::Ended(reason))),
            m => Err(self.lost(Loss::Protocol(format!("unexpected {m:?}")))),
        }
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
    use bytes::Bytes;
    use libp2p::identity::Keypair;
    use streamr_media::FrameKind;

    struct World {
        origin: Keypair,
        me: PeerId,
        provider: PeerId,
        t0: Instant,
    }

    fn world() -> World {
        World {
            origin: Keypair::generate_ed25519(),
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
            announcement: Announcement::sign(&w.origin, "s", 1).unwrap(),
            hops: (path.len() - 1) as u8,
            path,
            fallbacks: vec![],
        }
    }

    fn frame(seq: u64) -> Message {
        Message::Frame(Frame::new(
            FrameKind::Video,
            seq as u32 * 33,
            seq,
            Bytes::from_static(&[0x27, 1, 0, 0, 0]),
        ))
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
    fn refuses_loops_forgeries_and_other_streams() {
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
        let Message::Accept {
            announcement,
            hops,
            path,
            fallbacks,
        } = accept(&w, vec![origin, w.provider])
        else {
            unreachable!()
        };
        let forged = Message::Accept {
            announcement: announcement.forged_with_start(7),
            hops,
            path: path.clone(),
            fallbacks: fallbacks.clone(),
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
        match u.on_message(frame(1), t).unwrap() {
            Event::Frame { gap_ms, .. } => assert_eq!(gap_ms, Some(750)),
            e => panic!("{e:?}"),
        }
        match u.on_message(frame(2), t).unwrap() {
            Event::Frame { gap_ms, .. } => assert_eq!(gap_ms, None),
            e => panic!("{e:?}"),
        }
        let t = u.poll_timeout();
        assert_eq!(t, w.t0 + ACK_INTERVAL);
        let Ok(Some(Message::Ack { seq, bytes })) = u.on_timeout(t) else {
            panic!("an ack is due")
        };
        assert_eq!(seq, 2);
        assert_eq!(bytes, 2 * (crate::wire::FRAME_HEADER as u64 + 5));
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
    fn a_new_path_through_us_is_a_loss() {
        let w = world();
        let origin = w.origin.public().to_peer_id();
        let mut u = up(&w);
        u.on_answer(accept(&w, vec![origin, w.provider]), w.t0)
            .unwrap();
        let moved = Message::Path {
            hops: 2,
            path: vec![origin, PeerId::random(), w.provider],
        };
        match u.on_message(moved, w.t0).unwrap() {
            Event::Path(l) => assert_eq!(l.hops, 3),
            e => panic!("{e:?}"),
        }
        let looped = Message::Path {
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
