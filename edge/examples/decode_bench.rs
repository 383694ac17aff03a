//! What the bounded decoders cost a publisher's session, side by side with rml_rtmp's in the same run:
//! 60 s of a 2.5 Mbit/s stream (30 fps video with a keyframe every 2 s, 48 kHz AAC) as OBS sends it, fed
//! in 8 KiB reads.
//!
//! `cargo run --release -p streamr-edge --example decode_bench`

use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use streamr_edge::chunk::encode_message;
use streamr_edge::chunk_decoder::ChunkDecoder;
use streamr_edge::{EdgeConfig, amf0, message, sans_io};

const READ: usize = 8192;
const ROUNDS: u32 = 5;

fn command(stream_id: u32, name: &str, txn: f64, rest: Vec<Amf0Value>) -> Vec<u8> {
    let mut v = vec![Amf0Value::Utf8String(name.into()), Amf0Value::Number(txn)];
    v.extend(rest);
    encode_message(3, 20, stream_id, 0, &amf0::encode(&v), 128).to_vec()
}

/// The session's bytes after the handshake, as reads: set chunk size and connect, createStream, publish
/// (one read each, so that rml_rtmp's session has accepted each request before the next arrives), then the
/// media in 8 KiB reads. Also the media bytes.
fn publish_session() -> (Vec<Vec<u8>>, usize) {
    let mut app = HashMap::new();
    app.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
    let mut b = message::set_chunk_size(4096).to_vec();
    b.extend(command(0, "connect", 1.0, vec![Amf0Value::Object(app)]));
    let mut reads = vec![b];
    reads.push(command(0, "createStream", 2.0, vec![Amf0Value::Null]));
    reads.push(command(
        1,
        "publish",
        3.0,
        vec![
            Amf0Value::Null,
            Amf0Value::Utf8String("bench".into()),
            Amf0Value::Utf8String("live".into()),
        ],
    ));
    let mut b = Vec::new();
    let mut media = 0;
    let (mut video_ms, mut audio_ms) = (0f64, 0f64);
    let mut frame = 0u32;
    while video_ms < 60_000.0 {
        // Interleave by time, as an encoder does.
        if audio_ms <= video_ms {
            let p = vec![0xafu8; 380];
            b.extend_from_slice(&encode_message(4, 8, 1, audio_ms as u32, &p, 4096));
            audio_ms += 1024.0 / 48.0;
            media += p.len();
        } else {
            let size = if frame.is_multiple_of(60) {
                90_000
            } else {
                9_000
            };
            let mut p = vec![0x27u8; size];
            if frame.is_multiple_of(60) {
                p[0] = 0x17;
            }
            b.extend_from_slice(&encode_message(6, 9, 1, video_ms as u32, &p, 4096));
            video_ms += 1000.0 / 30.0;
            frame += 1;
            media += size;
        }
    }
    reads.extend(b.chunks(READ).map(<[u8]>::to_vec));
    (reads, media)
}

fn best(mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut n = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        n = f();
        best = best.min(t.elapsed());
    }
    (best, n)
}

fn main() {
    let (reads, media) = publish_session();
    let mb = reads.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    println!(
        "input: {:.1} MB ({:.1} MB of media, 60 s at {:.2} Mbit/s), {READ}-byte reads, best of {ROUNDS}",
        mb,
        media as f64 / 1e6,
        media as f64 * 8.0 / 60.0 / 1e6
    );

    let (rml_chunks, n1) = best(|| {
        let mut d = ChunkDeserializer::new();
        let mut n = 0;
        for read in &reads {
            let mut input = &read[..];
            while let Some(m) = d.get_next_message(input).unwrap() {
                input = &[];
                if m.type_id == 1 {
                    d.set_max_chunk_size(4096).unwrap();
                }
                n += 1;
            }
        }
        n
    });
    let (our_chunks, n2) = best(|| {
        let mut d = ChunkDecoder::new(8 << 20);
        let mut n = 0;
        for read in &reads {
            d.push(read);
            while let Some(m) = d.next_message().unwrap() {
                if m.type_id == 1 {
                    d.set_chunk_size(4096).unwrap();
                }
                n += 1;
            }
        }
        n
    });
    assert_eq!(n1, n2, "both decoders see the same messages");

    let (rml_session, n3) = best(|| {
        let (mut s, _) = ServerSession::new(ServerSessionConfig::new()).unwrap();
        let mut n = 0;
        for read in &reads {
            let mut pending: Vec<ServerSessionResult> = s.handle_input(read).unwrap();
            while let Some(r) = pending.pop() {
                if let ServerSessionResult::RaisedEvent(e) = r {
                    n += 1;
                    match e {
                        ServerSessionEvent::ConnectionRequested { request_id, .. }
                        | ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                            pending.extend(s.accept_request(request_id).unwrap())
                        }
                        _ => {}
                    }
                }
            }
        }
        n
    });
    let (our_session, _) = best(|| {
        sans_io::server_session(
            EdgeConfig::new(([127, 0, 0, 1], 0).into()),
            false,
            &mut reads.iter().map(Vec::as_slice),
        )
        .unwrap();
        0
    });
    let rate = |d: Duration| mb / d.as_secs_f64();
    println!("chunk layer ({n1} messages):");
    println!(
        "  rml_rtmp ChunkDeserializer   {:>8.1} MB/s",
        rate(rml_chunks)
    );
    println!(
        "  streamr ChunkDecoder         {:>8.1} MB/s   ({:.2}x rml_rtmp's time)",
        rate(our_chunks),
        our_chunks.as_secs_f64() / rml_chunks.as_secs_f64()
    );
    println!(
        "whole session ({n3} events from rml_rtmp's; ours also pushes every frame into a hub, rml_rtmp's \
         only raises it):"
    );
    println!(
        "  rml_rtmp ServerSession       {:>8.1} MB/s",
        rate(rml_session)
    );
    println!(
        "  streamr session + hub        {:>8.1} MB/s   ({:.2}x rml_rtmp's time)",
        rate(our_session),
        our_session.as_secs_f64() / rml_session.as_secs_f64()
    );
    println!(
        "a 2.5 Mbit/s publisher costs the streamr session {:.3}% of a core",
        0.3125 / rate(our_session) * 100.0
    );
}
