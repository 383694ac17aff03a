//! The libp2p side's metric families: connections, the relay service, hole punching, the time from relayed
//! to direct, peers by connection type and reachability. Read at scrape time from [`NetStats`] and the
//! event loop's [`NetSnapshot`].

use super::{NetSnapshot, NetStats};
use prometheus_client::encoding::DescriptorEncoder;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use streamr_media::metrics::{counter, counters_by, gauge, gauges_by};

/// Encodes the libp2p side's families.
pub(crate) fn encode(e: &mut DescriptorEncoder, n: &NetStats, snap: &NetSnapshot) -> fmt::Result {
    let counters: &[(&str, &str, &AtomicU64)] = &[
        (
            "streamr_mesh_connections_established",
            "Mesh connections established",
            &n.connections_established,
        ),
        (
            "streamr_mesh_connections_closed",
            "Mesh connections closed",
            &n.connections_closed,
        ),
        (
            "streamr_mesh_dial_failures",
            "Outgoing mesh connection attempts that failed",
            &n.dial_failures,
        ),
        (
            "streamr_relay_reservations_accepted",
            "Relay service: reservations accepted",
            &n.relay_reservations_accepted,
        ),
        (
            "streamr_relay_reservations_denied",
            "Relay service: reservations denied",
            &n.relay_reservations_denied,
        ),
        (
            "streamr_relay_circuits_accepted",
            "Relay service: circuits opened for others",
            &n.relay_circuits_accepted,
        ),
        (
            "streamr_relay_circuits_denied",
            "Relay service: circuits denied by limits",
            &n.relay_circuits_denied,
        ),
        (
            "streamr_relay_circuits_closed",
            "Relay service: circuits closed",
            &n.relay_circuits_closed,
        ),
        (
            "streamr_relayed_connections_replaced",
            "Relayed connections closed because a direct one exists",
            &n.relayed_connections_replaced,
        ),
        // Attacks refused and limits reached (docs/security.md).
        (
            "streamr_mesh_connections_denied",
            "Connections refused by the connection or memory limits",
            &n.connections_denied,
        ),
        (
            "streamr_mesh_addresses_refused",
            "Peer addresses refused (local ones from remote peers, hints beyond a share)",
            &n.addresses_refused,
        ),
        (
            "streamr_relay_outsiders_refused",
            "Relay service: reservations refused to peers that are not nodes of this mesh",
            &n.relay_outsiders_refused,
        ),
    ];
    for &(name, help, v) in counters {
        counter(e, name, help, v.load(Relaxed))?;
    }
    gauge(
        e,
        "streamr_relay_circuits_active",
        "Relay service: circuits open now",
        n.relay_circuits_active.load(Relaxed) as i64,
    )?;
    encode_traversal(e, snap)?;
    let relayed = snap.peers.values().filter(|p| !p.is_direct()).count();
    gauges_by(
        e,
        "streamr_mesh_peers_by_connection",
        "Connected peers by connection type",
        "connection",
        [
            ("direct", (snap.peers.len() - relayed) as i64),
            ("relayed", relayed as i64),
        ],
    )?;
    gauge(
        e,
        "streamr_nat_public",
        "1 when this node is reachable from the internet",
        i64::from(snap.nat.reachability == "public"),
    )?;
    gauge(
        e,
        "streamr_mesh_peers",
        "Connected mesh peers",
        snap.peers.len() as i64,
    )
}

/// Hole punches, and the time from relayed to direct once one was measured.
fn encode_traversal(e: &mut DescriptorEncoder, snap: &NetSnapshot) -> fmt::Result {
    let nat = &snap.nat;
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
    counters_by(
        e,
        "streamr_hole_punch_failures",
        "Failed hole punches by reason",
        "reason",
        nat.punch_failures.iter().map(|(r, v)| (r.as_str(), *v)),
    )?;
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::PeerInfo;
    use libp2p::PeerId;
    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;

    /// The libp2p side's families over a fixed snapshot.
    #[derive(Debug)]
    struct Fixed(NetSnapshot);

    impl Collector for Fixed {
        fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
            encode(&mut e, &NetStats::default(), &self.0)
        }
    }

    fn render(snap: NetSnapshot) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(snap)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn time_to_direct_appears_once_measured_and_punch_failures_by_reason() {
        let before = render(NetSnapshot::default());
        assert!(!before.contains("streamr_time_to_direct"), "{before}");
        assert!(
            before.contains("# TYPE streamr_hole_punch_failures counter\n"),
            "{before}"
        );

        let mut snap = NetSnapshot::default();
        snap.nat.time_to_direct_ms = Some((120, 900));
        snap.nat.punch_failures.insert("timeout".into(), 2);
        snap.nat.reachability = "public";
        snap.peers.insert(PeerId::random(), PeerInfo::default());
        let text = render(snap);
        for line in [
            "# HELP streamr_time_to_direct_p50_ms Median time from relayed to direct connection, ms\n",
            "# TYPE streamr_time_to_direct_p50_ms gauge\nstreamr_time_to_direct_p50_ms 120\n",
            "# HELP streamr_time_to_direct_max_ms Longest time from relayed to direct connection, ms\n",
            "# TYPE streamr_time_to_direct_max_ms gauge\nstreamr_time_to_direct_max_ms 900\n",
            "streamr_hole_punch_failures_total{reason=\"timeout\"} 2\n",
            "streamr_mesh_peers_by_connection{connection=\"relayed\"} 1\n",
            "streamr_mesh_peers_by_connection{connection=\"direct\"} 0\n",
            "streamr_nat_public 1\n",
            "streamr_mesh_peers 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
    }
}
