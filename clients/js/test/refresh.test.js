import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { createClient } from "../dist/index.js";
import { delay, nextEvent, startServer, waitForState } from "./server.js";

let srv;
let client;
before(async () => {
  srv = await startServer({ expiryWarningSecs: 2, leewaySecs: 0 });
});
after(async () => {
  client?.close();
  await srv?.stop();
});

test("on auth.expiring the client refreshes with getToken and stays connected past the first expiry", async () => {
  const firstExp = Math.floor(Date.now() / 1000) + 3;
  let calls = 0;
  client = createClient({
    url: srv.url,
    getToken: async () => {
      calls += 1;
      // The first token expires in ~3 s; later ones in an hour.
      return calls === 1 ? srv.mintToken({ sub: "hank", exp: firstExp }) : srv.mintToken({ sub: "hank" });
    },
  });
  const states = [];
  client.onStateChange((s) => states.push(s));
  await waitForState(client, "connected");
  const sid = client.socket.id;

  const expiring = await nextEvent(client, "expiring", { timeout: 5000 });
  assert.ok(expiring.expires_in_secs <= 2);
  const refreshed = await nextEvent(client, "refreshed", { timeout: 5000 });
  assert.deepEqual(refreshed.left_rooms, []);
  assert.equal(calls, 2);

  // Past the first token's expiry (plus a margin).
  const wait = firstExp * 1000 + 1500 - Date.now();
  if (wait > 0) await delay(wait);
  assert.equal(client.state, "connected");
  assert.equal(client.socket.connected, true);
  assert.equal(client.socket.id, sid, "the same socket, never reconnected");
  assert.deepEqual(states, ["connected"]);
  const pong = await client.ping();
  assert.equal(pong.pong, true);
});

test("with a fixed token, refresh(token) is what later reconnects send", async () => {
  const firstExp = Math.floor(Date.now() / 1000) + 2;
  const fixed = createClient({
    url: srv.url,
    token: srv.mintToken({ sub: "iris", exp: firstExp }),
    reconnectionDelay: 100,
    reconnectionDelayMax: 200,
  });
  try {
    await waitForState(fixed, "connected");
    await fixed.refresh(srv.mintToken({ sub: "iris" }));
    // Past the first token's expiry, the transport drops: the reconnect must carry the new token.
    const wait = firstExp * 1000 + 500 - Date.now();
    if (wait > 0) await delay(wait);
    const established = nextEvent(fixed, "established", { timeout: 5000 });
    fixed.socket.io.engine.close();
    assert.equal((await established).user_id, "iris");
    assert.equal(fixed.state, "connected");
  } finally {
    fixed.close();
  }
});
