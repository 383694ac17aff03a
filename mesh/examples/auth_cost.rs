//! What media authentication costs per frame (issue 10, item 4): the origin's signature and a receiver's
//! check, next to the baseline every hop pays anyway on the same frames (encoding the frame for the wire and
//! decoding it back, which copies its payload). Prints microseconds per frame for an audio frame, a P-frame
//! and a keyframe of a 2.5 Mbit/s stream, and what that makes per second of such a stream (30 video and 47
//! audio frames a second, one keyframe every 2 s). Run in release:
//! `cargo run --release -p streamr-mesh --example auth_cost`.

use bytes::{Bytes, BytesMut};
use libp2p::identity::Keypair;
use std::hint::black_box;
use std::time::Instant;
use streamr_media::{Frame, FrameKind};
use streamr_mesh::announce::Announcement;
use streamr_mesh::auth::{FrameSigner, FrameVerifier};
use streamr_mesh::wire::{self, Decoder, Message, SignedFrame};
use tokio_util::codec::Decoder as _;

/// Microseconds per call of `f`, over `n` calls (after a warm-up).
fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let key = Keypair::generate_ed25519();
    let ann = Announcement::sign(&key, "bench", 1_700_000_000_000).expect("sign");
    let signer = FrameSigner::new(&key, &ann).expect("origin key");
    let verifier = FrameVerifier::new(&ann).expect("valid announcement");
    // Sizes of a 2.5 Mbit/s H.264 + AAC stream at 30 fps.
    let cases: [(&str, FrameKind, usize, f64); 3] = [
        ("audio (AAC)", FrameKind::Audio, 380, 47.0),
        ("video P-frame", FrameKind::Video, 9_000, 29.5),
        ("video keyframe", FrameKind::Video, 110_000, 0.5),
    ];
    println!(
        "{:<16} {:>8} {:>12} {:>12} {:>14} {:>10}",
        "frame", "bytes", "baseline us", "sign us", "verify us", "verify/base"
    );
    let (mut base_s, mut sign_s, mut verify_s) = (0.0, 0.0, 0.0);
    for (name, kind, len, per_sec) in cases {
        let mut payload = vec![0u8; len];
        payload[0] = if kind == FrameKind::Audio { 0xaf } else { 0x27 };
        payload[1] = 1;
        let frame = Frame::new(kind, 40, 7, Bytes::from(payload));
        let signature = signer.sign(&frame);
        let msg = Message::Frame(SignedFrame {
            signature,
            frame: frame.clone(),
            epoch: ann.started_ms,
        });
        let n = if len > 50_000 { 2_000 } else { 20_000 };
        let base = per_call(n, || {
            let mut src = BytesMut::from(&wire::encode(black_box(&msg))[..]);
            black_box(Decoder::subscriber().decode(&mut src).unwrap());
        });
        let sign = per_call(n, || {
            black_box(signer.sign(black_box(&frame)));
        });
        let verify = per_call(n, || {
            assert!(verifier.verify(black_box(&frame), &signature));
        });
        println!(
            "{name:<16} {len:>8} {base:>12.1} {sign:>12.1} {verify:>14.1} {:>10.1}x",
            verify / base
        );
        base_s += base * per_sec;
        sign_s += sign * per_sec;
        verify_s += verify * per_sec;
    }
    println!(
        "per second of a 2.5 Mbit/s stream: baseline {:.2} ms, origin signs {:.2} ms, each receiver verifies \
         {:.2} ms (CPU of one core: {:.2}%)",
        base_s / 1e3,
        sign_s / 1e3,
        verify_s / 1e3,
        verify_s / 1e4
    );
}
