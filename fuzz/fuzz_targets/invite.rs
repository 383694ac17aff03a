#![no_main]
//! Invite codes as a friend pastes them: any text is an invite or an error that says what to do, never a
//! panic (first byte even). With the first byte odd, the rest makes an invite (addresses, names, expiry)
//! that a fixed key signs: what encodes must decode to the same invite.

use libfuzzer_sys::fuzz_target;
use libp2p::Multiaddr;
use libp2p_identity::Keypair;
use streamr_node::invite::{Invite, MAX_ADDRS, MAX_NAME_BYTES};

/// A time before any expiry the fuzzer writes in the built invites, and after some it may paste.
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    if mode & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        match Invite::decode(&text, NOW) {
            Ok(i) => {
                assert!(i.addrs.len() <= MAX_ADDRS);
                assert!(
                    i.nickname
                        .as_ref()
                        .is_none_or(|n| n.len() <= MAX_NAME_BYTES)
                );
                assert!(i.stream.as_ref().is_none_or(|n| n.len() <= MAX_NAME_BYTES));
                assert!(i.expires.is_none_or(|e| e >= NOW));
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        let _ = Invite::link(&text);
        return;
    }
    // Built: [expiry byte][nickname len][stream len][names...][addresses as length-prefixed bytes...].
    let [exp, nick_len, stream_len, rest @ ..] = rest else {
        return;
    };
    let (nick_len, stream_len) = (usize::from(*nick_len), usize::from(*stream_len));
    if rest.len() < nick_len + stream_len {
        return;
    }
    let (nick, rest) = rest.split_at(nick_len);
    let (stream, mut rest) = rest.split_at(stream_len);
    let name = |b: &[u8]| (!b.is_empty()).then(|| String::from_utf8_lossy(b).into_owned());
    let mut addrs = Vec::new();
    while let [len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        if let Ok(a) = Multiaddr::try_from(tail[..len].to_vec()) {
            addrs.push(a);
        }
        rest = &tail[len..];
    }
    let key = Keypair::ed25519_from_bytes([7; 32]).unwrap();
    let invite = Invite {
        peer_id: key.public().to_peer_id(),
        addrs,
        stream: name(stream),
        nickname: name(nick),
        expires: (*exp != 0).then(|| NOW + u64::from(*exp)),
    };
    let Ok(code) = invite.encode(&key) else {
        assert!(
            invite
                .nickname
                .as_ref()
                .is_some_and(|n| n.len() > MAX_NAME_BYTES)
                || invite
                    .stream
                    .as_ref()
                    .is_some_and(|n| n.len() > MAX_NAME_BYTES)
        );
        return;
    };
    let back = Invite::decode(&code, NOW).expect("a code we made decodes");
    let kept: Vec<Multiaddr> = invite
        .addrs
        .iter()
        .filter(|a| a.to_vec().len() <= 96)
        .take(MAX_ADDRS)
        .cloned()
        .collect();
    assert_eq!(
        back,
        Invite {
            addrs: kept,
            ..invite.clone()
        }
    );
    assert_eq!(Invite::decode(&Invite::link(&code), NOW), Ok(back));
});
