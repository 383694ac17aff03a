#![no_main]
//! A subscription's state machine (`streamr_mesh::session::Upstream`) driven by a hostile provider: the
//! input is a list of moves (genuine frames in any order, with or without their batch's seal, altered
//! frames, frames carrying another batch's seal, another origin's frames, path and publish changes, raw
//! messages, the clock). It must never panic, and no frame other than the origin's own, or that comes out of
//! order, may ever reach the hub.

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use libp2p_identity::{Keypair, PeerId};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use streamr_media::{Frame, FrameKind};
use streamr_mesh::announce::Announcement;
use streamr_mesh::auth::FrameSigner;
use streamr_mesh::session::upstream::Request;
use streamr_mesh::session::{Event, Upstream};
use streamr_mesh::wire::{self, Message, SignedFrame};
use tokio_util::codec::Decoder as _;

/// Everything sealed once: the origin, two of its publishes and 64 frames of each, in batches of
/// [`BATCH`], and a stranger's 64 frames (other bytes) under its own announcement of the same stream.
struct World {
    origin: PeerId,
    provider: PeerId,
    me: PeerId,
    publishes: [Announcement; 2],
    frames: [Vec<SignedFrame>; 2],
    stranger: Vec<SignedFrame>,
}

/// Frames per seal.
const BATCH: usize = 4;

/// The origin's frame `i` (numbered `i + 1`); the stranger's differs in its last byte.
fn frame(i: u64, stranger: bool) -> Frame {
    let (kind, body): (FrameKind, &'static [u8]) = match i % 5 {
        0 => (FrameKind::Video, &[0x17, 1, 0, 0, 0, 1, 2, 3]),
        1 | 3 => (FrameKind::Audio, &[0xaf, 1, 9, 9]),
        2 => (FrameKind::Video, &[0x27, 1, 0, 0, 0, 4]),
        _ => (FrameKind::Data, b"\x02\x00\x0aonMetaData"),
    };
    let mut body = body.to_vec();
    if stranger {
        *body.last_mut().expect("not empty") ^= 0x80;
    }
    Frame::new(kind, i as u32 * 20, i + 1, Bytes::from(body))
}

fn signed(key: &Keypair, a: &Announcement, stranger: bool) -> Vec<SignedFrame> {
    let signer = FrameSigner::new(key, a).expect("the origin's key");
    let frames: Vec<Frame> = (0..64).map(|i| frame(i, stranger)).collect();
    frames
        .chunks(BATCH)
        .flat_map(|batch| {
            let seal = signer.seal(batch);
            batch.iter().enumerate().map(move |(i, f)| SignedFrame {
                frame: f.clone(),
                epoch: a.started_ms,
                seal: (i == 0).then(|| seal.clone()),
            })
        })
        .collect()
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let key = Keypair::ed25519_from_bytes([7u8; 32]).unwrap();
        let other = Keypair::ed25519_from_bytes([8u8; 32]).unwrap();
        let a = Announcement::sign(&key, "s", 1000).unwrap();
        let b = Announcement::sign(&key, "s", 2000).unwrap();
        let theirs = Announcement::sign(&other, "s", 1000).unwrap();
        World {
            origin: key.public().to_peer_id(),
            provider: Keypair::ed25519_from_bytes([9u8; 32])
                .unwrap()
                .public()
                .to_peer_id(),
            me: Keypair::ed25519_from_bytes([10u8; 32])
                .unwrap()
                .public()
                .to_peer_id(),
            frames: [signed(&key, &a, false), signed(&key, &b, false)],
            stranger: signed(&other, &theirs, true),
            publishes: [a, b],
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let t0 = Instant::now();
    let mut now = t0;
    let mut up = Upstream::new(
        w.me,
        w.provider,
        Request {
            name: "s".into(),
            origin: None,
            prefix: None,
            have_seq: 0,
        },
        Duration::from_secs(2),
        None,
        t0,
    );
    let accept = Message::Accept {
        announcement: w.publishes[0].clone(),
        hops: 1,
        path: vec![w.origin, w.provider],
        fallbacks: vec![],
    };
    if up.on_answer(accept, now).is_err() {
        panic!("a genuine accept is refused");
    }
    // Which publish the provider announced last, and what may still reach the hub: the origin's own frames
    // (the same bytes in both publishes), in order.
    let mut publish = 0usize;
    let mut last_media: Option<u64> = None;
    for mv in data.chunks(3).take(24) {
        let [op, a, b] = [mv[0], *mv.get(1).unwrap_or(&0), *mv.get(2).unwrap_or(&0)];
        let pick = |p: usize| w.frames[p][usize::from(a) % 64].clone();
        let msg = match op % 8 {
            0 => Message::Frame(pick(publish)),
            1 => {
                // A genuine frame without its seal (a batch's first frame whose seal a relay stripped).
                let mut f = pick(publish);
                f.seal = None;
                Message::Frame(f)
            }
            2 => {
                // Altered payload, the seal (if any) left as it was.
                let mut f = pick(publish);
                let mut body = f.frame.payload().to_vec();
                let i = usize::from(b) % body.len();
                body[i] ^= 1 | b;
                f.frame = Frame::new(
                    f.frame.kind(),
                    f.frame.timestamp(),
                    f.frame.seq(),
                    Bytes::from(body),
                );
                Message::Frame(f)
            }
            3 => {
                // Another batch's seal (or none), or the stranger's seal of the same position.
                let mut f = pick(publish);
                f.seal = if b & 1 == 0 {
                    w.frames[publish][usize::from(b >> 1) % 64].seal.clone()
                } else {
                    w.stranger[usize::from(a) % 64].seal.clone()
                };
                Message::Frame(f)
            }
            4 => Message::Frame(w.stranger[usize::from(a) % 64].clone()),
            5 => {
                let next = usize::from(a) % 2;
                Message::Path {
                    announcement: w.publishes[next].clone(),
                    hops: 1,
                    path: vec![w.origin, w.provider],
                }
            }
            6 => {
                let mut src = BytesMut::from(&mv[1..]);
                match wire::Decoder::subscriber().decode(&mut src) {
                    Ok(Some(m)) => m,
                    _ => continue,
                }
            }
            _ => {
                now += Duration::from_millis(u64::from(a) * 20);
                if up.on_timeout(now).is_err() {
                    return;
                }
                continue;
            }
        };
        let path_to = match &msg {
            Message::Path { announcement, .. } => Some(announcement.started_ms),
            _ => None,
        };
        match up.on_message(msg, now) {
            Ok(Event::Frame { frame, .. }) => {
                let origins = frame
                    .seq()
                    .checked_sub(1)
                    .and_then(|i| w.frames[publish].get(i as usize));
                assert!(
                    origins.is_some_and(|o| o.frame == frame),
                    "a frame its origin did not seal reached the hub: {frame:?}"
                );
                let media = frame.kind() != FrameKind::Data && !frame.is_sequence_header();
                if media {
                    assert!(
                        last_media.is_none_or(|l| frame.seq() > l),
                        "media out of order reached the hub"
                    );
                    last_media = Some(frame.seq());
                }
            }
            Ok(Event::Path { new_publish, .. }) => {
                if new_publish {
                    publish = 1;
                    last_media = None;
                }
                assert!(path_to.is_some());
            }
            Ok(Event::Stale | Event::Unsealed | Event::Waiting) => {}
            Err(_) => return,
        }
    }
});
