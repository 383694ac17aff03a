//! A STUN-like probe (in the spirit of RFC 5780's behaviour discovery) that measures the mapping and
//! filtering behaviour of the NAT in front of a host.
//!
//! The server listens on two addresses times two ports. Mapping: one client socket asks the server at
//! (IP1, port1), (IP2, port1) and (IP1, port2) for its reflexive address; equal answers mean
//! endpoint-independent mapping. Filtering: a fresh socket that has only talked to (IP1, port1) asks for an
//! answer from (IP2, port2) (arrives: endpoint-independent), then from (IP1, port2) (arrives:
//! address-dependent), else address-and-port-dependent.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::RETRY_INTERVAL;
use super::proto::Message;
use super::rfc5389;
use crate::engine::nat::{Behaviour, Filtering, Mapping};

/// How long a client tries one question before it concludes that no answer will come.
const QUESTION_TIMEOUT: Duration = Duration::from_millis(700);

/// The server's two addresses and two ports (the lab engine's, which starts the server).
pub use crate::engine::stun_server::ServerAddrs;

/// The server address that answers a request received on `on` with the given change flags.
pub fn answering_socket(
    addrs: &ServerAddrs,
    on: SocketAddr,
    change_ip: bool,
    change_port: bool,
) -> SocketAddr {
    let other_ip = if on.ip() == addrs.primary.ip() {
        addrs.alternate.ip()
    } else {
        addrs.primary.ip()
    };
    let other_port = if on.port() == addrs.primary.port() {
        addrs.alternate.port()
    } else {
        addrs.primary.port()
    };
    SocketAddr::new(
        if change_ip { other_ip } else { on.ip() },
        if change_port { other_port } else { on.port() },
    )
}

/// Runs the server until the process is told to stop: binds the four sockets, calls `ready`, answers.
pub fn serve(addrs: ServerAddrs, ready: impl FnOnce()) -> io::Result<()> {
    let all = addrs.all();
    let sockets: Vec<Arc<UdpSocket>> = all
        .iter()
        .map(|a| {
            UdpSocket::bind(a)
                .map(Arc::new)
                .map_err(|e| io::Error::new(e.kind(), format!("bind {a}: {e}")))
        })
        .collect::<io::Result<_>>()?;
    ready();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let sockets = sockets.clone();
            std::thread::spawn(move || serve_socket(addrs, all, &sockets, i))
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| io::Error::other("server thread panicked"))??;
    }
    Ok(())
}

fn serve_socket(
    addrs: ServerAddrs,
    all: [SocketAddr; 4],
    sockets: &[Arc<UdpSocket>],
    i: usize,
) -> io::Result<()> {
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = sockets[i].recv_from(&mut buf)?;
        // Real STUN (RFC 5389) is for miniupnpd, which asks over IPv4 only.
        if let Some(req) = rfc5389::decode_request(&buf[..n]) {
            let responder = answering_socket(&addrs, all[i], req.change_ip, req.change_port);
            let j = all.iter().position(|a| *a == responder).unwrap_or(i);
            let other = answering_socket(&addrs, all[i], true, true);
            if let (SocketAddr::V4(from), SocketAddr::V4(responder), SocketAddr::V4(other)) =
                (from, responder, other)
            {
                let reply = rfc5389::encode_response(&req, from, responder, other);
                let _ = sockets[j].send_to(&reply, from);
            }
            continue;
        }
        let Some(Message::BindingRequest {
            id,
            change_ip,
            change_port,
        }) = Message::decode(&buf[..n])
        else {
            continue;
        };
        let responder = answering_socket(&addrs, all[i], change_ip, change_port);
        let j = all.iter().position(|a| *a == responder).unwrap_or(i);
        let reply = Message::BindingResponse {
            id,
            observed: from,
            responder,
        };
        // A send error (e.g. no route for a moment) is the client's timeout to notice, not a server crash.
        let _ = sockets[j].send_to(&reply.encode(), from);
    }
}

/// What the client saw; [`evaluate`] turns it into a [`Behaviour`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The client socket's own address.
    pub local: SocketAddr,
    /// Reflexive address seen by (IP1, port1), (IP2, port1) and (IP1, port2), same client socket.
    pub mapped: [Option<SocketAddr>; 3],
    /// An answer from (IP2, port2) reached a socket that had only talked to (IP1, port1).
    pub other_ip_and_port_answered: bool,
    /// An answer from (IP1, port2) reached that socket.
    pub other_port_answered: bool,
}

/// Why an observation cannot be judged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailed {
    /// Not even the primary address answered.
    #[error(
        "the STUN-like server at {0} never answered: check that the host can reach the public side"
    )]
    Unreachable(SocketAddr),
    /// A mapping question went unanswered.
    #[error("the server did not answer the mapping question to {0}")]
    Incomplete(SocketAddr),
}

/// The mapping and filtering behaviour an observation shows.
pub fn evaluate(o: &Observation, server: &ServerAddrs) -> Result<Behaviour, ProbeFailed> {
    let [a, b, c] = o.mapped;
    let a = a.ok_or(ProbeFailed::Unreachable(server.primary))?;
    let b = b.ok_or(ProbeFailed::Incomplete(SocketAddr::new(
        server.alternate.ip(),
        server.primary.port(),
    )))?;
    let c = c.ok_or(ProbeFailed::Incomplete(SocketAddr::new(
        server.primary.ip(),
        server.alternate.port(),
    )))?;
    let mapping = if a == o.local && b == o.local && c == o.local {
        Mapping::None
    } else if a == b && a == c {
        Mapping::EndpointIndependent
    } else if a == c {
        // Same mapping for both ports of one address, another for the other address.
        Mapping::AddressDependent
    } else {
        Mapping::EndpointDependent
    };
    let filtering = if o.other_ip_and_port_answered {
        if mapping == Mapping::None {
            Filtering::None
        } else {
            Filtering::EndpointIndependent
        }
    } else if o.other_port_answered {
        Filtering::AddressDependent
    } else {
        Filtering::AddressAndPortDependent
    };
    Ok(Behaviour { mapping, filtering })
}

/// The client's result, printed as JSON by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReport {
    /// The raw observation.
    pub observation: Observation,
    /// The judged behaviour, or why there is none.
    pub behaviour: Result<Behaviour, String>,
}

/// Runs the client from `bind_ip` against `server` (both of one address family).
pub fn run_client(bind_ip: IpAddr, server: ServerAddrs) -> io::Result<ClientReport> {
    let mut next_id = (std::process::id() as u64) << 32;
    let mut ask = |sock: &UdpSocket, to: SocketAddr, change_ip: bool, change_port: bool| {
        next_id += 1;
        let expect_from = answering_socket(&server, to, change_ip, change_port);
        question(sock, to, next_id, change_ip, change_port, expect_from)
    };
    let mapping_sock = UdpSocket::bind(SocketAddr::new(bind_ip, 0))?;
    let local = mapping_sock.local_addr()?;
    let [ip1p1, ip1p2, ip2p1, _] = server.all();
    let mapped = [
        ask(&mapping_sock, ip1p1, false, false)?,
        ask(&mapping_sock, ip2p1, false, false)?,
        ask(&mapping_sock, ip1p2, false, false)?,
    ];
    // A fresh socket, so the only permission in the NAT is for (IP1, port1).
    let filter_sock = UdpSocket::bind(SocketAddr::new(bind_ip, 0))?;
    let other_ip_and_port_answered = ask(&filter_sock, ip1p1, true, true)?.is_some();
    let other_port_answered = ask(&filter_sock, ip1p1, false, true)?.is_some();
    let observation = Observation {
        local,
        mapped,
        other_ip_and_port_answered,
        other_port_answered,
    };
    let behaviour = evaluate(&observation, &server).map_err(|e| e.to_string());
    Ok(ClientReport {
        observation,
        behaviour,
    })
}

/// Sends a binding request (repeating it) until the matching response arrives from `expect_from`, or the
/// question times out.
fn question(
    sock: &UdpSocket,
    to: SocketAddr,
    id: u64,
    change_ip: bool,
    change_port: bool,
    expect_from: SocketAddr,
) -> io::Result<Option<SocketAddr>> {
    let request = Message::BindingRequest {
        id,
        change_ip,
        change_port,
    }
    .encode();
    let deadline = Instant::now() + QUESTION_TIMEOUT;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        sock.send_to(&request, to)?;
        let resend_at = (Instant::now() + RETRY_INTERVAL).min(deadline);
        loop {
            let left = resend_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))?;
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Some(Message::BindingResponse {
                        id: rid,
                        observed,
                        responder,
                    }) = Message::decode(&buf[..n])
                    {
                        // The source check is the point of the filtering tests: only count what came
                        // through from the address we asked for.
                        if rid == id && responder == expect_from && from == expect_from {
                            return Ok(Some(observed));
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerAddrs {
        ServerAddrs {
            primary: "198.51.100.10:3478".parse().unwrap(),
            alternate: "198.51.100.11:3479".parse().unwrap(),
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn responder_swaps_what_was_asked() {
        let s = server();
        let [p, _, _, alt] = s.all();
        assert_eq!(answering_socket(&s, p, true, true), alt);
        assert_eq!(
            answering_socket(&s, p, false, true),
            sa("198.51.100.10:3479")
        );
        assert_eq!(
            answering_socket(&s, p, true, false),
            sa("198.51.100.11:3478")
        );
        assert_eq!(answering_socket(&s, alt, true, true), p);
        assert_eq!(answering_socket(&s, p, false, false), p);
    }

    fn obs(mapped: [&str; 3], eif: bool, adf: bool) -> Observation {
        Observation {
            local: sa("10.0.0.2:5000"),
            mapped: mapped.map(|m| Some(sa(m))),
            other_ip_and_port_answered: eif,
            other_port_answered: adf,
        }
    }

    #[test]
    fn classic_nats_are_recognised() {
        let s = server();
        let same = ["203.0.113.2:5000"; 3];
        let judge = |o: &Observation| evaluate(o, &s).unwrap().to_string();
        assert_eq!(judge(&obs(same, true, true)), "EIM/EIF");
        assert_eq!(judge(&obs(same, false, true)), "EIM/ADF");
        assert_eq!(judge(&obs(same, false, false)), "EIM/APDF");
        let sym = [
            "203.0.113.2:40001",
            "203.0.113.2:40002",
            "203.0.113.2:40003",
        ];
        assert_eq!(judge(&obs(sym, false, false)), "EDM/APDF");
        let adm = [
            "203.0.113.2:40001",
            "203.0.113.2:40002",
            "203.0.113.2:40001",
        ];
        assert_eq!(judge(&obs(adm, false, false)), "ADM/APDF");
        let open = ["10.0.0.2:5000"; 3];
        assert_eq!(judge(&obs(open, true, true)), "none/open");
    }

    #[test]
    fn missing_answers_are_errors_not_guesses() {
        let mut o = obs(["203.0.113.2:5000"; 3], false, false);
        o.mapped[0] = None;
        assert!(matches!(
            evaluate(&o, &server()),
            Err(ProbeFailed::Unreachable(_))
        ));
        o.mapped[0] = Some(sa("203.0.113.2:5000"));
        o.mapped[2] = None;
        assert!(matches!(
            evaluate(&o, &server()),
            Err(ProbeFailed::Incomplete(_))
        ));
    }

    #[test]
    fn client_and_server_agree_over_loopback() {
        // 127.0.0.1 and 127.0.0.2 are both loopback on Linux: no NAT, so open mapping and filtering.
        let addrs = ServerAddrs {
            primary: sa("127.0.0.1:0"),
            alternate: sa("127.0.0.2:0"),
        };
        // Ports must be known in advance for two addresses: pick free ones.
        let p1 = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p2 = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addrs = ServerAddrs {
            primary: SocketAddr::new(addrs.primary.ip(), p1),
            alternate: SocketAddr::new(addrs.alternate.ip(), p2),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || serve(addrs, move || tx.send(()).unwrap()));
        if rx.recv_timeout(Duration::from_secs(2)).is_err() {
            eprintln!("SKIP: could not bind the loopback test server (127.0.0.2 unavailable?)");
            return;
        }
        let report = run_client("127.0.0.1".parse().unwrap(), addrs).unwrap();
        assert_eq!(report.behaviour, Ok(Behaviour::OPEN), "{report:?}");
    }
}
