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
//! Agents print one JSON result (clients) or [`READY_LINE`] once listening (servers) on standard output,
//! and exit when their standard input closes, so none outlives the lab that started it.

use std::io::Read;
use std::time::Duration;

pub mod echo;
pub mod media;
pub mod playback;
pub mod proto;
pub mod punch;
pub mod rfc5389;
pub mod rtmp;
pub mod stun;

/// What a server agent prints once its sockets are bound.
pub const READY_LINE: &str = "ready";

/// How long a client waits for one reply before it sends again.
pub(crate) const RETRY_INTERVAL: Duration = Duration::from_millis(150);

/// Exits the process when standard input closes: the lab that started this agent let go of it or died.
pub fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
}

/// Prints the ready line and flushes it, so the lab can stop waiting.
pub fn announce_ready() {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{READY_LINE}");
    let _ = out.flush();
}
