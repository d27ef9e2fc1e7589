// Tasks with progress and ETA (WEBSOCKET_API.md 5.15c, 5.15d) seen by socket.io-client: a
// backend reports a task of 100 units in 10 steady steps over HTTP, and every socket of the
// project room receives task.progress with `percent` exact, `rate_per_sec` within the rate
// this test observed, and `eta_ms` = what is left at that rate, coming down to 0; then
// task.completed with its `duration_ms`. On one node, and on a two-node cluster where the task
// starts at one node and its progress alternates between the two.
//
// The expected rate comes from the instants this test observed: the server timed each event
// between the moment its request was sent and the moment the answer came, so the bounds hold
// however slow the machine is.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";

import {
  startServer,
  connectAs,
  disconnectAll,
  waitForEnvelope,
  emitWithAck,
  publish,
  delay,
  withoutPositions,
} from "../lib/helpers.js";
import { startCluster } from "../lib/cluster.js";

const PROJECT = "42";
const ROOM = `project:${PROJECT}`;
const TOTAL = 100;
const STEPS = 10;
/** The publisher's pace between two progress events. */
const PACE_MS = 100;
/** The rate's half-life (src/tasks/mod.rs): the oldest sample here weighs at least 2^(-elapsed/half-life). */
const HALF_LIFE_MS = 10_000;

async function viewer(srv, sub) {
  const socket = await connectAs(srv, { sub, projects: [PROJECT] });
  assert.deepEqual(withoutPositions(await emitWithAck(socket, "subscribe", { rooms: [ROOM] })), {
    ok: true,
    rooms: [ROOM],
  });
  return socket;
}

/** Publishes at `srv` (asserts 202): the event's id, and when the request was sent and answered. */
async function published(srv, type, data) {
  const sent = performance.now();
  const res = await publish(srv.url, srv.apiKey, { type, data });
  const answered = performance.now();
  assert.equal(res.status, 202, `${type}: ${res.status} ${res.text}`);
  return { id: res.body.id, sent, answered };
}

/** The envelope `id` of type `type` at every socket: the same `data` everywhere; returns it. */
async function receivedByAll(sockets, type, id) {
  const envelopes = await Promise.all(sockets.map((s) => waitForEnvelope(s, type, id)));
  for (const env of envelopes) {
    assert.equal(env.room, ROOM);
    assert.deepEqual(env.data, envelopes[0].data, "every viewer gets the same data");
  }
  return envelopes[0].data;
}

/**
 * Bounds of the rate the server may have computed at `current`: the time between its two
 * instants is at least `progress.sent - start.answered` and at most `progress.answered -
 * start.sent` (± 1 ms of its clock each), the samples' weights differ by at most
 * 2^(-elapsed/half-life), the rate has 4 significant digits, and 2 % covers the server's wall
 * clock against performance.now().
 */
function rateBounds(start, progress, current) {
  const shortest = progress.sent - start.answered - 2;
  const longest = progress.answered - start.sent + 2;
  assert.ok(shortest > 0, "the pace keeps events apart");
  const weight = 2 ** (-longest / HALF_LIFE_MS);
  return {
    low: ((weight * current) / longest) * 1000 * 0.98,
    high: ((current / shortest) * 1000 * 1.02) / weight,
  };
}

/** Start at nodes[0], progress i at nodes[i % n], completion at the node after the last. */
async function steadyTask(nodes, sockets, taskId) {
  const at = (i) => nodes[i % nodes.length];
  const start = await published(at(0), "task.started", { task_id: taskId, project_id: 42, name: "index", total: TOTAL });
  assert.deepEqual(await receivedByAll(sockets, "task.started", start.id), {
    task_id: taskId,
    project_id: PROJECT,
    name: "index",
    total: TOTAL,
  });

  const etas = [];
  for (let i = 1; i <= STEPS; i++) {
    await delay(PACE_MS);
    const current = (i * TOTAL) / STEPS;
    // No total: the server fills in the one task.started gave (possibly at the other node).
    const sent = await published(at(i), "task.progress", { task_id: taskId, project_id: 42, current, step: `step ${i}` });
    const data = await receivedByAll(sockets, "task.progress", sent.id);
    const what = `progress ${i}: ${JSON.stringify(data)}`;
    assert.equal(data.current, current, what);
    assert.equal(data.total, TOTAL, what);
    assert.equal(data.step, `step ${i}`, what);
    assert.equal(data.percent, (current * 100) / TOTAL, what);
    assert.equal(typeof data.rate_per_sec, "number", what);
    const { low, high } = rateBounds(start, sent, current);
    assert.ok(
      data.rate_per_sec >= low && data.rate_per_sec <= high,
      `${what}: rate ${data.rate_per_sec} not within the observed ${low.toFixed(1)}..${high.toFixed(1)}`,
    );
    assert.ok(Number.isInteger(data.eta_ms), what);
    const left = TOTAL - current;
    assert.ok(Math.abs(data.eta_ms - (left / data.rate_per_sec) * 1000) <= 1, `${what}: eta is what is left at the rate`);
    assert.ok(
      data.eta_ms >= (left / high) * 1000 - 1 && data.eta_ms <= (left / low) * 1000 + 1,
      `${what}: eta not within the observed bounds`,
    );
    etas.push(data.eta_ms);
  }
  assert.equal(etas.at(-1), 0, "done: nothing left");
  assert.ok(etas.at(-2) < etas[0], `the ETA comes down: ${etas}`);

  const end = await published(at(STEPS + 1), "task.completed", { task_id: taskId, project_id: 42, result: { files: 100 } });
  const done = await receivedByAll(sockets, "task.completed", end.id);
  assert.deepEqual(done.result, { files: 100 });
  const shortest = end.sent - start.answered - 2;
  const longest = end.answered - start.sent + 2;
  assert.ok(
    done.duration_ms >= shortest * 0.98 && done.duration_ms <= longest * 1.02,
    `duration ${done.duration_ms} not within ${shortest}..${longest}`,
  );
}

afterEach(() => disconnectAll());

describe("one node", () => {
  let srv;
  before(async () => {
    srv = await startServer({ nodeId: "e2e-tasks" });
  });
  after(async () => {
    disconnectAll();
    await srv?.stop();
  });

  test("steady progress: percent exact, rate as observed, ETA what is left at that rate", async () => {
    const sockets = [await viewer(srv, "ann"), await viewer(srv, "ben")];
    await steadyTask([srv], sockets, "js-one");
  });

  test("the server's fields are refused from a publisher, naming the field", async () => {
    for (const [type, data, field] of [
      ["task.progress", { task_id: "x", project_id: 42, current: 1, percent: 50 }, "percent"],
      ["task.progress", { task_id: "x", project_id: 42, current: 1, rate_per_sec: 2 }, "rate_per_sec"],
      ["task.progress", { task_id: "x", project_id: 42, current: 1, eta_ms: 3 }, "eta_ms"],
      ["task.completed", { task_id: "x", project_id: 42, duration_ms: 4 }, "duration_ms"],
    ]) {
      const res = await publish(srv.url, srv.apiKey, { type, data });
      assert.equal(res.status, 422, `${type} ${JSON.stringify(data)}: ${res.text}`);
      assert.equal(res.body.error.code, "invalid_payload");
      assert.equal(res.body.error.field, field);
    }
  });
});

describe("two-node cluster", () => {
  let cluster;
  before(async () => {
    cluster = await startCluster(["tasks-a", "tasks-b"], { label: "tasks" });
  });
  after(async () => {
    disconnectAll();
    await cluster?.stop();
  });

  test("progress alternating between the nodes is computed from one history", async () => {
    const [a, b] = cluster.list;
    const sockets = [await viewer(a, "ann"), await viewer(b, "ben")];
    await steadyTask([a, b], sockets, "js-cluster");
  });
});
