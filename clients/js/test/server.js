// A real `roomcast serve` on a free port for one test file, HS256 tokens and publishing over
// HTTP, through the shared harness (tests/harness/js); what is this package's own: its key and
// secret, and waits on a RoomcastClient's events and states.
import * as harness from "../../../tests/harness/js/index.mjs";

export { delay, STREAM_TEXT, streamPieces } from "../../../tests/harness/js/index.mjs";

const JWT_SECRET = "client-test-secret-0123456789abcdef";
const API_KEY = "client-test-key";

/** Polls `probe` until truthy, or throws after `timeout` (default 5 s) ms. */
export function eventually(probe, { timeout = 5000, what = "condition" } = {}) {
  return harness.eventually(probe, { timeout, interval: 20, what });
}

/**
 * Starts a server. Options: historySize ([history] size), expiryWarningSecs
 * (auth.expiry_warning_secs), leewaySecs (default 0), extraToml (more sections, verbatim),
 * nodeId and cluster ({redisUrl, keyPrefix}: a node of that cluster).
 * Returns {url, mintToken, publish, streams, stop}.
 */
export async function startServer({ historySize, expiryWarningSecs, leewaySecs = 0, extraToml, nodeId, cluster } = {}) {
  const srv = await harness.startServer({
    config: (port) =>
      harness.configToml({
        port,
        jwtSecret: JWT_SECRET,
        leewaySecs,
        expiryWarningSecs,
        apiKeys: [{ name: "tests", key: API_KEY, scopes: ["publish", "read"] }],
        historySize,
        extraToml,
        nodeId,
        cluster,
      }),
    tmpPrefix: "roomcast-client-test-",
  });
  return {
    url: srv.url,
    stop: srv.stop,
    mintToken,
    /** The AI streams API (create, append, finish, fail, get), with the test key. */
    streams: harness.streamProducer(srv.url, API_KEY),
    /** POST /api/v1/events; resolves with the 202 body or throws. */
    async publish(type, data) {
      const res = await harness.publish(srv.url, API_KEY, { type, data });
      if (res.status !== 202) throw new Error(`publish ${type}: ${res.status} ${res.text}`);
      return JSON.parse(res.text);
    },
  };
}

/** An HS256 token for the test secret; `iat` is now and `exp` defaults to an hour from now. */
export function mintToken(claims = {}) {
  return harness.mintToken({ iat: Math.floor(Date.now() / 1000), ...claims }, { secret: JWT_SECRET });
}

/** Resolves with the next `type` event of `client` matching `match`. */
export function nextEvent(client, type, { match = () => true, timeout = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${type}`));
    }, timeout);
    const off = client.on(type, (arg) => {
      if (!match(arg)) return;
      clearTimeout(timer);
      off();
      resolve(arg);
    });
  });
}

/** Resolves once the client's state is `state`. */
export function waitForState(client, state, timeout = 5000) {
  if (client.state === state) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for state ${state} (now ${client.state})`));
    }, timeout);
    const off = client.onStateChange((s) => {
      if (s !== state) return;
      clearTimeout(timer);
      off();
      resolve();
    });
  });
}

/**
 * A redis-server and two nodes of one cluster on it: {a, b, stop}. The tests produce at one
 * node and follow at the other.
 */
export async function startCluster() {
  const redis = await harness.startRedis();
  const keyPrefix = `rc-client-${process.pid}-${Date.now()}`;
  const nodes = [];
  try {
    for (const nodeId of ["client-a", "client-b"]) {
      nodes.push(await startServer({ nodeId, cluster: { redisUrl: redis.url, keyPrefix } }));
    }
  } catch (err) {
    await Promise.all(nodes.map((n) => n.stop()));
    await redis.stop();
    throw err;
  }
  return {
    a: nodes[0],
    b: nodes[1],
    async stop() {
      await Promise.all(nodes.map((n) => n.stop()));
      await redis.stop();
    },
  };
}
