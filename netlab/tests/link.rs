//! Link conditions through the real binary: 25 ms each way gives a round trip of about 50 ms.

mod common;

#[test]
fn delay_each_way_adds_up_to_the_round_trip() {
    if !common::lab_available("link") {
        return;
    }
    let json = common::temp_file("link.json");
    let out = common::run(&[
        "link",
        "--delay-ms",
        "25",
        "--count",
        "30",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let r = common::read_json(&json);
    let median = r["median_ms"].as_f64().unwrap();
    assert!(
        (48.0..58.0).contains(&median),
        "median RTT {median} ms for 25 ms each way"
    );
    assert_eq!(r["loss_percent"].as_f64().unwrap(), 0.0);
}

#[test]
fn loss_is_applied_each_way() {
    if !common::lab_available("link loss") {
        return;
    }
    let json = common::temp_file("link-loss.json");
    let args = [
        "link",
        "--delay-ms",
        "1",
        "--loss-percent",
        "20",
        "--count",
        "300",
        "--interval-ms",
        "5",
        "--json",
        json.to_str().unwrap(),
    ];
    let out = common::run(&args);
    assert!(out.status.success());
    let loss = common::read_json(&json)["loss_percent"].as_f64().unwrap();
    // 20% each way loses 36% of round trips; 300 samples keep it well inside this band.
    assert!((22.0..50.0).contains(&loss), "{loss}");
}

/// TAP devices in namespace `ns` (the far ends of impaired links live there).
fn taps_in(ns: &str) -> usize {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "tuntap", "show"])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Child processes of this test process whose command line names the wire hub.
fn wire_hubs() -> usize {
    wire_hub_stats().len()
}

/// Whether a process may run on the real-time scheduler here (root without CAP_SYS_NICE, or a cgroup
/// with no real-time budget, may not).
fn real_time_allowed() -> bool {
    std::process::Command::new("chrt")
        .args(["--fifo", "1", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// The fields after the command name in `/proc/PID/stat` of each wire hub this test process started.
fn wire_hub_stats() -> Vec<Vec<String>> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<String> = stat
                .rsplit_once(") ")
                .map(|(_, rest)| rest.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            (fields.get(1) == Some(&me) && String::from_utf8_lossy(&cmdline).contains("wires"))
                .then_some(fields)
        })
        .collect()
}

/// One wire process serves every impaired link of a lab; removing a site closes its link (its device at
/// the far end vanishes) while the others keep working, and a later site gets a link of its own.
#[test]
fn one_wire_process_serves_every_link_and_a_removed_site_takes_its_link_along() {
    use std::time::Duration;
    use streamr_netlab::engine::link::ImpairmentChoice;
    use streamr_netlab::proof::scale::measure_link;
    use streamr_netlab::{Impairment, Lab, LabConfig, LinkConditions, NatPreset};
    if !common::lab_available("link") {
        return;
    }
    let lab = Lab::new(LabConfig {
        agent_exe: Some(env!("CARGO_BIN_EXE_netlab").into()),
        impairment: ImpairmentChoice::Forced(Impairment::Wire),
        ..LabConfig::default()
    })
    .unwrap();
    let inet = lab.internet_ns();
    let delay = LinkConditions::delay(20);
    let a = lab.add_site("a", NatPreset::None, delay).unwrap();
    let _b = lab.add_site("b", NatPreset::None, delay).unwrap();
    assert_eq!(taps_in(&inet), 2);
    assert_eq!(wire_hubs(), 1);
    // The wires stand for the internet: they run before the nodes they carry (SCHED_FIFO, priority 1;
    // /proc/PID/stat fields 40 and 41, here counted from the state, field 3), wherever this machine lets
    // a process have a real-time priority at all.
    let hub = &wire_hub_stats()[0];
    if real_time_allowed() {
        assert_eq!(
            (hub[37].as_str(), hub[38].as_str()),
            ("1", "1"),
            "the wire hub's real-time priority and policy (SCHED_FIFO = 1)"
        );
    } else {
        eprintln!("not checking the wire hub's priority: `chrt --fifo 1 true` is refused here");
    }
    lab.remove_site(&a).unwrap();
    assert_eq!(taps_in(&inet), 1, "the removed site's link is closed");
    // A new site (an echo client 20 ms from the internet, its server on an ideal link) gets a link of
    // its own from the same process, and its echoes take the whole round trip.
    let rtt = measure_link(&lab, NatPreset::None, delay, 5, Duration::from_millis(50)).unwrap();
    assert_eq!(rtt.received, 5);
    let min = rtt.min_ms().unwrap();
    assert!(min >= 39.0, "round trip {min} ms over a 20 ms link");
    assert_eq!(taps_in(&inet), 2);
    assert_eq!(wire_hubs(), 1);
    lab.shutdown().unwrap();
    assert_eq!(wire_hubs(), 0);
}
