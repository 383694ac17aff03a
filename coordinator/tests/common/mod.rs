//! Test helpers: a coordinator started in-process on port 0 (SQLite in a temp dir, or a fresh database on
//! the Postgres named by `STREAMR_TEST_POSTGRES_URL`), signed raw requests, and the external-tool rule.

#![allow(dead_code)]

use std::time::Duration;

use libp2p_identity::Keypair;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Connection as _;
use streamr_coordinator::api::*;
use streamr_coordinator::auth::{new_nonce, sign_request};
use streamr_coordinator::server::{self, Clock, RunningServer, ServerConfig};
use streamr_coordinator::time::now_ms;
use tokio_util::sync::CancellationToken;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A database for one test; dropped by [`TestDb::cleanup`].
pub struct TestDb {
    pub url: String,
    admin_url: Option<String>,
    name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh database, or `None` (after printing SKIP) when Postgres is not configured.
    pub async fn new(db: Db) -> Option<TestDb> {
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                Some(TestDb {
                    url: format!("sqlite://{}", dir.path().join("c.db").display()),
                    admin_url: None,
                    name: None,
                    _dir: Some(dir),
                })
            }
            Db::Postgres => {
                let Ok(admin) = std::env::var("STREAMR_TEST_POSTGRES_URL") else {
                    let msg = "SKIP: Postgres tests need STREAMR_TEST_POSTGRES_URL=postgres://USER:PASS@HOST/DB \
                               of a role with CREATEDB (Debian: apt-get install postgresql; see docs/coordinator.md)";
                    if std::env::var("STREAMR_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
                        panic!("STREAMR_REQUIRE_EXTERNAL=1 but {msg}");
                    }
                    eprintln!("{msg}");
                    return None;
                };
                let name = format!("streamr_test_{}", hex::encode(rand::random::<[u8; 6]>()));
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("connect to STREAMR_TEST_POSTGRES_URL");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("CREATE DATABASE (the role needs CREATEDB)");
                let mut url = url::Url::parse(&admin).unwrap();
                url.set_path(&format!("/{name}"));
                Some(TestDb {
                    url: url.to_string(),
                    admin_url: Some(admin),
                    name: Some(name),
                    _dir: None,
                })
            }
        }
    }

    /// Drops a Postgres test database (SQLite's temp dir goes with `self`).
    pub async fn cleanup(self) {
        if let (Some(admin), Some(name)) = (&self.admin_url, &self.name) {
            let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
}

pub const OPERATOR_TOKEN: &str = "test-operator-token";
pub const INTERVAL_SECS: u64 = 30;

/// Starts a coordinator on `url` with a manual clock at the current time.
pub async fn start(url: &str, clock: Clock) -> (RunningServer, CancellationToken) {
    let cancel = CancellationToken::new();
    let running = server::start(
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: url.to_string(),
            operator_token: Some(OPERATOR_TOKEN.into()),
            heartbeat_interval_secs: INTERVAL_SECS,
            postgres_connections: 4,
            clock,
        },
        cancel.clone(),
    )
    .await
    .expect("coordinator starts");
    (running, cancel)
}

pub async fn stop(running: RunningServer, cancel: CancellationToken) {
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("server stops");
}

/// A raw answer.
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    pub fn parse<T: DeserializeOwned>(&self) -> T {
        assert!(
            (200..300).contains(&self.status),
            "status {} body {}",
            self.status,
            self.body
        );
        serde_json::from_value(self.body.clone()).unwrap()
    }
}

/// Sends a request signed by `key` with timestamp `ts_ms` and `nonce` (None = unsigned).
pub async fn raw(
    base: &str,
    method: &str,
    path: &str,
    body: &[u8],
    key: Option<(&Keypair, i64, String)>,
    extra: &[(&str, &str)],
) -> Answer {
    let http = reqwest::Client::new();
    let mut rb = http.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{base}{path}"),
    );
    if let Some((kp, ts, nonce)) = key {
        let signed = sign_request(kp, method, path, body, ts, nonce);
        for (k, v) in signed.to_pairs() {
            rb = rb.header(k, v);
        }
    }
    for (k, v) in extra {
        rb = rb.header(*k, *v);
    }
    if method != "GET" {
        rb = rb.body(body.to_vec());
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Answer { status, body }
}

/// A correctly signed JSON request.
pub async fn signed<B: Serialize>(
    base: &str,
    method: &str,
    path: &str,
    kp: &Keypair,
    body: &B,
) -> Answer {
    let bytes = serde_json::to_vec(body).unwrap();
    raw(
        base,
        method,
        path,
        &bytes,
        Some((kp, now_ms(), new_nonce())),
        &[],
    )
    .await
}

/// An operator request.
pub async fn operator<B: Serialize>(base: &str, method: &str, path: &str, body: &B) -> Answer {
    let bytes = serde_json::to_vec(body).unwrap();
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    raw(
        base,
        method,
        path,
        &bytes,
        None,
        &[("authorization", &auth)],
    )
    .await
}

pub fn registration(kp: &Keypair, reachability: Reachability) -> RegisterRequest {
    RegisterRequest {
        peer_id: kp.public().to_peer_id(),
        version: "0.1.0".into(),
        nickname: "test".into(),
        external_addrs: vec!["/ip4/192.0.2.1/udp/4001/quic-v1".into()],
        relay_addrs: vec![],
        listen_addrs: vec!["/ip4/10.0.0.2/udp/4001/quic-v1".into()],
        reachability,
        upload_cap_kbps: 8000,
        os: "linux".into(),
        arch: "x86_64".into(),
    }
}

/// Registers a new node and returns its key.
pub async fn new_node(base: &str) -> Keypair {
    let kp = Keypair::generate_ed25519();
    let a = signed(
        base,
        "POST",
        "/api/v1/nodes/register",
        &kp,
        &registration(&kp, Reachability::Public),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    kp
}

pub async fn heartbeat(base: &str, kp: &Keypair, req: &HeartbeatRequest) -> Answer {
    signed(base, "POST", "/api/v1/nodes/heartbeat", kp, req).await
}

pub async fn node_info(base: &str, kp: &Keypair) -> NodeInfo {
    raw(
        base,
        "GET",
        &format!("/api/v1/nodes/{}", kp.public().to_peer_id()),
        b"",
        None,
        &[],
    )
    .await
    .parse()
}

/// The value of a counter line in /metrics, 0 when absent.
pub async fn metric(base: &str, line_prefix: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}
