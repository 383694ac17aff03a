//! Bandwidth receipts, the node's side of the mesh's hook ([`streamr_mesh::Receipts`]): for each upstream
//! it receives from, the node signs a cumulative receipt in the coordinator's format every 10 s
//! ([`ReceiptMeter`](streamr_coordinator::receipt::ReceiptMeter)); for each downstream it serves, it checks
//! what comes back (decodes, signed by the peer that sent it, for the stream served, naming this node as
//! provider, signature valid) and hands it to the coordinator's runner, which keeps it on disk until the
//! coordinator has it. The [`ReceiptBook`] keeps the latest receipt of each series both ways, for the
//! status page.

use bytes::Bytes;
use libp2p::PeerId;
use libp2p::identity::Keypair;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use streamr_coordinator::client::CoordinatorHandle;
use streamr_coordinator::receipt::{Receipt, ReceiptMeter, SeriesKey, SignedReceipt};
use streamr_coordinator::time::now_ms;
use streamr_web::ReceiptStatus;
use tracing::{debug, warn};

/// Series remembered per direction (the oldest is forgotten beyond; it only feeds the status page).
const MAX_SERIES: usize = 512;

/// Why a downstream's receipt was refused here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a receipt.
    #[error("not a receipt: {0}")]
    Malformed(String),
    /// Signed by another node than the one that sent it.
    #[error("signed by {signer}, sent by {sender}")]
    NotFromSender {
        /// The receipt's receiver (signer), as text (keeps the error small).
        signer: String,
        /// The peer that sent it.
        sender: String,
    },
    /// For another stream than the one served on that subscription.
    #[error("for stream {got:?}, served {served:?}")]
    WrongStream {
        /// The receipt's stream.
        got: String,
        /// The stream served.
        served: String,
    },
    /// The runner refused it (another provider, or the signature does not verify).
    #[error("{0}")]
    Invalid(String),
}

/// The latest receipt of each series, both ways, and counters.
#[derive(Debug, Default)]
pub struct ReceiptBook {
    inner: Mutex<BookInner>,
}

#[derive(Debug, Default)]
struct BookInner {
    signed: BTreeMap<SeriesKey, Receipt>,
    received: BTreeMap<SeriesKey, Receipt>,
    signed_count: u64,
    received_count: u64,
    refused: u64,
}

fn remember(map: &mut BTreeMap<SeriesKey, Receipt>, r: &Receipt) {
    let key = r.series();
    if map.get(&key).is_some_and(|old| old.counter >= r.counter) {
        return;
    }
    map.insert(key, r.clone());
    if map.len() > MAX_SERIES
        && let Some(oldest) = map
            .iter()
            .min_by_key(|(_, r)| r.window_end_ms)
            .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

impl ReceiptBook {
    /// This node signed `r` for its upstream.
    pub fn signed(&self, r: &Receipt) {
        let mut b = self.inner.lock();
        b.signed_count += 1;
        remember(&mut b.signed, r);
    }

    /// A downstream's receipt was accepted and queued.
    pub fn received(&self, r: &Receipt) {
        let mut b = self.inner.lock();
        b.received_count += 1;
        remember(&mut b.received, r);
    }

    /// A downstream's receipt was refused.
    pub fn refused(&self) {
        self.inner.lock().refused += 1;
    }

    /// For the status page (`refused_by_coordinator` is the runner's to fill in).
    pub fn status(&self) -> ReceiptStatus {
        let b = self.inner.lock();
        ReceiptStatus {
            signed: b.signed_count,
            signed_bytes: b.signed.values().map(|r| r.bytes).sum(),
            received: b.received_count,
            received_bytes: b.received.values().map(|r| r.bytes).sum(),
            refused: b.refused,
            refused_by_coordinator: 0,
        }
    }
}

/// Checks a downstream's receipt before the runner (which checks provider and signature) takes it.
pub fn check(sender: PeerId, served: &str, bytes: &[u8]) -> Result<SignedReceipt, Refused> {
    let r = SignedReceipt::decode(bytes).map_err(|e| Refused::Malformed(e.to_string()))?;
    if r.receipt.receiver != sender {
        return Err(Refused::NotFromSender {
            signer: r.receipt.receiver.to_string(),
            sender: sender.to_string(),
        });
    }
    if r.receipt.stream != served {
        return Err(Refused::WrongStream {
            got: r.receipt.stream.clone(),
            served: served.to_string(),
        });
    }
    Ok(r)
}

/// The mesh's receipt hook, backed by the coordinator's runner.
#[derive(Debug)]
pub struct ReceiptHook {
    key: Keypair,
    me: PeerId,
    handle: CoordinatorHandle,
    book: Arc<ReceiptBook>,
}

impl ReceiptHook {
    /// Signs with `key` and hands downstreams' receipts to `handle`.
    pub fn new(key: Keypair, handle: CoordinatorHandle, book: Arc<ReceiptBook>) -> Self {
        ReceiptHook {
            me: key.public().to_peer_id(),
            key,
            handle,
            book,
        }
    }
}

impl streamr_mesh::Receipts for ReceiptHook {
    fn meter(&self, stream: &str, provider: PeerId) -> Option<Box<dyn streamr_mesh::ReceiptMeter>> {
        if provider == self.me {
            return None;
        }
        Some(Box::new(UpstreamMeter {
            meter: ReceiptMeter::new(stream, provider, self.me, now_ms()),
            key: self.key.clone(),
            book: self.book.clone(),
        }))
    }

    fn receive(&self, receiver: PeerId, stream: &str, receipt: Bytes) {
        let result = check(receiver, stream, &receipt).and_then(|r| {
            self.handle
                .submit_receipt(r.clone())
                .map(|()| r)
                .map_err(|e| Refused::Invalid(e.to_string()))
        });
        match result {
            Ok(r) => {
                debug!(%receiver, stream, bytes = r.receipt.bytes, counter = r.receipt.counter, "receipt from a downstream");
                self.book.received(&r.receipt);
            }
            Err(e) => {
                self.book.refused();
                warn!(%receiver, stream, error = %e, "refused a downstream's receipt");
            }
        }
    }
}

/// One upstream's meter: the coordinator's meter, signing with the node key.
#[derive(Debug)]
struct UpstreamMeter {
    meter: ReceiptMeter,
    key: Keypair,
    book: Arc<ReceiptBook>,
}

impl streamr_mesh::ReceiptMeter for UpstreamMeter {
    fn record(&mut self, bytes: u64, frames: u64) {
        self.meter.record(bytes, frames);
    }

    fn due(&mut self) -> Option<Bytes> {
        let receipt = self.meter.issue_if_due(now_ms())?;
        let signed = receipt.sign(&self.key);
        self.book.signed(&receipt);
        Some(Bytes::from(signed.encode()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(stream: &str, provider: PeerId, receiver: PeerId, counter: u64) -> Receipt {
        Receipt {
            stream: stream.into(),
            provider,
            receiver,
            bytes: counter * 1000,
            frames: counter * 10,
            window_start_ms: 1,
            window_end_ms: 1 + counter * 10_000,
            counter,
        }
    }

    #[test]
    fn a_receipt_must_come_from_its_signer_for_the_stream_served() {
        let receiver = Keypair::generate_ed25519();
        let rid = receiver.public().to_peer_id();
        let provider = PeerId::random();
        let bytes = receipt("cam", provider, rid, 1).sign(&receiver).encode();
        assert!(check(rid, "cam", &bytes).is_ok());
        assert!(matches!(
            check(PeerId::random(), "cam", &bytes),
            Err(Refused::NotFromSender { .. })
        ));
        assert!(matches!(
            check(rid, "other", &bytes),
            Err(Refused::WrongStream { .. })
        ));
        assert!(matches!(
            check(rid, "cam", &bytes[..10]),
            Err(Refused::Malformed(_))
        ));
    }

    #[test]
    fn the_book_keeps_the_latest_receipt_of_each_series() {
        let book = ReceiptBook::default();
        let (p, r) = (PeerId::random(), PeerId::random());
        book.received(&receipt("cam", p, r, 2));
        // An older one arriving late changes nothing but the count.
        book.received(&receipt("cam", p, r, 1));
        book.received(&receipt("other", p, r, 3));
        book.refused();
        let s = book.status();
        assert_eq!(s.received, 3);
        assert_eq!(s.received_bytes, 2000 + 3000);
        assert_eq!(s.refused, 1);
        assert_eq!(s.signed, 0);
    }

    #[test]
    fn the_meter_signs_receipts_that_verify_and_skips_ourselves() {
        use streamr_mesh::ReceiptMeter as _;
        let key = Keypair::generate_ed25519();
        let me = key.public().to_peer_id();
        let book = Arc::new(ReceiptBook::default());
        let mut meter = UpstreamMeter {
            meter: ReceiptMeter::new("cam", PeerId::random(), me, now_ms() - 20_000),
            key,
            book: book.clone(),
        };
        assert!(meter.due().is_none(), "nothing received, nothing signed");
        meter.record(5000, 3);
        let bytes = meter.due().expect("due after 10 s with new bytes");
        let r = SignedReceipt::decode(&bytes).unwrap();
        r.verify().unwrap();
        assert_eq!(
            (r.receipt.bytes, r.receipt.frames, r.receipt.counter),
            (5000, 3, 1)
        );
        assert!(meter.due().is_none(), "the next one waits 10 s");
        assert_eq!(book.status().signed_bytes, 5000);
    }
}
