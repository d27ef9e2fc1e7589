// The tests/js helpers: the test keys and secret, the config every file's server starts from,
// socket.io-client sockets with an inbox, barriers, and assertions on what a client sees.
// Starting servers and redis-servers, tokens, HTTP and waits are the shared harness's
// (tests/harness/js), re-exported here so that a test file imports from one place.
//
// Every test file starts its own `roomcast serve` child on a free port (see `startServer`),
// talks to it with the real socket.io-client and fetch, and stops it in an `after` hook.

import { randomUUID } from "node:crypto";
import assert from "node:assert/strict";

import { io } from "socket.io-client";

import * as harness from "../../harness/js/index.mjs";
import { describeValue, delay, http, publish } from "../../harness/js/index.mjs";

export {
  REPO_ROOT,
  ROOMCAST_BIN,
  trackChild,
  freePort,
  delay,
  runCli,
  unsignedToken,
  http,
  publish,
} from "../../harness/js/index.mjs";

export const JWT_SECRET = "test-secret-0123456789abcdef0123456789";
export const API_KEY = "test-key"; // scopes publish + read, any tenant
export const ACME_KEY = "acme-key"; // scope publish, bound to tenant acme
export const READ_KEY = "read-key"; // scope read only
export const PUBLISH_ONLY_KEY = "publish-key"; // scope publish only, any tenant

export const DEFAULT_WAIT_MS = 5_000;

/** Polls `probe` until it returns a truthy value or the deadline (default DEFAULT_WAIT_MS) passes. */
export function eventually(probe, opts = {}) {
  return harness.eventually(probe, { timeout: DEFAULT_WAIT_MS, ...opts });
}

// ---------------------------------------------------------------------------------------------
// Server

export function buildConfigToml({
  port,
  nodeId,
  maxRoomsPerSocket = 100,
  maxHttpBodyBytes = 262_144,
  leewaySecs = 0,
  issuer,
  audience,
  extraApiKeys = [],
  transports,
  cluster,
  extraToml = "",
  limits = {},
}) {
  return harness.configToml({
    port,
    nodeId,
    transports,
    jwtSecret: JWT_SECRET,
    leewaySecs,
    issuer,
    audience,
    limits: {
      max_rooms_per_socket: maxRoomsPerSocket,
      max_http_body_bytes: maxHttpBodyBytes,
      // One server per file connects the same few users far more often than a person would.
      handshakes_per_user_per_sec: 0,
      ...limits,
    },
    apiKeys: [
      { name: "backend", key: API_KEY, scopes: ["publish", "read"] },
      { name: "acme-only", key: ACME_KEY, tenant: "acme", scopes: ["publish"] },
      { name: "reader", key: READ_KEY, scopes: ["read"] },
      { name: "publisher", key: PUBLISH_ONLY_KEY, scopes: ["publish"] },
      ...extraApiKeys,
    ],
    // Test-speed defaults: a dead node is gone within seconds.
    cluster: cluster && { nodeTtlSecs: 3, presenceGraceSecs: 1, ...cluster },
    extraToml,
  });
}

/**
 * Starts `roomcast serve` with buildConfigToml's config on a free port (the harness's
 * startServer) and waits for GET /ready == 200.
 * Options: nodeId, maxRoomsPerSocket, maxHttpBodyBytes, leewaySecs, issuer, audience,
 * extraApiKeys, transports ([server] transports), limits (other [limits] keys), cluster
 * ({redisUrl, keyPrefix, nodeTtlSecs, presenceGraceSecs, onUnavailable, mode} -> [cluster]),
 * extraToml (appended verbatim), and the harness's env, listenPort and waitFor.
 * Returns the harness's handle plus {nodeId, apiKey, acmeKey, mintToken(claims), cliToken(args)}.
 */
export async function startServer(options = {}) {
  const nodeId = options.nodeId ?? `e2e-${randomUUID().slice(0, 8)}`;
  const srv = await harness.startServer({
    config: (port) => buildConfigToml({ ...options, nodeId, port }),
    env: options.env,
    listenPort: options.listenPort,
    waitFor: options.waitFor,
    tmpPrefix: "roomcast-js-e2e-",
  });
  return {
    ...srv,
    nodeId,
    apiKey: API_KEY,
    acmeKey: ACME_KEY,
    mintToken,
    cliToken: (args) => cliToken(srv.configPath, args),
  };
}

// ---------------------------------------------------------------------------------------------
// Tokens

/**
 * Signs claims with the test secret (HS256). `exp` defaults to one hour from now unless the
 * claims carry their own `exp` (pass `exp: undefined` explicitly to leave it out).
 */
export function mintToken(claims = {}, { secret = JWT_SECRET, algorithm = "HS256" } = {}) {
  return harness.mintToken(claims, { secret, algorithm });
}

/** Runs `roomcast token --config <file> ...args` and returns its raw stdout. */
export async function cliToken(configPath, args) {
  const { code, stdout, stderr } = await harness.runCli(["token", "--config", configPath, ...args]);
  if (code !== 0) throw new Error(`roomcast token exited with ${code}: ${stderr}`);
  return stdout;
}

// ---------------------------------------------------------------------------------------------
// Sockets

const openSockets = new Set();

/**
 * Records every event the socket receives (from before the handshake completes, so an event
 * sent right after the CONNECT packet is never lost). waitForEvent consumes from this inbox.
 */
function instrument(socket) {
  socket.inbox = [];
  socket.inboxWaiters = new Set();
  socket.onAny((name, ...args) => {
    socket.inbox.push({ name, args, payload: args[0], consumed: false });
    for (const wake of [...socket.inboxWaiters]) wake();
  });
  return socket;
}

/**
 * The transports a socket uses unless a test names its own: with TEST_WEBSOCKET_PATH=lean
 * (the suite's run against the lean path) a websocket from the start, as production clients
 * behind load balancers connect; otherwise socket.io-client's default (polling, then the
 * upgrade).
 */
export const DEFAULT_TRANSPORTS =
  process.env.TEST_WEBSOCKET_PATH === "lean" ? { transports: ["websocket"] } : {};

/** Creates a socket (not yet connected) with test defaults: no reconnection, no multiplexing. */
export function createSocket(url, opts = {}) {
  const socket = io(url, {
    forceNew: true,
    reconnection: false,
    timeout: DEFAULT_WAIT_MS,
    autoConnect: false,
    ...DEFAULT_TRANSPORTS,
    ...opts,
  });
  openSockets.add(socket);
  instrument(socket);
  return socket;
}

/**
 * Connects and resolves with the socket once the server accepted the handshake; rejects with
 * an Error whose message is the connect_error message (the socket is then closed).
 */
export function connect(url, opts = {}, { timeout = DEFAULT_WAIT_MS } = {}) {
  const socket = createSocket(url, opts);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      socket.disconnect();
      reject(new Error(`connect to ${url} timed out after ${timeout} ms`));
    }, timeout);
    const onConnect = () => {
      cleanup();
      resolve(socket);
    };
    const onError = (err) => {
      cleanup();
      socket.disconnect();
      const e = new Error(err?.message ?? String(err));
      e.data = err?.data;
      // A transport failure ("xhr poll error", "websocket error") says why in `description`
      // (an HTTP status or the network error): kept, so that a failure report shows it.
      const why = err?.description;
      if (why !== undefined) e.description = why instanceof Error ? `${why.name}: ${why.message}${why.code ? ` (${why.code})` : ""}` : why;
      Object.defineProperty(e, "socket", { value: socket, enumerable: false }); // not dumped
      reject(e);
    };
    function cleanup() {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
    }
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
    socket.connect();
  });
}

/** Connects with a freshly minted token in `auth.token`. */
export function connectAs(srv, claims, opts = {}) {
  const { namespace = "", ...ioOpts } = opts;
  return connect(srv.url + namespace, { auth: { token: mintToken(claims) }, ...ioOpts });
}

/** Expects the handshake to be refused; resolves with the connect_error message. */
export async function connectError(url, opts = {}) {
  try {
    const socket = await connect(url, opts);
    socket.disconnect();
  } catch (err) {
    return err.message;
  }
  throw new assert.AssertionError({ message: `expected connect_error for ${url}, but the handshake succeeded` });
}

export function disconnectAll() {
  for (const socket of openSockets) socket.disconnect();
  openSockets.clear();
}

/**
 * Resolves with the first argument of the first not-yet-consumed event `name` (optionally
 * matching `match(payload)`) this socket received, waiting up to `timeout` ms.
 */
export function waitForEvent(socket, name, { timeout = DEFAULT_WAIT_MS, match = () => true } = {}) {
  return new Promise((resolve, reject) => {
    const take = () => {
      const entry = socket.inbox.find((e) => !e.consumed && e.name === name && match(e.payload));
      if (!entry) return false;
      entry.consumed = true;
      cleanup();
      resolve(entry.payload);
      return true;
    };
    const timer = setTimeout(() => {
      cleanup();
      const seen = socket.inbox.map((e) => e.name).join(", ") || "nothing";
      reject(new Error(`timed out after ${timeout} ms waiting for event "${name}" on socket ${socket.id}; received: ${seen}`));
    }, timeout);
    function cleanup() {
      clearTimeout(timer);
      socket.inboxWaiters.delete(take);
    }
    socket.inboxWaiters.add(take);
    take();
  });
}

/** Every event `name` (matching `match`) this socket received so far, consumed or not. */
export function received(socket, name, match = () => true) {
  return socket.inbox.filter((e) => e.name === name && match(e.payload)).map((e) => e.payload);
}

/** Waits for the envelope with this id (from a 202 response) under event name `type`. */
export function waitForEnvelope(socket, type, id, opts = {}) {
  return waitForEvent(socket, type, { ...opts, match: (env) => env?.id === id });
}

/** socket.timeout(DEFAULT_WAIT_MS).emitWithAck, with the event name in the timeout message. */
export async function emitWithAck(socket, event, ...args) {
  try {
    return await socket.timeout(DEFAULT_WAIT_MS).emitWithAck(event, ...args);
  } catch (err) {
    throw new Error(`no ack for "${event}" within ${DEFAULT_WAIT_MS} ms (${err.message})`);
  }
}

/**
 * A subscribe ack without its `positions`, once they are checked: one `{epoch, seq}` per
 * room of the ack (`complete: false`: for the rooms it has, as while Redis is down).
 */
export function withoutPositions(ack, { complete = true } = {}) {
  if (!ack || ack.ok !== true) return ack;
  const { positions, ...rest } = ack;
  const rooms = Object.keys(positions ?? {}).sort();
  if (complete) assert.deepEqual(rooms, [...ack.rooms].sort(), "a position per room");
  else assert.ok(rooms.every((r) => ack.rooms.includes(r)), "positions only for the rooms joined");
  for (const p of Object.values(positions)) {
    assert.equal(typeof p.epoch, "string");
    assert.ok(Number.isInteger(p.seq) && p.seq >= 0);
  }
  return rest;
}

/**
 * A barrier: publishes a system.notification to `global` of `tenant` (a room every socket of
 * that tenant is in) and waits until every socket has received it. Each socket receives its
 * events in one ordered stream, so anything published to it before the barrier has arrived
 * by then.
 */
export async function barrier(srv, sockets, { tenant } = {}) {
  const nonce = `barrier-${randomUUID()}`;
  const body = { type: "system.notification", data: { title: "barrier", message: nonce } };
  if (tenant !== undefined) body.tenant = tenant;
  const res = await publish(srv.url, srv.apiKey, body);
  assert.equal(res.status, 202, `barrier publish failed: ${res.status} ${res.text}`);
  await Promise.all(
    sockets.map((s) => waitForEvent(s, "system.notification", { match: (env) => env?.data?.message === nonce })),
  );
}

/**
 * Asserts that none of `sockets` received event `name` matching `match`.
 * With `barrier: {srv, tenant}` (preferred) it waits for a barrier event published after the
 * forbidden one; otherwise it falls back to waiting `ms` milliseconds.
 */
export async function expectNoEvent(sockets, name, { match = () => true, barrier: b, ms = 500 } = {}) {
  const list = Array.isArray(sockets) ? sockets : [sockets];
  if (b) await barrier(b.srv, list, { tenant: b.tenant });
  else await delay(ms);
  for (const s of list) {
    const got = received(s, name, match);
    assert.equal(got.length, 0, `socket ${s.id} unexpectedly received "${name}": ${describeValue(got)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP (http and publish are the harness's)

/** POST /api/v1/broadcast */
export function broadcast(url, key, body, opts = {}) {
  return http(`${url}/api/v1/broadcast`, { method: "POST", key, body, ...opts });
}

/** GET /api/v1/websocket/stats */
export function stats(url, key, opts = {}) {
  return http(`${url}/api/v1/websocket/stats`, { key, ...opts });
}

/** Publishes and asserts 202; returns the response body ({id, type, room, ...}). */
export async function publishOk(srv, body) {
  const res = await publish(srv.url, srv.apiKey, body);
  assert.equal(res.status, 202, `publish ${body.type} expected 202, got ${res.status}: ${res.text}`);
  return res.body;
}

// ---------------------------------------------------------------------------------------------
// Assertions on what the client sees

export const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
export const RFC3339_MILLIS_Z = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** Asserts an RFC 3339 UTC timestamp with milliseconds, within `skewMs` of the local clock. */
export function assertServerTime(value, skewMs = 60_000) {
  assert.equal(typeof value, "string", `timestamp must be a string, got ${describeValue(value)}`);
  assert.match(value, RFC3339_MILLIS_Z);
  const t = Date.parse(value);
  assert.ok(Math.abs(t - Date.now()) < skewMs, `timestamp ${value} is not close to now`);
}

/** The millisecond timestamp embedded in a UUIDv7 (its first 48 bits). */
export function uuidV7Millis(id) {
  return parseInt(id.replace(/-/g, "").slice(0, 12), 16);
}

/**
 * Asserts the full envelope: exactly {id, type, room, timestamp, data}, id a UUIDv7 (equal to
 * `id` when given), timestamp RFC 3339 UTC millis, data deep-equal to `data`.
 */
export function assertEnvelope(env, { type, room, data, id }) {
  assert.ok(env && typeof env === "object", `envelope must be an object, got ${describeValue(env)}`);
  // {id, type, room, timestamp, data}, plus {seq, epoch} (and `also` for an event in
  // several rooms) when the node keeps history.
  const keys = Object.keys(env).filter((k) => !["seq", "epoch", "also"].includes(k)).sort();
  assert.deepEqual(keys, ["data", "id", "room", "timestamp", "type"], "envelope keys");
  assert.equal("seq" in env, "epoch" in env, "seq and epoch come together");
  if ("seq" in env) {
    assert.ok(Number.isInteger(env.seq) && env.seq >= 1, `seq must be a positive integer, got ${env.seq}`);
    assert.ok(typeof env.epoch === "string" && env.epoch.length > 0, "epoch must be a non-empty string");
  }
  assert.match(env.id, UUID_V7, "envelope id must be a UUIDv7");
  assert.ok(Math.abs(uuidV7Millis(env.id) - Date.now()) < 60_000, "UUIDv7 time must be close to now");
  if (id !== undefined) assert.equal(env.id, id, "envelope id equals the id in the 202 response");
  assert.equal(env.type, type);
  assert.equal(env.room, room);
  assertServerTime(env.timestamp);
  assert.deepEqual(env.data, data);
}

/**
 * The section 11 recipe's bookkeeping: moves `cursors` (room -> {epoch, seq}) to the
 * envelope's positions; false when the envelope is one already handled (a duplicate).
 */
export function trackCursors(cursors, env) {
  for (const p of [{ room: env.room, seq: env.seq, epoch: env.epoch }, ...(env.also ?? [])]) {
    if (p.seq === undefined) continue; // volatile
    const cur = cursors[p.room];
    if (cur && cur.epoch === p.epoch && p.seq <= cur.seq) return false; // duplicate
    cursors[p.room] = { epoch: p.epoch, seq: p.seq };
  }
  return true;
}
