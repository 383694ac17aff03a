//! `onStatus` messages this edge writes (refusals, stream start and end notices).

use crate::amf0;
use crate::chunk;
use crate::message::{self, types};
use bytes::Bytes;
use rml_amf0::Amf0Value;

/// Chunk stream for our `onStatus` messages; control uses 2, commands 3, media 7 to 9.
const CSID_STATUS: u8 = 10;

/// Encodes `onStatus(0, null, {level, code, description})` on `stream_id` as complete chunks.
pub fn on_status(stream_id: u32, level: &str, code: &str, description: &str) -> Bytes {
    let values = [
        Amf0Value::Utf8String("onStatus".into()),
        Amf0Value::Number(0.0),
        Amf0Value::Null,
        message::status_object(level, code, description),
    ];
    let payload = amf0::encode(&values);
    chunk::encode_message(
        CSID_STATUS,
        types::COMMAND_AMF0,
        stream_id,
        0,
        &payload,
        chunk::CHUNK_SIZE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_decoder::ChunkDecoder;
    use crate::message::{Inbound, parse, status_of};

    #[test]
    fn is_a_parseable_command() {
        let b = on_status(1, "error", "NetStream.Publish.Unauthorized", "needs key");
        let mut de = ChunkDecoder::new(1 << 16);
        de.set_chunk_size(chunk::CHUNK_SIZE as u32).unwrap();
        de.push(&b);
        let m = de.next_message().unwrap().unwrap();
        assert_eq!((m.type_id, m.stream_id), (20, 1));
        let Inbound::Command(c) = parse(&m).unwrap() else {
            panic!("not a command");
        };
        assert_eq!(
            status_of(&c).unwrap(),
            (
                "NetStream.Publish.Unauthorized".to_string(),
                "error".to_string(),
                Some("needs key".to_string())
            )
        );
    }
}
