//! Counters of the mesh service.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of the media and catalog protocols.
#[derive(Debug, Default)]
pub struct MeshStats {
    /// Subscriptions we accepted (as a provider).
    pub subscriptions_accepted: AtomicU64,
    /// Subscriptions we redirected because our upload was full.
    pub subscriptions_redirected: AtomicU64,
    /// Subscriptions we refused (unknown stream, loop, full with nobody to redirect to).
    pub subscriptions_rejected: AtomicU64,
    /// Inbound streams dropped because a peer opened too many.
    pub subscriptions_flooded: AtomicU64,
    /// Catalog transfers dropped because a peer (or all peers together) opened too many.
    pub catalogs_flooded: AtomicU64,
    /// Catalog transfers sent whole (one stream each; length prefix included in the bytes).
    pub catalogs_sent: AtomicU64,
    /// Bytes of the catalog transfers sent whole.
    pub catalog_bytes_sent: AtomicU64,
    /// Catalog transfers received whole, before their entries are checked.
    pub catalogs_received: AtomicU64,
    /// Bytes of the catalog transfers received whole.
    pub catalog_bytes_received: AtomicU64,
    /// Catalog entries not kept because a bound was reached (per stream, per origin, in total).
    pub catalog_entries_dropped: AtomicU64,
    /// Times we subscribed again after losing an upstream.
    pub resubscriptions: AtomicU64,
    /// Sum of resubscription gaps (last frame from the old upstream to first from the new), ms.
    pub resubscribe_gap_ms_sum: AtomicU64,
    /// Longest resubscription gap, ms.
    pub resubscribe_gap_ms_max: AtomicU64,
    /// Last resubscription gap, ms.
    pub resubscribe_gap_ms_last: AtomicU64,
    /// Announcements that did not verify (forged or corrupted), from catalogs or providers.
    pub forged_announcements: AtomicU64,
    /// Peers that broke the media or catalog protocol (garbage, oversized lengths, wrong messages).
    pub protocol_violations: AtomicU64,
    /// Upstreams dropped for sending media their origin did not sign (injected, altered or replaced frames)
    /// or sending it out of order.
    pub forged_frames: AtomicU64,
    /// Frames dropped on arrival because no seal we held covered them: their batch's first frame (which
    /// carries the seal) was dropped on the way, so they cannot be checked.
    pub frames_unsealed: AtomicU64,
    /// Providers refused or dropped for claims that cannot be true (hops that do not match their path, a
    /// relay claiming to be the origin, a publish switched backwards).
    pub false_claims: AtomicU64,
    /// Subscriptions refused or dropped because they would have formed a loop.
    pub loops_prevented: AtomicU64,
    /// Downstream peers that stopped acknowledging or reading and were cut off.
    pub stalled_downstreams: AtomicU64,
    /// Of `stalled_downstreams`, those whose writes made no progress (they stopped reading).
    pub write_stalls: AtomicU64,
    /// Catalog entries learned from peers now.
    pub catalog_entries: AtomicU64,
    /// Upstreams that went quiet and were replaced.
    pub stalled_upstreams: AtomicU64,
    /// Working upstreams left for a provider nearer the origin that had room (moves up the tree).
    pub climbs: AtomicU64,
    /// Frame bytes sent to downstream peers.
    pub bytes_sent: AtomicU64,
    /// Frame bytes received from upstream peers.
    pub bytes_received: AtomicU64,
    /// Of `bytes_sent`, those to peers reached only through a relay.
    pub relayed_bytes_sent: AtomicU64,
    /// Of `bytes_received`, those from peers reached only through a relay.
    pub relayed_bytes_received: AtomicU64,
    /// Tasks of the mesh service that panicked (each is logged; the service goes on without it, and
    /// restarts fetches and accept loops).
    pub task_panics: AtomicU64,
}

impl MeshStats {
    /// Records one resubscription gap.
    pub fn record_gap(&self, ms: u64) {
        self.resubscriptions.fetch_add(1, Relaxed);
        self.resubscribe_gap_ms_sum.fetch_add(ms, Relaxed);
        self.resubscribe_gap_ms_max.fetch_max(ms, Relaxed);
        self.resubscribe_gap_ms_last.store(ms, Relaxed);
    }
}
