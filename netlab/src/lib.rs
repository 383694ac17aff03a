//! streamr-netlab: a NAT laboratory in Linux network namespaces.
//!
//! The lab builds an "internet" segment (documentation address ranges only), public hosts, and NAT sites
//! whose routers are real nftables NATs of every classic type (full cone, restricted cone, port-restricted
//! cone, symmetric, double NAT), with delay, jitter and loss on access links. It proves itself with probes
//! that need no node: [`proof::classify`] measures each preset's mapping and filtering, and
//! [`proof::punch`] punches UDP holes between every pair of presets and compares with what RFC 4787
//! predicts.
//!
//! The folders, each depending only on those listed before it:
//! - [`engine`]: the lab engine ([`Lab`]): namespaces, links, the userspace wire, NAT rulesets, addresses,
//!   names, host commands, cleanup. Scenario runners build on it: add sites, start processes in their
//!   namespaces with [`Host::command`], read results, and let the lab tear everything down.
//! - [`report`]: Markdown/text tables and SVG grids (no netlab imports).
//! - [`probe`]: the programs that run inside the lab as `netlab agent ...` (STUN, punch, echo, and the
//!   RTMP probe publisher and player).
//! - [`node`]: `streamr-node` driven from outside: the one launcher (also used by the root package's
//!   integration tests) and its status API read into the web crate's types.
//! - [`proof`]: classify, punch and scale, the lab measured against its definitions.
//! - [`scenario`]: scenario files, their runner and their results; [`bench`](mod@bench): benchmarks against a
//!   baseline measured in the same run.
//!
//! The command line (`src/cmd/`, in the binary) sits on top of all of them.
//!
//! ```no_run
//! use streamr_netlab::{Lab, LabConfig, LinkConditions, NatPreset, NatType, PublicHostOptions};
//! let lab = Lab::new(LabConfig::default())?;
//! let relay = lab.add_public_host("relay", PublicHostOptions::default())?;
//! let home = lab.add_site("alice", NatPreset::Single(NatType::Symmetric), LinkConditions::delay(25))?;
//! let child = home.host.command("streamr-node").arg("run").spawn();
//! // ... the lab stops `child` and deletes every namespace when it is dropped or shut down.
//! lab.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bench;
pub mod engine;
pub mod node;
pub mod probe;
pub mod proof;
pub mod report;
pub mod scenario;

pub use engine::{
    Behaviour, Carrier, CommandFailed, Filtering, Host, Impairment, Lab, LabConfig, LabError,
    LabResult, LinkConditions, Mapping, NatPreset, NatType, PublicHostOptions, Router, Site,
    SiteSpec, TeardownReport, teardown_all,
};
