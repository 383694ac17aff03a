//! `netlab classify`: proves each NAT preset has the behaviour it is named for, by measuring it from a
//! host behind it with the STUN-like probe ([`crate::probe::stun`]).

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use crate::engine::lab::{Lab, SiteSpec};
use crate::engine::link::LinkConditions;
use crate::engine::nat::{Behaviour, NatPreset};
use crate::engine::{LabError, LabResult};
use crate::probe::stun::{ClientReport, Observation, ServerAddrs};
use crate::report::Table;

/// Longest a client may take (its questions time out in well under this).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// The result for one preset.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifyRow {
    /// The preset under test.
    pub preset: NatPreset,
    /// What the preset is defined to be.
    pub expected: Behaviour,
    /// What the probe measured, or why it could not.
    pub measured: Result<Behaviour, String>,
    /// Measured equals expected.
    pub ok: bool,
    /// The probe's raw observation.
    pub observation: Option<Observation>,
}

/// Arguments of the client agent.
pub fn client_args(bind: Ipv4Addr, addrs: &ServerAddrs) -> Vec<String> {
    [
        "agent",
        "stun-client",
        "--bind",
        &bind.to_string(),
        "--primary",
        &addrs.primary.to_string(),
        "--alternate",
        &addrs.alternate.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// Builds one site per preset in `lab`, probes them all in parallel, and compares with the definitions.
pub fn run(lab: &Lab, presets: &[NatPreset]) -> LabResult<Vec<ClassifyRow>> {
    let addrs = lab.stun_server()?;
    let specs: Vec<SiteSpec> = presets
        .iter()
        .map(|&preset| SiteSpec {
            label: preset.to_string(),
            preset,
            link: LinkConditions::IDEAL,
        })
        .collect();
    let sites = lab.add_sites(&specs)?;
    let rows = std::thread::scope(|scope| {
        let handles: Vec<_> = sites
            .iter()
            .map(|site| {
                scope.spawn(move || {
                    let out = lab.run_agent(
                        &site.host.ns,
                        "stun client",
                        &client_args(site.host.addr(), &addrs),
                        CLIENT_TIMEOUT,
                    );
                    let report = out.and_then(|o| {
                        serde_json::from_str::<ClientReport>(o.trim()).map_err(|e| {
                            LabError::agent("stun client", format!("unreadable report {o:?}: {e}"))
                        })
                    });
                    row(site.preset, report)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("classify thread panicked"))
            .collect::<Vec<_>>()
    });
    Ok(rows)
}

fn row(preset: NatPreset, report: LabResult<ClientReport>) -> ClassifyRow {
    let expected = preset.behaviour();
    match report {
        Ok(r) => {
            let ok = r.behaviour.as_ref() == Ok(&expected);
            ClassifyRow {
                preset,
                expected,
                measured: r.behaviour,
                ok,
                observation: Some(r.observation),
            }
        }
        Err(e) => ClassifyRow {
            preset,
            expected,
            measured: Err(e.to_string()),
            ok: false,
            observation: None,
        },
    }
}

/// The table people read: preset, expected, measured, ok.
pub fn table(rows: &[ClassifyRow]) -> Table {
    let mut t = Table::new([
        "preset",
        "expected mapping",
        "expected filtering",
        "measured mapping",
        "measured filtering",
        "ok",
    ]);
    for r in rows {
        let (mm, mf) = match &r.measured {
            Ok(b) => (b.mapping.to_string(), b.filtering.to_string()),
            Err(e) => ("error".to_string(), e.clone()),
        };
        t.push([
            r.preset.to_string(),
            r.expected.mapping.to_string(),
            r.expected.filtering.to_string(),
            mm,
            mf,
            if r.ok { "ok".into() } else { "MISMATCH".into() },
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::nat::{Filtering, Mapping, NatType};

    #[test]
    fn rows_compare_against_the_definition() {
        let obs = Observation {
            local: "10.0.0.2:1".parse().unwrap(),
            mapped: [None; 3],
            other_ip_and_port_answered: false,
            other_port_answered: false,
        };
        let pr = NatPreset::Single(NatType::PortRestrictedCone);
        let good = row(
            pr,
            Ok(ClientReport {
                observation: obs.clone(),
                behaviour: Ok(pr.behaviour()),
            }),
        );
        assert!(good.ok);
        let wrong = Behaviour {
            mapping: Mapping::EndpointDependent,
            filtering: Filtering::AddressAndPortDependent,
        };
        let bad = row(
            pr,
            Ok(ClientReport {
                observation: obs,
                behaviour: Ok(wrong),
            }),
        );
        assert!(!bad.ok);
        let failed = row(pr, Err(LabError::ShuttingDown));
        assert!(!failed.ok);
        let t = table(&[good, bad, failed]);
        assert_eq!(
            t.rows[0],
            ["port-restricted", "EIM", "APDF", "EIM", "APDF", "ok"]
        );
        assert_eq!(t.rows[1][3..], ["EDM", "APDF", "MISMATCH"]);
        assert_eq!(t.rows[2][3], "error");
    }

    #[test]
    fn agent_arguments() {
        let addrs = ServerAddrs {
            primary: "198.51.100.10:3478".parse().unwrap(),
            alternate: "198.51.100.11:3479".parse().unwrap(),
        };
        assert_eq!(
            client_args("10.0.0.2".parse().unwrap(), &addrs).join(" "),
            "agent stun-client --bind 10.0.0.2 --primary 198.51.100.10:3478 --alternate 198.51.100.11:3479"
        );
    }
}
