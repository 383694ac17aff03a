//! `netlab punch`: raw UDP hole punching for every ordered pair of NAT presets, compared against the
//! outcome that RFC 4787 behaviour predicts.
//!
//! Each case gets two fresh sites (fresh router namespaces, so no conntrack entry survives from another
//! case), a shared rendezvous on the internet, and two punching peers ([`crate::probe::punch`]). Cases are
//! independent and run in parallel.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::engine::agent::READY_LINE;
use crate::engine::lab::{Host, Lab, PublicHostOptions, Site};
use crate::engine::link::LinkConditions;
use crate::engine::nat::{Behaviour, Family, Filtering, NatPreset};
use crate::engine::{LabError, LabResult};
use crate::probe::proto::Role;
use crate::probe::punch::PeerReport;
use crate::report::{CellClass, Grid, GridCell, Table};

/// Port of the rendezvous.
const RENDEZVOUS_PORT: u16 = 7000;
/// Port every peer punches from.
const PEER_PORT: u16 = 40000;

/// How the two peers start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// Both start punching when the rendezvous introduces them.
    Simultaneous,
    /// Peer B starts later than A by the stagger of [`PunchOptions`].
    Staggered,
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Start::Simultaneous => "simultaneous",
            Start::Staggered => "staggered",
        })
    }
}

impl std::str::FromStr for Start {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "simultaneous" | "sim" => Ok(Start::Simultaneous),
            "staggered" | "stag" => Ok(Start::Staggered),
            other => Err(format!(
                "unknown start {other:?}: use simultaneous or staggered"
            )),
        }
    }
}

/// One cell of one matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PunchCase {
    /// Peer A's preset (row).
    pub a: NatPreset,
    /// Peer B's preset (column).
    pub b: NatPreset,
    /// How they start.
    pub start: Start,
    /// One-way delay on each site's access link, in milliseconds.
    pub delay_ms: u32,
    /// The address family punched over.
    pub family: Family,
}

/// What the theory predicts for a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expectation {
    /// Both sides' probes get in at the advertised addresses.
    Direct,
    /// Only one side's probes get in; works because the other answers the observed source.
    DirectViaObservedSource,
    /// Neither side's probes get in.
    Fail,
}

impl Expectation {
    /// Whether a direct path is expected.
    pub fn is_direct(self) -> bool {
        self != Expectation::Fail
    }
}

/// Whether probes from a host behind `from`, sent to the address the rendezvous observed for a host
/// behind `to`, get through `to`'s NAT once `to` has sent its own probes towards `from`'s observed address.
///
/// - open or endpoint-independent filtering: yes (`to` has a mapping, created by the rendezvous exchange);
/// - address-dependent: yes if `to` maps endpoint-independently, so its probes opened the very mapping the
///   rendezvous saw towards `from`'s address;
/// - address-and-port-dependent: additionally `from` must keep its port towards `to`, since `to` only
///   opened the exact address and port the rendezvous saw.
pub fn probes_get_in(from: Behaviour, to: Behaviour) -> bool {
    match to.filtering {
        Filtering::None | Filtering::EndpointIndependent => true,
        Filtering::AddressDependent => to.mapping.is_endpoint_independent(),
        Filtering::AddressAndPortDependent => {
            to.mapping.is_endpoint_independent() && from.mapping.is_endpoint_independent()
        }
    }
}

/// The expected outcome of a simultaneous-open punch between `a` and `b`. When one side's probes get in,
/// the receiver's answer goes back as a reply through both NATs' connection state; it only reaches the
/// sender if the receiver answers the observed source (`follow_source`) or the sender's NAT kept its port.
pub fn expect(a: Behaviour, b: Behaviour, follow_source: bool) -> Expectation {
    let ab = probes_get_in(a, b);
    let ba = probes_get_in(b, a);
    if ab && ba {
        Expectation::Direct
    } else if (ab || ba) && follow_source {
        Expectation::DirectViaObservedSource
    } else {
        Expectation::Fail
    }
}

/// Tunables of a punch run.
#[derive(Debug, Clone, Serialize)]
pub struct PunchOptions {
    /// How much later B starts in a staggered start.
    pub stagger: Duration,
    /// How long a peer punches before it gives up.
    pub timeout: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Peers answer (and probe) the address a probe came from.
    pub follow_source: bool,
    /// Cases run at once.
    pub jobs: usize,
}

impl Default for PunchOptions {
    fn default() -> Self {
        PunchOptions {
            stagger: Duration::from_millis(300),
            timeout: Duration::from_secs(3),
            interval: Duration::from_millis(20),
            follow_source: true,
            jobs: 8,
        }
    }
}

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct PunchOutcome {
    /// The case.
    pub case: PunchCase,
    /// What theory predicts.
    pub expected: Expectation,
    /// Both peers confirmed a direct path.
    pub direct: bool,
    /// At least one side was confirmed by an address other than the one the rendezvous gave it.
    pub via_observed_source: bool,
    /// Milliseconds until both sides were confirmed (the later of the two, each from its own start).
    pub time_to_direct_ms: Option<u64>,
    /// `direct` equals the expectation.
    pub matches: bool,
    /// The peers' reports (A, B).
    pub peers: Vec<PeerReport>,
    /// Why the case could not be run, if it could not.
    pub error: Option<String>,
}

/// Every ordered pair of `presets` for each start and delay, over IPv4, and over IPv6 where both sites
/// have IPv6 and at least one of them sits behind an IPv6 firewall (two public hosts prove nothing).
pub fn cases(presets: &[NatPreset], starts: &[Start], delays_ms: &[u32]) -> Vec<PunchCase> {
    let mut v = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        for &delay_ms in delays_ms {
            for &start in starts {
                for &a in presets {
                    for &b in presets {
                        if family == Family::Ipv6
                            && !(a.has_ipv6()
                                && b.has_ipv6()
                                && (a.has_firewalled_ipv6() || b.has_firewalled_ipv6()))
                        {
                            continue;
                        }
                        v.push(PunchCase {
                            a,
                            b,
                            start,
                            delay_ms,
                            family,
                        });
                    }
                }
            }
        }
    }
    v
}

/// The expectation of a case, from the presets' behaviour over its family.
pub fn expect_case(case: &PunchCase, follow_source: bool) -> Expectation {
    match (
        case.a.behaviour_over(case.family),
        case.b.behaviour_over(case.family),
    ) {
        (Some(a), Some(b)) => expect(a, b, follow_source),
        _ => Expectation::Fail,
    }
}

/// Arguments of the rendezvous agent.
pub fn rendezvous_args(bind: SocketAddr) -> Vec<String> {
    ["agent", "rendezvous", "--bind", &bind.to_string()]
        .map(String::from)
        .to_vec()
}

/// Arguments of a peer agent.
pub fn peer_args(
    bind: SocketAddr,
    rendezvous: SocketAddr,
    session: &str,
    role: Role,
    start_delay: Duration,
    opts: &PunchOptions,
) -> Vec<String> {
    let mut v: Vec<String> = [
        "agent",
        "punch-peer",
        "--bind",
        &bind.to_string(),
        "--rendezvous",
        &rendezvous.to_string(),
        "--session",
        session,
        "--role",
        match role {
            Role::A => "a",
            Role::B => "b",
        },
        "--start-delay-ms",
        &start_delay.as_millis().to_string(),
        "--timeout-ms",
        &opts.timeout.as_millis().to_string(),
        "--interval-ms",
        &opts.interval.as_millis().to_string(),
    ]
    .map(String::from)
    .to_vec();
    if !opts.follow_source {
        v.push("--no-follow-source".into());
    }
    v
}

/// Runs every case in `lab` (which gets a rendezvous host) and returns the outcomes in case order.
/// `progress` is called after each case.
pub fn run(
    lab: &Lab,
    cases: &[PunchCase],
    opts: &PunchOptions,
    progress: &(dyn Fn(&PunchOutcome) + Sync),
) -> LabResult<Vec<PunchOutcome>> {
    let host = lab.add_public_host("rendezvous", PublicHostOptions::default())?;
    let rendezvous = |family| -> Option<SocketAddr> {
        let ip: IpAddr = match family {
            Family::Ipv4 => host.addr().into(),
            Family::Ipv6 => host.addr6()?.into(),
        };
        Some(SocketAddr::new(ip, RENDEZVOUS_PORT))
    };
    for family in [Family::Ipv4, Family::Ipv6] {
        if let Some(bind) = rendezvous(family) {
            lab.start_agent(
                &host.ns,
                "rendezvous",
                &rendezvous_args(bind),
                Some(READY_LINE),
            )?;
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Mutex<Vec<Option<PunchOutcome>>> = Mutex::new(vec![None; cases.len()]);
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.max(1).min(cases.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { break };
                    let outcome = match rendezvous(case.family) {
                        Some(r) => run_case(lab, r, i, *case, opts),
                        None => outcome(
                            *case,
                            expect_case(case, opts.follow_source),
                            Vec::new(),
                            Some("the rendezvous has no address of this family".into()),
                        ),
                    };
                    progress(&outcome);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(outcome);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results
        .into_iter()
        .map(|r| r.ok_or(LabError::ShuttingDown))
        .collect()
}

fn run_case(
    lab: &Lab,
    rendezvous: SocketAddr,
    index: usize,
    case: PunchCase,
    opts: &PunchOptions,
) -> PunchOutcome {
    let expected = expect_case(&case, opts.follow_source);
    let link = LinkConditions::delay(case.delay_ms);
    let mut sites: Vec<Site> = Vec::new();
    let result = (|| -> LabResult<Vec<PeerReport>> {
        sites.push(lab.add_site(&format!("c{index}a"), case.a, link)?);
        sites.push(lab.add_site(&format!("c{index}b"), case.b, link)?);
        let session = format!("{}-{index}", lab.prefix());
        let stagger = if case.start == Start::Staggered {
            opts.stagger
        } else {
            Duration::ZERO
        };
        let limit = opts.timeout + stagger + Duration::from_secs(15);
        let run_peer = |host: &Host, role: Role, delay: Duration| -> LabResult<PeerReport> {
            let ip: IpAddr = match case.family {
                Family::Ipv4 => host.addr().into(),
                Family::Ipv6 => host
                    .addr6()
                    .ok_or_else(|| LabError::agent("punch peer", "the host has no IPv6 address"))?
                    .into(),
            };
            let args = peer_args(
                SocketAddr::new(ip, PEER_PORT),
                rendezvous,
                &session,
                role,
                delay,
                opts,
            );
            let out = lab.run_agent(&host.ns, "punch peer", &args, limit)?;
            serde_json::from_str(out.trim()).map_err(|e| {
                LabError::agent("punch peer", format!("unreadable report {out:?}: {e}"))
            })
        };
        std::thread::scope(|scope| {
            let a = scope.spawn(|| run_peer(&sites[0].host, Role::A, Duration::ZERO));
            let b = run_peer(&sites[1].host, Role::B, stagger);
            let a = a
                .join()
                .unwrap_or_else(|_| Err(LabError::agent("punch peer", "thread panicked")));
            Ok(vec![a?, b?])
        })
    })();
    for s in &sites {
        if let Err(e) = lab.remove_site(s) {
            eprintln!("netlab: removing site {}: {e}", s.label);
        }
    }
    match result {
        Ok(peers) => outcome(case, expected, peers, None),
        Err(e) => outcome(case, expected, Vec::new(), Some(e.to_string())),
    }
}

fn outcome(
    case: PunchCase,
    expected: Expectation,
    peers: Vec<PeerReport>,
    error: Option<String>,
) -> PunchOutcome {
    let direct = peers.len() == 2 && peers.iter().all(|p| p.confirmed);
    let via_observed_source = peers
        .iter()
        .any(|p| p.confirmed && p.confirmed_by != p.advertised_peer);
    let time_to_direct_ms = if direct {
        peers.iter().filter_map(|p| p.time_to_confirm_ms).max()
    } else {
        None
    };
    let matches = error.is_none() && direct == expected.is_direct();
    PunchOutcome {
        case,
        expected,
        direct,
        via_observed_source,
        time_to_direct_ms,
        matches,
        peers,
        error,
    }
}

/// Short text of a cell: `ok 12ms`, `ok* 230ms` (through the observed source), `FAIL`; `!` marks a
/// result that differs from the theory.
pub fn cell_text(o: &PunchOutcome) -> String {
    let mut s = if o.error.is_some() {
        "ERROR".to_string()
    } else if o.direct {
        let star = if o.via_observed_source { "*" } else { "" };
        format!("ok{star} {}ms", o.time_to_direct_ms.unwrap_or(0))
    } else {
        "FAIL".to_string()
    };
    if !o.matches {
        s.push_str(" !");
    }
    s
}

/// The distinct (family, delay, start) variants in `outcomes`, in order.
fn variants(outcomes: &[PunchOutcome]) -> Vec<(Family, u32, Start)> {
    outcomes
        .iter()
        .map(|o| (o.case.family, o.case.delay_ms, o.case.start))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The presets in `outcomes` of `family`, in first-seen order.
fn presets(outcomes: &[PunchOutcome], family: Family) -> Vec<NatPreset> {
    let mut v: Vec<NatPreset> = Vec::new();
    for o in outcomes.iter().filter(|o| o.case.family == family) {
        for p in [o.case.a, o.case.b] {
            if !v.contains(&p) {
                v.push(p);
            }
        }
    }
    v
}

/// The matrix of one (delay, start) variant.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixGrid {
    /// The address family.
    pub family: Family,
    /// One-way delay per access link.
    pub delay_ms: u32,
    /// How the peers started.
    pub start: Start,
    /// Rows are A's preset, columns B's.
    pub grid: Grid,
}

impl MatrixGrid {
    /// A file name for its picture, e.g. `punch-50ms-staggered.svg`.
    pub fn svg_file_name(&self) -> String {
        let family = match self.family {
            Family::Ipv4 => "",
            Family::Ipv6 => "-ipv6",
        };
        format!("punch{family}-{}ms-{}.svg", self.delay_ms, self.start)
    }
}

/// One grid per (delay, start) variant: rows are A's preset, columns B's.
pub fn grids(outcomes: &[PunchOutcome], opts: &PunchOptions) -> Vec<MatrixGrid> {
    variants(outcomes)
        .into_iter()
        .map(|(family, delay, start)| {
            let ps = presets(outcomes, family);
            let start_text = match start {
                Start::Simultaneous => "simultaneous start".to_string(),
                Start::Staggered => format!("B starts {} ms after A", opts.stagger.as_millis()),
            };
            let cells = ps
                .iter()
                .map(|&a| {
                    ps.iter()
                        .map(|&b| {
                            let found = outcomes.iter().find(|o| {
                                o.case.a == a
                                    && o.case.b == b
                                    && o.case.delay_ms == delay
                                    && o.case.start == start
                                    && o.case.family == family
                            });
                            match found {
                                None => GridCell::new(CellClass::Empty, ""),
                                Some(o) => GridCell {
                                    class: if !o.matches {
                                        CellClass::Unexpected
                                    } else if o.direct {
                                        CellClass::Direct
                                    } else {
                                        CellClass::Failed
                                    },
                                    text: cell_text(o),
                                    tooltip: format!(
                                        "{a} x {b}: expected {:?}, {}",
                                        o.expected,
                                        o.error.clone().unwrap_or_else(|| if o.direct {
                                            "direct".into()
                                        } else {
                                            "no direct path".into()
                                        })
                                    ),
                                },
                            }
                        })
                        .collect()
                })
                .collect();
            let grid = Grid {
                title: format!(
                    "UDP hole punching over {family}, {delay} ms one-way delay per access link, {start_text}"
                ),
                row_axis: "A".into(),
                column_axis: "B".into(),
                rows: ps.iter().map(ToString::to_string).collect(),
                columns: ps.iter().map(ToString::to_string).collect(),
                cells,
            };
            MatrixGrid {
                family,
                delay_ms: delay,
                start,
                grid,
            }
        })
        .collect()
}

/// The theoretical matrix for `presets` as a table (`ok`, `ok*`, `FAIL`), over IPv4.
pub fn expectation_table(presets: &[NatPreset], follow_source: bool) -> Table {
    expectation_table_over(presets, follow_source, Family::Ipv4)
}

/// The theoretical matrix over `family`, for the presets that have it.
pub fn expectation_table_over(presets: &[NatPreset], follow_source: bool, family: Family) -> Table {
    let presets: Vec<(NatPreset, Behaviour)> = presets
        .iter()
        .filter_map(|&p| Some((p, p.behaviour_over(family)?)))
        .collect();
    let mut t = Table::new(
        std::iter::once("A \\ B".to_string()).chain(presets.iter().map(|(p, _)| p.to_string())),
    );
    for &(a, ab) in &presets {
        let cells = presets
            .iter()
            .map(|&(_, bb)| match expect(ab, bb, follow_source) {
                Expectation::Direct => "ok".to_string(),
                Expectation::DirectViaObservedSource => "ok*".to_string(),
                Expectation::Fail => "FAIL".to_string(),
            });
        t.push(std::iter::once(a.to_string()).chain(cells));
    }
    t
}

/// Counts of a run: (cases, matching the theory).
pub fn summary(outcomes: &[PunchOutcome]) -> (usize, usize) {
    (
        outcomes.len(),
        outcomes.iter().filter(|o| o.matches).count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::nat::NatType;

    const FC: NatPreset = NatPreset::Single(NatType::FullCone);
    const RC: NatPreset = NatPreset::Single(NatType::RestrictedCone);
    const PR: NatPreset = NatPreset::Single(NatType::PortRestrictedCone);
    const SYM: NatPreset = NatPreset::Single(NatType::Symmetric);

    fn e(a: NatPreset, b: NatPreset) -> Expectation {
        expect(a.behaviour(), b.behaviour(), true)
    }

    #[test]
    fn expectation_equals_the_measured_matrix_of_the_notes() {
        // The 4x4 table of the NAT notes: cone pairs ok; PR x SYM and SYM x SYM fail; SYM x FC/RC only
        // through the observed source.
        let cones = [FC, RC, PR];
        for a in cones {
            for b in cones {
                assert_eq!(e(a, b), Expectation::Direct, "{a} x {b}");
            }
        }
        for cone in [FC, RC] {
            assert_eq!(e(SYM, cone), Expectation::DirectViaObservedSource);
            assert_eq!(e(cone, SYM), Expectation::DirectViaObservedSource);
            assert_eq!(
                expect(SYM.behaviour(), cone.behaviour(), false),
                Expectation::Fail
            );
        }
        assert_eq!(e(PR, SYM), Expectation::Fail);
        assert_eq!(e(SYM, PR), Expectation::Fail);
        assert_eq!(e(SYM, SYM), Expectation::Fail);
    }

    #[test]
    fn public_hosts_and_double_nat() {
        let none = NatPreset::None;
        assert_eq!(e(none, none), Expectation::Direct);
        assert_eq!(e(none, PR), Expectation::Direct);
        assert_eq!(e(none, SYM), Expectation::DirectViaObservedSource);
        // Double NAT of two port-restricted routers behaves as one port-restricted cone.
        assert_eq!(e(NatPreset::DOUBLE, PR), Expectation::Direct);
        assert_eq!(e(NatPreset::DOUBLE, SYM), Expectation::Fail);
        let sym_carrier = NatPreset::Double {
            carrier: NatType::Symmetric,
            home: NatType::FullCone,
        };
        assert_eq!(e(sym_carrier, FC), Expectation::DirectViaObservedSource);
    }

    #[test]
    fn ipv6_firewalls_punch_where_the_same_ipv4_nat_cannot() {
        let v6 = |a: NatPreset, b: NatPreset| {
            expect_case(
                &PunchCase {
                    a,
                    b,
                    start: Start::Simultaneous,
                    delay_ms: 0,
                    family: Family::Ipv6,
                },
                true,
            )
        };
        for a in [NatPreset::V6Firewall, NatPreset::CgnatV6, NatPreset::None] {
            for b in [NatPreset::V6Firewall, NatPreset::CgnatV6] {
                assert_eq!(v6(a, b), Expectation::Direct, "{a} x {b}");
            }
        }
        // Without IPv6 on one side there is nothing to punch over.
        assert_eq!(v6(NatPreset::V6Firewall, PR), Expectation::Fail);
        let t = expectation_table_over(
            &[PR, NatPreset::V6Firewall, NatPreset::CgnatV6],
            true,
            Family::Ipv6,
        )
        .to_markdown();
        assert_eq!(
            t,
            "| A \\ B | v6-firewall | cgnat-v6 |\n|---|---|---|\n| v6-firewall | ok | ok |\n| cgnat-v6 | ok | ok |\n"
        );
    }

    #[test]
    fn expectation_is_symmetric_in_the_pair() {
        for a in NatPreset::STANDARD {
            for b in NatPreset::STANDARD {
                assert_eq!(e(a, b), e(b, a), "{a} x {b}");
            }
        }
    }

    #[test]
    fn expectation_table_text() {
        let t = expectation_table(&[PR, SYM], true).to_markdown();
        assert_eq!(
            t,
            "| A \\ B | port-restricted | symmetric |\n|---|---|---|\n| port-restricted | ok | FAIL |\n| symmetric | FAIL | FAIL |\n"
        );
    }

    #[test]
    fn cases_cover_every_ordered_pair() {
        let c = cases(
            &[PR, SYM],
            &[Start::Simultaneous, Start::Staggered],
            &[0, 50],
        );
        assert_eq!(c.len(), 16);
        assert!(c.contains(&PunchCase {
            a: SYM,
            b: PR,
            start: Start::Staggered,
            delay_ms: 50,
            family: Family::Ipv4,
        }));
        // IPv6 cases only where both sites have IPv6 and one is firewalled.
        let c = cases(
            &[
                NatPreset::None,
                PR,
                NatPreset::V6Firewall,
                NatPreset::CgnatV6,
            ],
            &[Start::Simultaneous],
            &[0],
        );
        let v6: Vec<(NatPreset, NatPreset)> = c
            .iter()
            .filter(|c| c.family == Family::Ipv6)
            .map(|c| (c.a, c.b))
            .collect();
        assert_eq!(v6.len(), 8, "{v6:?}");
        assert!(!v6.contains(&(NatPreset::None, NatPreset::None)));
        assert!(v6.iter().all(|(a, b)| *a != PR && *b != PR));
    }

    fn peer(role: Role, confirmed_by: Option<&str>, advertised: &str, t: u64) -> PeerReport {
        PeerReport {
            role,
            observed: None,
            advertised_peer: Some(advertised.parse().unwrap()),
            confirmed: confirmed_by.is_some(),
            time_to_confirm_ms: confirmed_by.map(|_| t),
            confirmed_by: confirmed_by.map(|s| s.parse().unwrap()),
            heard_from: vec![],
            probes_sent: 1,
        }
    }

    #[test]
    fn outcomes_cells_and_grids() {
        let case = PunchCase {
            a: SYM,
            b: FC,
            start: Start::Simultaneous,
            delay_ms: 0,
            family: Family::Ipv4,
        };
        let peers = vec![
            peer(Role::A, Some("203.0.113.3:40000"), "203.0.113.3:40000", 5),
            peer(Role::B, Some("203.0.113.2:61000"), "203.0.113.2:40000", 9),
        ];
        let o = outcome(case, Expectation::DirectViaObservedSource, peers, None);
        assert!(o.direct && o.matches && o.via_observed_source);
        assert_eq!(cell_text(&o), "ok* 9ms");
        let failed = outcome(
            PunchCase {
                a: PR,
                b: SYM,
                ..case
            },
            Expectation::Fail,
            vec![
                peer(Role::A, None, "203.0.113.3:40000", 0),
                peer(Role::B, None, "203.0.113.2:40000", 0),
            ],
            None,
        );
        assert_eq!(cell_text(&failed), "FAIL");
        let surprise = outcome(
            PunchCase {
                a: PR,
                b: PR,
                ..case
            },
            Expectation::Direct,
            vec![],
            Some("boom".into()),
        );
        assert_eq!(cell_text(&surprise), "ERROR !");
        let grids = grids(&[o, failed, surprise], &PunchOptions::default());
        assert_eq!(grids.len(), 1);
        assert_eq!(grids[0].svg_file_name(), "punch-0ms-simultaneous.svg");
        let g = &grids[0].grid;
        assert_eq!(g.rows, vec!["symmetric", "full-cone", "port-restricted"]);
        assert_eq!(g.cells[0][1].class, CellClass::Direct);
        assert_eq!(g.cells[2][0].class, CellClass::Failed);
        assert_eq!(g.cells[2][2].class, CellClass::Unexpected);
        assert_eq!(g.cells[0][0].class, CellClass::Empty);
    }

    #[test]
    fn peer_arguments() {
        let opts = PunchOptions {
            follow_source: false,
            ..PunchOptions::default()
        };
        let args = peer_args(
            "10.0.0.2:40000".parse().unwrap(),
            "198.51.100.10:7000".parse().unwrap(),
            "s",
            Role::B,
            Duration::from_millis(300),
            &opts,
        );
        assert_eq!(
            args.join(" "),
            "agent punch-peer --bind 10.0.0.2:40000 --rendezvous 198.51.100.10:7000 --session s --role b \
             --start-delay-ms 300 --timeout-ms 3000 --interval-ms 20 --no-follow-source"
        );
    }
}
