// Cluster presence: presence.joined / presence.left in project: and agent: rooms arrive once per
// user (not per socket, wherever the sockets are), left only after presence_grace_secs and not
// at all on a quick reconnect; and the `presence` socket command.
//
// A delayed event cannot be ruled out with a barrier published right away, so "no presence.left"
// is proven with a control user: a second user whose last socket leaves *after* the one under
// test, on the same node. Once the control user's presence.left has arrived (plus a barrier),
// a left for the user under test would have arrived too.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";

import {
  connectAs,
  disconnectAll,
  waitForEvent,
  emitWithAck,
  expectNoEvent,
  received,
  barrier,
  eventually,
  assertEnvelope,
  withoutPositions,
} from "../lib/helpers.js";
import { startCluster, waitForPresence, clusterStats, PRESENCE_GRACE_SECS } from "../lib/cluster.js";

const GRACE_MS = PRESENCE_GRACE_SECS * 1000;
const LEFT_DEADLINE_MS = GRACE_MS + 4_000;

let cluster;
let A, B, C;

before(async () => {
  cluster = await startCluster(["prs-a", "prs-b", "prs-c"], { label: "presence" });
  ({ "prs-a": A, "prs-b": B, "prs-c": C } = cluster.nodes);
});
after(async () => {
  disconnectAll();
  await cluster?.stop();
});
afterEach(() => disconnectAll());

const presenceOf = (userId, room) => (env) => env?.data?.user_id === userId && env?.room === room;

/** Connects `sub` to `srv` and subscribes `room` (claims grant every project and agent). */
async function join(srv, sub, room, { tenant } = {}) {
  const s = await connectAs(srv, { sub, tenant, projects: "*", agents: "*" });
  assert.deepEqual(withoutPositions(await emitWithAck(s, "subscribe", { room })), { ok: true, rooms: [room] });
  return s;
}

/** Waits for presence.<kind> about `userId` in `room` on `socket`, asserting the envelope. */
async function expectPresence(socket, kind, userId, room, { timeout = 5_000 } = {}) {
  const type = `presence.${kind}`;
  const env = await waitForEvent(socket, type, { match: presenceOf(userId, room), timeout });
  assertEnvelope(env, { type, room, data: { user_id: userId, room } });
  return env;
}

function count(socket, kind, userId, room) {
  return received(socket, `presence.${kind}`, presenceOf(userId, room)).length;
}

/** A watcher in `room` on `srv`, after its own presence.joined has arrived. */
async function watcher(srv, room, sub = "watcher") {
  const w = await join(srv, sub, room);
  await expectPresence(w, "joined", sub, room);
  return w;
}

/**
 * The control user proof: `ctl` (subscribed to `room`, on the node where the user under test
 * just left) disconnects now; once its presence.left has reached `w`, and a barrier after it,
 * any presence event about the user under test that was due has arrived too.
 */
async function settleWithControl(w, ctl, ctlSub, room, others = []) {
  ctl.disconnect();
  await expectPresence(w, "left", ctlSub, room, { timeout: LEFT_DEADLINE_MS });
  await barrier(A, [w, ...others]);
}

describe("presence.joined / presence.left", () => {
  test("once per user across nodes: joined on the first socket, left only after the last one and the grace", async () => {
    const room = "project:pj1";
    const w = await watcher(C, room);

    const u1a = await join(A, "u1", room);
    await expectPresence(w, "joined", "u1", room);
    await expectPresence(u1a, "joined", "u1", room); // the joining socket is already in the room

    const ctl = await join(A, "ctl", room);
    await expectPresence(w, "joined", "ctl", room);
    const u1b = await join(B, "u1", room);
    // A second joined for u1 would have been emitted before ctl2's, from the same node.
    await join(B, "ctl2", room);
    await expectPresence(w, "joined", "ctl2", room);
    await barrier(A, [w]);
    assert.equal(count(w, "joined", "u1", room), 1, "one presence.joined for u1, not one per socket");

    // Closing one of u1's two sockets: no left.
    u1a.disconnect();
    await waitForPresence(B, room, {
      users: [
        { user_id: "ctl", connections: 1 },
        { user_id: "ctl2", connections: 1 },
        { user_id: "u1", connections: 1 },
        { user_id: "watcher", connections: 1 },
      ],
      connections: 4,
    });
    await settleWithControl(w, ctl, "ctl", room);
    assert.equal(count(w, "left", "u1", room), 0, "no presence.left while u1 still has a socket on B");

    // Closing the last one: exactly one left, presence_grace_secs later.
    const t0 = Date.now();
    u1b.disconnect();
    await expectPresence(w, "left", "u1", room, { timeout: LEFT_DEADLINE_MS });
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= GRACE_MS - 100, `presence.left came ${elapsed} ms after the leave, before the ${GRACE_MS} ms grace`);
    await barrier(A, [w]);
    assert.equal(count(w, "left", "u1", room), 1, "exactly one presence.left for u1");
    assert.equal(count(w, "joined", "u1", room), 1);
  });

  test("unsubscribing the last socket is a leave too", async () => {
    const room = "agent:ag1";
    const w = await watcher(A, room);
    const u = await join(B, "u2", room);
    await expectPresence(w, "joined", "u2", room);
    assert.deepEqual(await emitWithAck(u, "unsubscribe", { room }), { ok: true, rooms: [room] });
    await expectPresence(w, "left", "u2", room, { timeout: LEFT_DEADLINE_MS });
    assert.ok(u.connected);
    await barrier(A, [w]);
    assert.equal(count(w, "left", "u2", room), 1);
  });

  for (const [label, from, to] of [
    ["on the same node", () => B, () => B],
    ["on another node", () => B, () => C],
  ]) {
    test(`a quick reconnect ${label} within the grace: no presence.left and no second presence.joined`, async () => {
      const room = `project:pj-rc-${label.replace(/ /g, "-")}`;
      const w = await watcher(A, room);
      const first = await join(from(), "u3", room);
      await expectPresence(w, "joined", "u3", room);
      const ctl = await join(from(), "ctl", room);
      await expectPresence(w, "joined", "ctl", room);

      const t0 = Date.now();
      first.disconnect();
      const again = await join(to(), "u3", room);
      const gap = Date.now() - t0;
      assert.ok(gap < GRACE_MS, `precondition: reconnect took ${gap} ms, longer than the grace`);

      await settleWithControl(w, ctl, "ctl", room, [again]);
      assert.equal(count(w, "left", "u3", room), 0, "no presence.left on a quick reconnect");
      assert.equal(count(w, "joined", "u3", room), 1, "no second presence.joined on a quick reconnect");
      assert.equal(count(again, "joined", "u3", room), 0, "the reconnected socket gets no presence.joined for itself");
      const live = {
        users: [
          { user_id: "u3", connections: 1 },
          { user_id: "watcher", connections: 1 },
        ],
        connections: 2,
      };
      await waitForPresence(C, room, live);
      // Nor in the user counts or the nodes' figures: the closed socket counts nowhere.
      await waitForPresence(A, "global", live);
      await eventually(
        async () => {
          const { nodes } = await clusterStats(B);
          const sum = (k) => nodes.reduce((n, node) => n + node[k], 0);
          return sum("connections") === 2 && sum("users") === 2;
        },
        { timeout: 10_000, interval: 100, what: "stats.cluster.nodes to count 2 connections of 2 users" },
      );
    });
  }

  test("only project: and agent: rooms, and only the user's tenant, get presence events", async () => {
    const room = "project:pj5";
    const w = await watcher(A, room);
    const acme = await join(C, "acme-w", room, { tenant: "acme" });
    await expectPresence(acme, "joined", "acme-w", room);

    // A new default-tenant socket joins global and user:newbie on connect: no presence for those.
    const newbie = await connectAs(B, { sub: "newbie" });
    const u = await join(B, "u5", room);
    await expectPresence(w, "joined", "u5", room);
    await expectNoEvent(acme, "presence.joined", { match: (e) => e?.data?.user_id === "u5", barrier: { srv: A, tenant: "acme" } });
    await barrier(A, [w, newbie]);
    for (const s of [w, newbie]) {
      const outside = received(s, "presence.joined", (e) => e?.room === "global" || e?.room?.startsWith("user:"));
      assert.deepEqual(outside, [], "no presence events in global or user: rooms");
    }
    assert.ok(u.connected);
  });
});

describe("socket command presence", () => {
  test("a subscriber gets the room's users across nodes; others get not_subscribed or invalid_room", async () => {
    const room = "project:pc";
    await join(A, "alice", room);
    await join(B, "alice", room);
    const bob = await join(C, "bob", room);
    const carol = await connectAs(C, { sub: "carol", projects: "*" });
    await join(B, "alice", room, { tenant: "acme" }); // another tenant: not counted

    const expected = {
      ok: true,
      room,
      users: [
        { user_id: "alice", connections: 2 },
        { user_id: "bob", connections: 1 },
      ],
      connections: 3,
    };
    let last;
    await eventually(
      async () => isDeepStrictEqual((last = await emitWithAck(bob, "presence", { room })), expected),
      { timeout: 10_000, interval: 100, what: "the presence ack to count every node's sockets" },
    ).catch(() => assert.deepEqual(last, expected, "presence ack"));

    const notSub = await emitWithAck(carol, "presence", { room });
    assert.equal(notSub.ok, false, JSON.stringify(notSub));
    assert.equal(notSub.error?.code, "not_subscribed");
    assert.equal(notSub.error?.room, room);

    const invalid = await emitWithAck(bob, "presence", { room: "bogus" });
    assert.equal(invalid.ok, false, JSON.stringify(invalid));
    assert.equal(invalid.error?.code, "invalid_room");
  });
});
