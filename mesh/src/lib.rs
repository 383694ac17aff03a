//! streamr-mesh: the media model every part of the node shares (`Frame`, `Hub`, `Streams`) and the libp2p
//! mesh that carries streams between nodes.

pub mod frame;
pub mod hub;
pub mod streams;

pub use frame::{EncodingSlot, Frame, FrameKind};
pub use hub::{
    Continuity, Ended, Hub, HubConfig, HubSnapshot, Replaced, Source, SourceKind, SubscriberKind,
    Subscription,
};
pub use streams::Streams;
