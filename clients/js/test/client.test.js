import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { createClient, RoomcastError } from "../dist/index.js";
import { delay, eventually, nextEvent, startServer, waitForState } from "./server.js";

let srv;
const clients = [];
function track(client) {
  clients.push(client);
  return client;
}

before(async () => {
  srv = await startServer();
});
after(async () => {
  for (const c of clients) c.close();
  await srv?.stop();
});

describe("basic use", () => {
  test("connects, subscribes and receives a typed event published over HTTP", async () => {
    const states = [];
    const client = track(createClient({ url: srv.url, token: srv.mintToken({ sub: "alice", projects: ["42"] }) }));
    client.onStateChange((s) => states.push(s));
    assert.equal(client.state, "connecting");
    await waitForState(client, "connected");
    assert.equal(client.socket.io.engine.transport.name, "websocket");

    assert.deepEqual(await client.subscribe("project:42"), ["project:42"]);
    assert.deepEqual(client.rooms, ["project:42"]);

    const got = nextEvent(client, "workflow.progress");
    const published = await srv.publish("workflow.progress", {
      workflow_id: 9001,
      project_id: 42,
      progress: 40,
      step: "build",
    });
    const env = await got;
    assert.equal(env.id, published.id);
    assert.equal(env.type, "workflow.progress");
    assert.equal(env.room, "project:42");
    assert.deepEqual(env.data, { workflow_id: "9001", project_id: "42", progress: 40, step: "build" });
    assert.equal(env.seq, 1);
    assert.deepEqual(client.cursor("project:42"), { epoch: env.epoch, seq: 1 });

    assert.deepEqual(await client.unsubscribe("project:42"), ["project:42"]);
    assert.deepEqual(client.rooms, []);
    assert.equal(client.cursor("project:42"), undefined);

    client.close();
    assert.equal(client.state, "disconnected");
    assert.deepEqual(states, ["connected", "disconnected"]);
  });

  test("rooms given to createClient are subscribed once connected", async () => {
    const client = track(
      createClient({ url: srv.url, token: srv.mintToken({ sub: "bob", projects: "*" }), rooms: ["project:7"] }),
    );
    await waitForState(client, "connected");
    const got = nextEvent(client, "pr.created");
    // The subscribe runs after connection.established: publish until the room has the socket.
    await eventually(async () => (await client.presence("project:7").catch(() => null))?.connections === 1, {
      what: "the subscribe",
    });
    await srv.publish("pr.created", { project_id: 7, number: 17, title: "Add dark mode" });
    const env = await got;
    assert.equal(env.data.title, "Add dark mode");
    assert.equal(env.data.number, 17);
  });

  test("subscribe to a forbidden room rejects with code forbidden", async () => {
    const client = track(createClient({ url: srv.url, token: srv.mintToken({ sub: "carol", projects: ["1"] }) }));
    await waitForState(client, "connected");
    await assert.rejects(client.subscribe(["project:1", "project:2"]), (err) => {
      assert.ok(err instanceof RoomcastError);
      assert.equal(err.code, "forbidden");
      assert.equal(err.room, "project:2");
      return true;
    });
    await assert.rejects(client.subscribe("team:1"), { name: "RoomcastError", code: "invalid_room" });
    assert.deepEqual(client.rooms, []);
  });

  test("a refused handshake reports the server's code and the state disconnected", async () => {
    const client = track(createClient({ url: srv.url, token: "not-a-jwt" }));
    const err = await nextEvent(client, "error");
    assert.equal(err.code, "token_invalid");
    await waitForState(client, "disconnected");
  });
});

describe("recovery", () => {
  test("events published while the transport was down arrive exactly once after reconnect", async () => {
    const client = track(
      createClient({
        url: srv.url,
        token: srv.mintToken({ sub: "dave", projects: "*", agents: "*" }),
        reconnectionDelay: 100,
        reconnectionDelayMax: 200,
      }),
    );
    await waitForState(client, "connected");
    await client.subscribe(["project:100", "agent:a1"]);

    const seen = [];
    client.on("*", (env) => {
      if (!env.type.startsWith("presence.")) seen.push(env); // presence notices have no seq
    });
    const states = [];
    client.onStateChange((s) => states.push(s));

    // In both rooms, so that each has a cursor before the transport goes down.
    const first = await srv.publish("agent.status_changed", { agent_id: "a1", status: "idle", project_id: 100 });
    await eventually(() => seen.some((e) => e.id === first.id), { what: "the first event" });

    const established = nextEvent(client, "established", { timeout: 10_000 });
    client.socket.io.engine.close(); // kill the transport; socket.io-client reconnects by itself
    await waitForState(client, "reconnecting");
    const away = [];
    for (let i = 2; i <= 5; i++) {
      away.push((await srv.publish("issue.updated", { project_id: 100, number: i, title: `n${i}` })).id);
    }
    // An event in both rooms (agent:a1 and project:100): still once.
    away.push((await srv.publish("agent.status_changed", { agent_id: "a1", status: "busy", project_id: 100 })).id);

    const info = await established;
    assert.equal(info.recovered, true);
    assert.equal(info.recovery["project:100"].replayed, 5);
    assert.equal(info.recovery["agent:a1"].replayed, 1);
    assert.ok(info.rooms.includes("project:100"));

    const live = await srv.publish("issue.closed", { project_id: 100, number: 9, title: "live" });
    await eventually(() => seen.some((e) => e.id === live.id), { what: "the live event" });

    const ids = seen.map((e) => e.id);
    assert.deepEqual(ids, [first.id, ...away, live.id]);
    assert.equal(new Set(ids).size, ids.length, "no duplicates");
    assert.deepEqual(
      seen.filter((e) => e.room === "project:100").map((e) => e.seq),
      [2, 3, 4, 5, 7],
    );
    assert.deepEqual(states.slice(0, 1), ["reconnecting"]);
    assert.equal(states.at(-1), "connected");
    assert.deepEqual(
      seen.filter((e) => e.room === "agent:a1").map((e) => [e.seq, e.also[0].seq]),
      [[1, 1], [2, 6]],
    );
    assert.equal(client.cursor("project:100").seq, 7);
    assert.equal(client.cursor("agent:a1").seq, 2);
  });

  test("duplicates (same room, seq <= cursor) are dropped", async () => {
    const client = track(createClient({ url: srv.url, token: srv.mintToken({ sub: "erin", projects: "*" }) }));
    await waitForState(client, "connected");
    await client.subscribe("project:200");
    const seen = [];
    client.on("project.updated", (env) => seen.push(env.seq));
    const a = await srv.publish("project.updated", { project_id: 200, status: "a" });
    await eventually(() => seen.length === 1, { what: "the event" });
    // A second delivery of the same envelope (as after an overlapping replay) is ignored.
    const env = { id: a.id, type: "project.updated", room: "project:200", timestamp: "", seq: 1, epoch: client.cursor("project:200").epoch, data: { project_id: "200" } };
    client.socket.listenersAny().forEach((fn) => fn("project.updated", env));
    await srv.publish("project.updated", { project_id: 200, status: "b" });
    await eventually(() => seen.length >= 2, { what: "the second event" });
    await delay(50);
    assert.deepEqual(seen, [1, 2]);
  });

  test("a room with no event yet recovers what was published while away, once", async () => {
    const client = track(
      createClient({
        url: srv.url,
        token: srv.mintToken({ sub: "frank", projects: "*" }),
        reconnectionDelay: 500,
        reconnectionDelayMax: 1000,
      }),
    );
    await waitForState(client, "connected");
    await client.subscribe("project:300"); // no event yet: the ack gives its position
    assert.equal(client.cursor("project:300").seq, 0);
    assert.ok(client.cursor("global"), "connection.established gives global's position");
    const seen = [];
    client.on("*", (env) => {
      if (!env.type.startsWith("presence.")) seen.push(env.id);
    });
    const established = nextEvent(client, "established", { timeout: 10_000 });
    client.socket.io.engine.close();
    await waitForState(client, "reconnecting");
    const away = [];
    for (let i = 1; i <= 3; i++) {
      away.push((await srv.publish("issue.updated", { project_id: 300, number: i, title: `n${i}` })).id);
    }
    away.push((await srv.publish("system.notification", { title: "t", message: "while away" })).id);

    const info = await established;
    assert.equal(info.recovered, true, JSON.stringify(info.recovery));
    assert.equal(info.recovery["project:300"].replayed, 3);
    assert.equal(info.recovery.global.replayed, 1);
    const live = await srv.publish("issue.closed", { project_id: 300, number: 9, title: "live" });
    await eventually(() => seen.includes(live.id), { what: "the live event" });
    assert.deepEqual(seen, [...away, live.id], "every missed event once, before the live one");
    assert.equal(client.cursor("project:300").seq, 4);
  });
});
