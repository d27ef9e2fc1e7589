// Cluster helpers: one redis-server plus N Roomcast nodes sharing its URL and a key prefix unique
// to the test file, and the cluster-only HTTP endpoints (presence, user disconnect).

import { randomUUID } from "node:crypto";
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";

import { startServer, eventually, http, stats, API_KEY } from "./helpers.js";
import { startRedis } from "../../harness/js/index.mjs";

export const NODE_TTL_SECS = 3;
export const PRESENCE_GRACE_SECS = 1;
/** How long a SIGKILLed node may keep counting: the TTL plus a heartbeat plus slack. */
export const NODE_DEATH_DEADLINE_MS = 15_000;

/** A tenant-bound key with the read scope, for the presence endpoint's tenant rule. */
export const ACME_READ_KEY = "acme-read-key";
const EXTRA_KEYS = [{ name: "acme-reader", key: ACME_READ_KEY, tenant: "acme", scopes: ["read"] }];

/**
 * Starts a redis-server and `names.length` nodes (node_id = `${name}`), all with the same
 * redis_url and a fresh key_prefix, and waits until every node is ready and sees every other in
 * stats.cluster.nodes. Returns {redis, keyPrefix, nodes: {name: srv}, list: [srv...], addNode(opts),
 * stop()}.
 */
export async function startCluster(names, { label = "e2e", nodeOptions = {} } = {}) {
  const redis = await startRedis();
  const keyPrefix = `rc-${label}-${randomUUID().slice(0, 8)}`;
  const cluster = { redis, keyPrefix, nodes: {}, list: [] };

  cluster.nodeOptions = (nodeId, opts = {}) => ({
    extraApiKeys: EXTRA_KEYS,
    ...nodeOptions,
    ...opts,
    nodeId,
    cluster: { redisUrl: redis.url, keyPrefix, ...(nodeOptions.cluster ?? {}), ...(opts.cluster ?? {}) },
  });

  /** Starts one more node in this cluster (not waited into stats unless it is ready). */
  cluster.addNode = async (nodeId, opts = {}) => {
    const srv = await startServer(cluster.nodeOptions(nodeId, opts));
    cluster.nodes[nodeId] = srv;
    cluster.list.push(srv);
    return srv;
  };

  cluster.stop = async () => {
    await Promise.all(cluster.list.map((s) => s.stop()));
    await redis.stop();
  };

  try {
    await Promise.all(names.map((n) => cluster.addNode(n)));
    await waitForNodes(cluster.list[0], names);
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

/** The `cluster` object of GET /api/v1/websocket/stats at `srv` (asserts 200). */
export async function clusterStats(srv) {
  const res = await stats(srv.url, API_KEY);
  assert.equal(res.status, 200, `stats: ${res.status} ${res.text}`);
  assert.ok(res.body?.cluster && typeof res.body.cluster === "object", `stats has a cluster object: ${res.text}`);
  return res.body.cluster;
}

function nodeIds(c) {
  return (c.nodes ?? []).map((n) => n.node_id).sort();
}

/** Waits until stats.cluster.nodes at `srv` lists exactly `ids`; resolves with that cluster object. */
export function waitForNodes(srv, ids, { timeout = 10_000 } = {}) {
  const want = [...ids].sort();
  return eventually(
    async () => {
      const c = await clusterStats(srv);
      return isDeepStrictEqual(nodeIds(c), want) ? c : null;
    },
    { timeout, interval: 100, what: `stats.cluster.nodes at ${srv.nodeId} == ${JSON.stringify(want)}` },
  );
}

/** GET /api/v1/rooms/{room}/presence?tenant= */
export function presence(url, key, room, { tenant } = {}) {
  const q = tenant === undefined ? "" : `?tenant=${encodeURIComponent(tenant)}`;
  return http(`${url}/api/v1/rooms/${encodeURIComponent(room)}/presence${q}`, { key });
}

/** Presence body (asserts 200). */
export async function presenceOk(srv, room, opts) {
  const res = await presence(srv.url, API_KEY, room, opts);
  assert.equal(res.status, 200, `presence ${room}: ${res.status} ${res.text}`);
  return res.body;
}

/** Waits until the presence of `room` at `srv` deep-equals `expected` ({users, connections}). */
export function waitForPresence(srv, room, expected, { tenant, timeout = 10_000 } = {}) {
  let seen;
  return eventually(
    async () => {
      const b = await presenceOk(srv, room, { tenant });
      seen = { users: b.users, connections: b.connections };
      return isDeepStrictEqual(seen, expected) ? b : null;
    },
    { timeout, interval: 100, what: `presence of ${room} at ${srv.nodeId} == ${JSON.stringify(expected)}` },
  ).catch((err) => {
    err.message += `; last seen: ${JSON.stringify(seen)}`;
    throw err;
  });
}

/** POST /api/v1/users/{user_id}/disconnect?tenant= */
export function disconnectUser(url, key, userId, { tenant } = {}) {
  const q = tenant === undefined ? "" : `?tenant=${encodeURIComponent(tenant)}`;
  return http(`${url}/api/v1/users/${encodeURIComponent(userId)}/disconnect${q}`, { method: "POST", key });
}

/** Resolves with the disconnect reason the next time `socket` disconnects. */
export function nextDisconnect(socket, { timeout = 5_000 } = {}) {
  return new Promise((resolve, reject) => {
    if (!socket.connected) {
      reject(new Error(`socket ${socket.id} is already disconnected`));
      return;
    }
    const timer = setTimeout(() => {
      socket.off("disconnect", onDisconnect);
      reject(new Error(`socket ${socket.id} was not disconnected within ${timeout} ms`));
    }, timeout);
    function onDisconnect(reason) {
      clearTimeout(timer);
      resolve(reason);
    }
    socket.once("disconnect", onDisconnect);
  });
}
