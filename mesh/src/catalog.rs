//! The catalog: which streams exist in the mesh and who provides them. Connected nodes gossip their
//! catalogs every few seconds, so any node can list the mesh's streams and find providers with no
//! coordinator. Plain code with no sockets: time is a parameter.
//!
//! Gossip is transitive: a node passes on what it learned (with the provider's own addresses, which for a
//! node behind NAT include its relay circuit addresses), so a viewer learns of the origin itself and can
//! reach it through a relay and then directly by hole punching, instead of routing the stream through
//! whichever node it happened to bootstrap from. Entries expire unless refreshed, and a hop limit bounds
//! how far they travel.
//!
//! Nothing a peer gossips is trusted beyond what it can prove ([`check`], run by the reading task, not the
//! actor): every entry carries the origin's signed announcement and the provider's own signed peer record
//! (its addresses: nobody else can put addresses in its name), and a provider claiming to be the origin's
//! first hop must be the origin. What is kept is bounded in total, per origin, per stream and, when full,
//! fairly per peer that told us; what is passed on gives every peer that told us its share and puts
//! streams known for longer first, so a flood of new entries cannot push the mesh's real streams out.

use crate::announce::{Announcement, StreamId};
use crate::codec::{Reader, WireError, Writer};
use bytes::Bytes;
use libp2p::core::{PeerRecord, SignedEnvelope};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The gossip protocol: one length-prefixed message per stream, then close. Version 2 (version 1 had no
/// length prefix, so a transfer cut short looked malformed, and carried unsigned addresses).
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/streamr/catalog/2");
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
/// A provider gossips its own entry to its peers on change and again every this long when unchanged.
pub const GOSSIP_REPEAT: Duration = Duration::from_secs(5);

/// How long after the last catalog sent to a peer a changed one may follow, for a node that gossips every
/// `gossip_interval`: two intervals (4 s by default), never more than [`GOSSIP_REPEAT`]. News (a stream the
/// peer has not had from us) goes at once ([`Sent::due`]). In a big mesh something changes every second
/// (a provider's spare upload, hops, an address, which 8 providers are the best), and every change used to
/// send the whole message to every peer: at 100 nodes a median node sent 7 transfers a second, the
/// bootstrap relay 77 (README, stop 30).
pub fn change_spacing(gossip_interval: Duration) -> Duration {
    (gossip_interval * 2).min(GOSSIP_REPEAT)
}

/// What a provider itself told us counts for this long as its word on its spare upload, and as a sign that
/// it is alive (see [`Catalog::providers_first_hand`], [`Catalog::heard_first_hand`]): a little longer than
/// [`GOSSIP_REPEAT`], so that a live peer whose entry did not change (it is sent again only that often)
/// never drops out of what we know first hand, and a change still reaches us within a gossip round. The
/// price is that a dead provider is still named for up to this long; a fetch asks several candidates at
/// once when the first is slow to answer, and stops waiting on an unanswered one after a second
/// ([`crate::session::round`]), so a dead one costs little. Before those rounds, 2.5 s here (with 1 s,
/// a live peer counted as heard about a fifth of the time) sent the orphans of big dead relays to other
/// dead relays one at a time: `netlab sim`'s repair p95 at 1,000 nodes was 5.6 s over six seeds, against
/// 2.8 s. With them, 5.5 s against 1 s: 2.1 s against 2.4 s.
pub const FIRST_HAND_FOR: Duration = Duration::from_millis(5500);
/// Most entries learned, in all.
pub const MAX_LEARNED: usize = 4096;
/// Most providers of one stream kept (the nearest to the origin).
pub const MAX_PROVIDERS_PER_STREAM: usize = 64;
/// Most streams of one origin kept and passed on.
pub const MAX_STREAMS_PER_ORIGIN: usize = 16;
/// Most addresses in a provider's record.
pub const MAX_RECORD_ADDRS: usize = 16;
/// Signatures remembered as checked (announcements and records are gossiped again every few seconds).
const VERIFIED_CACHE: usize = 8192;

/// A provider's own signed statement of where it can be dialed (a libp2p signed peer record): relays pass
/// it on, but cannot change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    /// The signed envelope, as it travels.
    envelope: Bytes,
    /// The provider (the record's signer).
    peer: PeerId,
    /// When it signed (newer records replace older ones).
    seq: u64,
    /// Its addresses.
    addrs: Vec<Multiaddr>,
}

impl ProviderRecord {
    /// Signs a record of `addrs` (at most [`MAX_RECORD_ADDRS`]) with the node key.
    pub fn new(key: &Keypair, addrs: Vec<Multiaddr>) -> Result<Self, WireError> {
        let addrs: Vec<Multiaddr> = addrs.into_iter().take(MAX_RECORD_ADDRS).collect();
        let record = PeerRecord::new_interop(key, addrs)
            .map_err(|_| WireError::Invalid("cannot sign a peer record"))?;
        Ok(ProviderRecord {
            envelope: Bytes::from(record.to_signed_envelope().into_protobuf_encoding()),
            peer: record.peer_id(),
            seq: record.seq(),
            addrs: record.addresses().to_vec(),
        })
    }

    /// Checks a record's signature and limits.
    fn verify(envelope: Bytes) -> Result<Self, WireError> {
        let env = SignedEnvelope::from_protobuf_encoding(&envelope)
            .map_err(|_| WireError::Invalid("peer record envelope"))?;
        let record = PeerRecord::from_signed_envelope_interop(env)
            .map_err(|_| WireError::Invalid("peer record signature"))?;
        if record.addresses().len() > MAX_RECORD_ADDRS {
            return Err(WireError::TooLong {
                what: "peer record addresses",
                len: record.addresses().len() as u64,
                max: MAX_RECORD_ADDRS as u64,
            });
        }
        Ok(ProviderRecord {
            peer: record.peer_id(),
            seq: record.seq(),
            addrs: record.addresses().to_vec(),
            envelope,
        })
    }

    /// The provider.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Its addresses.
    pub fn addrs(&self) -> &[Multiaddr] {
        &self.addrs
    }

    /// When it was signed (Unix seconds in libp2p's records).
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// One provider of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The origin's announcement.
    pub announcement: Announcement,
    /// A node that holds the stream and serves it (the signer of `record`).
    pub provider: PeerId,
    /// Where the provider can be dialed (from `record`).
    pub addrs: Vec<Multiaddr>,
    /// The provider's signed record of `addrs`.
    pub record: Option<ProviderRecord>,
    /// The provider's distance from the origin (its own claim: only "0 means the origin" is checked).
    pub hops: u8,
    /// Upload the provider has left, kbit/s (its own claim).
    pub spare_kbps: u32,
}

impl CatalogEntry {
    /// An entry for a provider with its signed record.
    pub fn new(
        announcement: Announcement,
        record: ProviderRecord,
        hops: u8,
        spare_kbps: u32,
    ) -> Self {
        CatalogEntry {
            announcement,
            provider: record.peer,
            addrs: record.addrs.clone(),
            record: Some(record),
            hops,
            spare_kbps,
        }
    }
}

/// An entry as it arrives, not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// The origin's announcement, as claimed.
    pub announcement: Announcement,
    /// The provider's record envelope, as claimed.
    pub record: Bytes,
    /// Claimed hops.
    pub hops: u8,
    /// Claimed spare upload.
    pub spare_kbps: u32,
}

/// Encodes a catalog message: `u32 length | u16 count | entries` (entries without a record are left out;
/// at most [`MAX_ENTRIES`]).
pub fn encode(entries: &[CatalogEntry]) -> Vec<u8> {
    let entries: Vec<&CatalogEntry> = entries
        .iter()
        .filter(|e| e.record.is_some())
        .take(MAX_ENTRIES)
        .collect();
    let mut w = Writer::with_capacity(64 + entries.len() * 512);
    w.u32(0); // length, patched below
    w.u16(entries.len() as u16);
    for e in entries {
        e.announcement.write(&mut w);
        w.bytes(&e.record.as_ref().expect("filtered").envelope);
        w.u8(e.hops);
        w.u32(e.spare_kbps);
    }
    let len = (w.len() - 4) as u32;
    w.buf_mut()[..4].copy_from_slice(&len.to_be_bytes());
    w.finish().to_vec()
}

/// Reads the length prefix of a catalog message: how many bytes follow.
pub fn message_len(prefix: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_MESSAGE {
        return Err(WireError::TooLong {
            what: "catalog",
            len: len as u64,
            max: MAX_MESSAGE as u64,
        });
    }
    Ok(len)
}

/// Decodes a catalog message's body (what follows the length prefix). Nothing is verified yet.
pub fn decode(body: &[u8]) -> Result<Vec<RawEntry>, WireError> {
    if body.len() > MAX_MESSAGE {
        return Err(WireError::TooLong {
            what: "catalog",
            len: body.len() as u64,
            max: MAX_MESSAGE as u64,
        });
    }
    let mut r = Reader::new(body);
    let n = r.u16()? as usize;
    if n > MAX_ENTRIES {
        return Err(WireError::TooLong {
            what: "catalog entries",
            len: n as u64,
            max: MAX_ENTRIES as u64,
        });
    }
    let entries = (0..n)
        .map(|_| {
            Ok(RawEntry {
                announcement: Announcement::read(&mut r)?,
                record: Bytes::copy_from_slice(r.bytes()?),
                hops: r.u8()?,
                spare_kbps: r.u32()?,
            })
        })
        .collect::<Result<_, WireError>>()?;
    r.end()?;
    Ok(entries)
}

/// Signatures already checked, shared by the tasks that read catalogs (held only to look up and insert;
/// signatures are checked outside it).
#[derive(Debug, Default)]
pub struct VerifiedCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    announcements: HashSet<[u8; 32]>,
    records: HashMap<[u8; 32], ProviderRecord>,
    order: VecDeque<[u8; 32]>,
}

impl CacheInner {
    fn remember(&mut self, digest: [u8; 32]) {
        self.order.push_back(digest);
        while self.order.len() > VERIFIED_CACHE {
            if let Some(old) = self.order.pop_front() {
                self.announcements.remove(&old);
                self.records.remove(&old);
            }
        }
    }
}

fn digest_of(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// What checking one signature came to.
enum Verdict<T> {
    /// It verifies (now, or it did before).
    Valid(T),
    /// It does not.
    Invalid,
    /// It was not seen before and the allowance is spent: not checked.
    Unchecked,
}

impl VerifiedCache {
    fn announcement(&self, a: &Announcement, allowance: &mut usize) -> Verdict<()> {
        let mut w = Writer::default();
        a.write(&mut w);
        let d = digest_of(&[b"announcement", &w.finish()]);
        if self.inner.lock().announcements.contains(&d) {
            return Verdict::Valid(());
        }
        if *allowance == 0 {
            return Verdict::Unchecked;
        }
        *allowance -= 1;
        if a.verify().is_err() {
            return Verdict::Invalid;
        }
        let mut inner = self.inner.lock();
        if inner.announcements.insert(d) {
            inner.remember(d);
        }
        Verdict::Valid(())
    }

    fn record(&self, envelope: &Bytes, allowance: &mut usize) -> Verdict<ProviderRecord> {
        let d = digest_of(&[b"record", envelope]);
        if let Some(r) = self.inner.lock().records.get(&d) {
            return Verdict::Valid(r.clone());
        }
        if *allowance == 0 {
            return Verdict::Unchecked;
        }
        *allowance -= 1;
        let Ok(r) = ProviderRecord::verify(envelope.clone()) else {
            return Verdict::Invalid;
        };
        let mut inner = self.inner.lock();
        if inner.records.insert(d, r.clone()).is_none() {
            inner.remember(d);
        }
        Verdict::Valid(r)
    }
}

/// Entries that passed [`check`]: only these can be merged.
#[derive(Debug, Default)]
pub struct Checked {
    /// Entries whose signatures verify and whose claims are possible.
    pub entries: Vec<CatalogEntry>,
    /// Streams whose announcement did not verify.
    pub forged: Vec<StreamId>,
    /// Entries whose provider record did not verify or whose claims cannot be true (a provider that is not
    /// the origin claiming hop 0, or the origin claiming more).
    pub false_claims: usize,
    /// Entries left unchecked because the sender's allowance of new signatures was spent (it sends them
    /// again with its next gossip).
    pub unchecked: usize,
    /// Signatures checked that were not known before (what the sender cost us).
    pub verified: usize,
}

/// Checks entries as they arrived: announcements and provider records must verify, and hop 0 must be the
/// origin. Meant for the task that read them (it may take a while on a large message). Signatures seen
/// before are not checked again; at most `allowance` new ones are, so that a peer sending ever new entries
/// costs a bounded amount of work.
pub fn check(raw: Vec<RawEntry>, cache: &VerifiedCache, allowance: usize) -> Checked {
    let mut out = Checked::default();
    let mut left = allowance;
    for e in raw {
        match cache.announcement(&e.announcement, &mut left) {
            Verdict::Valid(()) => {}
            Verdict::Invalid => {
                out.forged.push(e.announcement.id.clone());
                continue;
            }
            Verdict::Unchecked => {
                out.unchecked += 1;
                continue;
            }
        }
        let record = match cache.record(&e.record, &mut left) {
            Verdict::Valid(r) => r,
            Verdict::Invalid => {
                out.false_claims += 1;
                continue;
            }
            Verdict::Unchecked => {
                out.unchecked += 1;
                continue;
            }
        };
        let is_origin = record.peer == e.announcement.id.origin;
        if is_origin != (e.hops == 0) {
            out.false_claims += 1;
            continue;
        }
        out.entries.push(CatalogEntry::new(
            e.announcement,
            record,
            e.hops,
            e.spare_kbps,
        ));
    }
    out.verified = allowance - left;
    out
}

#[derive(Debug, Clone)]
struct Stored {
    entry: CatalogEntry,
    expires: Instant,
    /// The peer that told us.
    from: PeerId,
    /// When the provider itself last told us (its own word on its hops and spare upload).
    direct: Option<Instant>,
}

/// What a merge found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Entries taken in or refreshed.
    pub accepted: usize,
    /// Entries not kept because a bound was reached (per stream, per origin, in total).
    pub dropped: usize,
    /// Something new was learned (a new stream or provider, or a shorter path): worth passing on now.
    pub changed: bool,
    /// Providers whose entry is new or changed, with their signed addresses.
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

/// What we learned about one stream.
#[derive(Debug)]
struct Learned {
    /// When we first heard of it (older streams are passed on first, and a plain stream name picks the
    /// origin known longest).
    first_seen: Instant,
    /// Its providers.
    providers: HashMap<PeerId, Stored>,
}

/// The catalog of one node.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Learned streams and their providers.
    streams: HashMap<StreamId, Learned>,
    /// This node's own entries (streams it provides).
    local: Vec<CatalogEntry>,
    /// Learned entries in all.
    entries: usize,
    /// Learned entries per peer that told us (for fair eviction).
    per_source: HashMap<PeerId, usize>,
    /// Learned streams per origin.
    per_origin: HashMap<PeerId, usize>,
}

/// What this node last gossiped to one peer, to decide when the next message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The message's digest (any hash of what it carries; equal for equal messages).
    digest: u64,
    /// The streams (and their publish) it named.
    streams: Vec<(StreamId, u64)>,
}

impl Sent {
    /// What was sent: `entries`, whose digest is `digest`.
    pub fn new(digest: u64, entries: &[CatalogEntry]) -> Sent {
        Sent {
            digest,
            streams: streams_of(entries),
        }
    }

    /// Whether `entries` (digest `digest`) go to the peer now, `since` after this was sent: a message
    /// naming a stream (or a newer publish of one) the peer has not had from us goes at once, a changed one
    /// after `spacing` ([`change_spacing`]), an unchanged one after [`GOSSIP_REPEAT`] (to keep its entries
    /// alive there), an unchanged empty one never.
    pub fn due(
        &self,
        digest: u64,
        entries: &[CatalogEntry],
        since: Duration,
        spacing: Duration,
    ) -> bool {
        if digest == self.digest {
            return !entries.is_empty() && since >= GOSSIP_REPEAT;
        }
        let news = entries.iter().any(|e| {
            !self.streams.iter().any(|(id, started)| {
                *id == e.announcement.id && *started == e.announcement.started_ms
            })
        });
        news || since >= spacing
    }
}

/// The streams `entries` name, each with its publish start, once.
fn streams_of(entries: &[CatalogEntry]) -> Vec<(StreamId, u64)> {
    let mut v: Vec<(StreamId, u64)> = Vec::new();
    for e in entries {
        let s = (e.announcement.id.clone(), e.announcement.started_ms);
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}

/// What to gossip this round, ordered once for every peer (see [`Catalog::gossip_plan`]).
#[derive(Debug, Clone, Default)]
pub struct GossipPlan {
    local: Vec<CatalogEntry>,
    /// Learned streams in gossip order: how many providers a message carries for it, and one more than
    /// that of them, best first.
    learned: Vec<(usize, Vec<CatalogEntry>)>,
}

impl GossipPlan {
    /// The message for `peer`: our own entries, then the learned ones, never an entry about `peer` itself,
    /// at most [`MAX_ENTRIES`].
    pub fn for_peer(&self, peer: &PeerId) -> Vec<CatalogEntry> {
        let mut out: Vec<CatalogEntry> = self.local.clone();
        for (room, group) in &self.learned {
            if out.len() >= MAX_ENTRIES {
                break;
            }
            out.extend(
                group
                    .iter()
                    .filter(|e| e.provider != *peer)
                    .take(*room)
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
        self.local = entries;
    }

    /// This node's own entries.
    pub fn local(&self) -> &[CatalogEntry] {
        &self.local
    }

    /// Entries learned, in all.
    pub fn learned_len(&self) -> usize {
        self.entries
    }

    /// When `id` was first heard of, while it is known.
    pub fn first_seen(&self, id: &StreamId) -> Option<Instant> {
        self.streams.get(id).map(|l| l.first_seen)
    }

    /// Takes in entries that `from` gossiped to `me` (entries naming `me` as provider are ignored).
    pub fn merge(&mut self, me: &PeerId, from: PeerId, checked: Checked, now: Instant) -> Merged {
        let mut out = Merged::default();
        for e in checked.entries {
            if e.provider == *me || e.hops > MAX_GOSSIP_HOPS {
                continue;
            }
            let id = e.announcement.id.clone();
            // A newer publish of the same stream supersedes older entries.
            let newest = self.newest_start(&id);
            if newest.is_some_and(|n| n > e.announcement.started_ms) {
                continue;
            }
            if newest.is_some_and(|n| n < e.announcement.started_ms) {
                let stale: Vec<PeerId> = self
                    .streams
                    .get(&id)
                    .map(|l| l.providers.keys().copied().collect())
                    .unwrap_or_default();
                for p in stale {
                    self.remove(&id, &p);
                }
            }
            let known = self
                .streams
                .get(&id)
                .is_some_and(|l| l.providers.contains_key(&e.provider));
            if !known && !self.make_room(&e, &from) {
                out.dropped += 1;
                continue;
            }
            let old = self
                .streams
                .get(&id)
                .and_then(|l| l.providers.get(&e.provider));
            // A provider's own word stands against what others pass on: their copies are older (gossip
            // takes seconds a hop, and copies echo between peers), so a full provider would look as
            // roomy as it was when it joined.
            let direct = from == e.provider;
            if !direct
                && old
                    .and_then(|s| s.direct)
                    .is_some_and(|t| now.saturating_duration_since(t) < ENTRY_TTL)
            {
                continue;
            }
            // A provider's older record (a replay) never replaces its newer one.
            if let (Some(old), Some(new)) =
                (old.and_then(|s| s.entry.record.as_ref()), e.record.as_ref())
                && new.seq < old.seq
            {
                continue;
            }
            let changed = old.is_none_or(|old| {
                old.entry.hops != e.hops
                    || old.entry.announcement.started_ms != e.announcement.started_ms
                    || old.entry.addrs != e.addrs
            });
            out.changed |= changed;
            if changed {
                out.addresses.push((e.provider, e.addrs.clone()));
            }
            self.insert(
                id,
                Stored {
                    entry: e,
                    expires: now + ENTRY_TTL,
                    from,
                    direct: direct.then_some(now),
                },
                now,
            );
            out.accepted += 1;
        }
        out
    }

    fn insert(&mut self, id: StreamId, stored: Stored, now: Instant) {
        let provider = stored.entry.provider;
        let from = stored.from;
        let learned = self.streams.entry(id.clone()).or_insert_with(|| {
            *self.per_origin.entry(id.origin).or_default() += 1;
            Learned {
                first_seen: now,
                providers: HashMap::new(),
            }
        });
        match learned.providers.insert(provider, stored) {
            Some(old) => {
                decrement(&mut self.per_source, &old.from);
            }
            None => self.entries += 1,
        }
        *self.per_source.entry(from).or_default() += 1;
    }

    fn remove(&mut self, id: &StreamId, provider: &PeerId) {
        let Some(learned) = self.streams.get_mut(id) else {
            return;
        };
        if let Some(old) = learned.providers.remove(provider) {
            self.entries -= 1;
            decrement(&mut self.per_source, &old.from);
        }
        if learned.providers.is_empty() {
            self.streams.remove(id);
            decrement(&mut self.per_origin, &id.origin);
        }
    }

    /// Makes room for a new (stream, provider) entry within the bounds; false when it is not kept.
    fn make_room(&mut self, e: &CatalogEntry, from: &PeerId) -> bool {
        let id = &e.announcement.id;
        match self.streams.get(id) {
            // Per stream: what providers told us themselves is kept first (the subscribers we serve and
            // our other peers: where we redirect to), then those with room (where a subscriber can
            // attach; a node connected to thousands would otherwise keep only the nearest, all full),
            // then the nearest.
            Some(l) if l.providers.len() >= MAX_PROVIDERS_PER_STREAM => {
                let full = |spare: u32| !has_room(spare, TYPICAL_STREAM_KBPS);
                let direct = *from == e.provider;
                let (second_hand, no_room, hops, worst) = l
                    .providers
                    .iter()
                    .map(|(p, s)| {
                        let e = &s.entry;
                        (s.direct.is_none(), full(e.spare_kbps), e.hops, *p)
                    })
                    .max()
                    .expect("not empty");
                if (second_hand, no_room, hops) <= (!direct, full(e.spare_kbps), e.hops) {
                    return false;
                }
                self.remove(id, &worst);
            }
            Some(_) => {}
            // Per origin: a bounded number of streams.
            None => {
                if self.per_origin.get(&id.origin).copied().unwrap_or(0) >= MAX_STREAMS_PER_ORIGIN {
                    return false;
                }
            }
        }
        if self.entries < MAX_LEARNED {
            return true;
        }
        // Full: the peer that told us most gives way, unless that is the one telling now.
        let mine = self.per_source.get(from).copied().unwrap_or(0);
        let Some((&biggest, &n)) = self.per_source.iter().max_by_key(|(p, n)| (**n, **p)) else {
            return false;
        };
        if n <= mine + 1 {
            return false;
        }
        // Its most recently heard-of stream goes first.
        let victim = self
            .streams
            .iter()
            .filter_map(|(sid, l)| {
                l.providers
                    .iter()
                    .find(|(_, s)| s.from == biggest)
                    .map(|(p, _)| (l.first_seen, sid, *p))
            })
            .max_by_key(|(seen, sid, p)| (*seen, (*sid).clone(), *p))
            .map(|(_, sid, p)| (sid.clone(), p));
        match victim {
            Some((sid, p)) => {
                self.remove(&sid, &p);
                true
            }
            None => false,
        }
    }

    fn newest_start(&self, id: &StreamId) -> Option<u64> {
        self.streams
            .get(id)
            .into_iter()
            .flat_map(|l| l.providers.values())
            .map(|s| s.entry.announcement.started_ms)
            .chain(
                self.local
                    .iter()
                    .filter(|e| e.announcement.id == *id)
                    .map(|e| e.announcement.started_ms),
            )
            .max()
    }

    /// Forgets expired entries.
    pub fn expire(&mut self, now: Instant) {
        let expired: Vec<(StreamId, PeerId)> = self
            .streams
            .iter()
            .flat_map(|(id, l)| {
                l.providers
                    .iter()
                    .filter(|(_, s)| s.expires <= now)
                    .map(|(p, _)| (id.clone(), *p))
            })
            .collect();
        for (id, p) in expired {
            self.remove(&id, &p);
        }
    }

    /// Drops everything learned about `provider` (it told us it stopped, or it misbehaved).
    pub fn forget_provider(&mut self, provider: &PeerId) {
        let ids: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, l)| l.providers.contains_key(provider))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.remove(&id, provider);
        }
    }

    /// What to gossip this round: ordered once, then cut per peer with [`GossipPlan::for_peer`] (a node
    /// with many peers would otherwise order everything it learned once per peer). Our own entries come
    /// first, then learned streams, at most [`GOSSIP_PROVIDERS_PER_STREAM`] providers each (fewest hops,
    /// most spare upload first) and [`MAX_STREAMS_PER_ORIGIN`] streams per origin. Learned streams are taken
    /// in turns from each peer that told us of them, each peer's oldest first: a peer that floods us with
    /// new streams gets its turns, not the whole message.
    pub fn gossip_plan(&self, now: Instant) -> GossipPlan {
        let live = |s: &&Stored| s.expires > now && s.entry.hops < MAX_GOSSIP_HOPS;
        // Each source's streams, oldest first.
        let mut queues: BTreeMap<PeerId, Vec<(Instant, &StreamId)>> = BTreeMap::new();
        for (id, l) in &self.streams {
            let sources: HashSet<PeerId> =
                l.providers.values().filter(live).map(|s| s.from).collect();
            for src in sources {
                queues.entry(src).or_default().push((l.first_seen, id));
            }
        }
        let mut queues: Vec<VecDeque<&StreamId>> = queues
            .into_values()
            .map(|mut q| {
                q.sort();
                q.into_iter().map(|(_, id)| id).collect()
            })
            .collect();
        let mut done: HashSet<&StreamId> = HashSet::new();
        let mut per_origin: HashMap<PeerId, usize> = HashMap::new();
        for e in &self.local {
            *per_origin.entry(e.announcement.id.origin).or_default() += 1;
        }
        let local_count = |id: &StreamId| {
            self.local
                .iter()
                .filter(|e| e.announcement.id == *id)
                .count()
        };
        let mut learned = Vec::new();
        // Entries any peer's message will surely get (each peer's own entry may be left out of a group).
        let mut sure = self.local.len();
        while sure < MAX_ENTRIES && queues.iter().any(|q| !q.is_empty()) {
            for q in queues.iter_mut() {
                let Some(id) = q.pop_front() else { continue };
                if !done.insert(id) {
                    continue;
                }
                let ours = local_count(id);
                if ours == 0 {
                    let n = per_origin.entry(id.origin).or_default();
                    if *n >= MAX_STREAMS_PER_ORIGIN {
                        continue;
                    }
                    *n += 1;
                }
                let mut entries: Vec<&Stored> =
                    self.streams[id].providers.values().filter(live).collect();
                entries.sort_by_key(|s| {
                    (
                        !has_room(s.entry.spare_kbps, TYPICAL_STREAM_KBPS),
                        s.entry.hops,
                        std::cmp::Reverse(s.entry.spare_kbps),
                        s.entry.provider,
                    )
                });
                let room = GOSSIP_PROVIDERS_PER_STREAM.saturating_sub(ours);
                // One more than there is room for, so that the peer's own entry can be left out.
                let group: Vec<CatalogEntry> = entries
                    .into_iter()
                    .take(room + 1)
                    .map(|s| s.entry.clone())
                    .collect();
                sure += group.len().saturating_sub(1).min(room);
                learned.push((room, group));
                if sure >= MAX_ENTRIES {
                    break;
                }
            }
        }
        GossipPlan {
            local: self.local.clone(),
            learned,
        }
    }

    /// What to gossip to `peer` now (see [`Catalog::gossip_plan`]).
    pub fn gossip_for(&self, peer: &PeerId, now: Instant) -> Vec<CatalogEntry> {
        self.gossip_plan(now).for_peer(peer)
    }

    /// Providers of `name` (optionally only of origins whose id starts with `origin_prefix`), newest publish
    /// only, in a stable order (by provider).
    pub fn providers(
        &self,
        name: &str,
        origin_prefix: Option<&str>,
        now: Instant,
    ) -> Vec<CatalogEntry> {
        self.providers_as(name, origin_prefix, now, false)
    }

    /// [`Catalog::providers`] as a subscriber, or a full provider redirecting one, should weigh them to
    /// choose where to attach: a provider's spare upload counts only as the provider itself told us within
    /// [`FIRST_HAND_FOR`]; a second-hand copy says 0. Copies passed on are seconds to minutes old (they echo
    /// between peers, each refreshing the other's), so a provider that filled up long ago would still look as
    /// roomy as when it joined, and subscribers would chase redirects through full nodes.
    pub fn providers_first_hand(
        &self,
        name: &str,
        origin_prefix: Option<&str>,
        now: Instant,
    ) -> Vec<CatalogEntry> {
        self.providers_as(name, origin_prefix, now, true)
    }

    /// Providers of `name` that told us themselves, within [`FIRST_HAND_FOR`], that they provide it: alive
    /// (an entry passed on by others outlives its provider by up to [`ENTRY_TTL`], and copies echo).
    pub fn heard_first_hand(&self, name: &str, now: Instant) -> HashSet<PeerId> {
        self.streams
            .iter()
            .filter(|(id, _)| id.name == name)
            .flat_map(|(_, l)| l.providers.iter())
            .filter(|(_, s)| {
                s.expires > now
                    && s.direct
                        .is_some_and(|t| now.saturating_duration_since(t) < FIRST_HAND_FOR)
            })
            .map(|(p, _)| *p)
            .collect()
    }

    fn providers_as(
        &self,
        name: &str,
        origin_prefix: Option<&str>,
        now: Instant,
        first_hand: bool,
    ) -> Vec<CatalogEntry> {
        let matches = |id: &StreamId| {
            id.name == name && origin_prefix.is_none_or(|p| id.origin.to_string().starts_with(p))
        };
        let mut out = Vec::new();
        for (id, l) in &self.streams {
            if !matches(id) {
                continue;
            }
            let live: Vec<&Stored> = l.providers.values().filter(|s| s.expires > now).collect();
            let newest = live.iter().map(|s| s.entry.announcement.started_ms).max();
            out.extend(
                live.into_iter()
                    .filter(|s| Some(s.entry.announcement.started_ms) == newest)
                    .map(|s| {
                        let mut e = s.entry.clone();
                        let heard = s
                            .direct
                            .is_some_and(|t| now.saturating_duration_since(t) < FIRST_HAND_FOR);
                        if first_hand && !heard {
                            e.spare_kbps = 0;
                        }
                        e
                    }),
            );
        }
        out.sort_by_key(|e| e.provider);
        out
    }

    /// Every stream known (learned or local), sorted by name then origin.
    pub fn streams(&self, now: Instant) -> Vec<KnownStream> {
        let mut map: HashMap<StreamId, KnownStream> = HashMap::new();
        let entries = self.local.iter().chain(
            self.streams
                .values()
                .flat_map(|l| l.providers.values())
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

fn decrement(counts: &mut HashMap<PeerId, usize>, key: &PeerId) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// A shared [`VerifiedCache`].
pub type SharedCache = Arc<VerifiedCache>;

/// How a subscriber sees a candidate provider when choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerView {
    /// Connected now.
    pub connected: bool,
    /// The connection is direct (not through a relay).
    pub direct: bool,
    /// Round-trip time, if measured.
    pub rtt_ms: Option<u32>,
    /// It told us itself, within [`FIRST_HAND_FOR`], that it provides the stream (see
    /// [`Catalog::heard_first_hand`]): it is alive, where an entry passed on may outlive its provider.
    pub heard: bool,
}

/// The bitrate assumed for a stream whose own is not measured yet, kbit/s (a typical live stream's): the
/// upload a provider needs left to take one more subscriber.
pub const TYPICAL_STREAM_KBPS: u64 = 2_500;

/// Whether a provider claiming `spare_kbps` of upload left has room for one more subscriber of a stream of
/// `need_kbps`.
pub fn has_room(spare_kbps: u32, need_kbps: u64) -> bool {
    u64::from(spare_kbps) >= need_kbps.max(1)
}

/// Orders candidates best first: providers we only reach through a relay come last (a hole punch has not
/// worked for them); then those with room for a subscriber of a `need_kbps` stream (see [`has_room`]) before
/// full ones, since a full one only redirects us a level further down; then fewer hops from the origin,
/// lower RTT, more spare upload. So a viewer attaches as close to the origin as capacity allows. A provider
/// we are not connected to yet is not penalised: connecting to it (through a relay, then directly by hole
/// punching) is how a viewer gets the stream straight from the publisher's home. Candidates whose path
/// would form a loop must be removed by the caller.
pub fn rank(candidates: &mut [CatalogEntry], need_kbps: u64, view: impl Fn(&PeerId) -> PeerView) {
    candidates.sort_by_key(|e| {
        let v = view(&e.provider);
        (
            v.connected && !v.direct,
            !has_room(e.spare_kbps, need_kbps),
            e.hops,
            v.rtt_ms.unwrap_or(u32::MAX / 2),
            std::cmp::Reverse(e.spare_kbps),
        )
    });
}

/// Test helpers: entries with real signatures.
#[doc(hidden)]
pub mod testing {
    use super::*;

    /// An entry of `origin`'s stream `name` (publish `started`), provided by `provider` at `hops`.
    pub fn entry(
        origin: &Keypair,
        name: &str,
        started: u64,
        provider: &Keypair,
        hops: u8,
    ) -> CatalogEntry {
        let record = ProviderRecord::new(
            provider,
            vec!["/ip4/198.51.100.7/udp/4001/quic-v1".parse().expect("valid")],
        )
        .expect("sign");
        CatalogEntry::new(
            Announcement::sign(origin, name, started).expect("sign"),
            record,
            hops,
            1000,
        )
    }

    /// An entry with an unsigned announcement and no record, for tests of bounds that need thousands
    /// (signing in debug builds is slow); only [`assume_checked`] takes it.
    pub fn unsigned(origin: PeerId, name: &str, provider: PeerId, hops: u8) -> CatalogEntry {
        CatalogEntry {
            announcement: Announcement::unsigned_for_tests(origin, name, 1),
            provider,
            addrs: Vec::new(),
            record: None,
            hops,
            spare_kbps: 0,
        }
    }

    /// Entries taken as checked.
    pub fn assume_checked(entries: Vec<CatalogEntry>) -> Checked {
        Checked {
            entries,
            ..Checked::default()
        }
    }

    /// Checks `entries` as if they had arrived on the wire.
    pub fn checked(entries: &[CatalogEntry]) -> Checked {
        let bytes = encode(entries);
        check(
            decode(&bytes[4..]).expect("decodes"),
            &VerifiedCache::default(),
            usize::MAX,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{assume_checked, checked, entry, unsigned};
    use super::*;

    fn keys(n: usize) -> Vec<Keypair> {
        (0..n).map(|_| Keypair::generate_ed25519()).collect()
    }

    #[test]
    fn round_trips_and_refuses_oversized() {
        let k = keys(3);
        let e = vec![
            entry(&k[0], "a", 1, &k[0], 0),
            entry(&k[0], "b", 2, &k[1], 3),
        ];
        let bytes = encode(&e);
        assert_eq!(
            message_len(bytes[..4].try_into().unwrap()),
            Ok(bytes.len() - 4)
        );
        let c = check(
            decode(&bytes[4..]).unwrap(),
            &VerifiedCache::default(),
            usize::MAX,
        );
        assert_eq!(c.entries, e);
        assert!(decode(&[0xff, 0xff]).is_err());
        assert!(decode(&vec![0u8; MAX_MESSAGE + 1]).is_err());
        assert!(message_len(((MAX_MESSAGE + 1) as u32).to_be_bytes()).is_err());
        let mut b = bytes[4..].to_vec();
        b.push(0);
        assert_eq!(decode(&b), Err(WireError::Trailing));
    }

    #[test]
    fn forged_announcements_records_and_false_hop_claims_are_refused() {
        let k = keys(3);
        let (origin, relay, mallory) = (&k[0], &k[1], &k[2]);
        let good = entry(origin, "alice", 10, relay, 1);
        let mut forged = good.clone();
        forged.announcement = forged.announcement.forged_with_start(11);
        // A relay claiming to be hop 0 (only the origin is), and the origin claiming to be further away.
        let fake_origin = entry(origin, "alice", 10, relay, 0);
        let shy_origin = entry(origin, "alice", 10, origin, 2);
        // Someone else's record with the addresses swapped: the signature no longer matches.
        let mut raw = decode(&encode(&[entry(origin, "alice", 10, mallory, 1)])[4..]).unwrap();
        let n = raw[0].record.len();
        let mut tampered = raw[0].record.to_vec();
        tampered[n - 70] ^= 1;
        raw[0].record = Bytes::from(tampered);
        let mut all =
            decode(&encode(&[good.clone(), forged, fake_origin, shy_origin])[4..]).unwrap();
        all.extend(raw);
        let c = check(all, &VerifiedCache::default(), usize::MAX);
        assert_eq!(c.entries, vec![good.clone()]);
        assert_eq!(c.forged, vec![good.announcement.id.clone()]);
        assert_eq!(c.false_claims, 3);
    }

    #[test]
    fn news_goes_at_once_a_change_after_the_spacing_the_same_after_the_repeat() {
        let k = keys(2);
        let a = unsigned(
            k[0].public().to_peer_id(),
            "a",
            k[1].public().to_peer_id(),
            1,
        );
        let b = unsigned(
            k[0].public().to_peer_id(),
            "b",
            k[1].public().to_peer_id(),
            1,
        );
        let sent = Sent::new(1, std::slice::from_ref(&a));
        let just = Duration::from_millis(10);
        // The default: 4 s after a message, and never later than an unchanged one would go.
        let sp = change_spacing(Duration::from_secs(2));
        assert_eq!(sp, Duration::from_secs(4));
        assert_eq!(change_spacing(Duration::from_secs(10)), GOSSIP_REPEAT);
        // The same message: only after GOSSIP_REPEAT; an empty one never.
        assert!(!sent.due(1, std::slice::from_ref(&a), just, sp));
        assert!(!sent.due(1, std::slice::from_ref(&a), GOSSIP_REPEAT - just, sp));
        assert!(sent.due(1, std::slice::from_ref(&a), GOSSIP_REPEAT, sp));
        assert!(!Sent::new(7, &[]).due(7, &[], GOSSIP_REPEAT * 10, sp));
        // The same stream with other figures (hops, spare, providers): after the spacing.
        let mut a2 = a.clone();
        a2.hops = 2;
        assert!(!sent.due(2, std::slice::from_ref(&a2), just, sp));
        assert!(!sent.due(2, std::slice::from_ref(&a2), sp - just, sp));
        assert!(sent.due(2, std::slice::from_ref(&a2), sp, sp));
        assert!(!sent.due(3, &[], just, sp), "a stream gone is not news");
        // A stream the peer has not had from us, or a newer publish of one: at once.
        assert!(sent.due(4, &[a.clone(), b], just, sp));
        let mut republished = a.clone();
        republished.announcement = Announcement::unsigned_for_tests(
            a.announcement.id.origin,
            "a",
            a.announcement.started_ms + 1,
        );
        assert!(sent.due(5, &[republished], just, sp));
    }

    #[test]
    fn a_sender_costs_at_most_its_allowance_of_new_signatures() {
        let k = keys(4);
        let entries: Vec<CatalogEntry> = (0..4).map(|i| entry(&k[i], "s", 1, &k[i], 0)).collect();
        let raw = decode(&encode(&entries)[4..]).unwrap();
        let cache = VerifiedCache::default();
        // Two entries' worth (an announcement and a record each).
        let c = check(raw.clone(), &cache, 4);
        assert_eq!((c.entries.len(), c.unchecked, c.verified), (2, 2, 4));
        // What was checked once costs nothing the next time.
        let c = check(raw, &cache, 4);
        assert_eq!((c.entries.len(), c.unchecked, c.verified), (4, 0, 4));
    }

    #[test]
    fn merges_expires_and_ignores_our_own_entries() {
        let k = keys(2);
        let me = PeerId::random();
        let from = PeerId::random();
        let mut c = Catalog::default();
        let t0 = Instant::now();
        let good = entry(&k[0], "alice", 10, &k[0], 0);
        let m = c.merge(&me, from, checked(std::slice::from_ref(&good)), t0);
        assert_eq!(m.accepted, 1);
        assert!(m.changed);
        assert_eq!(c.providers("alice", None, t0), vec![good.clone()]);
        assert_eq!(c.streams(t0).len(), 1);
        // The same again is not news.
        assert!(
            !c.merge(&me, from, checked(std::slice::from_ref(&good)), t0)
                .changed
        );
        c.expire(t0 + ENTRY_TTL + Duration::from_secs(1));
        assert!(
            c.providers("alice", None, t0 + ENTRY_TTL + Duration::from_secs(1))
                .is_empty()
        );
        assert_eq!(c.learned_len(), 0);
        assert!(c.first_seen(&good.announcement.id).is_none());
    }

    #[test]
    fn newer_publish_supersedes_and_origin_prefix_filters() {
        let k = keys(3);
        let me = PeerId::random();
        let from = PeerId::random();
        let (a, b, relay) = (&k[0], &k[1], &k[2]);
        let mut c = Catalog::default();
        let t = Instant::now();
        c.merge(&me, from, checked(&[entry(a, "game", 1, a, 0)]), t);
        c.merge(&me, from, checked(&[entry(a, "game", 2, relay, 1)]), t);
        c.merge(&me, from, checked(&[entry(b, "game", 5, b, 0)]), t);
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
        let k = keys(3);
        let (me, c) = (PeerId::random(), PeerId::random());
        let (a, far) = (&k[0], &k[1]);
        let pa = a.public().to_peer_id();
        let mut cat = Catalog::default();
        let t = Instant::now();
        cat.merge(&me, pa, checked(&[entry(a, "alice", 1, a, 0)]), t);
        // C hears of A's stream with A's own addresses, so it can go to A.
        let to_c = cat.gossip_for(&c, t);
        assert_eq!(to_c.len(), 1);
        assert_eq!((to_c[0].provider, to_c[0].hops), (pa, 0));
        // A is not told about itself.
        assert!(cat.gossip_for(&pa, t).is_empty());
        // Entries at the hop limit are kept but not passed on.
        cat.merge(
            &me,
            pa,
            checked(&[entry(a, "far", 1, far, MAX_GOSSIP_HOPS)]),
            t,
        );
        assert!(
            cat.gossip_for(&pa, t)
                .iter()
                .all(|e| e.announcement.id.name != "far")
        );
    }

    #[test]
    fn gossip_passes_on_a_bounded_number_of_the_best_providers_per_stream() {
        let k = keys(2);
        let (a, b) = (&k[0], &k[1]);
        let (me, to, from) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut cat = Catalog::default();
        let t = Instant::now();
        // 30 providers of A's stream at 1..=30 hops (one with more spare at 5 hops), 2 of B's.
        let mut many: Vec<CatalogEntry> = (1..=30u8)
            .map(|h| entry(a, "big", 1, &Keypair::generate_ed25519(), h))
            .collect();
        let mut rich = entry(a, "big", 1, &Keypair::generate_ed25519(), 5);
        rich.spare_kbps = 9000;
        many.push(rich.clone());
        many.push(entry(b, "small", 1, &Keypair::generate_ed25519(), 1));
        many.push(entry(b, "small", 1, &Keypair::generate_ed25519(), 2));
        cat.merge(&me, from, checked(&many), t);
        let out = cat.gossip_for(&to, t);
        let big: Vec<&CatalogEntry> = out
            .iter()
            .filter(|e| e.announcement.id.name == "big")
            .collect();
        assert_eq!(big.len(), GOSSIP_PROVIDERS_PER_STREAM);
        // One with room for a typical stream first (what a subscriber is looking for), then the nearest.
        let hops: Vec<u8> = big.iter().map(|e| e.hops).collect();
        assert_eq!(hops, [5, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(big[0].provider, rich.provider);
        assert_eq!(
            out.iter()
                .filter(|e| e.announcement.id.name == "small")
                .count(),
            2
        );
    }

    #[test]
    fn a_flood_is_bounded_and_cannot_push_real_streams_out_of_gossip() {
        let me = PeerId::random();
        let (honest, flooder, to) = (PeerId::random(), PeerId::random(), PeerId::random());
        let alice = Keypair::generate_ed25519();
        let mut cat = Catalog::default();
        let t0 = Instant::now();
        cat.merge(
            &me,
            honest,
            checked(&[entry(&alice, "alice", 1, &alice, 0)]),
            t0,
        );
        // One origin with many streams: only a bounded number is kept.
        let spammer = PeerId::random();
        let spam: Vec<CatalogEntry> = (0..40)
            .map(|i| unsigned(spammer, &format!("s{i}"), spammer, 0))
            .collect();
        let m = cat.merge(&me, flooder, assume_checked(spam), t0);
        assert_eq!(m.accepted, MAX_STREAMS_PER_ORIGIN);
        assert_eq!(m.dropped, 40 - MAX_STREAMS_PER_ORIGIN);
        // Many new origins, later, whose ids may sort before alice's: alice's stream is still passed on.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..3 {
            let wave: Vec<CatalogEntry> = (0..MAX_ENTRIES)
                .map(|_| {
                    let o = PeerId::random();
                    unsigned(o, "a", o, 0)
                })
                .collect();
            cat.merge(&me, flooder, assume_checked(wave), t1);
        }
        let out = cat.gossip_for(&to, t1);
        assert_eq!(out.len(), MAX_ENTRIES);
        assert!(
            out.iter().any(|e| e.announcement.id.name == "alice"),
            "the real stream is still gossiped"
        );
    }

    #[test]
    fn when_full_the_peer_that_told_us_most_gives_way() {
        let me = PeerId::random();
        let (flooder, honest) = (PeerId::random(), PeerId::random());
        let mut cat = Catalog::default();
        let t = Instant::now();
        while cat.learned_len() < MAX_LEARNED {
            let o = PeerId::random();
            let wave: Vec<CatalogEntry> = (0..MAX_STREAMS_PER_ORIGIN)
                .map(|i| unsigned(o, &format!("x{i}"), o, 0))
                .collect();
            cat.merge(&me, flooder, assume_checked(wave), t);
        }
        let alice = PeerId::random();
        let m = cat.merge(
            &me,
            honest,
            assume_checked(vec![unsigned(alice, "alice", alice, 0)]),
            t,
        );
        assert_eq!(m.accepted, 1);
        assert_eq!(cat.learned_len(), MAX_LEARNED, "still bounded");
        assert_eq!(cat.providers("alice", None, t).len(), 1);
        // The flooder cannot push it out again: it already holds more than its share.
        let o = PeerId::random();
        let m = cat.merge(
            &me,
            flooder,
            assume_checked(vec![unsigned(o, "y", o, 0)]),
            t,
        );
        assert_eq!(m.dropped, 1);
        assert_eq!(cat.providers("alice", None, t).len(), 1);
        // A second honest peer still gets in, at the flooder's expense.
        let bob = PeerId::random();
        let m = cat.merge(
            &me,
            PeerId::random(),
            assume_checked(vec![unsigned(bob, "bob", bob, 0)]),
            t,
        );
        assert_eq!(m.accepted, 1);
        assert_eq!(cat.learned_len(), MAX_LEARNED);
    }

    #[test]
    fn a_replayed_older_record_does_not_replace_a_newer_one() {
        let me = PeerId::random();
        let from = PeerId::random();
        let (origin, relay) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let ann = Announcement::sign(&origin, "s", 1).unwrap();
        let at = |seq_addr: &str| {
            // Records are numbered by the second they were signed in: build two a second apart.
            ProviderRecord::new(&relay, vec![seq_addr.parse().unwrap()]).unwrap()
        };
        let old = at("/ip4/198.51.100.1/tcp/1");
        std::thread::sleep(Duration::from_millis(1100));
        let new = at("/ip4/198.51.100.2/tcp/1");
        assert!(new.seq() > old.seq());
        let mut cat = Catalog::default();
        let t = Instant::now();
        cat.merge(
            &me,
            from,
            checked(&[CatalogEntry::new(ann.clone(), new.clone(), 1, 0)]),
            t,
        );
        cat.merge(&me, from, checked(&[CatalogEntry::new(ann, old, 1, 0)]), t);
        assert_eq!(cat.providers("s", None, t)[0].addrs, new.addrs());
    }

    #[test]
    fn ranking_puts_relayed_only_last_then_hops_rtt_spare() {
        let k = keys(5);
        let o = &k[0];
        let (p1, p2, p3, p4) = (
            k[1].public().to_peer_id(),
            k[2].public().to_peer_id(),
            k[3].public().to_peer_id(),
            k[4].public().to_peer_id(),
        );
        let mut v = vec![
            entry(o, "s", 1, &k[1], 1), // relayed
            entry(o, "s", 1, &k[2], 3), // direct, far
            entry(o, "s", 1, &k[3], 1), // direct, slow
            entry(o, "s", 1, &k[4], 1), // direct, fast
        ];
        rank(&mut v, 0, |p| PeerView {
            connected: true,
            direct: *p != p1,
            rtt_ms: Some(if *p == p3 { 80 } else { 5 }),
            heard: true,
        });
        let order: Vec<PeerId> = v.iter().map(|e| e.provider).collect();
        assert_eq!(order, vec![p4, p3, p2, p1]);
        // A provider we are not connected to yet is tried before a farther one we reach directly.
        let mut v = vec![entry(o, "s", 1, &k[1], 1), entry(o, "s", 1, o, 0)];
        rank(&mut v, 0, |p| PeerView {
            connected: *p == p1,
            direct: *p == p1,
            rtt_ms: None,
            heard: false,
        });
        assert_eq!(v[0].provider, o.public().to_peer_id());
        let _ = p2;
    }

    #[test]
    fn ranking_puts_providers_with_room_first_then_the_shallowest() {
        let k = keys(4);
        let o = &k[0];
        let with_spare = |provider: &Keypair, hops: u8, spare: u32| CatalogEntry {
            spare_kbps: spare,
            ..entry(o, "s", 1, provider, hops)
        };
        let full_near = with_spare(&k[1], 1, 1500);
        let room_far = with_spare(&k[2], 3, 5000);
        let room_mid = with_spare(&k[3], 2, 2500);
        let mut v = vec![full_near.clone(), room_far.clone(), room_mid.clone()];
        rank(&mut v, 2500, |_| PeerView::default());
        let order: Vec<PeerId> = v.iter().map(|e| e.provider).collect();
        assert_eq!(
            order,
            vec![room_mid.provider, room_far.provider, full_near.provider]
        );
        // A smaller stream fits everywhere: hops decide again.
        rank(&mut v, 1000, |_| PeerView::default());
        assert_eq!(v[0].provider, full_near.provider);
        assert!(has_room(2500, 2500) && !has_room(2499, 2500) && !has_room(0, 0));
    }

    #[test]
    fn a_providers_own_word_on_its_room_stands_and_second_hand_room_does_not_count() {
        let k = keys(3);
        let (o, p) = (&k[0], &k[1]);
        let (me, relay) = (PeerId::random(), k[2].public().to_peer_id());
        let provider = p.public().to_peer_id();
        let t = Instant::now();
        let with_spare = |spare: u32| CatalogEntry {
            spare_kbps: spare,
            ..entry(o, "s", 1, p, 2)
        };
        let mut cat = Catalog::default();
        // Heard second hand: listed, but its room does not count for placement, and it is not known alive.
        cat.merge(&me, relay, checked(&[with_spare(9000)]), t);
        assert_eq!(cat.providers("s", None, t)[0].spare_kbps, 9000);
        assert_eq!(cat.providers_first_hand("s", None, t)[0].spare_kbps, 0);
        assert!(cat.heard_first_hand("s", t).is_empty());
        // The provider tells us itself that it is full now.
        cat.merge(&me, provider, checked(&[with_spare(500)]), t);
        assert_eq!(cat.providers_first_hand("s", None, t)[0].spare_kbps, 500);
        assert_eq!(cat.heard_first_hand("s", t), HashSet::from([provider]));
        // An older copy passed on (it still says 9000) does not override the provider's own word.
        let t1 = t + Duration::from_millis(300);
        cat.merge(&me, relay, checked(&[with_spare(9000)]), t1);
        assert_eq!(cat.providers("s", None, t1)[0].spare_kbps, 500);
        // Its word is fresh only for a while: then it counts neither as room nor as a sign of life.
        let later = t + FIRST_HAND_FOR;
        assert_eq!(cat.providers_first_hand("s", None, later)[0].spare_kbps, 0);
        assert!(cat.heard_first_hand("s", later).is_empty());
        assert_eq!(cat.providers("s", None, later).len(), 1, "still listed");
    }

    #[test]
    fn a_full_stream_list_keeps_what_providers_told_us_themselves() {
        let o = PeerId::random();
        let (me, relay) = (PeerId::random(), PeerId::random());
        let t = Instant::now();
        let mut cat = Catalog::default();
        // The list of one stream is full of near providers heard second hand.
        let near: Vec<CatalogEntry> = (0..MAX_PROVIDERS_PER_STREAM)
            .map(|_| unsigned(o, "s", PeerId::random(), 1))
            .collect();
        cat.merge(&me, relay, assume_checked(near), t);
        // A farther one heard second hand is not kept...
        let far = unsigned(o, "s", PeerId::random(), 5);
        assert_eq!(
            cat.merge(&me, relay, assume_checked(vec![far]), t).dropped,
            1
        );
        // ...but one that tells us itself (a subscriber of ours: where we redirect to) is.
        let ours = PeerId::random();
        let merged = cat.merge(
            &me,
            ours,
            assume_checked(vec![unsigned(o, "s", ours, 5)]),
            t,
        );
        assert_eq!((merged.accepted, merged.dropped), (1, 0));
        let listed = cat.providers("s", None, t);
        assert_eq!(listed.len(), MAX_PROVIDERS_PER_STREAM);
        assert!(listed.iter().any(|e| e.provider == ours));
    }
}
