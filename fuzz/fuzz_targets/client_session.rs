//! The RTMP client's handling of what a server sends (after the handshake): chunk stream, protocol control,
//! acknowledgements and pings, command replies, statuses, media. Byte 0: how the rest is cut into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [step, rest @ ..] = data else {
        return;
    };
    let step = 1 + usize::from(*step) * 31;
    let _ = streamr_edge::sans_io::client_session(&mut rest.chunks(step));
});
