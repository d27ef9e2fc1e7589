// Budgets before and at authentication, as the stock socket.io-client sees them: a user who
// reconnects in a loop is refused `rate_limited` past the user's handshake budget, and a
// handshake over the address's budget is answered HTTP 429 before any session exists (the
// client sees a transport error with that status and retries by itself).

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";

import { startServer, connect, disconnectAll, mintToken, eventually, http } from "../lib/helpers.js";

describe("handshakes per user", () => {
  let srv;
  before(async () => {
    srv = await startServer({
      nodeId: "e2e-preauth-user",
      limits: { handshakes_per_user_per_sec: 1, handshakes_per_user_burst: 3 },
    });
  });
  after(async () => {
    disconnectAll();
    await srv?.stop();
  });
  afterEach(() => disconnectAll());

  test("a client reconnecting in a loop is refused rate_limited past the budget", async () => {
    const token = mintToken({ sub: "alice", tenant: "acme" });
    const outcomes = [];
    for (let i = 0; i < 8; i++) {
      try {
        const socket = await connect(srv.url, { auth: { token }, reconnection: false });
        outcomes.push("connected");
        socket.disconnect();
      } catch (err) {
        outcomes.push(err.message);
      }
    }
    assert.deepEqual(outcomes.slice(0, 3), ["connected", "connected", "connected"], `${outcomes}`);
    assert.equal(outcomes.at(-1), "rate_limited", `${outcomes}`);
    assert.ok(outcomes.filter((o) => o === "connected").length <= 4, `${outcomes}`);
    assert.ok(outcomes.every((o) => o === "connected" || o === "rate_limited"), `${outcomes}`);
    // Another user, and the same sub in another tenant, have their own budgets.
    for (const claims of [{ sub: "bob", tenant: "acme" }, { sub: "alice", tenant: "other" }]) {
      const socket = await connect(srv.url, { auth: { token: mintToken(claims) } });
      socket.disconnect();
    }
    // The budget refills.
    await eventually(
      async () => {
        const socket = await connect(srv.url, { auth: { token }, reconnection: false });
        socket.disconnect();
        return true;
      },
      { what: "a reconnect after the refill", interval: 200 },
    );
  });
});

describe("handshakes per address", () => {
  let srv;
  before(async () => {
    srv = await startServer({
      nodeId: "e2e-preauth-ip",
      limits: { handshake_exempt: [], handshakes_per_ip_per_sec: 1, handshakes_per_ip_burst: 2 },
    });
  });
  after(async () => {
    disconnectAll();
    await srv?.stop();
  });
  afterEach(() => disconnectAll());

  test("over the budget the client gets a transport error with status 429 and no session", async () => {
    const token = mintToken({ sub: "carol" });
    for (let i = 0; i < 2; i++) {
      (await connect(srv.url, { auth: { token }, transports: ["polling"] })).disconnect();
    }
    const err = await connect(srv.url, { auth: { token }, transports: ["polling"], reconnection: false }).then(
      (s) => {
        s.disconnect();
        return null;
      },
      (e) => e,
    );
    assert.ok(err, "the third handshake must be refused");
    assert.equal(err.message, "xhr poll error");
    const res = await http(`${srv.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(res.status, 429);
    assert.equal(res.body.code, "rate_limited");
    assert.ok(res.body.retry_after_ms >= 1, JSON.stringify(res.body));
  });
});
