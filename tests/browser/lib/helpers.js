// Helpers for the browser tests: a real `roomcast serve` child on a free port, tokens,
// publishing over HTTP, Debian's headless Chromium through playwright-core, and a load of
// socket.io-client sockets. Every wait has a deadline; nothing sleeps to let things settle.

import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import jwt from "jsonwebtoken";
import { chromium } from "playwright-core";
import { io } from "socket.io-client";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, "..", "..", "..");
export const ROOMCAST_BIN = process.env.ROOMCAST_BIN || path.join(REPO_ROOT, "target", "debug", "roomcast");
export const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
export const ARTIFACTS = path.resolve(HERE, "..", "artifacts");

export const JWT_SECRET = "browser-test-secret-0123456789abcdef";
export const API_KEY = "browser-publish-key"; // scopes publish + read
export const ADMIN_KEY = "browser-admin-key"; // scope admin only
export const WAIT_MS = 10_000;

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

/** Polls `probe` until it returns something truthy, or throws after `timeout` ms. */
export async function eventually(probe, { timeout = WAIT_MS, interval = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}; last: ${last}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** Starts `roomcast serve` with test keys on a free port; resolves once /ready is 200. */
export async function startServer() {
  if (!fs.existsSync(ROOMCAST_BIN)) throw new Error(`roomcast binary not found at ${ROOMCAST_BIN}`);
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-browser-"));
  const configPath = path.join(dir, "config.toml");
  fs.writeFileSync(
    configPath,
    [
      "[server]",
      `bind = "127.0.0.1:${port}"`,
      'node_id = "browser-node"',
      "[auth]",
      `jwt_secret = "${JWT_SECRET}"`,
      "[[api_keys]]",
      'name = "backend"',
      `key = "${API_KEY}"`,
      'scopes = ["publish", "read"]',
      "[[api_keys]]",
      'name = "ops"',
      `key = "${ADMIN_KEY}"`,
      'scopes = ["admin"]',
      "[log]",
      'level = "warn"',
      "",
    ].join("\n"),
  );
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ROOMCAST_")));
  const logPath = path.join(dir, "server.log");
  const log = fs.openSync(logPath, "w");
  const child = spawn(ROOMCAST_BIN, ["serve", "--config", configPath], { cwd: dir, env, stdio: ["ignore", log, log] });
  fs.closeSync(log);
  children.add(child);
  child.once("exit", () => children.delete(child));
  const url = `http://127.0.0.1:${port}`;
  await eventually(
    async () => {
      if (child.exitCode !== null) throw new Error(`roomcast exited: ${fs.readFileSync(logPath, "utf8")}`);
      const res = await fetch(`${url}/ready`);
      return res.status === 200;
    },
    { timeout: 20_000, what: "GET /ready == 200" },
  );
  return {
    url,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export function mintToken(claims) {
  const now = Math.floor(Date.now() / 1000);
  return jwt.sign({ iat: now, exp: now + 3600, ...claims }, JWT_SECRET, { algorithm: "HS256", noTimestamp: true });
}

/** POST /api/v1/events with the publish key; resolves with {status, body}. */
export async function publish(url, body) {
  const res = await fetch(`${url}/api/v1/events`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${API_KEY}` },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json().catch(() => undefined) };
}

/** Debian's Chromium, headless; playwright never downloads a browser of its own here. */
export function launchChromium() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/**
 * Opens a page that fails the test on any request leaving the server (the pages must load
 * nothing from elsewhere) and records console errors.
 */
export async function openPage(browser, serverUrl) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  const origin = new URL(serverUrl).host;
  page.foreign = [];
  page.consoleErrors = [];
  page.on("request", (req) => {
    const u = new URL(req.url());
    if (u.host !== origin && u.protocol !== "data:") page.foreign.push(req.url());
  });
  page.on("console", (msg) => {
    if (msg.type() === "error") page.consoleErrors.push(msg.text());
  });
  page.on("pageerror", (err) => page.consoleErrors.push(String(err)));
  return page;
}

export async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** `n` socket.io-client sockets, each its own user in `project:<project>`; resolves when all joined. */
export async function connectLoad(url, n, project) {
  const sockets = [];
  await Promise.all(
    Array.from({ length: n }, (_, i) => {
      const socket = io(url, {
        forceNew: true,
        reconnection: false,
        transports: ["websocket"],
        auth: { token: mintToken({ sub: `load-${i}`, projects: [project] }) },
      });
      sockets.push(socket);
      return new Promise((resolve, reject) => {
        socket.once("connection.established", async () => {
          try {
            const ack = await socket.timeout(WAIT_MS).emitWithAck("subscribe", { room: `project:${project}` });
            if (!ack?.ok) throw new Error(`subscribe refused: ${JSON.stringify(ack)}`);
            resolve();
          } catch (err) {
            reject(err);
          }
        });
        socket.once("connect_error", (err) => reject(new Error(`load socket ${i}: ${err.message}`)));
      });
    }),
  );
  return {
    sockets,
    close() {
      for (const s of sockets) s.disconnect();
    },
  };
}
