//! A bounded, non-recursive AMF0 decoder for everything a peer sends (commands and data messages, server and
//! client side). rml_amf0's decoder recurses once per nesting level: 200,000 nested objects (1.4 MB) in one
//! command overflowed a tokio worker's stack and aborted the whole node, which `catch_unwind` cannot stop.
//! Here nesting lives in an explicit stack with a depth limit (64, as Red5 and ZLMediaKit chose), and the
//! number of values per message is capped, so memory and time follow the message size, which the chunk layer
//! bounds before any of it is buffered.
//!
//! Values come out as rml_amf0's [`Amf0Value`] so that the rest of the code keeps one type; [`encode`] is
//! ours too (rml_amf0's refuses strings over 64 KiB). Nesting is at most [`MAX_DEPTH`], so dropping a decoded
//! value (which recurses) is bounded too.

use rml_amf0::Amf0Value;
use std::collections::HashMap;

/// Deepest nesting of objects and arrays accepted (Red5 and ZLMediaKit chose the same).
pub const MAX_DEPTH: usize = 64;
/// Most values in one message, counting every nested one. An `onMetaData` has a few dozen; a command a few.
pub const MAX_VALUES: usize = 65_536;

/// Why AMF0 bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmfError {
    /// Objects or arrays nested deeper than [`MAX_DEPTH`]: never seen from an honest client.
    #[error("AMF0 values nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// More than [`MAX_VALUES`] values in one message.
    #[error("more than {MAX_VALUES} AMF0 values in one message")]
    TooManyValues,
    /// The bytes end inside a value.
    #[error("AMF0 data ends inside a value")]
    Truncated,
    /// A type marker this decoder does not accept (references, AMF3 switches, reserved markers).
    #[error("unsupported AMF0 type marker 0x{0:02x}")]
    UnsupportedMarker(u8),
    /// A string that is not UTF-8.
    #[error("AMF0 string is not UTF-8")]
    NotUtf8,
    /// An object property with an empty name that is not the object end.
    #[error("AMF0 object property with an empty name")]
    EmptyPropertyName,
}

impl AmfError {
    /// True for the errors that only a hostile peer produces (limits), as opposed to merely malformed data.
    pub fn is_limit(&self) -> bool {
        matches!(self, AmfError::TooDeep | AmfError::TooManyValues)
    }
}

mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0a;
    pub const DATE: u8 = 0x0b;
    pub const LONG_STRING: u8 = 0x0c;
    pub const UNSUPPORTED: u8 = 0x0d;
    pub const XML_DOCUMENT: u8 = 0x0f;
    pub const TYPED_OBJECT: u8 = 0x10;
}

/// A container being filled.
enum Open {
    /// An object, ECMA array or typed object: properties until the object end marker.
    Object {
        properties: HashMap<String, Amf0Value>,
        /// The name of the property whose value is being read.
        key: Option<String>,
    },
    /// A strict array with `remaining` elements still to read.
    Array {
        values: Vec<Amf0Value>,
        remaining: u32,
    },
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AmfError> {
        let end = self.pos.checked_add(n).ok_or(AmfError::Truncated)?;
        let s = self.bytes.get(self.pos..end).ok_or(AmfError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, AmfError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, AmfError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, AmfError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f64(&mut self) -> Result<f64, AmfError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }
    fn string(&mut self, len: usize) -> Result<String, AmfError> {
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| AmfError::NotUtf8)
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
}

/// Decodes a sequence of AMF0 values (the body of a command or data message).
///
/// Accepts what real encoders send: numbers, booleans, strings and long strings, objects, ECMA arrays (as
/// objects), strict arrays, typed objects (as objects; the class name is dropped), dates (as numbers), XML
/// documents (as strings), null, undefined and "unsupported". An object end marker at the top level ends the
/// sequence, as rml_amf0 does. References and AMF3 switches are refused.
pub fn decode(bytes: &[u8]) -> Result<Vec<Amf0Value>, AmfError> {
    let mut r = Reader { bytes, pos: 0 };
    let mut top = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut count = 0usize;
    loop {
        // Where the next value goes, and whether a container just closed.
        let finished = match stack.last_mut() {
            None => {
                if r.remaining() == 0 {
                    return Ok(top);
                }
                None
            }
            Some(Open::Array { values, remaining }) => {
                if *remaining == 0 {
                    Some(Amf0Value::StrictArray(std::mem::take(values)))
                } else {
                    *remaining -= 1;
                    None
                }
            }
            Some(Open::Object { properties, key }) => {
                let len = usize::from(r.u16()?);
                if len == 0 {
                    if r.u8()? != marker::OBJECT_END {
                        return Err(AmfError::EmptyPropertyName);
                    }
                    Some(Amf0Value::Object(std::mem::take(properties)))
                } else {
                    *key = Some(r.string(len)?);
                    None
                }
            }
        };
        let value = match finished {
            Some(v) => {
                stack.pop();
                v
            }
            None => {
                let m = r.u8()?;
                count += 1;
                if count > MAX_VALUES {
                    return Err(AmfError::TooManyValues);
                }
                let open = |stack: &mut Vec<Open>, o: Open| {
                    if stack.len() >= MAX_DEPTH {
                        return Err(AmfError::TooDeep);
                    }
                    stack.push(o);
                    Ok(())
                };
                let object = || Open::Object {
                    properties: HashMap::new(),
                    key: None,
                };
                match m {
                    marker::NUMBER => Amf0Value::Number(r.f64()?),
                    marker::BOOLEAN => Amf0Value::Boolean(r.u8()? != 0),
                    marker::STRING => {
                        let len = usize::from(r.u16()?);
                        Amf0Value::Utf8String(r.string(len)?)
                    }
                    marker::LONG_STRING | marker::XML_DOCUMENT => {
                        let len = r.u32()? as usize;
                        Amf0Value::Utf8String(r.string(len)?)
                    }
                    marker::DATE => {
                        let ms = r.f64()?;
                        r.take(2)?; // time zone, unused by the format's own definition
                        Amf0Value::Number(ms)
                    }
                    marker::NULL => Amf0Value::Null,
                    marker::UNDEFINED | marker::UNSUPPORTED => Amf0Value::Undefined,
                    marker::OBJECT => {
                        open(&mut stack, object())?;
                        continue;
                    }
                    marker::ECMA_ARRAY => {
                        // The count is advisory (encoders get it wrong); the end marker ends the array.
                        r.u32()?;
                        open(&mut stack, object())?;
                        continue;
                    }
                    marker::TYPED_OBJECT => {
                        let len = usize::from(r.u16()?);
                        r.string(len)?;
                        open(&mut stack, object())?;
                        continue;
                    }
                    marker::STRICT_ARRAY => {
                        let n = r.u32()?;
                        // Every element takes at least one byte: a count beyond the bytes left is a lie, and
                        // nothing is reserved for it.
                        if n as usize > r.remaining() {
                            return Err(AmfError::Truncated);
                        }
                        open(
                            &mut stack,
                            Open::Array {
                                values: Vec::with_capacity((n as usize).min(64)),
                                remaining: n,
                            },
                        )?;
                        continue;
                    }
                    marker::OBJECT_END if stack.is_empty() => return Ok(top),
                    other => return Err(AmfError::UnsupportedMarker(other)),
                }
            }
        };
        match stack.last_mut() {
            None => top.push(value),
            Some(Open::Array { values, .. }) => values.push(value),
            Some(Open::Object { properties, key }) => {
                // A key was always read before a value in an object (see above).
                let k = key.take().unwrap_or_default();
                properties.insert(k, value);
            }
        }
    }
}

/// Encodes values, without recursion. Strings longer than 65,535 bytes become long strings (rml_amf0's
/// encoder refuses them), so whatever [`decode`] returned encodes again.
pub fn encode(values: &[Amf0Value]) -> Vec<u8> {
    enum Next<'a> {
        Value(&'a Amf0Value),
        Key(&'a str),
        ObjectEnd,
    }
    let mut out = Vec::new();
    let mut todo: Vec<Next<'_>> = values.iter().rev().map(Next::Value).collect();
    while let Some(next) = todo.pop() {
        let v = match next {
            Next::Key(k) => {
                // Keys were read with a 16-bit length or built by us; a longer one is cut, not mis-framed.
                let k = &k.as_bytes()[..k.len().min(usize::from(u16::MAX))];
                out.extend_from_slice(&(k.len() as u16).to_be_bytes());
                out.extend_from_slice(k);
                continue;
            }
            Next::ObjectEnd => {
                out.extend_from_slice(&[0, 0, marker::OBJECT_END]);
                continue;
            }
            Next::Value(v) => v,
        };
        match v {
            Amf0Value::Number(n) => {
                out.push(marker::NUMBER);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Amf0Value::Boolean(b) => out.extend_from_slice(&[marker::BOOLEAN, u8::from(*b)]),
            Amf0Value::Utf8String(s) => match u16::try_from(s.len()) {
                Ok(len) => {
                    out.push(marker::STRING);
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                Err(_) => {
                    out.push(marker::LONG_STRING);
                    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
            },
            Amf0Value::Null => out.push(marker::NULL),
            Amf0Value::Undefined => out.push(marker::UNDEFINED),
            Amf0Value::Object(props) => {
                out.push(marker::OBJECT);
                todo.push(Next::ObjectEnd);
                for (k, v) in props {
                    todo.push(Next::Value(v));
                    todo.push(Next::Key(k));
                }
            }
            Amf0Value::StrictArray(items) => {
                out.push(marker::STRICT_ARRAY);
                out.extend_from_slice(&(items.len() as u32).to_be_bytes());
                todo.extend(items.iter().rev().map(Next::Value));
            }
        }
    }
    out
}

/// The nesting depth of a value (0 for a scalar), without recursion: for checks and tests.
pub fn depth(value: &Amf0Value) -> usize {
    let mut max = 0;
    let mut todo = vec![(value, 0usize)];
    while let Some((v, d)) = todo.pop() {
        max = max.max(d);
        match v {
            Amf0Value::Object(p) => todo.extend(p.values().map(|c| (c, d + 1))),
            Amf0Value::StrictArray(a) => todo.extend(a.iter().map(|c| (c, d + 1))),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize, closed: bool) -> Vec<u8> {
        let mut b = vec![0x02, 0x00, 0x07];
        b.extend_from_slice(b"connect");
        for _ in 0..depth {
            b.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
        }
        b.push(0x05);
        if closed {
            for _ in 0..depth {
                b.extend_from_slice(&[0x00, 0x00, 0x09]);
            }
        }
        b
    }

    #[test]
    fn decodes_what_rml_amf0_encodes() {
        let mut obj = HashMap::new();
        obj.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
        obj.insert("n".to_string(), Amf0Value::Number(3.5));
        obj.insert("b".to_string(), Amf0Value::Boolean(true));
        obj.insert(
            "arr".to_string(),
            Amf0Value::StrictArray(vec![Amf0Value::Null, Amf0Value::Number(1.0)]),
        );
        let values = vec![
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(obj),
            Amf0Value::Null,
            Amf0Value::Undefined,
        ];
        assert_eq!(decode(&encode(&values)).unwrap(), values);
    }

    #[test]
    fn encodes_like_rml_amf0_and_long_strings_too() {
        let values = vec![
            Amf0Value::Utf8String("onStatus".into()),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
            Amf0Value::StrictArray(vec![Amf0Value::Boolean(false), Amf0Value::Undefined]),
        ];
        assert_eq!(encode(&values), rml_amf0::serialize(&values).unwrap());
        let long = vec![Amf0Value::Utf8String("x".repeat(70_000))];
        assert_eq!(encode(&long)[0], 0x0c);
        assert_eq!(decode(&encode(&long)).unwrap(), long);
    }

    #[test]
    fn nesting_up_to_the_limit_decodes_and_beyond_is_refused() {
        let ok = decode(&nested(MAX_DEPTH, true)).unwrap();
        assert_eq!(depth(&ok[1]), MAX_DEPTH);
        assert_eq!(decode(&nested(MAX_DEPTH + 1, true)), Err(AmfError::TooDeep));
        // The message from the issue: 200,000 levels, no recursion, refused at level 65.
        assert_eq!(decode(&nested(200_000, false)), Err(AmfError::TooDeep));
        // Arrays count as levels too.
        let mut b = Vec::new();
        for _ in 0..=MAX_DEPTH {
            b.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
        }
        b.push(0x05);
        assert_eq!(decode(&b), Err(AmfError::TooDeep));
    }

    #[test]
    fn value_count_is_capped() {
        let mut b = vec![0x0a];
        b.extend_from_slice(&(MAX_VALUES as u32).to_be_bytes());
        b.extend(std::iter::repeat_n(0x05, MAX_VALUES));
        assert_eq!(decode(&b), Err(AmfError::TooManyValues));
        // A lying count reserves nothing and is refused.
        assert_eq!(
            decode(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x05]),
            Err(AmfError::Truncated)
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &[0x00, 1, 2][..],
            &[0x02, 0x00, 0x05, b'a'],
            &[0x03, 0x00],
            &[0x03, 0x00, 0x00, 0x05],
            &[0x07, 0x00, 0x01],
            &[0x11, 0x01],
            &[0x02, 0x00, 0x01, 0xff],
            &[0x0c, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ecma_arrays_typed_objects_dates_and_long_strings() {
        let mut b = vec![0x08, 0, 0, 0, 9]; // ECMA array with a wrong count
        b.extend_from_slice(&[0x00, 0x01, b'w', 0x00]);
        b.extend_from_slice(&1280f64.to_be_bytes());
        b.extend_from_slice(&[0x00, 0x00, 0x09]);
        b.extend_from_slice(&[0x10, 0x00, 0x01, b'C', 0x00, 0x00, 0x09]);
        b.push(0x0b);
        b.extend_from_slice(&5f64.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&[0x0c, 0, 0, 0, 2, b'h', b'i']);
        b.extend_from_slice(&[0x09, 0x05]); // a top-level object end stops the sequence
        let v = decode(&b).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(
            v[0].clone().get_object_properties().unwrap()["w"],
            Amf0Value::Number(1280.0)
        );
        assert_eq!(v[1], Amf0Value::Object(HashMap::new()));
        assert_eq!(v[2], Amf0Value::Number(5.0));
        assert_eq!(v[3], Amf0Value::Utf8String("hi".into()));
    }
}
