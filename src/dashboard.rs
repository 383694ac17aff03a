//! What the dashboard and the API ask of the node ([`NodeApi`]): status, the overview the dashboard shows,
//! invites, joining a friend, Start/Stop, and settings. Settings come from their one definition
//! (`crate::settings`): validation, saving to `config.toml` (atomically) and how each applies.

use crate::config::{self, Config, FileConfig};
use crate::datafile::{self, NodeState};
use crate::friends::Friend;
use crate::invite::{self, Invite as Code, InviteError};
use crate::node::{Shared, request_restart, rtmp_url};
use crate::settings::{self, Applies};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use streamr_coordinator::api::normalize_invite_code;
use streamr_media::SourceKind;
use streamr_web::{
    ApiError, ApiFuture, FriendStatus, Invite, InviteRequest, Joined, LastCrash, MeshStream,
    NatStatus, NodeApi, Overview, PeerStatus, SettingView, Settings, Status, StreamStatus,
    UpdateNotice,
};
use tracing::info;

/// Longest wait for an inviter to answer (the promise to the user is 20 s, all told).
const JOIN_DIAL_LIMIT: Duration = Duration::from_secs(15);
/// An invite's life when none is asked for.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(7 * 86_400);

/// The node, as the web server sees it.
#[derive(Debug)]
pub struct Api {
    shared: Arc<Shared>,
    /// The newest crash report and when the crash folder was last looked at: the overview is built every
    /// second for the live page, the folder is read at most every [`CRASH_LOOK_EVERY`].
    crash: parking_lot::Mutex<(Option<std::time::Instant>, Option<LastCrash>)>,
}

/// How often the dashboard looks for a new crash report.
const CRASH_LOOK_EVERY: Duration = Duration::from_secs(5);

impl Api {
    /// The API of the node that `shared` describes.
    pub fn new(shared: Arc<Shared>) -> Self {
        Api {
            shared,
            crash: parking_lot::Mutex::new((None, None)),
        }
    }

    /// The newest crash report in the data dir (looked for at most every [`CRASH_LOOK_EVERY`]).
    fn last_crash(&self) -> Option<LastCrash> {
        let mut c = self.crash.lock();
        if c.0.is_none_or(|t| t.elapsed() >= CRASH_LOOK_EVERY) {
            c.1 = crate::crash::last_crash(&self.shared.data_dir).map(|r| LastCrash {
                time: r.time,
                text: r.text,
            });
            c.0 = Some(std::time::Instant::now());
        }
        c.1.clone()
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The addresses an invite carries, best first: those that work from outside (confirmed public or
/// UPnP addresses, then relay circuits), then the others as fallback (global ones not confirmed, e.g. an
/// IPv6 address behind the router's firewall, then LAN, then loopback); QUIC before TCP within each;
/// without our own `/p2p/<id>` suffix, without duplicates. Both address families stay in when the node
/// has both: if the first [`invite::MAX_ADDRS`] are all IPv4 (or all IPv6), the other family's best
/// address replaces the last of them, so a friend on an IPv6-only or IPv4-only network still has a way in.
pub fn invite_addrs(external: &[String], listen: &[String]) -> Vec<Multiaddr> {
    let parse = |s: &String| -> Option<Multiaddr> {
        let mut a: Multiaddr = s.parse().ok()?;
        // Our own id is in the invite already; a circuit address keeps the relay's.
        if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
            a.pop();
        }
        Some(a)
    };
    let ext: Vec<Multiaddr> = external.iter().filter_map(parse).collect();
    let (circuits, public): (Vec<_>, Vec<_>) = ext.into_iter().partition(is_circuit);
    let lst: Vec<Multiaddr> = listen.iter().filter_map(parse).collect();
    let (loopback, rest): (Vec<_>, Vec<_>) = lst.into_iter().partition(is_loopback);
    let (lan, global): (Vec<_>, Vec<_>) = rest
        .into_iter()
        .partition(streamr_mesh::net::addrbook::is_local);
    let mut all: Vec<Multiaddr> = Vec::new();
    for mut class in [public, circuits, global, lan, loopback] {
        // Stable: QUIC first, the class's own order otherwise.
        class.sort_by_key(|a| !is_quic(a));
        for a in class {
            if !is_unspecified(&a) && !all.contains(&a) {
                all.push(a);
            }
        }
    }
    let mut out: Vec<Multiaddr> = all.iter().take(invite::MAX_ADDRS).cloned().collect();
    for family in [Family::V4, Family::V6] {
        let Some(best) = all.iter().find(|a| direct_family(a) == Some(family)) else {
            continue;
        };
        if out.contains(best) {
            continue;
        }
        // `best` is missing, so `out` is full: it replaces the last address whose family (or class of
        // circuits) is still there without it.
        let replace = (0..out.len()).rev().find(|&i| {
            let f = direct_family(&out[i]);
            f != Some(family) && out.iter().filter(|b| direct_family(b) == f).count() > 1
        });
        if let Some(i) = replace {
            out[i] = best.clone();
        }
    }
    // Back to best-first order.
    out.sort_by_key(|a| all.iter().position(|b| b == a));
    out
}

/// An address family, for [`invite_addrs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// The family of a direct address; None for a relay circuit (its family is the relay's, not ours) and
/// for names.
fn direct_family(a: &Multiaddr) -> Option<Family> {
    if is_circuit(a) {
        return None;
    }
    match a.iter().next() {
        Some(Protocol::Ip4(_)) => Some(Family::V4),
        Some(Protocol::Ip6(_)) => Some(Family::V6),
        _ => None,
    }
}

fn is_quic(a: &Multiaddr) -> bool {
    a.iter()
        .any(|p| matches!(p, Protocol::QuicV1 | Protocol::Quic))
}

fn is_circuit(a: &Multiaddr) -> bool {
    a.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

fn is_loopback(a: &Multiaddr) -> bool {
    match a.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

fn is_unspecified(a: &Multiaddr) -> bool {
    match a.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_unspecified(),
        Some(Protocol::Ip6(ip)) => ip.is_unspecified(),
        _ => false,
    }
}

impl Api {
    fn build_status(&self, local: bool) -> Status {
        let shared = &self.shared;
        let config = shared.config();
        let mesh_now = shared.mesh.active();
        let mesh = mesh_now.as_ref().map(|m| m.status());
        let streams = shared
            .streams
            .hubs()
            .into_iter()
            .filter(|hub| !hub.is_idle())
            .map(|hub| {
                (
                    hub.snapshot(),
                    mesh_now.as_ref().and_then(|m| m.stream(&hub)),
                )
            })
            .map(|(h, m)| StreamStatus {
                local_publisher: h.live && h.source == Some(SourceKind::Publisher),
                live: h.live,
                players: h.players,
                bitrate_bps: h.bitrate_bps,
                frames: h.frames_in,
                bytes_in: h.bytes_in,
                frames_out: h.frames_out,
                bytes_out: h.bytes_out,
                dropped_frames: h.dropped,
                origin: m.as_ref().map(|m| m.origin.clone()),
                upstream: m.as_ref().and_then(|m| m.upstream.clone()),
                hops: m.as_ref().map(|m| m.hops),
                subscribers: h.peers,
                name: h.name,
            })
            .collect();
        let (mesh_streams, peers, nat, listen_addrs, external_addrs, upload_kbps) =
            match (mesh, &mesh_now) {
                (Some(mesh), Some(m)) => {
                    let mesh_streams = mesh
                        .known
                        .iter()
                        .map(|k| {
                            let origin = k.id.origin.to_string();
                            MeshStream {
                                play_as: streamr_mesh::play_name(&k.id.name, &k.id.origin),
                                name: k.id.name.clone(),
                                origin,
                                providers: k.providers,
                                min_hops: k.min_hops,
                            }
                        })
                        .collect();
                    let peers = mesh
                        .peers
                        .into_iter()
                        .map(|p| PeerStatus {
                            peer_id: p.peer_id,
                            connection: p.connection.to_string(),
                            rtt_ms: p.rtt_ms,
                            addr: p.addr,
                            direct_after_ms: p.direct_after_ms,
                        })
                        .collect();
                    let n = &mesh.nat;
                    let ms = m.stats();
                    let nat = NatStatus {
                        reachability: n.reachability.to_string(),
                        external_addrs: n.public_addrs.iter().map(|a| a.to_string()).collect(),
                        relays: n.relays.iter().map(|p| p.to_string()).collect(),
                        upnp: n.upnp.clone(),
                        hint: n.hint.clone(),
                        relay_service: n.relay_service,
                        hole_punch_attempts: n.punch_attempts,
                        hole_punch_successes: n.punch_successes,
                        hole_punch_failures: n.punch_failures.clone(),
                        upgrades: n.upgrades,
                        time_to_direct_p50_ms: n.time_to_direct_ms.map(|x| x.0),
                        time_to_direct_max_ms: n.time_to_direct_ms.map(|x| x.1),
                        relayed_bytes_sent: ms.relayed_bytes_sent.load(Relaxed),
                        relayed_bytes_received: ms.relayed_bytes_received.load(Relaxed),
                    };
                    (
                        mesh_streams,
                        peers,
                        nat,
                        mesh.listen_addrs,
                        mesh.external_addrs,
                        mesh.upload_kbps,
                    )
                }
                _ => (
                    Vec::new(),
                    Vec::new(),
                    NatStatus {
                        reachability: "off".into(),
                        upnp: "off".into(),
                        hint: "The node is stopped.".into(),
                        ..Default::default()
                    },
                    Vec::new(),
                    Vec::new(),
                    0,
                ),
            };
        let rtmp_addr = *shared.rtmp_addr.read();
        Status {
            peer_id: shared.peer_id.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            rtmp_listen: rtmp_addr.to_string(),
            http_listen: shared.http_addr.to_string(),
            rtmp_url: rtmp_url(rtmp_addr),
            publish_key_required: config.publish_key_required(),
            publish_key: local.then(|| shared.publish_key.clone()),
            uptime_secs: shared.started.elapsed().as_secs(),
            listen_addrs,
            external_addrs,
            peers,
            streams,
            mesh_streams,
            upload_kbps,
            max_upload_kbps: config.max_upload_kbps,
            nat,
            coordinator: shared.coordinator().map(|c| c.status()),
        }
    }

    async fn do_invite(shared: Arc<Shared>, req: InviteRequest) -> Result<Invite, ApiError> {
        let Some(mesh) = shared.mesh.active() else {
            return Err(ApiError::with_status(
                409,
                "your node is stopped: press Start first, so that your friend can reach it",
            ));
        };
        let stream = req
            .stream
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if let Some(s) = &stream {
            streamr_edge::names::validate(s).map_err(|e| ApiError {
                field: Some("stream".into()),
                ..ApiError::bad_request(e.to_string())
            })?;
        }
        let expiry = match req.expires.as_deref() {
            None => Some(DEFAULT_EXPIRY),
            Some(e) => invite::parse_expiry(e).map_err(|e| ApiError {
                field: Some("expires".into()),
                ..ApiError::bad_request(e)
            })?,
        };
        let status = mesh.status();
        let addrs = invite_addrs(&status.external_addrs, &status.listen_addrs);
        let nickname = shared.config().nickname.trim().to_string();
        let expires = expiry.map(|d| now_unix() + d.as_secs());
        let code = Code {
            peer_id: shared.peer_id,
            addrs,
            stream,
            nickname: (!nickname.is_empty()).then_some(nickname),
            expires,
        }
        .encode(&shared.key)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        // With a coordinator, the same invite under a code short enough to read aloud.
        let (short_code, short_code_expires, short_code_error) = match shared.coordinator() {
            None => (None, None, None),
            Some(c) => match c.short_code(&code).await {
                Ok((short, until)) => (Some(short), Some(until), None),
                Err(e) => (None, None, Some(e)),
            },
        };
        Ok(Invite {
            link: Code::link(&code),
            code,
            expires,
            short_code,
            short_code_expires,
            short_code_error,
        })
    }

    async fn do_join(shared: Arc<Shared>, text: String) -> Result<Joined, ApiError> {
        // A short code (10 letters and digits) stands for a long one at the coordinator.
        let text = match normalize_invite_code(text.trim()) {
            None => text,
            Some(short) => match shared.coordinator() {
                Some(c) => c
                    .resolve_short_code(&short)
                    .await
                    .map_err(|(status, e)| ApiError {
                        field: Some("code".into()),
                        ..ApiError::with_status(status, e)
                    })?,
                None => {
                    return Err(ApiError {
                        field: Some("code".into()),
                        ..ApiError::bad_request(
                            "this is a short code, which only works through a coordinator, and this node has \
                             none: ask your friend for the long code, or set a coordinator in Settings",
                        )
                    });
                }
            },
        };
        let invite = Code::decode(&text, now_unix()).map_err(|e| {
            let status = match e {
                InviteError::Expired { .. } => 410,
                _ => 400,
            };
            ApiError {
                field: Some("code".into()),
                ..ApiError::with_status(status, e.to_string())
            }
        })?;
        if invite.peer_id == shared.peer_id {
            return Err(ApiError::bad_request(
                "this is your own invite: send it to a friend, and paste the code they send you here",
            ));
        }
        let Some(mesh) = shared.mesh.active() else {
            return Err(ApiError::with_status(
                409,
                "your node is stopped: press Start first, then join",
            ));
        };
        let who = invite
            .nickname
            .clone()
            .unwrap_or_else(|| "your friend".to_string());
        if invite.addrs.is_empty() {
            return Err(ApiError::bad_request(format!(
                "this invite has no address to reach {who}'s node: ask them for a new invite while their node is running"
            )));
        }
        if let Err(f) = mesh
            .dial(invite.peer_id, invite.addrs.clone(), JOIN_DIAL_LIMIT)
            .await
        {
            let mut details: Vec<String> = f.tried.iter().map(|a| format!("tried {a}")).collect();
            details.push(format!("what went wrong: {}", f.reason));
            return Err(ApiError {
                status: 502,
                error: format!(
                    "could not reach {who}'s node. Check that their streamr-node is running and shows \
                     \"Running\", that both of you are online, and that no firewall blocks streamr-node; \
                     then try again, or ask for a new invite if their internet connection changed"
                ),
                field: None,
                details,
            });
        }
        // Reached: remember them (atomically: on a failed save nothing is half-saved).
        let friend = Friend {
            peer_id: invite.peer_id.to_string(),
            nickname: invite.nickname.clone(),
            addrs: invite.addrs.iter().map(|a| a.to_string()).collect(),
            added: now_unix(),
        };
        shared.friends.lock().upsert(friend).map_err(|e| {
            ApiError::with_status(
                500,
                format!("connected, but cannot save the friend list ({e:#}): check that the data folder is writable"),
            )
        })?;
        shared.friend_set.insert(invite.peer_id);
        info!(friend = %invite.peer_id, nickname = ?invite.nickname, "joined a friend");
        let message = match &invite.stream {
            Some(s) => format!("You're connected to {who}. Opening their stream “{s}”…"),
            None => format!(
                "You're connected to {who}. Their streams show up on your home page when they go live."
            ),
        };
        Ok(Joined {
            peer_id: invite.peer_id.to_string(),
            nickname: invite.nickname,
            stream: invite.stream,
            message,
        })
    }

    async fn do_set_running(shared: Arc<Shared>, run: bool) -> Result<(), ApiError> {
        let _g = shared.control.lock().await;
        NodeState { paused: !run }
            .save(&shared.data_dir)
            .map_err(|e| ApiError::with_status(500, format!("{e:#}")))?;
        let _ = shared.want_running.send_replace(run);
        let mut running = shared.running.subscribe();
        let reached =
            tokio::time::timeout(Duration::from_secs(15), running.wait_for(|r| *r == run)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ if run => Err(ApiError::with_status(
                500,
                "the node could not start: see its log; another program may use its ports (change them in Settings)",
            )),
            _ => Err(ApiError::with_status(500, "the node did not stop in time")),
        }
    }
}

/// A setting's value as JSON (secrets shown as "set").
fn values(config: &Config) -> serde_json::Map<String, serde_json::Value> {
    let mut m = match serde_json::to_value(config) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    if let Some(v) = m.get_mut("http_password")
        && !v.is_null()
    {
        *v = serde_json::Value::String("set".into());
    }
    m
}

fn file_values(f: &FileConfig) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(f) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// Settings the API never changes: secrets (set with their own command).
fn editable(key: &str) -> bool {
    key != "http_password"
}

impl Api {
    fn build_settings(&self, message: Option<String>) -> Settings {
        let shared = &self.shared;
        let now = values(&shared.config());
        let saved = config::read_file(&shared.data_dir)
            .map(|f| file_values(&f))
            .unwrap_or_default();
        let flags = file_values(&shared.flags);
        let settings = settings::docs()
            .into_iter()
            .map(|d| SettingView {
                key: d.key.to_string(),
                value: now.get(d.key).cloned().unwrap_or(serde_json::Value::Null),
                saved: if d.key == "http_password" {
                    None
                } else {
                    saved.get(d.key).cloned()
                },
                default: d.default.clone(),
                doc: d.doc.clone(),
                applies: d.applies.as_str().to_string(),
                overridden: flags
                    .contains_key(d.key)
                    .then(|| format!("{} or {}", d.flag, d.env)),
                editable: editable(d.key),
            })
            .collect();
        Settings {
            settings,
            restart_needed: shared.restart_needed.load(Relaxed),
            message,
        }
    }

    async fn do_update_settings(
        self: Arc<Self>,
        changes: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Settings, ApiError> {
        let shared = self.shared.clone();
        let _g = shared.control.lock().await;
        let docs: BTreeMap<&str, settings::SettingDoc> =
            settings::docs().into_iter().map(|d| (d.key, d)).collect();
        let field_err = |key: &str, msg: String| ApiError {
            field: Some(key.to_string()),
            ..ApiError::bad_request(msg)
        };
        // Each value on its own first, so that the message names the one at fault.
        for (k, v) in &changes {
            let Some(d) = docs.get(k.as_str()) else {
                return Err(field_err(k, format!("there is no setting called {k:?}")));
            };
            if !editable(k) {
                return Err(field_err(
                    k,
                    "set the password with the command `streamr-node password`".into(),
                ));
            }
            if v.is_null() {
                continue;
            }
            let one = serde_json::Value::Object([(k.clone(), v.clone())].into_iter().collect());
            if let Err(e) = serde_json::from_value::<FileConfig>(one) {
                return Err(field_err(
                    k,
                    format!(
                        "{k}: {v} is not a valid value ({e}); expected {} (default {})",
                        d.value, d.default
                    ),
                ));
            }
        }
        let file = config::read_file(&shared.data_dir)
            .map_err(|e| ApiError::with_status(500, format!("{e:#}")))?;
        let mut merged = file_values(&file);
        for (k, v) in &changes {
            if v.is_null() {
                merged.remove(k);
            } else {
                merged.insert(k.clone(), v.clone());
            }
        }
        let new_file: FileConfig = serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|e| ApiError::bad_request(format!("{e}")))?;
        let mut candidate = Config::defaults(shared.data_dir.clone());
        candidate.apply_file(new_file.clone());
        candidate.apply_file(shared.flags.clone());
        if let Err(e) = candidate.validate() {
            let msg = format!("{e:#}");
            let field = changes.keys().find(|k| msg.contains(k.as_str())).cloned();
            return Err(ApiError {
                field,
                ..ApiError::bad_request(msg)
            });
        }
        let text = toml::to_string_pretty(&new_file)
            .map_err(|e| ApiError::with_status(500, format!("cannot write the settings: {e}")))?;
        let private = new_file.http_password.as_ref().is_some_and(|p| p.is_some());
        datafile::write_atomic(
            &shared.data_dir.join(config::CONFIG_FILE),
            text.as_bytes(),
            private,
        )
        .map_err(|e| ApiError::with_status(500, format!("{e:#}")))?;

        // What changed in effect, and how each applies.
        let before = values(&shared.config());
        let after = values(&candidate);
        let boot = values(&shared.boot_config);
        let mut reconnect = false;
        let mut live = false;
        for d in docs.values() {
            let changed = before.get(d.key) != after.get(d.key);
            match d.applies {
                Applies::Live if changed => live = true,
                Applies::Reconnect if changed => reconnect = true,
                _ => {}
            }
        }
        let restart = docs
            .values()
            .any(|d| d.applies == Applies::Restart && boot.get(d.key) != after.get(d.key));
        {
            // Settings that need a restart keep their running value until then.
            let mut c = shared.config.write();
            let keep = c.clone();
            *c = candidate;
            c.http_listen = keep.http_listen;
            c.log = keep.log;
            c.log_format = keep.log_format;
            c.update_url = keep.update_url;
            c.coordinator = keep.coordinator;
            c.http_password = keep.http_password;
        }
        shared.restart_needed.store(restart, Relaxed);
        if reconnect && *shared.running.borrow() {
            shared.reconnect.send_modify(|n| *n += 1);
            // Wait for the engine to be back, so that the page shows the new state.
            let mut running = shared.running.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(3), running.wait_for(|r| !*r)).await;
            let _ = tokio::time::timeout(Duration::from_secs(15), running.wait_for(|r| *r)).await;
        }
        let mut words = vec!["Saved.".to_string()];
        if reconnect {
            words.push(
                "Applied: the node reconnected (OBS and players reconnect by themselves).".into(),
            );
        } else if live {
            words.push("Applied.".into());
        }
        if restart {
            words.push("Some changes take effect after a restart: press Restart now.".into());
        }
        Ok(self.build_settings(Some(words.join(" "))))
    }
}

impl NodeApi for Api {
    fn status(&self, local: bool) -> Status {
        self.build_status(local)
    }

    fn metrics(&self) -> String {
        self.shared.metrics()
    }

    fn overview(&self) -> Overview {
        let shared = &self.shared;
        let status = self.build_status(true);
        let friends = shared
            .friends
            .lock()
            .list()
            .iter()
            .map(|f| {
                let peer = status.peers.iter().find(|p| p.peer_id == f.peer_id);
                FriendStatus {
                    peer_id: f.peer_id.clone(),
                    nickname: f.nickname.clone(),
                    online: peer.is_some(),
                    connection: peer.map(|p| p.connection.clone()),
                    rtt_ms: peer.and_then(|p| p.rtt_ms),
                }
            })
            .collect();
        Overview {
            running: *shared.running.borrow(),
            nickname: shared.config().nickname,
            friends,
            restart_needed: shared.restart_needed.load(Relaxed),
            // A signed release manifest's notice first, else the coordinator's: one notice either way.
            update: shared
                .updates
                .latest()
                .map(|u| UpdateNotice {
                    version: u.version,
                    url: u.download_url,
                })
                .or_else(|| {
                    shared
                        .coordinator()
                        .and_then(|c| c.update_notice())
                        .map(|(version, url)| UpdateNotice { version, url })
                }),
            last_crash: self.last_crash(),
            status,
        }
    }

    fn streams(&self) -> streamr_media::Streams {
        self.shared.streams.clone()
    }

    fn invite(&self, request: InviteRequest) -> ApiFuture<Invite> {
        Box::pin(Self::do_invite(self.shared.clone(), request))
    }

    fn join(&self, code: String) -> ApiFuture<Joined> {
        Box::pin(Self::do_join(self.shared.clone(), code))
    }

    fn set_running(&self, running: bool) -> ApiFuture<()> {
        Box::pin(Self::do_set_running(self.shared.clone(), running))
    }

    fn settings(&self) -> Settings {
        self.build_settings(None)
    }

    fn update_settings(
        &self,
        changes: serde_json::Map<String, serde_json::Value>,
    ) -> ApiFuture<Settings> {
        let me = Arc::new(Api::new(self.shared.clone()));
        Box::pin(me.do_update_settings(changes))
    }

    fn restart(&self) -> ApiFuture<()> {
        let shared = self.shared.clone();
        Box::pin(async move {
            info!("restart requested from the dashboard");
            request_restart(&shared);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite_strings(external: &[String], listen: &[String]) -> Vec<String> {
        invite_addrs(external, listen)
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    #[test]
    fn invites_carry_outside_addresses_first_and_never_unspecified_ones() {
        let me = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let relay = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp";
        let external = vec![
            format!("/ip4/203.0.113.1/udp/4001/quic-v1/p2p/{relay}/p2p-circuit/p2p/{me}"),
            format!("/ip4/198.51.100.7/udp/4001/quic-v1/p2p/{me}"),
        ];
        let listen = vec![
            format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{me}"),
            format!("/ip4/192.168.1.20/udp/4001/quic-v1/p2p/{me}"),
            format!("/ip4/0.0.0.0/tcp/4001/p2p/{me}"),
            format!("/ip4/198.51.100.7/udp/4001/quic-v1/p2p/{me}"),
        ];
        let got = invite_strings(&external, &listen);
        assert_eq!(
            got,
            vec![
                "/ip4/198.51.100.7/udp/4001/quic-v1".to_string(),
                format!("/ip4/203.0.113.1/udp/4001/quic-v1/p2p/{relay}/p2p-circuit"),
                "/ip4/192.168.1.20/udp/4001/quic-v1".to_string(),
                "/ip4/127.0.0.1/udp/4001/quic-v1".to_string(),
            ]
        );
    }

    #[test]
    fn invites_carry_both_address_families_when_the_node_has_both() {
        let me = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let relay = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp";
        // A dual-stack home: public IPv4 by UPnP, two relays, and an IPv6 address behind the router's
        // firewall (global, so not LAN, but not confirmed from outside).
        let external = vec![
            format!("/ip4/198.51.100.7/tcp/4001/p2p/{me}"),
            format!("/ip4/198.51.100.7/udp/4001/quic-v1/p2p/{me}"),
            format!("/ip4/203.0.113.1/udp/4001/quic-v1/p2p/{relay}/p2p-circuit/p2p/{me}"),
            format!("/ip4/203.0.113.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{me}"),
            format!("/ip4/203.0.113.2/udp/4001/quic-v1/p2p/{relay}/p2p-circuit/p2p/{me}"),
            format!("/ip4/203.0.113.2/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{me}"),
        ];
        let listen = vec![
            format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{me}"),
            format!("/ip6/::1/udp/4001/quic-v1/p2p/{me}"),
            format!("/ip4/192.168.1.20/tcp/4001/p2p/{me}"),
            format!("/ip6/2001:db8:1::20/tcp/4001/p2p/{me}"),
            format!("/ip6/2001:db8:1::20/udp/4001/quic-v1/p2p/{me}"),
            format!("/ip4/192.168.1.20/udp/4001/quic-v1/p2p/{me}"),
        ];
        let got = invite_strings(&external, &listen);
        assert_eq!(
            got,
            vec![
                "/ip4/198.51.100.7/udp/4001/quic-v1".to_string(),
                "/ip4/198.51.100.7/tcp/4001".to_string(),
                format!("/ip4/203.0.113.1/udp/4001/quic-v1/p2p/{relay}/p2p-circuit"),
                format!("/ip4/203.0.113.2/udp/4001/quic-v1/p2p/{relay}/p2p-circuit"),
                format!("/ip4/203.0.113.1/tcp/4001/p2p/{relay}/p2p-circuit"),
                // In place of the second relay's TCP circuit: the IPv6 family's best.
                "/ip6/2001:db8:1::20/udp/4001/quic-v1".to_string(),
            ]
        );
        // An IPv6-only host: only IPv6 (no IPv4 to make room for).
        let v6_only = vec![
            format!("/ip6/2001:db8:1::20/udp/4001/quic-v1/p2p/{me}"),
            format!("/ip6/::1/udp/4001/quic-v1/p2p/{me}"),
        ];
        let got = invite_strings(&[], &v6_only);
        assert_eq!(
            got,
            [
                "/ip6/2001:db8:1::20/udp/4001/quic-v1",
                "/ip6/::1/udp/4001/quic-v1"
            ]
        );
    }
}
