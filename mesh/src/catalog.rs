//! The catalog: which streams exist in the mesh and who provides them. Connected nodes gossip their
//! catalogs every few seconds, so any node can list the mesh's streams and find providers with no
//! coordinator. Every entry carries the origin's signed announcement; forged entries are refused and
//! counted. Plain code with no sockets: time is a parameter.
//!
//! Gossip is transitive: a node passes on what it learned (with the provider's own addresses, which for a
//! node behind NAT include its relay circuit addresses), so a viewer learns of the origin itself and can
//! reach it through a relay and then directly by hole punching, instead of routing the stream through
//! whichever node it happened to bootstrap from. Entries expire unless refreshed, and a hop limit bounds
//! how far they travel.

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
/// Most providers of one stream passed on in a gossip message: the closest to the origin with the most spare
/// upload. A subscriber needs a few candidates, and a full provider's redirect names more; passing every
/// provider on made each message grow with the audience (in netlab's 50-node run, tens of KiB every 2 s to
/// every peer, cut off by the send timeout on loaded relays, so late viewers never learned the stream).
pub const GOSSIP_PROVIDERS_PER_STREAM: usize = 8;

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
    /// Providers whose entry is new or changed, with their addresses.
    pub addresses: Vec<(PeerId, Vec<Multiaddr>)>,
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

/// The learned providers of one stream (one origin, one name). All have the same publish start: a newer
/// publish replaces the group, an older one is refused.
#[derive(Debug, Clone)]
struct Group {
    started_ms: u64,
    providers: HashMap<PeerId, Stored>,
}

/// The catalog of one node.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Learned entries by stream, then provider.
    learned: HashMap<StreamId, Group>,
    /// This node's own entries (streams it provides).
    local: Vec<CatalogEntry>,
    /// Announcements already verified (origin signatures are checked once).
    verified: HashMap<StreamId, Announcement>,
}

/// What to gossip this round, computed once for every peer (see [`Catalog::gossip_plan`]).
#[derive(Debug, Clone, Default)]
pub struct GossipPlan {
    local: Vec<CatalogEntry>,
    /// Per stream, the best learned providers, best first: one more than a message carries, so that the
    /// peer's own entry can be left out.
    learned: Vec<Vec<CatalogEntry>>,
}

impl GossipPlan {
    /// The message for `peer`: our own entries, then per stream at most [`GOSSIP_PROVIDERS_PER_STREAM`]
    /// (counting ours), never an entry about `peer` itself.
    pub fn for_peer(&self, peer: &PeerId) -> Vec<CatalogEntry> {
        let mut out: Vec<CatalogEntry> = self.local.clone();
        for group in &self.learned {
            let Some(first) = group.first() else { continue };
            let id = &first.announcement.id;
            let ours = self
                .local
                .iter()
                .filter(|e| e.announcement.id == *id)
                .count();
            out.extend(
                group
                    .iter()
                    .filter(|e| e.provider != *peer)
                    .take(GOSSIP_PROVIDERS_PER_STREAM.saturating_sub(ours))
                    .cloned(),
            );
        }
        out.truncate(MAX_ENTRIES);
        out
    }
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

    /// Takes in entries gossiped to `me` (entries naming `me` as provider are ignored).
    pub fn merge(&mut self, me: &PeerId, entries: Vec<CatalogEntry>, now: Instant) -> Merged {
        let mut out = Merged::default();
        for e in entries {
            if e.provider == *me || e.hops > MAX_GOSSIP_HOPS {
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
            let id = &e.announcement.id;
            let start = e.announcement.started_ms;
            // A newer publish of the same stream supersedes older entries, ours included.
            let local_start = self
                .local
                .iter()
                .filter(|l| l.announcement.id == *id)
                .map(|l| l.announcement.started_ms)
                .max();
            if local_start.is_some_and(|l| l > start) {
                continue;
            }
            if !self.learned.contains_key(id) {
                self.learned.insert(
                    id.clone(),
                    Group {
                        started_ms: start,
                        providers: HashMap::new(),
                    },
                );
            }
            let group = self.learned.get_mut(id).expect("inserted above");
            if group.started_ms > start {
                continue;
            }
            if group.started_ms < start {
                group.started_ms = start;
                group.providers.clear();
            }
            let changed = group
                .providers
                .get(&e.provider)
                .is_none_or(|old| old.entry.hops != e.hops || old.entry.addrs != e.addrs);
            out.changed |= changed;
            if changed {
                out.addresses.push((e.provider, e.addrs.clone()));
            }
            group.providers.insert(
                e.provider,
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

    /// Forgets expired entries, and entries of a provider that disconnected for good.
    pub fn expire(&mut self, now: Instant) {
        for g in self.learned.values_mut() {
            g.providers.retain(|_, s| s.expires > now);
        }
        self.learned.retain(|_, g| !g.providers.is_empty());
        let local: std::collections::HashSet<&StreamId> =
            self.local.iter().map(|e| &e.announcement.id).collect();
        let learned = &self.learned;
        self.verified
            .retain(|id, _| learned.contains_key(id) || local.contains(id));
    }

    /// Drops everything learned about `provider` (it told us it stopped, or it misbehaved).
    pub fn forget_provider(&mut self, provider: &PeerId) {
        for g in self.learned.values_mut() {
            g.providers.remove(provider);
        }
    }

    /// What to gossip this round: sorted once, then cut per peer with [`GossipPlan::for_peer`] (a node with
    /// many peers would otherwise sort everything it learned once per peer).
    pub fn gossip_plan(&self, now: Instant) -> GossipPlan {
        let mut ids: Vec<&StreamId> = self.learned.keys().collect();
        ids.sort();
        let learned = ids
            .into_iter()
            .map(|id| {
                let mut v: Vec<&CatalogEntry> = self.learned[id]
                    .providers
                    .values()
                    .filter(|s| s.expires > now && s.entry.hops < MAX_GOSSIP_HOPS)
                    .map(|s| &s.entry)
                    .collect();
                v.sort_by_key(|e| (e.hops, std::cmp::Reverse(e.spare_kbps), e.provider));
                v.truncate(GOSSIP_PROVIDERS_PER_STREAM + 1);
                v.into_iter().cloned().collect()
            })
            .collect();
        GossipPlan {
            local: self.local.clone(),
            learned,
        }
    }

    /// What to gossip to `peer`: our own entries and what we learned, except entries about `peer` itself;
    /// per stream at most [`GOSSIP_PROVIDERS_PER_STREAM`], ours first, then fewest hops, most spare upload.
    pub fn gossip_for(&self, peer: &PeerId, now: Instant) -> Vec<CatalogEntry> {
        self.gossip_plan(now).for_peer(peer)
    }

    /// Providers of `name` (optionally only of origins whose id starts with `origin_prefix`), newest publish
    /// only, ordered by provider id (callers rank them).
    pub fn providers(
        &self,
        name: &str,
        origin_prefix: Option<&str>,
        now: Instant,
    ) -> Vec<CatalogEntry> {
        let mut out: Vec<CatalogEntry> = self
            .learned
            .iter()
            .filter(|(id, _)| {
                id.name == name
                    && origin_prefix.is_none_or(|p| id.origin.to_string().starts_with(p))
            })
            .flat_map(|(_, g)| g.providers.values())
            .filter(|s| s.expires > now)
            .map(|s| s.entry.clone())
            .collect();
        out.sort_by_key(|e| e.provider);
        out
    }

    /// Every stream known (learned or local), sorted by name then origin.
    pub fn streams(&self, now: Instant) -> Vec<KnownStream> {
        let mut map: HashMap<StreamId, KnownStream> = HashMap::new();
        let entries = self.local.iter().chain(
            self.learned
                .values()
                .flat_map(|g| g.providers.values())
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

/// Orders candidates best first: providers we only reach through a relay come last (a hole punch has not
/// worked for them); then fewer hops from the origin, lower RTT, more spare upload. A provider we are not
/// connected to yet is not penalised: connecting to it (through a relay, then directly by hole punching)
/// is how a viewer gets the stream straight from the publisher's home. Candidates whose path would form a
/// loop must be removed by the caller.
pub fn rank(candidates: &mut [CatalogEntry], view: impl Fn(&PeerId) -> PeerView) {
    candidates.sort_by_key(|e| {
        let v = view(&e.provider);
        (
            v.connected && !v.direct,
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
        let m = c.merge(&me, vec![good.clone(), forged], t0);
        assert_eq!(m.accepted, 1);
        assert!(m.changed);
        assert_eq!(m.forged, vec![good.announcement.id.clone()]);
        assert_eq!(c.providers("alice", None, t0), vec![good.clone()]);
        assert_eq!(c.streams(t0).len(), 1);
        // The same again is not news.
        assert!(!c.merge(&me, vec![good.clone()], t0).changed);
        // Our own entries are not learned back.
        assert_eq!(
            c.merge(&me, vec![entry(&origin, "x", 1, me, 0)], t0)
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
        let (pa, pb, relay) = (
            a.public().to_peer_id(),
            b.public().to_peer_id(),
            PeerId::random(),
        );
        c.merge(&me, vec![entry(&a, "game", 1, pa, 0)], t);
        c.merge(&me, vec![entry(&a, "game", 2, relay, 1)], t);
        c.merge(&me, vec![entry(&b, "game", 5, pb, 0)], t);
        let all = c.providers("game", None, t);
        assert_eq!(all.len(), 2, "one per origin, newest publish only");
        assert!(all.iter().all(|e| e.announcement.started_ms != 1));
        let prefix = b.public().to_peer_id().to_string()[..12].to_string();
        let only_b = c.providers("game", Some(&prefix), t);
        assert_eq!(only_b.len(), 1);
        assert_eq!(only_b[0].announcement.id.origin, b.public().to_peer_id());
    }

    #[test]
    fn gossip_passes_on_what_was_learned_with_a_hop_limit() {
        let (me, a, c) = (
            PeerId::random(),
            Keypair::generate_ed25519(),
            PeerId::random(),
        );
        let pa = a.public().to_peer_id();
        let mut cat = Catalog::default();
        let t = Instant::now();
        cat.merge(&me, vec![entry(&a, "alice", 1, pa, 0)], t);
        // C hears of A's stream with A's own addresses, so it can go to A.
        let to_c = cat.gossip_for(&c, t);
        assert_eq!(to_c.len(), 1);
        assert_eq!((to_c[0].provider, to_c[0].hops), (pa, 0));
        // A is not told about itself.
        assert!(cat.gossip_for(&pa, t).is_empty());
        // Entries at the hop limit are kept but not passed on.
        cat.merge(&me, vec![entry(&a, "far", 1, c, MAX_GOSSIP_HOPS)], t);
        assert!(
            cat.gossip_for(&pa, t)
                .iter()
                .all(|e| e.announcement.id.name != "far")
        );
    }

    #[test]
    fn gossip_passes_on_a_bounded_number_of_the_best_providers_per_stream() {
        let me = PeerId::random();
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let to = PeerId::random();
        let mut cat = Catalog::default();
        let t = Instant::now();
        // 30 providers of A's stream at 1..=30 hops (one with more spare at 5 hops), 2 of B's.
        let mut many: Vec<CatalogEntry> = (1..=30u8)
            .map(|h| entry(&a, "big", 1, PeerId::random(), h))
            .collect();
        let mut rich = entry(&a, "big", 1, PeerId::random(), 5);
        rich.spare_kbps = 9000;
        many.push(rich.clone());
        many.push(entry(&b, "small", 1, PeerId::random(), 1));
        many.push(entry(&b, "small", 1, PeerId::random(), 2));
        cat.merge(&me, many, t);
        let out = cat.gossip_for(&to, t);
        let big: Vec<&CatalogEntry> = out
            .iter()
            .filter(|e| e.announcement.id.name == "big")
            .collect();
        assert_eq!(big.len(), GOSSIP_PROVIDERS_PER_STREAM);
        let hops: Vec<u8> = big.iter().map(|e| e.hops).collect();
        assert_eq!(hops, [1, 2, 3, 4, 5, 5, 6, 7]);
        // Same hops: more spare upload first.
        assert_eq!(big[4].provider, rich.provider);
        assert_eq!(
            out.iter()
                .filter(|e| e.announcement.id.name == "small")
                .count(),
            2
        );
    }

    #[test]
    fn ranking_puts_relayed_only_last_then_hops_rtt_spare() {
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
        // A provider we are not connected to yet is tried before a farther one we reach directly.
        let mut v = vec![entry(&k, "s", 1, p1, 1), entry(&k, "s", 1, p2, 0)];
        rank(&mut v, |p| PeerView {
            connected: *p == p1,
            direct: *p == p1,
            rtt_ms: None,
        });
        assert_eq!(v[0].provider, p2);
    }
}
