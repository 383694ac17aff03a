//! What the node still owes the coordinator, kept on disk so that an outage or a restart loses nothing:
//! the latest receipt of each series (a newer receipt of a series replaces the older one, since receipts are
//! cumulative) and session opens/closes in order. Bounded in both; when full the oldest goes, counted.
//!
//! The file is JSON written atomically (temporary file, fsync, rename). Delivery is at least once; the
//! server deduplicates (receipt counters, idempotent session ids), so nothing is credited twice.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::{SessionCloseRequest, SessionOpenRequest};
use crate::receipt::{SeriesKey, SignedReceipt};
use crate::time::DAY_MS;

/// File name inside the queue directory.
pub const OUTBOX_FILE: &str = "coordinator-outbox.json";
/// Largest outbox file read back.
const MAX_FILE: u64 = 32 * 1024 * 1024;

/// A session event waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionEvent {
    /// A local player started.
    Open(SessionOpenRequest),
    /// It ended.
    Close(SessionCloseRequest),
}

/// Bounds of the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Receipt series kept (one receipt each).
    pub max_receipts: usize,
    /// Session events kept.
    pub max_session_events: usize,
    /// Receipts older than this (by window end) are dropped: the coordinator would not pay them anyway
    /// once the receiver's series moved on, and the disk is not a landfill.
    pub max_receipt_age_ms: i64,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_receipts: 4096,
            max_session_events: 1024,
            max_receipt_age_ms: 7 * DAY_MS,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct File {
    receipts: Vec<SignedReceipt>,
    sessions: Vec<SessionEvent>,
}

/// The queue.
#[derive(Debug)]
pub struct Outbox {
    path: Option<PathBuf>,
    limits: OutboxLimits,
    receipts: BTreeMap<SeriesKey, SignedReceipt>,
    sessions: VecDeque<SessionEvent>,
    dropped: u64,
    dirty: bool,
}

impl Outbox {
    /// An outbox that lives only in memory (when the directory is unusable).
    pub fn in_memory(limits: OutboxLimits) -> Self {
        Outbox {
            path: None,
            limits,
            receipts: BTreeMap::new(),
            sessions: VecDeque::new(),
            dropped: 0,
            dirty: false,
        }
    }

    /// Opens (creating `dir` if needed) and loads what a previous run left. An unreadable file is moved
    /// aside as `.corrupt` and the outbox starts empty; the error says so. A directory that cannot be
    /// created gives an in-memory outbox and an error.
    pub fn open(dir: &Path, limits: OutboxLimits) -> (Self, Option<String>) {
        let mut outbox = Outbox::in_memory(limits);
        if let Err(e) = std::fs::create_dir_all(dir) {
            return (
                outbox,
                Some(format!(
                    "cannot create coordinator queue directory {}: {e}; receipts are kept in memory only",
                    dir.display()
                )),
            );
        }
        let path = dir.join(OUTBOX_FILE);
        outbox.path = Some(path.clone());
        let warning = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("cannot read {}: {e}", path.display())),
            Ok(meta) if meta.len() > MAX_FILE => Some(outbox.set_aside(&path, "too large")),
            Ok(_) => match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<File>(&b).map_err(|e| e.to_string()))
            {
                Ok(file) => {
                    for r in file.receipts {
                        outbox.push_receipt(r);
                    }
                    for s in file.sessions {
                        outbox.push_session(s);
                    }
                    outbox.dirty = false;
                    None
                }
                Err(e) => Some(outbox.set_aside(&path, &e)),
            },
        };
        (outbox, warning)
    }

    fn set_aside(&self, path: &Path, why: &str) -> String {
        let aside = path.with_extension("json.corrupt");
        let _ = std::fs::rename(path, &aside);
        format!(
            "coordinator queue {} was unreadable ({why}); moved to {} and starting empty",
            path.display(),
            aside.display()
        )
    }

    /// Keeps `r` unless a receipt of its series with a higher counter is already queued.
    pub fn push_receipt(&mut self, r: SignedReceipt) {
        let key = r.receipt.series();
        if let Some(have) = self.receipts.get(&key)
            && have.receipt.counter >= r.receipt.counter
        {
            return;
        }
        self.receipts.insert(key, r);
        self.dirty = true;
        while self.receipts.len() > self.limits.max_receipts {
            let oldest = self
                .receipts
                .iter()
                .min_by_key(|(_, r)| r.receipt.window_end_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.receipts.remove(&k);
                self.dropped += 1;
            }
        }
    }

    /// Queues a session event, dropping the oldest when full.
    pub fn push_session(&mut self, e: SessionEvent) {
        self.sessions.push_back(e);
        self.dirty = true;
        while self.sessions.len() > self.limits.max_session_events {
            self.sessions.pop_front();
            self.dropped += 1;
        }
    }

    /// Up to `n` receipts, oldest window end first.
    pub fn receipts_batch(&self, n: usize) -> Vec<SignedReceipt> {
        let mut all: Vec<_> = self.receipts.values().cloned().collect();
        all.sort_by_key(|r| r.receipt.window_end_ms);
        all.truncate(n);
        all
    }

    /// The coordinator took `r` (credited or refused for good): forget it, unless a newer receipt of the
    /// series arrived meanwhile.
    pub fn acknowledge_receipt(&mut self, r: &SignedReceipt) {
        let key = r.receipt.series();
        if self
            .receipts
            .get(&key)
            .is_some_and(|have| have.receipt.counter <= r.receipt.counter)
        {
            self.receipts.remove(&key);
            self.dirty = true;
        }
    }

    /// The next session event to deliver.
    pub fn front_session(&self) -> Option<&SessionEvent> {
        self.sessions.front()
    }

    /// The front session event was delivered (or refused for good).
    pub fn pop_session(&mut self) {
        if self.sessions.pop_front().is_some() {
            self.dirty = true;
        }
    }

    /// Drops receipts older than the age limit.
    pub fn expire(&mut self, now_ms: i64) {
        let cutoff = now_ms - self.limits.max_receipt_age_ms;
        let before = self.receipts.len();
        self.receipts
            .retain(|_, r| i64::try_from(r.receipt.window_end_ms).unwrap_or(i64::MAX) >= cutoff);
        let gone = before - self.receipts.len();
        if gone > 0 {
            self.dropped += gone as u64;
            self.dirty = true;
        }
    }

    /// Receipts queued.
    pub fn receipt_count(&self) -> usize {
        self.receipts.len()
    }

    /// Session events queued.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Items dropped because a bound was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Writes the outbox if it changed since the last save.
    pub fn save(&mut self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let file = File {
            receipts: self.receipts.values().cloned().collect(),
            sessions: self.sessions.iter().cloned().collect(),
        };
        let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::Receipt;
    use libp2p_identity::Keypair;

    fn signed(receiver: &Keypair, provider: &Keypair, start: u64, counter: u64) -> SignedReceipt {
        Receipt {
            stream: "cam".into(),
            provider: provider.public().to_peer_id(),
            receiver: receiver.public().to_peer_id(),
            bytes: counter * 1000,
            frames: counter,
            window_start_ms: start,
            window_end_ms: start + counter * 10_000,
            counter,
        }
        .sign(receiver)
    }

    fn close(id: &str) -> SessionEvent {
        SessionEvent::Close(SessionCloseRequest {
            session_id: id.into(),
            bytes_received: 1,
            closed_at_ms: 1,
        })
    }

    #[test]
    fn newer_receipts_replace_older_of_the_same_series() {
        let (rx, px) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let mut o = Outbox::in_memory(OutboxLimits::default());
        o.push_receipt(signed(&rx, &px, 0, 2));
        o.push_receipt(signed(&rx, &px, 0, 1));
        assert_eq!(o.receipt_count(), 1);
        assert_eq!(o.receipts_batch(10)[0].receipt.counter, 2);
        o.push_receipt(signed(&rx, &px, 0, 3));
        // The answer for counter 2 arrives after counter 3 was queued: 3 stays.
        o.acknowledge_receipt(&signed(&rx, &px, 0, 2));
        assert_eq!(o.receipt_count(), 1);
        o.acknowledge_receipt(&signed(&rx, &px, 0, 3));
        assert_eq!(o.receipt_count(), 0);
    }

    #[test]
    fn bounds_drop_the_oldest_and_count_it() {
        let (rx, px) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let mut o = Outbox::in_memory(OutboxLimits {
            max_receipts: 2,
            max_session_events: 2,
            max_receipt_age_ms: DAY_MS,
        });
        for start in [100, 0, 200] {
            o.push_receipt(signed(&rx, &px, start, 1));
        }
        let kept: Vec<_> = o
            .receipts_batch(10)
            .iter()
            .map(|r| r.receipt.window_start_ms)
            .collect();
        assert_eq!(kept, [100, 200]);
        for id in ["a", "b", "c"] {
            o.push_session(close(id));
        }
        assert_eq!(o.session_count(), 2);
        assert_eq!(o.dropped(), 2);
        o.expire(DAY_MS + 200 + 10_000 + 1);
        assert_eq!(o.receipt_count(), 0);
    }

    #[test]
    fn survives_a_restart_and_sets_aside_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let (rx, px) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        {
            let (mut o, warn) = Outbox::open(dir.path(), OutboxLimits::default());
            assert!(warn.is_none());
            o.push_receipt(signed(&rx, &px, 0, 4));
            o.push_session(close("s1"));
            o.save().unwrap();
        }
        let (o, warn) = Outbox::open(dir.path(), OutboxLimits::default());
        assert!(warn.is_none());
        assert_eq!(o.receipt_count(), 1);
        assert_eq!(o.front_session(), Some(&close("s1")));
        assert_eq!(o.receipts_batch(1)[0].receipt.counter, 4);
        o.receipts_batch(1)[0].verify().unwrap();

        std::fs::write(dir.path().join(OUTBOX_FILE), b"{not json").unwrap();
        let (o, warn) = Outbox::open(dir.path(), OutboxLimits::default());
        assert!(warn.unwrap().contains("corrupt"));
        assert_eq!(o.receipt_count(), 0);
        assert!(dir.path().join("coordinator-outbox.json.corrupt").exists());
    }
}
