//! The server side of an RTMP connection fed raw bytes, as a client would send them: the handshake (when the
//! first byte's low bit is set), then the chunk stream, commands, publishes into and plays from hubs.
//! Byte 0: bit 0 handshake, bit 1 a publish key is required. Byte 1: how the rest is cut into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamr_edge::EdgeConfig;

fuzz_target!(|data: &[u8]| {
    let [flags, step, rest @ ..] = data else {
        return;
    };
    let mut config = EdgeConfig::new(([127, 0, 0, 1], 0).into());
    if flags & 2 != 0 {
        config.publish_key = Some("fuzzkey123".into());
    }
    let step = 1 + usize::from(*step) * 31;
    let _ = streamr_edge::sans_io::server_session(config, flags & 1 != 0, &mut rest.chunks(step));
});
