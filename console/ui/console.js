// shardfn console: plain JavaScript, no dependencies. It reads the admin
// API of the listener that serves it: /metrics and /admin/status once a
// second for the overview, and the operator routes for the other tabs.
"use strict";

const $ = (id) => document.getElementById(id);
const HISTORY = 120; // points per chart (two minutes at one per second)
const COLORS = ["#2f6fde", "#e4572e", "#17a398", "#f3a712", "#8e44ad", "#5b8c2a", "#d81b60", "#455a64"];

// ---------- helpers ----------

async function api(method, path, body) {
  const opt = { method, headers: {} };
  if (body !== undefined) {
    opt.body = JSON.stringify(body);
    opt.headers["Content-Type"] = "application/json";
  }
  const r = await fetch(path, opt);
  const text = await r.text();
  let data = null;
  try { data = JSON.parse(text); } catch (e) { data = text; }
  if (!r.ok) {
    const msg = data && data.error ? data.error : (typeof data === "string" ? data : r.statusText);
    throw new Error(msg + " (HTTP " + r.status + ")");
  }
  return data;
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) {
    if (k === "class") e.className = attrs[k];
    else if (k === "text") e.textContent = attrs[k];
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), attrs[k]);
    else e.setAttribute(k, attrs[k]);
  }
  for (const c of kids) e.append(c);
  return e;
}

function fmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  if (digits !== undefined) return v.toFixed(digits);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function bytes(b) {
  if (b < 1024) return b + " B";
  const u = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do { b /= 1024; i++; } while (b >= 1024 && i < u.length - 1);
  return b.toFixed(1) + " " + u[i];
}

function duration(s) {
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

// valueText renders a value object of the admin API for a cell.
function valueText(o) {
  if (!o) return "";
  for (const k of ["value", "body"]) {
    if (k in o) return typeof o[k] === "string" ? o[k] : JSON.stringify(o[k]);
  }
  if ("text" in o) return o.text;
  for (const k of ["value_b64", "body_b64"]) if (k in o) return "base64:" + o[k];
  if (o.present === false) return "(unset)";
  return "";
}

function setMsg(id, text, ok) {
  const m = $(id);
  m.textContent = text;
  m.className = "msg " + (ok === undefined ? "" : ok ? "ok" : "bad");
}

// ---------- Prometheus text parsing ----------

// parseMetrics returns {name: [{labels, value}]} for shardfn_* samples.
function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line.startsWith("shardfn_")) continue;
    const sp = line.lastIndexOf(" ");
    let key = line.slice(0, sp), labels = {};
    const value = parseFloat(line.slice(sp + 1));
    const b = key.indexOf("{");
    let name = key;
    if (b >= 0) {
      name = key.slice(0, b);
      const re = /(\w+)="((?:[^"\\]|\\.)*)"/g;
      let m;
      while ((m = re.exec(key.slice(b))) !== null) labels[m[1]] = m[2];
    }
    (out[name] = out[name] || []).push({ labels, value });
  }
  return out;
}

function sum(samples, filter) {
  let s = 0;
  for (const x of samples || []) if (!filter || filter(x.labels)) s += x.value;
  return s;
}

function byLabel(samples, label) {
  const m = {};
  for (const x of samples || []) m[x.labels[label]] = (m[x.labels[label]] || 0) + x.value;
  return m;
}

// histogram groups name_bucket samples by a label: {key: {le: count}}.
function histogram(metrics, name, label) {
  const h = {};
  for (const x of metrics[name + "_bucket"] || []) {
    const k = label ? x.labels[label] : "";
    (h[k] = h[k] || {})[x.labels.le] = x.value;
  }
  return h;
}

// quantile of the observations between two cumulative bucket snapshots.
function quantile(q, prev, cur) {
  if (!prev || !cur) return null;
  const les = Object.keys(cur).filter((k) => k !== "+Inf").map(Number).sort((a, b) => a - b);
  const total = (cur["+Inf"] || 0) - ((prev && prev["+Inf"]) || 0);
  if (total <= 0) return null;
  const rank = q * total;
  let lo = 0, below = 0;
  for (const le of les) {
    const c = cur[String(le)] - (prev[String(le)] || 0);
    if (c >= rank) {
      const inBucket = c - below;
      return inBucket > 0 ? lo + (le - lo) * (rank - below) / inBucket : le;
    }
    lo = le;
    below = c;
  }
  return les.length ? les[les.length - 1] : null;
}

// ---------- charts ----------

class Chart {
  constructor(id, opts) {
    this.canvas = $(id);
    this.opts = opts || {};
    this.series = new Map(); // name -> array of values (null = gap)
    this.points = 0;
  }
  push(values) { // values: {seriesName: number|null}
    this.points++;
    for (const [name, v] of Object.entries(values)) {
      if (!this.series.has(name)) this.series.set(name, new Array(this.points - 1).fill(null));
    }
    for (const [name, arr] of this.series) {
      arr.push(name in values ? values[name] : null);
      if (arr.length > HISTORY) arr.shift();
    }
    const last = Object.values(values).filter((v) => v !== null && !Number.isNaN(v));
    this.canvas.dataset.points = String(this.points);
    this.canvas.dataset.last = last.length ? String(last.reduce((a, b) => a + b, 0)) : "";
    this.draw();
  }
  draw() {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const left = 46, right = 6, top = 6, bottom = 18 + 14 * Math.ceil(this.series.size / 3);
    const pw = w - left - right, ph = h - top - bottom;
    let max = this.opts.max || 0;
    for (const arr of this.series.values()) for (const v of arr) if (v !== null && v > max) max = v;
    if (max <= 0) max = 1;
    max = niceCeil(max);
    g.font = "11px system-ui, sans-serif";
    g.strokeStyle = "#e3e6ec"; g.fillStyle = "#6b7385"; g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + ph - (ph * i) / 4;
      g.beginPath(); g.moveTo(left, y + 0.5); g.lineTo(left + pw, y + 0.5); g.stroke();
      g.fillText(fmt((max * i) / 4), 2, y + 4);
    }
    let si = 0;
    for (const [name, arr] of this.series) {
      const color = COLORS[si % COLORS.length];
      g.strokeStyle = color; g.lineWidth = 1.6; g.beginPath();
      let pen = false;
      arr.forEach((v, i) => {
        const x = left + pw - ((arr.length - 1 - i) * pw) / (HISTORY - 1);
        if (v === null || Number.isNaN(v)) { pen = false; return; }
        const y = top + ph - (ph * Math.min(v, max)) / max;
        if (pen) g.lineTo(x, y); else g.moveTo(x, y);
        pen = true;
      });
      g.stroke();
      const lx = left + (si % 3) * (pw / 3), ly = top + ph + 16 + 14 * Math.floor(si / 3);
      g.fillStyle = color; g.fillRect(lx, ly - 8, 10, 3);
      g.fillStyle = "#1d2330";
      const lastV = [...arr].reverse().find((v) => v !== null);
      g.fillText(name + " " + fmt(lastV === undefined ? null : lastV), lx + 14, ly - 3);
      si++;
    }
  }
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

const charts = {
  events: new Chart("c-events"),
  invocations: new Chart("c-invocations"),
  latency: new Chart("c-latency"),
  fsync: new Chart("c-fsync"),
  batch: new Chart("c-batch"),
  lag: new Chart("c-lag"),
  queue: new Chart("c-queue"),
  cache: new Chart("c-cache", { max: 100 }),
};

// ---------- overview ----------

let prev = null; // {t, status, metrics}

function tile(k, v, bad) {
  return el("div", { class: "tile" }, el("div", { class: "k", text: k }), el("div", { class: "v" + (bad ? " bad" : ""), text: v }));
}

async function pollOverview() {
  let status, metricsText, health;
  try {
    [status, metricsText, health] = await Promise.all([
      api("GET", "/admin/status"),
      fetch("/metrics").then((r) => r.text()),
      fetch("/health").then((r) => r.json()).catch(() => ({ status: "unknown" })),
    ]);
  } catch (e) {
    $("health").textContent = "unreachable";
    $("health").className = "pill bad";
    return;
  }
  const now = performance.now();
  const m = parseMetrics(metricsText);
  const hp = $("health");
  hp.textContent = status.failed ? "failed-stop" : status.ready ? "ready" : health.status || "not ready";
  hp.className = "pill " + (status.failed ? "bad" : status.ready ? "ok" : "warn");
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();

  // Stuck remote endpoints, when /health reports them.
  const stuck = $("stuck");
  if (Array.isArray(health.stuck_endpoints) && health.stuck_endpoints.length) {
    stuck.textContent = "Stuck remote endpoints: " + health.stuck_endpoints.map((x) => typeof x === "string" ? x : (x.endpoint || x.url || x.name || JSON.stringify(x))).join(", ");
    stuck.classList.remove("hidden");
  } else {
    stuck.classList.add("hidden");
  }

  const cur = { t: now, status, m, inv: byLabel(m.shardfn_invocations_total, "function"),
    lat: histogram(m, "shardfn_invocation_duration_seconds", "function"),
    sync: histogram(m, "shardfn_wal_sync_duration_seconds")[""],
    batchSum: sum(m.shardfn_wal_batch_bytes_sum), batchCount: sum(m.shardfn_wal_batch_bytes_count),
    hits: sum(m.shardfn_state_cache_hits_total), misses: sum(m.shardfn_state_cache_misses_total),
    dead: sum(m.shardfn_dead_letters_total) };
  const lag = status.log.applier_lag_bytes;

  let evRate = null, invRate = null, hitRate = null;
  if (prev) {
    const dt = (cur.t - prev.t) / 1000;
    evRate = Math.max(0, status.ingress_messages - prev.status.ingress_messages) / dt;
    const procRate = Math.max(0, status.processed - prev.status.processed) / dt;
    charts.events.push({ "ingress msg/s": evRate, "processed/s": procRate });
    const inv = {}, lat = {};
    invRate = 0;
    for (const fn of Object.keys(cur.inv)) {
      inv[fn] = Math.max(0, cur.inv[fn] - (prev.inv[fn] || 0)) / dt;
      invRate += inv[fn];
      const q = quantile(0.99, prev.lat[fn] || {}, cur.lat[fn]);
      lat[fn] = q === null ? null : q * 1000;
    }
    charts.invocations.push(inv);
    charts.latency.push(lat);
    const p50 = quantile(0.5, prev.sync, cur.sync), p99 = quantile(0.99, prev.sync, cur.sync);
    charts.fsync.push({ p50: p50 === null ? null : p50 * 1000, p99: p99 === null ? null : p99 * 1000 });
    const bc = cur.batchCount - prev.batchCount;
    charts.batch.push({ "KiB/batch": bc > 0 ? (cur.batchSum - prev.batchSum) / bc / 1024 : null });
    const dh = cur.hits - prev.hits, dm = cur.misses - prev.misses;
    hitRate = dh + dm > 0 ? (100 * dh) / (dh + dm) : null;
    charts.cache.push({ "hit %": hitRate });
  }
  charts.lag.push({ "lag KiB": lag / 1024 });
  const q = {};
  for (const s of status.per_shard) q["shard " + s.index] = s.mailbox + s.queue_depth;
  charts.queue.push(q);

  const tiles = $("tiles");
  tiles.replaceChildren(
    tile("engine", hp.textContent, !!status.failed),
    tile("shards", String(status.shards)),
    tile("ingress messages/s", fmt(evRate)),
    tile("invocations/s", fmt(invRate)),
    tile("failures (total)", fmt(status.failures, 0), status.failures > 0),
    tile("dead letters (since start)", fmt(cur.dead, 0), cur.dead > 0),
    tile("applier lag", bytes(lag)),
    tile("last checkpoint", status.checkpoint.age_seconds === undefined ? "none yet" : duration(status.checkpoint.age_seconds) + " ago"),
    tile("cache hit rate", hitRate === null ? "–" : hitRate.toFixed(1) + " %"),
    tile("recovery", duration(status.recovery.duration_seconds) + ", " + bytes(status.recovery.replayed_bytes)),
    tile("restored in flight / delayed", status.recovery.restored_in_flight + " / " + status.recovery.restored_timers),
  );
  prev = cur;
}

// ---------- functions ----------

let functionsCache = null;

async function loadFunctions() {
  const data = await api("GET", "/admin/functions");
  functionsCache = data.functions;
  return data.functions;
}

async function showFunctions() {
  const tb = $("functions").tBodies[0];
  try {
    const fns = await loadFunctions();
    tb.replaceChildren(...fns.map((f) => el("tr", {},
      el("td", { class: "mono", text: f.name }),
      el("td", { text: f.kind }),
      el("td", { class: "mono", text: f.endpoint || "" }),
      el("td", { class: "mono", text: f.states.map((s) => s.name + ": " + s.type + (s.expire !== "never" ? " (expires " + s.expire.replace("_", " ") + " " + s.expire_after_seconds + "s)" : "")).join("\n") }),
      el("td", { text: String(f.invocations) }),
      el("td", { text: String(f.failures) }))));
  } catch (e) {
    tb.replaceChildren(el("tr", {}, el("td", { text: e.message })));
  }
}

// ---------- instance inspector ----------

function addrPath(a) {
  const p = a.trim().split("/");
  if (p.length < 3 || !p[0] || !p[1] || !p.slice(2).join("/")) throw new Error("address must be namespace/type/id");
  return [p[0], p[1], p.slice(2).join("/")].map(encodeURIComponent).join("/");
}

async function inspect(addr) {
  setMsg("inst-msg", "");
  let path;
  try { path = addrPath(addr); } catch (e) { setMsg("inst-msg", e.message, false); return; }
  location.hash = "#instance/" + addr.trim();
  try {
    const [inst, fns] = await Promise.all([api("GET", "/admin/instances/" + path), functionsCache ? functionsCache : loadFunctions()]);
    const type = addr.trim().split("/").slice(0, 2).join("/");
    const fn = fns.find((f) => f.name === type) || fns.find((f) => f.name === type.split("/")[0] + "/*");
    renderInstance(path, inst, fn ? fn.states : []);
  } catch (e) {
    $("inst-body").classList.add("hidden");
    setMsg("inst-msg", e.message, false);
  }
}

function renderInstance(path, inst, specs) {
  $("inst-body").classList.remove("hidden");
  const names = new Set(Object.keys(inst.state));
  for (const s of specs) names.add(s.name);
  const rows = [];
  for (const name of [...names].sort()) {
    const v = inst.state[name];
    const spec = specs.find((s) => s.name === name);
    const type = v ? v.type : spec ? spec.type : "";
    const input = el("input", { "data-name": name, value: v ? (("text" in v) ? v.text : valueText(v)) : "", placeholder: v ? "" : "(unset)" });
    const save = el("button", { "data-save": name, text: "Save", onclick: () => writeState(path, name, input.value, v) });
    const del = el("button", { class: "danger", "data-delete": name, text: "Delete", onclick: () => deleteState(path, name) });
    if (!v) del.disabled = true;
    rows.push(el("tr", {}, el("td", { class: "mono", text: name }), el("td", { class: "mono", text: type }), el("td", {}, input), el("td", {}, save, " ", del)));
  }
  if (!rows.length) rows.push(el("tr", {}, el("td", { text: "no state declared or set" })));
  $("inst-state").tBodies[0].replaceChildren(...rows);
  $("inst-queued-n").textContent = "(" + inst.queued_total + (inst.busy ? "; a remote call is in flight" : "") + ")";
  const none = (n) => el("tr", {}, el("td", { class: "muted", colspan: String(n), text: "none" }));
  $("inst-queued").tBodies[0].replaceChildren(...(inst.queued.length ? [] : [none(4)]), ...inst.queued.map((q) => el("tr", {},
    el("td", { class: "mono", text: q.id }), el("td", { class: "mono", text: q.caller || "ingress" }),
    el("td", { class: "mono", text: q.type }), el("td", { class: "mono", text: valueText(q) }))));
  $("inst-delayed").tBodies[0].replaceChildren(...(inst.delayed.length ? [] : [none(6)]), ...inst.delayed.map((d) => el("tr", {},
    el("td", { text: new Date(d.fire_at).toLocaleString() }), el("td", { class: "mono", text: d.from || "ingress" }),
    el("td", { class: "mono", text: d.to }), el("td", { class: "mono", text: d.type }),
    el("td", { class: "mono", text: d.token }), el("td", { class: "mono", text: valueText(d) }))));
}

// writeState sends the edited text: as JSON when the value was shown as
// JSON (and still parses), else as text parsed by the declared type.
async function writeState(path, name, text, old) {
  let body = { text };
  if (old && "value" in old && typeof old.value !== "string" && typeof old.value !== "number" && typeof old.value !== "boolean") {
    try { body = { value: JSON.parse(text) }; } catch (e) { /* keep text */ }
  }
  try {
    await api("PUT", "/state/" + path + "/" + encodeURIComponent(name), body);
    await inspect($("inst-addr").value);
    setMsg("inst-msg", "saved " + name + " (durable)", true);
  } catch (e) {
    setMsg("inst-msg", "saving " + name + ": " + e.message, false);
  }
}

async function deleteState(path, name) {
  try {
    await api("DELETE", "/state/" + path + "/" + encodeURIComponent(name));
    await inspect($("inst-addr").value);
    setMsg("inst-msg", "deleted " + name + " (durable)", true);
  } catch (e) {
    setMsg("inst-msg", "deleting " + name + ": " + e.message, false);
  }
}

// ---------- egress tail ----------

let egressRun = 0;

async function tailEgress(name, from) {
  const run = ++egressRun;
  const tb = $("eg-records").tBodies[0];
  tb.replaceChildren();
  setMsg("eg-msg", "following " + name + " from " + from + " …");
  let next = from;
  while (run === egressRun) {
    try {
      const r = await api("GET", "/admin/egress/" + encodeURIComponent(name) + "?from=" + next + "&max=500&wait=20s");
      if (run !== egressRun) return;
      for (const rec of r.records) {
        tb.append(el("tr", {}, el("td", { text: String(rec.offset) }), el("td", { class: "mono", text: rec.source }),
          el("td", { class: "mono", text: rec.type }), el("td", { class: "mono", text: valueText(rec) })));
      }
      while (tb.rows.length > 1000) tb.deleteRow(0);
      next = r.next;
      setMsg("eg-msg", "following " + name + ": next offset " + next);
    } catch (e) {
      setMsg("eg-msg", e.message, false);
      await new Promise((res) => setTimeout(res, 2000));
    }
  }
}

// ---------- dead letters ----------

async function listDeadLetters(from) {
  const tb = $("dl-records").tBodies[0];
  try {
    const r = await api("GET", "/admin/dead-letters?from=" + from + "&max=500");
    tb.replaceChildren(...r.records.map((d) => el("tr", {},
      el("td", { text: String(d.offset) }), el("td", { class: "mono", text: d.target }), el("td", { class: "mono", text: d.type }),
      el("td", { text: d.bad ? "undecodable: " + d.bad : d.error }), el("td", { class: "mono", text: valueText(d) }),
      el("td", {}, el("button", { class: "ghost", text: "Replay", onclick: () => replay(d.offset, d.offset) })))));
    if (!r.records.length) setMsg("dl-msg", "no dead letters from offset " + from);
  } catch (e) {
    setMsg("dl-msg", e.message, false);
  }
}

async function replay(from, last) {
  try {
    const r = await api("POST", "/admin/dead-letters/replay?from=" + from + "&to=" + (last + 1));
    let text = r.replayed.length ? "replayed offsets " + r.replayed.join(", ") : "replayed nothing";
    if (r.skipped.length) text += "; skipped " + r.skipped.map((s) => s.offset + " (" + s.reason + ")").join(", ");
    setMsg("dl-msg", text, r.skipped.length === 0);
    await listDeadLetters(Number($("dl-from").value) || 0);
  } catch (e) {
    setMsg("dl-msg", e.message, false);
  }
}

// ---------- tabs ----------

function route() {
  const h = decodeURIComponent(location.hash.slice(1)) || "overview";
  const [tab, ...rest] = h.split("/");
  const name = ["overview", "functions", "instance", "egress", "dead-letters"].includes(tab) ? tab : "overview";
  for (const s of document.querySelectorAll(".tab")) s.classList.toggle("hidden", s.id !== "tab-" + name);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.tab === name);
  if (name === "functions") showFunctions();
  if (name === "instance" && rest.length >= 3) {
    const addr = rest.join("/");
    if ($("inst-addr").value !== addr) { $("inst-addr").value = addr; inspect(addr); }
  }
  if (name === "egress" && rest.length === 1 && $("eg-name").value !== rest[0]) {
    $("eg-name").value = rest[0];
    tailEgress(rest[0], 0);
  }
  if (name === "dead-letters") listDeadLetters(Number($("dl-from").value) || 0);
}

function init() {
  $("inst-form").addEventListener("submit", (ev) => { ev.preventDefault(); inspect($("inst-addr").value); });
  $("eg-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const n = $("eg-name").value.trim();
    if (n) tailEgress(n, Number($("eg-from").value) || 0);
  });
  $("eg-stop").addEventListener("click", () => { egressRun++; setMsg("eg-msg", "stopped"); });
  $("dl-form").addEventListener("submit", (ev) => { ev.preventDefault(); listDeadLetters(Number($("dl-from").value) || 0); });
  $("dl-replay").addEventListener("click", () => {
    const a = $("dl-rfrom").value, b = $("dl-rto").value || a;
    if (a === "") { setMsg("dl-msg", "give the first offset to replay", false); return; }
    replay(Number(a), Number(b));
  });
  window.addEventListener("hashchange", route);
  window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.draw()));
  route();
  pollOverview();
  setInterval(pollOverview, 1000);
}

init();
