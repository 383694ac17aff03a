//! macOS: a launchd agent (`~/Library/LaunchAgents/streamr-node.plist`) in the user's GUI session: it
//! starts at login and launchd starts the node again when it exits with an error.
#![cfg_attr(not(any(test, target_os = "macos")), allow(dead_code))]

use super::{SERVICE_NAME, service_args};
use std::path::Path;

/// The agent's plist file name.
pub const PLIST_FILE: &str = "streamr-node.plist";
/// Where launchd writes what the node prints before its log file is open (a bad config.toml), inside
/// the data dir's logs folder.
pub const STDERR_FILE: &str = "launchd-stderr.log";

/// The agent's property list.
pub fn plist(exe: &Path, data_dir: &Path, stderr_file: &Path) -> String {
    let mut args = format!("        <string>{}</string>\n", xml(&exe.to_string_lossy()));
    for a in service_args(data_dir) {
        args.push_str(&format!(
            "        <string>{}</string>\n",
            xml(&a.to_string_lossy())
        ));
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Installed by `streamr-node service install`; remove it with `streamr-node service uninstall`. -->
<plist version="1.0">
<dict>
    <key>Label</key>
    <string>{SERVICE_NAME}</string>
    <key>ProgramArguments</key>
    <array>
{args}    </array>
    <key>RunAtLoad</key>
    <true/>
    <!-- Start it again when it exits with an error (a crash); a clean stop stays stopped. -->
    <key>KeepAlive</key>
    <dict>
        <key>SuccessfulExit</key>
        <false/>
    </dict>
    <key>ThrottleInterval</key>
    <integer>5</integer>
    <key>StandardErrorPath</key>
    <string>{stderr}</string>
</dict>
</plist>
"#,
        stderr = xml(&stderr_file.to_string_lossy()),
    )
}

/// Escapes text for an XML element.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

#[cfg(target_os = "macos")]
pub mod platform {
    use super::super::{SERVICE_NAME, ServiceState, tool};
    use super::{PLIST_FILE, STDERR_FILE, plist};
    use anyhow::Context;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;

    /// What the user may want to know after `install`.
    pub const HINT: &str =
        "It starts when you log in. Follow it with: tail -f on the newest file in the logs folder";
    /// launchd would write stderr to a file that nobody rotates: the node's own log file is enough.
    pub const LOG_TO_STDERR: bool = false;

    fn plist_path() -> anyhow::Result<PathBuf> {
        let home =
            dirs::home_dir().context("cannot find your home folder to put the launchd agent in")?;
        Ok(home.join("Library").join("LaunchAgents").join(PLIST_FILE))
    }

    /// `gui/<uid>`: the login session's launchd domain.
    fn domain() -> anyhow::Result<String> {
        Ok(format!("gui/{}", tool("id", &["-u"])?))
    }

    /// Writes the plist and loads it (replacing a loaded one). Returns the plist file.
    pub fn install(exe: &Path, data_dir: &Path) -> anyhow::Result<String> {
        let path = plist_path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let logs = data_dir.join(crate::logging::LOG_DIR);
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        std::fs::write(&path, plist(exe, data_dir, &logs.join(STDERR_FILE)))
            .with_context(|| format!("cannot write {}", path.display()))?;
        let domain = domain()?;
        // A reinstall replaces the running agent; "not loaded" is fine.
        let _ = tool(
            "launchctl",
            &["bootout", &format!("{domain}/{SERVICE_NAME}")],
        );
        tool(
            "launchctl",
            &["bootstrap", &domain, &path.to_string_lossy()],
        )?;
        Ok(path.display().to_string())
    }

    /// Unloads and removes the agent. `None` when it was not installed.
    pub fn uninstall() -> anyhow::Result<Option<String>> {
        let path = plist_path()?;
        if !path.exists() {
            return Ok(None);
        }
        if let Err(e) = tool(
            "launchctl",
            &["bootout", &format!("{}/{SERVICE_NAME}", domain()?)],
        ) {
            eprintln!("note: {e:#}");
        }
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        Ok(Some(path.display().to_string()))
    }

    /// Whether the plist exists and launchd reports the agent running.
    pub fn status() -> anyhow::Result<ServiceState> {
        let path = plist_path()?;
        let installed = path.exists().then(|| path.display().to_string());
        let (running, detail) = match tool(
            "launchctl",
            &["print", &format!("{}/{SERVICE_NAME}", domain()?)],
        ) {
            Ok(out) => {
                let state = out
                    .lines()
                    .map(str::trim)
                    .find_map(|l| l.strip_prefix("state = "))
                    .unwrap_or("unknown")
                    .to_string();
                (state == "running", format!("launchd: state = {state}"))
            }
            Err(_) => (false, "launchd: not loaded".to_string()),
        };
        Ok(ServiceState {
            installed,
            running,
            detail,
        })
    }

    /// Runs the node until launchd stops it (SIGTERM).
    pub fn run(config: crate::config::Config) -> ExitCode {
        crate::serve(config, crate::stop_signal())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_runs_the_service_and_restarts_it_after_a_failure() {
        let p = plist(
            Path::new("/Users/ann/bin/streamr-node"),
            Path::new("/Users/ann/Library/Application Support/streamr-node"),
            &Path::new("/Users/ann/Library/Application Support/streamr-node/logs")
                .join(STDERR_FILE),
        );
        for part in [
            "<string>streamr-node</string>",
            "<string>/Users/ann/bin/streamr-node</string>\n        <string>service</string>\n        \
             <string>run</string>\n        <string>--data-dir</string>\n        \
             <string>/Users/ann/Library/Application Support/streamr-node</string>",
            "<key>SuccessfulExit</key>\n        <false/>",
            "<key>RunAtLoad</key>\n    <true/>",
            "<string>/Users/ann/Library/Application Support/streamr-node/logs/launchd-stderr.log</string>",
        ] {
            assert!(p.contains(part), "{part:?} missing:\n{p}");
        }
    }

    #[test]
    fn paths_are_escaped_for_xml() {
        let p = plist(Path::new("/a&b/<x>"), Path::new("/d\"'"), Path::new("/e"));
        assert!(p.contains("<string>/a&amp;b/&lt;x&gt;</string>"), "{p}");
        assert!(p.contains("<string>/d&quot;&apos;</string>"), "{p}");
    }

    /// A real plist parser reads it, when there is one (python3's plistlib; macOS has plutil too).
    #[test]
    fn a_plist_parser_reads_the_agent() {
        let Some(python) =
            crate::service::tests_support::tool_or_skip("python3", "apt-get install python3")
        else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PLIST_FILE);
        std::fs::write(
            &path,
            plist(
                Path::new("/opt/s&n/streamr-node"),
                Path::new("/data dir"),
                Path::new("/e.log"),
            ),
        )
        .unwrap();
        let out = std::process::Command::new(python)
            .args([
                "-c",
                "import plistlib,sys; p=plistlib.load(open(sys.argv[1],'rb')); \
                 print(p['Label'], p['ProgramArguments'], p['KeepAlive'], p['RunAtLoad'])",
            ])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            text.trim(),
            "streamr-node ['/opt/s&n/streamr-node', 'service', 'run', '--data-dir', '/data dir'] \
             {'SuccessfulExit': False} True"
        );
    }
}
