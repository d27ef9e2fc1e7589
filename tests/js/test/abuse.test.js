// An abusive socket is told why and does not loop (WEBSOCKET_API.md section 4.4a): a socket that
// emits 300 events at once gets its `rate_limited` refusals, then the `error` event
// `rate_limit_exceeded`, then a server disconnect ("io server disconnect"), which socket.io-client
// does not retry, even with reconnection on.

import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";

import { connectAs, disconnectAll, eventually, startServer } from "../lib/helpers.js";

/** limits.event_abuse_refusals, by default. */
const REFUSALS = 20;
/** Some weight to each event: the client is still sending when the server gives up. */
const PAD = "x".repeat(1024);

let srv;
before(async () => {
  srv = await startServer();
});
afterEach(() => disconnectAll());
after(async () => {
  disconnectAll();
  await srv?.stop();
});

for (const transport of ["websocket", "polling"]) {
  test(`${transport}: 300 events at once: refused, told rate_limit_exceeded, disconnected by the server for good`, async () => {
    const socket = await connectAs(srv, { sub: `abuser-${transport}` }, { transports: [transport], reconnection: true });
    const log = []; // what the client observed, in order
    socket.on("error", (e) => log.push(`error:${e.code}`));
    socket.on("disconnect", (reason) => log.push(`disconnect:${reason}`));
    let reconnects = 0;
    socket.io.on("reconnect_attempt", () => reconnects++);
    for (let i = 0; i < 300; i++) {
      socket.emit("ping", { pad: PAD }, (ack) => {
        if (ack?.ok === false) log.push(`ack:${ack.error.code}`);
      });
    }
    await eventually(() => log.some((e) => e.startsWith("disconnect:")), { what: `the disconnect (so far: ${log})` });

    assert.equal(log.filter((e) => e === "ack:rate_limited").length, REFUSALS, `the refusals: ${log}`);
    // The notice, then the server's disconnect, last.
    assert.deepEqual(log.slice(-2), ["error:rate_limit_exceeded", "disconnect:io server disconnect"], `${log}`);
    // socket.io-client gives up on a server disconnect: no reconnection loop.
    assert.equal(socket.active, false, "the client would reconnect");
    assert.equal(reconnects, 0);
  });
}
