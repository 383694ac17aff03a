//! What a scenario run measured (the JSON document of `netlab run`) and how it is summarised for people:
//! per-case figures, a Markdown report, and for a matrix the SVG grid (rows = publisher's NAT, columns =
//! viewer's NAT). Plain data, so the judgement of a cell (direct, relayed, failed) is unit tested.

use serde::{Deserialize, Serialize};

use crate::node::{Status, StatusExt};
use crate::probe::playback::{Percentiles, PlayReport};
use crate::probe::rtmp::PublishReport;
use crate::report::{CellClass, Grid, GridCell, Table};

/// How a player's node was connected to the publisher's node at the end of a trial.
pub mod connection {
    /// Same node: the single-node path.
    pub const LOCAL: &str = "local";
    /// A direct connection between the two nodes.
    pub const DIRECT: &str = "direct";
    /// Connected through a relay.
    pub const RELAYED: &str = "relayed";
    /// Connected, but the node does not say how.
    pub const CONNECTED: &str = "connected";
    /// Not connected to the publisher's node (the stream may still arrive over other nodes).
    pub const NONE: &str = "none";
    /// The node's status was never read.
    pub const UNKNOWN: &str = "unknown";
}

/// One run of `netlab run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Its description.
    pub description: String,
    /// The scenario file.
    pub file: String,
    /// The node binary.
    pub node: String,
    /// Whether that binary accepts `--bootstrap`.
    pub node_has_bootstrap_flag: bool,
    /// Whether any node reported mesh listen addresses (`listen_addrs` in its status).
    pub mesh: bool,
    /// Start, Unix ms.
    pub started_unix_ms: u64,
    /// Wall time of the run, s.
    pub elapsed_s: f64,
    /// Trials that ran at the same time (`--jobs`; 0 in reports written before the flag, which ran one).
    pub jobs: u32,
    /// Folder of logs and files.
    pub out_dir: String,
    /// Matrix axes: node the rows vary, and the labels.
    pub matrix: Option<MatrixAxes>,
    /// Every case run.
    pub cases: Vec<CaseReport>,
}

/// The axes of a matrix run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MatrixAxes {
    /// The node whose NAT the rows set.
    pub row_node: String,
    /// The node whose NAT the columns set.
    pub column_node: String,
    /// Row labels.
    pub rows: Vec<String>,
    /// Column labels.
    pub columns: Vec<String>,
}

/// The trials of one case.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CaseReport {
    /// `main` or `ROW/COLUMN`.
    pub label: String,
    /// Matrix row label.
    pub row: Option<String>,
    /// Matrix column label.
    pub column: Option<String>,
    /// The probe publisher's bitrate, kbit/s (the file's, or `netlab run --kbps`).
    pub kbps: u32,
    /// Each trial.
    pub trials: Vec<TrialReport>,
    /// Figures over the trials.
    pub summary: CaseSummary,
}

/// One trial: a fresh lab with fresh nodes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TrialReport {
    /// 1-based.
    pub trial: u32,
    /// Its folder (logs, status polls, probe reports).
    pub dir: String,
    /// The lab's prefix (every namespace of the trial starts with it).
    pub lab: String,
    /// Why the trial could not run to its end, if it could not.
    pub error: Option<String>,
    /// Whether a node of this trial reported mesh listen addresses.
    pub mesh: bool,
    /// How busy the whole machine was from time zero to the end, percent of all cores: near 100 the
    /// figures measure an overloaded machine, not the nodes.
    pub machine_busy_percent: Option<f64>,
    /// CPU the nodes used from time zero to the end, in cores (1.0 = one core busy all along).
    pub nodes_cores: Option<f64>,
    /// CPU the lab itself used meanwhile (netlab's process with its wires, probes and status polls, and its
    /// agents), in cores: the part of the machine's load that is not the nodes'.
    pub lab_cores: Option<f64>,
    /// The nodes.
    pub nodes: Vec<NodeReport>,
    /// The probe publisher's report.
    pub publisher: Option<PublishReport>,
    /// The players.
    pub players: Vec<PlayerResult>,
}

/// A node of a trial.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeReport {
    /// Its name.
    pub name: String,
    /// Its NAT preset.
    pub nat: String,
    /// Its host's lab address.
    pub addr: String,
    /// Peer id, once ready.
    pub peer_id: Option<String>,
    /// From spawn to the ready line, ms.
    pub ready_ms: Option<f64>,
    /// The addresses it was given with `--bootstrap`.
    pub bootstrap: Vec<String>,
    /// Its log file.
    pub log: String,
    /// Why it did not run, if it did not.
    pub error: Option<String>,
    /// Its NAT reachability at the end, as it reports it (`public`, `private`, `unknown`).
    pub reachability: Option<String>,
    /// Hole punches it tried, and of those succeeded, at the end.
    pub hole_punches: Option<(u64, u64)>,
    /// CPU seconds the node used in its life (read just before it was stopped).
    pub cpu_s: Option<f64>,
    /// Its RSS just before it was stopped, MiB.
    pub rss_mib: Option<f64>,
    /// Its niceness, read from the kernel at the end (`nice` of its `[[node]]`; 0 = as netlab).
    pub nice: Option<i8>,
    /// Seconds it was ready to run but waited for a CPU, in its life (run-queue delay, read just before
    /// it was stopped): how starved the machine kept it. Absent where the kernel keeps no such figure.
    #[serde(default)]
    pub wait_s: Option<f64>,
    /// `wait_s` as a share of its life, percent: above 10 the node was starved (its timers fired late and
    /// its peers waited on it), whatever its own code does.
    #[serde(default)]
    pub waited_percent: Option<f64>,
    /// Status polls that failed.
    pub status_errors: u64,
    /// The last status read, as the node sent it.
    pub final_status: Option<serde_json::Value>,
}

/// A player of a trial, with what the lab saw around it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PlayerResult {
    /// Its name.
    pub name: String,
    /// The node it played from.
    pub node: String,
    /// The NAT of that node.
    pub nat: String,
    /// Not the publisher's node: the stream has to cross the mesh.
    pub remote: bool,
    /// Whether delivery was expected: always on the publisher's node, through the mesh only when the
    /// nodes run it.
    pub expected: bool,
    /// Probe frames arrived.
    pub delivered: bool,
    /// How its node was connected to the publisher's node at the end (see [`connection`]).
    pub connection: String,
    /// For a direct connection, its address family at the end: "ipv4" or "ipv6" (from the peer's address).
    pub direct_over: Option<String>,
    /// The node its node received the stream from at the end (a node name, or a peer id netlab does not
    /// know), from the stream's `upstream` in its status.
    pub upstream: Option<String>,
    /// Mesh hops from the origin at the end, as its node reports them.
    pub hops: Option<u32>,
    /// From the play request to the first status showing the publisher's node as a peer, ms.
    pub first_contact_ms: Option<f64>,
    /// From the play request to the first status showing a direct connection to it, ms (resolution:
    /// the status interval).
    pub time_to_direct_ms: Option<f64>,
    /// The node's own time-to-direct for that peer, when it reports one.
    pub node_time_to_direct_ms: Option<f64>,
    /// From the play request to the first status in which the node received the stream from a peer it
    /// is directly connected to, ms (resolution: the status interval). In a tree most viewers are served
    /// by another viewer, not by the publisher's node, so this is their time to a direct path; with two
    /// nodes it is `time_to_direct_ms`.
    pub time_to_direct_upstream_ms: Option<f64>,
    /// From the player's start to the first video frame, ms.
    pub first_frame_ms: Option<f64>,
    /// One-way latency of live frames, ms.
    pub latency_p50_ms: Option<f64>,
    /// See `latency_p50_ms`.
    pub latency_p95_ms: Option<f64>,
    /// Probe frames missing between the first and the last received.
    pub frames_lost: u64,
    /// When it started, Unix ms.
    pub joined_unix_ms: Option<u64>,
    /// Why it did not run, if it did not.
    pub error: Option<String>,
    /// The player's own report.
    pub play: Option<PlayReport>,
}

/// Figures over the trials of a case.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaseSummary {
    /// Trials run.
    pub trials: usize,
    /// Trials that failed to run (set-up, node start).
    pub errors: usize,
    /// Players over all trials.
    pub players: usize,
    /// Of which received the stream.
    pub delivered: usize,
    /// Players that should have received it and did not.
    pub missed: usize,
    /// Remote players (across the mesh).
    pub remote: usize,
    /// Remote players that received the stream and ended on a direct connection.
    pub direct: usize,
    /// Of the direct ones, those whose connection was over IPv6 at the end.
    pub direct_ipv6: usize,
    /// Remote players that received the stream but not over a direct connection.
    pub relayed: usize,
    /// Remote players that did not receive it.
    pub failed: usize,
    /// Median time to direct of the remote players that got there, ms.
    pub time_to_direct_p50_ms: Option<f64>,
    /// Median time to direct upstream (`PlayerResult::time_to_direct_upstream_ms`) of the remote players
    /// that got there, ms.
    pub time_to_direct_upstream_p50_ms: Option<f64>,
    /// Median time to first frame over delivered players, ms.
    pub first_frame_p50_ms: Option<f64>,
    /// 95th percentile of the same, ms.
    pub first_frame_p95_ms: Option<f64>,
    /// Median of the players' latency medians, ms.
    pub latency_p50_ms: Option<f64>,
    /// Median of the players' 95th percentiles, ms.
    pub latency_p95_median_ms: Option<f64>,
    /// Largest of the players' 95th percentiles, ms.
    pub latency_p95_max_ms: Option<f64>,
    /// Probe frames received as a share of those sent while the delivered players played (received +
    /// missing between each one's first and last frame), percent.
    pub frames_delivered_percent: Option<f64>,
    /// Frames lost over all players.
    pub frames_lost: u64,
    /// Mean of the trials' machine load, percent of all cores.
    pub machine_busy_percent: Option<f64>,
    /// Mean of the trials' CPU used by the nodes, in cores.
    pub nodes_cores: Option<f64>,
    /// Mean of the trials' CPU used by the lab itself, in cores.
    pub lab_cores: Option<f64>,
    /// Median over the trials' nodes of the share of their lives they waited for a CPU, and the largest,
    /// percent.
    #[serde(default)]
    pub nodes_waited_percent: Option<(f64, f64)>,
}

fn mean(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = v.into_iter().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn median(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = v.into_iter().collect();
    Percentiles::of(&v).p50
}

/// Summarises the trials of a case.
pub fn summarise(trials: &[TrialReport]) -> CaseSummary {
    let players: Vec<&PlayerResult> = trials.iter().flat_map(|t| &t.players).collect();
    let remote: Vec<&&PlayerResult> = players.iter().filter(|p| p.remote).collect();
    let is_direct = |p: &PlayerResult| p.delivered && p.connection == connection::DIRECT;
    let first_frames: Vec<f64> = players
        .iter()
        .filter(|p| p.delivered)
        .filter_map(|p| p.first_frame_ms)
        .collect();
    let first_frames = Percentiles::of(&first_frames);
    CaseSummary {
        trials: trials.len(),
        errors: trials.iter().filter(|t| t.error.is_some()).count(),
        players: players.len(),
        delivered: players.iter().filter(|p| p.delivered).count(),
        missed: players
            .iter()
            .filter(|p| p.expected && !p.delivered)
            .count(),
        remote: remote.len(),
        direct: remote.iter().filter(|p| is_direct(p)).count(),
        direct_ipv6: remote
            .iter()
            .filter(|p| is_direct(p) && p.direct_over.as_deref() == Some("ipv6"))
            .count(),
        relayed: remote
            .iter()
            .filter(|p| p.delivered && !is_direct(p))
            .count(),
        failed: remote.iter().filter(|p| !p.delivered).count(),
        time_to_direct_p50_ms: median(remote.iter().filter_map(|p| p.time_to_direct_ms)),
        time_to_direct_upstream_p50_ms: median(
            remote.iter().filter_map(|p| p.time_to_direct_upstream_ms),
        ),
        first_frame_p50_ms: first_frames.p50,
        first_frame_p95_ms: first_frames.p95,
        latency_p50_ms: median(players.iter().filter_map(|p| p.latency_p50_ms)),
        latency_p95_median_ms: median(players.iter().filter_map(|p| p.latency_p95_ms)),
        latency_p95_max_ms: players
            .iter()
            .filter_map(|p| p.latency_p95_ms)
            .max_by(f64::total_cmp),
        frames_lost: players.iter().map(|p| p.frames_lost).sum(),
        frames_delivered_percent: {
            let (got, lost) = players
                .iter()
                .filter(|p| p.delivered)
                .filter_map(|p| p.play.as_ref())
                .fold((0u64, 0u64), |(g, l), r| {
                    (g + r.probe_frames, l + r.missing)
                });
            (got > 0).then(|| 100.0 * got as f64 / (got + lost) as f64)
        },
        machine_busy_percent: mean(trials.iter().filter_map(|t| t.machine_busy_percent)),
        nodes_cores: mean(trials.iter().filter_map(|t| t.nodes_cores)),
        lab_cores: mean(trials.iter().filter_map(|t| t.lab_cores)),
        nodes_waited_percent: {
            let shares: Vec<f64> = trials
                .iter()
                .flat_map(|t| t.nodes.iter().filter_map(|n| n.waited_percent))
                .collect();
            median(shares.iter().copied()).zip(shares.iter().copied().max_by(f64::total_cmp))
        },
    }
}

/// The colour of a matrix cell: the most common outcome of its remote players, ties going to the worse.
pub fn cell_class(s: &CaseSummary) -> CellClass {
    if s.remote == 0 {
        return if s.errors > 0 {
            CellClass::Failed
        } else {
            CellClass::Empty
        };
    }
    if s.failed >= s.direct.max(s.relayed) {
        CellClass::Failed
    } else if s.relayed >= s.direct {
        CellClass::Relayed
    } else {
        CellClass::Direct
    }
}

fn ms(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into())
}

fn secs_text(v: Option<f64>) -> String {
    v.map(|x| format!("{:.1} s", x / 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// A matrix cell: direct-trial fraction and median time to direct.
pub fn cell(s: &CaseSummary) -> GridCell {
    let class = cell_class(s);
    let text = if s.remote == 0 {
        if s.errors > 0 {
            "error".into()
        } else {
            String::new()
        }
    } else if s.direct > 0 {
        let v6 = match s.direct_ipv6 {
            0 => String::new(),
            n if n == s.direct => " v6".into(),
            n => format!(" ({n} v6)"),
        };
        format!(
            "{}/{}{v6} · {}",
            s.direct,
            s.remote,
            secs_text(s.time_to_direct_p50_ms)
        )
    } else {
        format!("{}/{}", s.direct, s.remote)
    };
    GridCell {
        class,
        text,
        tooltip: format!(
            "direct {}, relayed {}, failed {} of {}; errors {}; first frame p50 {} ms; latency p50 {} ms; lost {}",
            s.direct,
            s.relayed,
            s.failed,
            s.remote,
            s.errors,
            ms(s.first_frame_p50_ms),
            ms(s.latency_p50_ms),
            s.frames_lost
        ),
    }
}

impl RunReport {
    /// One report from several runs of the same scenario with different cases (a full run and a later
    /// `--only` run of the cases it lacked). Matrix labels keep the order of the report that has the most,
    /// then any others in order of appearance; cases follow that order. A case in two reports is an error:
    /// its trials would mix two samples.
    pub fn merge(reports: Vec<RunReport>) -> Result<RunReport, String> {
        let mut it = reports.into_iter();
        let mut out = it.next().ok_or("no report to merge")?;
        let mut nodes = vec![out.node.clone()];
        let mut dirs = vec![out.out_dir.clone()];
        for r in it {
            if r.scenario != out.scenario {
                return Err(format!(
                    "scenario {:?} and {:?} do not merge: give runs of one scenario",
                    out.scenario, r.scenario
                ));
            }
            for case in r.cases {
                if out.cases.iter().any(|c| c.label == case.label) {
                    return Err(format!("case {} is in two reports", case.label));
                }
                out.cases.push(case);
            }
            out.mesh |= r.mesh;
            out.node_has_bootstrap_flag &= r.node_has_bootstrap_flag;
            out.elapsed_s += r.elapsed_s;
            out.jobs = out.jobs.max(r.jobs);
            out.started_unix_ms = out.started_unix_ms.min(r.started_unix_ms);
            if !nodes.contains(&r.node) {
                nodes.push(r.node);
            }
            dirs.push(r.out_dir);
            out.matrix = match (out.matrix.take(), r.matrix) {
                (Some(a), Some(b)) => {
                    let (mut big, small) =
                        if b.rows.len() * b.columns.len() > a.rows.len() * a.columns.len() {
                            (b, a)
                        } else {
                            (a, b)
                        };
                    for l in small.rows {
                        if !big.rows.contains(&l) {
                            big.rows.push(l);
                        }
                    }
                    for l in small.columns {
                        if !big.columns.contains(&l) {
                            big.columns.push(l);
                        }
                    }
                    Some(big)
                }
                (a, b) => a.or(b),
            };
        }
        out.node = nodes.join(" + ");
        out.out_dir = dirs.join(" + ");
        if let Some(m) = &out.matrix {
            let pos = |l: &Option<String>, labels: &[String]| {
                l.as_ref()
                    .and_then(|l| labels.iter().position(|x| x == l))
                    .unwrap_or(usize::MAX)
            };
            out.cases
                .sort_by_key(|c| (pos(&c.row, &m.rows), pos(&c.column, &m.columns)));
        }
        Ok(out)
    }

    /// The matrix grid, for a matrix run.
    pub fn grid(&self) -> Option<Grid> {
        let m = self.matrix.as_ref()?;
        let cells = m
            .rows
            .iter()
            .map(|r| {
                m.columns
                    .iter()
                    .map(|c| {
                        self.cases
                            .iter()
                            .find(|k| k.row.as_ref() == Some(r) && k.column.as_ref() == Some(c))
                            .map(|k| cell(&k.summary))
                            .unwrap_or_else(|| GridCell::new(CellClass::Empty, ""))
                    })
                    .collect()
            })
            .collect();
        Some(Grid {
            title: format!(
                "{}: direct trials / trials · p50 time to direct{}",
                self.scenario,
                if self.mesh {
                    ""
                } else {
                    " (no mesh in this node)"
                }
            ),
            row_axis: format!("{} NAT", m.row_node),
            column_axis: format!("{} NAT", m.column_node),
            rows: m.rows.clone(),
            columns: m.columns.clone(),
            cells,
        })
    }

    /// Players that should have received the stream and did not, and trials that failed.
    pub fn failures(&self) -> usize {
        self.cases
            .iter()
            .map(|c| c.summary.missed + c.summary.errors)
            .sum()
    }

    /// One row per case.
    pub fn summary_table(&self) -> Table {
        let mut t = Table::new([
            "case",
            "trials",
            "delivered",
            "remote direct / relayed / failed",
            "time to direct p50 ms",
            "to a direct upstream p50 ms",
            "first frame p50 / p95 ms",
            "latency p50 ms",
            "latency p95 median / max ms",
            "frames lost",
            "frames delivered %",
            "errors",
            "machine busy %",
            "nodes / lab cores",
            "node waited for CPU % p50 / max",
        ]);
        for c in &self.cases {
            let s = &c.summary;
            t.push([
                c.label.clone(),
                s.trials.to_string(),
                format!("{}/{}", s.delivered, s.players),
                format!("{} / {} / {}", s.direct, s.relayed, s.failed),
                ms(s.time_to_direct_p50_ms),
                ms(s.time_to_direct_upstream_p50_ms),
                format!(
                    "{} / {}",
                    ms(s.first_frame_p50_ms),
                    ms(s.first_frame_p95_ms)
                ),
                ms(s.latency_p50_ms),
                format!(
                    "{} / {}",
                    ms(s.latency_p95_median_ms),
                    ms(s.latency_p95_max_ms)
                ),
                s.frames_lost.to_string(),
                s.frames_delivered_percent
                    .map(|x| format!("{x:.2}"))
                    .unwrap_or_else(|| "-".into()),
                s.errors.to_string(),
                ms(s.machine_busy_percent),
                match (s.nodes_cores, s.lab_cores) {
                    (Some(n), Some(l)) => format!("{n:.2} / {l:.2}"),
                    _ => "-".into(),
                },
                s.nodes_waited_percent
                    .map(|(p50, max)| format!("{p50:.0} / {max:.0}"))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        t
    }

    /// One row per player per trial.
    pub fn trial_table(&self) -> Table {
        let mut t = Table::new([
            "case",
            "trial",
            "player",
            "node (NAT)",
            "delivered",
            "connection",
            "upstream (hops)",
            "time to direct ms",
            "first frame ms",
            "latency p50 / p95 ms",
            "lost",
            "note",
        ]);
        for c in &self.cases {
            for tr in &c.trials {
                if tr.players.is_empty() {
                    t.push([
                        c.label.clone(),
                        tr.trial.to_string(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        tr.error.clone().unwrap_or_default(),
                    ]);
                }
                for p in &tr.players {
                    let delivered = match (p.delivered, p.expected) {
                        (true, _) => "yes",
                        (false, true) => "NO",
                        (false, false) => "no (no mesh)",
                    };
                    let note = p
                        .error
                        .clone()
                        .or_else(|| p.play.as_ref().and_then(|r| r.error.clone()))
                        .or_else(|| tr.error.clone())
                        .unwrap_or_default();
                    t.push([
                        c.label.clone(),
                        tr.trial.to_string(),
                        p.name.clone(),
                        format!("{} ({})", p.node, p.nat),
                        delivered.to_string(),
                        p.connection.clone(),
                        match (&p.upstream, p.hops) {
                            (Some(u), Some(h)) => format!("{u} ({h})"),
                            (Some(u), None) => u.clone(),
                            (None, Some(h)) => format!("({h})"),
                            (None, None) => "-".into(),
                        },
                        ms(p.time_to_direct_ms),
                        ms(p.first_frame_ms),
                        format!("{} / {}", ms(p.latency_p50_ms), ms(p.latency_p95_ms)),
                        p.frames_lost.to_string(),
                        note,
                    ]);
                }
            }
        }
        t
    }

    /// One row per node per trial.
    pub fn node_table(&self) -> Table {
        let mut t = Table::new([
            "case",
            "trial",
            "node",
            "NAT",
            "address",
            "ready ms",
            "reachability",
            "hole punches ok/tried",
            "bootstrap",
            "CPU s",
            "waited for CPU s (% of life)",
            "RSS MiB",
            "error",
        ]);
        for c in &self.cases {
            for tr in &c.trials {
                for n in &tr.nodes {
                    t.push([
                        c.label.clone(),
                        tr.trial.to_string(),
                        n.name.clone(),
                        n.nat.clone(),
                        n.addr.clone(),
                        ms(n.ready_ms),
                        n.reachability.clone().unwrap_or_else(|| "-".into()),
                        n.hole_punches
                            .map(|(tried, ok)| format!("{ok}/{tried}"))
                            .unwrap_or_else(|| "-".into()),
                        n.bootstrap.len().to_string(),
                        n.cpu_s
                            .map(|c| format!("{c:.1}"))
                            .unwrap_or_else(|| "-".into()),
                        match (n.wait_s, n.waited_percent) {
                            (Some(w), Some(p)) => format!("{w:.1} ({p:.0}%)"),
                            (Some(w), None) => format!("{w:.1}"),
                            _ => "-".into(),
                        },
                        n.rss_mib
                            .map(|r| format!("{r:.1}"))
                            .unwrap_or_else(|| "-".into()),
                        n.error.clone().unwrap_or_default(),
                    ]);
                }
            }
        }
        t
    }

    /// The report for people.
    pub fn to_markdown(&self) -> String {
        let mut s = format!("# netlab run: {}\n\n", self.scenario);
        if !self.description.is_empty() {
            s.push_str(&format!("{}\n\n", self.description));
        }
        let kbps: std::collections::BTreeSet<u32> = self.cases.iter().map(|c| c.kbps).collect();
        let kbps: Vec<String> = kbps.iter().map(u32::to_string).collect();
        s.push_str(&format!(
            "- scenario file: `{}`\n- node: `{}` (`--bootstrap`: {}; mesh listen addresses seen: {})\n- probe stream: {} kbit/s\n- run time: {:.0} s, {} trial(s) at a time; files: `{}`\n\n",
            self.file,
            self.node,
            if self.node_has_bootstrap_flag { "yes" } else { "no" },
            if self.mesh { "yes" } else { "no" },
            kbps.join(", "),
            self.elapsed_s,
            self.jobs.max(1),
            self.out_dir
        ));
        if !self.mesh {
            s.push_str(
                "Without the mesh only players on the publisher's node can receive the stream; remote players are \
                 reported but not expected to receive it.\n\n",
            );
        }
        if let Some(g) = self.grid() {
            s.push_str("## Matrix\n\n");
            s.push_str(&g.to_markdown());
            s.push('\n');
        }
        s.push_str("## Cases\n\n");
        s.push_str(&self.summary_table().to_markdown());
        s.push_str("\n## Players\n\n");
        s.push_str(&self.trial_table().to_markdown());
        s.push_str("\n## Nodes\n\n");
        s.push_str(&self.node_table().to_markdown());
        s.push_str(
            "\nTime to direct is measured from the player's play request to the first status poll of its node \
             that shows a direct connection to the publisher's node. Latency is one-way (receive time minus the \
             send time embedded in each frame) over live frames; the keyframe cache a player gets on joining is \
             left out.\n",
        );
        s
    }
}

/// Everything the status polls of one node said, in order.
#[derive(Debug, Clone, Default)]
pub struct StatusHistory {
    /// (Unix ms, status) of each successful poll.
    pub samples: Vec<(u64, Status)>,
    /// The last status as the node sent it (unknown fields kept).
    pub last_raw: Option<serde_json::Value>,
    /// Polls that failed.
    pub errors: u64,
}

impl StatusHistory {
    /// The first poll at or after `from_ms` where `test` holds, as ms after `from_ms`.
    pub fn first_after(&self, from_ms: u64, test: impl Fn(&Status) -> bool) -> Option<f64> {
        self.samples
            .iter()
            .find(|(at, s)| *at >= from_ms && test(s))
            .map(|(at, _)| (at - from_ms) as f64)
    }

    /// The last status read.
    pub fn last(&self) -> Option<&Status> {
        self.samples.last().map(|(_, s)| s)
    }

    /// Whether any poll showed mesh listen addresses.
    pub fn has_mesh(&self) -> bool {
        self.samples.iter().any(|(_, s)| s.has_mesh())
    }
}

/// The address family of the node's connection to the publisher's node at the end, if direct.
pub fn final_direct_family(history: &StatusHistory, publisher_peer: &str) -> Option<String> {
    let p = history.last()?.peer(publisher_peer)?;
    (p.connection == connection::DIRECT).then(|| {
        if p.addr.starts_with("/ip6/") || p.addr.starts_with("/dns6/") {
            "ipv6".to_string()
        } else {
            "ipv4".to_string()
        }
    })
}

/// How `player_node` was connected to `publisher_peer` at the end, from its last status.
pub fn final_connection(history: &StatusHistory, publisher_peer: &str) -> String {
    match history.last() {
        None => connection::UNKNOWN.into(),
        Some(s) => match s.peer(publisher_peer) {
            None => connection::NONE.into(),
            // A node that does not say how it is connected is connected all the same.
            Some(p) if p.connection.is_empty() => connection::CONNECTED.into(),
            Some(p) => p.connection.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{PeerStatus, PeerStatusExt};

    fn player(remote: bool, delivered: bool, connection: &str, ttd: Option<f64>) -> PlayerResult {
        PlayerResult {
            name: "p".into(),
            remote,
            expected: true,
            delivered,
            connection: connection.into(),
            time_to_direct_ms: ttd,
            first_frame_ms: delivered.then_some(900.0),
            latency_p50_ms: delivered.then_some(60.0),
            latency_p95_ms: delivered.then_some(90.0),
            frames_lost: 2,
            play: delivered.then(|| PlayReport {
                probe_frames: 98,
                missing: 2,
                ..PlayReport::default()
            }),
            ..PlayerResult::default()
        }
    }

    fn trial(players: Vec<PlayerResult>) -> TrialReport {
        TrialReport {
            trial: 1,
            players,
            ..TrialReport::default()
        }
    }

    #[test]
    fn runs_of_one_matrix_merge_into_one_grid() {
        let case = |row: &str, col: &str| CaseReport {
            label: format!("{row}/{col}"),
            row: Some(row.into()),
            column: Some(col.into()),
            ..CaseReport::default()
        };
        let axes = |labels: &[&str]| MatrixAxes {
            row_node: "publisher".into(),
            column_node: "viewer".into(),
            rows: labels.iter().map(|s| s.to_string()).collect(),
            columns: labels.iter().map(|s| s.to_string()).collect(),
        };
        let full = RunReport {
            scenario: "m".into(),
            node: "a".into(),
            matrix: Some(axes(&["x", "y"])),
            cases: vec![
                case("x", "x"),
                case("x", "y"),
                case("y", "x"),
                case("y", "y"),
            ],
            elapsed_s: 10.0,
            jobs: 1,
            ..RunReport::default()
        };
        let extra = RunReport {
            scenario: "m".into(),
            node: "b".into(),
            matrix: Some(axes(&["x", "y", "z"])),
            cases: vec![case("z", "x"), case("x", "z")],
            elapsed_s: 5.0,
            jobs: 4,
            ..RunReport::default()
        };
        let m = RunReport::merge(vec![full.clone(), extra.clone()]).unwrap();
        let labels: Vec<&str> = m.cases.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["x/x", "x/y", "x/z", "y/x", "y/y", "z/x"]);
        assert_eq!(m.matrix.as_ref().unwrap().rows, ["x", "y", "z"]);
        assert_eq!(m.node, "a + b");
        assert_eq!(m.elapsed_s, 15.0);
        assert_eq!(
            m.jobs, 4,
            "the merged report says the most trials that ran at once"
        );
        let g = m.grid().unwrap();
        assert_eq!((g.rows.len(), g.columns.len()), (3, 3));
        assert!(
            RunReport::merge(vec![full.clone(), full.clone()])
                .unwrap_err()
                .contains("x/x")
        );
        let other = RunReport {
            scenario: "n".into(),
            ..extra
        };
        assert!(RunReport::merge(vec![full, other]).is_err());
        assert!(RunReport::merge(Vec::new()).is_err());
    }

    #[test]
    fn summary_counts_direct_relayed_failed() {
        let mut slow = player(true, true, "direct", Some(1200.0));
        slow.first_frame_ms = Some(4000.0);
        slow.latency_p95_ms = Some(1500.0);
        slow.time_to_direct_upstream_ms = Some(600.0);
        slow.frames_lost = 10;
        if let Some(play) = slow.play.as_mut() {
            play.probe_frames = 90;
            play.missing = 10;
        }
        let trials = vec![
            trial(vec![player(false, true, "local", None), slow]),
            trial(vec![player(true, true, "direct", Some(800.0))]),
            trial(vec![player(true, true, "relayed", None)]),
            trial(vec![player(true, false, "none", None)]),
        ];
        let s = summarise(&trials);
        assert_eq!((s.trials, s.players, s.delivered, s.missed), (4, 5, 4, 1));
        assert_eq!((s.remote, s.direct, s.relayed, s.failed), (4, 2, 1, 1));
        assert_eq!(s.time_to_direct_p50_ms, Some(800.0));
        assert_eq!(s.time_to_direct_upstream_p50_ms, Some(600.0));
        assert_eq!(s.first_frame_p50_ms, Some(900.0));
        assert_eq!(s.first_frame_p95_ms, Some(4000.0));
        assert_eq!(s.latency_p95_median_ms, Some(90.0));
        assert_eq!(s.latency_p95_max_ms, Some(1500.0));
        assert_eq!(s.frames_lost, 18);
        // 98 + 90 + 98 + 98 received, 2 + 10 + 2 + 2 missing.
        assert_eq!(s.frames_delivered_percent, Some(96.0));
        assert_eq!(cell_class(&s), CellClass::Direct);
        let c = cell(&s);
        assert_eq!(c.text, "2/4 · 0.8 s");
        assert!(c.tooltip.contains("relayed 1"), "{}", c.tooltip);
    }

    #[test]
    fn the_summary_says_how_long_the_nodes_waited_for_a_cpu() {
        let node = |waited: Option<f64>| NodeReport {
            waited_percent: waited,
            ..NodeReport::default()
        };
        let mut a = trial(vec![]);
        a.nodes = vec![node(Some(4.0)), node(Some(30.0)), node(None)];
        let mut b = trial(vec![]);
        b.nodes = vec![node(Some(10.0))];
        let s = summarise(&[a, b]);
        assert_eq!(s.nodes_waited_percent, Some((10.0, 30.0)));
        assert_eq!(summarise(&[trial(vec![])]).nodes_waited_percent, None);
        let report = RunReport {
            cases: vec![CaseReport {
                label: "c".into(),
                summary: s,
                ..CaseReport::default()
            }],
            ..RunReport::default()
        };
        assert!(report.summary_table().to_text().contains("10 / 30"));
    }

    #[test]
    fn cell_takes_the_most_common_outcome_ties_to_the_worse() {
        let s = |direct, relayed, failed| CaseSummary {
            remote: direct + relayed + failed,
            direct,
            relayed,
            failed,
            ..CaseSummary::default()
        };
        assert_eq!(cell_class(&s(3, 0, 0)), CellClass::Direct);
        assert_eq!(cell_class(&s(1, 1, 0)), CellClass::Relayed);
        assert_eq!(cell_class(&s(1, 0, 1)), CellClass::Failed);
        assert_eq!(cell_class(&s(0, 2, 1)), CellClass::Relayed);
        assert_eq!(cell_class(&s(0, 0, 0)), CellClass::Empty);
        let errored = CaseSummary {
            errors: 1,
            ..CaseSummary::default()
        };
        assert_eq!(cell_class(&errored), CellClass::Failed);
        assert_eq!(cell(&errored).text, "error");
        assert_eq!(cell(&s(0, 2, 1)).text, "0/3");
    }

    #[test]
    fn matrix_report_has_a_grid_and_tables() {
        let mut run = RunReport {
            scenario: "nat-matrix".into(),
            mesh: true,
            matrix: Some(MatrixAxes {
                row_node: "publisher".into(),
                column_node: "viewer".into(),
                rows: vec!["public".into(), "symmetric".into()],
                columns: vec!["public".into(), "symmetric".into()],
            }),
            ..RunReport::default()
        };
        let outcomes = [
            ("public", "public", "direct"),
            ("symmetric", "symmetric", "relayed"),
        ];
        for (r, c, conn) in outcomes {
            let trials = vec![trial(vec![player(
                true,
                true,
                conn,
                (conn == "direct").then_some(500.0),
            )])];
            run.cases.push(CaseReport {
                label: format!("{r}/{c}"),
                row: Some(r.into()),
                column: Some(c.into()),
                kbps: 2500,
                summary: summarise(&trials),
                trials,
            });
        }
        let g = run.grid().unwrap();
        assert_eq!(g.cells[0][0].class, CellClass::Direct);
        assert_eq!(g.cells[0][1].class, CellClass::Empty);
        assert_eq!(g.cells[1][1].class, CellClass::Relayed);
        assert_eq!(g.row_axis, "publisher NAT");
        let md = run.to_markdown();
        assert!(md.contains("## Matrix"), "{md}");
        // Both cases at the same bitrate: said once.
        assert!(md.contains("- probe stream: 2500 kbit/s\n"), "{md}");
        assert!(
            md.contains("| symmetric/symmetric | 1 | 1/1 | 0 / 1 / 0 |"),
            "{md}"
        );
        assert_eq!(run.failures(), 0);
        let json = serde_json::to_string(&run).unwrap();
        let back: RunReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back.cases.len(), 2);
    }

    #[test]
    fn history_gives_times_and_the_final_connection() {
        let status = |conn: Option<&str>| Status {
            listen_addrs: vec!["/ip4/127.0.0.1/udp/4001/quic-v1/p2p/X".into()],
            peers: conn
                .map(|c| {
                    vec![PeerStatus {
                        peer_id: "PUB".into(),
                        connection: c.into(),
                        ..PeerStatus::default()
                    }]
                })
                .unwrap_or_default(),
            ..Status::default()
        };
        let h = StatusHistory {
            samples: vec![
                (1000, status(None)),
                (1250, status(Some("relayed"))),
                (1500, status(Some("direct"))),
            ],
            ..StatusHistory::default()
        };
        assert_eq!(
            h.first_after(1000, |s| s.peer("PUB").is_some()),
            Some(250.0)
        );
        assert_eq!(
            h.first_after(1100, |s| s.peer("PUB").is_some_and(PeerStatus::is_direct)),
            Some(400.0)
        );
        assert_eq!(h.first_after(2000, |_| true), None);
        assert!(h.has_mesh());
        assert_eq!(final_connection(&h, "PUB"), "direct");
        assert_eq!(final_connection(&h, "OTHER"), "none");
        assert_eq!(
            final_connection(&StatusHistory::default(), "PUB"),
            "unknown"
        );
        let silent = StatusHistory {
            samples: vec![(1000, status(Some("")))],
            ..StatusHistory::default()
        };
        assert_eq!(final_connection(&silent, "PUB"), "connected");
    }
}
