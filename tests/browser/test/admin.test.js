// /admin in a real browser: live figures while 50 sockets are connected and events stream in.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { ADMIN_KEY, WAIT_MS, connectLoad, launchChromium, openPage, publish, screenshot, startServer } from "../lib/helpers.js";

const SOCKETS = 50;
let server;
let browser;
let load;

before(async () => {
  server = await startServer();
  browser = await launchChromium();
});

after(async () => {
  load?.close();
  await browser?.close();
  await server?.stop();
});

function shows(page, selector, text) {
  return page.locator(selector).filter({ hasText: text }).first().waitFor({ timeout: WAIT_MS });
}

/** The number a tile shows (thousands separators removed). */
async function tile(page, id) {
  const text = (await page.locator(`#${id}`).textContent()) ?? "";
  return Number(text.replace(/,/g, ""));
}

/** Waits (Playwright polling the page, with a deadline) until `fn(arg)` holds in the page. */
async function until(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 100 });
  } catch (err) {
    throw new Error(`the admin page never showed ${what}: ${err.message}`);
  }
}

/** In the page: the number in tile `id`. */
const tileAbove = ([id, min]) => Number(document.getElementById(id).textContent.replace(/,/g, "")) > min;

/** In the page: the [per second, total] of `type` in the events-by-type table exceed `min`. */
const typeAbove = ([type, column, min]) =>
  [...document.querySelectorAll("#by-type tbody tr")].some(
    (tr) => tr.cells[0]?.textContent === type && Number(tr.cells[column].textContent.replace(/,/g, "")) > min,
  );

/** Publishes two event types into project:7 until stopped. */
function publishStream() {
  let running = true;
  let sent = 0;
  const done = (async () => {
    while (running) {
      for (const body of [
        { type: "project.updated", data: { project_id: "7", status: `s${sent}` } },
        { type: "workflow.progress", data: { workflow_id: "w1", project_id: "7", progress: sent % 101 } },
      ]) {
        const res = await publish(server.url, body);
        assert.equal(res.status, 202, JSON.stringify(res.body));
        sent += 1;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    async stop() {
      running = false;
      await done;
      return sent;
    },
  };
}

test("the admin page asks for a key and shows live figures under load", async () => {
  load = await connectLoad(server.url, SOCKETS, "7");
  const page = await openPage(browser, server.url);
  await page.goto(`${server.url}/admin`);
  await shows(page, "h1", "Roomcast admin");
  await shows(page, "#status", "Enter an admin key");

  // A wrong key is refused with its code, and the refusal is counted apart from the errors.
  await page.getByLabel("API key with scope admin").fill("not-the-key");
  await page.getByRole("button", { name: "Show" }).click();
  await shows(page, "#status", "401 unauthorized");

  await page.getByLabel("API key with scope admin").fill(ADMIN_KEY);
  await page.getByRole("button", { name: "Show" }).click();
  await shows(page, "#status", "Live, updated");
  await shows(page, "#connections", String(SOCKETS));
  await shows(page, "#users", String(SOCKETS));
  await shows(page, "#room-table", "project:7");
  const roomRow = page.locator("#room-table tbody tr").filter({ hasText: "project:7" });
  assert.equal((await roomRow.locator("td").allTextContents())[2], String(SOCKETS));
  await shows(page, "#nodes", "browser-node");
  await shows(page, "#refused-auth", "unauthorized");
  await shows(page, "#refused-auth", "GET /api/v1/admin/overview");

  const stream = publishStream();
  try {
    await shows(page, "#by-type", "project.updated");
    await shows(page, "#by-type", "workflow.progress");
    await until(page, "a non-zero rate for project.updated", typeAbove, ["project.updated", 1, 0]);
    await until(page, "a non-zero rate for workflow.progress", typeAbove, ["workflow.progress", 1, 0]);
    await until(page, "events/s above zero", tileAbove, ["events-per-sec", 0]);

    // The figures move while the stream runs.
    const published = await tile(page, "events-published");
    await until(page, "events published growing", tileAbove, ["events-published", published]);
    const row = page.locator("#by-type tbody tr").filter({ hasText: "project.updated" });
    const total = Number((await row.locator("td").nth(2).textContent()).replace(/,/g, ""));
    await until(page, "the project.updated total growing", typeAbove, ["project.updated", 2, total]);
    assert.equal(await tile(page, "connections"), SOCKETS);

    const file = await screenshot(page, "admin.png");
    console.log(`screenshot: ${file}`);
  } finally {
    await stream.stop();
  }

  // Sockets leaving show too.
  load.close();
  await shows(page, "#connections", "0");

  // The key survives a reload of the tab (sessionStorage), and is forgotten on request.
  await page.reload();
  await shows(page, "#status", "Live, updated");
  await page.getByRole("button", { name: "Forget key" }).click();
  await shows(page, "#status", "Enter an admin key");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("roomcast.admin.key")), null);

  assert.deepEqual(page.foreign, [], "the page loaded nothing from elsewhere");
  assert.deepEqual(page.consoleErrors.filter((e) => !e.includes("401")), [], "no script errors");
});
