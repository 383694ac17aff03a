//! The lab engine: an "internet" segment, public hosts, NAT sites and carrier NATs built from network
//! namespaces, and the processes running inside them.
//!
//! A [`Lab`] owns everything it creates. Namespaces are named with the run's unique prefix and recorded
//! before they are created; processes are found by the namespace they run in. Teardown (explicit
//! [`Lab::shutdown`], `Drop`, or [`teardown_all`] from a signal handler) stops every process in the lab's
//! namespaces and deletes the namespaces by exact name, which also removes every interface of the lab: no
//! interface of the lab ever exists in the host namespace.
//!
//! Topology (the internet is routed by `<prefix>-inet`, see [`super::wiring`]):
//! ```text
//!  public host 198.51.100.x --+
//!                             +-- <prefix>-inet (gateway 203.0.113.1) --+-- wan 203.0.113.x router -- lan 10.a.b.1 -- host 10.a.b.2
//!  carrier wan 203.0.113.y ---+                                         +-- ...
//!     carrier lan 100.64.c.1 (bridge) -- wan 100.64.c.2 home router -- lan -- host
//! ```
//! The API is synchronous (it runs `ip` and `nft`); async callers can use it from `spawn_blocking` or
//! directly for set-up, which takes milliseconds per site.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak, mpsc};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::addr::{self, PREFIX_LEN, PREFIX_LEN6, SlotPool};
use super::agent;
use super::error::{LabError, LabResult};
use super::link::{IMPAIRMENT_ENV, Impairment, ImpairmentChoice, LinkConditions, impairment_for};
use super::names;
use super::nat::{
    NatPreset, NatTimeouts, NatType, PortMapper, RouterPorts, firewall6_ruleset, miniupnpd_args,
    miniupnpd_pcp_only_config, router_ruleset, upnp_ruleset,
};
use super::stun_server::{self, ServerAddrs};
use super::sys;
use super::wire;
use super::wiring::{self, LAB_MTU, LinkEnds};

/// A router's interface towards its uplink.
const WAN_IF: &str = "wan";
/// A router's LAN bridge.
const LAN_IF: &str = "lan";
/// A host's only interface.
const HOST_IF: &str = "eth0";
/// Longest teardown waits for operations in flight.
const OPERATION_DRAIN: Duration = Duration::from_secs(15);
/// How long an agent or wire may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Prefix of every name; `None` picks a fresh random `nlabXXXX` (the normal case).
    pub prefix: Option<String>,
    /// Binary that provides the hidden `agent` and `wire` subcommands (default: the running executable).
    pub agent_exe: Option<PathBuf>,
    /// Netem, wire or automatic (default: from `NETLAB_IMPAIRMENT`, else automatic).
    pub impairment: ImpairmentChoice,
    /// Conntrack and mapping lifetimes of every router.
    pub timeouts: NatTimeouts,
    /// How long processes get between SIGTERM and SIGKILL at teardown.
    pub stop_grace: Duration,
}

impl Default for LabConfig {
    fn default() -> Self {
        let impairment = std::env::var(IMPAIRMENT_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(ImpairmentChoice::Auto);
        LabConfig {
            prefix: None,
            agent_exe: None,
            impairment,
            timeouts: NatTimeouts::default(),
            stop_grace: Duration::from_secs(2),
        }
    }
}

/// A host in the lab: a namespace with one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// The caller's name for it.
    pub label: String,
    /// Its network namespace (`ip netns exec <ns> ...`).
    pub ns: String,
    /// Its addresses; the first is the primary one.
    pub addrs: Vec<Ipv4Addr>,
    /// Its default gateway, when it sits behind a router.
    pub gateway: Option<Ipv4Addr>,
    /// Its IPv6 addresses (public hosts, and hosts of sites with IPv6); empty without IPv6.
    pub addrs6: Vec<Ipv6Addr>,
}

impl Host {
    /// The primary address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addrs[0]
    }

    /// The primary IPv6 address, if the host has IPv6.
    pub fn addr6(&self) -> Option<Ipv6Addr> {
        self.addrs6.first().copied()
    }

    /// A command that runs `program` inside this host's namespace; configure it and spawn it as usual.
    /// Whatever runs in the namespace is stopped when the lab shuts down.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        sys::command_in(&self.ns, program)
    }
}

/// A NAT router of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Router {
    /// The caller's name for the site (or carrier) it belongs to.
    pub label: String,
    /// Its namespace.
    pub ns: String,
    /// Its NAT type.
    #[serde(serialize_with = "serialize_display")]
    pub nat: NatType,
    /// Its external address (public, or on the carrier's network).
    pub wan_addr: Ipv4Addr,
    /// Its address on its LAN (the LAN hosts' gateway).
    pub lan_addr: Ipv4Addr,
    /// What its miniupnpd answers, if it runs one ([`NatPreset::Upnp`], [`NatPreset::Pcp`]).
    pub port_mapper: Option<PortMapper>,
    /// Its IPv6 side, if the site has IPv6.
    pub v6: Option<RouterV6>,
}

/// The IPv6 side of a router: routed, never translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RouterV6 {
    /// Its IPv6 address towards its uplink.
    pub wan_addr: Ipv6Addr,
    /// The /64 on its LAN (a home's delegated prefix, or a carrier's network); the router is `::1`.
    pub lan_prefix: Ipv6Addr,
    /// It runs the stateful IPv6 firewall (home routers; carriers only route).
    pub firewall: bool,
}

impl RouterV6 {
    /// The router's own address on its LAN.
    pub fn lan_addr(&self) -> Ipv6Addr {
        addr::in_prefix6(self.lan_prefix, 1)
    }
}

fn serialize_display<S: serde::Serializer, T: std::fmt::Display>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A carrier-grade NAT that home routers can sit behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Carrier {
    /// The carrier's router.
    pub router: Router,
    /// Number of its network (`100.64.<network>.0/24`).
    pub network: u8,
}

/// A site: one host and whatever NAT stands between it and the internet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Site {
    /// The caller's name for it.
    pub label: String,
    /// The preset it was built from.
    pub preset: NatPreset,
    /// The host (on the LAN, or on the internet for [`NatPreset::None`]).
    pub host: Host,
    /// Its routers from the internet inwards (empty without NAT; carrier first for double NAT).
    pub routers: Vec<Router>,
    /// Conditions of its access link (the innermost router's uplink, or the public host's link).
    pub link: LinkConditions,
    /// What the site holds and gives back when removed (a shared carrier is not part of it).
    #[serde(skip)]
    owned: Slots,
}

impl Site {
    /// The router the site's hosts use as gateway, if any.
    pub fn home_router(&self) -> Option<&Router> {
        self.routers.last()
    }

    /// Every namespace that belongs only to this site (extra LAN hosts are tracked by the lab).
    pub fn namespaces(&self) -> &[String] {
        &self.owned.namespaces
    }
}

/// What to build for one site in [`Lab::add_sites`].
#[derive(Debug, Clone)]
pub struct SiteSpec {
    /// Its name.
    pub label: String,
    /// Its NAT.
    pub preset: NatPreset,
    /// Its access link.
    pub link: LinkConditions,
}

/// Options of a public host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublicHostOptions {
    /// How many consecutive public addresses it gets (a STUN-like server needs two).
    pub addresses: usize,
    /// Conditions of its link to the internet segment.
    pub link: LinkConditions,
}

impl Default for PublicHostOptions {
    fn default() -> Self {
        PublicHostOptions {
            addresses: 1,
            link: LinkConditions::IDEAL,
        }
    }
}

/// What a teardown removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TeardownReport {
    /// Namespaces deleted.
    pub namespaces: usize,
    /// Wall time of the teardown.
    pub elapsed: Duration,
}

/// A process the lab started and owns (agents and wires).
#[derive(Debug)]
struct OwnedProcess {
    /// Namespace it runs in, so removing a site stops it.
    ns: String,
    /// The child; killed and reaped by the lab.
    child: Child,
    /// Its standard input: closing it tells agents and wires to exit.
    stdin: Option<ChildStdin>,
}

impl OwnedProcess {
    /// Stops a set of processes: signal all, then reap all. Killing one at a time would wait for each
    /// wire's TAP devices to be unregistered (tens of milliseconds each) in turn.
    fn stop_all(processes: Vec<OwnedProcess>) {
        let mut children: Vec<Child> = processes
            .into_iter()
            .map(|mut p| {
                drop(p.stdin.take());
                let _ = p.child.kill();
                p.child
            })
            .collect();
        for c in &mut children {
            let _ = c.wait();
        }
    }

    fn stop(self) {
        OwnedProcess::stop_all(vec![self]);
    }
}

/// The lines a child prints, read on a thread of their own that drains its output for its whole life, so
/// that it never blocks on a full pipe.
fn lines_of(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// The lab's wire hub (see [`wire`]): one process relays every impaired link of the lab. It starts with
/// the first such link, runs in the host namespace (it enters a lab namespace only to create a link's
/// devices there), and exits when the lab closes its standard input or kills it.
#[derive(Debug)]
struct WireHub {
    child: Child,
    stdin: ChildStdin,
    /// Lines the hub printed, one reply each.
    replies: mpsc::Receiver<String>,
    /// Number of the next link.
    next_id: u64,
    /// Open links: number and the namespace that owns their devices (closing the link before deleting
    /// that namespace lets it go: an open TAP device holds its namespace).
    links: Vec<(u64, String)>,
}

impl WireHub {
    fn start(exe: &Path) -> LabResult<WireHub> {
        let mut child = Command::new(exe)
            .arg("wires")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| LabError::io("cannot start the wire hub", e))?;
        let stdin = child.stdin.take().expect("stdin was piped");
        let stdout = child.stdout.take().expect("stdout was piped");
        let hub = WireHub {
            child,
            stdin,
            replies: lines_of(stdout),
            next_id: 1,
            links: Vec::new(),
        };
        match hub.replies.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line.trim() == wire::READY_LINE => Ok(hub),
            other => {
                let said = other.unwrap_or_else(|_| "nothing".into());
                hub.stop();
                Err(LabError::agent(
                    "the wire hub",
                    format!("not ready within {READY_TIMEOUT:?}; it said: {said}"),
                ))
            }
        }
    }

    /// Sends one request and waits for its reply.
    fn ask(&mut self, request: &wire::HubRequest) -> LabResult<wire::HubReply> {
        let line = serde_json::to_string(request).expect("a hub request serialises");
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| LabError::io("the wire hub is gone", e))?;
        let reply = self.replies.recv_timeout(READY_TIMEOUT).map_err(|_| {
            LabError::agent("the wire hub", format!("no reply within {READY_TIMEOUT:?}"))
        })?;
        serde_json::from_str(&reply).map_err(|e| {
            LabError::agent("the wire hub", format!("unreadable reply {reply:?}: {e}"))
        })
    }

    /// Opens a link whose devices live in `ns`.
    fn open(&mut self, ns: &str, config: wire::WireConfig) -> LabResult<()> {
        let id = self.next_id;
        self.next_id += 1;
        let netns = Path::new(sys::NETNS_DIR).join(ns);
        match self.ask(&wire::HubRequest::Open {
            id,
            netns,
            wire: config,
        })? {
            wire::HubReply::Opened { id: got } if got == id => {
                self.links.push((id, ns.to_string()));
                Ok(())
            }
            wire::HubReply::Failed { error, .. } => {
                Err(LabError::agent(format!("the wire hub in {ns}"), error))
            }
            other => Err(LabError::agent(
                "the wire hub",
                format!("answered {other:?} to opening link {id}"),
            )),
        }
    }

    /// Closes every link whose devices live in one of `namespaces`.
    fn close_in(&mut self, namespaces: &[String]) -> LabResult<()> {
        let (closing, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|(_, ns)| namespaces.contains(ns));
        self.links = keep;
        for (id, _) in closing {
            match self.ask(&wire::HubRequest::Close { id })? {
                wire::HubReply::Closed { id: got } if got == id => {}
                other => {
                    return Err(LabError::agent(
                        "the wire hub",
                        format!("answered {other:?} to closing link {id}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Ends the hub: every device it holds vanishes with it.
    fn stop(mut self) {
        drop(self.stdin);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An operation in progress, counted while it lives.
struct Operation<'a> {
    /// The lab's counter.
    inflight: &'a AtomicUsize,
}

impl Drop for Operation<'_> {
    fn drop(&mut self) {
        self.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Mutable bookkeeping of a lab.
#[derive(Debug)]
struct State {
    /// Every namespace created or being created, in creation order.
    namespaces: Vec<String>,
    /// Counter for namespace names; never reused, so a name never meets a namespace still being deleted.
    next_id: u32,
    /// Host numbers on 198.51.100.0/24.
    public_slots: SlotPool,
    /// Router numbers on 203.0.113.0/24.
    router_slots: SlotPool,
    /// Home LAN networks.
    lans: SlotPool,
    /// Carrier networks.
    carriers: SlotPool,
    /// Free host numbers per router namespace (LAN hosts, or home routers on a carrier network).
    downstream: HashMap<String, SlotPool>,
    /// Processes the lab owns.
    processes: Vec<OwnedProcess>,
    /// Extra LAN hosts per router namespace, removed with their site.
    lan_hosts: HashMap<String, Vec<String>>,
}

/// What a site holds and its removal must give back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Slots {
    namespaces: Vec<String>,
    public: Vec<u16>,
    routers: Vec<u16>,
    lans: Vec<u16>,
    carriers: Vec<u16>,
    /// (router namespace, host number) on someone else's downstream.
    downstream: Vec<(String, u16)>,
}

impl Slots {
    fn absorb(&mut self, other: Slots) {
        self.namespaces.extend(other.namespaces);
        self.public.extend(other.public);
        self.routers.extend(other.routers);
        self.lans.extend(other.lans);
        self.carriers.extend(other.carriers);
        self.downstream.extend(other.downstream);
    }
}

#[derive(Debug)]
struct LabInner {
    /// `nlabXXXX`.
    prefix: String,
    /// How the lab was configured.
    config: LabConfig,
    /// The binary for agents and wires.
    agent_exe: PathBuf,
    /// Bookkeeping.
    state: Mutex<State>,
    /// Set once teardown starts; every later operation fails with [`LabError::ShuttingDown`].
    closed: AtomicBool,
    /// Operations in progress (see `Lab::begin`).
    inflight: AtomicUsize,
    /// Serialises teardown (explicit, Drop and signal handler).
    teardown_lock: Mutex<Option<TeardownReport>>,
    /// The STUN server that UPnP routers learn their public address from, created by the first of them:
    /// its IPv4 and IPv6 addresses.
    stun: Mutex<Option<(ServerAddrs, ServerAddrs)>>,
    /// The wire hub, once a link needed it.
    wires: Mutex<Option<WireHub>>,
}

/// A NAT laboratory. Cheap to clone; the last clone to drop tears the lab down.
#[derive(Debug, Clone)]
pub struct Lab {
    inner: Arc<LabInner>,
}

/// Labs alive in this process, for [`teardown_all`].
static REGISTRY: Mutex<Vec<Weak<LabInner>>> = Mutex::new(Vec::new());

/// Tears down every lab of this process. Meant for a Ctrl-C/SIGTERM handler, which then exits.
pub fn teardown_all() {
    let labs: Vec<Arc<LabInner>> = lock(&REGISTRY).iter().filter_map(Weak::upgrade).collect();
    for lab in labs {
        if let Err(e) = lab.teardown() {
            eprintln!(
                "netlab: teardown of {} incomplete: {e}; run `netlab clean`",
                lab.prefix
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop the teardown: the data is bookkeeping, still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Lab {
    /// Builds an empty lab: the internet segment, nothing on it yet.
    pub fn new(config: LabConfig) -> LabResult<Lab> {
        sys::check_privileges()?;
        let agent_exe = match &config.agent_exe {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| LabError::io("cannot find the netlab executable", e))?,
        };
        let prefix = choose_prefix(config.prefix.as_deref())?;
        std::fs::create_dir_all(names::OWNER_DIR)
            .map_err(|e| LabError::io(format!("creating {}", names::OWNER_DIR), e))?;
        std::fs::write(names::owner_file(&prefix), names::own_owner_record())
            .map_err(|e| LabError::io("writing the lab's owner record", e))?;
        let inner = Arc::new(LabInner {
            prefix,
            config,
            agent_exe,
            state: Mutex::new(State {
                namespaces: Vec::new(),
                next_id: 1,
                public_slots: SlotPool::public_hosts(),
                router_slots: SlotPool::routers(),
                lans: SlotPool::lans(),
                carriers: SlotPool::carriers(),
                downstream: HashMap::new(),
                processes: Vec::new(),
                lan_hosts: HashMap::new(),
            }),
            closed: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            teardown_lock: Mutex::new(None),
            stun: Mutex::new(None),
            wires: Mutex::new(None),
        });
        lock(&REGISTRY).retain(|w| w.strong_count() > 0);
        lock(&REGISTRY).push(Arc::downgrade(&inner));
        let lab = Lab { inner };
        lab.build_internet()?;
        Ok(lab)
    }

    /// The run's unique prefix (`nlabXXXX`); every namespace of the lab starts with it and a `-`.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The namespace holding the internet bridge.
    pub fn internet_ns(&self) -> String {
        format!("{}-inet", self.inner.prefix)
    }

    /// All namespaces the lab has created and not removed.
    pub fn namespaces(&self) -> Vec<String> {
        lock(&self.inner.state).namespaces.clone()
    }

    /// The impairment mechanism this lab uses for links with conditions (detected once per process).
    pub fn impairment(&self) -> Impairment {
        impairment_for(self.inner.config.impairment, || {
            netem_works(&self.inner.prefix)
        })
    }

    /// Marks an operation in progress: teardown waits for it rather than racing it (a namespace created
    /// after the teardown listed them would be left behind).
    fn begin(&self) -> LabResult<Operation<'_>> {
        self.inner.inflight.fetch_add(1, Ordering::SeqCst);
        let op = Operation {
            inflight: &self.inner.inflight,
        };
        self.ensure_open()?;
        Ok(op)
    }

    fn ensure_open(&self) -> LabResult<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(LabError::ShuttingDown);
        }
        Ok(())
    }

    /// Reserves a namespace name and records it, so teardown deletes it even if creation fails midway.
    fn reserve_ns(&self, kind: &str, label: &str) -> LabResult<String> {
        self.ensure_open()?;
        let mut st = lock(&self.inner.state);
        let name = format!(
            "{}-{kind}{}-{}",
            self.inner.prefix,
            st.next_id,
            names::sanitize_label(label)
        );
        st.next_id += 1;
        st.namespaces.push(name.clone());
        Ok(name)
    }

    /// An upstream port name never used before in this lab (`r17`) and its number: the port of a removed
    /// site may still exist for a moment while the kernel finishes deleting its namespace.
    fn fresh_port(&self, kind: char) -> (String, u32) {
        let mut st = lock(&self.inner.state);
        let id = st.next_id;
        st.next_id += 1;
        (format!("{kind}{id}"), id)
    }

    fn build_internet(&self) -> LabResult<()> {
        let ns = self.internet_ns();
        self.ensure_open()?;
        lock(&self.inner.state).namespaces.push(ns.clone());
        sys::ip_batch(None, &[format!("netns add {ns}")])?;
        sys::ip_batch(Some(&ns), &wiring::internet_lines())?;
        sys::sysctl_in(&ns, &forwarding_sysctls())
    }

    /// Adds a host with public address(es) on the internet segment.
    pub fn add_public_host(&self, label: &str, options: PublicHostOptions) -> LabResult<Host> {
        let _op = self.begin()?;
        options.link.validate()?;
        if options.addresses == 0 {
            return Err(LabError::InvalidName(format!(
                "public host {label:?} needs at least one address"
            )));
        }
        let ns = self.reserve_ns("pub", label)?;
        let slots = {
            let mut st = lock(&self.inner.state);
            st.public_slots.take_run(options.addresses)?
        };
        let addrs: Vec<Ipv4Addr> = slots
            .iter()
            .map(|&s| addr::public_host_addr(s as u8))
            .collect();
        // Public hosts are dual-stack, as servers on the internet mostly are.
        let addrs6: Vec<Ipv6Addr> = slots
            .iter()
            .map(|&s| addr::public_host_addr6(s as u8))
            .collect();
        let result = (|| {
            sys::ip_batch(None, &[format!("netns add {ns}")])?;
            let (port, id) = self.fresh_port('p');
            let ends = LinkEnds {
                inner_if: HOST_IF.into(),
                inner_mac: wiring::mac_for_addr(addrs[0]),
                port,
                port_mac: wiring::mac_for_port(id),
            };
            let inet = self.internet_ns();
            self.attach(&ns, &ends, &inet, None, options.link)?;
            let mut up = wiring::internet_route_lines(&ends, &addrs);
            up.extend(wiring::internet_route_lines6(&ends, &addrs6, &[]));
            sys::ip_batch(Some(&inet), &up)?;
            let mut lines = vec!["link set lo up".to_string()];
            lines.extend(wiring::internet_client_lines(&ends, &addrs));
            lines.extend(wiring::internet_client_lines6(&ends, &addrs6));
            sys::ip_batch(Some(&ns), &lines)
        })();
        if let Err(e) = result {
            self.give_back(Slots {
                namespaces: vec![ns],
                public: slots,
                ..Slots::default()
            });
            return Err(e);
        }
        Ok(Host {
            label: label.to_string(),
            ns,
            addrs,
            gateway: None,
            addrs6,
        })
    }

    /// Adds a site: a host behind the preset's NAT router(s), with `link` on its access link.
    pub fn add_site(
        &self,
        label: &str,
        preset: NatPreset,
        link: LinkConditions,
    ) -> LabResult<Site> {
        let _op = self.begin()?;
        link.validate()?;
        match preset {
            NatPreset::None => {
                let host = self.add_public_host(label, PublicHostOptions { addresses: 1, link })?;
                let owned = Slots {
                    namespaces: vec![host.ns.clone()],
                    public: host.addrs.iter().map(|a| a.octets()[3].into()).collect(),
                    ..Slots::default()
                };
                Ok(Site {
                    label: label.to_string(),
                    preset,
                    host,
                    routers: Vec::new(),
                    link,
                    owned,
                })
            }
            NatPreset::Single(nat) => self.add_router_site(label, preset, nat, None, link),
            NatPreset::Upnp | NatPreset::Pcp | NatPreset::V6Firewall => {
                self.add_router_site(label, preset, NatType::PortRestrictedCone, None, link)
            }
            NatPreset::Double { .. } | NatPreset::CgnatV6 => {
                let [carrier, home] = preset.routers()[..] else {
                    unreachable!("double NAT presets have two routers")
                };
                let c = self.build_carrier(
                    &format!("{label}-cgn"),
                    carrier,
                    LinkConditions::IDEAL,
                    preset.has_ipv6(),
                )?;
                let carrier_slots = Slots {
                    namespaces: vec![c.router.ns.clone()],
                    routers: vec![c.router.wan_addr.octets()[3].into()],
                    carriers: vec![c.network.into()],
                    ..Slots::default()
                };
                match self.add_router_site(label, preset, home, Some(&c), link) {
                    Ok(mut site) => {
                        site.owned.absorb(carrier_slots);
                        Ok(site)
                    }
                    Err(e) => {
                        self.give_back(carrier_slots);
                        Err(e)
                    }
                }
            }
        }
    }

    /// Adds many sites at once, several in parallel (set-up is mostly waiting for `ip` and `nft`).
    pub fn add_sites(&self, specs: &[SiteSpec]) -> LabResult<Vec<Site>> {
        let workers = 4.min(specs.len().max(1));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Mutex<Vec<Option<LabResult<Site>>>> =
            Mutex::new((0..specs.len()).map(|_| None).collect());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(spec) = specs.get(i) else { break };
                        let r = self.add_site(&spec.label, spec.preset, spec.link);
                        lock(&results)[i] = Some(r);
                    }
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(LabError::ShuttingDown)))
            .collect()
    }

    /// Adds a carrier-grade NAT on the internet; home sites join it with [`Lab::add_site_behind`].
    pub fn add_carrier(
        &self,
        label: &str,
        nat: NatType,
        link: LinkConditions,
    ) -> LabResult<Carrier> {
        self.build_carrier(label, nat, link, false)
    }

    /// [`Lab::add_carrier`], with IPv6 routed to its customers when `ipv6`.
    fn build_carrier(
        &self,
        label: &str,
        nat: NatType,
        link: LinkConditions,
        ipv6: bool,
    ) -> LabResult<Carrier> {
        let _op = self.begin()?;
        link.validate()?;
        let ns = self.reserve_ns("cgn", label)?;
        let (slot, network) = {
            let mut st = lock(&self.inner.state);
            let slot = st.router_slots.take_u8()?;
            match st.carriers.take_u8() {
                Ok(n) => {
                    st.downstream
                        .insert(ns.clone(), SlotPool::carrier_routers());
                    (slot, n)
                }
                Err(e) => {
                    st.router_slots.give_back(slot.into());
                    return Err(e.into());
                }
            }
        };
        let router = Router {
            label: label.to_string(),
            ns: ns.clone(),
            nat,
            wan_addr: addr::router_wan_addr(slot),
            lan_addr: addr::carrier_addr(network, 1),
            port_mapper: None,
            v6: ipv6.then(|| RouterV6 {
                wan_addr: addr::router_wan_addr6(slot),
                lan_prefix: addr::carrier_addr6(network, 0),
                firewall: false,
            }),
        };
        let (port, id) = self.fresh_port('r');
        let uplink = Uplink::Internet { port, id };
        if let Err(e) = self.build_router(&router, &uplink, link) {
            self.give_back(Slots {
                namespaces: vec![ns],
                routers: vec![slot.into()],
                carriers: vec![network.into()],
                ..Slots::default()
            });
            return Err(e);
        }
        Ok(Carrier { router, network })
    }

    /// Adds a home site whose router sits behind `carrier` (shared carrier-grade NAT).
    pub fn add_site_behind(
        &self,
        carrier: &Carrier,
        label: &str,
        nat: NatType,
        link: LinkConditions,
    ) -> LabResult<Site> {
        let _op = self.begin()?;
        link.validate()?;
        let preset = if carrier.router.v6.is_some() {
            NatPreset::CgnatV6
        } else {
            NatPreset::Double {
                carrier: carrier.router.nat,
                home: nat,
            }
        };
        self.add_router_site(label, preset, nat, Some(carrier), link)
    }

    fn add_router_site(
        &self,
        label: &str,
        preset: NatPreset,
        nat: NatType,
        carrier: Option<&Carrier>,
        link: LinkConditions,
    ) -> LabResult<Site> {
        let rns = self.reserve_ns("rt", label)?;
        let hns = self.reserve_ns("h", label)?;
        let mut slots = Slots {
            namespaces: vec![hns.clone(), rns.clone()],
            ..Slots::default()
        };
        let taken = {
            let mut st = lock(&self.inner.state);
            (|| -> LabResult<(Ipv4Addr, Uplink, u16)> {
                let lan = st.lans.take()?;
                slots.lans.push(lan);
                st.downstream.insert(rns.clone(), SlotPool::lan_hosts());
                match carrier {
                    None => {
                        let slot = st.router_slots.take_u8()?;
                        slots.routers.push(slot.into());
                        let id = st.next_id;
                        st.next_id += 1;
                        Ok((
                            addr::router_wan_addr(slot),
                            Uplink::Internet {
                                port: format!("r{id}"),
                                id,
                            },
                            slot.into(),
                        ))
                    }
                    Some(c) => {
                        let pool = st
                            .downstream
                            .get_mut(&c.router.ns)
                            .ok_or(LabError::ShuttingDown)?;
                        let n = pool.take_u8()?;
                        slots.downstream.push((c.router.ns.clone(), n.into()));
                        let id = st.next_id;
                        st.next_id += 1;
                        let uplink = Uplink::Carrier {
                            ns: c.router.ns.clone(),
                            port: format!("h{id}"),
                            id,
                            gateway: c.router.lan_addr,
                        };
                        Ok((addr::carrier_addr(c.network, n), uplink, n.into()))
                    }
                }
            })()
        };
        let (wan_addr, uplink, slot) = match taken {
            Ok(t) => t,
            Err(e) => {
                self.give_back(slots);
                return Err(e);
            }
        };
        let v6 = match carrier {
            _ if !preset.has_ipv6() => None,
            None => Some(RouterV6 {
                wan_addr: addr::router_wan_addr6(slot as u8),
                lan_prefix: addr::lan_prefix6(slots.lans[0]),
                firewall: true,
            }),
            Some(c) => c.router.v6.map(|_| RouterV6 {
                wan_addr: addr::carrier_addr6(c.network, slot as u8),
                lan_prefix: addr::carrier_home_prefix6(c.network, slot as u8),
                firewall: true,
            }),
        };
        let router = Router {
            label: label.to_string(),
            ns: rns.clone(),
            nat,
            wan_addr,
            lan_addr: addr::lan_addr(slots.lans[0], 1),
            port_mapper: preset.port_mapper(),
            v6,
        };
        let built = self
            .build_router(&router, &uplink, link)
            .and_then(|()| self.build_lan_host(&router, &hns, label));
        match built {
            Ok(host) => {
                let mut routers = Vec::new();
                if let Some(c) = carrier {
                    routers.push(c.router.clone());
                }
                routers.push(router);
                Ok(Site {
                    label: label.to_string(),
                    preset,
                    host,
                    routers,
                    link,
                    owned: slots,
                })
            }
            Err(e) => {
                self.give_back(slots);
                Err(e)
            }
        }
    }

    /// Creates a router namespace, links it to its uplink, and loads its NAT.
    fn build_router(
        &self,
        router: &Router,
        uplink: &Uplink,
        link: LinkConditions,
    ) -> LabResult<()> {
        let ns = &router.ns;
        sys::ip_batch(None, &[format!("netns add {ns}")])?;
        let (up_ns, bridge, port, id) = match uplink {
            Uplink::Internet { port, id } => (self.internet_ns(), None, port, *id),
            Uplink::Carrier { ns, port, id, .. } => (ns.clone(), Some(LAN_IF), port, *id),
        };
        let ends = LinkEnds {
            inner_if: WAN_IF.into(),
            inner_mac: wiring::mac_for_addr(router.wan_addr),
            port: port.clone(),
            port_mac: wiring::mac_for_port(id),
        };
        self.attach(ns, &ends, &up_ns, bridge, link)?;
        let lan = router.lan_addr;
        let mut lines = vec![
            "link set lo up".to_string(),
            format!(
                "link add {LAN_IF} address {} type bridge",
                wiring::mac_for_addr(lan)
            ),
            format!("link set {LAN_IF} addrgenmode none"),
            format!("addr add {lan}/{PREFIX_LEN} dev {LAN_IF}"),
            format!("link set {LAN_IF} mtu {LAB_MTU} up"),
        ];
        match uplink {
            Uplink::Internet { .. } => {
                lines.extend(wiring::internet_client_lines(&ends, &[router.wan_addr]));
                let mut up = wiring::internet_route_lines(&ends, &[router.wan_addr]);
                if let Some(v6) = &router.v6 {
                    lines.extend(wiring::internet_client_lines6(&ends, &[v6.wan_addr]));
                    // A home router's delegated prefix, or a carrier's network and its customers' aggregate.
                    let mut prefixes = vec![(v6.lan_prefix, PREFIX_LEN6)];
                    if !v6.firewall {
                        prefixes.push(addr::carrier_aggregate6(router.lan_addr.octets()[2]));
                    }
                    up.extend(wiring::internet_route_lines6(
                        &ends,
                        &[v6.wan_addr],
                        &prefixes,
                    ));
                }
                sys::ip_batch(Some(&up_ns), &up)?;
            }
            Uplink::Carrier { gateway, .. } => {
                lines.extend(wiring::carrier_client_lines(
                    &ends,
                    router.wan_addr,
                    PREFIX_LEN,
                    *gateway,
                ));
                let mut up = wiring::carrier_neighbour_lines(LAN_IF, router.wan_addr);
                if let Some(v6) = &router.v6 {
                    let o = gateway.octets();
                    let gateway6 = addr::carrier_addr6(o[2], 1);
                    lines.extend(wiring::carrier_client_lines6(
                        &ends,
                        v6.wan_addr,
                        PREFIX_LEN6,
                        gateway6,
                        &wiring::mac_for_addr(*gateway),
                    ));
                    up.extend(wiring::carrier_home_lines6(
                        LAN_IF,
                        v6.wan_addr,
                        &wiring::mac_for_addr(router.wan_addr),
                        (v6.lan_prefix, PREFIX_LEN6),
                    ));
                }
                sys::ip_batch(Some(&up_ns), &up)?;
            }
        }
        if let Some(v6) = &router.v6 {
            lines.push(format!(
                "addr add {}/{PREFIX_LEN6} dev {LAN_IF} nodad",
                v6.lan_addr()
            ));
        }
        sys::ip_batch(Some(ns), &lines)?;
        let ports = RouterPorts {
            wan_if: WAN_IF,
            lan_if: LAN_IF,
            wan_ip: router.wan_addr,
        };
        let stun = if router.port_mapper.is_some() {
            Some(self.stun_server()?)
        } else {
            None
        };
        let mut ruleset = match &stun {
            Some(stun) => upnp_ruleset(&ports, &self.inner.config.timeouts, stun),
            None => router_ruleset(router.nat, &ports, &self.inner.config.timeouts),
        };
        if router.v6.is_some_and(|v6| v6.firewall) {
            ruleset.push_str(&firewall6_ruleset(WAN_IF, LAN_IF));
        }
        sys::nft_load(ns, &ruleset)?;
        // After nft: conntrack's per-namespace sysctls exist once NAT is in use there. The LAN bridge must
        // not send bridged frames through the netfilter hooks (the forward policy would drop LAN traffic).
        let mut settings = forwarding_sysctls();
        settings.extend([
            ("net.bridge.bridge-nf-call-iptables", "0".into()),
            ("net.bridge.bridge-nf-call-ip6tables", "0".into()),
            ("net.bridge.bridge-nf-call-arptables", "0".into()),
        ]);
        settings.extend(self.inner.config.timeouts.sysctls());
        sys::sysctl_in(ns, &settings)?;
        if let (Some(stun), Some(mode)) = (stun, router.port_mapper) {
            self.start_miniupnpd(ns, &stun, mode)?;
        }
        Ok(())
    }

    /// The lab's STUN server (two public addresses, ports 3478 and 3479), started by the first caller:
    /// `classify` measures against it and UPnP routers learn their public address from it.
    pub fn stun_server(&self) -> LabResult<ServerAddrs> {
        self.stun_servers().map(|(v4, _)| v4)
    }

    /// The lab's STUN server on its two IPv6 addresses (same host and ports as [`Lab::stun_server`]).
    pub fn stun_server6(&self) -> LabResult<ServerAddrs> {
        self.stun_servers().map(|(_, v6)| v6)
    }

    fn stun_servers(&self) -> LabResult<(ServerAddrs, ServerAddrs)> {
        let mut slot = lock(&self.inner.stun);
        if let Some(addrs) = *slot {
            return Ok(addrs);
        }
        let host = self.add_public_host(
            "stun",
            PublicHostOptions {
                addresses: 2,
                ..PublicHostOptions::default()
            },
        )?;
        let pair = |a: std::net::IpAddr, b: std::net::IpAddr| ServerAddrs {
            primary: std::net::SocketAddr::new(a, 3478),
            alternate: std::net::SocketAddr::new(b, 3479),
        };
        let v4 = pair(host.addrs[0].into(), host.addrs[1].into());
        let v6 = pair(host.addrs6[0].into(), host.addrs6[1].into());
        for (addrs, what) in [(&v4, "stun server"), (&v6, "stun server (IPv6)")] {
            self.start_agent(
                &host.ns,
                what,
                &stun_server::server_args(addrs),
                Some(agent::READY_LINE),
            )?;
        }
        *slot = Some((v4, v6));
        Ok((v4, v6))
    }

    /// Starts miniupnpd in router namespace `ns` and waits until it has learnt its public address from
    /// the STUN server and listens; fails with its own words if it decided that it cannot forward ports.
    fn start_miniupnpd(&self, ns: &str, stun: &ServerAddrs, mode: PortMapper) -> LabResult<()> {
        let pid_file = format!("/run/{ns}-miniupnpd.pid");
        let config_file = match mode {
            PortMapper::All => "/dev/null".to_string(),
            PortMapper::PcpOnly => {
                let f = format!("/run/{ns}-miniupnpd.conf");
                std::fs::write(&f, miniupnpd_pcp_only_config())
                    .map_err(|e| LabError::io(format!("writing {f}"), e))?;
                f
            }
        };
        // miniupnpd logs to standard error with -d; the shell folds it into the output the lab reads.
        let mut cmd = sys::command_in(ns, "sh");
        cmd.args(["-c", "exec miniupnpd \"$@\" 2>&1", "miniupnpd"])
            .args(miniupnpd_args(
                WAN_IF,
                LAN_IF,
                stun,
                &pid_file,
                &config_file,
            ));
        let seen = self.start_owned(
            ns,
            "miniupnpd",
            cmd,
            Some(&|line: &str| line.contains("Listening for NAT-PMP")),
        );
        let _ = std::fs::remove_file(&pid_file);
        if mode == PortMapper::PcpOnly {
            let _ = std::fs::remove_file(&config_file);
        }
        let seen = seen?;
        let refused = seen.iter().find(|l| {
            l.contains("Port forwarding is impossible")
                || l.contains("does not support port forwarding")
                || l.contains("firewall filters incoming")
                || l.contains("STUN failed")
        });
        match refused {
            Some(line) => Err(LabError::agent(
                format!("miniupnpd in {ns}"),
                format!("it will not open ports: {}", line.trim()),
            )),
            None => Ok(()),
        }
    }

    /// Creates host namespace `hns` on `router`'s LAN.
    fn build_lan_host(&self, router: &Router, hns: &str, label: &str) -> LabResult<Host> {
        let n = {
            let mut st = lock(&self.inner.state);
            st.downstream
                .get_mut(&router.ns)
                .ok_or(LabError::ShuttingDown)?
                .take_u8()?
        };
        let net = router.lan_addr.octets();
        let addr = Ipv4Addr::new(net[0], net[1], net[2], n);
        let host_mac = wiring::mac_for_addr(addr);
        sys::ip_batch(None, &[format!("netns add {hns}")])?;
        let port = format!("l{n}");
        let mut router_lines = vec![
            format!(
                "link add {port} mtu {LAB_MTU} type veth peer name {HOST_IF} address {host_mac} netns {hns}"
            ),
            format!("link set {port} addrgenmode none"),
            format!("link set {port} master {LAN_IF} up"),
        ];
        let mut host_lines = vec![
            "link set lo up".into(),
            format!("link set {HOST_IF} addrgenmode none"),
            format!("addr add {addr}/{PREFIX_LEN} dev {HOST_IF}"),
            format!("link set {HOST_IF} up"),
            format!("route add default via {}", router.lan_addr),
        ];
        let addr6 = router.v6.map(|v6| addr::in_prefix6(v6.lan_prefix, n));
        if let (Some(v6), Some(a6)) = (router.v6, addr6) {
            let (r, h) = wiring::lan_lines6(
                (
                    v6.lan_addr(),
                    &wiring::mac_for_addr(router.lan_addr),
                    LAN_IF,
                ),
                (a6, &host_mac, HOST_IF),
                PREFIX_LEN6,
            );
            router_lines.extend(r);
            host_lines.extend(h);
        }
        sys::ip_batch(Some(&router.ns), &router_lines)?;
        sys::ip_batch(Some(hns), &host_lines)?;
        Ok(Host {
            label: label.to_string(),
            ns: hns.to_string(),
            addrs: vec![addr],
            gateway: Some(router.lan_addr),
            addrs6: addr6.into_iter().collect(),
        })
    }

    /// Adds another host on a site's LAN (two hosts behind one NAT).
    pub fn add_lan_host(&self, site: &Site, label: &str) -> LabResult<Host> {
        let _op = self.begin()?;
        let router = site.home_router().ok_or_else(|| {
            LabError::InvalidName(format!("site {:?} has no NAT and so no LAN", site.label))
        })?;
        let hns = self.reserve_ns("h", label)?;
        match self.build_lan_host(router, &hns, label) {
            Ok(host) => {
                lock(&self.inner.state)
                    .lan_hosts
                    .entry(router.ns.clone())
                    .or_default()
                    .push(hns);
                Ok(host)
            }
            Err(e) => {
                self.give_back(Slots {
                    namespaces: vec![hns],
                    ..Slots::default()
                });
                Err(e)
            }
        }
    }

    /// Connects `ends.inner_if` of namespace `ns` to `ends.port` in namespace `up_ns` (on `bridge` there,
    /// if given), applying `link`. Both ends are created inside lab namespaces, never in the host's.
    fn attach(
        &self,
        ns: &str,
        ends: &LinkEnds,
        up_ns: &str,
        bridge: Option<&str>,
        link: LinkConditions,
    ) -> LabResult<()> {
        let mechanism = if link.is_ideal() {
            None
        } else {
            Some(self.impairment())
        };
        match mechanism {
            None | Some(Impairment::Netem) => {
                sys::ip_batch(Some(ns), &wiring::veth_lines(ends, up_ns))?
            }
            Some(Impairment::Wire) => {
                self.open_wire(
                    ns,
                    wire::WireConfig {
                        tap_a: ends.inner_if.clone(),
                        tap_b: ends.port.clone(),
                        conditions: link,
                        seed: rand::random(),
                    },
                )?;
                // The TAP's file descriptor keeps working after the device changes namespace.
                sys::ip_batch(Some(ns), &wiring::tap_lines(ends, up_ns))?;
            }
        }
        sys::ip_batch(Some(up_ns), &wiring::port_up_lines(ends, bridge))?;
        if mechanism == Some(Impairment::Netem) {
            for (n, dev) in [(ns, &ends.inner_if), (up_ns, &ends.port)] {
                let mut cmd = sys::command_in(n, "tc");
                cmd.args(["qdisc", "add", "dev", dev, "root"])
                    .args(link.netem_args());
                sys::run(&mut cmd, None)?;
            }
        }
        Ok(())
    }

    /// Opens a link of the wire hub with its devices in `ns`, starting the hub with the lab's first one.
    fn open_wire(&self, ns: &str, config: wire::WireConfig) -> LabResult<()> {
        let _op = self.begin()?;
        self.ensure_open()?;
        let mut hub = lock(&self.inner.wires);
        if hub.is_none() {
            *hub = Some(WireHub::start(&self.inner.agent_exe)?);
        }
        hub.as_mut().expect("started above").open(ns, config)
    }

    /// A command for the agent binary (`netlab agent ...`) inside namespace `ns`.
    pub fn agent_command(&self, ns: &str, args: &[String]) -> Command {
        let mut cmd = sys::command_in(ns, &self.inner.agent_exe);
        cmd.args(args);
        cmd
    }

    /// Starts a long-running agent in `ns`, owned by the lab (stopped with its site or the lab). With
    /// `ready`, waits until the agent prints that line, so callers never race its set-up.
    pub fn start_agent(
        &self,
        ns: &str,
        what: &str,
        args: &[String],
        ready: Option<&str>,
    ) -> LabResult<()> {
        let cmd = self.agent_command(ns, args);
        match ready {
            Some(r) => self.start_owned(ns, what, cmd, Some(&|line: &str| line.trim() == r)),
            None => self.start_owned(ns, what, cmd, None),
        }
        .map(drop)
    }

    /// Starts `cmd` in `ns`, owned by the lab, and waits until a line of its standard output satisfies
    /// `ready` (without one it does not wait); returns the lines seen until then.
    fn start_owned(
        &self,
        ns: &str,
        what: &str,
        mut cmd: Command,
        ready: Option<&dyn Fn(&str) -> bool>,
    ) -> LabResult<Vec<String>> {
        let _op = self.begin()?;
        self.ensure_open()?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| LabError::io(format!("cannot start {what} in {ns}"), e))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout was piped");
        let rx = lines_of(stdout);
        let mut process = OwnedProcess {
            ns: ns.to_string(),
            child,
            stdin,
        };
        let mut seen = Vec::new();
        if let Some(ready) = ready {
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) if ready(&line) => {
                        seen.push(line);
                        break;
                    }
                    Ok(line) => seen.push(line),
                    Err(_) => {
                        let status = process.child.try_wait().ok().flatten();
                        process.stop();
                        return Err(LabError::agent(
                            format!("{what} in {ns}"),
                            match status {
                                Some(s) => format!(
                                    "exited before it was ready ({s}); it said: {}",
                                    seen.join(" | ")
                                ),
                                None => format!(
                                    "not ready after {READY_TIMEOUT:?}; it said: {}",
                                    seen.join(" | ")
                                ),
                            },
                        ));
                    }
                }
            }
        }
        let mut st = lock(&self.inner.state);
        if self.inner.closed.load(Ordering::SeqCst) {
            drop(st);
            process.stop();
            return Err(LabError::ShuttingDown);
        }
        st.processes.push(process);
        Ok(seen)
    }

    /// Runs an agent in `ns` to completion and returns its standard output. It is killed after `timeout`.
    pub fn run_agent(
        &self,
        ns: &str,
        what: &str,
        args: &[String],
        timeout: Duration,
    ) -> LabResult<String> {
        self.ensure_open()?;
        let mut cmd = self.agent_command(ns, args);
        // stdin stays open while we wait: its end tells the agent the lab is gone.
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| LabError::io(format!("cannot start {what} in {ns}"), e))?;
        let stdin = child.stdin.take();
        let out = reader_thread(child.stdout.take());
        let err = reader_thread(child.stderr.take());
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None)
                    if Instant::now() < deadline && !self.inner.closed.load(Ordering::SeqCst) =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        drop(stdin);
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        match status {
            Some(s) if s.success() => Ok(stdout),
            Some(s) => Err(LabError::agent(
                format!("{what} in {ns}"),
                format!("{s}: {}", stderr.trim()),
            )),
            None => Err(LabError::agent(
                format!("{what} in {ns}"),
                format!("no result within {timeout:?}"),
            )),
        }
    }

    /// Removes a site: stops its processes and deletes its namespaces, with any extra LAN hosts (a shared
    /// carrier stays).
    pub fn remove_site(&self, site: &Site) -> LabResult<()> {
        let _op = self.begin()?;
        let mut owned = site.owned.clone();
        {
            let mut st = lock(&self.inner.state);
            for r in &site.routers {
                if owned.namespaces.contains(&r.ns)
                    && let Some(extra) = st.lan_hosts.remove(&r.ns)
                {
                    owned.namespaces.extend(extra);
                }
            }
        }
        self.remove_ns_group(&owned.namespaces)?;
        self.release_slots(owned);
        Ok(())
    }

    /// Stops processes in `namespaces` and deletes them.
    fn remove_ns_group(&self, namespaces: &[String]) -> LabResult<()> {
        if let Some(hub) = lock(&self.inner.wires).as_mut() {
            hub.close_in(namespaces)?;
        }
        let owned: Vec<OwnedProcess> = {
            let mut st = lock(&self.inner.state);
            let (mine, rest): (Vec<_>, Vec<_>) = st
                .processes
                .drain(..)
                .partition(|p| namespaces.contains(&p.ns));
            st.processes = rest;
            mine
        };
        OwnedProcess::stop_all(owned);
        sys::stop_processes_in(namespaces, self.inner.config.stop_grace);
        sys::delete_namespaces(namespaces)?;
        lock(&self.inner.state)
            .namespaces
            .retain(|n| !namespaces.contains(n));
        Ok(())
    }

    /// Deletes the namespaces of a failed build and returns its slots.
    fn give_back(&self, slots: Slots) {
        let _ = self.remove_ns_group(&slots.namespaces);
        self.release_slots(slots);
    }

    fn release_slots(&self, slots: Slots) {
        let mut st = lock(&self.inner.state);
        slots
            .public
            .into_iter()
            .for_each(|s| st.public_slots.give_back(s));
        slots
            .routers
            .into_iter()
            .for_each(|s| st.router_slots.give_back(s));
        slots.lans.into_iter().for_each(|s| st.lans.give_back(s));
        slots
            .carriers
            .into_iter()
            .for_each(|s| st.carriers.give_back(s));
        for (ns, n) in slots.downstream {
            if let Some(pool) = st.downstream.get_mut(&ns) {
                pool.give_back(n);
            }
        }
        for ns in &slots.namespaces {
            st.downstream.remove(ns);
        }
    }

    /// Tears the lab down now: stops every process in its namespaces and deletes them. Later calls and the
    /// final drop do nothing more.
    pub fn shutdown(&self) -> LabResult<TeardownReport> {
        self.inner.teardown()
    }
}

impl LabInner {
    fn teardown(&self) -> LabResult<TeardownReport> {
        let mut done = lock(&self.teardown_lock);
        if let Some(report) = done.as_ref() {
            return Ok(report.clone());
        }
        let start = Instant::now();
        self.closed.store(true, Ordering::SeqCst);
        // Let operations in flight finish their current step (milliseconds); each later step fails.
        let deadline = Instant::now() + OPERATION_DRAIN;
        while self.inflight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (processes, mut namespaces) = {
            let mut st = lock(&self.state);
            (std::mem::take(&mut st.processes), st.namespaces.clone())
        };
        OwnedProcess::stop_all(processes);
        if let Some(hub) = lock(&self.wires).take() {
            hub.stop();
        }
        // Anything carrying our exact prefix is ours, including a namespace whose creation raced with us.
        let sweep = |known: &mut Vec<String>| {
            for n in sys::netns_list().unwrap_or_default() {
                if names::prefix_of(&n) == Some(self.prefix.as_str()) && !known.contains(&n) {
                    known.push(n);
                }
            }
        };
        sweep(&mut namespaces);
        sys::stop_processes_in(&namespaces, self.config.stop_grace);
        let result = sys::delete_namespaces(&namespaces);
        let mut again = Vec::new();
        sweep(&mut again);
        if !again.is_empty() {
            sys::stop_processes_in(&again, self.config.stop_grace);
            sys::delete_namespaces(&again)?;
        }
        result?;
        let _ = std::fs::remove_file(names::owner_file(&self.prefix));
        lock(&self.state).namespaces.clear();
        let report = TeardownReport {
            namespaces: namespaces.len() + again.len(),
            elapsed: start.elapsed(),
        };
        *done = Some(report.clone());
        Ok(report)
    }
}

impl Drop for LabInner {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!(
                "netlab: teardown of {} incomplete: {e}; run `netlab clean`",
                self.prefix
            );
        }
    }
}

/// Where a router's WAN plugs in.
#[derive(Debug)]
enum Uplink {
    /// The internet router, through port `port`.
    Internet {
        /// Port name in the internet namespace.
        port: String,
        /// Port number (for its MAC address).
        id: u32,
    },
    /// A carrier's LAN bridge.
    Carrier {
        /// The carrier router's namespace.
        ns: String,
        /// Port name there.
        port: String,
        /// Port number (for its MAC address).
        id: u32,
        /// The carrier router's LAN address.
        gateway: Ipv4Addr,
    },
}

/// Sysctls of a namespace that routes (the internet and every NAT router).
fn forwarding_sysctls() -> Vec<(&'static str, String)> {
    vec![
        ("net.ipv4.ip_forward", "1".into()),
        ("net.ipv6.conf.all.forwarding", "1".into()),
        ("net.ipv4.conf.all.rp_filter", "0".into()),
        ("net.ipv4.conf.default.rp_filter", "0".into()),
    ]
}

/// Picks the run's prefix: the requested one, or a random one no namespace or owner record uses yet.
fn choose_prefix(requested: Option<&str>) -> LabResult<String> {
    let existing = sys::netns_list()?;
    let taken = |p: &str| {
        existing.iter().any(|n| names::prefix_of(n) == Some(p)) || names::owner_file(p).exists()
    };
    if let Some(p) = requested {
        if !names::is_prefix(p) {
            return Err(LabError::InvalidName(format!(
                "lab prefix {p:?} must look like {}XXXX with four lowercase hex digits",
                names::STEM
            )));
        }
        if taken(p) {
            return Err(LabError::InvalidName(format!(
                "lab prefix {p} is in use: pick another or run `netlab clean`"
            )));
        }
        return Ok(p.to_string());
    }
    for _ in 0..100 {
        let p = names::random_prefix();
        if !taken(&p) {
            return Ok(p);
        }
    }
    Err(LabError::InvalidName(
        "no free lab prefix: run `netlab clean`".into(),
    ))
}

/// Whether `tc netem` works on this kernel, tried in a scratch namespace of the lab.
fn netem_works(prefix: &str) -> bool {
    let ns = format!("{prefix}-netemprobe");
    if sys::ip_batch(None, &[format!("netns add {ns}")]).is_err() {
        return false;
    }
    let mut cmd = sys::command_in(&ns, "tc");
    cmd.args(["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]);
    let ok = sys::run(&mut cmd, None).is_ok();
    let _ = sys::delete_namespaces(&[ns]);
    ok
}

/// Collects a pipe's output on a thread.
fn reader_thread<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(ns: &str) -> Host {
        Host {
            label: "h".into(),
            ns: ns.into(),
            addrs: vec![Ipv4Addr::new(10, 0, 0, 2)],
            gateway: None,
            addrs6: Vec::new(),
        }
    }

    #[test]
    fn requested_prefix_must_have_the_lab_shape() {
        let e = choose_prefix(Some("mylab")).unwrap_err();
        assert!(e.to_string().contains("four lowercase hex digits"), "{e}");
    }

    #[test]
    fn host_command_runs_in_its_namespace() {
        let c = host("nlab0001-h1-a").command("true");
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args, vec!["netns", "exec", "nlab0001-h1-a", "true"]);
    }
}
