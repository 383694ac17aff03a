//! One round of a fetch's subscription attempts, as plain code with no I/O: which of the [`super::Fetcher`]'s
//! candidates to ask now, and how many at once. The first candidate is asked alone; when it has not answered
//! within [`HEDGE_AFTER`] the next one is asked too, and so on up to [`MAX_PENDING`] attempts at once. The
//! first to accept is kept and the others are cancelled (the shell drops them: a provider that accepted
//! sees the stream close and frees the slot).
//!
//! Why: a viewer whose upstream died used to ask its candidates one at a time, and the first is often a full
//! provider near the origin that redirects it one level down, to another full provider, each step a new
//! connection (a relayed one and a hole punch: half a second). A provider with room a few levels down would
//! have taken it at once. Asking it too, a moment later, bounds the repair by the fastest good answer
//! instead of the sum of a chase, while the common case (the first candidate answers at once) costs nothing
//! more. The shell in `service/fetch.rs` and the simulator drive the same machine.

use libp2p::PeerId;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// An attempt unanswered this long gets a companion: the next candidate is asked too. Long enough for a
/// provider we are connected to to answer (a round trip), short next to a new connection through a relay
/// and a hole punch.
pub const HEDGE_AFTER: Duration = Duration::from_millis(150);
/// Most attempts of one fetch that hold back another: each may take an upload slot for a moment, until it
/// is cancelled.
pub const MAX_PENDING: usize = 3;
/// An attempt unanswered this long no longer holds back another (it goes on): it is most likely a dead
/// provider, whose connect (3 s) or answer (5 s) timeout is still to come, and a few of those would
/// otherwise stop the fetch for seconds while live candidates wait.
pub const GIVE_UP_WAITING_AFTER: Duration = Duration::from_secs(1);
/// Most attempts of one fetch under way at all, those given up waiting for included.
pub const MAX_UNDER_WAY: usize = 8;

/// The attempts of one round. See the module docs.
#[derive(Debug, Default)]
pub struct Round {
    /// Candidates not asked yet, best first.
    queue: VecDeque<PeerId>,
    /// Asked, no answer yet, and when.
    pending: Vec<(PeerId, Instant)>,
    /// When the latest attempt started.
    last_start: Option<Instant>,
    /// Attempts answered (without an accept) and not yet replaced: their successors start at once.
    owed: usize,
}

impl Round {
    /// A round with nothing to ask.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the candidates not asked yet with `candidates` (a new list after a redirect, best first);
    /// the attempts still pending go on.
    pub fn refill(&mut self, candidates: Vec<PeerId>) {
        self.queue = candidates
            .into_iter()
            .filter(|p| !self.is_pending(p))
            .collect();
    }

    /// Attempts that hold back another at `now`: those unanswered for less than
    /// [`GIVE_UP_WAITING_AFTER`].
    fn waited_for(&self, now: Instant) -> usize {
        self.pending
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(*at) < GIVE_UP_WAITING_AFTER)
            .count()
    }

    /// The next candidate to ask now, if one is due: when no attempt is waited for, in place of one that
    /// was answered (a redirect is news: its hints are asked at once), or when the latest has gone
    /// unanswered for [`HEDGE_AFTER`]; and only while fewer than [`MAX_PENDING`] are waited for and fewer
    /// than [`MAX_UNDER_WAY`] are under way. It counts as pending from now on. Call it until it says None.
    pub fn start(&mut self, now: Instant) -> Option<PeerId> {
        let waited = self.waited_for(now);
        let hedge = self
            .last_start
            .is_none_or(|t| now.saturating_duration_since(t) >= HEDGE_AFTER);
        let due = self.pending.len() < MAX_UNDER_WAY
            && (waited == 0 || (waited < MAX_PENDING && (self.owed > 0 || hedge)));
        if !due {
            return None;
        }
        let peer = self.queue.pop_front()?;
        self.owed = self.owed.saturating_sub(1);
        self.pending.push((peer, now));
        self.last_start = Some(now);
        Some(peer)
    }

    /// After [`Round::start`] said None at `now`: when it will have a candidate to ask if nothing answers
    /// before (None: nothing left to ask, or as many under way as allowed).
    pub fn next_start(&self, now: Instant) -> Option<Instant> {
        if self.queue.is_empty() || self.pending.len() >= MAX_UNDER_WAY {
            return None;
        }
        let Some(last) = self.last_start else {
            return Some(now);
        };
        let hedge = last + HEDGE_AFTER;
        if self.waited_for(now) < MAX_PENDING {
            return Some(if self.owed > 0 { now } else { hedge.max(now) });
        }
        // As many waited for as allowed: the next start is when the oldest of them is given up.
        let oldest = self
            .pending
            .iter()
            .map(|(_, at)| *at)
            .filter(|at| now.saturating_duration_since(*at) < GIVE_UP_WAITING_AFTER)
            .min()?;
        Some((oldest + GIVE_UP_WAITING_AFTER).max(hedge))
    }

    /// `peer`'s attempt ended without an accept (redirected, refused, unreachable, no answer).
    pub fn answered(&mut self, peer: &PeerId) {
        let before = self.pending.len();
        self.pending.retain(|(p, _)| p != peer);
        if self.pending.len() < before {
            self.owed += 1;
        }
    }

    /// `peer` accepted: the round is over. Returns the other attempts still pending, to cancel.
    pub fn accepted(&mut self, peer: &PeerId) -> Vec<PeerId> {
        self.queue.clear();
        self.last_start = None;
        self.owed = 0;
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| p != peer)
            .collect()
    }

    /// Whether `peer` has an attempt pending.
    pub fn is_pending(&self, peer: &PeerId) -> bool {
        self.pending.iter().any(|(p, _)| p == peer)
    }

    /// Attempts pending, oldest first.
    pub fn pending(&self) -> Vec<PeerId> {
        self.pending.iter().map(|(p, _)| *p).collect()
    }

    /// Nothing left to ask and nothing pending: time for a new candidate list.
    pub fn is_over(&self) -> bool {
        self.queue.is_empty() && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers<const N: usize>() -> [PeerId; N] {
        std::array::from_fn(|_| PeerId::random())
    }

    #[test]
    fn an_unanswered_attempt_gets_a_companion_after_the_hedge_delay() {
        let [a, b, c, d] = peers();
        let t0 = Instant::now();
        let mut r = Round::new();
        r.refill(vec![a, b, c, d]);
        // The first candidate alone.
        assert_eq!(r.start(t0), Some(a));
        assert_eq!(r.start(t0), None);
        assert_eq!(r.next_start(t0), Some(t0 + HEDGE_AFTER));
        // Not yet.
        assert_eq!(r.start(t0 + HEDGE_AFTER - Duration::from_millis(1)), None);
        // a has not answered: b is asked too, then c, and no more than MAX_PENDING at once.
        assert_eq!(r.start(t0 + HEDGE_AFTER), Some(b));
        assert_eq!(r.start(t0 + HEDGE_AFTER), None);
        let t2 = t0 + HEDGE_AFTER * 2;
        assert_eq!(r.start(t2), Some(c));
        assert_eq!(r.pending(), vec![a, b, c]);
        // Three waited for: the next may start when a is given up.
        assert_eq!(r.start(t2), None);
        assert_eq!(r.next_start(t2), Some(t0 + GIVE_UP_WAITING_AFTER));
        // b's answer (a redirect, say) frees a place: d goes at once, since c started long enough ago.
        let t3 = t2 + HEDGE_AFTER;
        r.answered(&b);
        assert_eq!(r.start(t3), Some(d));
        assert!(!r.is_over());
        // c accepts: a and d are cancelled, and the round is over.
        let mut cancel = r.accepted(&c);
        cancel.sort();
        let mut want = vec![a, d];
        want.sort();
        assert_eq!(cancel, want);
        assert!(r.is_over());
        assert_eq!(r.start(t0 + HEDGE_AFTER * 20), None);
    }

    #[test]
    fn an_answer_without_an_accept_moves_on_at_once() {
        let [a, b] = peers();
        let t0 = Instant::now();
        let mut r = Round::new();
        r.refill(vec![a, b]);
        assert_eq!(r.start(t0), Some(a));
        // a refuses right away: b is asked at once, no hedge delay (nothing else is pending).
        r.answered(&a);
        assert_eq!(r.start(t0), Some(b));
        r.answered(&b);
        assert!(r.is_over());
        assert_eq!(r.next_start(t0), None);
    }

    #[test]
    fn attempts_unanswered_for_long_stop_holding_back_the_others() {
        // Dead providers at the head of the list: their connect or answer timeouts are seconds away.
        let dead: [PeerId; 3] = peers();
        let [alive] = peers();
        let t0 = Instant::now();
        let mut r = Round::new();
        let mut list = dead.to_vec();
        list.push(alive);
        r.refill(list);
        let mut now = t0;
        let mut asked = Vec::new();
        loop {
            while let Some(p) = r.start(now) {
                asked.push((p, now));
            }
            if asked.len() == 4 {
                break;
            }
            now = r.next_start(now).expect("more to ask");
        }
        // The three dead ones a hedge apart, then the live one as soon as the first dead one has been
        // waited for long enough, while all three are still under way.
        assert_eq!(asked[3], (alive, t0 + GIVE_UP_WAITING_AFTER));
        assert_eq!(r.pending().len(), 4);
    }

    #[test]
    fn no_more_than_a_bound_are_under_way() {
        let many: [PeerId; 20] = peers();
        let t0 = Instant::now();
        let mut r = Round::new();
        r.refill(many.to_vec());
        let mut now = t0;
        for _ in 0..100 {
            while r.start(now).is_some() {}
            match r.next_start(now) {
                Some(t) => now = t,
                None => break,
            }
        }
        assert_eq!(r.pending().len(), MAX_UNDER_WAY);
        assert_eq!(r.next_start(now), None);
    }

    #[test]
    fn a_new_list_after_a_redirect_keeps_the_pending_attempts() {
        let [a, b, hint, c] = peers();
        let t0 = Instant::now();
        let mut r = Round::new();
        r.refill(vec![a, b, c]);
        assert_eq!(r.start(t0), Some(a));
        assert_eq!(r.start(t0 + HEDGE_AFTER), Some(b));
        // a redirects: the new list (its hint first) replaces the rest, without b, which is still asked.
        // The hint goes at once, though b started just now.
        r.answered(&a);
        r.refill(vec![hint, b, c]);
        assert!(r.is_pending(&b));
        assert_eq!(r.start(t0 + HEDGE_AFTER), Some(hint));
        assert_eq!(r.pending(), vec![b, hint]);
        // Then c only a hedge delay later.
        assert_eq!(r.start(t0 + HEDGE_AFTER), None);
        assert_eq!(r.start(t0 + HEDGE_AFTER * 2), Some(c));
        assert_eq!(r.start(t0 + HEDGE_AFTER * 3), None);
    }
}
