"""AI streams with python-socketio (WEBSOCKET_API.md section 13), on one node and on a
two-node cluster (producer at one node, viewers at the other).

The producer is a backend over HTTP appending an emoji-heavy text piece by piece. Viewers
are stock `socketio.AsyncClient`s that follow the stream by the docs' client rule (offsets
in code points: `len` and slicing; drop the overlap; a gap → `stream.resume`): one that
opens mid-stream (a page reload: a new connection resuming from 0) and one whose transport
is cut mid-stream (it reconnects by itself, joins the room again and resumes from what it
has). Both must end with the exact text. A viewer's cancel reaches the producer as
`409 stream_cancelled`, and the viewer stays connected.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import socketio

from conftest import unique, wait_for
from roomcast_harness import STREAM_TEXT, stream_pieces

DEADLINE_S = 15.0
ENDS = {"stream.finished": "finished", "stream.failed": "failed", "stream.cancelled": "cancelled"}


class Viewer:
    """A stock AsyncClient on an event loop of its own (a thread) following one stream.

    python-socketio's AsyncClient runs the handlers of incoming packets in arrival order;
    the resume's ack is taken as a callback (run as its packet is read), so a delta that
    follows the ack is never applied before it.
    """

    def __init__(self, node, token: str, room: str, stream_id: str):
        self.room, self.stream_id = room, stream_id
        self.chars: list[str] = []
        self.status = "open"
        self.end: tuple[str, int] | None = None
        self.resuming = False
        self.generation = 0
        self.resumes = 0
        self.deltas = 0
        self.connects = 0
        self.errors: list[Any] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.token = token
        self.sio: socketio.AsyncClient = self._run(self._make())
        self._run(self.sio.connect(node.url, auth=self._auth, transports=["websocket"],
                                   wait_timeout=5))

    async def _auth(self) -> dict:
        """The handshake's auth, asked on every (re)connect: waits while the gate is closed."""
        await self.gate.wait()
        return {"token": self.token}

    async def _make(self) -> socketio.AsyncClient:
        self.gate = asyncio.Event()
        self.gate.set()
        sio = socketio.AsyncClient(handle_sigint=False, reconnection=True, reconnection_delay=0.1,
                                   reconnection_delay_max=0.5, randomization_factor=0)
        sio.on("connect", self._on_connect)
        sio.on("disconnect", self._on_disconnect)
        sio.on("stream.delta", self._on_delta)
        for event in ENDS:
            sio.on(event, lambda env, event=event: self._on_end(event, env))
        return sio

    def _run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # -- the client rule
    @property
    def text(self) -> str:
        return "".join(self.chars)

    def apply(self, offset: int, text: str) -> bool:
        if offset > len(self.chars):
            return False  # a gap
        self.chars.extend(text[len(self.chars) - offset:])
        if self.end is not None and len(self.chars) >= self.end[1]:
            self.status = self.end[0]
        return True

    def resume(self) -> None:
        self.generation += 1
        generation = self.generation
        self.resuming = True
        self.resumes += 1

        def answered(ack: dict) -> None:
            if generation != self.generation:
                return  # sent before a reconnect
            self.resuming = False
            if not ack.get("ok"):
                self.errors.append(ack)
                return
            self.apply(ack["offset"], ack["text"])
            if ack["status"] != "open":
                self._ended(ack["status"], ack["length"])

        asyncio.ensure_future(self.sio.emit("stream.resume",
                                            {"stream_id": self.stream_id, "offset": len(self.chars)},
                                            callback=answered))

    def _ended(self, status: str, length: int) -> None:
        self.end = self.end or (status, length)
        self.apply(length, "")
        if self.status == "open" and not self.resuming:
            self.resume()  # the last deltas are late or lost: the final text comes at once

    # -- handlers
    async def _on_connect(self) -> None:
        self.connects += 1
        # (Re)join the room, then catch up from what we have.
        ack = await self.sio.call("subscribe", {"rooms": [self.room]}, timeout=5)
        if not ack.get("ok"):
            self.errors.append(ack)
            return
        self.resume()

    def _on_disconnect(self, *_args: Any) -> None:
        self.generation += 1  # an answer in flight will not come
        self.resuming = False

    def _on_delta(self, env: dict) -> None:
        data = env["data"]
        if data["stream_id"] != self.stream_id:
            return
        self.deltas += 1
        if not self.apply(data["offset"], data["text"]) and not self.resuming:
            self.resume()

    def _on_end(self, event: str, env: dict) -> None:
        if env["data"]["stream_id"] == self.stream_id:
            self._ended(ENDS[event], env["data"]["length"])

    # -- driving it from the test's thread
    def drop(self, *, hold: bool = False) -> None:
        """Cuts the TCP connection under the client, as a network failure would; with `hold`
        its reconnect handshake waits for `release()`."""
        def abort() -> None:
            if hold:
                self.gate.clear()
            self.sio.eio.ws._response.connection.transport.abort()  # noqa: SLF001
        self.loop.call_soon_threadsafe(abort)

    def release(self) -> None:
        self.loop.call_soon_threadsafe(self.gate.set)

    def call(self, event: str, data: Any) -> Any:
        return self._run(self.sio.call(event, data, timeout=5))

    def close(self) -> None:
        try:
            self._run(self.sio.disconnect())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


@pytest.fixture(params=["one-node", "two-nodes"])
def nodes(request):
    """(producer's node, viewers' node): the same node, or the two nodes of a cluster."""
    if request.param == "one-node":
        srv = request.getfixturevalue("server")
        return srv, srv
    cluster = request.getfixturevalue("cluster")
    return cluster.nodes[0], cluster.nodes[1]


@pytest.fixture
def viewers():
    made: list[Viewer] = []

    def make(*args: Any) -> Viewer:
        made.append(Viewer(*args))
        return made[-1]

    yield make
    for v in made:
        v.close()


def create(node, room: str, **body: Any) -> str:
    r = node.post("/api/v1/streams", {"room": room, **body})
    assert r.status_code == 201, r.text
    return r.json()["stream_id"]


def append(node, stream_id: str, pieces: list[str]) -> None:
    for piece in pieces:
        r = node.post(f"/api/v1/streams/{stream_id}/append", {"text": piece})
        assert r.status_code == 202, r.text


def test_a_viewer_that_reloads_and_one_that_drops_end_with_the_exact_text(nodes, viewers):
    producer, viewing = nodes
    pid = unique("p")
    room = f"project:{pid}"
    text = STREAM_TEXT * 3
    pieces = stream_pieces(text)
    third = len(pieces) // 3
    stream_id = create(producer, room)

    dropping = viewers(viewing, viewing.mint_token(sub=unique("u"), projects=[pid]), room, stream_id)
    wait_for(lambda: dropping.resumes == 1 and not dropping.resuming, message="the first resume")
    append(producer, stream_id, pieces[:third])
    wait_for(lambda: dropping.text == "".join(pieces[:third]), DEADLINE_S, message="the first deltas")
    assert dropping.deltas > 0, "the viewer followed live deltas"

    # A page opened (or reloaded) mid-stream: a new connection that resumes from 0.
    reloaded = viewers(viewing, viewing.mint_token(sub=unique("u"), projects=[pid]), room, stream_id)
    wait_for(lambda: reloaded.text == "".join(pieces[:third]), DEADLINE_S, message="the catch-up")

    # The transport drops, and the rest is appended while the viewer is away: no delta follows
    # its return, only its resume from what it has can bring the rest.
    have = len(dropping.chars)
    dropping.drop(hold=True)
    wait_for(lambda: not dropping.sio.connected, message="the drop")
    append(producer, stream_id, pieces[third:])
    dropping.release()
    wait_for(lambda: dropping.text == text, DEADLINE_S, message="the resume after the reconnect")
    assert dropping.status == "open" and have > 0
    wait_for(lambda: reloaded.text == text, DEADLINE_S, message="the live deltas")
    r = producer.post(f"/api/v1/streams/{stream_id}/finish", {"usage": {"completion_tokens": len(pieces)}})
    assert r.status_code == 200, r.text
    assert r.json()["length"] == len(text)

    for viewer in (dropping, reloaded):
        wait_for(lambda viewer=viewer: viewer.status == "finished", DEADLINE_S,
                 message=f"the end (have {len(viewer.chars)} of {len(text)} code points)")
        assert viewer.text == text
        assert viewer.errors == []
    assert dropping.connects == 2, "the dropped viewer reconnected by itself"
    assert dropping.resumes >= 2, "and resumed from what it had"


def test_a_viewers_cancel_reaches_the_http_producer_and_the_viewer_stays(nodes, viewers):
    producer, viewing = nodes
    pid, sub = unique("p"), unique("u")
    room = f"project:{pid}"
    stream_id = create(producer, room, requested_by=sub)
    viewer = viewers(viewing, viewing.mint_token(sub=sub, projects=[pid]), room, stream_id)
    wait_for(lambda: viewer.resumes == 1 and not viewer.resuming, message="the first resume")
    append(producer, stream_id, ["partial ", "👩\u200d💻 "])
    wait_for(lambda: viewer.text == "partial 👩\u200d💻 ", DEADLINE_S, message="the text")

    ack = viewer.call("stream.cancel", {"stream_id": stream_id, "reason": "enough"})
    assert ack == {"ok": True, "stream_id": stream_id, "length": len("partial 👩\u200d💻 ")}
    # The producer's next append is refused (at the other node too).
    r = producer.post(f"/api/v1/streams/{stream_id}/append", {"text": "more"})
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "stream_cancelled", r.text
    wait_for(lambda: viewer.status == "cancelled", DEADLINE_S, message="stream.cancelled")
    assert viewer.text == "partial 👩\u200d💻 "

    # Not a disconnect: the same connection still answers.
    assert viewer.sio.connected and viewer.connects == 1
    assert viewer.call("ping", {})["pong"] is True
