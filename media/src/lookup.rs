//! Stream lookups: a player asks for a stream that is not live on this node, and waits on one handle while
//! something else (the mesh) looks for it. The rule for how long a player waits lives here, once: while the
//! finder is still searching, up to [`LookupConfig::search_wait`]; once it has found providers and is
//! connecting, up to [`LookupConfig::connect_wait`]; a local publisher who starts meanwhile ends the wait.

use crate::hub::Hub;
use std::fmt;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::{Duration, Instant};

/// Where a lookup stands, as the finder reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupState {
    /// Looking for a node that has the stream.
    Searching,
    /// Nodes that have it are known; subscribing to one of them.
    Connecting,
    /// The finder gave up; the text says why, in words for the person at the player.
    NotFound(String),
}

/// Something that looks for streams elsewhere: the mesh.
pub trait Finder: Send + Sync + fmt::Debug + 'static {
    /// Starts (or joins) the search for hub `name` and reports its progress.
    fn find(&self, name: &str) -> watch::Receiver<LookupState>;
}

/// How long a player waits for a stream that is not live here.
#[derive(Debug, Clone)]
pub struct LookupConfig {
    /// While nobody has been found that holds the stream.
    pub search_wait: Duration,
    /// In all, once the finder knows nodes that hold it (in a large or busy mesh the first ones tried may be
    /// full or unreachable).
    pub connect_wait: Duration,
}

impl Default for LookupConfig {
    fn default() -> Self {
        LookupConfig {
            search_wait: Duration::from_secs(10),
            connect_wait: Duration::from_secs(45),
        }
    }
}

/// Why a lookup ended without the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotFound {
    /// Nobody has it, as far as this node can tell.
    #[error(
        "no stream named {0:?} is being published here or in the mesh; check the name or start the publisher first"
    )]
    Nowhere(String),
    /// Nodes that hold it are known, but none delivered it in time.
    #[error(
        "stream {name:?} is in the mesh but no node delivered it within {secs} s (providers full or unreachable); try again in a moment"
    )]
    Undelivered {
        /// The stream.
        name: String,
        /// How long the player waited.
        secs: u64,
    },
    /// The finder's own reason.
    #[error("{0}")]
    Finder(String),
}

/// A player's wait for one stream. See the module docs.
#[derive(Debug)]
pub struct Lookup {
    hub: Arc<Hub>,
    live: watch::Receiver<bool>,
    state: Option<watch::Receiver<LookupState>>,
    requested: Instant,
    config: LookupConfig,
}

impl Lookup {
    pub(crate) fn new(
        hub: Arc<Hub>,
        state: Option<watch::Receiver<LookupState>>,
        config: LookupConfig,
    ) -> Self {
        Lookup {
            live: hub.watch_live(),
            hub,
            state,
            requested: Instant::now(),
            config,
        }
    }

    /// The hub looked for.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// What the finder says now (`Searching` when there is no finder).
    pub fn state(&self) -> LookupState {
        self.state
            .as_ref()
            .map_or(LookupState::Searching, |s| s.borrow().clone())
    }

    /// Waits until the stream is live here (`Ok`) or the lookup gives up. Cancel-safe.
    pub async fn settled(&mut self) -> Result<(), NotFound> {
        loop {
            if *self.live.borrow_and_update() {
                return Ok(());
            }
            let state = self.state();
            let deadline = match &state {
                LookupState::Searching => self.requested + self.config.search_wait,
                LookupState::Connecting => self.requested + self.config.connect_wait,
                LookupState::NotFound(why) => return Err(NotFound::Finder(why.clone())),
            };
            if Instant::now() >= deadline {
                let name = self.hub.name().to_string();
                return Err(match state {
                    LookupState::Connecting => NotFound::Undelivered {
                        name,
                        secs: self.config.connect_wait.as_secs(),
                    },
                    _ => NotFound::Nowhere(name),
                });
            }
            let Lookup { live, state, .. } = self;
            let finder_changed = async {
                match state.as_mut() {
                    Some(s) => {
                        if s.changed().await.is_err() {
                            // The finder is gone (a mesh restart): the wait goes on by the clock alone.
                            *state = None;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = live.changed() => {}
                _ = finder_changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HubConfig, SourceKind, Streams};
    use parking_lot::Mutex;

    /// A finder whose state the test sets.
    #[derive(Debug)]
    struct Manual(Mutex<Option<watch::Sender<LookupState>>>);

    impl Finder for Manual {
        fn find(&self, _name: &str) -> watch::Receiver<LookupState> {
            let (tx, rx) = watch::channel(LookupState::Searching);
            *self.0.lock() = Some(tx);
            rx
        }
    }

    fn streams_with(finder: Option<Arc<Manual>>) -> Streams {
        let s = Streams::new(HubConfig::default());
        s.set_finder(finder.map(|f| f as Arc<dyn Finder>));
        s
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_found_ends_after_the_search_wait() {
        let streams = streams_with(None);
        let hub = streams.get_or_create("a");
        let started = Instant::now();
        let err = streams.request(&hub).settled().await.unwrap_err();
        assert_eq!(err, NotFound::Nowhere("a".into()));
        assert_eq!(started.elapsed(), LookupConfig::default().search_wait);
    }

    #[tokio::test(start_paused = true)]
    async fn a_found_stream_gets_the_longer_wait_and_a_local_publish_ends_it() {
        let finder = Arc::new(Manual(Mutex::new(None)));
        let streams = streams_with(Some(finder.clone()));
        let hub = streams.get_or_create("a");
        let mut lookup = streams.request(&hub);
        finder
            .0
            .lock()
            .as_ref()
            .unwrap()
            .send_replace(LookupState::Connecting);
        let started = Instant::now();
        let err = lookup.settled().await.unwrap_err();
        assert!(
            matches!(err, NotFound::Undelivered { secs: 45, .. }),
            "{err}"
        );
        assert_eq!(started.elapsed(), LookupConfig::default().connect_wait);

        // A second player; the stream goes live after 20 s.
        let mut lookup = streams.request(&hub);
        finder
            .0
            .lock()
            .as_ref()
            .unwrap()
            .send_replace(LookupState::Connecting);
        let h = hub.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(20)).await;
            std::mem::forget(h.attach(SourceKind::Publisher));
        });
        lookup.settled().await.unwrap();
        assert!(hub.is_live());
        // A live stream settles at once, without asking the finder.
        assert!(streams.request(&hub).settled().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_finders_own_verdict_ends_the_wait_with_its_words() {
        let finder = Arc::new(Manual(Mutex::new(None)));
        let streams = streams_with(Some(finder.clone()));
        let hub = streams.get_or_create("a");
        let mut lookup = streams.request(&hub);
        finder
            .0
            .lock()
            .as_ref()
            .unwrap()
            .send_replace(LookupState::NotFound("bad name".into()));
        assert_eq!(lookup.settled().await.unwrap_err().to_string(), "bad name");
    }
}
