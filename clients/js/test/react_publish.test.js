import "global-jsdom/register"; // a DOM for React, before react-dom is loaded
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";

import { createElement as h } from "react";
import { act, cleanup, render, screen, waitFor } from "@testing-library/react";

import { createClient } from "../dist/index.js";
import { RoomcastProvider, usePublish, useRoom, useTyping } from "../dist/react/index.js";
import { nextEvent, startServer, waitForState } from "./server.js";

let srv;
const clients = [];
before(async () => {
  srv = await startServer({
    extraToml: '[client_events]\nrooms = ["project"]\nevents = ["chat.*", "typing.*"]',
  });
});
afterEach(() => cleanup());
after(async () => {
  for (const c of clients) c.close();
  await srv?.stop();
});

async function member(sub) {
  const client = createClient({ url: srv.url, token: srv.mintToken({ sub, projects: ["42"] }) });
  clients.push(client);
  await waitForState(client, "connected");
  return client;
}

/** A chat box: a send button (usePublish), a typing button and who else is typing (useTyping). */
function Chat({ name, room }) {
  const { status } = useRoom(room);
  const send = usePublish(room);
  const { others, typing, stop } = useTyping(room, { idleMs: 60_000 });
  return h(
    "div",
    null,
    h("p", { "data-testid": `${name}-status` }, status),
    h("button", { onClick: typing }, `${name} types`),
    h("button", { onClick: () => { stop(); void send("chat.message", { text: `from ${name}` }); } }, `${name} sends`),
    h("p", { "data-testid": `${name}-typing` }, others.length ? `${others.join(",")} typing` : "nobody typing"),
  );
}

test("useTyping shows who else is typing, and usePublish sends a chat message", async () => {
  const alice = await member("alice");
  const bob = await member("bob");
  render(
    h(
      "div",
      null,
      h(RoomcastProvider, { client: alice }, h(Chat, { name: "alice", room: "project:42" })),
      h(RoomcastProvider, { client: bob }, h(Chat, { name: "bob", room: "project:42" })),
    ),
  );
  for (const name of ["alice", "bob"]) {
    await waitFor(() => assert.equal(screen.getByTestId(`${name}-status`).textContent, "subscribed"));
  }

  await act(async () => screen.getByText("alice types").click());
  await waitFor(() => assert.equal(screen.getByTestId("bob-typing").textContent, "alice typing"));
  // Never oneself.
  assert.equal(screen.getByTestId("alice-typing").textContent, "nobody typing");

  const chat = nextEvent(bob, "chat.message");
  await act(async () => screen.getByText("alice sends").click());
  const env = await chat;
  assert.deepEqual(env.data, { text: "from alice" });
  assert.equal(env.from.user_id, "alice");
  assert.equal(env.seq, 1);
  // Sending stops the indicator at once (typing.stop), long before idleMs.
  await waitFor(() => assert.equal(screen.getByTestId("bob-typing").textContent, "nobody typing"));
});
