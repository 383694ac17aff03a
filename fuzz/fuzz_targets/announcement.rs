#![no_main]
//! Announcements as they arrive inside media and catalog messages: parsing must never panic, verification
//! must refuse what the origin did not sign, and what parses must write back to the same bytes.

use libfuzzer_sys::fuzz_target;
use streamr_mesh::announce::Announcement;
use streamr_mesh::auth::{FrameVerifier, PublishId};
use streamr_mesh::codec::{Reader, Writer};

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let Ok(a) = Announcement::read(&mut r) else {
        return;
    };
    let used = data.len() - r.rest().len();
    let mut w = Writer::default();
    a.write(&mut w);
    assert_eq!(
        &w.finish()[..],
        &data[..used],
        "an announcement writes back as it came"
    );
    let verified = a.verify().is_ok();
    assert_eq!(
        FrameVerifier::new(&a).is_ok(),
        verified && a.public_key().is_ok_and(|k| k.try_into_ed25519().is_ok())
    );
    if verified {
        assert_eq!(a.public_key().unwrap().to_peer_id(), a.id.origin);
    }
    let _ = PublishId::of(&a).session();
});
