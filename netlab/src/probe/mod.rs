//! The probes that prove the lab right without any node: small UDP programs that run inside the lab's
//! namespaces as hidden subcommands of the `netlab` binary (`netlab agent ...`).
//!
//! - [`stun`]: a STUN-like server with two addresses and two ports, and the client that measures a NAT's
//!   mapping and filtering behaviour against it; it also answers real STUN binding requests ([`rfc5389`]).
//! - [`punch`]: a rendezvous that tells two peers each other's observed address, and the peer that punches.
//! - [`echo`]: a UDP echo for round-trip time and loss of a link.
//! - [`media`], [`playback`], [`rtmp`]: the probe publisher and probe player that drive `streamr-node`
//!   over RTMP: a synthetic live stream whose frames carry a sequence number and their send time, and a
//!   player that measures loss, gaps, time to first frame and one-way latency.
//!
//! Agents print one JSON result (clients) or the lab's ready line once listening (servers) on standard
//! output, and exit when their standard input closes ([`crate::engine::agent`]), so none outlives the lab
//! that started it. Probes use the lab engine's vocabulary (NAT behaviour, the STUN server's addresses);
//! the engine never imports a probe.

use std::time::Duration;

pub mod echo;
pub mod media;
pub mod playback;
pub mod proto;
pub mod punch;
pub mod rfc5389;
pub mod rtmp;
pub mod stun;

/// How long a client waits for one reply before it sends again.
pub(crate) const RETRY_INTERVAL: Duration = Duration::from_millis(150);
