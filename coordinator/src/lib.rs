//! streamr-coordinator: the reference coordinator for streamr-node and the client a node uses to talk to it.
//!
//! The modules `api`, `auth`, `receipt` and `trust` are plain code that both sides share (no sockets, no
//! storage). `client` (feature `client`) is the node's side: a signed HTTP client and a background runner
//! that survives coordinator outages. `server` (feature `server`) is the coordinator itself: warp in front,
//! sqlx (SQLite or Postgres) behind. A node depends on this crate with
//! `default-features = false, features = ["client"]` and pulls in neither warp nor sqlx.

pub mod api;
pub mod auth;
pub mod receipt;
pub mod time;
pub mod trust;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "server")]
pub mod server;

#[cfg(all(feature = "server", feature = "client"))]
pub mod bench;

pub use libp2p_identity::{Keypair, PeerId};
