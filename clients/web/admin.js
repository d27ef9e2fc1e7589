// The /admin page: polls GET /api/v1/admin/overview every second with the admin key.
import { fill, h } from "/pages/roomcast.js";

const $ = (id) => document.getElementById(id);
const KEY = "roomcast.admin.key";
const EVERY_MS = 1000;
let timer = null;
let generation = 0;

function status(text, cls) {
  const el = $("status");
  el.className = `status ${cls}`;
  fill(el, text);
}

function rows(tableId, list, cells, empty) {
  const body = $(tableId).tBodies[0];
  if (!list.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: "9", class: "muted" }, empty)));
    return;
  }
  body.replaceChildren(
    ...list.map((item) => h("tr", {}, ...cells(item).map(([text, cls]) => h("td", cls ? { class: cls } : {}, String(text))))),
  );
}

function number(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : "–";
}

function rate(n) {
  return typeof n === "number" ? n.toFixed(1) : "–";
}

function show(o) {
  const c = o.cluster ?? {};
  fill($("node"), `node ${o.node_id}, up ${o.uptime_secs} s`);
  fill($("connections"), number(c.connections ?? o.connections));
  fill($("users"), number(c.users ?? o.users));
  fill($("rooms"), number(o.rooms));
  fill($("events-per-sec"), rate(o.events_per_sec));
  fill($("events-published"), number(o.events_published));
  fill($("auth-failures"), number(o.auth_failures));
  fill($("delivery-failures"), number(o.delivery_failures));
  fill($("node-count"), number((c.nodes ?? []).length));
  fill($("rate-window"), `(this node, over the last ${o.rate_window_secs} s)`);
  fill($("cluster-mode"), c.mode === "redis" ? `(cluster, redis ${c.redis})` : "(single node)");
  rows("by-type", o.events_by_type ?? [], (t) => [[t.type, "mono"], [rate(t.per_sec), "num"], [number(t.total), "num"]], "No events published yet");
  rows("room-table", o.top_rooms ?? [], (r) => [[r.tenant], [r.room, "mono"], [number(r.members), "num"]], "No rooms");
  rows("nodes", c.nodes ?? [], (n) => [[n.node_id, "mono"], [number(n.connections), "num"], [number(n.users), "num"], [n.last_seen, "mono"]], "No nodes");
  rows("errors", o.recent_errors ?? [], (e) => [[e.time, "mono"], [e.source], [e.code, "mono"], [e.at, "mono"], [e.message]], "No errors");
  rows("refused-auth", o.refused_auth ?? [], (r) => [[r.last_time, "mono"], [r.source], [r.code, "mono"], [number(r.count), "num"], [r.at, "mono"], [r.first_time, "mono"]], "None refused");
}

async function poll(key, gen) {
  if (gen !== generation) return;
  try {
    const res = await fetch("/api/v1/admin/overview", { headers: { authorization: `Bearer ${key}` }, cache: "no-store" });
    if (gen !== generation) return;
    const json = await res.json().catch(() => null);
    if (!res.ok) {
      const err = json?.error ?? {};
      status(`${res.status} ${err.code ?? ""}: ${err.message ?? "request failed"}`, "bad");
      if (res.status === 401 || res.status === 403) return; // a new key is needed
    } else {
      show(json);
      status(`Live, updated ${new Date().toLocaleTimeString()}`, "ok");
    }
  } catch (err) {
    if (gen !== generation) return;
    status(`Server unreachable: ${err.message}; retrying`, "bad");
  }
  timer = setTimeout(() => poll(key, gen), EVERY_MS);
}

function start(key) {
  clearTimeout(timer);
  generation += 1;
  if (!key) {
    status("Enter an admin key to see the server.", "muted");
    return;
  }
  status("Loading…", "muted");
  poll(key, generation);
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const key = $("admin-key").value.trim();
  sessionStorage.setItem(KEY, key);
  $("admin-key").value = "";
  start(key);
});
$("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  start("");
});
start(sessionStorage.getItem(KEY) ?? "");
