//! A node's relay dies: the reservation moves to another relay-capable peer it knows, within seconds.
//!
//! Four real nodes on loopback (where AutoNAT confirms addresses, so every node offers a relay): three
//! relays and the node under test, which bootstraps from all three and keeps a reservation. The relay it
//! reserved on is killed (SIGKILL, as a crash or a pulled plug: no goodbye on the wire); the test waits for
//! a reservation on another one and prints how long that took.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_dead_relay_is_replaced_within_seconds() {
    let _serial = serial().await;
    let first = TestNode::start(&[]).await;
    let boot = first.mesh_addr();
    let mut relays = vec![first];
    for _ in 0..2 {
        relays.push(TestNode::start(&["--bootstrap", &boot]).await);
    }
    let addrs: Vec<String> = relays.iter().map(|r| r.mesh_addr()).collect();
    let mut args: Vec<&str> = Vec::new();
    for a in &addrs {
        args.extend(["--bootstrap", a.as_str()]);
    }
    let node = TestNode::start(&args).await;
    let reserved = || node.status().nat.relays;
    assert!(
        wait_until(Duration::from_secs(60), || !reserved().is_empty()).await,
        "no reservation: {:?}\n{}",
        node.status().nat,
        node.log_text()
    );
    let dead = reserved()[0].clone();
    let victim = relays
        .iter_mut()
        .find(|r| r.peer_id == dead)
        .expect("the reservation is on one of our relays");
    victim.kill().await;
    let killed = Instant::now();
    let replaced = wait_until(Duration::from_secs(45), || {
        let r = reserved();
        !r.is_empty() && !r.contains(&dead)
    })
    .await;
    let took = killed.elapsed();
    eprintln!(
        "relay killed; reservation on another relay after {:.1} s: {:?}",
        took.as_secs_f64(),
        reserved()
    );
    assert!(
        replaced,
        "the dead relay was not replaced: {:?}\n{}",
        node.status().nat,
        node.log_text()
    );
    // Our addresses through the dead relay go with it: neither listened on nor advertised.
    let through_dead = format!("/p2p/{dead}/p2p-circuit");
    let stale = || {
        let s = node.status();
        s.listen_addrs
            .iter()
            .chain(s.external_addrs.iter())
            .filter(|a| a.contains(&through_dead))
            .cloned()
            .collect::<Vec<String>>()
    };
    assert!(
        wait_until(Duration::from_secs(20), || stale().is_empty()).await,
        "addresses through the dead relay are still ours: {:?}\n{}",
        stale(),
        node.log_text()
    );
}
