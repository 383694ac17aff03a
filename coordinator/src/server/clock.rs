//! The coordinator's notion of now: the system clock, or a hand-driven one for tests (offline detection,
//! invite expiry and signature skew all read it).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Where now comes from.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A clock tests set and advance.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock starting at `start_ms`.
    pub fn manual(start_ms: i64) -> Self {
        Clock::Manual(Arc::new(AtomicI64::new(start_ms)))
    }

    /// Now (Unix ms).
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => crate::time::now_ms(),
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance_ms(&self, by: i64) {
        if let Clock::Manual(t) = self {
            t.fetch_add(by, Ordering::SeqCst);
        }
    }
}
