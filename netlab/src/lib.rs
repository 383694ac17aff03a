//! streamr-netlab: a NAT laboratory in Linux network namespaces.
//!
//! The lab builds an "internet" segment (documentation address ranges only), public hosts, and NAT sites
//! whose routers are real nftables NATs of every classic type (full cone, restricted cone, port-restricted
//! cone, symmetric, double NAT), with delay, jitter and loss on access links. It proves itself with two
//! probes that need no node: [`classify`] measures each preset's mapping and filtering, and [`matrix`]
//! punches UDP holes between every pair of presets and compares with what RFC 4787 predicts.
//!
//! The engine ([`Lab`]) is what scenario runners build on: add sites, start processes in their
//! namespaces with [`Host::command`], read results, and let the lab tear everything down.
//!
//! On top of it, the node-facing half: the probe publisher and player ([`probe::rtmp`]), the
//! `streamr-node` driver ([`node`]), scenario files ([`scenario`]) and their runner ([`runner`], results in
//! [`results`]), and the benches ([`bench`]).
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

pub mod addr;
pub mod bench;
pub mod classify;
pub mod clean;
mod error;
pub mod lab;
pub mod link;
pub mod matrix;
pub mod names;
pub mod nat;
pub mod node;
pub mod probe;
pub mod report;
pub mod results;
pub mod runner;
pub mod scale;
pub mod scenario;
pub mod sys;
pub mod wire;
pub mod wiring;

pub use error::{CommandFailed, LabError, LabResult};
pub use lab::{
    Carrier, Host, Lab, LabConfig, PublicHostOptions, Router, Site, SiteSpec, TeardownReport,
    teardown_all,
};
pub use link::{Impairment, LinkConditions};
pub use nat::{Behaviour, Filtering, Mapping, NatPreset, NatType};
