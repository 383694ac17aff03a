//! `netlab clean`: removes what crashed runs left behind, and nothing else.
//!
//! A leftover is a namespace named `nlabXXXX-...` whose run is no longer alive: its owner record in
//! `/run/netlab` is missing or names a process that has exited. A live run's namespaces are kept unless
//! `force` is given. Processes are stopped by the namespace they run in; the host namespace and its
//! interfaces are never touched.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::error::LabResult;
use super::names;
use super::sys;

/// One run's leftovers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Leftover {
    /// The run's prefix.
    pub prefix: String,
    /// Its namespaces.
    pub namespaces: Vec<String>,
    /// Whether its owner process is still running.
    pub owner_alive: bool,
}

/// Lists every lab run that has namespaces or an owner record on this machine.
pub fn find() -> LabResult<Vec<Leftover>> {
    let mut runs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ns in sys::netns_list()? {
        if let Some(p) = names::prefix_of(&ns) {
            runs.entry(p.to_string()).or_default().push(ns);
        }
    }
    if let Ok(dir) = std::fs::read_dir(names::OWNER_DIR) {
        for e in dir.filter_map(|e| e.ok()) {
            if let Some(name) = e.file_name().to_str().filter(|n| names::is_prefix(n)) {
                runs.entry(name.to_string()).or_default();
            }
        }
    }
    Ok(runs
        .into_iter()
        .map(|(prefix, namespaces)| {
            let owner_alive = std::fs::read_to_string(names::owner_file(&prefix))
                .map(|r| names::owner_alive(&r))
                .unwrap_or(false);
            Leftover {
                prefix,
                namespaces,
                owner_alive,
            }
        })
        .collect())
}

/// Removes leftovers (all runs with `force`, else only dead ones) and returns what was removed.
pub fn clean(force: bool, dry_run: bool) -> LabResult<Vec<Leftover>> {
    let mut removed = Vec::new();
    for run in find()? {
        if run.owner_alive && !force {
            continue;
        }
        if !dry_run {
            sys::stop_processes_in(&run.namespaces, Duration::from_secs(1));
            sys::delete_namespaces(&run.namespaces)?;
            let _ = std::fs::remove_file(names::owner_file(&run.prefix));
        }
        removed.push(run);
    }
    Ok(removed)
}
