//! The node's fuzz targets' inputs (`fuzz/fuzz_targets/{invite,config_file}.rs`), run on stable in every
//! test run: the seeds (`fuzz/corpus/TARGET`) must go through as valid invites and configs, and every
//! input that once broke the code (`fuzz/regressions/TARGET`) must end in a clear error, without a panic.
//! The invite seeds are codes made by a fixed key; `STREAMR_WRITE_SEEDS=1 cargo test --test fuzz_corpus`
//! writes them again after a change of the invite format.

#[path = "../fuzz/inputs.rs"]
mod inputs;

use libp2p::identity::Keypair;
use std::path::{Path, PathBuf};
use streamr_node::config::{self, Config};
use streamr_node::invite::Invite;

/// Before every expiry in the seeds.
const NOW: u64 = 1_700_000_000;

fn files(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    inputs::files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz"),
        kind,
        target,
    )
}

/// The seed invites: (file name, invite), signed by a fixed key.
fn seed_invites() -> (Keypair, Vec<(&'static str, Invite)>) {
    let key = Keypair::ed25519_from_bytes([7; 32]).unwrap();
    let peer_id = key.public().to_peer_id();
    let bare = Invite {
        peer_id,
        addrs: vec![],
        stream: None,
        nickname: None,
        expires: None,
    };
    let full = Invite {
        addrs: vec![
            "/ip4/203.0.113.7/udp/4001/quic-v1".parse().unwrap(),
            "/ip4/203.0.113.7/tcp/4001".parse().unwrap(),
            "/ip6/2001:db8::1/udp/4001/quic-v1".parse().unwrap(),
        ],
        stream: Some("cam".into()),
        nickname: Some("alice".into()),
        expires: Some(NOW + 86_400),
        ..bare.clone()
    };
    (key, vec![("bare", bare), ("full", full)])
}

#[test]
fn invite_seeds_decode() {
    let (key, invites) = seed_invites();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/invite");
    for (name, invite) in &invites {
        // Mode byte 0: the fuzz target reads the rest as pasted text.
        let path = dir.join(name);
        if std::env::var("STREAMR_WRITE_SEEDS").is_ok_and(|v| v == "1") {
            let code = invite.encode(&key).unwrap();
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, [b"\0", code.as_bytes()].concat()).unwrap();
        }
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let text = std::str::from_utf8(&data[1..]).unwrap();
        assert_eq!(&Invite::decode(text, NOW).unwrap(), invite, "{name}");
        assert_eq!(&Invite::decode(&Invite::link(text), NOW).unwrap(), invite);
    }
    // The seeds are what the target's other mode builds too: a mangled copy must be refused.
    let (_, full) = &invites[1];
    let code = full.encode(&key).unwrap();
    let mut typo = code.clone().into_bytes();
    let i = typo.iter().position(|&c| c == b'A' || c == b'B').unwrap();
    typo[i] = if typo[i] == b'A' { b'B' } else { b'A' };
    assert!(Invite::decode(std::str::from_utf8(&typo).unwrap(), NOW).is_err());
    assert_eq!(files("corpus", "invite").len(), invites.len());
}

/// What the fuzz target does with one config file; the error, if any.
fn load(data: &[u8]) -> Result<Config, String> {
    let path = Path::new("/data/streamr-node/config.toml");
    let file = config::parse_file(path, data).map_err(|e| format!("{e:#}"))?;
    let mut c = Config::defaults(path.parent().unwrap().to_path_buf());
    c.apply_file(file);
    // Derived limits must not panic, whether or not the checks pass.
    let _ = c.relay_limits();
    c.validate().map_err(|e| format!("{e:#}"))?;
    Ok(c)
}

#[test]
fn config_seeds_load_and_broken_files_are_named() {
    let seeds = files("corpus", "config_file");
    assert!(seeds.len() >= 4, "seed corpus missing");
    for (path, data) in &seeds {
        let name = path.file_name().unwrap().to_str().unwrap();
        match (name, load(data)) {
            ("unknown-key" | "bad-value", Err(e)) => {
                assert!(e.contains("/data/streamr-node/config.toml"), "{name}: {e}")
            }
            ("unknown-key" | "bad-value", Ok(_)) => panic!("{name} must be refused"),
            (_, r) => {
                r.unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }
}

#[test]
fn config_regressions_end_in_clear_errors() {
    let regressions = files("regressions", "config_file");
    assert!(regressions.len() >= 2);
    for (path, data) in &regressions {
        let e = load(data).expect_err("each regression is a broken config");
        assert!(
            e.contains("config.toml") || e.contains("relay_max_circuit_minutes"),
            "{}: {e}",
            path.display()
        );
    }
}
