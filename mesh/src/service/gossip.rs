//! Catalog transfers (`/streamr/catalog/1`): one message per stream, then close. Sending and receiving
//! are tasks of their own; the actor decides what to send and merges what arrives.

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

/// Sends one catalog message to `peer`.
pub(super) async fn send(ctx: Arc<Ctx>, peer: PeerId, bytes: Vec<u8>) {
    let mut control = ctx.net.control();
    let send = async {
        let mut s = control.open_stream(peer, catalog::PROTOCOL).await.ok()?;
        s.write_all(&bytes).await.ok()?;
        s.close().await.ok()
    };
    let _ = tokio::time::timeout(TRANSFER_TIMEOUT, send).await;
}

/// Reads one catalog message from `peer` and hands its entries to the actor.
pub(super) async fn receive(ctx: Arc<Ctx>, peer: PeerId, mut stream: libp2p::Stream) {
    let mut buf = Vec::new();
    let mut limited = (&mut stream).take(catalog::MAX_MESSAGE as u64 + 1);
    let read = limited.read_to_end(&mut buf);
    match tokio::time::timeout(TRANSFER_TIMEOUT, read).await {
        Ok(Ok(_)) => {}
        // A transfer that broke off (the sender gave up, the connection closed) is not the peer lying:
        // drop it quietly, the next gossip brings the catalog again.
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "catalog transfer broke off");
            return;
        }
        Err(_) => {
            debug!(%peer, "catalog transfer too slow; dropped");
            return;
        }
    }
    match catalog::decode(&buf) {
        Ok(entries) => ctx.client.send(Command::Merge { peer, entries }).await,
        Err(e) => {
            ctx.stats.protocol_violations.fetch_add(1, Relaxed);
            warn!(%peer, error = %e, "peer sent a malformed catalog");
        }
    }
}
