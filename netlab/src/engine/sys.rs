//! Thin wrappers over the system tools the lab drives (`ip`, `nft`, `sysctl`, `tc`) and over `/proc`.
//!
//! Everything that changes the system goes through a namespace the lab names explicitly (`ip -n NS` or
//! `ip netns exec NS`); nothing here runs a configuration command in the host namespace except creating and
//! deleting the lab's own namespaces.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::error::{CommandFailed, LabError, LabResult};

/// Where `ip netns` keeps the named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Checks that the process can build a lab: root, `ip` and `nft` present.
pub fn check_privileges() -> LabResult<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::NotRoot);
    }
    for (tool, package, arg) in [("ip", "iproute2", "-V"), ("nft", "nftables", "--version")] {
        let found = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if found.is_err() {
            return Err(LabError::MissingTool { tool, package });
        }
    }
    Ok(())
}

/// Renders a command for error messages.
fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion with `input` on standard input; fails with its stderr when it fails.
pub fn run(cmd: &mut Command, input: Option<&str>) -> LabResult<Output> {
    let rendered = render(cmd);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| LabError::io(format!("cannot start `{rendered}`"), e))?;
    if let Some(text) = input {
        // Dropping stdin after writing closes it, so tools that read to EOF (ip -batch, nft -f) finish.
        let mut stdin = child.stdin.take().expect("stdin was piped");
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| LabError::io(format!("writing to `{rendered}`"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LabError::io(format!("waiting for `{rendered}`"), e))?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if let Some(text) = input {
            stderr.push_str(&format!("\ninput was:\n{text}"));
        }
        return Err(CommandFailed {
            command: rendered,
            status: out.status.to_string(),
            stderr,
        }
        .into());
    }
    Ok(out)
}

/// A command that runs `program` inside namespace `ns` (`ip netns exec NS PROGRAM`).
pub fn command_in(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

/// Runs `ip` commands, one per line, in namespace `ns` (or the host namespace for `netns add/del`), in one
/// process: forking `ip` once per command is what makes large labs slow.
pub fn ip_batch(ns: Option<&str>, lines: &[String]) -> LabResult<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["-batch", "-"]);
    let mut text = lines.join("\n");
    text.push('\n');
    run(&mut cmd, Some(&text)).map(drop)
}

/// Loads an nftables ruleset into namespace `ns`.
pub fn nft_load(ns: &str, ruleset: &str) -> LabResult<()> {
    let mut cmd = command_in(ns, "nft");
    cmd.args(["-f", "-"]);
    run(&mut cmd, Some(ruleset)).map(drop)
}

/// Sets sysctls inside namespace `ns` (`/proc/sys/net` shows the namespace of the reading process).
pub fn sysctl_in(ns: &str, settings: &[(&str, String)]) -> LabResult<()> {
    if settings.is_empty() {
        return Ok(());
    }
    let mut cmd = command_in(ns, "sysctl");
    // -e: a key that does not exist on this kernel (bridge netfilter not loaded) is not an error.
    cmd.args(["-e", "-q", "-w"]);
    for (k, v) in settings {
        cmd.arg(format!("{k}={v}"));
    }
    run(&mut cmd, None).map(drop)
}

/// Names of all named network namespaces on the machine.
pub fn netns_list() -> LabResult<Vec<String>> {
    let dir = match std::fs::read_dir(NETNS_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LabError::io(format!("reading {NETNS_DIR}"), e)),
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// The (device, inode) identity of a network namespace file or `/proc/PID/ns/net` link.
fn ns_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Every process whose network namespace is one of `names`, with that name. Found by comparing namespace
/// identities under `/proc`, so a process outside the lab can never be listed.
pub fn pids_in_namespaces(names: &[String]) -> Vec<(i32, String)> {
    let ids: HashMap<(u64, u64), &String> = names
        .iter()
        .filter_map(|n| ns_identity(&Path::new(NETNS_DIR).join(n)).map(|id| (id, n)))
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in proc_dir.filter_map(|e| e.ok()) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        if let Some(id) = ns_identity(&entry.path().join("ns/net"))
            && let Some(name) = ids.get(&id)
        {
            found.push((pid, (*name).clone()));
        }
    }
    found
}

/// Sends `signal` to each pid; a process that is already gone is not an error.
pub fn signal_pids(pids: &[i32], signal: Signal) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Stops every process in the namespaces `names`: SIGTERM, up to `grace` to exit, then SIGKILL.
pub fn stop_processes_in(names: &[String], grace: std::time::Duration) {
    let pids: Vec<i32> = pids_in_namespaces(names)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    if pids.is_empty() {
        return;
    }
    signal_pids(&pids, Signal::SIGTERM);
    let deadline = std::time::Instant::now() + grace;
    loop {
        let left: Vec<i32> = pids_in_namespaces(names)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        if left.is_empty() {
            return;
        }
        if std::time::Instant::now() >= deadline {
            signal_pids(&left, Signal::SIGKILL);
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Deletes the named namespaces (one `ip` process for all of them). A namespace that is already gone
/// (removed concurrently, or never created) is fine; one that is still there afterwards is an error.
pub fn delete_namespaces(names: &[String]) -> LabResult<()> {
    let exists = |n: &String| Path::new(NETNS_DIR).join(n).exists();
    let existing: Vec<&String> = names.iter().filter(|n| exists(n)).collect();
    if existing.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = existing.iter().map(|n| format!("netns del {n}")).collect();
    let mut cmd = Command::new("ip");
    // -force: keep deleting the rest when one fails.
    cmd.args(["-force", "-batch", "-"]);
    let mut text = lines.join("\n");
    text.push('\n');
    let result = run(&mut cmd, Some(&text));
    let left: Vec<&String> = existing.into_iter().filter(|n| exists(n)).collect();
    match (left.is_empty(), result) {
        (true, _) => Ok(()),
        (false, Err(e)) => Err(e),
        (false, Ok(_)) => Err(LabError::io(
            format!("namespaces still present after deletion: {left:?}"),
            std::io::Error::other("ip netns del left them"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_in_namespace_is_ip_netns_exec() {
        let mut c = command_in("nlab0001-h1", "ping");
        c.arg("-c1");
        assert_eq!(render(&c), "ip netns exec nlab0001-h1 ping -c1");
    }

    #[test]
    fn no_namespace_has_no_processes() {
        assert!(pids_in_namespaces(&["nlab-does-not-exist".to_string()]).is_empty());
    }
}
