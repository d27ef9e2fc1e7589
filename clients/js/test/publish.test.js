// client.publish: client events through a real server with [client_events] on.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { createClient, RoomcastError } from "../dist/index.js";
import { nextEvent, startServer, waitForState } from "./server.js";

let srv;
const clients = [];

before(async () => {
  srv = await startServer({
    extraToml: '[client_events]\nrooms = ["project"]\nevents = ["chat.*", "typing.*"]\nmax_bytes = 64',
  });
});
after(async () => {
  for (const c of clients) c.close();
  await srv?.stop();
});

async function member(sub) {
  const client = createClient({ url: srv.url, token: srv.mintToken({ sub, projects: ["42"] }) });
  clients.push(client);
  await waitForState(client, "connected");
  await client.subscribe("project:42");
  return client;
}

test("publish resolves with the ack and the others receive the event from the sender", async () => {
  const alice = await member("alice");
  const bob = await member("bob");
  const got = nextEvent(bob, "chat.message");
  const ack = await alice.publish("project:42", "chat.message", { text: "hi" });
  assert.equal(ack.ok, true);
  assert.equal(typeof ack.id, "string");
  assert.equal(ack.seq, 1);
  const env = await got;
  assert.equal(env.id, ack.id);
  assert.equal(env.seq, 1);
  assert.deepEqual(env.data, { text: "hi" });
  assert.deepEqual(env.from, { user_id: "alice", sid: alice.info.sid });
  assert.deepEqual(bob.cursor("project:42"), { epoch: env.epoch, seq: 1 });

  // echo: the sender gets its own; volatile: no seq.
  const mine = nextEvent(alice, "typing.start");
  const typing = await alice.publish("project:42", "typing.start", {}, { volatile: true, echo: true });
  assert.equal(typing.seq, undefined);
  const echoed = await mine;
  assert.equal(echoed.id, typing.id);
  assert.equal(echoed.seq, undefined);
});

test("a refused publish rejects with the server's code", async () => {
  const carol = await member("carol");
  const refusals = [
    [["project:42", "deploy.done", {}], "event_not_allowed"],
    [["project:43", "chat.message", {}], "forbidden"],
    [["global", "chat.message", {}], "forbidden"],
    [["project:42", "chat.message", { text: "x".repeat(100) }], "payload_too_large"],
  ];
  for (const [args, code] of refusals) {
    await assert.rejects(carol.publish(...args), (err) => {
      assert.ok(err instanceof RoomcastError, String(err));
      assert.equal(err.code, code, `${args.join(" ")}: ${err.message}`);
      return true;
    });
  }
});
