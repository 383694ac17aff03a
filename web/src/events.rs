//! Live updates for dashboards (`GET /api/v1/events`, Server-Sent Events). One sampler task reads the
//! node's byte counters, whether or not anyone watches (so the bandwidth chart has the last five minutes
//! when a dashboard opens): every second while a dashboard is open, every [`SAMPLE_EVERY_UNWATCHED`]
//! seconds while none is (each such sample is spread evenly over its seconds of history). Only while a
//! dashboard is open does it also build the node's [`Overview`] and publish it when it changed: every
//! open dashboard waits on that one published value, so ten dashboards cost one overview a second, and a
//! node nobody watches builds none (it was most of an idle node's own work). A dashboard that opens gets
//! an overview built for it at once, and wakes the sampler to sample every second from then on.

use crate::api::{NodeApi, Overview};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the node is sampled while a dashboard is open, and so the most often one is told anything.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How often it is sampled while none is: a timer that fires every second cost an idle node two of its
/// few wake-ups a second (tokio's timer wheel wakes once to move a deadline a second away to its finest
/// level, and once when it is due), for a chart nobody looked at.
pub const SAMPLE_EVERY_UNWATCHED: Duration = Duration::from_secs(5);
/// Seconds of traffic history kept for the chart.
pub const HISTORY_SECS: usize = 300;

/// Bytes per second in and out, for one second.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Traffic {
    /// Received (from publishers and upstream peers), bytes/s.
    #[serde(rename = "in")]
    pub inbound: u64,
    /// Sent (to players and downstream peers), bytes/s.
    #[serde(rename = "out")]
    pub outbound: u64,
}

/// What a dashboard receives.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Update {
    /// The overview.
    #[serde(flatten)]
    pub overview: Overview,
    /// The last second's traffic.
    pub traffic: Traffic,
}

/// Turns the node's byte counters into per-second traffic. Counters live in hubs, and a hub that goes
/// idle is forgotten: a total that falls is a hub gone, not negative traffic.
#[derive(Debug, Default)]
pub struct Meter {
    last: Option<(u64, u64)>,
    /// The last [`HISTORY_SECS`] seconds, oldest first.
    pub history: VecDeque<Traffic>,
}

impl Meter {
    /// Records the totals seen `secs` seconds (at least one) after the previous ones: that many seconds
    /// of history, each with the average. Returns the average.
    pub fn sample(&mut self, total_in: u64, total_out: u64, secs: u64) -> Traffic {
        let secs = secs.max(1);
        let t = match self.last {
            Some((i, o)) => Traffic {
                inbound: total_in.saturating_sub(i) / secs,
                outbound: total_out.saturating_sub(o) / secs,
            },
            None => Traffic::default(),
        };
        self.last = Some((total_in, total_out));
        for _ in 0..secs.min(HISTORY_SECS as u64) {
            if self.history.len() == HISTORY_SECS {
                self.history.pop_front();
            }
            self.history.push_back(t);
        }
        t
    }
}

/// What a dashboard gets when it opens: the traffic history and the current update, both as JSON.
#[derive(Debug, Clone)]
pub struct Opening {
    /// Traffic history, oldest first.
    pub history: String,
    /// The update.
    pub update: String,
}

/// The dashboards' feed: the sampler writes into it, every open dashboard reads from it.
pub struct Feed {
    api: Arc<dyn NodeApi>,
    meter: Mutex<Meter>,
    /// The latest update as JSON, serialized once for every dashboard; its receivers are the open ones.
    updates: watch::Sender<Arc<String>>,
    /// Told when a dashboard opens, so that the sampler samples every second from then on.
    opened: Notify,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("watchers", &self.watchers())
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// A feed of `api` with no history yet; nothing samples it until [`spawn_sampler`].
    pub fn new(api: Arc<dyn NodeApi>) -> Arc<Self> {
        Arc::new(Feed {
            api,
            meter: Mutex::default(),
            updates: watch::Sender::new(Arc::default()),
            opened: Notify::new(),
        })
    }

    /// Opens a dashboard's view: the history and an update built now, and the receiver of later changes
    /// (the dashboard counts as watching while it is held).
    pub fn open(&self) -> (Opening, watch::Receiver<Arc<String>>) {
        let changes = self.updates.subscribe();
        let (history, traffic) = {
            let meter = self.meter.lock();
            (
                serde_json::to_string(&meter.history).unwrap_or_default(),
                meter.history.back().copied().unwrap_or_default(),
            )
        };
        let update = Update {
            overview: self.api.overview(),
            traffic,
        };
        let opening = Opening {
            history,
            update: serde_json::to_string(&update).unwrap_or_default(),
        };
        self.opened.notify_one();
        (opening, changes)
    }

    /// Dashboards open now.
    pub fn watchers(&self) -> usize {
        self.updates.receiver_count()
    }

    /// A sample `secs` seconds after the last: the traffic always, the overview only for watchers.
    /// `last` is the update last published (None while nobody watched), so an unchanged one is not sent
    /// again.
    fn sample(&self, last: &mut Option<Update>, secs: u64) {
        let (total_in, total_out) = self.api.streams().bytes();
        let traffic = self.meter.lock().sample(total_in, total_out, secs);
        if self.watchers() == 0 {
            *last = None;
            return;
        }
        let update = Update {
            overview: self.api.overview(),
            traffic,
        };
        if last.as_ref().is_some_and(|l| same_but_clock(l, &update)) {
            return;
        }
        self.updates
            .send_replace(Arc::new(serde_json::to_string(&update).unwrap_or_default()));
        *last = Some(update);
    }
}

/// Samples `feed` until `shutdown`: every second while a dashboard is open, every
/// [`SAMPLE_EVERY_UNWATCHED`] while none is.
pub fn spawn_sampler(feed: Arc<Feed>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut last = None;
        let mut sampled = Instant::now();
        let mut next = sampled;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
                _ = feed.opened.notified() => {
                    // A page opened: its overview is built; sample every second from now on.
                    next = next.min(Instant::now() + SAMPLE_EVERY);
                    continue;
                }
            }
            let now = Instant::now();
            let secs = (now - sampled).as_secs_f64().round() as u64;
            // The first sample, at once, only sets the totals the next ones count from.
            feed.sample(&mut last, secs);
            sampled = now;
            next = now
                + if feed.watchers() > 0 {
                    SAMPLE_EVERY
                } else {
                    SAMPLE_EVERY_UNWATCHED
                };
        }
    });
}

/// Equal apart from what changes every second by itself (uptime): a dashboard counts the uptime on
/// its own clock, so an idle node pushes nothing.
fn same_but_clock(a: &Update, b: &Update) -> bool {
    let mut b = b.clone();
    b.overview.status.uptime_secs = a.overview.status.uptime_secs;
    *a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_is_the_difference_of_totals_and_never_negative() {
        let mut m = Meter::default();
        assert_eq!(m.sample(100, 50, 1), Traffic::default());
        assert_eq!(
            m.sample(400, 150, 1),
            Traffic {
                inbound: 300,
                outbound: 100
            }
        );
        // A hub was forgotten: totals fell.
        assert_eq!(m.sample(10, 10, 1), Traffic::default());
        for _ in 0..HISTORY_SECS + 10 {
            m.sample(10, 10, 1);
        }
        assert_eq!(m.history.len(), HISTORY_SECS);
        // Five seconds at once: five seconds of history, each with the average.
        let five = m.sample(1010, 510, 5);
        assert_eq!(
            five,
            Traffic {
                inbound: 200,
                outbound: 100
            }
        );
        assert!(m.history.iter().rev().take(5).all(|t| *t == five));
        assert_eq!(m.history.iter().rev().nth(5), Some(&Traffic::default()));
        assert_eq!(m.history.len(), HISTORY_SECS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_nobody_watches_counts_traffic_but_builds_no_overview() {
        use crate::fake::Fake;
        use std::sync::atomic::Ordering::Relaxed;
        use streamr_media::{FrameKind, SourceKind};
        let fake = Arc::new(Fake::default());
        let feed = Feed::new(fake.clone());
        let shutdown = CancellationToken::new();
        spawn_sampler(feed.clone(), shutdown.clone());
        let source = fake
            .streams
            .get_or_create("s")
            .attach(SourceKind::Publisher);
        source
            .push_media(
                FrameKind::Audio,
                0,
                bytes::Bytes::from_static(&[0xaf, 1, 0x21]),
            )
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        assert_eq!(fake.overviews.load(Relaxed), 0, "nobody watched");
        assert_eq!(feed.watchers(), 0);

        let (opening, mut changes) = feed.open();
        assert_eq!(fake.overviews.load(Relaxed), 1, "one built for the opening");
        let history: Vec<serde_json::Value> = serde_json::from_str(&opening.history).unwrap();
        assert_eq!(
            history.len(),
            11,
            "the first sample, then one every 5 s while nobody watched, each five seconds of history"
        );
        assert_eq!(history[0]["in"], 0, "the first sample has no earlier total");
        assert!(
            history.iter().all(|t| t["out"] == 0),
            "nobody played: {history:?}"
        );
        let update: serde_json::Value = serde_json::from_str(&opening.update).unwrap();
        assert_eq!(update["traffic"]["in"], 0, "{update}");
        assert_eq!(update["running"], true, "{update}");

        // The first tick with a watcher publishes; an unchanged overview is not sent again.
        changes.changed().await.unwrap();
        changes.borrow_and_update();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!changes.has_changed().unwrap(), "nothing changed");
        let built = fake.overviews.load(Relaxed);
        assert!(built >= 4, "one a second while watched: {built}");

        // New traffic is news.
        source
            .push_media(
                FrameKind::Audio,
                40,
                bytes::Bytes::from_static(&[0xaf, 1, 0x21]),
            )
            .unwrap();
        changes.changed().await.unwrap();
        let update: serde_json::Value = serde_json::from_str(&changes.borrow_and_update()).unwrap();
        assert_eq!(update["traffic"]["in"], 3, "{update}");

        drop(changes);
        let built = fake.overviews.load(Relaxed);
        let samples = feed.meter.lock().history.len();
        tokio::time::sleep(Duration::from_millis(11_500)).await;
        assert_eq!(fake.overviews.load(Relaxed), built, "the dashboard closed");
        let n = feed.meter.lock().history.len();
        // One more second-long sample (it finds nobody watching), then two of five seconds each.
        assert_eq!(n, samples + 11, "still sampled: {samples} then {n}");
        shutdown.cancel();
    }
}
