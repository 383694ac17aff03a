//! A UDP echo to measure what a link really does: round-trip time and loss. The lab has no `ping`
//! dependency, and a UDP echo crosses the NATs the same way the probes do.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::proto::Message;

/// Echoes every [`Message::Echo`] back to its sender, until the process stops.
pub fn serve(bind: SocketAddrV4, ready: impl FnOnce()) -> io::Result<()> {
    let sock = UdpSocket::bind(bind)?;
    ready();
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        if let Some(Message::Echo { .. }) = Message::decode(&buf[..n]) {
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

/// Round trips measured by [`measure`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RttReport {
    /// Echo requests sent.
    pub sent: u32,
    /// Replies received.
    pub received: u32,
    /// Round-trip times in milliseconds, in order of sending.
    pub rtts_ms: Vec<f64>,
}

impl RttReport {
    /// The median round trip, if any reply came back.
    pub fn median_ms(&self) -> Option<f64> {
        let mut v = self.rtts_ms.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }

    /// The smallest round trip.
    pub fn min_ms(&self) -> Option<f64> {
        self.rtts_ms.iter().copied().min_by(f64::total_cmp)
    }

    /// The largest round trip.
    pub fn max_ms(&self) -> Option<f64> {
        self.rtts_ms.iter().copied().max_by(f64::total_cmp)
    }

    /// Share of requests without a reply, in percent.
    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * f64::from(self.sent - self.received) / f64::from(self.sent)
        }
    }
}

/// Sends `count` echo requests to `server`, one every `interval`, and waits up to `wait` for the last reply.
pub fn measure(
    bind_ip: std::net::Ipv4Addr,
    server: SocketAddrV4,
    count: u32,
    interval: Duration,
    wait: Duration,
) -> io::Result<RttReport> {
    let sock = UdpSocket::bind(SocketAddrV4::new(bind_ip, 0))?;
    let mut sent_at: Vec<Instant> = Vec::with_capacity(count as usize);
    let mut rtts: Vec<Option<f64>> = vec![None; count as usize];
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let last_send = start + interval * count.saturating_sub(1);
    let deadline = last_send + wait;
    loop {
        let now = Instant::now();
        let due = sent_at.len() as u32;
        if due < count && now >= start + interval * due {
            sock.send_to(&Message::Echo { seq: due }.encode(), server)?;
            sent_at.push(Instant::now());
            continue;
        }
        if now >= deadline || (due == count && rtts.iter().all(Option::is_some)) {
            break;
        }
        let next = if due < count {
            start + interval * due
        } else {
            deadline
        };
        sock.set_read_timeout(Some(
            next.saturating_duration_since(now)
                .max(Duration::from_millis(1)),
        ))?;
        match sock.recv_from(&mut buf) {
            Ok((n, SocketAddr::V4(from))) if from == server => {
                if let Some(Message::Echo { seq }) = Message::decode(&buf[..n])
                    && let (Some(at), Some(slot)) =
                        (sent_at.get(seq as usize), rtts.get_mut(seq as usize))
                {
                    slot.get_or_insert(at.elapsed().as_secs_f64() * 1000.0);
                }
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
    }
    let rtts_ms: Vec<f64> = rtts.into_iter().flatten().collect();
    Ok(RttReport {
        sent: sent_at.len() as u32,
        received: rtts_ms.len() as u32,
        rtts_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_statistics() {
        let r = RttReport {
            sent: 4,
            received: 3,
            rtts_ms: vec![50.0, 52.0, 51.0],
        };
        assert_eq!(r.median_ms(), Some(51.0));
        assert_eq!(r.min_ms(), Some(50.0));
        assert_eq!(r.max_ms(), Some(52.0));
        assert_eq!(r.loss_percent(), 25.0);
        let empty = RttReport {
            sent: 0,
            received: 0,
            rtts_ms: vec![],
        };
        assert_eq!(empty.median_ms(), None);
        assert_eq!(empty.loss_percent(), 0.0);
    }

    #[test]
    fn echo_over_loopback() {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = SocketAddrV4::new("127.0.0.1".parse().unwrap(), port);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || serve(server, move || tx.send(()).unwrap()));
        rx.recv_timeout(Duration::from_secs(2)).unwrap();
        let r = measure(
            "127.0.0.1".parse().unwrap(),
            server,
            5,
            Duration::from_millis(5),
            Duration::from_millis(500),
        )
        .unwrap();
        assert_eq!((r.sent, r.received), (5, 5));
        assert!(r.max_ms().unwrap() < 100.0);
    }
}
