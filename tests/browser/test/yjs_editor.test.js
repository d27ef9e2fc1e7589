// The Yjs editor example (examples/yjs-editor) in Chromium: two pages, each its own browser
// context (no shared BroadcastChannel or storage), on one document of a real Roomcast, through
// the stock y-socket.io client. Typing into one shows in the other, both ways, and both typing
// at once (one at the start, one at the end) ends with the same text in both, each page's
// typing in one piece (the caret kept its place through the other's changes). The page is
// bundled with esbuild from the npm packages at test time and served by a tiny static server.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

import { REPO_ROOT, eventually, startRedis } from "../../harness/js/index.mjs";
import { WAIT_MS, launchChromium, mintToken, screenshot, startServer } from "../lib/helpers.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const EXAMPLE = path.join(REPO_ROOT, "examples", "yjs-editor");

let server;
let browser;
let site;
let siteDir;
/** What the cluster setup started, stopped at the end. */
const running = [];

/** Bundles the example into a temporary directory with its index.html; resolves with the directory. */
async function bundleExample() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-yjs-editor-"));
  fs.copyFileSync(path.join(EXAMPLE, "index.html"), path.join(dir, "index.html"));
  await build({
    entryPoints: [path.join(EXAMPLE, "main.js")],
    bundle: true,
    format: "esm",
    platform: "browser",
    outfile: path.join(dir, "bundle.js"),
    // The example has no node_modules of its own here: yjs and y-socket.io are this suite's.
    nodePaths: [path.join(HERE, "..", "node_modules")],
    logLevel: "error",
  });
  return dir;
}

/** A static server of `dir` on a free port of 127.0.0.1. */
function serveStatic(dir) {
  const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8" };
  const files = new Map(
    fs.readdirSync(dir).map((name) => [`/${name}`, { body: fs.readFileSync(path.join(dir, name)), type: types[path.extname(name)] }]),
  );
  const httpServer = http.createServer((req, res) => {
    const pathname = new URL(req.url, "http://x").pathname;
    const file = files.get(pathname === "/" ? "/index.html" : pathname);
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": file.type ?? "application/octet-stream" }).end(file.body);
  });
  return new Promise((resolve) => {
    httpServer.listen(0, "127.0.0.1", () => {
      resolve({ url: `http://127.0.0.1:${httpServer.address().port}`, close: () => new Promise((r) => httpServer.close(r)) });
    });
  });
}

before(async () => {
  siteDir = await bundleExample();
  site = await serveStatic(siteDir);
  server = await startServer();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  for (const stop of running.reverse()) await stop();
  await site?.close();
  if (siteDir) fs.rmSync(siteDir, { recursive: true, force: true });
});

/**
 * Opens the example on `doc` as `sub` in a context of its own, connected to `node` (default: the
 * one-node server); resolves once its status says synced. Records page errors and any request
 * to a host other than the page's and the server's.
 */
async function openEditor(doc, sub, node = server) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.problems = [];
  const allowed = new Set([new URL(site.url).host, new URL(node.url).host]);
  page.on("request", (req) => {
    const u = new URL(req.url());
    if (!allowed.has(u.host)) page.problems.push(`request to ${req.url()}`);
  });
  page.on("pageerror", (err) => page.problems.push(String(err)));
  page.on("console", (msg) => {
    if (msg.type() === "error") page.problems.push(msg.text());
  });
  const token = mintToken({ sub, projects: ["42"] });
  const query = new URLSearchParams({ server: node.url, doc, token });
  await page.goto(`${site.url}/index.html?${query}`);
  await page.locator("#status", { hasText: "connected, synced" }).waitFor({ timeout: WAIT_MS });
  page.editor = page.getByLabel("Document text");
  await page.editor.waitFor({ state: "visible", timeout: WAIT_MS });
  return page;
}

/** Waits until the textarea of every page shows `text`. */
async function allShow(pages, text, what) {
  await eventually(async () => (await Promise.all(pages.map((p) => p.editor.inputValue()))).every((v) => v === text), {
    timeout: WAIT_MS,
    what,
  });
}

const SETUPS = {
  "one node": async () => [server, server],
  "a two-node cluster (the pages at different nodes)": async () => {
    const redis = await startRedis();
    running.push(() => redis.stop());
    const cluster = { redisUrl: redis.url, keyPrefix: `rc-yjs-${randomUUID().slice(0, 8)}` };
    const nodes = await Promise.all(["yjs-a", "yjs-b"].map((nodeId) => startServer({ nodeId, cluster })));
    running.push(...nodes.map((n) => () => n.stop()));
    return nodes;
  },
};

for (const [name, setup] of Object.entries(SETUPS)) {
  test(`two pages of the Yjs editor example: typing in one shows in the other, both ways, and concurrent typing converges: ${name}`, async () => {
    const [nodeA, nodeB] = await setup();
    const doc = `project:42/spec-${randomUUID().slice(0, 8)}`;
    const alice = await openEditor(doc, "alice", nodeA);
    const bob = await openEditor(doc, "bob", nodeB);
    assert.equal(await alice.editor.inputValue(), "");

    // Alice types; Bob's page shows it.
    await alice.editor.click();
    await alice.keyboard.type("Hello from Alice.");
    await allShow([bob], "Hello from Alice.", "Alice's typing at Bob's page");

    // Bob types at the end; Alice's page shows it.
    await bob.editor.click();
    await bob.keyboard.press("Control+End");
    await bob.keyboard.type(" Bob here.");
    const both = "Hello from Alice. Bob here.";
    await allShow([alice, bob], both, "Bob's typing at Alice's page");

    // Both at once, keystroke by keystroke: Alice at the start, Bob at the end. Each page applies
    // the other's changes while its own user types, keeping its caret in place, so each one's
    // typing stays in one piece and both pages end with the same text.
    await alice.keyboard.press("Control+Home");
    await bob.keyboard.press("Control+End");
    const [fromAlice, fromBob] = ["Alice first: ", " Bob last!"];
    await Promise.all([alice.keyboard.type(fromAlice, { delay: 15 }), bob.keyboard.type(fromBob, { delay: 15 })]);
    await allShow([alice, bob], `${fromAlice}${both}${fromBob}`, "the same text after concurrent typing");

    // A page that loads the document later gets the whole text from the server.
    const carol = await openEditor(doc, "carol", nodeB);
    await allShow([carol], `${fromAlice}${both}${fromBob}`, "the whole document at a new page");

    await screenshot(alice, nodeA === nodeB ? "yjs-editor.png" : "yjs-editor-cluster.png");
    for (const page of [alice, bob, carol]) assert.deepEqual(page.problems, []);
    await Promise.all([alice, bob, carol].map((page) => page.context().close()));
  });
}

test("the Yjs editor example says so when its token does not grant the document's room", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const token = mintToken({ sub: "mallory", projects: ["7"] });
  const query = new URLSearchParams({ server: server.url, doc: "project:42/spec", token });
  await page.goto(`${site.url}/index.html?${query}`);
  await page.locator("#status", { hasText: "connection refused: forbidden" }).waitFor({ timeout: WAIT_MS });
  assert.equal(await page.getByLabel("Document text").isDisabled(), true);
  await context.close();
});
