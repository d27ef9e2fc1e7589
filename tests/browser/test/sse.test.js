// A plain EventSource in Chromium follows an AI stream over GET /api/v1/sse: the page runs the
// browser example of WEBSOCKET_API.md section 14.4 as written (only its app functions, render,
// reload and getFreshToken, are given), while this test produces the stream over HTTP. The
// page opens mid-stream, ends with the exact text (multi-code-point emoji included), then its
// connection is closed, the producer goes on, and a new EventSource from the last id ends with
// the exact whole text; last the server drops it, and the EventSource reconnects by itself with
// Last-Event-ID and recovers what was published meanwhile.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";

import { REPO_ROOT, eventually, http } from "../../harness/js/index.mjs";
import { API_KEY, WAIT_MS, launchChromium, mintToken, startServer } from "../lib/helpers.js";

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** The ```js block under the heading starting `heading` in WEBSOCKET_API.md. */
function docSnippet(heading) {
  const lines = fs.readFileSync(path.join(REPO_ROOT, "WEBSOCKET_API.md"), "utf8").split("\n");
  const at = lines.findIndex((l) => l.startsWith(`### ${heading}`));
  assert.ok(at >= 0, `WEBSOCKET_API.md has "${heading}"`);
  const open = lines.findIndex((l, i) => i > at && l === "```js");
  const end = lines.indexOf("```", open + 1);
  return lines.slice(open + 1, end).join("\n");
}

async function stream(pathSuffix, body) {
  const res = await http(`${server.url}/api/v1/streams${pathSuffix}`, { method: "POST", key: API_KEY, body });
  assert.ok(res.status >= 200 && res.status < 300, `${pathSuffix}: ${res.status} ${res.text}`);
  return res.body;
}

const PIECES = ["héllo ", "👋🏽 ", "世界 ", "🧑‍💻", "\n"];

test("an EventSource follows an AI stream to the exact text, also after its connection was dropped", async () => {
  // The stream and room the example follows.
  const id = "answer-1";
  await stream("", { room: "project:42", stream_id: id, kind: "llm" });
  let expected = "";
  const append = async (text) => {
    await stream(`/${id}/append`, { text });
    expected += text;
  };
  for (const piece of PIECES) await append(piece);

  // Same origin as the server; the page's own CSP allows no inline script, so the test's
  // context bypasses it to add the example (EventSource itself stays under connect-src 'self').
  const context = await browser.newContext({ bypassCSP: true });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(msg.text());
  });
  await page.goto(`${server.url}/debug`);
  const token = mintToken({ sub: "alice", projects: ["42"] });
  const example = docSnippet("14.4");
  await page.addScriptTag({
    content: `${example}
      window.rendered = { text: "", status: "" };
      function render(text, status) { window.rendered = { text, status }; }
      function reload(room) { (window.gaps ||= []).push(room); }
      function getFreshToken() { return Promise.resolve(${JSON.stringify(token)}); }
      window.es = follow(${JSON.stringify(token)});`,
  });
  const shown = () => page.evaluate(() => ({ answer, status: window.rendered.status, state: window.es.readyState }));

  // Mid-stream: the snapshot, then live deltas while the producer goes on.
  for (let i = 0; i < 20; i++) await append(PIECES[i % PIECES.length]);
  await eventually(async () => (await shown()).answer === expected, { timeout: WAIT_MS, what: "the live text" });

  // The connection is dropped (closed by the page); the producer goes on meanwhile.
  const lastId = await page.evaluate(() => {
    window.es.close();
    return lastId;
  });
  assert.match(lastId, /^v1,/, `the resume token of connection.established: ${JSON.stringify(lastId)}`);
  for (let i = 0; i < 15; i++) await append(PIECES[(i + 2) % PIECES.length]);
  // A new EventSource cannot set Last-Event-ID: the example passes it as ?last_event_id=.
  await page.evaluate((t) => {
    window.es = follow(t);
  }, token);
  await append("🎉 done");
  await stream(`/${id}/finish`, { usage: { completion_tokens: 42 } });
  await eventually(
    async () => {
      const now = await shown();
      return now.answer === expected && now.status === "finished";
    },
    { timeout: WAIT_MS, what: "the whole text after the reconnect" },
  );
  const final = await shown();
  assert.equal(final.answer, expected);
  assert.equal(Array.from(final.answer).length, Array.from(expected).length);
  assert.equal(final.state, 1, "still open (EventSource.OPEN)");
  const url = await page.evaluate(() => window.es.url);
  assert.ok(url.includes("last_event_id="), url);

  // The server drops the connection (the user is revoked, the token still valid): the
  // EventSource reconnects by itself with Last-Event-ID and recovers what it missed.
  await page.evaluate(() => {
    window.established = [];
    window.updates = [];
    window.es.addEventListener("connection.established", (e) => window.established.push(JSON.parse(e.data)));
    window.es.addEventListener("project.updated", (e) => window.updates.push(JSON.parse(e.data).data.status));
  });
  const revoked = await http(`${server.url}/api/v1/users/alice/disconnect`, { method: "POST", key: API_KEY });
  assert.equal(revoked.status, 200, revoked.text);
  assert.equal(revoked.body.disconnected, 1);
  const published = await http(`${server.url}/api/v1/events`, {
    method: "POST",
    key: API_KEY,
    body: { type: "project.updated", data: { project_id: "42", status: "while-away" } },
  });
  assert.equal(published.status, 202, published.text);
  await eventually(async () => (await page.evaluate(() => window.established.length)) > 0, {
    timeout: WAIT_MS,
    what: "the EventSource's own reconnect",
  });
  const back = await page.evaluate(() => window.established[0]);
  assert.equal(back.recovered, true, JSON.stringify(back));
  await eventually(async () => (await page.evaluate(() => window.updates)).includes("while-away"), {
    timeout: WAIT_MS,
    what: "the event published while it was away",
  });
  assert.deepEqual(await page.evaluate(() => window.updates), ["while-away"], "once");
  assert.equal((await shown()).answer, expected, "the text rebuilt from the URL's offset");
  assert.deepEqual(errors, []);
  await context.close();
});
