//! Benchmarks: commands that run real servers and real clients and print figures side by side with a
//! baseline measured in the same run. They measure; they never assert on time.

pub mod fanout;
pub mod heal;
pub mod idle;
pub mod mesh;
pub mod soak;

use std::path::Path;

/// Fails with what to do unless every node binary a bench was given exists.
pub(crate) fn require_nodes<'a>(nodes: impl IntoIterator<Item = &'a Path>) -> anyhow::Result<()> {
    for exe in nodes {
        if !exe.exists() {
            anyhow::bail!(
                "{} not found: build it first (cargo build --release -p streamr-node) or pass another --node",
                exe.display()
            );
        }
    }
    Ok(())
}
