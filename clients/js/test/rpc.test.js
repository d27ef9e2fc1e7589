// `client.rpc(method, data)` against a real server whose [rpc] points at a real Node HTTP
// receiver started here: the call arrives signed (checked with the snippet of
// WEBSOCKET_API.md 4.3c) with the token's identity, and each failure rejects with its code.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { createClient, RoomcastError } from "../dist/index.js";
import { startServer, waitForState } from "./server.js";

const RPC_SECRET = "js-rpc-secret-0123456789abcdef";
const API_DOC = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "WEBSOCKET_API.md");

/** The documented signature check, as a reader would paste it into a backend. */
async function documentedCheck() {
  const text = fs.readFileSync(API_DOC, "utf8");
  const block = [...text.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]).find((c) => c.includes("function roomcastSigned("));
  assert.ok(block, "WEBSOCKET_API.md has the JS signature check");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-rpc-snippet-"));
  const file = path.join(dir, "check.mjs");
  fs.writeFileSync(file, `${block}\nexport { roomcastSigned };\n`);
  return (await import(pathToFileURL(file).href)).roomcastSigned;
}

/** Records each request (path, headers, raw body) and answers by path, like tests/rpc.rs. */
async function startReceiver() {
  const seen = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks);
      seen.push({ path: req.url, headers: req.headers, raw });
      const json = (status, body) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      if (req.url.startsWith("/status/")) return json(Number(req.url.slice(8)), { error: "scripted" });
      if (req.url === "/text") return res.end("not json");
      if (req.url === "/slow") return setTimeout(() => json(200, {}), 8_000).unref();
      json(200, { path: req.url, data: JSON.parse(raw.toString()).data ?? null });
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = (p) => `http://127.0.0.1:${server.address().port}${p}`;
  return { seen, url, close: () => server.close() };
}

async function rejection(promise) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof RoomcastError, String(err));
    return err;
  }
  assert.fail("the call succeeded");
}

let receiver, srv, off;
const clients = [];
async function connected(server, claims) {
  const client = createClient({ url: server.url, token: server.mintToken(claims) });
  clients.push(client);
  await waitForState(client, "connected");
  return client;
}

before(async () => {
  receiver = await startReceiver();
  srv = await startServer({
    extraToml: [
      "[rpc]",
      `url = "${receiver.url("/main")}"`,
      `secret = "${RPC_SECRET}"`,
      "timeout_ms = 500",
      "[rpc.methods]",
      `"fail.*" = "${receiver.url("/status/502")}"`,
      `"text" = "${receiver.url("/text")}"`,
      `"slow" = "${receiver.url("/slow")}"`,
    ].join("\n"),
  });
  off = await startServer();
});
after(async () => {
  for (const c of clients) c.close();
  await srv?.stop();
  await off?.stop();
  receiver?.close();
});

describe("rpc", () => {
  test("resolves with the backend's answer; the backend gets a signed call with the token's identity", async () => {
    const client = await connected(srv, { sub: "alice", tenant: "acme" });
    const data = { sku: "A-1", user_id: "mallory", tenant: "evil", sid: "not-mine" };
    const before = receiver.seen.length;
    assert.deepEqual(await client.rpc("cart.add", data), { path: "/main", data });
    const call = receiver.seen[before];
    const roomcastSigned = await documentedCheck();
    assert.equal(roomcastSigned(RPC_SECRET, call.raw, call.headers["x-roomcast-signature"]), true);
    assert.equal(roomcastSigned("another-secret-0123456789", call.raw, call.headers["x-roomcast-signature"]), false);
    assert.match(call.headers["x-roomcast-delivery"], /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.deepEqual(JSON.parse(call.raw.toString()), {
      method: "cart.add",
      data,
      user_id: "alice",
      tenant: "acme",
      sid: client.info.sid,
    });
    // `data` may be left out.
    assert.deepEqual(await client.rpc("cart.clear"), { path: "/main", data: null });
  });

  test("rejects with the server's code: rpc_failed with status, rpc_timeout, invalid_payload", async () => {
    const client = await connected(srv, { sub: "bob" });
    let err = await rejection(client.rpc("fail.charge", {}));
    assert.equal(err.code, "rpc_failed");
    assert.equal(err.status, 502);
    err = await rejection(client.rpc("text"));
    assert.equal(err.code, "rpc_failed");
    assert.equal(err.status, 200);
    const started = Date.now();
    err = await rejection(client.rpc("slow"));
    assert.equal(err.code, "rpc_timeout");
    assert.ok(Date.now() - started < 4_000, `${Date.now() - started} ms`);
    const before = receiver.seen.length;
    err = await rejection(client.rpc("not a method", {}));
    assert.equal(err.code, "invalid_payload");
    assert.equal(receiver.seen.length, before);
  });

  test("rejects with rpc_unavailable when the server has no [rpc]", async () => {
    const client = await connected(off, { sub: "carol" });
    const err = await rejection(client.rpc("cart.add", {}));
    assert.equal(err.code, "rpc_unavailable");
    assert.equal(err.status, undefined);
  });
});
