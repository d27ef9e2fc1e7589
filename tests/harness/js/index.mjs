// The one test harness of every JS package (tests/js, clients/js, tests/browser): a real
// `roomcast serve` child on a free port, its config.toml, HS256 tokens, HTTP calls, waits with a
// deadline, and a throwaway redis-server. Each package imports it by relative path and keeps in
// its own helpers only what is its own (keys and secret, sockets, the browser).
//
// Node built-ins only: each package has its own node_modules, which a file out here cannot
// resolve, so socket.io-client, playwright or jsonwebtoken never appear in this file.
// (`.mjs`: no package.json up the tree tells Node that a `.js` file here is a module.)
// Every wait in here has a deadline; nothing sleeps "to let things settle".

import { spawn, execFile } from "node:child_process";
import { createHmac } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

// tests/harness/js/index.mjs -> the repository root is three levels up.
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const ROOMCAST_BIN = process.env.ROOMCAST_BIN || path.join(REPO_ROOT, "target", "debug", "roomcast");
export const REDIS_BIN = process.env.REDIS_SERVER_BIN || "redis-server";

const READY_DEADLINE_MS = 20_000;
const REDIS_START_DEADLINE_MS = 10_000;
const HTTP_TIMEOUT_MS = 10_000;

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

/** Polls `probe` until it returns a truthy value or the deadline passes; a throw counts as "not yet". */
export async function eventually(probe, { timeout = 5_000, interval = 50, what = "condition" } = {}) {
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
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last result: ${describeValue(last)}`);
    }
    await delay(interval);
  }
}

/** A value for an error message: an Error's name and message, anything else as JSON. */
export function describeValue(value) {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
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
// Config

export function tomlString(s) {
  return JSON.stringify(String(s)); // JSON string escapes are valid TOML basic-string escapes
}

function tomlValue(v) {
  if (Array.isArray(v)) return `[${v.map(tomlString).join(", ")}]`;
  return typeof v === "string" ? tomlString(v) : String(v);
}

/**
 * A config.toml. Only what is given is written (the server's defaults stand for the rest):
 * [server] bind (127.0.0.1:port), node_id, transports; [auth] jwt_secret, leeway_secs, issuer,
 * audience, expiry_warning_secs; [limits] `limits` ({key: number | string | [string]}, in order);
 * one [[api_keys]] per `apiKeys` entry ({name, key, tenant?, scopes}); [cluster] from `cluster`
 * ({redisUrl, keyPrefix?, mode?, nodeTtlSecs?, presenceGraceSecs?, onUnavailable?}); [history]
 * size; [log] level = "warn"; then `extraToml` verbatim.
 */
export function configToml({
  port,
  nodeId,
  transports,
  jwtSecret,
  leewaySecs,
  issuer,
  audience,
  expiryWarningSecs,
  limits = {},
  apiKeys = [],
  cluster,
  historySize,
  extraToml = "",
}) {
  const opt = (key, value) => (value === undefined ? [] : [`${key} = ${tomlValue(value)}`]);
  const lines = [
    "[server]",
    `bind = ${tomlString(`127.0.0.1:${port}`)}`,
    ...opt("node_id", nodeId),
    ...opt("transports", transports),
    "",
    "[auth]",
    ...opt("jwt_secret", jwtSecret),
    ...opt("leeway_secs", leewaySecs),
    ...opt("issuer", issuer),
    ...opt("audience", audience),
    ...opt("expiry_warning_secs", expiryWarningSecs),
    "",
  ];
  if (Object.keys(limits).length > 0) {
    lines.push("[limits]", ...Object.entries(limits).map(([k, v]) => `${k} = ${tomlValue(v)}`), "");
  }
  for (const k of apiKeys) {
    lines.push("[[api_keys]]", `name = ${tomlString(k.name)}`, `key = ${tomlString(k.key)}`);
    if (k.tenant) lines.push(`tenant = ${tomlString(k.tenant)}`);
    lines.push(`scopes = ${tomlValue(k.scopes)}`, "");
  }
  if (cluster) {
    const { redisUrl, keyPrefix, mode, nodeTtlSecs, presenceGraceSecs, onUnavailable } = cluster;
    lines.push(
      "[cluster]",
      ...opt("redis_url", redisUrl),
      ...opt("key_prefix", keyPrefix),
      ...opt("mode", mode),
      ...opt("node_ttl_secs", nodeTtlSecs),
      ...opt("presence_grace_secs", presenceGraceSecs),
      ...opt("on_unavailable", onUnavailable),
      "",
    );
  }
  if (historySize !== undefined) lines.push("[history]", `size = ${historySize}`, "");
  lines.push("[log]", 'level = "warn"', "");
  if (extraToml) lines.push(extraToml, "");
  return lines.join("\n");
}

/**
 * Environment for a child: ours, minus any ROOMCAST_* setting and RUST_LOG from the shell (a
 * developer's ROOMCAST_SERVER__BIND must not leak into a test: the child reads only our file),
 * plus the websocket path of TEST_WEBSOCKET_PATH, plus `extra`.
 */
export function childEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith("ROOMCAST_") || k === "RUST_LOG") continue;
    env[k] = v;
  }
  // The websocket path every server of the run takes (`lean` or `socketioxide`): how
  // scripts/test.sh runs a suite against both.
  const path = process.env.TEST_WEBSOCKET_PATH;
  if (path) env.ROOMCAST_SERVER__LEAN_WEBSOCKET = path === "lean" ? "true" : "false";
  return { ...env, ...extra };
}

// ---------------------------------------------------------------------------------------------
// Server lifecycle

/**
 * Starts `roomcast serve --config <tmp file>` on a free port and waits for GET /ready == 200.
 * Options: config (port => the config.toml text) or configFile (a file used as it is: then `env`
 * and `listenPort` say where it listens), env (extra environment for the child), listenPort (when `env` moves the bind address elsewhere: the port to probe and to hand
 * out instead of the config's), waitFor ("ready", the default: GET /ready == 200; "health": GET
 * /health == 200, for a node expected to be unready), tmpPrefix (of its temporary directory).
 * Returns {url, port, configPort, configPath, pid, stop(), kill(signal), alive(), logTail()}.
 */
export async function startServer(options) {
  if (!fs.existsSync(ROOMCAST_BIN)) {
    throw new Error(`roomcast binary not found at ${ROOMCAST_BIN} (build it or set ROOMCAST_BIN)`);
  }
  let lastError;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(options);
    } catch (err) {
      lastError = err;
      // Another process grabbed the port between our probe and the server's bind: try again.
      if (!/address (already )?in use/i.test(err.message)) throw err;
    }
  }
  throw lastError;
}

async function startOnce({ config, configFile, env, listenPort, waitFor = "ready", tmpPrefix = "roomcast-test-" }) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), tmpPrefix));
  const configPath = configFile ?? path.join(dir, "config.toml");
  const logPath = path.join(dir, "server.log");
  if (!configFile) fs.writeFileSync(configPath, config(port));
  const logFd = fs.openSync(logPath, "w");

  const child = spawn(ROOMCAST_BIN, ["serve", "--config", configPath], {
    cwd: dir,
    env: childEnv(env),
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

  const url = `http://127.0.0.1:${listenPort ?? port}`;

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

  const probePath = waitFor === "health" ? "/health" : "/ready";
  try {
    const deadline = Date.now() + READY_DEADLINE_MS;
    for (;;) {
      if (exited) {
        throw new Error(`roomcast exited before becoming ready (${describeValue(exited)}); log:\n${tail(logPath)}`);
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
    port: listenPort ?? port,
    configPort: port,
    configPath,
    pid: child.pid,
    stop,
    kill,
    alive: () => exited === null,
    logTail: () => tail(logPath),
  };
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

// ---------------------------------------------------------------------------------------------
// Tokens

function b64url(value) {
  return Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
}

const HMAC = { HS256: "sha256", HS384: "sha384", HS512: "sha512" };

/**
 * Signs claims with `secret` (HS256 unless `algorithm` is HS384 or HS512), byte for byte the
 * token jsonwebtoken's `sign(claims, secret, {noTimestamp: true})` makes: no `iat` unless the
 * claims carry one. `exp` defaults to one hour from now unless the claims carry their own (pass
 * `exp: undefined` explicitly to leave it out).
 */
export function mintToken(claims, { secret, algorithm = "HS256" }) {
  const hash = HMAC[algorithm];
  if (!hash) throw new Error(`mintToken signs HMAC tokens only, not ${algorithm}`);
  const payload = { ...claims };
  if (!("exp" in payload)) payload.exp = Math.floor(Date.now() / 1000) + 3600;
  if (payload.exp === undefined) delete payload.exp;
  const head = `${b64url({ alg: algorithm, typ: "JWT" })}.${b64url(payload)}`;
  return `${head}.${createHmac(hash, secret).update(head).digest("base64url")}`;
}

/** A hand-crafted unsigned token with header {"alg":"none"}. */
export function unsignedToken(claims) {
  return `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims)}.`;
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

// ---------------------------------------------------------------------------------------------
// redis-server

/** Resolves true when a raw `PING` on 127.0.0.1:port answers `+PONG` within `timeout` ms. */
export function redisPing(port, { timeout = 1_000 } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    let buf = "";
    const done = (ok) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeout);
    sock.on("connect", () => sock.write("PING\r\n"));
    sock.on("data", (chunk) => {
      buf += chunk.toString("latin1");
      if (buf.includes("\r\n")) done(buf.startsWith("+PONG"));
    });
    sock.on("error", () => done(false));
    sock.on("close", () => done(false));
  });
}

/**
 * Starts a throwaway redis-server on a free port (never 6379), without persistence, in its own
 * directory, and waits until it answers PING.
 * Returns {port, url, stop(), kill(), start(), alive(), logTail()}: `kill` SIGKILLs it (an
 * outage), `start` runs a fresh one on the same port (an empty Redis: nothing is persisted).
 */
export async function startRedis() {
  const port = await freePort();
  if (port === 6379) return startRedis(); // never touch a developer's Redis
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-test-redis-"));
  const logPath = path.join(dir, "redis.log");
  let child = null;
  let exitPromise = Promise.resolve();

  async function start() {
    if (alive()) throw new Error("redis already running");
    const logFd = fs.openSync(logPath, "a");
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir];
    const proc = spawn(REDIS_BIN, args, { cwd: dir, stdio: ["ignore", logFd, logFd] });
    fs.closeSync(logFd);
    trackChild(proc);
    child = proc;
    let exited = null;
    exitPromise = new Promise((resolve) => {
      proc.once("exit", (code, signal) => resolve((exited = { code, signal })));
      proc.once("error", (error) => resolve((exited = { error })));
    });
    const deadline = Date.now() + REDIS_START_DEADLINE_MS;
    for (;;) {
      if (exited) throw new Error(`redis-server exited on start (${JSON.stringify(exited)}); log:\n${logTail()}`);
      if (await redisPing(port)) return;
      if (Date.now() >= deadline) {
        throw new Error(`redis-server on port ${port} did not answer PING within ${REDIS_START_DEADLINE_MS} ms; log:\n${logTail()}`);
      }
      await delay(50);
    }
  }

  function alive() {
    return child !== null && child.exitCode === null && child.signalCode === null;
  }

  async function kill(signal = "SIGKILL") {
    if (alive()) child.kill(signal);
    await exitPromise;
  }

  async function stop() {
    await kill("SIGKILL");
    fs.rmSync(dir, { recursive: true, force: true });
  }

  const logTail = (bytes = 3000) => tail(logPath, bytes);

  try {
    await start();
  } catch (err) {
    await stop();
    throw err;
  }
  return { port, url: `redis://127.0.0.1:${port}`, start, kill, stop, alive, logTail };
}

// ---------------------------------------------------------------------------------------------
// AI streams (WEBSOCKET_API.md section 13)

/**
 * An emoji-heavy text for stream tests: ASCII, astral-plane emoji and ZWJ sequences (👩‍💻,
 * 👨‍👩‍👧‍👦), skin tones, flags, combining characters (e + U+0301), CJK and Hangul. Offsets
 * count code points, so a client that counts UTF-16 units or bytes rebuilds it wrong.
 */
export const STREAM_TEXT =
  "Hello, wörld! 👩‍💻 writes code 🎉🎉 — e\u0301te\u0301 n\u0303 (combining); 漢字とかな, 한국어; " +
  "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 👋🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 done ✅\n";

/** `text` cut into pieces of 1 to `max` code points (ZWJ sequences and pairs are split too). */
export function streamPieces(text, max = 4) {
  const chars = Array.from(text);
  const pieces = [];
  for (let i = 0, n = 1; i < chars.length; i += n, n = (n % max) + 1) pieces.push(chars.slice(i, i + n).join(""));
  return pieces;
}

/** A producer over HTTP: create, append (asserting 202 unless told), finish, fail, get. */
export function streamProducer(url, key) {
  const api = (path, body, method = "POST") => http(`${url}/api/v1/streams${path}`, { method, key, body });
  return {
    create: (body) => api("", body),
    append: (id, text) => api(`/${encodeURIComponent(id)}/append`, { text }),
    finish: (id, body = {}) => api(`/${encodeURIComponent(id)}/finish`, body),
    fail: (id, error) => api(`/${encodeURIComponent(id)}/fail`, { error }),
    get: (id, offset = 0) => api(`/${encodeURIComponent(id)}?offset=${offset}`, undefined, "GET"),
  };
}
