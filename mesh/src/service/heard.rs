//! `Heard`: since when a served subscriber has been silent (frames outstanding, nothing acknowledged),
//! shared between its serve task, which writes it, and the actor, which reads it: a subscriber silent for
//! [`SILENT_AFTER`] neither holds an upload slot nor is named in a redirect (it is most likely dead, and is
//! cut off at the acknowledgement timeout).

use crate::session::downstream::SILENT_AFTER;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// The instants stored are milliseconds after this one (plus one: zero means "not silent").
static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Heard {
    silent_since: AtomicU64,
}

impl Heard {
    /// The subscriber has been silent since `since` (None: it is up to date).
    pub(crate) fn set(&self, since: Option<Instant>) {
        let v = since.map_or(0, |t| {
            u64::try_from(t.saturating_duration_since(*BASE).as_millis()).unwrap_or(u64::MAX - 1)
                + 1
        });
        self.silent_since.store(v, Relaxed);
    }

    /// Whether it has been silent for [`SILENT_AFTER`] at `now`.
    pub(crate) fn is_silent(&self, now: Instant) -> bool {
        self.silent_for(now, SILENT_AFTER)
    }

    /// Whether it has been silent for `grace` at `now`.
    pub(crate) fn silent_for(&self, now: Instant, grace: std::time::Duration) -> bool {
        match self.silent_since.load(Relaxed) {
            0 => false,
            v => {
                let since = *BASE + std::time::Duration::from_millis(v - 1);
                now.saturating_duration_since(since) >= grace
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn silent_only_after_the_grace() {
        let h = Heard::default();
        let t = Instant::now() + Duration::from_secs(5);
        assert!(!h.is_silent(t), "nothing outstanding");
        h.set(Some(t));
        assert!(!h.is_silent(t + SILENT_AFTER - Duration::from_millis(2)));
        assert!(h.is_silent(t + SILENT_AFTER));
        // A shorter grace (naming in redirects) is over sooner.
        let short = Duration::from_millis(400);
        assert!(!h.silent_for(t + short - Duration::from_millis(2), short));
        assert!(h.silent_for(t + short, short));
        h.set(None);
        assert!(!h.is_silent(t + SILENT_AFTER * 10));
    }
}
