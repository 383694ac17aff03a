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
///
/// The bytes go to `NAME.tmp`, created afresh with `O_EXCL | O_NOFOLLOW` and mode 0600, then renamed over
/// `path`. A `.tmp` left by a crash (or planted: a symlink to another file, a file readable by others) is
/// removed first, never opened: opening it would follow a symlink and keep the old file's mode.
fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let mut f = match opts.open(&tmp) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // remove_file unlinks a symlink itself, not what it points to.
            std::fs::remove_file(&tmp).with_context(|| {
                format!(
                    "{} is left from an earlier run and cannot be removed: remove it and start again",
                    tmp.display()
                )
            })?;
            opts.open(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", tmp.display())),
    };
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("cannot create {}", path.display()))?;
    // The rename itself survives a crash once the directory is synced too.
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))?;
    }
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

    #[cfg(unix)]
    #[test]
    fn a_stale_tmp_neither_keeps_its_mode_nor_redirects_the_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // A world-readable `.tmp` left behind: the key must not inherit its mode.
        let tmp = dir.path().join("publish.tmp");
        std::fs::write(&tmp, "old").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        load_or_create_publish_key(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(PUBLISH_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!tmp.exists());

        // A `.tmp` that is a symlink to another file: that file must be left alone.
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "not yours").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("identity.tmp")).unwrap();
        load_or_create_identity(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "not yours");
        let key = dir.path().join(IDENTITY_FILE);
        assert!(
            !std::fs::symlink_metadata(&key)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
