//! The subscriber side of `/streamr/media/3`, as I/O around the session machines: ask the actor what is
//! known, let the [`Fetcher`] choose providers and the [`Round`] how many to ask at once, run an
//! [`Upstream`] with each until one accepts, push its frames into the local hub, and when it dies or
//! stalls, subscribe elsewhere while local players and downstream peers stay connected.

use super::actor::{Command, Ctx, Known};
use super::{provider_key, stream_kbps};
use crate::auth::PublishId;
use crate::catalog;
use crate::net::NetCommand;
use crate::session::fetcher::{CLIMB_EVERY, CLIMB_SETTLE, Place};
use crate::session::upstream::{Refusal, Request};
use crate::session::{Event, Fetcher, Loss, Next, Outcome, Round, Stop, Upstream};
use crate::wire::{self, DecodeError, Message};
use futures::io::{ReadHalf, WriteHalf};
use futures::stream::FuturesUnordered;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::PeerId;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use streamr_media::{Hub, LookupState, SourceKind};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};
use tracing::{debug, info, warn};

/// Time to open a stream and get an answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to connect to a provider we are not connected to. Its addresses may change meanwhile (a relay
/// reservation appears in the catalog), so an attempt that hangs on dead addresses ends early.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for one write to the provider (the subscription, an acknowledgement): a provider that stops reading
/// must not hold the session, whose stall detection waits meanwhile.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// A fetch that finds nothing in the catalog asks the DHT at most this often: as often as it looks again
/// while nothing turns up ([`crate::session::fetcher::IDLE_WAIT_MAX`]), and news that cut a query short
/// does not start the next at once.
const DHT_EVERY: Duration = Duration::from_secs(2);

/// Writes one message within [`WRITE_TIMEOUT`].
async fn write_bounded<W: futures::AsyncWrite + Unpin>(
    wr: &mut W,
    msg: &Message,
) -> Result<(), String> {
    let write = async {
        wr.write_all(&wire::encode(msg)).await?;
        wr.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no progress writing for {WRITE_TIMEOUT:?}")),
    }
}

/// Records our lineage in the routing table and waits until it is there: frames of a new publish may only
/// enter the hub once the sessions serving it can see the new announcement.
async fn set_lineage(ctx: &Ctx, hub: &Arc<Hub>, lineage: Arc<crate::routes::Lineage>) {
    ctx.client
        .ask(|done| Command::SetLineage {
            hub: hub.clone(),
            lineage,
            done,
        })
        .await;
}

pub(super) async fn fetch(ctx: Arc<Ctx>, hub: Arc<Hub>, key: String) {
    info!(stream = %key, "looking for the stream in the mesh");
    let mut fetcher = Fetcher::new(ctx.me, &key).with_friends(ctx.config.friends.clone());
    let mut dht_asked: Option<Instant> = None;
    loop {
        let now = Instant::now().into_std();
        let local_source = hub.is_live() && hub.snapshot().source != Some(SourceKind::Mesh);
        if let Some(stop) = fetcher.check(now, hub.subscribers(), local_source) {
            debug!(stream = %key, ?stop, "fetch stops");
            if let Stop::BadOrigin(why) = stop {
                info!(stream = %key, %why, "cannot fetch this stream");
                ctx.client
                    .send(Command::FetchState {
                        key: key.clone(),
                        state: LookupState::NotFound(why),
                    })
                    .await;
            }
            return;
        }
        // Listening for news before looking: what the catalog learns while we look, or while the DHT is
        // asked, wakes us (`notify_waiters` reaches only those already listening).
        let news = ctx.catalog_changed.notified();
        tokio::pin!(news);
        news.as_mut().enable();
        // The DHT at most every DHT_EVERY: news that cuts its query short must not start the next at once.
        let ask_dht = dht_asked.is_none_or(|t: Instant| t.elapsed() >= DHT_EVERY);
        if ask_dht {
            dht_asked = Some(Instant::now());
        }
        let candidates = look(
            &ctx,
            &hub,
            &mut fetcher,
            &key,
            ask_dht.then_some(news.as_mut()),
        )
        .await;
        if candidates.is_empty() {
            // Wait for news in the catalog, a provider's rest to end, or look again (the DHT).
            let wake = Instant::from_std(fetcher.idle_until(now));
            tokio::select! {
                _ = &mut news => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            continue;
        }
        fetcher.round_started();
        let (mut peer, mut attached) =
            match round(&ctx, &hub, &mut fetcher, &key, candidates, None).await {
                RoundEnd::Attached(peer, attached) => (peer, attached),
                RoundEnd::Over => continue,
                RoundEnd::Stop => return,
            };
        loop {
            let (ended, got) = receive(&ctx, &hub, peer, *attached, &mut fetcher, &key).await;
            let (outcome, standby) = match ended {
                Ended::Lost(outcome, standby) => (outcome, standby),
                Ended::Climbed(found, found_attached) => {
                    info!(stream = %key, provider = %peer, next = %found,
                        hops = found_attached.lineage.hops, frames = got.frames,
                        "moved nearer the origin");
                    ctx.stats.climbs.fetch_add(1, Relaxed);
                    (peer, attached) = (found, found_attached);
                    continue;
                }
            };
            count(&ctx, &outcome);
            let direct = ctx.view(&peer).direct;
            let next = fetcher.on_outcome(peer, &outcome, Instant::now().into_std(), direct);
            if next == Next::Stop {
                return;
            }
            // A provider found while the upstream was quiet takes over at once.
            let Some((found, mut found_attached)) = standby else {
                if let Outcome::Lost { loss, .. } = &outcome {
                    info!(stream = %key, provider = %peer, reason = %loss, frames = got.frames,
                        keepalives = got.keepalives, "lost the upstream; resubscribing");
                }
                break;
            };
            if let Outcome::Lost { loss, .. } = &outcome {
                info!(stream = %key, provider = %peer, reason = %loss, next = %found,
                    frames = got.frames, keepalives = got.keepalives,
                    "lost the upstream; the provider found while it was quiet takes over");
            }
            found_attached.up.follows(fetcher.last_frame());
            (peer, attached) = (found, found_attached);
        }
    }
}

/// Asks the actor what is known (catalog providers, the fallbacks of our last upstream, our place) and
/// lets the fetcher rank the candidates; with `dht` (news of the catalog, listened for), asks the DHT when
/// nothing else is known, and gives up on it when the catalog learns something first: a node that just
/// started hears the catalog from its first peers within a few round trips, while a DHT query in a young
/// mesh can take seconds (its answer was awaited up to 10 s, news meanwhile unheard). Tells waiting players
/// whether providers are known.
async fn look(
    ctx: &Arc<Ctx>,
    hub: &Arc<Hub>,
    fetcher: &mut Fetcher,
    key: &str,
    dht: Option<std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>>,
) -> Vec<PeerId> {
    let now = Instant::now().into_std();
    let name = fetcher.name().to_string();
    let known = ctx
        .client
        .ask(|reply| Command::Known {
            hub: hub.clone(),
            name: name.clone(),
            reply,
        })
        .await
        .unwrap_or_default();
    let Known {
        entries,
        origin,
        fallbacks,
        first_seen,
        upstream,
        hops,
        heard,
        serving,
    } = known;
    // Catalog entries' addresses (their providers' signed records) went into the address book when
    // they were merged; the fallbacks are hints from our last upstream.
    let fallback_addrs: Vec<_> = fallbacks
        .iter()
        .map(|f| (f.peer, f.addrs.clone()))
        .collect();
    // Once frames came, the measured bitrate says what room a provider needs for us.
    fetcher.set_need_kbps(stream_kbps(hub));
    fetcher.set_place(hops);
    fetcher.set_serving(serving);
    let mut candidates = fetcher.candidates(
        now,
        entries,
        origin,
        &fallbacks,
        |p| catalog::PeerView {
            heard: heard.contains(p),
            ..ctx.view(p)
        },
        |id| first_seen.get(id).copied(),
    );
    if let Some(via) = upstream {
        for (peer, addrs) in fallback_addrs {
            if candidates.contains(&peer) {
                ctx.net
                    .send(NetCommand::AddAddresses {
                        peer,
                        addrs,
                        via,
                        signed: false,
                    })
                    .await;
            }
        }
    }
    if candidates.is_empty()
        && let Some(news) = dht
    {
        tokio::select! {
            found = ctx.net.providers(provider_key(&name)) => candidates = fetcher.from_dht(found),
            _ = news => debug!(stream = %key, "news in the catalog before the DHT answered"),
        }
    }
    ctx.client
        .send(Command::FetchState {
            key: key.to_string(),
            state: fetcher.lookup_state(&candidates),
        })
        .await;
    candidates
}

/// How a round of attempts ended.
enum RoundEnd {
    /// This provider accepted us (the other attempts were cancelled).
    Attached(PeerId, Box<Attached>),
    /// Nobody accepted and nobody is left to ask: look again.
    Over,
    /// The fetch stops.
    Stop,
}

/// Asks `candidates` as the [`Round`] says (one, then more at once when the first is slow to answer)
/// until one accepts; the attempts still under way are then dropped, which closes their streams (a
/// provider that accepted one frees its slot). A redirect brings a new candidate list while the other
/// attempts go on.
async fn round(
    ctx: &Arc<Ctx>,
    hub: &Arc<Hub>,
    fetcher: &mut Fetcher,
    key: &str,
    candidates: Vec<PeerId>,
    exclude: Option<PeerId>,
) -> RoundEnd {
    let mut round = Round::new();
    round.refill(candidates);
    let mut attempts = FuturesUnordered::new();
    loop {
        let now = Instant::now().into_std();
        while let Some(peer) = round.start(now) {
            let request = Request {
                name: fetcher.name().to_string(),
                origin: fetcher.origin(),
                prefix: fetcher.prefix().map(str::to_string),
                have_seq: hub.position().map_or(0, |(s, _)| s),
            };
            let (ctx, last_frame) = (ctx.clone(), fetcher.last_frame());
            attempts.push(async move { (peer, attempt(&ctx, request, peer, last_frame).await) });
        }
        if round.is_over() {
            return RoundEnd::Over;
        }
        let hedge = round.next_start(now).map(Instant::from_std);
        let (peer, result) = tokio::select! {
            _ = ctx.cancel.cancelled() => return RoundEnd::Stop,
            Some(done) = attempts.next() => done,
            _ = sleep_until_some(hedge) => continue,
        };
        let outcome = match result {
            Ok(attached) => {
                round.accepted(&peer);
                return RoundEnd::Attached(peer, attached);
            }
            Err(outcome) => outcome,
        };
        round.answered(&peer);
        count(ctx, &outcome);
        match &outcome {
            Outcome::Redirected(hints) => {
                debug!(stream = %key, provider = %peer, n = hints.len(), "redirected");
                for h in hints {
                    ctx.net
                        .send(NetCommand::AddAddresses {
                            peer: h.peer,
                            addrs: h.addrs.clone(),
                            via: peer,
                            signed: false,
                        })
                        .await;
                }
            }
            Outcome::Unreachable(reason) => {
                debug!(stream = %key, provider = %peer, %reason, "provider unreachable");
            }
            Outcome::Refused(reason) => {
                debug!(stream = %key, provider = %peer, %reason, "provider refused");
            }
            Outcome::Lost { .. } | Outcome::Superseded => {}
        }
        let direct = ctx.view(&peer).direct;
        match fetcher.on_outcome(peer, &outcome, Instant::now().into_std(), direct) {
            Next::NextCandidate => {}
            // News (a redirect's hints): a new list for what is not asked yet. Not the DHT: the attempts
            // under way make no progress while this task waits for it.
            Next::NewRound => {
                let mut candidates = look(ctx, hub, fetcher, key, None).await;
                candidates.retain(|p| Some(*p) != exclude);
                round.refill(candidates);
            }
            Next::Stop => return RoundEnd::Stop,
        }
    }
}

/// A round while our upstream `quiet` is suspect ([`crate::session::upstream::SUSPECT_AFTER`]): the same
/// candidates as after a loss, without `quiet` itself. What it finds is kept in reserve by [`receive`].
async fn search_while_quiet(
    ctx: &Arc<Ctx>,
    hub: &Arc<Hub>,
    fetcher: &mut Fetcher,
    key: &str,
    quiet: PeerId,
) -> RoundEnd {
    let mut candidates = look(ctx, hub, fetcher, key, None).await;
    candidates.retain(|p| *p != quiet);
    if candidates.is_empty() {
        return RoundEnd::Over;
    }
    round(ctx, hub, fetcher, key, candidates, Some(quiet)).await
}

/// A round under way while the upstream is quiet (see [`search_while_quiet`]).
type Search<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = RoundEnd> + Send + 'a>>;

/// An attempt under way on a provider nearer the origin (see [`climb_target`]).
type Climb<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (PeerId, Result<Box<Attached>, Outcome>)> + Send + 'a>,
>;

/// A provider worth leaving our working upstream `upstream` for ([`crate::session::Fetcher::climb`]):
/// one we are connected to directly, that told us lately it has room for us and one more, with which we
/// would land at least a level nearer the origin than our `hops`.
async fn climb_target(
    ctx: &Arc<Ctx>,
    hub: &Arc<Hub>,
    fetcher: &mut Fetcher,
    upstream: PeerId,
    hops: u8,
) -> Option<PeerId> {
    let name = fetcher.name().to_string();
    let known = ctx
        .client
        .ask(|reply| Command::Known {
            hub: hub.clone(),
            name,
            reply,
        })
        .await?;
    fetcher.set_need_kbps(stream_kbps(hub));
    let hops = known.hops.unwrap_or(hops);
    let view = |p: &PeerId| catalog::PeerView {
        heard: known.heard.contains(p),
        ..ctx.view(p)
    };
    let place = Place {
        origin: known.origin?,
        hops,
        upstream,
    };
    let target = fetcher.climb(Instant::now().into_std(), &known.entries, place, view);
    if target.is_none() && tracing::enabled!(tracing::Level::DEBUG) {
        // Why nobody: providers that would lift us, and of them those heard from lately, reached
        // directly, resting.
        let now = Instant::now().into_std();
        let (mut roomy, mut heard, mut direct, mut resting) = (0, 0, 0, 0);
        for e in known.entries.iter().filter(|e| fetcher.would_lift(e, hops)) {
            let v = view(&e.provider);
            roomy += 1;
            heard += usize::from(v.heard);
            direct += usize::from(v.heard && v.connected && v.direct);
            resting += usize::from(fetcher.rests(&e.provider, now));
        }
        debug!(stream = %hub.name(), hops, roomy, heard, direct, resting,
            "no provider nearer the origin to move to");
    }
    target
}

/// Sleeps until `at`, or forever.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Counts what an outcome says about the provider.
fn count(ctx: &Ctx, outcome: &Outcome) {
    let s = &ctx.stats;
    match outcome {
        Outcome::Refused(Refusal::Forged(_)) => {
            s.forged_announcements.fetch_add(1, Relaxed);
        }
        Outcome::Refused(Refusal::Loop)
        | Outcome::Lost {
            loss: Loss::Loop, ..
        } => {
            s.loops_prevented.fetch_add(1, Relaxed);
        }
        Outcome::Refused(Refusal::Protocol(_) | Refusal::WrongStream(_))
        | Outcome::Lost {
            loss: Loss::Protocol(_),
            ..
        } => {
            s.protocol_violations.fetch_add(1, Relaxed);
        }
        Outcome::Lost {
            loss: Loss::Forged(_),
            ..
        } => {
            s.forged_frames.fetch_add(1, Relaxed);
        }
        Outcome::Refused(Refusal::FalseClaim(_))
        | Outcome::Lost {
            loss: Loss::FalseClaim(_),
            ..
        } => {
            s.false_claims.fetch_add(1, Relaxed);
        }
        Outcome::Lost {
            loss: Loss::Stalled(_),
            ..
        } => {
            s.stalled_upstreams.fetch_add(1, Relaxed);
        }
        _ => {}
    }
}

/// A subscription a provider accepted: the session and the stream, ready to receive.
struct Attached {
    up: Upstream,
    rd: FramedRead<Compat<ReadHalf<libp2p::Stream>>, wire::Decoder>,
    wr: WriteHalf<libp2p::Stream>,
    lineage: Arc<crate::routes::Lineage>,
    request: Request,
}

/// One attempt to subscribe to `peer`: dial, open a stream, subscribe, and check the answer.
async fn attempt(
    ctx: &Arc<Ctx>,
    request: Request,
    peer: PeerId,
    last_frame: Option<std::time::Instant>,
) -> Result<Box<Attached>, Outcome> {
    // Dial with the addresses we know (libp2p-stream would dial with none); on loopback and LANs the peer
    // may be reachable although no behaviour has its address.
    if let Err(e) = ctx.net.connect(peer, Vec::new(), CONNECT_TIMEOUT).await {
        return Err(Outcome::Unreachable(format!("cannot connect: {e}")));
    }
    let no_answer = |why: String| Outcome::Refused(Refusal::NoAnswer(why));
    let mut control = ctx.net.control();
    let stream =
        match tokio::time::timeout(ANSWER_TIMEOUT, control.open_stream(peer, wire::PROTOCOL)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(no_answer(format!("cannot open a stream: {e}"))),
            Err(_) => return Err(no_answer("timed out opening a stream".into())),
        };
    let (rd, mut wr) = stream.split();
    let mut rd = FramedRead::new(rd.compat(), wire::Decoder::subscriber());
    let mut up = Upstream::new(
        ctx.me,
        peer,
        request.clone(),
        ctx.config.tuning.stall_timeout,
        last_frame,
        Instant::now().into_std(),
    );
    if let Err(e) = write_bounded(&mut wr, &request.subscribe()).await {
        return Err(no_answer(format!("cannot subscribe: {e}")));
    }
    let answer = match tokio::time::timeout(ANSWER_TIMEOUT, rd.next()).await {
        Ok(Some(Ok(m))) => m,
        Ok(Some(Err(e))) => {
            return Err(Outcome::Refused(Refusal::Protocol(format!(
                "bad answer: {e}"
            ))));
        }
        Ok(None) => return Err(no_answer("closed without an answer".into())),
        Err(_) => return Err(no_answer("no answer".into())),
    };
    match up.on_answer(answer, Instant::now().into_std()) {
        Ok(lineage) => Ok(Box::new(Attached {
            up,
            rd,
            wr,
            lineage,
            request,
        })),
        Err(outcome) => {
            if let Outcome::Refused(Refusal::Forged(e)) = &outcome {
                warn!(provider = %peer, error = %e, "provider sent a forged announcement; refusing it");
            }
            Err(outcome)
        }
    }
}

/// How a subscription ended (see [`receive`]).
enum Ended {
    /// Lost (or superseded); a provider found while it was quiet may take over at once.
    Lost(Outcome, Option<(PeerId, Box<Attached>)>),
    /// Left for a provider nearer the origin, which accepted us (it takes over at once).
    Climbed(PeerId, Box<Attached>),
}

/// Receives from the provider that accepted us, into the hub, until the subscription is lost. When the
/// provider has been quiet for [`crate::session::upstream::SUSPECT_AFTER`], looks for another one
/// meanwhile: what accepts us is held, unread, until the provider stalls (then returned beside the
/// outcome, to take over at once) or speaks again (then dropped, which frees its slot). While frames
/// come, looks now and then ([`CLIMB_SETTLE`], [`CLIMB_EVERY`]) for a provider nearer the origin with
/// room ([`climb_target`]) and moves there when it accepts, our subtree with us: viewers that joined
/// while the room near the origin was taken, or before it appeared, do not stay deep for good.
async fn receive(
    ctx: &Arc<Ctx>,
    hub: &Arc<Hub>,
    peer: PeerId,
    attached: Attached,
    fetcher: &mut Fetcher,
    key: &str,
) -> (Ended, Received) {
    let Attached {
        mut up,
        mut rd,
        mut wr,
        lineage,
        request,
    } = attached;
    let hops = lineage.hops;
    let session = PublishId::of(&lineage.announcement).session();
    // The lineage is in the table before the source attaches, so the hub is provided as soon as it is live
    // and sessions serving it announce the publish before its first frame.
    set_lineage(ctx, hub, lineage).await;
    let mut source = hub.attach_mesh(session);
    info!(stream = %hub.name(), provider = %peer, hops, "subscribed");
    // Signs, now and then, what this provider delivered (when the node keeps receipts).
    let mut meter = ctx
        .config
        .receipts
        .as_ref()
        .and_then(|r| r.meter(&request.name, peer));

    let mut acked_bytes = 0u64;
    let mut search: Option<Search<'_>> = None;
    let mut standby: Option<(PeerId, Box<Attached>)> = None;
    // One search per quiet spell: a provider that speaks again allows the next.
    let mut searched = false;
    let move_up = ctx.config.tuning.move_up;
    let mut climb_at = Instant::now() + CLIMB_SETTLE;
    let mut climbing: Option<Climb<'_>> = None;
    let mut climbed: Option<(PeerId, Box<Attached>)> = None;
    let mut got = Received::default();
    let outcome = loop {
        let wake = Instant::from_std(up.poll_timeout());
        let suspect_at = up.suspect_at().map(Instant::from_std);
        let event = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => break Outcome::Superseded,
            _ = sleep_until_some(suspect_at), if !searched && suspect_at.is_some() => {
                let due = suspect_at.expect("guarded").into_std();
                if up.woke_late(due, Instant::now().into_std()) {
                    debug!(stream = %key, provider = %peer, late_ms = due.elapsed().as_millis() as u64,
                        "woke late; reading before judging the upstream");
                    continue;
                }
                searched = true;
                // The search is the round to run now; a move up under way is dropped (its stream closes).
                climbing = None;
                debug!(stream = %key, provider = %peer, "upstream quiet; looking for another provider meanwhile");
                // No search is under way (`searched` is reset only with it): this assignment ends the
                // last one's borrow of the fetcher, for the borrow checker.
                #[allow(unused_assignments)]
                {
                    search = None;
                }
                search = Some(Box::pin(search_while_quiet(ctx, hub, &mut *fetcher, key, peer)));
                continue;
            }
            _ = tokio::time::sleep_until(climb_at), if move_up && climbing.is_none() && !searched && got.frames > 0 => {
                climb_at = Instant::now() + CLIMB_EVERY;
                // No search is under way (`searched` is false): this ends the borrow of the fetcher.
                #[allow(unused_assignments)]
                {
                    search = None;
                }
                if let Some(target) = climb_target(ctx, hub, &mut *fetcher, peer, hops).await {
                    debug!(stream = %key, provider = %peer, %target, "asking a provider nearer the origin");
                    let request = Request {
                        have_seq: hub.position().map_or(0, |(s, _)| s),
                        ..request.clone()
                    };
                    let (ctx, last_frame) = (ctx.clone(), fetcher.last_frame());
                    climbing = Some(Box::pin(async move {
                        (target, attempt(&ctx, request, target, last_frame).await)
                    }));
                }
                continue;
            }
            (target, result) = async { climbing.as_mut().expect("guarded").await }, if climbing.is_some() => {
                climbing = None;
                match result {
                    Ok(found) => {
                        // Superseded stands for "left": what follows the loop returns the move.
                        climbed = Some((target, found));
                        break Outcome::Superseded;
                    }
                    Err(outcome) => {
                        debug!(stream = %key, provider = %peer, %target, ?outcome, "staying: the provider nearer the origin did not take us");
                        count(ctx, &outcome);
                        // No search is under way (a quiet spell drops the attempt): this ends the
                        // borrow of the fetcher.
                        #[allow(unused_assignments)]
                        {
                            search = None;
                        }
                        fetcher.climb_failed(target, Instant::now().into_std());
                    }
                }
                continue;
            }
            end = async { search.as_mut().expect("guarded").await }, if search.is_some() => {
                search = None;
                if let RoundEnd::Attached(found, attached) = end {
                    debug!(stream = %key, provider = %peer, %found, "holding a provider in reserve");
                    standby = Some((found, attached));
                }
                continue;
            }
            _ = tokio::time::sleep_until(wake) => {
                if up.woke_late(wake.into_std(), Instant::now().into_std()) {
                    debug!(stream = %key, provider = %peer, late_ms = wake.elapsed().as_millis() as u64,
                        "woke late; reading before judging the upstream");
                }
                if let Some(receipt) = meter.as_mut().and_then(|m| m.due()) {
                    if let Err(e) = wr.write_all(&wire::encode(&Message::Receipt(receipt))).await {
                        break up.on_closed(Some(format!("cannot send a receipt: {e}")));
                    }
                    let _ = wr.flush().await;
                }
                match up.on_timeout(Instant::now().into_std()) {
                    Ok(None) => continue,
                    Ok(Some(ack)) => {
                        if let Message::Ack { bytes, .. } = &ack
                            && !ctx.view(&peer).direct
                        {
                            ctx.stats.relayed_bytes_received.fetch_add(bytes - acked_bytes, Relaxed);
                        }
                        if let Message::Ack { bytes, .. } = &ack {
                            acked_bytes = *bytes;
                        }
                        if let Err(e) = write_bounded(&mut wr, &ack).await {
                            break up.on_closed(Some(format!("cannot acknowledge: {e}")));
                        }
                        continue;
                    }
                    Err(outcome) => break outcome,
                }
            }
            msg = rd.next() => match msg {
                None => break up.on_closed(None),
                Some(Err(DecodeError::Io(e))) => break up.on_closed(Some(e.to_string())),
                Some(Err(DecodeError::Wire(e))) => {
                    warn!(provider = %peer, error = %e, "upstream broke the protocol; dropping it");
                    break up.on_protocol_error(e.to_string());
                }
                Some(Ok(m)) => up.on_message(m, Instant::now().into_std()),
            },
        };
        if event.is_ok() && searched {
            // The provider speaks again: it was slow, not dead. What the search found is dropped.
            if search.is_some() || standby.is_some() {
                debug!(stream = %key, provider = %peer, "upstream back; dropping the provider held in reserve");
            }
            (search, standby, searched) = (None, None, false);
        }
        match event {
            Ok(Event::Frame {
                frame,
                gap_ms,
                wire_len,
            }) => {
                got.frames += 1;
                if let Some(gap) = gap_ms {
                    ctx.stats.record_gap(gap);
                }
                if let Some(m) = meter.as_mut() {
                    // Counted as the provider counts what it sent: the whole message.
                    m.record(wire_len as u64, 1);
                }
                ctx.stats
                    .bytes_received
                    .fetch_add(frame.len() as u64, Relaxed);
                if source.push(frame).is_err() {
                    break Outcome::Superseded;
                }
            }
            Ok(Event::Path {
                lineage,
                new_publish,
            }) => {
                let session = PublishId::of(&lineage.announcement).session();
                set_lineage(ctx, hub, lineage).await;
                if new_publish {
                    // The origin started its stream again: the hub starts a new session.
                    info!(stream = %hub.name(), provider = %peer, "the origin published again");
                    source = hub.attach_mesh(session);
                }
            }
            Ok(Event::Unsealed) => {
                ctx.stats.frames_unsealed.fetch_add(1, Relaxed);
            }
            Ok(Event::Waiting) => got.keepalives += 1,
            Ok(Event::Stale) => {}
            Err(outcome) => {
                if let Outcome::Lost {
                    loss: loss @ (Loss::Forged(_) | Loss::FalseClaim(_)),
                    ..
                } = &outcome
                {
                    warn!(stream = %hub.name(), provider = %peer, reason = %loss, "the upstream sent media or claims that are not true; dropping it");
                }
                break outcome;
            }
        }
    };
    if let Some((found, attached)) = climbed {
        return (Ended::Climbed(found, attached), got);
    }
    if matches!(outcome, Outcome::Superseded) {
        return (Ended::Lost(outcome, None), got);
    }
    // Lost: what the search found takes over; a search still under way goes on if the provider stalled
    // (it is the round the fetch would start now). Any other loss (a closed stream, often a connection
    // replaced by a direct one) is left to the fetch: it may go straight back to the same provider.
    let stalled = matches!(
        outcome,
        Outcome::Lost {
            loss: Loss::Stalled(_),
            ..
        }
    );
    let found = match (standby, search.take()) {
        (Some(found), _) => Some(found),
        (None, Some(search)) if stalled => match search.await {
            RoundEnd::Attached(found, attached) => Some((found, attached)),
            RoundEnd::Over | RoundEnd::Stop => None,
        },
        _ => None,
    };
    (Ended::Lost(outcome, found), got)
}

/// What one subscription received from its provider, for the line that says how it ended: an upstream
/// lost after frames is a different story from one that accepted and never sent any.
#[derive(Debug, Default, Clone, Copy)]
struct Received {
    /// Frames (audio, video, data).
    frames: u64,
    /// "Alive, nothing to send" messages.
    keepalives: u64,
}
