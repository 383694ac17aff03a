//! The node's secrets in its data dir: the ed25519 identity key (its PeerId is the node id everywhere) and the
//! RTMP publish key. Both are created on first run with mode 0600 and reused after; a file that exists but
//! cannot be read as a key is an error naming it, never silently replaced (that would change the node id).

use anyhow::{Context, bail};
use libp2p::identity::Keypair;
use rand::Rng;
use std::io::Write;
use std::path::Path;

/// File name of the identity key.
pub const IDENTITY_FILE: &str = "identity.key";
/// File name of the publish key.
pub const PUBLISH_KEY_FILE: &str = "publish.key";

/// Loads the identity key, creating it on first run.
pub fn load_or_create_identity(data_dir: &Path) -> anyhow::Result<Keypair> {
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{} exists but is not a valid node key ({e}). It may be damaged: restore it from a backup, or \
                 move it away to start as a new node (the node id will change).",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .context("cannot encode the new node key")?;
            write_secret(&path, &bytes)?;
            tracing::info!(path = %path.display(), "created a new node identity");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Loads the publish key, creating it on first run.
pub fn load_or_create_publish_key(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(PUBLISH_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let key = text.trim();
            if key.len() < 8 || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
                bail!(
                    "{} does not hold a valid publish key (8 or more letters and digits). Fix it, or delete it \
                     to get a new key (OBS will then need the new key).",
                    path.display()
                );
            }
            Ok(key.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
            let mut rng = rand::rng();
            let key: String = (0..20)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect();
            write_secret(&path, format!("{key}\n").as_bytes())?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a file readable by its owner only, atomically (a crash never leaves half a key).
fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_with_private_mode_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_identity(dir.path()).unwrap();
        let b = load_or_create_identity(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn corrupt_identity_is_an_error_naming_the_file_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        std::fs::write(&path, b"not a key").unwrap();
        let e = load_or_create_identity(dir.path()).unwrap_err().to_string();
        assert!(e.contains("identity.key"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a key");
    }

    #[test]
    fn publish_key_is_stable_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_publish_key(dir.path()).unwrap();
        assert_eq!(a, load_or_create_publish_key(dir.path()).unwrap());
        assert!(a.len() >= 16);
        std::fs::write(dir.path().join(PUBLISH_KEY_FILE), "x y").unwrap();
        assert!(load_or_create_publish_key(dir.path()).is_err());
    }
}
