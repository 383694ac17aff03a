//! `netlab agent ...`: the probe programs, run by the lab inside its namespaces. Clients print one JSON
//! report; servers print `ready` once bound and run until their standard input closes. The media probes
//! (`publish`, `play`) also stop on SIGTERM and then print their report; `status` prints one JSON line
//! per poll of a node's status API.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use streamr_netlab::engine::agent;
use streamr_netlab::node;
use streamr_netlab::probe::proto::Role;
use streamr_netlab::probe::rtmp::{self as media_probe, PlayOptions, PublishOptions};
use streamr_netlab::probe::{echo, punch, stun};

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
        primary: SocketAddr,
        #[arg(long)]
        alternate: SocketAddr,
    },
    /// Measures the NAT in front of this host against a stun-server.
    StunClient {
        #[arg(long)]
        bind: IpAddr,
        #[arg(long)]
        primary: SocketAddr,
        #[arg(long)]
        alternate: SocketAddr,
    },
    /// Introduces punching peers to each other.
    Rendezvous {
        #[arg(long)]
        bind: SocketAddr,
    },
    /// Punches a hole to the other peer of a session.
    PunchPeer {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        rendezvous: SocketAddr,
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
    /// Publishes the synthetic probe stream over RTMP; prints a JSON report at the end (or on SIGTERM).
    Publish {
        /// rtmp://HOST:PORT/live/NAME
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 30)]
        fps: u32,
        /// A keyframe every this many video frames.
        #[arg(long, default_value_t = 60)]
        gop: u32,
        /// Total bitrate in kbps (audio and padding included).
        #[arg(long, default_value_t = 2500)]
        kbps: u32,
        /// Seconds to publish; 0 publishes until SIGTERM.
        #[arg(long, default_value_t = 0.0)]
        duration_s: f64,
    },
    /// Plays a stream over RTMP and prints a JSON summary (frames, loss, gaps, latency).
    Play {
        /// rtmp://HOST:PORT/live/NAME
        #[arg(long)]
        url: String,
        /// Seconds to play; 0 plays until SIGTERM, idle or the end of the stream.
        #[arg(long, default_value_t = 0.0)]
        duration_s: f64,
        /// Stop when no frame arrived for this many seconds (after the first).
        #[arg(long, default_value_t = 5.0)]
        idle_timeout_s: f64,
        /// Retry until the stream exists, for at most this many seconds; 0 tries once.
        #[arg(long, default_value_t = 0.0)]
        retry_s: f64,
    },
    /// Polls a node's status API and prints one JSON line per poll, until stdin closes.
    Status {
        /// The node's HTTP address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
    },
}

/// Seconds from the command line as a duration; 0 (or less) means none.
fn secs(s: f64) -> Option<Duration> {
    (s > 0.0 && s.is_finite()).then(|| Duration::from_secs_f64(s))
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => std::future::pending().await,
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Prints one status poll per line: `{"at_unix_ms":..,"status":{..}}` or `{"at_unix_ms":..,"error":".."}`.
async fn poll_status(addr: SocketAddr, interval: Duration) -> anyhow::Result<()> {
    use std::io::Write;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let at_unix_ms = media_probe::unix_us() / 1000;
        let answer = node::http::get(
            addr,
            node::STATUS_PATH,
            interval.max(Duration::from_secs(1)),
        )
        .await
        .and_then(node::http::HttpAnswer::ok);
        let line = match answer {
            Ok(body) => match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(status) => serde_json::json!({ "at_unix_ms": at_unix_ms, "status": status }),
                Err(e) => {
                    serde_json::json!({ "at_unix_ms": at_unix_ms, "error": format!("not JSON: {e}") })
                }
            },
            Err(e) => {
                let e = anyhow::Error::new(e);
                serde_json::json!({ "at_unix_ms": at_unix_ms, "error": format!("{e:#}") })
            }
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
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
    agent::exit_when_stdin_closes();
    match args.agent {
        Agent::StunServer { primary, alternate } => {
            stun::serve(
                stun::ServerAddrs { primary, alternate },
                agent::announce_ready,
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
            punch::serve_rendezvous(bind, agent::announce_ready).context("rendezvous")?;
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
            echo::serve(bind, agent::announce_ready).context("echo server")?;
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
        Agent::Publish {
            url,
            fps,
            gop,
            kbps,
            duration_s,
        } => {
            let opts = PublishOptions {
                url,
                fps,
                gop,
                kbps,
                duration: secs(duration_s),
                ..PublishOptions::default()
            };
            print_json(&runtime()?.block_on(media_probe::publish(&opts, stop_signal())))
        }
        Agent::Play {
            url,
            duration_s,
            idle_timeout_s,
            retry_s,
        } => {
            let opts = PlayOptions {
                url,
                duration: secs(duration_s),
                idle_timeout: secs(idle_timeout_s).unwrap_or(Duration::from_secs(5)),
                retry_for: secs(retry_s),
                ..PlayOptions::default()
            };
            print_json(&runtime()?.block_on(media_probe::play(&opts, stop_signal())))
        }
        Agent::Status { addr, interval_ms } => {
            let interval = Duration::from_millis(interval_ms.max(50));
            runtime()?.block_on(poll_status(addr, interval))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
