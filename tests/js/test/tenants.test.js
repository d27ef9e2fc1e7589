// Tenant isolation: every room is scoped to the socket's tenant.

import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";

import {
  startServer,
  connectAs,
  disconnectAll,
  waitForEnvelope,
  emitWithAck,
  expectNoEvent,
  publish,
  publishOk,
  broadcast,
  assertEnvelope,
  ACME_KEY,
} from "../lib/helpers.js";

let srv;

before(async () => {
  srv = await startServer({ nodeId: "e2e-tenants" });
});
after(async () => {
  disconnectAll();
  await srv?.stop();
});
afterEach(() => disconnectAll());

async function inProject1(tenant, sub = "alice") {
  const s = await connectAs(srv, { sub, tenant, projects: ["1"] });
  assert.deepEqual((await emitWithAck(s, "subscribe", { room: "project:1" })).rooms, ["project:1"]);
  return s;
}

test("acme and globex both in project:1: a publish to acme reaches only acme", async () => {
  const acme = await inProject1("acme");
  const globex = await inProject1("globex");
  const dflt = await inProject1(undefined);
  const data = { project_id: "1", status: "acme-only" };
  const accepted = await publishOk(srv, { type: "project.updated", tenant: "acme", data });
  assert.equal(accepted.tenant, "acme");
  assertEnvelope(await waitForEnvelope(acme, "project.updated", accepted.id), {
    id: accepted.id,
    type: "project.updated",
    room: "project:1", // public name, no tenant prefix
    data,
  });
  const notMine = (e) => e?.id === accepted.id;
  await expectNoEvent(globex, "project.updated", { match: notMine, barrier: { srv, tenant: "globex" } });
  await expectNoEvent(dflt, "project.updated", { match: notMine, barrier: { srv } });
});

test("and the other way round: globex's publish reaches only globex", async () => {
  const acme = await inProject1("acme");
  const globex = await inProject1("globex");
  const accepted = await publishOk(srv, { type: "project.updated", tenant: "globex", data: { project_id: "1" } });
  await waitForEnvelope(globex, "project.updated", accepted.id);
  await expectNoEvent(acme, "project.updated", {
    match: (e) => e?.id === accepted.id,
    barrier: { srv, tenant: "acme" },
  });
});

test("no tenant in the body publishes to tenant \"default\"", async () => {
  const acme = await inProject1("acme");
  const dflt = await inProject1(undefined);
  const accepted = await publishOk(srv, { type: "project.updated", data: { project_id: "1" } });
  assert.equal(accepted.tenant, "default");
  await waitForEnvelope(dflt, "project.updated", accepted.id);
  await expectNoEvent(acme, "project.updated", {
    match: (e) => e?.id === accepted.id,
    barrier: { srv, tenant: "acme" },
  });
});

test("global is per tenant", async () => {
  const acme = await connectAs(srv, { sub: "alice", tenant: "acme" });
  const globex = await connectAs(srv, { sub: "alice", tenant: "globex" });
  const data = { title: "acme news", message: "only for acme" };
  const accepted = await publishOk(srv, { type: "system.notification", tenant: "acme", data });
  assertEnvelope(await waitForEnvelope(acme, "system.notification", accepted.id), {
    id: accepted.id,
    type: "system.notification",
    room: "global",
    data,
  });
  await expectNoEvent(globex, "system.notification", {
    match: (e) => e?.id === accepted.id,
    barrier: { srv, tenant: "globex" },
  });
});

test("user:<sub> is per tenant: the same user id in two tenants", async () => {
  const acme = await connectAs(srv, { sub: "alice", tenant: "acme" });
  const globex = await connectAs(srv, { sub: "alice", tenant: "globex" });
  const accepted = await publishOk(srv, {
    type: "ai.suggestion",
    tenant: "globex",
    data: { suggestion_id: "s1", content: "for globex alice", user_id: "alice" },
  });
  await waitForEnvelope(globex, "ai.suggestion", accepted.id);
  await expectNoEvent(acme, "ai.suggestion", {
    match: (e) => e?.id === accepted.id,
    barrier: { srv, tenant: "acme" },
  });
});

test("custom broadcasts are tenant-scoped too", async () => {
  const acme = await inProject1("acme");
  const globex = await inProject1("globex");
  const res = await broadcast(srv.url, srv.apiKey, { room: "project:1", event: "deploy.done", data: { v: 1 }, tenant: "globex" });
  assert.equal(res.status, 202, res.text);
  await waitForEnvelope(globex, "deploy.done", res.body.id);
  await expectNoEvent(acme, "deploy.done", { barrier: { srv, tenant: "acme" } });
});

test("an acme admin cannot reach globex rooms", async () => {
  const admin = await connectAs(srv, { sub: "root", tenant: "acme", role: "admin" });
  assert.deepEqual((await emitWithAck(admin, "subscribe", { room: "project:1" })).rooms, ["project:1"]);
  const accepted = await publishOk(srv, { type: "project.updated", tenant: "globex", data: { project_id: "1" } });
  await expectNoEvent(admin, "project.updated", {
    match: (e) => e?.id === accepted.id,
    barrier: { srv, tenant: "acme" },
  });
});

test("a tenant-bound key publishes to its own tenant", async () => {
  const acme = await inProject1("acme");
  const res = await publish(srv.url, ACME_KEY, { type: "project.updated", tenant: "acme", data: { project_id: "1" } });
  assert.equal(res.status, 202, res.text);
  assert.equal(res.body.tenant, "acme");
  await waitForEnvelope(acme, "project.updated", res.body.id);
});
