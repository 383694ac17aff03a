//! The mesh fuzz targets' seed corpus (`fuzz/corpus/TARGET`), run on stable in every test run: the seeds are
//! valid messages signed with fixed keys (fuzz/examples/mesh_seeds.rs), so they must decode and check as the
//! targets expect; if a change of the wire format breaks them, the fuzzer would start from nothing. Inputs
//! that crash a target go to `fuzz/regressions/TARGET` and must end without a panic here.

#[path = "../../fuzz/inputs.rs"]
mod inputs;

use bytes::BytesMut;
use std::path::{Path, PathBuf};
use streamr_mesh::announce::Announcement;
use streamr_mesh::catalog::{self, VerifiedCache};
use streamr_mesh::codec::Reader;
use streamr_mesh::wire::{self, Decoder, Message};
use tokio_util::codec::Decoder as _;

fn files(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    inputs::files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz"),
        kind,
        target,
    )
}

/// As the `media_wire` target: `[mode, cut, bytes...]`; the messages decoded, or the error.
fn media_wire(data: &[u8]) -> Result<Vec<Message>, String> {
    let [mode, cut, rest @ ..] = data else {
        return Err("shorter than its header".into());
    };
    let mut decoder = if mode & 1 == 0 {
        Decoder::subscriber()
    } else {
        Decoder::provider()
    };
    let mut src = BytesMut::new();
    let mut out = Vec::new();
    for chunk in rest.chunks(usize::from(*cut).max(1)) {
        src.extend_from_slice(chunk);
        while let Some(m) = decoder.decode(&mut src).map_err(|e| e.to_string())? {
            out.push(m);
        }
    }
    if !src.is_empty() {
        return Err(format!("{} bytes left over", src.len()));
    }
    Ok(out)
}

#[test]
fn media_wire_seeds_decode_whole_and_round_trip() {
    let seeds = files("corpus", "media_wire");
    assert!(seeds.len() >= 3, "seeds missing: {seeds:?}");
    for (path, data) in seeds {
        let msgs = media_wire(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!msgs.is_empty(), "{}", path.display());
        for m in msgs {
            let mut src = BytesMut::from(&wire::encode(&m)[..]);
            assert_eq!(
                Decoder::subscriber().decode(&mut src).unwrap(),
                Some(m),
                "{}",
                path.display()
            );
        }
    }
    for (path, data) in files("regressions", "media_wire") {
        let _ = media_wire(&data);
        eprintln!("{}: no panic", path.display());
    }
}

#[test]
fn catalog_seeds_check_as_signed_and_the_false_hop_is_refused() {
    let seeds = files("corpus", "catalog");
    assert!(seeds.len() >= 2, "seeds missing: {seeds:?}");
    for (path, data) in seeds {
        let len = catalog::message_len(data[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, data.len() - 4, "{}", path.display());
        let raw = catalog::decode(&data[4..]).unwrap();
        let n = raw.len();
        let checked = catalog::check(raw, &VerifiedCache::default(), usize::MAX);
        let name = path.file_name().unwrap().to_string_lossy();
        match name.as_ref() {
            // A relay claiming hop 0 for another's stream.
            "false-hop" => assert_eq!((checked.entries.len(), checked.false_claims), (0, 1)),
            _ => assert_eq!(checked.entries.len(), n, "{}", path.display()),
        }
    }
}

#[test]
fn announcement_seeds_verify_only_when_genuine() {
    let seeds = files("corpus", "announcement");
    assert!(seeds.len() >= 2, "seeds missing: {seeds:?}");
    for (path, data) in seeds {
        let a = Announcement::read(&mut Reader::new(&data)).unwrap();
        let genuine = !path.ends_with("forged");
        assert_eq!(a.verify().is_ok(), genuine, "{}", path.display());
    }
}
