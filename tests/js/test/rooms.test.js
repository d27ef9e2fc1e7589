// Rooms: subscribe / unsubscribe access policy, room name validation, the per-socket room
// limit, ping, malformed payloads, failures without an ack callback, unknown commands.
//
// Every "allowed" is proven by an event arriving; every "denied" by a publish to that room
// followed by a barrier event, after which the denied event must not have arrived.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";

import {
  startServer,
  connectAs,
  disconnectAll,
  waitForEvent,
  waitForEnvelope,
  emitWithAck,
  expectNoEvent,
  publishOk,
  assertServerTime,
  eventually,
  withoutPositions,
} from "../lib/helpers.js";

// Counts every room a socket is in, global and user:<sub> included: 3 rooms left to subscribe.
const MAX_ROOMS = 5;
let srv;

before(async () => {
  srv = await startServer({ nodeId: "e2e-rooms", maxRoomsPerSocket: MAX_ROOMS });
});
after(async () => {
  disconnectAll();
  await srv?.stop();
});
afterEach(() => disconnectAll());

/** Publishes project.updated to project:<id> and returns the 202 body. */
function publishProject(id, tenant) {
  const body = { type: "project.updated", data: { project_id: id, status: "active" } };
  if (tenant) body.tenant = tenant;
  return publishOk(srv, body);
}

/** Asserts the socket receives the project.updated published to project:<id>. */
async function assertReceivesProject(socket, id, tenant) {
  const pub = await publishProject(id, tenant);
  const env = await waitForEnvelope(socket, "project.updated", pub.id);
  assert.equal(env.room, `project:${id}`);
}

/**
 * Asserts the socket does NOT receive a project.updated published to project:<id> of
 * `tenant`; the barrier goes to the socket's own tenant (`socketTenant`, default `tenant`).
 */
async function assertDoesNotReceiveProject(socket, id, tenant, socketTenant = tenant) {
  const pub = await publishProject(id, tenant);
  await expectNoEvent(socket, "project.updated", {
    match: (env) => env?.id === pub.id,
    barrier: { srv, tenant: socketTenant },
  });
}

/** Asserts the socket does not receive an ai.suggestion addressed to user:<id>. */
async function assertDoesNotReceiveUserRoom(socket, userId) {
  const pub = await publishOk(srv, {
    type: "ai.suggestion",
    data: { suggestion_id: "s-deny", content: "not for you", user_id: userId },
  });
  await expectNoEvent(socket, "ai.suggestion", { match: (env) => env?.id === pub.id, barrier: { srv } });
}

function assertRefused(ack, code, room) {
  assert.equal(ack?.ok, false, `expected a refusal, got ${JSON.stringify(ack)}`);
  assert.equal(ack.error?.code, code, `error code in ${JSON.stringify(ack)}`);
  assert.equal(typeof ack.error.message, "string");
  assert.ok(ack.error.message.length > 0, "error message is not empty");
  if (room !== undefined) assert.equal(ack.error.room, room, `error.room in ${JSON.stringify(ack)}`);
}

describe("subscribe: access policy", () => {
  test("own user room is allowed (already joined; subscribing again is ok)", async () => {
    const alice = await connectAs(srv, { sub: "alice" });
    assert.deepEqual(withoutPositions(await emitWithAck(alice, "subscribe", { room: "user:alice" })), { ok: true, rooms: ["user:alice"] });
    const pub = await publishOk(srv, { type: "ai.suggestion", data: { suggestion_id: "s1", content: "hi", user_id: "alice" } });
    const env = await waitForEnvelope(alice, "ai.suggestion", pub.id);
    assert.equal(env.room, "user:alice");
  });

  test("another user's room is forbidden and not joined", async () => {
    const alice = await connectAs(srv, { sub: "alice" });
    assertRefused(await emitWithAck(alice, "subscribe", { room: "user:bob" }), "forbidden", "user:bob");
    await assertDoesNotReceiveUserRoom(alice, "bob");
  });

  test("project with a claim for it is allowed", async () => {
    const socket = await connectAs(srv, { sub: "alice", projects: ["1", "2"] });
    assert.deepEqual(withoutPositions(await emitWithAck(socket, "subscribe", { room: "project:1" })), { ok: true, rooms: ["project:1"] });
    await assertReceivesProject(socket, "1");
  });

  test("numeric ids in the projects claim are accepted", async () => {
    const socket = await connectAs(srv, { sub: "alice", projects: [42] });
    assert.deepEqual(withoutPositions(await emitWithAck(socket, "subscribe", { room: "project:42" })), { ok: true, rooms: ["project:42"] });
    await assertReceivesProject(socket, "42");
  });

  test("project without a claim is forbidden and not joined", async () => {
    const socket = await connectAs(srv, { sub: "alice", projects: ["1"] });
    assertRefused(await emitWithAck(socket, "subscribe", { room: "project:2" }), "forbidden", "project:2");
    await assertDoesNotReceiveProject(socket, "2");
  });

  test("no projects claim at all: every project is forbidden", async () => {
    const socket = await connectAs(srv, { sub: "alice" });
    assertRefused(await emitWithAck(socket, "subscribe", { room: "project:1" }), "forbidden", "project:1");
  });

  test("projects \"*\" allows any project", async () => {
    const socket = await connectAs(srv, { sub: "alice", projects: "*" });
    const ack = await emitWithAck(socket, "subscribe", { rooms: ["project:anything", "project:9"] });
    assert.deepEqual(withoutPositions(ack), { ok: true, rooms: ["project:anything", "project:9"] });
    await assertReceivesProject(socket, "anything");
    await assertReceivesProject(socket, "9");
  });

  test("projects \"*\" does not grant agents or other users", async () => {
    const socket = await connectAs(srv, { sub: "alice", projects: "*" });
    assertRefused(await emitWithAck(socket, "subscribe", { room: "agent:a1" }), "forbidden", "agent:a1");
    assertRefused(await emitWithAck(socket, "subscribe", { room: "user:bob" }), "forbidden", "user:bob");
  });

  test("agent with a claim is allowed, without is forbidden, \"*\" allows any", async () => {
    const claimed = await connectAs(srv, { sub: "alice", agents: ["a1"] });
    assert.deepEqual(withoutPositions(await emitWithAck(claimed, "subscribe", { room: "agent:a1" })), { ok: true, rooms: ["agent:a1"] });
    assertRefused(await emitWithAck(claimed, "subscribe", { room: "agent:a2" }), "forbidden", "agent:a2");
    const star = await connectAs(srv, { sub: "bob", agents: "*" });
    assert.deepEqual(withoutPositions(await emitWithAck(star, "subscribe", { room: "agent:zz" })), { ok: true, rooms: ["agent:zz"] });

    const pub = await publishOk(srv, { type: "agent.connected", data: { agent_id: "a1" } });
    assert.equal((await waitForEnvelope(claimed, "agent.connected", pub.id)).room, "agent:a1");
    const pub2 = await publishOk(srv, { type: "agent.connected", data: { agent_id: "a2" } });
    await expectNoEvent(claimed, "agent.connected", { match: (e) => e?.id === pub2.id, barrier: { srv } });
    const pub3 = await publishOk(srv, { type: "agent.connected", data: { agent_id: "zz" } });
    assert.equal((await waitForEnvelope(star, "agent.connected", pub3.id)).room, "agent:zz");
  });

  test("a projects claim does not grant the agent with the same id", async () => {
    const socket = await connectAs(srv, { sub: "alice", projects: ["7"] });
    assertRefused(await emitWithAck(socket, "subscribe", { room: "agent:7" }), "forbidden", "agent:7");
  });

  test("admin role may join any room of its tenant", async () => {
    const admin = await connectAs(srv, { sub: "root", tenant: "acme", role: "admin" });
    const rooms = ["project:99", "agent:x1", "user:bob"];
    assert.deepEqual(withoutPositions(await emitWithAck(admin, "subscribe", { rooms })), { ok: true, rooms });
    await assertReceivesProject(admin, "99", "acme");
    // ...and only in its tenant: the same project in the default tenant does not reach it.
    await assertDoesNotReceiveProject(admin, "99", undefined, "acme");
  });

  test("a non-admin role grants nothing extra", async () => {
    const socket = await connectAs(srv, { sub: "alice", role: "member" });
    assertRefused(await emitWithAck(socket, "subscribe", { room: "project:1" }), "forbidden", "project:1");
  });
});

describe("subscribe: room names", () => {
  const invalid = [
    "project:",
    "project:a/b",
    "foo:1",
    "project:" + "a".repeat(129),
    "project:日本",
    "project:ünï",
    "project:a b",
    "user:",
    "agent:",
    "",
    "Global",
    "global:1",
    "project",
    "project:1:2",
    " project:1",
  ];
  for (const room of invalid) {
    test(`invalid_room: ${JSON.stringify(room.length > 40 ? room.slice(0, 12) + "…(" + room.length + ")" : room)}`, async () => {
      // An admin with every claim: the only possible refusal is the name itself.
      const socket = await connectAs(srv, { sub: "root", role: "admin", projects: "*", agents: "*" });
      assertRefused(await emitWithAck(socket, "subscribe", { room }), "invalid_room", room);
    });
  }

  test("an id of exactly 128 allowed characters is valid", async () => {
    const id = "aZ09_.-".repeat(19).slice(0, 128);
    const socket = await connectAs(srv, { sub: "alice", projects: "*" });
    const room = `project:${id}`;
    assert.deepEqual(withoutPositions(await emitWithAck(socket, "subscribe", { room })), { ok: true, rooms: [room] });
    await assertReceivesProject(socket, id);
  });

  test("subscribing to global is ok", async () => {
    const socket = await connectAs(srv, { sub: "alice" });
    assert.deepEqual(withoutPositions(await emitWithAck(socket, "subscribe", { room: "global" })), { ok: true, rooms: ["global"] });
  });
});

describe("subscribe: lists are all-or-nothing", () => {
  test("one forbidden room in the list: none joined", async () => {
    const socket = await connectAs(srv, { sub: "alice", projects: ["1"] });
    assertRefused(
      await emitWithAck(socket, "subscribe", { rooms: ["project:1", "project:2"] }),
      "forbidden",
      "project:2",
    );
    await assertDoesNotReceiveProject(socket, "1");
  });

  test("one invalid room in the list: none joined", async () => {
    const socket = await connectAs(srv, { sub: "alice", projects: ["1"] });
    assertRefused(await emitWithAck(socket, "subscribe", { rooms: ["project:1", "bogus:1"] }), "invalid_room", "bogus:1");
    await assertDoesNotReceiveProject(socket, "1");
  });

  test("a list of allowed rooms joins all of them", async () => {
    const socket = await connectAs(srv, { sub: "alice", projects: ["1", "2"] });
    const rooms = ["project:1", "project:2"];
    assert.deepEqual(withoutPositions(await emitWithAck(socket, "subscribe", { rooms })), { ok: true, rooms });
    await assertReceivesProject(socket, "1");
    await assertReceivesProject(socket, "2");
  });
});

describe("too_many_rooms", () => {
  test(`a socket is in at most ${MAX_ROOMS} rooms, global and user:<sub> included`, async () => {
    const socket = await connectAs(srv, { sub: "alice", projects: "*" });
    // global + user:alice + 3 = 5
    const first = ["project:1", "project:2", "project:3"];
    assert.deepEqual(withoutPositions(await emitWithAck(socket, "subscribe", { rooms: first })), { ok: true, rooms: first });
    assertRefused(await emitWithAck(socket, "subscribe", { room: "project:4" }), "too_many_rooms");
    await assertDoesNotReceiveProject(socket, "4");
    // Re-subscribing to a room it is already in does not add a room.
    assert.deepEqual(withoutPositions(await emitWithAck(socket, "subscribe", { room: "project:1" })), { ok: true, rooms: ["project:1"] });
    // Leaving one makes room for another.
    assert.deepEqual(await emitWithAck(socket, "unsubscribe", { room: "project:3" }), { ok: true, rooms: ["project:3"] });
    assert.deepEqual(withoutPositions(await emitWithAck(socket, "subscribe", { room: "project:4" })), { ok: true, rooms: ["project:4"] });
    await assertReceivesProject(socket, "4");
  });

  test("a list that would exceed the limit joins none of it", async () => {
    const socket = await connectAs(srv, { sub: "alice", projects: "*" });
    assertRefused(
      await emitWithAck(socket, "subscribe", { rooms: ["project:1", "project:2", "project:3", "project:4"] }),
      "too_many_rooms",
    );
    await assertDoesNotReceiveProject(socket, "1");
  });
});

describe("unsubscribe", () => {
  test("stops delivery", async () => {
    const socket = await connectAs(srv, { sub: "alice", projects: ["1"] });
    assert.deepEqual(withoutPositions(await emitWithAck(socket, "subscribe", { room: "project:1" })), { ok: true, rooms: ["project:1"] });
    await assertReceivesProject(socket, "1");
    assert.deepEqual(await emitWithAck(socket, "unsubscribe", { room: "project:1" }), { ok: true, rooms: ["project:1"] });
    await assertDoesNotReceiveProject(socket, "1");
  });

  test("a list, and rooms the socket is not in, are ok", async () => {
    const socket = await connectAs(srv, { sub: "alice", projects: ["1", "2"] });
    await emitWithAck(socket, "subscribe", { rooms: ["project:1", "project:2"] });
    const rooms = ["project:1", "project:2", "project:3"];
    assert.deepEqual(await emitWithAck(socket, "unsubscribe", { rooms }), { ok: true, rooms });
    await assertDoesNotReceiveProject(socket, "1");
    await assertDoesNotReceiveProject(socket, "2");
  });

  test("an invalid name is invalid_room", async () => {
    const socket = await connectAs(srv, { sub: "alice" });
    assertRefused(await emitWithAck(socket, "unsubscribe", { room: "project:a/b" }), "invalid_room", "project:a/b");
  });

  test("other sockets of the same user keep receiving", async () => {
    const a = await connectAs(srv, { sub: "alice", projects: ["1"] });
    const b = await connectAs(srv, { sub: "alice", projects: ["1"] });
    await emitWithAck(a, "subscribe", { room: "project:1" });
    await emitWithAck(b, "subscribe", { room: "project:1" });
    await emitWithAck(a, "unsubscribe", { room: "project:1" });
    const pub = await publishProject("1");
    await waitForEnvelope(b, "project.updated", pub.id);
    await expectNoEvent(a, "project.updated", { match: (e) => e?.id === pub.id, barrier: { srv } });
  });
});

describe("ping", () => {
  test("answers {pong: true, server_time} with and without a payload", async () => {
    const socket = await connectAs(srv, { sub: "alice" });
    for (const args of [[], [{}], ["x"]]) {
      const ack = await emitWithAck(socket, "ping", ...args);
      assert.equal(ack.pong, true, JSON.stringify(ack));
      assertServerTime(ack.server_time);
    }
  });
});

describe("malformed payloads", () => {
  const cases = [
    ["a string", ["project:1"]],
    ["a number", [5]],
    ["an empty object", [{}]],
    ["room is a number", [{ room: 5 }]],
    ["rooms is not an array", [{ rooms: "project:1" }]],
    ["rooms holds a number", [{ rooms: ["project:1", 7] }]],
    ["both room and rooms", [{ room: "project:1", rooms: ["project:1"] }]],
    ["no payload at all", []],
    ["null", [null]],
    ["an array", [["project:1"]]],
  ];
  for (const command of ["subscribe", "unsubscribe"]) {
    for (const [label, args] of cases) {
      test(`${command} with ${label} → invalid_payload; the socket stays connected`, async () => {
        const socket = await connectAs(srv, { sub: "alice", projects: "*" });
        const ack = await emitWithAck(socket, command, ...args);
        assertRefused(ack, "invalid_payload");
        assert.equal(socket.connected, true);
        const pong = await emitWithAck(socket, "ping");
        assert.equal(pong.pong, true);
        if (command === "subscribe") await assertDoesNotReceiveProject(socket, "1");
      });
    }
  }
});

describe("failures without an ack callback", () => {
  test("forbidden subscribe → `error` event {code, message, room}", async () => {
    const socket = await connectAs(srv, { sub: "alice" });
    socket.emit("subscribe", { room: "user:bob" });
    const err = await waitForEvent(socket, "error");
    assert.equal(err.code, "forbidden");
    assert.equal(err.room, "user:bob");
    assert.equal(typeof err.message, "string");
    assert.ok(err.message.length > 0);
  });

  test("invalid room → `error` event invalid_room", async () => {
    const socket = await connectAs(srv, { sub: "alice" });
    socket.emit("subscribe", { room: "foo:1" });
    const err = await waitForEvent(socket, "error");
    assert.equal(err.code, "invalid_room");
    assert.equal(err.room, "foo:1");
  });

  test("malformed payload → `error` event invalid_payload; still connected", async () => {
    const socket = await connectAs(srv, { sub: "alice" });
    socket.emit("subscribe", 12);
    const err = await waitForEvent(socket, "error");
    assert.equal(err.code, "invalid_payload");
    assert.equal(socket.connected, true);
    assert.equal((await emitWithAck(socket, "ping")).pong, true);
  });

  test("too_many_rooms → `error` event", async () => {
    const socket = await connectAs(srv, { sub: "alice", projects: "*" });
    socket.emit("subscribe", { rooms: ["project:1", "project:2", "project:3", "project:4"] });
    const err = await waitForEvent(socket, "error");
    assert.equal(err.code, "too_many_rooms");
  });

  test("a successful subscribe without a callback sends no `error` and joins", async () => {
    const socket = await connectAs(srv, { sub: "alice", projects: ["1"] });
    socket.emit("subscribe", { room: "project:1" });
    // Without a callback there is no signal that the join took effect, and the server runs
    // a socket's commands concurrently: publish until one arrives, within the deadline.
    await eventually(async () => {
      const pub = await publishProject("1");
      return waitForEnvelope(socket, "project.updated", pub.id, { timeout: 200 }).catch(() => null);
    }, { what: "a project.updated after a subscribe without callback" });
    assert.equal(socket.inbox.filter((e) => e.name === "error").length, 0);
  });
});

describe("unknown commands", () => {
  test("with an ack: {ok:false, error:{code:\"unknown_command\"}}", async () => {
    const socket = await connectAs(srv, { sub: "alice" });
    const ack = await emitWithAck(socket, "frobnicate", { room: "project:1" });
    assertRefused(ack, "unknown_command");
    assert.equal(socket.connected, true);
  });

  test("without an ack: `error` event unknown_command; still connected", async () => {
    const socket = await connectAs(srv, { sub: "alice" });
    socket.emit("join", { room: "project:1" });
    const err = await waitForEvent(socket, "error");
    assert.equal(err.code, "unknown_command");
    assert.equal((await emitWithAck(socket, "ping")).pong, true);
  });
});
