//! The real `streamr-coordinator` binary for the integration tests: started on a loopback port with its
//! SQLite file in a temp dir, killed by PID (SIGKILL, as a crash would) and started again on the same
//! database and port; public reads, operator requests, and the node's view of it.

use super::{TestNode, http_get, require_external, wait_until};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use streamr_web::CoordinatorStatus;
use tokio::process::{Child, Command};

/// The operator token the tests' coordinators are started with.
pub const OPERATOR_TOKEN: &str = "test-operator-token";

/// The `streamr-coordinator` binary cargo built beside the node, or the skip rule's verdict.
pub fn coordinator_binary() -> Option<PathBuf> {
    let bin =
        PathBuf::from(env!("CARGO_BIN_EXE_streamr-node")).with_file_name("streamr-coordinator");
    if bin.exists() {
        return Some(bin);
    }
    let why = format!(
        "{} not found: build it with `cargo build -p streamr-coordinator` (a workspace build does)",
        bin.display()
    );
    if require_external() {
        panic!("{why}, and STREAMR_REQUIRE_EXTERNAL=1");
    }
    eprintln!("SKIP: {why}");
    None
}

/// A `streamr-coordinator` process on a loopback port with its SQLite file in a temp dir.
pub struct Coordinator {
    child: Option<Child>,
    bin: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Coordinator {
    /// Starts it on `port` (heartbeats every 2 s: a node is offline after 6 s without one).
    pub async fn start(bin: &Path, port: u16) -> Coordinator {
        let mut c = Coordinator {
            child: None,
            bin: bin.to_path_buf(),
            addr: ([127, 0, 0, 1], port).into(),
            dir: tempfile::tempdir().unwrap(),
        };
        c.spawn().await;
        c
    }

    async fn spawn(&mut self) {
        let db = format!(
            "sqlite://{}",
            self.dir.path().join("coordinator.db").display()
        );
        // Appended: a restarted coordinator's log follows the first one's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .args(["--listen", &self.addr.to_string(), "--database-url", &db])
            .args(["--operator-token", OPERATOR_TOKEN])
            .args(["--heartbeat-interval-secs", "2"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn streamr-coordinator");
        self.child = Some(child);
        let addr = self.addr;
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(addr).is_ok()
        })
        .await;
        assert!(up, "the coordinator did not start:\n{}", self.log());
    }

    /// Kills the process by its PID with SIGKILL (no graceful shutdown) and waits until it is gone.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("the coordinator runs");
        let pid = child.id().expect("a running coordinator has a PID");
        let st = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -KILL {pid} failed");
        child.wait().await.expect("reap the coordinator");
    }

    /// Starts it again on the same database and port.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        self.spawn().await;
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// GET `path` (public reads) as JSON.
    pub fn get(&self, path: &str) -> Value {
        let (code, body) = http_get(self.addr, path);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// `GET /api/v1/nodes/{peer}`: `{"peer_id", "online", "trust_score", "verified_bytes", "claimed_bytes",
    /// "earnings"}`.
    pub fn node(&self, peer: &str) -> Value {
        self.get(&format!("/api/v1/nodes/{peer}"))
    }

    /// The stream `name` as `GET /api/v1/streams` lists it.
    pub fn listed(&self, name: &str) -> Option<Value> {
        self.get("/api/v1/streams")["streams"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
    }

    /// An operator request with the token; returns (status, JSON answer).
    pub async fn operator(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url()))
            .bearer_auth(OPERATOR_TOKEN);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&b).unwrap());
        }
        let resp = req.send().await.expect("operator request");
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sets the operator's rate (paid per 10^9 verified bytes).
    pub async fn set_rate(&self, rate_per_gb: f64) {
        let (code, v) = self
            .operator(
                reqwest::Method::PUT,
                "/api/v1/operator/rate",
                Some(serde_json::json!({ "rate_per_gb": rate_per_gb })),
            )
            .await;
        assert!((200..300).contains(&code), "setting the rate: {code} {v}");
    }
}

/// The node's `coordinator` status section (the node must have one).
pub fn coord(node: &TestNode) -> CoordinatorStatus {
    node.status()
        .coordinator
        .expect("a node with --coordinator has a coordinator section in its status")
}

/// Whether `node` has a mesh connection to `peer`.
pub fn connected(node: &TestNode, peer: &str) -> bool {
    node.status().peers.iter().any(|p| p.peer_id == peer)
}
