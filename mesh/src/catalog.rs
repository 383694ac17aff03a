//! The catalog: which streams exist in the mesh and who provides them. Connected nodes gossip their
//! catalogs every few seconds, so any node can list the mesh's streams and find providers with no
//! coordinator. Every entry carries the origin's signed announcement; forged entries are refused and
//! counted. Plain code with no sockets: time is a parameter.
//!
//! Gossip is first-hand, like a distance-vector protocol: a node only ever advertises itself, as a provider
//! of the streams it holds (at its distance from the origin) and of the streams it can fetch from a
//! neighbour (one hop further). So a viewer finds the stream at the neighbours it is already connected
//! to, and a stream spreads along the mesh as a tree instead of every viewer dialing the origin. Split
//! horizon (a stream learned from a peer is not offered back to it) and a hop limit stop counting to
//! infinity; the media protocol's path check stops any loop that slips through.

use crate::announce::{Announcement, StreamId};
use crate::codec::{Reader, WireError, Writer};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The gossip protocol: one message per stream, then close.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/streamr/catalog/1");
/// Largest catalog message accepted.
pub const MAX_MESSAGE: usize = 256 << 10;
/// Most entries in one message.
pub const MAX_ENTRIES: usize = 256;
/// An entry not heard of again for this long is forgotten.
pub const ENTRY_TTL: Duration = Duration::from_secs(12);
/// Entries more hops from the origin than this are not passed on (bounds gossip in large meshes).
pub const MAX_GOSSIP_HOPS: u8 = 16;

/// One provider of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The origin's announcement.
    pub announcement: Announcement,
    /// A node that holds the stream and serves it.
    pub provider: PeerId,
    /// Where the provider can be dialed.
    pub addrs: Vec<Multiaddr>,
    /// The provider's distance from the origin.
    pub hops: u8,
    /// Upload the provider has left, kbit/s.
    pub spare_kbps: u32,
}

impl CatalogEntry {
    fn write(&self, w: &mut Writer) {
        self.announcement.write(w);
        w.peer(&self.provider);
        w.addrs(&self.addrs);
        w.u8(self.hops);
        w.u32(self.spare_kbps);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(CatalogEntry {
            announcement: Announcement::read(r)?,
            provider: r.peer()?,
            addrs: r.addrs()?,
            hops: r.u8()?,
            spare_kbps: r.u32()?,
        })
    }
}

/// Encodes a catalog message (without a length prefix: the stream carries one message).
pub fn encode(entries: &[CatalogEntry]) -> Vec<u8> {
    let entries = &entries[..entries.len().min(MAX_ENTRIES)];
    let mut w = Writer::with_capacity(64 + entries.len() * 256);
    w.u16(entries.len() as u16);
    for e in entries {
        e.write(&mut w);
    }
    w.finish().to_vec()
}

/// Decodes a catalog message.
pub fn decode(bytes: &[u8]) -> Result<Vec<CatalogEntry>, WireError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::TooLong {
            what: "catalog",
            len: bytes.len() as u64,
            max: MAX_MESSAGE as u64,
        });
    }
    let mut r = Reader::new(bytes);
    let n = r.u16()? as usize;
    if n > MAX_ENTRIES {
        return Err(WireError::TooLong {
            what: "catalog entries",
            len: n as u64,
            max: MAX_ENTRIES as u64,
        });
    }
    let entries = (0..n)
        .map(|_| CatalogEntry::read(&mut r))
        .collect::<Result<_, _>>()?;
    r.end()?;
    Ok(entries)
}

#[derive(Debug, Clone)]
struct Stored {
    entry: CatalogEntry,
    expires: Instant,
}

/// What a merge found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Entries taken in or refreshed.
    pub accepted: usize,
    /// Entries refused because their announcement does not verify.
    pub forged: Vec<StreamId>,
    /// Something new was learned (a new stream or provider, or a shorter path): worth passing on now.
    pub changed: bool,
}

/// A stream known in the mesh, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownStream {
    /// The stream.
    pub id: StreamId,
    /// When its publish started.
    pub started_ms: u64,
    /// Providers known.
    pub providers: usize,
    /// Fewest hops of any provider.
    pub min_hops: u8,
}

/// The catalog of one node.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Learned entries by (stream, provider).
    learned: HashMap<(StreamId, PeerId), Stored>,
    /// This node's own entries (streams it provides).
    local: Vec<CatalogEntry>,
    /// Announcements already verified (origin signatures are checked once).
    verified: HashMap<StreamId, Announcement>,
}

impl Catalog {
    /// Replaces this node's own entries.
    pub fn set_local(&mut self, entries: Vec<CatalogEntry>) {
        for e in &entries {
            self.verified
                .insert(e.announcement.id.clone(), e.announcement.clone());
        }
        self.local = entries;
    }

    /// This node's own entries.
    pub fn local(&self) -> &[CatalogEntry] {
        &self.local
    }

    /// Takes in entries gossiped by `from`; only entries in which `from` offers itself are taken.
    pub fn merge(&mut self, from: &PeerId, entries: Vec<CatalogEntry>, now: Instant) -> Merged {
        let mut out = Merged::default();
        for e in entries {
            if e.provider != *from || e.hops > MAX_GOSSIP_HOPS {
                continue;
            }
            if !self.is_verified(&e.announcement) {
                if e.announcement.verify().is_err() {
                    out.forged.push(e.announcement.id.clone());
                    continue;
                }
                self.verified
                    .insert(e.announcement.id.clone(), e.announcement.clone());
            }
            // A newer publish of the same stream supersedes older entries.
            let newest = self.newest_start(&e.announcement.id);
            if newest.is_some_and(|n| n > e.announcement.started_ms) {
                continue;
            }
            if newest.is_some_and(|n| n < e.announcement.started_ms) {
                let id = e.announcement.id.clone();
                self.learned.retain(|(sid, _), _| *sid != id);
            }
            let key = (e.announcement.id.clone(), e.provider);
            let changed = self.learned.get(&key).is_none_or(|old| {
                old.entry.hops != e.hops
                    || old.entry.announcement.started_ms != e.announcement.started_ms
            });
            out.changed |= changed;
            self.learned.insert(
                key,
                Stored {
                    entry: e,
                    expires: now + ENTRY_TTL,
                },
            );
            out.accepted += 1;
        }
        out
    }

    fn is_verified(&self, a: &Announcement) -> bool {
        self.verified.get(&a.id).is_some_and(|v| v == a)
    }

    fn newest_start(&self, id: &StreamId) -> Option<u64> {
        self.learned
            .iter()
            .filter(|((sid, _), _)| sid == id)
            .map(|(_, s)| s.entry.announcement.started_ms)
            .chain(
                self.local
                    .iter()
                    .filter(|e| e.announcement.id == *id)
                    .map(|e| e.announcement.started_ms),
            )
            .max()
    }

    /// Forgets expired entries, and entries of a provider that disconnected for good.
    pub fn expire(&mut self, now: Instant) {
        self.learned.retain(|_, s| s.expires > now);
        let live: std::collections::HashSet<StreamId> = self
            .learned
            .keys()
            .map(|(id, _)| id.clone())
            .chain(self.local.iter().map(|e| e.announcement.id.clone()))
            .collect();
        self.verified.retain(|id, _| live.contains(id));
    }

    /// Drops everything learned about `provider` (it told us it stopped, or it misbehaved).
    pub fn forget_provider(&mut self, provider: &PeerId) {
        self.learned.retain(|(_, p), _| p != provider);
    }

    /// What to gossip to `peer`: our own streams, and the streams we can fetch from someone other than
    /// `peer` (split horizon), one hop further than the nearest such provider, offered by us.
    pub fn gossip_for(
        &self,
        me: &PeerId,
        peer: &PeerId,
        addrs: &[Multiaddr],
        spare_kbps: u32,
        now: Instant,
    ) -> Vec<CatalogEntry> {
        let mut out: Vec<CatalogEntry> = self.local.clone();
        let held: std::collections::HashSet<&StreamId> =
            self.local.iter().map(|e| &e.announcement.id).collect();
        let mut relay: HashMap<StreamId, CatalogEntry> = HashMap::new();
        for s in self.learned.values() {
            let e = &s.entry;
            if s.expires <= now || e.provider == *peer || held.contains(&e.announcement.id) {
                continue;
            }
            let hops = e.hops.saturating_add(1);
            if hops > MAX_GOSSIP_HOPS {
                continue;
            }
            let better = relay.get(&e.announcement.id).is_none_or(|r| {
                (hops, std::cmp::Reverse(e.announcement.started_ms))
                    < (r.hops, std::cmp::Reverse(r.announcement.started_ms))
            });
            if better {
                relay.insert(
                    e.announcement.id.clone(),
                    CatalogEntry {
                        announcement: e.announcement.clone(),
                        provider: *me,
                        addrs: addrs.to_vec(),
                        hops,
                        spare_kbps,
                    },
                );
            }
        }
        out.extend(relay.into_values());
        out.truncate(MAX_ENTRIES);
        out
    }

    /// True when a neighbour other than `except` offers `name` (of an origin matching `origin_prefix`).
    pub fn reachable(
        &self,
        name: &str,
        origin_prefix: Option<&str>,
        except: &PeerId,
        now: Instant,
    ) -> bool {
        self.providers(name, origin_prefix, now)
            .iter()
            .any(|e| e.provider != *except)
    }

    /// Providers of `name` (optionally only of origins whose id starts with `origin_prefix`), newest publish
    /// only, in no particular order.
    pub fn providers(
        &self,
        name: &str,
        origin_prefix: Option<&str>,
        now: Instant,
    ) -> Vec<CatalogEntry> {
        let matches = |id: &StreamId| {
            id.name == name && origin_prefix.is_none_or(|p| id.origin.to_string().starts_with(p))
        };
        let all: Vec<&CatalogEntry> = self
            .learned
            .values()
            .filter(|s| s.expires > now && matches(&s.entry.announcement.id))
            .map(|s| &s.entry)
            .collect();
        let newest = |id: &StreamId| {
            all.iter()
                .filter(|e| e.announcement.id == *id)
                .map(|e| e.announcement.started_ms)
                .max()
        };
        all.iter()
            .filter(|e| Some(e.announcement.started_ms) == newest(&e.announcement.id))
            .map(|e| (*e).clone())
            .collect()
    }

    /// Every stream known (learned or local), sorted by name then origin.
    pub fn streams(&self, now: Instant) -> Vec<KnownStream> {
        let mut map: HashMap<StreamId, KnownStream> = HashMap::new();
        let entries = self.local.iter().chain(
            self.learned
                .values()
                .filter(|s| s.expires > now)
                .map(|s| &s.entry),
        );
        for e in entries {
            let k = map.entry(e.announcement.id.clone()).or_insert(KnownStream {
                id: e.announcement.id.clone(),
                started_ms: e.announcement.started_ms,
                providers: 0,
                min_hops: u8::MAX,
            });
            k.providers += 1;
            k.min_hops = k.min_hops.min(e.hops);
        }
        let mut v: Vec<KnownStream> = map.into_values().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

/// How a subscriber sees a candidate provider when choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerView {
    /// Connected now.
    pub connected: bool,
    /// The connection is direct (not through a relay).
    pub direct: bool,
    /// Round-trip time, if measured.
    pub rtt_ms: Option<u32>,
}

/// Orders candidates best first: direct before relayed, then fewer hops, then lower RTT, then more spare
/// upload. Candidates whose path would form a loop must be removed by the caller.
pub fn rank(candidates: &mut [CatalogEntry], view: impl Fn(&PeerId) -> PeerView) {
    candidates.sort_by_key(|e| {
        let v = view(&e.provider);
        (
            // A relayed or unknown connection is only a fallback; a connected direct peer is best.
            !(v.connected && v.direct),
            e.hops,
            v.rtt_ms.unwrap_or(u32::MAX / 2),
            std::cmp::Reverse(e.spare_kbps),
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    fn entry(key: &Keypair, name: &str, started: u64, provider: PeerId, hops: u8) -> CatalogEntry {
        CatalogEntry {
            announcement: Announcement::sign(key, name, started).unwrap(),
            provider,
            addrs: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
            hops,
            spare_kbps: 1000,
        }
    }

    #[test]
    fn round_trips_and_refuses_oversized() {
        let k = Keypair::generate_ed25519();
        let e = vec![
            entry(&k, "a", 1, PeerId::random(), 0),
            entry(&k, "b", 2, PeerId::random(), 3),
        ];
        assert_eq!(decode(&encode(&e)).unwrap(), e);
        assert!(decode(&[0xff, 0xff]).is_err());
        assert!(decode(&vec![0u8; MAX_MESSAGE + 1]).is_err());
        let mut b = encode(&e);
        b.push(0);
        assert_eq!(decode(&b), Err(WireError::Trailing));
    }

    #[test]
    fn merges_expires_and_counts_forgeries() {
        let me = PeerId::random();
        let origin = Keypair::generate_ed25519();
        let liar = PeerId::random();
        let mut c = Catalog::default();
        let t0 = Instant::now();
        let good = entry(&origin, "alice", 10, origin.public().to_peer_id(), 0);
        let mut forged = entry(&origin, "alice", 10, liar, 1);
        forged.announcement = forged.announcement.forged_with_start(11);
        let m = c.merge(&origin.public().to_peer_id(), vec![good.clone()], t0);
        assert_eq!(m.accepted, 1);
        let m = c.merge(&liar, vec![forged], t0);
        assert_eq!(m.accepted, 0);
        assert_eq!(m.forged, vec![good.announcement.id.clone()]);
        assert_eq!(c.providers("alice", None, t0), vec![good.clone()]);
        assert_eq!(c.streams(t0).len(), 1);
        // A peer can only offer itself: entries naming others are ignored.
        assert_eq!(
            c.merge(&liar, vec![entry(&origin, "x", 1, me, 0)], t0)
                .accepted,
            0
        );
        c.expire(t0 + ENTRY_TTL + Duration::from_secs(1));
        assert!(
            c.providers("alice", None, t0 + ENTRY_TTL + Duration::from_secs(1))
                .is_empty()
        );
    }

    #[test]
    fn newer_publish_supersedes_and_origin_prefix_filters() {
        let me = PeerId::random();
        let a = Keypair::generate_ed25519();
        let b = Keypair::generate_ed25519();
        let mut c = Catalog::default();
        let t = Instant::now();
        let _ = me;
        let (pa, pb, relay) = (
            a.public().to_peer_id(),
            b.public().to_peer_id(),
            PeerId::random(),
        );
        c.merge(&pa, vec![entry(&a, "game", 1, pa, 0)], t);
        c.merge(&relay, vec![entry(&a, "game", 2, relay, 1)], t);
        c.merge(&pb, vec![entry(&b, "game", 5, pb, 0)], t);
        let all = c.providers("game", None, t);
        assert_eq!(all.len(), 2, "one per origin, newest publish only");
        assert!(all.iter().all(|e| e.announcement.started_ms != 1));
        let prefix = b.public().to_peer_id().to_string()[..12].to_string();
        let only_b = c.providers("game", Some(&prefix), t);
        assert_eq!(only_b.len(), 1);
        assert_eq!(only_b[0].announcement.id.origin, b.public().to_peer_id());
    }

    #[test]
    fn gossip_is_first_hand_with_split_horizon() {
        let (me, a, c) = (
            PeerId::random(),
            Keypair::generate_ed25519(),
            PeerId::random(),
        );
        let pa = a.public().to_peer_id();
        let mut cat = Catalog::default();
        let t = Instant::now();
        cat.merge(&pa, vec![entry(&a, "alice", 1, pa, 0)], t);
        let addrs: Vec<Multiaddr> = vec!["/ip4/127.0.0.1/tcp/9".parse().unwrap()];
        // To C we offer ourselves, one hop further than A.
        let to_c = cat.gossip_for(&me, &c, &addrs, 500, t);
        assert_eq!(to_c.len(), 1);
        assert_eq!(
            (to_c[0].provider, to_c[0].hops, to_c[0].spare_kbps),
            (me, 1, 500)
        );
        // To A we offer nothing back: it is where we learned it.
        assert!(cat.gossip_for(&me, &pa, &addrs, 500, t).is_empty());
        assert!(cat.reachable("alice", None, &c, t));
        assert!(!cat.reachable("alice", None, &pa, t));
        // Hop limit.
        let far = entry(&a, "far", 1, c, MAX_GOSSIP_HOPS);
        cat.merge(&c, vec![far], t);
        assert!(
            cat.gossip_for(&me, &pa, &addrs, 1, t)
                .iter()
                .all(|e| e.announcement.id.name != "far")
        );
    }

    #[test]
    fn ranking_prefers_direct_then_hops_then_rtt_then_spare() {
        let k = Keypair::generate_ed25519();
        let (p1, p2, p3, p4) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let mut v = vec![
            entry(&k, "s", 1, p1, 1), // relayed
            entry(&k, "s", 1, p2, 3), // direct, far
            entry(&k, "s", 1, p3, 1), // direct, slow
            entry(&k, "s", 1, p4, 1), // direct, fast
        ];
        rank(&mut v, |p| PeerView {
            connected: true,
            direct: *p != p1,
            rtt_ms: Some(if *p == p3 { 80 } else { 5 }),
        });
        let order: Vec<PeerId> = v.iter().map(|e| e.provider).collect();
        assert_eq!(order, vec![p4, p3, p2, p1]);
    }
}
