import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { createClient } from "../dist/index.js";
import { eventually, nextEvent, startServer, waitForState } from "./server.js";

let srv;
let client;
before(async () => {
  srv = await startServer({ historySize: 2 });
});
after(async () => {
  client?.close();
  await srv?.stop();
});

test("a gap is reported when more events than [history] size were published while away", async () => {
  client = createClient({
    url: srv.url,
    token: srv.mintToken({ sub: "gina", projects: "*" }),
    reconnectionDelay: 100,
    reconnectionDelayMax: 200,
  });
  await waitForState(client, "connected");
  await client.subscribe("project:1");
  const seen = [];
  client.on("workflow.started", (env) => seen.push(env.seq));
  await srv.publish("workflow.started", { workflow_id: "w1", project_id: "1" });
  await eventually(() => seen.length === 1, { what: "the first event" });
  const epoch = client.cursor("project:1").epoch;

  const gaps = [];
  client.on("gap", (g) => gaps.push(g));
  const established = nextEvent(client, "established", { timeout: 10_000 });
  client.socket.io.engine.close();
  await waitForState(client, "reconnecting");
  for (let i = 2; i <= 5; i++) await srv.publish("workflow.started", { workflow_id: `w${i}`, project_id: "1" });

  const info = await established;
  assert.equal(info.recovered, false);
  assert.equal(info.recovery["project:1"].gap, true);
  assert.deepEqual(gaps, [{ room: "project:1", epoch, seq: 5 }]);
  assert.deepEqual(client.cursor("project:1"), { epoch, seq: 5 });
  assert.deepEqual(seen, [1], "nothing replayed across a gap");

  // Still subscribed, continuing from the reported cursor.
  await srv.publish("workflow.started", { workflow_id: "w6", project_id: "1" });
  await eventually(() => seen.length === 2, { what: "the live event" });
  assert.deepEqual(seen, [1, 6]);
});
