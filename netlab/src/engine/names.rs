//! Names of everything a lab creates, and the ownership record that lets `netlab clean` tell a crashed run's
//! leftovers from a lab that is still running.
//!
//! Every namespace of a run is called `nlabXXXX-...` where `XXXX` is the run's random hex id. Interfaces
//! live inside those namespaces, so their short fixed names (`wan`, `lan`, `eth0`, `r12`) never meet the
//! host's. A run also writes `/run/netlab/nlabXXXX` with its pid and process start time.

use std::path::PathBuf;

use rand::Rng;

/// Every lab prefix starts with this.
pub const STEM: &str = "nlab";
/// Hex digits after the stem.
const ID_DIGITS: usize = 4;
/// Where runs record their owner process.
pub const OWNER_DIR: &str = "/run/netlab";
/// Longest label kept in a namespace name (the rest is cut off).
const MAX_LABEL: usize = 20;

/// A fresh random prefix like `nlab3fa2`.
pub fn random_prefix() -> String {
    let id: u16 = rand::rng().random();
    format!("{STEM}{id:04x}")
}

/// True for a string of the form `nlabXXXX` (four lowercase hex digits).
pub fn is_prefix(s: &str) -> bool {
    s.len() == STEM.len() + ID_DIGITS
        && s.starts_with(STEM)
        && s[STEM.len()..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// The lab prefix of a namespace name, if it is one of the lab's (`nlabXXXX-anything`).
pub fn prefix_of(ns: &str) -> Option<&str> {
    let (prefix, rest) = ns.split_at_checked(STEM.len() + ID_DIGITS)?;
    (is_prefix(prefix) && rest.starts_with('-')).then_some(prefix)
}

/// A caller's label made safe for a namespace name: lowercase letters, digits and `-`, at most 20.
pub fn sanitize_label(label: &str) -> String {
    let mut s: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(MAX_LABEL)
        .collect();
    while s.ends_with('-') {
        s.pop();
    }
    if s.is_empty() { "x".to_string() } else { s }
}

/// The file recording which process owns the lab `prefix`.
pub fn owner_file(prefix: &str) -> PathBuf {
    PathBuf::from(OWNER_DIR).join(prefix)
}

/// The owner record of the current process: pid and start time (so a reused pid is not mistaken for it).
pub fn own_owner_record() -> String {
    let pid = std::process::id();
    format!("{pid} {}\n", process_start_time(pid).unwrap_or(0))
}

/// Start time of a process in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) may contain spaces and parentheses, so
/// fields are counted after its closing parenthesis.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process named in an owner record is still running.
pub fn owner_alive(record: &str) -> bool {
    let mut parts = record.split_whitespace();
    let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    process_start_time(pid) == Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_recognised_exactly() {
        let p = random_prefix();
        assert!(is_prefix(&p), "{p}");
        assert_eq!(prefix_of(&format!("{p}-inet")), Some(p.as_str()));
        assert_eq!(prefix_of("nlab00ff-rt3-home"), Some("nlab00ff"));
        assert_eq!(prefix_of("nlab00ff"), None);
        assert_eq!(prefix_of("nlab00FF-x"), None);
        assert_eq!(prefix_of("nlab0g00-x"), None);
        assert_eq!(prefix_of("mynlab0000-x"), None);
        assert_eq!(prefix_of("docker0"), None);
        assert_eq!(prefix_of("nlab"), None);
    }

    #[test]
    fn labels_become_safe() {
        assert_eq!(sanitize_label("Alice's Home"), "alice-s-home");
        assert_eq!(sanitize_label("!!!"), "x");
        assert_eq!(
            sanitize_label("a-very-long-label-that-goes-on"),
            "a-very-long-label-th"
        );
    }

    #[test]
    fn start_time_is_read_after_the_command_name() {
        let stat = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn own_record_is_alive_and_others_are_not() {
        assert!(owner_alive(&own_owner_record()));
        assert!(!owner_alive("not a record"));
        let pid = std::process::id();
        assert!(!owner_alive(&format!("{pid} 1")));
    }
}
