//! `netlab classify`: proves each NAT preset has the behaviour it is named for, by measuring it from a
//! host behind it with the STUN-like probe ([`crate::probe::stun`]).

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::engine::lab::{Lab, SiteSpec};
use crate::engine::link::LinkConditions;
use crate::engine::nat::{Behaviour, Family, NatPreset};
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
    /// The address family measured (IPv6 only for sites behind an IPv6 firewall).
    pub family: Family,
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
pub fn client_args(bind: IpAddr, addrs: &ServerAddrs) -> Vec<String> {
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

/// Builds one site per preset in `lab`, probes them all in parallel (over IPv4, and over IPv6 where the
/// site has a firewalled IPv6 prefix), and compares with the definitions.
pub fn run(lab: &Lab, presets: &[NatPreset]) -> LabResult<Vec<ClassifyRow>> {
    let addrs = lab.stun_server()?;
    let addrs6 = lab.stun_server6()?;
    let specs: Vec<SiteSpec> = presets
        .iter()
        .map(|&preset| SiteSpec {
            label: preset.to_string(),
            preset,
            link: LinkConditions::IDEAL,
        })
        .collect();
    let sites = lab.add_sites(&specs)?;
    let probes: Vec<(&crate::engine::Site, Family, IpAddr, ServerAddrs)> = sites
        .iter()
        .flat_map(|site| {
            let v4 = (site, Family::Ipv4, IpAddr::from(site.host.addr()), addrs);
            let v6 = site
                .host
                .addr6()
                .filter(|_| site.preset.has_firewalled_ipv6())
                .map(|a| (site, Family::Ipv6, IpAddr::from(a), addrs6));
            std::iter::once(v4).chain(v6)
        })
        .collect();
    let rows = std::thread::scope(|scope| {
        let handles: Vec<_> = probes
            .iter()
            .map(|&(site, family, bind, server)| {
                scope.spawn(move || {
                    let out = lab.run_agent(
                        &site.host.ns,
                        "stun client",
                        &client_args(bind, &server),
                        CLIENT_TIMEOUT,
                    );
                    let report = out.and_then(|o| {
                        serde_json::from_str::<ClientReport>(o.trim()).map_err(|e| {
                            LabError::agent("stun client", format!("unreadable report {o:?}: {e}"))
                        })
                    });
                    row(site.preset, family, report)
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

fn row(preset: NatPreset, family: Family, report: LabResult<ClientReport>) -> ClassifyRow {
    let expected = preset
        .behaviour_over(family)
        .unwrap_or_else(|| preset.behaviour());
    match report {
        Ok(r) => {
            let ok = r.behaviour.as_ref() == Ok(&expected);
            ClassifyRow {
                preset,
                family,
                expected,
                measured: r.behaviour,
                ok,
                observation: Some(r.observation),
            }
        }
        Err(e) => ClassifyRow {
            preset,
            family,
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
            match r.family {
                Family::Ipv4 => r.preset.to_string(),
                Family::Ipv6 => format!("{} (IPv6)", r.preset),
            },
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
            Family::Ipv4,
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
            Family::Ipv4,
            Ok(ClientReport {
                observation: obs,
                behaviour: Ok(wrong),
            }),
        );
        assert!(!bad.ok);
        let failed = row(pr, Family::Ipv4, Err(LabError::ShuttingDown));
        assert!(!failed.ok);
        let fw6 = row(
            NatPreset::V6Firewall,
            Family::Ipv6,
            Ok(ClientReport {
                observation: Observation {
                    local: "[2001:db8:1:3::2]:5000".parse().unwrap(),
                    mapped: [Some("[2001:db8:1:3::2]:5000".parse().unwrap()); 3],
                    other_ip_and_port_answered: false,
                    other_port_answered: false,
                },
                behaviour: Ok(NatPreset::V6Firewall.behaviour6().unwrap()),
            }),
        );
        assert!(fw6.ok, "{fw6:?}");
        assert_eq!(fw6.expected.to_string(), "none/APDF");
        let t = table(&[good, bad, failed, fw6]);
        assert_eq!(
            t.rows[0],
            ["port-restricted", "EIM", "APDF", "EIM", "APDF", "ok"]
        );
        assert_eq!(t.rows[1][3..], ["EDM", "APDF", "MISMATCH"]);
        assert_eq!(t.rows[2][3], "error");
        assert_eq!(
            t.rows[3],
            ["v6-firewall (IPv6)", "none", "APDF", "none", "APDF", "ok"]
        );
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
