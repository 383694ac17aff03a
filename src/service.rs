//! `streamr-node service install|uninstall|status|run`: the node as a background service that starts with
//! the session or the computer and is restarted after a crash: a systemd user unit on Linux, a launchd
//! agent on macOS, a Windows service. `service run` is what the service manager starts: the node with its
//! log going to a daily file in the data dir.
//!
//! The unit, plist and command line are plain text built here and tested on every OS; talking to the
//! service manager is in one file per OS, behind `cfg`.

use crate::cli::RunArgs;
use crate::{config, crash, logging};
use clap::{Args, Subcommand};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub mod launchd;
pub mod systemd;
#[cfg(windows)]
mod windows;

/// The service's name everywhere (unit, agent label, Windows service).
pub const SERVICE_NAME: &str = "streamr-node";

/// `streamr-node service ...`
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once per process")]
pub enum ServiceCommand {
    /// Install the node as a service that starts by itself (at login on Linux and macOS, at boot on
    /// Windows) and restarts after a crash, then start it. Settings come from config.toml in the data dir.
    Install(DataDirArg),
    /// Stop the service and remove it. The data dir (identity, keys, logs) is kept.
    Uninstall,
    /// Show whether the service is installed and running, where its logs are and the last crash report.
    Status(DataDirArg),
    /// Run the node as the service manager starts it: logs go to a daily file in the data dir. Use
    /// `streamr-node run` in a terminal instead.
    Run(RunArgs),
}

/// The data dir option of `install` and `status`.
#[derive(Debug, Args, Clone)]
pub struct DataDirArg {
    /// Folder of the node's identity, keys, config.toml, logs and crash reports
    /// [default: the OS data dir, e.g. ~/.local/share/streamr-node].
    #[arg(long, env = "STREAMR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArg {
    /// The data dir, absolute: the service runs from another working directory.
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        let dir = self
            .data_dir
            .clone()
            .unwrap_or_else(config::default_data_dir);
        Ok(std::path::absolute(&dir)?)
    }
}

/// What `status` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// Where the service is defined (unit file, plist, or the Windows service name); `None` when it is
    /// not installed.
    pub installed: Option<String>,
    /// Whether the service manager says it runs.
    pub running: bool,
    /// The service manager's own words, for the user.
    pub detail: String,
}

/// The arguments the service manager starts the binary with.
pub fn service_args(data_dir: &Path) -> Vec<OsString> {
    vec![
        "service".into(),
        "run".into(),
        "--data-dir".into(),
        data_dir.as_os_str().to_owned(),
    ]
}

/// Runs a `service` subcommand; returns the process exit code.
pub fn main(command: ServiceCommand) -> ExitCode {
    let result = match command {
        ServiceCommand::Run(args) => return run(args),
        ServiceCommand::Install(a) => install(&a),
        ServiceCommand::Uninstall => uninstall(),
        ServiceCommand::Status(a) => return status(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamr-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn install(a: &DataDirArg) -> anyhow::Result<()> {
    let data_dir = a.resolve()?;
    // Check the configuration now: a service that fails at every start is worse than an error here.
    crate::build_config(RunArgs {
        data_dir: Some(data_dir.clone()),
        ..RunArgs::default()
    })?;
    let exe = std::env::current_exe()?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let where_ = platform::install(&exe, &data_dir)?;
    println!(
        "Installed and started the streamr-node service ({where_}).\n\
         It runs {exe} (keep the file there; run `streamr-node service install` again if you move it)\n\
         with the data dir {data} (settings: {data}{sep}config.toml).\n\
         Logs: {logs}\n\
         {hint}",
        exe = exe.display(),
        data = data_dir.display(),
        sep = std::path::MAIN_SEPARATOR,
        logs = data_dir.join(logging::LOG_DIR).display(),
        hint = platform::HINT,
    );
    Ok(())
}

fn uninstall() -> anyhow::Result<()> {
    match platform::uninstall()? {
        Some(what) => {
            println!("Stopped and removed the streamr-node service ({what}). The data dir is kept.")
        }
        None => println!("The streamr-node service is not installed; nothing to do."),
    }
    Ok(())
}

/// Exit code 0 when the service runs, 3 when it does not (as LSB init scripts and systemctl do).
fn status(a: &DataDirArg) -> ExitCode {
    let state = match platform::status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("streamr-node: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let data_dir = match a.resolve() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("streamr-node: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match &state.installed {
        Some(w) => println!(
            "service:    installed ({w}), {}",
            if state.running {
                "running"
            } else {
                "not running"
            }
        ),
        None => println!("service:    not installed (streamr-node service install)"),
    }
    if !state.detail.is_empty() {
        println!("manager:    {}", state.detail);
    }
    println!("data dir:   {}", data_dir.display());
    println!("logs:       {}", data_dir.join(logging::LOG_DIR).display());
    match crash::last_crash(&data_dir) {
        Some(c) => println!("last crash: {} ({})", c.time, c.path.display()),
        None => println!("last crash: none"),
    }
    if state.running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

/// `service run`: the configuration, the log file, the crash hook, then the node until the service
/// manager stops it.
fn run(args: RunArgs) -> ExitCode {
    let config = match crate::build_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamr-node: {e:#}");
            return ExitCode::from(2);
        }
    };
    let log_dir = config.data_dir.join(logging::LOG_DIR);
    if let Err(e) = logging::init_service(
        config.log_format,
        &config.log,
        &log_dir,
        platform::LOG_TO_STDERR,
    ) {
        // A node without its log file still serves; the reason is on stderr (the journal or the
        // agent's stderr file).
        logging::init(config.log_format, &config.log);
        tracing::warn!(dir = %log_dir.display(), error = %e, "cannot write the log file; logging to stderr only");
    }
    crash::install_panic_hook(&config.data_dir);
    platform::run(config)
}

/// Runs a service manager's command line tool; its stderr is the error.
#[cfg(any(target_os = "linux", target_os = "macos"))]
fn tool(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(text)
    } else {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        anyhow::bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            if err.is_empty() { text } else { err }
        )
    }
}

#[cfg(target_os = "linux")]
use self::systemd::platform;

#[cfg(target_os = "macos")]
use self::launchd::platform;

#[cfg(windows)]
use self::windows as platform;

/// Other systems (the BSDs...): the node runs, but installing a service is left to the user.
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod platform {
    use super::ServiceState;
    use std::path::Path;
    use std::process::ExitCode;

    pub const HINT: &str = "";
    pub const LOG_TO_STDERR: bool = true;

    fn unsupported() -> anyhow::Error {
        anyhow::anyhow!(
            "installing a service is supported on Linux (systemd), macOS and Windows; on this system, start \
             `streamr-node service run --data-dir DIR` from its init system"
        )
    }

    pub fn install(_exe: &Path, _data_dir: &Path) -> anyhow::Result<String> {
        Err(unsupported())
    }

    pub fn uninstall() -> anyhow::Result<Option<String>> {
        Err(unsupported())
    }

    pub fn status() -> anyhow::Result<ServiceState> {
        Err(unsupported())
    }

    pub fn run(config: crate::config::Config) -> ExitCode {
        crate::serve(config, crate::stop_signal())
    }
}

/// The external-tool rule for unit tests (shared with the library's).
#[cfg(test)]
pub use streamr_node::tests_support;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn service_subcommands_parse() {
        let cli = crate::cli::Cli::try_parse_from([
            "streamr-node",
            "service",
            "install",
            "--data-dir",
            "/srv/n",
        ])
        .unwrap();
        let Some(crate::cli::Command::Service(ServiceCommand::Install(a))) = cli.command else {
            panic!("service install")
        };
        assert_eq!(a.data_dir.as_deref(), Some(Path::new("/srv/n")));
        let cli = crate::cli::Cli::try_parse_from([
            "streamr-node",
            "service",
            "run",
            "--data-dir",
            "/srv/n",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(crate::cli::Command::Service(ServiceCommand::Run(_)))
        ));
        assert!(crate::cli::Cli::try_parse_from(["streamr-node", "service", "reinstall"]).is_err());
    }

    #[test]
    fn the_service_runs_the_node_with_its_data_dir() {
        let args = service_args(Path::new("/home/a b/.local/share/streamr-node"));
        assert_eq!(
            args,
            [
                "service",
                "run",
                "--data-dir",
                "/home/a b/.local/share/streamr-node"
            ]
            .map(OsString::from)
        );
        // What the service manager runs parses as `service run` with that data dir.
        let mut argv = vec![OsString::from("streamr-node")];
        argv.extend(args);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let Some(crate::cli::Command::Service(ServiceCommand::Run(run))) = cli.command else {
            panic!("service run")
        };
        assert_eq!(
            run.data_dir.as_deref(),
            Some(Path::new("/home/a b/.local/share/streamr-node"))
        );
    }
}
