//! Giving memory the node freed back to the system. glibc's malloc keeps freed memory in its arenas and
//! returns it only from the top of a heap, so a node's resident memory ratchets up with every burst (a
//! keyframe to twenty players, a peer's catalog) and stays there. Measured (`netlab soak`, one hour, a
//! publisher, 20 players, mesh peers restarting every 30 s): RSS rose 10% after warm-up, in steps, and
//! one `malloc_trim(0)` on a running node gave back 11 of its 58 MB at once. So the node asks for it now and
//! then. Elsewhere (musl, macOS, Windows) the allocators return memory themselves, and this does nothing.
#![allow(unsafe_code)]

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often freed memory is handed back: often enough that a burst does not stay resident for long,
/// rarely enough that walking the arenas (a few milliseconds at the node's size) costs nothing.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Hands freed memory back every [`TRIM_EVERY`] until `token` is cancelled.
pub async fn trim_periodically(token: CancellationToken) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        // It locks each arena while it walks it: not on a worker thread that serves players.
        let released = tokio::task::spawn_blocking(release).await.unwrap_or(false);
        tracing::debug!(released, "handed freed memory back to the system");
    }
}

/// Asks the allocator to return the memory it holds free; true when it gave some back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release() -> bool {
    // SAFETY: malloc_trim takes no pointers and only rearranges glibc's own free lists, under the locks
    // every other allocator call takes too.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Elsewhere the allocator returns memory itself.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_goes_back_to_the_system() {
        fn rss_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .expect("VmRSS")
        }
        // Many small blocks (below glibc's mmap threshold, so they live in the heap), touched, then all
        // freed but the last: glibc keeps the freed pages below it.
        let mut blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 4000]).collect();
        let keep = blocks.pop();
        drop(blocks);
        let before = rss_kib();
        assert!(super::release(), "glibc gave nothing back");
        let after = rss_kib();
        assert!(
            after + 40_000 < before,
            "RSS {before} KiB before the trim, {after} KiB after: expected about 80 MB back"
        );
        drop(keep);
    }
}
