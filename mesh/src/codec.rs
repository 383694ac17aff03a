//! Byte-level helpers for the mesh's wire formats: a writer and a bounds-checked reader. Every length on the
//! wire has a hard limit; a reader never allocates more than the input it was given.

use bytes::{BufMut, Bytes, BytesMut};
use libp2p::{Multiaddr, PeerId};

/// Why bytes from a peer were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended inside a field.
    #[error("truncated message")]
    Truncated,
    /// A length field exceeds its limit.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Claimed length.
        len: u64,
        /// Limit.
        max: u64,
    },
    /// A field has an impossible value.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Bytes left after a complete message.
    #[error("trailing bytes after a message")]
    Trailing,
}

/// Longest string field (stream names, reasons).
pub const MAX_STR: usize = 1024;
/// Longest byte field other than payloads (keys, signatures, announcements).
pub const MAX_BYTES: usize = 4096;
/// Most items in a list field.
pub const MAX_ITEMS: usize = 256;

/// Appends fields to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: BytesMut,
}

impl Writer {
    /// A writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: BytesMut::with_capacity(n),
        }
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }
    /// Big-endian u16.
    pub fn u16(&mut self, v: u16) {
        self.buf.put_u16(v);
    }
    /// Big-endian u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.put_u32(v);
    }
    /// Big-endian u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.put_u64(v);
    }
    /// u16 length + bytes (truncated to [`MAX_BYTES`]; callers never write more).
    pub fn bytes(&mut self, v: &[u8]) {
        let v = &v[..v.len().min(MAX_BYTES)];
        self.buf.put_u16(v.len() as u16);
        self.buf.put_slice(v);
    }
    /// A string as bytes (truncated to [`MAX_STR`] at a char boundary).
    pub fn str(&mut self, v: &str) {
        let mut end = v.len().min(MAX_STR);
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        self.bytes(&v.as_bytes()[..end]);
    }
    /// A peer id.
    pub fn peer(&mut self, p: &PeerId) {
        self.bytes(&p.to_bytes());
    }
    /// A list of peer ids (at most [`MAX_ITEMS`]).
    pub fn peers(&mut self, ps: &[PeerId]) {
        let ps = &ps[..ps.len().min(MAX_ITEMS)];
        self.u8(ps.len() as u8);
        for p in ps {
            self.peer(p);
        }
    }
    /// A list of multiaddrs (at most 16).
    pub fn addrs(&mut self, addrs: &[Multiaddr]) {
        let addrs = &addrs[..addrs.len().min(16)];
        self.u8(addrs.len() as u8);
        for a in addrs {
            self.bytes(&a.to_vec());
        }
    }
    /// Raw bytes without a length.
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.put_slice(v);
    }
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// The bytes.
    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
    /// Mutable access for in-place patches (length prefixes).
    pub fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }
}

/// Reads fields from a byte slice, checking every length.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    /// Big-endian u16.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// Big-endian u32.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes(
            b.try_into().map_err(|_| WireError::Truncated)?,
        ))
    }
    /// Big-endian u64.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(
            b.try_into().map_err(|_| WireError::Truncated)?,
        ))
    }
    /// u16 length + bytes, at most [`MAX_BYTES`].
    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u16()? as usize;
        if n > MAX_BYTES {
            return Err(WireError::TooLong {
                what: "field",
                len: n as u64,
                max: MAX_BYTES as u64,
            });
        }
        self.take(n)
    }
    /// A UTF-8 string of at most [`MAX_STR`] bytes.
    pub fn str(&mut self) -> Result<String, WireError> {
        let b = self.bytes()?;
        if b.len() > MAX_STR {
            return Err(WireError::TooLong {
                what: "string",
                len: b.len() as u64,
                max: MAX_STR as u64,
            });
        }
        String::from_utf8(b.to_vec()).map_err(|_| WireError::Invalid("utf-8 string"))
    }
    /// A peer id.
    pub fn peer(&mut self) -> Result<PeerId, WireError> {
        PeerId::from_bytes(self.bytes()?).map_err(|_| WireError::Invalid("peer id"))
    }
    /// A list of peer ids.
    pub fn peers(&mut self) -> Result<Vec<PeerId>, WireError> {
        let n = self.u8()? as usize;
        (0..n).map(|_| self.peer()).collect()
    }
    /// A list of multiaddrs.
    pub fn addrs(&mut self) -> Result<Vec<Multiaddr>, WireError> {
        let n = self.u8()? as usize;
        if n > 16 {
            return Err(WireError::TooLong {
                what: "address list",
                len: n as u64,
                max: 16,
            });
        }
        (0..n)
            .map(|_| {
                Multiaddr::try_from(self.bytes()?.to_vec())
                    .map_err(|_| WireError::Invalid("multiaddr"))
            })
            .collect()
    }
    /// Exactly `n` bytes (a field of fixed size).
    pub fn fixed(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        self.take(n)
    }
    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    /// Fails if bytes are left.
    pub fn end(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing)
        }
    }
}
