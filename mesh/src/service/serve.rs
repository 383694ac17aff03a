//! The provider side of `/streamr/media/3`, as I/O around [`Downstream`]: read the subscription, ask the
//! actor to admit it, answer, then send frames from the hub while the flow control allows. At the origin the
//! frames are sent as the publish's sealer sealed them ([`super::seal`]); a relay sends the origin's bytes
//! as it received them. Every write is bounded in time: a subscriber that stops reading cannot hold a task, an
//! upload slot or our memory.

use super::actor::{Admission, Command, Ctx};
use crate::session::downstream::{KEEPALIVE, WRITE_TIMEOUT, window};
use crate::session::{Downstream, ServeError};
use crate::wire::{self, DecodeError, Message};
use bytes::Bytes;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::PeerId;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use streamr_media::{EncodingSlot, SubscriberKind};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tracing::debug;

/// Time a subscriber has to say what it wants.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames written per batch.
const BATCH: usize = 32;
/// How often a subscription's flow-control window is resized to the stream's bitrate.
const WINDOW_REFRESH: Duration = Duration::from_secs(1);

impl From<DecodeError> for ServeError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Wire(w) => ServeError::Protocol(w.to_string()),
            DecodeError::Io(io) => ServeError::Io(io.to_string()),
        }
    }
}

/// Writes `chunks` and flushes, within [`WRITE_TIMEOUT`]: a subscriber whose window stays full that long
/// has stopped reading.
async fn write_bounded<W: futures::AsyncWrite + Unpin>(
    wr: &mut W,
    chunks: &[Bytes],
) -> Result<(), ServeError> {
    let write = async {
        for b in chunks {
            wr.write_all(b).await?;
        }
        wr.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ServeError::Io(e.to_string())),
        Err(_) => Err(ServeError::WriteStalled),
    }
}

/// Writes the messages in `out` (bounded in time, see [`write_bounded`]), counts them and empties `out`.
async fn send_out<W: futures::AsyncWrite + Unpin>(
    ctx: &Ctx,
    peer: PeerId,
    wr: &mut W,
    out: &mut Vec<Bytes>,
) -> Result<(), ServeError> {
    let total: usize = out.iter().map(|b| b.len()).sum();
    write_bounded(wr, out).await?;
    out.clear();
    ctx.stats.bytes_sent.fetch_add(total as u64, Relaxed);
    if !ctx.view(&peer).direct {
        ctx.stats
            .relayed_bytes_sent
            .fetch_add(total as u64, Relaxed);
    }
    Ok(())
}

/// Says a last word (a refusal, the end) and closes, within [`WRITE_TIMEOUT`]; failures do not matter.
async fn last_word<W: futures::AsyncWrite + Unpin>(wr: &mut W, msg: &Message) {
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        wr.write_all(&wire::encode(msg)).await?;
        wr.close().await
    })
    .await;
}

/// Serves one inbound stream to its end; counts and logs how it ended.
pub(super) async fn serve(ctx: Arc<Ctx>, peer: PeerId, id: u64, stream: libp2p::Stream) {
    if let Err(e) = serve_inner(&ctx, peer, id, stream).await {
        match &e {
            ServeError::Protocol(_) => ctx.stats.protocol_violations.fetch_add(1, Relaxed),
            ServeError::Stalled => ctx.stats.stalled_downstreams.fetch_add(1, Relaxed),
            ServeError::WriteStalled => {
                ctx.stats.write_stalls.fetch_add(1, Relaxed);
                ctx.stats.stalled_downstreams.fetch_add(1, Relaxed)
            }
            _ => 0,
        };
        debug!(%peer, error = %e, "served subscription ended");
    }
}

async fn serve_inner(
    ctx: &Arc<Ctx>,
    peer: PeerId,
    id: u64,
    stream: libp2p::Stream,
) -> Result<(), ServeError> {
    let (rd, mut wr) = stream.split();
    let mut rd = FramedRead::new(rd.compat(), wire::Decoder::provider());
    let first = tokio::time::timeout(SUBSCRIBE_TIMEOUT, rd.next())
        .await
        .map_err(|_| ServeError::Protocol("no subscribe within 5 s".into()))?;
    let (name, origin, have_seq) = match first {
        Some(Ok(Message::Subscribe {
            name,
            origin,
            have_seq,
            ..
        })) => (name, origin, have_seq),
        Some(Ok(m)) => {
            return Err(ServeError::Protocol(format!(
                "expected subscribe, got {m:?}"
            )));
        }
        Some(Err(e)) => return Err(e.into()),
        None => return Ok(()),
    };
    let admission = ctx
        .client
        .ask(|reply| Command::Admit {
            peer,
            id,
            name: name.clone(),
            origin,
            reply,
        })
        .await
        .ok_or_else(|| ServeError::Refused("the mesh is stopping".into()))?;
    let (hub, accept, first, mut lineage_rx, heard) = match admission {
        Admission::Accepted {
            hub,
            accept,
            first,
            lineage,
            heard,
        } => (hub, accept, first, lineage, heard),
        Admission::NotHere => {
            let reason = format!("{name:?} is not live here");
            last_word(
                &mut wr,
                &Message::Reject {
                    reason: reason.clone(),
                },
            )
            .await;
            return Err(ServeError::Refused(reason));
        }
        Admission::Loop => {
            let reason = "you are upstream of me: a loop".to_string();
            last_word(
                &mut wr,
                &Message::Reject {
                    reason: reason.clone(),
                },
            )
            .await;
            return Err(ServeError::Refused(reason));
        }
        Admission::Full(hints) => {
            let msg = if hints.is_empty() {
                Message::Reject {
                    reason: "upload capacity reached and no other provider known".into(),
                }
            } else {
                Message::Redirect {
                    reason: "upload capacity reached".into(),
                    providers: hints,
                }
            };
            last_word(&mut wr, &msg).await;
            return Ok(());
        }
    };
    write_bounded(&mut wr, &[wire::encode(&accept)]).await?;
    tracing::info!(%peer, stream = %name, "serving a downstream peer");
    // At the origin, frames go out as its sealer seals them (started before our subscription, so that it
    // sees every frame we will); a relay has no sealer and forwards the bytes frames arrived in.
    let mut sealer = ctx.sealers.get(
        &ctx.config.key,
        &first.announcement,
        &hub,
        ctx.config.tuning.seal_window,
    );
    let mut sub = hub.subscribe(SubscriberKind::Peer);
    // A subscriber that holds frames already (it moves to us, or takes over from a provider that stalled):
    // what it lacks, from the batch that holds it, instead of the whole keyframe interval first.
    let left_out = sub.resume_after(have_seq, |f| {
        f.cached(EncodingSlot::Wire)
            .is_some_and(|b| wire::opens_batch(&b))
    });
    let tuning = &ctx.config.tuning;
    let sized = || {
        window(
            hub.bitrate_estimate_bps(),
            tuning.max_queue_delay,
            tuning.max_inflight,
        )
    };
    let mut down = Downstream::new(peer, first, sized(), Instant::now().into_std());
    // The window follows the stream's bitrate, looked at now and then (it takes the hub's lock).
    let mut resized = Instant::now();
    let mut out: Vec<Bytes> = Vec::with_capacity(BATCH);
    let mut last_write = Instant::now();
    let began = Instant::now();
    let mut frames = 0u64;
    let mut first_frame_ms = None;
    let ended: Result<(), ServeError> = async {
        loop {
            heard.set(down.silent_since());
            let deadline = down.deadline().map(Instant::from_std);
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => return Ok(()),
                msg = rd.next() => match msg {
                    // A signed receipt for what it received: the node judges it (the mesh cannot read it).
                    Some(Ok(Message::Receipt(receipt))) => {
                        if down.on_receipt(Instant::now().into_std())
                            && let Some(hook) = &ctx.config.receipts
                        {
                            hook.receive(peer, &name, receipt);
                        }
                    }
                    Some(Ok(m)) => down.on_message(m, Instant::now().into_std())?,
                    Some(Err(e)) => return Err(e.into()),
                    None => return Ok(()),
                },
                f = sub.next(), if down.has_room() => {
                    let Ok(frame) = f else {
                        last_word(&mut wr, &Message::End { reason: "stream ended".into() }).await;
                        return Ok(());
                    };
                    if resized.elapsed() >= WINDOW_REFRESH {
                        down.set_window(sized());
                        resized = Instant::now();
                    }
                    let mut next = Some(frame);
                    while let Some(f) = next {
                        // Our own upstream changed (another path, or the origin published again): tell
                        // the subscriber before the frames that follow. The change is in the table before
                        // the first frame of a new publish enters the hub, so it is seen here in time.
                        if lineage_rx.has_changed().unwrap_or(false)
                            && let Some(l) = lineage_rx.borrow_and_update().clone()
                        {
                            match down.on_lineage(&l) {
                                Ok(Some(path)) => {
                                    out.push(wire::encode(&path));
                                    sealer = ctx.sealers.get(
                                        &ctx.config.key,
                                        down.announcement(),
                                        &hub,
                                        ctx.config.tuning.seal_window,
                                    );
                                }
                                Ok(None) => {}
                                Err(e) => {
                                    ctx.stats.loops_prevented.fetch_add(1, Relaxed);
                                    return Err(e);
                                }
                            }
                        }
                        let b = match &sealer {
                            Some(s) => {
                                if !out.is_empty() && f.cached(EncodingSlot::Wire).is_none() {
                                    // The frames sealed already go out now, not after this one's batch
                                    // closes.
                                    send_out(ctx, peer, &mut wr, &mut out).await?;
                                }
                                s.wire(&f).await
                            }
                            None => f.encoded(EncodingSlot::Wire, |_| Bytes::new()),
                        };
                        if down.sends(&b) {
                            down.on_sent(b.len() as u64);
                            out.push(b);
                            frames += 1;
                            first_frame_ms.get_or_insert_with(|| began.elapsed().as_millis() as u64);
                        }
                        next = if out.len() < BATCH && down.has_room() {
                            sub.try_next().ok().flatten()
                        } else {
                            None
                        };
                    }
                    send_out(ctx, peer, &mut wr, &mut out).await?;
                    last_write = Instant::now();
                }
                // No frames for a while (our own upstream is being replaced, or the publisher paused):
                // tell the subscriber we are alive, so that it waits for us instead of looking elsewhere.
                _ = tokio::time::sleep_until(last_write + KEEPALIVE), if down.has_room() => {
                    write_bounded(&mut wr, &[wire::encode(&Message::Waiting)]).await?;
                    last_write = Instant::now();
                }
                // While the window is full the hub skips this subscriber ahead; one that stops acknowledging
                // altogether is gone.
                _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                    down.on_timeout(Instant::now().into_std())?;
                }
            }
        }
    }
    .await;
    // One line per subscription served: an accepted subscriber that got nothing, or nothing it
    // acknowledged, shows here.
    let (sent, acked) = down.bytes();
    tracing::info!(%peer, stream = %name, frames, sent, acked, first_frame_ms, left_out,
        secs = began.elapsed().as_secs_f32(),
        ended = %ended.as_ref().err().map_or_else(|| "closed".to_string(), ToString::to_string),
        "stopped serving a downstream peer");
    ended
}
