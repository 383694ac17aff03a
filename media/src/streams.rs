//! `Streams`: the node's directory of hubs by stream name. The RTMP edge and the mesh both find hubs here;
//! a hub is created on first use (a publish, or a player that arrives first) and forgotten when idle. A player
//! of a stream that is not live here gets a [`Lookup`] that the node's [`Finder`] (the mesh) works on.

use crate::hub::{Hub, HubConfig, HubSnapshot, StreamEvent};
use crate::lookup::{Finder, Lookup, LookupConfig};
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::broadcast;

/// The node's hubs. Cloning shares the directory.
#[derive(Debug, Clone)]
pub struct Streams {
    inner: Arc<Mutex<BTreeMap<String, Arc<Hub>>>>,
    config: HubConfig,
    lookup: LookupConfig,
    events: broadcast::Sender<StreamEvent>,
    /// Who looks for streams that are not live here (the mesh, once it runs; it may be replaced when the
    /// mesh restarts).
    finder: Arc<RwLock<Option<Arc<dyn Finder>>>>,
}

impl Default for Streams {
    fn default() -> Self {
        Self::new(HubConfig::default())
    }
}

impl Streams {
    /// An empty directory whose hubs use `config`.
    pub fn new(config: HubConfig) -> Self {
        Self::with_lookup(config, LookupConfig::default())
    }

    /// An empty directory whose hubs use `config` and whose players wait as `lookup` says.
    pub fn with_lookup(config: HubConfig, lookup: LookupConfig) -> Self {
        Streams {
            inner: Arc::default(),
            config,
            lookup,
            events: broadcast::channel(1024).0,
            finder: Arc::default(),
        }
    }

    /// Source changes, for the mesh. A receiver that falls behind sees `Lagged` and should re-scan
    /// [`Streams::hubs`].
    pub fn events(&self) -> broadcast::Receiver<StreamEvent> {
        self.events.subscribe()
    }

    /// Sets (or replaces) who looks for streams that are not live here.
    pub fn set_finder(&self, finder: Option<Arc<dyn Finder>>) {
        *self.finder.write() = finder;
    }

    /// A player wants `name`: the lookup settles when the stream is live here, or when the finder gives up
    /// (see [`crate::lookup`]). A stream that is live already settles at once, without asking the finder.
    pub fn request(&self, hub: &Arc<Hub>) -> Lookup {
        let state = if hub.is_live() {
            None
        } else {
            let finder = self.finder.read().clone();
            finder.map(|f| f.find(hub.name()))
        };
        Lookup::new(hub.clone(), state, self.lookup.clone())
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

    /// Payload bytes in and out of the hubs that are live or have subscribers (as status pages count
    /// them), summed; one lock, no allocation.
    pub fn bytes(&self) -> (u64, u64) {
        self.inner
            .lock()
            .values()
            .filter(|h| !h.is_idle())
            .map(|h| h.bytes())
            .fold((0, 0), |(i, o), (a, b)| (i + a, o + b))
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
    fn bytes_sum_the_hubs_in_use_and_leave_out_idle_ones() {
        use crate::frame::FrameKind;
        use bytes::Bytes;
        let streams = Streams::default();
        let a = streams.get_or_create("a").attach(SourceKind::Publisher);
        let b = streams.get_or_create("b").attach(SourceKind::Publisher);
        let mut player = streams.get("a").unwrap().subscribe(SubscriberKind::Player);
        a.push_media(
            FrameKind::Video,
            0,
            Bytes::from_static(&[0x17, 1, 0, 0, 0, 9]),
        )
        .unwrap();
        b.push_media(FrameKind::Audio, 0, Bytes::from_static(&[0xaf, 1, 0x21]))
            .unwrap();
        while player.try_next().unwrap().is_some() {}
        assert_eq!(
            streams.bytes(),
            (6 + 3, 6),
            "in: both hubs; out: a's player"
        );
        drop(b);
        assert_eq!(streams.bytes(), (6, 6), "b went idle: not counted");
    }

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
