//! The policy of one fetch (getting a wanted stream from the mesh and keeping it), with no I/O: which
//! providers to try and in what order, how long to rest a provider that redirected, refused or failed,
//! how long to wait when nobody is known, when to stop. The shell in `service/fetch.rs` asks the catalog
//! and the DHT, runs [`super::Upstream`] sessions and reports their [`Outcome`]s here; the simulator
//! (`streamr_mesh::sim`) drives the same code with virtual time.

use super::upstream::{Loss, Outcome, Refusal};
use crate::announce::StreamId;
use crate::catalog::{CatalogEntry, PeerView, TYPICAL_STREAM_KBPS, has_room, rank};
use crate::wire::ProviderHint;
use libp2p::PeerId;
use parking_lot::RwLock;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamr_media::LookupState;

/// A fetch with nobody listening for this long stops.
pub const UNWANTED_AFTER: Duration = Duration::from_secs(10);
/// Rest after a redirect (the provider is full), a refusal, an unreachable provider, a lost upstream.
pub const REST_REDIRECTED: Duration = Duration::from_secs(3);
/// ... but only this long when every provider it named rests itself (typically the relay we just lost, which
/// the full provider still counts as its subscriber for a moment): its slot is about to free.
pub const REST_DEAD_END: Duration = Duration::from_millis(500);
/// See [`REST_REDIRECTED`].
pub const REST_REFUSED: Duration = Duration::from_secs(5);
/// See [`REST_REDIRECTED`]: short, since its addresses may change (a relay reservation appears).
pub const REST_UNREACHABLE: Duration = Duration::from_secs(1);
/// See [`REST_REDIRECTED`].
pub const REST_LOST: Duration = Duration::from_secs(5);
/// A provider that sent forged media or made a false claim: it (or a node above it) is hostile, so it is
/// not asked again for a long time.
pub const REST_HOSTILE: Duration = Duration::from_secs(600);
/// First and longest wait when no provider is known (doubling in between).
pub const IDLE_WAIT_MIN: Duration = Duration::from_millis(250);
/// See [`IDLE_WAIT_MIN`].
pub const IDLE_WAIT_MAX: Duration = Duration::from_secs(2);
/// A node served by a working upstream looks for a place nearer the origin ([`Fetcher::climb`]) only after
/// it has been served this long (a join or a repair settles first)...
pub const CLIMB_SETTLE: Duration = Duration::from_secs(10);
/// ... and then at most this often: past the time a provider's word in the catalog takes to change
/// (`catalog::change_spacing`), so that room others took meanwhile shows before the next try.
pub const CLIMB_EVERY: Duration = Duration::from_secs(10);
/// A provider is worth moving to only with room for this many subscribers: the claim reaches all its
/// neighbours at once, and a node that is only slow (not dead) does not hold its slot at admission, so
/// with room for one, a herd of movers can land on it together.
pub const CLIMB_ROOM_SLOTS: u64 = 2;

/// Shortest origin a player may name in `NAME@ORIGIN`. Every Ed25519 node id begins with the same eight
/// characters (`12D3KooW`), so six characters named nobody in particular and a forger could grind a key to
/// match a short prefix; twenty-four leave sixteen base58 characters, about 93 bits.
pub const MIN_ORIGIN_PREFIX: usize = 24;

/// The name a player plays to get `origin`'s stream `name` when several nodes publish that name:
/// `NAME@` and the first [`MIN_ORIGIN_PREFIX`] characters of the origin's id.
pub fn play_name(name: &str, origin: &PeerId) -> String {
    let id = origin.to_string();
    format!("{name}@{}", &id[..id.len().min(MIN_ORIGIN_PREFIX)])
}

/// Why a fetch stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Nobody on this node wants the stream any more.
    Unwanted,
    /// A local source (publisher, pull relay) owns the name now.
    LocalSource,
    /// The player's `NAME@ORIGIN` does not name one origin safely; the text says why, for the player.
    BadOrigin(String),
}

/// After an outcome: go on down the candidate list, or look for candidates again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try the next candidate of this round.
    NextCandidate,
    /// Build a new candidate list (news: hints, a lost upstream).
    NewRound,
    /// Stop fetching.
    Stop,
}

/// The node's friends (the people who invited it, or whom it joined): a plain stream name resolves to a
/// friend's stream before a stranger's. Shared with the node, which adds a friend as soon as a join
/// succeeds, so running fetches see it in their next round. Cloning shares the set.
#[derive(Debug, Clone, Default)]
pub struct Friends(Arc<RwLock<HashSet<PeerId>>>);

impl Friends {
    /// A set holding `peers`.
    pub fn new(peers: impl IntoIterator<Item = PeerId>) -> Self {
        Friends(Arc::new(RwLock::new(peers.into_iter().collect())))
    }

    /// Adds a friend; false if it was one already.
    pub fn insert(&self, peer: PeerId) -> bool {
        self.0.write().insert(peer)
    }

    /// Whether `peer` is a friend.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.0.read().contains(peer)
    }
}

/// [`IDLE_WAIT_MIN`] doubling to [`IDLE_WAIT_MAX`]; no jitter, so that a simulated mesh stays a function of
/// its seed (the catalog's news, not the timer, is what usually ends the wait).
fn idle_waits() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(IDLE_WAIT_MIN)
        .with_max_delay(IDLE_WAIT_MAX)
        .without_max_times()
        .build()
}

/// Where a served node is in the tree, for [`Fetcher::climb`].
#[derive(Debug, Clone, Copy)]
pub struct Place {
    /// The origin of the stream it receives (from its lineage: a fetch that found its first provider
    /// through the DHT has not settled on one in the catalog).
    pub origin: PeerId,
    /// Its distance from the origin.
    pub hops: u8,
    /// The provider it receives from.
    pub upstream: PeerId,
}

/// One fetch's policy state. See the module docs.
#[derive(Debug)]
pub struct Fetcher {
    me: PeerId,
    /// Stream name.
    name: String,
    /// `NAME@PREFIX`: only origins whose id starts with this.
    prefix: Option<String>,
    /// The origin this fetch settled on (the only one it subscribes to from then on).
    chosen: Option<PeerId>,
    /// Why the fetch cannot go on (a bad or ambiguous origin), once known.
    problem: Option<String>,
    /// Providers resting until an instant.
    cooldown: HashMap<PeerId, Instant>,
    /// Providers a redirect named: tried in the next round (see [`Fetcher::candidates`]).
    hinted: Vec<ProviderHint>,
    /// The provider whose redirect named them.
    hinted_by: Option<PeerId>,
    /// When the last upstream's last frame arrived (to measure the failover gap).
    last_frame: Option<Instant>,
    unwanted_since: Option<Instant>,
    /// Waits between looks while no provider turns up.
    idle_waits: backon::ExponentialBackoff,
    /// Origins preferred for a plain name.
    friends: Friends,
    /// The stream's bitrate, kbit/s: the spare upload a provider needs to have room for us.
    need_kbps: u64,
    /// Our distance from the origin while we held the stream (or before we lost it): providers at least
    /// as far may be below us, and would refuse us (a loop).
    place: Option<u8>,
    /// Peers we serve the stream to: with none, nobody is below us, wherever we were.
    serving: usize,
}

impl Fetcher {
    /// A fetch of `key` (`NAME` or `NAME@ORIGIN-PREFIX`) by node `me`.
    pub fn new(me: PeerId, key: &str) -> Self {
        let (name, prefix) = split_key(key);
        let problem = prefix.filter(|p| p.len() < MIN_ORIGIN_PREFIX).map(|p| {
            format!(
                "{p:?} is too short to name the node that publishes {name:?}: use at least \
                 {MIN_ORIGIN_PREFIX} characters of its id (its dashboard shows the whole id), or just {name:?}"
            )
        });
        Fetcher {
            me,
            name: name.to_string(),
            prefix: prefix.map(str::to_string),
            chosen: None,
            problem,
            cooldown: HashMap::new(),
            hinted: Vec::new(),
            hinted_by: None,
            last_frame: None,
            unwanted_since: None,
            idle_waits: idle_waits(),
            friends: Friends::default(),
            need_kbps: TYPICAL_STREAM_KBPS,
            place: None,
            serving: 0,
        }
    }

    /// Our distance from the origin in the tree, while we hold the stream or after we lost our upstream
    /// (None: never attached). See [`Fetcher::candidates`].
    pub fn set_place(&mut self, hops: Option<u8>) {
        self.place = hops;
    }

    /// How many peers we serve the stream to (see [`Fetcher::candidates`]): with none, no provider can be
    /// below us, and those as far from the origin as we were are as good as any.
    pub fn set_serving(&mut self, peers: usize) {
        self.serving = peers;
    }

    /// The stream's bitrate once measured, kbit/s (until then a typical stream's is assumed): providers
    /// whose spare upload fits it are tried first.
    pub fn set_need_kbps(&mut self, kbps: u64) {
        self.need_kbps = kbps;
    }

    /// Prefers the streams of these origins for a plain name (see [`Friends`]).
    pub fn with_friends(mut self, friends: Friends) -> Self {
        self.friends = friends;
        self
    }

    /// The stream name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The origin prefix asked for, if any.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// When the last upstream's last frame arrived.
    pub fn last_frame(&self) -> Option<Instant> {
        self.last_frame
    }

    /// The origin subscriptions ask for: the one this fetch settled on, once it did.
    pub fn origin(&self) -> Option<PeerId> {
        self.chosen
    }

    /// Whether to go on, given who wants the stream and whether a local source owns it.
    pub fn check(&mut self, now: Instant, subscribers: u64, local_source: bool) -> Option<Stop> {
        if let Some(p) = &self.problem {
            return Some(Stop::BadOrigin(p.clone()));
        }
        if local_source {
            return Some(Stop::LocalSource);
        }
        if subscribers > 0 {
            self.unwanted_since = None;
            return None;
        }
        let since = *self.unwanted_since.get_or_insert(now);
        (now.duration_since(since) > UNWANTED_AFTER).then_some(Stop::Unwanted)
    }

    fn usable(&self, p: &PeerId) -> bool {
        *p != self.me && !self.cooldown.contains_key(p)
    }

    /// Settles on one origin among the catalog's entries of this name: the one this node already plays;
    /// else the one named by `NAME@ORIGIN`, which must be the only match; else, for a plain name, a
    /// friend's, then the origin this node has known longest (`known_since`). Self-declared start times and
    /// hop counts do not decide: anyone can sign its own stream of any name with any start time. A choice
    /// stays settled, except that a stranger's not yet played gives way to a friend's that appears.
    fn settle_origin(
        &mut self,
        entries: &[CatalogEntry],
        playing_origin: Option<PeerId>,
        known_since: &impl Fn(&StreamId) -> Option<Instant>,
    ) -> Option<PeerId> {
        if let Some(o) = playing_origin {
            self.chosen = Some(o);
            return Some(o);
        }
        let origins: std::collections::BTreeSet<(Option<Instant>, PeerId)> = entries
            .iter()
            .filter(|e| e.announcement.id.origin != self.me)
            .filter(|e| {
                self.prefix
                    .as_deref()
                    .is_none_or(|p| e.announcement.id.origin.to_string().starts_with(p))
            })
            .map(|e| (known_since(&e.announcement.id), e.announcement.id.origin))
            .collect();
        if self.prefix.is_some() && origins.len() > 1 {
            self.problem = Some(format!(
                "{} nodes publish {:?} with ids starting {:?}: name the one you want with more of its id",
                origins.len(),
                self.name,
                self.prefix.as_deref().unwrap_or_default()
            ));
            return None;
        }
        let friend_offered = origins.iter().any(|(_, o)| self.friends.contains(o));
        if let Some(o) = self.chosen
            && (self.friends.contains(&o) || !friend_offered)
        {
            return Some(o);
        }
        // Friends first, then known longest (None, "just now", sorts first only when nothing is known).
        let chosen = origins
            .iter()
            .min_by_key(|(since, o)| (!self.friends.contains(o), since.is_none(), *since, *o))
            .map(|(_, o)| *o)?;
        self.chosen = Some(chosen);
        Some(chosen)
    }

    /// Providers to try, best first, among the catalog's of the one origin this fetch settled on (see
    /// [`Fetcher::origin`]), the hints of the last redirect and the nodes above a lost upstream. First those
    /// known to be alive, by where we would land with them: a provider with room for us (see [`rank`]) at its
    /// hops + 1; a redirect's hint at its own (the redirecting provider ranked its hints by what it knows
    /// first hand); a node above our lost upstream (the first just lost its subscriber, our dead upstream,
    /// so it has a free slot) if we heard from it lately; a full provider we heard from lately, or the
    /// origin, one level further down, after its redirect. Then the nodes above a lost upstream we have not
    /// heard from, then providers with room as far from the origin as our place (see
    /// [`Fetcher::set_place`]: they may be below us, and would refuse us), then the rest of the catalog,
    /// ranked: those may be dead, and an attempt on a dead provider costs a connect or an answer timeout.
    /// Attaching as close to the origin as room allows, rather than to whoever a full node redirects us
    /// to, keeps the tree shallow and saves the round trips of a chase through full nodes. Pass the
    /// catalog as [`crate::catalog::Catalog::providers_first_hand`] gives it, so that only fresh claims of
    /// room count. `view` says how this node sees a peer (connected, direct, RTT, heard from lately);
    /// `known_since` when it first heard of a stream.
    pub fn candidates(
        &mut self,
        now: Instant,
        catalog: Vec<CatalogEntry>,
        playing_origin: Option<PeerId>,
        fallbacks: &[ProviderHint],
        view: impl Fn(&PeerId) -> PeerView,
        known_since: impl Fn(&StreamId) -> Option<Instant>,
    ) -> Vec<PeerId> {
        self.cooldown.retain(|_, until| *until > now);
        let hinted = std::mem::take(&mut self.hinted);
        let hinted_by = self.hinted_by.take();
        let catalog: Vec<CatalogEntry> = catalog
            .into_iter()
            .filter(|e| e.announcement.id.name == self.name)
            .collect();
        let origin = self.settle_origin(&catalog, playing_origin, &known_since);
        if self.problem.is_some() {
            return Vec::new();
        }
        // Where the provider that redirected us sits (it rests now, so it is not among the entries).
        let hinter =
            hinted_by.and_then(|p| catalog.iter().find(|e| e.provider == p).map(|e| e.hops));
        let mut entries: Vec<CatalogEntry> = catalog
            .into_iter()
            .filter(|e| Some(e.announcement.id.origin) == origin)
            .filter(|e| self.usable(&e.provider) && e.announcement.id.origin != self.me)
            .collect();
        rank(&mut entries, self.need_kbps, &view);
        // With room, and not reached only through a relay (a hole punch has not worked for it).
        let roomy = |e: &CatalogEntry| {
            let v = view(&e.provider);
            has_room(e.spare_kbps, self.need_kbps) && (!v.connected || v.direct)
        };
        let above = |e: &CatalogEntry| self.serving == 0 || self.place.is_none_or(|h| e.hops < h);
        // The origin of a live stream is alive (its entry is the one at hop 0), whoever passed it on.
        let heard = |p: &PeerId| view(p).heard || origin == Some(*p);
        let hops_of = |p: &PeerId| entries.iter().find(|e| e.provider == *p).map(|e| e.hops);
        let fallbacks: Vec<PeerId> = fallbacks
            .iter()
            .map(|f| f.peer)
            .filter(|p| self.usable(p))
            .collect();
        // First the candidates we know to be alive, by where we would land with them: a provider with room
        // at its hops + 1; one a redirect named at its own (the redirecting provider ranked it by what it
        // knows first hand; one we do not know is that provider's downstream); a node above a lost
        // upstream (the first just lost its subscriber, our dead upstream); a full provider one level
        // further down, after its redirect. Among equals in that order.
        let unknown = |hinter: Option<u8>| hinter.map_or(u8::MAX, |h| h.saturating_add(2));
        let mut first: Vec<(u8, u8, PeerId)> = Vec::new();
        for e in entries.iter().filter(|e| roomy(e) && above(e)) {
            first.push((e.hops.saturating_add(1), 0, e.provider));
        }
        for h in hinted.iter().filter(|h| self.usable(&h.peer)) {
            let land = hops_of(&h.peer).map_or(unknown(hinter), |x| x.saturating_add(1));
            first.push((land, 1, h.peer));
        }
        for f in fallbacks.iter().filter(|p| heard(p)) {
            let land = hops_of(f).or(self.place.map(|h| h.saturating_sub(1)));
            first.push((land.map_or(u8::MAX, |x| x.saturating_add(1)), 1, *f));
        }
        for e in entries.iter().filter(|e| heard(&e.provider) && above(e)) {
            first.push((e.hops.saturating_add(2), 2, e.provider));
        }
        // Stable: equals keep the order they came in (the rank, the redirect's order).
        first.sort_by_key(|(land, kind, p)| (*land, *kind, !view(p).connected));
        let mut out: Vec<PeerId> = first.into_iter().map(|(_, _, p)| p).collect();
        // A sure thing second: a provider we heard from lately that has room for us (and cannot be below
        // us). The first is often a full provider nearer the origin, whose redirect leads one level down
        // at a time, a new connection each; the round asks the second when the first is slow to answer
        // (see [`super::Round`]), so the chase is tried without waiting on it.
        let sure = entries
            .iter()
            .filter(|e| roomy(e) && above(e) && heard(&e.provider))
            .min_by_key(|e| e.hops)
            .map(|e| e.provider);
        if let Some(sure) = sure
            && out.first() != Some(&sure)
            && let Some(at) = out.iter().position(|p| *p == sure)
        {
            out.remove(at);
            out.insert(1, sure);
        }
        // Then the others: an attempt on a dead provider costs a connect or an answer timeout, seconds.
        out.extend(fallbacks);
        out.extend(entries.iter().filter(|e| roomy(e)).map(|e| e.provider));
        out.extend(entries.into_iter().map(|e| e.provider));
        dedup_keep_order(&mut out);
        out
    }

    /// A provider worth leaving a working upstream for, while we are served at [`Place`]: one that said
    /// itself, lately, that it has room for us and one more ([`Fetcher::would_lift`]; [`PeerView::heard`],
    /// first-hand spare upload), that we reach over a direct connection already (trying it costs one stream, not a dial), and
    /// with which we would land at least a level nearer the origin. Nearest first, then the lowest RTT.
    /// Moving up takes our whole subtree with us, and each move shortens somebody's path, so moves end
    /// (room near the origin is finite); what shows room that others took meanwhile redirects us, and
    /// that provider rests ([`Fetcher::climb_failed`]). Goal: a tree as shallow as the caps allow even
    /// when viewers joined while the room near the origin was taken, or before it appeared.
    pub fn climb(
        &mut self,
        now: Instant,
        catalog: &[CatalogEntry],
        place: Place,
        view: impl Fn(&PeerId) -> PeerView,
    ) -> Option<PeerId> {
        self.cooldown.retain(|_, until| *until > now);
        let Place {
            origin,
            hops,
            upstream,
        } = place;
        catalog
            .iter()
            .filter(|e| e.announcement.id.name == self.name && e.announcement.id.origin == origin)
            .filter(|e| e.provider != upstream && self.usable(&e.provider))
            .filter(|e| self.would_lift(e, hops))
            .filter_map(|e| {
                let v = view(&e.provider);
                (v.heard && v.connected && v.direct).then_some((
                    e.hops,
                    v.rtt_ms.unwrap_or(u32::MAX),
                    e.provider,
                ))
            })
            .min()
            .map(|(_, _, p)| p)
    }

    /// Whether `entry`'s provider claims room enough for a move ([`CLIMB_ROOM_SLOTS`]) and would put us,
    /// at `hops` now, at least a level nearer the origin: the catalog's half of [`Fetcher::climb`].
    pub fn would_lift(&self, entry: &CatalogEntry, hops: u8) -> bool {
        entry.hops.saturating_add(1) < hops
            && has_room(
                entry.spare_kbps,
                self.need_kbps.saturating_mul(CLIMB_ROOM_SLOTS),
            )
    }

    /// Whether `peer` rests at `now` (it redirected, refused or failed us lately).
    pub fn rests(&self, peer: &PeerId, now: Instant) -> bool {
        self.cooldown.get(peer).is_some_and(|until| *until > now)
    }

    /// A move up ([`Fetcher::climb`]) to `peer` did not happen (redirected, refused, no answer): it rests
    /// as after a redirect, and the next look for a place picks another or none.
    pub fn climb_failed(&mut self, peer: PeerId, now: Instant) {
        self.cooldown.insert(peer, now + REST_REDIRECTED);
    }

    /// Providers the DHT named, when nothing else is known.
    pub fn from_dht(&self, peers: impl IntoIterator<Item = PeerId>) -> Vec<PeerId> {
        let mut out: Vec<PeerId> = peers.into_iter().filter(|p| self.usable(p)).collect();
        dedup_keep_order(&mut out);
        out
    }

    /// What a waiting player should be told: connecting while providers are known (to try now, or
    /// resting), searching otherwise.
    pub fn lookup_state(&self, candidates: &[PeerId]) -> LookupState {
        if candidates.is_empty() && self.cooldown.is_empty() {
            LookupState::Searching
        } else {
            LookupState::Connecting
        }
    }

    /// No candidate now: when to look again (unless the catalog learns something first). The wait grows
    /// while nothing turns up.
    pub fn idle_until(&mut self, now: Instant) -> Instant {
        let backoff = now + self.idle_waits.next().unwrap_or(IDLE_WAIT_MAX);
        self.cooldown
            .values()
            .min()
            .copied()
            .unwrap_or(backoff)
            .min(backoff)
    }

    /// A round with candidates began.
    pub fn round_started(&mut self) {
        self.idle_waits = idle_waits();
    }

    /// How a session with `peer` ended; `direct_now` says whether we still hold a direct connection to it.
    pub fn on_outcome(
        &mut self,
        peer: PeerId,
        outcome: &Outcome,
        now: Instant,
        direct_now: bool,
    ) -> Next {
        match outcome {
            Outcome::Redirected(hints) => {
                let dead_end = hints.iter().all(|h| {
                    h.peer == self.me || self.cooldown.get(&h.peer).is_some_and(|u| *u > now)
                });
                let rest = if dead_end {
                    REST_DEAD_END
                } else {
                    REST_REDIRECTED
                };
                self.cooldown.insert(peer, now + rest);
                self.hinted = hints.clone();
                self.hinted_by = Some(peer);
                Next::NewRound
            }
            Outcome::Unreachable(_) => {
                self.cooldown.insert(peer, now + REST_UNREACHABLE);
                Next::NextCandidate
            }
            Outcome::Refused(Refusal::Forged(_) | Refusal::FalseClaim(_)) => {
                self.cooldown.insert(peer, now + REST_HOSTILE);
                Next::NextCandidate
            }
            Outcome::Refused(_) => {
                self.cooldown.insert(peer, now + REST_REFUSED);
                Next::NextCandidate
            }
            Outcome::Lost { loss, last_frame } => {
                // The stream broke but we are still connected directly: the relayed connection it ran on
                // was closed in favour of a direct one, so go straight back to the same provider.
                let moved = direct_now && matches!(loss, Loss::Broken(_));
                let hostile = matches!(loss, Loss::Forged(_) | Loss::FalseClaim(_));
                if hostile {
                    self.cooldown.insert(peer, now + REST_HOSTILE);
                } else if !moved {
                    self.cooldown.insert(peer, now + REST_LOST);
                }
                if last_frame.is_some() {
                    self.last_frame = *last_frame;
                }
                Next::NewRound
            }
            Outcome::Superseded => Next::Stop,
        }
    }
}

/// Splits a hub key `NAME` or `NAME@ORIGIN-PREFIX`.
pub fn split_key(key: &str) -> (&str, Option<&str>) {
    match key.split_once('@') {
        Some((n, o)) => (n, Some(o)),
        None => (key, None),
    }
}

fn dedup_keep_order(v: &mut Vec<PeerId>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|p| seen.insert(*p));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::Announcement;
    use libp2p::identity::Keypair;

    fn entry(origin: &Keypair, started: u64, provider: PeerId, hops: u8) -> CatalogEntry {
        CatalogEntry {
            announcement: Announcement::sign(origin, "s", started).unwrap(),
            provider,
            addrs: vec![],
            record: None,
            hops,
            spare_kbps: 1000,
        }
    }

    fn unknown(_: &StreamId) -> Option<Instant> {
        None
    }

    #[test]
    fn a_redirect_to_providers_we_cannot_use_rests_the_provider_only_briefly() {
        let me = PeerId::random();
        let (full, lost, other) = (PeerId::random(), PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let mut f = Fetcher::new(me, "s");
        let lost_it = Outcome::Lost {
            loss: Loss::Broken("upstream closed".into()),
            last_frame: Some(t0),
        };
        f.on_outcome(lost, &lost_it, t0, false);
        let hint = |peer| ProviderHint {
            peer,
            addrs: vec![],
        };
        // The full provider names only the relay we just lost: asked again in half a second.
        f.on_outcome(full, &Outcome::Redirected(vec![hint(lost)]), t0, true);
        assert_eq!(f.cooldown.get(&full), Some(&(t0 + REST_DEAD_END)));
        // A redirect to someone usable rests it as before.
        f.on_outcome(
            full,
            &Outcome::Redirected(vec![hint(lost), hint(other)]),
            t0,
            true,
        );
        assert_eq!(f.cooldown.get(&full), Some(&(t0 + REST_REDIRECTED)));
    }

    #[test]
    fn hints_come_first_then_fallbacks_then_one_origin_ranked() {
        let me = PeerId::random();
        let (o1, o2) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (near, far, other, hint, fb) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let mut f = Fetcher::new(me, "s");
        let t0 = Instant::now();
        f.on_outcome(
            PeerId::random(),
            &Outcome::Redirected(vec![ProviderHint {
                peer: hint,
                addrs: vec![],
            }]),
            t0,
            false,
        );
        let catalog = vec![
            entry(&o1, 10, far, 3),
            entry(&o1, 10, near, 1),
            // Another origin publishing the same name, heard of later: not mixed in.
            entry(&o2, 5, other, 2),
        ];
        let o1_id = o1.public().to_peer_id();
        let got = f.candidates(
            t0,
            catalog,
            None,
            &[ProviderHint {
                peer: fb,
                addrs: vec![],
            }],
            |_| PeerView::default(),
            |id| {
                Some(if id.origin == o1_id {
                    t0
                } else {
                    t0 + Duration::from_secs(1)
                })
            },
        );
        // Nothing is known to be alive or to have room: the redirect's hint, then the node above our lost
        // upstream, then the catalog (which may name dead providers).
        assert_eq!(got, vec![hint, fb, near, far]);
        assert_eq!(f.origin(), Some(o1_id));
        assert_eq!(f.lookup_state(&got), LookupState::Connecting);
    }

    #[test]
    fn a_plain_name_keeps_the_origin_known_longest_whatever_others_claim() {
        let me = PeerId::random();
        let (alice, mallory) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (a, m) = (alice.public().to_peer_id(), mallory.public().to_peer_id());
        let t0 = Instant::now();
        // Mallory signs its own "s" with start time 0, at hop 0; alice was known first.
        let catalog = vec![entry(&alice, 5_000, a, 0), entry(&mallory, 0, m, 0)];
        let since = |id: &StreamId| {
            Some(if id.origin == a {
                t0
            } else {
                t0 + Duration::from_secs(9)
            })
        };
        let mut f = Fetcher::new(me, "s");
        let got = f.candidates(
            t0,
            catalog.clone(),
            None,
            &[],
            |_| PeerView::default(),
            since,
        );
        assert_eq!(got, vec![a]);
        // Once settled, the fetch stays with its origin, even if it rests.
        f.on_outcome(
            a,
            &Outcome::Refused(Refusal::Rejected("full".into())),
            t0,
            false,
        );
        let got = f.candidates(t0, catalog, None, &[], |_| PeerView::default(), since);
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(f.origin(), Some(a));
    }

    #[test]
    fn an_origin_named_too_briefly_or_ambiguously_is_refused_with_words() {
        let me = PeerId::random();
        // Six characters: the same for every node id's first eight.
        let mut f = Fetcher::new(me, "s@12D3Ko");
        match f.check(Instant::now(), 1, false) {
            Some(Stop::BadOrigin(why)) => assert!(why.contains("at least 24"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A long enough prefix that two origins share (only a forger can arrange that): refused too.
        let (x, y) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let common = "12D3KooWAAAAAAAAAAAAAAAA";
        let mut f = Fetcher::new(me, &format!("s@{common}"));
        assert_eq!(f.check(Instant::now(), 1, false), None);
        let mut cat = vec![
            entry(&x, 1, PeerId::random(), 1),
            entry(&y, 1, PeerId::random(), 1),
        ];
        // Pretend both ids start with the prefix: the test cannot grind keys, so it checks the rule with
        // the real ids' own common prefix instead.
        let (xs, ys) = (
            x.public().to_peer_id().to_string(),
            y.public().to_peer_id().to_string(),
        );
        let shared: String = xs
            .chars()
            .zip(ys.chars())
            .take_while(|(a, b)| a == b)
            .map(|(a, _)| a)
            .collect();
        f.prefix = Some(shared);
        let got = f.candidates(
            Instant::now(),
            std::mem::take(&mut cat),
            None,
            &[],
            |_| PeerView::default(),
            unknown,
        );
        assert!(got.is_empty());
        assert!(matches!(
            f.check(Instant::now(), 1, false),
            Some(Stop::BadOrigin(_))
        ));
        // The whole id of one of them: fine.
        let mut f = Fetcher::new(me, &format!("s@{xs}"));
        let got = f.candidates(
            Instant::now(),
            vec![
                entry(&x, 1, PeerId::random(), 1),
                entry(&y, 1, PeerId::random(), 1),
            ],
            None,
            &[],
            |_| PeerView::default(),
            unknown,
        );
        assert_eq!(got.len(), 1);
        assert_eq!(f.origin(), Some(x.public().to_peer_id()));
    }

    #[test]
    fn a_plain_name_resolves_to_a_friends_stream_before_a_strangers() {
        let me = PeerId::random();
        let (stranger, friend) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (near, far) = (PeerId::random(), PeerId::random());
        let s_id = stranger.public().to_peer_id();
        let catalog = || vec![entry(&stranger, 1, near, 0), entry(&friend, 9, far, 3)];
        let t0 = Instant::now();
        // The stranger's stream was known first: without friends it wins.
        let since = move |id: &StreamId| {
            Some(if id.origin == s_id {
                t0
            } else {
                t0 + Duration::from_secs(5)
            })
        };
        let view = |_: &PeerId| PeerView::default();
        let got = Fetcher::new(me, "s").candidates(t0, catalog(), None, &[], view, since);
        assert_eq!(got, vec![near]);
        let friends = Friends::default();
        let mut f = Fetcher::new(me, "s").with_friends(friends.clone());
        assert_eq!(
            f.candidates(t0, catalog(), None, &[], view, since),
            vec![near]
        );
        // A friend added while the fetch runs (nothing played yet) counts from its next round on.
        assert!(friends.insert(friend.public().to_peer_id()));
        assert_eq!(
            f.candidates(t0, catalog(), None, &[], view, since),
            vec![far]
        );
        // But not once the stranger's stream plays.
        let mut h = Fetcher::new(me, "s");
        assert_eq!(
            h.candidates(t0, catalog(), None, &[], view, since),
            vec![near]
        );
        let mut h = h.with_friends(friends.clone());
        assert_eq!(
            h.candidates(t0, catalog(), Some(s_id), &[], view, since),
            vec![near]
        );
        // An explicit origin still wins over friendship.
        let origin = s_id.to_string();
        let mut g = Fetcher::new(me, &format!("s@{origin}")).with_friends(friends);
        assert_eq!(
            g.candidates(t0, catalog(), None, &[], view, since),
            vec![near]
        );
    }

    #[test]
    fn resting_providers_are_skipped_until_their_rest_ends() {
        let me = PeerId::random();
        let o = Keypair::generate_ed25519();
        let p = PeerId::random();
        let mut f = Fetcher::new(me, "s");
        let t0 = Instant::now();
        let refused = Outcome::Refused(Refusal::Rejected("full".into()));
        assert_eq!(f.on_outcome(p, &refused, t0, false), Next::NextCandidate);
        let cat = || vec![entry(&o, 1, p, 0)];
        assert!(
            f.candidates(t0, cat(), None, &[], |_| PeerView::default(), unknown)
                .is_empty()
        );
        // Resting providers still count as found: players keep waiting.
        assert_eq!(f.lookup_state(&[]), LookupState::Connecting);
        assert_eq!(f.idle_until(t0), t0 + IDLE_WAIT_MIN);
        let later = t0 + REST_REFUSED + Duration::from_millis(1);
        assert_eq!(
            f.candidates(later, cat(), None, &[], |_| PeerView::default(), unknown),
            vec![p]
        );
    }

    #[test]
    fn a_relayed_stream_that_moved_to_a_direct_connection_goes_straight_back() {
        let me = PeerId::random();
        let p = PeerId::random();
        let o = Keypair::generate_ed25519();
        let t0 = Instant::now();
        let mut f = Fetcher::new(me, "s");
        let broken = Outcome::Lost {
            loss: Loss::Broken("connection closed".into()),
            last_frame: Some(t0),
        };
        assert_eq!(f.on_outcome(p, &broken, t0, true), Next::NewRound);
        assert_eq!(f.last_frame(), Some(t0));
        assert_eq!(
            f.candidates(
                t0,
                vec![entry(&o, 1, p, 0)],
                None,
                &[],
                |_| PeerView::default(),
                unknown
            ),
            vec![p]
        );
        // A stall is a real loss: the provider rests.
        let stalled = Outcome::Lost {
            loss: Loss::Stalled(Duration::from_secs(2)),
            last_frame: None,
        };
        f.on_outcome(p, &stalled, t0, true);
        assert!(
            f.candidates(
                t0,
                vec![entry(&o, 1, p, 0)],
                None,
                &[],
                |_| PeerView::default(),
                unknown
            )
            .is_empty()
        );
    }

    #[test]
    fn stops_when_unwanted_for_a_while_or_when_a_local_source_takes_over() {
        let long = "12D3KooWAbcdefghijkmnopqrstuvwxyz";
        let mut f = Fetcher::new(PeerId::random(), &format!("s@{long}"));
        assert_eq!(f.prefix(), Some(long));
        let t0 = Instant::now();
        assert_eq!(f.check(t0, 0, false), None);
        assert_eq!(f.check(t0 + UNWANTED_AFTER, 0, false), None);
        assert_eq!(
            f.check(t0 + UNWANTED_AFTER + Duration::from_millis(1), 0, false),
            Some(Stop::Unwanted)
        );
        assert_eq!(f.check(t0, 1, true), Some(Stop::LocalSource));
        let mut g = Fetcher::new(PeerId::random(), "s");
        assert_eq!(g.idle_until(t0), t0 + IDLE_WAIT_MIN);
        assert_eq!(g.idle_until(t0), t0 + IDLE_WAIT_MIN * 2);
        g.round_started();
        assert_eq!(g.idle_until(t0), t0 + IDLE_WAIT_MIN);
    }

    #[test]
    fn candidates_go_by_where_we_would_land_alive_ones_first() {
        let me = PeerId::random();
        let o = Keypair::generate_ed25519();
        let origin = o.public().to_peer_id();
        let [a, b, c, d, h, fb, x] = std::array::from_fn(|_| PeerId::random());
        let with = |p: PeerId, hops: u8, spare: u32| CatalogEntry {
            spare_kbps: spare,
            ..entry(&o, 1, p, hops)
        };
        let catalog = || {
            vec![
                with(a, 3, 5000),   // room, alive: we would land at 4
                with(b, 1, 0),      // full, alive: its redirect would land us at 3 at best
                with(origin, 0, 0), // full; the origin is alive while its stream is
                with(c, 5, 5000),   // room, but as far as we were: it may be below us
                with(d, 2, 0),      // full, not heard from lately: may be dead
                with(h, 1, 0),      // named by a redirect: we would land at 2
            ]
        };
        let view = |p: &PeerId| PeerView {
            heard: *p == a || *p == b,
            ..PeerView::default()
        };
        let t0 = Instant::now();
        let mut f = Fetcher::new(me, "s");
        f.set_place(Some(4));
        // We serve a peer: a provider as far from the origin as we were may be below us.
        f.set_serving(1);
        let hint = |peer| ProviderHint {
            peer,
            addrs: vec![],
        };
        f.on_outcome(x, &Outcome::Redirected(vec![hint(h)]), t0, false);
        let got = f.candidates(t0, catalog(), None, &[hint(fb)], view, unknown);
        // Alive ones by landing hops (a redirect's hint before a full provider at the same), then the
        // node above our lost upstream we have not heard from, then room below us, then the rest; but the
        // best provider alive with room comes second, whatever its landing: the round asks it when the
        // first is slow to answer.
        assert_eq!(got, vec![h, a, origin, b, fb, c, d]);
        // A stream too big for a's room: a is one more full provider.
        f.set_need_kbps(6000);
        let got = f.candidates(t0, catalog(), None, &[hint(fb)], view, unknown);
        assert_eq!(got, vec![origin, b, a, fb, h, d, c]);
        // Never attached: nothing counts as below us.
        let mut g = Fetcher::new(me, "s");
        let got = g.candidates(t0, catalog(), None, &[], view, unknown);
        assert_eq!(&got[..3], &[origin, a, b]);
        // Room at 5 would land us at 6: asking the full ones nearer the origin comes first.
        assert_eq!(got[3], c, "{got:?}");
    }

    #[test]
    fn a_node_that_serves_nobody_may_attach_as_deep_as_it_was() {
        let me = PeerId::random();
        let o = Keypair::generate_ed25519();
        let origin = o.public().to_peer_id();
        let [deep, dead_up] = std::array::from_fn(|_| PeerId::random());
        let catalog = || {
            vec![
                CatalogEntry {
                    spare_kbps: 0,
                    ..entry(&o, 1, origin, 0)
                },
                // Alive with room, as far from the origin as we were.
                CatalogEntry {
                    spare_kbps: 8000,
                    ..entry(&o, 1, deep, 4)
                },
            ]
        };
        let view = |p: &PeerId| PeerView {
            heard: *p == deep,
            connected: *p == deep,
            direct: *p == deep,
            ..PeerView::default()
        };
        let t0 = Instant::now();
        let lost = Outcome::Lost {
            loss: Loss::Stalled(Duration::from_secs(1)),
            last_frame: Some(t0),
        };
        let mut f = Fetcher::new(me, "s");
        f.on_outcome(dead_up, &lost, t0, false);
        f.set_place(Some(4));
        // Serving someone: deep may be below us, so it comes last, after the origin's redirect chase.
        f.set_serving(2);
        assert_eq!(
            f.candidates(t0, catalog(), None, &[], view, unknown),
            vec![origin, deep]
        );
        // Serving nobody: nobody is below us, and deep is the sure thing asked second (the origin, full,
        // would land us at 2 if its redirect led to room at once, which in a full tree it does not).
        f.set_serving(0);
        assert_eq!(
            f.candidates(t0, catalog(), None, &[], view, unknown),
            vec![origin, deep]
        );
        // With a third candidate between them, deep still comes second.
        let mut cat = catalog();
        let near_full = PeerId::random();
        cat.push(CatalogEntry {
            spare_kbps: 0,
            ..entry(&o, 1, near_full, 1)
        });
        let view2 = |p: &PeerId| PeerView {
            heard: *p == deep || *p == near_full,
            ..view(p)
        };
        assert_eq!(
            f.candidates(t0, cat.clone(), None, &[], view2, unknown),
            vec![origin, deep, near_full]
        );
        f.set_serving(2);
        assert_eq!(
            f.candidates(t0, cat, None, &[], view2, unknown),
            vec![origin, near_full, deep]
        );
    }

    #[test]
    fn climbs_only_to_a_live_direct_peer_with_room_at_least_a_level_up() {
        let me = PeerId::random();
        let o = Keypair::generate_ed25519();
        let origin = o.public().to_peer_id();
        let [up, near, far_rtt, level, relayed, quiet, full] =
            std::array::from_fn(|_| PeerId::random());
        let with = |p: PeerId, hops: u8, spare: u32| CatalogEntry {
            spare_kbps: spare,
            ..entry(&o, 1, p, hops)
        };
        let catalog = vec![
            with(origin, 0, 0),     // full
            with(up, 2, 5000),      // our upstream: never a move
            with(near, 1, 5000),    // room, lands us at 2 (we are at 4)
            with(far_rtt, 1, 5000), // the same, a slower path
            with(level, 3, 5000),   // lands us at 4: no gain
            with(relayed, 1, 5000), // only through a relay
            with(quiet, 1, 5000),   // not heard from lately: may be dead
            with(full, 1, 0),       // no room
        ];
        let view = |p: &PeerId| PeerView {
            connected: *p != quiet,
            direct: *p != relayed,
            heard: *p != quiet,
            rtt_ms: Some(if *p == far_rtt { 90 } else { 20 }),
        };
        let t0 = Instant::now();
        // Never settled on an origin in the catalog (its first provider came from the DHT): the place
        // says which origin it plays.
        let mut f = Fetcher::new(me, "s");
        let at = |hops| Place {
            origin,
            hops,
            upstream: up,
        };
        assert_eq!(f.climb(t0, &catalog, at(4), view), Some(near));
        // Another origin's stream of the same name: nobody.
        let other = Place {
            origin: PeerId::random(),
            ..at(4)
        };
        assert_eq!(f.climb(t0, &catalog, other, view), None);
        // At 2 already, a provider at 1 would not lift us.
        assert_eq!(f.climb(t0, &catalog, at(2), view), None);
        // A move that did not happen rests that provider; the next best is the slower path.
        f.climb_failed(near, t0);
        assert!(f.rests(&near, t0));
        assert_eq!(f.climb(t0, &catalog, at(4), view), Some(far_rtt));
        f.climb_failed(far_rtt, t0);
        assert_eq!(f.climb(t0, &catalog, at(4), view), None);
        // Rests end.
        let later = t0 + REST_REDIRECTED + Duration::from_millis(1);
        assert!(!f.rests(&near, later));
        assert_eq!(f.climb(later, &catalog, at(4), view), Some(near));
        // Room for one subscriber of this stream but not two: a herd of movers would overfill it.
        f.set_need_kbps(3000);
        assert_eq!(f.climb(later, &catalog, at(4), view), None);
    }
}
