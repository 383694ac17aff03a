//! `/metrics`: the node registers each subsystem's metric families, and renders them in the Prometheus text
//! format at scrape time. The families themselves live with the parts that keep the counters: the hubs'
//! in `streamr_media::metrics`, the RTMP edge's in `streamr_edge::metrics`, the mesh's in the mesh crate.
//! `tests/data/metrics-families.txt` lists every family with its type, labels and help text; a test keeps
//! the output equal to it (dashboards and tests read these names).

use crate::node::{EdgeSlot, MeshSlot};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use std::fmt;
use streamr_media::Streams;
use streamr_media::metrics::gauge;

/// The current edge's families (a new edge after Stop/Start brings new counters).
impl Collector for EdgeSlot {
    fn encode(&self, e: DescriptorEncoder) -> fmt::Result {
        self.get().encode(e)
    }
}

/// The last mesh's families; none before a mesh first ran (the node was stopped from the dashboard before
/// this start).
impl Collector for MeshSlot {
    fn encode(&self, e: DescriptorEncoder) -> fmt::Result {
        match self.get() {
            Some(mesh) => mesh.encode(e),
            None => Ok(()),
        }
    }
}

/// The process's own families: its tasks and its heap. What `netlab soak` watches to tell the node holding
/// more (tasks or live heap rising) from the allocator keeping more (only resident rising).
#[derive(Debug)]
struct Process {
    runtime: Option<tokio::runtime::Handle>,
}

impl Collector for Process {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        if let Some(rt) = &self.runtime {
            let tasks = i64::try_from(rt.metrics().num_alive_tasks()).unwrap_or(i64::MAX);
            gauge(&mut e, "streamr_process_tasks", "Async tasks alive", tasks)?;
        }
        if let Some(heap) = crate::memory::heap_stats() {
            let bytes = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
            gauge(
                &mut e,
                "streamr_process_heap_allocated_bytes",
                "Heap bytes allocated and not freed (live data)",
                bytes(heap.allocated),
            )?;
            gauge(
                &mut e,
                "streamr_process_heap_resident_bytes",
                "Heap bytes the allocator keeps resident (live data, free pages not yet returned, its tables)",
                bytes(heap.resident),
            )?;
        }
        Ok(())
    }
}

/// The node's registry: every subsystem's families.
pub fn registry(streams: &Streams, edge: &EdgeSlot, mesh: &MeshSlot) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Process {
        runtime: tokio::runtime::Handle::try_current().ok(),
    }));
    registry.register_collector(Box::new(edge.clone()));
    registry.register_collector(Box::new(mesh.clone()));
    registry.register_collector(Box::new(streams.clone()));
    registry
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.push_str("# metrics encoding failed\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;
    use streamr_media::HubConfig;
    use streamr_mesh::net::RelayLimits;
    use streamr_mesh::{Mesh, MeshConfig, MeshTuning};
    use tokio_util::sync::CancellationToken;

    /// Every family a running node exposes (with a stream named `alice`), one line each:
    /// `NAME TYPE LABELS HELP`, LABELS being the label pairs of its samples (`-` for none).
    const FAMILIES: &str = include_str!("../tests/data/metrics-families.txt");

    /// The families of a Prometheus text, in the format of [`FAMILIES`].
    fn families(text: &str) -> Vec<String> {
        #[derive(Default)]
        struct Family {
            ty: String,
            help: String,
            labels: Vec<String>,
        }
        let mut found: BTreeMap<String, Family> = BTreeMap::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                current = name.to_string();
                found.entry(current.clone()).or_default().help = help.to_string();
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').expect("a type");
                found.entry(name.to_string()).or_default().ty = ty.to_string();
            } else if let Some(labels) = line
                .split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'))
                .map(|(labels, _)| labels)
            {
                let f = found.get_mut(&current).expect("a sample after its family");
                f.labels
                    .extend(labels.split(',').map(|l| l.replace('"', "")));
            }
        }
        found
            .into_iter()
            .map(|(name, f)| {
                let labels = if f.labels.is_empty() {
                    "-".to_string()
                } else {
                    f.labels.join(",")
                };
                format!("{name} {} {labels} {}", f.ty, f.help)
            })
            .collect()
    }

    fn mesh_config() -> MeshConfig {
        MeshConfig {
            key: libp2p::identity::Keypair::generate_ed25519(),
            port: 0,
            bootstrap: Vec::new(),
            max_upload_kbps: 8000,
            relay: RelayLimits::new(8, 4, Duration::from_secs(3600), 1 << 30),
            upnp: false,
            port_prediction: false,
            relay_candidates: Vec::new(),
            friends: Default::default(),
            tuning: MeshTuning::default(),
            receipts: None,
        }
    }

    /// A family that disappears, is renamed, changes type, labels or help text fails here: dashboards and
    /// tests read them. (The two `streamr_time_to_direct_*` gauges appear only once a relayed connection
    /// became direct; the mesh crate's tests cover them.)
    #[tokio::test]
    async fn every_family_keeps_its_name_type_labels_and_help() {
        let streams = Streams::new(HubConfig::default());
        let _hub = streams.get_or_create("alice");
        let edge = EdgeSlot::default();
        let mesh = MeshSlot::default();
        let registry = registry(&streams, &edge, &mesh);
        let without_mesh = families(&render(&registry));
        assert!(
            without_mesh
                .iter()
                .all(|f| ["streamr_rtmp_", "streamr_stream_", "streamr_process_"]
                    .iter()
                    .any(|p| f.starts_with(p))),
            "before a mesh ran, only the edge, the hubs and the process have families: {without_mesh:#?}"
        );

        let cancel = CancellationToken::new();
        let started = Mesh::start(mesh_config(), streams.clone(), cancel.clone())
            .await
            .expect("a mesh on loopback");
        mesh.set(started);
        let got = families(&render(&registry));
        cancel.cancel();
        let want: Vec<String> = FAMILIES
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        let missing: Vec<&String> = want.iter().filter(|f| !got.contains(f)).collect();
        let new: Vec<&String> = got.iter().filter(|f| !want.contains(f)).collect();
        assert!(
            missing.is_empty() && new.is_empty(),
            "families differ from tests/data/metrics-families.txt\nmissing or changed: {missing:#?}\nnew or changed: {new:#?}"
        );
    }
}
