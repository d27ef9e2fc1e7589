// AI streams with the stock socket.io-client (WEBSOCKET_API.md section 13), on one node and on
// a two-node cluster with a real redis-server (the producer appends at one node, the viewers
// watch at the other).
//
// The producer is a backend over HTTP appending an emoji-heavy text piece by piece. Viewers
// follow the stream by the docs' client rule (offsets in code points, `Array.from`; drop the
// overlap; a gap → `stream.resume`): one that opens mid-stream (a page reload: a new socket
// resuming from 0) and one whose transport is closed mid-stream (it reconnects, joins the room
// again and resumes from what it has). Both must end with the exact text. A viewer's cancel
// reaches the producer as `409 stream_cancelled`, and the viewer stays connected.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { API_KEY, connectAs, disconnectAll, emitWithAck, eventually, startServer } from "../lib/helpers.js";
import { startCluster } from "../lib/cluster.js";
import { STREAM_TEXT, streamPieces, streamProducer } from "../../harness/js/index.mjs";

const DEADLINE_MS = 15_000;
const ENDS = { "stream.finished": "finished", "stream.failed": "failed", "stream.cancelled": "cancelled" };

/**
 * Follows `streamId` on `socket` by the client rule. The resume's ack is taken as a callback
 * (socket.io-client runs it as the packet is read), so no delta that follows it runs first.
 */
function follow(socket, room, streamId) {
  const v = { chars: [], status: "open", end: null, resuming: false, generation: 0, resumes: 0, deltas: 0, errors: [] };
  v.text = () => v.chars.join("");
  const apply = (offset, text) => {
    if (offset > v.chars.length) return false; // a gap
    v.chars.push(...Array.from(text).slice(v.chars.length - offset));
    if (v.end && v.chars.length >= v.end.length) v.status = v.end.status;
    return true;
  };
  const resume = () => {
    const generation = ++v.generation;
    v.resuming = true;
    v.resumes += 1;
    socket.timeout(5_000).emit("stream.resume", { stream_id: streamId, offset: v.chars.length }, (err, ack) => {
      if (generation !== v.generation) return; // sent before a reconnect
      v.resuming = false;
      if (err || !ack.ok) {
        v.errors.push(err?.message ?? ack.error);
        return;
      }
      apply(ack.offset, ack.text);
      if (ack.status !== "open") ended(ack.status, ack.length);
    });
  };
  const ended = (status, length) => {
    v.end ??= { status, length };
    apply(length, "");
    // The last deltas are late (in a cluster they travel apart from the end event) or lost.
    if (v.status === "open" && !v.resuming) resume();
  };
  socket.on("stream.delta", ({ data }) => {
    if (data.stream_id !== streamId) return;
    v.deltas += 1;
    if (!apply(data.offset, data.text) && !v.resuming) resume();
  });
  for (const [event, status] of Object.entries(ENDS)) {
    socket.on(event, ({ data }) => {
      if (data.stream_id === streamId) ended(status, data.length);
    });
  }
  socket.on("disconnect", () => {
    v.generation += 1; // an answer in flight will not come
    v.resuming = false;
  });
  // (Re)join the room on every connection, then catch up from what we have.
  const join = () =>
    socket.timeout(5_000).emit("subscribe", { rooms: [room] }, (err, ack) => {
      if (err || !ack.ok) v.errors.push(err?.message ?? ack.error);
      else resume();
    });
  socket.on("connect", join);
  if (socket.connected) join();
  return v;
}

async function appendAll(producer, id, pieces) {
  for (const piece of pieces) {
    const res = await producer.append(id, piece);
    assert.equal(res.status, 202, res.text);
  }
}

async function created(producer, body) {
  const res = await producer.create(body);
  assert.equal(res.status, 201, res.text);
  return res.body.stream_id;
}

const topologies = {
  "one node": async () => {
    const srv = await startServer();
    return { producerNode: srv, viewerNode: srv, stop: () => srv.stop() };
  },
  "a two-node cluster (produced at one node, viewed at the other)": async () => {
    const cluster = await startCluster(["streams-a", "streams-b"], { label: "streams" });
    return { producerNode: cluster.nodes["streams-a"], viewerNode: cluster.nodes["streams-b"], stop: () => cluster.stop() };
  },
};

for (const [name, start] of Object.entries(topologies)) {
  describe(`AI streams on ${name}`, () => {
    let setup, producer;
    let n = 0;
    const pid = () => `s${process.pid}-${++n}`;
    before(async () => {
      setup = await start();
      producer = streamProducer(setup.producerNode.url, API_KEY);
    });
    after(async () => {
      disconnectAll();
      await setup?.stop();
    });

    test("a viewer that reloads mid-stream and one whose transport drops end with the exact text", async () => {
      const project = pid();
      const room = `project:${project}`;
      const text = STREAM_TEXT.repeat(3);
      const pieces = streamPieces(text);
      const third = Math.floor(pieces.length / 3);
      const id = await created(producer, { room });
      const viewerOpts = { reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 200, transports: ["websocket"] };

      const socket = await connectAs(setup.viewerNode, { sub: `drop-${project}`, projects: [project] }, viewerOpts);
      const dropping = follow(socket, room, id);
      await eventually(() => dropping.resumes === 1 && !dropping.resuming, { what: "the first resume" });
      await appendAll(producer, id, pieces.slice(0, third));
      await eventually(() => dropping.text() === pieces.slice(0, third).join(""), { timeout: DEADLINE_MS, what: "the first deltas" });
      assert.ok(dropping.deltas > 0, "the viewer followed live deltas");

      // A page reloaded mid-stream: a new socket that resumes from 0.
      const again = await connectAs(setup.viewerNode, { sub: `reload-${project}`, projects: [project] }, viewerOpts);
      const reloaded = follow(again, room, id);
      await eventually(() => reloaded.text() === pieces.slice(0, third).join(""), { timeout: DEADLINE_MS, what: "the catch-up" });

      // The transport is closed under the socket (held from reconnecting until the rest is
      // appended: no delta follows its return, only its resume from what it has can bring it).
      const have = dropping.chars.length;
      socket.io.reconnection(false);
      socket.io.engine.close();
      await eventually(() => !socket.connected, { what: "the drop" });
      await appendAll(producer, id, pieces.slice(third));
      socket.io.reconnection(true);
      socket.connect();
      await eventually(() => dropping.text() === text, { timeout: DEADLINE_MS, what: "the resume after the reconnect" });
      assert.equal(dropping.status, "open");
      assert.ok(dropping.resumes >= 2 && have > 0, "it resumed from what it had");
      const fin = await producer.finish(id, { usage: { completion_tokens: pieces.length } });
      assert.equal(fin.status, 200, fin.text);
      assert.equal(fin.body.length, Array.from(text).length);

      for (const v of [dropping, reloaded]) {
        await eventually(() => v.status === "finished", {
          timeout: DEADLINE_MS,
          what: `the end (have ${v.chars.length} of ${Array.from(text).length} code points)`,
        });
        assert.equal(v.text(), text);
        assert.deepEqual(v.errors, []);
      }
      assert.ok(dropping.resumes >= 2, "the dropped viewer resumed after reconnecting");
      assert.ok(socket.connected);
    });

    test("a viewer's cancel reaches the HTTP producer (409 stream_cancelled), and the viewer stays connected", async () => {
      const project = pid();
      const room = `project:${project}`;
      const sub = `cancel-${project}`;
      const id = await created(producer, { room, requested_by: sub });
      const socket = await connectAs(setup.viewerNode, { sub, projects: [project] }, { transports: ["websocket"] });
      const viewer = follow(socket, room, id);
      await eventually(() => viewer.resumes === 1 && !viewer.resuming, { what: "the first resume" });
      await appendAll(producer, id, ["partial ", "👩‍💻 "]);
      await eventually(() => viewer.text() === "partial 👩‍💻 ", { timeout: DEADLINE_MS, what: "the text" });

      const disconnects = [];
      socket.on("disconnect", (reason) => disconnects.push(reason));
      const ack = await emitWithAck(socket, "stream.cancel", { stream_id: id, reason: "enough" });
      assert.deepEqual(ack, { ok: true, stream_id: id, length: Array.from("partial 👩‍💻 ").length });
      const refused = await producer.append(id, "more");
      assert.equal(refused.status, 409, refused.text);
      assert.equal(refused.body.error.code, "stream_cancelled");
      await eventually(() => viewer.status === "cancelled", { timeout: DEADLINE_MS, what: "stream.cancelled" });
      assert.equal(viewer.text(), "partial 👩‍💻 ");

      // Not a disconnect: the same socket still answers commands.
      const pong = await emitWithAck(socket, "ping", {});
      assert.equal(pong.pong, true);
      assert.ok(socket.connected);
      assert.deepEqual(disconnects, []);
    });
  });
}
