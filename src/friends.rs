//! Friends: the nodes whose invites this node accepted, kept in `friends.json` in the data dir (written
//! atomically; a damaged file stops the node with a message rather than being overwritten). Friends are the
//! node's bootstrap peers on every start, and their streams win a plain stream name.

use crate::datafile::write_atomic;
use anyhow::Context;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name in the data dir.
pub const FRIENDS_FILE: &str = "friends.json";

/// One friend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Friend {
    /// Their node id.
    pub peer_id: String,
    /// Their nickname, from their invite.
    #[serde(default)]
    pub nickname: Option<String>,
    /// Where their node was reachable, best first (from the invite).
    #[serde(default)]
    pub addrs: Vec<String>,
    /// When they were added (unix seconds).
    #[serde(default)]
    pub added: u64,
}

impl Friend {
    /// Their node id, parsed.
    pub fn id(&self) -> Option<PeerId> {
        self.peer_id.parse().ok()
    }

    /// Their addresses with `/p2p/<id>`, as bootstrap addresses.
    pub fn bootstrap_addrs(&self) -> Vec<Multiaddr> {
        let Some(id) = self.id() else {
            return Vec::new();
        };
        self.addrs
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .map(|a| match a.iter().last() {
                Some(Protocol::P2p(_)) => a,
                _ => a.with(Protocol::P2p(id)),
            })
            .collect()
    }
}

/// The friend list and its file.
#[derive(Debug)]
pub struct FriendBook {
    path: PathBuf,
    friends: Vec<Friend>,
}

impl FriendBook {
    /// Reads `friends.json` (none yet is an empty list).
    pub fn load(data_dir: &Path) -> anyhow::Result<FriendBook> {
        let path = data_dir.join(FRIENDS_FILE);
        let friends = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                anyhow::anyhow!(
                    "{} is damaged ({e}): fix it, or move it away to start with no friends (they can invite \
                     you again)",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(FriendBook { path, friends })
    }

    /// Every friend.
    pub fn list(&self) -> &[Friend] {
        &self.friends
    }

    /// Adds or updates a friend (new addresses and nickname win) and saves; on a failed save, nothing
    /// changes in memory either.
    pub fn upsert(&mut self, friend: Friend) -> anyhow::Result<()> {
        let mut next = self.friends.clone();
        match next.iter_mut().find(|f| f.peer_id == friend.peer_id) {
            Some(f) => {
                f.nickname = friend.nickname.or(f.nickname.take());
                f.addrs = friend.addrs;
            }
            None => next.push(friend),
        }
        write_atomic(&self.path, &serde_json::to_vec_pretty(&next)?, false)?;
        self.friends = next;
        Ok(())
    }

    /// Every friend's bootstrap addresses.
    pub fn bootstrap_addrs(&self) -> Vec<Multiaddr> {
        self.friends
            .iter()
            .flat_map(Friend::bootstrap_addrs)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn friends_persist_update_and_become_bootstrap_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let id = PeerId::random();
        let mut book = FriendBook::load(dir.path()).unwrap();
        assert!(book.list().is_empty());
        book.upsert(Friend {
            peer_id: id.to_string(),
            nickname: Some("Alice".into()),
            addrs: vec!["/ip4/198.51.100.1/udp/4001/quic-v1".into()],
            added: 1,
        })
        .unwrap();
        book.upsert(Friend {
            peer_id: id.to_string(),
            nickname: None,
            addrs: vec!["/ip4/198.51.100.2/udp/4001/quic-v1".into()],
            added: 2,
        })
        .unwrap();
        let book = FriendBook::load(dir.path()).unwrap();
        assert_eq!(book.list().len(), 1);
        assert_eq!(book.list()[0].nickname.as_deref(), Some("Alice"));
        assert_eq!(
            book.bootstrap_addrs()[0].to_string(),
            format!("/ip4/198.51.100.2/udp/4001/quic-v1/p2p/{id}")
        );
        std::fs::write(dir.path().join(FRIENDS_FILE), "[{").unwrap();
        let e = FriendBook::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("friends.json") && e.contains("move it away"),
            "{e}"
        );
    }
}
