// The Node reference for bench/compare.sh: plain socket.io 4.8.4 (in-memory adapter, or Redis for a cluster) with
// the subset of Roomcast's contract the load generator uses, so `roomcast-bench` runs
// against both unchanged. Not a second implementation of Roomcast: no typed events, no
// presence, no stats, no token lifetime, no per-room seq/epoch.
//
//   handshake  auth.token: HS256 JWT {sub, exp, tenant?, projects?, agents?, role?}
//              joins <tenant>/global and <tenant>/user:<sub>, emits connection.established
//   commands   subscribe / unsubscribe {room} | {rooms: [...]} with an ack; ping;
//              publish {room, event, data?, volatile?, echo?} -> {ok, id}: relayed to the
//              room's other sockets (the sender too with echo) as the envelope plus `from`
//   HTTP       POST /api/v1/broadcast {event, room | rooms, data?, tenant?} -> 202
//              GET /health, GET /ready
//   streams    a naive equivalent of Roomcast's AI streams, for bench `streams` / `resume`:
//              POST /api/v1/streams {room, stream_id?, kind?, tenant?} -> 201 (emits
//              stream.started), POST /api/v1/streams/<id>/append {text} -> 202 {offset,
//              length} (emits stream.delta {stream_id, offset, text}: every append its own
//              broadcast, nothing coalesced), POST /api/v1/streams/<id>/finish -> 200 (emits
//              stream.finished {stream_id, length}); command stream.resume {stream_id,
//              offset?} -> {ok, stream_id, status, offset, length, text}. The text is kept
//              in this process only (no cluster), no cancel, no limits, no expiry. One
//              thread: an ack is written before any later delta, so nothing overtakes it.
//
// Recovery: socket.io's own connection state recovery (RECOVERY=1, the default) stands in
// for Roomcast's auth.since. The server appends an offset to every broadcast packet and
// sends a private session id (`pid`) in the CONNECT answer; a client that comes back with
// auth {pid, offset} within RECOVERY_WINDOW_MS gets its rooms back and the missed packets,
// and `connection.established` says `recovered: true`. Middlewares run again on recovery
// (skipMiddlewares: false), as Roomcast checks the token on every handshake.
//
// Cluster: with REDIS_URL set, the nodes share Redis through socket.io's own adapters:
// ADAPTER=redis (default) is @socket.io/redis-adapter (pub/sub; recovery only at the node
// that kept the session), ADAPTER=streams is @socket.io/redis-streams-adapter (Redis
// streams; socket.io's recovery at any node).
//
// Client events (`publish`) stand in for Roomcast's [client_events]: CLIENT_ROOMS, the room
// kinds clients may publish into, and CLIENT_EVENTS, the event name patterns (a trailing
// `*` matches a prefix), both comma-separated. In a cluster the relay goes through the
// adapter like any broadcast. No history: the event is numbered only by socket.io's
// recovery offset.
//
// Env: PORT (8100), SECRET, API_KEY, NODE_ID, RECOVERY (1), RECOVERY_WINDOW_MS (120000),
// REDIS_URL (unset: one process, in-memory adapter), ADAPTER (redis | streams),
// CLIENT_ROOMS (project), CLIENT_EVENTS (bench.*).

import { createServer } from "node:http";
import { randomBytes } from "node:crypto";
import { Server } from "socket.io";
import { createAdapter as redisAdapter } from "@socket.io/redis-adapter";
import { createAdapter as streamsAdapter } from "@socket.io/redis-streams-adapter";
import { createClient } from "redis";
import jwt from "jsonwebtoken";

const PORT = Number(process.env.PORT ?? 8100);
const SECRET = process.env.SECRET ?? "roomcast-dev-secret-do-not-use-in-production";
const API_KEY = process.env.API_KEY ?? "roomcast-dev-key";
const NODE_ID = process.env.NODE_ID ?? "node-reference";
const RECOVERY = (process.env.RECOVERY ?? "1") !== "0";
const RECOVERY_WINDOW_MS = Number(process.env.RECOVERY_WINDOW_MS ?? 120000);
const REDIS_URL = process.env.REDIS_URL;
const ADAPTER = process.env.ADAPTER ?? "redis";
const list = (value) => value.split(",").filter((v) => v !== "");
const CLIENT_ROOMS = new Set(list(process.env.CLIENT_ROOMS ?? "project"));
const CLIENT_EVENTS = list(process.env.CLIENT_EVENTS ?? "bench.*");
const CLIENT_MAX_BYTES = 16384;
const PUBLISH_KEYS = new Set(["room", "event", "data", "volatile", "echo"]);
const MAX_ROOMS = 100;
const MAX_BODY_BYTES = 262144;

const ID = "[A-Za-z0-9_.-]{1,128}";
const ROOM = new RegExp(`^(global|(user|project|agent):${ID})$`);
const ID_ONLY = new RegExp(`^${ID}$`);
const EVENT_NAME = /^[a-z][a-z0-9_.:-]{0,63}$/;
const RESERVED = new Set([
  "connect", "connect_error", "disconnect", "disconnecting", "error", "newlistener", "removelistener",
]);
const RESERVED_PREFIXES = ["connection.", "auth.", "server.", "presence."];
const reserved = (event) => RESERVED.has(event) || RESERVED_PREFIXES.some((p) => event.startsWith(p));
const matches = (pattern, name) => (pattern.endsWith("*") ? name.startsWith(pattern.slice(0, -1)) : name === pattern);

// ---- identity -------------------------------------------------------------------------

class Refusal extends Error {}

/** A verified token as {sub, tenant, projects, agents, admin}; throws a Refusal whose
 *  message is the connect_error code. */
function identify(token) {
  if (typeof token !== "string" || token === "") throw new Refusal("token_missing");
  let claims;
  try {
    claims = jwt.verify(token, SECRET, { algorithms: ["HS256", "HS384", "HS512"] });
  } catch (e) {
    throw new Refusal(e.name === "TokenExpiredError" ? "token_expired" : "token_invalid");
  }
  const tenant = claims.tenant ?? "default";
  if (typeof claims.sub !== "string" || !ID_ONLY.test(claims.sub)) throw new Refusal("token_invalid");
  if (typeof tenant !== "string" || !ID_ONLY.test(tenant)) throw new Refusal("token_invalid");
  if (typeof claims.exp !== "number") throw new Refusal("token_invalid");
  return {
    sub: claims.sub,
    tenant,
    projects: grant(claims.projects),
    agents: grant(claims.agents),
    admin: claims.role === "admin",
  };
}

/** `projects` / `agents`: "*" -> every id, an array -> those ids (as strings), else none. */
function grant(claim) {
  if (claim === "*") return { all: true, ids: new Set() };
  if (claim == null) return { all: false, ids: new Set() };
  if (!Array.isArray(claim)) throw new Refusal("token_invalid");
  return { all: false, ids: new Set(claim.map(String)) };
}

function allows(user, room) {
  if (room === "global" || user.admin) return true;
  const [kind, id] = room.split(":");
  if (kind === "user") return id === user.sub;
  const g = kind === "project" ? user.projects : user.agents;
  return g.all || g.ids.has(id);
}

// ---- rooms: Roomcast scopes every room by tenant as "<tenant>/<room>" ------------------

const scoped = (tenant, room) => `${tenant}/${room}`;
const publicRooms = (socket) =>
  [...socket.rooms].filter((r) => r.includes("/")).map((r) => r.slice(r.indexOf("/") + 1));

/** The room list of a {room} | {rooms} command payload, or an error object. */
function requestedRooms(payload) {
  const shape = { code: "invalid_payload", message: 'expected {"room": "<name>"} or {"rooms": ["<name>", ...]}' };
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) return { error: shape };
  const keys = Object.keys(payload);
  if (keys.length !== 1 || !["room", "rooms"].includes(keys[0])) return { error: shape };
  const list = keys[0] === "room" ? [payload.room] : payload.rooms;
  if (!Array.isArray(list) || list.length === 0) return { error: { code: "invalid_payload", message: "rooms must not be empty" } };
  if (list.some((r) => typeof r !== "string")) return { error: { code: "invalid_payload", message: "room names are strings" } };
  const rooms = [...new Set(list)];
  const bad = rooms.find((r) => !ROOM.test(r));
  if (bad !== undefined) return { error: { code: "invalid_room", message: "invalid room", room: bad } };
  return { rooms };
}

// ---- socket.io --------------------------------------------------------------------------

/** The adapter factory for REDIS_URL and ADAPTER, or undefined for the in-memory one. */
async function clusterAdapter() {
  if (!REDIS_URL) return undefined;
  const client = createClient({ url: REDIS_URL });
  await client.connect();
  if (ADAPTER === "streams") return streamsAdapter(client);
  if (ADAPTER !== "redis") throw new Error(`ADAPTER is redis or streams, not ${ADAPTER}`);
  const sub = client.duplicate();
  await sub.connect();
  return redisAdapter(client, sub);
}

const http = createServer(handleHttp);
const io = new Server(http, {
  serveClient: false,
  adapter: await clusterAdapter(),
  connectionStateRecovery: RECOVERY
    ? { maxDisconnectionDuration: RECOVERY_WINDOW_MS, skipMiddlewares: false }
    : undefined,
});

io.use((socket, next) => {
  try {
    socket.data.user = identify(socket.handshake.auth?.token);
    next();
  } catch (e) {
    next(e instanceof Refusal ? new Error(e.message) : e);
  }
});

io.on("connection", (socket) => {
  const user = socket.data.user;
  // A recovered socket already holds its rooms (restored by socket.io).
  if (!socket.recovered) socket.join([scoped(user.tenant, "global"), scoped(user.tenant, `user:${user.sub}`)]);
  socket.emit("connection.established", {
    sid: socket.id,
    user_id: user.sub,
    tenant: user.tenant,
    rooms: publicRooms(socket),
    server_time: new Date().toISOString(),
    node_id: NODE_ID,
    recovered: socket.recovered,
    recovery: {},
  });
  socket.onAny((event, ...args) => command(socket, event, args));
});

/** Every client event is a command answered through its ack, or with an `error` event. */
function command(socket, event, args) {
  const ack = typeof args.at(-1) === "function" ? args.pop() : null;
  const answer = commands[event]?.(socket, args[0]) ?? {
    ok: false,
    error: { code: "unknown_command", message: `unknown command ${JSON.stringify(event)}` },
  };
  if (ack) ack(answer);
  else if (answer.ok === false) socket.emit("error", answer.error);
}

const commands = {
  subscribe(socket, payload) {
    const user = socket.data.user;
    const { rooms, error } = requestedRooms(payload);
    if (error) return { ok: false, error };
    const denied = rooms.find((r) => !allows(user, r));
    if (denied !== undefined) {
      return { ok: false, error: { code: "forbidden", message: "your token does not grant this room", room: denied } };
    }
    const fresh = rooms.filter((r) => !socket.rooms.has(scoped(user.tenant, r)));
    // socket.rooms also holds the socket's own id room, which Roomcast does not count.
    if (socket.rooms.size - 1 + fresh.length > MAX_ROOMS) {
      return { ok: false, error: { code: "too_many_rooms", message: `a socket may be in at most ${MAX_ROOMS} rooms` } };
    }
    socket.join(fresh.map((r) => scoped(user.tenant, r)));
    return { ok: true, rooms };
  },
  unsubscribe(socket, payload) {
    const { rooms, error } = requestedRooms(payload);
    if (error) return { ok: false, error };
    for (const r of rooms) socket.leave(scoped(socket.data.user.tenant, r));
    return { ok: true, rooms };
  },
  ping() {
    return { pong: true, server_time: new Date().toISOString() };
  },
  publish,
  "stream.resume": streamResume,
};

/** Roomcast's `publish`, checked in its order: room, grant, subscription, event name, size. */
function publish(socket, payload) {
  const user = socket.data.user;
  const refuse = (code, message, room) => ({ ok: false, error: { code, message, ...(room ? { room } : {}) } });
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    return refuse("invalid_payload", 'expected {"room", "event", "data", "volatile"?, "echo"?}');
  }
  const { room, event, data = null, volatile = false, echo = false } = payload;
  const wellFormed = Object.keys(payload).every((k) => PUBLISH_KEYS.has(k)) && typeof room === "string"
    && typeof event === "string" && typeof volatile === "boolean" && typeof echo === "boolean";
  if (!wellFormed) return refuse("invalid_payload", 'expected {"room", "event", "data", "volatile"?, "echo"?}');
  if (!ROOM.test(room)) return refuse("invalid_room", "invalid room", room);
  if (!CLIENT_ROOMS.has(room.split(":")[0])) {
    return refuse("forbidden", "clients may not publish into this room (CLIENT_ROOMS)", room);
  }
  if (!allows(user, room)) return refuse("forbidden", "your token does not grant this room", room);
  const target = scoped(user.tenant, room);
  if (!socket.rooms.has(target)) return refuse("not_subscribed", "subscribe to the room first", room);
  if (!EVENT_NAME.test(event) || reserved(event) || !CLIENT_EVENTS.some((p) => matches(p, event))) {
    return refuse("event_not_allowed", `${JSON.stringify(event)} is not allowed (CLIENT_EVENTS)`);
  }
  if (Buffer.byteLength(JSON.stringify(data)) > CLIENT_MAX_BYTES) return refuse("payload_too_large", "data is too large");
  const envelope = {
    id: uuidv7(), type: event, room, timestamp: new Date().toISOString(), data, from: { user_id: user.sub, sid: socket.id },
  };
  // socket.to() leaves the sender out, on every node.
  let to = echo ? io.to(target) : socket.to(target);
  if (volatile) to = to.volatile;
  to.emit(event, envelope);
  return { ok: true, id: envelope.id };
}

// ---- AI streams (naive) ----------------------------------------------------------------

/** `<tenant>/<id>` -> {id, room (scoped), status, text, length (code points)}. */
const streams = new Map();
const STREAM_PATH = new RegExp(`^/api/v1/streams/(${ID})/(append|finish)$`);

function streamResume(socket, payload) {
  const user = socket.data.user;
  const offset = Number.isInteger(payload?.offset) && payload.offset >= 0 ? payload.offset : 0;
  const stream = typeof payload?.stream_id === "string" && streams.get(`${user.tenant}/${payload.stream_id}`);
  if (!stream) return { ok: false, error: { code: "stream_not_found", message: "no such stream" } };
  if (!socket.rooms.has(stream.room)) return { ok: false, error: { code: "not_subscribed", message: "subscribe to the room first" } };
  const from = Math.min(offset, stream.length);
  const text = Array.from(stream.text).slice(from).join("");
  return { ok: true, stream_id: stream.id, status: stream.status, offset: from, length: stream.length, text };
}

/** POST /api/v1/streams and /api/v1/streams/<id>/(append|finish). */
async function streamRequest(req, res, path) {
  if (apiKey(req) !== API_KEY) return fail(res, 401, "unauthorized", "a valid API key is required");
  const raw = await readBody(req);
  let body;
  try {
    body = JSON.parse(raw ?? "");
  } catch {
    return fail(res, 400, "malformed_json", "the body is not valid JSON");
  }
  const tenant = body?.tenant ?? "default";
  const envelope = (type, room, data) => ({ id: uuidv7(), type, room, timestamp: new Date().toISOString(), data });
  if (path === null) {
    const id = body?.stream_id ?? uuidv7();
    if (typeof body?.room !== "string" || !ROOM.test(body.room)) return fail(res, 422, "invalid_room", "invalid room");
    if (streams.has(`${tenant}/${id}`)) return fail(res, 409, "stream_exists", "the stream exists");
    const stream = { id, public: body.room, room: scoped(tenant, body.room), status: "open", text: "", length: 0 };
    streams.set(`${tenant}/${id}`, stream);
    io.to(stream.room).emit("stream.started", envelope("stream.started", body.room, { stream_id: id, kind: body.kind ?? "llm", meta: {} }));
    return reply(res, 201, { stream_id: id, room: body.room });
  }
  const [, id, action] = path;
  const stream = streams.get(`${tenant}/${id}`);
  if (!stream) return fail(res, 404, "stream_not_found", "no such stream");
  if (stream.status !== "open") return fail(res, 409, "stream_ended", "the stream ended");
  if (action === "finish") {
    stream.status = "finished";
    const data = { stream_id: id, length: stream.length };
    io.to(stream.room).emit("stream.finished", envelope("stream.finished", stream.public, data));
    return reply(res, 200, data);
  }
  if (typeof body?.text !== "string") return fail(res, 422, "invalid_payload", "expected {\"text\"}");
  const offset = stream.length;
  stream.text += body.text;
  stream.length += Array.from(body.text).length;
  io.to(stream.room).emit("stream.delta", envelope("stream.delta", stream.public, { stream_id: id, offset, text: body.text }));
  reply(res, 202, { offset, length: stream.length });
}

// ---- HTTP ---------------------------------------------------------------------------------

function handleHttp(req, res) {
  // socket.io answers its own path before this handler runs.
  if (req.method === "GET" && (req.url === "/health" || req.url === "/ready")) {
    return reply(res, 200, { status: "ok" });
  }
  if (req.method === "POST" && req.url === "/api/v1/broadcast") return broadcast(req, res);
  if (req.method === "POST" && req.url === "/api/v1/streams") return streamRequest(req, res, null);
  const streamPath = req.method === "POST" ? STREAM_PATH.exec(req.url) : null;
  if (streamPath) return streamRequest(req, res, streamPath);
  reply(res, 404, { error: { code: "not_found", message: "no such endpoint" } });
}

function reply(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

const fail = (res, status, code, message, field) =>
  reply(res, status, { error: { code, message, ...(field ? { field } : {}) } });

function apiKey(req) {
  const m = /^bearer\s+(.+)$/i.exec(req.headers.authorization ?? "");
  return m ? m[1] : req.headers["x-api-key"];
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) return null;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

async function broadcast(req, res) {
  if (apiKey(req) !== API_KEY) {
    return fail(res, 401, "unauthorized", "a valid API key is required in Authorization: Bearer <key> or X-API-Key");
  }
  const text = await readBody(req);
  if (text === null) return fail(res, 413, "payload_too_large", "the request body exceeds the limit");
  let body;
  try {
    body = JSON.parse(text);
  } catch (e) {
    return fail(res, 400, "malformed_json", `the body is not valid JSON: ${e.message}`);
  }
  const checked = checkBroadcast(body);
  if (checked.error) return fail(res, 422, ...checked.error);
  const { event, rooms, tenant } = checked;
  const envelope = { id: uuidv7(), type: event, room: rooms[0], timestamp: new Date().toISOString(), data: body.data ?? null };
  let target = io.to(rooms.map((r) => scoped(tenant, r)));
  if (body.volatile === true) target = target.volatile;
  target.emit(event, envelope);
  reply(res, 202, { id: envelope.id, type: event, room: rooms[0], rooms, tenant });
}

/** {event, rooms, tenant} of a broadcast body, or {error: [code, message, field]}. */
function checkBroadcast(body) {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    return { error: ["invalid_payload", "the body is a JSON object", "event"] };
  }
  const { event } = body;
  if (typeof event !== "string") return { error: ["invalid_payload", "missing field `event`", "event"] };
  if (!EVENT_NAME.test(event)) return { error: ["invalid_event_name", `event names match ^[a-z][a-z0-9_.:-]{0,63}$: ${JSON.stringify(event)}`, "event"] };
  if (reserved(event)) {
    return { error: ["invalid_event_name", `this event name is reserved: ${JSON.stringify(event)}`, "event"] };
  }
  const hasRoom = body.room !== undefined, hasRooms = Array.isArray(body.rooms) && body.rooms.length > 0;
  if (hasRoom === hasRooms) return { error: ["invalid_payload", "give either room or a non-empty rooms list", "room"] };
  const rooms = [...new Set(hasRoom ? [body.room] : body.rooms)];
  const bad = rooms.findIndex((r) => typeof r !== "string" || !ROOM.test(r));
  if (bad !== -1) return { error: ["invalid_room", `invalid room ${JSON.stringify(rooms[bad])}`, hasRoom ? "room" : `rooms[${bad}]`] };
  const tenant = body.tenant ?? "default";
  if (typeof tenant !== "string" || !ID_ONLY.test(tenant)) return { error: ["invalid_payload", "invalid tenant", "tenant"] };
  return { event, rooms, tenant };
}

/** A UUIDv7 (time-ordered), as Roomcast's envelope ids are. */
function uuidv7() {
  const b = randomBytes(16);
  b.writeUIntBE(Date.now(), 0, 6);
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

http.listen(PORT, "127.0.0.1", () => {
  const adapter = REDIS_URL ? `${ADAPTER} adapter on ${REDIS_URL}` : "in-memory adapter";
  console.error(`reference listening on 127.0.0.1:${PORT} (${adapter}, recovery ${RECOVERY ? "on" : "off"})`);
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
