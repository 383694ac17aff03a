//! The RTMP edge's metric families: sessions, publishes and plays, refusals by reason, bytes, the limits
//! that ended sessions, and the pull/push relays. Read at scrape time from [`EdgeStats`].

use crate::EdgeStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use streamr_media::metrics::{counter, counters_by, gauge};

fn l(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}

/// The edge's families.
impl Collector for EdgeStats {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let e = &mut e;
        counter(
            e,
            "streamr_rtmp_sessions",
            "RTMP connections accepted",
            l(&self.sessions_total),
        )?;
        gauge(
            e,
            "streamr_rtmp_sessions_active",
            "RTMP connections open",
            l(&self.sessions_active) as i64,
        )?;
        counter(
            e,
            "streamr_rtmp_publishes",
            "RTMP publishes accepted",
            l(&self.publishes),
        )?;
        counter(
            e,
            "streamr_rtmp_plays",
            "RTMP plays accepted",
            l(&self.plays),
        )?;
        counters_by(
            e,
            "streamr_rtmp_sessions_rejected",
            "RTMP sessions refused or ended by the edge, by reason",
            "reason",
            [
                ("unauthorized", l(&self.rejected_unauthorized)),
                ("bad_name", l(&self.rejected_bad_name)),
                ("too_many_sessions", l(&self.rejected_full)),
                ("not_found", l(&self.not_found)),
                ("protocol_error", l(&self.protocol_errors)),
                ("timeout", l(&self.timeouts)),
                ("panic", l(&self.panics)),
            ],
        )?;
        counter(
            e,
            "streamr_rtmp_bytes_in",
            "Bytes read from RTMP clients",
            l(&self.bytes_in),
        )?;
        counter(
            e,
            "streamr_rtmp_bytes_out",
            "Bytes written to RTMP clients",
            l(&self.bytes_out),
        )?;
        // Limits and relays: see docs/security.md.
        counters_by(
            e,
            "streamr_rtmp_limit_hits",
            "RTMP sessions ended or refused by a limit, by limit",
            "limit",
            self.limits.by_label(),
        )?;
        counters_by(
            e,
            "streamr_rtmp_relay_failures",
            "Failed pull/push relay attempts, by reason (each is retried)",
            "reason",
            self.relays.failures_by_reason(),
        )?;
        counter(
            e,
            "streamr_rtmp_relay_restarts",
            "Relay tasks started again by the node after they ended or panicked",
            l(&self.relays.task_restarts),
        )
    }
}
