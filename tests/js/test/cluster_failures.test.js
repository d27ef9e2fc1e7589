// Cluster failures: a SIGKILLed node stops counting within node_ttl_secs and the others keep
// serving; a Redis outage is survivable and visible (/ready 503, publish 503
// cluster_unavailable) and cross-node delivery resumes when Redis is back, without restarts; a
// node started while Redis is down starts unready and joins once Redis is up.
//
// The tests in this file run in order and share the cluster: the first kills node C, the Redis
// outage tests run on A and B plus the nodes started during the outage.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  connectAs,
  disconnectAll,
  waitForEvent,
  waitForEnvelope,
  emitWithAck,
  received,
  barrier,
  eventually,
  delay,
  http,
  publish,
  publishOk,
  API_KEY,
  withoutPositions,
} from "../lib/helpers.js";
import {
  startCluster,
  clusterStats,
  waitForNodes,
  waitForPresence,
  NODE_DEATH_DEADLINE_MS,
  PRESENCE_GRACE_SECS,
} from "../lib/cluster.js";

let cluster;
let A, B, C;

before(async () => {
  cluster = await startCluster(["fail-a", "fail-b", "fail-c"], { label: "failures" });
  ({ "fail-a": A, "fail-b": B, "fail-c": C } = cluster.nodes);
});
after(async () => {
  disconnectAll();
  await cluster?.stop();
});

/** Ids of every publish any node accepted (202): a socket may only ever see these. */
const acceptedIds = new Set();

/** POST /api/v1/events at `from`, remembering accepted ids. */
async function pub(from, body) {
  const sent = new Date().toISOString();
  const res = await publish(from.url, API_KEY, body);
  if (res.status === 202) acceptedIds.add(res.body.id);
  else refused.push(`${from.nodeId} ${sent} -> ${res.status}`);
  return res;
}
const refused = [];

async function join(srv, sub, room) {
  const s = await connectAs(srv, { sub, projects: "*", agents: "*" });
  // While Redis is down the ack has no positions (nothing to read them from).
  const ack = await emitWithAck(s, "subscribe", { room });
  assert.deepEqual(withoutPositions(ack, { complete: false }), { ok: true, rooms: [room] });
  return s;
}

/**
 * join() on a node started during the outage, retried for up to 3 s, with a failure message
 * that says which node refused the socket and when.
 */
async function joinOrExplain(srv, sub, room, when = "while Redis is down") {
  try {
    return await eventually(() => join(srv, sub, room), { timeout: 3_000, interval: 200, what: `a socket on ${srv.nodeId}` });
  } catch (err) {
    throw new assert.AssertionError({
      message: `${srv.nodeId} (started while Redis was down) must serve its local sockets ${when}; connect/subscribe failed: ${err.message}`,
    });
  }
}

/** Publishes project.updated for `projectId` at `from` until `socket` receives one (a deadline). */
async function publishUntilDelivered(from, socket, projectId, { timeout = 15_000 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    const res = await pub(from, { type: "project.updated", data: { project_id: projectId } });
    last = `${res.status} ${res.text}`;
    if (res.status === 202) {
      try {
        return await waitForEnvelope(socket, "project.updated", res.body.id, { timeout: 300 });
      } catch {
        // not delivered (yet): publish again
      }
    }
    if (Date.now() >= deadline) {
      throw new Error(`no publish at ${from.nodeId} reached the socket within ${timeout} ms; last publish: ${last}`);
    }
    await delay(100);
  }
}

async function readyStatus(srv) {
  return http(`${srv.url}/ready`);
}

describe("a node dies (SIGKILL)", () => {
  test("within node_ttl_secs it leaves stats and presence, its users get presence.left, the others keep serving", async (t) => {
    const room = "project:k";
    const w = await join(A, "watcher", room);
    const victim = await join(C, "victim", room);
    const bothB = await join(B, "both", room);
    await join(C, "both", room);
    for (const u of ["victim", "both"]) await waitForEvent(w, "presence.joined", { match: (e) => e?.data?.user_id === u });
    await waitForPresence(A, room, {
      users: [
        { user_id: "both", connections: 2 },
        { user_id: "victim", connections: 1 },
        { user_id: "watcher", connections: 1 },
      ],
      connections: 4,
    });
    assert.ok(victim.connected);

    const t0 = Date.now();
    const exit = await C.kill("SIGKILL");
    assert.equal(exit.signal, "SIGKILL");

    await waitForNodes(A, ["fail-a", "fail-b"], { timeout: NODE_DEATH_DEADLINE_MS });
    await waitForNodes(B, ["fail-a", "fail-b"], { timeout: Math.max(1_000, NODE_DEATH_DEADLINE_MS - (Date.now() - t0)) });
    t.diagnostic(`the SIGKILLed node left stats.cluster.nodes after ${Date.now() - t0} ms`);
    await waitForPresence(
      B,
      room,
      {
        users: [
          { user_id: "both", connections: 1 },
          { user_id: "watcher", connections: 1 },
        ],
        connections: 2,
      },
      { timeout: Math.max(1_000, NODE_DEATH_DEADLINE_MS - (Date.now() - t0)) },
    );
    await eventually(
      async () => {
        const c = await clusterStats(A);
        return c.connections === 2 && c.users === 2;
      },
      { timeout: Math.max(1_000, NODE_DEATH_DEADLINE_MS - (Date.now() - t0)), what: "cluster.connections == 2, users == 2" },
    );

    // The user who was only on C leaves the room once; "both" is still on B.
    await waitForEvent(w, "presence.left", {
      match: (e) => e?.data?.user_id === "victim" && e?.room === room,
      timeout: Math.max(1_000, NODE_DEATH_DEADLINE_MS + PRESENCE_GRACE_SECS * 1000 - (Date.now() - t0)),
    });
    await barrier(A, [w, bothB]);
    assert.equal(received(w, "presence.left", (e) => e?.data?.user_id === "victim").length, 1);
    assert.equal(received(w, "presence.left", (e) => e?.data?.user_id === "both").length, 0, "both still has a socket on B");

    // The survivors serve as before, both ways.
    const ab = await publishOk(A, { type: "project.updated", data: { project_id: "k", status: "a->b" } });
    await waitForEnvelope(bothB, "project.updated", ab.id);
    const ba = await publishOk(B, { type: "project.updated", data: { project_id: "k", status: "b->a" } });
    await waitForEnvelope(w, "project.updated", ba.id);
    assert.ok(A.alive() && B.alive());
    disconnectAll();
  });
});

describe("Redis outage", () => {
  const room = "project:o";
  let sA, sB;
  let late, onLate; // a node started during the outage, and its socket
  let localNode, onLocal; // on_unavailable = "local", started before the outage
  // When A was seen answering /ready 503: from then on A knows Redis is down, and a refused
  // publish must deliver nothing. (A publish in flight at the moment Redis dies is in doubt:
  // Redis may have forwarded it before its reply was lost.)
  let knownDownAt;

  test("Redis killed during traffic: nodes stay up, /ready 503, publishes 503 cluster_unavailable", async () => {
    localNode = await cluster.addNode("fail-local", { cluster: { onUnavailable: "local" } });
    sA = await join(A, "ann", room);
    sB = await join(B, "ben", room);
    onLocal = await join(localNode, "lola", room);
    await publishUntilDelivered(A, sB, "o", { timeout: 5_000 });
    await publishUntilDelivered(localNode, sA, "o", { timeout: 5_000 });

    // Traffic: publish at A back to back while Redis dies.
    const outcomes = [];
    let running = true;
    const traffic = (async () => {
      while (running) {
        try {
          const sentAt = Date.now();
          const res = await pub(A, { type: "project.updated", data: { project_id: "o" } });
          outcomes.push({ sentAt, status: res.status, code: res.body?.error?.code, text: res.text });
        } catch (err) {
          outcomes.push({ error: err.message });
        }
        await delay(20);
      }
    })();
    try {
      await eventually(() => outcomes.filter((o) => o.status === 202).length >= 3, { what: "traffic flowing" });
      await cluster.redis.kill("SIGKILL");

      for (const srv of [A, B]) {
        const res = await eventually(
          async () => {
            const r = await readyStatus(srv);
            return r.status === 503 ? r : null;
          },
          { timeout: 5_000, interval: 100, what: `/ready 503 at ${srv.nodeId}` },
        );
        assert.equal(res.body?.status, "unavailable", res.text);
        assert.equal(typeof res.body?.reason, "string", res.text);
        assert.ok(res.body.reason.length > 0);
        knownDownAt ??= Date.now();
      }
      await eventually(() => outcomes.filter((o) => o.status === 503 && o.sentAt > knownDownAt).length >= 3, {
        timeout: 5_000,
        what: "publishes at A answering 503 once /ready says so",
      });
    } finally {
      running = false;
      await traffic;
    }
    for (const o of outcomes) {
      assert.ok(
        o.status === 202 || (o.status === 503 && o.code === "cluster_unavailable"),
        `every publish answers 202 or 503 cluster_unavailable; got ${JSON.stringify(o)}`,
      );
    }
    const down = await pub(B, { type: "project.updated", data: { project_id: "o" } });
    assert.equal(down.status, 503, down.text);
    assert.equal(down.body?.error?.code, "cluster_unavailable");
    assert.equal(typeof down.body?.error?.message, "string");

    // Nobody crashed; local sockets are still served.
    for (const srv of [A, B]) {
      assert.ok(srv.alive(), `${srv.nodeId} is still running`);
      assert.equal((await http(`${srv.url}/health`)).status, 200);
    }
    assert.ok(sA.connected && sB.connected, "sockets stay connected through the outage");
    assert.equal((await emitWithAck(sB, "ping")).pong, true);
    const c = await clusterStats(A);
    assert.equal(c.redis, "down");
  });

  test("a node started while Redis is down starts, answers /ready 503 and serves its local sockets", async () => {
    late = await cluster.addNode("fail-late", { waitFor: "health" });
    const ready = await readyStatus(late);
    assert.equal(ready.status, 503, ready.text);
    assert.equal(ready.body?.status, "unavailable");
    assert.equal(typeof ready.body?.reason, "string", ready.text);
    const res = await pub(late, { type: "project.updated", data: { project_id: "o" } });
    assert.equal(res.status, 503, res.text);
    assert.equal(res.body?.error?.code, "cluster_unavailable");
    onLate = await joinOrExplain(late, "lena", room);
    assert.equal((await emitWithAck(onLate, "ping")).pong, true);
  });

  test("on_unavailable = \"local\": while Redis is down, a publish answers 202 and reaches this node's sockets", async () => {
    assert.ok(onLocal, "needs the outage test");
    await eventually(async () => (await readyStatus(localNode)).status === 503, { what: "/ready 503 at fail-local" });
    const res = await pub(localNode, { type: "project.updated", data: { project_id: "o", status: "local" } });
    assert.equal(res.status, 202, res.text);
    await waitForEnvelope(onLocal, "project.updated", res.body.id);
  });

  test("Redis back: /ready 200 everywhere, publishes 202, cross-node delivery resumes, late nodes join", async (t) => {
    assert.ok(late, "needs the node started during the outage");
    await cluster.redis.start(); // same port, empty
    const nodes = [A, B, localNode, late].filter(Boolean);
    for (const srv of nodes) {
      await eventually(async () => (await readyStatus(srv)).status === 200, {
        timeout: 15_000,
        interval: 100,
        what: `/ready 200 at ${srv.nodeId} after Redis is back`,
      });
    }
    const res = await pub(A, { type: "project.updated", data: { project_id: "o" } });
    assert.equal(res.status, 202, res.text);
    // (If the late nodes refused sockets during the outage, they must take them now.)
    if (!onLate?.connected) onLate = await joinOrExplain(late, "lena", room, "after Redis is back");

    // The sockets that lived through the outage, and the late node's, get events from any node.
    await publishUntilDelivered(A, sB, "o");
    await publishUntilDelivered(B, sA, "o");
    await publishUntilDelivered(A, onLate, "o");
    await publishUntilDelivered(late, sB, "o");
    await publishUntilDelivered(B, onLocal, "o");
    await publishUntilDelivered(localNode, sB, "o");

    await waitForNodes(A, nodes.map((n) => n.nodeId), { timeout: 15_000 });
    assert.equal((await clusterStats(B)).redis, "up");
    for (const srv of nodes) assert.ok(srv.alive(), `${srv.nodeId} is still running`);

    // Nothing from a refused (503) publish was ever delivered: every envelope seen is from a 202.
    await barrier(A, [sA, sB, onLate]);
    assert.ok(knownDownAt, "needs the outage test");
    for (const [name, s] of [["sA (on A)", sA], ["sB (on B)", sB], ["onLate", onLate]]) {
      const stray = received(s, "project.updated").filter((e) => !acceptedIds.has(e.id));
      const inDoubt = stray.filter((e) => Date.parse(e.timestamp) < knownDownAt);
      if (inDoubt.length) t.diagnostic(`${name} got ${inDoubt.length} envelope(s) of publishes in flight when Redis died that answered 503: ${inDoubt.map((e) => e.timestamp).join(", ")}`);
      assert.deepEqual(
        stray.filter((e) => Date.parse(e.timestamp) >= knownDownAt),
        [],
        `${name} received envelopes of publishes that answered 503 after /ready said 503; refused publishes: ${refused.slice(0, 8).join(", ")}`,
      );
    }
  });
});
