// Yjs documents (WEBSOCKET_API.md, "Documents (Yjs)") with the stock npm packages: a
// `SocketIOProvider` from y-socket.io 1.1 on a `Y.Doc` from yjs 13.6, changed in nothing but
// the URL and `auth`. Editors converge, a late joiner alone gets the whole document from the
// server, awareness comes and goes with its client, forbidden and invalid documents are refused
// at connect, a document survives a restart (SIGTERM and SIGKILL) with [storage] path, two
// editors on two cluster nodes converge, and a backend reads and edits a document over HTTP.

import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import * as Y from "yjs";
import { SocketIOProvider } from "y-socket.io";
import { Manager } from "socket.io-client";

import { startServer, mintToken, eventually, http, API_KEY, READ_KEY, PUBLISH_ONLY_KEY } from "../lib/helpers.js";
import { startCluster } from "../lib/cluster.js";
import { destroyProvider } from "../lib/yjs.js";

const WAIT = { timeout: 10_000 };

let srv;
const providers = new Set();

before(async () => {
  srv = await startServer({ nodeId: "docs" });
});
afterEach(() => {
  for (const p of providers) destroyProvider(p);
  providers.clear();
});
after(async () => {
  for (const p of providers) destroyProvider(p);
  await srv?.stop();
});

/** A stock provider on a fresh Y.Doc for `user` (granted project 42 unless `claims` says otherwise). */
function editor(url, name, { user = "ann", claims = { projects: ["42"] }, connect = true } = {}) {
  const doc = new Y.Doc();
  const provider = new SocketIOProvider(url, name, doc, {
    autoConnect: connect,
    disableBc: true,
    auth: { token: mintToken({ sub: user, ...claims }) },
  });
  providers.add(provider);
  const errors = [];
  provider.on("connection-error", (err) => errors.push(err.message));
  return { doc, provider, errors, text: doc.getText("content") };
}

/** Resolves once the provider has synced with the server. */
function synced(e) {
  if (e.provider.synced) return Promise.resolve();
  return eventually(() => e.provider.synced, { ...WAIT, what: "the provider to sync" });
}

function close(e) {
  destroyProvider(e.provider);
  providers.delete(e.provider);
}

let counter = 0;
function docName(room = "project:42") {
  counter += 1;
  return `${room}/spec-${process.pid}-${counter}`;
}

test("two stock editors converge on concurrent edits", async () => {
  const name = docName();
  const a = editor(srv.url, name, { user: "ann" });
  const b = editor(srv.url, name, { user: "bob" });
  await Promise.all([synced(a), synced(b)]);
  a.text.insert(0, "Hello");
  b.text.insert(0, "World");
  let expected = 10;
  for (let i = 0; i < 20; i++) {
    a.text.insert(a.text.length, `a${i}`);
    b.text.insert(0, `b${i}`);
    expected += 2 * String(i).length + 2;
  }
  await eventually(() => a.text.toString() === b.text.toString() && a.text.length === expected, {
    ...WAIT,
    what: "both editors to hold the same text",
  });
  assert.match(a.text.toString(), /Hello/);
  assert.match(a.text.toString(), /World/);
});

test("an editor joining alone after the others left gets the whole document from the server", async () => {
  const name = docName();
  const a = editor(srv.url, name, { user: "ann" });
  const b = editor(srv.url, name, { user: "bob" });
  await Promise.all([synced(a), synced(b)]);
  a.text.insert(0, "first line\n");
  await eventually(() => b.text.toString() === "first line\n", WAIT);
  b.text.insert(b.text.length, "second line\n");
  await eventually(() => a.text.toString() === "first line\nsecond line\n", WAIT);
  close(a);
  close(b);
  const c = editor(srv.url, name, { user: "cid" });
  await synced(c);
  await eventually(() => c.text.toString() === "first line\nsecond line\n", { ...WAIT, what: "the late joiner's text" });
});

test("awareness (cursors) appears for the others and disappears when its client leaves", async () => {
  const name = docName();
  const a = editor(srv.url, name, { user: "ann" });
  const b = editor(srv.url, name, { user: "bob" });
  await Promise.all([synced(a), synced(b)]);
  a.provider.awareness.setLocalStateField("user", { name: "Ann", cursor: 3 });
  const annId = a.doc.clientID;
  await eventually(() => b.provider.awareness.getStates().get(annId)?.user?.name === "Ann", {
    ...WAIT,
    what: "Ann's cursor at Bob",
  });
  // A third editor connecting now is sent the states the server knows.
  const c = editor(srv.url, name, { user: "cid" });
  await synced(c);
  await eventually(() => c.provider.awareness.getStates().get(annId)?.user?.cursor === 3, {
    ...WAIT,
    what: "Ann's cursor at a later editor",
  });
  // Ann's client goes away without a word (the stock provider never sends its own removal).
  a.provider.socket.disconnect();
  await eventually(() => !b.provider.awareness.getStates().has(annId) && !c.provider.awareness.getStates().has(annId), {
    ...WAIT,
    what: "Ann's cursor to disappear",
  });
});

test("a forbidden document and an invalid name are refused at connect with a clear code", async () => {
  const forbidden = editor(srv.url, "project:7/spec", { user: "ann" });
  await eventually(() => forbidden.errors.length > 0, { ...WAIT, what: "connect_error" });
  assert.equal(forbidden.errors[0], "forbidden");
  assert.equal(forbidden.provider.synced, false);

  for (const bad of ["nope", "project:42", "project:42/", "project:42/a b", "room:1/x", "project:42/a/b"]) {
    const e = editor(srv.url, bad, { user: "ann" });
    await eventually(() => e.errors.length > 0, { ...WAIT, what: `connect_error for ${bad}` });
    assert.equal(e.errors[0], "invalid_document", bad);
    close(e);
  }

  const anonymous = new SocketIOProvider(srv.url, docName(), new Y.Doc(), { disableBc: true, auth: {} });
  providers.add(anonymous);
  const errors = [];
  anonymous.on("connection-error", (err) => errors.push(err.message));
  await eventually(() => errors.length > 0, WAIT);
  assert.equal(errors[0], "token_missing");
});

test("tenants never share a document of the same name", async () => {
  const name = docName();
  const a = editor(srv.url, name, { user: "ann" });
  const other = editor(srv.url, name, { user: "ann", claims: { projects: ["42"], tenant: "acme" } });
  const b = editor(srv.url, name, { user: "bob" });
  await Promise.all([synced(a), synced(b), synced(other)]);
  other.text.insert(0, "acme's secret");
  a.text.insert(0, "default tenant");
  await eventually(() => b.text.toString() === "default tenant", WAIT);
  assert.equal(other.text.toString(), "acme's secret");
});

test("a document survives a restart with [storage] path: SIGTERM, and SIGKILL right after an edit was seen", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-docs-"));
  const options = { nodeId: "docs-disk", extraToml: `\n[storage]\npath = ${JSON.stringify(dir)}\n` };
  const name = docName();
  try {
    let node = await startServer(options);
    const a = editor(node.url, name, { user: "ann" });
    const b = editor(node.url, name, { user: "bob" });
    await Promise.all([synced(a), synced(b)]);
    a.text.insert(0, "kept across SIGTERM;");
    await eventually(() => b.text.toString() === "kept across SIGTERM;", WAIT);
    close(a);
    close(b);
    await node.kill("SIGTERM");
    await node.stop();

    node = await startServer(options);
    const c = editor(node.url, name, { user: "cid" });
    const d = editor(node.url, name, { user: "dan" });
    await Promise.all([synced(c), synced(d)]);
    await eventually(() => c.text.toString() === "kept across SIGTERM;", { ...WAIT, what: "the text after SIGTERM" });
    c.text.insert(c.text.length, " and SIGKILL.");
    // Dan has it: the server stored it before sending it on.
    await eventually(() => d.text.toString() === "kept across SIGTERM; and SIGKILL.", WAIT);
    await node.kill("SIGKILL");
    await node.stop();
    close(c);
    close(d);

    node = await startServer(options);
    const e = editor(node.url, name, { user: "eve" });
    await synced(e);
    await eventually(() => e.text.toString() === "kept across SIGTERM; and SIGKILL.", { ...WAIT, what: "the text after SIGKILL" });
    close(e);
    await node.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("two editors on two cluster nodes converge, and a third at either node gets the whole document", async () => {
  const cluster = await startCluster(["docs-a", "docs-b"], { label: "docs" });
  try {
    const [na, nb] = cluster.list;
    const name = docName();
    const a = editor(na.url, name, { user: "ann" });
    const b = editor(nb.url, name, { user: "bob" });
    await Promise.all([synced(a), synced(b)]);
    a.text.insert(0, "from A;");
    b.text.insert(0, "from B;");
    for (let i = 0; i < 10; i++) {
      a.text.insert(a.text.length, "a");
      b.text.insert(0, "b");
    }
    await eventually(() => a.text.toString() === b.text.toString() && a.text.length === 14 + 20, {
      ...WAIT,
      what: "the editors of two nodes to converge",
    });
    a.provider.awareness.setLocalStateField("user", { name: "Ann" });
    await eventually(() => b.provider.awareness.getStates().get(a.doc.clientID)?.user?.name === "Ann", {
      ...WAIT,
      what: "Ann's cursor at node B",
    });
    a.provider.socket.disconnect();
    await eventually(() => !b.provider.awareness.getStates().has(a.doc.clientID), {
      ...WAIT,
      what: "Ann's cursor to leave node B",
    });
    const text = b.text.toString();
    close(a);
    close(b);
    for (const node of [na, nb]) {
      const c = editor(node.url, name, { user: "cid" });
      await synced(c);
      await eventually(() => c.text.toString() === text, { ...WAIT, what: "the late joiner's text" });
      close(c);
    }
  } finally {
    await cluster.stop();
  }
});

test("a backend reads a document (Yjs update and JSON) and edits it while people edit it", async () => {
  const name = docName();
  const url = `${srv.url}/api/v1/documents/${name}`;
  assert.equal((await http(url, { key: API_KEY })).body?.error?.code, "document_not_found");
  assert.equal((await http(`${srv.url}/api/v1/documents/project:42`, { key: API_KEY })).body?.error?.code, "invalid_document");
  assert.equal((await http(url, { key: PUBLISH_ONLY_KEY })).status, 403);
  assert.equal((await http(url, { method: "POST", key: READ_KEY, body: { text: { content: { insert: "x" } } } })).status, 403);

  const a = editor(srv.url, name, { user: "ann" });
  const b = editor(srv.url, name, { user: "bob" });
  await Promise.all([synced(a), synced(b)]);
  a.text.insert(0, "Hello people");
  a.doc.getMap("meta").set("title", "Spec");
  await eventually(() => b.text.toString() === "Hello people" && b.doc.getMap("meta").get("title") === "Spec", WAIT);

  // The whole document as one Yjs update.
  const res = await fetch(url, { headers: { authorization: `Bearer ${API_KEY}`, accept: "application/octet-stream" } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/octet-stream");
  const copy = new Y.Doc();
  Y.applyUpdate(copy, new Uint8Array(await res.arrayBuffer()));
  assert.equal(copy.getText("content").toString(), "Hello people");
  assert.equal(copy.getMap("meta").get("title"), "Spec");

  // As JSON: roots' types inferred, or named.
  const json = await http(url, { key: API_KEY });
  assert.equal(json.status, 200);
  assert.deepEqual(json.body, { name, tenant: "default", roots: { content: "Hello people", meta: { title: "Spec" } } });
  const named = await http(`${url}?text=content&map=meta`, { key: API_KEY });
  assert.deepEqual(named.body.roots, { content: "Hello people", meta: { title: "Spec" } });

  // A server-side Yjs update, made by an "agent" on its own copy.
  const agent = new Y.Doc();
  Y.applyUpdate(agent, new Uint8Array(Y.encodeStateAsUpdate(copy)));
  const before = Y.encodeStateVector(agent);
  agent.getText("content").insert(5, ",");
  const diff = Y.encodeStateAsUpdate(agent, before);
  const posted = await fetch(url, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/octet-stream" },
    body: diff,
  });
  assert.equal(posted.status, 200);
  assert.deepEqual(await posted.json(), { ok: true, changed: true });
  await eventually(() => a.text.toString() === "Hello, people" && b.text.toString() === "Hello, people", {
    ...WAIT,
    what: "the editors to see the posted update",
  });

  // The small JSON form.
  const edit = await http(url, { method: "POST", key: API_KEY, body: { text: { content: { insert: "!" } }, map: { meta: { status: "draft" } } } });
  assert.deepEqual(edit.body, { ok: true, changed: true });
  await eventually(() => b.text.toString() === "Hello, people!" && b.doc.getMap("meta").get("status") === "draft", WAIT);

  // Not an update: refused, nothing applied.
  const garbage = await fetch(url, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/octet-stream" },
    body: new Uint8Array([255, 255, 255, 255, 1]),
  });
  assert.equal(garbage.status, 422);
  assert.equal((await garbage.json()).error.code, "invalid_update");
  assert.equal((await http(url, { key: API_KEY })).body.roots.content, "Hello, people!");

  const metrics = (await http(`${srv.url}/metrics`, { key: API_KEY })).text;
  assert.ok(Number(/^roomcast_documents_open (\d+)$/m.exec(metrics)?.[1]) >= 1, metrics);
  assert.ok(Number(/^roomcast_document_updates_total (\d+)$/m.exec(metrics)?.[1]) >= 4, metrics);
});

test("an oversized update is refused with update_too_large and a disconnect; documents per connection are bounded", async () => {
  const limited = await startServer({
    nodeId: "docs-limits",
    extraToml: "\n[documents]\nmax_update_bytes = 2048\nmax_documents_per_connection = 2\n",
  });
  try {
    const name = docName();
    const a = editor(limited.url, name, { user: "ann" });
    const b = editor(limited.url, name, { user: "bob" });
    await Promise.all([synced(a), synced(b)]);
    const errors = [];
    a.provider.socket.on("error", (e) => errors.push(e));
    const reasons = [];
    a.provider.socket.on("disconnect", (reason) => reasons.push(reason));
    a.text.insert(0, "x".repeat(5000));
    await eventually(() => reasons.length > 0, { ...WAIT, what: "the disconnect" });
    assert.equal(reasons[0], "io server disconnect");
    assert.equal(errors[0]?.code, "update_too_large");
    assert.match(errors[0]?.message, /2048 bytes/);
    // Never applied: the other editor and a newcomer see nothing of it.
    b.text.insert(0, "small");
    const c = editor(limited.url, name, { user: "cid" });
    await synced(c);
    await eventually(() => c.text.toString() === "small", WAIT);
    assert.equal(b.text.toString(), "small");

    // One Engine.IO connection (a shared Manager) opening three documents: the third is refused.
    const token = mintToken({ sub: "ann", projects: ["42"] });
    const manager = new Manager(limited.url, { transports: ["websocket"], reconnection: false });
    const outcomes = await Promise.all(
      [1, 2, 3].map(
        (i) =>
          new Promise((resolve) => {
            const s = manager.socket(`/yjs|project:42/multi-${i}`, { auth: { token } });
            s.on("connect", () => resolve("connected"));
            s.on("connect_error", (e) => resolve(e.message));
            s.connect();
          }),
      ),
    );
    assert.deepEqual(outcomes.sort(), ["connected", "connected", "too_many_documents"]);
    manager.engine?.close();
  } finally {
    await limited.stop();
  }
});
