//! Stream metadata (`onMetaData`) between rml_rtmp's `StreamMetadata` and the AMF0 payload of a data frame,
//! which is how metadata travels through hubs and the mesh.

use crate::amf0;
use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::sessions::StreamMetadata;
use std::collections::HashMap;

/// Encodes metadata as the AMF0 values `"onMetaData", {..}`: the body of a data message a player expects.
pub fn to_payload(m: &StreamMetadata) -> Bytes {
    let mut p = HashMap::new();
    let mut num = |k: &str, v: Option<f64>| {
        if let Some(v) = v {
            p.insert(k.to_string(), Amf0Value::Number(v));
        }
    };
    num("width", m.video_width.map(f64::from));
    num("height", m.video_height.map(f64::from));
    num("videocodecid", m.video_codec_id.map(f64::from));
    num("framerate", m.video_frame_rate.map(f64::from));
    num("videodatarate", m.video_bitrate_kbps.map(f64::from));
    num("audiocodecid", m.audio_codec_id.map(f64::from));
    num("audiodatarate", m.audio_bitrate_kbps.map(f64::from));
    num("audiosamplerate", m.audio_sample_rate.map(f64::from));
    num("audiochannels", m.audio_channels.map(f64::from));
    if let Some(stereo) = m.audio_is_stereo {
        p.insert("stereo".into(), Amf0Value::Boolean(stereo));
    }
    if let Some(enc) = &m.encoder {
        p.insert("encoder".into(), Amf0Value::Utf8String(enc.clone()));
    }
    let values = vec![
        Amf0Value::Utf8String("onMetaData".into()),
        Amf0Value::Object(p),
    ];
    Bytes::from(amf0::encode(&values))
}

/// Decodes a data frame's payload back into metadata; `None` if it is not `onMetaData`. The payload may come
/// from anyone (an upstream server, a mesh peer): it is decoded with the bounded AMF0 decoder.
pub fn from_payload(payload: &[u8]) -> Option<StreamMetadata> {
    let mut values = amf0::decode(payload).ok()?.into_iter();
    match values.next()? {
        Amf0Value::Utf8String(s) if s == "onMetaData" => {}
        _ => return None,
    }
    Some(from_properties(&values.next()?.get_object_properties()?))
}

/// Metadata from the properties of an `onMetaData` object (or ECMA array). Numbers that are negative, not
/// finite or of the wrong type are left out.
pub fn from_properties(props: &HashMap<String, Amf0Value>) -> StreamMetadata {
    let num = |k: &str| match props.get(k) {
        Some(Amf0Value::Number(n)) if n.is_finite() && *n >= 0.0 => Some(*n),
        _ => None,
    };
    let mut m = StreamMetadata::new();
    m.video_width = num("width").map(|v| v as u32);
    m.video_height = num("height").map(|v| v as u32);
    m.video_codec_id = num("videocodecid").map(|v| v as u32);
    m.video_frame_rate = num("framerate").map(|v| v as f32);
    m.video_bitrate_kbps = num("videodatarate").map(|v| v as u32);
    m.audio_codec_id = num("audiocodecid").map(|v| v as u32);
    m.audio_bitrate_kbps = num("audiodatarate").map(|v| v as u32);
    m.audio_sample_rate = num("audiosamplerate").map(|v| v as u32);
    m.audio_channels = num("audiochannels").map(|v| v as u32);
    m.audio_is_stereo = match props.get("stereo") {
        Some(Amf0Value::Boolean(b)) => Some(*b),
        _ => None,
    };
    m.encoder = match props.get("encoder") {
        Some(Amf0Value::Utf8String(s)) => Some(s.clone()),
        _ => None,
    };
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut m = StreamMetadata::new();
        m.video_width = Some(1280);
        m.video_height = Some(720);
        m.video_codec_id = Some(7);
        m.video_frame_rate = Some(30.0);
        m.audio_sample_rate = Some(48000);
        m.audio_is_stereo = Some(true);
        m.encoder = Some("obs".into());
        let back = from_payload(&to_payload(&m)).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn rejects_other_payloads() {
        assert!(from_payload(b"").is_none());
        assert!(from_payload(b"\xff\x00garbage").is_none());
        let other = amf0::encode(&[Amf0Value::Utf8String("onCuePoint".into())]);
        assert!(from_payload(&other).is_none());
    }
}
