//! The mesh's routing table: for each stream on this node, where it comes from in the mesh (its
//! [`Lineage`]), and for each stream a local player looks for, the state of the fetch that looks for it.
//! Hubs carry frames only; everything the mesh knows about a stream's place in the tree is here.

use crate::announce::Announcement;
use crate::wire::ProviderHint;
use libp2p::PeerId;
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
    /// Where the stream comes from, once known; sessions serving the stream follow changes.
    lineage: watch::Sender<Option<Arc<Lineage>>>,
    /// While a fetch runs: its progress, and the players' lookups that follow it.
    fetch: Option<Fetch>,
}

/// A running fetch as the table sees it.
#[derive(Debug)]
struct Fetch {
    state: LookupState,
    watchers: Vec<watch::Sender<LookupState>>,
}

impl Route {
    fn new(hub: &Arc<Hub>) -> Self {
        Route {
            hub: Arc::downgrade(hub),
            lineage: watch::channel(None).0,
            fetch: None,
        }
    }

    fn is(&self, hub: &Arc<Hub>) -> bool {
        std::ptr::eq(self.hub.as_ptr(), Arc::as_ptr(hub))
    }
}

/// The routing table, owned by the mesh service's actor. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    rows: HashMap<String, Route>,
}

impl Routes {
    /// Where `hub`'s stream comes from.
    pub(crate) fn lineage(&self, hub: &Arc<Hub>) -> Option<Arc<Lineage>> {
        let r = self.rows.get(hub.name())?;
        if r.is(hub) {
            r.lineage.borrow().clone()
        } else {
            None
        }
    }

    /// Follows `hub`'s lineage (a session serving the stream tells its subscriber when it changes).
    pub(crate) fn watch_lineage(
        &mut self,
        hub: &Arc<Hub>,
    ) -> watch::Receiver<Option<Arc<Lineage>>> {
        self.row(hub).lineage.subscribe()
    }

    /// Records where `hub`'s stream comes from.
    pub(crate) fn set_lineage(&mut self, hub: &Arc<Hub>, lineage: Arc<Lineage>) {
        self.row(hub).lineage.send_replace(Some(lineage));
    }

    /// Adds a player's lookup to the fetch of `hub`, starting to track one unless it runs: returns whether
    /// this call started it.
    pub(crate) fn start_fetch(
        &mut self,
        hub: &Arc<Hub>,
        watcher: watch::Sender<LookupState>,
    ) -> bool {
        let row = self.row(hub);
        match &mut row.fetch {
            Some(f) => {
                watcher.send_replace(f.state.clone());
                f.watchers.push(watcher);
                false
            }
            None => {
                row.fetch = Some(Fetch {
                    state: LookupState::Searching,
                    watchers: vec![watcher],
                });
                true
            }
        }
    }

    /// Reports a running fetch's progress to the players waiting for it.
    pub(crate) fn set_fetch_state(&mut self, name: &str, state: LookupState) {
        if let Some(f) = self.rows.get_mut(name).and_then(|r| r.fetch.as_mut())
            && f.state != state
        {
            f.state = state;
            f.watchers.retain(|w| w.send(f.state.clone()).is_ok());
        }
    }

    /// The fetch of `name` ended: waiting players go on by the clock alone.
    pub(crate) fn end_fetch(&mut self, name: &str) {
        if let Some(r) = self.rows.get_mut(name) {
            r.fetch = None;
        }
    }

    /// True while a fetch of `name` runs.
    pub(crate) fn is_fetching(&self, name: &str) -> bool {
        self.rows.get(name).is_some_and(|r| r.fetch.is_some())
    }

    /// Live hubs with a lineage (what this node can provide).
    pub(crate) fn provided(&self) -> Vec<(Arc<Hub>, Arc<Lineage>)> {
        self.rows
            .values()
            .filter_map(|r| Some((r.hub.upgrade()?, r.lineage.borrow().clone()?)))
            .filter(|(h, _)| h.is_live())
            .collect()
    }

    /// Every hub with a lineage, live or not (for status pages).
    pub(crate) fn all(&self) -> Vec<(Arc<Hub>, Arc<Lineage>)> {
        self.rows
            .values()
            .filter_map(|r| Some((r.hub.upgrade()?, r.lineage.borrow().clone()?)))
            .collect()
    }

    /// Forgets rows of hubs that no longer exist and have no fetch.
    pub(crate) fn prune(&mut self) {
        self.rows
            .retain(|_, r| r.fetch.is_some() || r.hub.strong_count() > 0);
    }

    fn row(&mut self, hub: &Arc<Hub>) -> &mut Route {
        let row = self
            .rows
            .entry(hub.name().to_string())
            .or_insert_with(|| Route::new(hub));
        if !row.is(hub) {
            // The name now belongs to a new hub: what we knew about the old one does not apply.
            let fetch = row.fetch.take();
            *row = Route::new(hub);
            row.fetch = fetch;
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
        let mut routes = Routes::default();
        let hub = Hub::new("s", HubConfig::default());
        routes.set_lineage(&hub, lineage(0));
        assert_eq!(routes.lineage(&hub).unwrap().hops, 0);
        // The hub is forgotten and a new one is made under the same name: it has no lineage yet.
        drop(hub);
        let again = Hub::new("s", HubConfig::default());
        assert!(routes.lineage(&again).is_none());
        routes.prune();
        assert!(routes.rows.is_empty());
    }

    #[tokio::test]
    async fn one_fetch_per_stream_and_players_follow_its_state() {
        let mut routes = Routes::default();
        let hub = Hub::new("s", HubConfig::default());
        let (tx, mut first) = watch::channel(LookupState::Searching);
        assert!(routes.start_fetch(&hub, tx));
        routes.set_fetch_state("s", LookupState::Connecting);
        first.changed().await.unwrap();
        assert_eq!(*first.borrow_and_update(), LookupState::Connecting);
        let (tx, second) = watch::channel(LookupState::Searching);
        assert!(
            !routes.start_fetch(&hub, tx),
            "a second player joins the running fetch"
        );
        assert_eq!(
            *second.borrow(),
            LookupState::Connecting,
            "and learns where it stands"
        );
        assert!(routes.is_fetching("s"));
        routes.end_fetch("s");
        assert!(first.changed().await.is_err(), "players see the fetch end");
    }
}
