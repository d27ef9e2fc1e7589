// The /debug page: connect with a token, subscribe to rooms, watch events and AI streams,
// publish one (over HTTP with an API key, or as a client event over the socket).
import { RoomcastSocket, fill, h } from "/pages/roomcast.js";

const $ = (id) => document.getElementById(id);
const MAX_ROWS = 500;
let socket = null;
let received = 0;

function status(text, cls) {
  const el = $("status");
  el.className = `status ${cls}`;
  fill(el, text);
}

function setConnected(on) {
  $("connect").disabled = on;
  $("disconnect").disabled = !on;
}

function showRooms(rooms) {
  fill($("rooms"), rooms.length ? rooms.join(", ") : "(none)");
}

function answer(text, ok) {
  const el = $("ack");
  el.className = ok ? "ok" : "bad";
  fill(el, text);
}

/** One row per event, newest on top; server commands' own events included. */
function addEvent(name, payload) {
  const env = payload && typeof payload === "object" ? payload : {};
  const isEnvelope = typeof env.id === "string" && "data" in env;
  const row = h(
    "tr",
    {},
    h("td", { class: "mono" }, new Date().toLocaleTimeString()),
    h("td", { class: "mono" }, name),
    h("td", { class: "mono" }, isEnvelope ? String(env.room ?? "") : ""),
    h("td", { class: "num" }, isEnvelope && env.seq !== undefined ? String(env.seq) : ""),
    h("td", { class: "mono data" }, JSON.stringify(isEnvelope ? env.data : payload)),
  );
  const body = $("events").tBodies[0];
  body.prepend(row);
  while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
  received += 1;
  fill($("event-count"), `(${received})`);
}

// ---------------------------------------------------------------------------------------
// AI streams (WEBSOCKET_API.md section 13): each stream seen in a joined room, its text
// kept by the client rule (offsets count code points; a gap or a stream first seen
// mid-way is caught up with `stream.resume`).

const streams = new Map();

function streamOf(id, room) {
  let s = streams.get(id);
  if (s) return s;
  const cells = {
    kind: h("td", { class: "mono" }, ""),
    status: h("td", { class: "mono" }, "open"),
    length: h("td", { class: "num" }, "0"),
    text: h("td", { class: "mono data stream-text" }, ""),
  };
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
  const row = h("tr", { "data-stream": id }, h("td", { class: "mono" }, id), cells.kind, h("td", { class: "mono" }, room), cells.status, cells.length, cells.text, h("td", {}, cancel));
  s = { id, kind: "", chars: [], end: null, status: "open", resuming: false, cells, cancel };
  cancel.addEventListener("click", () => cancelStream(s));
  streams.set(id, s);
  $("streams").tBodies[0].prepend(row);
  $("streams-empty").hidden = true;
  return s;
}

function showStream(s) {
  if (s.status === "open" && s.end && s.chars.length >= s.end.length) s.status = s.end.status;
  fill(s.cells.kind, s.kind);
  fill(s.cells.status, s.status);
  fill(s.cells.length, String(s.chars.length));
  fill(s.cells.text, s.chars.join(""));
  s.cancel.disabled = s.status !== "open";
}

/** The client rule: false when `offset` is past what the page has (a gap). */
function applyText(s, offset, text) {
  if (offset > s.chars.length) return false;
  const chars = Array.from(text);
  s.chars.push(...chars.slice(s.chars.length - offset));
  return true;
}

async function resumeStream(s) {
  if (!socket || s.resuming) return;
  s.resuming = true;
  try {
    const ack = await socket.emitWithAck("stream.resume", { stream_id: s.id, offset: s.chars.length });
    if (ack?.ok) {
      s.kind = ack.kind;
      applyText(s, ack.offset, ack.text);
      if (ack.status !== "open") s.end = { status: ack.status, length: ack.length };
    } else {
      s.status = `resume refused: ${ack?.error?.code ?? "error"}`;
    }
  } catch (err) {
    s.status = `resume failed: ${err.message}`;
  } finally {
    s.resuming = false;
    showStream(s);
  }
}

async function cancelStream(s) {
  if (!socket) return;
  try {
    const ack = await socket.emitWithAck("stream.cancel", { stream_id: s.id, reason: "cancelled from /debug" });
    if (!ack?.ok) s.status = `cancel refused: ${ack?.error?.code ?? "error"}`;
  } catch (err) {
    s.status = `cancel failed: ${err.message}`;
  }
  showStream(s);
}

const STREAM_ENDS = { "stream.finished": "finished", "stream.failed": "failed", "stream.cancelled": "cancelled" };

function onStreamEvent(name, env) {
  const d = env?.data;
  if (!d || typeof d.stream_id !== "string") return;
  const known = streams.has(d.stream_id);
  const s = streamOf(d.stream_id, String(env.room ?? ""));
  if (name === "stream.started") {
    s.kind = d.kind;
  } else if (name === "stream.delta") {
    if (!applyText(s, d.offset, d.text)) resumeStream(s);
  } else if (STREAM_ENDS[name]) {
    s.end = { status: STREAM_ENDS[name], length: d.length };
    // The last deltas may still be on their way, or lost: the resume of an ended stream
    // brings its final text.
    if (s.chars.length < d.length) resumeStream(s);
  }
  // First seen after its start (a page opened mid-stream): catch up from 0.
  if (!known && name !== "stream.started") resumeStream(s);
  showStream(s);
}

function clearStreams() {
  streams.clear();
  $("streams").tBodies[0].replaceChildren();
  $("streams-empty").hidden = false;
}

function connect(e) {
  e.preventDefault();
  if (socket) socket.disconnect();
  clearStreams();
  const token = $("token").value.trim();
  const namespace = $("namespace").value;
  socket = new RoomcastSocket({ path: $("path").value.trim() || "/socket.io/", namespace, auth: { token } });
  const me = socket;
  status(`Connecting to ${namespace}…`, "muted");
  setConnected(true);
  me.on("connect", () => status(`Connected to ${namespace} (sid ${me.sid})`, "ok"));
  me.on("connect_error", (err) => {
    if (socket !== me) return;
    status(`connect_error: ${err.message}`, "bad");
    setConnected(false);
    socket = null;
  });
  me.on("disconnect", (reason) => {
    if (socket !== me) return;
    status(`Disconnected (${reason})`, "muted");
    setConnected(false);
    socket = null;
  });
  me.on("connection.established", (info) => {
    fill($("established"), JSON.stringify(info, null, 2));
    status(`Connected as ${info.user_id} (tenant ${info.tenant}, node ${info.node_id})`, "ok");
    showRooms(info.rooms ?? []);
  });
  me.onAny((name, payload) => {
    addEvent(name, payload);
    if (name.startsWith("stream.")) onStreamEvent(name, payload);
  });
  me.connect();
}

async function command(name) {
  const room = $("room").value.trim();
  if (!socket || !socket.connected) {
    answer("Not connected", false);
    return;
  }
  try {
    const ack = await socket.emitWithAck(name, { room });
    if (ack?.ok) {
      answer(`${name} ${room}: ok`, true);
      if (Array.isArray(ack.rooms)) refreshRooms(name, ack.rooms);
    } else {
      const err = ack?.error ?? {};
      answer(`${name} ${room}: ${err.code ?? "error"}: ${err.message ?? JSON.stringify(ack)}`, false);
    }
  } catch (err) {
    answer(`${name} ${room}: ${err.message}`, false);
  }
}

/** The joined list after a subscribe/unsubscribe ack (which names the rooms it changed). */
function refreshRooms(name, changed) {
  const text = $("rooms").textContent;
  const current = new Set(text === "(none)" ? [] : text.split(", "));
  for (const r of changed) {
    if (name === "subscribe") current.add(r);
    else current.delete(r);
  }
  showRooms([...current]);
}

async function publish(e) {
  e.preventDefault();
  const out = $("publish-result");
  let data;
  try {
    data = JSON.parse($("event-data").value);
  } catch (err) {
    out.className = "bad";
    fill(out, `Data is not JSON: ${err.message}`);
    return;
  }
  const body = { type: $("event-type").value.trim(), data };
  const tenant = $("tenant").value.trim();
  if (tenant) body.tenant = tenant;
  try {
    const res = await fetch("/api/v1/events", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${$("api-key").value}` },
      body: JSON.stringify(body),
    });
    const json = await res.json().catch(() => null);
    if (res.ok) {
      out.className = "ok";
      fill(out, `${res.status}: published ${json.type} to ${json.rooms.join(", ")} (id ${json.id})`);
    } else {
      out.className = "bad";
      const err = json?.error ?? {};
      fill(out, `${res.status} ${err.code ?? ""}: ${err.message ?? ""}${err.field ? ` (field ${err.field})` : ""}`);
    }
  } catch (err) {
    out.className = "bad";
    fill(out, `Request failed: ${err.message}`);
  }
}

/** The `publish` command over the page's socket (WEBSOCKET_API.md 4.3b). */
async function publishClientEvent(e) {
  e.preventDefault();
  const out = $("client-publish-result");
  const fail = (text) => {
    out.className = "bad";
    fill(out, text);
  };
  if (!socket || !socket.connected) return fail("Not connected");
  let data;
  try {
    data = JSON.parse($("client-data").value);
  } catch (err) {
    return fail(`Data is not JSON: ${err.message}`);
  }
  const body = {
    room: $("client-room").value.trim(),
    event: $("client-event").value.trim(),
    data,
    volatile: $("client-volatile").checked,
    echo: $("client-echo").checked,
  };
  try {
    const ack = await socket.emitWithAck("publish", body);
    if (ack?.ok) {
      out.className = "ok";
      fill(out, `published ${body.event} to ${body.room} (id ${ack.id}${ack.seq !== undefined ? `, seq ${ack.seq}` : ", volatile"})`);
    } else {
      const err = ack?.error ?? {};
      fail(`${err.code ?? "error"}: ${err.message ?? JSON.stringify(ack)}${err.field !== undefined ? ` (field ${err.field || "/"})` : ""}`);
    }
  } catch (err) {
    fail(`publish failed: ${err.message}`);
  }
}

async function loadTypes() {
  try {
    const res = await fetch("/api/v1/schema");
    const schema = await res.json();
    fill($("event-types"), ...Object.keys(schema.events ?? {}).map((t) => h("option", { value: t })));
  } catch {
    // The list is a convenience only.
  }
}

$("connect-form").addEventListener("submit", connect);
$("disconnect").addEventListener("click", () => socket?.disconnect());
$("room-form").addEventListener("submit", (e) => {
  e.preventDefault();
  command("subscribe");
});
$("unsubscribe").addEventListener("click", () => command("unsubscribe"));
$("publish-form").addEventListener("submit", publish);
$("client-publish-form").addEventListener("submit", publishClientEvent);
$("clear").addEventListener("click", () => {
  $("events").tBodies[0].replaceChildren();
  received = 0;
  fill($("event-count"), "(0)");
});
loadTypes();
