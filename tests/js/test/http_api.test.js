// HTTP API: authentication, every error code, the 202 body, /api/v1/broadcast, stats, health.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";

import {
  startServer,
  connectAs,
  connectError,
  disconnectAll,
  waitForEnvelope,
  emitWithAck,
  expectNoEvent,
  received,
  eventually,
  http,
  publish,
  publishOk,
  broadcast,
  stats,
  assertEnvelope,
  API_KEY,
  ACME_KEY,
  READ_KEY,
  PUBLISH_ONLY_KEY,
  UUID_V7,
  withoutPositions,
} from "../lib/helpers.js";

const NODE_ID = "e2e-http-node";
const MAX_BODY = 4096;
let srv;

before(async () => {
  srv = await startServer({ nodeId: NODE_ID, maxHttpBodyBytes: MAX_BODY });
});
after(async () => {
  disconnectAll();
  await srv?.stop();
});
afterEach(() => disconnectAll());

const VALID = { type: "project.updated", data: { project_id: "1", status: "ok" } };

function assertError(res, status, code, field) {
  assert.equal(res.status, status, `expected ${status} ${code}, got ${res.status}: ${res.text}`);
  assert.ok(res.body?.error, `error body expected, got: ${res.text}`);
  assert.equal(res.body.error.code, code, res.text);
  assert.equal(typeof res.body.error.message, "string");
  assert.ok(res.body.error.message.length > 0, "message is not empty");
  if (field !== undefined) assert.equal(res.body.error.field, field, res.text);
}

async function projectWatcher(projectId = "1") {
  const s = await connectAs(srv, { sub: "watcher", projects: [projectId] });
  assert.deepEqual(withoutPositions(await emitWithAck(s, "subscribe", { room: `project:${projectId}` })), {
    ok: true,
    rooms: [`project:${projectId}`],
  });
  return s;
}

describe("authentication", () => {
  test("no key → 401 unauthorized, nothing delivered", async () => {
    const s = await projectWatcher();
    assertError(await publish(srv.url, undefined, VALID), 401, "unauthorized");
    await expectNoEvent(s, "project.updated", { barrier: { srv } });
  });

  test("wrong key in Authorization: Bearer → 401", async () => {
    assertError(await publish(srv.url, "wrong-key", VALID), 401, "unauthorized");
  });

  test("wrong key in X-API-Key → 401", async () => {
    assertError(await publish(srv.url, "wrong-key", VALID, { keyHeader: "x-api-key" }), 401, "unauthorized");
  });

  test("a key that is a prefix of a real key → 401", async () => {
    assertError(await publish(srv.url, API_KEY.slice(0, -1), VALID), 401, "unauthorized");
  });

  test("the right key works in Authorization: Bearer", async () => {
    const s = await projectWatcher();
    const res = await publish(srv.url, API_KEY, VALID);
    assert.equal(res.status, 202, res.text);
    await waitForEnvelope(s, "project.updated", res.body.id);
  });

  test("the right key works in X-API-Key", async () => {
    const s = await projectWatcher();
    const res = await publish(srv.url, API_KEY, VALID, { keyHeader: "x-api-key" });
    assert.equal(res.status, 202, res.text);
    await waitForEnvelope(s, "project.updated", res.body.id);
  });
});

describe("authorization (403)", () => {
  test("acme-bound key publishing to tenant globex → 403 forbidden, nothing delivered", async () => {
    const globex = await connectAs(srv, { sub: "g", tenant: "globex", projects: ["1"] });
    await emitWithAck(globex, "subscribe", { room: "project:1" });
    assertError(await publish(srv.url, ACME_KEY, { ...VALID, tenant: "globex" }), 403, "forbidden");
    await expectNoEvent(globex, "project.updated", { barrier: { srv, tenant: "globex" } });
  });

  test("acme-bound key broadcasting to tenant globex → 403", async () => {
    assertError(
      await broadcast(srv.url, ACME_KEY, { room: "global", event: "hello", data: null, tenant: "globex" }),
      403,
      "forbidden",
    );
  });

  test("key without the read scope on stats → 403", async () => {
    assertError(await stats(srv.url, ACME_KEY), 403, "forbidden");
    assertError(await stats(srv.url, PUBLISH_ONLY_KEY), 403, "forbidden");
  });

  test("key without the publish scope publishing → 403", async () => {
    assertError(await publish(srv.url, READ_KEY, VALID), 403, "forbidden");
    assertError(await broadcast(srv.url, READ_KEY, { room: "global", event: "hello" }), 403, "forbidden");
  });

  test("stats without a key → 401, with a wrong key → 401", async () => {
    assertError(await stats(srv.url, undefined), 401, "unauthorized");
    assertError(await stats(srv.url, "nope"), 401, "unauthorized");
  });
});

describe("POST /api/v1/events validation", () => {
  test("malformed JSON → 400 malformed_json", async () => {
    assertError(await publish(srv.url, API_KEY, '{"type": "project.updated", "data": {'), 400, "malformed_json");
    assertError(await publish(srv.url, API_KEY, "not json at all"), 400, "malformed_json");
  });

  test("unknown event type → 422 unknown_event_type", async () => {
    assertError(await publish(srv.url, API_KEY, { type: "project.exploded", data: { project_id: "1" } }), 422, "unknown_event_type");
  });

  const invalid = [
    ["missing project_id", { type: "project.updated", data: { status: "x" } }, "project_id"],
    ["project_id of the wrong type", { type: "project.updated", data: { project_id: true } }, "project_id"],
    ["project_id with invalid characters", { type: "project.updated", data: { project_id: "a/b" } }, "project_id"],
    ["project_id longer than 128", { type: "project.updated", data: { project_id: "a".repeat(129) } }, "project_id"],
    ["status of the wrong type", { type: "project.updated", data: { project_id: "1", status: 5 } }, "status"],
    ["unknown field", { type: "project.updated", data: { project_id: "1", bogus: 1 } }, "bogus"],
    ["progress 101", { type: "workflow.progress", data: { workflow_id: "w", project_id: "1", progress: 101 } }, "progress"],
    ["progress -1", { type: "workflow.progress", data: { workflow_id: "w", project_id: "1", progress: -1 } }, "progress"],
    ["progress 50.5", { type: "workflow.progress", data: { workflow_id: "w", project_id: "1", progress: 50.5 } }, "progress"],
    ["progress missing", { type: "workflow.progress", data: { workflow_id: "w", project_id: "1" } }, "progress"],
    ["workflow.failed without error", { type: "workflow.failed", data: { workflow_id: "w", project_id: "1" } }, "error"],
    ["pr.created number as a string", { type: "pr.created", data: { project_id: "1", number: "x", title: "t" } }, "number"],
    ["pr.created without title", { type: "pr.created", data: { project_id: "1", number: 1 } }, "title"],
    ["pr.updated merged as a string", { type: "pr.updated", data: { project_id: "1", number: 1, title: "t", merged: "yes" } }, "merged"],
    ["agent.status_changed without status", { type: "agent.status_changed", data: { agent_id: "a1" } }, "status"],
    ["agent.connected without agent_id", { type: "agent.connected", data: { project_id: "1" } }, "agent_id"],
    ["ai.suggestion user_id with invalid characters", { type: "ai.suggestion", data: { suggestion_id: "s", content: "c", user_id: "a b" } }, "user_id"],
    ["ai.suggestion with neither user_id nor project_id", { type: "ai.suggestion", data: { suggestion_id: "s", content: "c" } }, "user_id"],
    ["ai.analysis_complete without summary", { type: "ai.analysis_complete", data: { analysis_id: "a", project_id: "1" } }, "summary"],
    ["system.notification with an unknown severity", { type: "system.notification", data: { title: "t", message: "m", severity: "fatal" } }, "severity"],
    ["system.notification without message", { type: "system.notification", data: { title: "t" } }, "message"],
  ];
  for (const [label, body, field] of invalid) {
    test(`${label} → 422 invalid_payload, field ${field}`, async () => {
      assertError(await publish(srv.url, API_KEY, body), 422, "invalid_payload", field);
    });
  }

  test("a failed publish delivers nothing", async () => {
    const s = await projectWatcher();
    // Each of these names project:1 as its room but is refused; none may reach the socket.
    assertError(
      await publish(srv.url, API_KEY, { type: "project.updated", data: { project_id: "1", bogus: true } }),
      422,
      "invalid_payload",
    );
    assertError(
      await publish(srv.url, API_KEY, { type: "project.updated", data: { project_id: "1", status: 5 } }),
      422,
      "invalid_payload",
    );
    assertError(await publish(srv.url, "wrong-key", VALID), 401, "unauthorized");
    assertError(await publish(srv.url, READ_KEY, VALID), 403, "forbidden");
    assertError(
      await publish(srv.url, API_KEY, { type: "workflow.progress", data: { workflow_id: "w", project_id: "1", progress: 101 } }),
      422,
      "invalid_payload",
    );
    await expectNoEvent(s, "project.updated", { barrier: { srv } });
    assert.equal(received(s, "workflow.progress").length, 0);
  });

  test(`a body over max_http_body_bytes (${MAX_BODY}) → 413 payload_too_large, nothing delivered`, async () => {
    const s = await projectWatcher();
    const big = { type: "project.updated", data: { project_id: "1", project_name: "x".repeat(MAX_BODY * 2) } };
    assertError(await publish(srv.url, API_KEY, big), 413, "payload_too_large");
    await expectNoEvent(s, "project.updated", { barrier: { srv } });
  });

  test("a body just under the limit is accepted", async () => {
    const s = await projectWatcher();
    const body = { type: "project.updated", data: { project_id: "1", project_name: "" } };
    body.data.project_name = "y".repeat(MAX_BODY - JSON.stringify(body).length - 16);
    assert.ok(JSON.stringify(body).length < MAX_BODY);
    const res = await publish(srv.url, API_KEY, body);
    assert.equal(res.status, 202, res.text);
    assert.equal((await waitForEnvelope(s, "project.updated", res.body.id)).data.project_name.length, body.data.project_name.length);
  });

  test("202 body is {id, type, room, rooms, tenant}", async () => {
    const res = await publish(srv.url, API_KEY, VALID);
    assert.equal(res.status, 202, res.text);
    assert.match(res.body.id, UUID_V7);
    assert.equal(res.body.type, "project.updated");
    assert.equal(res.body.room, "project:1");
    assert.deepEqual(res.body.rooms, ["project:1"]);
    assert.equal(res.body.tenant, "default");
    assert.match(res.headers.get("content-type") ?? "", /application\/json/);
  });
});

describe("POST /api/v1/broadcast", () => {
  test("custom event to a room: delivered with the envelope", async () => {
    const s = await projectWatcher();
    const outsider = await projectWatcher("2");
    const data = { version: "1.2.3", ok: true, list: [1, "two", null], nested: { a: { b: 1 } } };
    const res = await broadcast(srv.url, API_KEY, { room: "project:1", event: "deploy.finished", data });
    assert.equal(res.status, 202, res.text);
    assert.match(res.body.id, UUID_V7);
    assert.equal(res.body.type, "deploy.finished");
    assert.equal(res.body.room, "project:1");
    assert.deepEqual(res.body.rooms, ["project:1"]);
    assert.equal(res.body.tenant, "default");
    assertEnvelope(await waitForEnvelope(s, "deploy.finished", res.body.id), {
      id: res.body.id,
      type: "deploy.finished",
      room: "project:1",
      data,
    });
    await expectNoEvent(outsider, "deploy.finished", { barrier: { srv } });
  });

  test("rooms list: each room's sockets get it once; room is the first room", async () => {
    const one = await projectWatcher("1");
    const two = await projectWatcher("2");
    const both = await connectAs(srv, { sub: "both", projects: ["1", "2"] });
    await emitWithAck(both, "subscribe", { rooms: ["project:1", "project:2"] });
    const three = await projectWatcher("3");
    const res = await broadcast(srv.url, API_KEY, { rooms: ["project:1", "project:2"], event: "build:done", data: { n: 1 } });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(res.body.rooms, ["project:1", "project:2"]);
    assert.equal(res.body.room, "project:1");
    for (const s of [one, two, both]) {
      assertEnvelope(await waitForEnvelope(s, "build:done", res.body.id), {
        id: res.body.id,
        type: "build:done",
        room: "project:1",
        data: { n: 1 },
      });
    }
    await expectNoEvent(three, "build:done", { barrier: { srv } });
    assert.equal(received(both, "build:done").length, 1, "a socket in two of the rooms gets it once");
  });

  test("data defaults to null", async () => {
    const s = await connectAs(srv, { sub: "alice" });
    const res = await broadcast(srv.url, API_KEY, { room: "global", event: "ping-all" });
    assert.equal(res.status, 202, res.text);
    assertEnvelope(await waitForEnvelope(s, "ping-all", res.body.id), {
      id: res.body.id,
      type: "ping-all",
      room: "global",
      data: null,
    });
  });

  test("to user:<id> and with the X-API-Key header", async () => {
    const alice = await connectAs(srv, { sub: "alice" });
    const bob = await connectAs(srv, { sub: "bob" });
    const res = await broadcast(srv.url, API_KEY, { room: "user:alice", event: "dm", data: "hi" }, { keyHeader: "x-api-key" });
    assert.equal(res.status, 202, res.text);
    assert.equal((await waitForEnvelope(alice, "dm", res.body.id)).data, "hi");
    await expectNoEvent(bob, "dm", { barrier: { srv } });
  });

  const badNames = [
    "Deploy",
    "1deploy",
    "",
    "a".repeat(65),
    "deploy finished",
    "deploy/finished",
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "error",
    "newlistener",
    "removelistener",
    "connection.established",
    "connection.anything",
    "auth.failed",
    "server.shutdown",
    "presence.joined",
    "project.updated",
    "agent.connected",
    "workflow.progress",
    "system.notification",
    "ai.suggestion",
  ];
  for (const event of badNames) {
    test(`invalid_event_name: ${JSON.stringify(event.length > 20 ? event.slice(0, 6) + "…(" + event.length + ")" : event)}`, async () => {
      assertError(await broadcast(srv.url, API_KEY, { room: "global", event, data: null }), 422, "invalid_event_name");
    });
  }

  test("a 64-character name is valid", async () => {
    const s = await connectAs(srv, { sub: "alice" });
    const event = "e" + "x".repeat(63);
    const res = await broadcast(srv.url, API_KEY, { room: "global", event, data: 1 });
    assert.equal(res.status, 202, res.text);
    await waitForEnvelope(s, event, res.body.id);
  });

  test("invalid_room (field room), nothing delivered", async () => {
    const s = await connectAs(srv, { sub: "alice" });
    for (const room of ["foo:1", "project:", "project:a/b", ""]) {
      assertError(await broadcast(srv.url, API_KEY, { room, event: "hello", data: null }), 422, "invalid_room", "room");
    }
    assertError(await broadcast(srv.url, API_KEY, { rooms: ["global", "nope"], event: "hello", data: null }), 422, "invalid_room");
    await expectNoEvent(s, "hello", { barrier: { srv } });
  });

  test("broadcast errors: 401 without key, 400 malformed JSON", async () => {
    assertError(await broadcast(srv.url, undefined, { room: "global", event: "x" }), 401, "unauthorized");
    assertError(await broadcast(srv.url, API_KEY, "{oops"), 400, "malformed_json");
  });

  test(`broadcast body over ${MAX_BODY} bytes → 413`, async () => {
    assertError(
      await broadcast(srv.url, API_KEY, { room: "global", event: "big", data: "z".repeat(MAX_BODY * 2) }),
      413,
      "payload_too_large",
    );
  });
});

describe("GET /api/v1/websocket/stats", () => {
  test("has every field; node_id is the configured one", async () => {
    const res = await stats(srv.url, API_KEY);
    assert.equal(res.status, 200, res.text);
    const b = res.body;
    for (const f of ["node_id", "uptime_secs", "connections", "users", "rooms", "tenants", "events_published", "auth_failures", "top_rooms"]) {
      assert.ok(f in b, `stats has ${f}: ${res.text}`);
    }
    assert.equal(b.node_id, NODE_ID);
    for (const f of ["uptime_secs", "connections", "users", "rooms", "tenants", "events_published", "auth_failures"]) {
      assert.ok(Number.isInteger(b[f]) && b[f] >= 0, `${f} is a non-negative integer: ${b[f]}`);
    }
    assert.ok(Array.isArray(b.top_rooms));
  });

  test("the read-only key may read stats", async () => {
    assert.equal((await stats(srv.url, READ_KEY)).status, 200);
    assert.equal((await stats(srv.url, READ_KEY, { keyHeader: "x-api-key" })).status, 200);
  });

  test("connections, users, tenants and top_rooms reflect connected sockets", async () => {
    // Baseline once every earlier socket is gone.
    const base = await eventually(async () => {
      const b = (await stats(srv.url, API_KEY)).body;
      return b.connections === 0 ? b : null;
    }, { what: "connections back to 0" });

    const t = "statsco";
    const a1 = await connectAs(srv, { sub: "alice", tenant: t, projects: ["top"] });
    const a2 = await connectAs(srv, { sub: "alice", tenant: t, projects: ["top"] });
    const b1 = await connectAs(srv, { sub: "bob", tenant: t, projects: ["top"] });
    const other = await connectAs(srv, { sub: "carol", tenant: "otherco" });
    for (const s of [a1, a2, b1]) await emitWithAck(s, "subscribe", { room: "project:top" });

    const now = await eventually(async () => {
      const b = (await stats(srv.url, API_KEY)).body;
      return b.connections === base.connections + 4 ? b : null;
    }, { what: "connections == baseline + 4" });
    assert.equal(now.users, base.users + 3, "alice (2 sockets), bob, carol = 3 users");
    assert.equal(now.tenants, base.tenants + 2, "statsco and otherco");
    // Rooms that exist now: statsco global, user:alice, user:bob, project:top; otherco global, user:carol.
    assert.equal(now.rooms, base.rooms + 6, `rooms: ${JSON.stringify(now)}`);
    const top = now.top_rooms.find((r) => r.tenant === t && r.room === "global");
    assert.deepEqual(top, { tenant: t, room: "global", members: 3 }, `top_rooms: ${JSON.stringify(now.top_rooms)}`);
    assert.ok(now.top_rooms.every((r) => !r.room.includes(t)), "room names are public (no tenant prefix)");
    for (let i = 1; i < now.top_rooms.length; i++) {
      assert.ok(now.top_rooms[i - 1].members >= now.top_rooms[i].members, "top_rooms sorted by members, descending");
    }

    other.disconnect();
    b1.disconnect();
    const after = await eventually(async () => {
      const b = (await stats(srv.url, API_KEY)).body;
      return b.connections === base.connections + 2 ? b : null;
    }, { what: "connections == baseline + 2 after two disconnects" });
    assert.equal(after.users, base.users + 1, "only alice left");
    assert.equal(after.tenants, base.tenants + 1, "only statsco left");
  });

  test("events_published counts successful publishes only", async () => {
    const before = (await stats(srv.url, API_KEY)).body.events_published;
    await publishOk(srv, VALID);
    await publishOk(srv, { type: "agent.connected", data: { agent_id: "a1", project_id: "1" } }); // two rooms, one event
    await broadcast(srv.url, API_KEY, { room: "global", event: "custom", data: 1 });
    await publish(srv.url, API_KEY, { type: "project.updated", data: {} }); // 422
    await publish(srv.url, "wrong", VALID); // 401
    const after = (await stats(srv.url, API_KEY)).body.events_published;
    assert.equal(after - before, 3);
  });

  test("auth_failures counts refused handshakes", async () => {
    const before = (await stats(srv.url, API_KEY)).body.auth_failures;
    assert.equal(await connectError(srv.url, { auth: { token: "garbage" } }), "token_invalid");
    assert.equal(await connectError(srv.url, {}), "token_missing");
    await eventually(async () => (await stats(srv.url, API_KEY)).body.auth_failures === before + 2, {
      what: "auth_failures == before + 2",
    });
  });
});

describe("health and readiness", () => {
  test("GET /health → 200 {status: \"ok\"} without a key", async () => {
    const res = await http(`${srv.url}/health`);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { status: "ok" });
  });

  test("GET /ready → 200 {status: \"ready\"} without a key", async () => {
    const res = await http(`${srv.url}/ready`);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { status: "ready" });
  });

  test("unknown path → 404", async () => {
    assert.equal((await http(`${srv.url}/api/v1/nope`, { key: API_KEY })).status, 404);
  });

  test("GET on the publish endpoint is not allowed", async () => {
    assert.equal((await http(`${srv.url}/api/v1/events`, { key: API_KEY })).status, 405);
  });
});
