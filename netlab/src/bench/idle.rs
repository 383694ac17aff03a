//! `netlab bench idle`: what a node costs when nothing happens. N nodes on loopback form a mesh (each
//! bootstraps from the first), nobody publishes or plays, and after a warm-up each node's CPU time,
//! wake-ups (context switches of all its threads) and RSS are read from /proc at both ends of a window;
//! loopback packets over the window count the mesh's idle traffic. Nothing polls the nodes during the
//! window (a status poll would be work the bench made). Each binary given (the baseline first) runs in
//! turn in the same run. Issue 13's goal: an idle node in a 10-node idle mesh uses at most 0.1% of a
//! core over 5 minutes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use super::mesh::{ChainNode, loopback_addr, start_node};
use super::soak::{metric, metrics_text};
use crate::engine::procstat;
use crate::node;
use crate::report::Table;

/// The goal, percent of one core per node.
pub const CPU_GOAL_PERCENT: f64 = 0.1;

/// Options of the idle bench.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    /// The binaries to compare, baseline first.
    pub nodes: Vec<PathBuf>,
    /// Nodes in the mesh.
    pub count: usize,
    /// From the last node's start to the window (bootstrap, Kademlia, AutoNAT's first probes).
    pub warmup: Duration,
    /// The window measured.
    pub window: Duration,
    /// Where node logs go.
    pub work_dir: PathBuf,
}

/// One node over the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleNode {
    /// Percent of one core.
    pub cpu_percent: f64,
    /// Context switches per second, all threads (wake-ups).
    pub wakeups_per_s: f64,
    /// RSS at the end of the window, MiB.
    pub rss_mib: f64,
    /// Connected mesh peers at the end (from its status, read after the window).
    pub peers: Option<usize>,
    /// Open connections at the end (established minus closed, from its /metrics after the window):
    /// against `peers`, how many a pair holds.
    pub connections: Option<u64>,
}

/// The mesh of one binary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleResult {
    /// The binary.
    pub node: String,
    /// Seconds measured.
    pub window_s: f64,
    /// Per node, in start order (node 0 is everyone's bootstrap).
    pub nodes: Vec<IdleNode>,
    /// Median CPU over the nodes, percent of a core.
    pub cpu_p50_percent: f64,
    /// Highest CPU of a node.
    pub cpu_max_percent: f64,
    /// Median wake-ups per second.
    pub wakeups_p50_per_s: f64,
    /// Median RSS, MiB.
    pub rss_p50_mib: f64,
    /// Loopback packets per second over the window, all nodes together.
    pub loopback_packets_per_s: f64,
    /// Why it could not be measured.
    pub error: Option<String>,
}

/// Runs the bench.
pub async fn run(opts: &IdleOptions) -> anyhow::Result<Vec<IdleResult>> {
    if opts.count < 1 {
        bail!("an idle mesh needs at least 1 node");
    }
    super::require_nodes(opts.nodes.iter().map(PathBuf::as_path))?;
    let mut results = Vec::new();
    for (b, exe) in opts.nodes.iter().enumerate() {
        eprintln!(
            "{}: {} nodes, {} s warm-up, {} s window ...",
            exe.display(),
            opts.count,
            opts.warmup.as_secs(),
            opts.window.as_secs()
        );
        let dir = opts.work_dir.join(format!("node{b}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let r = match mesh(opts, exe, &dir).await {
            Ok(r) => r,
            Err(e) => IdleResult {
                node: exe.display().to_string(),
                error: Some(format!("{e:#}")),
                ..IdleResult::default()
            },
        };
        if let Some(e) = &r.error {
            eprintln!("  {e}");
        }
        results.push(r);
    }
    Ok(results)
}

/// What /proc says of one process at one moment.
#[derive(Debug, Clone, Copy)]
struct Reading {
    cpu_s: f64,
    switches: u64,
}

fn read(pid: u32) -> Option<Reading> {
    Some(Reading {
        cpu_s: procstat::cpu_secs(pid)?,
        switches: context_switches(pid)?,
    })
}

/// Voluntary and involuntary context switches of every thread of `pid`.
fn context_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for t in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue; // a thread that ended meanwhile
        };
        total += switches_in(&status);
    }
    Some(total)
}

/// The sum of `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` in a /proc status file.
fn switches_in(status: &str) -> u64 {
    status
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k, "voluntary_ctxt_switches" | "nonvoluntary_ctxt_switches")
                .then(|| v.trim().parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// Packets received plus sent on `lo`, from /proc/net/dev.
fn loopback_packets() -> Option<u64> {
    let dev = std::fs::read_to_string("/proc/net/dev").ok()?;
    loopback_packets_in(&dev)
}

fn loopback_packets_in(dev: &str) -> Option<u64> {
    let line = dev.lines().find(|l| l.trim_start().starts_with("lo:"))?;
    let f: Vec<u64> = line
        .split_once(':')?
        .1
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets ...
    Some(f.get(1)? + f.get(9)?)
}

async fn mesh(opts: &IdleOptions, exe: &Path, dir: &Path) -> anyhow::Result<IdleResult> {
    let mut nodes: Vec<ChainNode> = Vec::new();
    let outcome = async {
        nodes.push(start_node(exe, "idle-0", Vec::new(), &[], dir).await?);
        let bootstrap = loopback_addr(&nodes[0].ready).await?;
        for k in 1..opts.count {
            let name = format!("idle-{k}");
            nodes.push(start_node(exe, &name, vec![bootstrap.clone()], &[], dir).await?);
        }
        tokio::time::sleep(opts.warmup).await;
        measure(opts, exe, &nodes).await
    }
    .await;
    for n in &mut nodes {
        n.process.stop(Duration::from_secs(5)).await;
    }
    outcome
}

async fn measure(
    opts: &IdleOptions,
    exe: &Path,
    nodes: &[ChainNode],
) -> anyhow::Result<IdleResult> {
    let before: Vec<Reading> = nodes
        .iter()
        .map(|n| read(n.process.pid).with_context(|| format!("{} is gone", n.process.name)))
        .collect::<anyhow::Result<_>>()?;
    let packets_before = loopback_packets().unwrap_or(0);
    let started = std::time::Instant::now();
    tokio::time::sleep(opts.window).await;
    let window = started.elapsed().as_secs_f64();
    let packets_after = loopback_packets().unwrap_or(0);
    let mut per_node = Vec::new();
    for (n, b) in nodes.iter().zip(&before) {
        let a = read(n.process.pid)
            .with_context(|| format!("{} exited during the window: see its log", n.process.name))?;
        per_node.push(IdleNode {
            cpu_percent: (a.cpu_s - b.cpu_s) / window * 100.0,
            wakeups_per_s: a.switches.saturating_sub(b.switches) as f64 / window,
            rss_mib: procstat::rss_kib(n.process.pid).unwrap_or(0) as f64 / 1024.0,
            peers: None,
            connections: None,
        });
    }
    // After the window, so that the reads cost nothing measured.
    for (n, figures) in nodes.iter().zip(&mut per_node) {
        figures.peers = node::fetch_status(n.ready.http_listen, Duration::from_secs(2))
            .await
            .ok()
            .map(|s| s.peers.len());
        figures.connections = open_connections(n.ready.http_listen).await;
    }
    let col = |f: fn(&IdleNode) -> f64| -> Vec<f64> {
        let mut v: Vec<f64> = per_node.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let cpu = col(|n| n.cpu_percent);
    Ok(IdleResult {
        node: exe.display().to_string(),
        window_s: window,
        cpu_p50_percent: median(&cpu),
        cpu_max_percent: cpu.last().copied().unwrap_or(0.0),
        wakeups_p50_per_s: median(&col(|n| n.wakeups_per_s)),
        rss_p50_mib: median(&col(|n| n.rss_mib)),
        loopback_packets_per_s: packets_after.saturating_sub(packets_before) as f64 / window,
        nodes: per_node,
        error: None,
    })
}

/// Mesh connections open at a node: established minus closed, from its `/metrics`.
async fn open_connections(http: std::net::SocketAddr) -> Option<u64> {
    let text = metrics_text(http).await?;
    let established = metric(&text, "streamr_mesh_connections_established_total")?;
    let closed = metric(&text, "streamr_mesh_connections_closed_total")?;
    Some(established.saturating_sub(closed))
}

/// The median of sorted values (0 for none).
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The results as a table: one row per binary.
pub fn table(results: &[IdleResult]) -> Table {
    let mut t = Table::new([
        "node",
        "CPU p50 % of a core",
        "CPU max %",
        "goal",
        "wake-ups/s p50",
        "RSS p50 MiB",
        "loopback packets/s (all)",
        "peers per node",
        "connections per node",
        "CPU % per node",
    ]);
    for r in results {
        if let Some(e) = &r.error {
            t.push([r.node.clone(), format!("error: {e}")]);
            continue;
        }
        let peers: Vec<String> = r
            .nodes
            .iter()
            .map(|n| n.peers.map_or("-".into(), |p| p.to_string()))
            .collect();
        let conns: Vec<String> = r
            .nodes
            .iter()
            .map(|n| n.connections.map_or("-".into(), |c| c.to_string()))
            .collect();
        let cpus: Vec<String> = r
            .nodes
            .iter()
            .map(|n| format!("{:.3}", n.cpu_percent))
            .collect();
        t.push([
            r.node.clone(),
            format!("{:.3}", r.cpu_p50_percent),
            format!("{:.3}", r.cpu_max_percent),
            if r.cpu_p50_percent <= CPU_GOAL_PERCENT {
                format!("met (<= {CPU_GOAL_PERCENT})")
            } else {
                format!("not met (<= {CPU_GOAL_PERCENT})")
            },
            format!("{:.1}", r.wakeups_p50_per_s),
            format!("{:.1}", r.rss_p50_mib),
            format!("{:.1}", r.loopback_packets_per_s),
            peers.join(" "),
            conns.join(" "),
            cpus.join(" "),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_switches_are_summed_from_a_status_file() {
        let status = "Name:\tstreamr-node\nState:\tS (sleeping)\nvoluntary_ctxt_switches:\t120\n\
                      nonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(switches_in(status), 127);
        assert_eq!(switches_in("Name:\tx\n"), 0);
    }

    #[test]
    fn loopback_packets_are_read_from_net_dev() {
        let dev = "Inter-|   Receive                                                |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                   lo: 1000      10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0\n  \
                   eth0: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n";
        assert_eq!(loopback_packets_in(dev), Some(30));
        assert_eq!(loopback_packets_in("eth0: 1 2 3\n"), None);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[1.0, 2.0, 9.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), 3.0);
    }

    #[test]
    fn a_failed_mesh_is_a_row_with_its_error() {
        let r = IdleResult {
            node: "old".into(),
            error: Some("idle-3 exited during the window".into()),
            ..IdleResult::default()
        };
        let text = table(&[r]).to_text();
        assert!(text.contains("idle-3 exited"), "{text}");
    }
}
