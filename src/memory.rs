//! Giving memory the node freed back to the system. glibc's malloc keeps freed memory in its arenas and
//! returns it only from the top of a heap, so a node's resident memory ratchets up with every burst (a
//! keyframe to twenty players, a peer's catalog) and stays there. Measured (`netlab soak`, one hour, a
//! publisher, 20 players, mesh peers restarting every 30 s): RSS rose 10% after warm-up, in steps, and
//! one `malloc_trim(0)` on a running node gave back 11 of its 58 MB at once. So the node asks for it now and
//! then. Elsewhere (musl, macOS, Windows) the allocators return memory themselves, and this does nothing.
//!
//! The trim was not enough: with it, RSS still rose 20% in a 50-minute soak while heaptrack, attached to a
//! node in the same soak for 42 minutes, showed the live heap flat after the first two minutes (22-28 MB,
//! nothing leaked at exit). What grew was glibc's hold on freed memory. Two of its defaults work against a
//! node, and [`tune`] changes them before any thread starts:
//! - The mmap threshold adapts: each freed mmapped block raises it (up to 32 MB), so after the first
//!   QUIC endpoint's receive buffer (hundreds of KB; AutoNAT opens one per dial-back) or a big keyframe
//!   is freed, every later one is carved out of an arena, where it fragments what it leaves. A fixed
//!   128 KiB threshold keeps large buffers in their own mappings, returned whole when freed.
//! - Arenas: up to 8 per core, one per thread that allocates (tokio's blocking threads come and go),
//!   each holding its own free memory. The node needs no more arenas than cores.
//!
//! Neither was enough either: tuned, RSS still rose about 0.08 MiB a minute, steadily (35.7 to 39.0 MiB
//! from minute 5 to minute 45 of `netlab soak --duration 2700`, +9%), while the live heap was nearly flat; glibc's arenas fragment under the node's mix of
//! long-lived small blocks (connections, tables) and short-lived media. So on Linux the Rust side of the
//! node allocates with jemalloc (`tikv-jemallocator`, `#[global_allocator]` in main.rs), which keeps size
//! classes apart and hands dirty pages back from a background thread (after a second, with the settings
//! in [`JEMALLOC_CONF`]). Measured
//! side by side in one run (`netlab soak --duration 2400`, glibc tuned as above against jemalloc): see
//! docs/security.md. What is left here still matters for the C code in the process (aws-lc, glibc
//! itself), which allocates with glibc's malloc.
#![allow(unsafe_code)]

/// jemalloc's settings for a long-running node with two busy threads, read by jemalloc when it starts
/// as its `malloc_conf` (the `_RJEM_MALLOC_CONF` environment variable still overrides them):
/// - `narenas:2`: two arenas instead of four per core. Each arena keeps its own free pages and partly
///   used slabs, and threads are handed arenas in turn, so tokio's short-lived blocking threads can leave
///   memory in arenas nobody allocates from any more.
/// - `dirty_decay_ms:1000`: freed pages go back to the system after about a second instead of ten, so
///   a burst (a keyframe to twenty players, a peer's catalog) does not stay resident.
/// - `muzzy_decay_ms:0`: returned pages are unmapped at once (MADV_DONTNEED), not left for the kernel
///   to take when it likes, so RSS shows what the node holds.
///
/// Measured side by side in one run (`netlab soak --duration 3900`, the same binary, these settings
/// given through `_RJEM_MALLOC_CONF` against jemalloc's defaults): RSS 36.6 -> 38.1 against
/// 37.6 -> 39.5 MiB, growth after warm-up 4.23% against 4.88%, the allocator's resident bytes -0.3
/// against +2.2 MiB an hour (docs/security.md has the table).
#[cfg(target_os = "linux")]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static JEMALLOC_CONF: ConfString =
    ConfString(c"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A C string in a static, as jemalloc reads its `malloc_conf` (a `const char *`).
#[cfg(target_os = "linux")]
#[repr(transparent)]
pub struct ConfString(*const std::ffi::c_char);

// SAFETY: it points at a string literal, which lives as long as the program and is never written.
#[cfg(target_os = "linux")]
unsafe impl Sync for ConfString {}

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

/// Blocks from this size on get their own mapping, returned to the system when freed (glibc's starting
/// value, kept fixed instead of rising).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Sets the allocator up for a long-running node (see the module's notes); call it first in `main`,
/// before any thread exists. Returns whether the allocator took the settings (false elsewhere than glibc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() -> bool {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt takes two integers and changes glibc's own settings under its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_ARENA_MAX, arenas) == 1
    }
}

/// Elsewhere the allocator needs no settings.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() -> bool {
    false
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

/// What the Rust side's heap holds: bytes the node has allocated and not freed (its live data), and bytes
/// the allocator keeps resident for it (live data, free pages not yet handed back, its own tables). Their
/// difference is the allocator's overhead; a rise in the first is the node holding more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    pub allocated: u64,
    pub resident: u64,
}

/// The heap's figures now, from jemalloc's statistics; `None` where jemalloc is not the allocator.
#[cfg(target_os = "linux")]
pub fn heap_stats() -> Option<HeapStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // jemalloc caches its statistics; advancing the epoch refreshes them.
    epoch::advance().ok()?;
    Some(HeapStats {
        allocated: stats::allocated::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
    })
}

/// Elsewhere the system's allocator keeps no figures we can read.
#[cfg(not(target_os = "linux"))]
pub fn heap_stats() -> Option<HeapStats> {
    None
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Runs the test named `name` of this binary alone in a child process (RSS is the whole process's,
    /// and other tests allocate in parallel threads); true in the child, which does the work.
    fn alone(name: &str) -> bool {
        const CHILD: &str = "STREAMR_MEMORY_TEST_CHILD";
        if std::env::var_os(CHILD).is_some() {
            return true;
        }
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", name, "--test-threads", "1", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .expect("run the test binary again");
        assert!(
            out.status.success(),
            "{name} failed in its own process:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        false
    }

    /// `n` blocks of `size` bytes from glibc's malloc (the Rust side allocates with jemalloc on Linux),
    /// each touched so that it is resident.
    fn glibc_blocks(n: usize, size: usize) -> Vec<*mut libc::c_void> {
        (0..n)
            .map(|i| {
                // SAFETY: malloc of a nonzero size; the block is written only within its size.
                unsafe {
                    let p = libc::malloc(size);
                    assert!(!p.is_null());
                    libc::memset(p, (i % 251) as libc::c_int + 1, size);
                    p
                }
            })
            .collect()
    }

    fn glibc_free(blocks: Vec<*mut libc::c_void>) {
        for p in blocks {
            // SAFETY: each pointer came from malloc and is freed once.
            unsafe { libc::free(p) }
        }
    }

    #[test]
    fn large_buffers_go_back_to_the_system_when_freed_even_after_one_was_freed_before() {
        if !alone(
            "memory::tests::large_buffers_go_back_to_the_system_when_freed_even_after_one_was_freed_before",
        ) {
            return;
        }
        assert!(super::tune(), "glibc refused the settings");
        // Untuned, freeing this mmapped block raises glibc's threshold above its size...
        glibc_free(glibc_blocks(1, 300 * 1024));
        // ...so that these come from the heap and stay resident below the small block kept after them.
        // Tuned, each has its own mapping and goes back when freed.
        let big = glibc_blocks(64, 256 * 1024);
        let keep = glibc_blocks(1, 64);
        let before = rss_kib();
        glibc_free(big);
        let after = rss_kib();
        assert!(
            after + 12_000 < before,
            "RSS {before} KiB with 16 MB of large buffers, {after} KiB after freeing them: expected them back"
        );
        glibc_free(keep);
    }

    #[test]
    fn freed_memory_goes_back_to_the_system() {
        if !alone("memory::tests::freed_memory_goes_back_to_the_system") {
            return;
        }
        // Many small blocks (below glibc's mmap threshold, so they live in the heap), touched, then all
        // freed but the last: glibc keeps the freed pages below it.
        let mut blocks = glibc_blocks(20_000, 4000);
        let keep = blocks.pop().into_iter().collect();
        glibc_free(blocks);
        let before = rss_kib();
        assert!(super::release(), "glibc gave nothing back");
        let after = rss_kib();
        assert!(
            after + 40_000 < before,
            "RSS {before} KiB before the trim, {after} KiB after: expected about 80 MB back"
        );
        glibc_free(keep);
    }

    /// The Rust side's allocator (jemalloc) hands freed memory back by itself, from its background
    /// thread, after its decay time (1 s, see `JEMALLOC_CONF`): no trim needed.
    #[test]
    fn the_rust_allocator_hands_freed_memory_back_by_itself() {
        if !alone("memory::tests::the_rust_allocator_hands_freed_memory_back_by_itself") {
            return;
        }
        let mut blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 4000]).collect();
        let keep = std::hint::black_box(blocks.pop());
        let before = rss_kib();
        drop(blocks);
        // Not a timing check: jemalloc's decay decides when; the bound only ends a test that would
        // otherwise wait forever.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        let mut after = rss_kib();
        while after + 40_000 >= before && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(500));
            after = rss_kib();
        }
        assert!(
            after + 40_000 < before,
            "RSS {before} KiB with 80 MB of small blocks, still {after} KiB 90 s after freeing them"
        );
        drop(keep);
    }

    /// jemalloc took the settings main.rs exports (unless the environment overrides them).
    #[test]
    fn jemalloc_runs_with_the_node_s_settings() {
        if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
            eprintln!("skipped: _RJEM_MALLOC_CONF overrides the node's jemalloc settings");
            return;
        }
        use tikv_jemalloc_ctl::raw;
        // SAFETY: each name is a jemalloc option of the type read (unsigned, ssize_t, ssize_t).
        let (narenas, dirty, muzzy) = unsafe {
            (
                raw::read::<u32>(b"opt.narenas\0").expect("opt.narenas"),
                raw::read::<isize>(b"opt.dirty_decay_ms\0").expect("opt.dirty_decay_ms"),
                raw::read::<isize>(b"opt.muzzy_decay_ms\0").expect("opt.muzzy_decay_ms"),
            )
        };
        assert_eq!(
            (narenas, dirty, muzzy),
            (2, 1000, 0),
            "jemalloc's narenas, dirty_decay_ms and muzzy_decay_ms: is _rjem_malloc_conf exported?"
        );
    }

    /// The heap's figures follow what the node holds: 64 MB allocated (and touched) show in `allocated`
    /// and `resident`, and leave `allocated` when freed.
    #[test]
    fn heap_stats_follow_what_is_held() {
        if !alone("memory::tests::heap_stats_follow_what_is_held") {
            return;
        }
        let before = super::heap_stats().expect("jemalloc is the allocator on Linux");
        let block = std::hint::black_box(vec![7u8; 64 << 20]);
        let held = super::heap_stats().expect("stats");
        assert!(
            held.allocated >= before.allocated + (64 << 20) && held.resident >= 64 << 20,
            "64 MB held, yet the heap says {held:?} (before: {before:?})"
        );
        drop(block);
        let after = super::heap_stats().expect("stats");
        assert!(
            after.allocated + (60 << 20) < held.allocated,
            "64 MB freed, yet the heap says {after:?} (while held: {held:?})"
        );
    }
}
