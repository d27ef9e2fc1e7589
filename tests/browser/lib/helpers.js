// Helpers for the browser tests: the keys and secret of their server, Debian's headless
// Chromium through playwright-core, and a load of socket.io-client sockets. Starting the server,
// tokens and HTTP are the shared harness's (tests/harness/js). Every wait has a deadline;
// nothing sleeps to let things settle.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";
import { io } from "socket.io-client";

import * as harness from "../../harness/js/index.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
export const ARTIFACTS = path.resolve(HERE, "..", "artifacts");

export const JWT_SECRET = "browser-test-secret-0123456789abcdef";
export const API_KEY = "browser-publish-key"; // scopes publish + read
export const ADMIN_KEY = "browser-admin-key"; // scope admin only
export const WAIT_MS = 10_000;

/** Starts `roomcast serve` with the publish and admin keys on a free port; resolves once /ready is 200. */
/**
 * Starts `roomcast serve` for the pages; `extraToml` is appended to its config; `cluster`
 * ({redisUrl, keyPrefix}) makes it a node of a cluster.
 */
export async function startServer({ extraToml, nodeId = "browser-node", cluster } = {}) {
  return harness.startServer({
    config: (port) =>
      harness.configToml({
        port,
        nodeId,
        cluster,
        jwtSecret: JWT_SECRET,
        apiKeys: [
          { name: "backend", key: API_KEY, scopes: ["publish", "read"] },
          { name: "ops", key: ADMIN_KEY, scopes: ["admin"] },
        ],
        extraToml,
      }),
    tmpPrefix: "roomcast-browser-",
  });
}

export function mintToken(claims) {
  return harness.mintToken(claims, { secret: JWT_SECRET });
}

/** POST /api/v1/events with the publish key; resolves with {status, body}. */
export async function publish(url, body) {
  const res = await harness.publish(url, API_KEY, body);
  return { status: res.status, body: res.body };
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
