//! Live updates for dashboards (`GET /api/v1/events`, Server-Sent Events). One sampler task asks the node
//! for its [`Overview`] once a second, whether or not anyone watches (so the bandwidth chart has the last
//! five minutes when a dashboard opens), measures the traffic, and publishes the overview only when it
//! changed. Every open dashboard waits on that one published value: ten dashboards cost one sample a
//! second, and an idle node sends nothing but a keep-alive comment now and then.

use crate::api::{NodeApi, Overview};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the node is sampled, and so the most often a dashboard is told anything.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
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
    /// Records the totals seen one second after the previous ones.
    pub fn sample(&mut self, total_in: u64, total_out: u64) -> Traffic {
        let t = match self.last {
            Some((i, o)) => Traffic {
                inbound: total_in.saturating_sub(i),
                outbound: total_out.saturating_sub(o),
            },
            None => Traffic::default(),
        };
        self.last = Some((total_in, total_out));
        if self.history.len() == HISTORY_SECS {
            self.history.pop_front();
        }
        self.history.push_back(t);
        t
    }
}

/// The published state: the latest update as JSON, and the history for dashboards that open.
#[derive(Debug, Clone)]
pub struct Published {
    /// The update, serialized once for every dashboard.
    pub update: Arc<String>,
    /// Traffic history, oldest first (serialized).
    pub history: Arc<String>,
}

/// Samples the node every second until `shutdown`; returns the channel dashboards watch.
pub fn spawn_sampler(
    api: Arc<dyn NodeApi>,
    shutdown: CancellationToken,
) -> watch::Receiver<Published> {
    let first = sample_once(&*api, &mut Meter::default());
    let (tx, rx) = watch::channel(first.1);
    tokio::spawn(async move {
        let mut meter = Meter::default();
        let mut last_update: Option<Update> = None;
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Status is built from locks and snapshots; keep it off the runtime's reactor threads' hot
            // path is unnecessary: it takes microseconds.
            let (update, published) = sample_once(&*api, &mut meter);
            let changed = last_update
                .as_ref()
                .is_none_or(|last| !same_but_clock(last, &update));
            if changed {
                last_update = Some(update);
                tx.send_replace(published);
            }
        }
    });
    rx
}

fn sample_once(api: &dyn NodeApi, meter: &mut Meter) -> (Update, Published) {
    let overview = api.overview();
    let (total_in, total_out) = overview
        .status
        .streams
        .iter()
        .fold((0, 0), |(i, o), s| (i + s.bytes_in, o + s.bytes_out));
    let traffic = meter.sample(total_in, total_out);
    let update = Update { overview, traffic };
    let published = Published {
        update: Arc::new(serde_json::to_string(&update).unwrap_or_default()),
        history: Arc::new(serde_json::to_string(&meter.history).unwrap_or_default()),
    };
    (update, published)
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
        assert_eq!(m.sample(100, 50), Traffic::default());
        assert_eq!(
            m.sample(400, 150),
            Traffic {
                inbound: 300,
                outbound: 100
            }
        );
        // A hub was forgotten: totals fell.
        assert_eq!(m.sample(10, 10), Traffic::default());
        for _ in 0..HISTORY_SECS + 10 {
            m.sample(10, 10);
        }
        assert_eq!(m.history.len(), HISTORY_SECS);
    }
}
