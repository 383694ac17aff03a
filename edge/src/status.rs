//! `onStatus` messages this edge writes itself (errors rml_rtmp cannot express, stream end notices).

use crate::chunk;
use bytes::Bytes;
use rml_amf0::Amf0Value;
use std::collections::HashMap;

/// Chunk stream for our own command messages; rml_rtmp uses 2 to 6 and media uses 7 to 9.
const CSID_STATUS: u8 = 10;

/// Encodes `onStatus(0, null, {level, code, description})` on `stream_id` as complete chunks.
pub fn on_status(stream_id: u32, level: &str, code: &str, description: &str) -> Bytes {
    let mut info = HashMap::new();
    info.insert("level".to_string(), Amf0Value::Utf8String(level.into()));
    info.insert("code".to_string(), Amf0Value::Utf8String(code.into()));
    info.insert(
        "description".to_string(),
        Amf0Value::Utf8String(description.into()),
    );
    let values = vec![
        Amf0Value::Utf8String("onStatus".into()),
        Amf0Value::Number(0.0),
        Amf0Value::Null,
        Amf0Value::Object(info),
    ];
    let payload = rml_amf0::serialize(&values).unwrap_or_default();
    chunk::encode_message(CSID_STATUS, 20, stream_id, 0, &payload, chunk::CHUNK_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkDeserializer;

    #[test]
    fn is_a_parseable_command() {
        let b = on_status(1, "error", "NetStream.Publish.Unauthorized", "needs key");
        let mut de = ChunkDeserializer::new();
        de.set_max_chunk_size(chunk::CHUNK_SIZE).unwrap();
        let m = de.get_next_message(&b).unwrap().unwrap();
        assert_eq!(m.type_id, 20);
        let values = rml_amf0::deserialize(&mut &m.data[..]).unwrap();
        assert_eq!(values[0], Amf0Value::Utf8String("onStatus".into()));
        let props = values[3].clone().get_object_properties().unwrap();
        assert_eq!(
            props["code"],
            Amf0Value::Utf8String("NetStream.Publish.Unauthorized".into())
        );
    }
}
