//! The fuzz targets' inputs as the stable tests that replay them read them (`tests/fuzz_corpus.rs`,
//! `edge/tests/fuzz_corpus.rs`, `mesh/tests/fuzz_corpus.rs` include this file with `#[path]`).

use std::path::{Path, PathBuf};

/// The files of `FUZZ/KIND/TARGET` (KIND: `corpus` or `regressions`) with their bytes, sorted by path; none
/// when the folder does not exist (the tests count what they need).
pub fn files(fuzz: &Path, kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
        return Vec::new();
    };
    let mut v: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect();
    v.sort();
    v
}
