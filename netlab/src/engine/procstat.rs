//! CPU time and resident memory of processes, read from /proc (the same numbers `top` shows).

/// Clock ticks per second of /proc/PID/stat times (USER_HZ; 100 on every Linux we run on).
const TICKS_PER_SEC: f64 = 100.0;

/// The fields of `/proc/PID/stat` after the command name (state is index 0, so field N of the line is
/// index N - 3), or None if `pid` is gone.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// CPU seconds (user + system) used so far by `pid`, or None if it is gone.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    // utime is field 14 of the line, stime 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// Seconds the threads of `pid` were ready to run but waited for a CPU (the run-queue delay the scheduler
/// keeps in `/proc/PID/task/*/schedstat`, summed over threads), or None if it is gone or the kernel keeps no
/// such figures. Where CPU time says how much a process did, this says how long it was kept from doing it:
/// a node that waits a tenth of its life is starved, whatever its own code does.
pub fn wait_secs(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ns: u64 = 0;
    let mut any = false;
    for t in tasks.flatten() {
        let Ok(line) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        if let Some(w) = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
        {
            ns += w;
            any = true;
        }
    }
    any.then(|| ns as f64 / 1e9)
}

/// The niceness of `pid`'s main thread (-20 to 19; `nice`/`renice`), or None if it is gone.
pub fn nice(pid: u32) -> Option<i8> {
    // nice is field 19 of the line.
    stat_fields(pid)?.get(16)?.parse().ok()
}

/// Seconds since `pid` started, or None if it is gone.
pub fn age_secs(pid: u32) -> Option<f64> {
    // starttime is field 22 of the line.
    let started: f64 = stat_fields(pid)?.get(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((uptime - started / TICKS_PER_SEC).max(0.0))
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// One KiB figure of `/proc/PID/status` (`VmRSS`, `RssAnon`, `RssFile`, ...), or None if `pid` is gone
/// or the kernel does not report it.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// `pid` and all its descendants (nginx runs a master and a worker).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        // Children hang under the thread that spawned them (a tokio worker, say), so every thread's list.
        let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{p}/task"))
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        for t in tasks {
            if let Ok(children) = std::fs::read_to_string(format!("/proc/{p}/task/{t}/children")) {
                all.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    all
}

/// CPU seconds of the process tree under `pid` (itself included), split into the processes whose
/// executable is named `name` (as `/proc/PID/comm` spells it: its first 15 bytes) and all the others.
pub fn tree_cpu_secs_split(pid: u32, name: &str) -> (f64, f64) {
    let name = &name.as_bytes()[..name.len().min(15)];
    let mut split = (0.0, 0.0);
    for p in tree(pid) {
        let Some(cpu) = cpu_secs(p) else { continue };
        let comm = std::fs::read(format!("/proc/{p}/comm")).unwrap_or_default();
        if comm.trim_ascii_end() == name {
            split.0 += cpu;
        } else {
            split.1 += cpu;
        }
    }
    split
}

/// CPU seconds of a process tree.
pub fn tree_cpu_secs(pid: u32) -> f64 {
    tree(pid).into_iter().filter_map(cpu_secs).sum()
}

/// RSS of a process tree in KiB.
pub fn tree_rss_kib(pid: u32) -> u64 {
    tree(pid).into_iter().filter_map(rss_kib).sum()
}

/// Busy and total CPU ticks of the whole machine (all cores) so far, from the first line of /proc/stat;
/// busy is everything but idle and iowait.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(stat.lines().next()?)
}

fn parse_machine_ticks(line: &str) -> Option<(u64, u64)> {
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.map_while(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Share of the whole machine (all cores) busy between two [`machine_ticks`] readings, percent.
pub fn busy_percent(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.1.checked_sub(before.1)?;
    let busy = after.0.checked_sub(before.0)?;
    (total > 0).then(|| busy as f64 * 100.0 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_secs(me).is_some());
        assert!(rss_kib(me).unwrap() > 100);
        assert!(tree(me).contains(&me));
        assert_eq!(cpu_secs(u32::MAX), None);
        assert!(wait_secs(me).is_some_and(|w| w >= 0.0));
        assert_eq!(wait_secs(u32::MAX), None);
        assert!(age_secs(me).is_some_and(|a| a >= 0.0));
        assert_eq!(age_secs(u32::MAX), None);
    }

    #[test]
    fn machine_ticks_from_proc_stat() {
        let (busy, total) = parse_machine_ticks("cpu  100 5 50 800 20 3 2 0 0 0").unwrap();
        assert_eq!((busy, total), (160, 980));
        assert_eq!(parse_machine_ticks("cpu0 1 2 3 4"), None);
        assert_eq!(busy_percent((100, 1000), (150, 1100)), Some(50.0));
        assert_eq!(busy_percent((100, 1000), (100, 1000)), None);
        assert!(machine_ticks().is_some());
    }
}
