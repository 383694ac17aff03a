//! What media authentication costs (issue 10, item 4): a receiver checks every frame's digest against the
//! seal of its batch, and one signature per batch; the origin hashes every frame and signs one seal per
//! batch. Next to the baseline every hop pays anyway on the same frames (encoding the frame for the wire and
//! decoding it back, which copies its payload). Prints microseconds per frame for an audio frame, a P-frame
//! and a keyframe of a 2.5 Mbit/s stream, what a seal costs, and what that makes per second of such a
//! stream (30 video and 47 audio frames a second, one keyframe every 2 s), with seals every 50 ms (the
//! origin's window; about 20 a second) and, for comparison, with a signature on every frame. Run in release:
//! `cargo run --release -p streamr-mesh --example auth_cost`.

use bytes::{Bytes, BytesMut};
use libp2p::identity::Keypair;
use std::hint::black_box;
use std::time::Instant;
use streamr_media::{Frame, FrameKind};
use streamr_mesh::announce::Announcement;
use streamr_mesh::auth::{Check, FrameSigner, FrameVerifier};
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
    // Sizes of a 2.5 Mbit/s H.264 + AAC stream at 30 fps.
    let cases: [(&str, FrameKind, usize, f64); 3] = [
        ("audio (AAC)", FrameKind::Audio, 380, 47.0),
        ("video P-frame", FrameKind::Video, 9_000, 29.5),
        ("video keyframe", FrameKind::Video, 110_000, 0.5),
    ];
    let frames_per_sec: f64 = cases.iter().map(|c| c.3).sum();
    let seals_per_sec = 20.0;
    println!(
        "{:<16} {:>8} {:>12} {:>12} {:>14}",
        "frame", "bytes", "baseline us", "digest us", "digest/base"
    );
    let (mut base_s, mut digest_s) = (0.0, 0.0);
    for (name, kind, len, per_sec) in cases {
        let mut payload = vec![0u8; len];
        payload[0] = if kind == FrameKind::Audio { 0xaf } else { 0x27 };
        payload[1] = 1;
        let frame = Frame::new(kind, 40, 7, Bytes::from(payload));
        let seal = signer.seal(std::slice::from_ref(&frame));
        let msg = Message::Frame(SignedFrame {
            frame: frame.clone(),
            epoch: ann.started_ms,
            seal: None,
        });
        let n = if len > 50_000 { 2_000 } else { 20_000 };
        let base = per_call(n, || {
            let mut src = BytesMut::from(&wire::encode(black_box(&msg))[..]);
            black_box(Decoder::subscriber().decode(&mut src).unwrap());
        });
        // A frame inside a batch whose seal the receiver holds: one hash and a comparison.
        let mut verifier = FrameVerifier::new(&ann).expect("valid announcement");
        assert_eq!(verifier.check(&frame, Some(seal)), Check::Authentic);
        let digest = per_call(n, || {
            assert_eq!(verifier.check(black_box(&frame), None), Check::Authentic);
        });
        println!(
            "{name:<16} {len:>8} {base:>12.1} {digest:>12.1} {:>13.1}x",
            digest / base
        );
        base_s += base * per_sec;
        digest_s += digest * per_sec;
    }
    // A seal of a typical 50 ms batch (a P-frame and two audio frames), made and checked.
    let batch: Vec<Frame> = (0..3u64)
        .map(|i| {
            let (kind, len) = if i == 0 {
                (FrameKind::Video, 9_000)
            } else {
                (FrameKind::Audio, 380)
            };
            let mut payload = vec![0u8; len];
            payload[0] = if kind == FrameKind::Audio { 0xaf } else { 0x27 };
            payload[1] = 1;
            Frame::new(kind, 40, 7 + i, Bytes::from(payload))
        })
        .collect();
    let sign = per_call(5_000, || {
        black_box(signer.seal(black_box(&batch)));
    });
    let seal = signer.seal(&batch);
    let digest_first = per_call(5_000, || {
        let mut v = FrameVerifier::new(&ann).expect("valid announcement");
        black_box(v.check(black_box(&batch[0]), None));
    });
    let check_seal = per_call(5_000, || {
        let mut v = FrameVerifier::new(&ann).expect("valid announcement");
        assert_eq!(
            v.check(black_box(&batch[0]), Some(seal.clone())),
            Check::Authentic
        );
    }) - digest_first;
    println!(
        "a seal of 3 frames: the origin makes it in {sign:.1} us (hashes included); a receiver checks its signature in {check_seal:.1} us"
    );
    let batched = digest_s + check_seal * seals_per_sec;
    let per_frame = digest_s + check_seal * frames_per_sec;
    println!(
        "per second of a 2.5 Mbit/s stream: baseline {:.2} ms; each receiver checks in {:.2} ms with a seal every \
         50 ms ({:.3}% of a core), {:.2} ms with a signature on every frame ({:.3}%)",
        base_s / 1e3,
        batched / 1e3,
        batched / 1e4,
        per_frame / 1e3,
        per_frame / 1e4
    );
}
