//! Exponential backoff with jitter, so thousands of nodes that lost the coordinator at the same moment do
//! not come back at the same moment.

use std::time::Duration;

/// Delays that double from `base` up to `max`, each drawn uniformly from the upper half of its step.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base`, never waiting more than `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            failures: 0,
        }
    }

    /// The delay before the next attempt after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let step = self
            .base
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = step / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_capped_and_vary() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let d1 = b.next_delay();
        assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1));
        let d2 = b.next_delay();
        assert!(d2 >= Duration::from_secs(1) && d2 <= Duration::from_secs(2));
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(d >= Duration::from_secs(30) || b.failures() < 8);
            assert!(d <= Duration::from_secs(60));
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(samples.len() > 1, "jitter");
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
