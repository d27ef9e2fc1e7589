// Cluster history, end to end: a client behind a load balancer loses its node (SIGKILL, or a
// graceful SIGTERM drain), lands on another node, and with the plain socket.io-client recipe of
// WEBSOCKET_API.md section 11 (`auth` as a function sending `since`) gets every event it missed
// exactly once, in `seq` order, before live ones; two nodes publishing into one room at once
// produce one order, seen identically on every node.
//
// The load balancer is a tiny TCP proxy in this file: each new connection goes to the first
// backend in its list that accepts one (ECONNREFUSED falls through to the next).
//
// Every test starts the nodes it kills itself (cluster.addNode), so the tests do not depend on
// each other's order.

import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";

import {
  connectAs,
  createSocket,
  disconnectAll,
  emitWithAck,
  eventually,
  http,
  mintToken,
  publish,
  trackCursors,
  API_KEY,
} from "../lib/helpers.js";
import { startCluster } from "../lib/cluster.js";

/** Deadline for anything that involves a reconnect or a recovery. */
const RECOVERY_WAIT_MS = 15_000;

let cluster;
let A, B;
const balancers = [];

before(async () => {
  cluster = await startCluster(["rcv-a", "rcv-b"], { label: "recovery" });
  ({ "rcv-a": A, "rcv-b": B } = cluster.nodes);
});
afterEach(async () => {
  disconnectAll();
  await Promise.all(balancers.splice(0).map((lb) => lb.close()));
});
after(async () => {
  disconnectAll();
  await cluster?.stop();
});

// ---------------------------------------------------------------------------------------------
// A tiny TCP load balancer

/**
 * Listens on a free port and forwards each new connection to the first backend port of
 * `lb.backends` that accepts a TCP connection; a refused connect (ECONNREFUSED) tries the next.
 * While `lb.hold` is true every new connection is closed at once (no healthy upstream), which
 * keeps a client away for as long as a test needs. `lb.routes` lists where each accepted
 * connection went (a port, or null when nothing took it).
 */
async function startBalancer(backends) {
  const open = new Set();
  const lb = { backends: [...backends], hold: false, routes: [] };
  const track = (sock) => {
    open.add(sock);
    sock.once("close", () => open.delete(sock));
    sock.on("error", () => {});
  };
  const server = net.createServer((client) => {
    track(client);
    if (lb.hold) {
      lb.routes.push(null);
      client.destroy();
      return;
    }
    const list = [...lb.backends];
    let upstream = null;
    client.once("close", () => upstream?.destroy());
    const attempt = (i) => {
      if (client.destroyed) return;
      if (i >= list.length) {
        lb.routes.push(null);
        client.destroy();
        return;
      }
      const up = net.connect({ host: "127.0.0.1", port: list[i] });
      let connected = false;
      up.once("connect", () => {
        connected = true;
        upstream = up;
        track(up);
        lb.routes.push(list[i]);
        if (client.destroyed) {
          up.destroy();
          return;
        }
        // The client socket is paused until piped: nothing it sent is lost.
        client.pipe(up);
        up.pipe(client);
      });
      up.once("error", (err) => {
        if (!connected && err.code === "ECONNREFUSED") attempt(i + 1);
        else client.destroy();
      });
      up.once("close", (hadError) => {
        if (!connected) return;
        if (hadError) client.destroy();
        else client.end(); // flush what the backend sent last (its close frames)
      });
    };
    attempt(0);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  lb.port = server.address().port;
  lb.url = `http://127.0.0.1:${lb.port}`;
  lb.close = () =>
    new Promise((resolve) => {
      for (const s of open) s.destroy();
      server.close(() => resolve());
    });
  balancers.push(lb);
  return lb;
}

// ---------------------------------------------------------------------------------------------
// A client following the documented recipe, recording everything it sees

/**
 * A socket.io-client socket through `url` with the recipe of WEBSOCKET_API.md section 11:
 * `auth` is a function sending `{token, since: cursors}`, cursors are tracked per room from
 * every envelope (`room` and `also`), duplicates (`seq <= cursor`) are dropped. Websocket only,
 * reconnection with small delays. After a server-side disconnect (which socket.io-client does
 * not retry) it reconnects as section 2.8 says: after `reconnect_after_ms` of the
 * `server.shutdown` notice.
 *
 * Records: `log` (every envelope as received, before the recipe's duplicate filter, with the
 * number of the connection it came on), `handled` (the envelopes the recipe passed on),
 * `established` (each connection.established), `lifecycle` (established / server.shutdown /
 * disconnect, in order), `sentSince` (the `since` of each handshake).
 */
function recoveringClient(url, token) {
  const cursors = {};
  const c = { cursors, log: [], handled: [], established: [], lifecycle: [], sentSince: [] };
  const socket = createSocket(url, {
    transports: ["websocket"],
    reconnection: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    randomizationFactor: 0,
    auth: (cb) => {
      c.sentSince.push(structuredClone(cursors));
      cb({ token, since: cursors });
    },
  });
  c.socket = socket;

  const track = (env) => trackCursors(cursors, env);

  socket.onAny((type, env) => {
    if (type === "connection.established") {
      c.established.push(env);
      c.lifecycle.push(`established@${env.node_id}`);
      return;
    }
    if (type === "server.shutdown") {
      c.lifecycle.push("server.shutdown");
      return;
    }
    if (env && env.id) {
      c.log.push({ type, env, conn: c.established.length });
      if (track(env)) c.handled.push({ type, env, conn: c.established.length });
    }
  });

  let notice = null;
  socket.on("server.shutdown", (n) => {
    notice = n;
  });
  socket.on("disconnect", (reason) => {
    c.lifecycle.push(`disconnect:${reason}`);
    if (reason === "io server disconnect") {
      const wait = (notice?.reconnect_after_ms ?? 0) + Math.random() * 200;
      notice = null;
      setTimeout(() => socket.connect(), wait);
    }
  });

  /** Handled envelopes of event `type` in `room`. */
  c.events = (type, room) => c.handled.filter((e) => e.type === type && e.env.room === room).map((e) => e.env);
  /** Raw receptions (duplicates included) of event `type` in `room`. */
  c.raw = (type, room) => c.log.filter((e) => e.type === type && e.env.room === room);
  return c;
}

// ---------------------------------------------------------------------------------------------
// Publishing

const updated = (project, label) => ({ type: "project.updated", data: { project_id: project, status: label } });

/** Publishes at `srv` and asserts 202; returns the accepted id. */
async function publishAccepted(srv, project, label) {
  const res = await publish(srv.url, API_KEY, updated(project, label));
  assert.equal(res.status, 202, `publish ${label} at ${srv.nodeId}: ${res.status} ${res.text}`);
  return res.body.id;
}

/** Publishes `labels` at `srv` one after the other (each after the previous 202); returns the ids. */
async function publishAll(srv, project, labels) {
  const ids = [];
  for (const label of labels) ids.push(await publishAccepted(srv, project, label));
  return ids;
}

/** A promise that never rejects (so it may wait unobserved), and its result or error back. */
const settle = (p) => p.then((value) => ({ value }), (error) => ({ error }));
async function unwrap(settled) {
  const { value, error } = await settled;
  if (error) throw error;
  return value;
}

const labels = (prefix, from, to) => Array.from({ length: to - from + 1 }, (_, i) => `${prefix}${from + i}`);

/** Asserts the envelopes have seq 1..n (or first..first+n-1), contiguous, one epoch. */
function assertContiguous(envs, what, first = 1) {
  const seqs = envs.map((e) => e.seq);
  const want = Array.from({ length: envs.length }, (_, i) => first + i);
  assert.deepEqual(seqs, want, `${what}: seq must be ${first}..${first + envs.length - 1} in order`);
  const epochs = new Set(envs.map((e) => e.epoch));
  assert.equal(epochs.size, 1, `${what}: one epoch, got ${[...epochs].join(", ")}`);
}

/** Asserts no id occurs twice in the raw receptions. */
function assertNoDuplicates(raw, what) {
  const counts = new Map();
  for (const r of raw) counts.set(r.env.id, (counts.get(r.env.id) ?? 0) + 1);
  const dups = [...counts].filter(([, n]) => n > 1).map(([id, n]) => {
    const e = raw.find((r) => r.env.id === id);
    return `${id} (seq ${e.env.seq}, ${e.env.data?.status}) x${n}`;
  });
  assert.deepEqual(dups, [], `${what}: the server sent an event twice`);
}

/**
 * Checks the reconnection `est` against what the client sent and then received on that
 * connection (number `conn`): recovered, `replayed` = events after the cursor up to the
 * reported seq, and exactly those came first on the connection.
 */
function assertRecovery(client, est, conn, room) {
  assert.equal(est.recovered, true, `recovered must be true: ${JSON.stringify(est)}`);
  const report = est.recovery?.[room];
  assert.ok(report && !report.gap && !report.error, `recovery[${room}] must be a replay: ${JSON.stringify(est.recovery)}`);
  assert.ok(est.rooms.includes(room), `${room} is re-joined through since: rooms = ${JSON.stringify(est.rooms)}`);
  const since = client.sentSince.at(-1)[room];
  assert.ok(since, `the handshake sent a cursor for ${room}: ${JSON.stringify(client.sentSince.at(-1))}`);
  assert.equal(report.epoch, since.epoch, "the epoch did not change");
  assert.equal(report.replayed, report.seq - since.seq, `replayed = reported seq - cursor: ${JSON.stringify(report)} vs ${JSON.stringify(since)}`);
  const onConn = client.raw("project.updated", room).filter((r) => r.conn === conn).map((r) => r.env);
  const replayed = onConn.slice(0, report.replayed);
  assert.deepEqual(
    replayed.map((e) => e.seq),
    Array.from({ length: report.replayed }, (_, i) => since.seq + 1 + i),
    "the replay comes first on the new connection: every event after the cursor, in order",
  );
  for (const e of onConn.slice(report.replayed)) {
    assert.ok(e.seq > report.seq, `a live event (seq ${e.seq}) after the replay is newer than the reported seq ${report.seq}`);
  }
  return report;
}

// ---------------------------------------------------------------------------------------------

test("SIGKILL the node a client is on: it reconnects to another node and recovers everything", async (t) => {
  const X = await cluster.addNode("rcv-kill-x");
  const Y = A;
  const lb = await startBalancer([X.port, Y.port]);
  const room = "project:kill1";
  const client = recoveringClient(lb.url, mintToken({ sub: "kim", projects: ["kill1"] }));
  client.socket.connect();

  await eventually(() => client.established.length === 1, { timeout: RECOVERY_WAIT_MS, what: "the first connection" });
  assert.equal(client.established[0].node_id, X.nodeId, "the balancer sends the first connection to X");
  assert.deepEqual((await emitWithAck(client.socket, "subscribe", { room })).rooms, [room]);

  // Live, across nodes: published at Y, delivered by X.
  const ids = await publishAll(Y, "kill1", labels("before-", 1, 5));
  await eventually(() => client.events("project.updated", room).length === 5, { what: "the first 5 events on X" });

  // One accepted right before the kill (not waited for at the client), four more published at
  // Y while X dies: the balancer stops forwarding (the client is kept away until the test lets
  // it back) and X is SIGKILLed as they go out.
  ids.push(await publishAccepted(Y, "kill1", "edge-1"));
  const edge = settle(publishAll(Y, "kill1", labels("edge-", 2, 5)));
  lb.hold = true;
  const exit = await X.kill("SIGKILL");
  assert.equal(exit.signal, "SIGKILL");
  ids.push(...(await unwrap(edge)));
  await eventually(() => !client.socket.connected, { what: "the client to notice X is gone" });
  const beforeKill = client.events("project.updated", room).length;

  // While the client is away.
  ids.push(...(await publishAll(Y, "kill1", labels("away-", 1, 20))));
  assert.equal(client.established.length, 1, "the client stayed away while the balancer held");

  // The balancer forwards again (X first: refused, so Y), while Y keeps publishing.
  lb.hold = false;
  const live = settle(publishAll(Y, "kill1", labels("live-", 1, 10)));
  await eventually(() => client.established.length === 2, { timeout: RECOVERY_WAIT_MS, what: "the reconnection" });
  ids.push(...(await unwrap(live)));
  await eventually(() => client.events("project.updated", room).length === ids.length, {
    timeout: RECOVERY_WAIT_MS,
    what: `all ${ids.length} events (have ${client.events("project.updated", room).length})`,
  });

  const est = client.established[1];
  assert.equal(est.node_id, Y.nodeId, `the reconnection lands on Y: ${JSON.stringify(est)}`);
  assert.notEqual(est.node_id, client.established[0].node_id);
  assert.ok(lb.routes.includes(Y.port), "the balancer fell through to Y");
  const report = assertRecovery(client, est, 2, room);
  t.diagnostic(`${beforeKill - 5} of the 5 published around the kill were received from X; recovery ${JSON.stringify(report)}`);
  assert.ok(report.replayed >= 20, `at least the 20 published while away are replayed: ${report.replayed}`);

  // Every event exactly once, in order, contiguous; nothing but what was accepted.
  const raw = client.raw("project.updated", room);
  assertNoDuplicates(raw, "SIGKILL recovery");
  const got = client.events("project.updated", room);
  assert.deepEqual(got.map((e) => e.id), ids, "every accepted event, once, in publish order");
  assert.equal(raw.length, ids.length, "no raw duplicates either");
  assertContiguous(got, "SIGKILL recovery");
  assert.deepEqual(client.cursors[room], { epoch: got[0].epoch, seq: ids.length });
});

test("graceful drain: events accepted by a node right before SIGTERM are recovered at another node", async (t) => {
  const X = await cluster.addNode("rcv-drain-x");
  const Y = B;
  const lb = await startBalancer([X.port, Y.port]);
  const room = "project:drain1";
  const client = recoveringClient(lb.url, mintToken({ sub: "dora", projects: ["drain1"] }));
  client.socket.connect();

  await eventually(() => client.established.length === 1, { timeout: RECOVERY_WAIT_MS, what: "the first connection" });
  assert.equal(client.established[0].node_id, X.nodeId, "the balancer sends the first connection to X");
  assert.deepEqual((await emitWithAck(client.socket, "subscribe", { room })).rooms, [room]);
  const accepted = await publishAll(X, "drain1", labels("first-", 1, 3));
  await eventually(() => client.events("project.updated", room).length === 3, { what: "the first 3 events" });

  // Four publishers at X, each back to back; SIGTERM X while they go on. Every 202 is in
  // Redis. A publish that failed at the network level (the node closed while it was in
  // flight) is in doubt: it may or may not have been kept.
  const WORKERS = 4;
  const outcomes = [];
  let sigtermAt = null;
  const worker = async (w) => {
    for (let i = 1; i <= 200; i++) {
      const label = `drain-${w}-${i}`;
      const afterSigterm = sigtermAt !== null;
      try {
        const res = await publish(X.url, API_KEY, updated("drain1", label));
        outcomes.push({ worker: w, label, afterSigterm, status: res.status, id: res.body?.id, text: res.text });
        if (res.status !== 202 && sigtermAt !== null) return;
        assert.equal(res.status, 202, `publish ${label} before SIGTERM: ${res.status} ${res.text}`);
      } catch (err) {
        if (err instanceof assert.AssertionError) throw err;
        outcomes.push({ worker: w, label, afterSigterm, error: err.cause?.code ?? err.message });
        if (sigtermAt !== null) return;
        throw err;
      }
    }
  };
  const traffic = settle(Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w + 1))));
  await eventually(() => outcomes.filter((o) => o.status === 202).length >= 20, { what: "20 publishes accepted at X" });
  sigtermAt = Date.now();
  const exited = X.kill("SIGTERM");
  await unwrap(traffic);
  const exit = await exited;
  t.diagnostic(`X exited ${JSON.stringify(exit)} ${Date.now() - sigtermAt} ms after SIGTERM`);

  const acceptedBy = (w) => outcomes.filter((o) => o.worker === w && o.status === 202).map((o) => o.id);
  for (const o of outcomes) if (o.status === 202) accepted.push(o.id);
  const inDoubt = outcomes.filter((o) => o.status === undefined);
  const refused = outcomes.filter((o) => o.status !== undefined && o.status !== 202);
  t.diagnostic(
    `${accepted.length - 3} accepted at X (${outcomes.filter((o) => o.status === 202 && o.afterSigterm).length} sent after SIGTERM), ` +
      `in doubt: ${JSON.stringify(inDoubt.map((o) => `${o.label}: ${o.error}`))}, refused: ${JSON.stringify(refused.map((o) => `${o.status} ${o.text}`))}`,
  );

  // The client got server.shutdown, was disconnected by the server, and reconnected (the
  // documented recipe) through the balancer, which sends it to Y now that X is gone.
  const onY = await eventually(() => client.established.find((e) => e.node_id === Y.nodeId), {
    timeout: RECOVERY_WAIT_MS,
    what: `a reconnection on Y (lifecycle so far: ${client.lifecycle.join(" -> ")})`,
  });
  const conn = client.established.indexOf(onY) + 1;
  // WEBSOCKET_API.md 2.8 says the close is a server disconnect (reason "io server
  // disconnect"); the server closes the engine.io session instead (an engine CLOSE packet, no
  // socket.io DISCONNECT), which socket.io-client reports as "transport close" and retries by
  // itself. Either way the notice comes first and the client ends up on Y.
  const [first, notice, disconnect, next] = client.lifecycle;
  t.diagnostic(`lifecycle: ${client.lifecycle.join(" -> ")}`);
  assert.deepEqual([first, notice, next], [`established@${X.nodeId}`, "server.shutdown", `established@${Y.nodeId}`]);
  assert.ok(
    ["disconnect:io server disconnect", "disconnect:transport close"].includes(disconnect),
    `server.shutdown, then the server closes the connection, then the reconnection on Y: ${client.lifecycle.join(" -> ")}`,
  );
  const report = assertRecovery(client, onY, conn, room);
  t.diagnostic(`recovery ${JSON.stringify(report)}`);

  // Live events at Y after the recovery.
  const live = await publishAll(Y, "drain1", labels("live-", 1, 3));
  await eventually(() => client.events("project.updated", room).some((e) => e.id === live.at(-1)), {
    timeout: RECOVERY_WAIT_MS,
    what: "the live events on Y",
  });

  const raw = client.raw("project.updated", room);
  assertNoDuplicates(raw, "drain recovery");
  const got = client.events("project.updated", room);
  assertContiguous(got, "drain recovery");
  assert.equal(raw.length, got.length, "no raw duplicates");
  const gotIds = got.map((e) => e.id);
  const missing = accepted.filter((id) => !gotIds.includes(id));
  assert.deepEqual(
    missing.map((id) => outcomes.find((o) => o.id === id)?.label ?? id),
    [],
    "every event X accepted (202) is received",
  );
  // Each publisher's events keep its order (each of its publishes started after the previous 202).
  for (let w = 1; w <= WORKERS; w++) {
    const mine = acceptedBy(w);
    assert.deepEqual(gotIds.filter((id) => mine.includes(id)), mine, `publisher ${w}'s events in its order`);
  }
  const extra = gotIds.filter((id) => !accepted.includes(id) && !live.includes(id));
  assert.ok(
    extra.length <= inDoubt.length,
    `only publishes in doubt may add events: ${extra.length} unknown events, ${inDoubt.length} publishes in doubt`,
  );
  assert.deepEqual(gotIds.slice(-3), live, "the live events come last");
});

test("two publishers on two nodes into one room: one seq order 1..100, the same on both nodes", async () => {
  const room = "project:duo1";
  const token = { sub: "duo", projects: ["duo1"] };
  const onA = await connectAs(A, token, { transports: ["websocket"] });
  const onB = await connectAs(B, token, { transports: ["websocket"] });
  for (const s of [onA, onB]) assert.deepEqual((await emitWithAck(s, "subscribe", { room })).rooms, [room]);

  const [fromA, fromB] = await Promise.all([
    publishAll(A, "duo1", labels("a-", 1, 50)),
    publishAll(B, "duo1", labels("b-", 1, 50)),
  ]);

  const envelopes = (s) => s.inbox.filter((e) => e.name === "project.updated" && e.payload?.room === room).map((e) => e.payload);
  for (const s of [onA, onB]) {
    await eventually(() => envelopes(s).length >= 100, { timeout: RECOVERY_WAIT_MS, what: `100 events on socket ${s.id}` });
  }
  const gotA = envelopes(onA);
  const gotB = envelopes(onB);
  for (const [name, got] of [["on A", gotA], ["on B", gotB]]) {
    assert.equal(got.length, 100, `${name}: exactly 100 events`);
    assertContiguous(got, name);
    assert.deepEqual(new Set(got.map((e) => e.id)), new Set([...fromA, ...fromB]), `${name}: exactly the accepted events`);
    // Each publisher's events keep its order (each publish started after the previous 202).
    assert.deepEqual(got.map((e) => e.id).filter((id) => fromA.includes(id)), fromA, `${name}: A's events in A's order`);
    assert.deepEqual(got.map((e) => e.id).filter((id) => fromB.includes(id)), fromB, `${name}: B's events in B's order`);
  }
  assert.deepEqual(
    gotA.map((e) => e.id),
    gotB.map((e) => e.id),
    "both nodes deliver the same order",
  );

  // The kept history agrees, at either node.
  for (const srv of [A, B]) {
    const res = await http(`${srv.url}/api/v1/rooms/${encodeURIComponent(room)}/history?tenant=default&since_seq=0&limit=1000`, {
      key: API_KEY,
    });
    assert.equal(res.status, 200, `history at ${srv.nodeId}: ${res.status} ${res.text}`);
    assert.equal(res.body.seq, 100, `history at ${srv.nodeId}: latest seq`);
    assert.deepEqual(
      res.body.events.map((e) => e.id),
      gotA.map((e) => e.id),
      `history at ${srv.nodeId} is the delivered order`,
    );
  }
});
