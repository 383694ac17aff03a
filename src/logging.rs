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

/// warp logs every HTTP connection that ends in an error at ERROR (`server connection error`), and
/// nearly all of them are the client's doing: a malformed request, a reset, a browser tab closed mid-way.
/// They say nothing about the node, so they are off unless a filter names warp itself
/// (`RUST_LOG=info,warp=debug` shows them). warp's server offers no hook to log them lower: its remote
/// address, which the dashboard's guard needs, is set only by its own accept loop.
const WARP_SERVER: &str = "warp::server";

/// `RUST_LOG` when set, else `filter`, else `info` with a word on stderr. Filters are `LEVEL` and
/// `TARGET=LEVEL` directives, comma separated (`info,streamr_edge=debug`): tracing-subscriber's `Targets`,
/// which needs no regular-expression engine in the binary (`EnvFilter`'s span and field filters did).
fn targets(filter: &str) -> Targets {
    let (directives, parsed) = match std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        Some(from_env) => match from_env.parse::<Targets>() {
            Ok(t) => (from_env, Ok(t)),
            Err(e) => {
                eprintln!("invalid RUST_LOG {from_env:?} ({e}); using {filter:?}");
                (filter.to_string(), filter.parse())
            }
        },
        None => (filter.to_string(), filter.parse()),
    };
    let targets = parsed.unwrap_or_else(|e| {
        eprintln!("invalid log filter {filter:?} ({e}); using \"info\"");
        Targets::new().with_default(LevelFilter::INFO)
    });
    quiet_warp(targets, &directives)
}

/// Turns warp's per-connection errors off (see [`WARP_SERVER`]) unless `directives` name warp.
fn quiet_warp(targets: Targets, directives: &str) -> Targets {
    let names_warp = directives.split(',').any(|d| d.trim().starts_with("warp"));
    if names_warp {
        targets
    } else {
        targets.with_target(WARP_SERVER, LevelFilter::OFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warps_connection_errors_are_off_unless_warp_is_named() {
        use tracing::Level;
        for (filter, warp_error, own_info) in [
            ("info", false, true),
            ("debug", false, true),
            ("warn,streamr_web=debug", false, false),
            ("info,warp=debug", true, true),
            ("info,warp::server=error", true, true),
        ] {
            let t = quiet_warp(filter.parse().unwrap(), filter);
            assert_eq!(
                t.would_enable(WARP_SERVER, &Level::ERROR),
                warp_error,
                "{filter}"
            );
            assert_eq!(
                t.would_enable("streamr_node", &Level::INFO),
                own_info,
                "{filter}"
            );
            assert!(t.would_enable("streamr_node", &Level::ERROR), "{filter}");
        }
    }

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
