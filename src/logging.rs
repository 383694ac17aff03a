//! Structured logs (tracing) to stderr, as text or JSON lines; a node that runs as a service also writes
//! them to a daily file in the data dir's `logs/` folder.

use crate::config::LogFormat;
use std::path::Path;
use tracing_appender::rolling::{InitError, RollingFileAppender, Rotation};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Folder of a service's log files, inside the data dir.
pub const LOG_DIR: &str = "logs";
/// Daily log files kept (a week), the newest included.
const KEEP_LOG_FILES: usize = 7;

/// Installs the global subscriber. `RUST_LOG` wins over `filter` when set.
pub fn init(format: LogFormat, filter: &str) {
    use tracing_subscriber::fmt::layer;
    let registry = tracing_subscriber::registry().with(targets(filter));
    let _ = match format {
        LogFormat::Text => registry
            .with(layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

/// Installs the global subscriber of a node that runs as a service: lines go to
/// `log_dir/streamr-node.YYYY-MM-DD.log`, rotated daily, the last [`KEEP_LOG_FILES`] kept, and also to
/// stderr when `also_stderr` (under systemd, the journal). No colours: nobody reads these on a terminal.
pub fn init_service(
    format: LogFormat,
    filter: &str,
    log_dir: &Path,
    also_stderr: bool,
) -> Result<(), InitError> {
    let _ = service_subscriber(format, targets(filter), log_dir, also_stderr)?.try_init();
    Ok(())
}

fn service_subscriber(
    format: LogFormat,
    filter: Targets,
    log_dir: &Path,
    also_stderr: bool,
) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, InitError> {
    // The appender prunes old files before it creates the folder, and complains on stderr when it is
    // missing.
    let _ = std::fs::create_dir_all(log_dir);
    let file = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix("streamr-node")
        .filename_suffix("log")
        .max_log_files(KEEP_LOG_FILES)
        .build(log_dir)?;
    let registry = tracing_subscriber::registry().with(filter);
    // The appender writes each line under its own lock (no background thread): the line of a panic
    // that ends the process is on disk before it exits.
    use tracing_subscriber::fmt::layer;
    Ok(match format {
        LogFormat::Text => Box::new(
            registry
                .with(also_stderr.then(|| layer().with_ansi(false).with_writer(std::io::stderr)))
                .with(layer().with_ansi(false).with_writer(file)),
        ),
        LogFormat::Json => Box::new(
            registry
                .with(also_stderr.then(|| {
                    layer()
                        .json()
                        .flatten_event(true)
                        .with_writer(std::io::stderr)
                }))
                .with(layer().json().flatten_event(true).with_writer(file)),
        ),
    })
}

/// `RUST_LOG` when set, else `filter`, else `info` with a word on stderr. Filters are `LEVEL` and
/// `TARGET=LEVEL` directives, comma separated (`info,streamr_edge=debug`): tracing-subscriber's `Targets`,
/// which needs no regular-expression engine in the binary (`EnvFilter`'s span and field filters did).
fn targets(filter: &str) -> Targets {
    if let Some(from_env) = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        match from_env.parse() {
            Ok(t) => return t,
            Err(e) => eprintln!("invalid RUST_LOG {from_env:?} ({e}); using {filter:?}"),
        }
    }
    filter.parse().unwrap_or_else(|e| {
        eprintln!("invalid log filter {filter:?} ({e}); using \"info\"");
        Targets::new().with_default(LevelFilter::INFO)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_files(dir: &Path) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    }

    /// A service's log lines reach a daily file, in text or JSON (the subscriber is set for this thread
    /// only: the global one may be taken by another test).
    #[test]
    fn a_service_logs_to_a_daily_file_in_the_data_dir() {
        for (format, expect) in [
            (LogFormat::Text, "stream=\"alice\""),
            (LogFormat::Json, "\"stream\":\"alice\""),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let logs = dir.path().join(LOG_DIR);
            let subscriber = service_subscriber(
                format,
                Targets::new().with_default(LevelFilter::INFO),
                &logs,
                false,
            )
            .unwrap();
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!(stream = "alice", "hello from the service");
                tracing::debug!("below the filter");
            });
            let files = log_files(&logs);
            assert_eq!(files.len(), 1, "{files:?}");
            let name = files[0].file_name().unwrap().to_string_lossy().to_string();
            assert!(
                name.starts_with("streamr-node.") && name.ends_with(".log"),
                "{name}"
            );
            let text = std::fs::read_to_string(&files[0]).unwrap();
            assert!(
                text.contains("hello from the service") && text.contains(expect),
                "{text}"
            );
            assert!(
                !text.contains("below the filter") && !text.contains('\x1b'),
                "{text}"
            );
        }
    }
}
