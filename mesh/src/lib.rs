//! streamr-mesh: the media model every part of the node shares (`Frame`, `Hub`, `Streams`) and the libp2p
//! mesh that carries streams between nodes.

pub mod announce;
pub mod catalog;
pub mod codec;
pub mod frame;
pub mod hub;
pub mod net;
pub mod service;
pub mod streams;
pub mod wire;

pub use frame::{EncodingSlot, Frame, FrameKind};
pub use hub::{
    Continuity, Ended, Hub, HubConfig, HubSnapshot, Lineage, Replaced, Source, SourceKind,
    StreamEvent, SubscriberKind, Subscription,
};
pub use service::{Mesh, MeshConfig, MeshStats, MeshStatus, PeerStatus, StreamMesh};
pub use streams::Streams;
