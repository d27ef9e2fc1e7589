// /debug in a real browser: connect with a token, subscribe, see an event published over HTTP.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { WAIT_MS, launchChromium, mintToken, openPage, publish, screenshot, startServer, API_KEY } from "../lib/helpers.js";
import { STREAM_TEXT, streamPieces, streamProducer } from "../../harness/js/index.mjs";

let server;
let browser;

before(async () => {
  server = await startServer({ extraToml: '[client_events]\nrooms = ["project"]\nevents = ["chat.*"]' });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Waits until the element `selector` shows `text`. */
function shows(page, selector, text) {
  return page.locator(selector).filter({ hasText: text }).first().waitFor({ timeout: WAIT_MS });
}

test("the debug page connects, subscribes, shows ack errors and events as they arrive", async () => {
  const page = await openPage(browser, server.url);
  await page.goto(`${server.url}/debug`);
  await shows(page, "h1", "Roomcast debug client");
  await shows(page, "#status", "Disconnected");

  await page.getByLabel("Token").fill(mintToken({ sub: "alice", projects: ["42"] }));
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await shows(page, "#status", "Connected as alice (tenant default, node browser-node)");
  await shows(page, "#established", '"user_id": "alice"');
  await shows(page, "#rooms", "user:alice");

  await page.getByLabel("Room", { exact: true }).fill("project:42");
  await page.getByRole("button", { name: "Subscribe", exact: true }).click();
  await shows(page, "#ack", "subscribe project:42: ok");
  await shows(page, "#rooms", "project:42");

  // A room the token does not grant: the ack's error code is shown.
  await page.getByLabel("Room", { exact: true }).fill("project:3");
  await page.getByRole("button", { name: "Subscribe", exact: true }).click();
  await shows(page, "#ack", "subscribe project:3: forbidden: your token does not grant this room");

  // Published over HTTP by a backend (this test): the row shows type, room, seq and data.
  const res = await publish(server.url, { type: "project.updated", data: { project_id: "42", status: "from-the-test" } });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  const row = page.locator("#events tbody tr").filter({ hasText: "from-the-test" });
  await row.waitFor({ timeout: WAIT_MS });
  const cells = await row.locator("td").allTextContents();
  assert.equal(cells[1], "project.updated");
  assert.equal(cells[2], "project:42");
  assert.equal(cells[3], "1");
  assert.deepEqual(JSON.parse(cells[4]), { project_id: "42", status: "from-the-test" });

  // Published from the page itself, with an API key typed in.
  await page.getByLabel("API key").fill(API_KEY);
  await page.getByLabel("Data (JSON)").fill('{"project_id": "42", "status": "from-the-page"}');
  await page.getByRole("button", { name: "Publish", exact: true }).click();
  await shows(page, "#publish-result", "202: published project.updated to project:42");
  await page.locator("#events tbody tr").filter({ hasText: "from-the-page" }).waitFor({ timeout: WAIT_MS });
  // presence.joined for alice also came in; the two publishes are the two project.updated rows.
  assert.equal(await page.locator("#events tbody tr").filter({ hasText: "project.updated" }).count(), 2);
  await shows(page, "#events", "presence.joined");

  // A wrong key: the HTTP error code is shown.
  await page.getByLabel("API key").fill("not-a-key");
  await page.getByRole("button", { name: "Publish", exact: true }).click();
  await shows(page, "#publish-result", "401 unauthorized");

  await page.getByLabel("Room", { exact: true }).fill("project:42");
  await page.getByRole("button", { name: "Unsubscribe" }).click();
  await shows(page, "#ack", "unsubscribe project:42: ok");
  await shows(page, "#rooms", "global, user:alice");
  assert.ok(!(await page.locator("#rooms").textContent()).includes("project:42"));

  const file = await screenshot(page, "debug.png");
  console.log(`screenshot: ${file}`);
  assert.deepEqual(page.foreign, [], "the page loaded nothing from elsewhere");
  assert.deepEqual(page.consoleErrors.filter((e) => !e.includes("401")), [], "no script errors");

  await page.getByRole("button", { name: "Disconnect" }).click();
  await shows(page, "#status", "Disconnected (io client disconnect)");
});

test("the debug page publishes a client event over its socket and shows refusals' codes", async () => {
  const page = await openPage(browser, server.url);
  await page.goto(`${server.url}/debug`);
  await page.getByLabel("Token").fill(mintToken({ sub: "bob", projects: ["42"] }));
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await shows(page, "#status", "Connected as bob");
  await page.getByLabel("Room", { exact: true }).fill("project:42");
  await page.getByRole("button", { name: "Subscribe", exact: true }).click();
  await shows(page, "#ack", "subscribe project:42: ok");

  // With echo (checked by default) the page's own socket receives it: a row with `seq`.
  await page.getByLabel("Client event payload (JSON)").fill('{"text": "from-the-socket"}');
  await page.getByRole("button", { name: "Publish over the socket" }).click();
  await shows(page, "#client-publish-result", "published chat.message to project:42");
  const row = page.locator("#events tbody tr").filter({ hasText: "from-the-socket" });
  await row.waitFor({ timeout: WAIT_MS });
  const cells = await row.locator("td").allTextContents();
  assert.equal(cells[1], "chat.message");
  assert.equal(cells[2], "project:42");
  assert.match(cells[3], /^\d+$/);

  await page.getByLabel("Event name").fill("deploy.done");
  await page.getByRole("button", { name: "Publish over the socket" }).click();
  await shows(page, "#client-publish-result", "event_not_allowed");
  await page.getByLabel("Event name").fill("chat.message");
  await page.getByLabel("Room to publish into").fill("project:7");
  await page.getByRole("button", { name: "Publish over the socket" }).click();
  await shows(page, "#client-publish-result", "forbidden");
  assert.deepEqual(page.consoleErrors, [], "no script errors");
});

test("the debug page shows a refused handshake's code, and the /ws namespace works", async () => {
  const page = await openPage(browser, server.url);
  await page.goto(`${server.url}/debug`);
  await page.getByLabel("Token").fill("not-a-jwt");
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await shows(page, "#status", "connect_error: token_invalid");

  await page.getByLabel("Namespace").selectOption("/ws");
  await page.getByLabel("Token").fill(mintToken({ sub: "bob" }));
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await shows(page, "#status", "Connected as bob");
  const res = await publish(server.url, { type: "system.notification", data: { title: "hello", message: "to /ws" } });
  assert.equal(res.status, 202);
  await page.locator("#events tbody tr").filter({ hasText: "to /ws" }).waitFor({ timeout: WAIT_MS });
});

test("the debug page shows live streams of its rooms: text growing, length, status; one seen mid-stream too", async () => {
  const producer = streamProducer(server.url, API_KEY);
  const pieces = streamPieces(STREAM_TEXT);
  const append = async (id, list) => {
    for (const piece of list) assert.equal((await producer.append(id, piece)).status, 202);
  };
  // One stream begun before the page joins its room: the page resumes it from 0.
  const early = await producer.create({ room: "project:42", kind: "log" });
  assert.equal(early.status, 201, early.text);
  await append(early.body.stream_id, pieces.slice(0, 10));

  const page = await openPage(browser, server.url);
  await page.goto(`${server.url}/debug`);
  await page.getByLabel("Token").fill(mintToken({ sub: "carol", projects: ["42"] }));
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await shows(page, "#status", "Connected as carol");
  await page.getByLabel("Room", { exact: true }).fill("project:42");
  await page.getByRole("button", { name: "Subscribe", exact: true }).click();
  await shows(page, "#ack", "subscribe project:42: ok");

  const created = await producer.create({ room: "project:42", kind: "llm" });
  assert.equal(created.status, 201, created.text);
  const id = created.body.stream_id;
  const row = page.locator(`#streams tr[data-stream="${id}"]`);
  await row.waitFor({ timeout: WAIT_MS });
  await append(id, pieces.slice(0, 20));
  await shows(page, `#streams tr[data-stream="${id}"] td:nth-child(4)`, "open");
  // The text grows as it is appended.
  await page.waitForFunction(
    ([sel, want]) => document.querySelector(sel)?.textContent === want,
    [`#streams tr[data-stream="${id}"] .stream-text`, pieces.slice(0, 20).join("")],
    { timeout: WAIT_MS },
  );
  await append(id, pieces.slice(20));
  assert.equal((await producer.finish(id)).status, 200);
  await shows(page, `#streams tr[data-stream="${id}"] td:nth-child(4)`, "finished");
  const cells = await row.locator("td").allTextContents();
  assert.deepEqual(cells.slice(1, 6), ["llm", "project:42", "finished", String(Array.from(STREAM_TEXT).length), STREAM_TEXT]);

  // The early stream shows up with its next append, caught up from its start.
  await append(early.body.stream_id, pieces.slice(10));
  const earlyText = `#streams tr[data-stream="${early.body.stream_id}"] .stream-text`;
  await page.waitForFunction(([sel, want]) => document.querySelector(sel)?.textContent === want, [earlyText, STREAM_TEXT], {
    timeout: WAIT_MS,
  });
  // Its Cancel button stops the producer.
  await page.locator(`#streams tr[data-stream="${early.body.stream_id}"]`).getByRole("button", { name: "Cancel" }).click();
  await shows(page, `#streams tr[data-stream="${early.body.stream_id}"] td:nth-child(4)`, "cancelled");
  const refused = await producer.append(early.body.stream_id, "more");
  assert.equal(refused.status, 409);
  assert.equal(refused.body.error.code, "stream_cancelled");
  await shows(page, "#status", "Connected as carol");

  const file = await screenshot(page, "debug-streams.png");
  console.log(`screenshot: ${file}`);
  assert.deepEqual(page.consoleErrors, [], "no script errors");
});
