//! Raw UDP hole punching: a rendezvous that introduces two peers by their observed addresses (what a
//! signalling server does), and the peer that punches by simultaneous open.
//!
//! A peer registers with the rendezvous from the socket it will punch with, so the NAT mapping the
//! rendezvous observes is the one an endpoint-independent NAT reuses towards the other peer. After the
//! introduction (and an optional start delay, for staggered starts) the peer sends probes to the other
//! peer's observed address every few milliseconds and answers every probe to the address the probe came
//! from. With `follow_source` it also adds that address to the ones it probes: this is what lets a
//! symmetric NAT's new port get through to a cone peer (QUIC servers behave this way).
//! A side is *confirmed* when one of its own probes has been acknowledged.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::proto::{Message, Role};

/// How often a peer registers again while it waits for its introduction.
const REGISTER_INTERVAL: Duration = Duration::from_millis(200);
/// Sessions a rendezvous remembers before it forgets the oldest ones.
const MAX_SESSIONS: usize = 10_000;

/// Runs the rendezvous on `bind` until the process is stopped; calls `ready` once bound.
pub fn serve_rendezvous(bind: SocketAddr, ready: impl FnOnce()) -> io::Result<()> {
    let sock = UdpSocket::bind(bind)?;
    ready();
    let mut sessions: HashMap<String, HashMap<Role, SocketAddr>> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        let Some(Message::Register { session, role }) = Message::decode(&buf[..n]) else {
            continue;
        };
        if !sessions.contains_key(&session) {
            if order.len() >= MAX_SESSIONS {
                let old = order.remove(0);
                sessions.remove(&old);
            }
            order.push(session.clone());
        }
        let peers = sessions.entry(session.clone()).or_default();
        peers.insert(role, from);
        if let (Some(&me), Some(&other)) = (peers.get(&role), peers.get(&role.other())) {
            // Both are known: introduce both now (a simultaneous start), and again to whoever registers
            // again (a lost introduction).
            let _ = sock.send_to(
                &Message::Introduce {
                    session: session.clone(),
                    peer: other,
                    observed: me,
                }
                .encode(),
                me,
            );
            let _ = sock.send_to(
                &Message::Introduce {
                    session,
                    peer: me,
                    observed: other,
                }
                .encode(),
                other,
            );
        }
    }
}

/// How a peer punches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    /// Local address of the punching socket.
    pub bind: SocketAddr,
    /// The rendezvous.
    pub rendezvous: SocketAddr,
    /// Pairs this peer with the other one.
    pub session: String,
    /// This peer's role.
    pub role: Role,
    /// Wait this long after the introduction before punching (staggered start).
    pub start_delay: Duration,
    /// Give up this long after starting to punch.
    pub timeout: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Also probe addresses that probes arrived from.
    pub follow_source: bool,
}

/// What a peer reports (as JSON on standard output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    /// The peer's role.
    pub role: Role,
    /// Its own address as the rendezvous saw it.
    pub observed: Option<SocketAddr>,
    /// The other peer's address as the rendezvous saw it (where probes went first).
    pub advertised_peer: Option<SocketAddr>,
    /// One of our probes was acknowledged: the path works both ways.
    pub confirmed: bool,
    /// Milliseconds from the start of punching to the first acknowledgement.
    pub time_to_confirm_ms: Option<u64>,
    /// The address whose acknowledgement confirmed us.
    pub confirmed_by: Option<SocketAddr>,
    /// Addresses that sent us probes.
    pub heard_from: Vec<SocketAddr>,
    /// Probes sent.
    pub probes_sent: u32,
}

/// Registers, waits for the introduction, punches, and reports.
pub fn run_peer(cfg: &PeerConfig) -> io::Result<PeerReport> {
    let sock = UdpSocket::bind(cfg.bind)?;
    let mut report = PeerReport {
        role: cfg.role,
        observed: None,
        advertised_peer: None,
        confirmed: false,
        time_to_confirm_ms: None,
        confirmed_by: None,
        heard_from: Vec::new(),
        probes_sent: 0,
    };
    let Some((peer, observed)) = introduction(&sock, cfg)? else {
        return Ok(report);
    };
    report.observed = Some(observed);
    report.advertised_peer = Some(peer);
    // Probes that arrive meanwhile wait in the socket buffer, as they would for an application that is not
    // punching yet.
    std::thread::sleep(cfg.start_delay);
    let start = Instant::now();
    let deadline = start + cfg.timeout;
    // After both directions are proven, keep answering a little so the other side can finish too.
    let linger = (cfg.interval * 4).max(Duration::from_millis(500));
    let mut done_at: Option<Instant> = None;
    let mut targets = vec![peer];
    let mut next_probe = start;
    let mut seq = 0u32;
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= deadline || done_at.is_some_and(|t| now >= t) {
            break;
        }
        if now >= next_probe {
            seq += 1;
            let probe = Message::Probe {
                session: cfg.session.clone(),
                seq,
            }
            .encode();
            for t in &targets {
                // EPERM/unreachable while a NAT is still deciding is part of punching, not a failure.
                let _ = sock.send_to(&probe, t);
                report.probes_sent += 1;
            }
            next_probe = now + cfg.interval;
        }
        let wake = next_probe.min(deadline).min(done_at.unwrap_or(deadline));
        sock.set_read_timeout(Some(
            wake.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok((n, from)) => (n, from),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            // ICMP errors from earlier probes surface as ECONNREFUSED on Linux: ignore them.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        };
        match Message::decode(&buf[..n]) {
            Some(Message::Probe { session, seq }) if session == cfg.session => {
                let ack = Message::ProbeAck {
                    session,
                    seq,
                    observed: from,
                }
                .encode();
                let _ = sock.send_to(&ack, from);
                if !report.heard_from.contains(&from) {
                    report.heard_from.push(from);
                }
                if cfg.follow_source && !targets.contains(&from) {
                    targets.push(from);
                }
            }
            Some(Message::ProbeAck { session, .. }) if session == cfg.session => {
                if !report.confirmed {
                    report.confirmed = true;
                    report.time_to_confirm_ms = Some(start.elapsed().as_millis() as u64);
                    report.confirmed_by = Some(from);
                }
                if cfg.follow_source && !targets.contains(&from) {
                    targets.push(from);
                }
            }
            _ => {}
        }
        if done_at.is_none() && report.confirmed && !report.heard_from.is_empty() {
            done_at = Some(Instant::now() + linger);
        }
    }
    Ok(report)
}

/// Registers until the rendezvous introduces the other peer: (peer's address, our own observed address).
fn introduction(
    sock: &UdpSocket,
    cfg: &PeerConfig,
) -> io::Result<Option<(SocketAddr, SocketAddr)>> {
    let register = Message::Register {
        session: cfg.session.clone(),
        role: cfg.role,
    }
    .encode();
    // The other peer may start a little later; allow for it on top of the punching timeout.
    let deadline = Instant::now() + cfg.timeout + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        sock.send_to(&register, cfg.rendezvous)?;
        let resend_at = Instant::now() + REGISTER_INTERVAL;
        while Instant::now() < resend_at {
            sock.set_read_timeout(Some(
                resend_at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))?;
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == cfg.rendezvous => {
                    if let Some(Message::Introduce {
                        session,
                        peer,
                        observed,
                    }) = Message::decode(&buf[..n])
                        && session == cfg.session
                    {
                        return Ok(Some((peer, observed)));
                    }
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_peers_punch_over_loopback() {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let rendezvous = SocketAddr::new("127.0.0.1".parse().unwrap(), port);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || serve_rendezvous(rendezvous, move || tx.send(()).unwrap()));
        rx.recv_timeout(Duration::from_secs(2)).unwrap();
        let cfg = move |role, start_delay| PeerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            rendezvous,
            session: "loop".into(),
            role,
            start_delay,
            timeout: Duration::from_secs(2),
            interval: Duration::from_millis(20),
            follow_source: true,
        };
        let a = std::thread::spawn(move || run_peer(&cfg(Role::A, Duration::ZERO)).unwrap());
        let b = run_peer(&cfg(Role::B, Duration::from_millis(100))).unwrap();
        let a = a.join().unwrap();
        assert!(a.confirmed && b.confirmed, "{a:?} {b:?}");
        assert_eq!(a.advertised_peer, b.observed);
        assert_eq!(a.confirmed_by, a.advertised_peer);
        // A started 100 ms earlier, so it waited for B.
        assert!(a.time_to_confirm_ms.unwrap() >= 80, "{a:?}");
    }
}
