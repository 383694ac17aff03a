#![no_main]
//! The `/streamr/media/2` decoder fed raw bytes, as a subscriber (frames allowed) or as a provider (control
//! messages only), cut into reads of the size the second byte says. It must never panic, and whatever it
//! decodes must encode to bytes that decode to the same message.

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use streamr_mesh::wire::{self, Decoder, Message};
use tokio_util::codec::Decoder as _;

fn round_trip(m: &Message) {
    let bytes = wire::encode(m);
    let mut src = BytesMut::from(&bytes[..]);
    let back = Decoder::subscriber()
        .decode(&mut src)
        .expect("a re-encoded message decodes")
        .expect("and is whole");
    assert_eq!(&back, m);
    assert!(src.is_empty(), "nothing is left over");
}

fuzz_target!(|data: &[u8]| {
    let [mode, cut, rest @ ..] = data else {
        return;
    };
    let mut decoder = if mode & 1 == 0 {
        Decoder::subscriber()
    } else {
        Decoder::provider()
    };
    let mut src = BytesMut::new();
    for chunk in rest.chunks(usize::from(*cut).max(1)) {
        src.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut src) {
                Ok(Some(m)) => round_trip(&m),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
