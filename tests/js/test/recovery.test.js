// No event lost on reconnect, with plain socket.io-client and the recipe of WEBSOCKET_API.md
// section 11: `auth` as a function sending `since` with the cursors it tracked.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  startServer,
  createSocket,
  disconnectAll,
  mintToken,
  publishOk,
  eventually,
} from "../lib/helpers.js";

let srv;

before(async () => {
  srv = await startServer();
});
after(async () => {
  disconnectAll();
  await srv?.stop();
});

function progress(n) {
  return { type: "workflow.progress", data: { workflow_id: "w", project_id: "7", progress: n } };
}

test("a dropped transport reconnects with `since` and gets exactly the missed events, in order, before live ones", async () => {
  const token = mintToken({ sub: "alice", projects: ["7"] });
  const cursors = {};
  const seen = [];
  const established = [];
  const socket = createSocket(srv.url, {
    auth: (cb) => cb({ token, since: { ...cursors } }),
  });
  socket.on("connection.established", (e) => established.push(e));
  socket.on("workflow.progress", (env) => {
    const c = cursors[env.room];
    if (c && c.epoch === env.epoch && env.seq <= c.seq) return; // duplicate
    cursors[env.room] = { epoch: env.epoch, seq: env.seq };
    seen.push(env.data.progress);
  });
  socket.connect();
  await eventually(() => established.length === 1, { what: "first connection" });
  const ack = await socket.timeout(5000).emitWithAck("subscribe", { room: "project:7" });
  assert.equal(ack.ok, true);

  await publishOk(srv, progress(1));
  await eventually(() => seen.length === 1, { what: "the first event" });

  // Kill the transport (a train tunnel), publish while it is gone, then reconnect: the
  // `auth` function runs again and sends the cursors.
  socket.io.engine.close();
  await eventually(() => !socket.connected, { what: "the transport to drop" });
  for (const n of [2, 3, 4]) await publishOk(srv, progress(n));
  socket.connect();

  await eventually(() => established.length === 2, { what: "the reconnection" });
  const again = established[1];
  assert.equal(again.recovered, true, JSON.stringify(again));
  assert.equal(again.recovery["project:7"].replayed, 3);
  await publishOk(srv, progress(5));
  await eventually(() => seen.length === 5, { what: "replayed and live events" });
  assert.deepEqual(seen, [1, 2, 3, 4, 5], "every event once, in order, replay before live");
  assert.equal(cursors["project:7"].seq, 5);
});

test("with the recipe, rooms with no event yet recover too: cursors from the subscribe ack and connection.established", async () => {
  const token = mintToken({ sub: "quinn", tenant: "quiet", projects: ["8"] });
  const cursors = {};
  const seen = [];
  const established = [];
  const advance = (room, p) => {
    const c = cursors[room];
    if (!c || c.epoch !== p.epoch || c.seq < p.seq) cursors[room] = { epoch: p.epoch, seq: p.seq };
  };
  const socket = createSocket(srv.url, {
    auth: (cb) => cb({ token, since: { ...cursors } }),
  });
  socket.on("connection.established", (e) => {
    established.push(e);
    for (const [room, p] of Object.entries(e.positions ?? {})) if (!(room in e.recovery)) advance(room, p);
  });
  socket.onAny((type, env) => {
    if (!env?.id || env.seq === undefined) return;
    const c = cursors[env.room];
    if (c && c.epoch === env.epoch && env.seq <= c.seq) return; // duplicate
    cursors[env.room] = { epoch: env.epoch, seq: env.seq };
    seen.push(env.id);
  });
  socket.connect();
  await eventually(() => established.length === 1, { what: "first connection" });
  const ack = await socket.timeout(5000).emitWithAck("subscribe", { room: "project:8" });
  for (const [room, p] of Object.entries(ack.positions ?? {})) advance(room, p);
  assert.deepEqual(Object.keys(cursors).sort(), ["global", "project:8", "user:quinn"]);

  // Gone before either room's first event.
  socket.io.engine.close();
  await eventually(() => !socket.connected, { what: "the transport to drop" });
  const missed = [];
  for (const n of [1, 2]) {
    const body = { type: "workflow.progress", data: { workflow_id: "w", project_id: "8", progress: n }, tenant: "quiet" };
    missed.push((await publishOk(srv, body)).id);
  }
  const notice = { type: "system.notification", data: { title: "t", message: "m" }, tenant: "quiet" };
  missed.push((await publishOk(srv, notice)).id);
  socket.connect();

  await eventually(() => established.length === 2, { what: "the reconnection" });
  const again = established[1];
  assert.equal(again.recovered, true, JSON.stringify(again));
  assert.equal(again.recovery["project:8"].replayed, 2);
  assert.equal(again.recovery.global.replayed, 1);
  await eventually(() => seen.length === 3, { what: "the missed events" });
  assert.deepEqual(seen, missed);
});
