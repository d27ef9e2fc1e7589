// Handshake: where the token may come from, every connect_error code, the CLI token and the
// connection.established payload.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";

import jwt from "jsonwebtoken";

import {
  startServer,
  connect,
  connectError,
  disconnectAll,
  waitForEvent,
  emitWithAck,
  mintToken,
  unsignedToken,
  assertServerTime,
  JWT_SECRET,
  withoutPositions,
} from "../lib/helpers.js";

const NODE_ID = "e2e-handshake-node";
let srv;

before(async () => {
  srv = await startServer({ nodeId: NODE_ID });
});
after(async () => {
  disconnectAll();
  await srv?.stop();
});
afterEach(() => disconnectAll());

const now = () => Math.floor(Date.now() / 1000);

/** A connected socket proves the server identified the user: connection.established names it. */
async function assertConnectedAs(socket, sub, tenant = "default") {
  const established = await waitForEvent(socket, "connection.established");
  assert.equal(established.user_id, sub);
  assert.equal(established.tenant, tenant);
  return established;
}

describe("token locations", () => {
  test("auth.token in the handshake payload", async () => {
    const socket = await connect(srv.url, { auth: { token: mintToken({ sub: "alice" }) } });
    await assertConnectedAs(socket, "alice");
  });

  test("Authorization: Bearer header (extraHeaders), polling then upgrade", async () => {
    const socket = await connect(srv.url, {
      extraHeaders: { authorization: `Bearer ${mintToken({ sub: "hdr-user" })}` },
    });
    await assertConnectedAs(socket, "hdr-user");
  });

  test("Authorization: Bearer header on a websocket-only connection", async () => {
    const socket = await connect(srv.url, {
      transports: ["websocket"],
      extraHeaders: { authorization: `Bearer ${mintToken({ sub: "hdr-ws-user" })}` },
    });
    await assertConnectedAs(socket, "hdr-ws-user");
  });

  test("?token= query parameter", async () => {
    const socket = await connect(srv.url, { query: { token: mintToken({ sub: "query-user" }) } });
    await assertConnectedAs(socket, "query-user");
  });

  test("?token= query parameter on a websocket-only connection", async () => {
    const socket = await connect(srv.url, {
      transports: ["websocket"],
      query: { token: mintToken({ sub: "query-ws-user" }) },
    });
    await assertConnectedAs(socket, "query-ws-user");
  });

  test("auth.token is read before the header and the query", async () => {
    const socket = await connect(srv.url, {
      auth: { token: mintToken({ sub: "first" }) },
      extraHeaders: { authorization: `Bearer ${mintToken({ sub: "second" })}` },
      query: { token: mintToken({ sub: "third" }) },
    });
    await assertConnectedAs(socket, "first");
  });

  test("the header is read before the query", async () => {
    const socket = await connect(srv.url, {
      extraHeaders: { authorization: `Bearer ${mintToken({ sub: "second" })}` },
      query: { token: mintToken({ sub: "third" }) },
    });
    await assertConnectedAs(socket, "second");
  });
});

describe("connect_error codes", () => {
  test("token_missing: no token anywhere", async () => {
    assert.equal(await connectError(srv.url, {}), "token_missing");
  });

  test("token_missing: empty auth object, websocket-only", async () => {
    assert.equal(await connectError(srv.url, { auth: {}, transports: ["websocket"] }), "token_missing");
  });

  test("token_invalid: garbage", async () => {
    assert.equal(await connectError(srv.url, { auth: { token: "not-a-jwt" } }), "token_invalid");
  });

  test("token_invalid: garbage in the Authorization header", async () => {
    assert.equal(
      await connectError(srv.url, { extraHeaders: { authorization: "Bearer garbage.garbage.garbage" } }),
      "token_invalid",
    );
  });

  test("token_invalid: garbage in the query", async () => {
    assert.equal(await connectError(srv.url, { query: { token: "xyz" } }), "token_invalid");
  });

  test("token_invalid: tampered signature", async () => {
    const token = mintToken({ sub: "alice" });
    const [h, p, sig] = token.split(".");
    const flipped = (sig[0] === "A" ? "B" : "A") + sig.slice(1);
    assert.equal(await connectError(srv.url, { auth: { token: `${h}.${p}.${flipped}` } }), "token_invalid");
  });

  test("token_invalid: tampered payload (admin role added) with the original signature", async () => {
    const token = mintToken({ sub: "alice" });
    const [h, , sig] = token.split(".");
    const forged = Buffer.from(JSON.stringify({ sub: "alice", role: "admin", exp: now() + 3600 })).toString("base64url");
    assert.equal(await connectError(srv.url, { auth: { token: `${h}.${forged}.${sig}` } }), "token_invalid");
  });

  test("token_invalid: alg none, crafted by hand", async () => {
    const token = unsignedToken({ sub: "alice", exp: now() + 3600, role: "admin" });
    assert.equal(await connectError(srv.url, { auth: { token } }), "token_invalid");
  });

  test("token_invalid: HS256 signed with the wrong secret", async () => {
    const token = mintToken({ sub: "alice" }, { secret: "another-secret-that-is-long-enough-0123" });
    assert.equal(await connectError(srv.url, { auth: { token } }), "token_invalid");
  });

  test("token_invalid: RS256 token (wrong algorithm family for an HMAC secret)", async () => {
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const token = jwt.sign({ sub: "alice", exp: now() + 3600 }, privateKey, { algorithm: "RS256" });
    assert.equal(await connectError(srv.url, { auth: { token } }), "token_invalid");
  });

  for (const sub of ["alice smith", "al/ice", "alice:admin", "", "a".repeat(129), "ålice"]) {
    test(`token_invalid: sub ${JSON.stringify(sub.length > 20 ? sub.slice(0, 8) + "…(" + sub.length + ")" : sub)}`, async () => {
      assert.equal(await connectError(srv.url, { auth: { token: mintToken({ sub }) } }), "token_invalid");
    });
  }

  test("a sub of exactly 128 allowed characters is accepted", async () => {
    const sub = "A-z_0.9".repeat(19).slice(0, 128);
    assert.equal(sub.length, 128);
    const socket = await connect(srv.url, { auth: { token: mintToken({ sub }) } });
    await assertConnectedAs(socket, sub);
  });

  test("token_invalid: no sub claim", async () => {
    assert.equal(await connectError(srv.url, { auth: { token: mintToken({ tenant: "acme" }) } }), "token_invalid");
  });

  test("token_invalid: no exp claim", async () => {
    assert.equal(
      await connectError(srv.url, { auth: { token: mintToken({ sub: "alice", exp: undefined }) } }),
      "token_invalid",
    );
  });

  test("token_invalid: tenant with invalid characters", async () => {
    assert.equal(
      await connectError(srv.url, { auth: { token: mintToken({ sub: "alice", tenant: "ac me/x" }) } }),
      "token_invalid",
    );
  });

  test("token_expired: exp an hour ago", async () => {
    const token = mintToken({ sub: "alice", exp: now() - 3600 });
    assert.equal(await connectError(srv.url, { auth: { token } }), "token_expired");
  });

  test("token_expired: exp 5 s ago (leeway_secs = 0 in the config is honoured)", async () => {
    const token = mintToken({ sub: "alice", exp: now() - 5 });
    assert.equal(await connectError(srv.url, { auth: { token } }), "token_expired");
  });

  test("token_expired: via the query parameter too", async () => {
    const token = mintToken({ sub: "alice", exp: now() - 3600 });
    assert.equal(await connectError(srv.url, { query: { token } }), "token_expired");
  });

  test("the /ws namespace refuses the same way", async () => {
    assert.equal(await connectError(`${srv.url}/ws`, {}), "token_missing");
    assert.equal(await connectError(`${srv.url}/ws`, { auth: { token: "nope" } }), "token_invalid");
    const expired = mintToken({ sub: "alice", exp: now() - 3600 });
    assert.equal(await connectError(`${srv.url}/ws`, { auth: { token: expired } }), "token_expired");
  });
});

describe("issuer and audience, when configured, are required", () => {
  let pinned;
  before(async () => {
    pinned = await startServer({ nodeId: "e2e-handshake-iss", issuer: "https://auth.example.com", audience: "roomcast" });
  });
  after(async () => {
    disconnectAll();
    await pinned?.stop();
  });

  const iss = "https://auth.example.com";
  test("matching iss and aud connect", async () => {
    const socket = await connect(pinned.url, { auth: { token: mintToken({ sub: "alice", iss, aud: "roomcast" }) } });
    await assertConnectedAs(socket, "alice");
  });

  for (const [label, claims] of [
    ["no iss / aud", { sub: "alice" }],
    ["wrong iss", { sub: "alice", iss: "https://evil.example.com", aud: "roomcast" }],
    ["wrong aud", { sub: "alice", iss, aud: "other-service" }],
    ["no aud", { sub: "alice", iss }],
  ]) {
    test(`token_invalid: ${label}`, async () => {
      assert.equal(await connectError(pinned.url, { auth: { token: mintToken(claims) } }), "token_invalid");
    });
  }
});

describe("roomcast token CLI", () => {
  test("prints exactly one JWT and a newline; the token connects and carries its claims", async () => {
    const out = await srv.cliToken(["--sub", "alice", "--projects", "1"]);
    assert.match(out, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\n$/, "stdout is one JWT + newline");
    const token = out.trim();
    const header = JSON.parse(Buffer.from(token.split(".")[0], "base64url").toString());
    assert.equal(header.alg, "HS256");
    // Signed with the configured secret.
    const claims = jwt.verify(token, JWT_SECRET, { algorithms: ["HS256"] });
    assert.equal(claims.sub, "alice");
    assert.ok(claims.exp > now(), "exp in the future");

    const socket = await connect(srv.url, { auth: { token } });
    await assertConnectedAs(socket, "alice");
    // The projects claim is honoured: project:1 allowed, project:2 not.
    assert.deepEqual(withoutPositions(await emitWithAck(socket, "subscribe", { room: "project:1" })), { ok: true, rooms: ["project:1"] });
    const denied = await emitWithAck(socket, "subscribe", { room: "project:2" });
    assert.equal(denied.ok, false);
    assert.equal(denied.error.code, "forbidden");
  });

  test("--tenant and --role admin end up in the token", async () => {
    const token = (await srv.cliToken(["--sub", "root", "--tenant", "acme", "--role", "admin"])).trim();
    const socket = await connect(srv.url, { auth: { token } });
    await assertConnectedAs(socket, "root", "acme");
    const ack = await emitWithAck(socket, "subscribe", { rooms: ["project:77", "user:someone-else"] });
    assert.deepEqual(withoutPositions(ack), { ok: true, rooms: ["project:77", "user:someone-else"] });
  });
});

describe("connection.established", () => {
  test("carries sid, user_id, tenant, rooms, server_time and node_id", async () => {
    const socket = await connect(srv.url, { auth: { token: mintToken({ sub: "alice", tenant: "acme" }) } });
    const established = await waitForEvent(socket, "connection.established");
    assert.deepEqual(
      Object.keys(established).sort(),
      ["node_id", "positions", "recovered", "recovery", "rooms", "server_time", "sid", "tenant", "user_id"],
    );
    // Where each joined room is: the cursor to recover from, before any event.
    assert.deepEqual(Object.keys(established.positions).sort(), ["global", "user:alice"]);
    for (const p of Object.values(established.positions)) {
      assert.equal(typeof p.epoch, "string");
      assert.equal(typeof p.seq, "number");
    }
    // No `since` in the handshake: nothing to recover.
    assert.equal(established.recovered, false);
    assert.deepEqual(established.recovery, {});
    assert.equal(established.sid, socket.id, "sid equals the client's socket.id");
    assert.equal(established.user_id, "alice");
    assert.equal(established.tenant, "acme");
    assert.deepEqual([...established.rooms].sort(), ["global", "user:alice"]);
    assertServerTime(established.server_time);
    assert.equal(established.node_id, NODE_ID);
  });

  test("tenant defaults to \"default\"; sent exactly once", async () => {
    const socket = await connect(srv.url, { auth: { token: mintToken({ sub: "bob" }) } });
    const established = await waitForEvent(socket, "connection.established");
    assert.equal(established.tenant, "default");
    assert.deepEqual([...established.rooms].sort(), ["global", "user:bob"]);
    // A ping round trip happens after connect; a duplicate would have arrived by then.
    await emitWithAck(socket, "ping");
    assert.equal(socket.inbox.filter((e) => e.name === "connection.established").length, 1);
  });

  test("on the /ws namespace too, with the namespace socket id", async () => {
    const socket = await connect(`${srv.url}/ws`, { auth: { token: mintToken({ sub: "carol" }) } });
    const established = await waitForEvent(socket, "connection.established");
    assert.equal(established.sid, socket.id);
    assert.equal(established.user_id, "carol");
    assert.equal(established.node_id, NODE_ID);
  });
});
