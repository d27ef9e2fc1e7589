// A deploy, as socket.io-client sees it (WEBSOCKET_API.md section 2.8): the client's server is
// stopped with SIGTERM and a new process is started on the same port while events are
// published. A stock client (default reconnection settings, no reconnect code of its own)
// reconnects by itself and, with the recipe of section 11 (`auth` as a function sending
// `since`), ends with every event exactly once, in order. Websocket and polling.
//
// The history lives in a redis-server (the server is a node of a cluster), so the restarted
// process keeps the room's epoch and seq. The events "while the client is away" are published
// at a second node of that cluster while the client's port has no server at all, so they are
// certainly missed live and must come back through recovery.

import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";

import { createSocket, disconnectAll, emitWithAck, eventually, freePort, mintToken, publish, trackCursors, withoutPositions, API_KEY } from "../lib/helpers.js";
import { startCluster } from "../lib/cluster.js";

/** socket.io-client's backoff (1 s, 2 s, 4 s, then 5 s, each +-50 %) over a restart of a
 * second or two, with room to spare on a loaded machine. */
const RECONNECT_WAIT_MS = 20_000;

/** The disconnect reasons after which socket.io-client reconnects by itself. */
const RETRIED = ["transport close", "transport error"];

let cluster;
let publisher;

before(async () => {
  cluster = await startCluster(["restart-publisher"], { label: "restart" });
  publisher = cluster.nodes["restart-publisher"];
});
afterEach(() => disconnectAll());
after(async () => {
  disconnectAll();
  await cluster?.stop();
});

/** A node of the cluster listening on `port` (the same port across restarts). */
function nodeOn(port, nodeId) {
  return cluster.addNode(nodeId, { env: { ROOMCAST_SERVER__BIND: `127.0.0.1:${port}` }, listenPort: port });
}

/**
 * The recipe of WEBSOCKET_API.md section 11 on a stock socket.io-client socket (default
 * reconnection): `since` from the last event seen per room, duplicates dropped. Records what it
 * sees: `raw` (every project.updated envelope), `handled` (what the recipe passed on),
 * `established`, `shutdowns`, `disconnects` (reasons).
 */
function recipeClient(url, token, transport) {
  const cursors = {};
  const c = { raw: [], handled: [], established: [], shutdowns: [], disconnects: [] };
  c.socket = createSocket(url, {
    transports: [transport],
    reconnection: true,
    auth: (cb) => cb({ token, since: cursors }),
  });
  const track = (env) => trackCursors(cursors, env);
  c.socket.onAny((type, env) => {
    if (type === "connection.established") c.established.push(env);
    else if (type === "server.shutdown") c.shutdowns.push(env);
    else if (env && env.id) {
      const handled = track(env);
      if (type !== "project.updated") return;
      c.raw.push(env.id);
      if (handled) c.handled.push(env);
    }
  });
  c.socket.on("disconnect", (reason) => c.disconnects.push(reason));
  return c;
}

const updated = (project, label) => ({ type: "project.updated", data: { project_id: project, status: label } });

async function publishAt(srv, project, label) {
  const res = await publish(srv.url, API_KEY, updated(project, label));
  assert.equal(res.status, 202, `publish ${label}: ${res.status} ${res.text}`);
  return res.body.id;
}

for (const transport of ["websocket", "polling"]) {
  test(`${transport}: a restarted server is rejoined by itself and nothing is lost`, async (t) => {
    const port = await freePort();
    const nodeId = `restart-${transport}`;
    const project = `restart-${transport}`;
    const room = `project:${project}`;
    const old = await nodeOn(port, nodeId);
    const client = recipeClient(old.url, mintToken({ sub: `restart-${transport}`, projects: [project] }), transport);
    client.socket.connect();
    await eventually(() => client.established.length === 1, { what: "the first connection" });
    assert.deepEqual(withoutPositions(await emitWithAck(client.socket, "subscribe", { room })), { ok: true, rooms: [room] });
    const before = [await publishAt(old, project, "before-1"), await publishAt(old, project, "before-2")];
    await eventually(() => client.handled.length === 2, { what: "the events before the restart" });

    // The deploy: SIGTERM, the process drains and exits.
    const exit = await old.kill("SIGTERM");
    assert.deepEqual(exit, { code: 0, signal: null }, old.logTail());
    assert.deepEqual(client.shutdowns, [{ reconnect_after_ms: 1000 }]);
    // A dropped transport, which socket.io-client retries ("io server disconnect" it would not):
    // the websocket closes; a long poll's next request is refused.
    await eventually(() => client.disconnects.length === 1, { what: "the disconnect" });
    assert.ok(RETRIED.includes(client.disconnects[0]), `disconnect reason: ${client.disconnects}`);

    // Nothing listens on the client's port: these are missed live.
    const away = [];
    for (let i = 1; i <= 3; i++) away.push(await publishAt(publisher, project, `away-${i}`));
    assert.equal(client.socket.connected, false);

    const restarted = await nodeOn(port, nodeId);
    const startedAt = Date.now();
    await eventually(() => client.established.length === 2, {
      timeout: RECONNECT_WAIT_MS,
      what: "the client reconnecting by itself to the restarted server",
    });
    t.diagnostic(`reconnected ${Date.now() - startedAt} ms after the new process was ready`);
    const est = client.established[1];
    assert.equal(est.recovered, true, JSON.stringify(est));
    assert.equal(est.recovery[room].replayed, away.length, JSON.stringify(est));
    assert.ok(est.rooms.includes(room), JSON.stringify(est));

    const live = [await publishAt(restarted, project, "live-1"), await publishAt(restarted, project, "live-2")];
    const everything = [...before, ...away, ...live];
    await eventually(() => client.handled.length === everything.length, { what: "every event" });
    assert.deepEqual(client.handled.map((e) => e.id), everything, "every event, in order");
    assert.deepEqual(client.raw, everything, "the server sent no event twice");
    assert.deepEqual(client.handled.map((e) => e.seq), everything.map((_, i) => i + 1));
    assert.equal(client.disconnects.length, 1, `one disconnect: ${client.disconnects}`);
  });
}
