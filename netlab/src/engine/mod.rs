//! The lab engine: network namespaces, the routed "internet", NAT routers and their nftables rulesets,
//! access links with delay, jitter and loss (netem or the userspace wire), addresses and names, the host
//! commands it runs (`ip`, `nft`, `sysctl`), the contract with the agents it starts, and the cleanup of
//! crashed runs. Everything else in netlab builds on it; it imports nothing from the rest of netlab.

pub mod addr;
pub mod agent;
pub mod clean;
mod error;
pub mod lab;
pub mod link;
pub mod names;
pub mod nat;
pub mod procstat;
pub mod stun_server;
pub mod sys;
pub mod wire;
pub mod wiring;

pub use error::{CommandFailed, LabError, LabResult};
pub use lab::{
    Carrier, Host, Lab, LabConfig, PublicHostOptions, Router, Site, SiteSpec, TeardownReport,
    teardown_all,
};
pub use link::{Impairment, LinkConditions};
pub use nat::{Behaviour, Family, Filtering, Mapping, NatPreset, NatType};
