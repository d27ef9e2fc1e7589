// The plain JSON WebSocket protocol, `GET /ws/json` (WEBSOCKET_API.md section 17), with the
// `ws` package: what a client without a Socket.IO library sees.
//
// - Refusals are HTTP answers instead of the 101 (`ws` emits 'unexpected-response'): 401
//   token_missing / token_invalid / token_expired, 422 for an unreadable `since` or a request
//   that is no upgrade, 429 too_many_connections (counted with sockets) and rate_limited.
// - The first frame is `connection.established`; commands are `{id?, type, data?}` and are
//   answered `{type: "ack", id, data}` (the id as sent, any JSON) or, without an id, only on
//   failure, as an `error` notice.
// - Events are the envelope a socket receives, only where the connection is subscribed, the
//   same (id, seq) as a socket.io-client socket in the room gets; `?since=` replays what was
//   missed before anything live (also while the room is busy, and at another cluster node),
//   or reports a gap. Client events cross between /ws/json and Socket.IO both ways.
// - Limits: the event budget (rate_limited, then rate_limit_exceeded and close 4029),
//   unknown commands, unreadable frames (the connection stays usable), 1009 for a message
//   over limits.ws_max_message_bytes, too_many_rooms, a slow reader (4008); keep-alive,
//   presence and locks, revocation (4003), token expiry (4001) and a draining server (1012).
//
// Every wait has a deadline; every "not delivered" is proven with a barrier event.

import { test, before, after, afterEach, describe } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { isDeepStrictEqual } from "node:util";

import WebSocket from "ws";

import { startCluster } from "../lib/cluster.js";
import {
  startServer,
  mintToken,
  connect,
  connectAs,
  connectError,
  disconnectAll,
  emitWithAck,
  waitForEvent,
  publish,
  publishOk,
  broadcast,
  http,
  assertEnvelope,
  assertServerTime,
  withoutPositions,
  eventually,
  DEFAULT_WAIT_MS,
} from "../lib/helpers.js";

// Counts global and user:<sub>: three rooms left to subscribe.
const MAX_ROOMS = 5;
let srv;

before(async () => {
  srv = await startServer({
    maxRoomsPerSocket: MAX_ROOMS,
    extraToml: '[client_events]\nrooms = ["project"]\nevents = ["chat.*"]',
  });
});
after(async () => {
  closeAll();
  disconnectAll();
  await srv?.stop();
});
afterEach(() => {
  closeAll();
  disconnectAll();
});

// ---------------------------------------------------------------------------------------------
// A /ws/json client that records every frame

const open = new Set();

function closeAll() {
  for (const c of open) c.ws.terminate();
  open.clear();
}

/** ws://…/ws/json with `query` (a non-string value is sent as JSON, as `since` is). */
function wsUrl(server, query = {}) {
  const url = new URL("/ws/json", server.url.replace(/^http/, "ws"));
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, typeof v === "string" ? v : JSON.stringify(v));
  return url.toString();
}

class JsonClient {
  constructor(ws) {
    this.ws = ws;
    /** Every frame received, parsed ({unreadable: text} when not JSON), in order. */
    this.inbox = [];
    this.waiters = new Set();
    this.closed = new Promise((resolve) => {
      ws.once("close", (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        for (const wake of [...this.waiters]) wake();
      });
    });
    // Attached before the upgrade completes: the first frame follows the 101 at once.
    ws.on("message", (data) => {
      let msg;
      try {
        msg = JSON.parse(data.toString());
      } catch {
        msg = { unreadable: data.toString() };
      }
      this.inbox.push({ msg, consumed: false });
      for (const wake of [...this.waiters]) wake();
    });
    open.add(this);
  }

  send(frame) {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** The first frame not taken yet that `match`es, waiting up to `timeout` ms; it is taken. */
  next(match, { timeout = DEFAULT_WAIT_MS, what = "a frame" } = {}) {
    return new Promise((resolve, reject) => {
      const take = () => {
        const entry = this.inbox.find((e) => !e.consumed && match(e.msg));
        if (!entry) return false;
        entry.consumed = true;
        cleanup();
        resolve(entry.msg);
        return true;
      };
      const timer = setTimeout(() => {
        cleanup();
        const seen = JSON.stringify(this.inbox.map((e) => e.msg)).slice(0, 2000);
        reject(new Error(`timed out after ${timeout} ms waiting for ${what}; received: ${seen}; close: ${JSON.stringify(this.closeInfo)}`));
      }, timeout);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters.delete(take);
      };
      this.waiters.add(take);
      take();
    });
  }

  /** The answer to the command with this id: `{type: "ack", id, data}`. */
  ack(id, opts) {
    return this.next((m) => m.type === "ack" && isDeepStrictEqual(m.id, id), { what: `the ack of id ${JSON.stringify(id)}`, ...opts });
  }

  /** Sends `{id, type, data}` and resolves with the ack's `data`. */
  async command(type, data, id = randomUUID()) {
    const frame = { id, type };
    if (data !== undefined) frame.data = data;
    this.send(frame);
    const ack = await this.ack(id);
    assert.deepEqual(Object.keys(ack).sort(), ["data", "id", "type"], `ack frame ${JSON.stringify(ack)}`);
    return ack.data;
  }

  /** Subscribes (a precondition, not the behaviour under test) and returns the ack. */
  async subscribe(...rooms) {
    const ack = await this.command("subscribe", { rooms });
    assert.equal(ack.ok, true, `subscribe ${rooms} -> ${JSON.stringify(ack)}`);
    return ack;
  }

  /** Envelopes received so far (frames with a room), consumed or not. */
  envelopes(match = () => true) {
    return this.inbox.map((e) => e.msg).filter((m) => typeof m.room === "string" && "timestamp" in m && match(m));
  }

  /** The envelope with this event id. */
  envelope(id, opts) {
    return this.next((m) => m.id === id && typeof m.room === "string", { what: `the event ${id}`, ...opts });
  }

  established() {
    return this.next((m) => m.type === "connection.established", { what: "connection.established" }).then((m) => m.data);
  }
}

/**
 * Opens /ws/json and resolves once the server answered 101, or rejects with the refusal
 * (err.status, err.body). `query` and `headers` go into the upgrade request.
 */
function openJson(server, { query = {}, headers = {}, ...wsOptions } = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(server, query), { headers, ...wsOptions });
    const client = new JsonClient(ws);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`the /ws/json upgrade did not complete within ${DEFAULT_WAIT_MS} ms`));
    }, DEFAULT_WAIT_MS);
    ws.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    ws.once("open", () => {
      clearTimeout(timer);
      resolve(client);
    });
    ws.once("unexpected-response", (req, res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => (text += chunk));
      res.on("end", () => {
        clearTimeout(timer);
        let body;
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
        const err = new Error(`/ws/json refused: ${res.statusCode} ${text}`);
        Object.assign(err, { status: res.statusCode, headers: res.headers, text, body });
        open.delete(client);
        req.destroy();
        reject(err);
      });
    });
  });
}

/** Opens /ws/json with a fresh token for `claims` in `?token=`. */
function jsonAs(claims, { server = srv, query = {}, ...opts } = {}) {
  return openJson(server, { query: { token: mintToken(claims), ...query }, ...opts });
}

/** Expects the upgrade to be refused; resolves with {status, headers, text, body}. */
async function refused(server, opts) {
  try {
    await openJson(server, opts);
  } catch (err) {
    if (err.status !== undefined) return err;
    throw err;
  }
  throw new assert.AssertionError({ message: "expected the /ws/json upgrade to be refused, but it was accepted" });
}

function assertRefusal(res, status, code) {
  assert.equal(res.status, status, `status of ${res.text}`);
  assert.equal(res.body?.error?.code, code, `error code in ${res.text}`);
  assert.equal(typeof res.body.error.message, "string");
  assert.ok(res.body.error.message.length > 0, "the refusal says why");
}

/**
 * A barrier: a system.notification to `global` of `tenant` (every connection of that tenant
 * is in it), waited for on every client. A connection receives its events in one ordered
 * stream, so anything published to it before has arrived by then.
 */
async function barrier(clients, { tenant, server = srv } = {}) {
  const nonce = `barrier-${randomUUID()}`;
  const body = { type: "system.notification", data: { title: "barrier", message: nonce } };
  if (tenant !== undefined) body.tenant = tenant;
  const res = await publish(server.url, server.apiKey, body);
  assert.equal(res.status, 202, res.text);
  await Promise.all(clients.map((c) => c.next((m) => m.data?.message === nonce, { what: "the barrier" })));
}

function projectUpdated(projectId, status, tenant) {
  const body = { type: "project.updated", data: { project_id: projectId, status } };
  if (tenant) body.tenant = tenant;
  return publishOk(srv, body);
}

// ---------------------------------------------------------------------------------------------

describe("the handshake", () => {
  test("no token: 401 token_missing, before any upgrade", async () => {
    assertRefusal(await refused(srv), 401, "token_missing");
  });

  test("a token signed with another secret: 401 token_invalid", async () => {
    const token = mintToken({ sub: "mallory" }, { secret: "not-the-server-secret-0123456789" });
    assertRefusal(await refused(srv, { query: { token } }), 401, "token_invalid");
    assertRefusal(await refused(srv, { headers: { authorization: `Bearer ${token}` } }), 401, "token_invalid");
  });

  test("an expired token: 401 token_expired", async () => {
    const token = mintToken({ sub: "late", exp: Math.floor(Date.now() / 1000) - 60 });
    assertRefusal(await refused(srv, { query: { token } }), 401, "token_expired");
  });

  test("the token in Authorization: Bearer or in ?token=; the header wins", async () => {
    const byHeader = await openJson(srv, { headers: { authorization: `Bearer ${mintToken({ sub: "hdr" })}` } });
    assert.equal((await byHeader.established()).user_id, "hdr");
    const byQuery = await openJson(srv, { query: { token: mintToken({ sub: "qry" }) } });
    assert.equal((await byQuery.established()).user_id, "qry");
    const both = await openJson(srv, {
      headers: { authorization: `Bearer ${mintToken({ sub: "winner" })}` },
      query: { token: mintToken({ sub: "loser" }) },
    });
    assert.equal((await both.established()).user_id, "winner");
    // The header wins: a query token that would be refused is not even read.
    const garbage = await openJson(srv, {
      headers: { authorization: `Bearer ${mintToken({ sub: "header-only" })}` },
      query: { token: "not-a-jwt" },
    });
    assert.equal((await garbage.established()).user_id, "header-only");
  });

  test("an unreadable `since`: 422 invalid_payload (field since)", async () => {
    const token = mintToken({ sub: "since-bad", projects: ["42"] });
    for (const since of ["not json", "[1,2]", '"project:42"']) {
      const res = await refused(srv, { query: { token, since } });
      assertRefusal(res, 422, "invalid_payload");
      assert.equal(res.body.error.field, "since", res.text);
    }
  });

  test("a plain GET without the WebSocket upgrade headers: 422 invalid_payload (field upgrade)", async () => {
    const res = await http(`${srv.url}/ws/json?token=${mintToken({ sub: "plain" })}`);
    assertRefusal(res, 422, "invalid_payload");
    assert.equal(res.body.error.field, "upgrade", res.text);
  });

  test("the first frame is connection.established, as a socket's", async () => {
    const c = await jsonAs({ sub: "est", tenant: "acme", projects: ["42"] });
    const first = await c.next(() => true, { what: "the first frame" });
    assert.equal(first.type, "connection.established", JSON.stringify(first));
    assert.deepEqual(Object.keys(first).sort(), ["data", "type"]);
    const e = first.data;
    assert.equal(typeof e.sid, "string");
    assert.ok(e.sid.length > 0);
    assert.equal(e.user_id, "est");
    assert.equal(e.tenant, "acme");
    assert.deepEqual(e.rooms, ["global", "user:est"]);
    assertServerTime(e.server_time);
    assert.equal(e.node_id, srv.nodeId);
    assert.equal(e.recovered, false);
    assert.deepEqual(e.recovery, {});
    assert.deepEqual(Object.keys(e.positions).sort(), ["global", "user:est"]);
    for (const p of Object.values(e.positions)) {
      assert.equal(typeof p.epoch, "string");
      assert.ok(Number.isInteger(p.seq) && p.seq >= 0);
    }
    // The tenant defaults to "default"; each connection has its own sid.
    const other = await jsonAs({ sub: "est" });
    const e2 = await other.established();
    assert.equal(e2.tenant, "default");
    assert.notEqual(e2.sid, e.sid);
  });
});

describe("commands and acks", () => {
  test("subscribe with an id is answered by an ack with that id and the socket's answer", async () => {
    const c = await jsonAs({ sub: "sub1", projects: ["42"] });
    await c.established();
    c.send({ id: 1, type: "subscribe", data: { room: "project:42" } });
    const ack = await c.ack(1);
    assert.deepEqual(Object.keys(ack).sort(), ["data", "id", "type"]);
    assert.equal(ack.type, "ack");
    assert.equal(ack.id, 1);
    assert.deepEqual(withoutPositions(ack.data), { ok: true, rooms: ["project:42"] });
  });

  test("refusals come in the ack: forbidden, invalid_room, invalid_payload, too_many_rooms", async () => {
    const c = await jsonAs({ sub: "sub2", projects: ["42", "1", "2", "3"] });
    await c.established();
    const forbidden = await c.command("subscribe", { room: "project:43" });
    assert.equal(forbidden.ok, false);
    assert.equal(forbidden.error.code, "forbidden", JSON.stringify(forbidden));
    assert.equal(forbidden.error.room, "project:43");
    assert.equal(typeof forbidden.error.message, "string");

    const invalid = await c.command("subscribe", { room: "team:1" });
    assert.equal(invalid.error.code, "invalid_room", JSON.stringify(invalid));
    assert.equal(invalid.error.room, "team:1");

    const shape = await c.command("subscribe", { room: "project:42", rooms: ["project:42"] });
    assert.equal(shape.error.code, "invalid_payload", JSON.stringify(shape));

    // global + user:sub2 + 3 = MAX_ROOMS: the fourth is one too many, and none is joined.
    const tooMany = await c.command("subscribe", { rooms: ["project:42", "project:1", "project:2", "project:3"] });
    assert.equal(tooMany.ok, false);
    assert.equal(tooMany.error.code, "too_many_rooms", JSON.stringify(tooMany));
    assert.equal(tooMany.error.room, "project:3");
    const pub = await projectUpdated("42", "not-joined");
    await barrier([c]);
    assert.deepEqual(c.envelopes((m) => m.id === pub.id), [], "all or nothing: project:42 was not joined");
  });

  test("an id of any JSON kind is echoed back as sent", async () => {
    const c = await jsonAs({ sub: "ids", projects: ["42"] });
    await c.established();
    for (const id of ["req-7", { n: [1, "x"], deep: { a: null } }, [3, "b"], 0, -12.5]) {
      c.send({ id, type: "ping" });
      const ack = await c.ack(id);
      assert.deepEqual(ack.id, id);
      assert.equal(ack.data.pong, true, JSON.stringify(ack));
    }
  });

  test("ping is answered {pong, server_time}", async () => {
    const c = await jsonAs({ sub: "pinger" });
    await c.established();
    const pong = await c.command("ping", {});
    assert.equal(pong.pong, true, JSON.stringify(pong));
    assertServerTime(pong.server_time);
    const bare = await c.command("ping"); // no data at all
    assert.equal(bare.pong, true);
  });

  test("without an id: a success is silent, a failure is an error notice", async () => {
    const c = await jsonAs({ sub: "noid", projects: ["42"] });
    await c.established();
    c.send({ type: "subscribe", data: { room: "project:42" } });
    c.send({ type: "subscribe", data: { room: "project:43" } });
    const notice = await c.next((m) => m.type === "error", { what: "the error notice" });
    assert.deepEqual(Object.keys(notice).sort(), ["data", "type"], JSON.stringify(notice));
    assert.equal(notice.data.code, "forbidden");
    assert.equal(notice.data.room, "project:43");
    assert.equal(typeof notice.data.message, "string");
    // The silent subscribe took effect: the room's event arrives.
    const pub = await projectUpdated("42", "silent");
    await c.envelope(pub.id);
    await barrier([c]);
    assert.deepEqual(
      c.inbox.map((e) => e.msg.type).filter((t) => t === "ack" || t === "error"),
      ["error"],
      "one notice for the failure, nothing for the success",
    );
  });

  test("an unknown command: unknown_command, in the ack or as a notice", async () => {
    const c = await jsonAs({ sub: "unk" });
    await c.established();
    const ack = await c.command("frobnicate", { x: 1 }, 5);
    assert.equal(ack.ok, false);
    assert.equal(ack.error.code, "unknown_command", JSON.stringify(ack));
    c.send({ type: "frobnicate" });
    const notice = await c.next((m) => m.type === "error");
    assert.equal(notice.data.code, "unknown_command", JSON.stringify(notice));
  });

  test("unreadable frames: invalid_payload, and the connection stays usable", async () => {
    const c = await jsonAs({ sub: "garbage" });
    await c.established();
    for (const frame of ["{not json", "[1,2]", '"a string"', '{"data": {}}', '{"type": 7}']) {
      c.send(frame);
      const notice = await c.next((m) => m.type === "error", { what: `the notice for ${frame}` });
      assert.equal(notice.data.code, "invalid_payload", `${frame} -> ${JSON.stringify(notice)}`);
    }
    // An id that could be read: the answer is an ack with it.
    for (const [id, frame] of [[9, '{"id": 9, "type": 7}'], ["no-type", '{"id": "no-type"}']]) {
      c.send(frame);
      const ack = await c.ack(id);
      assert.equal(ack.data.ok, false);
      assert.equal(ack.data.error.code, "invalid_payload", `${frame} -> ${JSON.stringify(ack)}`);
    }
    // A known command without its payload.
    const noData = await c.command("subscribe", undefined, "no-data");
    assert.equal(noData.error?.code, "invalid_payload", JSON.stringify(noData));
    // A binary frame likewise.
    c.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    const binary = await c.next((m) => m.type === "error", { what: "the notice for a binary frame" });
    assert.equal(binary.data.code, "invalid_payload", JSON.stringify(binary));
    // Still open and answering.
    const pong = await c.command("ping", null, "after");
    assert.equal(pong.pong, true);
    assert.equal(c.closeInfo, undefined, "still open");
  });

  test("a message over limits.ws_max_message_bytes closes the connection with 1009", async () => {
    const c = await jsonAs({ sub: "big" });
    await c.established();
    c.send({ id: 1, type: "ping", data: { pad: "x".repeat(70_000) } }); // default limit 65536
    const closed = await withDeadline(c.closed, "the close");
    assert.deepEqual(closed, { code: 1009, reason: "message_too_big" });
  });
});

describe("events", () => {
  test("an HTTP publish arrives as the envelope, only where subscribed, only in its tenant", async () => {
    const member = await jsonAs({ sub: "m1", projects: ["42"] });
    const bystander = await jsonAs({ sub: "m2", projects: ["42"] }); // may, but did not subscribe
    const foreign = await jsonAs({ sub: "m1", tenant: "globex", projects: ["42"] });
    for (const c of [member, bystander, foreign]) await c.established();
    await member.subscribe("project:42");
    await foreign.subscribe("project:42");

    const pub = await projectUpdated("42", "active");
    const env = await member.envelope(pub.id);
    assertEnvelope(env, { type: "project.updated", room: "project:42", data: { project_id: "42", status: "active" }, id: pub.id });
    assert.ok(Number.isInteger(env.seq), "numbered");

    // A custom event over /api/v1/broadcast too.
    const res = await broadcast(srv.url, srv.apiKey, { event: "deploy.finished", room: "project:42", data: { version: "1.4.2" } });
    assert.equal(res.status, 202, res.text);
    const custom = await member.envelope(res.body.id);
    assertEnvelope(custom, { type: "deploy.finished", room: "project:42", data: { version: "1.4.2" }, id: res.body.id });
    assert.equal(custom.seq, env.seq + 1, "the room's next seq");

    await barrier([member, bystander]);
    await barrier([foreign], { tenant: "globex" });
    const ids = [pub.id, res.body.id];
    assert.deepEqual(bystander.envelopes((m) => ids.includes(m.id)), [], "not subscribed");
    assert.deepEqual(foreign.envelopes((m) => ids.includes(m.id)), [], "another tenant's project:42");
  });

  test("a /ws/json connection and a socket.io-client socket in one room get the same event", async () => {
    const c = await jsonAs({ sub: "both1", projects: ["42"] });
    await c.established();
    await c.subscribe("project:42");
    const socket = await connectAs(srv, { sub: "both2", projects: ["42"] });
    assert.equal((await emitWithAck(socket, "subscribe", { room: "project:42" })).ok, true);

    const pub = await projectUpdated("42", "shared");
    const [viaJson, viaSocket] = await Promise.all([c.envelope(pub.id), waitForEvent(socket, "project.updated", { match: (e) => e.id === pub.id })]);
    assert.deepEqual(viaJson, viaSocket, "the same envelope, byte for byte once parsed");
    assert.equal(viaJson.seq, viaSocket.seq);
  });

  test("events of a room arrive in seq order", async () => {
    const c = await jsonAs({ sub: "order", projects: ["55"] });
    await c.established();
    await c.subscribe("project:55");
    const ids = [];
    for (let n = 0; n < 20; n++) ids.push((await projectUpdated("55", `s${n}`)).id);
    await c.envelope(ids.at(-1));
    const got = c.envelopes((m) => m.type === "project.updated" && m.room === "project:55"); // not presence.joined
    assert.deepEqual(got.map((m) => m.id), ids);
    for (let i = 1; i < got.length; i++) assert.equal(got[i].seq, got[i - 1].seq + 1);
  });

  test("unsubscribe stops the room's events", async () => {
    const c = await jsonAs({ sub: "leaver", projects: ["42"] });
    await c.established();
    await c.subscribe("project:42");
    const left = await c.command("unsubscribe", { room: "project:42" });
    assert.deepEqual(left, { ok: true, rooms: ["project:42"] });
    const pub = await projectUpdated("42", "after-leave");
    await barrier([c]);
    assert.deepEqual(c.envelopes((m) => m.id === pub.id), []);
  });
});

describe("recovery with ?since=", () => {
  test("the missed events come in order, after connection.established and before anything live", async () => {
    const first = await jsonAs({ sub: "rec", projects: ["77"] });
    await first.established();
    await first.subscribe("project:77");
    const published = [];
    for (const n of [1, 2, 3]) published.push(await projectUpdated("77", `r${n}`));
    const envs = [];
    for (const p of published) envs.push(await first.envelope(p.id));
    first.ws.close();
    await first.closed;

    const cursor = { epoch: envs[0].epoch, seq: envs[0].seq };
    const again = await jsonAs({ sub: "rec", projects: ["77"] }, { query: { since: { "project:77": cursor } } });
    const est = await again.next(() => true, { what: "the first frame" });
    assert.equal(est.type, "connection.established", JSON.stringify(est));
    assert.equal(est.data.recovered, true, JSON.stringify(est.data));
    assert.equal(est.data.recovery["project:77"].replayed, 2, JSON.stringify(est.data.recovery));
    assert.ok(est.data.rooms.includes("project:77"), "re-joined");
    const live = await projectUpdated("77", "r4");
    await again.envelope(live.id);
    const got = again.envelopes((m) => m.type === "project.updated" && m.room === "project:77");
    assert.deepEqual(
      got.map((m) => m.data.status),
      ["r2", "r3", "r4"],
      "the backlog once, in order, then live",
    );
    assert.deepEqual(got.slice(0, 2), envs.slice(1), "the replayed envelopes are the ones published");
    assert.equal(got[2].seq, envs[2].seq + 1);
  });

  test("`global` and the user room recover too: their cursors from connection.established", async () => {
    const tenant = "quiet-ws";
    const claims = { sub: "carrie", tenant };
    const first = await jsonAs(claims);
    const { positions } = await first.established();
    first.ws.close();
    await first.closed;
    const missed = [];
    for (const n of [1, 2]) {
      const body = { type: "system.notification", data: { title: "t", message: `m${n}` }, tenant };
      missed.push((await publishOk(srv, body)).id);
    }
    const dm = await broadcast(srv.url, srv.apiKey, { event: "note.direct", room: "user:carrie", data: {}, tenant });
    assert.equal(dm.status, 202, dm.text);

    const again = await jsonAs(claims, { query: { since: positions } });
    const e = await again.established();
    assert.equal(e.recovered, true, JSON.stringify(e));
    assert.equal(e.recovery.global.replayed, 2, JSON.stringify(e.recovery));
    assert.equal(e.recovery["user:carrie"].replayed, 1, JSON.stringify(e.recovery));
    assert.deepEqual(e.rooms.slice().sort(), ["global", "user:carrie"], "joined once each");
    const live = await publishOk(srv, { type: "system.notification", data: { title: "t", message: "live" }, tenant });
    await again.envelope(live.id);
    await again.envelope(dm.body.id);
    const globals = again.envelopes((m) => m.room === "global").map((m) => m.id);
    assert.deepEqual(globals, [...missed, live.id], "each once, the missed ones first");
  });

  test("history answers a subscriber, as for a socket", async () => {
    const c = await jsonAs({ sub: "historian", projects: ["80"] });
    await c.established();
    await c.subscribe("project:80");
    const ids = [];
    for (const n of [1, 2, 3]) ids.push((await projectUpdated("80", `h${n}`)).id);
    await c.envelope(ids.at(-1));
    const page = await c.command("history", { room: "project:80" });
    assert.equal(page.ok, true, JSON.stringify(page));
    assert.deepEqual(page.events.filter((e) => e.type === "project.updated").map((e) => e.id), ids);
  });

  test("reconnecting while the room is busy: every event once, in seq order, no hole", async () => {
    const claims = { sub: "busy", projects: ["81"] };
    const first = await jsonAs(claims);
    await first.established();
    const cursor = (await first.subscribe("project:81")).positions["project:81"];
    first.ws.close();
    await first.closed;
    // A publisher keeps going while the client comes back: some events are backlog, some
    // are live while the backlog is read, some are live after.
    const ids = [];
    const publisher = (async () => {
      for (let n = 0; n < 60; n++) ids.push((await projectUpdated("81", `b${n}`)).id);
    })();
    await eventually(() => ids.length >= 10, { what: "a backlog" });
    const again = await jsonAs(claims, { query: { since: { "project:81": cursor } } });
    const e = await again.established();
    assert.equal(e.recovered, true, JSON.stringify(e));
    await publisher;
    await again.envelope(ids.at(-1), { timeout: 10_000 });
    const got = again.envelopes((m) => m.type === "project.updated" && m.room === "project:81");
    assert.deepEqual(got.map((m) => m.id), ids, "every event once, in publish order");
    assert.deepEqual(got.map((m) => m.seq), ids.map((_, i) => cursor.seq + 1 + i), "contiguous seqs");
  });

  test("a room whose epoch the server does not know: gap, nothing replayed", async () => {
    const c = await jsonAs({ sub: "gappy", projects: ["78"] }, { query: { since: { "project:78": { epoch: "0000000000000000", seq: 3 } } } });
    const e = await c.established();
    assert.equal(e.recovered, false);
    assert.equal(e.recovery["project:78"].gap, true, JSON.stringify(e.recovery));
    assert.ok(e.rooms.includes("project:78"), "the room is joined all the same");
    const pub = await projectUpdated("78", "after-gap");
    const env = await c.envelope(pub.id);
    assert.equal(env.seq, e.recovery["project:78"].seq + 1, "live from where the report says the room is");
  });

  test("a room of `since` the token does not grant is not joined", async () => {
    const c = await jsonAs({ sub: "nosy", projects: ["42"] }, { query: { since: { "project:79": { epoch: "0000000000000000", seq: 0 } } } });
    const e = await c.established();
    assert.equal(e.recovery["project:79"].error, "forbidden", JSON.stringify(e.recovery));
    assert.ok(!e.rooms.includes("project:79"));
    assert.equal(e.recovered, false);
  });
});

describe("client events", () => {
  test("a /ws/json publish reaches a socket.io-client socket, and back", async () => {
    const c = await jsonAs({ sub: "jchat", projects: ["42"], publish: ["project:42"] });
    const info = await c.established();
    await c.subscribe("project:42");
    const socket = await connectAs(srv, { sub: "schat", projects: ["42"] });
    assert.equal((await emitWithAck(socket, "subscribe", { room: "project:42" })).ok, true);

    const ack = await c.command("publish", { room: "project:42", event: "chat.message", data: { text: "from json" } });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    assert.ok(Number.isInteger(ack.seq));
    const got = await waitForEvent(socket, "chat.message", { match: (e) => e.id === ack.id });
    assert.equal(got.seq, ack.seq);
    assert.deepEqual(got.from, { user_id: "jchat", sid: info.sid });
    assert.deepEqual(got.data, { text: "from json" });

    const reply = await emitWithAck(socket, "publish", { room: "project:42", event: "chat.message", data: { text: "from socket" } });
    assert.equal(reply.ok, true, JSON.stringify(reply));
    const env = await c.envelope(reply.id);
    assert.equal(env.type, "chat.message");
    assert.equal(env.seq, ack.seq + 1);
    assert.deepEqual(env.from, { user_id: "schat", sid: socket.id });

    // The sender is left out of its own event, as a socket is.
    await barrier([c]);
    assert.deepEqual(c.envelopes((m) => m.id === ack.id), []);
  });

  test("a publish the server does not allow is refused with the documented code", async () => {
    const c = await jsonAs({ sub: "jchat2", projects: ["42"] });
    await c.established();
    const notSubscribed = await c.command("publish", { room: "project:42", event: "chat.message", data: {} });
    assert.equal(notSubscribed.error.code, "not_subscribed", JSON.stringify(notSubscribed));
    await c.subscribe("project:42");
    const wrongName = await c.command("publish", { room: "project:42", event: "deploy.done", data: {} });
    assert.equal(wrongName.error.code, "event_not_allowed", JSON.stringify(wrongName));
  });
});

describe("presence, revocation, expiry", () => {
  test("a /ws/json connection is in presence like a socket", async () => {
    const c = await jsonAs({ sub: "present", projects: ["60"] });
    await c.established();
    await c.subscribe("project:60");
    const p = await c.command("presence", { room: "project:60" });
    assert.equal(p.ok, true, JSON.stringify(p));
    assert.deepEqual(p.users, [{ user_id: "present", connections: 1 }]);
  });

  test("POST /api/v1/users/{id}/disconnect closes the connection with 4003", async () => {
    const c = await jsonAs({ sub: "revoked" });
    await c.established();
    const res = await http(`${srv.url}/api/v1/users/revoked/disconnect`, { method: "POST", key: srv.apiKey });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.disconnected, 1, res.text);
    const closed = await withDeadline(c.closed, "the close");
    assert.deepEqual(closed, { code: 4003, reason: "disconnected" });
  });

  test("token expiry: auth.expiring, auth.expired, then close 4001", async () => {
    // exp in 2 s, well inside expiry_warning_secs (60): the warning comes at once.
    const c = await jsonAs({ sub: "expiring", exp: Math.floor(Date.now() / 1000) + 2 });
    await c.established();
    const warning = await c.next((m) => m.type === "auth.expiring", { what: "auth.expiring" });
    assert.equal(typeof warning.data.expires_at, "string");
    const expired = await c.next((m) => m.type === "auth.expired", { timeout: 10_000, what: "auth.expired" });
    assert.equal(expired.data.code, "token_expired");
    const closed = await withDeadline(c.closed, "the close");
    assert.deepEqual(closed, { code: 4001, reason: "token_expired" });
  });

  test("the locks a connection holds are released when it closes", async () => {
    const holder = await jsonAs({ sub: "locker", projects: ["61"] });
    await holder.established();
    const watcher = await jsonAs({ sub: "watcher", projects: ["61"] });
    await watcher.established();
    await watcher.subscribe("project:61");
    const lock = await holder.command("lock.acquire", { resource: "project:61/deploy", ttl_ms: 60_000 });
    assert.equal(lock.ok, true, JSON.stringify(lock));
    holder.ws.close();
    const released = await watcher.next((m) => m.type === "lock.released", { what: "lock.released" });
    assert.equal(released.data.resource, "project:61/deploy");
    assert.equal(released.data.token, lock.token);
    assert.equal(released.data.reason, "disconnected", JSON.stringify(released));
  });

  test("auth.refresh moves the expiry", async () => {
    const c = await jsonAs({ sub: "refresher", exp: Math.floor(Date.now() / 1000) + 3 });
    await c.established();
    const ack = await c.command("auth.refresh", { token: mintToken({ sub: "refresher" }) });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    assert.ok(Date.parse(ack.expires_at) > Date.now() + 3_000_000, ack.expires_at);
  });
});

describe("handshake and connection limits", () => {
  let tight;
  before(async () => {
    tight = await startServer({
      limits: { max_connections_per_user: 1, handshakes_per_user_per_sec: 1, handshakes_per_user_burst: 3 },
    });
  });
  after(async () => {
    closeAll();
    disconnectAll();
    await tight?.stop();
  });

  test("a /ws/json connection counts like a socket: 429 too_many_connections, freed at close", async () => {
    const claims = { sub: "solo" };
    const c = await jsonAs(claims, { server: tight });
    await c.established();
    const second = await refused(tight, { query: { token: mintToken(claims) } });
    assertRefusal(second, 429, "too_many_connections");
    assert.equal(await connectError(tight.url, { auth: { token: mintToken(claims) } }), "too_many_connections");
    c.ws.close();
    await c.closed;
    const again = await eventually(() => jsonAs(claims, { server: tight }), { what: "the slot to be freed" });
    await again.established();
  });

  test("over the user's handshake budget: 429 rate_limited with Retry-After", async () => {
    // One connection held (max_connections_per_user 1): each further handshake verifies its
    // token, spends from the user's budget (burst 3) and is refused too_many_connections,
    // until the budget is spent.
    const claims = { sub: "eager" };
    const held = await jsonAs(claims, { server: tight });
    await held.established();
    const codes = [];
    let res;
    while (codes.length < 10) {
      res = await refused(tight, { query: { token: mintToken(claims) } });
      codes.push(res.body?.error?.code);
      if (res.body?.error?.code !== "too_many_connections") break;
    }
    assert.equal(codes.at(-1), "rate_limited", `codes: ${codes}`);
    assertRefusal(res, 429, "rate_limited");
    assert.ok(Number(res.headers["retry-after"]) >= 1, `Retry-After: ${res.headers["retry-after"]}`);
    assert.ok(res.body.error.retry_after_ms > 0, res.text);
  });
});

describe("in a cluster", () => {
  let cluster;
  before(async () => {
    cluster = await startCluster(["wj-a", "wj-b"], {
      label: "wsjson",
      nodeOptions: { extraToml: '[client_events]\nrooms = ["project"]\nevents = ["chat.*"]' },
    });
  });
  after(async () => {
    closeAll();
    disconnectAll();
    await cluster?.stop();
  });

  test("an event published at one node reaches a /ws/json connection at the other, and recovers there", async () => {
    const [a, b] = cluster.list;
    const claims = { sub: "roamer", projects: ["90"] };
    const atA = await jsonAs(claims, { server: a });
    await atA.established();
    const ack = await atA.subscribe("project:90");
    const viaB = await publish(b.url, b.apiKey, { type: "project.updated", data: { project_id: "90", status: "c1" } });
    assert.equal(viaB.status, 202, viaB.text);
    const env = await atA.envelope(viaB.body.id);
    assert.equal(env.seq, ack.positions["project:90"].seq + 1);
    atA.ws.close();
    await atA.closed;

    const missed = await publish(a.url, a.apiKey, { type: "project.updated", data: { project_id: "90", status: "c2" } });
    const atB = await jsonAs(claims, { server: b, query: { since: { "project:90": { epoch: env.epoch, seq: env.seq } } } });
    const e = await atB.established();
    assert.equal(e.recovered, true, JSON.stringify(e));
    const got = await atB.envelope(missed.body.id);
    assert.equal(got.seq, env.seq + 1);
    // A publish from the /ws/json connection at B reaches a socket.io-client socket at A.
    const socket = await connect(a.url, { auth: { token: mintToken({ sub: "listener", projects: ["90"] }) } });
    assert.equal((await emitWithAck(socket, "subscribe", { room: "project:90" })).ok, true);
    const said = await atB.command("publish", { room: "project:90", event: "chat.message", data: { text: "from b" } });
    assert.equal(said.ok, true, JSON.stringify(said));
    const heard = await waitForEvent(socket, "chat.message", { match: (m) => m.id === said.id });
    assert.equal(heard.seq, said.seq);
    assert.deepEqual(heard.from, { user_id: "roamer", sid: e.sid });
    // Revoked at A, closed at B.
    const revoked = await http(`${a.url}/api/v1/users/roamer/disconnect`, { method: "POST", key: a.apiKey });
    assert.equal(revoked.status, 200, revoked.text);
    assert.deepEqual(await withDeadline(atB.closed, "the close"), { code: 4003, reason: "disconnected" });
  });
});

describe("the event budget", () => {
  let limited;
  before(async () => {
    limited = await startServer({
      limits: {
        events_per_sec: 1,
        events_burst: 3,
        event_abuse_refusals: 5,
        event_abuse_window_secs: 10,
        socket_buffer_packets: 8,
      },
    });
  });
  after(async () => {
    closeAll();
    await limited?.stop();
  });

  test("over the burst: rate_limited with retry_after_ms, the command not carried out", async () => {
    const c = await jsonAs({ sub: "fast" }, { server: limited });
    await c.established();
    const ids = [1, 2, 3, 4, 5];
    for (const id of ids) c.send({ id, type: "ping" });
    const acks = [];
    for (const id of ids) acks.push((await c.ack(id)).data);
    const ok = acks.filter((a) => a.pong === true);
    const limitedAcks = acks.filter((a) => a.ok === false);
    assert.equal(ok.length, 3, JSON.stringify(acks));
    assert.equal(limitedAcks.length, 2, JSON.stringify(acks));
    for (const a of limitedAcks) {
      assert.equal(a.error.code, "rate_limited");
      assert.ok(Number.isInteger(a.error.retry_after_ms) && a.error.retry_after_ms > 0, JSON.stringify(a));
    }
    // Without an id the refusal is a notice.
    c.send({ type: "ping" });
    const notice = await c.next((m) => m.type === "error");
    assert.equal(notice.data.code, "rate_limited", JSON.stringify(notice));
  });

  test("unreadable frames spend the budget too", async () => {
    const c = await jsonAs({ sub: "junk" }, { server: limited });
    await c.established();
    for (let i = 0; i < 3; i++) c.send("{junk");
    c.send({ id: "after-junk", type: "ping" });
    const ack = await c.ack("after-junk");
    assert.equal(ack.data.error?.code, "rate_limited", JSON.stringify(ack));
  });

  test("a client that reads too slowly is closed with 4008 after what was queued", async () => {
    const c = await jsonAs({ sub: "sleepy" }, { server: limited });
    await c.established();
    c.ws.pause(); // stops reading: the kernel's buffers fill, then the server's queue
    const pad = "x".repeat(50_000);
    // 20 MB at most (the kernel's buffers hold a few), stopping once /metrics shows the
    // connection gone.
    let sent = 0;
    while (sent < 400) {
      for (let i = 0; i < 20; i++) {
        const res = await broadcast(limited.url, limited.apiKey, { event: "bulk.data", room: "user:sleepy", data: { n: sent++, pad } });
        assert.equal(res.status, 202, res.text);
      }
      const metrics = await http(`${limited.url}/metrics`, { key: limited.apiKey });
      if (/^roomcast_ws_json_connections 0$/m.test(metrics.text)) break;
    }
    c.ws.resume();
    const closed = await withDeadline(c.closed, "the close", 15_000);
    assert.deepEqual(closed, { code: 4008, reason: "buffer_full" });
    // Everything it read came in order, with no hole before the close.
    const ns = c.envelopes((m) => m.type === "bulk.data").map((m) => m.data.n);
    assert.ok(ns.length > 0 && ns.length < sent, `${ns.length} of ${sent} read`);
    assert.deepEqual(ns, ns.map((_, i) => i), "a prefix of what was published");
  });

  test("persistent abuse: error rate_limit_exceeded, then close 4029", async () => {
    const c = await jsonAs({ sub: "abuser" }, { server: limited });
    await c.established();
    for (let i = 0; i < 20; i++) c.send({ type: "ping" });
    const notice = await c.next((m) => m.type === "error" && m.data?.code === "rate_limit_exceeded", {
      what: "rate_limit_exceeded",
    });
    assert.equal(typeof notice.data.message, "string");
    const closed = await withDeadline(c.closed, "the close", 10_000);
    assert.deepEqual(closed, { code: 4029, reason: "rate_limit_exceeded" });
  });
});

describe("keep-alive and drain", () => {
  let quick;
  before(async () => {
    // Pings every 300 ms; a connection silent for 1.8 s is dropped (slack for a busy machine).
    quick = await startServer({ env: { ROOMCAST_SERVER__PING_INTERVAL_MS: "300", ROOMCAST_SERVER__PING_TIMEOUT_MS: "1500" } });
  });
  after(async () => {
    closeAll();
    await quick?.stop();
  });

  test("the server pings; a client that answers stays, one that does not is dropped", async () => {
    const alive = await jsonAs({ sub: "pong-yes" }, { server: quick });
    const mute = await jsonAs({ sub: "pong-no" }, { server: quick, autoPong: false });
    let pings = 0;
    alive.ws.on("ping", () => pings++);
    await Promise.all([alive.established(), mute.established()]);
    await withDeadline(mute.closed, "the silent client's close", 5_000);
    await eventually(() => pings >= 4, { what: "four server pings" });
    assert.equal(alive.closeInfo, undefined, "the answering client is still connected");
    // The server answers a client's ping.
    const pong = new Promise((resolve) => alive.ws.once("pong", (data) => resolve(data.toString())));
    alive.ws.ping("hello");
    assert.equal(await withDeadline(pong, "the pong"), "hello");
  });

  test("a draining server sends server.shutdown, then closes with 1012", async () => {
    const c = await jsonAs({ sub: "drained" }, { server: quick });
    await c.established();
    const stopping = quick.stop();
    const notice = await c.next((m) => m.type === "server.shutdown", { what: "server.shutdown" });
    assert.ok(Number.isInteger(notice.data.reconnect_after_ms), JSON.stringify(notice));
    const closed = await withDeadline(c.closed, "the close", 10_000);
    assert.deepEqual(closed, { code: 1012, reason: "server_shutdown" });
    await stopping;
    quick = undefined;
  });
});

function withDeadline(promise, what, ms = DEFAULT_WAIT_MS) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}
