//! RTMP messages both ways, with no I/O: what a peer's whole message means (protocol control, user control,
//! AMF0 commands and data, media), parsed with the bounded AMF0 decoder; and the control and command
//! messages we send, as complete chunks with full headers.
//!
//! Every message we send has a type 0 header, so no header-compression state is shared between messages:
//! commands, statuses and media (see [`crate::chunk`]) can be queued in any order without the two sides
//! falling out of step.

use crate::amf0::{self, AmfError};
use crate::chunk::{self, CHUNK_SIZE};
use crate::chunk_decoder::Message;
use bytes::Bytes;
use rml_amf0::Amf0Value;
use std::collections::HashMap;

/// Message type ids (RTMP specification, section 5.4 and 7.1).
pub mod types {
    /// Set Chunk Size.
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Abort Message.
    pub const ABORT: u8 = 2;
    /// Acknowledgement.
    pub const ACKNOWLEDGEMENT: u8 = 3;
    /// User Control Message.
    pub const USER_CONTROL: u8 = 4;
    /// Window Acknowledgement Size.
    pub const WINDOW_ACK_SIZE: u8 = 5;
    /// Set Peer Bandwidth.
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    /// Audio.
    pub const AUDIO: u8 = 8;
    /// Video.
    pub const VIDEO: u8 = 9;
    /// Data in AMF3 framing (a zero byte, then AMF0 in practice).
    pub const DATA_AMF3: u8 = 15;
    /// Command in AMF3 framing (a zero byte, then AMF0 in practice).
    pub const COMMAND_AMF3: u8 = 17;
    /// Data (AMF0): `@setDataFrame`, `onMetaData`.
    pub const DATA_AMF0: u8 = 18;
    /// Command (AMF0): `connect`, `createStream`, `publish`, `play`, `onStatus`, `_result`...
    pub const COMMAND_AMF0: u8 = 20;
}

/// User control event types we act on.
pub mod events {
    /// Stream Begin.
    pub const STREAM_BEGIN: u16 = 0;
    /// Ping Request (server to client; some clients send it too).
    pub const PING_REQUEST: u16 = 6;
    /// Ping Response.
    pub const PING_RESPONSE: u16 = 7;
}

/// Chunk stream for protocol control messages (the specification's choice).
const CSID_CONTROL: u8 = 2;
/// Chunk stream for the commands we send (media uses 7 to 9, our `onStatus` 10).
const CSID_COMMAND: u8 = 3;

/// A command: `name(transaction, object, args...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Command name (`connect`, `publish`, `_result`, `onStatus`...).
    pub name: String,
    /// Transaction id (0 when absent).
    pub transaction: f64,
    /// The command object (often null).
    pub object: Amf0Value,
    /// The remaining arguments.
    pub args: Vec<Amf0Value>,
}

/// What a message from a peer means.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// The peer's new chunk size.
    SetChunkSize(u32),
    /// Drop the partial message of this chunk stream.
    Abort(u32),
    /// The peer acknowledges bytes.
    Acknowledgement(u32),
    /// A user control event with its data.
    UserControl {
        /// Event type.
        event: u16,
        /// Event data (a stream id, or a ping's timestamp).
        data: Bytes,
    },
    /// The peer wants an acknowledgement every this many bytes.
    WindowAckSize(u32),
    /// The peer limits our output bandwidth (advisory; ignored).
    SetPeerBandwidth(u32),
    /// Audio or video: the FLV tag body, untouched.
    Media,
    /// A data message (`@setDataFrame`, `onMetaData`, ...).
    Data(Vec<Amf0Value>),
    /// A command.
    Command(Command),
    /// Anything else (aggregate messages, shared objects): ignored, as other servers do.
    Other,
}

/// Why a peer's message could not be understood.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    /// A control message shorter than its fixed size.
    #[error("message of type {0} is too short")]
    Short(u8),
    /// The AMF0 body could not be decoded.
    #[error("{0}")]
    Amf(#[from] AmfError),
    /// A command whose first value is not its name.
    #[error("a command message without a command name")]
    NoCommandName,
}

impl MessageError {
    /// True when a limit was hit (nesting, value count): a hostile peer, counted as such.
    pub fn is_limit(&self) -> bool {
        matches!(self, MessageError::Amf(e) if e.is_limit())
    }
}

fn be_u32(b: &[u8], type_id: u8) -> Result<u32, MessageError> {
    match b.get(..4) {
        Some(x) => Ok(u32::from_be_bytes([x[0], x[1], x[2], x[3]])),
        None => Err(MessageError::Short(type_id)),
    }
}

/// Parses a whole message. AMF bodies go through the bounded decoder; nothing a peer sends reaches
/// rml_amf0's recursive one.
pub fn parse(m: &Message) -> Result<Inbound, MessageError> {
    use types::*;
    let p = &m.payload[..];
    Ok(match m.type_id {
        SET_CHUNK_SIZE => Inbound::SetChunkSize(be_u32(p, m.type_id)?),
        ABORT => Inbound::Abort(be_u32(p, m.type_id)?),
        ACKNOWLEDGEMENT => Inbound::Acknowledgement(be_u32(p, m.type_id)?),
        USER_CONTROL => {
            if p.len() < 2 {
                return Err(MessageError::Short(m.type_id));
            }
            Inbound::UserControl {
                event: u16::from_be_bytes([p[0], p[1]]),
                data: m.payload.slice(2..),
            }
        }
        WINDOW_ACK_SIZE => Inbound::WindowAckSize(be_u32(p, m.type_id)?),
        SET_PEER_BANDWIDTH => Inbound::SetPeerBandwidth(be_u32(p, m.type_id)?),
        AUDIO | VIDEO => Inbound::Media,
        DATA_AMF0 => Inbound::Data(amf0::decode(p)?),
        DATA_AMF3 => Inbound::Data(amf0::decode(p.get(1..).unwrap_or_default())?),
        COMMAND_AMF0 => Inbound::Command(command(amf0::decode(p)?)?),
        COMMAND_AMF3 => Inbound::Command(command(amf0::decode(p.get(1..).unwrap_or_default())?)?),
        _ => Inbound::Other,
    })
}

fn command(values: Vec<Amf0Value>) -> Result<Command, MessageError> {
    let mut values = values.into_iter();
    let Some(Amf0Value::Utf8String(name)) = values.next() else {
        return Err(MessageError::NoCommandName);
    };
    let transaction = match values.next() {
        Some(Amf0Value::Number(n)) => n,
        _ => 0.0,
    };
    let object = values.next().unwrap_or(Amf0Value::Null);
    Ok(Command {
        name,
        transaction,
        object,
        args: values.collect(),
    })
}

/// A protocol control message (chunk stream 2, message stream 0).
pub fn control(type_id: u8, body: &[u8]) -> Bytes {
    // Control messages are at most 6 bytes: they fit any chunk size, including the initial 128.
    chunk::encode_message(CSID_CONTROL, type_id, 0, 0, body, CHUNK_SIZE)
}

/// Set Chunk Size.
pub fn set_chunk_size(size: u32) -> Bytes {
    control(types::SET_CHUNK_SIZE, &size.to_be_bytes())
}

/// Window Acknowledgement Size.
pub fn window_ack_size(size: u32) -> Bytes {
    control(types::WINDOW_ACK_SIZE, &size.to_be_bytes())
}

/// Set Peer Bandwidth (limit type 2, dynamic).
pub fn set_peer_bandwidth(size: u32) -> Bytes {
    let mut b = size.to_be_bytes().to_vec();
    b.push(2);
    control(types::SET_PEER_BANDWIDTH, &b)
}

/// Acknowledgement of `received` bytes (wrapping, as the specification says).
pub fn acknowledgement(received: u64) -> Bytes {
    control(types::ACKNOWLEDGEMENT, &(received as u32).to_be_bytes())
}

/// A user control event.
pub fn user_control(event: u16, data: &[u8]) -> Bytes {
    let mut b = event.to_be_bytes().to_vec();
    b.extend_from_slice(data);
    control(types::USER_CONTROL, &b)
}

/// A command on message stream `stream_id`, in chunks of our chunk size (sent before anything else).
pub fn command_message(
    stream_id: u32,
    name: &str,
    transaction: f64,
    rest: Vec<Amf0Value>,
) -> Bytes {
    let mut values = vec![
        Amf0Value::Utf8String(name.into()),
        Amf0Value::Number(transaction),
    ];
    values.extend(rest);
    let body = amf0::encode(&values);
    chunk::encode_message(
        CSID_COMMAND,
        types::COMMAND_AMF0,
        stream_id,
        0,
        &body,
        CHUNK_SIZE,
    )
}

/// The `{level, code, description}` object of a status.
pub fn status_object(level: &str, code: &str, description: &str) -> Amf0Value {
    let mut info = HashMap::new();
    info.insert("level".to_string(), Amf0Value::Utf8String(level.into()));
    info.insert("code".to_string(), Amf0Value::Utf8String(code.into()));
    info.insert(
        "description".to_string(),
        Amf0Value::Utf8String(description.into()),
    );
    Amf0Value::Object(info)
}

/// The `code` and `level` of an `onStatus` command, if it is one.
pub fn status_of(c: &Command) -> Option<(String, String, Option<String>)> {
    if c.name != "onStatus" {
        return None;
    }
    // The info object is the first object after the (null) command object; some servers put it first.
    let props = std::iter::once(&c.object)
        .chain(&c.args)
        .find_map(|v| match v {
            Amf0Value::Object(p) => Some(p),
            _ => None,
        })?;
    let text = |k: &str| match props.get(k) {
        Some(Amf0Value::Utf8String(s)) => Some(s.clone()),
        _ => None,
    };
    Some((
        text("code")?,
        text("level").unwrap_or_default(),
        text("description"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_decoder::ChunkDecoder;

    fn decode_all(bytes: &[u8]) -> Vec<Inbound> {
        let mut d = ChunkDecoder::new(1 << 20);
        d.set_chunk_size(CHUNK_SIZE as u32).unwrap();
        d.push(bytes);
        let mut v = Vec::new();
        while let Some(m) = d.next_message().unwrap() {
            v.push(parse(&m).unwrap());
        }
        v
    }

    #[test]
    fn what_we_send_parses_back() {
        let mut w = window_ack_size(2_500_000).to_vec();
        w.extend_from_slice(&set_peer_bandwidth(2_500_000));
        w.extend_from_slice(&acknowledgement(u64::from(u32::MAX) + 5));
        w.extend_from_slice(&user_control(events::STREAM_BEGIN, &1u32.to_be_bytes()));
        w.extend_from_slice(&command_message(
            1,
            "onStatus",
            0.0,
            vec![
                Amf0Value::Null,
                status_object("status", "NetStream.Play.Start", "go"),
            ],
        ));
        let got = decode_all(&w);
        assert_eq!(got[0], Inbound::WindowAckSize(2_500_000));
        assert_eq!(got[1], Inbound::SetPeerBandwidth(2_500_000));
        assert_eq!(got[2], Inbound::Acknowledgement(4));
        assert!(
            matches!(&got[3], Inbound::UserControl { event: 0, data } if data[..] == [0, 0, 0, 1])
        );
        let Inbound::Command(c) = &got[4] else {
            panic!("{:?}", got[4]);
        };
        assert_eq!(
            status_of(c),
            Some((
                "NetStream.Play.Start".into(),
                "status".into(),
                Some("go".into())
            ))
        );
        // The first message of a session is sent before the peer knows our chunk size: it must fit 128.
        assert!(set_chunk_size(4096).len() <= 128 + 12);
    }

    #[test]
    fn short_and_nameless_messages_are_errors() {
        let m = |type_id: u8, payload: &'static [u8]| Message {
            csid: 3,
            type_id,
            stream_id: 0,
            timestamp: 0,
            payload: Bytes::from_static(payload),
        };
        assert_eq!(parse(&m(1, &[0, 0])), Err(MessageError::Short(1)));
        assert_eq!(parse(&m(4, &[0])), Err(MessageError::Short(4)));
        assert_eq!(
            parse(&m(20, &[0x00, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(MessageError::NoCommandName)
        );
        assert_eq!(parse(&m(17, &[])), Err(MessageError::NoCommandName));
        assert_eq!(parse(&m(22, &[1, 2, 3])), Ok(Inbound::Other));
    }
}
