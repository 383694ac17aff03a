//! The proofs: the lab measured against what it is defined to be, with probes and no node. [`classify`]
//! measures each NAT preset's mapping and filtering, [`punch`] hole-punches between every pair of presets
//! and compares with what RFC 4787 predicts, and [`scale`] measures what many sites cost to build and
//! what an impaired link really does.

pub mod classify;
pub mod punch;
pub mod scale;
