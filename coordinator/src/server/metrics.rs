//! Counters this instance exposes at `/metrics` (Prometheus text). Each instance counts what it handled;
//! Prometheus sums instances.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 1];

/// The counters.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route.
    pub requests: Family<Labels, Counter>,
    /// Requests refused, by reason (bad_signature, clock_skew, replayed_nonce, unsigned, invalid, ...).
    pub rejected_requests: Family<Labels, Counter>,
    /// Receipts credited (including those adding 0 bytes).
    pub receipts_accepted: Counter,
    /// Receipts refused, by reason (forged, duplicate, counter_went_back, receiver_offline, ...).
    pub rejected_receipts: Family<Labels, Counter>,
    /// Bytes credited by receipts.
    pub credited_bytes: Counter,
    /// Sessions closed because their viewer stopped heartbeating.
    pub sessions_closed_offline: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("coordinator");
        let requests = Family::<Labels, Counter>::default();
        let rejected_requests = Family::<Labels, Counter>::default();
        let receipts_accepted = Counter::default();
        let rejected_receipts = Family::<Labels, Counter>::default();
        let credited_bytes = Counter::default();
        let sessions_closed_offline = Counter::default();
        registry.register("requests", "Requests answered, by route", requests.clone());
        registry.register(
            "rejected_requests",
            "Requests refused, by reason",
            rejected_requests.clone(),
        );
        registry.register(
            "receipts_accepted",
            "Bandwidth receipts accepted",
            receipts_accepted.clone(),
        );
        registry.register(
            "rejected_receipts",
            "Bandwidth receipts refused, by reason",
            rejected_receipts.clone(),
        );
        registry.register(
            "credited_bytes",
            "Bytes credited by verified receipts",
            credited_bytes.clone(),
        );
        registry.register(
            "sessions_closed_offline",
            "Sessions closed because the viewer node went offline",
            sessions_closed_offline.clone(),
        );
        Metrics {
            registry,
            requests,
            rejected_requests,
            receipts_accepted,
            rejected_receipts,
            credited_bytes,
            sessions_closed_offline,
        }
    }
}

impl Metrics {
    /// Counts a refused request.
    pub fn reject_request(&self, reason: &'static str) {
        self.rejected_requests
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts a refused receipt.
    pub fn reject_receipt(&self, reason: &'static str) {
        self.rejected_receipts
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
