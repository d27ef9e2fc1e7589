// The "done when" scenario of issue #2, end to end, as a user would run it.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  startServer,
  connect,
  disconnectAll,
  waitForEvent,
  waitForEnvelope,
  emitWithAck,
  expectNoEvent,
  publish,
  assertEnvelope,
  assertServerTime,
} from "../lib/helpers.js";

let srv;

before(async () => {
  srv = await startServer({ nodeId: "e2e-acceptance" });
});
after(async () => {
  disconnectAll();
  await srv?.stop();
});

test("CLI token → connect → connection.established → refused project:x → receives project.updated", async () => {
  const token = (await srv.cliToken(["--sub", "alice", "--projects", "1"])).trim();

  const socket = await connect(srv.url, { auth: { token } });
  const established = await waitForEvent(socket, "connection.established");
  assert.equal(established.sid, socket.id);
  assert.equal(established.user_id, "alice");
  assert.equal(established.tenant, "default");
  assert.deepEqual([...established.rooms].sort(), ["global", "user:alice"]);
  assert.equal(established.node_id, "e2e-acceptance");
  assertServerTime(established.server_time);

  const refused = await emitWithAck(socket, "subscribe", { room: "project:x" });
  assert.equal(refused.ok, false);
  assert.equal(refused.error.code, "forbidden");
  assert.equal(refused.error.room, "project:x");

  assert.deepEqual((await emitWithAck(socket, "subscribe", { room: "project:1" })).rooms, ["project:1"]);

  const data = {
    project_id: "1",
    project_name: "Roomcast",
    status: "active",
    updated_by: "bob",
    repository_url: "https://github.com/example/roomcast",
  };
  const res = await publish(srv.url, srv.apiKey, { type: "project.updated", data });
  assert.equal(res.status, 202, res.text);
  assert.equal(res.body.type, "project.updated");
  assert.equal(res.body.room, "project:1");

  const env = await waitForEnvelope(socket, "project.updated", res.body.id);
  assertEnvelope(env, { id: res.body.id, type: "project.updated", room: "project:1", data });

  // And the refused room really is not joined.
  const x = await publish(srv.url, srv.apiKey, { type: "project.updated", data: { project_id: "x" } });
  assert.equal(x.status, 202, x.text);
  await expectNoEvent(socket, "project.updated", { match: (e) => e?.id === x.body.id, barrier: { srv } });

  socket.disconnect();
});
