// The binary's configuration surface as an operator meets it: env overrides and check-config.

import { test, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import {
  startServer,
  connect,
  connectError,
  disconnectAll,
  waitForEvent,
  freePort,
  http,
  mintToken,
  runCli,
  buildConfigToml,
  JWT_SECRET,
  API_KEY,
  ACME_KEY,
} from "../lib/helpers.js";

const servers = [];
afterEach(async () => {
  disconnectAll();
  while (servers.length) await servers.pop().stop();
});
after(() => disconnectAll());

test("ROOMCAST_SERVER__BIND overrides [server] bind", async () => {
  const envPort = await freePort();
  const srv = await startServer({
    nodeId: "e2e-cli-bind",
    env: { ROOMCAST_SERVER__BIND: `127.0.0.1:${envPort}` },
    listenPort: envPort,
  });
  servers.push(srv);
  assert.notEqual(srv.configPort, envPort);
  assert.equal((await http(`${srv.url}/health`)).status, 200);
  await assert.rejects(
    http(`http://127.0.0.1:${srv.configPort}/health`),
    "nothing listens on the port from the file",
  );
});

test("ROOMCAST_AUTH__JWT_SECRET overrides [auth] jwt_secret", async () => {
  const envSecret = "env-secret-abcdefghijklmnopqrstuvwxyz-0123";
  const srv = await startServer({ nodeId: "e2e-cli-secret", env: { ROOMCAST_AUTH__JWT_SECRET: envSecret } });
  servers.push(srv);
  const socket = await connect(srv.url, { auth: { token: mintToken({ sub: "alice" }, { secret: envSecret }) } });
  assert.equal((await waitForEvent(socket, "connection.established")).user_id, "alice");
  assert.equal(
    await connectError(srv.url, { auth: { token: mintToken({ sub: "alice" }, { secret: JWT_SECRET }) } }),
    "token_invalid",
    "the file's secret no longer verifies",
  );
});

test("check-config accepts a valid file, prints the effective settings, masks secrets", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-js-e2e-cfg-"));
  try {
    const file = path.join(dir, "config.toml");
    fs.writeFileSync(file, buildConfigToml({ port: 18999, nodeId: "check-config-node", maxRoomsPerSocket: 7 }));
    const { code, stdout, stderr } = await runCli(["check-config", "--config", file]);
    assert.equal(code, 0, stderr);
    const out = stdout + stderr;
    assert.match(out, /check-config-node/, "effective settings include node_id");
    assert.match(out, /127\.0\.0\.1:18999/, "effective settings include bind");
    for (const secret of [JWT_SECRET, API_KEY, ACME_KEY]) {
      assert.ok(!out.includes(secret), `output must not contain the secret ${secret}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("check-config rejects an invalid file with a non-zero exit", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-js-e2e-cfg-"));
  try {
    const file = path.join(dir, "config.toml");
    fs.writeFileSync(file, "[server]\nbind = 12\n");
    const { code } = await runCli(["check-config", "--config", file]);
    assert.notEqual(code, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
