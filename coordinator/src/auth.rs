//! Request signatures: a node proves every request with its libp2p Ed25519 key, so the coordinator needs no
//! passwords or API keys for nodes.
//!
//! Headers: [`HEADER_PEER_ID`] (base58 peer id; an Ed25519 peer id embeds its public key), [`HEADER_TIMESTAMP`]
//! (Unix ms), [`HEADER_NONCE`] (32 lowercase hex characters, fresh per request) and [`HEADER_SIGNATURE`]
//! (base64 of the 64-byte Ed25519 signature) over [`signing_payload`]:
//!
//! ```text
//! streamr-coordinator-request/1 \n METHOD \n PATH[?QUERY] \n TIMESTAMP \n NONCE \n hex(SHA-256(body))
//! ```
//!
//! [`verify_request`] checks the signature and the clock skew; remembering nonces is the server's storage's
//! job (shared by every instance), because that is state.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use libp2p_identity::{Keypair, PeerId, PublicKey};
use sha2::{Digest, Sha256};

/// The signer's peer id.
pub const HEADER_PEER_ID: &str = "x-streamr-peer-id";
/// Unix time of signing, milliseconds.
pub const HEADER_TIMESTAMP: &str = "x-streamr-timestamp";
/// A fresh random value per request.
pub const HEADER_NONCE: &str = "x-streamr-nonce";
/// base64 Ed25519 signature over [`signing_payload`].
pub const HEADER_SIGNATURE: &str = "x-streamr-signature";
/// Largest accepted difference between the signer's clock and the server's.
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;
/// How long a server must remember a nonce: any request older is refused for skew anyway.
pub const NONCE_RETENTION_MS: i64 = 2 * MAX_SKEW_MS;
/// Domain separation: this signature can never be taken for a receipt's or the mesh's.
const DOMAIN: &str = "streamr-coordinator-request/1";

/// Why a request's signature was refused. Every variant answers 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A signature header is absent.
    #[error("header {0} is missing: node requests must be signed with the node key")]
    MissingHeader(&'static str),
    /// A signature header is unreadable.
    #[error("header {header} is malformed: {reason}")]
    Malformed {
        /// Which header.
        header: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The peer id is not an Ed25519 key (its public key is not inside it).
    #[error("peer id is not an Ed25519 node key")]
    NotEd25519,
    /// The signature does not verify.
    #[error("signature does not match the request and the peer id")]
    BadSignature,
    /// The timestamp is too far from the server's clock.
    #[error(
        "timestamp is {skew_ms} ms away from the coordinator's clock (more than 5 minutes): fix this machine's clock"
    )]
    ClockSkew {
        /// Signed timestamp minus server time.
        skew_ms: i64,
    },
    /// The nonce was already used by this peer.
    #[error("nonce was already used: a replayed request")]
    ReplayedNonce,
}

impl AuthError {
    /// Machine-readable code for [`crate::api::ApiError`] and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingHeader(_) | AuthError::Malformed { .. } => "unsigned",
            AuthError::NotEd25519 => "not_ed25519",
            AuthError::BadSignature => "bad_signature",
            AuthError::ClockSkew { .. } => "clock_skew",
            AuthError::ReplayedNonce => "replayed_nonce",
        }
    }
}

/// The four signature headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// The signer.
    pub peer_id: PeerId,
    /// Unix ms at signing.
    pub timestamp_ms: i64,
    /// 32 lowercase hex characters.
    pub nonce: String,
    /// 64 bytes.
    pub signature: Vec<u8>,
}

impl SignedHeaders {
    /// Header names and values to put on the request.
    pub fn to_pairs(&self) -> [(&'static str, String); 4] {
        [
            (HEADER_PEER_ID, self.peer_id.to_base58()),
            (HEADER_TIMESTAMP, self.timestamp_ms.to_string()),
            (HEADER_NONCE, self.nonce.clone()),
            (HEADER_SIGNATURE, BASE64.encode(&self.signature)),
        ]
    }

    /// Parses the header values as they arrived (`None` = header absent).
    pub fn parse(
        peer_id: Option<&str>,
        timestamp: Option<&str>,
        nonce: Option<&str>,
        signature: Option<&str>,
    ) -> Result<Self, AuthError> {
        let peer_id = peer_id.ok_or(AuthError::MissingHeader(HEADER_PEER_ID))?;
        let timestamp = timestamp.ok_or(AuthError::MissingHeader(HEADER_TIMESTAMP))?;
        let nonce = nonce.ok_or(AuthError::MissingHeader(HEADER_NONCE))?;
        let signature = signature.ok_or(AuthError::MissingHeader(HEADER_SIGNATURE))?;
        let malformed = |header, reason: &str| AuthError::Malformed {
            header,
            reason: reason.to_string(),
        };
        if peer_id.len() > 128 {
            return Err(malformed(HEADER_PEER_ID, "too long"));
        }
        let peer_id: PeerId = peer_id
            .parse()
            .map_err(|_| malformed(HEADER_PEER_ID, "not a base58 peer id"))?;
        let timestamp_ms: i64 = timestamp
            .parse()
            .map_err(|_| malformed(HEADER_TIMESTAMP, "not Unix milliseconds"))?;
        if nonce.len() != 32
            || !nonce
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(malformed(HEADER_NONCE, "not 32 lowercase hex characters"));
        }
        if signature.len() > 128 {
            return Err(malformed(HEADER_SIGNATURE, "too long"));
        }
        let signature = BASE64
            .decode(signature)
            .map_err(|_| malformed(HEADER_SIGNATURE, "not base64"))?;
        if signature.len() != 64 {
            return Err(malformed(HEADER_SIGNATURE, "not 64 bytes"));
        }
        Ok(SignedHeaders {
            peer_id,
            timestamp_ms,
            nonce: nonce.to_string(),
            signature,
        })
    }
}

/// A fresh nonce: 16 random bytes as hex.
pub fn new_nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The bytes that are signed. `path` is the request target: path plus `?query` when there is one.
pub fn signing_payload(
    method: &str,
    path: &str,
    timestamp_ms: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let body_hash = hex::encode(Sha256::digest(body));
    format!(
        "{DOMAIN}\n{}\n{path}\n{timestamp_ms}\n{nonce}\n{body_hash}",
        method.to_ascii_uppercase()
    )
    .into_bytes()
}

/// Signs a request with the node key.
pub fn sign_request(
    keypair: &Keypair,
    method: &str,
    path: &str,
    body: &[u8],
    timestamp_ms: i64,
    nonce: String,
) -> SignedHeaders {
    let payload = signing_payload(method, path, timestamp_ms, &nonce, body);
    // Only RSA keys can fail to sign; an RSA node gets an empty signature the server refuses.
    let signature = keypair.sign(&payload).unwrap_or_default();
    SignedHeaders {
        peer_id: keypair.public().to_peer_id(),
        timestamp_ms,
        nonce,
        signature,
    }
}

/// The public key inside an Ed25519 peer id (identity multihash of the protobuf-encoded key).
pub fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    let mh = peer.as_ref();
    // 0x00 = identity multihash: the digest is the key itself. Hashed peer ids (RSA) carry no key.
    if mh.code() != 0x00 {
        return None;
    }
    let key = PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    key.clone().try_into_ed25519().ok()?;
    Some(key)
}

/// Checks the signature and the clock skew of a request (not the nonce: see the module doc).
pub fn verify_request(
    headers: &SignedHeaders,
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<(), AuthError> {
    let skew_ms = headers.timestamp_ms.saturating_sub(now_ms);
    if skew_ms.abs() > MAX_SKEW_MS {
        return Err(AuthError::ClockSkew { skew_ms });
    }
    let key = public_key_of(&headers.peer_id).ok_or(AuthError::NotEd25519)?;
    let payload = signing_payload(method, path, headers.timestamp_ms, &headers.nonce, body);
    if key.verify(&payload, &headers.signature) {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(kp: &Keypair, body: &[u8], ts: i64) -> SignedHeaders {
        sign_request(kp, "POST", "/api/v1/nodes/heartbeat", body, ts, new_nonce())
    }

    #[test]
    fn a_signed_request_verifies_through_its_headers() {
        let kp = Keypair::generate_ed25519();
        let h = signed(&kp, b"{}", 1_000_000);
        let pairs = h.to_pairs();
        let parsed = SignedHeaders::parse(
            Some(&pairs[0].1),
            Some(&pairs[1].1),
            Some(&pairs[2].1),
            Some(&pairs[3].1),
        )
        .unwrap();
        assert_eq!(parsed, h);
        verify_request(&parsed, "post", "/api/v1/nodes/heartbeat", b"{}", 1_000_500).unwrap();
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let kp = Keypair::generate_ed25519();
        let h = signed(&kp, b"{\"a\":1}", 1_000_000);
        let now = 1_000_000;
        let path = "/api/v1/nodes/heartbeat";
        assert_eq!(
            verify_request(&h, "POST", path, b"{\"a\":2}", now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_request(&h, "PUT", path, b"{\"a\":1}", now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_request(&h, "POST", "/api/v1/nodes/register", b"{\"a\":1}", now),
            Err(AuthError::BadSignature)
        );
        let mut other_nonce = h.clone();
        other_nonce.nonce = new_nonce();
        assert_eq!(
            verify_request(&other_nonce, "POST", path, b"{\"a\":1}", now),
            Err(AuthError::BadSignature)
        );
        let mut other_peer = h.clone();
        other_peer.peer_id = Keypair::generate_ed25519().public().to_peer_id();
        assert_eq!(
            verify_request(&other_peer, "POST", path, b"{\"a\":1}", now),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn skew_beyond_five_minutes_is_refused_either_way() {
        let kp = Keypair::generate_ed25519();
        let h = signed(&kp, b"", 10_000_000);
        let path = "/api/v1/nodes/heartbeat";
        assert!(verify_request(&h, "POST", path, b"", 10_000_000 + MAX_SKEW_MS).is_ok());
        assert!(matches!(
            verify_request(&h, "POST", path, b"", 10_000_000 + MAX_SKEW_MS + 1),
            Err(AuthError::ClockSkew { .. })
        ));
        assert!(matches!(
            verify_request(&h, "POST", path, b"", 10_000_000 - MAX_SKEW_MS - 1),
            Err(AuthError::ClockSkew { .. })
        ));
    }

    #[test]
    fn malformed_headers_say_which() {
        let err = SignedHeaders::parse(Some("x"), Some("1"), Some("n"), Some("s")).unwrap_err();
        assert!(matches!(
            err,
            AuthError::Malformed {
                header: HEADER_PEER_ID,
                ..
            }
        ));
        let err = SignedHeaders::parse(None, Some("1"), Some("n"), Some("s")).unwrap_err();
        assert_eq!(err, AuthError::MissingHeader(HEADER_PEER_ID));
    }
}
