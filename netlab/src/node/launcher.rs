//! The one way to start `streamr-node` from outside: its arguments, its namespace (or none), where its log
//! goes (a file, or memory for tests that show it on failure), its ready line, and stopping it by PID.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use super::status::{Status, StatusError, fetch_status, fetch_status_blocking};

/// The message of the node's ready log line.
pub const READY_MESSAGE: &str = "streamr-node ready";
/// Lines of the log an error message shows.
const TAIL_LINES: usize = 8;
/// How long one status request may take.
const STATUS_LIMIT: Duration = Duration::from_secs(10);

/// What the node says in its ready line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// Its libp2p peer id.
    pub peer_id: String,
    /// RTMP address actually bound.
    pub rtmp_listen: SocketAddr,
    /// HTTP address actually bound.
    pub http_listen: SocketAddr,
}

/// Parses one JSON log line; `Some` for the ready line.
pub fn parse_ready(line: &str) -> Option<Ready> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    let field = |k: &str| {
        v.get(k)
            .or_else(|| v.get("fields").and_then(|f| f.get(k)))
            .and_then(|x| x.as_str())
            .map(str::to_string)
    };
    if field("message")? != READY_MESSAGE {
        return None;
    }
    Some(Ready {
        peer_id: field("peer_id")?,
        rtmp_listen: field("rtmp_listen")?.parse().ok()?,
        http_listen: field("http_listen")?.parse().ok()?,
    })
}

/// Why a node could not be started or did not become ready.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The binary would not run.
    #[error("cannot run {exe}: build it with `cargo build -p streamr-node` or pass --node")]
    Binary {
        /// The binary.
        exe: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The process could not be started.
    #[error("cannot start node {name}")]
    Spawn {
        /// The caller's name for the node.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The process was gone before its PID could be read.
    #[error("node {name}: the node exited at once")]
    ExitedAtOnce {
        /// The caller's name for the node.
        name: String,
    },
    /// The log file could not be created.
    #[error("cannot create {}", path.display())]
    LogFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The node exited, closed its output or took too long before its ready line.
    #[error("node {name} {why}; its log{where_} ends with:\n{tail}")]
    NotReady {
        /// The caller's name for the node.
        name: String,
        /// What happened.
        why: String,
        /// ` PATH` for a log file, empty for a log in memory.
        where_: String,
        /// The last lines of the log.
        tail: String,
    },
    /// [`NodeProcess::wait_ready`] was called twice.
    #[error("node {name}: wait_ready was already called")]
    AlreadyWaited {
        /// The caller's name for the node.
        name: String,
    },
}

/// Where a node's standard output and error go, line by line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeLog {
    /// This file (created, or truncated).
    File(PathBuf),
    /// Memory; read it with [`NodeProcess::log_text`].
    Memory,
}

/// How to start one `streamr-node run`: [`Launcher::new`] gives free loopback ports, no bootstrap, the
/// host's own network namespace and a log in memory; set the fields to change that.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The caller's name for the node, in errors.
    pub name: String,
    /// The `streamr-node` binary.
    pub exe: PathBuf,
    /// `--data-dir` (identity and keys); the caller owns it.
    pub data_dir: PathBuf,
    /// `--rtmp-listen`.
    pub rtmp_listen: SocketAddr,
    /// `--http-listen`.
    pub http_listen: SocketAddr,
    /// `--p2p-port`.
    pub p2p_port: u16,
    /// `--bootstrap`, one per address.
    pub bootstrap: Vec<String>,
    /// Anything else, appended as given.
    pub extra: Vec<String>,
    /// The network namespace to run in (`ip netns exec NS`); `None` runs it where the caller runs.
    pub namespace: Option<String>,
    /// Its scheduling niceness (-20 to 19, through coreutils' `nice`, which execs the node); 0 = as the
    /// caller.
    pub nice: i8,
    /// Where its output goes.
    pub log: NodeLog,
    /// Environment variables set for it.
    pub env: Vec<(String, String)>,
    /// Environment variables removed for it.
    pub env_remove: Vec<String>,
}

impl Launcher {
    /// A node of `exe` with data dir `data_dir` on free loopback ports (`127.0.0.1:0`, p2p port 0).
    pub fn new(exe: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Launcher {
        let loopback_any = SocketAddr::from(([127, 0, 0, 1], 0));
        Launcher {
            name: "node".into(),
            exe: exe.into(),
            data_dir: data_dir.into(),
            rtmp_listen: loopback_any,
            http_listen: loopback_any,
            p2p_port: 0,
            bootstrap: Vec::new(),
            extra: Vec::new(),
            namespace: None,
            nice: 0,
            log: NodeLog::Memory,
            env: Vec::new(),
            env_remove: Vec::new(),
        }
    }

    /// The arguments of `streamr-node`.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "run".to_string(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--rtmp-listen".into(),
            self.rtmp_listen.to_string(),
            "--http-listen".into(),
            self.http_listen.to_string(),
            "--p2p-port".into(),
            self.p2p_port.to_string(),
            "--log-format".into(),
            "json".into(),
        ];
        for b in &self.bootstrap {
            a.push("--bootstrap".into());
            a.push(b.clone());
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// The command that runs it (wrapped in `ip netns exec` for a namespace, and in `nice -n N` for a
    /// niceness: both exec, so the process started is the node itself).
    fn command(&self) -> Command {
        let (program, mut args): (OsString, Vec<OsString>) = if self.nice == 0 {
            (self.exe.clone().into(), Vec::new())
        } else {
            let n = self.nice.to_string();
            (
                "nice".into(),
                vec!["-n".into(), n.into(), self.exe.clone().into()],
            )
        };
        args.extend(self.to_args().into_iter().map(OsString::from));
        let mut cmd = match &self.namespace {
            Some(ns) => Command::from(crate::engine::sys::command_in(ns, &program)),
            None => Command::new(&program),
        };
        cmd.args(args);
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Starts the node; [`NodeProcess::wait_ready`] waits for its ready line. Needs a Tokio runtime.
    pub fn spawn(&self) -> Result<NodeProcess, LaunchError> {
        let (sink, log) = match &self.log {
            NodeLog::File(path) => {
                let file = std::fs::File::create(path).map_err(|source| LaunchError::LogFile {
                    path: path.clone(),
                    source,
                })?;
                (
                    Sink::File(tokio::fs::File::from_std(file)),
                    Log::File(path.clone()),
                )
            }
            NodeLog::Memory => {
                let lines = Arc::new(Mutex::new(Vec::new()));
                (Sink::Memory(lines.clone()), Log::Memory(lines))
            }
        };
        let mut child = self
            .command()
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                name: self.name.clone(),
                source,
            })?;
        let pid = child.id().ok_or_else(|| LaunchError::ExitedAtOnce {
            name: self.name.clone(),
        })?;
        let (tx, rx) = oneshot::channel();
        tokio::spawn(copy_log(child.stderr.take(), child.stdout.take(), sink, tx));
        Ok(NodeProcess {
            name: self.name.clone(),
            pid,
            log,
            child,
            http: self.http_listen,
            ready: None,
            ready_rx: Some(rx),
        })
    }

    /// Starts the node and waits up to `limit` for its ready line; a node that is not ready is stopped.
    pub async fn start(&self, limit: Duration) -> Result<NodeProcess, LaunchError> {
        let mut node = self.spawn()?;
        match node.wait_ready(limit).await {
            Ok(_) => Ok(node),
            Err(e) => {
                node.stop(Duration::from_secs(1)).await;
                Err(e)
            }
        }
    }
}

/// Whether `streamr-node run` accepts `flag` (read from its `--help`), so netlab can drive the nodes of
/// today and of tomorrow.
pub fn supports_flag(exe: &Path, flag: &str) -> Result<bool, LaunchError> {
    let out = std::process::Command::new(exe)
        .args(["run", "--help"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LaunchError::Binary {
            exe: exe.to_path_buf(),
            source,
        })?;
    let help = String::from_utf8_lossy(&out.stdout);
    Ok(help
        .split(|c: char| c.is_whitespace() || c == ',')
        .any(|w| w == flag))
}

/// Where a running node's log is.
#[derive(Debug, Clone)]
enum Log {
    File(PathBuf),
    Memory(Arc<Mutex<Vec<String>>>),
}

/// Where the log copier writes.
enum Sink {
    File(tokio::fs::File),
    Memory(Arc<Mutex<Vec<String>>>),
}

/// A running node. Dropping it kills the process.
#[derive(Debug)]
pub struct NodeProcess {
    /// The caller's name for it.
    pub name: String,
    /// Its PID (`ip netns exec` execs the node, so this is the node itself).
    pub pid: u32,
    log: Log,
    child: Child,
    /// Its HTTP address: the one it was given, then the one its ready line names.
    http: SocketAddr,
    ready: Option<Ready>,
    ready_rx: Option<oneshot::Receiver<Ready>>,
}

impl NodeProcess {
    /// Waits up to `limit` for the ready line (once).
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<Ready, LaunchError> {
        let rx = self
            .ready_rx
            .take()
            .ok_or_else(|| LaunchError::AlreadyWaited {
                name: self.name.clone(),
            })?;
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(r)) => {
                self.http = r.http_listen;
                self.ready = Some(r.clone());
                Ok(r)
            }
            outcome => {
                let status = self.child.try_wait().ok().flatten();
                let why = match (outcome, status) {
                    (_, Some(s)) => format!("exited ({s}) before it was ready"),
                    (Err(_), None) => format!("not ready after {limit:?}"),
                    (_, None) => "closed its log before it was ready".into(),
                };
                Err(LaunchError::NotReady {
                    name: self.name.clone(),
                    why,
                    where_: self
                        .log_path()
                        .map(|p| format!(" {}", p.display()))
                        .unwrap_or_default(),
                    tail: self.log_tail(TAIL_LINES),
                })
            }
        }
    }

    /// What its ready line said, once [`NodeProcess::wait_ready`] saw it.
    pub fn ready(&self) -> Option<&Ready> {
        self.ready.as_ref()
    }

    /// The log file, when it logs to one.
    pub fn log_path(&self) -> Option<&Path> {
        match &self.log {
            Log::File(p) => Some(p),
            Log::Memory(_) => None,
        }
    }

    /// Everything it logged so far (JSON lines).
    pub fn log_text(&self) -> String {
        match &self.log {
            Log::File(p) => std::fs::read_to_string(p).unwrap_or_default(),
            Log::Memory(lines) => lock(lines).join("\n"),
        }
    }

    /// The last `n` lines of its log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// CPU seconds and RSS in KiB so far (None once it is gone).
    pub fn usage(&self) -> Option<(f64, u64)> {
        Some((
            crate::engine::procstat::cpu_secs(self.pid)?,
            crate::engine::procstat::rss_kib(self.pid)?,
        ))
    }

    /// Its niceness as the kernel has it (see [`crate::engine::procstat::nice`]).
    pub fn nice(&self) -> Option<i8> {
        crate::engine::procstat::nice(self.pid)
    }

    /// Seconds it waited for a CPU while ready to run, and seconds since it started, so far (see
    /// [`crate::engine::procstat::wait_secs`]).
    pub fn waited(&self) -> Option<(f64, f64)> {
        Some((
            crate::engine::procstat::wait_secs(self.pid)?,
            crate::engine::procstat::age_secs(self.pid)?,
        ))
    }

    /// Resident memory in KiB (None once it is gone).
    pub fn rss_kib(&self) -> Option<u64> {
        crate::engine::procstat::rss_kib(self.pid)
    }

    /// Its status, from the HTTP address its ready line names (before it, the one it was given).
    pub async fn status(&self) -> Result<Status, StatusError> {
        fetch_status(self.http, STATUS_LIMIT).await
    }

    /// [`NodeProcess::status`] for synchronous callers (it blocks the thread).
    pub fn status_blocking(&self) -> Result<Status, StatusError> {
        fetch_status_blocking(self.http, STATUS_LIMIT)
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it at once (SIGKILL), as a crash or a pulled plug would, and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Stops it: SIGTERM, `grace` to exit (the node closes connections cleanly), then SIGKILL. Returns its
    /// exit code when it exited by itself within `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Option<i32> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.code();
        }
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Copies the node's output, line by line, to its log and reports the ready line.
async fn copy_log(
    stderr: Option<tokio::process::ChildStderr>,
    stdout: Option<tokio::process::ChildStdout>,
    mut sink: Sink,
    ready: oneshot::Sender<Ready>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    if let Some(out) = stdout {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send(l);
            }
        });
    }
    if let Some(err) = stderr {
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send(l);
            }
        });
    } else {
        drop(tx);
    }
    let mut ready = Some(ready);
    while let Some(line) = rx.recv().await {
        let r = ready.as_ref().and_then(|_| parse_ready(&line));
        match &mut sink {
            Sink::File(file) => {
                let _ = file.write_all(line.as_bytes()).await;
                let _ = file.write_all(b"\n").await;
            }
            Sink::Memory(lines) => lock(lines).push(line),
        }
        // After the line is in the log, so a caller woken by it finds it there.
        if let Some(r) = r
            && let Some(tx) = ready.take()
        {
            let _ = tx.send(r);
        }
    }
    if let Sink::File(file) = &mut sink {
        let _ = file.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ready_line() {
        let line = r#"{"timestamp":"2025-11-26T08:00:00Z","level":"INFO","message":"streamr-node ready","peer_id":"12D3KooWabc","rtmp_listen":"127.0.0.1:1935","http_listen":"127.0.0.1:8080","publish_key_required":false,"target":"streamr_node::node"}"#;
        let r = parse_ready(line).unwrap();
        assert_eq!(r.peer_id, "12D3KooWabc");
        assert_eq!(r.rtmp_listen, "127.0.0.1:1935".parse().unwrap());
        assert_eq!(r.http_listen.port(), 8080);
        // Nested fields (tracing's JSON without flattening) work too.
        let nested = r#"{"fields":{"message":"streamr-node ready","peer_id":"p","rtmp_listen":"127.0.0.1:1","http_listen":"127.0.0.1:2"}}"#;
        assert!(parse_ready(nested).is_some());
        for other in [
            "",
            "not json",
            r#"{"message":"publish started"}"#,
            r#"{"message":"streamr-node ready","peer_id":"p"}"#,
            "  streamr-node 0.1.0 is running",
        ] {
            assert_eq!(parse_ready(other), None, "{other}");
        }
    }

    #[test]
    fn node_arguments() {
        let a = Launcher {
            rtmp_listen: "127.0.0.1:1935".parse().unwrap(),
            http_listen: "127.0.0.1:8080".parse().unwrap(),
            p2p_port: 4001,
            bootstrap: vec!["/ip4/1/x".into(), "/ip4/2/y".into()],
            extra: vec!["--max-upload-kbps".into(), "5000".into()],
            ..Launcher::new("streamr-node", "/tmp/d")
        }
        .to_args();
        assert_eq!(a[0], "run");
        assert!(a.windows(2).any(|w| w == ["--data-dir", "/tmp/d"]));
        assert!(a.windows(2).any(|w| w == ["--p2p-port", "4001"]));
        assert!(a.windows(2).any(|w| w == ["--log-format", "json"]));
        assert_eq!(a.iter().filter(|x| *x == "--bootstrap").count(), 2);
        assert_eq!(a[a.len() - 2..], ["--max-upload-kbps", "5000"]);
        let loopback = Launcher::new("streamr-node", "/tmp/d").to_args();
        assert!(
            loopback
                .windows(2)
                .any(|w| w == ["--rtmp-listen", "127.0.0.1:0"])
        );
        assert!(loopback.windows(2).any(|w| w == ["--p2p-port", "0"]));
    }

    /// A stand-in for the node: a shell script that prints a ready line (or not) and then behaves as told.
    fn fake_node(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("fake-node");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    const READY: &str = r#"echo '{"message":"streamr-node ready","peer_id":"P","rtmp_listen":"127.0.0.1:1","http_listen":"127.0.0.1:2"}' >&2"#;

    #[tokio::test]
    async fn waits_for_the_ready_line_keeps_the_log_and_stops_by_pid() {
        let dir = tempfile::tempdir().unwrap();
        // Exits 3 on SIGTERM, so the test sees that stop() gave it the chance.
        let exe = fake_node(
            dir.path(),
            &format!(
                "trap 'exit 3' TERM\necho \"args: $*\"\n{READY}\nwhile :; do sleep 0.05; done"
            ),
        );
        let mut node = Launcher::new(&exe, dir.path())
            .start(Duration::from_secs(10))
            .await
            .unwrap();
        assert!(node.alive());
        assert_eq!(node.ready().unwrap().peer_id, "P");
        assert!(
            node.log_text().contains("args: run --data-dir"),
            "{}",
            node.log_text()
        );
        assert!(node.log_text().contains(READY_MESSAGE));
        assert!(node.rss_kib().is_some());
        assert_eq!(node.stop(Duration::from_secs(10)).await, Some(3));
        assert!(!node.alive());
    }

    #[tokio::test]
    async fn a_niceness_reaches_the_node_process_itself() {
        let dir = tempfile::tempdir().unwrap();
        let exe = fake_node(
            dir.path(),
            &format!("echo \"args: $*\"\n{READY}\nwhile :; do sleep 0.05; done"),
        );
        // A positive niceness needs no privilege.
        let mut node = Launcher {
            nice: 7,
            ..Launcher::new(&exe, dir.path())
        }
        .start(Duration::from_secs(10))
        .await
        .unwrap();
        assert_eq!(node.nice(), Some(7));
        // `nice` exec'd the node: its arguments are the node's, not nice's.
        assert!(
            node.log_text().contains("args: run --data-dir"),
            "{}",
            node.log_text()
        );
        node.stop(Duration::from_secs(10)).await;
        let mut plain = Launcher::new(&exe, dir.path())
            .start(Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(
            plain.nice(),
            crate::engine::procstat::nice(std::process::id())
        );
        plain.stop(Duration::from_secs(10)).await;
    }

    #[tokio::test]
    async fn a_node_that_exits_says_so_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let exe = fake_node(dir.path(), "echo 'port 1935 is in use' >&2\nexit 2");
        let log = dir.path().join("n.log");
        let e = Launcher {
            name: "alice".into(),
            log: NodeLog::File(log.clone()),
            ..Launcher::new(&exe, dir.path())
        }
        .start(Duration::from_secs(10))
        .await
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("node alice "), "{e}");
        assert!(
            e.contains(&format!("its log {} ends with", log.display())),
            "{e}"
        );
        assert!(e.contains("port 1935 is in use"), "{e}");
        assert!(std::fs::read_to_string(&log).unwrap().contains("port 1935"));
        let missing = Launcher::new(dir.path().join("nope"), dir.path())
            .spawn()
            .unwrap_err();
        assert!(matches!(missing, LaunchError::Spawn { .. }), "{missing}");
        assert!(matches!(
            supports_flag(&dir.path().join("nope"), "--bootstrap"),
            Err(LaunchError::Binary { .. })
        ));
    }

    #[tokio::test]
    async fn a_node_that_never_gets_ready_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        // Ignores SIGTERM: only SIGKILL ends it.
        let exe = fake_node(dir.path(), "trap '' TERM\nwhile :; do sleep 0.05; done");
        let mut node = Launcher::new(&exe, dir.path()).spawn().unwrap();
        let e = node
            .wait_ready(Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not ready after 300ms"), "{e}");
        assert!(matches!(
            node.wait_ready(Duration::from_millis(1)).await,
            Err(LaunchError::AlreadyWaited { .. })
        ));
        assert_eq!(node.stop(Duration::from_millis(300)).await, None);
        assert!(!node.alive());
    }
}
