//! The provider side of `/streamr/media/1`, as I/O around [`Downstream`]: read the subscription, ask the
//! actor to admit it, answer, then send frames from the hub while the flow control allows.

use super::actor::{Admission, Command, Ctx};
use crate::session::{Downstream, ServeError};
use crate::wire::{self, DecodeError, Message};
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

impl From<DecodeError> for ServeError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Wire(w) => ServeError::Protocol(w.to_string()),
            DecodeError::Io(io) => ServeError::Io(io.to_string()),
        }
    }
}

fn io(e: std::io::Error) -> ServeError {
    ServeError::Io(e.to_string())
}

/// Serves one inbound stream to its end; counts and logs how it ended.
pub(super) async fn serve(ctx: Arc<Ctx>, peer: PeerId, id: u64, stream: libp2p::Stream) {
    if let Err(e) = serve_inner(&ctx, peer, id, stream).await {
        match &e {
            ServeError::Protocol(_) => ctx.stats.protocol_violations.fetch_add(1, Relaxed),
            ServeError::Stalled => ctx.stats.stalled_downstreams.fetch_add(1, Relaxed),
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
    let mut rd = FramedRead::new(rd.compat(), wire::Decoder);
    let first = tokio::time::timeout(SUBSCRIBE_TIMEOUT, rd.next())
        .await
        .map_err(|_| ServeError::Protocol("no subscribe within 5 s".into()))?;
    let (name, origin) = match first {
        Some(Ok(Message::Subscribe { name, origin, .. })) => (name, origin),
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
    let refuse = |reason: String| wire::encode(&Message::Reject { reason });
    let (hub, accept, first, mut lineage_rx) = match admission {
        Admission::Accepted {
            hub,
            accept,
            first,
            lineage,
        } => (hub, accept, first, lineage),
        Admission::NotHere => {
            let _ = wr
                .write_all(&refuse(format!("{name:?} is not live here")))
                .await;
            return Err(ServeError::Refused(format!("{name:?} not live here")));
        }
        Admission::Loop => {
            let _ = wr
                .write_all(&refuse("you are upstream of me: a loop".into()))
                .await;
            return Err(ServeError::Refused("loop".into()));
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
            let _ = wr.write_all(&wire::encode(&msg)).await;
            let _ = wr.close().await;
            return Ok(());
        }
    };
    wr.write_all(&wire::encode(&accept)).await.map_err(io)?;
    tracing::info!(%peer, stream = %name, "serving a downstream peer");
    let mut sub = hub.subscribe(SubscriberKind::Peer);
    let mut down = Downstream::new(
        peer,
        first,
        ctx.config.tuning.max_inflight,
        Instant::now().into_std(),
    );
    let mut out: Vec<bytes::Bytes> = Vec::with_capacity(BATCH);
    loop {
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
                    let _ = wr.write_all(&wire::encode(&Message::End { reason: "stream ended".into() })).await;
                    let _ = wr.close().await;
                    return Ok(());
                };
                // Our own upstream changed: tell the subscriber before the frames that follow.
                if lineage_rx.has_changed().unwrap_or(false)
                    && let Some(l) = lineage_rx.borrow_and_update().clone()
                {
                    match down.on_lineage(&l) {
                        Ok(Some(path)) => out.push(wire::encode(&path)),
                        Ok(None) => {}
                        Err(e) => {
                            ctx.stats.loops_prevented.fetch_add(1, Relaxed);
                            return Err(e);
                        }
                    }
                }
                let mut next = Some(frame);
                while let Some(f) = next {
                    let b = f.encoded(EncodingSlot::Wire, wire::encode_frame);
                    down.on_sent(b.len() as u64);
                    out.push(b);
                    next = if out.len() < BATCH && down.has_room() {
                        sub.try_next().ok().flatten()
                    } else {
                        None
                    };
                }
                let total: usize = out.iter().map(|b| b.len()).sum();
                for b in out.drain(..) {
                    wr.write_all(&b).await.map_err(io)?;
                }
                wr.flush().await.map_err(io)?;
                ctx.stats.bytes_sent.fetch_add(total as u64, Relaxed);
                if !ctx.view(&peer).direct {
                    ctx.stats.relayed_bytes_sent.fetch_add(total as u64, Relaxed);
                }
            }
            // While the window is full the hub skips this subscriber ahead; one that stops acknowledging
            // altogether is gone.
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                down.on_timeout(Instant::now().into_std())?;
            }
        }
    }
}
