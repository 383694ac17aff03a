//! The circuits our relay service carries, by age.
//!
//! Two kinds of circuit go through a public node. Most carry a hole punch: DCUtR's few small messages,
//! and the relayed connection closes once the direct one is up (within a few seconds; port prediction for
//! a symmetric NAT takes at most about 11 s). A few outlive that: two nodes that cannot punch through
//! send a stream over them, at its full bitrate, for as long as it runs. Only the second kind costs upload,
//! so only circuits older than [`PUNCH_WINDOW`] count against the operator's `relay_max_circuits` and in
//! the upload this node spends; younger ones are bounded apart ([`PUNCH_CIRCUITS`]).
//!
//! Why: every newcomer behind NAT opens a circuit per provider it tries, so a join wave holds many
//! short circuits at the bootstrap relay at once. With all circuits counted alike, 8 at once and 4 per
//! peer, scale-16 saw the relay refuse 95 circuits against 56 accepted in one run: newcomers' attempts
//! failed with "resource limit exceeded" and their providers rested as unreachable.

use libp2p::PeerId;
use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// How long a circuit may live and still count as a hole punch's.
pub const PUNCH_WINDOW: Duration = Duration::from_secs(15);
/// Circuits younger than [`PUNCH_WINDOW`] carried at once on top of the operator's limit.
pub const PUNCH_CIRCUITS: usize = 32;
/// Circuits of one peer (as source or destination) at once on top of the operator's per-peer limit: a
/// newcomer tries a few providers at once, and a provider is tried by several newcomers at once.
pub const PUNCH_CIRCUITS_PER_PEER: usize = 8;

/// The circuits open now, with when each opened.
#[derive(Debug, Default)]
pub struct RelayCircuits {
    open: Mutex<Vec<Circuit>>,
}

#[derive(Debug, Clone, Copy)]
struct Circuit {
    src: PeerId,
    dst: PeerId,
    since: Instant,
}

impl RelayCircuits {
    /// A circuit from `src` to `dst` opened at `now`.
    pub fn opened(&self, src: PeerId, dst: PeerId, now: Instant) {
        self.open.lock().push(Circuit {
            src,
            dst,
            since: now,
        });
    }

    /// A circuit from `src` to `dst` closed. With several between the two, the youngest goes: a hole
    /// punch's circuit is the one likely to close, a lasting one stays.
    pub fn closed(&self, src: PeerId, dst: PeerId) {
        let mut open = self.open.lock();
        if let Some(i) = open.iter().rposition(|c| c.src == src && c.dst == dst) {
            open.remove(i);
        }
    }

    /// Circuits open now.
    pub fn count(&self) -> usize {
        self.open.lock().len()
    }

    /// Circuits older than [`PUNCH_WINDOW`] at `now`: those that carry a stream.
    pub fn lasting(&self, now: Instant) -> usize {
        self.open
            .lock()
            .iter()
            .filter(|c| now.saturating_duration_since(c.since) >= PUNCH_WINDOW)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_circuits_that_outlive_a_hole_punch_count_as_lasting() {
        let c = RelayCircuits::default();
        let (a, b, x) = (PeerId::random(), PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        c.opened(a, b, t0);
        c.opened(a, b, t0 + Duration::from_secs(10));
        c.opened(x, b, t0 + Duration::from_secs(12));
        assert_eq!(c.count(), 3);
        assert_eq!(c.lasting(t0 + Duration::from_secs(14)), 0);
        assert_eq!(c.lasting(t0 + PUNCH_WINDOW), 1);
        assert_eq!(c.lasting(t0 + Duration::from_secs(27)), 3);
        // Of two between a and b the younger closes: the one open since t0 still counts.
        c.closed(a, b);
        assert_eq!(c.count(), 2);
        assert_eq!(c.lasting(t0 + Duration::from_secs(20)), 1);
        // A close of a circuit we never saw changes nothing.
        c.closed(b, a);
        assert_eq!(c.count(), 2);
        c.closed(x, b);
        c.closed(a, b);
        assert_eq!(c.count(), 0);
    }
}
