//! Media authentication: the origin seals the frames it sends into the mesh, binding each one to its stream
//! and publish (the [`Announcement`]), its position (sequence number), its time and its bytes. Relays pass
//! the origin's bytes on unchanged, and every receiver checks every frame before it enters its hub. A relay
//! can therefore drop frames (as a congested one must) but not inject, alter, replace or reorder them: a
//! frame that does not check ends the subscription, and the hub never sees it.
//!
//! One signature per frame made every hop pay an Ed25519 check per frame (30-40 us each, about 80 frames a
//! second). Frames are therefore sealed in batches: the origin holds a few tens of milliseconds of frames,
//! hashes each one (SHA-256, cut to 16 bytes), and signs the list of digests once. The seal travels inside
//! the batch's first frame, so every hop checks one signature per batch and one hash per frame, and still
//! checks each frame as it arrives, before passing it on: no hop holds a frame to check it. A batch never
//! spans a keyframe, and codec headers and metadata are sealed alone, so wherever a relay's hub starts a
//! subscriber (the cached headers, then a keyframe) or skips a slow one ahead (to a keyframe), the first
//! frame it sends carries its batch's seal. A frame whose batch's seal a receiver never got cannot be
//! checked and is dropped, as a relay could have dropped it.
//!
//! Plain code: the sessions and the origin's sealer call it.

use crate::announce::{AnnounceError, Announcement};
use libp2p::identity::{Keypair, ed25519};
use sha2::{Digest, Sha256};
use streamr_media::Frame;

/// Bytes of a seal's signature (Ed25519).
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of a frame digest in a seal: SHA-256 cut to 128 bits, which leaves finding a second frame with
/// the same digest out of reach (2^128 work).
pub const DIGEST_LEN: usize = 16;
/// Most frames one seal covers (a count is one byte on the wire).
pub const MAX_SEAL_FRAMES: usize = 64;
/// Domain separation for frame digests.
const FRAME_CONTEXT: &[u8] = b"streamr-frame/2";
/// Domain separation for seals.
const SEAL_CONTEXT: &[u8] = b"streamr-seal/1";
/// Domain separation for publish ids.
const PUBLISH_CONTEXT: &[u8] = b"streamr-publish/1";

/// The digest of one frame in a seal.
pub type FrameDigest = [u8; DIGEST_LEN];

/// One publish of one stream (origin, name and start time), in the form seals bind frames to: a frame of
/// one publish cannot be replayed into another, even by the same origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublishId([u8; 32]);

impl PublishId {
    /// The publish an announcement announces.
    pub fn of(announcement: &Announcement) -> Self {
        let mut h = Sha256::new();
        h.update(PUBLISH_CONTEXT);
        h.update((announcement.id.name.len() as u32).to_be_bytes());
        h.update(announcement.id.name.as_bytes());
        h.update(announcement.id.origin.to_bytes());
        h.update(announcement.started_ms.to_be_bytes());
        PublishId(h.finalize().into())
    }

    /// A number for the hub's continuity: the same publish through any path gives the same number.
    pub fn session(&self) -> u64 {
        u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"))
    }
}

/// The digest of `frame` in `publish`: its kind, time, position and payload.
pub fn frame_digest(publish: &PublishId, frame: &Frame) -> FrameDigest {
    let mut h = Sha256::new();
    h.update(FRAME_CONTEXT);
    h.update(publish.0);
    h.update([frame.kind().code()]);
    h.update(frame.timestamp().to_be_bytes());
    h.update(frame.seq().to_be_bytes());
    h.update(frame.payload());
    let full: [u8; 32] = h.finalize().into();
    full[..DIGEST_LEN].try_into().expect("16 of 32 bytes")
}

/// The origin's signed list of the digests of consecutive frames, `first_seq` onwards. It travels in the
/// frame numbered `first_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    /// Sequence number of the first frame covered (the frame that carries the seal).
    pub first_seq: u64,
    /// One digest per frame, in sequence order: 1 to [`MAX_SEAL_FRAMES`].
    pub digests: Vec<FrameDigest>,
    /// The origin's signature over the publish, `first_seq` and the digests.
    pub signature: [u8; SIGNATURE_LEN],
}

impl Seal {
    /// The digest this seal holds for frame `seq`, if it covers it.
    pub fn digest_of(&self, seq: u64) -> Option<&FrameDigest> {
        let at = seq.checked_sub(self.first_seq)?;
        self.digests.get(usize::try_from(at).ok()?)
    }
}

fn seal_bytes(publish: &PublishId, first_seq: u64, digests: &[FrameDigest]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEAL_CONTEXT.len() + 32 + 8 + 1 + digests.len() * DIGEST_LEN);
    out.extend_from_slice(SEAL_CONTEXT);
    out.extend_from_slice(&publish.0);
    out.extend_from_slice(&first_seq.to_be_bytes());
    out.push(digests.len() as u8);
    for d in digests {
        out.extend_from_slice(d);
    }
    out
}

/// Seals the frames of one publish; only the origin can make one.
#[derive(Clone)]
pub struct FrameSigner {
    key: ed25519::Keypair,
    publish: PublishId,
}

impl std::fmt::Debug for FrameSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameSigner")
            .field("publish", &self.publish)
            .finish()
    }
}

impl FrameSigner {
    /// A signer for `announcement`'s publish, if `key` is its origin's (an Ed25519 node key).
    pub fn new(key: &Keypair, announcement: &Announcement) -> Option<Self> {
        if key.public().to_peer_id() != announcement.id.origin {
            return None;
        }
        let key = key.clone().try_into_ed25519().ok()?;
        Some(FrameSigner {
            key,
            publish: PublishId::of(announcement),
        })
    }

    /// The seal of `frames`, consecutive frames of this publish (1 to [`MAX_SEAL_FRAMES`] of them, the
    /// first numbered `frames[0].seq()`).
    pub fn seal(&self, frames: &[Frame]) -> Seal {
        debug_assert!(!frames.is_empty() && frames.len() <= MAX_SEAL_FRAMES);
        let first_seq = frames.first().map_or(0, Frame::seq);
        let digests: Vec<FrameDigest> = frames
            .iter()
            .take(MAX_SEAL_FRAMES)
            .map(|f| frame_digest(&self.publish, f))
            .collect();
        let sig = self
            .key
            .sign(&seal_bytes(&self.publish, first_seq, &digests));
        Seal {
            first_seq,
            digests,
            signature: sig.try_into().expect("an Ed25519 signature is 64 bytes"),
        }
    }

    /// The publish sealed for.
    pub fn publish(&self) -> PublishId {
        self.publish
    }
}

/// What a receiver made of one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The origin's frame, unaltered.
    Authentic,
    /// No seal we hold covers it (its batch's first frame was dropped on the way): it cannot be checked,
    /// so it is dropped, as if a relay had dropped it.
    Unsealed,
    /// Not the origin's frame, or altered: what is wrong.
    Forged(String),
}

/// Checks the frames of one publish against its origin's key, batch by batch: it keeps the seal of the
/// batch the frames are in.
#[derive(Debug, Clone)]
pub struct FrameVerifier {
    key: ed25519::PublicKey,
    publish: PublishId,
    current: Option<Seal>,
}

impl FrameVerifier {
    /// A verifier for `announcement`'s publish; fails when the announcement does not verify or its origin
    /// has no Ed25519 key (every node's key is one).
    pub fn new(announcement: &Announcement) -> Result<Self, AnnounceError> {
        announcement.verify()?;
        let key = announcement
            .public_key()?
            .try_into_ed25519()
            .map_err(|_| AnnounceError::WrongKey(announcement.id.origin))?;
        Ok(FrameVerifier {
            key,
            publish: PublishId::of(announcement),
            current: None,
        })
    }

    /// Checks `frame`, which arrived with `seal` when it opens a batch. A seal that checks replaces the one
    /// held.
    pub fn check(&mut self, frame: &Frame, seal: Option<Seal>) -> Check {
        let digest = frame_digest(&self.publish, frame);
        if let Some(seal) = seal {
            if seal.first_seq != frame.seq() || seal.digests.is_empty() {
                return Check::Forged(format!("frame {} carries a malformed seal", frame.seq()));
            }
            let signed = seal_bytes(&self.publish, seal.first_seq, &seal.digests);
            if !self.key.verify(&signed, &seal.signature) {
                return Check::Forged(format!(
                    "frame {} carries a seal its origin did not sign",
                    frame.seq()
                ));
            }
            if seal.digests[0] != digest {
                return Check::Forged(format!("frame {} was altered", frame.seq()));
            }
            self.current = Some(seal);
            return Check::Authentic;
        }
        match self.current.as_ref().and_then(|s| s.digest_of(frame.seq())) {
            Some(d) if *d == digest => Check::Authentic,
            Some(_) => Check::Forged(format!("frame {} was altered", frame.seq())),
            None => Check::Unsealed,
        }
    }

    /// The publish checked against.
    pub fn publish(&self) -> PublishId {
        self.publish
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use streamr_media::FrameKind;

    fn frame(seq: u64, body: &'static [u8]) -> Frame {
        Frame::new(FrameKind::Video, 33, seq, Bytes::from_static(body))
    }

    fn batch(first: u64, n: u64) -> Vec<Frame> {
        (0..n).map(|i| frame(first + i, &[0x27, 1, 2, 3])).collect()
    }

    #[test]
    fn only_the_origins_unaltered_frames_of_this_publish_check() {
        let key = Keypair::generate_ed25519();
        let ann = Announcement::sign(&key, "alice", 10).unwrap();
        let signer = FrameSigner::new(&key, &ann).unwrap();
        let frames = batch(5, 3);
        let seal = signer.seal(&frames);
        let fresh = || FrameVerifier::new(&ann).unwrap();

        let mut v = fresh();
        assert_eq!(v.check(&frames[0], Some(seal.clone())), Check::Authentic);
        assert_eq!(v.check(&frames[1], None), Check::Authentic);
        assert_eq!(v.check(&frames[2], None), Check::Authentic);
        // Altered payload, position or time within the batch: refused.
        assert!(matches!(
            v.check(&frame(6, &[0x27, 1, 2, 4]), None),
            Check::Forged(_)
        ));
        assert!(matches!(
            v.check(&frames[2].restamped(34, 7), None),
            Check::Forged(_)
        ));
        // Beyond the batch: not covered, so not for the hub.
        assert_eq!(v.check(&frame(8, &[0x27, 1, 2, 3]), None), Check::Unsealed);
        // Without its batch's seal a frame cannot be checked.
        assert_eq!(fresh().check(&frames[1], None), Check::Unsealed);

        // The seal on another frame, or on an altered first frame: refused.
        assert!(matches!(
            fresh().check(&frames[1], Some(seal.clone())),
            Check::Forged(_)
        ));
        assert!(matches!(
            fresh().check(&frame(5, &[0x27, 9]), Some(seal.clone())),
            Check::Forged(_)
        ));
        // A digest list changed after signing: refused.
        let mut edited = seal.clone();
        edited.digests[1] = [0; DIGEST_LEN];
        assert!(matches!(
            fresh().check(&frames[0], Some(edited)),
            Check::Forged(_)
        ));

        // The same frames from another publish of the same origin: refused.
        let later = Announcement::sign(&key, "alice", 11).unwrap();
        let mut v_later = FrameVerifier::new(&later).unwrap();
        assert!(matches!(
            v_later.check(&frames[0], Some(seal.clone())),
            Check::Forged(_)
        ));
        assert_ne!(
            PublishId::of(&ann).session(),
            PublishId::of(&later).session()
        );

        // Nobody else can seal for this origin.
        let other = Keypair::generate_ed25519();
        assert!(FrameSigner::new(&other, &ann).is_none());
        let theirs = Announcement::sign(&other, "alice", 10).unwrap();
        let forged = FrameSigner::new(&other, &theirs).unwrap().seal(&frames);
        assert!(matches!(
            fresh().check(&frames[0], Some(forged)),
            Check::Forged(_)
        ));
    }

    #[test]
    fn a_seal_covers_exactly_its_frames() {
        let key = Keypair::generate_ed25519();
        let ann = Announcement::sign(&key, "alice", 10).unwrap();
        let seal = FrameSigner::new(&key, &ann)
            .unwrap()
            .seal(&batch(u64::MAX - 1, 2));
        assert!(seal.digest_of(u64::MAX - 2).is_none());
        assert!(seal.digest_of(u64::MAX - 1).is_some());
        assert!(seal.digest_of(u64::MAX).is_some());
        let seal = FrameSigner::new(&key, &ann).unwrap().seal(&batch(0, 1));
        assert!(seal.digest_of(1).is_none());
    }
}
