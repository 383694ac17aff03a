//! Scenario files (`netlab run FILE`): a topology of public hosts and NAT sites, which `streamr-node` runs
//! where, who publishes and who plays when, for how long and how many times. This module parses and
//! checks a file and expands it into concrete cases; [`crate::scenario::runner`] runs them.
//!
//! ```toml
//! name = "smoke"
//! duration_s = 20          # each trial, from its time zero (all nodes that start at 0 are ready)
//! trials = 1               # fresh lab, fresh nodes for every trial
//! stream = "probe"         # stream name (default "probe")
//!
//! [defaults]               # for every node and group that does not say otherwise
//! nat = "public"           # none|public, full-cone, restricted, port-restricted, symmetric, double, double:A+B
//! link = { delay_ms = 25, jitter_ms = 0, loss_percent = 0 }
//! args = []                # extra streamr-node flags, e.g. ["--max-upload-kbps", "5000"]
//!
//! [[node]]
//! name = "relay"           # lowercase letters, digits and '-'
//! [[node]]
//! name = "alice"
//! nat = "symmetric"
//! bootstrap = ["relay"]    # nodes whose listen address goes into --bootstrap
//! start_s = 0              # when it starts (0: before time zero)
//! nice = 0                 # scheduling niceness, -20..19: e.g. -10 for a relay that stands for a server
//!
//! [[group]]                # count nodes called viewer-1 .. viewer-N
//! name = "viewer"
//! count = 49
//! nat = ["port-restricted", "symmetric"]   # one preset, or a list cycled over the members
//! bootstrap = ["relay"]
//! start_s = 2              # the first member starts here ...
//! spread_s = 30            # ... and the others evenly over this many seconds
//! play = true              # each member runs a probe player once its node is ready
//! play_delay_s = 0
//! retry_s = 20
//!
//! [publisher]
//! node = "alice"
//! start_s = 1
//! fps = 30                 # defaults: 30 fps, keyframe every 60 frames, 2500 kbps
//!
//! [[player]]
//! node = "relay"
//! join_s = 3
//! retry_s = 20             # keep trying until the mesh found the stream (default 20)
//! idle_timeout_s = 5
//!
//! [matrix]                 # one case per (row preset, column preset); the two nodes must not set nat
//! rows = "alice"           # the node whose NAT the rows vary (the publisher's in the NAT matrix)
//! columns = "bob"          # the node whose NAT the columns vary
//! presets = ["public", "full-cone"]   # both axes; row_presets / column_presets override one axis
//!
//! [report]
//! status_interval_ms = 500 # how often every node's status API is read
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::engine::link::LinkConditions;
use crate::engine::nat::NatPreset;

/// A scenario file that cannot be used, with the file and the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{message}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct ScenarioError {
    /// The file.
    pub file: String,
    /// The key (`publisher.node`, `group[2].count`); empty when the message locates it (TOML errors name
    /// the line, the column and the key).
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// One preset or a list of presets in a file.
#[derive(Debug, Clone, PartialEq)]
struct NatList(Vec<NatPreset>);

impl<'de> Deserialize<'de> for NatList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NatList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a NAT preset or a list of presets")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<NatList, E> {
                s.parse().map(|p| NatList(vec![p])).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NatList, A::Error> {
                let mut v = Vec::new();
                while let Some(p) = seq.next_element::<NatPreset>()? {
                    v.push(p);
                }
                Ok(NatList(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    #[serde(default)]
    description: String,
    duration_s: f64,
    #[serde(default = "one")]
    trials: u32,
    #[serde(default = "probe")]
    stream: String,
    #[serde(default)]
    defaults: Defaults,
    #[serde(default, rename = "node")]
    nodes: Vec<NodeEntry>,
    #[serde(default, rename = "group")]
    groups: Vec<GroupEntry>,
    publisher: PublisherEntry,
    #[serde(default, rename = "player")]
    players: Vec<PlayerEntry>,
    matrix: Option<MatrixEntry>,
    #[serde(default)]
    report: ReportEntry,
}

fn one() -> u32 {
    1
}
fn probe() -> String {
    "probe".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    nat: Option<NatPreset>,
    link: Option<LinkConditions>,
    #[serde(default)]
    args: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    name: String,
    nat: Option<NatPreset>,
    link: Option<LinkConditions>,
    args: Option<Vec<String>>,
    #[serde(default)]
    bootstrap: Vec<String>,
    #[serde(default)]
    start_s: f64,
    #[serde(default)]
    nice: i8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupEntry {
    name: String,
    count: usize,
    nat: Option<NatList>,
    link: Option<LinkConditions>,
    args: Option<Vec<String>>,
    #[serde(default)]
    bootstrap: Vec<String>,
    #[serde(default)]
    start_s: f64,
    #[serde(default)]
    spread_s: f64,
    #[serde(default)]
    play: bool,
    #[serde(default)]
    play_delay_s: f64,
    retry_s: Option<f64>,
    idle_timeout_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublisherEntry {
    node: String,
    #[serde(default)]
    start_s: f64,
    #[serde(default = "fps")]
    fps: u32,
    #[serde(default = "gop")]
    gop: u32,
    #[serde(default = "kbps")]
    kbps: u32,
}

fn fps() -> u32 {
    30
}
fn gop() -> u32 {
    60
}
fn kbps() -> u32 {
    2500
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlayerEntry {
    node: String,
    name: Option<String>,
    #[serde(default)]
    join_s: f64,
    retry_s: Option<f64>,
    idle_timeout_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatrixEntry {
    rows: String,
    columns: String,
    presets: Option<Vec<String>>,
    row_presets: Option<Vec<String>>,
    column_presets: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportEntry {
    #[serde(default = "status_interval")]
    status_interval_ms: u64,
}

impl Default for ReportEntry {
    fn default() -> Self {
        ReportEntry {
            status_interval_ms: status_interval(),
        }
    }
}

fn status_interval() -> u64 {
    500
}

/// Default time a player keeps trying until the stream exists.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(20);
/// Default silence after which a player stops.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(5);

/// A node to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodePlan {
    /// Its name (and the site's label).
    pub name: String,
    /// The NAT in front of it.
    pub preset: NatPreset,
    /// Its access link.
    pub link: LinkConditions,
    /// Extra flags.
    pub args: Vec<String>,
    /// Nodes it bootstraps from.
    pub bootstrap: Vec<String>,
    /// When it starts, from time zero (zero: before time zero).
    pub start_at: Duration,
    /// Its scheduling niceness, -20 to 19 (0: as netlab): a node standing for a server with a machine of its
    /// own, such as a bootstrap relay that 100 viewers join through, gets the CPU it would have there.
    pub nice: i8,
}

/// The probe publisher.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublisherPlan {
    /// The node it publishes to.
    pub node: String,
    /// When it starts.
    pub start_at: Duration,
    /// Video frames per second.
    pub fps: u32,
    /// Keyframe interval in frames.
    pub gop: u32,
    /// Bitrate.
    pub kbps: u32,
}

/// A probe player.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlayerPlan {
    /// Its name in reports.
    pub name: String,
    /// The node it plays from.
    pub node: String,
    /// When it joins (and not before its node is ready).
    pub join_at: Duration,
    /// How long it keeps trying until the stream exists.
    pub retry: Duration,
    /// Silence after which it stops.
    pub idle_timeout: Duration,
}

/// One topology to run `trials` times: the whole scenario, or one cell of a matrix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Case {
    /// `main`, or `ROW/COLUMN` for a matrix cell.
    pub label: String,
    /// The matrix row's preset label.
    pub row: Option<String>,
    /// The matrix column's preset label.
    pub column: Option<String>,
    /// Nodes, in file order.
    pub nodes: Vec<NodePlan>,
    /// The publisher.
    pub publisher: PublisherPlan,
    /// The players.
    pub players: Vec<PlayerPlan>,
}

/// The axes of a matrix scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Matrix {
    /// The node the rows vary.
    pub row_node: String,
    /// The node the columns vary.
    pub column_node: String,
    /// Row labels (as written in the file).
    pub rows: Vec<String>,
    /// Column labels.
    pub columns: Vec<String>,
}

/// A checked scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    /// Its name (the file stem when the file has none).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Where it came from.
    pub file: PathBuf,
    /// Length of each trial from time zero.
    pub duration: Duration,
    /// Trials per case.
    pub trials: u32,
    /// Stream name.
    pub stream: String,
    /// How often nodes' status is read.
    pub status_interval: Duration,
    /// The matrix axes, for a matrix scenario.
    pub matrix: Option<Matrix>,
    /// What to run.
    pub cases: Vec<Case>,
}

/// Reads and checks a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: path.display().to_string(),
        key: "file".into(),
        message: format!("cannot read it: {e}"),
    })?;
    parse(&text, path)
}

/// Parses and checks scenario text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
    let file_name = path.display().to_string();
    let err = |key: &str, message: String| ScenarioError {
        file: file_name.clone(),
        key: key.to_string(),
        message,
    };
    let f: File = toml::from_str(text).map_err(|e| {
        // toml's message names the line, column and key; keep it whole.
        err("", e.to_string().trim().to_string())
    })?;
    let name = f.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scenario".into())
    });
    let secs = |key: &str, v: f64| -> Result<Duration, ScenarioError> {
        if !(0.0..=86_400.0).contains(&v) {
            return Err(err(
                key,
                format!("{v} is not a number of seconds from 0 to 86400"),
            ));
        }
        Ok(Duration::from_secs_f64(v))
    };
    let check_nice = |key: &str, v: i8| -> Result<i8, ScenarioError> {
        if !(-20..=19).contains(&v) {
            return Err(err(key, format!("{v} is not a niceness from -20 to 19")));
        }
        Ok(v)
    };
    let duration = secs("duration_s", f.duration_s)?;
    if duration.is_zero() {
        return Err(err("duration_s", "must be more than 0".into()));
    }
    if f.trials == 0 || f.trials > 1000 {
        return Err(err("trials", format!("{} is not from 1 to 1000", f.trials)));
    }
    if f.stream.is_empty()
        || !f
            .stream
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(err(
            "stream",
            format!("{:?}: use letters, digits, '-' and '_'", f.stream),
        ));
    }
    if !(50..=60_000).contains(&f.report.status_interval_ms) {
        return Err(err(
            "report.status_interval_ms",
            format!("{} is not from 50 to 60000", f.report.status_interval_ms),
        ));
    }
    let default_nat = f.defaults.nat.unwrap_or(NatPreset::None);
    let default_link = f.defaults.link.unwrap_or_default();
    let check_link = |key: &str, l: LinkConditions| {
        l.validate()
            .map(|()| l)
            .map_err(|e| err(key, e.to_string()))
    };
    check_link("defaults.link", default_link)?;

    // Nodes, then group members, in file order.
    let mut nodes: Vec<NodePlan> = Vec::new();
    let mut players: Vec<PlayerPlan> = Vec::new();
    let mut explicit_nat: HashSet<String> = HashSet::new();
    let mut where_defined: HashMap<String, String> = HashMap::new();
    let mut define = |name: &str, key: String| -> Result<(), ScenarioError> {
        check_name(name).map_err(|m| err(&key, m))?;
        if let Some(first) = where_defined.insert(name.to_string(), key.clone()) {
            return Err(err(
                &key,
                format!("node {name:?} is already defined by {first}"),
            ));
        }
        Ok(())
    };
    for (i, n) in f.nodes.iter().enumerate() {
        let key = format!("node[{i}]");
        define(&n.name, format!("{key}.name"))?;
        if n.nat.is_some() {
            explicit_nat.insert(n.name.clone());
        }
        nodes.push(NodePlan {
            name: n.name.clone(),
            preset: n.nat.unwrap_or(default_nat),
            link: check_link(&format!("{key}.link"), n.link.unwrap_or(default_link))?,
            args: n.args.clone().unwrap_or_else(|| f.defaults.args.clone()),
            bootstrap: n.bootstrap.clone(),
            start_at: secs(&format!("{key}.start_s"), n.start_s)?,
            nice: check_nice(&format!("{key}.nice"), n.nice)?,
        });
    }
    for (i, g) in f.groups.iter().enumerate() {
        let key = format!("group[{i}]");
        check_name(&g.name).map_err(|m| err(&format!("{key}.name"), m))?;
        if g.count == 0 || g.count > 200 {
            return Err(err(
                &format!("{key}.count"),
                format!("{} is not from 1 to 200 (the lab's address plan)", g.count),
            ));
        }
        let nats = match &g.nat {
            Some(NatList(v)) if v.is_empty() => {
                return Err(err(&format!("{key}.nat"), "the list is empty".into()));
            }
            Some(NatList(v)) => v.clone(),
            None => vec![default_nat],
        };
        let link = check_link(&format!("{key}.link"), g.link.unwrap_or(default_link))?;
        let start = secs(&format!("{key}.start_s"), g.start_s)?;
        let spread = secs(&format!("{key}.spread_s"), g.spread_s)?;
        let delay = secs(&format!("{key}.play_delay_s"), g.play_delay_s)?;
        let retry = opt_secs(&secs, &format!("{key}.retry_s"), g.retry_s, DEFAULT_RETRY)?;
        let idle = opt_secs(
            &secs,
            &format!("{key}.idle_timeout_s"),
            g.idle_timeout_s,
            DEFAULT_IDLE,
        )?;
        for m in 0..g.count {
            let name = format!("{}-{}", g.name, m + 1);
            define(&name, format!("{key} (member {name})"))?;
            let offset = if g.count > 1 {
                spread.mul_f64(m as f64 / (g.count - 1) as f64)
            } else {
                Duration::ZERO
            };
            let start_at = start + offset;
            nodes.push(NodePlan {
                name: name.clone(),
                preset: nats[m % nats.len()],
                link,
                args: g.args.clone().unwrap_or_else(|| f.defaults.args.clone()),
                bootstrap: g.bootstrap.clone(),
                start_at,
                nice: 0,
            });
            if g.play {
                players.push(PlayerPlan {
                    name: name.clone(),
                    node: name,
                    join_at: start_at + delay,
                    retry,
                    idle_timeout: idle,
                });
            }
        }
    }
    if nodes.is_empty() {
        return Err(err(
            "node",
            "the scenario has no [[node]] and no [[group]]".into(),
        ));
    }
    if let Some(late) = nodes.iter().find(|n| n.start_at >= duration) {
        return Err(err(
            &format!("start of node {:?}", late.name),
            format!(
                "starts at {:.1} s, at or after the end of the trial (duration_s = {})",
                late.start_at.as_secs_f64(),
                f.duration_s
            ),
        ));
    }
    let names: HashSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let exists = |key: &str, name: &str| {
        if names.contains(name) {
            Ok(())
        } else {
            Err(err(
                key,
                format!("no node or group member is called {name:?}"),
            ))
        }
    };
    for n in &nodes {
        for b in &n.bootstrap {
            let key = format!("bootstrap of node {:?}", n.name);
            exists(&key, b)?;
            if *b == n.name {
                return Err(err(&key, "a node cannot bootstrap from itself".into()));
            }
        }
    }
    bootstrap_layers(&nodes).map_err(|m| err("bootstrap", m))?;

    let p = &f.publisher;
    exists("publisher.node", &p.node)?;
    if p.fps == 0 || p.fps > 240 {
        return Err(err(
            "publisher.fps",
            format!("{} is not from 1 to 240", p.fps),
        ));
    }
    if p.gop == 0 {
        return Err(err("publisher.gop", "must be at least 1".into()));
    }
    if !(8..=100_000).contains(&p.kbps) {
        return Err(err(
            "publisher.kbps",
            format!("{} is not from 8 to 100000", p.kbps),
        ));
    }
    let publisher = PublisherPlan {
        node: p.node.clone(),
        start_at: secs("publisher.start_s", p.start_s)?,
        fps: p.fps,
        gop: p.gop,
        kbps: p.kbps,
    };
    if publisher.start_at >= duration {
        return Err(err(
            "publisher.start_s",
            "starts at or after the end of the trial (duration_s)".into(),
        ));
    }
    let mut explicit_players = Vec::new();
    for (i, pl) in f.players.iter().enumerate() {
        let key = format!("player[{i}]");
        exists(&format!("{key}.node"), &pl.node)?;
        explicit_players.push(PlayerPlan {
            name: pl.name.clone().unwrap_or_else(|| pl.node.clone()),
            node: pl.node.clone(),
            join_at: secs(&format!("{key}.join_s"), pl.join_s)?,
            retry: opt_secs(&secs, &format!("{key}.retry_s"), pl.retry_s, DEFAULT_RETRY)?,
            idle_timeout: opt_secs(
                &secs,
                &format!("{key}.idle_timeout_s"),
                pl.idle_timeout_s,
                DEFAULT_IDLE,
            )?,
        });
    }
    explicit_players.append(&mut players);
    let mut players = explicit_players;
    // Player names are unique in reports: a second player on a node gets a suffix.
    let mut seen: HashMap<String, u32> = HashMap::new();
    for pl in &mut players {
        let n = seen.entry(pl.name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            pl.name = format!("{}#{}", pl.name, n);
        }
    }
    for pl in &players {
        if pl.join_at >= duration {
            return Err(err(
                &format!("player on {:?}", pl.node),
                format!(
                    "joins at {:.1} s, at or after the end of the trial (duration_s = {})",
                    pl.join_at.as_secs_f64(),
                    f.duration_s
                ),
            ));
        }
    }
    if players.is_empty() {
        return Err(err(
            "player",
            "nobody plays: add a [[player]] or a [[group]] with play = true".into(),
        ));
    }

    let base = Case {
        label: "main".into(),
        row: None,
        column: None,
        nodes,
        publisher,
        players,
    };
    let (matrix, cases) = match &f.matrix {
        None => (None, vec![base]),
        Some(m) => {
            let (matrix, cases) = expand_matrix(m, &base, &explicit_nat, &err)?;
            (Some(matrix), cases)
        }
    };
    Ok(Scenario {
        name,
        description: f.description,
        file: path.to_path_buf(),
        duration,
        trials: f.trials,
        stream: f.stream,
        status_interval: Duration::from_millis(f.report.status_interval_ms),
        matrix,
        cases,
    })
}

fn opt_secs(
    secs: &impl Fn(&str, f64) -> Result<Duration, ScenarioError>,
    key: &str,
    v: Option<f64>,
    default: Duration,
) -> Result<Duration, ScenarioError> {
    v.map_or(Ok(default), |v| secs(key, v))
}

fn expand_matrix(
    m: &MatrixEntry,
    base: &Case,
    explicit_nat: &HashSet<String>,
    err: &impl Fn(&str, String) -> ScenarioError,
) -> Result<(Matrix, Vec<Case>), ScenarioError> {
    for (key, node) in [("matrix.rows", &m.rows), ("matrix.columns", &m.columns)] {
        if !base.nodes.iter().any(|n| n.name == *node) {
            return Err(err(key, format!("no node is called {node:?}")));
        }
        if explicit_nat.contains(node.as_str()) {
            return Err(err(
                key,
                format!("node {node:?} sets nat, but the matrix chooses it: remove its nat key"),
            ));
        }
    }
    if m.rows == m.columns {
        return Err(err(
            "matrix.columns",
            "rows and columns must vary two different nodes".into(),
        ));
    }
    let axis = |key: &str,
                list: Option<&Vec<String>>|
     -> Result<Vec<(String, NatPreset)>, ScenarioError> {
        let list = list.or(m.presets.as_ref()).ok_or_else(|| {
            err(
                key,
                "give presets (both axes) or row_presets and column_presets".into(),
            )
        })?;
        if list.is_empty() {
            return Err(err(key, "the list is empty".into()));
        }
        list.iter()
            .map(|s| {
                s.parse::<NatPreset>()
                    .map(|p| (s.clone(), p))
                    .map_err(|e| err(key, e.to_string()))
            })
            .collect()
    };
    let rows = axis("matrix.row_presets", m.row_presets.as_ref())?;
    let columns = axis("matrix.column_presets", m.column_presets.as_ref())?;
    let mut cases = Vec::new();
    for (rl, rp) in &rows {
        for (cl, cp) in &columns {
            let mut case = base.clone();
            case.label = format!("{rl}/{cl}");
            case.row = Some(rl.clone());
            case.column = Some(cl.clone());
            for n in &mut case.nodes {
                if n.name == m.rows {
                    n.preset = *rp;
                } else if n.name == m.columns {
                    n.preset = *cp;
                }
            }
            cases.push(case);
        }
    }
    Ok((
        Matrix {
            row_node: m.rows.clone(),
            column_node: m.columns.clone(),
            rows: rows.into_iter().map(|(l, _)| l).collect(),
            columns: columns.into_iter().map(|(l, _)| l).collect(),
        },
        cases,
    ))
}

/// Names become namespace labels and file names: keep them simple.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: use 1 to 40 lowercase letters, digits and '-' (not first)"
        ))
    }
}

/// Nodes grouped so that every node comes after the nodes it bootstraps from: the order to start them.
/// Fails on a cycle.
pub fn bootstrap_layers(nodes: &[NodePlan]) -> Result<Vec<Vec<String>>, String> {
    let mut placed: HashSet<&str> = HashSet::new();
    let mut layers = Vec::new();
    while placed.len() < nodes.len() {
        let layer: Vec<String> = nodes
            .iter()
            .filter(|n| !placed.contains(n.name.as_str()))
            .filter(|n| n.bootstrap.iter().all(|b| placed.contains(b.as_str())))
            .map(|n| n.name.clone())
            .collect();
        if layer.is_empty() {
            let stuck: Vec<&str> = nodes
                .iter()
                .map(|n| n.name.as_str())
                .filter(|n| !placed.contains(n))
                .collect();
            return Err(format!(
                "the nodes {stuck:?} bootstrap from each other in a cycle: one of them must start without"
            ));
        }
        for n in &layer {
            if let Some(node) = nodes.iter().find(|x| &x.name == n) {
                placed.insert(node.name.as_str());
            }
        }
        layers.push(layer);
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::nat::NatType;

    fn parse_str(text: &str) -> Result<Scenario, ScenarioError> {
        parse(text, Path::new("test.toml"))
    }

    const SMALL: &str = r#"
        duration_s = 20
        [[node]]
        name = "relay"
        [[node]]
        name = "alice"
        nat = "symmetric"
        bootstrap = ["relay"]
        link = { delay_ms = 25 }
        [publisher]
        node = "alice"
        [[player]]
        node = "relay"
        join_s = 2
    "#;

    #[test]
    fn a_small_scenario_with_defaults() {
        let s = parse_str(SMALL).unwrap();
        assert_eq!(s.name, "test");
        assert_eq!((s.trials, s.stream.as_str()), (1, "probe"));
        assert_eq!(s.duration, Duration::from_secs(20));
        assert_eq!(s.status_interval, Duration::from_millis(500));
        assert!(s.matrix.is_none());
        let c = &s.cases[0];
        assert_eq!(c.label, "main");
        assert_eq!(c.nodes[0].preset, NatPreset::None);
        assert_eq!(c.nodes[1].preset, NatPreset::Single(NatType::Symmetric));
        assert_eq!(c.nodes[1].link.delay_ms, 25);
        assert_eq!(
            (c.publisher.fps, c.publisher.gop, c.publisher.kbps),
            (30, 60, 2500)
        );
        assert_eq!(c.players[0].retry, DEFAULT_RETRY);
        assert_eq!(c.players[0].join_at, Duration::from_secs(2));
        assert_eq!((c.nodes[0].nice, c.nodes[1].nice), (0, 0));
        let niced =
            parse_str(&SMALL.replace("name = \"relay\"", "name = \"relay\"\nnice = -10")).unwrap();
        assert_eq!(niced.cases[0].nodes[0].nice, -10);
    }

    #[test]
    fn groups_expand_with_cycled_nats_and_spread_starts() {
        let s = parse_str(
            r#"
            duration_s = 60
            [defaults]
            link = { delay_ms = 20 }
            args = ["--max-upload-kbps", "8000"]
            [[node]]
            name = "relay"
            [[group]]
            name = "viewer"
            count = 5
            nat = ["full-cone", "symmetric"]
            bootstrap = ["relay"]
            start_s = 2
            spread_s = 8
            play = true
            play_delay_s = 1
            [publisher]
            node = "viewer-1"
            "#,
        )
        .unwrap();
        let c = &s.cases[0];
        assert_eq!(c.nodes.len(), 6);
        let v: Vec<_> = c.nodes[1..]
            .iter()
            .map(|n| (n.name.as_str(), n.preset.to_string(), n.start_at.as_secs()))
            .collect();
        assert_eq!(
            v,
            vec![
                ("viewer-1", "full-cone".to_string(), 2),
                ("viewer-2", "symmetric".to_string(), 4),
                ("viewer-3", "full-cone".to_string(), 6),
                ("viewer-4", "symmetric".to_string(), 8),
                ("viewer-5", "full-cone".to_string(), 10),
            ]
        );
        assert!(
            c.nodes
                .iter()
                .all(|n| n.link.delay_ms == 20 && n.args.len() == 2)
        );
        assert_eq!(c.players.len(), 5);
        assert_eq!(c.players[4].join_at, Duration::from_secs(11));
        assert_eq!(bootstrap_layers(&c.nodes).unwrap().len(), 2);
    }

    #[test]
    fn a_matrix_has_one_case_per_pair() {
        let s = parse_str(
            r#"
            duration_s = 10
            trials = 3
            [[node]]
            name = "relay"
            [[node]]
            name = "pub"
            bootstrap = ["relay"]
            [[node]]
            name = "view"
            bootstrap = ["relay"]
            [publisher]
            node = "pub"
            [[player]]
            node = "view"
            [matrix]
            rows = "pub"
            columns = "view"
            presets = ["public", "symmetric", "double"]
            "#,
        )
        .unwrap();
        let m = s.matrix.as_ref().unwrap();
        assert_eq!(m.rows, ["public", "symmetric", "double"]);
        assert_eq!(s.cases.len(), 9);
        let c = s
            .cases
            .iter()
            .find(|c| c.label == "symmetric/double")
            .unwrap();
        assert_eq!(c.nodes[1].preset, NatPreset::Single(NatType::Symmetric));
        assert_eq!(c.nodes[2].preset, NatPreset::DOUBLE);
        assert_eq!(c.nodes[0].preset, NatPreset::None);
    }

    fn error_of(text: &str) -> String {
        parse_str(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_name_the_file_and_the_key() {
        let cases: Vec<(String, &str)> = vec![
            (
                SMALL.replace("duration_s = 20", "duration_s = 20\ncolour = 1"),
                "unknown field `colour`",
            ),
            (
                SMALL.replace("\"symmetric\"", "\"tornado\""),
                "unknown NAT \"tornado\"",
            ),
            (
                SMALL.replace("node = \"alice\"", "node = \"carol\""),
                "publisher.node: no node or group member is called \"carol\"",
            ),
            (
                SMALL.replace("bootstrap = [\"relay\"]", "bootstrap = [\"alice\"]"),
                "cannot bootstrap from itself",
            ),
            (
                SMALL.replace("duration_s = 20", "duration_s = -1"),
                "duration_s: -1 is not a number",
            ),
            (
                SMALL.replace("join_s = 2", "join_s = 30"),
                "at or after the end",
            ),
            (
                SMALL.replace("link = { delay_ms = 25 }", "start_s = 20"),
                "start of node \"alice\": starts at 20.0 s",
            ),
            (
                SMALL.replace("name = \"relay\"", "name = \"Relay\""),
                "node[0].name",
            ),
            (
                SMALL.replace("name = \"alice\"", "name = \"relay\""),
                "already defined by node[0].name",
            ),
            (
                SMALL.replace("delay_ms = 25", "loss_percent = 120"),
                "node[1].link: loss 120%",
            ),
            (
                SMALL.replace("[publisher]", "[publisher]\nkbps = 0"),
                "publisher.kbps",
            ),
            (
                SMALL.replace("name = \"alice\"", "name = \"alice\"\nnice = -21"),
                "node[1].nice: -21 is not a niceness",
            ),
            (
                SMALL.replace("duration_s = 20", "duration_s = \"20\""),
                "invalid type",
            ),
            (
                "duration_s = 20\n[publisher]\nnode = \"x\"".to_string(),
                "no [[node]]",
            ),
        ];
        for (text, want) in cases {
            let e = error_of(&text);
            assert!(e.starts_with("test.toml: "), "{e}");
            assert!(e.contains(want), "want {want:?} in: {e}");
        }
        let cycle = r#"
            duration_s = 5
            [[node]]
            name = "a"
            bootstrap = ["b"]
            [[node]]
            name = "b"
            bootstrap = ["a"]
            [publisher]
            node = "a"
            [[player]]
            node = "b"
        "#;
        assert!(error_of(cycle).contains("cycle"), "{}", error_of(cycle));
        let matrix_nat = format!(
            "{SMALL}\n[matrix]\nrows = \"alice\"\ncolumns = \"relay\"\npresets = [\"public\"]\n"
        );
        assert!(
            error_of(&matrix_nat).contains("matrix.rows: node \"alice\" sets nat"),
            "{}",
            error_of(&matrix_nat)
        );
        let missing = load(Path::new("/nonexistent/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("/nonexistent/x.toml: file: cannot read it"),
            "{missing}"
        );
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let s = load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(!s.cases.is_empty());
                seen += 1;
            }
        }
        assert!(seen >= 3, "scenarios in {}", dir.display());
    }
}
