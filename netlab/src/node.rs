//! `streamr-node` driven from outside: start it (in a lab namespace or on loopback) with its log in a file,
//! wait for its ready line, read its status API, and stop it by PID.
//!
//! The status is the web crate's own schema ([`Status`]); every field of it has a default, so an older or
//! newer node never breaks a run.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// The message of the node's ready log line.
pub const READY_MESSAGE: &str = "streamr-node ready";
/// The status API path.
pub const STATUS_PATH: &str = "/api/v1/status";

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

/// The status API's own types (crate `streamr-web`): the node fills them, netlab reads them.
pub use streamr_web::{MeshStream, NatStatus, PeerStatus, Status, StreamStatus};

/// What netlab asks of a [`Status`].
pub trait StatusExt {
    /// True when the node runs the mesh: it reports where it listens.
    fn has_mesh(&self) -> bool;
    /// True when the node reports its NAT (a node without the mesh has nothing to say).
    fn reports_nat(&self) -> bool;
    /// The peer entry for `peer_id`.
    fn peer(&self, peer_id: &str) -> Option<&PeerStatus>;
    /// The stream called `name`.
    fn stream(&self, name: &str) -> Option<&StreamStatus>;
}

impl StatusExt for Status {
    fn has_mesh(&self) -> bool {
        !self.listen_addrs.is_empty()
    }

    fn reports_nat(&self) -> bool {
        !self.nat.reachability.is_empty()
    }

    fn peer(&self, peer_id: &str) -> Option<&PeerStatus> {
        self.peers.iter().find(|p| p.peer_id == peer_id)
    }

    fn stream(&self, name: &str) -> Option<&StreamStatus> {
        self.streams.iter().find(|s| s.name == name)
    }
}

/// What netlab asks of a [`PeerStatus`].
pub trait PeerStatusExt {
    /// True for a direct connection.
    fn is_direct(&self) -> bool;
}

impl PeerStatusExt for PeerStatus {
    fn is_direct(&self) -> bool {
        self.connection == "direct"
    }
}

/// The listen address another node should bootstrap from: one on `ip` (QUIC first, then TCP), or with
/// no `ip` the first QUIC/TCP address that is not loopback. Only addresses that name the peer qualify.
pub fn pick_bootstrap_addr(addrs: &[String], ip: Option<Ipv4Addr>) -> Option<String> {
    let with_peer: Vec<&String> = addrs.iter().filter(|a| a.contains("/p2p/")).collect();
    let on_ip = |a: &&String| match ip {
        Some(ip) => a.starts_with(&format!("/ip4/{ip}/")),
        None => a.starts_with("/ip4/") && !a.starts_with("/ip4/127."),
    };
    let quic = |a: &&String| a.contains("/quic-v1/");
    let tcp = |a: &&String| a.contains("/tcp/");
    with_peer
        .iter()
        .find(|a| on_ip(a) && quic(a))
        .or_else(|| with_peer.iter().find(|a| on_ip(a) && tcp(a)))
        .map(|a| (*a).clone())
}

/// The arguments of `streamr-node run` for netlab.
#[derive(Debug, Clone)]
pub struct NodeArgs {
    /// A fresh data dir (identity and keys).
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
}

impl NodeArgs {
    /// The argument list.
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
}

/// Whether `streamr-node run` accepts `flag` (read from its `--help`), so netlab can drive the nodes of
/// today and of tomorrow.
pub fn supports_flag(exe: &Path, flag: &str) -> anyhow::Result<bool> {
    let out = std::process::Command::new(exe)
        .args(["run", "--help"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "cannot run {}: build it with `cargo build -p streamr-node` or pass --node",
                exe.display()
            )
        })?;
    let help = String::from_utf8_lossy(&out.stdout);
    Ok(help
        .split(|c: char| c.is_whitespace() || c == ',')
        .any(|w| w == flag))
}

/// A running node.
#[derive(Debug)]
pub struct NodeProcess {
    /// The caller's name for it.
    pub name: String,
    /// Its PID (`ip netns exec` execs the node, so this is the node itself).
    pub pid: u32,
    /// Where its log goes.
    pub log: PathBuf,
    child: Child,
    ready: Option<oneshot::Receiver<Ready>>,
}

impl NodeProcess {
    /// Starts `cmd` (the node binary, possibly wrapped in `ip netns exec`) with `args`; standard output and
    /// error go to `log`.
    pub fn spawn(
        name: &str,
        cmd: std::process::Command,
        args: &NodeArgs,
        log: &Path,
    ) -> anyhow::Result<NodeProcess> {
        let mut cmd = Command::from(cmd);
        cmd.args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start node {name}"))?;
        let pid = child.id().context("the node exited at once")?;
        let file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let (tx, rx) = oneshot::channel();
        let stderr = child.stderr.take();
        let stdout = child.stdout.take();
        let file = tokio::fs::File::from_std(file);
        tokio::spawn(copy_log(stderr, stdout, file, tx));
        Ok(NodeProcess {
            name: name.to_string(),
            pid,
            log: log.to_path_buf(),
            child,
            ready: Some(rx),
        })
    }

    /// Waits for the ready line.
    pub async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<Ready> {
        let rx = self.ready.take().context("wait_ready was already called")?;
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(r)) => Ok(r),
            outcome => {
                let status = self.child.try_wait().ok().flatten();
                let why = match (outcome, status) {
                    (_, Some(s)) => format!("exited ({s}) before it was ready"),
                    (Err(_), None) => format!("not ready after {limit:?}"),
                    (_, None) => "closed its log before it was ready".into(),
                };
                bail!(
                    "node {} {why}; its log {} ends with:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 8)
                )
            }
        }
    }

    /// CPU seconds and RSS so far (None once it is gone).
    pub fn usage(&self) -> Option<(f64, u64)> {
        Some((
            crate::bench::procstat::cpu_secs(self.pid)?,
            crate::bench::procstat::rss_kib(self.pid)?,
        ))
    }

    /// Stops it: SIGTERM, `grace` to exit (the node closes connections cleanly), then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Copies the node's output to its log file and reports the ready line.
async fn copy_log(
    stderr: Option<tokio::process::ChildStderr>,
    stdout: Option<tokio::process::ChildStdout>,
    mut file: tokio::fs::File,
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
        if ready.is_some()
            && let Some(r) = parse_ready(&line)
            && let Some(tx) = ready.take()
        {
            let _ = tx.send(r);
        }
        let _ = file.write_all(line.as_bytes()).await;
        let _ = file.write_all(b"\n").await;
    }
    let _ = file.flush().await;
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A plain HTTP/1.0 GET of `path` on `addr`; the body when the answer is 200.
pub async fn http_get(addr: SocketAddr, path: &str, limit: Duration) -> anyhow::Result<String> {
    tokio::time::timeout(limit, async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        let req =
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .context("the answer has no HTTP header")?;
        let code = head.split_whitespace().nth(1).unwrap_or("");
        if code != "200" {
            bail!("GET {path} on {addr}: HTTP {code}");
        }
        Ok(body.to_string())
    })
    .await
    .with_context(|| format!("GET {path} on {addr} took longer than {limit:?}"))?
}

/// Fetches and parses the status.
pub async fn fetch_status(addr: SocketAddr, limit: Duration) -> anyhow::Result<Status> {
    let body = http_get(addr, STATUS_PATH, limit).await?;
    serde_json::from_str(&body).context("the status is not the JSON netlab expects")
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
    fn status_of_today_and_of_the_mesh_both_parse() {
        let today = r#"{"peer_id":"A","version":"0.1.0","streams":[{"name":"probe","live":true,"players":1,"frames":9}]}"#;
        let s: Status = serde_json::from_str(today).unwrap();
        assert!(!s.has_mesh());
        assert!(!s.reports_nat());
        assert_eq!(s.stream("probe").unwrap().frames, 9);
        assert!(s.peers.is_empty());
        let mesh = r#"{"peer_id":"B","listen_addrs":["/ip4/127.0.0.1/udp/4001/quic-v1/p2p/B"],
            "peers":[{"peer_id":"A","connection":"direct","rtt_ms":50.5,"addr":"/ip4/1.2.3.4/udp/1/quic-v1","direct_after_ms":1200,"future":1}],
            "streams":[{"name":"probe","origin":"A","upstream":"A","hops":1,"subscribers":0}],
            "nat":{"reachability":"private","external_addrs":[],"hint":"behind NAT","hole_punch_attempts":2,
                   "hole_punch_successes":1,"hole_punch_failures":{"timeout":1},"upgrades":1,"upnp":"no-gateway"}}"#;
        let s: Status = serde_json::from_str(mesh).unwrap();
        assert!(s.has_mesh());
        assert!(s.reports_nat());
        assert!(s.peer("A").unwrap().is_direct());
        assert_eq!(s.peer("A").unwrap().direct_after_ms, Some(1200));
        assert_eq!(s.stream("probe").unwrap().hops, Some(1));
        assert_eq!(s.nat.reachability, "private");
        assert_eq!(s.nat.hole_punch_failures["timeout"], 1);
    }

    #[test]
    fn picks_a_reachable_bootstrap_address() {
        let addrs: Vec<String> = [
            "/ip4/127.0.0.1/udp/4001/quic-v1/p2p/P",
            "/ip4/127.0.0.1/tcp/4001/p2p/P",
            "/ip4/10.0.1.2/tcp/4001/p2p/P",
            "/ip4/10.0.1.2/udp/4001/quic-v1/p2p/P",
            "/ip4/198.51.100.2/udp/4001/quic-v1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let lo = Some(Ipv4Addr::LOCALHOST);
        assert_eq!(
            pick_bootstrap_addr(&addrs, lo).as_deref(),
            Some("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/P")
        );
        assert_eq!(
            pick_bootstrap_addr(&addrs, Some(Ipv4Addr::new(10, 0, 1, 2))).as_deref(),
            Some("/ip4/10.0.1.2/udp/4001/quic-v1/p2p/P")
        );
        assert_eq!(
            pick_bootstrap_addr(&addrs, None).as_deref(),
            Some("/ip4/10.0.1.2/udp/4001/quic-v1/p2p/P")
        );
        // Without /p2p/ the address cannot be dialled as a bootstrap peer.
        assert_eq!(
            pick_bootstrap_addr(&addrs, Some(Ipv4Addr::new(198, 51, 100, 2))),
            None
        );
        assert_eq!(
            pick_bootstrap_addr(&addrs[1..2], lo).as_deref(),
            Some("/ip4/127.0.0.1/tcp/4001/p2p/P")
        );
    }

    #[test]
    fn node_arguments() {
        let a = NodeArgs {
            data_dir: "/tmp/d".into(),
            rtmp_listen: "127.0.0.1:1935".parse().unwrap(),
            http_listen: "127.0.0.1:8080".parse().unwrap(),
            p2p_port: 4001,
            bootstrap: vec!["/ip4/1/x".into(), "/ip4/2/y".into()],
            extra: vec!["--max-upload-kbps".into(), "5000".into()],
        }
        .to_args();
        assert_eq!(a[0], "run");
        assert!(a.windows(2).any(|w| w == ["--log-format", "json"]));
        assert_eq!(a.iter().filter(|x| *x == "--bootstrap").count(), 2);
        assert_eq!(a[a.len() - 2..], ["--max-upload-kbps", "5000"]);
    }

    #[tokio::test]
    async fn http_get_reads_a_body_and_refuses_errors() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"peer_id\":\"X\"}",
                "HTTP/1.0 404 Not Found\r\n\r\nno",
            ] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let st = fetch_status(addr, Duration::from_secs(2)).await.unwrap();
        assert_eq!(st.peer_id, "X");
        let e = http_get(addr, STATUS_PATH, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("HTTP 404"), "{e}");
    }
}
