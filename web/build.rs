//! Gzips the dashboard's files at build time (`OUT_DIR/NAME.gz`): the binary carries them compressed
//! (about 90 KB instead of 330 KB; issue 13's size goal) and browsers get them as they are, with
//! `Content-Encoding: gzip`. src/assets.rs serves them.

use std::io::Write;
use std::path::Path;

/// The files, relative to this crate (src/assets.rs names the same ones).
const FILES: &[&str] = &[
    "assets/index.html",
    "assets/app.js",
    "assets/app.css",
    "assets/icon.svg",
    "assets/vendor/mpegts.js",
    "assets/vendor/mpegts.js.LICENSE",
];

fn main() {
    let out = std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR");
    for f in FILES {
        println!("cargo::rerun-if-changed={f}");
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("cannot read {f}: {e}"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).expect("gzip into memory");
        let name = Path::new(f).file_name().expect("a file name");
        let dest = Path::new(&out).join(format!("{}.gz", name.to_string_lossy()));
        std::fs::write(&dest, gz.finish().expect("gzip into memory"))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", dest.display()));
    }
}
