// Every ```js / ```jsx block of README.md and WEBSOCKET_API.md runs as written against a real
// server, and prints what the docs say it prints: a snippet drifting from the code fails here.
//
// - The app they run in is made exactly as the README says: a fresh copy of clients/js (no
//   node_modules, no dist) next to an empty app folder, then the README's own
//   `npm install --install-links ../roomcast/clients/js` line, plus React for the React snippet
//   and socket.io-client for the stock ones.
// - The server runs the shipped config.toml on a free port; `TOKEN` (and `token`) is minted
//   with `roomcast token --sub alice --projects 42`, as the README does; the address
//   `http://127.0.0.1:8000` in a snippet is replaced by the server's. Nothing else is changed.
// - Each snippet runs until its output shows a `project.updated` published meanwhile (with a
//   fresh status), then is stopped. The React ones render into jsdom with the app's React.
// - A snippet that follows an AI stream (`useStream(`) gets `STREAM_ID`: a stream in
//   project:42 begun before it starts (it opens mid-stream) and finished while it runs; it
//   must render the stream's exact text and `(finished)`.
// - Fragments that need the reader's own code (getFreshToken, handle, refetch...) are in SKIP.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { blocks } from "../lib/docs.js";
import { REPO_ROOT, ROOMCAST_BIN, eventually, freePort, trackChild } from "../lib/helpers.js";
import { STREAM_TEXT, startServer, streamPieces, streamProducer } from "../../harness/js/index.mjs";

const DOCS = ["README.md", "WEBSOCKET_API.md"];
const DEV_KEY = "roomcast-dev-key";
/** Fragments, by a line they contain: why they cannot run alone. */
const SKIP = {
  'socket.on("auth.expiring"': "a fragment: needs an existing socket and the app's getFreshToken",
  "const cursors = {}; // room -> {epoch, seq}": "a recipe: needs the app's url, currentToken, handle and refetch",
  'import parser from "socket.io-msgpack-parser";': 'needs a server with [server] parser = "msgpack"; test/protocols.test.js runs the same client',
  "function roomcastSigned(": "a backend's signature check, not a client: clients/js/test/rpc.test.js checks the server's calls with it",
  "function apply(offset, piece) {":
    "a fragment: the client rule for stream offsets, needs an existing socket and a stream id; tests/streams.rs checks the same rule against a real server",
  "function follow(token) {":
    "a browser page (EventSource, location): tests/browser/test/sse.test.js runs it as written in Chromium",
  "return showBusy(ack.error.holder, ack.error.expires_at);":
    "a fragment: needs an existing socket and the app's deploy and showBusy; test/locks.test.js runs the same commands",
  'socket.on("typing.start", (e) => showTyping(e.from.user_id));':
    "a fragment: needs an existing socket, a server with [client_events] and the app's show/showTyping; test/client_events.test.js runs the same commands",
  'provider.on("connection-error", (err) => console.log(err.message)); // e.g. "forbidden"':
    "a fragment: needs yjs, y-socket.io and the app's own server address and jwt; test/documents.test.js runs the same stock provider",
  "// late-join.mjs: ROOMCAST_URL=": "needs yjs and y-socket.io and a document written before it starts: test/late_join.test.js runs it as written",
};
const RUN_DEADLINE_MS = 30_000;


const snippets = DOCS.flatMap((f) => blocks(f, ["js", "jsx"]));
let tmp, app, url, token, server;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-snippets-"));
  // A fresh clone's clients/js: sources only.
  const pkg = path.join(tmp, "roomcast", "clients", "js");
  fs.cpSync(path.join(REPO_ROOT, "clients", "js"), pkg, {
    recursive: true,
    filter: (src) => !/[/\\](node_modules|dist)$/.test(src),
  });
  app = path.join(tmp, "app");
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  const npm = (args) => execFileSync("npm", [...args, "--no-audit", "--no-fund"], { cwd: app, stdio: "pipe", timeout: 300_000 });
  // The app's own React (and a DOM for Node) and socket.io-client for the stock snippets, at
  // the versions the client is tested with.
  const { dependencies, devDependencies } = JSON.parse(fs.readFileSync(path.join(pkg, "package.json"), "utf8"));
  const versions = { ...dependencies, ...devDependencies };
  npm(["install", ...["react", "react-dom", "jsdom", "global-jsdom", "socket.io-client"].map((p) => `${p}@${versions[p]}`)]);
  const readme = fs.readFileSync(path.join(REPO_ROOT, "README.md"), "utf8");
  const line = readme.split("\n").find((l) => l.startsWith("npm install --install-links "));
  assert.ok(line, "README.md has the install line");
  npm(line.split(/\s+/).slice(1));

  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  const config = path.join(REPO_ROOT, "config.toml");
  token = execFileSync(ROOMCAST_BIN, ["token", "--config", config, "--sub", "alice", "--projects", "42"], { encoding: "utf8" }).trim();
  server = await startServer({
    configFile: config,
    // Its own storage directory: the shipped `[storage] path = "data"` may be in use.
    env: { ROOMCAST_SERVER__BIND: `127.0.0.1:${port}`, RUST_LOG: "warn", ROOMCAST_STORAGE__PATH: path.join(tmp, "storage") },
    listenPort: port,
    waitFor: "health",
  });
});

after(async () => {
  await server?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test("the README install line gives an importable package with one React", () => {
  const out = execFileSync(
    process.execPath,
    ["--input-type=module", "-e", 'const m = await import("roomcast-client"); const r = await import("roomcast-client/react"); console.log(typeof m.createClient, typeof r.useRoom)'],
    { cwd: app, encoding: "utf8" },
  );
  assert.equal(out.trim(), "function function");
  // The React that the package's own files resolve (from where they really are: npm links a
  // local folder unless told otherwise) is the app's.
  const fromPackage = execFileSync(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      'import fs from "node:fs"; import { createRequire } from "node:module"; ' +
        'const pkg = fs.realpathSync("node_modules/roomcast-client/dist/react/index.js"); ' +
        "console.log(fs.realpathSync(createRequire(pkg).resolve(\"react\")))",
    ],
    { cwd: app, encoding: "utf8" },
  ).trim();
  assert.equal(fromPackage, fs.realpathSync(path.join(app, "node_modules", "react", "index.js")), "the package uses the app's React");
});

test("the docs have the snippets this harness knows", () => {
  assert.ok(snippets.length >= 4, `${snippets.length} snippets`);
  assert.ok(snippets.some((s) => s.lang === "jsx"));
  for (const marker of Object.keys(SKIP)) {
    assert.ok(snippets.some((s) => s.code.includes(marker)), `SKIP entry ${marker} matches no snippet any more`);
  }
});

/**
 * Runs `file` in the app until its output contains `status`, then stops it. `step()` runs
 * between looks at the output (by default it publishes a `project.updated` with `status`).
 */
async function runUntilShown(file, args, status, { env = {}, step } = {}) {
  const child = trackChild(spawn(process.execPath, [...args, file], { cwd: app, env: { ...process.env, TOKEN: token, ...env } }));
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  let exited = null;
  child.on("exit", (code) => (exited = code));
  const publishStatus = () =>
    fetch(`${url}/api/v1/events`, {
      method: "POST",
      headers: { Authorization: `Bearer ${DEV_KEY}`, "Content-Type": "application/json" },
      body: JSON.stringify({ type: "project.updated", data: { project_id: "42", status } }),
    });
  try {
    await eventually(
      async () => {
        if (output.includes(status)) return true;
        assert.equal(exited, null, `the snippet exited (${exited}) without showing the event:\n${output}`);
        await (step ?? publishStatus)(output);
        return false;
      },
      { timeout: RUN_DEADLINE_MS, interval: 300, what: `output showing ${status}` },
    ).catch((e) => {
      throw new Error(`${e.message}\noutput:\n${output}`);
    });
  } finally {
    child.kill("SIGKILL");
  }
  return output;
}

/**
 * Runs a snippet following an AI stream: half of the stream is there before it starts, the
 * rest is appended once it shows that half; it must end showing the whole text, finished.
 */
async function runStreamSnippet(file, args) {
  const producer = streamProducer(url, DEV_KEY);
  const created = await producer.create({ room: "project:42", kind: "llm" });
  assert.equal(created.status, 201, created.text);
  const id = created.body.stream_id;
  const pieces = streamPieces(STREAM_TEXT);
  const half = Math.floor(pieces.length / 2);
  const append = async (list) => {
    for (const piece of list) assert.equal((await producer.append(id, piece)).status, 202);
  };
  await append(pieces.slice(0, half));
  let finished = false;
  const want = `rendered: ${STREAM_TEXT}(finished)`;
  return runUntilShown(file, args, want, {
    env: { STREAM_ID: id },
    step: async (output) => {
      if (finished || !output.includes(`rendered: ${pieces.slice(0, half).join("")}`)) return;
      finished = true;
      await append(pieces.slice(half));
      assert.equal((await producer.finish(id)).status, 200);
    },
  });
}

for (const s of snippets) {
  const skip = Object.entries(SKIP).find(([marker]) => s.code.includes(marker));
  test(`${s.file}:${s.line} (${s.heading}) runs as written`, { skip: skip && skip[1] }, async () => {
    const status = `snippet-${randomUUID().slice(0, 8)}`;
    const code = s.code.replaceAll("http://127.0.0.1:8000", url);
    assert.notEqual(code, s.code, "the snippet connects to the documented address");
    const preamble = "const TOKEN = process.env.TOKEN; const token = TOKEN; const STREAM_ID = process.env.STREAM_ID;\n";
    const file = path.join(app, `snippet-${s.line}.mjs`);
    if (s.lang === "jsx") {
      const ts = (await import(path.join(tmp, "roomcast", "clients", "js", "node_modules", "typescript", "lib", "typescript.js"))).default;
      const js = ts.transpileModule(code, { compilerOptions: { jsx: ts.JsxEmit.ReactJSX, module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
      fs.writeFileSync(
        file,
        `${preamble}document.body.innerHTML = '<div id="root"></div>';\n${js}\n` +
          `setInterval(() => console.log("rendered:", document.getElementById("root").textContent), 100);\n`,
      );
      const args = ["--import", "global-jsdom/register"];
      if (code.includes("useStream(")) {
        const out = await runStreamSnippet(file, args);
        assert.doesNotMatch(out, /Invalid hook call/, out);
        return;
      }
      const out = await runUntilShown(file, args, status);
      assert.match(out, new RegExp(`rendered: project 42 is ${status}`), out);
      assert.doesNotMatch(out, /Invalid hook call/, out);
    } else {
      fs.writeFileSync(file, preamble + code + "\n");
      await runUntilShown(file, [], status);
    }
  });
}
