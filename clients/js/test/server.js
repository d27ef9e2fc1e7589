// Starts a real `roomcast serve` on a free port for one test file (the minimal logic of
// tests/js/lib/helpers.js, without its dependencies), mints HS256 tokens, publishes over HTTP.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const ROOMCAST_BIN = process.env.ROOMCAST_BIN || path.join(REPO_ROOT, "target", "debug", "roomcast");
const JWT_SECRET = "client-test-secret-0123456789abcdef";
const API_KEY = "client-test-key";

const children = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until truthy, or throws after `timeout` ms. */
export async function eventually(probe, { timeout = 5000, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(20);
  }
}

function config({ port, historySize, expiryWarningSecs, leewaySecs = 0 }) {
  const lines = [
    "[server]",
    `bind = "127.0.0.1:${port}"`,
    "",
    "[auth]",
    `jwt_secret = "${JWT_SECRET}"`,
    `leeway_secs = ${leewaySecs}`,
  ];
  if (expiryWarningSecs !== undefined) lines.push(`expiry_warning_secs = ${expiryWarningSecs}`);
  lines.push("", "[[api_keys]]", 'name = "tests"', `key = "${API_KEY}"`, 'scopes = ["publish", "read"]', "");
  if (historySize !== undefined) lines.push("[history]", `size = ${historySize}`, "");
  lines.push("[log]", 'level = "warn"', "");
  return lines.join("\n");
}

/**
 * Starts a server. Options: historySize ([history] size), expiryWarningSecs
 * (auth.expiry_warning_secs), leewaySecs (default 0). Returns {url, mintToken, publish, stop}.
 */
export async function startServer(options = {}) {
  if (!fs.existsSync(ROOMCAST_BIN)) throw new Error(`roomcast binary not found at ${ROOMCAST_BIN}`);
  for (let attempt = 0; ; attempt++) {
    try {
      return await startOnce(options);
    } catch (err) {
      if (attempt >= 2 || !/address (already )?in use/i.test(err.message)) throw err;
    }
  }
}

async function startOnce(options) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-client-test-"));
  const configPath = path.join(dir, "config.toml");
  const logPath = path.join(dir, "server.log");
  fs.writeFileSync(configPath, config({ ...options, port }));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ROOMCAST_")));
  const logFd = fs.openSync(logPath, "w");
  const child = spawn(ROOMCAST_BIN, ["serve", "--config", configPath], { cwd: dir, env, stdio: ["ignore", logFd, logFd] });
  fs.closeSync(logFd);
  children.add(child);
  let exited = false;
  const exit = new Promise((resolve) => child.once("exit", () => {
    exited = true;
    children.delete(child);
    resolve();
  }));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (!exited) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exit;
      clearTimeout(timer);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited) {
      const log = fs.readFileSync(logPath, "utf8");
      fs.rmSync(dir, { recursive: true, force: true });
      throw new Error(`roomcast exited before becoming ready:\n${log}`);
    }
    try {
      const res = await fetch(`${url}/ready`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error("roomcast did not become ready within 20 s");
    }
    await delay(50);
  }

  return {
    url,
    stop,
    mintToken,
    /** POST /api/v1/events; resolves with the 202 body or throws. */
    async publish(type, data) {
      const res = await fetch(`${url}/api/v1/events`, {
        method: "POST",
        headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ type, data }),
        signal: AbortSignal.timeout(10_000),
      });
      const text = await res.text();
      if (res.status !== 202) throw new Error(`publish ${type}: ${res.status} ${text}`);
      return JSON.parse(text);
    },
  };
}

const b64url = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");

/** An HS256 token for the test secret; `exp` defaults to an hour from now. */
export function mintToken(claims = {}) {
  const now = Math.floor(Date.now() / 1000);
  const payload = { iat: now, exp: now + 3600, ...claims };
  const head = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(payload)}`;
  return `${head}.${createHmac("sha256", JWT_SECRET).update(head).digest("base64url")}`;
}

/** Resolves with the next `type` event of `client` matching `match`. */
export function nextEvent(client, type, { match = () => true, timeout = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${type}`));
    }, timeout);
    const off = client.on(type, (arg) => {
      if (!match(arg)) return;
      clearTimeout(timer);
      off();
      resolve(arg);
    });
  });
}

/** Resolves once the client's state is `state`. */
export function waitForState(client, state, timeout = 5000) {
  if (client.state === state) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for state ${state} (now ${client.state})`));
    }, timeout);
    const off = client.onStateChange((s) => {
      if (s !== state) return;
      clearTimeout(timer);
      off();
      resolve();
    });
  });
}
