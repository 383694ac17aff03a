//! Invites (join codes): everything a friend's node needs to reach this node from anywhere, without any
//! server, in a text made for people. An invite carries the node's public key (its id), the addresses that
//! work from outside (relay circuits, UPnP or public addresses, then the others as fallback), optionally a
//! stream to open, the inviter's nickname and an expiry, all signed by the node key.
//!
//! The text form: the signed bytes in Crockford's base32 (digits and capitals without I, L, O, U; typing
//! `O` for `0` or `I`/`L` for `1` is forgiven, case does not matter), cut into blocks of eight symbols,
//! each followed by a check symbol. A check symbol is a weighted sum over its block in GF(32), so any one
//! mistyped symbol and any swap of two neighbours is caught, and the failing block says where: "the code
//! has a typo near character 37". The blocks are shown as dash-separated groups; dashes, spaces and line
//! breaks are ignored, and a pasted link (`http://127.0.0.1:8080/join#CODE`) is read as its code.
//!
//! Plain code: no clock (the time is an argument) and no I/O.

use libp2p::identity::{Keypair, PublicKey};
use libp2p::{Multiaddr, PeerId};
use std::time::Duration;

/// The code's format version.
const VERSION: u8 = 1;
/// What the signature covers before the payload, so an invite signature can never be mistaken for
/// another kind of signed message of the node.
const SIGNING_CONTEXT: &[u8] = b"streamr-node invite v1\n";
/// Data symbols per block (each block gets one check symbol).
const BLOCK: usize = 8;
/// Crockford's base32 alphabet.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Most addresses an invite carries (the QR code and a chat message must hold it).
pub const MAX_ADDRS: usize = 6;
/// Longest encoded address kept (a relay circuit address with the relay's id is about 50 bytes).
const MAX_ADDR_BYTES: usize = 96;
/// Longest nickname and stream name carried.
pub const MAX_NAME_BYTES: usize = 64;
/// Length of an ed25519 signature.
const SIG_LEN: usize = 64;

/// What an invite says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// The inviting node.
    pub peer_id: PeerId,
    /// Where to reach it, best first (without `/p2p/<peer_id>`).
    pub addrs: Vec<Multiaddr>,
    /// A stream to open once joined.
    pub stream: Option<String>,
    /// The inviter's nickname, as they set it.
    pub nickname: Option<String>,
    /// Unix time (seconds) after which the invite is refused; None = never.
    pub expires: Option<u64>,
}

/// Why an invite could not be made or read. Every message says what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    /// Nothing was given.
    #[error("paste the invite code your friend sent you")]
    Empty,
    /// A symbol that no code contains.
    #[error(
        "the code has a typo near character {at}: {ch:?} cannot be in an invite code; compare it with \
         the code your friend sent"
    )]
    BadCharacter {
        /// The character.
        ch: char,
        /// Its position in the text given (1 = first).
        at: usize,
    },
    /// A block's check symbol does not match.
    #[error(
        "the code has a typo near character {at}: compare characters {at} to {end} with the code your \
         friend sent"
    )]
    Typo {
        /// Position of the block's first character in the text given (1 = first).
        at: usize,
        /// Position of its last character.
        end: usize,
    },
    /// The text ends in the middle of something.
    #[error("the code is incomplete: copy the whole code from your friend's message (it is long)")]
    Truncated,
    /// The checks pass but the content is not a valid invite, or its signature fails.
    #[error(
        "this is not a valid invite (it may have been changed on the way): ask your friend to send it again"
    )]
    Damaged,
    /// Made by a newer version.
    #[error("this invite was made by a newer streamr-node: update yours, then try again")]
    NewerVersion,
    /// Past its expiry.
    #[error("this invite expired {ago} ago: ask your friend for a new invite")]
    Expired {
        /// How long ago, in words.
        ago: String,
    },
    /// The node key cannot sign invites (not ed25519).
    #[error("this node's key cannot sign invites (it is not an ed25519 key)")]
    UnsupportedKey,
    /// A field is too long to carry.
    #[error("{0}")]
    TooLong(String),
}

impl Invite {
    /// The invite as a text code signed with `key` (which must be the key of `self.peer_id`). Addresses
    /// beyond [`MAX_ADDRS`] or too long to carry are left out.
    pub fn encode(&self, key: &Keypair) -> Result<String, InviteError> {
        let public = key
            .public()
            .try_into_ed25519()
            .map_err(|_| InviteError::UnsupportedKey)?;
        let mut out = vec![VERSION];
        out.extend_from_slice(&public.to_bytes());
        out.extend_from_slice(&self.expires.unwrap_or(0).to_be_bytes());
        put_name(&mut out, self.nickname.as_deref(), "nickname")?;
        put_name(&mut out, self.stream.as_deref(), "stream name")?;
        let addrs: Vec<Vec<u8>> = self
            .addrs
            .iter()
            .map(|a| a.to_vec())
            .filter(|b| b.len() <= MAX_ADDR_BYTES)
            .take(MAX_ADDRS)
            .collect();
        out.push(addrs.len() as u8);
        for a in addrs {
            out.push(a.len() as u8);
            out.extend_from_slice(&a);
        }
        let sig = key
            .sign(&[SIGNING_CONTEXT, &out].concat())
            .map_err(|_| InviteError::UnsupportedKey)?;
        out.extend_from_slice(&sig);
        Ok(to_text(&out))
    }

    /// Reads a code (or a link ending in `#CODE`) as of unix time `now`: checks, signature and expiry.
    pub fn decode(text: &str, now: u64) -> Result<Invite, InviteError> {
        let bytes = from_text(text)?;
        let invite = parse(&bytes)?;
        if let Some(exp) = invite.expires
            && now > exp
        {
            return Err(InviteError::Expired {
                ago: human_duration(Duration::from_secs(now - exp)),
            });
        }
        Ok(invite)
    }

    /// The link that opens the invite in a friend's own dashboard (the code travels in the fragment,
    /// which the browser never sends anywhere).
    pub fn link(code: &str) -> String {
        format!("http://127.0.0.1:8080/join#{}", code.replace('-', ""))
    }
}

fn put_name(out: &mut Vec<u8>, name: Option<&str>, what: &str) -> Result<(), InviteError> {
    let name = name.unwrap_or("");
    if name.len() > MAX_NAME_BYTES {
        return Err(InviteError::TooLong(format!(
            "the {what} is too long for an invite: use at most {MAX_NAME_BYTES} characters"
        )));
    }
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

/// Reads the signed bytes.
fn parse(bytes: &[u8]) -> Result<Invite, InviteError> {
    let mut r = Reader(bytes);
    let version = r.byte()?;
    if version > VERSION {
        return Err(InviteError::NewerVersion);
    }
    if version != VERSION {
        return Err(InviteError::Damaged);
    }
    let key: [u8; 32] = r.take(32)?.try_into().map_err(|_| InviteError::Damaged)?;
    let public = libp2p::identity::ed25519::PublicKey::try_from_bytes(&key)
        .map_err(|_| InviteError::Damaged)?;
    let public = PublicKey::from(public);
    let expires = u64::from_be_bytes(r.take(8)?.try_into().map_err(|_| InviteError::Damaged)?);
    let nickname = r.name()?;
    let stream = r.name()?;
    let n = r.byte()? as usize;
    if n > MAX_ADDRS {
        return Err(InviteError::Damaged);
    }
    let mut addrs = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.byte()? as usize;
        let a = Multiaddr::try_from(r.take(len)?.to_vec()).map_err(|_| InviteError::Damaged)?;
        addrs.push(a);
    }
    let signed_len = bytes.len() - r.0.len();
    let sig = r.take(SIG_LEN)?;
    if !r.0.is_empty() {
        return Err(InviteError::Damaged);
    }
    if !public.verify(&[SIGNING_CONTEXT, &bytes[..signed_len]].concat(), sig) {
        return Err(InviteError::Damaged);
    }
    Ok(Invite {
        peer_id: public.to_peer_id(),
        addrs,
        stream,
        nickname,
        expires: (expires != 0).then_some(expires),
    })
}

/// A cursor over the signed bytes; running out is [`InviteError::Truncated`].
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], InviteError> {
        if self.0.len() < n {
            return Err(InviteError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn byte(&mut self) -> Result<u8, InviteError> {
        Ok(self.take(1)?[0])
    }

    fn name(&mut self) -> Result<Option<String>, InviteError> {
        let len = self.byte()? as usize;
        if len > MAX_NAME_BYTES {
            return Err(InviteError::Damaged);
        }
        let s = std::str::from_utf8(self.take(len)?).map_err(|_| InviteError::Damaged)?;
        Ok((!s.is_empty()).then(|| s.to_string()))
    }
}

/// GF(32) multiplication, modulo x^5 + x^2 + 1.
fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        b >>= 1;
        a <<= 1;
        if a & 0x20 != 0 {
            a ^= 0x25;
        }
    }
    p
}

/// The check symbol of block number `index` holding `symbols`: their sum weighted by the powers of the
/// field's generator (distinct and non-zero, so a changed symbol or two swapped neighbours change it), plus
/// the block's number (so blocks cannot trade places unnoticed).
fn check_symbol(index: usize, symbols: &[u8]) -> u8 {
    let mut weight = 2u8;
    let mut sum = (index % 32) as u8;
    for &s in symbols {
        sum ^= gf_mul(s, weight);
        weight = gf_mul(weight, 2);
    }
    sum
}

/// Bytes to base32 symbols (5 bits each, the last padded with zero bits), with check symbols and dashes.
fn to_text(bytes: &[u8]) -> String {
    let mut symbols = Vec::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            symbols.push(((acc >> bits) & 31) as u8);
        }
    }
    if bits > 0 {
        symbols.push(((acc << (5 - bits)) & 31) as u8);
    }
    let groups: Vec<String> = symbols
        .chunks(BLOCK)
        .enumerate()
        .map(|(i, block)| {
            block
                .iter()
                .chain(std::iter::once(&check_symbol(i, block)))
                .map(|&s| ALPHABET[s as usize] as char)
                .collect()
        })
        .collect();
    groups.join("-")
}

/// The value of a symbol as people may type it.
fn symbol_value(c: char) -> Option<u8> {
    let c = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        c => c,
    };
    ALPHABET
        .iter()
        .position(|&a| a as char == c)
        .map(|p| p as u8)
}

/// Text (a code or a link to one) back to the signed bytes, checking every block.
fn from_text(text: &str) -> Result<Vec<u8>, InviteError> {
    // A pasted link: the code is its fragment. Positions are counted in the text as given.
    let (offset, code) = match text.rfind('#') {
        Some(i) => (text[..=i].chars().count(), &text[i + 1..]),
        None => (0, text),
    };
    let mut symbols = Vec::new();
    let mut positions = Vec::new();
    for (i, c) in code.chars().enumerate() {
        if c == '-' || c.is_whitespace() {
            continue;
        }
        let at = offset + i + 1;
        let v = symbol_value(c).ok_or(InviteError::BadCharacter { ch: c, at })?;
        symbols.push(v);
        positions.push(at);
    }
    if symbols.is_empty() {
        return Err(InviteError::Empty);
    }
    let mut data = Vec::with_capacity(symbols.len());
    for (i, block) in symbols.chunks(BLOCK + 1).enumerate() {
        let first = positions[i * (BLOCK + 1)];
        let last = positions[i * (BLOCK + 1) + block.len() - 1];
        if block.len() < 2 {
            return Err(InviteError::Truncated);
        }
        let (body, check) = block.split_at(block.len() - 1);
        if check_symbol(i, body) != check[0] {
            return Err(InviteError::Typo {
                at: first,
                end: last,
            });
        }
        data.extend_from_slice(body);
    }
    let mut bytes = Vec::with_capacity(data.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0);
    for s in data {
        acc = (acc << 5) | u32::from(s);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push((acc >> bits) as u8);
        }
    }
    Ok(bytes)
}

/// Parses an expiry as people write it: `30m`, `24h`, `7d`, `1w`, or `never`.
pub fn parse_expiry(text: &str) -> Result<Option<Duration>, String> {
    let t = text.trim().to_ascii_lowercase();
    if t == "never" || t == "0" {
        return Ok(None);
    }
    let bad = || format!("{text:?} is not a duration: write e.g. 30m, 24h, 7d or never");
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    if n == 0 || n > 365 * 86_400 / secs {
        return Err(format!(
            "{text:?}: choose between 1 minute and a year, or never"
        ));
    }
    Ok(Some(Duration::from_secs(n * secs)))
}

/// "3 hours", "2 days": for messages.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = match s {
        0..120 => (s, "second"),
        120..7200 => (s / 60, "minute"),
        7200..172_800 => (s / 3600, "hour"),
        _ => (s / 86_400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed key: the tests that count on a check symbol's luck are then the same on every run.
    fn fixed_key() -> Keypair {
        Keypair::ed25519_from_bytes([7u8; 32]).unwrap()
    }

    fn sample(key: &Keypair) -> Invite {
        Invite {
            peer_id: key.public().to_peer_id(),
            addrs: vec![
                "/ip4/198.51.100.7/udp/4001/quic-v1".parse().unwrap(),
                "/ip4/203.0.113.1/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
                    .parse()
                    .unwrap(),
                "/ip4/192.168.1.20/tcp/4001".parse().unwrap(),
            ],
            stream: Some("alice".into()),
            nickname: Some("Alice".into()),
            expires: Some(1_000_000),
        }
    }

    #[test]
    fn round_trips_and_survives_how_people_copy_it() {
        let key = Keypair::generate_ed25519();
        let inv = sample(&key);
        let code = inv.encode(&key).unwrap();
        assert_eq!(Invite::decode(&code, 999_999).unwrap(), inv);
        // Lower case, no dashes, spaces and line breaks, look-alike letters, and inside a link.
        assert_eq!(Invite::decode(&code.to_lowercase(), 0).unwrap(), inv);
        let squashed = code.replace('-', "");
        assert_eq!(Invite::decode(&squashed, 0).unwrap(), inv);
        let spaced = code.replace('-', " \n ");
        assert_eq!(Invite::decode(&spaced, 0).unwrap(), inv);
        let lookalikes = code.replace('0', "O").replace('1', "l");
        assert_eq!(Invite::decode(&lookalikes, 0).unwrap(), inv);
        let link = Invite::link(&code);
        assert!(link.starts_with("http://127.0.0.1:8080/join#"));
        assert_eq!(Invite::decode(&link, 0).unwrap(), inv);
        // Only the unambiguous alphabet and dashes.
        assert!(
            code.chars()
                .all(|c| c == '-' || ALPHABET.contains(&(c as u8)))
        );
    }

    #[test]
    fn the_code_is_compact_enough_for_a_chat_message_and_a_qr_code() {
        let key = Keypair::generate_ed25519();
        let code = sample(&key).encode(&key).unwrap();
        // Three addresses (one a relay circuit), a stream and a nickname.
        assert!(code.len() < 420, "{} characters: {code}", code.len());
        let minimal = Invite {
            addrs: vec!["/ip4/198.51.100.7/udp/4001/quic-v1".parse().unwrap()],
            stream: None,
            nickname: None,
            expires: None,
            ..sample(&key)
        };
        let code = minimal.encode(&key).unwrap();
        // One address, nothing else: the key, the signature and the checks make about 240 characters.
        assert!(code.len() < 250, "{} characters: {code}", code.len());
    }

    #[test]
    fn every_single_typo_is_caught_and_located() {
        let key = Keypair::generate_ed25519();
        let code = sample(&key).encode(&key).unwrap();
        let chars: Vec<char> = code.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            if c == '-' {
                continue;
            }
            for &r in ALPHABET {
                let r = r as char;
                if r == c {
                    continue;
                }
                let mut typo = chars.clone();
                typo[i] = r;
                let typo: String = typo.into_iter().collect();
                match Invite::decode(&typo, 0) {
                    Err(InviteError::Typo { at, end }) => {
                        assert!(
                            at <= i + 1 && i < end,
                            "typo at {} reported at {at}-{end}",
                            i + 1
                        )
                    }
                    other => panic!("a typo at {} gave {other:?}", i + 1),
                }
            }
        }
    }

    #[test]
    fn swapped_neighbours_and_a_dropped_character_are_caught() {
        let key = fixed_key();
        let code = sample(&key).encode(&key).unwrap().replace('-', "");
        let chars: Vec<char> = code.chars().collect();
        for i in 0..chars.len() - 1 {
            if chars[i] == chars[i + 1] {
                continue;
            }
            let mut s = chars.clone();
            s.swap(i, i + 1);
            let s: String = s.into_iter().collect();
            let got = Invite::decode(&s, 0);
            // Two data symbols of one block: the block's check catches it. Across a check symbol the
            // check may pass by chance (1 in 32); the signature then refuses it.
            if i % (BLOCK + 1) < BLOCK - 1 {
                assert!(
                    matches!(got, Err(InviteError::Typo { .. })),
                    "swap at {i}: {got:?}"
                );
            } else {
                assert!(got.is_err(), "swap at {i}");
            }
        }
        let mut dropped = chars.clone();
        dropped.remove(20);
        let dropped: String = dropped.into_iter().collect();
        match Invite::decode(&dropped, 0) {
            Err(InviteError::Typo { at, .. }) => assert!(at <= 21, "{at}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_characters_expiry_truncation_and_forgery_say_what_to_do() {
        let key = Keypair::generate_ed25519();
        let code = sample(&key).encode(&key).unwrap();
        let e = Invite::decode(&format!("{}U{}", &code[..4], &code[5..]), 0).unwrap_err();
        assert_eq!(e, InviteError::BadCharacter { ch: 'U', at: 5 });
        assert!(e.to_string().contains("typo near character 5"), "{e}");
        let e = Invite::decode(&code, 1_000_000 + 3 * 3600).unwrap_err();
        assert!(
            e.to_string()
                .contains("expired 3 hours ago: ask your friend for a new invite"),
            "{e}"
        );
        assert_eq!(Invite::decode("  ", 0).unwrap_err(), InviteError::Empty);
        // Cut at a block boundary: every block checks, the content is short.
        let cut: String = code.split('-').take(10).collect::<Vec<_>>().join("-");
        assert_eq!(Invite::decode(&cut, 0).unwrap_err(), InviteError::Truncated);
        // Another key's signature over the same claims: refused.
        let other = Keypair::generate_ed25519();
        let mut forged = sample(&key);
        forged.peer_id = other.public().to_peer_id();
        let forged_code = forged.encode(&other).unwrap();
        assert_eq!(
            Invite::decode(&forged_code, 0).unwrap().peer_id,
            other.public().to_peer_id(),
            "the id is the signer's: an invite cannot speak for another node"
        );
        // Changed content with recomputed checks: the signature fails.
        let mut bytes = from_text(&code).unwrap();
        let n = bytes.len();
        bytes[n - SIG_LEN - 3] ^= 1;
        assert_eq!(
            Invite::decode(&to_text(&bytes), 0).unwrap_err(),
            InviteError::Damaged
        );
        // Arbitrary bytes with valid checks never panic.
        for len in 0..200 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let _ = Invite::decode(&to_text(&junk), 0);
        }
    }

    #[test]
    fn expiries_parse_as_people_write_them() {
        assert_eq!(
            parse_expiry("24h").unwrap(),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_expiry("7d").unwrap(),
            Some(Duration::from_secs(604_800))
        );
        assert_eq!(
            parse_expiry("30m").unwrap(),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(parse_expiry("never").unwrap(), None);
        assert!(parse_expiry("soon").unwrap_err().contains("24h"));
        assert!(parse_expiry("0h").is_err());
        assert!(parse_expiry("9999d").is_err());
        assert_eq!(human_duration(Duration::from_secs(3 * 86_400)), "3 days");
        assert_eq!(human_duration(Duration::from_secs(1)), "1 second");
    }
}
