//! Signed stream announcements: the origin node signs (name, start time) with its node key, so no other node
//! can claim its stream. Every node that relays the stream forwards the origin's announcement unchanged, and
//! every receiver verifies it before trusting a provider or a catalog entry.

use crate::codec::{Reader, WireError, Writer};
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};

/// Domain separation for announcement signatures.
const CONTEXT: &[u8] = b"streamr-announce/1";

/// A stream's identity: who publishes it and under which name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    /// The node whose RTMP edge (or pull relay) the stream enters the mesh at.
    pub origin: PeerId,
    /// The stream name, as in `rtmp://.../live/NAME`.
    pub name: String,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.origin)
    }
}

/// An origin's signed claim on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The stream.
    pub id: StreamId,
    /// When this publish started (Unix ms): a newer publish of the same stream supersedes an older one.
    pub started_ms: u64,
    /// Shared, not copied: an announcement is cloned into every catalog entry and accept.
    public_key: bytes::Bytes,
    signature: bytes::Bytes,
}

/// Why an announcement is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// The bytes do not parse.
    #[error("malformed announcement: {0}")]
    Malformed(#[from] WireError),
    /// The public key does not belong to the claimed origin.
    #[error("announcement key does not belong to origin {0}")]
    WrongKey(PeerId),
    /// The signature does not verify.
    #[error("announcement signature for {0} does not verify")]
    BadSignature(StreamId),
    /// The key could not sign.
    #[error("cannot sign announcement: {0}")]
    Signing(String),
}

fn signed_bytes(id: &StreamId, started_ms: u64) -> Vec<u8> {
    let mut w = Writer::default();
    w.bytes(CONTEXT);
    w.str(&id.name);
    w.peer(&id.origin);
    w.u64(started_ms);
    w.finish().to_vec()
}

impl Announcement {
    /// Signs an announcement for `name` with the node key.
    pub fn sign(key: &Keypair, name: &str, started_ms: u64) -> Result<Self, AnnounceError> {
        let id = StreamId {
            origin: key.public().to_peer_id(),
            name: name.to_string(),
        };
        let signature = key
            .sign(&signed_bytes(&id, started_ms))
            .map_err(|e| AnnounceError::Signing(e.to_string()))?;
        Ok(Announcement {
            id,
            started_ms,
            public_key: key.public().encode_protobuf().into(),
            signature: signature.into(),
        })
    }

    /// The origin's public key, if it is one and it is the origin's.
    pub fn public_key(&self) -> Result<PublicKey, AnnounceError> {
        let pk = PublicKey::try_decode_protobuf(&self.public_key)
            .map_err(|_| AnnounceError::WrongKey(self.id.origin))?;
        if pk.to_peer_id() != self.id.origin {
            return Err(AnnounceError::WrongKey(self.id.origin));
        }
        Ok(pk)
    }

    /// Checks that the key is the origin's and the signature is right.
    pub fn verify(&self) -> Result<(), AnnounceError> {
        let pk = PublicKey::try_decode_protobuf(&self.public_key)
            .map_err(|_| AnnounceError::WrongKey(self.id.origin))?;
        if pk.to_peer_id() != self.id.origin {
            return Err(AnnounceError::WrongKey(self.id.origin));
        }
        if !pk.verify(&signed_bytes(&self.id, self.started_ms), &self.signature) {
            return Err(AnnounceError::BadSignature(self.id.clone()));
        }
        Ok(())
    }

    /// Writes the announcement.
    pub fn write(&self, w: &mut Writer) {
        w.str(&self.id.name);
        w.peer(&self.id.origin);
        w.u64(self.started_ms);
        w.bytes(&self.public_key);
        w.bytes(&self.signature);
    }

    /// Reads an announcement (not yet verified).
    pub fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let name = r.str()?;
        let origin = r.peer()?;
        let started_ms = r.u64()?;
        let public_key = bytes::Bytes::copy_from_slice(r.bytes()?);
        let signature = bytes::Bytes::copy_from_slice(r.bytes()?);
        Ok(Announcement {
            id: StreamId { origin, name },
            started_ms,
            public_key,
            signature,
        })
    }

    /// An announcement with no valid signature (it never verifies). For tests that need many quickly.
    #[doc(hidden)]
    pub fn unsigned_for_tests(origin: PeerId, name: &str, started_ms: u64) -> Self {
        Announcement {
            id: StreamId {
                origin,
                name: name.to_string(),
            },
            started_ms,
            public_key: bytes::Bytes::new(),
            signature: bytes::Bytes::new(),
        }
    }

    /// A copy with another start time but the old signature: what a forger produces. For tests.
    #[doc(hidden)]
    pub fn forged_with_start(&self, started_ms: u64) -> Self {
        Announcement {
            started_ms,
            ..self.clone()
        }
    }

    /// A copy claiming another origin with the original key and signature. For tests.
    #[doc(hidden)]
    pub fn forged_with_origin(&self, origin: PeerId) -> Self {
        let mut a = self.clone();
        a.id.origin = origin;
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_verifies_and_rejects_forgeries() {
        let key = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519();
        let a = Announcement::sign(&key, "alice", 42).unwrap();
        a.verify().unwrap();
        assert!(matches!(
            a.forged_with_start(43).verify(),
            Err(AnnounceError::BadSignature(_))
        ));
        let stolen = a.forged_with_origin(other.public().to_peer_id());
        assert!(matches!(stolen.verify(), Err(AnnounceError::WrongKey(_))));
        // Another node signing the name is valid, but for its own origin: a different stream.
        let b = Announcement::sign(&other, "alice", 42).unwrap();
        b.verify().unwrap();
        assert_ne!(a.id, b.id);

        let mut w = Writer::default();
        a.write(&mut w);
        let bytes = w.finish();
        let back = Announcement::read(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(back, a);
        back.verify().unwrap();
    }
}
