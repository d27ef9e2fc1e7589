// client.stream(): the exact text of an AI stream produced over HTTP, for a client that
// follows from the start, one that opens mid-stream and one whose transport drops; cancel.
// On one node, and on a two-node cluster (produced at one node, followed at the other).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { createClient, RoomcastError } from "../dist/index.js";
import { STREAM_TEXT, eventually, startCluster, startServer, streamPieces, waitForState } from "./server.js";

// `producer`: where the stream is produced over HTTP; `srv`: where the clients connect.
let srv, producer;
const clients = [];

const topologies = {
  "one node": async () => {
    const node = await startServer();
    return { producerNode: node, viewerNode: node, stop: () => node.stop() };
  },
  "a two-node cluster": async () => {
    const cluster = await startCluster();
    return { producerNode: cluster.a, viewerNode: cluster.b, stop: () => cluster.stop() };
  },
};

for (const [name, start] of Object.entries(topologies)) {
  describe(`client.stream on ${name}`, () => {
    let setup;
    before(async () => {
      setup = await start();
      srv = setup.viewerNode;
      producer = setup.producerNode;
    });
    after(async () => {
      for (const c of clients.splice(0)) c.close();
      await setup?.stop();
    });

    function newClient(sub) {
      const client = createClient({
        url: srv.url,
        token: srv.mintToken({ sub, projects: "*" }),
        reconnectionDelay: 50,
        reconnectionDelayMax: 200,
      });
      clients.push(client);
      return client;
    }

    async function create(room, body = {}) {
      const res = await producer.streams.create({ room, ...body });
      assert.equal(res.status, 201, res.text);
      return res.body.stream_id;
    }

    async function appendAll(id, pieces) {
      for (const piece of pieces) {
        const res = await producer.streams.append(id, piece);
        assert.equal(res.status, 202, res.text);
      }
    }

    /** Resolves with the stream's end status, or fails after `timeout` ms with what it holds. */
    async function done(stream, timeout = 10_000) {
      let timer;
      const late = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`stream ${stream.id} not done: ${stream.status}, ${stream.length} code points`)), timeout);
      });
      try {
        return await Promise.race([stream.done, late]);
      } finally {
        clearTimeout(timer);
      }
    }

    test("viewers from the start, mid-stream and across a dropped transport all get the exact text", async () => {
      const text = STREAM_TEXT.repeat(3);
      const pieces = streamPieces(text);
      const third = Math.floor(pieces.length / 3);
      const id = await create("project:42", { kind: "llm" });

      // Its reconnect handshake waits for `gate` (getToken), so the rest is appended while it is away.
      let gate = Promise.resolve();
      const early = createClient({
        url: srv.url,
        getToken: async () => {
          await gate;
          return srv.mintToken({ sub: "early", projects: "*" });
        },
        reconnectionDelay: 50,
        reconnectionDelayMax: 200,
      });
      clients.push(early);
      await waitForState(early, "connected");
      const fromStart = early.stream(id, { room: "project:42" });
      const statuses = [];
      fromStart.on("status", (s) => statuses.push(s));
      let rebuilt = "";
      const offsets = [];
      fromStart.on("text", ({ offset, appended, text: whole }) => {
        offsets.push([offset, Array.from(rebuilt).length]);
        rebuilt += appended;
        if (whole !== rebuilt) offsets.push(["whole text differs", whole]);
      });
      await eventually(() => fromStart.room === "project:42", { what: "the first resume" });

      await appendAll(id, pieces.slice(0, third));
      // Opens the page mid-stream: a new client, which resumes from 0.
      const late = newClient("late");
      const midStream = late.stream(id, { room: "project:42" });
      await eventually(() => midStream.text === pieces.slice(0, third).join(""), { what: "the mid-stream viewer to catch up" });

      await appendAll(id, pieces.slice(third, 2 * third));
      await eventually(() => fromStart.text === pieces.slice(0, 2 * third).join(""), { what: "the deltas" });
      // The transport drops; the rest is appended while the client is away, and no delta follows
      // its return: only its own resume on reconnect can bring the rest.
      let open;
      gate = new Promise((resolve) => (open = resolve));
      early.socket.io.engine.close();
      await eventually(() => early.state !== "connected", { what: "the drop" });
      await appendAll(id, pieces.slice(2 * third));
      open();
      await waitForState(early, "connected");
      await eventually(() => fromStart.text === text, { what: "the resume after the reconnect" });
      assert.equal(fromStart.status, "open");
      const fin = await producer.streams.finish(id, { usage: { completion_tokens: pieces.length } });
      assert.equal(fin.status, 200, fin.text);
      assert.equal(fin.body.length, Array.from(text).length);

      assert.equal(await done(fromStart), "finished");
      assert.equal(await done(midStream), "finished");
      assert.equal(fromStart.text, text);
      assert.equal(rebuilt, text);
      assert.equal(midStream.text, text);
      assert.equal(fromStart.length, Array.from(text).length);
      assert.deepEqual(statuses, ["finished"]);
      // Every piece started where the text ended.
      assert.deepEqual(offsets.filter(([a, b]) => a !== b), []);
      assert.equal(fromStart.kind, "llm");
      fromStart.close();
      midStream.close();
    });

    test("cancel reaches the HTTP producer, and the viewer stays connected", async () => {
      const id = await create("project:7", { requested_by: "carol" });
      const client = newClient("carol");
      await waitForState(client, "connected");
      const stream = client.stream(id, { room: "project:7" });
      await appendAll(id, ["partial ", "👩‍💻 "]);
      await eventually(() => stream.text === "partial 👩‍💻 ", { what: "the text" });

      const ack = await stream.cancel("enough");
      assert.equal(ack.length, Array.from("partial 👩‍💻 ").length);
      assert.equal(await done(stream), "cancelled");
      const refused = await producer.streams.append(id, "more");
      assert.equal(refused.status, 409, refused.text);
      assert.equal(refused.body.error.code, "stream_cancelled");
      await eventually(() => stream.cancelledBy === "carol", { what: "stream.cancelled" });
      assert.equal(stream.cancelReason, "enough");
      assert.equal(stream.text, "partial 👩‍💻 ");

      // Still connected: the same socket answers, and cancelling again is refused with a code.
      assert.equal(client.state, "connected");
      assert.equal((await client.ping()).pong, true);
      await assert.rejects(stream.cancel(), (err) => err instanceof RoomcastError && err.code === "stream_cancelled");
      stream.close();
    });

    test("a stream of a room the socket is not in reports not_subscribed; an unknown one stream_not_found", async () => {
      const id = await create("project:9");
      const client = newClient("dave");
      await waitForState(client, "connected");
      const notIn = client.stream(id);
      const err = await new Promise((resolve) => notIn.on("error", resolve));
      assert.equal(err.code, "not_subscribed");
      notIn.close();

      const unknown = client.stream("no-such-stream", { room: "project:9" });
      const err2 = await new Promise((resolve) => unknown.on("error", resolve));
      assert.equal(err2.code, "stream_not_found");
      unknown.close();
    });
  });
}
