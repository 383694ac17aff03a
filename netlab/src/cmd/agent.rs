//! `netlab agent ...`: the probe programs, run by the lab inside its namespaces. Clients print one JSON
//! report; servers print `ready` once bound and run until their standard input closes.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use streamr_netlab::probe::proto::Role;
use streamr_netlab::probe::{self, echo, punch, stun};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    agent: Agent,
}

#[derive(Debug, Subcommand)]
enum Agent {
    /// STUN-like server on two addresses x two ports.
    StunServer {
        #[arg(long)]
        primary: SocketAddrV4,
        #[arg(long)]
        alternate: SocketAddrV4,
    },
    /// Measures the NAT in front of this host against a stun-server.
    StunClient {
        #[arg(long)]
        bind: Ipv4Addr,
        #[arg(long)]
        primary: SocketAddrV4,
        #[arg(long)]
        alternate: SocketAddrV4,
    },
    /// Introduces punching peers to each other.
    Rendezvous {
        #[arg(long)]
        bind: SocketAddrV4,
    },
    /// Punches a hole to the other peer of a session.
    PunchPeer {
        #[arg(long)]
        bind: SocketAddrV4,
        #[arg(long)]
        rendezvous: SocketAddrV4,
        #[arg(long)]
        session: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long, default_value_t = 0)]
        start_delay_ms: u64,
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
        /// Answer probes only towards the address the rendezvous gave, never the observed source.
        #[arg(long)]
        no_follow_source: bool,
    },
    /// Echoes UDP datagrams.
    EchoServer {
        #[arg(long)]
        bind: SocketAddrV4,
    },
    /// Measures round trips to an echo-server.
    EchoClient {
        #[arg(long)]
        bind: Ipv4Addr,
        #[arg(long)]
        server: SocketAddrV4,
        #[arg(long, default_value_t = 20)]
        count: u32,
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "a" | "A" => Ok(Role::A),
        "b" | "B" => Ok(Role::B),
        _ => Err(format!("role {s:?}: use a or b")),
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string(value)?);
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    probe::exit_when_stdin_closes();
    match args.agent {
        Agent::StunServer { primary, alternate } => {
            stun::serve(
                stun::ServerAddrs { primary, alternate },
                probe::announce_ready,
            )
            .context("stun server")?;
            Ok(ExitCode::SUCCESS)
        }
        Agent::StunClient {
            bind,
            primary,
            alternate,
        } => print_json(
            &stun::run_client(bind, stun::ServerAddrs { primary, alternate })
                .context("stun client")?,
        ),
        Agent::Rendezvous { bind } => {
            punch::serve_rendezvous(bind, probe::announce_ready).context("rendezvous")?;
            Ok(ExitCode::SUCCESS)
        }
        Agent::PunchPeer {
            bind,
            rendezvous,
            session,
            role,
            start_delay_ms,
            timeout_ms,
            interval_ms,
            no_follow_source,
        } => {
            let cfg = punch::PeerConfig {
                bind,
                rendezvous,
                session,
                role,
                start_delay: Duration::from_millis(start_delay_ms),
                timeout: Duration::from_millis(timeout_ms),
                interval: Duration::from_millis(interval_ms.max(1)),
                follow_source: !no_follow_source,
            };
            print_json(&punch::run_peer(&cfg).context("punch peer")?)
        }
        Agent::EchoServer { bind } => {
            echo::serve(bind, probe::announce_ready).context("echo server")?;
            Ok(ExitCode::SUCCESS)
        }
        Agent::EchoClient {
            bind,
            server,
            count,
            interval_ms,
        } => {
            let interval = Duration::from_millis(interval_ms);
            print_json(
                &echo::measure(bind, server, count, interval, Duration::from_secs(3))
                    .context("echo client")?,
            )
        }
    }
}
