//! streamr-media: the media model every part of a node shares. A [`Frame`] is one media message; a [`Hub`]
//! is one live stream on this node (one source in, many subscribers out, a keyframe cache for instant
//! starts); [`Streams`] is the directory of hubs; a [`Lookup`] is a player's wait for a stream that something
//! else (the mesh) is looking for; [`metrics`] has the hubs' metric families and the shapes every subsystem's
//! families take. No networking here: the RTMP edge, the mesh and the web server all build on
//! this crate, and this crate knows none of them.

pub mod frame;
pub mod hub;
pub mod lookup;
pub mod metrics;
pub mod streams;

pub use frame::{EncodingSlot, Frame, FrameKind};
pub use hub::{
    Continuity, DEFAULT_MAX_QUEUE_DELAY, Ended, Hub, HubConfig, HubSnapshot, MAX_SEQ_JUMP,
    Replaced, Source, SourceKind, StreamEvent, SubscriberKind, Subscription,
};
pub use lookup::{Finder, Lookup, LookupConfig, LookupState, NotFound};
pub use streams::Streams;
