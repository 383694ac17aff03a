//! Set-up and teardown cost of a lab with many NAT sites (`netlab scale`): the figure that says whether a
//! 50-site scenario is practical on a small machine.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::agent::READY_LINE;
use crate::engine::lab::{Lab, LabConfig, PublicHostOptions, SiteSpec};
use crate::engine::link::LinkConditions;
use crate::engine::nat::NatPreset;
use crate::engine::{LabError, LabResult};
use crate::probe::echo::RttReport;

/// Port of the echo server used by the reachability check.
const ECHO_PORT: u16 = 7007;

/// What a scale run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// Sites built.
    pub sites: usize,
    /// Namespaces the lab had at its largest.
    pub namespaces: usize,
    /// Creating the lab and all sites.
    pub setup: Duration,
    /// Sites whose host reached a public echo server through its NAT(s), when checked.
    pub reachable: Option<usize>,
    /// Time the reachability check took.
    pub check: Option<Duration>,
    /// Deleting everything.
    pub teardown: Duration,
    /// Namespaces of the run still present after teardown (must be zero).
    pub leftover_namespaces: usize,
}

/// The presets cycled through by a mixed run.
pub fn mixed_presets(n: usize) -> Vec<NatPreset> {
    NatPreset::STANDARD
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

/// Builds a lab with one site per preset in `presets`, optionally checks every site can reach the
/// internet, and tears it down, timing each phase.
pub fn run(
    config: LabConfig,
    presets: &[NatPreset],
    link: LinkConditions,
    check: bool,
) -> LabResult<ScaleReport> {
    let start = Instant::now();
    let lab = Lab::new(config)?;
    let specs: Vec<SiteSpec> = presets
        .iter()
        .enumerate()
        .map(|(i, &preset)| SiteSpec {
            label: format!("s{i}"),
            preset,
            link,
        })
        .collect();
    let built = lab.add_sites(&specs);
    let setup = start.elapsed();
    let sites = match built {
        Ok(s) => s,
        Err(e) => {
            let _ = lab.shutdown();
            return Err(e);
        }
    };
    let namespaces = lab.namespaces().len();
    let (reachable, check_time) = if check {
        let t = Instant::now();
        let n = reachability(&lab, &sites)?;
        (Some(n), Some(t.elapsed()))
    } else {
        (None, None)
    };
    let prefix = lab.prefix().to_string();
    let report = lab.shutdown()?;
    let leftover_namespaces = crate::engine::sys::netns_list()?
        .iter()
        .filter(|n| crate::engine::names::prefix_of(n) == Some(prefix.as_str()))
        .count();
    Ok(ScaleReport {
        sites: sites.len(),
        namespaces,
        setup,
        reachable,
        check: check_time,
        teardown: report.elapsed,
        leftover_namespaces,
    })
}

/// How many sites get an echo back from a public server, all probed in parallel.
fn reachability(lab: &Lab, sites: &[crate::engine::lab::Site]) -> LabResult<usize> {
    let server = lab.add_public_host("echo", PublicHostOptions::default())?;
    let addr = SocketAddrV4::new(server.addr(), ECHO_PORT);
    lab.start_agent(
        &server.ns,
        "echo server",
        &echo_server_args(addr),
        Some(READY_LINE),
    )?;
    let ok = std::thread::scope(|scope| {
        let handles: Vec<_> = sites
            .iter()
            .map(|site| {
                scope.spawn(move || {
                    let args =
                        echo_client_args(site.host.addr(), addr, 3, Duration::from_millis(20));
                    lab.run_agent(&site.host.ns, "echo client", &args, Duration::from_secs(15))
                        .ok()
                        .and_then(|out| serde_json::from_str::<RttReport>(out.trim()).ok())
                        .is_some_and(|r| r.received > 0)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .filter(|&b| b)
            .count()
    });
    Ok(ok)
}

/// Arguments of the echo server agent.
pub fn echo_server_args(bind: SocketAddrV4) -> Vec<String> {
    ["agent", "echo-server", "--bind", &bind.to_string()]
        .map(String::from)
        .to_vec()
}

/// Arguments of the echo client agent.
pub fn echo_client_args(
    bind: std::net::Ipv4Addr,
    server: SocketAddrV4,
    count: u32,
    interval: Duration,
) -> Vec<String> {
    [
        "agent",
        "echo-client",
        "--bind",
        &bind.to_string(),
        "--server",
        &server.to_string(),
        "--count",
        &count.to_string(),
        "--interval-ms",
        &interval.as_millis().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// Measures the round trip from a host behind `preset` (with `link` on its access link) to a public echo
/// server on an ideal link: with delay D each way, expect about 2 D.
pub fn measure_link(
    lab: &Lab,
    preset: NatPreset,
    link: LinkConditions,
    count: u32,
    interval: Duration,
) -> LabResult<RttReport> {
    let server = lab.add_public_host("echo", PublicHostOptions::default())?;
    let addr = SocketAddrV4::new(server.addr(), ECHO_PORT);
    lab.start_agent(
        &server.ns,
        "echo server",
        &echo_server_args(addr),
        Some(READY_LINE),
    )?;
    let site = lab.add_site("client", preset, link)?;
    let args = echo_client_args(site.host.addr(), addr, count, interval);
    let limit = interval * count + Duration::from_secs(15);
    let out = lab.run_agent(&site.host.ns, "echo client", &args, limit)?;
    serde_json::from_str(out.trim())
        .map_err(|e| LabError::agent("echo client", format!("unreadable report {out:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_presets_cycle_through_the_standard_set() {
        let p = mixed_presets(8);
        assert_eq!(p.len(), 8);
        assert_eq!(p[0], NatPreset::None);
        assert_eq!(p[6], NatPreset::None);
        assert_eq!(p[5], NatPreset::DOUBLE);
    }

    #[test]
    fn echo_arguments() {
        let a = echo_client_args(
            "10.0.0.2".parse().unwrap(),
            "198.51.100.10:7007".parse().unwrap(),
            5,
            Duration::from_millis(20),
        );
        assert_eq!(
            a.join(" "),
            "agent echo-client --bind 10.0.0.2 --server 198.51.100.10:7007 --count 5 --interval-ms 20"
        );
    }
}
