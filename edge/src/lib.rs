//! streamr-edge: the RTMP edge of a node. OBS publishes here and players (VLC, ffplay, OBS media sources)
//! play here; inside, everything is `Frame`s in hubs. Also an RTMP client for upstream pull/push relays.
//!
//! Everything a peer sends goes through [`chunk_decoder`] and [`amf0`], which bound sizes and nesting before
//! anything is buffered or decoded; rml_rtmp is used for the handshake only.

mod admission;
pub mod amf0;
pub mod chunk;
pub mod chunk_decoder;
pub mod client;
pub mod message;
pub mod metadata;
pub mod metrics;
pub mod names;
pub mod relay;
mod server;
mod session;
mod status;

pub use server::{BindError, EdgeConfig, EdgeStats, LimitStats, RtmpServer};

/// The protocol logic over bytes in memory, with no sockets: what the fuzz targets and hostile-input tests
/// drive.
pub mod sans_io {
    pub use crate::client::run_server_bytes as client_session;
    pub use crate::session::run_bytes as server_session;
}
