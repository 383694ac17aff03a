//! streamr-mesh: the libp2p mesh that carries streams between nodes: reachability (AutoNAT, relays, DCUtR,
//! UPnP), discovery (catalog gossip, Kademlia), the `/streamr/media/3` protocol, the tree and failover. Media
//! arrives and leaves through `streamr-media` hubs.

pub mod announce;
pub mod auth;
pub mod catalog;
pub mod codec;
pub mod net;
pub mod receipts;
pub mod routes;
pub mod service;
pub mod session;
pub mod sim;
pub mod wire;

pub use receipts::{ReceiptMeter, Receipts};
pub use routes::Lineage;
pub use service::{
    DialFailure, Mesh, MeshConfig, MeshStats, MeshStatus, MeshTuning, PeerStatus, StreamMesh,
};
pub use session::{Friends, play_name};
