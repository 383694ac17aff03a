//! The fuzz targets' inputs, run on stable in every test run: the seed corpus (`fuzz/corpus/TARGET`, valid
//! sessions: they must go through cleanly, so the fuzzer starts from deep inside the protocol) and every
//! input that once crashed a target (`fuzz/regressions/TARGET`: each must now end without a panic). The
//! harness is the same as the fuzz targets' (fuzz/fuzz_targets/*.rs).

#[path = "../../fuzz/inputs.rs"]
mod inputs;

use std::path::{Path, PathBuf};
use streamr_edge::{EdgeConfig, amf0, sans_io};

fn files(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    inputs::files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz"),
        kind,
        target,
    )
}

fn edge_session(data: &[u8]) -> Option<Result<(), String>> {
    let [flags, step, rest @ ..] = data else {
        return None;
    };
    let mut config = EdgeConfig::new(([127, 0, 0, 1], 0).into());
    if flags & 2 != 0 {
        config.publish_key = Some("fuzzkey123".into());
    }
    let step = 1 + usize::from(*step) * 31;
    Some(sans_io::server_session(
        config,
        flags & 1 != 0,
        &mut rest.chunks(step),
    ))
}

fn client_session(data: &[u8]) -> Option<Result<(), String>> {
    let [step, rest @ ..] = data else {
        return None;
    };
    let step = 1 + usize::from(*step) * 31;
    Some(sans_io::client_session(&mut rest.chunks(step)))
}

#[test]
fn seed_sessions_go_through() {
    let seeds = files("corpus", "edge_session");
    assert!(seeds.len() >= 4, "seed corpus missing");
    for (path, data) in &seeds {
        let r = edge_session(data).unwrap();
        if path.ends_with("bad-app") {
            let e = r.unwrap_err();
            assert!(e.contains("NetConnection.Connect.Rejected"), "{e}");
        } else {
            assert_eq!(r, Ok(()), "{}", path.display());
        }
    }
    for (path, data) in files("corpus", "client_session") {
        let e = client_session(&data).unwrap().unwrap_err();
        // The seed ends with an error status, after every other kind of message went through.
        assert!(
            e.contains("StreamNotFound: gone"),
            "{}: {e}",
            path.display()
        );
    }
    for (path, data) in files("corpus", "amf0") {
        let values = amf0::decode(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!values.is_empty());
    }
}

#[test]
fn inputs_that_once_crashed_a_target_end_cleanly() {
    let edge = files("regressions", "edge_session");
    let client = files("regressions", "client_session");
    let amf = files("regressions", "amf0");
    assert!(!edge.is_empty() && !client.is_empty() && !amf.is_empty());
    for (path, data) in edge.iter().chain(&client) {
        let is_edge = edge.iter().any(|(p, _)| p == path);
        let r = if is_edge {
            edge_session(data)
        } else {
            client_session(data)
        };
        let name = path.file_name().unwrap().to_string_lossy();
        match r {
            // Nesting beyond the limit ends the session with the limit named.
            Some(Err(e)) if name.starts_with("nested") => {
                assert!(e.contains("nested"), "{name}: {e}")
            }
            // A header inside an unfinished message is an error, not a panic.
            Some(Err(e)) if name.starts_with("chunk-length") => {
                assert!(e.contains("inside another"), "{name}: {e}")
            }
            // A bare @setDataFrame is dropped; the publisher goes on.
            Some(Ok(())) if name == "bare-setdataframe" => {}
            // Anything added after a fuzzer crash: ending without a panic is the test.
            other
                if !["nested", "chunk-length", "bare-"]
                    .iter()
                    .any(|p| name.starts_with(p)) =>
            {
                let _ = other;
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    for (path, data) in amf {
        match amf0::decode(&data) {
            Ok(values) => assert!(amf0::decode(&amf0::encode(&values)).is_ok()),
            Err(e) if path.ends_with("nested-100") => assert_eq!(e, amf0::AmfError::TooDeep),
            Err(_) => {}
        }
    }
}
