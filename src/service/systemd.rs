//! Linux: a systemd **user** unit (`~/.config/systemd/user/streamr-node.service`): no root needed, it starts
//! with the user's session (or at boot with `loginctl enable-linger`), and systemd restarts the node after
//! a crash. The `.deb` ships a system unit of its own (`packaging/deb/streamr-node.service`).
#![cfg_attr(not(any(test, target_os = "linux")), allow(dead_code))]

use super::{SERVICE_NAME, service_args};
use std::path::Path;

/// The unit file's name.
pub const UNIT_FILE: &str = "streamr-node.service";

/// The user unit that runs `exe service run --data-dir DATA_DIR`.
pub fn unit(exe: &Path, data_dir: &Path) -> String {
    let mut command = vec![quote(&exe.to_string_lossy())];
    command.extend(
        service_args(data_dir)
            .iter()
            .map(|a| quote(&a.to_string_lossy())),
    );
    format!(
        "# Installed by `streamr-node service install`; remove it with `streamr-node service uninstall`.\n\
         # Settings: config.toml in the data dir. Logs: journalctl --user -u {SERVICE_NAME}, and the data dir's\n\
         # logs folder.\n\
         [Unit]\n\
         Description=streamr-node: relay live video to friends\n\
         # Up to 10 restarts in 10 minutes, then systemd gives up (a node that cannot start says why in the log).\n\
         StartLimitIntervalSec=600\n\
         StartLimitBurst=10\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={command}\n\
         # A crash or a failed part exits with an error; a stop request (SIGTERM) exits cleanly.\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         # The node closes connections within 5 s of SIGTERM.\n\
         TimeoutStopSec=15\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        command = command.join(" "),
    )
}

/// Quotes one word of `ExecStart=` (systemd.service(5), "Command lines"): double quotes with `\` and `"`
/// escaped; `%` (specifiers) and `$` (variables) doubled so that a path is taken literally.
fn quote(word: &str) -> String {
    let mut q = String::with_capacity(word.len() + 2);
    q.push('"');
    for c in word.chars() {
        match c {
            '\\' => q.push_str("\\\\"),
            '"' => q.push_str("\\\""),
            '%' => q.push_str("%%"),
            '$' => q.push_str("$$"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(target_os = "linux")]
pub mod platform {
    use super::super::{ServiceState, tool};
    use super::{UNIT_FILE, unit};
    use anyhow::Context;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;

    /// What the user may want to know after `install`.
    pub const HINT: &str = "Follow it with: journalctl --user -u streamr-node -f\n\
         To keep it running while you are logged out: loginctl enable-linger $USER";
    /// Under systemd, stderr goes to the journal, which rotates by itself.
    pub const LOG_TO_STDERR: bool = true;

    fn unit_path() -> anyhow::Result<PathBuf> {
        let config = dirs::config_dir()
            .context("cannot find your config folder (is HOME set?) to put the systemd unit in")?;
        Ok(config.join("systemd").join("user").join(UNIT_FILE))
    }

    fn systemctl(args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["--user"];
        all.extend_from_slice(args);
        tool("systemctl", &all).map_err(|e| {
            e.context(
                "systemd's user manager is not available (no systemd, or no user session: over ssh, try \
                 `loginctl enable-linger $USER` and log in again); you can still run `streamr-node` from \
                 a terminal",
            )
        })
    }

    /// Writes the unit, reloads systemd, enables and starts it. Returns the unit file.
    pub fn install(exe: &Path, data_dir: &Path) -> anyhow::Result<String> {
        let path = unit_path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, unit(exe, data_dir))
            .with_context(|| format!("cannot write {}", path.display()))?;
        let started = systemctl(&["daemon-reload"])
            .and_then(|_| systemctl(&["enable", UNIT_FILE]))
            // restart, not start: a reinstall (a moved binary) must run the new command line.
            .and_then(|_| systemctl(&["restart", UNIT_FILE]));
        started.with_context(|| {
            format!(
                "the unit is written ({}) but systemd did not start it; once `systemctl --user` works: \
                 systemctl --user enable --now {UNIT_FILE}",
                path.display()
            )
        })?;
        Ok(path.display().to_string())
    }

    /// Stops, disables and removes the unit. `None` when it was not installed.
    pub fn uninstall() -> anyhow::Result<Option<String>> {
        let path = unit_path()?;
        if !path.exists() {
            return Ok(None);
        }
        // Stopping fails when systemd is unavailable or the unit was never loaded; removing the file is
        // what matters.
        if let Err(e) = systemctl(&["disable", "--now", UNIT_FILE]) {
            eprintln!("note: {e:#}");
        }
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        let _ = systemctl(&["daemon-reload"]);
        Ok(Some(path.display().to_string()))
    }

    /// Whether the unit file exists and systemd says it is active.
    pub fn status() -> anyhow::Result<ServiceState> {
        let path = unit_path()?;
        let installed = path.exists().then(|| path.display().to_string());
        // `is-active` exits non-zero for anything but active; its stdout is the state either way.
        let detail = match tool("systemctl", &["--user", "is-active", UNIT_FILE]) {
            Ok(s) => s,
            Err(e) => format!("{e:#}"),
        };
        Ok(ServiceState {
            running: installed.is_some() && detail == "active",
            installed,
            detail,
        })
    }

    /// Runs the node until systemd stops it (SIGTERM).
    pub fn run(config: crate::config::Config) -> ExitCode {
        crate::serve(config, crate::stop_signal())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_the_service_and_restarts_it_after_a_failure() {
        let u = unit(
            Path::new("/home/ann/.local/bin/streamr-node"),
            Path::new("/home/ann/.local/share/streamr-node"),
        );
        assert!(u.contains(
            "\nExecStart=\"/home/ann/.local/bin/streamr-node\" \"service\" \"run\" \"--data-dir\" \
             \"/home/ann/.local/share/streamr-node\"\n"
        ), "{u}");
        for line in [
            "Restart=on-failure",
            "RestartSec=5",
            "WantedBy=default.target",
            "[Unit]",
            "[Service]",
            "[Install]",
        ] {
            assert!(u.lines().any(|l| l == line), "{line} missing:\n{u}");
        }
    }

    #[test]
    fn paths_with_spaces_quotes_percent_and_dollar_are_taken_literally() {
        assert_eq!(quote("/home/a b/x"), "\"/home/a b/x\"");
        assert_eq!(
            quote("/d/100%/$HOME/\"q\"\\"),
            "\"/d/100%%/$$HOME/\\\"q\\\"\\\\\""
        );
    }

    /// `systemd-analyze verify` reads the unit as systemd would (syntax, ExecStart's binary exists).
    #[cfg(target_os = "linux")]
    #[test]
    fn systemd_analyze_accepts_the_unit() {
        use std::os::unix::fs::PermissionsExt;
        let Some(analyze) = crate::service::tests_support::tool_or_skip(
            "systemd-analyze",
            "apt-get install systemd",
        ) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        // An executable file, in a path with a space and a percent sign.
        let bin_dir = dir.path().join("my bin 100%");
        std::fs::create_dir_all(&bin_dir).unwrap();
        let exe = bin_dir.join("streamr-node");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let unit_path = dir.path().join(UNIT_FILE);
        std::fs::write(&unit_path, unit(&exe, &dir.path().join("data dir"))).unwrap();
        let out = std::process::Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(&unit_path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains(UNIT_FILE),
            "systemd-analyze: {stderr}"
        );

        // The check can fail: a unit whose binary does not exist is refused.
        std::fs::write(&unit_path, unit(&dir.path().join("missing"), dir.path())).unwrap();
        let out = std::process::Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(&unit_path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "a missing binary must be reported");
    }
}
