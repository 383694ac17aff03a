//! streamr-edge: the RTMP edge of a node. OBS publishes here and players (VLC, ffplay, OBS media sources)
//! play here; inside, everything is `Frame`s in hubs. Also an RTMP client for upstream pull/push relays.

pub mod amf0;
pub mod chunk;
pub mod chunk_decoder;
pub mod client;
pub mod message;
pub mod metadata;
pub mod names;
pub mod relay;
mod server;
mod session;
mod status;

pub use server::{BindError, EdgeConfig, EdgeStats, RtmpServer};
