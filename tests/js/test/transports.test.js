// Transports: polling-only, websocket-only, the default polling → websocket upgrade, and the
// /ws namespace, each proven by a subscribe and an event published over HTTP arriving.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";

import {
  startServer,
  connectAs,
  disconnectAll,
  waitForEvent,
  waitForEnvelope,
  emitWithAck,
  eventually,
  expectNoEvent,
  publishOk,
  assertEnvelope,
  withoutPositions,
} from "../lib/helpers.js";

let srv;

before(async () => {
  srv = await startServer({ nodeId: "e2e-transports" });
});
after(async () => {
  disconnectAll();
  await srv?.stop();
});
afterEach(() => disconnectAll());

/** connection.established, subscribe, ping and a published event, all on this socket. */
async function assertFullRoundTrip(socket, sub) {
  const established = await waitForEvent(socket, "connection.established");
  assert.equal(established.user_id, sub);
  assert.equal(established.sid, socket.id);
  assert.deepEqual(withoutPositions(await emitWithAck(socket, "subscribe", { room: "project:t1" })), { ok: true, rooms: ["project:t1"] });
  assert.equal((await emitWithAck(socket, "ping")).pong, true);
  const data = { project_id: "t1", status: `via-${socket.io.engine.transport.name}` };
  const accepted = await publishOk(srv, { type: "project.updated", data });
  assertEnvelope(await waitForEnvelope(socket, "project.updated", accepted.id), {
    id: accepted.id,
    type: "project.updated",
    room: "project:t1",
    data,
  });
}

describe("transports", () => {
  test("polling only", async () => {
    const socket = await connectAs(srv, { sub: "poller", projects: ["t1"] }, { transports: ["polling"] });
    assert.equal(socket.io.engine.transport.name, "polling");
    await assertFullRoundTrip(socket, "poller");
    assert.equal(socket.io.engine.transport.name, "polling", "stayed on polling");
  });

  test("websocket only", async () => {
    const socket = await connectAs(srv, { sub: "wser", projects: ["t1"] }, { transports: ["websocket"] });
    assert.equal(socket.io.engine.transport.name, "websocket");
    await assertFullRoundTrip(socket, "wser");
  });

  test("default: starts on polling and upgrades to websocket", async () => {
    const socket = await connectAs(srv, { sub: "upgrader", projects: ["t1"] });
    const engine = socket.io.engine;
    const upgradedTo = [];
    engine.on("upgrade", (transport) => upgradedTo.push(transport.name));
    await eventually(() => engine.transport.name === "websocket", { what: "transport upgrade to websocket" });
    // Either we saw the upgrade event, or it had already happened before we listened.
    assert.ok(upgradedTo.length === 0 || upgradedTo[0] === "websocket");
    await assertFullRoundTrip(socket, "upgrader");
    assert.equal(engine.transport.name, "websocket");
  });

  test("events published right after connecting (around the upgrade) all arrive, in order", async () => {
    const socket = await connectAs(srv, { sub: "racer", projects: ["t1"] });
    await emitWithAck(socket, "subscribe", { room: "project:t1" });
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await publishOk(srv, { type: "project.updated", data: { project_id: "t1" } })).id);
    for (const id of ids) await waitForEnvelope(socket, "project.updated", id);
    assert.deepEqual(socket.inbox.filter((e) => e.name === "project.updated").map((e) => e.payload.id), ids);
  });
});

describe("the /ws namespace", () => {
  for (const transports of [undefined, ["polling"], ["websocket"]]) {
    test(`behaves like / (transports: ${transports ? transports.join(",") : "default"})`, async () => {
      const opts = { namespace: "/ws" };
      if (transports) opts.transports = transports;
      const socket = await connectAs(srv, { sub: "wsns", projects: ["t1"] }, opts);
      assert.equal(socket.nsp, "/ws");
      await assertFullRoundTrip(socket, "wsns");
    });
  }

  test("a publish reaches sockets on / and /ws alike, and access rules apply on /ws", async () => {
    const root = await connectAs(srv, { sub: "r", projects: ["t1"] });
    const ws = await connectAs(srv, { sub: "w", projects: ["t1"] }, { namespace: "/ws" });
    for (const s of [root, ws]) await emitWithAck(s, "subscribe", { room: "project:t1" });
    const denied = await emitWithAck(ws, "subscribe", { room: "project:t2" });
    assert.equal(denied.ok, false);
    assert.equal(denied.error.code, "forbidden");

    const accepted = await publishOk(srv, { type: "project.updated", data: { project_id: "t1" } });
    for (const s of [root, ws]) await waitForEnvelope(s, "project.updated", accepted.id);

    const t2 = await publishOk(srv, { type: "project.updated", data: { project_id: "t2" } });
    await expectNoEvent(ws, "project.updated", { match: (e) => e?.id === t2.id, barrier: { srv } });
  });

  test("system.notification reaches global on /ws", async () => {
    const ws = await connectAs(srv, { sub: "w" }, { namespace: "/ws", transports: ["websocket"] });
    const data = { title: "hi", message: "there" };
    const accepted = await publishOk(srv, { type: "system.notification", data });
    assertEnvelope(await waitForEnvelope(ws, "system.notification", accepted.id), {
      id: accepted.id,
      type: "system.notification",
      room: "global",
      data,
    });
  });
});
