//! `/metrics`: Prometheus text built at scrape time from the counters the parts already keep (hub snapshots,
//! edge counters), so there is one source of truth and no second set of numbers to keep in step.

use crate::node::MeshSlot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering::Relaxed;
use streamr_media::Streams;

/// Collects per-stream and edge metrics on each scrape.
#[derive(Debug)]
pub struct NodeCollector {
    /// The node's hubs.
    pub streams: Streams,
    /// RTMP edge counters.
    pub edge: crate::node::EdgeSlot,
    /// The mesh.
    pub mesh: MeshSlot,
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.edge.get();
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
        counter(
            &mut e,
            "streamr_rtmp_sessions",
            "RTMP connections accepted",
            l(&s.sessions_total),
        )?;
        gauge(
            &mut e,
            "streamr_rtmp_sessions_active",
            "RTMP connections open",
            l(&s.sessions_active) as i64,
        )?;
        counter(
            &mut e,
            "streamr_rtmp_publishes",
            "RTMP publishes accepted",
            l(&s.publishes),
        )?;
        counter(
            &mut e,
            "streamr_rtmp_plays",
            "RTMP plays accepted",
            l(&s.plays),
        )?;
        {
            let mut m = e.encode_descriptor(
                "streamr_rtmp_sessions_rejected",
                "RTMP sessions refused or ended by the edge, by reason",
                None,
                MetricType::Counter,
            )?;
            for (reason, v) in [
                ("unauthorized", l(&s.rejected_unauthorized)),
                ("bad_name", l(&s.rejected_bad_name)),
                ("too_many_sessions", l(&s.rejected_full)),
                ("not_found", l(&s.not_found)),
                ("protocol_error", l(&s.protocol_errors)),
                ("timeout", l(&s.timeouts)),
                ("panic", l(&s.panics)),
            ] {
                let labels = [("reason", reason)];
                ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut e,
            "streamr_rtmp_bytes_in",
            "Bytes read from RTMP clients",
            l(&s.bytes_in),
        )?;
        counter(
            &mut e,
            "streamr_rtmp_bytes_out",
            "Bytes written to RTMP clients",
            l(&s.bytes_out),
        )?;

        // ---- RTMP edge limits and relays (edge-hardening; see docs/security.md) ----
        {
            let mut d = e.encode_descriptor(
                "streamr_rtmp_limit_hits",
                "RTMP sessions ended or refused by a limit, by limit",
                None,
                MetricType::Counter,
            )?;
            for (limit, v) in s.limits.by_label() {
                ConstCounter::new(v).encode(d.encode_family(&[("limit", limit)])?)?;
            }
            let mut d = e.encode_descriptor(
                "streamr_rtmp_relay_failures",
                "Failed pull/push relay attempts, by reason (each is retried)",
                None,
                MetricType::Counter,
            )?;
            for (reason, v) in s.relays.failures_by_reason() {
                ConstCounter::new(v).encode(d.encode_family(&[("reason", reason)])?)?;
            }
            counter(
                &mut e,
                "streamr_rtmp_relay_restarts",
                "Relay tasks started again by the node after they ended or panicked",
                l(&s.relays.task_restarts),
            )?;
        }
        // ---- end of RTMP edge limits and relays ----

        // No mesh has run yet when the node was stopped from the dashboard before this start.
        if let Some(mesh) = self.mesh.get() {
            self.encode_mesh(&mut e, &mesh)?;
        }
        let snaps = self.streams.snapshots();
        type Field = fn(&streamr_media::HubSnapshot) -> u64;
        let per_stream: [(&str, &str, MetricType, Field); 8] = [
            (
                "streamr_stream_frames_in",
                "Frames received by the stream's hub",
                MetricType::Counter,
                |h| h.frames_in,
            ),
            (
                "streamr_stream_bytes_in",
                "Payload bytes received by the stream's hub",
                MetricType::Counter,
                |h| h.bytes_in,
            ),
            (
                "streamr_stream_frames_out",
                "Frames delivered to the stream's subscribers",
                MetricType::Counter,
                |h| h.frames_out,
            ),
            (
                "streamr_stream_bytes_out",
                "Payload bytes delivered to the stream's subscribers",
                MetricType::Counter,
                |h| h.bytes_out,
            ),
            (
                "streamr_stream_dropped_frames",
                "Frames skipped by slow subscribers",
                MetricType::Counter,
                |h| h.dropped,
            ),
            (
                "streamr_stream_players",
                "Local players of the stream",
                MetricType::Gauge,
                |h| h.players,
            ),
            (
                "streamr_stream_subscribers",
                "Downstream mesh peers of the stream",
                MetricType::Gauge,
                |h| h.peers,
            ),
            (
                "streamr_stream_bitrate_bps",
                "Incoming bitrate of the stream",
                MetricType::Gauge,
                |h| h.bitrate_bps,
            ),
        ];
        for (name, help, ty, field) in per_stream {
            let mut m = e.encode_descriptor(name, help, None, ty)?;
            for h in &snaps {
                let labels = [("stream", h.name.as_str())];
                let fam = m.encode_family(&labels)?;
                match ty {
                    MetricType::Counter => ConstCounter::new(field(h)).encode(fam)?,
                    _ => ConstGauge::new(field(h) as i64).encode(fam)?,
                }
            }
        }
        Ok(())
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.push_str("# metrics encoding failed\n");
    }
    out
}

impl NodeCollector {
    /// The mesh's counters and gauges.
    fn encode_mesh(
        &self,
        e: &mut DescriptorEncoder,
        mesh: &streamr_mesh::Mesh,
    ) -> Result<(), std::fmt::Error> {
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
        let m = mesh.stats();
        {
            let mut d = e.encode_descriptor(
                "streamr_mesh_subscriptions",
                "Subscriptions from downstream peers, by outcome",
                None,
                MetricType::Counter,
            )?;
            for (outcome, v) in [
                ("accepted", l(&m.subscriptions_accepted)),
                ("redirected", l(&m.subscriptions_redirected)),
                ("rejected", l(&m.subscriptions_rejected)),
                ("flooded", l(&m.subscriptions_flooded)),
            ] {
                ConstCounter::new(v).encode(d.encode_family(&[("outcome", outcome)])?)?;
            }
        }
        counter(
            e,
            "streamr_mesh_resubscriptions",
            "Upstreams replaced after a loss or stall",
            l(&m.resubscriptions),
        )?;
        counter(
            e,
            "streamr_mesh_resubscribe_gap_ms_sum",
            "Sum of resubscription gaps (last old frame to first new), ms",
            l(&m.resubscribe_gap_ms_sum),
        )?;
        gauge(
            e,
            "streamr_mesh_resubscribe_gap_ms_max",
            "Longest resubscription gap, ms",
            l(&m.resubscribe_gap_ms_max) as i64,
        )?;
        gauge(
            e,
            "streamr_mesh_resubscribe_gap_ms_last",
            "Last resubscription gap, ms",
            l(&m.resubscribe_gap_ms_last) as i64,
        )?;
        counter(
            e,
            "streamr_mesh_forged_announcements",
            "Stream announcements refused because they did not verify",
            l(&m.forged_announcements),
        )?;
        counter(
            e,
            "streamr_mesh_protocol_violations",
            "Peers that broke the media or catalog protocol",
            l(&m.protocol_violations),
        )?;
        counter(
            e,
            "streamr_mesh_loops_prevented",
            "Subscriptions refused or dropped because they would loop",
            l(&m.loops_prevented),
        )?;
        counter(
            e,
            "streamr_mesh_stalled_downstreams",
            "Downstream peers cut off for not acknowledging",
            l(&m.stalled_downstreams),
        )?;
        counter(
            e,
            "streamr_mesh_stalled_upstreams",
            "Upstreams replaced because they went quiet",
            l(&m.stalled_upstreams),
        )?;
        counter(
            e,
            "streamr_mesh_bytes_sent",
            "Frame bytes sent to downstream peers",
            l(&m.bytes_sent),
        )?;
        counter(
            e,
            "streamr_mesh_bytes_received",
            "Frame bytes received from upstream peers",
            l(&m.bytes_received),
        )?;
        let n = mesh.net_stats();
        counter(
            e,
            "streamr_mesh_connections_established",
            "Mesh connections established",
            l(&n.connections_established),
        )?;
        counter(
            e,
            "streamr_mesh_connections_closed",
            "Mesh connections closed",
            l(&n.connections_closed),
        )?;
        counter(
            e,
            "streamr_mesh_dial_failures",
            "Outgoing mesh connection attempts that failed",
            l(&n.dial_failures),
        )?;
        counter(
            e,
            "streamr_mesh_relayed_bytes_sent",
            "Media bytes sent to peers reached only through a relay",
            l(&m.relayed_bytes_sent),
        )?;
        counter(
            e,
            "streamr_mesh_relayed_bytes_received",
            "Media bytes received from peers reached only through a relay",
            l(&m.relayed_bytes_received),
        )?;
        counter(
            e,
            "streamr_relay_reservations_accepted",
            "Relay service: reservations accepted",
            l(&n.relay_reservations_accepted),
        )?;
        counter(
            e,
            "streamr_relay_reservations_denied",
            "Relay service: reservations denied",
            l(&n.relay_reservations_denied),
        )?;
        counter(
            e,
            "streamr_relay_circuits_accepted",
            "Relay service: circuits opened for others",
            l(&n.relay_circuits_accepted),
        )?;
        counter(
            e,
            "streamr_relay_circuits_denied",
            "Relay service: circuits denied by limits",
            l(&n.relay_circuits_denied),
        )?;
        counter(
            e,
            "streamr_relay_circuits_closed",
            "Relay service: circuits closed",
            l(&n.relay_circuits_closed),
        )?;
        counter(
            e,
            "streamr_relayed_connections_replaced",
            "Relayed connections closed because a direct one exists",
            l(&n.relayed_connections_replaced),
        )?;
        // ---- Mesh hardening: attacks refused and limits reached (the mesh-hardening branch). ----
        {
            let hardening: [(&str, &str, u64); 10] = [
                (
                    "streamr_mesh_forged_frames",
                    "Upstreams dropped for media their origin did not sign, or sent out of order",
                    l(&m.forged_frames),
                ),
                (
                    "streamr_mesh_false_claims",
                    "Providers or catalog entries refused for claims that cannot be true",
                    l(&m.false_claims),
                ),
                (
                    "streamr_mesh_catalogs_flooded",
                    "Catalog transfers dropped by the per-peer and total limits",
                    l(&m.catalogs_flooded),
                ),
                (
                    "streamr_mesh_catalog_entries_dropped",
                    "Catalog entries not kept because a bound was reached",
                    l(&m.catalog_entries_dropped),
                ),
                (
                    "streamr_mesh_task_panics",
                    "Tasks of the mesh service that panicked (logged; fetches and accept loops restarted)",
                    l(&m.task_panics),
                ),
                (
                    "streamr_mesh_connections_denied",
                    "Connections refused by the connection or memory limits",
                    l(&n.connections_denied),
                ),
                (
                    "streamr_mesh_addresses_refused",
                    "Peer addresses refused (local ones from remote peers, hints beyond a share)",
                    l(&n.addresses_refused),
                ),
                (
                    "streamr_relay_outsiders_refused",
                    "Relay service: reservations refused to peers that are not nodes of this mesh",
                    l(&n.relay_outsiders_refused),
                ),
                (
                    "streamr_mesh_write_stalls",
                    "Downstream peers cut off because a write to them made no progress",
                    l(&m.write_stalls),
                ),
                (
                    "streamr_stream_refused_frames",
                    "Frames refused by hubs for an implausible sequence number (all streams)",
                    self.streams.snapshots().iter().map(|h| h.refused).sum(),
                ),
            ];
            for (name, help, v) in hardening {
                counter(e, name, help, v)?;
            }
            gauge(
                e,
                "streamr_mesh_catalog_entries",
                "Catalog entries learned from peers now (bounded)",
                l(&m.catalog_entries) as i64,
            )?;
            gauge(
                e,
                "streamr_relay_circuits_active",
                "Relay service: circuits open now",
                l(&n.relay_circuits_active) as i64,
            )?;
        }
        // ---- end of mesh hardening ----
        let st = mesh.status();
        let nat = &st.nat;
        counter(
            e,
            "streamr_hole_punch_attempts",
            "Hole punches tried (DCUtR)",
            nat.punch_attempts,
        )?;
        counter(
            e,
            "streamr_hole_punch_successes",
            "Hole punches that gave a direct connection",
            nat.punch_successes,
        )?;
        {
            let mut d = e.encode_descriptor(
                "streamr_hole_punch_failures",
                "Failed hole punches by reason",
                None,
                MetricType::Counter,
            )?;
            for (reason, v) in &nat.punch_failures {
                ConstCounter::new(*v).encode(d.encode_family(&[("reason", reason.as_str())])?)?;
            }
        }
        if let Some((p50, max)) = nat.time_to_direct_ms {
            gauge(
                e,
                "streamr_time_to_direct_p50_ms",
                "Median time from relayed to direct connection, ms",
                p50 as i64,
            )?;
            gauge(
                e,
                "streamr_time_to_direct_max_ms",
                "Longest time from relayed to direct connection, ms",
                max as i64,
            )?;
        }
        let relayed_peers = st
            .peers
            .iter()
            .filter(|p| p.connection == "relayed")
            .count();
        {
            let mut d = e.encode_descriptor(
                "streamr_mesh_peers_by_connection",
                "Connected peers by connection type",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new((st.peers.len() - relayed_peers) as i64)
                .encode(d.encode_family(&[("connection", "direct")])?)?;
            ConstGauge::new(relayed_peers as i64)
                .encode(d.encode_family(&[("connection", "relayed")])?)?;
        }
        gauge(
            e,
            "streamr_nat_public",
            "1 when this node is reachable from the internet",
            i64::from(nat.reachability == "public"),
        )?;
        gauge(
            e,
            "streamr_mesh_peers",
            "Connected mesh peers",
            st.peers.len() as i64,
        )?;
        gauge(
            e,
            "streamr_mesh_upload_kbps",
            "Upload spent on downstream peers, kbit/s",
            st.upload_kbps as i64,
        )?;

        Ok(())
    }
}
