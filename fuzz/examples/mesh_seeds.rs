//! Writes the seed corpus of the mesh targets (`fuzz/corpus/{media_wire,media_session,catalog,announcement}`):
//! a few valid messages of each kind, signed with fixed keys so that the seeds do not change from run to
//! run. Run from `fuzz/`: `cargo +nightly run --example mesh_seeds`.

use bytes::Bytes;
use libp2p_identity::Keypair;
use std::path::Path;
use streamr_media::{Frame, FrameKind};
use streamr_mesh::announce::Announcement;
use streamr_mesh::auth::FrameSigner;
use streamr_mesh::catalog::{self, CatalogEntry, ProviderRecord};
use streamr_mesh::codec::Writer;
use streamr_mesh::wire::{self, Message, ProviderHint, SignedFrame};

fn key(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let (origin, relay) = (key(7), key(9));
    let (o, r) = (origin.public().to_peer_id(), relay.public().to_peer_id());
    let ann = Announcement::sign(&origin, "alice", 1_700_000_000_000).unwrap();
    let signer = FrameSigner::new(&origin, &ann).unwrap();
    let frames: Vec<Frame> = vec![
        Frame::new(
            FrameKind::Data,
            0,
            1,
            Bytes::from_static(b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09"),
        ),
        Frame::new(
            FrameKind::Video,
            0,
            2,
            Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]),
        ),
        Frame::new(
            FrameKind::Audio,
            0,
            3,
            Bytes::from_static(&[0xaf, 0, 0x11, 0x90]),
        ),
        Frame::new(
            FrameKind::Video,
            0,
            4,
            Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 5, 0x65, 1, 2, 3, 4]),
        ),
        Frame::new(
            FrameKind::Audio,
            21,
            5,
            Bytes::from_static(&[0xaf, 1, 0x21, 0x10, 0x04]),
        ),
        Frame::new(
            FrameKind::Video,
            33,
            6,
            Bytes::from_static(&[0x27, 1, 0, 0, 0, 0, 0, 0, 3, 0x41, 9, 9]),
        ),
    ];
    // Sealed as the origin seals them: metadata and the two codec headers alone, the keyframe and what
    // follows it as one batch.
    let signed: Vec<Message> = [&frames[0..1], &frames[1..2], &frames[2..3], &frames[3..]]
        .into_iter()
        .flat_map(|batch| {
            let seal = signer.seal(batch);
            batch.iter().enumerate().map(move |(i, f)| {
                Message::Frame(SignedFrame {
                    frame: f.clone(),
                    epoch: ann.started_ms,
                    seal: (i == 0).then(|| seal.clone()),
                })
            })
        })
        .collect();

    // media_wire: [mode, cut, messages...]
    let mut session = vec![0u8, 7];
    let mut control = vec![Message::Accept {
        announcement: ann.clone(),
        hops: 1,
        path: vec![o, r],
        fallbacks: vec![ProviderHint {
            peer: o,
            addrs: vec!["/ip4/198.51.100.7/udp/4001/quic-v1".parse().unwrap()],
        }],
    }];
    control.extend(signed.clone());
    control.push(Message::Path {
        announcement: ann.clone(),
        hops: 1,
        path: vec![o, r],
    });
    control.push(Message::End {
        reason: "stream ended".into(),
    });
    for m in &control {
        session.extend_from_slice(&wire::encode(m));
    }
    write("media_wire", "subscriber-session", &session);
    let mut provider = vec![1u8, 3];
    for m in [
        Message::Subscribe {
            name: "alice".into(),
            origin: Some(o),
            have_seq: 0,
        },
        Message::Ack {
            seq: 6,
            bytes: 4000,
        },
    ] {
        provider.extend_from_slice(&wire::encode(&m));
    }
    write("media_wire", "provider-session", &provider);
    let mut redirect = vec![0u8, 255];
    redirect.extend_from_slice(&wire::encode(&Message::Redirect {
        reason: "upload capacity reached".into(),
        providers: vec![ProviderHint {
            peer: r,
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        }],
    }));
    redirect.extend_from_slice(&wire::encode(&Message::Reject {
        reason: "no".into(),
    }));
    write("media_wire", "refusals", &redirect);

    // media_session: moves of three bytes (op, a, b).
    write(
        "media_session",
        "in-order",
        &[0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 7, 5, 0, 0, 4, 0],
    );
    write(
        "media_session",
        "altered",
        &[0, 0, 0, 0, 1, 0, 2, 2, 3, 0, 3, 0],
    );
    write(
        "media_session",
        "republish",
        &[0, 3, 0, 5, 1, 0, 0, 0, 0, 0, 1, 0, 7, 200, 0],
    );

    // catalog: an origin at hop 0, a relay at hop 1, and a relay falsely claiming hop 0.
    let rec = |k: &Keypair, a: &str| ProviderRecord::new(k, vec![a.parse().unwrap()]).unwrap();
    let good = catalog::encode(&[
        CatalogEntry::new(
            ann.clone(),
            rec(&origin, "/ip4/198.51.100.7/udp/4001/quic-v1"),
            0,
            8000,
        ),
        CatalogEntry::new(
            ann.clone(),
            rec(&relay, "/ip4/198.51.100.9/tcp/4001"),
            1,
            2500,
        ),
    ]);
    write("catalog", "origin-and-relay", &good);
    let lie = catalog::encode(&[CatalogEntry::new(
        ann.clone(),
        rec(&relay, "/ip4/10.0.0.1/tcp/1"),
        0,
        u32::MAX,
    )]);
    write("catalog", "false-hop", &lie);

    // announcement: as written inside messages; a forged start time too.
    let mut w = Writer::default();
    ann.write(&mut w);
    write("announcement", "valid", &w.finish());
    let mut w = Writer::default();
    ann.forged_with_start(1).write(&mut w);
    write("announcement", "forged", &w.finish());
    println!("seeds written under fuzz/corpus");
}
