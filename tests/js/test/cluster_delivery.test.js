// Cluster mode, the happy path: three nodes on one Redis behave as one server. Events published
// at any node reach the room's sockets on every node (same envelope, once per socket), tenants
// and the ACL still hold, stats and the presence endpoint count the whole cluster, a user kicked
// at one node is gone from all, and a websocket-only node joins the same cluster.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";

import {
  startServer,
  connectAs,
  connect,
  disconnectAll,
  waitForEnvelope,
  emitWithAck,
  expectNoEvent,
  received,
  barrier,
  publish,
  publishOk,
  broadcast,
  stats,
  eventually,
  mintToken,
  assertEnvelope,
  RFC3339_MILLIS_Z,
  API_KEY,
  ACME_KEY,
  READ_KEY,
  PUBLISH_ONLY_KEY,
  withoutPositions,
} from "../lib/helpers.js";
import {
  startCluster,
  clusterStats,
  presence,
  presenceOk,
  waitForPresence,
  disconnectUser,
  nextDisconnect,
  waitForNodes,
  ACME_READ_KEY,
} from "../lib/cluster.js";

let cluster;
let A, B, C;

before(async () => {
  cluster = await startCluster(["dlv-a", "dlv-b", "dlv-c"], { label: "delivery" });
  ({ "dlv-a": A, "dlv-b": B, "dlv-c": C } = cluster.nodes);
});
after(async () => {
  disconnectAll();
  await cluster?.stop();
});
afterEach(() => disconnectAll());

async function subscribed(srv, claims, rooms, opts) {
  const s = await connectAs(srv, claims, opts);
  const list = Array.isArray(rooms) ? rooms : [rooms];
  assert.deepEqual(withoutPositions(await emitWithAck(s, "subscribe", { rooms: list })), { ok: true, rooms: list }, `subscribe on ${srv.nodeId}`);
  return s;
}

const byId = (id) => (env) => env?.id === id;

/** Waits until the cluster counts no socket at all (the previous test's sockets are gone). */
function clusterIdle() {
  return eventually(async () => (await clusterStats(A)).connections === 0, {
    timeout: 10_000,
    interval: 100,
    what: "cluster.connections == 0",
  });
}

describe("cross-node delivery", () => {
  test("an event published at A reaches sockets on A, B and C with the same envelope, once each", async () => {
    const sockets = [
      await subscribed(A, { sub: "ann", projects: ["d1"] }, "project:d1"),
      await subscribed(B, { sub: "ben", projects: ["d1"] }, "project:d1"),
      await subscribed(C, { sub: "cat", projects: ["d1"] }, "project:d1"),
    ];
    const data = { project_id: "d1", status: "cross-node", updated_by: "alice" };
    const accepted = await publishOk(A, { type: "project.updated", data });
    const envs = await Promise.all(sockets.map((s) => waitForEnvelope(s, "project.updated", accepted.id)));
    for (const env of envs) assertEnvelope(env, { id: accepted.id, type: "project.updated", room: "project:d1", data });
    assert.deepEqual(envs[1], envs[0], "node B delivers the envelope node A built");
    assert.deepEqual(envs[2], envs[0], "node C delivers the envelope node A built");

    // Any node can publish: C → A and B.
    const fromC = await publishOk(C, { type: "project.updated", data: { project_id: "d1", status: "from-c" } });
    await Promise.all(sockets.map((s) => waitForEnvelope(s, "project.updated", fromC.id)));

    await barrier(B, sockets);
    for (const s of sockets) {
      assert.equal(received(s, "project.updated", byId(accepted.id)).length, 1, "exactly once per socket");
      assert.equal(received(s, "project.updated", byId(fromC.id)).length, 1, "exactly once per socket");
    }
  });

  test("/api/v1/broadcast at B reaches / on A and /ws on C", async () => {
    const onA = await connectAs(A, { sub: "ann" });
    const onC = await connectAs(C, { sub: "cat" }, { namespace: "/ws" });
    const res = await broadcast(B.url, API_KEY, { room: "global", event: "deploy.finished", data: { v: 3 } });
    assert.equal(res.status, 202, res.text);
    const [envA, envC] = await Promise.all([
      waitForEnvelope(onA, "deploy.finished", res.body.id),
      waitForEnvelope(onC, "deploy.finished", res.body.id),
    ]);
    assertEnvelope(envA, { id: res.body.id, type: "deploy.finished", room: "global", data: { v: 3 } });
    assert.deepEqual(envC, envA);
  });

  test("an agent event with project_id reaches each socket once, whichever rooms and node it is in", async () => {
    const both = await subscribed(B, { sub: "ben", projects: ["p1"], agents: ["a1"] }, ["agent:a1", "project:p1"]);
    const projectOnly = await subscribed(C, { sub: "cat", projects: ["p1"] }, "project:p1");
    const agentOnly = await subscribed(A, { sub: "ann", agents: ["a1"] }, "agent:a1");
    const data = { agent_id: "a1", project_id: "p1", status: "busy", previous_status: "idle" };
    const accepted = await publishOk(A, { type: "agent.status_changed", data });
    for (const s of [both, projectOnly, agentOnly]) {
      assertEnvelope(await waitForEnvelope(s, "agent.status_changed", accepted.id), {
        id: accepted.id,
        type: "agent.status_changed",
        room: "agent:a1",
        data,
      });
    }
    await barrier(A, [both, projectOnly, agentOnly]);
    for (const s of [both, projectOnly, agentOnly]) {
      assert.equal(received(s, "agent.status_changed", byId(accepted.id)).length, 1, "once per socket");
    }
  });

  test("user:<sub> spans nodes: both of bob's sockets get the suggestion once, alice's none", async () => {
    const bobB = await connectAs(B, { sub: "bob" });
    const bobC = await connectAs(C, { sub: "bob" });
    const alice = await connectAs(A, { sub: "alice" });
    const data = { suggestion_id: "s9", content: "Use a pool", user_id: "bob" };
    const accepted = await publishOk(A, { type: "ai.suggestion", data });
    for (const s of [bobB, bobC]) {
      assertEnvelope(await waitForEnvelope(s, "ai.suggestion", accepted.id), {
        id: accepted.id,
        type: "ai.suggestion",
        room: "user:bob",
        data,
      });
    }
    await expectNoEvent(alice, "ai.suggestion", { match: byId(accepted.id), barrier: { srv: A } });
    assert.equal(received(bobB, "ai.suggestion", byId(accepted.id)).length, 1);
    assert.equal(received(bobC, "ai.suggestion", byId(accepted.id)).length, 1);
  });
});

describe("tenants and ACL across nodes", () => {
  test("a publish for acme at A reaches acme on B only, not globex on C or default on A", async () => {
    const acme = await subscribed(B, { sub: "alice", tenant: "acme", projects: ["1"] }, "project:1");
    const globex = await subscribed(C, { sub: "alice", tenant: "globex", projects: ["1"] }, "project:1");
    const dflt = await subscribed(A, { sub: "alice", projects: ["1"] }, "project:1");
    const data = { project_id: "1", status: "acme-only" };
    const accepted = await publishOk(A, { type: "project.updated", tenant: "acme", data });
    assertEnvelope(await waitForEnvelope(acme, "project.updated", accepted.id), {
      id: accepted.id,
      type: "project.updated",
      room: "project:1",
      data,
    });
    await expectNoEvent(globex, "project.updated", { match: byId(accepted.id), barrier: { srv: A, tenant: "globex" } });
    await expectNoEvent(dflt, "project.updated", { match: byId(accepted.id), barrier: { srv: A } });

    // The acme-bound key publishing at C reaches acme on B too.
    const viaKey = await publish(C.url, ACME_KEY, { type: "project.updated", tenant: "acme", data: { project_id: "1" } });
    assert.equal(viaKey.status, 202, viaKey.text);
    await waitForEnvelope(acme, "project.updated", viaKey.body.id);
  });

  test("a forbidden subscribe on B is refused, and events for that room do not reach the socket", async () => {
    const socket = await connectAs(B, { sub: "ben", projects: ["1"] });
    const refused = await emitWithAck(socket, "subscribe", { room: "project:2" });
    assert.equal(refused.ok, false, JSON.stringify(refused));
    assert.equal(refused.error.code, "forbidden");
    assert.equal(refused.error.room, "project:2");
    // An admin on C may join it, and gets the event published at A; ben does not.
    const admin = await subscribed(C, { sub: "root", role: "admin" }, "project:2");
    const accepted = await publishOk(A, { type: "project.updated", data: { project_id: "2" } });
    await waitForEnvelope(admin, "project.updated", accepted.id);
    await expectNoEvent(socket, "project.updated", { match: byId(accepted.id), barrier: { srv: A } });
  });
});

describe("stats count the whole cluster", () => {
  test("cluster.nodes lists every node; cluster.connections/users count sockets on all nodes", async () => {
    await clusterIdle();
    const sockets = {
      aliceA: await connectAs(A, { sub: "alice" }),
      aliceB: await connectAs(B, { sub: "alice" }),
      bobC: await connectAs(C, { sub: "bob" }),
      acmeAliceC: await connectAs(C, { sub: "alice", tenant: "acme" }),
    };
    const expectNodes = (c, counts) =>
      JSON.stringify(
        [...c.nodes].sort((x, y) => x.node_id.localeCompare(y.node_id)).map((n) => [n.node_id, n.connections, n.users]),
      ) === JSON.stringify(counts);

    const full = [["dlv-a", 1, 1], ["dlv-b", 1, 1], ["dlv-c", 2, 2]];
    for (const srv of [A, B, C]) {
      const c = await eventually(
        async () => {
          const c = await clusterStats(srv);
          return c.connections === 4 && expectNodes(c, full) ? c : null;
        },
        { timeout: 10_000, interval: 100, what: `cluster stats at ${srv.nodeId}: 4 connections over ${JSON.stringify(full)}` },
      );
      assert.equal(c.users, 3, "default/alice (2 sockets), default/bob, acme/alice = 3 users");
      assert.equal(c.mode, "redis");
      assert.equal(c.redis, "up");
      assert.ok(Number.isInteger(c.dropped_messages) && c.dropped_messages >= 0, `dropped_messages: ${c.dropped_messages}`);
      for (const n of c.nodes) {
        assert.match(n.last_seen, RFC3339_MILLIS_Z, `last_seen of ${n.node_id}`);
        assert.ok(Math.abs(Date.parse(n.last_seen) - Date.now()) < 30_000, `last_seen of ${n.node_id} is recent: ${n.last_seen}`);
      }
    }
    // Top-level connections/users stay this node's.
    const statsC = (await stats(C.url, API_KEY)).body;
    assert.equal(statsC.node_id, "dlv-c");
    assert.equal(statsC.connections, 2);
    assert.equal(statsC.users, 2);
    assert.equal((await stats(A.url, API_KEY)).body.connections, 1);

    sockets.bobC.disconnect();
    const less = [["dlv-a", 1, 1], ["dlv-b", 1, 1], ["dlv-c", 1, 1]];
    const c = await eventually(
      async () => {
        const c = await clusterStats(B);
        return c.connections === 3 && expectNodes(c, less) ? c : null;
      },
      { timeout: 10_000, interval: 100, what: `cluster stats at B after bob left: ${JSON.stringify(less)}` },
    );
    assert.equal(c.users, 2, "default/alice and acme/alice");
  });
});

describe("GET /api/v1/rooms/{room}/presence", () => {
  test("counts subscribed sockets per user across nodes, per tenant", async () => {
    const room = "project:pr";
    await subscribed(A, { sub: "alice", projects: ["pr"] }, room);
    await subscribed(B, { sub: "alice", projects: ["pr"] }, room);
    await subscribed(C, { sub: "bob", projects: ["pr"] }, room);
    await connectAs(C, { sub: "carol", projects: ["pr"] }); // connected, not subscribed
    await subscribed(B, { sub: "alice", tenant: "acme", projects: ["pr"] }, room);

    const expected = { users: [{ user_id: "alice", connections: 2 }, { user_id: "bob", connections: 1 }], connections: 3 };
    for (const srv of [A, B, C]) {
      const body = await waitForPresence(srv, room, expected, { tenant: "default" });
      assert.equal(body.room, room);
      assert.equal(body.tenant, "default");
    }
    // No tenant parameter means "default".
    const dflt = await presenceOk(C, room);
    assert.deepEqual({ users: dflt.users, connections: dflt.connections }, expected);
    assert.equal(dflt.tenant, "default");

    const acme = await waitForPresence(A, room, { users: [{ user_id: "alice", connections: 1 }], connections: 1 }, { tenant: "acme" });
    assert.equal(acme.tenant, "acme");

    // Any room kind counts: alice's user room holds her two sockets.
    await waitForPresence(B, "user:alice", { users: [{ user_id: "alice", connections: 2 }], connections: 2 });
    // A room nobody is in.
    await waitForPresence(A, "project:empty", { users: [], connections: 0 });
  });

  test("auth, scope, tenant binding and room validation", async () => {
    const room = "project:pr";
    const err = (res, status, code) => {
      assert.equal(res.status, status, res.text);
      assert.equal(res.body?.error?.code, code, res.text);
    };
    err(await presence(A.url, undefined, room), 401, "unauthorized");
    err(await presence(A.url, "wrong-key", room), 401, "unauthorized");
    err(await presence(A.url, PUBLISH_ONLY_KEY, room), 403, "forbidden");
    err(await presence(A.url, ACME_READ_KEY, room, { tenant: "default" }), 403, "forbidden");
    err(await presence(A.url, ACME_READ_KEY, room, { tenant: "globex" }), 403, "forbidden");
    assert.equal((await presence(A.url, ACME_READ_KEY, room, { tenant: "acme" })).status, 200);
    assert.equal((await presence(B.url, READ_KEY, room)).status, 200);
    err(await presence(A.url, API_KEY, "nope"), 422, "invalid_room");
    err(await presence(A.url, API_KEY, "project:"), 422, "invalid_room");
  });
});

describe("POST /api/v1/users/{user_id}/disconnect", () => {
  test("kicks the user's sockets on every node and only those", async () => {
    await clusterIdle();
    const kicked = [
      await connectAs(A, { sub: "mallory" }),
      await connectAs(B, { sub: "mallory" }),
      await connectAs(B, { sub: "mallory" }, { namespace: "/ws" }),
      await connectAs(C, { sub: "mallory", projects: ["1"] }),
    ];
    const otherUser = await connectAs(B, { sub: "alice" });
    const otherTenant = await connectAs(C, { sub: "mallory", tenant: "acme" });
    // Every node must know all of them before the kick.
    await eventually(async () => (await clusterStats(A)).connections === 6, {
      timeout: 10_000,
      interval: 100,
      what: "cluster.connections == 6",
    });

    const reasons = kicked.map((s) => nextDisconnect(s));
    const res = await disconnectUser(A.url, API_KEY, "mallory", { tenant: "default" });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body, { user_id: "mallory", tenant: "default", disconnected: 4 });
    for (const reason of await Promise.all(reasons)) assert.equal(reason, "io server disconnect");

    // The bystanders are still connected and served.
    assert.ok(otherUser.connected && otherTenant.connected);
    assert.equal((await emitWithAck(otherUser, "ping")).pong, true);
    assert.equal((await emitWithAck(otherTenant, "ping")).pong, true);
    await barrier(A, [otherUser]);
    await barrier(A, [otherTenant], { tenant: "acme" });

    // The acme-bound key may kick acme's mallory, not default's.
    const forbidden = await disconnectUser(C.url, ACME_KEY, "mallory", { tenant: "default" });
    assert.equal(forbidden.status, 403, forbidden.text);
    assert.equal(forbidden.body?.error?.code, "forbidden");
    const reason = nextDisconnect(otherTenant);
    const acme = await disconnectUser(B.url, ACME_KEY, "mallory", { tenant: "acme" });
    assert.equal(acme.status, 200, acme.text);
    assert.deepEqual(acme.body, { user_id: "mallory", tenant: "acme", disconnected: 1 });
    assert.equal(await reason, "io server disconnect");
    assert.ok(otherUser.connected);
  });

  test("scope publish is required; an unknown user is 0 disconnected", async () => {
    const res401 = await disconnectUser(A.url, undefined, "x");
    assert.equal(res401.status, 401, res401.text);
    assert.equal(res401.body?.error?.code, "unauthorized");
    const res403 = await disconnectUser(A.url, READ_KEY, "x");
    assert.equal(res403.status, 403, res403.text);
    assert.equal(res403.body?.error?.code, "forbidden");
    const none = await disconnectUser(B.url, PUBLISH_ONLY_KEY, "nobody-here");
    assert.equal(none.status, 200, none.text);
    assert.deepEqual(none.body, { user_id: "nobody-here", tenant: "default", disconnected: 0 });
  });
});

describe("[server] transports = [\"websocket\"]", () => {
  let D;
  before(async () => {
    D = await cluster.addNode("dlv-ws", { transports: ["websocket"] });
    await waitForNodes(A, ["dlv-a", "dlv-b", "dlv-c", "dlv-ws"]);
  });

  test("a websocket client connects to the websocket-only node and gets events published at A", async () => {
    const socket = await subscribed(D, { sub: "wes", projects: ["ws"] }, "project:ws", { transports: ["websocket"] });
    assert.equal(socket.io.engine.transport.name, "websocket");
    const accepted = await publishOk(A, { type: "project.updated", data: { project_id: "ws" } });
    await waitForEnvelope(socket, "project.updated", accepted.id);
  });

  test("a polling-only client cannot connect to it", async () => {
    await assert.rejects(
      connect(D.url, { auth: { token: mintToken({ sub: "polly" }) }, transports: ["polling"] }),
      (err) => err instanceof Error,
      "a polling-only handshake must fail",
    );
  });
});

describe("without [cluster]: the same endpoints, for one node", () => {
  let solo;
  before(async () => {
    solo = await startServer({ nodeId: "solo" });
  });
  after(async () => {
    disconnectAll();
    await solo?.stop();
  });

  test("stats.cluster is mode single with only this node; presence and user disconnect work", async () => {
    const alice = await subscribed(solo, { sub: "alice", projects: ["s"] }, "project:s");
    const c = await eventually(
      async () => {
        const c = await clusterStats(solo);
        return c.connections === 1 ? c : null;
      },
      { what: "single-node cluster.connections == 1" },
    );
    assert.equal(c.mode, "single");
    assert.equal(c.redis, null);
    assert.equal(c.users, 1);
    assert.deepEqual(
      c.nodes.map(({ node_id, connections, users }) => ({ node_id, connections, users })),
      [{ node_id: "solo", connections: 1, users: 1 }],
    );
    assert.match(c.nodes[0].last_seen, RFC3339_MILLIS_Z);

    await waitForPresence(solo, "project:s", { users: [{ user_id: "alice", connections: 1 }], connections: 1 });
    const reason = nextDisconnect(alice);
    const res = await disconnectUser(solo.url, API_KEY, "alice");
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body, { user_id: "alice", tenant: "default", disconnected: 1 });
    assert.equal(await reason, "io server disconnect");
  });
});
