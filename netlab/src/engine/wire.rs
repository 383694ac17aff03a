//! The userspace wire: pairs of TAP devices and a relay that forwards every Ethernet frame from one to the
//! other after a delay, with jitter and loss. It stands in for `tc netem` on kernels without it.
//!
//! One process serves every link of a lab (`netlab wires`, hidden): the lab starts it with the first
//! impaired link and sends it one request per line on standard input ([`HubRequest`], JSON), and the hub
//! answers each on standard output ([`HubReply`]). To open a link it creates both TAP devices inside the
//! namespace that owns one end (a short-lived thread enters that namespace), and the lab then moves the far
//! end into its namespace: a TAP file descriptor keeps working after its device changes namespace. The
//! devices are not persistent, so they vanish when the hub closes the link or exits; the hub exits when its
//! standard input closes (the lab holds the other end), so it never outlives the lab.
//!
//! Why one process: a process per link woke up for every frame in each direction, so a 50-site lab ran 50
//! wire processes competing with the nodes for the CPU, and every frame waited in the run queue twice per
//! hop. One thread that serves all links handles every frame that is ready at each wake-up.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tun::Tun;

use super::link::LinkConditions;

/// What the hub prints on standard output once it takes requests.
pub const READY_LINE: &str = "ready";

/// Frames waiting in one direction beyond this are dropped, like a full router queue.
const QUEUE_FRAMES: usize = 4096;

/// How much earlier than its release time a frame's timer is set (see `relay`).
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// Largest frame read from a TAP device (the lab uses MTU 1500; this leaves room for any header).
const FRAME_BUF: usize = 65_536;

/// Decides when each frame leaves the wire: drops a share of them and delays the rest by
/// `delay ± jitter`, never sooner than the frame before it, so jitter does not reorder. Within a burst
/// (frames closer together than the jitter range) frames therefore queue behind the slowest one, as they
/// would behind a real bottleneck.
#[derive(Debug)]
pub struct Schedule<R> {
    /// The conditions to apply.
    conditions: LinkConditions,
    /// Randomness for loss and jitter (seeded in tests).
    rng: R,
    /// When the previous frame leaves, as time since the wire started.
    last_release: Duration,
}

impl<R: Rng> Schedule<R> {
    /// A schedule for one direction of a link.
    pub fn new(conditions: LinkConditions, rng: R) -> Schedule<R> {
        Schedule {
            conditions,
            rng,
            last_release: Duration::ZERO,
        }
    }

    /// A frame arrived at `now`: returns when it leaves, or `None` if it is lost.
    pub fn admit(&mut self, now: Duration) -> Option<Duration> {
        let c = self.conditions;
        if c.loss_percent > 0.0 && self.rng.random::<f32>() * 100.0 < c.loss_percent {
            return None;
        }
        let delay_us = i64::from(c.delay_ms) * 1000;
        let jitter_us = i64::from(c.jitter_ms) * 1000;
        let offset = if jitter_us > 0 {
            self.rng.random_range(-jitter_us..=jitter_us)
        } else {
            0
        };
        let delay = Duration::from_micros((delay_us + offset).max(0) as u64);
        let release = (now + delay).max(self.last_release);
        self.last_release = release;
        Some(release)
    }
}

/// One wire: two TAP devices created in one namespace and the conditions between them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireConfig {
    /// Name of the first TAP device.
    pub tap_a: String,
    /// Name of the second TAP device.
    pub tap_b: String,
    /// Conditions applied in both directions.
    pub conditions: LinkConditions,
    /// Seed for loss and jitter, so a run can be repeated.
    pub seed: u64,
}

/// A request to the hub: one JSON object per line on its standard input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HubRequest {
    /// Create both TAP devices of `wire` in the namespace bound at `netns` (a `/run/netns/NAME` file) and
    /// start relaying between them.
    Open {
        /// The lab's number for the link, echoed in the reply.
        id: u64,
        /// Namespace file.
        netns: PathBuf,
        /// Devices and conditions.
        wire: WireConfig,
    },
    /// Stop relaying and close both devices (they vanish before the reply).
    Close {
        /// The link's number.
        id: u64,
    },
}

/// The hub's answer to one request: one JSON object per line on its standard output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HubReply {
    /// Both devices exist and frames flow.
    Opened {
        /// The link's number.
        id: u64,
    },
    /// The link's devices are gone (also the answer for a link the hub does not know).
    Closed {
        /// The link's number.
        id: u64,
    },
    /// The request could not be carried out.
    Failed {
        /// The link's number (0 when the request could not be read).
        id: u64,
        /// What went wrong.
        error: String,
    },
}

/// Serves links until standard input closes: prints [`READY_LINE`], then answers every request.
pub async fn run_hub() -> io::Result<()> {
    let (tx, mut requests) = mpsc::unbounded_channel::<String>();
    // Blocking reads on a plain thread: requests are rare, and the end of input is the signal to stop.
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    say_line(READY_LINE)?;
    let start = Instant::now();
    let mut links: HashMap<u64, JoinHandle<()>> = HashMap::new();
    while let Some(line) = requests.recv().await {
        let reply = match serde_json::from_str::<HubRequest>(&line) {
            Err(e) => HubReply::Failed {
                id: 0,
                error: format!("unreadable request {line:?}: {e}"),
            },
            Ok(HubRequest::Open { id, netns, wire }) => match open_pair(netns, &wire).await {
                Ok((a, b)) => {
                    if let Some(old) = links.insert(id, tokio::spawn(link(a, b, wire, start))) {
                        old.abort();
                    }
                    HubReply::Opened { id }
                }
                Err(e) => HubReply::Failed {
                    id,
                    error: e.to_string(),
                },
            },
            Ok(HubRequest::Close { id }) => {
                if let Some(task) = links.remove(&id) {
                    task.abort();
                    // Resolves once the task's future, and with it both devices, has been dropped.
                    let _ = task.await;
                }
                HubReply::Closed { id }
            }
        };
        say_line(&serde_json::to_string(&reply).map_err(io::Error::other)?)?;
    }
    Ok(())
}

fn say_line(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Creates both TAP devices of `wire` inside the namespace at `netns`. A TAP device is created in the
/// namespace of the thread that opens it, so a thread of its own enters the namespace and then ends (a
/// thread of tokio's blocking pool would stay in it for the next task).
async fn open_pair(netns: PathBuf, wire: &WireConfig) -> io::Result<(Tun, Tun)> {
    let (tx, rx) = oneshot::channel();
    let handle = tokio::runtime::Handle::current();
    let (tap_a, tap_b) = (wire.tap_a.clone(), wire.tap_b.clone());
    std::thread::spawn(move || {
        let result = (|| {
            let ns = std::fs::File::open(&netns).map_err(|e| {
                io::Error::other(format!("cannot open namespace {}: {e}", netns.display()))
            })?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                io::Error::other(format!("cannot enter namespace {}: {e}", netns.display()))
            })?;
            // The devices register with the hub's reactor.
            let _runtime = handle.enter();
            Ok((open_tap(&tap_a)?, open_tap(&tap_b)?))
        })();
        let _ = tx.send(result);
    });
    rx.await
        .map_err(|_| io::Error::other("the thread creating TAP devices died"))?
}

/// Relays both ways between `a` and `b` until a device fails (it was removed with its namespace).
async fn link(a: Tun, b: Tun, wire: WireConfig, start: Instant) {
    let schedule = |seed| Schedule::new(wire.conditions, StdRng::seed_from_u64(seed));
    let ab = relay(&a, &b, schedule(wire.seed), start);
    let ba = relay(&b, &a, schedule(wire.seed ^ 0x5eed), start);
    tokio::select! {
        _ = ab => {}
        _ = ba => {}
    }
}

fn open_tap(name: &str) -> io::Result<Tun> {
    let mut taps = Tun::builder()
        .name(name)
        .tap()
        .mtu(1500)
        .build()
        .map_err(|e| io::Error::other(format!("cannot create TAP device {name}: {e}")))?;
    taps.pop()
        .ok_or_else(|| io::Error::other(format!("no queue for TAP device {name}")))
}

/// Forwards frames from `src` to `dst` according to `schedule`: a frame waits in a queue until its release
/// time while later ones are read, and each wake-up of the timer sends every frame that is due.
async fn relay(
    src: &Tun,
    dst: &Tun,
    mut schedule: Schedule<StdRng>,
    start: Instant,
) -> io::Result<()> {
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; FRAME_BUF];
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        // tokio's timer rounds a deadline up to its next millisecond tick and the reactor wakes up to a
        // millisecond later still; aiming one tick early centres the real delay on the asked one.
        if let Some((at, _)) = queue.front() {
            let aim = at.checked_sub(TIMER_SLACK).unwrap_or(*at);
            if timer.deadline() != aim {
                timer.as_mut().reset(aim);
            }
        }
        tokio::select! {
            biased;
            () = &mut timer, if !queue.is_empty() => {
                let due = Instant::now() + TIMER_SLACK;
                while queue.front().is_some_and(|(at, _)| *at <= due) {
                    let Some((_, frame)) = queue.pop_front() else { break };
                    // A device that is down (during set-up or teardown) refuses frames; a real wire loses
                    // them too.
                    let _ = dst.send(&frame).await;
                }
            }
            read = src.recv(&mut buf) => {
                let n = read?;
                // A full queue drops the frame (tail drop), like a router's.
                if let Some(release) = schedule.admit(Instant::now() - start)
                    && queue.len() < QUEUE_FRAMES
                {
                    queue.push_back((start + release, buf[..n].to_vec()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fixed_delay_is_exact() {
        let mut s = Schedule::new(LinkConditions::delay(25), StdRng::seed_from_u64(1));
        assert_eq!(s.admit(ms(0)), Some(ms(25)));
        assert_eq!(s.admit(ms(10)), Some(ms(35)));
    }

    #[test]
    fn jitter_stays_in_range_and_never_reorders() {
        let c = LinkConditions {
            delay_ms: 20,
            jitter_ms: 10,
            loss_percent: 0.0,
        };
        let mut s = Schedule::new(c, StdRng::seed_from_u64(7));
        let mut last = Duration::ZERO;
        let mut early = 0;
        // Frames 25 ms apart: farther apart than the jitter range, so order never holds one back.
        for i in 0..1000u64 {
            let now = Duration::from_millis(i * 25);
            let at = s.admit(now).unwrap();
            assert!(at >= last, "frame {i} would overtake the one before it");
            assert!(at <= now + ms(30));
            if at < now + ms(20) {
                early += 1;
            }
            last = at;
        }
        // Some frames really were sped up by the jitter (not only held back by ordering).
        assert!(early > 300, "{early}");
    }

    #[test]
    fn a_burst_keeps_its_order() {
        let c = LinkConditions {
            delay_ms: 20,
            jitter_ms: 10,
            loss_percent: 0.0,
        };
        let mut s = Schedule::new(c, StdRng::seed_from_u64(9));
        let times: Vec<Duration> = (0..100)
            .map(|i| s.admit(Duration::from_micros(i * 100)).unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn loss_drops_about_the_asked_share() {
        let c = LinkConditions {
            delay_ms: 0,
            jitter_ms: 0,
            loss_percent: 10.0,
        };
        let mut s = Schedule::new(c, StdRng::seed_from_u64(3));
        let lost = (0..10_000)
            .filter(|_| s.admit(Duration::ZERO).is_none())
            .count();
        assert!((800..1200).contains(&lost), "{lost}");
        let mut none = Schedule::new(LinkConditions::IDEAL, StdRng::seed_from_u64(3));
        assert!((0..1000).all(|_| none.admit(Duration::ZERO).is_some()));
    }
}
