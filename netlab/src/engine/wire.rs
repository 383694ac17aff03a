//! The userspace wire: two TAP devices and a relay that forwards every Ethernet frame from one to the other
//! after a delay, with jitter and loss. It stands in for `tc netem` on kernels without it.
//!
//! The lab runs it as a child process (`netlab wire`, hidden) inside the namespace that owns one end of the
//! link. The process creates both TAP devices there, prints [`READY_LINE`], and the lab then moves the far
//! end into its namespace: a TAP file descriptor keeps working after its device changes namespace. The
//! devices are not persistent, so they vanish with the process; the process ends when its standard input
//! closes (the lab holds the other end), so it never outlives the lab.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tun::Tun;

use super::link::LinkConditions;

/// What the wire prints on standard output once both TAP devices exist.
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

/// One wire: two TAP devices created in the current namespace and the conditions between them.
#[derive(Debug, Clone)]
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

/// Creates the TAP devices, announces [`READY_LINE`], and relays until standard input closes.
pub async fn run(config: WireConfig) -> io::Result<()> {
    let a = Arc::new(open_tap(&config.tap_a)?);
    let b = Arc::new(open_tap(&config.tap_b)?);
    {
        let mut out = io::stdout().lock();
        writeln!(out, "{READY_LINE}")?;
        out.flush()?;
    }
    let start = Instant::now();
    let ab = relay(
        a.clone(),
        b.clone(),
        Schedule::new(config.conditions, StdRng::seed_from_u64(config.seed)),
        start,
    );
    let ba = relay(
        b,
        a,
        Schedule::new(
            config.conditions,
            StdRng::seed_from_u64(config.seed ^ 0x5eed),
        ),
        start,
    );
    tokio::select! {
        r = ab => r,
        r = ba => r,
        () = stdin_closed() => Ok(()),
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

/// Forwards frames from `src` to `dst` according to `schedule`. Two tasks, so a frame waiting for its
/// release time never stops the next one from being read.
async fn relay(
    src: Arc<Tun>,
    dst: Arc<Tun>,
    mut schedule: Schedule<StdRng>,
    start: Instant,
) -> io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_FRAMES);
    let writer = tokio::spawn(async move {
        while let Some((at, frame)) = rx.recv().await {
            // tokio's timer rounds a deadline up to its next millisecond tick and the reactor wakes up to a
            // millisecond later still; aiming one tick early centres the real delay on the asked one.
            tokio::time::sleep_until(at.checked_sub(TIMER_SLACK).unwrap_or(at)).await;
            // A device that is down (during set-up or teardown) refuses frames; a real wire loses them too.
            let _ = dst.send(&frame).await;
        }
    });
    let mut buf = vec![0u8; FRAME_BUF];
    let result = loop {
        let n = match src.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        let now = Instant::now();
        if let Some(release) = schedule.admit(now - start) {
            // A full queue drops the frame (tail drop) instead of blocking the reader.
            let _ = tx.try_send((start + release, buf[..n].to_vec()));
        }
    };
    writer.abort();
    result
}

/// Resolves when standard input reaches end of file: the lab that started us has let go or died.
pub async fn stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // Blocking read on a plain thread: the wire needs no async stdin for one end-of-file.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    let _ = rx.await;
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
