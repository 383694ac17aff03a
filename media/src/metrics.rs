//! Metric families in `prometheus-client`'s terms: the few shapes every subsystem's families take (the edge
//! and the mesh build on this crate and write theirs with these), and the hubs' own families, per stream.
//!
//! Each subsystem implements [`Collector`] for the part that keeps its counters; the node only registers
//! them. Values are read at scrape time from those counters: one source of truth, nothing to keep in step.
//! Names, types, labels and help texts are an interface (dashboards and tests read them): the node's
//! `metrics` tests fail when one of them changes.

use crate::{HubSnapshot, Streams};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::fmt;

/// A counter family with no labels.
pub fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

/// A gauge family with no labels.
pub fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A counter family with one label: one sample per `(label value, count)`. With no samples, the family is
/// still described (a scraper sees it exists).
pub fn counters_by<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let mut d = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, v) in samples {
        ConstCounter::new(v).encode(d.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

/// A gauge family with one label: one sample per `(label value, level)`.
pub fn gauges_by<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, i64)>,
) -> fmt::Result {
    let mut d = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, v) in samples {
        ConstGauge::new(v).encode(d.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

/// How one per-stream family reads a hub's snapshot.
type PerStream = fn(&HubSnapshot) -> u64;

/// The per-stream families, labelled `stream`: name, help, type and the snapshot field.
const PER_STREAM: [(&str, &str, MetricType, PerStream); 8] = [
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

/// The hubs' families: one sample per stream of each per-stream family, and the frames refused by all
/// hubs together.
impl Collector for Streams {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let snaps = self.snapshots();
        for (name, help, ty, field) in PER_STREAM {
            let mut d = e.encode_descriptor(name, help, None, ty)?;
            for h in &snaps {
                let labels = [("stream", h.name.as_str())];
                let fam = d.encode_family(&labels)?;
                match ty {
                    MetricType::Counter => ConstCounter::new(field(h)).encode(fam)?,
                    _ => ConstGauge::new(field(h) as i64).encode(fam)?,
                }
            }
        }
        counter(
            &mut e,
            "streamr_stream_refused_frames",
            "Frames refused by hubs for an implausible sequence number (all streams)",
            snaps.iter().map(|h| h.refused).sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HubConfig;
    use prometheus_client::registry::Registry;

    #[test]
    fn each_stream_is_one_sample_of_each_per_stream_family() {
        let streams = Streams::new(HubConfig::default());
        let _a = streams.get_or_create("alice");
        let _b = streams.get_or_create("bob");
        let mut registry = Registry::default();
        registry.register_collector(Box::new(streams.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for (name, _, ty, _) in PER_STREAM {
            let sample = match ty {
                MetricType::Counter => format!("{name}_total"),
                _ => name.to_string(),
            };
            for stream in ["alice", "bob"] {
                assert!(
                    text.contains(&format!("{sample}{{stream=\"{stream}\"}} 0\n")),
                    "{sample} of {stream} missing in\n{text}"
                );
            }
        }
        assert!(
            text.contains("streamr_stream_refused_frames_total 0\n"),
            "{text}"
        );
    }
}
