// scripts/test.sh checks its prerequisites before building anything: each missing one is
// named with its install command; a missing browser only skips the browser tests (the run
// still fails at the end); `--check` stops after the check.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { REPO_ROOT } from "../lib/helpers.js";

const SCRIPT = path.join(REPO_ROOT, "scripts", "test.sh");

/** A PATH directory holding only the listed tools (symlinks to the real ones). */
function pathWith(tools) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-path-"));
  for (const tool of tools) {
    // A shim (pyenv) is a script that needs the real PATH: link the interpreter itself.
    const probe = tool === "python3" ? "python3 -c 'import sys; print(sys.executable)'" : `command -v ${tool}`;
    const found = spawnSync("bash", ["-c", probe], { encoding: "utf8" }).stdout.trim();
    assert.ok(found, `${tool} must be installed on this machine for this test`);
    fs.symlinkSync(found, path.join(dir, tool));
  }
  return dir;
}

function run(args, { tools, chromium }) {
  const dir = pathWith(tools);
  try {
    const out = spawnSync(path.join(dir, "bash"), [SCRIPT, ...args], {
      encoding: "utf8",
      env: { PATH: dir, HOME: os.homedir(), CHROMIUM_BIN: chromium },
      timeout: 30_000,
    });
    return { code: out.status, output: out.stdout + out.stderr };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const ALL = ["bash", "dirname", "cargo", "node", "npm", "python3", "redis-server"];
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";

test("a missing redis-server and browser are named with their install commands, before any build", () => {
  const { code, output } = run([], { tools: ALL.filter((t) => t !== "redis-server"), chromium: "/nonexistent/chromium" });
  assert.equal(code, 1, output);
  assert.match(output, /missing: redis-server; install it with: apt-get install -y redis-server/);
  assert.match(output, /missing: chromium at \/nonexistent\/chromium; install it with: apt-get install -y chromium/);
  assert.match(output, /cannot run the tests without: redis-server/);
  assert.doesNotMatch(output, /cargo fmt|cargo build/, "nothing is built when a prerequisite is missing");
});

test("a missing node and npm are named too", () => {
  const { code, output } = run(["--check"], { tools: ALL.filter((t) => t !== "node" && t !== "npm"), chromium: CHROMIUM });
  assert.equal(code, 1, output);
  assert.match(output, /missing: node; install it with: apt-get install -y nodejs npm/);
  assert.match(output, /missing: npm; install it with: apt-get install -y npm/);
});

test("--check: a missing browser alone would skip the browser tests, and fails", () => {
  const { code, output } = run(["--check"], { tools: ALL, chromium: "/nonexistent/chromium" });
  assert.equal(code, 1, output);
  assert.match(output, /install it with: apt-get install -y chromium/);
  assert.match(output, /would skip: browser tests/);
  assert.doesNotMatch(output, /cannot run the tests without/, "the other suites would still run");
});

test("--check passes when everything is present", { skip: !fs.existsSync(CHROMIUM) && "no Chromium here" }, () => {
  const { code, output } = run(["--check"], { tools: ALL, chromium: CHROMIUM });
  assert.equal(code, 0, output);
  assert.match(output, /all prerequisites present/);
});

test("an unknown argument is refused", () => {
  const { code, output } = run(["--bogus"], { tools: ALL, chromium: CHROMIUM });
  assert.equal(code, 2, output);
  assert.match(output, /usage: scripts\/test.sh \[--check\]/);
});
