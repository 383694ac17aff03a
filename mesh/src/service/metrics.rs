//! The mesh's metric families: the media and catalog protocols' counters ([`MeshStats`]), the upload spent
//! on downstream peers, and the libp2p side's families (`net::metrics`). Read at scrape time.

use super::{Mesh, MeshStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use streamr_media::metrics::{counter, counters_by, gauge};

fn l(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}

/// The mesh's families, the libp2p side's included.
impl Collector for Mesh {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let upload_kbps = self.view.read().upload_kbps;
        encode_protocols(&mut e, &self.stats, upload_kbps)?;
        crate::net::metrics::encode(&mut e, self.net_stats(), &self.net.snapshot())
    }
}

/// The protocols' families, and the upload spent (`upload_kbps`).
fn encode_protocols(e: &mut DescriptorEncoder, m: &MeshStats, upload_kbps: u64) -> fmt::Result {
    counters_by(
        e,
        "streamr_mesh_subscriptions",
        "Subscriptions from downstream peers, by outcome",
        "outcome",
        [
            ("accepted", l(&m.subscriptions_accepted)),
            ("redirected", l(&m.subscriptions_redirected)),
            ("rejected", l(&m.subscriptions_rejected)),
            ("flooded", l(&m.subscriptions_flooded)),
        ],
    )?;
    let counters: &[(&str, &str, &AtomicU64)] = &[
        (
            "streamr_mesh_resubscriptions",
            "Upstreams replaced after a loss or stall",
            &m.resubscriptions,
        ),
        (
            "streamr_mesh_resubscribe_gap_ms_sum",
            "Sum of resubscription gaps (last old frame to first new), ms",
            &m.resubscribe_gap_ms_sum,
        ),
        (
            "streamr_mesh_forged_announcements",
            "Stream announcements refused because they did not verify",
            &m.forged_announcements,
        ),
        (
            "streamr_mesh_protocol_violations",
            "Peers that broke the media or catalog protocol",
            &m.protocol_violations,
        ),
        (
            "streamr_mesh_loops_prevented",
            "Subscriptions refused or dropped because they would loop",
            &m.loops_prevented,
        ),
        (
            "streamr_mesh_stalled_downstreams",
            "Downstream peers cut off for not acknowledging",
            &m.stalled_downstreams,
        ),
        (
            "streamr_mesh_stalled_upstreams",
            "Upstreams replaced because they went quiet",
            &m.stalled_upstreams,
        ),
        (
            "streamr_mesh_climbs",
            "Working upstreams left for a provider nearer the origin with room",
            &m.climbs,
        ),
        (
            "streamr_mesh_bytes_sent",
            "Frame bytes sent to downstream peers",
            &m.bytes_sent,
        ),
        (
            "streamr_mesh_bytes_received",
            "Frame bytes received from upstream peers",
            &m.bytes_received,
        ),
        (
            "streamr_mesh_relayed_bytes_sent",
            "Media bytes sent to peers reached only through a relay",
            &m.relayed_bytes_sent,
        ),
        (
            "streamr_mesh_relayed_bytes_received",
            "Media bytes received from peers reached only through a relay",
            &m.relayed_bytes_received,
        ),
        // Attacks refused and limits reached (docs/security.md).
        (
            "streamr_mesh_forged_frames",
            "Upstreams dropped for media their origin did not sign, or sent out of order",
            &m.forged_frames,
        ),
        (
            "streamr_mesh_frames_unsealed",
            "Frames dropped on arrival because the seal of their batch never arrived, so they cannot be checked",
            &m.frames_unsealed,
        ),
        (
            "streamr_mesh_false_claims",
            "Providers or catalog entries refused for claims that cannot be true",
            &m.false_claims,
        ),
        // Gossip's own cost: one stream per transfer, to every connected peer.
        (
            "streamr_mesh_catalogs_sent",
            "Catalog transfers sent whole (one stream each)",
            &m.catalogs_sent,
        ),
        (
            "streamr_mesh_catalog_bytes_sent",
            "Bytes of the catalog transfers sent whole",
            &m.catalog_bytes_sent,
        ),
        (
            "streamr_mesh_catalogs_received",
            "Catalog transfers received whole",
            &m.catalogs_received,
        ),
        (
            "streamr_mesh_catalog_bytes_received",
            "Bytes of the catalog transfers received whole",
            &m.catalog_bytes_received,
        ),
        (
            "streamr_mesh_catalogs_flooded",
            "Catalog transfers dropped by the per-peer and total limits",
            &m.catalogs_flooded,
        ),
        (
            "streamr_mesh_catalog_entries_dropped",
            "Catalog entries not kept because a bound was reached",
            &m.catalog_entries_dropped,
        ),
        (
            "streamr_mesh_task_panics",
            "Tasks of the mesh service that panicked (logged; fetches and accept loops restarted)",
            &m.task_panics,
        ),
        (
            "streamr_mesh_write_stalls",
            "Downstream peers cut off because a write to them made no progress",
            &m.write_stalls,
        ),
    ];
    for &(name, help, v) in counters {
        counter(e, name, help, l(v))?;
    }
    let gauges = [
        (
            "streamr_mesh_resubscribe_gap_ms_max",
            "Longest resubscription gap, ms",
            l(&m.resubscribe_gap_ms_max),
        ),
        (
            "streamr_mesh_resubscribe_gap_ms_last",
            "Last resubscription gap, ms",
            l(&m.resubscribe_gap_ms_last),
        ),
        (
            "streamr_mesh_catalog_entries",
            "Catalog entries learned from peers now (bounded)",
            l(&m.catalog_entries),
        ),
        (
            "streamr_mesh_upload_kbps",
            "Upload spent on downstream peers, kbit/s",
            upload_kbps,
        ),
    ];
    for (name, help, v) in gauges {
        gauge(e, name, help, v as i64)?;
    }
    Ok(())
}
