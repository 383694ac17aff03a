//! `streamr-node` driven from outside, by netlab and by the root package's integration tests alike: the one
//! launcher ([`Launcher`] starts it, in a lab namespace or not, with its log in a file or in memory, and
//! waits for its ready line; [`NodeProcess`] stops it by PID), its status API read into the web crate's own
//! types ([`status`]), and the plain HTTP client both use ([`http`]).
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use streamr_netlab::node::{Launcher, StatusExt};
//! let data = tempfile::tempdir()?;
//! let launcher = Launcher::new("target/debug/streamr-node", data.path());
//! let mut node = launcher.start(Duration::from_secs(30)).await?; // on free loopback ports
//! let status = node.status().await?;
//! assert!(status.stream("alice").is_none());
//! node.stop(Duration::from_secs(7)).await;
//! # Ok(())
//! # }
//! ```

pub mod http;
mod launcher;
pub mod status;

pub use launcher::{
    LaunchError, Launcher, NodeLog, NodeProcess, READY_MESSAGE, Ready, parse_ready, supports_flag,
};
pub use status::{
    MeshStream, NatStatus, PeerStatus, PeerStatusExt, STATUS_PATH, Status, StatusError, StatusExt,
    StreamStatus, fetch_status, fetch_status_blocking, pick_bootstrap_addr,
};
