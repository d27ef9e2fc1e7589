// useStream: a component that renders an AI stream's exact text and status, and stops it.
import "global-jsdom/register"; // a DOM for React, before react-dom is loaded
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";

import { StrictMode, createElement as h } from "react";
import { act, cleanup, render, screen, waitFor } from "@testing-library/react";

import { createClient } from "../dist/index.js";
import { RoomcastProvider, useStream } from "../dist/react/index.js";
import { STREAM_TEXT, startServer, streamPieces } from "./server.js";

let srv;
const clients = [];
before(async () => {
  srv = await startServer();
});
afterEach(() => cleanup());
after(async () => {
  for (const c of clients) c.close();
  await srv?.stop();
});

function Answer({ streamId }) {
  const { text, status, error, cancel } = useStream(streamId, { room: "project:42" });
  return h(
    "div",
    null,
    h("pre", { "data-testid": "text" }, text),
    h("p", { "data-testid": "status" }, `${status}${error ? ` ${error.code}` : ""}`),
    h("button", { onClick: () => cancel("stop pressed") }, "Stop"),
  );
}

async function appendAll(id, pieces) {
  for (const piece of pieces) {
    const res = await srv.streams.append(id, piece);
    assert.equal(res.status, 202, res.text);
  }
}

test("useStream renders the exact text as it grows, then the status (StrictMode)", async () => {
  const client = createClient({ url: srv.url, token: srv.mintToken({ sub: "erin", projects: ["42"] }) });
  clients.push(client);
  const created = await srv.streams.create({ room: "project:42" });
  assert.equal(created.status, 201, created.text);
  const id = created.body.stream_id;
  const pieces = streamPieces(STREAM_TEXT);
  // Half of it before the component mounts: it resumes from 0.
  await appendAll(id, pieces.slice(0, 20));

  render(h(StrictMode, null, h(RoomcastProvider, { client }, h(Answer, { streamId: id }))));
  const opts = { timeout: 5000 };
  await waitFor(() => assert.equal(screen.getByTestId("text").textContent, pieces.slice(0, 20).join("")), opts);
  assert.equal(screen.getByTestId("status").textContent, "open");
  await appendAll(id, pieces.slice(20));
  assert.equal((await srv.streams.finish(id)).status, 200);
  await waitFor(() => assert.equal(screen.getByTestId("status").textContent, "finished"), opts);
  assert.equal(screen.getByTestId("text").textContent, STREAM_TEXT);
});

test("useStream's cancel stops the producer; a missing stream shows its error code", async () => {
  const client = createClient({ url: srv.url, token: srv.mintToken({ sub: "finn", projects: ["42"] }) });
  clients.push(client);
  const created = await srv.streams.create({ room: "project:42" });
  const id = created.body.stream_id;
  await appendAll(id, ["thinking… 🤔"]);
  const view = render(h(RoomcastProvider, { client }, h(Answer, { streamId: id })));
  await waitFor(() => assert.equal(screen.getByTestId("text").textContent, "thinking… 🤔"), { timeout: 5000 });
  await act(async () => screen.getByText("Stop").click());
  await waitFor(() => assert.equal(screen.getByTestId("status").textContent, "cancelled"), { timeout: 5000 });
  const refused = await srv.streams.append(id, "more");
  assert.equal(refused.status, 409);
  assert.equal(refused.body.error.code, "stream_cancelled");
  assert.equal(client.state, "connected");

  view.rerender(h(RoomcastProvider, { client }, h(Answer, { streamId: "gone" })));
  await waitFor(() => assert.equal(screen.getByTestId("status").textContent, "open stream_not_found"), { timeout: 5000 });
  assert.equal(screen.getByTestId("text").textContent, "");
});
