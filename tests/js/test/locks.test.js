// Locks for critical sections (WEBSOCKET_API.md section 15) seen by socket.io-client: one
// holder at a time with `locked` telling the others who and until when, the room hearing
// lock.acquired / lock.released (released, expired, disconnected), backends locking over
// HTTP; and on a two-node cluster, sockets on both nodes racing for one lock: never two
// holders at once, fencing tokens strictly increasing in the order of the grants (safe
// integers for JavaScript), an expiry announced once on both nodes.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";

import {
  startServer,
  connectAs,
  disconnectAll,
  waitForEvent,
  emitWithAck,
  http,
  barrier,
  received,
  delay,
  RFC3339_MILLIS_Z,
} from "../lib/helpers.js";
import { startCluster } from "../lib/cluster.js";

const RESOURCE = "project:42/deploy";
const LOCKS = "[locks]\nsweep_ms = 100\n";
// The racing sockets send a few hundred commands a second.
const LIMITS = { events_per_sec: 1000, events_burst: 1000 };

async function viewer(srv, sub) {
  const socket = await connectAs(srv, { sub, projects: ["42"] });
  const ack = await emitWithAck(socket, "subscribe", { room: "project:42" });
  assert.equal(ack.ok, true);
  return socket;
}

function lockEvent(socket, name, match = () => true) {
  return waitForEvent(socket, name, { match: (env) => env?.room === "project:42" && match(env.data) });
}

function acquire(socket, resource = RESOURCE, ttl_ms = 10_000) {
  return emitWithAck(socket, "lock.acquire", { resource, ttl_ms });
}

function tokenOf(ack) {
  assert.equal(ack.ok, true, JSON.stringify(ack));
  assert.ok(Number.isSafeInteger(ack.token) && ack.token > 0, `a safe integer token: ${JSON.stringify(ack)}`);
  assert.match(ack.expires_at, RFC3339_MILLIS_Z);
  return ack.token;
}

describe("locks on one node", () => {
  let srv;
  before(async () => {
    srv = await startServer({ extraToml: LOCKS });
  });
  afterEach(() => disconnectAll());
  after(() => srv?.stop());

  test("one holder at a time; the room hears each lock taken and released", async () => {
    const watcher = await viewer(srv, "carol");
    const alice = await connectAs(srv, { sub: "alice", projects: ["42"] });
    const bob = await connectAs(srv, { sub: "bob", projects: ["42"] });

    const token = tokenOf(await acquire(alice));
    const acquired = await lockEvent(watcher, "lock.acquired");
    assert.equal(typeof acquired.seq, "number", "a numbered room event");
    assert.deepEqual(acquired.data.holder, { user_id: "alice", kind: "socket" });
    assert.equal(acquired.data.token, token);

    const refused = await acquire(bob);
    assert.equal(refused.ok, false);
    assert.equal(refused.error.code, "locked");
    assert.deepEqual(refused.error.holder, { user_id: "alice", kind: "socket" });
    assert.match(refused.error.expires_at, RFC3339_MILLIS_Z);
    assert.equal((await emitWithAck(bob, "lock.release", { resource: RESOURCE, token })).error.code, "not_holder");

    const renewed = await emitWithAck(alice, "lock.renew", { resource: RESOURCE, token, ttl_ms: 60_000 });
    assert.equal(renewed.ok, true);
    assert.ok(renewed.expires_at > acquired.data.expires_at);
    assert.deepEqual(await emitWithAck(alice, "lock.release", { resource: RESOURCE, token }), {
      ok: true,
      resource: RESOURCE,
    });
    const released = await lockEvent(watcher, "lock.released");
    assert.deepEqual(released.data, { resource: RESOURCE, token, reason: "released" });
    assert.ok(tokenOf(await acquire(bob)) > token);
  });

  test("a disconnect releases the socket's locks; a TTL ends a lock", async () => {
    const watcher = await viewer(srv, "carol");
    const alice = await connectAs(srv, { sub: "alice", projects: ["42"] });
    const token = tokenOf(await acquire(alice, "project:42/gone"));
    alice.disconnect();
    const released = await lockEvent(watcher, "lock.released", (d) => d.token === token);
    assert.equal(released.data.reason, "disconnected");

    const bob = await connectAs(srv, { sub: "bob", projects: ["42"] });
    const short = tokenOf(await acquire(bob, "project:42/short", 200));
    const expired = await lockEvent(watcher, "lock.released", (d) => d.token === short);
    assert.equal(expired.data.reason, "expired");
    assert.equal(
      (await emitWithAck(bob, "lock.renew", { resource: "project:42/short", token: short })).error.code,
      "lock_lost",
    );
  });

  test("backends lock over HTTP; sockets see who holds it", async () => {
    const alice = await connectAs(srv, { sub: "alice", projects: ["42"] });
    const url = `${srv.url}/api/v1/locks/project:42/http`;
    const res = await http(url, { method: "POST", key: srv.apiKey, body: { holder: { user_id: "agent-7" } } });
    assert.equal(res.status, 200, res.text);
    const token = res.body.token;
    assert.ok(Number.isSafeInteger(token));
    const refused = await acquire(alice, "project:42/http");
    assert.equal(refused.error.code, "locked");
    assert.deepEqual(refused.error.holder, { user_id: "agent-7", kind: "api" });
    const held = await http(url, { key: srv.apiKey });
    assert.equal(held.body.token, token);
    const wrong = await http(`${url}?token=${token - 1}`, { method: "DELETE", key: srv.apiKey });
    assert.equal(wrong.status, 409);
    assert.equal(wrong.body.error.code, "not_holder");
    assert.equal((await http(`${url}?token=${token}`, { method: "DELETE", key: srv.apiKey })).status, 200);
    assert.equal((await http(url, { key: srv.apiKey })).status, 404);
    assert.ok(tokenOf(await acquire(alice, "project:42/http")) > token);
  });

  test("a room the token does not grant is refused", async () => {
    const dave = await connectAs(srv, { sub: "dave", projects: ["7"] });
    const ack = await acquire(dave);
    assert.equal(ack.error.code, "forbidden");
    assert.equal(ack.error.room, "project:42");
    assert.equal((await acquire(dave, "project:42")).error.code, "invalid_resource");
  });
});

describe("locks on a two-node cluster", () => {
  let cluster;
  before(async () => {
    cluster = await startCluster(["a", "b"], { label: "locks", nodeOptions: { extraToml: LOCKS, limits: LIMITS } });
  });
  afterEach(() => disconnectAll());
  after(() => cluster?.stop());

  test("sockets on both nodes race: one holder at a time, tokens strictly increasing", async () => {
    const [a, b] = cluster.list;
    const sockets = [];
    for (let i = 0; i < 6; i++) {
      const node = i % 2;
      sockets.push({ node, socket: await connectAs([a, b][node], { sub: `u${i}`, projects: ["42"] }) });
    }
    const resource = "project:42/race";
    const grants = [];
    const stopAt = performance.now() + 2000;
    await Promise.all(
      sockets.map(async ({ node, socket }) => {
        while (performance.now() < stopAt) {
          const ack = await acquire(socket, resource);
          if (!ack.ok) {
            assert.equal(ack.error.code, "locked", JSON.stringify(ack));
            await delay(1 + Math.floor(Math.random() * 4));
            continue;
          }
          const from = performance.now();
          await delay(3);
          const until = performance.now();
          const released = await emitWithAck(socket, "lock.release", { resource, token: ack.token });
          assert.equal(released.ok, true, JSON.stringify(released));
          grants.push({ from, until, token: ack.token, node });
        }
      }),
    );
    grants.sort((x, y) => x.from - y.from);
    assert.ok(grants.length >= 20, `only ${grants.length} grants`);
    assert.ok(grants.some((g) => g.node === 0) && grants.some((g) => g.node === 1), "both nodes granted");
    for (let i = 1; i < grants.length; i++) {
      const [prev, next] = [grants[i - 1], grants[i]];
      assert.ok(next.from >= prev.until, `two holders at once: ${JSON.stringify([prev, next])}`);
      assert.ok(next.token > prev.token, `tokens out of order: ${JSON.stringify([prev, next])}`);
      assert.ok(Number.isSafeInteger(next.token));
    }
  });

  test("an expiry is announced once, on both nodes", async () => {
    const [a, b] = cluster.list;
    const watchers = [await viewer(a, "carol"), await viewer(b, "dan")];
    const holder = await connectAs(b, { sub: "erin", projects: ["42"] });
    const token = tokenOf(await acquire(holder, "project:42/ttl", 300));
    for (const w of watchers) {
      const env = await lockEvent(w, "lock.released", (d) => d.token === token);
      assert.equal(env.data.reason, "expired");
    }
    // Every node has swept again since (sweep_ms = 100): a second claim would show now.
    await delay(300);
    await barrier(a, watchers);
    for (const w of watchers) {
      assert.equal(received(w, "lock.released", (env) => env.data.token === token).length, 1);
    }
  });
});
