//! `Streams`: the node's directory of hubs by stream name. The RTMP edge and the mesh both find hubs here;
//! a hub is created on first use (a publish, or a player that arrives first) and forgotten when idle.

use crate::hub::{Hub, HubConfig, HubSnapshot, StreamEvent};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::broadcast;

/// The node's hubs. Cloning shares the directory.
#[derive(Debug, Clone)]
pub struct Streams {
    inner: Arc<Mutex<BTreeMap<String, Arc<Hub>>>>,
    config: HubConfig,
    events: broadcast::Sender<StreamEvent>,
}

impl Default for Streams {
    fn default() -> Self {
        Self::new(HubConfig::default())
    }
}

impl Streams {
    /// An empty directory whose hubs use `config`.
    pub fn new(config: HubConfig) -> Self {
        Streams {
            inner: Arc::default(),
            config,
            events: broadcast::channel(1024).0,
        }
    }

    /// Source changes and wanted streams, for the mesh. A receiver that falls behind sees `Lagged` and should
    /// re-scan [`Streams::hubs`].
    pub fn events(&self) -> broadcast::Receiver<StreamEvent> {
        self.events.subscribe()
    }

    /// Tells the mesh that a local player wants `name`, which is not live here.
    pub fn want(&self, name: &str) {
        let _ = self.events.send(StreamEvent::Wanted {
            name: name.to_string(),
        });
    }

    /// The hub of `name`, created if missing.
    pub fn get_or_create(&self, name: &str) -> Arc<Hub> {
        let mut map = self.inner.lock();
        map.retain(|_, hub| !hub.is_idle() || Arc::strong_count(hub) > 1);
        map.entry(name.to_string())
            .or_insert_with(|| {
                Hub::with_events(name, self.config.clone(), Some(self.events.clone()))
            })
            .clone()
    }

    /// The hub of `name` if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Hub>> {
        self.inner.lock().get(name).cloned()
    }

    /// Forgets hubs with no source and no subscriber that nobody else holds.
    pub fn sweep(&self) {
        self.inner
            .lock()
            .retain(|_, hub| !hub.is_idle() || Arc::strong_count(hub) > 1);
    }

    /// Snapshots of every hub that is live or has subscribers, sorted by name.
    pub fn snapshots(&self) -> Vec<HubSnapshot> {
        self.sweep();
        let hubs: Vec<Arc<Hub>> = self.inner.lock().values().cloned().collect();
        hubs.iter().map(|h| h.snapshot()).collect()
    }

    /// All hubs, sorted by name.
    pub fn hubs(&self) -> Vec<Arc<Hub>> {
        self.inner.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{SourceKind, SubscriberKind};

    #[test]
    fn hubs_live_while_used_and_are_swept_when_idle() {
        let streams = Streams::default();
        let hub = streams.get_or_create("a");
        let src = hub.attach(SourceKind::Publisher);
        drop(hub);
        assert_eq!(streams.snapshots().len(), 1);
        let sub = streams.get("a").unwrap().subscribe(SubscriberKind::Player);
        drop(src);
        assert_eq!(
            streams.snapshots().len(),
            1,
            "a waiting player keeps the hub"
        );
        drop(sub);
        assert!(streams.snapshots().is_empty());
        assert!(streams.get("a").is_none());
    }
}
