// Client events with the stock socket.io-client (WEBSOCKET_API.md 4.3b): chat between two
// users in project:42, numbered and recovered after a reconnect; typing indicators, volatile
// and never replayed; the sender excluded unless it asks for an echo.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  startServer,
  connectAs,
  createSocket,
  disconnectAll,
  emitWithAck,
  eventually,
  mintToken,
  waitForEvent,
  barrier,
  received,
} from "../lib/helpers.js";

let srv;

before(async () => {
  srv = await startServer({
    extraToml: '[client_events]\nrooms = ["project"]\nevents = ["chat.*", "typing.*"]',
  });
});
after(async () => {
  disconnectAll();
  await srv?.stop();
});

async function member(sub) {
  const socket = await connectAs(srv, { sub, projects: ["42"], publish: ["project:42"] });
  const ack = await emitWithAck(socket, "subscribe", { room: "project:42" });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  return socket;
}

const say = (text, extra = {}) => ({ room: "project:42", event: "chat.message", data: { text }, ...extra });

test("chat between two users: numbered, from the server, the sender left out", async () => {
  const alice = await member("alice");
  const bob = await member("bob");
  const ack = await emitWithAck(alice, "publish", say("hello bob", { data: { text: "hello bob", from: "spoof" } }));
  assert.equal(ack.ok, true, JSON.stringify(ack));
  const env = await waitForEvent(bob, "chat.message", { match: (e) => e.id === ack.id });
  assert.equal(env.seq, ack.seq);
  assert.equal(env.room, "project:42");
  assert.deepEqual(env.from, { user_id: "alice", sid: alice.id });
  assert.equal(env.data.from, "spoof");
  await barrier(srv, [alice, bob]);
  assert.deepEqual(received(alice, "chat.message"), [], "the sender does not get its own event");

  const reply = await emitWithAck(bob, "publish", say("hi alice", { echo: true }));
  assert.equal(reply.seq, ack.seq + 1);
  for (const s of [alice, bob]) {
    const got = await waitForEvent(s, "chat.message", { match: (e) => e.id === reply.id });
    assert.equal(got.from.user_id, "bob");
  }
});

test("a chat missed while disconnected is recovered with `since`, in order", async () => {
  const alice = await member("carol");
  const cursors = {};
  const established = [];
  const bob = createSocket(srv.url, {
    auth: (cb) => cb({ token: mintToken({ sub: "dan", projects: ["42"] }), since: { ...cursors } }),
  });
  bob.on("connection.established", (e) => established.push(e));
  bob.on("chat.message", (env) => {
    cursors[env.room] = { epoch: env.epoch, seq: env.seq };
  });
  bob.connect();
  await eventually(() => established.length === 1, { what: "the first connection" });
  await emitWithAck(bob, "subscribe", { room: "project:42" });
  const first = await emitWithAck(alice, "publish", say("one"));
  await eventually(() => cursors["project:42"]?.seq === first.seq, { what: "the first chat" });

  bob.io.engine.close(); // the transport dies
  await eventually(() => !bob.connected, { what: "the transport to drop" });
  const missed = [];
  for (const text of ["two", "three"]) missed.push(await emitWithAck(alice, "publish", say(text)));
  bob.connect();
  await eventually(() => established.length === 2, { what: "the reconnection" });
  assert.equal(established[1].recovery["project:42"].replayed, 2, JSON.stringify(established[1]));
  for (const ack of missed) {
    const env = await waitForEvent(bob, "chat.message", { match: (e) => e.id === ack.id });
    assert.equal(env.seq, ack.seq);
    assert.equal(env.from.user_id, "carol");
  }
  const texts = received(bob, "chat.message").map((e) => e.data.text);
  assert.deepEqual(texts, ["one", "two", "three"]);
});

test("typing indicators are volatile: delivered live, never numbered, never replayed", async () => {
  const alice = await member("erin");
  const bob = await member("frank");
  const ack = await emitWithAck(alice, "publish", {
    room: "project:42",
    event: "typing.start",
    data: {},
    volatile: true,
  });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  assert.equal(ack.seq, undefined);
  const env = await waitForEvent(bob, "typing.start", { match: (e) => e.id === ack.id });
  assert.equal(env.seq, undefined);
  assert.equal(env.from.user_id, "erin");

  const page = await emitWithAck(bob, "history", { room: "project:42" });
  assert.ok(!page.events.some((e) => e.type === "typing.start"), "not in history");
  // A reconnect from before the indicator replays the chats, never the indicator.
  const again = await connectAs(srv, { sub: "frank", projects: ["42"] }, {
    auth: { token: mintToken({ sub: "frank", projects: ["42"] }), since: { "project:42": { epoch: page.epoch, seq: 0 } } },
  });
  await barrier(srv, [again]);
  assert.deepEqual(received(again, "typing.start"), []);
});

test("the publish claim and [client_events] refuse with documented codes", async () => {
  const narrow = await connectAs(srv, { sub: "gina", projects: ["42", "43"], publish: ["project:43"] });
  await emitWithAck(narrow, "subscribe", { rooms: ["project:42", "project:43"] });
  const refused = await emitWithAck(narrow, "publish", say("no"));
  assert.equal(refused.error.code, "forbidden");
  const wrongName = await emitWithAck(narrow, "publish", { room: "project:43", event: "deploy.done", data: {} });
  assert.equal(wrongName.error.code, "event_not_allowed");
  const notIn = await connectAs(srv, { sub: "hal", projects: ["42"] });
  const notSubscribed = await emitWithAck(notIn, "publish", say("hi"));
  assert.equal(notSubscribed.error.code, "not_subscribed");
});
