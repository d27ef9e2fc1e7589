// A throwaway redis-server for the cluster tests: its own free port (never 6379), no
// persistence, its own working directory. It can be killed and started again on the same port,
// which is how the tests simulate a Redis outage.

import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import { freePort, trackChild, delay } from "./helpers.js";

export const REDIS_BIN = process.env.REDIS_SERVER_BIN || "redis-server";
const START_DEADLINE_MS = 10_000;

/** Resolves true when a raw `PING` on 127.0.0.1:port answers `+PONG` within `timeout` ms. */
export function ping(port, { timeout = 1_000 } = {}) {
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
 * Starts redis-server on a free port and waits until it answers PING.
 * Returns {port, url, stop(), kill(), start(), alive(), logTail()}: `kill` SIGKILLs it (an
 * outage), `start` runs a fresh one on the same port (an empty Redis: nothing is persisted).
 */
export async function startRedis() {
  const port = await freePort();
  if (port === 6379) return startRedis(); // never touch a developer's Redis
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-js-redis-"));
  const logPath = path.join(dir, "redis.log");
  let child = null;
  let exitPromise = Promise.resolve();

  async function start() {
    if (child && child.exitCode === null && child.signalCode === null) throw new Error("redis already running");
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
    const deadline = Date.now() + START_DEADLINE_MS;
    for (;;) {
      if (exited) throw new Error(`redis-server exited on start (${JSON.stringify(exited)}); log:\n${logTail()}`);
      if (await ping(port)) return;
      if (Date.now() >= deadline) {
        throw new Error(`redis-server on port ${port} did not answer PING within ${START_DEADLINE_MS} ms; log:\n${logTail()}`);
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

  function logTail(bytes = 3000) {
    try {
      const text = fs.readFileSync(logPath, "utf8");
      return text.length > bytes ? "…" + text.slice(-bytes) : text;
    } catch {
      return "(no log)";
    }
  }

  try {
    await start();
  } catch (err) {
    await stop();
    throw err;
  }
  return { port, url: `redis://127.0.0.1:${port}`, start, kill, stop, alive, logTail };
}
