//! Crash reports. Every panic, anywhere in the node, is logged with its context (thread, location, the
//! tracing spans it happened in, e.g. which RTMP session) and written to a text file in the data dir's
//! `crashes/` folder, so a user can copy it into a bug report. Nothing leaves the machine. A panic in one
//! session ends that session only (the edge catches it); one that stops the node makes the process exit
//! with an error, and the service manager starts it again.
//!
//! No backtrace: release builds are stripped, so it would be a list of unknown frames, and resolving one
//! in a dev build loads the binary's debug info for good (the node's RSS grew from 41 to 307 MB at the
//! first panic in tests/hostile.rs with RUST_BACKTRACE=1). The location and the spans say where.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Folder of the crash reports, inside the data dir.
pub const CRASH_DIR: &str = "crashes";
/// Reports kept; older ones are deleted, so a peer that makes us panic on purpose cannot fill the disk.
const KEEP: usize = 20;
/// At most one report file per this interval; panics in between are counted in the next report.
const MIN_GAP: Duration = Duration::from_secs(1);
/// `last_crash` reads at most this much of a report.
const MAX_REPORT_BYTES: u64 = 256 * 1024;

/// The newest crash report, as the dashboard shows it (with a copy button).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrashReport {
    /// The report file.
    pub path: PathBuf,
    /// When it was written (RFC 3339, UTC).
    pub time: String,
    /// The report itself.
    pub text: String,
}

/// What is known about one panic.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PanicFacts {
    /// When it happened (RFC 3339, UTC).
    time: String,
    /// Name of the thread that panicked.
    thread: String,
    /// `file:line:column`, when known.
    location: String,
    /// The panic message.
    message: String,
    /// The tracing spans around the panic, innermost last, with their fields.
    context: String,
    /// Panics since the previous report that got no file of their own.
    suppressed: u64,
}

/// Rate limit state of the report files (the hook may run on many threads at once).
#[derive(Debug, Default)]
struct Throttle {
    last_file: Option<Instant>,
    suppressed: u64,
}

static THROTTLE: Mutex<Throttle> = Mutex::new(Throttle {
    last_file: None,
    suppressed: 0,
});

/// Replaces the panic hook: every panic is logged (error) with its context and, at most once a second,
/// written to `data_dir/crashes/crash-<time>.txt`.
pub fn install_panic_hook(data_dir: &Path) {
    let dir = data_dir.join(CRASH_DIR);
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(a panic without a message)".into());
        let thread = std::thread::current()
            .name()
            .unwrap_or("(unnamed)")
            .to_string();
        let write = {
            let mut t = THROTTLE.lock().unwrap_or_else(|e| e.into_inner());
            if t.last_file.is_some_and(|last| last.elapsed() < MIN_GAP) {
                t.suppressed += 1;
                None
            } else {
                t.last_file = Some(Instant::now());
                Some(std::mem::take(&mut t.suppressed))
            }
        };
        let file = write.map(|suppressed| {
            let facts = PanicFacts {
                time: rfc3339(OffsetDateTime::now_utc()),
                thread: thread.clone(),
                location: location.clone(),
                message: message.clone(),
                context: span_context(),
                suppressed,
            };
            write_report(&dir, &facts.time, &report_text(&facts))
        });
        let file = match file {
            Some(Ok(path)) => path.display().to_string(),
            Some(Err(e)) => format!("(cannot write the crash report in {}: {e})", dir.display()),
            None => "(not written: another report was written less than a second ago)".into(),
        };
        tracing::error!(
            panic = %message,
            location,
            thread,
            crash_report = %file,
            "a panic: the part of the node it happened in stops (a session ends; anything else restarts the \
             node)"
        );
    }));
}

/// The newest crash report in `data_dir`, if there is one.
pub fn last_crash(data_dir: &Path) -> Option<CrashReport> {
    let dir = data_dir.join(CRASH_DIR);
    let newest = report_files(&dir).pop()?;
    let modified = std::fs::metadata(&newest).and_then(|m| m.modified()).ok()?;
    let mut text = String::new();
    use std::io::Read;
    std::fs::File::open(&newest)
        .ok()?
        .take(MAX_REPORT_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(CrashReport {
        path: newest,
        time: rfc3339(OffsetDateTime::from(modified)),
        text,
    })
}

/// Report files in `dir`, oldest first (their names start with the time, which sorts).
fn report_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("crash-") && n.ends_with(".txt"))
        })
        .collect();
    // By stem: `crash-T.txt` comes before `crash-T-01.txt`, written later in the same second.
    files.sort_by(|a, b| a.file_stem().cmp(&b.file_stem()));
    files
}

/// Writes one report as `crash-<time>.txt` (never over an existing one) and deletes all but the newest
/// [`KEEP`].
fn write_report(dir: &Path, time: &str, text: &str) -> std::io::Result<PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    // Colons are not allowed in Windows file names.
    let stamp = time.replace(':', "");
    let mut n = 0;
    let (path, mut file) = loop {
        let name = if n == 0 {
            format!("crash-{stamp}.txt")
        } else {
            format!("crash-{stamp}-{n:02}.txt")
        };
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => break (path, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(e),
        }
    };
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    let files = report_files(dir);
    for old in files.iter().take(files.len().saturating_sub(KEEP)) {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

/// The report as the user copies it into a bug report.
fn report_text(f: &PanicFacts) -> String {
    let mut t = format!(
        "streamr-node {} crashed (a panic) at {}\n\
         system:   {} {}\n\
         thread:   {}\n\
         location: {}\n\
         message:  {}\n\
         context:  {}\n",
        env!("CARGO_PKG_VERSION"),
        f.time,
        std::env::consts::OS,
        std::env::consts::ARCH,
        f.thread,
        f.location,
        f.message,
        if f.context.is_empty() {
            "(no span)"
        } else {
            &f.context
        },
    );
    if f.suppressed > 0 {
        t.push_str(&format!(
            "also:     {} more panics since the previous report (no file of their own)\n",
            f.suppressed
        ));
    }
    t.push_str(
        "\nThis report stays on this computer. To report the bug, copy this text into a bug report; check \
         that it holds nothing you want to keep private (addresses of peers, stream names).\n",
    );
    t
}

/// The tracing spans the panicking code runs in, outermost first, e.g. `rtmp{session=3 peer=1.2.3.4:5}`:
/// the fields come from the formatter of the fmt layer (text or JSON), stored in the span registry.
fn span_context() -> String {
    use tracing_subscriber::fmt::FormattedFields;
    use tracing_subscriber::fmt::format::{DefaultFields, JsonFields};
    use tracing_subscriber::registry::LookupSpan;
    let Some(id) = tracing::Span::current().id() else {
        return String::new();
    };
    tracing::dispatcher::get_default(|dispatch| {
        let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() else {
            return String::new();
        };
        let Some(span) = registry.span(&id) else {
            return String::new();
        };
        let parts: Vec<String> = span
            .scope()
            .from_root()
            .map(|s| {
                let ext = s.extensions();
                let fields = ext
                    .get::<FormattedFields<DefaultFields>>()
                    .map(|f| f.fields.clone())
                    .or_else(|| {
                        ext.get::<FormattedFields<JsonFields>>()
                            .map(|f| f.fields.clone())
                    })
                    .unwrap_or_default();
                format!("{}{{{}}}", s.name(), strip_ansi(&fields))
            })
            .collect();
        parts.join(":")
    })
}

/// Removes terminal colour sequences (`ESC [ ... letter`) that a text formatter writing to a terminal
/// put into the fields.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| format!("{}", t.unix_timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> PanicFacts {
        PanicFacts {
            time: "2026-11-30T10:22:33Z".into(),
            thread: "tokio-runtime-worker".into(),
            location: "edge/src/session.rs:268:12".into(),
            message: "index out of bounds: the len is 0 but the index is 0".into(),
            context: "rtmp{session=3 peer=127.0.0.1:5555}".into(),
            suppressed: 2,
        }
    }

    #[test]
    fn the_report_says_what_where_and_in_which_session() {
        let t = report_text(&facts());
        for part in [
            env!("CARGO_PKG_VERSION"),
            "2026-11-30T10:22:33Z",
            "edge/src/session.rs:268:12",
            "index out of bounds",
            "rtmp{session=3 peer=127.0.0.1:5555}",
            "2 more panics",
            "stays on this computer",
        ] {
            assert!(t.contains(part), "{part:?} missing from:\n{t}");
        }
        let mut quiet = facts();
        quiet.suppressed = 0;
        quiet.context.clear();
        let t = report_text(&quiet);
        assert!(!t.contains("more panics") && t.contains("(no span)"), "{t}");
    }

    #[test]
    fn colour_sequences_are_removed_from_the_context() {
        assert_eq!(
            strip_ansi("\x1b[3msession\x1b[0m\x1b[2m=\x1b[0m7 peer=\"a\""),
            "session=7 peer=\"a\""
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn reports_are_written_without_overwriting_pruned_and_the_newest_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last_crash(dir.path()), None);
        let crashes = dir.path().join(CRASH_DIR);
        let a = write_report(&crashes, "2026-11-30T10:22:33Z", "first").unwrap();
        let b = write_report(&crashes, "2026-11-30T10:22:33Z", "second").unwrap();
        assert_ne!(a, b, "same second, two files");
        assert!(
            !a.to_string_lossy().contains("10:22"),
            "no colons in file names"
        );
        let last = last_crash(dir.path()).unwrap();
        assert_eq!((last.path, last.text.as_str()), (b, "second"));
        OffsetDateTime::parse(&last.time, &Rfc3339).expect("RFC 3339 time");

        for i in 0..KEEP + 5 {
            write_report(
                &crashes,
                &format!("2027-01-01T00:00:{i:02}Z"),
                &format!("n{i}"),
            )
            .unwrap();
        }
        assert_eq!(
            report_files(&crashes).len(),
            KEEP,
            "old reports are deleted"
        );
        assert_eq!(
            last_crash(dir.path()).unwrap().text,
            format!("n{}", KEEP + 4)
        );
        // Other files in the folder are left alone.
        std::fs::write(crashes.join("notes.md"), "mine").unwrap();
        write_report(&crashes, "2028-01-01T00:00:00Z", "x").unwrap();
        assert!(crashes.join("notes.md").exists());
    }

    /// The real hook in a child thread: the panic is caught at the thread's end, as the edge catches a
    /// session's, and leaves a report with the span it happened in.
    #[test]
    fn a_panic_in_a_span_leaves_a_report_with_its_context() {
        use tracing_subscriber::layer::SubscriberExt;
        let dir = tempfile::tempdir().unwrap();
        install_panic_hook(dir.path());
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink));
        let joined = std::thread::Builder::new()
            .name("session-thread".into())
            .spawn(move || {
                tracing::subscriber::with_default(subscriber, || {
                    let _s =
                        tracing::info_span!("rtmp", session = 7, peer = "192.0.2.9:4444").entered();
                    panic!("malformed chunk from the peer");
                })
            })
            .unwrap()
            .join();
        let _ = std::panic::take_hook();
        assert!(joined.is_err(), "the thread panicked");
        let report = last_crash(dir.path()).expect("a crash report");
        for part in [
            "malformed chunk from the peer",
            "session-thread",
            "src/crash.rs",
            "rtmp{session=7 peer=\"192.0.2.9:4444\"}",
        ] {
            assert!(
                report.text.contains(part),
                "{part:?} missing from:\n{}",
                report.text
            );
        }
    }
}
