// `client.lock(resource, ttlMs)`, `renew` and `release` against a real server: one holder at a
// time, `locked` rejecting with who holds it and until when, tokens that grow.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { createClient, RoomcastError } from "../dist/index.js";
import { startServer, waitForState } from "./server.js";

let srv;
const clients = [];

async function client(sub) {
  const c = createClient({ url: srv.url, token: srv.mintToken({ sub, projects: ["42"] }) });
  clients.push(c);
  await waitForState(c, "connected");
  return c;
}

async function rejection(promise) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof RoomcastError, String(err));
    return err;
  }
  assert.fail("the call succeeded");
}

before(async () => {
  srv = await startServer();
});
after(async () => {
  for (const c of clients) c.close();
  await srv?.stop();
});

describe("locks", () => {
  test("lock, locked, renew, release", async () => {
    const [alice, bob] = [await client("alice"), await client("bob")];
    const grant = await alice.lock("project:42/deploy", 10_000);
    assert.equal(grant.resource, "project:42/deploy");
    assert.ok(Number.isSafeInteger(grant.token) && grant.token > 0);

    const err = await rejection(bob.lock("project:42/deploy"));
    assert.equal(err.code, "locked");
    assert.deepEqual(err.holder, { user_id: "alice", kind: "socket" });
    assert.equal(err.expiresAt, grant.expires_at);

    const renewed = await alice.renew("project:42/deploy", grant.token, 60_000);
    assert.equal(renewed.token, grant.token);
    assert.ok(renewed.expires_at > grant.expires_at);
    assert.equal((await rejection(bob.release("project:42/deploy", grant.token))).code, "not_holder");
    await alice.release("project:42/deploy", grant.token);
    assert.equal((await rejection(alice.renew("project:42/deploy", grant.token))).code, "lock_lost");

    const next = await bob.lock("project:42/deploy");
    assert.ok(next.token > grant.token);
    assert.equal((await rejection(bob.lock("project:7/deploy"))).code, "forbidden");
  });
});
