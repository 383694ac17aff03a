//! The provider side of `/streamr/media/1`: answer a subscription, then send frames while bounding the bytes
//! in flight with the subscriber's acknowledgements.

use super::{Downstream, Shared, matches_request};
use crate::routes::Lineage;
use crate::service::MeshStats;
use crate::wire::{self, DecodeError, Message, ProviderHint};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::PeerId;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use streamr_media::{EncodingSlot, Ended, Hub, SubscriberKind};
use tokio_util::codec::FramedRead;
use tokio_util::compat::FuturesAsyncReadCompatExt;

/// Time a subscriber has to say what it wants.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A subscriber that acknowledges nothing for this long while frames are outstanding is cut off (it
/// acknowledges every 100 ms while it receives): a dead peer frees its upload slot quickly.
const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// Frames written per batch.
const BATCH: usize = 32;

/// Why serving a subscriber ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    #[error("subscriber stopped acknowledging")]
    Stalled,
    #[error("refused: {0}")]
    Refused(String),
}

impl ServeError {
    pub(crate) fn count(&self, stats: &MeshStats) {
        match self {
            ServeError::Protocol(_) => stats.protocol_violations.fetch_add(1, Relaxed),
            ServeError::Stalled => stats.stalled_downstreams.fetch_add(1, Relaxed),
            _ => 0,
        };
    }
}

impl From<DecodeError> for ServeError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Wire(w) => ServeError::Protocol(w.to_string()),
            DecodeError::Io(io) => ServeError::Io(io),
        }
    }
}

/// Finds the live hub that carries stream `name` (of an origin matching `origin`).
fn find_hub(
    shared: &Shared,
    name: &str,
    origin: Option<&PeerId>,
) -> Option<(Arc<Hub>, Arc<Lineage>)> {
    let prefix = origin.map(|o| o.to_string());
    shared
        .routes
        .provided()
        .into_iter()
        .find(|(_, l)| matches_request(&l.announcement.id, name, prefix.as_deref()))
}

pub(crate) async fn serve(
    shared: Arc<Shared>,
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
    let refuse = |reason: String| Message::Reject { reason };
    let hub = find_hub(&shared, &name, origin.as_ref());
    let Some((hub, mut lineage)) = hub else {
        shared.stats.subscriptions_rejected.fetch_add(1, Relaxed);
        let _ = wr
            .write_all(&wire::encode(&refuse(format!("{name:?} is not live here"))))
            .await;
        return Err(ServeError::Refused(format!("{name:?} not live here")));
    };
    if lineage.path.contains(&peer) {
        shared.stats.loops_prevented.fetch_add(1, Relaxed);
        shared.stats.subscriptions_rejected.fetch_add(1, Relaxed);
        let _ = wr
            .write_all(&wire::encode(&refuse(
                "you are upstream of me: a loop".into(),
            )))
            .await;
        return Err(ServeError::Refused("loop".into()));
    }
    // Upload cap: redirect to nodes that already hold the stream (our own downstreams, then the catalog).
    // The check and the reservation happen under one lock, so simultaneous subscribers cannot all slip in.
    // A node always serves at least one peer, or a stream could never leave it.
    let cap = u64::from(shared.config.max_upload_kbps);
    let need = super::stream_kbps(&hub);
    let admitted = {
        let mut down = shared.downstream.lock();
        let ok = cap == 0 || down.is_empty() || shared.upload_kbps_of(&down) + need <= cap;
        if ok {
            down.insert(
                (peer, id),
                Downstream {
                    hub: hub.name().to_string(),
                },
            );
        }
        ok
    };
    if !admitted {
        let hints = redirect_hints(&shared, &hub, &name, &peer);
        let msg = if hints.is_empty() {
            shared.stats.subscriptions_rejected.fetch_add(1, Relaxed);
            refuse("upload capacity reached and no other provider known".into())
        } else {
            shared.stats.subscriptions_redirected.fetch_add(1, Relaxed);
            Message::Redirect {
                reason: "upload capacity reached".into(),
                providers: hints,
            }
        };
        let _ = wr.write_all(&wire::encode(&msg)).await;
        let _ = wr.close().await;
        return Ok(());
    }
    wr.write_all(&wire::encode(&Message::Accept {
        announcement: lineage.announcement.clone(),
        hops: lineage.hops,
        path: lineage.path.clone(),
        fallbacks: fallbacks_for(&shared, &lineage, &peer),
    }))
    .await?;
    shared.stats.subscriptions_accepted.fetch_add(1, Relaxed);
    tracing::info!(%peer, stream = %name, "serving a downstream peer");
    let mut sub = hub.subscribe(SubscriberKind::Peer);
    let max_inflight = shared.config.tuning.max_inflight;
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut last_ack = tokio::time::Instant::now();
    let mut out: Vec<bytes::Bytes> = Vec::with_capacity(BATCH);
    loop {
        let room = sent.saturating_sub(acked) < max_inflight;
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return Ok(()),
            msg = rd.next() => match msg {
                Some(Ok(Message::Ack { bytes, .. })) => {
                    acked = acked.max(bytes.min(sent));
                    last_ack = tokio::time::Instant::now();
                }
                Some(Ok(m)) => return Err(ServeError::Protocol(format!("unexpected {m:?}"))),
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            f = sub.next(), if room => {
                let frame = match f {
                    Ok(f) => f,
                    Err(Ended::SourceGone | Ended::Closed) => {
                        let _ = wr.write_all(&wire::encode(&Message::End { reason: "stream ended".into() })).await;
                        let _ = wr.close().await;
                        return Ok(());
                    }
                };
                // Our own upstream changed: tell the subscriber before the frames that follow.
                if let Some(l) = shared.routes.lineage(&hub)
                    && !Arc::ptr_eq(&l, &lineage)
                {
                    if l.path.contains(&peer) {
                        shared.stats.loops_prevented.fetch_add(1, Relaxed);
                        return Err(ServeError::Refused("our new upstream path contains the subscriber".into()));
                    }
                    out.push(wire::encode(&Message::Path { hops: l.hops, path: l.path.clone() }));
                    lineage = l;
                }
                let mut next = Some(frame);
                while let Some(f) = next {
                    let b = f.encoded(EncodingSlot::Wire, wire::encode_frame);
                    sent += b.len() as u64;
                    out.push(b);
                    next = if out.len() < BATCH && sent.saturating_sub(acked) < max_inflight {
                        sub.try_next().ok().flatten()
                    } else {
                        None
                    };
                }
                let total: usize = out.iter().map(|b| b.len()).sum();
                for b in out.drain(..) {
                    wr.write_all(&b).await?;
                }
                wr.flush().await?;
                shared.stats.bytes_sent.fetch_add(total as u64, Relaxed);
                if !shared.view(&peer).direct {
                    shared.stats.relayed_bytes_sent.fetch_add(total as u64, Relaxed);
                }
            }
            // While the window is full the hub skips this subscriber ahead; one that stops acknowledging
            // altogether is gone.
            _ = tokio::time::sleep_until(last_ack + ACK_TIMEOUT), if sent > acked => {
                return Err(ServeError::Stalled);
            }
        }
    }
}

/// Where a subscriber should go if we die: our upstream (with the addresses we know it by), then the
/// nodes above it that our own upstream named.
fn fallbacks_for(shared: &Shared, lineage: &Lineage, requester: &PeerId) -> Vec<ProviderHint> {
    let mut out = Vec::new();
    if let Some(up) = lineage.upstream {
        let addrs = shared.net.with_snapshot(|s| {
            s.peers
                .get(&up)
                .map(|p| {
                    let mut a: Vec<libp2p::Multiaddr> = p
                        .connections
                        .iter()
                        .filter(|c| c.dialer && !crate::net::is_relayed(&c.remote))
                        .map(|c| c.remote.clone())
                        .collect();
                    a.extend(p.listen_addrs.iter().cloned());
                    a.truncate(8);
                    a
                })
                .unwrap_or_default()
        });
        out.push(ProviderHint { peer: up, addrs });
    }
    out.extend(lineage.fallbacks.iter().cloned());
    out.retain(|h| h.peer != *requester);
    out.truncate(4);
    out
}

/// Providers to redirect a subscriber to: our downstream peers of this stream, then catalog providers.
fn redirect_hints(
    shared: &Shared,
    hub: &Arc<Hub>,
    name: &str,
    requester: &PeerId,
) -> Vec<ProviderHint> {
    let mine: Vec<PeerId> = shared
        .downstream
        .lock()
        .iter()
        .filter(|(_, d)| d.hub == hub.name())
        .map(|((p, _), _)| *p)
        .filter(|p| p != requester)
        .collect();
    let mut hints: Vec<ProviderHint> = shared.net.with_snapshot(|s| {
        mine.iter()
            .map(|p| ProviderHint {
                peer: *p,
                addrs: s
                    .peers
                    .get(p)
                    .map(|i| i.listen_addrs.clone())
                    .unwrap_or_default(),
            })
            .collect()
    });
    let now = std::time::Instant::now();
    let origin = shared
        .routes
        .lineage(hub)
        .map(|l| l.announcement.id.origin.to_string());
    for e in shared
        .catalog
        .lock()
        .providers(name, origin.as_deref(), now)
    {
        if e.provider != *requester
            && e.provider != shared.me
            && !hints.iter().any(|h| h.peer == e.provider)
        {
            hints.push(ProviderHint {
                peer: e.provider,
                addrs: e.addrs,
            });
        }
    }
    hints.dedup_by_key(|h| h.peer);
    hints.truncate(16);
    hints
}
