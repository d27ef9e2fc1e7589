// The late-join example of WEBSOCKET_API.md ("Joining late: state, recent events, then live")
// runs as written, with the stock socket.io-client, yjs and y-socket.io, against a real server.
//
// Before it starts, the room has events and the shared memory (a Yjs document) was written by
// an editor who has since left: nobody is online. The example must print the document's
// content, then the room's events in `seq` order, then "live"; after that an event published
// and a memory written by another editor show up once each.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

import * as Y from "yjs";
import { SocketIOProvider } from "y-socket.io";

import { blocks } from "../lib/docs.js";
import { destroyProvider } from "../lib/yjs.js";
import { REPO_ROOT, eventually, mintToken, publishOk, startServer, trackChild } from "../lib/helpers.js";

const MARKER = "// late-join.mjs: ROOMCAST_URL=";
const DEADLINE_MS = 15_000;

let srv;
let script;
const providers = [];

before(async () => {
  srv = await startServer();
  const [snippet] = blocks("WEBSOCKET_API.md", ["js"]).filter((b) => b.code.includes(MARKER));
  assert.ok(snippet, "WEBSOCKET_API.md has the late-join example");
  // Inside tests/js, so that its imports resolve to this package's node_modules.
  script = path.join(REPO_ROOT, "tests", "js", `.late-join-${randomUUID()}.mjs`);
  fs.writeFileSync(script, snippet.code);
});

after(async () => {
  for (const p of providers) destroyProvider(p);
  if (script) fs.rmSync(script, { force: true });
  await srv?.stop();
});

/** A stock provider on `project:42/memory` as `sub`; resolves once it is synced. */
async function editor(sub) {
  const doc = new Y.Doc();
  const provider = new SocketIOProvider(srv.url, "project:42/memory", doc, {
    auth: { token: mintToken({ sub, projects: ["42"] }) },
    disableBc: true,
  });
  providers.push(provider);
  await eventually(() => provider.synced, { timeout: DEADLINE_MS, what: `${sub}'s provider synced` });
  return { doc, memories: doc.getMap("memories"), provider };
}

const status = (n) => `step-${n}-${randomUUID().slice(0, 8)}`;

test("a late joiner gets the document, then the room's events in order, then live events once each", async () => {
  // The room's past: three events, and memories written by an editor who then left. A second
  // editor sees the writes, so the server had them before both leave.
  const past = [status(1), status(2), status(3)];
  for (const s of past) await publishOk(srv, { type: "project.updated", data: { project_id: "42", status: s } });
  const writer = await editor("wendy");
  const witness = await editor("walt");
  writer.memories.set("goal", "ship v2");
  writer.memories.set("owner", "wendy");
  await eventually(() => witness.memories.get("owner") === "wendy", { timeout: DEADLINE_MS, what: "the witness sees the memories" });
  destroyProvider(writer.provider);
  destroyProvider(witness.provider);

  const child = trackChild(
    spawn(process.execPath, [script], {
      env: { ...process.env, ROOMCAST_URL: srv.url, TOKEN: mintToken({ sub: "agent-7", projects: ["42"] }) },
    }),
  );
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  let exited = null;
  child.on("exit", (code) => (exited = code));
  const lines = () => output.split("\n").filter(Boolean);
  const shows = (what) =>
    eventually(
      () => {
        assert.equal(exited, null, `the example exited (${exited}):\n${output}`);
        return lines().includes("live") && what();
      },
      { timeout: DEADLINE_MS, what: "the example's output" },
    ).catch((e) => {
      throw new Error(`${e.message}\noutput:\n${output}`);
    });
  try {
    await shows(() => true);
    const before = lines().slice(0, lines().indexOf("live"));
    assert.deepEqual(before, [
      'memories: {"goal":"ship v2","owner":"wendy"}',
      ...past.map((s, i) => `#${i + 1} project.updated ${JSON.stringify({ project_id: "42", status: s })}`),
    ]);

    // Live: an event, and a memory written by an editor who joins now.
    const fresh = status(4);
    await publishOk(srv, { type: "project.updated", data: { project_id: "42", status: fresh } });
    const late = await editor("lena");
    late.memories.set("next", "write the changelog");
    await shows(() => output.includes(fresh) && output.includes("memory next"));
    const later = lines().slice(lines().indexOf("live") + 1);
    assert.deepEqual(later.filter((l) => l.startsWith("#")), [`#4 project.updated ${JSON.stringify({ project_id: "42", status: fresh })}`]);
    assert.deepEqual(later.filter((l) => l.startsWith("memory ")), ['memory next = "write the changelog"']);
  } finally {
    child.kill("SIGKILL");
  }
});
