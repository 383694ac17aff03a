//! `/streamr/media/3`: the protocol between a subscriber and a provider of a stream, as plain code with no
//! sockets. Every message is `u32 length | u8 type | body`; lengths are checked against hard limits before
//! anything is buffered, so a peer that claims a 4 GiB frame is refused at once, and a provider, to whom
//! subscribers never send frames, accepts only small control messages.
//!
//! Flow: the subscriber sends `Subscribe`; the provider answers `Accept` (with the origin's signed
//! announcement, its hop count and its path from the origin), `Redirect` (full: other providers to try) or
//! `Reject`; after `Accept` the provider sends `Frame`s (and `Path` when its own upstream changes, `End` when
//! the stream ends) while the subscriber sends `Ack`s, which bound the bytes in flight, and now and then a
//! `Receipt`: its signed statement of what it received, which the mesh carries as opaque bytes (see
//! [`crate::receipts`]).
//!
//! Version 2 (version 1 carried frames unauthenticated): every frame carries the publish it belongs to (its
//! announcement's start time) and its origin's signature ([`crate::auth`]); relays forward those bytes as
//! they received them. Version 3: the origin signs batches of frames rather than each one: the first frame
//! of a batch carries its seal (the digests of the batch's frames and one signature), the others carry
//! none; relays forward those bytes as
//! they received them. `Path` carries the announcement, so a restarted origin's new publish reaches every
//! node below a relay without a new subscription.

use crate::announce::Announcement;
use crate::auth::{DIGEST_LEN, MAX_SEAL_FRAMES, SIGNATURE_LEN, Seal};
use crate::codec::{Reader, WireError, Writer};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use streamr_media::{EncodingSlot, Frame, FrameKind};

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/streamr/media/3");

/// Largest frame payload accepted (RTMP's own limit is 16 MiB; real keyframes are far smaller).
pub const MAX_FRAME: usize = 8 << 20;
/// Largest control message accepted.
pub const MAX_CONTROL: usize = 64 << 10;
/// Largest receipt carried (a coordinator receipt between Ed25519 nodes is 184 bytes plus the stream name).
pub const MAX_RECEIPT: usize = 1024;

const T_SUBSCRIBE: u8 = 1;
const T_ACCEPT: u8 = 2;
const T_REDIRECT: u8 = 3;
const T_REJECT: u8 = 4;
const T_FRAME: u8 = 5;
const T_PATH: u8 = 6;
const T_ACK: u8 = 7;
const T_END: u8 = 8;
const T_WAITING: u8 = 9;
// Types 9-15 are left for the protocol's own growth.
const T_RECEIPT: u8 = 16;

/// Bytes of a frame message before its payload: length, type, kind, flags, timestamp, seq, publish (the
/// announcement's start time); a batch's first frame then carries its seal (see [`SEAL_MAX`]).
pub const FRAME_HEADER: usize = 4 + 1 + 1 + 1 + 4 + 8 + 8;
/// Most bytes of a seal in a frame message: count, digests, signature.
pub const SEAL_MAX: usize = 1 + MAX_SEAL_FRAMES * DIGEST_LEN + SIGNATURE_LEN;
/// The flag of a frame message that carries a seal.
const FLAG_SEALED: u8 = 4;
/// Where the publish field starts in an encoded frame message.
const EPOCH_AT: usize = 4 + 1 + 1 + 1 + 4 + 8;
/// A decoder never reserves more than this ahead of the bytes a peer actually sent (then doubles with what
/// arrives), so a peer that claims a big frame and sends it slowly does not make us hold its claim.
const RESERVE_AHEAD: usize = 64 << 10;

/// A provider that can be tried instead (in `Redirect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderHint {
    /// The provider.
    pub peer: PeerId,
    /// Where it can be dialed.
    pub addrs: Vec<Multiaddr>,
}

/// One message of `/streamr/media/3`.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Subscriber -> provider: send me this stream.
    Subscribe {
        /// Stream name.
        name: String,
        /// Only this origin's stream (None: the provider's).
        origin: Option<PeerId>,
        /// The subscriber already has frames up to this sequence number (0: none); informational.
        have_seq: u64,
    },
    /// Provider -> subscriber: accepted.
    Accept {
        /// The origin's signed announcement.
        announcement: Announcement,
        /// The provider's distance from the origin (0 = it is the origin).
        hops: u8,
        /// Peers from the origin to the provider, inclusive.
        path: Vec<PeerId>,
        /// Nodes above the provider that hold the stream (its upstream, and theirs), with addresses: where
        /// to go if the provider dies.
        fallbacks: Vec<ProviderHint>,
    },
    /// Provider -> subscriber: full; try these.
    Redirect {
        /// Why.
        reason: String,
        /// Other providers of the stream.
        providers: Vec<ProviderHint>,
    },
    /// Provider -> subscriber: refused.
    Reject {
        /// Why.
        reason: String,
    },
    /// Provider -> subscriber: media, as its origin signed it.
    Frame(SignedFrame),
    /// Provider -> subscriber: the provider's own upstream changed (another path, or the origin published
    /// again: a newer announcement).
    Path {
        /// The origin's announcement the frames that follow belong to.
        announcement: Announcement,
        /// New distance from the origin.
        hops: u8,
        /// New path from the origin to the provider.
        path: Vec<PeerId>,
    },
    /// Subscriber -> provider: received up to here.
    Ack {
        /// Last sequence number received.
        seq: u64,
        /// Total frame bytes received on this stream.
        bytes: u64,
    },
    /// Provider -> subscriber: a keepalive while the provider has no frames to send (its own upstream is
    /// being replaced, or the publisher paused): it is alive, so the subscriber should not look elsewhere.
    Waiting,
    /// Provider -> subscriber: the stream ended.
    End {
        /// Why.
        reason: String,
    },
    /// Subscriber -> provider: a signed receipt for what it received (opaque here, 1 to [`MAX_RECEIPT`]
    /// bytes).
    Receipt(Bytes),
}

/// A frame as it travels: the frame, the publish it belongs to and, on a batch's first frame, the batch's
/// seal.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedFrame {
    /// The frame.
    pub frame: Frame,
    /// The start time of the announcement (publish) the frame belongs to.
    pub epoch: u64,
    /// The origin's seal of the batch this frame opens ([`crate::auth`]); None on the batch's other frames.
    pub seal: Option<Seal>,
}

impl SignedFrame {
    /// Bytes of its message on the wire, as the provider counts them.
    pub fn wire_len(&self) -> usize {
        FRAME_HEADER + self.seal.as_ref().map_or(0, seal_len) + self.frame.len()
    }
}

fn seal_len(seal: &Seal) -> usize {
    1 + seal.digests.len() * DIGEST_LEN + SIGNATURE_LEN
}

fn flags(frame: &Frame, sealed: bool) -> u8 {
    (frame.is_keyframe() as u8)
        | ((frame.is_sequence_header() as u8) << 1)
        | if sealed { FLAG_SEALED } else { 0 }
}

/// Encodes a frame message (what [`streamr_media::EncodingSlot::Wire`] caches): at the origin, with the
/// seal of the batch it opens, if it does; a relay forwards the bytes it received instead.
pub fn encode_frame(frame: &Frame, epoch: u64, seal: Option<&Seal>) -> Bytes {
    let sealed = seal.map_or(0, seal_len);
    let mut b = BytesMut::with_capacity(FRAME_HEADER + sealed + frame.len());
    b.put_u32((FRAME_HEADER - 4 + sealed + frame.len()) as u32);
    b.put_u8(T_FRAME);
    b.put_u8(frame.kind().code());
    b.put_u8(flags(frame, seal.is_some()));
    b.put_u32(frame.timestamp());
    b.put_u64(frame.seq());
    b.put_u64(epoch);
    if let Some(seal) = seal {
        b.put_u8(seal.digests.len() as u8);
        for d in &seal.digests {
            b.put_slice(d);
        }
        b.put_slice(&seal.signature);
    }
    b.put_slice(frame.payload());
    b.freeze()
}

/// The publish (epoch) of an encoded frame message, None for anything else.
pub fn frame_epoch(encoded: &[u8]) -> Option<u64> {
    if encoded.len() < FRAME_HEADER || encoded[4] != T_FRAME {
        return None;
    }
    Some(u64::from_be_bytes(
        encoded[EPOCH_AT..EPOCH_AT + 8].try_into().ok()?,
    ))
}

/// Whether an encoded frame message opens a batch (carries its seal); false for anything else.
pub fn opens_batch(encoded: &[u8]) -> bool {
    encoded.len() >= FRAME_HEADER && encoded[4] == T_FRAME && encoded[6] & FLAG_SEALED != 0
}

/// Encodes any message.
pub fn encode(msg: &Message) -> Bytes {
    if let Message::Frame(f) = msg {
        return encode_frame(&f.frame, f.epoch, f.seal.as_ref());
    }
    let mut w = Writer::with_capacity(64);
    w.u32(0); // length, patched below
    match msg {
        Message::Subscribe {
            name,
            origin,
            have_seq,
        } => {
            w.u8(T_SUBSCRIBE);
            w.str(name);
            match origin {
                Some(p) => {
                    w.u8(1);
                    w.peer(p);
                }
                None => w.u8(0),
            }
            w.u64(*have_seq);
        }
        Message::Accept {
            announcement,
            hops,
            path,
            fallbacks,
        } => {
            w.u8(T_ACCEPT);
            announcement.write(&mut w);
            w.u8(*hops);
            w.peers(path);
            write_hints(&mut w, fallbacks);
        }
        Message::Redirect { reason, providers } => {
            w.u8(T_REDIRECT);
            w.str(reason);
            write_hints(&mut w, providers);
        }
        Message::Reject { reason } => {
            w.u8(T_REJECT);
            w.str(reason);
        }
        Message::Path {
            announcement,
            hops,
            path,
        } => {
            w.u8(T_PATH);
            announcement.write(&mut w);
            w.u8(*hops);
            w.peers(path);
        }
        Message::Ack { seq, bytes } => {
            w.u8(T_ACK);
            w.u64(*seq);
            w.u64(*bytes);
        }
        Message::Waiting => w.u8(T_WAITING),
        Message::End { reason } => {
            w.u8(T_END);
            w.str(reason);
        }
        Message::Receipt(receipt) => {
            w.u8(T_RECEIPT);
            // Callers never build a larger one; cut rather than send what the peer would refuse.
            w.bytes(&receipt[..receipt.len().min(MAX_RECEIPT)]);
        }
        Message::Frame(_) => unreachable!("handled above"),
    }
    let len = (w.len() - 4) as u32;
    w.buf_mut()[..4].copy_from_slice(&len.to_be_bytes());
    w.finish()
}

/// Decodes a stream of messages from bytes as they arrive. Implements tokio-util's `Decoder`.
#[derive(Debug)]
pub struct Decoder {
    /// Whether frames are accepted: only a subscriber receives them.
    frames: bool,
}

impl Decoder {
    /// What a subscriber reads from its provider: control messages and frames up to [`MAX_FRAME`].
    pub fn subscriber() -> Self {
        Decoder { frames: true }
    }

    /// What a provider reads from a subscriber: control messages only (subscribers never send frames), so a
    /// hostile subscriber never makes the provider reserve room for one.
    pub fn provider() -> Self {
        Decoder { frames: false }
    }
}

impl tokio_util::codec::Decoder for Decoder {
    type Item = Message;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        if src.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        let ty = src[4];
        if ty == T_FRAME && !self.frames {
            return Err(WireError::Invalid("frame sent to a provider").into());
        }
        let max = if ty == T_FRAME {
            MAX_FRAME + FRAME_HEADER + SEAL_MAX
        } else {
            MAX_CONTROL
        };
        if len > max {
            return Err(WireError::TooLong {
                what: "message",
                len: len as u64,
                max: max as u64,
            }
            .into());
        }
        if len == 0 {
            return Err(WireError::Invalid("empty message").into());
        }
        if src.len() < 4 + len {
            // Room for what is missing, but never more ahead of what arrived than it holds already (the
            // buffer doubles while a big frame really arrives).
            let missing = 4 + len - src.len();
            src.reserve(missing.min(src.len().max(RESERVE_AHEAD)));
            return Ok(None);
        }
        if ty == T_FRAME {
            let raw = src.split_to(4 + len).freeze();
            return Ok(Some(decode_frame(raw)?));
        }
        src.advance(5);
        let body = src.split_to(len - 1).freeze();
        Ok(Some(decode_body(ty, body)?))
    }
}

/// A frame message, whole (length and type included): the frame keeps these bytes as its wire encoding, so
/// a relay forwards exactly what the origin signed.
fn decode_frame(raw: Bytes) -> Result<Message, WireError> {
    let mut r = Reader::new(&raw[5..]);
    let kind = FrameKind::from_code(r.u8()?).ok_or(WireError::Invalid("frame kind"))?;
    // Keyframe and header flags are recomputed from the payload: a peer cannot mislabel keyframes.
    let flags = r.u8()?;
    let ts = r.u32()?;
    let seq = r.u64()?;
    let epoch = r.u64()?;
    let seal = if flags & FLAG_SEALED != 0 {
        let count = usize::from(r.u8()?);
        if count == 0 || count > MAX_SEAL_FRAMES {
            return Err(WireError::Invalid("seal frame count"));
        }
        let digests = (0..count)
            .map(|_| r.fixed(DIGEST_LEN).map(|d| d.try_into().expect("16 bytes")))
            .collect::<Result<Vec<_>, _>>()?;
        let signature = r
            .fixed(SIGNATURE_LEN)?
            .try_into()
            .map_err(|_| WireError::Truncated)?;
        Some(Seal {
            first_seq: seq,
            digests,
            signature,
        })
    } else {
        None
    };
    let payload = raw.slice(raw.len() - r.rest().len()..);
    if payload.len() > MAX_FRAME {
        return Err(WireError::TooLong {
            what: "frame",
            len: payload.len() as u64,
            max: MAX_FRAME as u64,
        });
    }
    let frame = Frame::new(kind, ts, seq, payload);
    frame.set_encoded(EncodingSlot::Wire, raw);
    Ok(Message::Frame(SignedFrame { frame, epoch, seal }))
}

fn decode_body(ty: u8, body: Bytes) -> Result<Message, WireError> {
    let mut r = Reader::new(&body);
    let msg = match ty {
        T_SUBSCRIBE => {
            let name = r.str()?;
            let origin = match r.u8()? {
                0 => None,
                1 => Some(r.peer()?),
                _ => return Err(WireError::Invalid("origin flag")),
            };
            Message::Subscribe {
                name,
                origin,
                have_seq: r.u64()?,
            }
        }
        T_ACCEPT => Message::Accept {
            announcement: Announcement::read(&mut r)?,
            hops: r.u8()?,
            path: r.peers()?,
            fallbacks: read_hints(&mut r)?,
        },
        T_REDIRECT => Message::Redirect {
            reason: r.str()?,
            providers: read_hints(&mut r)?,
        },
        T_REJECT => Message::Reject { reason: r.str()? },
        T_PATH => Message::Path {
            announcement: Announcement::read(&mut r)?,
            hops: r.u8()?,
            path: r.peers()?,
        },
        T_ACK => Message::Ack {
            seq: r.u64()?,
            bytes: r.u64()?,
        },
        T_END => Message::End { reason: r.str()? },
        T_WAITING => Message::Waiting,
        T_RECEIPT => {
            let receipt = r.bytes()?;
            if receipt.len() > MAX_RECEIPT {
                return Err(WireError::TooLong {
                    what: "receipt",
                    len: receipt.len() as u64,
                    max: MAX_RECEIPT as u64,
                });
            }
            if receipt.is_empty() {
                return Err(WireError::Invalid("empty receipt"));
            }
            Message::Receipt(Bytes::copy_from_slice(receipt))
        }
        _ => return Err(WireError::Invalid("message type")),
    };
    r.end()?;
    Ok(msg)
}

/// Most provider hints in one message.
const MAX_HINTS: usize = 32;

fn write_hints(w: &mut Writer, hints: &[ProviderHint]) {
    let hints = &hints[..hints.len().min(MAX_HINTS)];
    w.u8(hints.len() as u8);
    for h in hints {
        w.peer(&h.peer);
        w.addrs(&h.addrs);
    }
}

fn read_hints(r: &mut Reader<'_>) -> Result<Vec<ProviderHint>, WireError> {
    let n = r.u8()? as usize;
    if n > MAX_HINTS {
        return Err(WireError::TooLong {
            what: "provider list",
            len: n as u64,
            max: MAX_HINTS as u64,
        });
    }
    (0..n)
        .map(|_| {
            Ok(ProviderHint {
                peer: r.peer()?,
                addrs: r.addrs()?,
            })
        })
        .collect()
}

/// A decoding failure: bad bytes or a broken stream.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The peer sent something invalid.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// The stream failed.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes messages for `FramedWrite`.
impl tokio_util::codec::Encoder<Bytes> for Decoder {
    type Error = DecodeError;
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), DecodeError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{FrameSigner, FrameVerifier};
    use libp2p::identity::Keypair;
    use proptest::prelude::*;
    use tokio_util::codec::Decoder as _;

    fn decode_all_with(mut d: Decoder, bytes: &[u8]) -> Result<Vec<Message>, DecodeError> {
        let mut src = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = d.decode(&mut src)? {
            out.push(m);
        }
        Ok(out)
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, DecodeError> {
        decode_all_with(Decoder::subscriber(), bytes)
    }

    /// A frame sealed alone (a batch of one).
    fn signed(key: &Keypair, ann: &Announcement, frame: Frame) -> SignedFrame {
        let seal = FrameSigner::new(key, ann)
            .unwrap()
            .seal(std::slice::from_ref(&frame));
        SignedFrame {
            frame,
            epoch: ann.started_ms,
            seal: Some(seal),
        }
    }

    fn samples() -> Vec<Message> {
        let key = Keypair::generate_ed25519();
        let me = key.public().to_peer_id();
        let ann = Announcement::sign(&key, "alice", 7).unwrap();
        vec![
            Message::Subscribe {
                name: "alice".into(),
                origin: Some(me),
                have_seq: 9,
            },
            Message::Subscribe {
                name: "b".into(),
                origin: None,
                have_seq: 0,
            },
            Message::Accept {
                announcement: ann.clone(),
                hops: 2,
                path: vec![me, PeerId::random()],
                fallbacks: vec![ProviderHint {
                    peer: me,
                    addrs: vec!["/ip4/198.51.100.1/tcp/4001".parse().unwrap()],
                }],
            },
            Message::Redirect {
                reason: "full".into(),
                providers: vec![ProviderHint {
                    peer: PeerId::random(),
                    addrs: vec!["/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap()],
                }],
            },
            Message::Reject {
                reason: "no".into(),
            },
            Message::Frame(signed(
                &key,
                &ann,
                Frame::new(
                    FrameKind::Video,
                    33,
                    5,
                    Bytes::from_static(&[0x17, 1, 0, 0, 0, 1]),
                ),
            )),
            Message::Path {
                announcement: ann,
                hops: 1,
                path: vec![me],
            },
            Message::Ack { seq: 5, bytes: 100 },
            Message::Waiting,
            Message::End {
                reason: "bye".into(),
            },
            Message::Receipt(Bytes::from_static(&[1; 200])),
        ]
    }

    #[test]
    fn every_message_round_trips_even_byte_by_byte() {
        let msgs = samples();
        let mut all = Vec::new();
        for m in &msgs {
            all.extend_from_slice(&encode(m));
        }
        assert_eq!(decode_all(&all).unwrap(), msgs);
        // Delivered one byte at a time.
        let mut d = Decoder::subscriber();
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        for b in &all {
            src.put_u8(*b);
            while let Some(m) = d.decode(&mut src).unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, msgs);
    }

    #[test]
    fn a_seal_must_cover_one_to_64_frames_and_be_whole() {
        let key = Keypair::generate_ed25519();
        let ann = Announcement::sign(&key, "alice", 7).unwrap();
        let f = Frame::new(FrameKind::Audio, 21, 3, Bytes::from_static(&[0xaf, 1, 9]));
        let good = encode(&Message::Frame(signed(&key, &ann, f)));
        // The count byte follows the header; a count of 0 or above the limit is refused.
        for count in [0u8, MAX_SEAL_FRAMES as u8 + 1, 255] {
            let mut b = good.to_vec();
            b[FRAME_HEADER] = count;
            assert!(
                matches!(
                    decode_all(&b),
                    Err(DecodeError::Wire(WireError::Invalid("seal frame count")))
                ),
                "count {count}"
            );
        }
        // A count that claims more digests than the message holds: truncated, never a panic.
        let mut b = good.to_vec();
        b[FRAME_HEADER] = MAX_SEAL_FRAMES as u8;
        assert!(decode_all(&b).is_err());
    }

    #[test]
    fn a_received_frame_keeps_the_bytes_it_came_in_and_they_still_verify() {
        let key = Keypair::generate_ed25519();
        let ann = Announcement::sign(&key, "alice", 7).unwrap();
        let f = Frame::new(FrameKind::Audio, 21, 3, Bytes::from_static(&[0xaf, 1, 9]));
        let signed = signed(&key, &ann, f);
        let sent = encode(&Message::Frame(signed.clone()));
        assert_eq!(frame_epoch(&sent), Some(7));
        assert_eq!(sent.len(), signed.wire_len());
        let Message::Frame(got) = decode_all(&sent).unwrap().remove(0) else {
            panic!("a frame")
        };
        assert_eq!(
            FrameVerifier::new(&ann)
                .unwrap()
                .check(&got.frame, got.seal.clone()),
            crate::auth::Check::Authentic
        );
        let forwarded = got.frame.encoded(EncodingSlot::Wire, |_| Bytes::new());
        assert_eq!(forwarded, sent, "a relay forwards exactly what it received");
        assert_eq!(
            frame_epoch(&encode(&Message::Ack { seq: 1, bytes: 1 })),
            None
        );
        // It opens its batch (it carries the seal); the batch's other frames and other messages do not.
        assert!(opens_batch(&forwarded));
        let unsealed = SignedFrame {
            seal: None,
            ..signed
        };
        assert!(!opens_batch(&encode(&Message::Frame(unsealed))));
        assert!(!opens_batch(&encode(&Message::Ack { seq: 1, bytes: 1 })));
    }

    #[test]
    fn frame_flags_come_from_the_payload_not_the_peer() {
        let key = Keypair::generate_ed25519();
        let ann = Announcement::sign(&key, "alice", 7).unwrap();
        let f = Frame::new(
            FrameKind::Video,
            1,
            1,
            Bytes::from_static(&[0x27, 1, 0, 0, 0]),
        );
        let mut b = encode(&Message::Frame(signed(&key, &ann, f))).to_vec();
        b[6] = 0xff; // claim keyframe + header
        match &decode_all(&b).unwrap()[0] {
            Message::Frame(g) => assert!(!g.frame.is_keyframe() && !g.frame.is_sequence_header()),
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn a_4_gib_frame_is_refused_before_buffering() {
        let mut b = vec![0xff, 0xff, 0xff, 0xff, T_FRAME];
        b.extend_from_slice(&[0; 16]);
        let e = decode_all(&b).unwrap_err();
        assert!(
            matches!(e, DecodeError::Wire(WireError::TooLong { .. })),
            "{e}"
        );
        // A control message may not be big either.
        let mut b = ((MAX_CONTROL + 1) as u32).to_be_bytes().to_vec();
        b.push(T_SUBSCRIBE);
        assert!(decode_all(&b).is_err());
    }

    #[test]
    fn receipts_are_bounded_and_never_empty() {
        let too_long = Message::Receipt(Bytes::from(vec![7u8; MAX_RECEIPT + 1]));
        // The encoder cuts; a peer that sends more is refused.
        match &decode_all(&encode(&too_long)).unwrap()[..] {
            [Message::Receipt(r)] => assert_eq!(r.len(), MAX_RECEIPT),
            m => panic!("{m:?}"),
        }
        let mut b = Vec::new();
        b.extend_from_slice(&((1 + 2 + MAX_RECEIPT + 1) as u32).to_be_bytes());
        b.push(T_RECEIPT);
        b.extend_from_slice(&((MAX_RECEIPT + 1) as u16).to_be_bytes());
        b.extend_from_slice(&vec![7u8; MAX_RECEIPT + 1]);
        assert!(matches!(
            decode_all(&b),
            Err(DecodeError::Wire(WireError::TooLong { .. }))
        ));
        assert!(decode_all(&[0, 0, 0, 3, T_RECEIPT, 0, 0]).is_err());
    }

    #[test]
    fn a_provider_refuses_frames_and_nobody_reserves_what_was_only_claimed() {
        // A subscriber sends a frame header: refused before anything is buffered.
        let mut b = (1000u32).to_be_bytes().to_vec();
        b.push(T_FRAME);
        let e = decode_all_with(Decoder::provider(), &b).unwrap_err();
        assert!(matches!(e, DecodeError::Wire(WireError::Invalid(_))), "{e}");
        // A peer that claims an 8 MiB frame and sends 5 bytes: we hold far less than its claim.
        let mut src = BytesMut::from(&((MAX_FRAME + FRAME_HEADER - 4) as u32).to_be_bytes()[..]);
        src.put_u8(T_FRAME);
        assert!(Decoder::subscriber().decode(&mut src).unwrap().is_none());
        assert!(src.capacity() <= 2 * RESERVE_AHEAD, "{}", src.capacity());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &[0, 0, 0, 1, 99][..],
            &[0, 0, 0, 0, 1],
            &[0, 0, 0, 3, T_SUBSCRIBE, 0, 200],
            &[0, 0, 0, 2, T_ACK, 1],
            &[
                0, 0, 0, 20, T_FRAME, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ] {
            assert!(decode_all(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_all(&bytes);
            let _ = decode_all_with(Decoder::provider(), &bytes);
        }

        #[test]
        fn decoder_never_panics_on_mutated_valid_messages(idx in 0usize..10, pos in 0usize..400, val in any::<u8>()) {
            let msgs = samples();
            let mut b = encode(&msgs[idx % msgs.len()]).to_vec();
            let p = pos % b.len();
            b[p] = val;
            let _ = decode_all(&b);
        }

        #[test]
        fn frames_round_trip(kind in 0usize..3, ts in any::<u32>(), seq in any::<u64>(), epoch in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..5000), sealed in 0usize..=MAX_SEAL_FRAMES) {
            let kind = [FrameKind::Audio, FrameKind::Video, FrameKind::Data][kind];
            let f = Frame::new(kind, ts, seq, Bytes::from(payload));
            // 0: a frame inside a batch (no seal); n: a batch's first frame, sealing n frames.
            let seal = (sealed > 0).then(|| Seal {
                first_seq: seq,
                digests: (0..sealed).map(|i| [i as u8; DIGEST_LEN]).collect(),
                signature: [7; SIGNATURE_LEN],
            });
            let bytes = encode_frame(&f, epoch, seal.as_ref());
            let out = decode_all(&bytes).unwrap();
            match &out[..] {
                [Message::Frame(g)] => {
                    prop_assert_eq!(g.frame.kind(), f.kind());
                    prop_assert_eq!(g.frame.timestamp(), ts);
                    prop_assert_eq!(g.frame.seq(), seq);
                    prop_assert_eq!(g.frame.payload(), f.payload());
                    prop_assert_eq!(g.frame.is_keyframe(), f.is_keyframe());
                    prop_assert_eq!(g.epoch, epoch);
                    prop_assert_eq!(&g.seal, &seal);
                    prop_assert_eq!(g.wire_len(), bytes.len());
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
