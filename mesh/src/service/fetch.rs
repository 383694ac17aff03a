//! The subscriber side of `/streamr/media/1`: find providers of a wanted stream, subscribe to the best one,
//! feed its frames into the local hub, and when it dies or stalls, subscribe elsewhere while local players
//! and downstream peers stay connected.

use super::{Shared, matches_request, provider_key, split_key};
use crate::catalog::{CatalogEntry, rank};
use crate::net::NetCommand;
use crate::routes::Lineage;
use crate::wire::{self, DecodeError, Message, ProviderHint};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use streamr_media::{Hub, LookupState, SourceKind};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tracing::{debug, info, warn};

/// Time to open a stream and get an answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to connect to a provider we are not connected to. Its addresses may change meanwhile (a relay
/// reservation appears in the catalog), so an attempt that hangs on dead addresses ends early.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A fetch with nobody listening for this long stops.
const UNWANTED_AFTER: Duration = Duration::from_secs(10);
/// How often acknowledgements are sent.
const ACK_INTERVAL: Duration = Duration::from_millis(100);

/// How one subscription attempt ended.
enum Outcome {
    /// Try these providers next.
    Redirected(Vec<ProviderHint>),
    /// This provider will not serve us; try another.
    Refused(String),
    /// We could not connect to this provider.
    Unreachable(String),
    /// We were receiving, then the stream ended, failed or stalled.
    Lost {
        reason: String,
        last_frame: Option<Instant>,
    },
    /// A local source took over the hub: stop fetching.
    Superseded,
}

pub(crate) async fn fetch(shared: Arc<Shared>, hub: Arc<Hub>, key: String) {
    let (name, prefix) = split_key(&key);
    let (name, prefix) = (name.to_string(), prefix.map(str::to_string));
    info!(stream = %key, "looking for the stream in the mesh");
    let mut cooldown: HashMap<PeerId, Instant> = HashMap::new();
    let mut hinted: Vec<ProviderHint> = Vec::new();
    let mut last_frame: Option<Instant> = None;
    let mut unwanted_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(250);
    loop {
        // Stop when nobody here wants the stream any more, or a local source owns the name.
        if hub.subscribers() == 0 {
            let since = *unwanted_since.get_or_insert_with(Instant::now);
            if since.elapsed() > UNWANTED_AFTER {
                debug!(stream = %key, "nobody wants the stream any more; fetch stops");
                return;
            }
        } else {
            unwanted_since = None;
        }
        if hub.is_live() && hub.snapshot().source != Some(SourceKind::Mesh) {
            return;
        }
        let now = Instant::now();
        cooldown.retain(|_, until| *until > now);
        let candidates = candidates(
            &shared,
            &hub,
            &name,
            prefix.as_deref(),
            &mut hinted,
            &cooldown,
        )
        .await;
        let found = !candidates.is_empty() || !cooldown.is_empty();
        shared.routes.set_fetch_state(
            &key,
            if found {
                LookupState::Connecting
            } else {
                LookupState::Searching
            },
        );
        if candidates.is_empty() {
            // Wait for news in the catalog, a provider's cool-down to end, or look again (the DHT).
            let wake = cooldown
                .values()
                .min()
                .copied()
                .unwrap_or(Instant::now() + backoff)
                .min(Instant::now() + backoff);
            tokio::select! {
                _ = shared.catalog_changed.notified() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        }
        backoff = Duration::from_millis(250);
        for peer in candidates {
            match session(
                &shared,
                &hub,
                &name,
                prefix.as_deref(),
                peer,
                &mut last_frame,
            )
            .await
            {
                Outcome::Redirected(hints) => {
                    debug!(stream = %key, provider = %peer, n = hints.len(), "redirected");
                    cooldown.insert(peer, Instant::now() + Duration::from_secs(3));
                    for h in &hints {
                        shared
                            .net
                            .send(NetCommand::AddAddresses(h.peer, h.addrs.clone()))
                            .await;
                    }
                    hinted = hints;
                    break;
                }
                Outcome::Unreachable(reason) => {
                    // Its addresses may change (a relay reservation); look again soon.
                    debug!(stream = %key, provider = %peer, %reason, "provider unreachable");
                    cooldown.insert(peer, Instant::now() + Duration::from_secs(1));
                }
                Outcome::Refused(reason) => {
                    debug!(stream = %key, provider = %peer, %reason, "provider refused");
                    cooldown.insert(peer, Instant::now() + Duration::from_secs(5));
                }
                Outcome::Lost {
                    reason,
                    last_frame: lf,
                } => {
                    info!(stream = %key, provider = %peer, %reason, "lost the upstream; resubscribing");
                    // Still connected (directly) after the stream broke: the relayed connection it ran on was
                    // closed in favour of a direct one, so go straight back to the same provider.
                    let moved = shared.view(&peer).direct && reason.starts_with("stream error");
                    if !moved {
                        cooldown.insert(peer, Instant::now() + Duration::from_secs(5));
                    }
                    if lf.is_some() {
                        last_frame = lf;
                    }
                    break;
                }
                Outcome::Superseded => return,
            }
        }
    }
}

/// Providers to try, best first: hints from a redirect, then the catalog, then the DHT.
async fn candidates(
    shared: &Arc<Shared>,
    hub: &Arc<Hub>,
    name: &str,
    prefix: Option<&str>,
    hinted: &mut Vec<ProviderHint>,
    cooldown: &HashMap<PeerId, Instant>,
) -> Vec<PeerId> {
    let usable = |p: &PeerId| *p != shared.me && !cooldown.contains_key(p);
    let mut out: Vec<PeerId> = hinted
        .drain(..)
        .filter(|h| usable(&h.peer))
        .map(|h| h.peer)
        .collect();
    // Stay with the origin this hub already plays, if any.
    let lineage = shared.routes.lineage(hub);
    let origin = lineage
        .as_ref()
        .map(|l| l.announcement.id.origin.to_string());
    let prefix = origin.as_deref().or(prefix);
    let mut entries: Vec<CatalogEntry> = shared
        .catalog
        .lock()
        .providers(name, prefix, std::time::Instant::now())
        .into_iter()
        .filter(|e| usable(&e.provider) && !e.announcement.id.origin.eq(&shared.me))
        .collect();
    // Choose one origin when several publish the name: the nearest, then the earliest publish.
    if prefix.is_none()
        && let Some(best) = entries
            .iter()
            .min_by_key(|e| (e.hops, e.announcement.started_ms))
            .map(|e| e.announcement.id.clone())
    {
        entries.retain(|e| e.announcement.id == best);
    }
    rank(&mut entries, |p| shared.view(p));
    for e in &entries {
        shared
            .net
            .send(NetCommand::AddAddresses(e.provider, e.addrs.clone()))
            .await;
    }
    out.extend(entries.into_iter().map(|e| e.provider));
    // The nodes above our (lost) upstream, as it told us when it accepted us.
    if let Some(l) = lineage {
        for f in &l.fallbacks {
            if usable(&f.peer) {
                shared
                    .net
                    .send(NetCommand::AddAddresses(f.peer, f.addrs.clone()))
                    .await;
                out.push(f.peer);
            }
        }
    }
    if out.is_empty() {
        for p in shared.net.providers(provider_key(name)).await {
            if usable(&p) {
                out.push(p);
            }
        }
    }
    out.dedup();
    out
}

async fn session(
    shared: &Arc<Shared>,
    hub: &Arc<Hub>,
    name: &str,
    prefix: Option<&str>,
    peer: PeerId,
    last_frame: &mut Option<Instant>,
) -> Outcome {
    // Dial with the addresses we know (libp2p-stream would dial with none); on loopback and LANs the peer
    // may be reachable although no behaviour has its address.
    if let Err(e) = shared.net.connect(peer, Vec::new(), CONNECT_TIMEOUT).await {
        return Outcome::Unreachable(format!("cannot connect: {e}"));
    }
    let mut control = shared.net.control();
    let stream =
        match tokio::time::timeout(ANSWER_TIMEOUT, control.open_stream(peer, wire::PROTOCOL)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Outcome::Refused(format!("cannot open a stream: {e}")),
            Err(_) => return Outcome::Refused("timed out opening a stream".into()),
        };
    let (rd, mut wr) = stream.split();
    let mut rd = FramedRead::new(rd.compat(), wire::Decoder);
    let have_seq = hub.position().map_or(0, |(s, _)| s);
    let origin = shared.routes.lineage(hub).map(|l| l.announcement.id.origin);
    let subscribe = Message::Subscribe {
        name: name.to_string(),
        origin,
        have_seq,
    };
    if let Err(e) = wr.write_all(&wire::encode(&subscribe)).await {
        return Outcome::Refused(format!("cannot subscribe: {e}"));
    }
    let answer = match tokio::time::timeout(ANSWER_TIMEOUT, rd.next()).await {
        Ok(Some(Ok(m))) => m,
        Ok(Some(Err(e))) => {
            shared.stats.protocol_violations.fetch_add(1, Relaxed);
            return Outcome::Refused(format!("bad answer: {e}"));
        }
        Ok(None) => return Outcome::Refused("closed without an answer".into()),
        Err(_) => return Outcome::Refused("no answer".into()),
    };
    let (announcement, hops, mut path, fallbacks) = match answer {
        Message::Accept {
            announcement,
            hops,
            path,
            fallbacks,
        } => (announcement, hops, path, fallbacks),
        Message::Redirect { providers, .. } => return Outcome::Redirected(providers),
        Message::Reject { reason } => return Outcome::Refused(reason),
        m => {
            shared.stats.protocol_violations.fetch_add(1, Relaxed);
            return Outcome::Refused(format!("unexpected answer {m:?}"));
        }
    };
    if let Err(e) = announcement.verify() {
        shared.stats.forged_announcements.fetch_add(1, Relaxed);
        warn!(provider = %peer, error = %e, "provider sent a forged announcement; refusing it");
        return Outcome::Refused(e.to_string());
    }
    let wanted_origin = origin.map(|o| o.to_string());
    if !matches_request(&announcement.id, name, wanted_origin.as_deref().or(prefix)) {
        shared.stats.protocol_violations.fetch_add(1, Relaxed);
        return Outcome::Refused(format!(
            "provider answered with another stream: {}",
            announcement.id
        ));
    }
    if path.contains(&shared.me)
        || path.first() != Some(&announcement.id.origin)
        || path.last() != Some(&peer)
    {
        shared.stats.loops_prevented.fetch_add(1, Relaxed);
        return Outcome::Refused(
            "the provider's path contains us or does not lead to the origin".into(),
        );
    }
    path.push(shared.me);
    let source = hub.attach(SourceKind::Mesh);
    let fallbacks: Vec<ProviderHint> = fallbacks
        .into_iter()
        .filter(|h| h.peer != shared.me)
        .collect();
    shared.routes.set_lineage(
        hub,
        Arc::new(Lineage {
            announcement,
            hops: hops.saturating_add(1),
            path,
            upstream: Some(peer),
            fallbacks,
        }),
    );
    info!(stream = %hub.name(), provider = %peer, hops = hops.saturating_add(1), "subscribed");

    let stall = shared.config.tuning.stall_timeout;
    let mut ack = tokio::time::interval(ACK_INTERVAL);
    let (mut bytes, mut seq) = (0u64, 0u64);
    let mut acked_bytes = 0u64;
    let mut first = true;
    let mut mine_last: Option<Instant> = None;
    let mut deadline = Instant::now() + stall;
    loop {
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return Outcome::Superseded,
            _ = tokio::time::sleep_until(deadline) => {
                shared.stats.stalled_upstreams.fetch_add(1, Relaxed);
                return Outcome::Lost { reason: format!("no frame for {stall:?}"), last_frame: mine_last };
            }
            msg = rd.next() => {
                let msg = match msg {
                    None => return Outcome::Lost { reason: "upstream closed".into(), last_frame: mine_last },
                    Some(Err(DecodeError::Io(e))) => {
                        return Outcome::Lost { reason: format!("stream error: {e}"), last_frame: mine_last };
                    }
                    Some(Err(DecodeError::Wire(e))) => {
                        shared.stats.protocol_violations.fetch_add(1, Relaxed);
                        warn!(provider = %peer, error = %e, "upstream broke the protocol; dropping it");
                        return Outcome::Lost { reason: e.to_string(), last_frame: mine_last };
                    }
                    Some(Ok(m)) => m,
                };
                match msg {
                    Message::Frame(f) => {
                        let now = Instant::now();
                        deadline = now + stall;
                        if first {
                            first = false;
                            if let Some(prev) = last_frame.take() {
                                shared.stats.record_gap(now.duration_since(prev).as_millis() as u64);
                            }
                        }
                        mine_last = Some(now);
                        bytes += wire::FRAME_HEADER as u64 + f.len() as u64;
                        seq = f.seq();
                        shared.stats.bytes_received.fetch_add(f.len() as u64, Relaxed);
                        if source.push(f).is_err() {
                            return Outcome::Superseded;
                        }
                    }
                    Message::Path { hops, mut path } => {
                        if path.contains(&shared.me) {
                            shared.stats.loops_prevented.fetch_add(1, Relaxed);
                            return Outcome::Lost { reason: "upstream's new path runs through us".into(), last_frame: mine_last };
                        }
                        path.push(shared.me);
                        if let Some(l) = shared.routes.lineage(hub) {
                            shared.routes.set_lineage(hub, Arc::new(Lineage {
                                announcement: l.announcement.clone(),
                                hops: hops.saturating_add(1),
                                path,
                                upstream: Some(peer),
                                fallbacks: l.fallbacks.clone(),
                            }));
                        }
                    }
                    Message::End { reason } => {
                        return Outcome::Lost { reason: format!("upstream ended the stream: {reason}"), last_frame: mine_last };
                    }
                    m => {
                        shared.stats.protocol_violations.fetch_add(1, Relaxed);
                        return Outcome::Lost { reason: format!("unexpected {m:?}"), last_frame: mine_last };
                    }
                }
            }
            _ = ack.tick() => {
                if bytes != acked_bytes {
                    if !shared.view(&peer).direct {
                        shared.stats.relayed_bytes_received.fetch_add(bytes - acked_bytes, Relaxed);
                    }
                    acked_bytes = bytes;
                    let m = wire::encode(&Message::Ack { seq, bytes });
                    if let Err(e) = wr.write_all(&m).await {
                        return Outcome::Lost { reason: format!("cannot acknowledge: {e}"), last_frame: mine_last };
                    }
                    let _ = wr.flush().await;
                }
            }
        }
    }
}
