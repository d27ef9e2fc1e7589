import "global-jsdom/register"; // a DOM for React, before react-dom is loaded
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";

import { StrictMode, createElement as h, useState } from "react";
import { act, cleanup, render, screen, waitFor } from "@testing-library/react";

import { createClient } from "../dist/index.js";
import { RoomcastProvider, useConnectionState, useEvent, useRoom } from "../dist/react/index.js";
import { eventually, startServer, waitForState } from "./server.js";

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

function newClient(sub) {
  const client = createClient({ url: srv.url, token: srv.mintToken({ sub, projects: "*" }) });
  clients.push(client);
  // Every command this client sends, in order.
  client.sent = [];
  client.socket.onAnyOutgoing((name, payload) => client.sent.push([name, payload]));
  return client;
}

function Room({ room, onEvent }) {
  const state = useConnectionState();
  const [last, setLast] = useState(null);
  const { status, error } = useRoom(room, {
    "project.updated": (env) => {
      setLast(env);
      onEvent(env);
    },
  });
  return h(
    "div",
    null,
    h("p", { "data-testid": "room" }, `${state} ${status}${error ? ` ${error.code}` : ""}`),
    h("p", { "data-testid": "last" }, last ? `${last.room} is ${last.data.status}` : "no event yet"),
  );
}

async function isSubscribed(client, room) {
  try {
    await client.presence(room);
    return true;
  } catch (err) {
    if (err.code === "not_subscribed") return false;
    throw err;
  }
}

for (const strict of [false, true]) {
  test(`useRoom subscribes, receives an event and unsubscribes on unmount${strict ? " (StrictMode)" : ""}`, async () => {
    const client = newClient(strict ? "strict" : "plain");
    const room = strict ? "project:2" : "project:1";
    const events = [];
    const tree = h(RoomcastProvider, { client }, h(Room, { room, onEvent: (env) => events.push(env) }));
    const view = render(strict ? h(StrictMode, null, tree) : tree);

    await waitFor(() => assert.equal(screen.getByTestId("room").textContent, "connected subscribed"), { timeout: 5000 });
    assert.equal(await isSubscribed(client, room), true);

    assert.equal(screen.getByTestId("last").textContent, "no event yet");
    const published = await srv.publish("project.updated", { project_id: room.slice(8), status: "active" });
    // The component renders the event published over HTTP.
    await waitFor(() => assert.equal(screen.getByTestId("last").textContent, `${room} is active`), { timeout: 5000 });
    assert.equal(events.length, 1);
    assert.equal(events[0].id, published.id);
    assert.equal(events[0].data.status, "active");

    view.unmount();
    await eventually(async () => !(await isSubscribed(client, room)), { what: "the unsubscribe" });
    const commands = client.sent.filter(([name]) => name === "subscribe" || name === "unsubscribe");
    // StrictMode's mount, unmount, mount sends one subscribe, not subscribe/unsubscribe/subscribe.
    assert.deepEqual(commands, [
      ["subscribe", { rooms: [room] }],
      ["unsubscribe", { rooms: [room] }],
    ]);
  });
}

test("useRoom reports a forbidden room; two components share one subscription", async () => {
  const client = createClient({ url: srv.url, token: srv.mintToken({ sub: "ivy", projects: ["1"] }) });
  clients.push(client);
  const sent = [];
  client.socket.onAnyOutgoing((name, payload) => sent.push([name, payload]));

  function Forbidden() {
    const { status, error } = useRoom("project:2");
    return h("p", { "data-testid": "forbidden" }, `${status} ${error?.code ?? ""}`);
  }
  function Shared({ id }) {
    const { status } = useRoom("project:1");
    return h("p", { "data-testid": `shared-${id}` }, status);
  }
  function App() {
    const [second, setSecond] = useState(true);
    return h(
      "div",
      null,
      h(Forbidden),
      h(Shared, { id: 1 }),
      second ? h(Shared, { id: 2 }) : null,
      h("button", { onClick: () => setSecond(false) }, "drop"),
    );
  }
  render(h(StrictMode, null, h(RoomcastProvider, { client }, h(App))));
  await waitFor(() => assert.equal(screen.getByTestId("forbidden").textContent, "error forbidden"), { timeout: 5000 });
  await waitFor(() => assert.equal(screen.getByTestId("shared-2").textContent, "subscribed"), { timeout: 5000 });
  assert.equal(screen.getByTestId("shared-1").textContent, "subscribed");

  await act(async () => screen.getByText("drop").click());
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(await isSubscribed(client, "project:1"), true, "still held by the first component");
  assert.deepEqual(
    sent.filter(([name, p]) => name.endsWith("subscribe") && p.rooms[0] === "project:1").map(([n]) => n),
    ["subscribe"],
  );
});

test("useEvent and useConnectionState follow the client", async () => {
  const client = newClient("jack");
  const notes = [];
  function Notes() {
    const state = useConnectionState();
    useEvent("system.notification", (env) => notes.push(env.data.title));
    return h("p", { "data-testid": "state" }, state);
  }
  render(h(RoomcastProvider, { client }, h(Notes)));
  await waitFor(() => assert.equal(screen.getByTestId("state").textContent, "connected"), { timeout: 5000 });
  await srv.publish("system.notification", { title: "hello", message: "world" });
  await waitFor(() => assert.deepEqual(notes, ["hello"]), { timeout: 5000 });

  act(() => client.close());
  await waitFor(() => assert.equal(screen.getByTestId("state").textContent, "disconnected"));
  await waitForState(client, "disconnected");
});
