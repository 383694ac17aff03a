//! Bandwidth receipts: the node that RECEIVES a stream signs, every [`RECEIPT_INTERVAL_MS`], how much it got
//! from its upstream so far. The upstream (the provider) keeps the latest receipt per receiver and hands it
//! to the coordinator, which pays only for bytes a receiver signed for.
//!
//! A receipt is cumulative within a *series*: one (provider, receiver, stream, `window_start_ms`), where
//! `window_start_ms` is when the receiver began taking that stream from that provider. `counter` grows by
//! one per receipt of the series and `bytes`/`frames` never shrink, so the coordinator credits
//! `bytes - bytes already credited` and a lost receipt costs nothing: the next one covers it.
//!
//! Canonical encoding (big-endian, no JSON, no field order to agree on), [`ENCODED_LEN_BASE`] + name bytes:
//!
//! ```text
//! u8 format (=1) | u8 len, stream name | u8 len, provider peer id | u8 len, receiver peer id
//! | u64 bytes | u64 frames | u64 window_start_ms | u64 window_end_ms | u64 counter | [64] Ed25519 signature
//! ```
//!
//! The signature (by the receiver's node key) covers `"streamr-receipt/1" || everything before it`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use libp2p_identity::{Keypair, PeerId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::api::{MAX_STREAM_NAME, validate_stream_name};
use crate::auth::public_key_of;

/// How often a receiver signs a receipt for each upstream.
pub const RECEIPT_INTERVAL_MS: i64 = 10_000;
/// Encoding format byte.
const FORMAT: u8 = 1;
/// Domain separation for receipt signatures.
const DOMAIN: &[u8] = b"streamr-receipt/1";
/// Ed25519 signature length.
const SIGNATURE_LEN: usize = 64;
/// Length of an Ed25519 peer id in bytes.
const ED25519_PEER_ID_LEN: usize = 38;
/// Encoded size of a signed receipt between two Ed25519 nodes, without the stream name's bytes
/// (184; a receipt for a 16-character name is 200 bytes, 268 characters in base64 JSON).
pub const ENCODED_LEN_BASE: usize = 1 + 1 + (1 + ED25519_PEER_ID_LEN) * 2 + 5 * 8 + SIGNATURE_LEN;
/// Upper bound of an encoded receipt (longest name, longest peer ids).
pub const MAX_ENCODED_LEN: usize = 1 + (1 + MAX_STREAM_NAME) + (1 + 64) * 2 + 5 * 8 + SIGNATURE_LEN;

/// What the receiver states: "from `provider` I received `bytes` bytes in `frames` frames of `stream`
/// between `window_start_ms` and `window_end_ms`; this is my receipt number `counter` for it".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// Stream name.
    pub stream: String,
    /// The upstream node that sent the bytes (and is paid for them).
    pub provider: PeerId,
    /// The node that received them and signs.
    pub receiver: PeerId,
    /// Bytes received since `window_start_ms` (cumulative).
    pub bytes: u64,
    /// Frames received since `window_start_ms` (cumulative).
    pub frames: u64,
    /// Start of the series (Unix ms).
    pub window_start_ms: u64,
    /// Time of this receipt (Unix ms).
    pub window_end_ms: u64,
    /// 1, 2, 3... within the series.
    pub counter: u64,
}

/// The key of a receipt series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// Provider (base58).
    pub provider: String,
    /// Receiver (base58).
    pub receiver: String,
    /// Stream name.
    pub stream: String,
    /// Series start (Unix ms).
    pub window_start_ms: u64,
}

/// A receipt with the receiver's signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignedReceipt {
    /// The statement.
    pub receipt: Receipt,
    /// Ed25519 signature by `receipt.receiver`.
    pub signature: Vec<u8>,
}

/// Why a receipt could not be decoded or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The bytes end early, carry extra bytes, or a field is out of range.
    #[error("receipt is malformed: {0}")]
    Malformed(&'static str),
    /// The receiver's signature does not verify.
    #[error("receipt signature does not verify against the receiver's key")]
    BadSignature,
}

impl Receipt {
    /// The key of the series this receipt belongs to.
    pub fn series(&self) -> SeriesKey {
        SeriesKey {
            provider: self.provider.to_base58(),
            receiver: self.receiver.to_base58(),
            stream: self.stream.clone(),
            window_start_ms: self.window_start_ms,
        }
    }

    /// The canonical bytes (without signature).
    pub fn encode_unsigned(&self) -> Vec<u8> {
        let provider = self.provider.to_bytes();
        let receiver = self.receiver.to_bytes();
        let mut out = Vec::with_capacity(
            4 + self.stream.len() + provider.len() + receiver.len() + 40 + SIGNATURE_LEN,
        );
        out.push(FORMAT);
        push_short(&mut out, self.stream.as_bytes());
        push_short(&mut out, &provider);
        push_short(&mut out, &receiver);
        for v in [
            self.bytes,
            self.frames,
            self.window_start_ms,
            self.window_end_ms,
            self.counter,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out
    }

    /// Signs with the receiver's node key. The key must be `receiver`'s, or [`SignedReceipt::verify`] fails.
    pub fn sign(&self, keypair: &Keypair) -> SignedReceipt {
        let signature = keypair
            .sign(&signed_message(&self.encode_unsigned()))
            .unwrap_or_default();
        SignedReceipt {
            receipt: self.clone(),
            signature,
        }
    }
}

fn push_short(out: &mut Vec<u8>, field: &[u8]) {
    // Every field is bounded far below 256 (names by MAX_STREAM_NAME, peer ids by 64-byte multihashes).
    out.push(u8::try_from(field.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&field[..field.len().min(255)]);
}

fn signed_message(unsigned: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + unsigned.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(unsigned);
    m
}

impl SignedReceipt {
    /// The wire form (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.receipt.encode_unsigned();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes the wire form strictly (no trailing bytes). Does not verify the signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReceiptError> {
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(ReceiptError::Malformed("longer than any receipt"));
        }
        let mut r = Reader(bytes);
        if r.u8()? != FORMAT {
            return Err(ReceiptError::Malformed("unknown format"));
        }
        let stream = std::str::from_utf8(r.short()?)
            .map_err(|_| ReceiptError::Malformed("stream name is not UTF-8"))?
            .to_string();
        validate_stream_name(&stream).map_err(|_| ReceiptError::Malformed("bad stream name"))?;
        let provider = PeerId::from_bytes(r.short()?)
            .map_err(|_| ReceiptError::Malformed("bad provider peer id"))?;
        let receiver = PeerId::from_bytes(r.short()?)
            .map_err(|_| ReceiptError::Malformed("bad receiver peer id"))?;
        let receipt = Receipt {
            stream,
            provider,
            receiver,
            bytes: r.u64()?,
            frames: r.u64()?,
            window_start_ms: r.u64()?,
            window_end_ms: r.u64()?,
            counter: r.u64()?,
        };
        let signature = r.take(SIGNATURE_LEN)?.to_vec();
        if !r.0.is_empty() {
            return Err(ReceiptError::Malformed("trailing bytes"));
        }
        Ok(SignedReceipt { receipt, signature })
    }

    /// Checks the receiver's signature (the peer id carries the public key).
    pub fn verify(&self) -> Result<(), ReceiptError> {
        let key = public_key_of(&self.receipt.receiver).ok_or(ReceiptError::BadSignature)?;
        if key.verify(
            &signed_message(&self.receipt.encode_unsigned()),
            &self.signature,
        ) {
            Ok(())
        } else {
            Err(ReceiptError::BadSignature)
        }
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.encode().len()
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ReceiptError> {
        if self.0.len() < n {
            return Err(ReceiptError::Malformed("ends early"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ReceiptError> {
        Ok(self.take(1)?[0])
    }
    fn short(&mut self) -> Result<&'a [u8], ReceiptError> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn u64(&mut self) -> Result<u64, ReceiptError> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
    }
}

/// In JSON a signed receipt is the base64 of its wire form.
impl Serialize for SignedReceipt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(self.encode()))
    }
}

impl<'de> Deserialize<'de> for SignedReceipt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let text = String::deserialize(d)?;
        if text.len() > MAX_ENCODED_LEN * 4 / 3 + 4 {
            return Err(D::Error::custom("receipt longer than any receipt"));
        }
        let bytes = BASE64
            .decode(text)
            .map_err(|_| D::Error::custom("receipt is not base64"))?;
        SignedReceipt::decode(&bytes).map_err(D::Error::custom)
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}->{} {} @{}",
            self.provider, self.receiver, self.stream, self.window_start_ms
        )
    }
}

/// The receiving node's side, sans I/O: counts what one upstream delivered for one stream and issues the
/// next receipt when it is due. One per (stream, upstream); a new upstream session starts a new meter.
#[derive(Debug, Clone)]
pub struct ReceiptMeter {
    stream: String,
    provider: PeerId,
    receiver: PeerId,
    window_start_ms: u64,
    bytes: u64,
    frames: u64,
    counter: u64,
    last_issued_ms: i64,
    last_issued_bytes: u64,
}

impl ReceiptMeter {
    /// Starts a series at `now_ms`.
    pub fn new(stream: &str, provider: PeerId, receiver: PeerId, now_ms: i64) -> Self {
        ReceiptMeter {
            stream: stream.to_string(),
            provider,
            receiver,
            window_start_ms: u64::try_from(now_ms).unwrap_or(0),
            bytes: 0,
            frames: 0,
            counter: 0,
            last_issued_ms: now_ms,
            last_issued_bytes: 0,
        }
    }

    /// Counts bytes and frames received from the provider.
    pub fn record(&mut self, bytes: u64, frames: u64) {
        self.bytes = self.bytes.saturating_add(bytes);
        self.frames = self.frames.saturating_add(frames);
    }

    /// The next receipt, when [`RECEIPT_INTERVAL_MS`] passed since the last one and new bytes arrived.
    pub fn issue_if_due(&mut self, now_ms: i64) -> Option<Receipt> {
        if now_ms - self.last_issued_ms < RECEIPT_INTERVAL_MS
            || self.bytes == self.last_issued_bytes
        {
            return None;
        }
        Some(self.issue(now_ms))
    }

    /// The next receipt now (e.g. when the upstream session ends).
    pub fn issue(&mut self, now_ms: i64) -> Receipt {
        self.counter += 1;
        self.last_issued_ms = now_ms;
        self.last_issued_bytes = self.bytes;
        Receipt {
            stream: self.stream.clone(),
            provider: self.provider,
            receiver: self.receiver,
            bytes: self.bytes,
            frames: self.frames,
            window_start_ms: self.window_start_ms,
            window_end_ms: u64::try_from(now_ms).unwrap_or(0).max(self.window_start_ms),
            counter: self.counter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(provider: PeerId, receiver: PeerId) -> Receipt {
        Receipt {
            stream: "alice_hd.1".into(),
            provider,
            receiver,
            bytes: 3_125_000,
            frames: 300,
            window_start_ms: 1_700_000_000_000,
            window_end_ms: 1_700_000_010_000,
            counter: 1,
        }
    }

    #[test]
    fn sign_encode_decode_verify_round_trip() {
        let receiver = Keypair::generate_ed25519();
        let provider = Keypair::generate_ed25519().public().to_peer_id();
        let r = receipt(provider, receiver.public().to_peer_id());
        let signed = r.sign(&receiver);
        signed.verify().unwrap();
        let bytes = signed.encode();
        assert_eq!(bytes.len(), ENCODED_LEN_BASE + r.stream.len());
        assert_eq!(ENCODED_LEN_BASE, 184);
        let back = SignedReceipt::decode(&bytes).unwrap();
        assert_eq!(back, signed);
        back.verify().unwrap();
        let json = serde_json::to_string(&signed).unwrap();
        let from_json: SignedReceipt = serde_json::from_str(&json).unwrap();
        assert_eq!(from_json, signed);
    }

    #[test]
    fn encoding_is_fixed_by_the_fields() {
        // Same fields, same bytes, whoever builds them: nothing depends on map or JSON order.
        let receiver = Keypair::ed25519_from_bytes([7u8; 32]).unwrap();
        let provider = Keypair::ed25519_from_bytes([9u8; 32]).unwrap();
        let r = receipt(
            provider.public().to_peer_id(),
            receiver.public().to_peer_id(),
        );
        let a = r.encode_unsigned();
        let b = r.clone().encode_unsigned();
        assert_eq!(a, b);
        assert_eq!(a[0], FORMAT);
        assert_eq!(a[1] as usize, r.stream.len());
        assert_eq!(&a[a.len() - 8..], &1u64.to_be_bytes());
        // Ed25519 signatures are deterministic: the whole wire form is reproducible.
        assert_eq!(r.sign(&receiver).encode(), r.sign(&receiver).encode());
    }

    #[test]
    fn tampering_or_the_wrong_signer_fails_verification() {
        let receiver = Keypair::generate_ed25519();
        let provider = Keypair::generate_ed25519();
        let r = receipt(
            provider.public().to_peer_id(),
            receiver.public().to_peer_id(),
        );
        let mut signed = r.sign(&receiver);
        signed.receipt.bytes += 1;
        assert_eq!(signed.verify(), Err(ReceiptError::BadSignature));
        // The provider signing its own receipt in the receiver's name.
        let forged = r.sign(&provider);
        assert_eq!(forged.verify(), Err(ReceiptError::BadSignature));
    }

    #[test]
    fn decode_refuses_truncated_and_padded_input() {
        let receiver = Keypair::generate_ed25519();
        let r = receipt(
            Keypair::generate_ed25519().public().to_peer_id(),
            receiver.public().to_peer_id(),
        );
        let bytes = r.sign(&receiver).encode();
        for n in 0..bytes.len() {
            assert!(
                SignedReceipt::decode(&bytes[..n]).is_err(),
                "prefix {n} decoded"
            );
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(SignedReceipt::decode(&padded).is_err());
        let mut bad_name = bytes;
        bad_name[2] = b'/';
        assert!(SignedReceipt::decode(&bad_name).is_err());
    }

    #[test]
    fn meter_issues_growing_receipts_every_interval() {
        let provider = Keypair::generate_ed25519().public().to_peer_id();
        let receiver = Keypair::generate_ed25519().public().to_peer_id();
        let mut m = ReceiptMeter::new("cam", provider, receiver, 1_000);
        m.record(500, 5);
        assert!(m.issue_if_due(5_000).is_none());
        let r1 = m.issue_if_due(11_000).unwrap();
        assert_eq!((r1.bytes, r1.frames, r1.counter), (500, 5, 1));
        assert!(m.issue_if_due(30_000).is_none(), "no new bytes, no receipt");
        m.record(100, 1);
        let r2 = m.issue_if_due(30_000).unwrap();
        assert_eq!((r2.bytes, r2.counter, r2.window_start_ms), (600, 2, 1_000));
        assert_eq!(r2.series(), r1.series());
    }
}
