//! Viewing sessions: one per (this node, stream) while local players (RTMP or HTTP-FLV) watch a stream that
//! comes from another node. The node observes its hubs' player counts once a second; [`SessionTracker`]
//! (plain code) turns what it sees into opens and closes for the coordinator. A session's total is the
//! stream's bytes this node received while it was open. Streams this node publishes get no session: the
//! coordinator counts the origin's own players already.
//!
//! Open sessions are also written to `sessions.json` in the coordinator's queue directory: a node that is
//! killed closes them at its next start, so they do not count as viewers until the coordinator notices the
//! node went offline.

use crate::datafile::write_atomic;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use streamr_web::SessionStatus;

/// File of the open sessions, in the queue directory.
pub const SESSIONS_FILE: &str = "sessions.json";

/// What the node sees of one hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watching {
    /// Stream name (without an `@ORIGIN` choice).
    pub stream: String,
    /// Its origin, once the mesh knows it.
    pub origin: Option<PeerId>,
    /// Local players now.
    pub players: u64,
    /// The stream arrives from another node now (not published here).
    pub from_mesh: bool,
    /// Bytes the hub received so far.
    pub bytes_in: u64,
}

/// An open session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Open {
    session_id: String,
    players: u64,
    /// Bytes received since it opened.
    bytes: u64,
    /// The hubs' byte count at the last look (a hub that is replaced starts again at 0).
    last_bytes_in: u64,
}

/// Sessions as plain code: feed it what the hubs show, it says what to open and close.
#[derive(Debug, Default)]
pub struct SessionTracker {
    open: BTreeMap<(String, Option<PeerId>), Open>,
}

/// What to tell the coordinator after an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Open a session (the tracker already holds the id `open` returned).
    Opened {
        /// Session id.
        session_id: String,
        /// Stream.
        stream: String,
    },
    /// Close one with its total.
    Closed {
        /// Session id.
        session_id: String,
        /// Bytes received while it was open.
        bytes: u64,
    },
}

impl SessionTracker {
    /// Takes one look at the hubs. `open` tells the coordinator a session started and returns its id.
    pub fn observe(
        &mut self,
        seen: &[Watching],
        mut open: impl FnMut(&str, Option<PeerId>) -> String,
    ) -> Vec<Change> {
        // Several hubs may carry one stream (`cam` and `cam@12D3KooW...`): one session for them.
        let mut now: BTreeMap<(String, Option<PeerId>), (u64, bool, u64)> = BTreeMap::new();
        for w in seen {
            let e = now
                .entry((w.stream.clone(), w.origin))
                .or_insert((0, false, 0));
            e.0 += w.players;
            e.1 |= w.from_mesh;
            e.2 += w.bytes_in;
        }
        // Count the bytes of the last look first: a session that closes now still gets them.
        for (key, (players, _, bytes_in)) in &now {
            if let Some(s) = self.open.get_mut(key) {
                s.players = *players;
                s.bytes += if *bytes_in >= s.last_bytes_in {
                    bytes_in - s.last_bytes_in
                } else {
                    *bytes_in
                };
                s.last_bytes_in = *bytes_in;
            }
        }
        let mut changes = Vec::new();
        let gone: Vec<_> = self
            .open
            .keys()
            .filter(|k| now.get(*k).is_none_or(|(players, _, _)| *players == 0))
            .cloned()
            .collect();
        for key in gone {
            if let Some(s) = self.open.remove(&key) {
                changes.push(Change::Closed {
                    session_id: s.session_id,
                    bytes: s.bytes,
                });
            }
        }
        for (key, (players, from_mesh, bytes_in)) in now {
            if players > 0 && from_mesh && !self.open.contains_key(&key) {
                let session_id = open(&key.0, key.1);
                changes.push(Change::Opened {
                    session_id: session_id.clone(),
                    stream: key.0.clone(),
                });
                self.open.insert(
                    key,
                    Open {
                        session_id,
                        players,
                        bytes: 0,
                        last_bytes_in: bytes_in,
                    },
                );
            }
        }
        changes
    }

    /// Closes every session (the node stops); returns what to tell the coordinator.
    pub fn close_all(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.open)
            .into_values()
            .map(|s| Change::Closed {
                session_id: s.session_id,
                bytes: s.bytes,
            })
            .collect()
    }

    /// The open sessions, for the status page.
    pub fn status(&self) -> Vec<SessionStatus> {
        self.open
            .iter()
            .map(|((stream, origin), s)| SessionStatus {
                session_id: s.session_id.clone(),
                stream: stream.clone(),
                origin: origin.map(|o| o.to_string()),
                players: s.players,
                bytes: s.bytes,
            })
            .collect()
    }

    /// What [`SessionFile`] keeps.
    pub fn saved(&self) -> Vec<SavedSession> {
        self.open
            .values()
            .map(|s| SavedSession {
                session_id: s.session_id.clone(),
                bytes: s.bytes,
            })
            .collect()
    }
}

/// An open session as `sessions.json` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    /// Its id.
    pub session_id: String,
    /// Bytes when last saved.
    pub bytes: u64,
}

/// `sessions.json`.
#[derive(Debug, Clone)]
pub struct SessionFile {
    path: PathBuf,
}

impl SessionFile {
    /// The file in `dir`.
    pub fn new(dir: &Path) -> Self {
        SessionFile {
            path: dir.join(SESSIONS_FILE),
        }
    }

    /// Sessions a previous run left open (an unreadable file counts as none: they close as "offline" at
    /// the coordinator anyway).
    pub fn leftovers(&self) -> Vec<SavedSession> {
        std::fs::read(&self.path)
            .ok()
            .filter(|b| b.len() < 1 << 20)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Saves the open sessions.
    pub fn save(&self, open: &[SavedSession]) -> anyhow::Result<()> {
        let text = serde_json::to_vec(open)?;
        write_atomic(&self.path, &text, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(stream: &str, origin: PeerId, players: u64, from_mesh: bool, bytes_in: u64) -> Watching {
        Watching {
            stream: stream.into(),
            origin: Some(origin),
            players,
            from_mesh,
            bytes_in,
        }
    }

    #[test]
    fn one_session_per_stream_from_first_player_to_last_with_the_bytes_between() {
        let o = PeerId::random();
        let mut t = SessionTracker::default();
        let mut n = 0;
        let mut ids = |_: &str, _: Option<PeerId>| {
            n += 1;
            format!("{n:032x}")
        };
        // A waiting player (not live yet): nothing.
        assert!(t.observe(&[w("cam", o, 1, false, 0)], &mut ids).is_empty());
        let c = t.observe(&[w("cam", o, 1, true, 1000)], &mut ids);
        assert!(matches!(&c[..], [Change::Opened { stream, .. }] if stream == "cam"));
        // A second player, and a second hub of the same stream (`cam@...`): still one session.
        assert!(
            t.observe(
                &[w("cam", o, 2, true, 5000), w("cam", o, 1, true, 0)],
                &mut ids
            )
            .is_empty()
        );
        assert_eq!(t.status().len(), 1);
        assert_eq!(t.status()[0].players, 3);
        let c = t.observe(&[w("cam", o, 0, true, 9000)], &mut ids);
        assert_eq!(
            c,
            vec![Change::Closed {
                session_id: format!("{:032x}", 1),
                bytes: 8000
            }]
        );
        assert!(t.status().is_empty());
    }

    #[test]
    fn own_streams_get_none_and_a_vanished_hub_closes() {
        let o = PeerId::random();
        let mut t = SessionTracker::default();
        let ids = |_: &str, _: Option<PeerId>| "x".repeat(32);
        assert!(t.observe(&[w("mine", o, 3, false, 100)], ids).is_empty());
        t.observe(&[w("cam", o, 1, true, 100)], ids);
        // The hub was replaced (its counter starts again), then went away.
        t.observe(&[w("cam", o, 1, true, 50)], ids);
        let c = t.observe(&[], ids);
        assert_eq!(
            c,
            vec![Change::Closed {
                session_id: "x".repeat(32),
                bytes: 50
            }]
        );
        t.observe(&[w("cam", o, 1, true, 100)], ids);
        assert_eq!(t.close_all().len(), 1);
        assert!(t.saved().is_empty());
    }

    #[test]
    fn the_file_keeps_open_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let f = SessionFile::new(dir.path());
        assert!(f.leftovers().is_empty());
        let s = vec![SavedSession {
            session_id: "a".repeat(32),
            bytes: 7,
        }];
        f.save(&s).unwrap();
        assert_eq!(f.leftovers(), s);
        std::fs::write(dir.path().join(SESSIONS_FILE), b"{broken").unwrap();
        assert!(f.leftovers().is_empty());
    }
}
