// Typed events: every type published over POST /api/v1/events reaches the sockets in its room
// with the full envelope, and does not reach a socket of the same tenant in another room.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";

import {
  startServer,
  connectAs,
  disconnectAll,
  waitForEnvelope,
  emitWithAck,
  expectNoEvent,
  received,
  barrier,
  publish,
  publishOk,
  assertEnvelope,
  UUID_V7,
  withoutPositions,
} from "../lib/helpers.js";

let srv;

before(async () => {
  srv = await startServer({ nodeId: "e2e-events" });
});
after(async () => {
  disconnectAll();
  await srv?.stop();
});
afterEach(() => disconnectAll());

const P = "p1"; // the project the watcher is in
const A = "a1"; // the agent the watcher is in
const W = "wf-1";

// type → data to publish, the room it must reach, and (when different) the data expected back.
// Sent data only holds documented fields, so the server must echo it unchanged.
const CASES = [
  {
    type: "project.updated",
    data: {
      project_id: P,
      project_name: "Roomcast",
      status: "active",
      updated_by: "alice",
      repository_url: "https://github.com/example/roomcast",
      changes: { status: ["draft", "active"], tags: { added: ["rust"] } },
    },
    room: `project:${P}`,
  },
  { type: "project.updated", label: "required fields only", data: { project_id: P }, room: `project:${P}` },
  { type: "project.deleted", data: { project_id: P, deleted_by: "alice" }, room: `project:${P}` },
  {
    type: "agent.status_changed",
    data: { agent_id: A, status: "busy", previous_status: "idle" },
    room: `agent:${A}`,
  },
  { type: "agent.connected", data: { agent_id: A }, room: `agent:${A}` },
  { type: "agent.disconnected", data: { agent_id: A, reason: "shutdown" }, room: `agent:${A}` },
  { type: "workflow.started", data: { workflow_id: W, project_id: P }, room: `project:${P}` },
  {
    type: "workflow.progress",
    data: { workflow_id: W, project_id: P, progress: 50, step: "build", message: "compiling", eta_seconds: 30 },
    room: `project:${P}`,
  },
  { type: "workflow.progress", label: "progress 0", data: { workflow_id: W, project_id: P, progress: 0 }, room: `project:${P}` },
  { type: "workflow.progress", label: "progress 100", data: { workflow_id: W, project_id: P, progress: 100 }, room: `project:${P}` },
  { type: "workflow.completed", data: { workflow_id: W, project_id: P, result: { artifacts: ["app.tar.gz"], ok: true }, duration_ms: 1234 }, room: `project:${P}` },
  { type: "workflow.failed", data: { workflow_id: W, project_id: P, error: "step build failed" }, room: `project:${P}` },
  ...["pr.created", "pr.updated", "pr.closed"].map((type) => ({
    type,
    data: {
      project_id: P,
      number: 42,
      title: "Add rooms",
      url: "https://github.com/example/roomcast/pull/42",
      author: "alice",
      state: type === "pr.closed" ? "closed" : "open",
      merged: type === "pr.closed",
    },
    room: `project:${P}`,
  })),
  { type: "pr.created", label: "required fields only", data: { project_id: P, number: 1, title: "t" }, room: `project:${P}` },
  ...["issue.created", "issue.updated", "issue.closed"].map((type) => ({
    type,
    data: {
      project_id: P,
      number: 7,
      title: "Crash on connect",
      url: "https://github.com/example/roomcast/issues/7",
      author: "bob",
      state: type === "issue.closed" ? "closed" : "open",
    },
    room: `project:${P}`,
  })),
  {
    type: "ai.suggestion",
    label: "project routing",
    data: { suggestion_id: "s1", content: "Cache the token", title: "Tip", kind: "performance", project_id: P },
    room: `project:${P}`,
  },
  {
    type: "ai.analysis_complete",
    data: { analysis_id: "an-1", project_id: P, summary: "No issues found" },
    room: `project:${P}`,
  },
];

/**
 * watcher: in the target room (project:p1 / agent:a1 subscribed; global and user:<sub> automatic).
 * outsider: same tenant, subscribed to project:p2 and agent:a2 only.
 */
async function watcherAndOutsider(room, tenant) {
  const watcher = await connectAs(srv, { sub: "watcher", tenant, projects: [P], agents: [A] });
  const outsider = await connectAs(srv, { sub: "outsider", tenant, projects: "*", agents: "*" });
  if (room.startsWith("project:") || room.startsWith("agent:")) {
    assert.deepEqual(withoutPositions(await emitWithAck(watcher, "subscribe", { room })), { ok: true, rooms: [room] });
  }
  const elsewhere = ["project:p2", "agent:a2"];
  assert.deepEqual(withoutPositions(await emitWithAck(outsider, "subscribe", { rooms: elsewhere })), { ok: true, rooms: elsewhere });
  return { watcher, outsider };
}

function assertAccepted(body, { type, room, rooms = [room], tenant = "default" }) {
  assert.match(body.id, UUID_V7, "202 id is a UUIDv7");
  assert.equal(body.type, type);
  assert.equal(body.room, room);
  assert.deepEqual([...body.rooms].sort(), [...rooms].sort());
  assert.equal(body.tenant, tenant);
}

describe("every typed event reaches its room, with the full envelope, and no other room", () => {
  for (const c of CASES) {
    test(`${c.type}${c.label ? ` (${c.label})` : ""} → ${c.room}`, async () => {
      const { watcher, outsider } = await watcherAndOutsider(c.room);
      const accepted = await publishOk(srv, { type: c.type, data: c.data });
      assertAccepted(accepted, { type: c.type, room: c.room });

      const env = await waitForEnvelope(watcher, c.type, accepted.id);
      assertEnvelope(env, { id: accepted.id, type: c.type, room: c.room, data: c.expected ?? c.data });

      await expectNoEvent(outsider, c.type, { match: (e) => e?.id === accepted.id, barrier: { srv } });
      // Delivered once, under its own name only.
      const copies = watcher.inbox.filter((e) => e.payload?.id === accepted.id);
      assert.equal(copies.length, 1, `watcher got ${copies.length} copies`);
      assert.equal(copies[0].name, c.type);
    });
  }

  test("system.notification → global of the tenant (everyone there), not other tenants", async () => {
    const alice = await connectAs(srv, { sub: "alice" });
    const bob = await connectAs(srv, { sub: "bob", projects: "*" });
    const acme = await connectAs(srv, { sub: "alice", tenant: "acme" });
    const data = { title: "Maintenance", message: "Restart at noon", severity: "warning" };
    const accepted = await publishOk(srv, { type: "system.notification", data });
    assertAccepted(accepted, { type: "system.notification", room: "global" });
    for (const s of [alice, bob]) {
      assertEnvelope(await waitForEnvelope(s, "system.notification", accepted.id), {
        id: accepted.id,
        type: "system.notification",
        room: "global",
        data,
      });
    }
    await expectNoEvent(acme, "system.notification", {
      match: (e) => e?.id === accepted.id,
      barrier: { srv, tenant: "acme" },
    });
  });

  for (const severity of ["info", "warning", "error", "critical"]) {
    test(`system.notification severity ${severity} is accepted`, async () => {
      const s = await connectAs(srv, { sub: "alice" });
      const data = { title: "t", message: "m", severity };
      const accepted = await publishOk(srv, { type: "system.notification", data });
      assert.deepEqual((await waitForEnvelope(s, "system.notification", accepted.id)).data, data);
    });
  }

  test("system.notification without severity: the field is omitted", async () => {
    const s = await connectAs(srv, { sub: "alice" });
    const data = { title: "t", message: "m" };
    const accepted = await publishOk(srv, { type: "system.notification", data });
    assert.deepEqual((await waitForEnvelope(s, "system.notification", accepted.id)).data, data);
  });
});

describe("agent events with project_id", () => {
  for (const type of ["agent.status_changed", "agent.connected", "agent.disconnected"]) {
    test(`${type}: reaches agent:<id> and project:<pid>, room is agent:<id>, once for a socket in both`, async () => {
      const agentOnly = await connectAs(srv, { sub: "u1", agents: [A] });
      const projectOnly = await connectAs(srv, { sub: "u2", projects: [P] });
      const both = await connectAs(srv, { sub: "u3", projects: [P], agents: [A] });
      const neither = await connectAs(srv, { sub: "u4", projects: "*", agents: "*" });
      await emitWithAck(agentOnly, "subscribe", { room: `agent:${A}` });
      await emitWithAck(projectOnly, "subscribe", { room: `project:${P}` });
      assert.deepEqual(withoutPositions(await emitWithAck(both, "subscribe", { rooms: [`agent:${A}`, `project:${P}`] })), {
        ok: true,
        rooms: [`agent:${A}`, `project:${P}`],
      });
      await emitWithAck(neither, "subscribe", { rooms: ["agent:a2", "project:p2"] });

      const data = type === "agent.status_changed"
        ? { agent_id: A, status: "busy", previous_status: "idle", project_id: P }
        : type === "agent.connected"
          ? { agent_id: A, project_id: P }
          : { agent_id: A, project_id: P, reason: "crash" };
      const accepted = await publishOk(srv, { type, data });
      assertAccepted(accepted, { type, room: `agent:${A}`, rooms: [`agent:${A}`, `project:${P}`] });

      for (const s of [agentOnly, projectOnly, both]) {
        assertEnvelope(await waitForEnvelope(s, type, accepted.id), { id: accepted.id, type, room: `agent:${A}`, data });
      }
      await expectNoEvent(neither, type, { match: (e) => e?.id === accepted.id, barrier: { srv } });
      // The barrier arrived after the event on `both`; a second copy would have arrived too.
      await barrier(srv, [both]);
      assert.equal(received(both, type, (e) => e?.id === accepted.id).length, 1, "a socket in both rooms gets it once");
    });
  }
});

describe("ai.suggestion routing", () => {
  test("user_id given: goes to user:<user_id> only, even with a project_id", async () => {
    const alice = await connectAs(srv, { sub: "alice" });
    const projectMember = await connectAs(srv, { sub: "bob", projects: [P] });
    await emitWithAck(projectMember, "subscribe", { room: `project:${P}` });
    const data = { suggestion_id: "s2", content: "Rename it", user_id: "alice", project_id: P };
    const accepted = await publishOk(srv, { type: "ai.suggestion", data });
    assertAccepted(accepted, { type: "ai.suggestion", room: "user:alice" });
    assertEnvelope(await waitForEnvelope(alice, "ai.suggestion", accepted.id), {
      id: accepted.id,
      type: "ai.suggestion",
      room: "user:alice",
      data,
    });
    await expectNoEvent(projectMember, "ai.suggestion", { match: (e) => e?.id === accepted.id, barrier: { srv } });
  });

  test("only project_id: goes to project:<project_id>, not to users outside it", async () => {
    const alice = await connectAs(srv, { sub: "alice" });
    const projectMember = await connectAs(srv, { sub: "bob", projects: [P] });
    await emitWithAck(projectMember, "subscribe", { room: `project:${P}` });
    const data = { suggestion_id: "s3", content: "Add a test", project_id: P };
    const accepted = await publishOk(srv, { type: "ai.suggestion", data });
    assertAccepted(accepted, { type: "ai.suggestion", room: `project:${P}` });
    assertEnvelope(await waitForEnvelope(projectMember, "ai.suggestion", accepted.id), {
      id: accepted.id,
      type: "ai.suggestion",
      room: `project:${P}`,
      data,
    });
    await expectNoEvent(alice, "ai.suggestion", { match: (e) => e?.id === accepted.id, barrier: { srv } });
  });

  test("neither user_id nor project_id: 422 invalid_payload field user_id, nothing delivered", async () => {
    const alice = await connectAs(srv, { sub: "alice" });
    const res = await publish(srv.url, srv.apiKey, { type: "ai.suggestion", data: { suggestion_id: "s4", content: "x" } });
    assert.equal(res.status, 422, res.text);
    assert.equal(res.body?.error?.code, "invalid_payload");
    assert.equal(res.body.error.field, "user_id");
    await expectNoEvent(alice, "ai.suggestion", { barrier: { srv } });
  });
});

describe("id normalization", () => {
  test("numeric ids become strings in data and in the room; other numbers stay numbers", async () => {
    const s = await connectAs(srv, { sub: "alice", projects: ["42"], agents: ["3"] });
    await emitWithAck(s, "subscribe", { rooms: ["project:42", "agent:3"] });

    const pu = await publishOk(srv, { type: "project.updated", data: { project_id: 42 } });
    assert.equal(pu.room, "project:42");
    assertEnvelope(await waitForEnvelope(s, "project.updated", pu.id), {
      id: pu.id,
      type: "project.updated",
      room: "project:42",
      data: { project_id: "42" },
    });

    const wp = await publishOk(srv, {
      type: "workflow.progress",
      data: { workflow_id: 7, project_id: 42, progress: 10, eta_seconds: 5 },
    });
    assert.deepEqual((await waitForEnvelope(s, "workflow.progress", wp.id)).data, {
      workflow_id: "7",
      project_id: "42",
      progress: 10,
      eta_seconds: 5,
    });

    const pr = await publishOk(srv, { type: "pr.created", data: { project_id: 42, number: 5, title: "t" } });
    assert.deepEqual((await waitForEnvelope(s, "pr.created", pr.id)).data, { project_id: "42", number: 5, title: "t" });

    const ag = await publishOk(srv, { type: "agent.connected", data: { agent_id: 3 } });
    assertEnvelope(await waitForEnvelope(s, "agent.connected", ag.id), {
      id: ag.id,
      type: "agent.connected",
      room: "agent:3",
      data: { agent_id: "3" },
    });

    const an = await publishOk(srv, { type: "ai.analysis_complete", data: { analysis_id: 9, project_id: 42, summary: "ok" } });
    assert.deepEqual((await waitForEnvelope(s, "ai.analysis_complete", an.id)).data, {
      analysis_id: "9",
      project_id: "42",
      summary: "ok",
    });
  });

  test("a numeric user_id / suggestion_id routes to user:<id> as a string", async () => {
    const s = await connectAs(srv, { sub: "1001" });
    const accepted = await publishOk(srv, { type: "ai.suggestion", data: { suggestion_id: 5, content: "c", user_id: 1001 } });
    assertEnvelope(await waitForEnvelope(s, "ai.suggestion", accepted.id), {
      id: accepted.id,
      type: "ai.suggestion",
      room: "user:1001",
      data: { suggestion_id: "5", content: "c", user_id: "1001" },
    });
  });
});

describe("envelope ids", () => {
  test("ids are time-ordered UUIDv7s and events arrive in publish order", async () => {
    const s = await connectAs(srv, { sub: "alice", projects: [P] });
    await emitWithAck(s, "subscribe", { room: `project:${P}` });
    const ids = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await publishOk(srv, { type: "project.updated", data: { project_id: P, status: `s${i}` } })).id);
    }
    const sorted = [...ids].sort();
    assert.deepEqual(ids, sorted, "UUIDv7 ids sort in publish order");
    assert.equal(new Set(ids).size, ids.length, "ids are unique");
    for (const id of ids) await waitForEnvelope(s, "project.updated", id);
    const arrived = received(s, "project.updated").map((e) => e.id);
    assert.deepEqual(arrived, ids, "arrival order equals publish order");
  });
});
