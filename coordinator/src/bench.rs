//! `streamr-coordinator bench`: N simulated nodes with real Ed25519 keys register, then heartbeat every
//! interval with one freshly signed receipt each (node i receives from node i-1), against K coordinator
//! processes (this same binary, started as children, optionally pinned to CPUs with `taskset`) on one
//! database. Prints requests/s, latency percentiles and the CPU each process used.
//!
//! Time is not compressed by default: 10,000 nodes every 30 s is 333 heartbeats/s, the real rate. A shorter
//! `--interval-secs` multiplies the rate (e.g. 3 s = the load of 100,000 nodes at 30 s), which is how to
//! look for the limit without simulating more keys.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p_identity::Keypair;
use parking_lot::Mutex;
use tokio::task::JoinSet;

use crate::api::{HeartbeatRequest, PublishedStream, Reachability, RegisterRequest};
use crate::client::{ClientError, CoordinatorClient};
use crate::receipt::Receipt;
use crate::time::now_ms;

/// Bench settings.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Simulated nodes.
    pub nodes: usize,
    /// Database URL; `None` = a fresh SQLite file in a temporary directory.
    pub database_url: Option<String>,
    /// Coordinator processes sharing the database.
    pub instances: usize,
    /// Heartbeat interval (seconds) told to the server and kept by the simulated nodes.
    pub interval_secs: u64,
    /// Length of the measured steady phase (seconds).
    pub duration_secs: u64,
    /// `taskset -c` CPU list for the coordinator processes (e.g. `1`); `None` = not pinned.
    pub server_cpus: Option<String>,
    /// Tokio worker threads per coordinator process.
    pub server_threads: usize,
    /// Concurrent registrations during the setup phase.
    pub register_concurrency: usize,
}

struct Instance {
    child: Child,
    url: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Total CPU ticks of every process named `postgres` (the database's own work).
fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(cpu_ticks)
        .sum()
}

fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

struct SimNode {
    key: Keypair,
    client: CoordinatorClient,
    /// Cumulative bytes this node received from its upstream, and the receipt counter.
    received: u64,
    counter: u64,
    series_start: u64,
}

/// Runs the bench and prints its figures.
pub async fn run(config: BenchConfig) -> anyhow::Result<()> {
    let nodes = config.nodes.max(2);
    let instances = config.instances.max(1);
    let tmp = tempfile::tempdir()?;
    let database_url = config
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", tmp.path().join("bench.db").display()));
    let exe = std::env::current_exe()?;
    let pinned = config.server_cpus.clone().filter(|_| {
        Command::new("taskset")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok()
    });
    let mut servers = Vec::new();
    for _ in 0..instances {
        let port = free_port()?;
        let mut cmd = match &pinned {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--database-url")
            .arg(&database_url)
            .arg("--heartbeat-interval-secs")
            .arg(config.interval_secs.to_string())
            .arg("--threads")
            .arg(config.server_threads.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        let child = cmd.spawn()?;
        servers.push(Instance {
            child,
            url: format!("http://127.0.0.1:{port}"),
        });
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()?;
    for s in &servers {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http
                .get(format!("{}/healthz", s.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "coordinator at {} did not start within 30 s",
                s.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let db_kind = if database_url.starts_with("postgres") {
        "Postgres"
    } else {
        "SQLite"
    };
    println!(
        "coordinator bench: {nodes} nodes, {instances} instance(s) on {db_kind}, heartbeat every {} s ({:.0} heartbeats/s), steady phase {} s, server {} worker thread(s){}",
        config.interval_secs,
        nodes as f64 / config.interval_secs as f64,
        config.duration_secs,
        config.server_threads,
        pinned
            .as_deref()
            .map(|c| format!(", pinned to CPU {c}"))
            .unwrap_or_default()
    );

    // Keys and registrations.
    let t = Instant::now();
    let sims: Vec<Arc<Mutex<SimNode>>> = (0..nodes)
        .map(|i| {
            let key = Keypair::generate_ed25519();
            let client = CoordinatorClient::with_http(
                &servers[i % instances].url,
                key.clone(),
                http.clone(),
                Duration::from_secs(30),
            )
            .expect("valid URL");
            Arc::new(Mutex::new(SimNode {
                key,
                client,
                received: 0,
                counter: 0,
                series_start: u64::try_from(now_ms()).unwrap_or(0),
            }))
        })
        .collect();
    println!(
        "keys: {nodes} Ed25519 keys in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut register_lat = Vec::with_capacity(nodes);
    let mut set = JoinSet::new();
    let mut errors = 0usize;
    for (i, sim) in sims.iter().enumerate() {
        if set.len() >= config.register_concurrency.max(1) {
            match set.join_next().await {
                Some(Ok(Ok(us))) => register_lat.push(us),
                _ => errors += 1,
            }
        }
        let client = sim.lock().client.clone();
        set.spawn(async move {
            let req = RegisterRequest {
                peer_id: client.peer_id(),
                version: "0.1.0".into(),
                nickname: format!("bench-{i}"),
                external_addrs: if i % 10 == 0 {
                    vec![format!("/ip4/192.0.2.{}/udp/4001/quic-v1", i % 250 + 1)]
                } else {
                    vec![]
                },
                relay_addrs: vec![],
                listen_addrs: vec![format!(
                    "/ip4/10.{}.{}.{}/udp/4001/quic-v1",
                    i / 65536 % 256,
                    i / 256 % 256,
                    i % 256
                )],
                reachability: if i % 10 == 0 {
                    Reachability::Public
                } else {
                    Reachability::Private
                },
                upload_cap_kbps: 8000,
                os: "linux".into(),
                arch: "x86_64".into(),
            };
            let t = Instant::now();
            client.register(&req).await?;
            Ok::<u64, ClientError>(t.elapsed().as_micros() as u64)
        });
    }
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(us)) => register_lat.push(us),
            _ => errors += 1,
        }
    }
    register_lat.sort_unstable();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "register: {} ok, {errors} failed in {secs:.1} s ({:.0} req/s at concurrency {}), p50 {:.1} ms, p99 {:.1} ms",
        register_lat.len(),
        register_lat.len() as f64 / secs,
        config.register_concurrency,
        percentile(&register_lat, 0.5),
        percentile(&register_lat, 0.99),
    );

    // Steady phase: node i's heartbeats at offset i/N of the interval, so the load is even.
    let ticks = clock_ticks_per_sec();
    let cpu_before: Vec<u64> = servers
        .iter()
        .map(|s| cpu_ticks(s.child.id()).unwrap_or(0))
        .collect();
    let pg_before = postgres_ticks();
    let self_before = cpu_ticks(std::process::id()).unwrap_or(0);
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let failures = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let receipts_ok = Arc::new(Mutex::new((0u64, 0u64)));
    let interval = Duration::from_secs(config.interval_secs.max(1));
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs(config.duration_secs);
    let mut tasks = JoinSet::new();
    let mut round = 0u32;
    'outer: loop {
        for (i, sim) in sims.iter().enumerate() {
            let at = start + interval * round + interval.mul_f64(i as f64 / nodes as f64);
            if at >= end {
                break 'outer;
            }
            tokio::time::sleep_until(at).await;
            // Node i's upstream is node i-1: i signs a receipt for what it got from i-1 since last time,
            // and i-1 carries it in its heartbeat. Here the receipt is for node i's own heartbeat: node
            // i+1 (its downstream) signs it.
            let downstream = sims[(i + 1) % nodes].clone();
            let me = sim.clone();
            let (client, receipt, bytes_relayed) = {
                let mut d = downstream.lock();
                let provider = me.lock().key.public().to_peer_id();
                // 2.5 Mbit/s for one interval.
                let bytes = 312_500 * interval.as_secs();
                d.received += bytes;
                d.counter += 1;
                let receipt = Receipt {
                    stream: format!("s{}", i % 1000),
                    provider,
                    receiver: d.key.public().to_peer_id(),
                    bytes: d.received,
                    frames: d.counter * 750,
                    window_start_ms: d.series_start,
                    window_end_ms: u64::try_from(now_ms()).unwrap_or(0),
                    counter: d.counter,
                }
                .sign(&d.key);
                (me.lock().client.clone(), receipt, bytes)
            };
            let latencies = latencies.clone();
            let failures = failures.clone();
            let receipts_ok = receipts_ok.clone();
            tasks.spawn(async move {
                let req = HeartbeatRequest {
                    streams_held: vec![format!("s{}", i % 1000)],
                    streams_published: if i % 100 == 0 {
                        vec![PublishedStream {
                            name: format!("s{}", i % 1000),
                            started_at_ms: 0,
                            bitrate_kbps: 2500,
                            players: 1,
                        }]
                    } else {
                        vec![]
                    },
                    players: 1,
                    peers: 4,
                    bytes_relayed,
                    reachability: Reachability::Private,
                    receipts: vec![receipt],
                };
                let t = Instant::now();
                match client.heartbeat(&req).await {
                    Ok(resp) => {
                        latencies.lock().push(t.elapsed().as_micros() as u64);
                        let mut r = receipts_ok.lock();
                        r.0 += u64::from(resp.receipts.accepted);
                        r.1 += resp.receipts.rejected.len() as u64;
                    }
                    Err(e) => {
                        let kind = match &e {
                            ClientError::Refused { code, .. } => format!("refused:{code}"),
                            ClientError::Unavailable { status, .. } => {
                                format!("unavailable:{status}")
                            }
                            ClientError::Timeout(_) => "timeout".into(),
                            _ => "other".into(),
                        };
                        *failures.lock().entry(kind).or_default() += 1;
                    }
                }
            });
            // Reap finished tasks so the set does not grow with the run.
            while let Some(res) = tasks.try_join_next() {
                let _ = res;
            }
        }
        round += 1;
    }
    while tasks.join_next().await.is_some() {}
    let wall = start.elapsed().as_secs_f64();
    let mut lat = std::mem::take(&mut *latencies.lock());
    lat.sort_unstable();
    let (accepted, rejected) = *receipts_ok.lock();
    println!(
        "heartbeats: {} ok in {wall:.1} s = {:.0} req/s; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; receipts accepted {accepted}, rejected {rejected}; failures {:?}",
        lat.len(),
        lat.len() as f64 / wall,
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        failures.lock()
    );
    for (n, (s, before)) in servers.iter().zip(cpu_before).enumerate() {
        let used = cpu_ticks(s.child.id()).unwrap_or(0).saturating_sub(before) as f64 / ticks;
        println!(
            "cpu: coordinator instance {} used {:.1}% of one core ({used:.1} s)",
            n + 1,
            100.0 * used / wall
        );
    }
    if db_kind == "Postgres" {
        let used = postgres_ticks().saturating_sub(pg_before) as f64 / ticks;
        println!(
            "cpu: postgres processes used {:.1}% of one core ({used:.1} s)",
            100.0 * used / wall
        );
    }
    let used = cpu_ticks(std::process::id())
        .unwrap_or(0)
        .saturating_sub(self_before) as f64
        / ticks;
    println!(
        "cpu: load generator (signing, HTTP client) used {:.1}% of one core",
        100.0 * used / wall
    );
    drop(servers);
    Ok(())
}
