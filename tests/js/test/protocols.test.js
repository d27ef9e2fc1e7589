// Older and msgpack clients (WEBSOCKET_API.md section 2.9): socket.io-client 2.x (Engine.IO
// v3, Socket.IO protocol v4) against the stock server, and socket.io-client 4 with the stock
// `socket.io-msgpack-parser` against a server with `[server] parser = "msgpack"`.

import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";

import ioV2 from "socket.io-client-v2";
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";

import {
  startServer,
  mintToken,
  publishOk,
  http,
  eventually,
  assertEnvelope,
  assertServerTime,
  DEFAULT_WAIT_MS,
  withoutPositions,
} from "../lib/helpers.js";

const progress = (n) => ({ type: "workflow.progress", data: { workflow_id: "w", project_id: "7", progress: n } });

// Every socket a test opens, closed in `after` whatever the test did.
const opened = new Set();
function track(socket) {
  opened.add(socket);
  socket.inbox = [];
  return socket;
}
function closeAll() {
  for (const s of opened) s.close();
  opened.clear();
}

/** Waits until `socket.inbox` holds an entry matching `match`; resolves with it. */
function inboxEntry(socket, match, what) {
  return eventually(() => socket.inbox.find(match), { what });
}

/** The room's history as the HTTP API returns it: the envelopes exactly as delivered. */
async function history(srv, room) {
  const res = await http(`${srv.url}/api/v1/rooms/${encodeURIComponent(room)}/history`, { key: srv.apiKey });
  assert.equal(res.status, 200, res.text);
  return res.body.events;
}

/** An ack through socket.io-client 2.x (no `timeout()` there), with a deadline. */
function emitWithAckV2(socket, event, payload) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack for "${event}" within ${DEFAULT_WAIT_MS} ms`)), DEFAULT_WAIT_MS);
    socket.emit(event, payload, (answer) => {
      clearTimeout(timer);
      resolve(answer);
    });
  });
}

describe("socket.io-client 2.x (Engine.IO v3)", () => {
  let srv;
  before(async () => {
    srv = await startServer();
  });
  after(async () => {
    closeAll();
    await srv?.stop();
  });

  /** A 2.x socket to `/` recording every event (the 2.x client has no onAny). */
  function connectV2(opts) {
    const socket = track(ioV2(srv.url, { forceNew: true, reconnection: false, ...opts }));
    const onevent = socket.onevent;
    socket.onevent = function (packet) {
      const [name, ...args] = packet.data ?? [];
      socket.inbox.push({ name, args, payload: args[0] });
      onevent.call(this, packet);
    };
    socket.on("error", (err) => socket.inbox.push({ name: "error", payload: err }));
    return socket;
  }

  for (const transport of ["websocket", "polling"]) {
    test(`over ${transport}: connects with query.token, subscribes with an ack and receives a published event`, async () => {
      const socket = connectV2({ transports: [transport], query: { token: mintToken({ sub: "alice", projects: ["7"] }) } });
      const established = await inboxEntry(socket, (e) => e.name === "connection.established", "connection.established");
      assert.equal(socket.connected, true);
      assert.equal(socket.io.engine.transport.name, transport);
      assert.equal(established.payload.user_id, "alice");
      assert.deepEqual(established.payload.rooms, ["global", "user:alice"]);
      assertServerTime(established.payload.server_time);

      const ack = await emitWithAckV2(socket, "subscribe", { room: "project:7" });
      assert.deepEqual(withoutPositions(ack), { ok: true, rooms: ["project:7"] });

      const sent = await publishOk(srv, progress(transport.length));
      const got = await inboxEntry(socket, (e) => e.name === "workflow.progress" && e.payload?.id === sent.id, "the event");
      assertEnvelope(got.payload, { type: "workflow.progress", room: "project:7", data: progress(transport.length).data, id: sent.id });
      assert.equal(got.args.length, 1, "one argument: the envelope");

      // Engine.IO v3 frames polling payloads by length: text beyond ASCII and the BMP too.
      const data = { text: "héllo wörld 🚀 日本語", n: 1.5, list: [null, true, { deep: "✓" }] };
      const custom = await http(`${srv.url}/api/v1/broadcast`, {
        method: "POST",
        key: srv.apiKey,
        body: { event: "deploy.finished", room: "project:7", data },
      });
      assert.equal(custom.status, 202, custom.text);
      const unicode = await inboxEntry(socket, (e) => e.name === "deploy.finished" && e.payload?.id === custom.body.id, "the custom event");
      assert.deepEqual(unicode.payload.data, data);
    });

    // A 2.x client's token comes with the HTTP request, so the server answers that request
    // 401 {code, message} and opens no Engine.IO session; the 2.x client cannot read the body
    // and reports a transport error through "connect_error".
    for (const [what, query, code] of [
      ["without a token", undefined, "token_missing"],
      ["with a bad token", { token: "not-a-jwt" }, "token_invalid"],
    ]) {
      test(`over ${transport}: ${what} the handshake is answered 401 and the client gets "connect_error"`, async () => {
        const socket = connectV2({ transports: [transport], query });
        socket.on("connect_error", (err) => socket.inbox.push({ name: "connect_error", payload: err }));
        socket.io.engine.on("open", () => socket.inbox.push({ name: "engine.open", payload: socket.io.engine.id }));
        const refused = await inboxEntry(socket, (e) => e.name === "connect_error", "connect_error");
        assert.equal(refused.payload.type, "TransportError");
        if (transport === "polling") {
          assert.equal(refused.payload.message, "xhr poll error");
          assert.equal(refused.payload.description, 401);
        } else {
          assert.equal(refused.payload.message, "websocket error");
          assert.match(String(refused.payload.description?.message ?? refused.payload.description), /401/);
        }
        assert.equal(socket.connected, false);
        assert.equal(
          socket.inbox.some((e) => e.name === "engine.open"),
          false,
          "no Engine.IO session was opened (no sid issued)",
        );
        assert.equal(
          socket.inbox.some((e) => e.name === "connection.established"),
          false,
          "a refused socket gets no connection.established",
        );

        // The same request, raw: the status and code the server answered with.
        const params = new URLSearchParams({ EIO: "3", transport, ...(query ?? {}) });
        const raw = await http(`${srv.url}/socket.io/?${params}`);
        assert.equal(raw.status, 401, raw.text);
        assert.equal(raw.body.code, code);
        assert.equal(raw.body.sid, undefined);
      });
    }
  }
});

describe('socket.io-msgpack-parser against [server] parser = "msgpack"', () => {
  let srv;
  before(async () => {
    srv = await startServer({ env: { ROOMCAST_SERVER__PARSER: "msgpack" } });
  });
  after(async () => {
    closeAll();
    await srv?.stop();
  });

  function connectMsgpack(auth, opts = {}) {
    const socket = track(io(srv.url, { forceNew: true, reconnection: false, parser: msgpackParser, auth, ...opts }));
    socket.onAny((name, ...args) => socket.inbox.push({ name, args, payload: args[0] }));
    socket.on("connect_error", (err) => socket.inbox.push({ name: "connect_error", payload: err }));
    return socket;
  }

  test("connects with auth.token, subscribes and receives events JSON-equal to the delivered envelopes", async () => {
    const socket = connectMsgpack({ token: mintToken({ sub: "bob", projects: ["7"] }) });
    const established = await inboxEntry(socket, (e) => e.name === "connection.established", "connection.established");
    assert.deepEqual(
      Object.keys(established.payload).sort(),
      ["node_id", "positions", "recovered", "recovery", "rooms", "server_time", "sid", "tenant", "user_id"],
    );
    assert.equal(established.payload.user_id, "bob");
    assert.equal(established.payload.sid, socket.id);
    assert.deepEqual(established.payload.recovery, {});
    assertServerTime(established.payload.server_time);

    const ack = await socket.timeout(DEFAULT_WAIT_MS).emitWithAck("subscribe", { room: "project:7" });
    assert.deepEqual(withoutPositions(ack), { ok: true, rooms: ["project:7"] });
    const failed = await socket.timeout(DEFAULT_WAIT_MS).emitWithAck("subscribe", { room: "bad room" });
    assert.equal(failed.ok, false);
    assert.equal(failed.error.code, "invalid_room");

    const sent = await publishOk(srv, progress(1));
    const got = await inboxEntry(socket, (e) => e.name === "workflow.progress" && e.payload?.id === sent.id, "the event");
    assertEnvelope(got.payload, { type: "workflow.progress", room: "project:7", data: progress(1).data, id: sent.id });
    // What a JSON client would have received: the envelope exactly as delivered.
    const stored = (await history(srv, "project:7")).find((e) => e.id === sent.id);
    assert.deepEqual(got.payload, stored);

    // The `history` command answers with the same envelopes.
    const page = await socket.timeout(DEFAULT_WAIT_MS).emitWithAck("history", { room: "project:7" });
    assert.equal(page.ok, true);
    assert.deepEqual(page.events.find((e) => e.id === sent.id), stored);
  });

  test("a reconnect with auth.since replays the missed events, JSON-equal to the delivered envelopes", async () => {
    const token = mintToken({ sub: "carol", projects: ["8"] });
    const first = connectMsgpack({ token });
    await inboxEntry(first, (e) => e.name === "connection.established", "connection.established");
    const ack = await first.timeout(DEFAULT_WAIT_MS).emitWithAck("subscribe", { room: "project:8" });
    assert.equal(ack.ok, true);
    const seen = await publishOk(srv, { type: "workflow.progress", data: { workflow_id: "w", project_id: "8", progress: 1 } });
    const cursor = (await inboxEntry(first, (e) => e.payload?.id === seen.id, "the first event")).payload;
    first.close();

    const missed = [];
    for (const n of [2, 3]) {
      missed.push(await publishOk(srv, { type: "workflow.progress", data: { workflow_id: "w", project_id: "8", progress: n } }));
    }
    const again = connectMsgpack({ token, since: { "project:8": { epoch: cursor.epoch, seq: cursor.seq } } });
    const established = await inboxEntry(again, (e) => e.name === "connection.established", "connection.established");
    assert.equal(established.payload.recovered, true, JSON.stringify(established.payload));
    assert.equal(established.payload.recovery["project:8"].replayed, 2);
    const replayed = await eventually(() => {
      const got = again.inbox.filter((e) => e.name === "workflow.progress").map((e) => e.payload);
      return got.length >= 2 && got;
    }, { what: "the replay" });
    assert.deepEqual(replayed.map((e) => e.id), missed.map((m) => m.id));
    const stored = await history(srv, "project:8");
    assert.deepEqual(replayed, stored.filter((e) => missed.some((m) => m.id === e.id)));
  });

  for (const transport of ["websocket", "polling"]) {
    test(`a JSON client over ${transport} never connects: the transport is dropped at its first packet`, async () => {
      const socket = track(io(srv.url, { forceNew: true, reconnection: false, transports: [transport], auth: { token: mintToken({ sub: "dave" }) } }));
      const seen = [];
      socket.on("connect", () => seen.push({ name: "connect" }));
      socket.on("connect_error", (err) => seen.push({ name: "connect_error", message: err.message, status: err.description }));
      socket.on("disconnect", (reason) => seen.push({ name: "disconnect", reason }));
      socket.on("connection.established", () => seen.push({ name: "connection.established" }));
      await eventually(() => seen.length > 0 && socket.io.engine?.readyState === "closed", { what: "the transport to drop" });
      assert.equal(socket.connected, false);
      if (transport === "websocket") {
        assert.deepEqual(seen, [{ name: "disconnect", reason: "transport close" }]);
      } else {
        // The session ends at the undecodable CONNECT: the POST carrying it and the pending
        // poll are both answered 400, and either answer may reach the client first.
        assert.equal(seen[0].name, "connect_error", JSON.stringify(seen));
        assert.ok(["xhr poll error", "xhr post error"].includes(seen[0].message), JSON.stringify(seen));
        assert.equal(seen[0].status, 400);
        assert.ok(!seen.some((e) => e.name === "connect" || e.name === "connection.established"), JSON.stringify(seen));
      }
    });
  }
});
