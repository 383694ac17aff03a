//! Catalog transfers (`/streamr/catalog/2`): one length-prefixed message per stream, then close. Sending
//! and receiving are tasks of their own; the actor decides what to send and merges what arrives, after the
//! receiving task has checked its signatures (so a big message does not hold the actor).

use super::actor::{Command, Ctx};
use crate::catalog;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::PeerId;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tracing::{debug, warn};

/// Time allowed for one transfer either way.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends one catalog message (length prefix included) to `peer`.
pub(super) async fn send(ctx: Arc<Ctx>, peer: PeerId, bytes: Vec<u8>) {
    let mut control = ctx.net.control();
    let send = async {
        let mut s = control.open_stream(peer, catalog::PROTOCOL).await.ok()?;
        s.write_all(&bytes).await.ok()?;
        s.close().await.ok()
    };
    // A transfer that times out is dropped unfinished: the receiver sees fewer bytes than the prefix says
    // and takes it for what it is, a transfer that broke off (version 1 had no prefix and charged the
    // sender with a malformed catalog).
    if let Ok(Some(())) = tokio::time::timeout(TRANSFER_TIMEOUT, send).await {
        ctx.stats.catalogs_sent.fetch_add(1, Relaxed);
        ctx.stats
            .catalog_bytes_sent
            .fetch_add(bytes.len() as u64, Relaxed);
    }
}

/// Why a received transfer was not merged.
#[derive(Debug)]
enum Received {
    /// It broke off (the sender gave up, the connection closed): nobody's fault, the next gossip brings it.
    BrokeOff(String),
    /// The peer sent something that is not a catalog.
    Malformed(String),
}

async fn read_message(stream: &mut libp2p::Stream) -> Result<Vec<u8>, Received> {
    let mut prefix = [0u8; 4];
    stream
        .read_exact(&mut prefix)
        .await
        .map_err(|e| Received::BrokeOff(e.to_string()))?;
    let len = catalog::message_len(prefix).map_err(|e| Received::Malformed(e.to_string()))?;
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| Received::BrokeOff(e.to_string()))?;
    Ok(body)
}

/// Reads one catalog message from `peer`, checks its signatures (at most `allowance` new ones) and claims,
/// and hands what passed to the actor.
pub(super) async fn receive(
    ctx: Arc<Ctx>,
    peer: PeerId,
    mut stream: libp2p::Stream,
    allowance: usize,
) {
    let body = match tokio::time::timeout(TRANSFER_TIMEOUT, read_message(&mut stream)).await {
        Ok(Ok(b)) => b,
        Ok(Err(Received::BrokeOff(e))) => {
            debug!(%peer, error = %e, "catalog transfer broke off");
            return;
        }
        Ok(Err(Received::Malformed(e))) => {
            ctx.stats.protocol_violations.fetch_add(1, Relaxed);
            warn!(%peer, error = %e, "peer sent a malformed catalog");
            return;
        }
        Err(_) => {
            debug!(%peer, "catalog transfer too slow; dropped");
            return;
        }
    };
    drop(stream);
    ctx.stats.catalogs_received.fetch_add(1, Relaxed);
    ctx.stats
        .catalog_bytes_received
        .fetch_add(4 + body.len() as u64, Relaxed);
    let raw = match catalog::decode(&body) {
        Ok(raw) => raw,
        Err(e) => {
            ctx.stats.protocol_violations.fetch_add(1, Relaxed);
            warn!(%peer, error = %e, "peer sent a malformed catalog");
            return;
        }
    };
    // Signatures are checked here, not in the actor, one catalog at a time, on a blocking thread.
    let Ok(_permit) = ctx.checking.acquire().await else {
        return;
    };
    let cache = ctx.verified.clone();
    let checked =
        match tokio::task::spawn_blocking(move || catalog::check(raw, &cache, allowance)).await {
            Ok(c) => c,
            Err(e) => {
                warn!(%peer, error = %e, "checking a catalog failed");
                return;
            }
        };
    if checked.unchecked > 0 {
        ctx.stats
            .catalog_entries_dropped
            .fetch_add(checked.unchecked as u64, Relaxed);
        debug!(%peer, n = checked.unchecked, "peer sent more new entries than we check at once; left for its next gossip");
    }
    let refund = allowance - checked.verified;
    if checked.false_claims > 0 {
        ctx.stats
            .false_claims
            .fetch_add(checked.false_claims as u64, Relaxed);
        debug!(%peer, n = checked.false_claims, "refused catalog entries with false claims or records");
    }
    for id in &checked.forged {
        ctx.stats.forged_announcements.fetch_add(1, Relaxed);
        warn!(%peer, stream = %id, "refused a forged stream announcement in a catalog");
    }
    ctx.client
        .send(Command::Merge {
            peer,
            entries: checked,
            refund,
        })
        .await;
}
