//! The operator's assignments: "pull this `rtmp://` URL into the mesh as this stream". The node runs each
//! with its pull relay while the engine runs, and stops it when it disappears from the coordinator's
//! answer. [`plan`] decides (plain code); [`run`] is the engine part that starts and stops the relays.
//!
//! The coordinator's answers are untrusted: the client already drops assignments with a bad id, name or URL;
//! here the URL is checked again (`rtmp://` with a host and a path) and an assignment never takes a name
//! the node's owner uses (a configured pull, or a stream published from OBS on this node).

use super::Coordinator;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use streamr_coordinator::api::{Assignment, validate_rtmp_url};
use streamr_edge::EdgeStats;
use streamr_media::{SourceKind, Streams};
use streamr_web::AssignmentStatus;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often running assignments are checked against local publishers that may have taken their name:
/// quicker than a pull relay reconnects (1 s), so that an assignment never takes a name back from OBS.
const RECHECK: Duration = Duration::from_millis(500);

/// What to change.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Assignments to start.
    pub start: Vec<Assignment>,
    /// Ids of running assignments to stop.
    pub stop: Vec<String>,
    /// Assignments not run, and why.
    pub refused: Vec<(Assignment, String)>,
}

/// Compares what runs with what the coordinator wants. `taken(name)` says why the node's owner uses a
/// stream name (it is then refused, or stopped if it runs).
pub fn plan(
    running: &BTreeMap<String, Assignment>,
    wanted: &[Assignment],
    taken: impl Fn(&str) -> Option<String>,
) -> Plan {
    let mut p = Plan::default();
    let mut names: Vec<&str> = Vec::new();
    let mut keep: Vec<&str> = Vec::new();
    for a in wanted {
        let why = if let Err(e) = validate_rtmp_url(&a.rtmp_url) {
            Some(e.to_string())
        } else if let Err(e) = streamr_edge::names::validate(&a.stream_name) {
            Some(e.to_string())
        } else if names.contains(&a.stream_name.as_str()) {
            Some("another assignment uses this stream name".to_string())
        } else {
            taken(&a.stream_name)
        };
        if let Some(why) = why {
            p.refused.push((a.clone(), why));
            continue;
        }
        names.push(&a.stream_name);
        match running.get(&a.id) {
            Some(r) if r == a => keep.push(&a.id),
            _ => p.start.push(a.clone()),
        }
    }
    p.stop = running
        .keys()
        .filter(|id| !keep.contains(&id.as_str()))
        .cloned()
        .collect();
    p
}

/// Why a stream name belongs to the node's owner, if it does.
fn taken_by_owner(streams: &Streams, own_pulls: &[String], name: &str) -> Option<String> {
    if own_pulls.iter().any(|p| p == name) {
        return Some("this node's own pull relay uses this stream name".into());
    }
    streams
        .get(name)
        .filter(|h| h.is_live() && h.snapshot().source == Some(SourceKind::Publisher))
        .map(|_| "a stream with this name is published on this node".into())
}

/// Runs the coordinator's assignments until `token` is cancelled (the engine stops). Each runs as the
/// node's own pull relays do: supervised (started again if it ends or panics), counted in `stats`.
pub async fn run(
    coordinator: Arc<Coordinator>,
    streams: Streams,
    stats: Arc<EdgeStats>,
    own_pulls: Vec<String>,
    token: CancellationToken,
) {
    let mut watch = coordinator.handle().watch();
    let mut running: BTreeMap<String, (Assignment, CancellationToken)> = BTreeMap::new();
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(RECHECK);
    loop {
        let wanted = watch.borrow_and_update().assignments.clone();
        let current: BTreeMap<String, Assignment> = running
            .iter()
            .map(|(id, (a, _))| (id.clone(), a.clone()))
            .collect();
        // A running assignment's own pull is the hub's source: only a local publisher takes its name.
        let p = plan(&current, &wanted, |name| {
            taken_by_owner(&streams, &own_pulls, name)
        });
        for id in &p.stop {
            if let Some((a, t)) = running.remove(id) {
                t.cancel();
                info!(id = %a.id, stream = %a.stream_name, "assignment stopped");
            }
        }
        for a in &p.start {
            let t = token.child_token();
            info!(id = %a.id, stream = %a.stream_name, url = %a.rtmp_url, "running the coordinator's assignment");
            let (name, url, s, st, tt) = (
                a.stream_name.clone(),
                a.rtmp_url.clone(),
                streams.clone(),
                stats.clone(),
                t.clone(),
            );
            tasks.spawn(async move {
                let restarts = st.clone();
                crate::node::supervise_relay(
                    "pull",
                    &name,
                    &restarts.relays.task_restarts,
                    tt,
                    |t| {
                        let (name, url, s, st) = (name.clone(), url.clone(), s.clone(), st.clone());
                        async move { streamr_edge::relay::pull(name, url, s, st, t).await }
                    },
                )
                .await;
            });
            running.insert(a.id.clone(), (a.clone(), t));
        }
        for (a, why) in &p.refused {
            if !coordinator.assignment_refused_before(&a.id, why) {
                warn!(id = %a.id, stream = %a.stream_name, reason = %why, "assignment refused");
            }
        }
        let mut view: Vec<AssignmentStatus> = running
            .values()
            .map(|(a, _)| status(a, "running"))
            .collect();
        view.extend(p.refused.iter().map(|(a, why)| status(a, why)));
        coordinator.set_assignments(view);
        tokio::select! {
            _ = token.cancelled() => break,
            r = watch.changed() => if r.is_err() { token.cancelled().await; break; },
            _ = tick.tick() => {}
            Some(_) = tasks.join_next() => {}
        }
    }
    for (_, (_, t)) in running {
        t.cancel();
    }
    while tasks.join_next().await.is_some() {}
    coordinator.set_assignments(
        watch
            .borrow()
            .assignments
            .iter()
            .map(|a| status(a, "stopped"))
            .collect(),
    );
}

fn status(a: &Assignment, state: &str) -> AssignmentStatus {
    AssignmentStatus {
        id: a.id.clone(),
        stream_name: a.stream_name.clone(),
        rtmp_url: a.rtmp_url.clone(),
        state: state.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(id: &str, name: &str, url: &str) -> Assignment {
        Assignment {
            id: id.into(),
            stream_name: name.into(),
            rtmp_url: url.into(),
        }
    }

    #[test]
    fn starts_new_stops_gone_and_restarts_changed() {
        let running: BTreeMap<String, Assignment> = [
            ("1".to_string(), a("1", "cam", "rtmp://h/live/cam")),
            ("2".to_string(), a("2", "old", "rtmp://h/live/old")),
            ("3".to_string(), a("3", "moved", "rtmp://h/live/x")),
        ]
        .into();
        let wanted = vec![
            a("1", "cam", "rtmp://h/live/cam"),
            a("3", "moved", "rtmp://other/live/x"),
            a("4", "new", "rtmp://h/live/new"),
        ];
        let p = plan(&running, &wanted, |_| None);
        assert_eq!(
            p.start.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["3", "4"]
        );
        assert_eq!(p.stop, ["2", "3"]);
        assert!(p.refused.is_empty());
    }

    #[test]
    fn refuses_bad_urls_bad_names_duplicates_and_the_owners_names() {
        let wanted = vec![
            a("1", "cam", "http://h/live/cam"),
            a("2", "cam", "file:///etc/passwd"),
            a("3", "../x", "rtmp://h/live/x"),
            a("4", "ok", "rtmp://h/live/ok"),
            a("5", "ok", "rtmp://h/live/ok2"),
            a("6", "mine", "rtmp://h/live/mine"),
        ];
        let p = plan(&BTreeMap::new(), &wanted, |n| {
            (n == "mine").then(|| "published here".to_string())
        });
        assert_eq!(
            p.start.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["4"]
        );
        let refused: Vec<&str> = p.refused.iter().map(|(a, _)| a.id.as_str()).collect();
        assert_eq!(refused, ["1", "2", "3", "5", "6"]);
        // A running assignment whose name a local publisher took is stopped.
        let running: BTreeMap<String, Assignment> =
            [("6".to_string(), a("6", "mine", "rtmp://h/live/mine"))].into();
        let p = plan(&running, &wanted[5..], |_| Some("published here".into()));
        assert_eq!(p.stop, ["6"]);
    }
}
