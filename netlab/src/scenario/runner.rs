//! Runs a [`Scenario`]: for every case and trial a fresh lab, `streamr-node` in each site's namespace
//! (started in bootstrap order, each waited for until its ready line), a status poller per node, the probe
//! publisher and players as agents in the nodes' namespaces, then everything stopped by PID and the lab
//! torn down. Results go to a folder: every node's log and status polls, the probes' reports, and the
//! run's JSON, Markdown and (for a matrix) SVG.
//!
//! Time zero of a trial is when every node that starts at 0 is ready; the publisher, the players and the
//! later nodes are timed from there, and the trial ends `duration` after it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;
use tokio::time::Instant as TokioInstant;

use super::file::{Case, NodePlan, PlayerPlan, PublisherPlan, Scenario, bootstrap_layers};
use super::results::{
    CaseReport, MatrixAxes, NodeReport, PlayerResult, RunReport, StatusHistory, TrialReport,
    connection, final_connection, final_direct_family, summarise,
};
use crate::engine::lab::{Host, Lab, LabConfig, SiteSpec};
use crate::engine::procstat;
use crate::node::{self, Launcher, NodeLog, NodeProcess, PeerStatusExt, Ready, Status, StatusExt};
use crate::probe::playback::PlayReport;
use crate::probe::rtmp::{PublishReport, unix_us};

/// Ports every node uses inside its own namespace.
const RTMP_LISTEN: &str = "127.0.0.1:1935";
const HTTP_LISTEN: &str = "127.0.0.1:8080";
const P2P_PORT: u16 = 4001;
/// How long a node may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node gets to stop after SIGTERM (it gives connections 5 s).
const NODE_STOP_GRACE: Duration = Duration::from_secs(7);
/// How long probes may overrun the end of the trial before they are stopped.
const PROBE_OVERRUN: Duration = Duration::from_secs(15);
/// How long to wait for a bootstrap node's first status.
const STATUS_WAIT: Duration = Duration::from_secs(10);

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `streamr-node` binary.
    pub node_exe: PathBuf,
    /// Folder for everything the run writes (created).
    pub out_dir: PathBuf,
    /// Overrides the file's trials.
    pub trials: Option<u32>,
    /// Overrides the file's duration.
    pub duration: Option<Duration>,
    /// Overrides the probe publisher's bitrate in kbit/s (every case).
    pub kbps: Option<u32>,
    /// Only the cases with these labels (`ROW/COLUMN` for a matrix); empty runs all.
    pub only: Vec<String>,
    /// Trials run at the same time, each in its own lab (1: one after another).
    pub jobs: usize,
    /// Lab settings (the agent binary is the running netlab unless set).
    pub lab: LabConfig,
}

/// What the node binary can do.
#[derive(Debug, Clone, Copy)]
struct Features {
    /// `run --bootstrap` exists.
    bootstrap_flag: bool,
}

/// Runs the scenario and returns its report (also written to `out_dir`).
pub async fn run(scenario: &Scenario, opts: &RunOptions) -> anyhow::Result<RunReport> {
    if !opts.node_exe.exists() {
        bail!(
            "{} not found: build it with `cargo build -p streamr-node` or pass --node",
            opts.node_exe.display()
        );
    }
    let features = Features {
        bootstrap_flag: node::supports_flag(&opts.node_exe, "--bootstrap")?,
    };
    let mut scenario = scenario.clone();
    if let Some(t) = opts.trials {
        scenario.trials = t.max(1);
    }
    if let Some(d) = opts.duration {
        scenario.duration = d;
    }
    if let Some(k) = opts.kbps {
        for c in &mut scenario.cases {
            c.publisher.kbps = k;
        }
    }
    let cases: Vec<Case> = scenario
        .cases
        .iter()
        .filter(|c| opts.only.is_empty() || opts.only.contains(&c.label))
        .cloned()
        .collect();
    if cases.is_empty() {
        let labels: Vec<&str> = scenario.cases.iter().map(|c| c.label.as_str()).collect();
        bail!(
            "--only matches no case; the cases are: {}",
            labels.join(", ")
        );
    }
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("cannot create {}", opts.out_dir.display()))?;
    if !features.bootstrap_flag {
        eprintln!(
            "netlab run: {} has no --bootstrap flag (no mesh yet): nodes start alone; only players on the \
             publisher's node can get the stream",
            opts.node_exe.display()
        );
    }
    let started = Instant::now();
    let mut report = RunReport {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        file: scenario.file.display().to_string(),
        node: opts.node_exe.display().to_string(),
        node_has_bootstrap_flag: features.bootstrap_flag,
        started_unix_ms: unix_us() / 1000,
        out_dir: opts.out_dir.display().to_string(),
        matrix: scenario.matrix.as_ref().map(|m| MatrixAxes {
            row_node: m.row_node.clone(),
            column_node: m.column_node.clone(),
            rows: m.rows.clone(),
            columns: m.columns.clone(),
        }),
        ..RunReport::default()
    };
    // Every trial is a lab of its own (namespaces under a random prefix), so trials may run side by side.
    let jobs = opts.jobs.max(1);
    report.jobs = jobs as u32;
    let mut units = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        for k in 1..=scenario.trials {
            let dir = opts
                .out_dir
                .join(case.label.replace('/', "__"))
                .join(format!("trial-{k}"));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            units.push((i, k, dir));
        }
    }
    let scenario = &scenario;
    let cases_ref = &cases;
    let mut done: Vec<(usize, TrialReport)> = futures::stream::iter(units)
        .map(|(i, k, dir)| async move {
            let case = &cases_ref[i];
            eprintln!(
                "netlab run: {} trial {k}/{} ...",
                case.label, scenario.trials
            );
            let trial = Trial {
                scenario,
                case,
                number: k,
                dir: &dir,
                opts,
                features,
            };
            let t = run_trial(&trial).await;
            eprintln!("netlab run: {} trial {k}: {}", case.label, one_line(&t));
            (i, t)
        })
        .buffer_unordered(jobs)
        .collect()
        .await;
    done.sort_by_key(|(i, t)| (*i, t.trial));
    let mut per_case: Vec<Vec<TrialReport>> = cases.iter().map(|_| Vec::new()).collect();
    for (i, t) in done {
        per_case[i].push(t);
    }
    for (case, trials) in cases.iter().zip(per_case) {
        report.mesh |= trials.iter().any(|t| t.mesh);
        report.cases.push(CaseReport {
            label: case.label.clone(),
            row: case.row.clone(),
            column: case.column.clone(),
            kbps: case.publisher.kbps,
            summary: summarise(&trials),
            trials,
        });
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    write_outputs(&report, &opts.out_dir)?;
    Ok(report)
}

/// A trial in one line, for progress output.
fn one_line(t: &TrialReport) -> String {
    if let Some(e) = &t.error {
        return format!("error: {e}");
    }
    let parts: Vec<String> = t
        .players
        .iter()
        .map(|p| {
            format!(
                "{} {}{}",
                p.name,
                if p.delivered {
                    "delivered"
                } else {
                    "NOT delivered"
                },
                if p.remote {
                    format!(" ({})", p.connection)
                } else {
                    String::new()
                }
            )
        })
        .collect();
    parts.join(", ")
}

/// Writes `result.json`, `report.md` and, for a matrix, `grid.svg`.
pub fn write_outputs(report: &RunReport, dir: &Path) -> anyhow::Result<()> {
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
    };
    write("result.json", serde_json::to_string_pretty(report)?)?;
    write("report.md", report.to_markdown())?;
    if let Some(g) = report.grid() {
        write("grid.svg", g.to_svg())?;
    }
    Ok(())
}

/// What the rest of a trial needs to know about a ready node.
#[derive(Debug, Clone)]
struct NodeInfo {
    ready: Ready,
    host: Host,
}

/// A helper process (status poller, probe) running in a namespace.
#[derive(Debug)]
struct AgentProcess {
    child: Child,
    /// Kept open while it runs: its end tells the agent to exit.
    stdin: Option<ChildStdin>,
}

impl AgentProcess {
    fn spawn(lab: &Lab, ns: &str, args: &[String], stderr: &Path) -> anyhow::Result<AgentProcess> {
        let err = std::fs::File::create(stderr)
            .with_context(|| format!("cannot create {}", stderr.display()))?;
        let mut cmd = Command::from(lab.agent_command(ns, args));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `netlab {}` in {ns}", args.join(" ")))?;
        let stdin = child.stdin.take();
        Ok(AgentProcess { child, stdin })
    }

    /// SIGTERM, up to `grace`, then SIGKILL.
    async fn stop(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
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
        self.stdin.take();
    }

    /// Reads its whole standard output while it runs to its end, at most until `until`; then stops it
    /// (probes print their report on SIGTERM).
    async fn output_until(mut self, until: TokioInstant) -> String {
        let mut out = self.child.stdout.take();
        let reader = tokio::spawn(async move {
            let mut s = String::new();
            if let Some(o) = out.as_mut() {
                let _ = o.read_to_string(&mut s).await;
            }
            s
        });
        if tokio::time::timeout_at(until, self.child.wait())
            .await
            .is_err()
        {
            self.stop(Duration::from_secs(5)).await;
        }
        self.stdin.take();
        // The pipe closes when the process is gone; the reader then ends.
        reader.await.unwrap_or_default()
    }
}

/// A node of the trial, running.
struct RunningNode {
    name: String,
    process: NodeProcess,
    poller: Option<AgentProcess>,
    _data: tempfile::TempDir,
}

/// Everything about a node that the trial's report needs.
#[derive(Debug, Default, Clone)]
struct NodeOutcome {
    peer_id: Option<String>,
    ready_ms: Option<f64>,
    bootstrap: Vec<String>,
    error: Option<String>,
}

/// Shared, per-trial state of the node tasks.
struct TrialState {
    lab: Lab,
    hosts: HashMap<String, Host>,
    ready: HashMap<String, watch::Receiver<Option<NodeInfo>>>,
    histories: HashMap<String, Arc<Mutex<StatusHistory>>>,
    dir: PathBuf,
    node_exe: PathBuf,
    features: Features,
    status_interval: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one trial runs.
struct Trial<'a> {
    scenario: &'a Scenario,
    case: &'a Case,
    /// 1-based.
    number: u32,
    /// Its folder.
    dir: &'a Path,
    opts: &'a RunOptions,
    features: Features,
}

async fn run_trial(t: &Trial<'_>) -> TrialReport {
    let mut report = TrialReport {
        trial: t.number,
        dir: t.dir.display().to_string(),
        ..TrialReport::default()
    };
    let lab_config = t.opts.lab.clone();
    let specs: Vec<SiteSpec> = t
        .case
        .nodes
        .iter()
        .map(|n| SiteSpec {
            label: n.name.clone(),
            preset: n.preset,
            link: n.link,
        })
        .collect();
    let built = tokio::task::spawn_blocking(move || {
        let lab = Lab::new(lab_config)?;
        let sites = lab.add_sites(&specs);
        Ok::<_, crate::engine::LabError>((lab, sites))
    })
    .await;
    let (lab, sites) = match built {
        Ok(Ok((lab, Ok(sites)))) => (lab, sites),
        Ok(Ok((lab, Err(e)))) => {
            report.error = Some(format!("building the lab: {e}"));
            shutdown(lab).await;
            return report;
        }
        Ok(Err(e)) => {
            report.error = Some(format!("building the lab: {e}"));
            return report;
        }
        Err(e) => {
            report.error = Some(format!("building the lab: {e}"));
            return report;
        }
    };
    report.lab = lab.prefix().to_string();
    let hosts: HashMap<String, Host> = sites
        .iter()
        .map(|s| (s.label.clone(), s.host.clone()))
        .collect();
    if let Err(e) = drive(t, &lab, hosts, &mut report).await {
        report.error = Some(format!("{e:#}"));
    }
    shutdown(lab).await;
    report
}

async fn shutdown(lab: Lab) {
    let r = tokio::task::spawn_blocking(move || lab.shutdown()).await;
    if let Ok(Err(e)) = r {
        eprintln!("netlab run: teardown incomplete: {e}; run `netlab clean`");
    }
}

async fn drive(
    t: &Trial<'_>,
    lab: &Lab,
    hosts: HashMap<String, Host>,
    report: &mut TrialReport,
) -> anyhow::Result<()> {
    let Trial {
        scenario,
        case,
        dir,
        opts,
        features,
        ..
    } = *t;
    let mut ready_tx = HashMap::new();
    let mut ready_rx = HashMap::new();
    let mut histories = HashMap::new();
    for n in &case.nodes {
        let (tx, rx) = watch::channel(None);
        ready_tx.insert(n.name.clone(), tx);
        ready_rx.insert(n.name.clone(), rx);
        histories.insert(
            n.name.clone(),
            Arc::new(Mutex::new(StatusHistory::default())),
        );
    }
    let state = Arc::new(TrialState {
        lab: lab.clone(),
        hosts,
        ready: ready_rx,
        histories,
        dir: dir.to_path_buf(),
        node_exe: opts.node_exe.clone(),
        features,
        status_interval: scenario.status_interval,
    });
    let (zero_tx, zero_rx) = watch::channel::<Option<TokioInstant>>(None);

    // Every node is a task: wait for its start time and its bootstrap nodes, start, wait until ready.
    let order: Vec<String> = bootstrap_layers(&case.nodes)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .flatten()
        .collect();
    let mut node_tasks = Vec::new();
    for name in &order {
        let Some(plan) = case.nodes.iter().find(|n| &n.name == name).cloned() else {
            continue;
        };
        let Some(tx) = ready_tx.remove(name) else {
            continue;
        };
        let state = state.clone();
        let zero = zero_rx.clone();
        node_tasks.push((
            plan.clone(),
            tokio::spawn(async move { node_task(plan, state, zero, tx).await }),
        ));
    }

    // Time zero: every node that starts at 0 is ready (or failed).
    let first: Vec<&NodePlan> = case.nodes.iter().filter(|n| n.start_at.is_zero()).collect();
    for n in &first {
        let mut rx = state.ready[&n.name].clone();
        let waited = tokio::time::timeout(READY_TIMEOUT * 2, rx.wait_for(|r| r.is_some())).await;
        if !matches!(waited, Ok(Ok(_))) {
            // The node task says why in its outcome; stop waiting for the rest.
            break;
        }
    }
    let zero = TokioInstant::now();
    let end = zero + scenario.duration;
    let machine_before = procstat::machine_ticks();
    let node_comm = state
        .node_exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cpu_before = procstat::tree_cpu_secs_split(std::process::id(), &node_comm);
    let _ = zero_tx.send(Some(zero));

    let publisher = {
        let state = state.clone();
        let plan = case.publisher.clone();
        let stream = scenario.stream.clone();
        let duration = scenario.duration;
        tokio::spawn(async move { publisher_task(plan, stream, duration, zero, state).await })
    };
    let mut player_tasks = Vec::new();
    for p in &case.players {
        let state = state.clone();
        let plan = p.clone();
        let stream = scenario.stream.clone();
        player_tasks.push((
            p.clone(),
            tokio::spawn(async move { player_task(plan, stream, zero, end, state).await }),
        ));
    }

    report.publisher = match publisher.await {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) => {
            report.error = Some(format!("publisher: {e:#}"));
            None
        }
        Err(e) => {
            report.error = Some(format!("publisher task: {e}"));
            None
        }
    };
    let mut players: Vec<(PlayerPlan, anyhow::Result<(u64, PlayReport)>)> = Vec::new();
    for (plan, task) in player_tasks {
        let r = task
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("player task: {e}")));
        players.push((plan, r));
    }
    // Let the pollers see the end state before the nodes stop.
    tokio::time::sleep_until(end.max(TokioInstant::now())).await;

    let mut running = Vec::new();
    let mut outcomes: HashMap<String, NodeOutcome> = HashMap::new();
    for (plan, task) in node_tasks {
        match task.await {
            Ok((outcome, node)) => {
                outcomes.insert(plan.name.clone(), outcome);
                running.extend(node);
            }
            Err(e) => {
                outcomes.insert(
                    plan.name.clone(),
                    NodeOutcome {
                        error: Some(format!("node task: {e}")),
                        ..NodeOutcome::default()
                    },
                );
            }
        }
    }
    report.machine_busy_percent = match (machine_before, procstat::machine_ticks()) {
        (Some(b), Some(a)) => procstat::busy_percent(b, a),
        _ => None,
    };
    let cpu_after = procstat::tree_cpu_secs_split(std::process::id(), &node_comm);
    let elapsed = zero.elapsed().as_secs_f64().max(0.001);
    // Nodes that stopped before the end take their CPU with them: the nodes' figure is a lower bound.
    report.nodes_cores = Some(((cpu_after.0 - cpu_before.0) / elapsed).max(0.0));
    report.lab_cores = Some(((cpu_after.1 - cpu_before.1) / elapsed).max(0.0));
    let usage: HashMap<String, (f64, u64)> = running
        .iter()
        .filter_map(|n| Some((n.name.clone(), n.process.usage()?)))
        .collect();
    let waited: HashMap<String, (f64, f64)> = running
        .iter()
        .filter_map(|n| Some((n.name.clone(), n.process.waited()?)))
        .collect();
    let nice: HashMap<String, i8> = running
        .iter()
        .filter_map(|n| Some((n.name.clone(), n.process.nice()?)))
        .collect();
    // Stop all at once: each node may take up to its grace period.
    let mut stops = tokio::task::JoinSet::new();
    for mut n in running {
        stops.spawn(async move {
            if let Some(p) = n.poller.as_mut() {
                p.stop(Duration::from_secs(2)).await;
            }
            n.process.stop(NODE_STOP_GRACE).await;
        });
    }
    while stops.join_next().await.is_some() {}

    // Results.
    report.mesh = state.histories.values().any(|h| lock(h).has_mesh());
    let publisher_node = &case.publisher.node;
    let publisher_peer = outcomes.get(publisher_node).and_then(|o| o.peer_id.clone());
    let name_of: HashMap<String, String> = outcomes
        .iter()
        .filter_map(|(name, o)| Some((o.peer_id.clone()?, name.clone())))
        .collect();
    for n in &case.nodes {
        let o = outcomes.get(&n.name).cloned().unwrap_or_default();
        let h = lock(&state.histories[&n.name]).clone();
        report.nodes.push(NodeReport {
            name: n.name.clone(),
            nat: n.preset.to_string(),
            addr: state
                .hosts
                .get(&n.name)
                .map(|h| h.addr().to_string())
                .unwrap_or_default(),
            peer_id: o.peer_id,
            ready_ms: o.ready_ms,
            bootstrap: o.bootstrap,
            log: dir.join(format!("{}.log", n.name)).display().to_string(),
            error: o.error,
            reachability: h
                .last()
                .filter(|s| s.reports_nat())
                .map(|s| s.nat.reachability.clone()),
            hole_punches: h
                .last()
                .filter(|s| s.reports_nat())
                .map(|s| (s.nat.hole_punch_attempts, s.nat.hole_punch_successes)),
            cpu_s: usage.get(&n.name).map(|u| u.0),
            rss_mib: usage.get(&n.name).map(|u| u.1 as f64 / 1024.0),
            wait_s: waited.get(&n.name).map(|w| w.0),
            nice: nice.get(&n.name).copied(),
            waited_percent: waited
                .get(&n.name)
                .and_then(|&(w, age)| (age > 0.0).then(|| w / age * 100.0)),
            status_errors: h.errors,
            final_status: h.last_raw.clone(),
        });
    }
    for (plan, r) in players {
        let node_plan = case.nodes.iter().find(|n| n.name == plan.node);
        let remote = plan.node != *publisher_node;
        let mut p = PlayerResult {
            name: plan.name.clone(),
            node: plan.node.clone(),
            nat: node_plan.map(|n| n.preset.to_string()).unwrap_or_default(),
            remote,
            expected: !remote || (features.bootstrap_flag && report.mesh),
            connection: if remote {
                connection::UNKNOWN.into()
            } else {
                connection::LOCAL.into()
            },
            ..PlayerResult::default()
        };
        match r {
            Err(e) => p.error = Some(format!("{e:#}")),
            Ok((joined_ms, play)) => {
                p.joined_unix_ms = Some(joined_ms);
                p.delivered = play.delivered();
                p.first_frame_ms = play.first_frame_ms;
                p.latency_p50_ms = play.latency_ms.p50;
                p.latency_p95_ms = play.latency_ms.p95;
                p.frames_lost = play.missing;
                if remote {
                    let h = lock(&state.histories[&plan.node]).clone();
                    if let Some(st) = h.last().and_then(|s| s.stream(&scenario.stream)) {
                        p.upstream = st
                            .upstream
                            .as_ref()
                            .map(|u| name_of.get(u).cloned().unwrap_or_else(|| u.clone()));
                        p.hops = st.hops.map(u32::from);
                    }
                    p.time_to_direct_upstream_ms = h.first_after(joined_ms, |s| {
                        s.stream(&scenario.stream)
                            .and_then(|st| st.upstream.as_deref())
                            .and_then(|u| s.peer(u))
                            .is_some_and(|x| x.is_direct())
                    });
                    if let Some(peer) = &publisher_peer {
                        p.connection = final_connection(&h, peer);
                        p.direct_over = final_direct_family(&h, peer);
                        p.first_contact_ms = h.first_after(joined_ms, |s| s.peer(peer).is_some());
                        p.time_to_direct_ms = h.first_after(joined_ms, |s| {
                            s.peer(peer).is_some_and(|x| x.is_direct())
                        });
                        p.node_time_to_direct_ms = h
                            .last()
                            .and_then(|s| s.peer(peer))
                            .and_then(|x| x.direct_after_ms)
                            .map(|ms| ms as f64);
                    }
                }
                p.play = Some(play);
            }
        }
        report.players.push(p);
    }
    Ok(())
}

/// Starts one node when its time comes and its bootstrap nodes are ready.
async fn node_task(
    plan: NodePlan,
    state: Arc<TrialState>,
    mut zero: watch::Receiver<Option<TokioInstant>>,
    ready_tx: watch::Sender<Option<NodeInfo>>,
) -> (NodeOutcome, Option<RunningNode>) {
    let mut outcome = NodeOutcome::default();
    match start_node(&plan, &state, &mut zero, &mut outcome).await {
        Ok((node, info)) => {
            let _ = ready_tx.send(Some(info));
            (outcome, Some(node))
        }
        Err(e) => {
            outcome.error = Some(format!("{e:#}"));
            (outcome, None)
        }
    }
}

async fn start_node(
    plan: &NodePlan,
    state: &TrialState,
    zero: &mut watch::Receiver<Option<TokioInstant>>,
    outcome: &mut NodeOutcome,
) -> anyhow::Result<(RunningNode, NodeInfo)> {
    if !plan.start_at.is_zero() {
        let z = *zero
            .wait_for(|z| z.is_some())
            .await
            .context("the trial ended before time zero")?;
        let z = z.context("no time zero")?;
        tokio::time::sleep_until(z + plan.start_at).await;
    }
    let host = state
        .hosts
        .get(&plan.name)
        .cloned()
        .context("the lab has no site for this node")?;
    // Bootstrap addresses: each bootstrap node's listen address on its lab address.
    let mut bootstrap = Vec::new();
    for b in &plan.bootstrap {
        let mut rx = state.ready[b].clone();
        let info = tokio::time::timeout(READY_TIMEOUT * 2, rx.wait_for(|r| r.is_some()))
            .await
            .ok()
            .and_then(|r| r.ok().map(|g| g.clone()))
            .flatten()
            .with_context(|| format!("bootstrap node {b} never became ready"))?;
        if !state.features.bootstrap_flag {
            continue;
        }
        let status = wait_first_status(&state.histories[b]).await;
        match status.filter(StatusExt::has_mesh).map(|s| s.listen_addrs) {
            // A node without the mesh has nothing to bootstrap from: start alone, as such a node does.
            None => {}
            Some(addrs) => {
                let addr = node::pick_bootstrap_addr(&addrs, Some(info.host.addr()))
                    .or_else(|| node::pick_bootstrap_addr(&addrs, None))
                    .with_context(|| {
                        format!(
                            "bootstrap node {b} lists no address on {} with /p2p/: {addrs:?}",
                            info.host.addr()
                        )
                    })?;
                bootstrap.push(addr);
            }
        }
    }
    outcome.bootstrap = bootstrap.clone();
    // Fresh per trial; inside the trial's folder so an interrupted run leaves nothing elsewhere.
    let data = tempfile::Builder::new()
        .prefix(&format!("{}.data-", plan.name))
        .tempdir_in(&state.dir)
        .context("cannot create a data dir")?;
    let launcher = Launcher {
        name: plan.name.clone(),
        rtmp_listen: RTMP_LISTEN.parse()?,
        http_listen: HTTP_LISTEN.parse()?,
        p2p_port: P2P_PORT,
        bootstrap,
        extra: plan.args.clone(),
        namespace: Some(host.ns.clone()),
        nice: plan.nice,
        log: NodeLog::File(state.dir.join(format!("{}.log", plan.name))),
        ..Launcher::new(&state.node_exe, data.path())
    };
    let t = Instant::now();
    let process = launcher.start(READY_TIMEOUT).await?;
    let ready = process
        .ready()
        .cloned()
        .context("the node has no ready line")?;
    outcome.ready_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
    outcome.peer_id = Some(ready.peer_id.clone());
    let poller = start_poller(state, &plan.name, &host, &ready)?;
    let info = NodeInfo { ready, host };
    Ok((
        RunningNode {
            name: plan.name.clone(),
            process,
            poller: Some(poller),
            _data: data,
        },
        info,
    ))
}

/// Waits for a node's first status poll (bounded); None if none came.
async fn wait_first_status(history: &Arc<Mutex<StatusHistory>>) -> Option<Status> {
    let deadline = Instant::now() + STATUS_WAIT;
    loop {
        if let Some(s) = lock(history).last().cloned() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `netlab agent status` in the node's namespace; its lines go into the node's history and file.
fn start_poller(
    state: &TrialState,
    name: &str,
    host: &Host,
    ready: &Ready,
) -> anyhow::Result<AgentProcess> {
    let args: Vec<String> = vec![
        "agent".into(),
        "status".into(),
        "--addr".into(),
        ready.http_listen.to_string(),
        "--interval-ms".into(),
        state.status_interval.as_millis().to_string(),
    ];
    let mut poller = AgentProcess::spawn(
        &state.lab,
        &host.ns,
        &args,
        &state.dir.join(format!("{name}.status.stderr")),
    )?;
    let stdout = poller
        .child
        .stdout
        .take()
        .context("poller without stdout")?;
    let history = state.histories[name].clone();
    let path = state.dir.join(format!("{name}.status.jsonl"));
    tokio::spawn(async move {
        let mut file = tokio::fs::File::create(&path).await.ok();
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line = redact_publish_key(line);
            if let Some(f) = file.as_mut() {
                let _ = f.write_all(line.as_bytes()).await;
                let _ = f.write_all(b"\n").await;
            }
            record_poll(&history, &line);
        }
    });
    Ok(poller)
}

/// The status API shows the node's publish key to loopback callers, which the poller is; reports and
/// logs are shared, so the key is replaced before anything is written.
fn redact_publish_key(line: String) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&line) else {
        return line;
    };
    match v.pointer_mut("/status/publish_key") {
        Some(key) if key.is_string() => {
            *key = serde_json::Value::String("(redacted by netlab)".into());
            v.to_string()
        }
        _ => line,
    }
}

/// Adds one line of the status poller to a history.
fn record_poll(history: &Mutex<StatusHistory>, line: &str) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return;
    };
    let at = v.get("at_unix_ms").and_then(|x| x.as_u64()).unwrap_or(0);
    let mut h = lock(history);
    match v.get("status") {
        Some(raw) => match serde_json::from_value::<Status>(raw.clone()) {
            Ok(s) => {
                h.samples.push((at, s));
                h.last_raw = Some(raw.clone());
            }
            Err(_) => h.errors += 1,
        },
        None => h.errors += 1,
    }
}

/// Waits for a node's readiness, at most until `until`.
async fn node_ready(
    state: &TrialState,
    node: &str,
    until: TokioInstant,
) -> anyhow::Result<NodeInfo> {
    let mut rx = state.ready.get(node).context("no such node")?.clone();
    tokio::time::timeout_at(until, rx.wait_for(|r| r.is_some()))
        .await
        .ok()
        .and_then(|r| r.ok().map(|g| g.clone()))
        .flatten()
        .with_context(|| format!("node {node} was not ready before the end of the trial"))
}

async fn publisher_task(
    plan: PublisherPlan,
    stream: String,
    duration: Duration,
    zero: TokioInstant,
    state: Arc<TrialState>,
) -> anyhow::Result<PublishReport> {
    let end = zero + duration;
    tokio::time::sleep_until(zero + plan.start_at).await;
    let info = node_ready(&state, &plan.node, end).await?;
    let left = end.saturating_duration_since(TokioInstant::now());
    let args: Vec<String> = vec![
        "agent".into(),
        "publish".into(),
        "--url".into(),
        format!("rtmp://{}/live/{stream}", info.ready.rtmp_listen),
        "--fps".into(),
        plan.fps.to_string(),
        "--gop".into(),
        plan.gop.to_string(),
        "--kbps".into(),
        plan.kbps.to_string(),
        "--duration-s".into(),
        format!("{:.3}", left.as_secs_f64().max(0.001)),
    ];
    let agent = AgentProcess::spawn(
        &state.lab,
        &info.host.ns,
        &args,
        &state.dir.join("publisher.stderr"),
    )?;
    let out = agent.output_until(end + PROBE_OVERRUN).await;
    std::fs::write(state.dir.join("publisher.json"), &out).ok();
    serde_json::from_str(out.trim()).with_context(|| {
        format!(
            "the probe publisher printed no report (see {})",
            state.dir.join("publisher.stderr").display()
        )
    })
}

async fn player_task(
    plan: PlayerPlan,
    stream: String,
    zero: TokioInstant,
    end: TokioInstant,
    state: Arc<TrialState>,
) -> anyhow::Result<(u64, PlayReport)> {
    tokio::time::sleep_until(zero + plan.join_at).await;
    let info = node_ready(&state, &plan.node, end).await?;
    let joined = unix_us() / 1000;
    let left = end.saturating_duration_since(TokioInstant::now());
    let args: Vec<String> = vec![
        "agent".into(),
        "play".into(),
        "--url".into(),
        format!("rtmp://{}/live/{stream}", info.ready.rtmp_listen),
        "--duration-s".into(),
        format!("{:.3}", left.as_secs_f64().max(0.001)),
        "--idle-timeout-s".into(),
        format!("{:.3}", plan.idle_timeout.as_secs_f64()),
        "--retry-s".into(),
        format!("{:.3}", plan.retry.as_secs_f64()),
    ];
    let file = plan.name.replace('#', "-");
    let agent = AgentProcess::spawn(
        &state.lab,
        &info.host.ns,
        &args,
        &state.dir.join(format!("player-{file}.stderr")),
    )?;
    let out = agent.output_until(end + PROBE_OVERRUN).await;
    std::fs::write(state.dir.join(format!("player-{file}.json")), &out).ok();
    let report = serde_json::from_str(out.trim()).with_context(|| {
        format!(
            "the probe player printed no report (see {})",
            state.dir.join(format!("player-{file}.stderr")).display()
        )
    })?;
    Ok((joined, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publish_key_never_reaches_a_report() {
        let line =
            r#"{"at_unix_ms":5,"status":{"peer_id":"p","publish_key":"sk_secret"}}"#.to_string();
        let out = redact_publish_key(line);
        assert!(!out.contains("sk_secret"), "{out}");
        assert!(
            out.contains("redacted") && out.contains(r#""peer_id":"p""#),
            "{out}"
        );
        let other = r#"{"at_unix_ms":5,"error":"connection refused"}"#.to_string();
        assert_eq!(redact_publish_key(other.clone()), other);
        assert_eq!(redact_publish_key("not json".into()), "not json");
    }

    #[test]
    fn polls_become_history() {
        let h = Mutex::new(StatusHistory::default());
        record_poll(
            &h,
            r#"{"at_unix_ms":10,"status":{"peer_id":"A","streams":[],"extra":1}}"#,
        );
        record_poll(&h, r#"{"at_unix_ms":20,"error":"cannot connect"}"#);
        record_poll(&h, "garbage");
        record_poll(&h, r#"{"at_unix_ms":30,"status":{"peer_id":5}}"#);
        let h = h.into_inner().unwrap();
        assert_eq!(h.samples.len(), 1);
        assert_eq!(h.samples[0].0, 10);
        assert_eq!(h.errors, 2);
        assert_eq!(h.last_raw.unwrap()["extra"], 1);
    }
}
