#![no_main]
//! Catalog messages (`/streamr/catalog/2`) as a peer sends them: the length prefix, the entries, their
//! checks, then a merge and the gossip that follows. Nothing may panic; what passes the checks must encode
//! and check again to the same entries; the catalog and what it passes on stay within their bounds.

use libfuzzer_sys::fuzz_target;
use libp2p_identity::PeerId;
use std::time::Instant;
use streamr_mesh::catalog::{self, Catalog, Checked, VerifiedCache};

fuzz_target!(|data: &[u8]| {
    let [a, b, c, d, body @ ..] = data else {
        return;
    };
    let Ok(len) = catalog::message_len([*a, *b, *c, *d]) else {
        return;
    };
    let Ok(raw) = catalog::decode(&body[..len.min(body.len())]) else {
        return;
    };
    let checked = catalog::check(raw.clone(), &VerifiedCache::default(), 64);
    assert!(checked.verified <= 64);
    let again = catalog::check(
        catalog::decode(&catalog::encode(&checked.entries)[4..]).expect("our own encoding decodes"),
        &VerifiedCache::default(),
        usize::MAX,
    );
    assert_eq!(
        again.entries, checked.entries,
        "checked entries survive a round trip"
    );

    // The merge takes the raw claims too (as if they had passed), to exercise its bounds.
    let me = PeerId::random();
    let from = PeerId::random();
    let now = Instant::now();
    let mut cat = Catalog::default();
    cat.merge(&me, from, checked, now);
    let unchecked: Vec<catalog::CatalogEntry> = raw
        .into_iter()
        .map(|r| catalog::CatalogEntry {
            provider: r.announcement.id.origin,
            announcement: r.announcement,
            addrs: Vec::new(),
            record: None,
            hops: r.hops,
            spare_kbps: r.spare_kbps,
        })
        .collect();
    cat.merge(
        &me,
        PeerId::random(),
        Checked {
            entries: unchecked,
            ..Checked::default()
        },
        now,
    );
    assert!(cat.learned_len() <= catalog::MAX_LEARNED);
    let out = cat.gossip_for(&PeerId::random(), now);
    assert!(out.len() <= catalog::MAX_ENTRIES);
    let _ = cat.streams(now);
    cat.expire(now + catalog::ENTRY_TTL);
    assert_eq!(cat.learned_len(), 0);
});
