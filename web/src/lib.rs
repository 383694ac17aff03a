//! streamr-web: the node's local HTTP surface (warp): JSON status, Prometheus metrics, and the dashboard.

mod api;
mod server;

pub use api::{MeshStream, NatStatus, NodeApi, PeerStatus, Status, StreamStatus};
pub use server::{BindError, WebServer};
