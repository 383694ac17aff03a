//! The node's plain parts that need no running node, as a library: the configuration (`config.toml`, its
//! settings and their checks) and invite codes. The binary (`main.rs`) uses them from here; the fuzz
//! targets (`fuzz/`) feed them arbitrary text, which a binary-only package could not offer them.

pub mod config;
pub mod invite;
pub mod settings;
pub mod update;

/// The external-tool rule for unit tests: a missing tool skips the test, unless
/// `STREAMR_REQUIRE_EXTERNAL=1` (CI), which makes it fail. Here, not under `cfg(test)`, because the
/// binary's unit tests use it too and they link this library as built without `cfg(test)`.
#[doc(hidden)]
pub mod tests_support {
    use std::path::PathBuf;

    /// The tool's path on `PATH`, or `None` after printing why the test skips.
    pub fn tool_or_skip(tool: &str, install: &str) -> Option<PathBuf> {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
        });
        if found.is_none() {
            if std::env::var("STREAMR_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1") {
                panic!(
                    "{tool} is required (STREAMR_REQUIRE_EXTERNAL=1) but not on PATH: {install}"
                );
            }
            eprintln!("SKIP: {tool} not found; {install} to run this test");
        }
        found
    }
}
