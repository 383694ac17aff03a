//! Media authentication: the origin signs every frame it sends into the mesh, binding it to its stream and
//! publish (the [`Announcement`]), its position (sequence number), its time and its bytes. Relays pass the
//! origin's signed bytes on unchanged, and every receiver checks the signature before a frame enters its
//! hub. A relay can therefore drop frames (as a congested one must) but not inject, alter, replace or
//! reorder them: a frame that does not verify ends the subscription, and the hub never sees it.
//!
//! The payload is hashed with SHA-256 and the signature (Ed25519, the node key) covers that digest, so the
//! cost per frame does not grow with its size. Plain code: the sessions call it.

use crate::announce::{AnnounceError, Announcement};
use libp2p::identity::{Keypair, ed25519};
use sha2::{Digest, Sha256};
use streamr_media::Frame;

/// Bytes of a frame signature (Ed25519).
pub const SIGNATURE_LEN: usize = 64;
/// Domain separation for frame signatures.
const FRAME_CONTEXT: &[u8] = b"streamr-frame/1";
/// Domain separation for publish ids.
const PUBLISH_CONTEXT: &[u8] = b"streamr-publish/1";
/// Bytes a frame signature is made over.
const SIGNED_LEN: usize = FRAME_CONTEXT.len() + 32 + 1 + 4 + 8 + 32;

/// One publish of one stream (origin, name and start time), in the form signatures bind frames to: a frame
/// of one publish cannot be replayed into another, even by the same origin.
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

fn signed_bytes(publish: &PublishId, frame: &Frame) -> [u8; SIGNED_LEN] {
    let mut out = [0u8; SIGNED_LEN];
    let digest: [u8; 32] = Sha256::digest(frame.payload()).into();
    let mut at = 0;
    for part in [
        FRAME_CONTEXT,
        &publish.0[..],
        &[frame.kind().code()][..],
        &frame.timestamp().to_be_bytes()[..],
        &frame.seq().to_be_bytes()[..],
        &digest[..],
    ] {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    out
}

/// Signs the frames of one publish; only the origin can make one.
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

    /// The signature of `frame` in this publish.
    pub fn sign(&self, frame: &Frame) -> [u8; SIGNATURE_LEN] {
        let sig = self.key.sign(&signed_bytes(&self.publish, frame));
        sig.try_into().expect("an Ed25519 signature is 64 bytes")
    }
}

/// Checks the frames of one publish against its origin's key.
#[derive(Debug, Clone)]
pub struct FrameVerifier {
    key: ed25519::PublicKey,
    publish: PublishId,
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
        })
    }

    /// True when `signature` is the origin's for `frame` in this publish.
    pub fn verify(&self, frame: &Frame, signature: &[u8; SIGNATURE_LEN]) -> bool {
        self.key
            .verify(&signed_bytes(&self.publish, frame), signature)
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

    #[test]
    fn only_the_origins_unaltered_frames_of_this_publish_verify() {
        let key = Keypair::generate_ed25519();
        let ann = Announcement::sign(&key, "alice", 10).unwrap();
        let signer = FrameSigner::new(&key, &ann).unwrap();
        let verifier = FrameVerifier::new(&ann).unwrap();
        let f = frame(5, &[0x27, 1, 2, 3]);
        let sig = signer.sign(&f);
        assert!(verifier.verify(&f, &sig));
        // Altered payload, position or time: refused.
        assert!(!verifier.verify(&frame(5, &[0x27, 1, 2, 4]), &sig));
        assert!(!verifier.verify(&frame(6, &[0x27, 1, 2, 3]), &sig));
        assert!(!verifier.verify(&f.restamped(34, 5), &sig));
        // The same frame from another publish of the same origin: refused.
        let later = Announcement::sign(&key, "alice", 11).unwrap();
        assert!(!FrameVerifier::new(&later).unwrap().verify(&f, &sig));
        assert_ne!(
            PublishId::of(&ann).session(),
            PublishId::of(&later).session()
        );
        // Nobody else can sign for this origin.
        let other = Keypair::generate_ed25519();
        assert!(FrameSigner::new(&other, &ann).is_none());
        let theirs = Announcement::sign(&other, "alice", 10).unwrap();
        let forged = FrameSigner::new(&other, &theirs).unwrap().sign(&f);
        assert!(!verifier.verify(&f, &forged));
    }
}
