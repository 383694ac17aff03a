//! Scenarios with real nodes: a scenario file ([`file`](mod@file): its schema, parsing and expansion into cases),
//! the runner that plays every case and trial in a fresh lab ([`runner`]), and what a run measured with
//! its reports ([`results`]).

pub mod file;
pub mod results;
pub mod runner;

pub use file::{Scenario, ScenarioError, load, parse};
