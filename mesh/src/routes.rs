//! The mesh's routing table: for each stream on this node, where it comes from in the mesh (its
//! [`Lineage`]), and for each stream a local player looks for, the state of the fetch that looks for it.
//! Hubs carry frames only; everything the mesh knows about a stream's place in the tree is here.

use crate::announce::Announcement;
use crate::wire::ProviderHint;
use libp2p::PeerId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use streamr_media::{Hub, LookupState};
use tokio::sync::watch;

/// Where a stream on this node comes from in the mesh: the origin's announcement and the path to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// The origin's signed announcement.
    pub announcement: Announcement,
    /// This node's distance from the origin (0 = this node is the origin).
    pub hops: u8,
    /// Peers from the origin to this node, inclusive.
    pub path: Vec<PeerId>,
    /// The peer this node receives the stream from (None at the origin).
    pub upstream: Option<PeerId>,
    /// Nodes above the upstream that hold the stream, to try if the upstream dies.
    pub fallbacks: Vec<ProviderHint>,
}

/// One row of the table.
#[derive(Debug)]
struct Route {
    /// The hub this row describes. A hub that was forgotten and created again under the same name is
    /// another stream: the row only counts while it points at the hub that exists now.
    hub: Weak<Hub>,
    /// Where the stream comes from, once known.
    lineage: Option<Arc<Lineage>>,
    /// The fetch's progress while one runs; players' lookups follow it.
    fetch: Option<watch::Sender<LookupState>>,
}

impl Route {
    fn is(&self, hub: &Arc<Hub>) -> bool {
        std::ptr::eq(self.hub.as_ptr(), Arc::as_ptr(hub))
    }
}

/// The routing table. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    rows: Mutex<HashMap<String, Route>>,
}

impl Routes {
    /// Where `hub`'s stream comes from.
    pub(crate) fn lineage(&self, hub: &Arc<Hub>) -> Option<Arc<Lineage>> {
        let rows = self.rows.lock();
        let r = rows.get(hub.name())?;
        if r.is(hub) { r.lineage.clone() } else { None }
    }

    /// Records where `hub`'s stream comes from.
    pub(crate) fn set_lineage(&self, hub: &Arc<Hub>, lineage: Arc<Lineage>) {
        let mut rows = self.rows.lock();
        let row = Self::row(&mut rows, hub);
        row.lineage = Some(lineage);
    }

    /// Starts tracking a fetch of `hub`, unless one runs: returns whether this call started it, and the
    /// fetch's progress for a player's lookup.
    pub(crate) fn start_fetch(&self, hub: &Arc<Hub>) -> (bool, watch::Receiver<LookupState>) {
        let mut rows = self.rows.lock();
        let row = Self::row(&mut rows, hub);
        match &row.fetch {
            Some(tx) => (false, tx.subscribe()),
            None => {
                let (tx, rx) = watch::channel(LookupState::Searching);
                row.fetch = Some(tx);
                (true, rx)
            }
        }
    }

    /// Reports a running fetch's progress to the players waiting for it.
    pub(crate) fn set_fetch_state(&self, name: &str, state: LookupState) {
        if let Some(tx) = self.rows.lock().get(name).and_then(|r| r.fetch.as_ref()) {
            tx.send_if_modified(|s| {
                let changed = *s != state;
                *s = state;
                changed
            });
        }
    }

    /// The fetch of `name` ended: waiting players go on by the clock alone.
    pub(crate) fn end_fetch(&self, name: &str) {
        if let Some(r) = self.rows.lock().get_mut(name) {
            r.fetch = None;
        }
    }

    /// Live hubs with a lineage (what this node can provide), by name.
    pub(crate) fn provided(&self) -> Vec<(Arc<Hub>, Arc<Lineage>)> {
        self.rows
            .lock()
            .values()
            .filter_map(|r| Some((r.hub.upgrade()?, r.lineage.clone()?)))
            .filter(|(h, _)| h.is_live())
            .collect()
    }

    /// Forgets rows of hubs that no longer exist and have no fetch.
    pub(crate) fn prune(&self) {
        self.rows
            .lock()
            .retain(|_, r| r.fetch.is_some() || r.hub.strong_count() > 0);
    }

    fn row<'a>(rows: &'a mut HashMap<String, Route>, hub: &Arc<Hub>) -> &'a mut Route {
        let row = rows.entry(hub.name().to_string()).or_insert_with(|| Route {
            hub: Arc::downgrade(hub),
            lineage: None,
            fetch: None,
        });
        if !row.is(hub) {
            // The name now belongs to a new hub: what we knew about the old one does not apply.
            *row = Route {
                hub: Arc::downgrade(hub),
                lineage: None,
                fetch: row.fetch.take(),
            };
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;
    use streamr_media::HubConfig;

    fn lineage(hops: u8) -> Arc<Lineage> {
        let key = Keypair::generate_ed25519();
        let announcement = Announcement::sign(&key, "s", 1).unwrap();
        Arc::new(Lineage {
            announcement,
            hops,
            path: vec![key.public().to_peer_id()],
            upstream: None,
            fallbacks: Vec::new(),
        })
    }

    #[test]
    fn a_lineage_belongs_to_its_hub_not_to_the_name() {
        let routes = Routes::default();
        let hub = Hub::new("s", HubConfig::default());
        routes.set_lineage(&hub, lineage(0));
        assert_eq!(routes.lineage(&hub).unwrap().hops, 0);
        // The hub is forgotten and a new one is made under the same name: it has no lineage yet.
        drop(hub);
        let again = Hub::new("s", HubConfig::default());
        assert!(routes.lineage(&again).is_none());
        routes.prune();
        assert!(routes.rows.lock().is_empty());
    }

    #[tokio::test]
    async fn one_fetch_per_stream_and_players_follow_its_state() {
        let routes = Routes::default();
        let hub = Hub::new("s", HubConfig::default());
        let (started, mut first) = routes.start_fetch(&hub);
        assert!(started);
        let (again, second) = routes.start_fetch(&hub);
        assert!(!again, "a second player joins the running fetch");
        routes.set_fetch_state("s", LookupState::Connecting);
        first.changed().await.unwrap();
        assert_eq!(*second.borrow(), LookupState::Connecting);
        routes.end_fetch("s");
        assert!(first.changed().await.is_err(), "players see the fetch end");
    }
}
