//! Bandwidth receipts on `/streamr/media/3`, as the mesh sees them: the node that receives a stream signs,
//! now and then, how much it got from its upstream, and sends that back on the same stream
//! ([`crate::wire::Message::Receipt`]); the upstream hands what it receives to its node. The mesh carries
//! receipts as opaque bytes (at most [`crate::wire::MAX_RECEIPT`]) and never reads them: what a receipt
//! says, how it is signed and where it goes belong to the node (the coordinator's format). A mesh without a
//! [`Receipts`] hook neither signs nor forwards any.

use bytes::Bytes;
use libp2p::PeerId;
use std::fmt;

/// The node's side of receipts, given to the mesh in [`crate::MeshConfig::receipts`].
pub trait Receipts: Send + Sync + fmt::Debug + 'static {
    /// Subscriber side: `provider` accepted our subscription to `stream`. The meter counts what arrives
    /// from it and signs receipts; `None` signs nothing for this subscription.
    fn meter(&self, stream: &str, provider: PeerId) -> Option<Box<dyn ReceiptMeter>>;

    /// Provider side: `receiver`, a subscriber of `stream`, sent these bytes as a receipt. They are
    /// untrusted: the node decodes and checks them (who signed, for whom, for which stream).
    fn receive(&self, receiver: PeerId, stream: &str, receipt: Bytes);
}

/// Counts one subscription's deliveries and says when a signed receipt is due. Plain code: no I/O; the
/// fetch calls [`ReceiptMeter::due`] on its acknowledgement timer (every 100 ms), the meter keeps its own
/// spacing.
pub trait ReceiptMeter: Send + fmt::Debug {
    /// `bytes` (as on the wire, frame headers included, as the provider counts them) in `frames` frames
    /// arrived from the provider.
    fn record(&mut self, bytes: u64, frames: u64);

    /// The signed receipt to send now, if one is due.
    fn due(&mut self) -> Option<Bytes>;
}
