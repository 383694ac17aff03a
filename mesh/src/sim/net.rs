//! The simulated network: where each node sits (reachability class, access delay, upload cap) and what a
//! connection between two of them costs. The mixes are stated here, once, and documented in the README.

use rand::Rng;
use rand::rngs::StdRng;

/// How a node is reached from the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// A public address (or a router that mapped a port).
    Public,
    /// Full-cone or restricted-cone NAT: punches with everyone.
    OpenCone,
    /// Port-restricted cone NAT: punches with everyone but symmetric NATs.
    PortRestricted,
    /// Symmetric NAT: punches only with public nodes and open cones.
    Symmetric,
}

/// The share of each class among viewers (the publisher is public): a home-heavy mix.
const REACH_MIX: [(Reach, f64); 4] = [
    (Reach::Public, 0.10),
    (Reach::OpenCone, 0.30),
    (Reach::PortRestricted, 0.40),
    (Reach::Symmetric, 0.20),
];

/// Upload caps (kbit/s) of home connections and their shares: about 80% of common uplinks (5, 10, 20, 40,
/// 100 Mbit/s), the rest left to the household.
const CAP_MIX: [(u64, f64); 5] = [
    (4_000, 0.25),
    (8_000, 0.35),
    (16_000, 0.25),
    (32_000, 0.10),
    (80_000, 0.05),
];

/// One-way delay of an access link, ms (home broadband to a nearby exchange point and on).
const ACCESS_MS: std::ops::RangeInclusive<u64> = 5..=40;
/// What a relay adds to a path, ms.
const RELAY_EXTRA_MS: u64 = 20;

fn pick<T: Copy>(mix: &[(T, f64)], rng: &mut StdRng) -> T {
    let mut x: f64 = rng.random();
    for (v, share) in mix {
        if x < *share {
            return *v;
        }
        x -= share;
    }
    mix[mix.len() - 1].0
}

/// A node's upload cap.
pub(super) fn draw_cap(rng: &mut StdRng) -> u64 {
    pick(&CAP_MIX, rng)
}

/// Where every node sits.
#[derive(Debug)]
pub(super) struct Topology {
    reach: Vec<Reach>,
    access_ms: Vec<u64>,
}

impl Topology {
    /// Draws `n` nodes; node 0 (the publisher) is public.
    pub(super) fn draw(n: usize, rng: &mut StdRng) -> Topology {
        let reach = (0..n)
            .map(|i| {
                if i == 0 {
                    Reach::Public
                } else {
                    pick(&REACH_MIX, rng)
                }
            })
            .collect();
        let access_ms = (0..n).map(|_| rng.random_range(ACCESS_MS)).collect();
        Topology { reach, access_ms }
    }

    pub(super) fn reach(&self, i: usize) -> Reach {
        self.reach[i]
    }

    /// One-way delay between two nodes, ms.
    pub(super) fn one_way(&self, a: usize, b: usize) -> u64 {
        self.access_ms[a] + self.access_ms[b]
    }

    /// Round-trip time between two nodes, ms.
    pub(super) fn rtt(&self, a: usize, b: usize) -> u64 {
        2 * self.one_way(a, b)
    }

    /// Whether `a` and `b` end up with a direct connection (a dial, or a hole punch).
    pub(super) fn direct(&self, a: usize, b: usize) -> bool {
        use Reach::*;
        !matches!(
            (self.reach[a], self.reach[b]),
            (Symmetric, Symmetric) | (Symmetric, PortRestricted) | (PortRestricted, Symmetric)
        )
    }

    /// What `a` connecting to `b` costs, ms, and whether the connection is direct: one RTT to a public
    /// node; otherwise a relayed connection first (about two RTTs through the relay), then a hole punch
    /// (one more RTT) where the pair can punch.
    pub(super) fn connect(&self, a: usize, b: usize) -> (u64, bool) {
        let rtt = self.rtt(a, b);
        if self.reach[b] == Reach::Public {
            return (rtt, true);
        }
        let relayed = 2 * (rtt + RELAY_EXTRA_MS);
        if self.direct(a, b) {
            (relayed + rtt, true)
        } else {
            (relayed, false)
        }
    }
}
