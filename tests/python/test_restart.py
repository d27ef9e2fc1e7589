"""A deploy, as python-socketio sees it (WEBSOCKET_API.md section 2.8).

The client's server is stopped with SIGTERM and a new process is started on the same port;
events are published meanwhile. A stock client (sync `Client` and `AsyncClient`, websocket and
polling, default reconnection settings, no reconnect code of its own) reconnects by itself
and, with the recipe of section 11 (an `auth` callable sending `since`), ends with every event
exactly once, in order.

The history lives in a redis-server (the server is a node of a cluster), so the restarted
process keeps the room's epoch and seq. The events "while the client is away" are published
at a second node of that cluster while the client's port has no server at all, so they are
certainly missed live and must come back through recovery.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import uuid
from typing import Any, Callable

import pytest
import socketio

from conftest import Cluster, free_port, start_redis, start_server, unique, wait_for, without_positions

# python-socketio's backoff (1 s, 2 s, 4 s, then 5 s, each +-0.5 s) over a restart of a
# second or two, with room to spare on a loaded machine.
RECONNECT_DEADLINE_S = 20.0
SHUTDOWN_DEADLINE_S = 15.0


@pytest.fixture(scope="module")
def history():
    """A redis-server holding the rooms' history, and a publisher node that stays up while the
    client's server restarts."""
    c = Cluster(start_redis(), f"rc-py-restart-{uuid.uuid4().hex[:8]}")
    try:
        c.add_node("py-publisher")
        yield c
    finally:
        c.stop()


class Recipe:
    """WEBSOCKET_API.md section 11 for python-socketio: `since` from the last event seen per
    room, duplicates (`seq <= cursor`) dropped. Records everything it sees."""

    def __init__(self, token: str):
        self.token = token
        self.lock = threading.Lock()
        self.cursors: dict[str, dict] = {}
        self.raw: list[dict] = []  # every envelope received, duplicates included
        self.handled: list[dict] = []  # what the recipe passed on
        self.established: list[dict] = []
        self.shutdowns: list[dict] = []
        self.disconnects: list[Any] = []

    def auth(self) -> dict:
        """python-socketio calls this on every (re)connect."""
        with self.lock:
            return {"token": self.token, "since": {r: dict(c) for r, c in self.cursors.items()}}

    def _track(self, env: dict) -> bool:
        places = [{"room": env["room"], "seq": env.get("seq"), "epoch": env.get("epoch")},
                  *env.get("also", [])]
        for p in places:
            if p.get("seq") is None:
                continue  # volatile
            cur = self.cursors.get(p["room"])
            if cur and cur["epoch"] == p["epoch"] and p["seq"] <= cur["seq"]:
                return False  # duplicate
            self.cursors[p["room"]] = {"epoch": p["epoch"], "seq": p["seq"]}
        return True

    def on_any(self, event: str, *args: Any) -> None:
        payload = args[0] if args else None
        with self.lock:
            if event == "connection.established":
                self.established.append(payload)
            elif event == "server.shutdown":
                self.shutdowns.append(payload)
            elif isinstance(payload, dict) and "id" in payload:
                self.raw.append(payload)
                if self._track(payload):
                    self.handled.append(payload)

    def on_disconnect(self, reason: Any = None) -> None:
        with self.lock:
            self.disconnects.append(reason)

    def attach(self, sio: Any) -> None:
        sio.on("*", self.on_any)
        sio.on("disconnect", self.on_disconnect)

    def updates(self, which: str) -> list[dict]:
        """The `project.updated` envelopes of `raw` or `handled` (presence notices aside)."""
        with self.lock:
            return [e for e in getattr(self, which) if e["type"] == "project.updated"]

    def ids(self, which: str) -> list[str]:
        return [e["id"] for e in self.updates(which)]


class SyncDriver:
    """A stock `socketio.Client`, default reconnection."""

    def __init__(self, recipe: Recipe):
        self.sio = socketio.Client(handle_sigint=False)
        recipe.attach(self.sio)

    def connect(self, url: str, auth: Callable[[], dict], transport: str) -> None:
        self.sio.connect(url, auth=auth, transports=[transport], wait_timeout=5)

    def call(self, event: str, data: Any) -> Any:
        return self.sio.call(event, data, timeout=5)

    def connected(self) -> bool:
        return self.sio.connected

    def close(self) -> None:
        self.sio.disconnect()


class AsyncDriver:
    """A stock `socketio.AsyncClient`, default reconnection, on an event loop of its own
    (a thread), driven from the test's thread."""

    def __init__(self, recipe: Recipe):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sio = self._run(self._make(recipe))

    async def _make(self, recipe: Recipe) -> socketio.AsyncClient:
        sio = socketio.AsyncClient(handle_sigint=False)
        recipe.attach(sio)
        return sio

    def _run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connect(self, url: str, auth: Callable[[], dict], transport: str) -> None:
        self._run(self.sio.connect(url, auth=auth, transports=[transport], wait_timeout=5))

    def call(self, event: str, data: Any) -> Any:
        return self._run(self.sio.call(event, data, timeout=5))

    def connected(self) -> bool:
        return self.sio.connected

    def close(self) -> None:
        try:
            self._run(self.sio.disconnect())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


def publish(node, project: str, label: str) -> str:
    return node.publish_ok("project.updated", {"project_id": project, "status": label})["id"]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("driver", [SyncDriver, AsyncDriver], ids=["Client", "AsyncClient"])
def test_a_restarted_server_is_rejoined_by_itself_and_nothing_is_lost(history, driver, transport):
    publisher = history.nodes[0]
    cluster = {"redis_url": history.redis.url, "key_prefix": history.key_prefix}
    port = free_port()
    node_id = unique("py-restart")
    pid = unique("p")
    room = f"project:{pid}"
    old = start_server(node_id=node_id, cluster=cluster, port=port)
    new = None
    recipe = Recipe(old.mint_token(sub=unique("u"), projects=[pid]))
    client = driver(recipe)
    try:
        client.connect(old.url, recipe.auth, transport)
        assert without_positions(client.call("subscribe", {"room": room})) == {"ok": True, "rooms": [room]}
        before = [publish(old, pid, "before-1"), publish(old, pid, "before-2")]
        wait_for(lambda: recipe.ids("handled") == before, message="the events before the restart")

        # The deploy: SIGTERM, the process drains and exits.
        old.proc.send_signal(signal.SIGTERM)
        assert old.proc.wait(timeout=SHUTDOWN_DEADLINE_S) == 0, old.log_tail()
        # (python-socketio runs handlers in threads or tasks of their own: wait for them.)
        wait_for(lambda: recipe.shutdowns, message="server.shutdown")
        assert recipe.shutdowns == [{"reconnect_after_ms": 1000}], recipe.shutdowns
        # A dropped transport, not a deliberate disconnect (which python-socketio never retries).
        wait_for(lambda: recipe.disconnects, message="the disconnect")
        assert recipe.disconnects == [socketio.Client.reason.TRANSPORT_ERROR], recipe.disconnects

        # Nothing listens on the client's port: these are missed live.
        away = [publish(publisher, pid, f"away-{i}") for i in range(1, 4)]
        assert not client.connected()

        new = start_server(node_id=node_id, cluster=cluster, port=port)
        wait_for(lambda: len(recipe.established) == 2, RECONNECT_DEADLINE_S,
                 message="the client reconnecting by itself to the restarted server")
        est = recipe.established[1]
        assert est["recovered"] is True, est
        assert est["recovery"][room]["replayed"] == len(away), est
        assert room in est["rooms"], est

        live = [publish(new, pid, f"live-{i}") for i in range(1, 3)]
        everything = before + away + live
        wait_for(lambda: recipe.ids("handled") == everything, message="every event, in order")
        assert recipe.ids("raw") == everything, "the server sent an event twice"
        assert [e["seq"] for e in recipe.updates("handled")] == list(range(1, len(everything) + 1))
        assert recipe.disconnects == [socketio.Client.reason.TRANSPORT_ERROR]
    finally:
        try:
            client.close()
        finally:
            old.stop()
            if new is not None:
                new.stop()
