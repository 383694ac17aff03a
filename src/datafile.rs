//! Small files of the node's data dir that the dashboard needs: the API key (created 0600 on first
//! start), the address the dashboard is bound to (for the CLI), and the node's Start/Stop state. Every
//! write is atomic: a crash never leaves half a file.

use anyhow::Context;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// The API key's file: its contents go in `X-API-Key`.
pub const API_KEY_FILE: &str = "api-key";
/// Where a running node writes its dashboard's address (`127.0.0.1:8080`), for `invite` and `join`.
pub const HTTP_ADDRESS_FILE: &str = "http-address";
/// The node's Start/Stop state.
pub const STATE_FILE: &str = "state.json";

/// Writes `bytes` to `path` through a temporary file and a rename; `secret` makes it readable by its
/// owner only.
pub fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Loads the API key, creating it on first start.
pub fn load_or_create_api_key(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(API_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 16 => Ok(t.trim().to_string()),
        Ok(_) => anyhow::bail!(
            "{} does not hold an API key: delete it and a new one is made at the next start",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
            let mut rng = rand::rng();
            let key: String = (0..32)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect();
            write_atomic(&path, format!("{key}\n").as_bytes(), true)?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// What survives a restart of the process about the node's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Stopped with the dashboard's Stop (or `POST /api/v1/node/stop`).
    #[serde(default)]
    pub paused: bool,
}

impl NodeState {
    /// Reads the state; a missing or unreadable file is the default (running): a damaged state file must
    /// not keep a node from starting.
    pub fn load(data_dir: &Path) -> NodeState {
        std::fs::read(data_dir.join(STATE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Saves the state.
    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        write_atomic(
            &data_dir.join(STATE_FILE),
            &serde_json::to_vec_pretty(self)?,
            false,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_api_key(dir.path()).unwrap();
        assert_eq!(a, load_or_create_api_key(dir.path()).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(dir.path().join(API_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600);
        }
    }

    #[test]
    fn the_state_round_trips_and_a_broken_file_means_running() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!NodeState::load(dir.path()).paused);
        NodeState { paused: true }.save(dir.path()).unwrap();
        assert!(NodeState::load(dir.path()).paused);
        std::fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        assert!(!NodeState::load(dir.path()).paused);
    }
}
