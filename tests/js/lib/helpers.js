// Shared helpers for the Roomcast end-to-end tests.
//
// Every test file starts its own `roomcast serve` child on a free port (see `startServer`),
// talks to it with the real socket.io-client and fetch, and stops it in an `after` hook.
// Every wait in here has a deadline; nothing sleeps "to let things settle".
//
// This file is also picked up by `node --test test/` (Node 20 runs every .js file in a
// `test` directory); importing it has no side effects beyond registering cleanup handlers,
// so it shows up as one empty, passing file.

import { spawn, execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";

import jwt from "jsonwebtoken";
import { io } from "socket.io-client";

// tests/js/test/helpers.js -> repository root is three levels up.
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const ROOMCAST_BIN = process.env.ROOMCAST_BIN || path.join(REPO_ROOT, "target", "debug", "roomcast");

export const JWT_SECRET = "test-secret-0123456789abcdef0123456789";
export const API_KEY = "test-key"; // scopes publish + read, any tenant
export const ACME_KEY = "acme-key"; // scope publish, bound to tenant acme
export const READ_KEY = "read-key"; // scope read only
export const PUBLISH_ONLY_KEY = "publish-key"; // scope publish only, any tenant

const READY_DEADLINE_MS = 20_000;
const HTTP_TIMEOUT_MS = 10_000;
export const DEFAULT_WAIT_MS = 5_000;

// ---------------------------------------------------------------------------------------------
// Child-process bookkeeping: whatever happens to a test, no server outlives this process.

const children = new Set();

/**
 * Registers a child process (a server, a redis-server, ...) so that it is SIGKILLed if this test
 * process exits without stopping it; it is forgotten once it exits on its own.
 */
export function trackChild(child) {
  children.add(child);
  const forget = () => children.delete(child);
  child.once("exit", forget);
  child.once("error", forget);
  return child;
}

function killAllChildrenSync() {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  children.clear();
}

process.on("exit", killAllChildrenSync);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.once(signal, () => {
    killAllChildrenSync();
    process.exit(128 + (os.constants.signals[signal] ?? 0));
  });
}

// ---------------------------------------------------------------------------------------------
// Small utilities

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `probe` until it returns a truthy value or the deadline passes. */
export async function eventually(probe, { timeout = DEFAULT_WAIT_MS, interval = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last result: ${describe(last)}`);
    }
    await delay(interval);
  }
}

function describe(value) {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

function tomlString(s) {
  return JSON.stringify(String(s)); // JSON string escapes are valid TOML basic-string escapes
}

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
}) {
  const keys = [
    { name: "backend", key: API_KEY, scopes: ["publish", "read"] },
    { name: "acme-only", key: ACME_KEY, tenant: "acme", scopes: ["publish"] },
    { name: "reader", key: READ_KEY, scopes: ["read"] },
    { name: "publisher", key: PUBLISH_ONLY_KEY, scopes: ["publish"] },
    ...extraApiKeys,
  ];
  const lines = [
    "[server]",
    `bind = ${tomlString(`127.0.0.1:${port}`)}`,
    `node_id = ${tomlString(nodeId)}`,
    ...(transports !== undefined ? [`transports = [${transports.map(tomlString).join(", ")}]`] : []),
    "",
    "[auth]",
    `jwt_secret = ${tomlString(JWT_SECRET)}`,
    `leeway_secs = ${leewaySecs}`,
    ...(issuer !== undefined ? [`issuer = ${tomlString(issuer)}`] : []),
    ...(audience !== undefined ? [`audience = ${tomlString(audience)}`] : []),
    "",
    "[limits]",
    `max_rooms_per_socket = ${maxRoomsPerSocket}`,
    `max_http_body_bytes = ${maxHttpBodyBytes}`,
    "",
  ];
  for (const k of keys) {
    lines.push("[[api_keys]]", `name = ${tomlString(k.name)}`, `key = ${tomlString(k.key)}`);
    if (k.tenant) lines.push(`tenant = ${tomlString(k.tenant)}`);
    lines.push(`scopes = [${k.scopes.map(tomlString).join(", ")}]`, "");
  }
  if (cluster) lines.push(...clusterToml(cluster), "");
  lines.push("[log]", 'level = "warn"', "");
  if (extraToml) lines.push(extraToml, "");
  return lines.join("\n");
}

/**
 * The [cluster] table. `redisUrl` is required; the rest are written only when given, except the
 * test-speed defaults node_ttl_secs = 3 and presence_grace_secs = 1.
 */
function clusterToml({ redisUrl, keyPrefix, nodeTtlSecs = 3, presenceGraceSecs = 1, onUnavailable, mode }) {
  const lines = ["[cluster]", `redis_url = ${tomlString(redisUrl)}`];
  if (keyPrefix !== undefined) lines.push(`key_prefix = ${tomlString(keyPrefix)}`);
  if (mode !== undefined) lines.push(`mode = ${tomlString(mode)}`);
  if (nodeTtlSecs !== undefined) lines.push(`node_ttl_secs = ${nodeTtlSecs}`);
  if (presenceGraceSecs !== undefined) lines.push(`presence_grace_secs = ${presenceGraceSecs}`);
  if (onUnavailable !== undefined) lines.push(`on_unavailable = ${tomlString(onUnavailable)}`);
  return lines;
}

/**
 * Environment for the child: ours, minus any ROOMCAST_* setting from the shell (a developer's
 * ROOMCAST_SERVER__BIND must not leak into a test), plus `extra`.
 */
function childEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith("ROOMCAST_") && k !== "ROOMCAST_BIN") continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

function tail(file, bytes = 4000) {
  try {
    const text = fs.readFileSync(file, "utf8");
    return text.length > bytes ? "…" + text.slice(-bytes) : text;
  } catch {
    return "(no log)";
  }
}

// ---------------------------------------------------------------------------------------------
// Server lifecycle

/**
 * Starts `roomcast serve --config <tmp file>` on a free port and waits for GET /ready == 200.
 * Options: nodeId, maxRoomsPerSocket, maxHttpBodyBytes, leewaySecs, issuer, audience,
 * extraApiKeys, transports ([server] transports), cluster ({redisUrl, keyPrefix, nodeTtlSecs,
 * presenceGraceSecs, onUnavailable, mode} -> [cluster]), extraToml (appended verbatim),
 * env (extra environment for the child), listenPort (when `env` moves the bind address
 * elsewhere: the port to probe and to hand out instead of the config's), waitFor ("ready", the
 * default: GET /ready == 200; "health": GET /health == 200, for a node expected to be unready).
 * Returns a handle: {url, port, configPort, nodeId, configPath, apiKey, acmeKey, stop(),
 * kill(signal), alive(), mintToken(claims), cliToken(args), logTail()}.
 */
export async function startServer(options = {}) {
  if (!fs.existsSync(ROOMCAST_BIN)) {
    throw new Error(`roomcast binary not found at ${ROOMCAST_BIN} (build it or set ROOMCAST_BIN)`);
  }
  const nodeId = options.nodeId ?? `e2e-${randomUUID().slice(0, 8)}`;
  let lastError;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce({ ...options, nodeId });
    } catch (err) {
      lastError = err;
      // Another process grabbed the port between our probe and the server's bind: try again.
      if (!/address (already )?in use/i.test(err.message)) throw err;
    }
  }
  throw lastError;
}

async function startOnce(options) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-js-e2e-"));
  const configPath = path.join(dir, "config.toml");
  const logPath = path.join(dir, "server.log");
  fs.writeFileSync(configPath, buildConfigToml({ ...options, port }));
  const logFd = fs.openSync(logPath, "w");

  const child = spawn(ROOMCAST_BIN, ["serve", "--config", configPath], {
    cwd: dir,
    env: childEnv(options.env),
    stdio: ["ignore", logFd, logFd],
  });
  fs.closeSync(logFd);
  trackChild(child);

  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.once("exit", (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
    child.once("error", (err) => {
      exited = { code: null, signal: null, error: err };
      resolve(exited);
    });
  });

  const listenPort = options.listenPort ?? port;
  const url = `http://127.0.0.1:${listenPort}`;

  async function stop() {
    if (!exited) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => {
        if (!exited) child.kill("SIGKILL");
      }, 5_000);
      await exitPromise;
      clearTimeout(timer);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }

  /** Sends `signal` (default SIGKILL) and resolves once the process has exited. */
  async function kill(signal = "SIGKILL") {
    if (!exited) child.kill(signal);
    return exitPromise;
  }

  const probePath = options.waitFor === "health" ? "/health" : "/ready";
  try {
    const deadline = Date.now() + READY_DEADLINE_MS;
    for (;;) {
      if (exited) {
        throw new Error(
          `roomcast exited before becoming ready (${describe(exited)}); log:\n${tail(logPath)}`,
        );
      }
      try {
        const res = await fetch(`${url}${probePath}`, { signal: AbortSignal.timeout(1_000) });
        await res.arrayBuffer();
        if (res.status === 200) break;
      } catch {
        // not listening yet
      }
      if (Date.now() >= deadline) {
        throw new Error(`roomcast did not answer GET ${probePath} with 200 within ${READY_DEADLINE_MS} ms; log:\n${tail(logPath)}`);
      }
      await delay(50);
    }
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    url,
    port: listenPort,
    configPort: port,
    nodeId: options.nodeId,
    configPath,
    apiKey: API_KEY,
    acmeKey: ACME_KEY,
    stop,
    kill,
    alive: () => exited === null,
    pid: child.pid,
    mintToken,
    cliToken: (args) => cliToken(configPath, args),
    logTail: () => tail(logPath),
  };
}

// ---------------------------------------------------------------------------------------------
// Tokens

/**
 * Signs claims with the test secret (HS256). `exp` defaults to one hour from now unless the
 * claims carry their own `exp` (pass `exp: undefined` explicitly to leave it out).
 */
export function mintToken(claims = {}, { secret = JWT_SECRET, algorithm = "HS256" } = {}) {
  const payload = { ...claims };
  if (!("exp" in payload)) payload.exp = Math.floor(Date.now() / 1000) + 3600;
  if (payload.exp === undefined) delete payload.exp;
  if (!("iat" in payload)) payload.iat = Math.floor(Date.now() / 1000);
  return jwt.sign(payload, secret, { algorithm, noTimestamp: true });
}

/** Runs `roomcast token --config <file> ...args` and returns its raw stdout. */
export async function cliToken(configPath, args) {
  const { code, stdout, stderr } = await runCli(["token", "--config", configPath, ...args]);
  if (code !== 0) throw new Error(`roomcast token exited with ${code}: ${stderr}`);
  return stdout;
}

/** Runs the roomcast binary with `args`; resolves with {code, stdout, stderr} (never rejects on exit code). */
export function runCli(args, { env = {}, timeout = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(ROOMCAST_BIN, args, { timeout, env: childEnv(env) }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") reject(new Error(`roomcast ${args[0]} failed: ${err.message}\n${stderr}`));
      else resolve({ code: err ? err.code : 0, stdout, stderr });
    });
  });
}

function b64url(value) {
  return Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
}

/** A hand-crafted unsigned token with header {"alg":"none"}. */
export function unsignedToken(claims) {
  return `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims)}.`;
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

/** Creates a socket (not yet connected) with test defaults: no reconnection, no multiplexing. */
export function createSocket(url, opts = {}) {
  const socket = io(url, {
    forceNew: true,
    reconnection: false,
    timeout: DEFAULT_WAIT_MS,
    autoConnect: false,
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
      e.socket = socket;
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
    assert.equal(got.length, 0, `socket ${s.id} unexpectedly received "${name}": ${describe(got)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/**
 * Sends a request and returns {status, headers, text, body} (body = parsed JSON or undefined).
 * `key` goes into `Authorization: Bearer` unless keyHeader is "x-api-key"; a string `body` is
 * sent verbatim, anything else as JSON.
 */
export async function http(url, { method = "GET", key, keyHeader = "authorization", body, headers = {} } = {}) {
  const h = { ...headers };
  if (key !== undefined) {
    if (keyHeader === "authorization") h.authorization = `Bearer ${key}`;
    else h[keyHeader] = key;
  }
  let payload;
  if (body !== undefined) {
    payload = typeof body === "string" ? body : JSON.stringify(body);
    if (!Object.keys(h).some((k) => k.toLowerCase() === "content-type")) h["content-type"] = "application/json";
  }
  const res = await fetch(url, { method, headers: h, body: payload, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
  const text = await res.text();
  let parsed;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, text, body: parsed };
}

/** POST /api/v1/events */
export function publish(url, key, body, opts = {}) {
  return http(`${url}/api/v1/events`, { method: "POST", key, body, ...opts });
}

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
  assert.equal(typeof value, "string", `timestamp must be a string, got ${describe(value)}`);
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
  assert.ok(env && typeof env === "object", `envelope must be an object, got ${describe(env)}`);
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
