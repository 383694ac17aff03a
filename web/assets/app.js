// The dashboard: one page, several views (home, watch, join, settings), kept current by the node's event
// stream (/api/v1/events). Nothing here needs a reload: the event stream reconnects by itself, and every
// action answers in place.
"use strict";

const $ = (id) => document.getElementById(id);
let state = null; // the last update from the node
let traffic = { in: 0, out: 0 }; // the last second's traffic, bytes/s
const HISTORY = 300;
let history = []; // [{in, out}] oldest first, one per second
let player = null;
let watching = null;
let settingsLoaded = false;

// ---------- talking to the node ----------

function csrfToken() {
  const name = "streamr_csrf_" + (location.port || "80") + "=";
  const c = document.cookie.split(";").map((s) => s.trim()).find((s) => s.startsWith(name));
  return c ? c.slice(name.length) : "";
}

class ApiFailure extends Error {
  constructor(message, field, details) {
    super(message);
    this.field = field || null;
    this.details = details || [];
  }
}

async function api(method, path, body) {
  let res;
  try {
    res = await fetch(path, {
      method,
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch (e) {
    throw new ApiFailure("Can't reach your node. Is streamr-node still running?");
  }
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    const msg = (data && data.error) || ("The node answered " + res.status + ".");
    throw new ApiFailure(msg, data && data.field, data && data.details);
  }
  return data;
}

// ---------- small helpers ----------

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 2500);
}

function setStatus(id, text, kind) {
  const s = $(id);
  s.textContent = text || "";
  s.className = "status" + (kind ? " " + kind : "");
}

function shortId(id) {
  return id ? id.slice(0, 8) + "…" + id.slice(-4) : "";
}

function mbps(bytesPerSec) {
  return (bytesPerSec * 8 / 1e6).toFixed(1);
}

function kbpsText(kbps) {
  return kbps >= 1000 ? (kbps / 1000).toFixed(1) + " Mbit/s" : kbps + " kbit/s";
}

async function copyField(id) {
  const f = $(id);
  const text = f.value;
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {
    f.select();
    document.execCommand("copy");
  }
  toast("Copied");
}

// ---------- views ----------

function currentView() {
  if (location.pathname === "/join") return "join";
  if (location.hash === "#settings") return "settings";
  if (location.hash.startsWith("#watch/")) return "watch";
  return "home";
}

function show(view) {
  for (const v of ["home", "watch", "join", "settings"]) $("view-" + v).hidden = v !== view;
  for (const v of ["home", "join", "settings"]) $("nav-" + v).classList.toggle("active", v === view);
  if (view !== "watch") stopPlayer();
  if (view === "settings") loadSettings();
  if (view === "join") {
    const code = location.hash.length > 1 ? decodeURIComponent(location.hash.slice(1)) : "";
    if (code && !$("join-code").value) $("join-code").value = code;
  }
  if (view === "watch") {
    const name = decodeURIComponent(location.hash.slice("#watch/".length));
    if (name !== watching) startPlayer(name);
  }
}

function go(path) {
  history_push(path);
  show(currentView());
}

function history_push(path) {
  if (location.pathname + location.hash !== path) window.history.pushState(null, "", path);
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a[data-view]");
  if (a) {
    ev.preventDefault();
    go(a.getAttribute("href"));
    return;
  }
  const c = ev.target.closest("button.copy");
  if (c) copyField(c.dataset.copy);
});
window.addEventListener("popstate", () => show(currentView()));
window.addEventListener("hashchange", () => show(currentView()));

// ---------- live updates ----------

let source = null;
function connect() {
  source = new EventSource("/api/v1/events");
  source.addEventListener("open", () => { $("connection-banner").hidden = true; });
  source.addEventListener("history", (ev) => {
    try { history = JSON.parse(ev.data).slice(-HISTORY); } catch (e) { history = []; }
    drawChart();
  });
  source.addEventListener("update", (ev) => {
    $("connection-banner").hidden = true;
    const u = JSON.parse(ev.data);
    traffic = u.traffic || traffic;
    render(u);
  });
  source.addEventListener("error", () => {
    $("connection-banner").hidden = false;
    // The browser retries by itself while the stream is "connecting"; a refused answer closes it.
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(connect, 2000);
    }
  });
}

// One point a second on the chart, with the node's last reported traffic (an idle node reports nothing).
setInterval(() => {
  history.push({ in: traffic.in, out: traffic.out });
  if (history.length > HISTORY) history.shift();
  drawChart();
}, 1000);

// ---------- rendering ----------

function friendName(peerId) {
  const f = state && state.friends.find((x) => x.peer_id === peerId);
  if (f) return f.nickname || "Friend " + shortId(peerId);
  if (state && peerId === state.status.peer_id) return "you";
  return null;
}

function render(u) {
  state = u;
  const s = u.status;
  // Running or stopped.
  const pill = $("state-pill");
  pill.textContent = u.running ? "Running" : "Stopped";
  pill.className = "pill " + (u.running ? "on" : "off");
  const power = $("power-button");
  power.hidden = false;
  power.textContent = u.running ? "Stop" : "Start";
  power.disabled = false;
  $("paused-banner").hidden = u.running;
  $("restart-banner").hidden = !u.restart_needed;
  const up = $("update-banner");
  up.hidden = !u.update;
  if (u.update) {
    up.replaceChildren("A new version of streamr-node (" + u.update.version + ") is out: ",
      el("a", { href: u.update.url, target: "_blank", rel: "noopener", text: "download it" }), ".");
  }
  const crash = $("crash-banner");
  crash.hidden = !u.last_crash;
  if (u.last_crash) {
    $("crash-time").textContent = "(" + u.last_crash.time + ")";
    if ($("crash-report").value !== u.last_crash.text) $("crash-report").value = u.last_crash.text;
  }
  $("hello-title").textContent = u.nickname ? u.nickname + "'s node" : "Your node";
  $("reach-text").textContent = reachText(u);

  renderStreams(u);
  renderFriends(u);
  renderObs(u);
  renderUpload(u);
  renderCoordinator(u);
}

function reachText(u) {
  if (!u.running) return "Stopped. Press Start to share and watch again.";
  const n = u.status.nat;
  let t;
  if (n.reachability === "public") t = "Friends can reach your node directly.";
  else if (n.reachability === "private") {
    t = n.relays.length
      ? "Your router hides your node, but friends reach it through a relay, and directly when both routers allow it."
      : "Your router hides your node. Looking for a relay so that friends can reach you…";
  } else return "Checking how friends can reach you… (it takes a friend's node: invite one, or join one)";
  if (n.hint) t += " " + n.hint;
  return t;
}

function playButton(name) {
  return el("button", { type: "button", class: "play", "data-stream": name, onclick: () => go("/#watch/" + encodeURIComponent(name)) }, "▶ Play");
}

function renderStreams(u) {
  const s = u.status;
  const local = s.streams.filter((x) => x.local_publisher && x.live);
  $("local-streams").replaceChildren(...local.map((x) =>
    el("li", { "data-stream": x.name },
      el("span", { class: "dot live" }),
      el("span", { class: "grow" }, el("span", { class: "name", text: x.name }),
        el("span", { class: "muted small", text: " · " + mbps(x.bitrate_bps / 8) + " Mbit/s · watching here: " + x.players + " · other nodes: " + x.subscribers })),
      playButton(x.name))));
  $("local-empty").hidden = local.length > 0;
  const names = {};
  for (const m of s.mesh_streams) names[m.name] = (names[m.name] || 0) + 1;
  const mesh = s.mesh_streams.filter((m) => m.origin !== s.peer_id);
  $("mesh-streams").replaceChildren(...mesh.map((m) => {
    const who = friendName(m.origin);
    const key = names[m.name] > 1 && !who ? m.play_as : m.name;
    return el("li", { "data-stream": m.name },
      el("span", { class: "dot live" }),
      el("span", { class: "grow" }, el("span", { class: "name", text: m.name }),
        el("span", { class: "muted small", text: " · from " + (who || "node " + shortId(m.origin)) })),
      playButton(key));
  }));
  // The coordinator's streams that the mesh has not shown this node yet.
  const c = s.coordinator;
  const known = new Set(s.mesh_streams.map((m) => m.name + "@" + m.origin));
  const network = c ? c.streams.filter((n) => n.origin_peer !== s.peer_id && !known.has(n.name + "@" + n.origin_peer)) : [];
  $("mesh-streams").append(...network.map((n) => {
    const who = friendName(n.origin_peer);
    return el("li", { "data-stream": n.name, "data-source": "coordinator" },
      el("span", { class: "dot live" }),
      el("span", { class: "grow" }, el("span", { class: "name", text: n.name }),
        el("span", { class: "muted small", text: " · from " + (who || "node " + shortId(n.origin_peer)) + " · " +
          n.viewers + " watching · via the coordinator" })),
      playButton(n.play_as));
  }));
  $("mesh-empty").hidden = mesh.length + network.length > 0;
}

function bytesText(b) {
  if (b >= 1e9) return (b / 1e9).toFixed(2) + " GB";
  if (b >= 1e6) return (b / 1e6).toFixed(1) + " MB";
  return Math.round(b / 1e3) + " kB";
}

function renderCoordinator(u) {
  const c = u.status.coordinator;
  $("coordinator-card").hidden = !c;
  if (!c) return;
  const state = $("coordinator-state");
  const help = $("coordinator-help");
  if (c.online) {
    state.textContent = "Connected to " + c.url + (c.registered ? "" : " (registering…)");
    state.className = "status ok";
    help.hidden = true;
  } else if (c.last_error) {
    state.textContent = "Coordinator unreachable";
    state.className = "status bad";
    help.hidden = false;
    // The technical error goes to Details; the card says what it means for the user.
    help.textContent = "Your node keeps working: friends can still watch and relay. The coordinator at " + c.url +
      " does not answer, so earnings and the network's stream list wait." +
      " It tries again by itself; if this lasts, check the coordinator address in Settings and your internet connection." +
      (c.queued_receipts + c.queued_session_events > 0
        ? " " + (c.queued_receipts + c.queued_session_events) + " reports wait on this computer until it answers." : "");
  } else {
    state.textContent = "Contacting " + c.url + "…";
    state.className = "status";
    help.hidden = true;
  }
  const figures = $("coordinator-figures");
  figures.hidden = !c.earnings && !c.trust;
  if (c.earnings) {
    const e = c.earnings;
    $("coordinator-earnings").textContent = e.earnings_today.toFixed(4) + " today, " + e.earnings_total.toFixed(4) +
      " in all (" + e.rate_per_gb + " per GB relayed)";
    $("coordinator-bytes").textContent = "Relayed and signed for by the receiving nodes: " + bytesText(e.verified_bytes) +
      " of " + bytesText(e.claimed_bytes) + " reported. Only signed bytes are paid.";
  }
  if (c.trust) {
    $("coordinator-trust").textContent = c.trust.score + " / 100";
    $("coordinator-reasons").replaceChildren(...c.trust.reasons.map((r) => el("li", { text: r })));
  }
  const v = $("coordinator-version");
  v.hidden = !c.update_available || !c.latest_version;
  if (!v.hidden) {
    const lv = c.latest_version;
    v.replaceChildren("Newer version: " + lv.version + (lv.notes ? " (" + lv.notes + ")" : "") + " ",
      ...(/^https?:\/\//.test(lv.url || "") ? [el("a", { href: lv.url, target: "_blank", rel: "noopener", text: "read more" })] : []));
  }
  const more = [
    "Sessions open: " + c.sessions.length,
    "Receipts signed for what this node received: " + c.receipts.signed + " (" + bytesText(c.receipts.signed_bytes) + ")",
    "Receipts from nodes this node relays to: " + c.receipts.received + " (" + bytesText(c.receipts.received_bytes) + ")" +
      (c.receipts.refused + c.receipts.refused_by_coordinator > 0
        ? ", refused: " + (c.receipts.refused + c.receipts.refused_by_coordinator) : ""),
    "Nodes to join the mesh through: " + c.bootstrap_peers.length,
    ...c.assignments.map((a) => "Assigned: " + a.stream_name + " from " + a.rtmp_url + " (" + a.state + ")"),
  ];
  if (c.queue_dropped > 0) more.push("Reports dropped because the queue was full: " + c.queue_dropped);
  if (c.last_error) more.push("Last error: " + c.last_error);
  $("coordinator-more").replaceChildren(...more.map((t) => el("li", { text: t })));
}

function renderFriends(u) {
  const peers = new Map(u.status.peers.map((p) => [p.peer_id, p]));
  $("friends").replaceChildren(...u.friends.map((f) =>
    el("li", { "data-peer": f.peer_id },
      el("span", { class: "dot" + (f.online ? " on" : "") }),
      el("span", { class: "grow" }, el("span", { class: "name", text: f.nickname || "Friend " + shortId(f.peer_id) }),
        el("span", { class: "muted small", text: f.online
          ? " · online, " + (f.connection === "direct" ? "direct" : "through a relay") + (f.rtt_ms != null ? ", " + Math.round(f.rtt_ms) + " ms" : "")
          : " · offline" })))));
  $("friends-empty").hidden = u.friends.length > 0;
  const friendIds = new Set(u.friends.map((f) => f.peer_id));
  const others = u.status.peers.filter((p) => !friendIds.has(p.peer_id));
  $("peers-summary").textContent = "Other nodes connected: " + others.length;
  $("peers").replaceChildren(...others.map((p) =>
    el("li", {}, el("span", { class: "dot on" }),
      el("span", { class: "grow", text: "node " + shortId(p.peer_id) + " · " + (p.connection === "direct" ? "direct" : "through a relay") + (p.rtt_ms != null ? " · " + Math.round(p.rtt_ms) + " ms" : "") }))));
  void peers;
}

function renderObs(u) {
  const s = u.status;
  $("obs-server").value = s.rtmp_url;
  let name = (u.nickname || "mystream").toLowerCase().replace(/[^a-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "") || "mystream";
  const mine = s.streams.find((x) => x.local_publisher);
  if (mine) name = mine.name;
  $("obs-key").value = s.publish_key_required && s.publish_key ? name + "?key=" + s.publish_key : name;
  $("obs-key-note").textContent = s.publish_key_required
    ? "The part before “?” is your stream's name (friends see it); the rest is your secret key."
    : "The stream key is your stream's name: friends see it. Any name works.";
}

function renderUpload(u) {
  const s = u.status;
  const cap = s.max_upload_kbps;
  $("upload-text").textContent = "Sharing with other nodes: " + kbpsText(s.upload_kbps) + (cap ? " of " + kbpsText(cap) + " (your limit)" : " (no limit)");
  $("upload-bar").style.width = cap ? Math.min(100, (100 * s.upload_kbps) / cap) + "%" : "0%";
  $("traffic-now").textContent = mbps(traffic.in) + " / " + mbps(traffic.out) + " Mbit/s";
}

function drawChart() {
  const c = $("chart");
  if (!c || $("view-home").hidden) return;
  const ctx = c.getContext("2d");
  const w = c.width, h = c.height;
  ctx.clearRect(0, 0, w, h);
  const pts = history.slice(-HISTORY);
  const max = Math.max(125000, ...pts.map((p) => Math.max(p.in, p.out))) * 1.15;
  ctx.strokeStyle = "#dde3ea";
  ctx.lineWidth = 1;
  for (let i = 1; i < 4; i++) {
    ctx.beginPath(); ctx.moveTo(0, (h * i) / 4); ctx.lineTo(w, (h * i) / 4); ctx.stroke();
  }
  ctx.fillStyle = "#5b6675";
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(mbps(max) + " Mbit/s", 4, 12);
  for (const [key, color] of [["in", "#1f6feb"], ["out", "#e16f24"]]) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    pts.forEach((p, i) => {
      const x = w - (pts.length - 1 - i) * (w / (HISTORY - 1));
      const y = h - (p[key] / max) * h;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

// ---------- start / stop / restart ----------

$("power-button").addEventListener("click", () => setRunning(!(state && state.running)));
$("paused-start").addEventListener("click", () => setRunning(true));

async function setRunning(run) {
  const b = $("power-button");
  b.disabled = true;
  b.textContent = run ? "Starting…" : "Stopping…";
  try {
    const o = await api("POST", run ? "/api/v1/node/start" : "/api/v1/node/stop");
    render(Object.assign({}, o, { traffic }));
    toast(run ? "Your node is running" : "Your node is stopped");
  } catch (e) {
    b.disabled = false;
    toast(e.message);
  }
}

$("restart-button").addEventListener("click", async () => {
  $("restart-button").disabled = true;
  $("restart-banner").textContent = "Restarting streamr-node… this page reconnects by itself.";
  try { await api("POST", "/api/v1/node/restart"); } catch (e) { /* the node went away: expected */ }
});

// ---------- watching ----------

function startPlayer(name) {
  stopPlayer();
  watching = name;
  $("watch-title").textContent = "Watching " + name;
  const url = "/live/" + encodeURIComponent(name) + ".flv";
  $("vlc-url").value = location.origin + url;
  const video = $("player");
  if (!window.mpegts || !mpegts.getFeatureList().mseLivePlayback) {
    setStatus("watch-status", "This browser can't play live video. Use VLC with the address below.", "bad");
    return;
  }
  setStatus("watch-status", "Connecting to the stream…");
  player = mpegts.createPlayer({ type: "flv", isLive: true, url }, {
    enableWorker: false, lazyLoad: false, liveBufferLatencyChasing: true, autoCleanupSourceBuffer: true,
  });
  player.attachMediaElement(video);
  player.on(mpegts.Events.ERROR, (type, detail, info) => {
    const code = info && info.code;
    if (code === 404) setStatus("watch-status", "“" + name + "” isn't live right now. When it starts, press Play again.", "bad");
    else setStatus("watch-status", "The stream stopped (" + (detail || type) + "). Press Play again to retry.", "bad");
  });
  player.load();
  video.muted = false;
  const p = player.play();
  if (p && p.catch) {
    p.catch(() => {
      // Browsers only autoplay muted video: play muted, and say how to get the sound.
      video.muted = true;
      const q = player && player.play();
      if (q && q.catch) q.catch(() => {});
      setStatus("watch-status", "Playing without sound: click the speaker icon to hear it.");
    });
  }
  video.onplaying = () => {
    if (!video.muted) setStatus("watch-status", "Live.", "ok");
  };
}

function stopPlayer() {
  if (player) {
    try { player.pause(); player.unload(); player.detachMediaElement(); player.destroy(); } catch (e) { /* already gone */ }
    player = null;
  }
  watching = null;
}

$("watch-close").addEventListener("click", () => go("/"));

// ---------- invites ----------

$("invite-open").addEventListener("click", () => {
  const sel = $("invite-stream");
  const local = state ? state.status.streams.filter((x) => x.local_publisher && x.live) : [];
  sel.replaceChildren(el("option", { value: "" }, "No stream, just connect"),
    ...local.map((x) => el("option", { value: x.name }, x.name)));
  if (local.length) sel.value = local[0].name;
  $("invite-ask").hidden = false;
  $("invite-result").hidden = true;
  setStatus("invite-status", "");
  $("invite-dialog").showModal();
});

$("invite-create").addEventListener("click", async () => {
  const b = $("invite-create");
  b.disabled = true;
  setStatus("invite-status", "Making the invite…");
  try {
    const body = { expires: $("invite-expires").value };
    if ($("invite-stream").value) body.stream = $("invite-stream").value;
    const inv = await api("POST", "/api/v1/invites", body);
    $("invite-qr").src = "data:image/svg+xml;base64," + btoa(inv.qr_svg);
    $("invite-code").value = inv.code;
    $("invite-link").value = inv.link;
    $("invite-short-box").hidden = !inv.short_code;
    $("invite-short").value = inv.short_code || "";
    $("invite-short-note").hidden = !inv.short_code_error;
    $("invite-short-note").textContent = inv.short_code_error || "";
    $("invite-expiry").textContent = inv.expires
      ? "Works until " + new Date(inv.expires * 1000).toLocaleString() + "."
      : "Works until you stop using this node.";
    $("invite-ask").hidden = true;
    $("invite-result").hidden = false;
    setStatus("invite-status", "");
  } catch (e) {
    setStatus("invite-status", e.message, "bad");
  } finally {
    b.disabled = false;
  }
});

// ---------- joining ----------

let joinedStream = null;
$("join-button").addEventListener("click", async () => {
  const code = $("join-code").value.trim();
  const b = $("join-button");
  $("join-details").replaceChildren();
  $("join-done").hidden = true;
  if (!code) {
    setStatus("join-status", "Paste the invite code your friend sent you.", "bad");
    return;
  }
  b.disabled = true;
  setStatus("join-status", "Connecting to your friend… (this can take up to 20 seconds)");
  try {
    const r = await api("POST", "/api/v1/join", { code });
    setStatus("join-status", r.message, "ok");
    if (r.stream) {
      // The invite names a stream: open it at once (the Join click lets the browser play sound).
      go("/#watch/" + encodeURIComponent(r.stream));
    }
    joinedStream = r.stream;
    $("join-watch").hidden = !r.stream;
    if (r.stream) $("join-watch").textContent = "▶ Watch " + r.stream;
    $("join-done").hidden = false;
  } catch (e) {
    setStatus("join-status", e.message, "bad");
    $("join-details").replaceChildren(...e.details.map((d) => el("li", { text: d })));
  } finally {
    b.disabled = false;
  }
});
$("join-watch").addEventListener("click", () => {
  if (joinedStream) go("/#watch/" + encodeURIComponent(joinedStream));
});

// ---------- settings ----------

const MAIN = {
  nickname: { label: "Your name", help: "Friends see it on their dashboards when you invite them." },
  max_upload_kbps: { label: "Upload limit (kbit/s)", help: "How much of your internet upload streamr may use to pass streams on to other nodes. 8000 = 8 Mbit/s; 0 = no limit." },
  upnp: { label: "Open the mesh port on my router automatically (UPnP)", help: "Lets friends connect to you directly more often." },
  rtmp_listen: { label: "OBS address", help: "Where OBS and players connect. 127.0.0.1:1935 means this computer only." },
};

let settings = null;

async function loadSettings() {
  try {
    settings = await api("GET", "/api/v1/settings");
  } catch (e) {
    setStatus("settings-status", e.message, "bad");
    return;
  }
  settingsLoaded = true;
  const main = [], adv = [];
  for (const s of settings.settings) {
    if (!s.editable) continue;
    (MAIN[s.key] ? main : adv).push(fieldFor(s));
  }
  const order = Object.keys(MAIN);
  main.sort((a, b) => order.indexOf(a.dataset.key) - order.indexOf(b.dataset.key));
  $("settings-main").replaceChildren(...main);
  $("settings-advanced").replaceChildren(...adv);
}

function shownValue(s) {
  return s.saved !== null && s.saved !== undefined ? s.saved : s.value;
}

function fieldFor(s) {
  const m = MAIN[s.key];
  const id = "setting-" + s.key;
  const v = shownValue(s);
  const wrap = el("div", { class: "field", "data-key": s.key });
  let input;
  if (typeof v === "boolean") {
    input = el("input", { type: "checkbox", id });
    input.checked = v;
    wrap.append(el("label", { class: "toggle", for: id }, input, m ? m.label : s.key));
  } else {
    const type = typeof v === "number" ? "number" : "text";
    input = el("input", { type, id });
    input.value = Array.isArray(v) ? v.join(", ") : v === null ? "" : String(v);
    wrap.append(el("label", { for: id, text: m ? m.label : s.key }), input);
  }
  input.dataset.kind = Array.isArray(v) ? "list" : typeof v === "boolean" ? "bool" : typeof v === "number" ? "number" : "text";
  const notes = [m ? m.help : s.doc];
  if (s.applies === "restart") notes.push("Takes effect after a restart.");
  if (s.applies === "reconnect") notes.push("Applied at once: OBS and players reconnect.");
  if (s.overridden) notes.push("Set by " + s.overridden + ", which wins over this page.");
  wrap.append(el("div", { class: "help", text: notes.join(" ") }), el("div", { class: "err" }));
  return wrap;
}

function readField(f, s) {
  const input = f.querySelector("input");
  switch (input.dataset.kind) {
    case "bool": return input.checked;
    case "number": return input.value.trim() === "" ? null : Number(input.value);
    case "list": return input.value.split(",").map((x) => x.trim()).filter((x) => x);
    default: return s.value === null && input.value.trim() === "" ? null : input.value.trim();
  }
}

$("settings-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!settings) return;
  const changes = {};
  for (const f of document.querySelectorAll("#settings-form .field[data-key]")) {
    f.classList.remove("error");
    f.querySelector(".err").textContent = "";
    const s = settings.settings.find((x) => x.key === f.dataset.key);
    const v = readField(f, s);
    if (JSON.stringify(v) !== JSON.stringify(shownValue(s))) changes[s.key] = v;
  }
  if (!Object.keys(changes).length) {
    setStatus("settings-status", "Nothing changed.");
    return;
  }
  $("settings-save").disabled = true;
  setStatus("settings-status", "Saving…");
  try {
    const r = await api("PUT", "/api/v1/settings", changes);
    setStatus("settings-status", r.message || "Saved.", "ok");
    await loadSettings();
  } catch (e) {
    setStatus("settings-status", e.message, "bad");
    if (e.field) {
      const f = document.querySelector('#settings-form .field[data-key="' + e.field + '"]');
      if (f) {
        f.classList.add("error");
        f.querySelector(".err").textContent = e.message;
        if (!MAIN[e.field]) $("settings-advanced-box").open = true;
        f.querySelector("input").focus();
      }
    }
  } finally {
    $("settings-save").disabled = false;
  }
});

// ---------- start ----------

connect();
show(currentView());
void settingsLoaded;
