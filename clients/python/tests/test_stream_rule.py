"""The client rule of a followed stream (WEBSOCKET_API.md section 13), against a scripted
server: overlaps are trimmed by code points, a gap triggers one resume (not one per delta),
an answer from before a reconnect is ignored, and the end is reported (and the iteration
ends) only once the text is complete."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, List, Optional

from roomcast_client import RoomcastStream


class ScriptedClient:
    """What a RoomcastStream uses of its client; commands are recorded, answered by the test."""

    def __init__(self) -> None:
        self.sent: List[tuple[str, Any, Callable[..., None]]] = []
        self.state = "connected"
        self.rooms: List[str] = []

    def _send(self, name: str, payload: Any, done: Callable[..., None]) -> None:
        self.sent.append((name, dict(payload), done))

    def _spawn(self, coro: Any) -> "asyncio.Task[Any]":
        return asyncio.ensure_future(coro)

    async def _enqueue(self, rooms: List[str], op: Callable[[], Any]) -> Any:
        return await op()

    def _emit(self, name: str, arg: Any) -> None:
        pass

    def _detach_stream(self, stream: RoomcastStream) -> None:
        pass


def ack(offset: int, text: str, status: str = "open", length: Optional[int] = None) -> dict:
    return {"ok": True, "stream_id": "s1", "room": "project:1", "kind": "llm", "status": status,
            "offset": offset, "length": offset + len(text) if length is None else length, "text": text}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_overlaps_are_trimmed_a_gap_resumes_once_and_the_end_waits_for_the_text():
    client = ScriptedClient()
    s = RoomcastStream(client, "s1")  # type: ignore[arg-type]
    pieces: List[str] = []

    async def read() -> None:
        async for piece in s:
            pieces.append(piece)

    reader = asyncio.ensure_future(read())
    await settle()
    assert [(n, p) for n, p, _ in client.sent] == [("stream.resume", {"stream_id": "s1", "offset": 0})]

    # A delta at 0 before the answer; the answer overlaps it.
    s._handle("stream.delta", {"stream_id": "s1", "offset": 0, "text": "👩\u200d💻ab"})
    client.sent[0][2](None, ack(0, "👩\u200d💻a"))
    assert s.text == "👩\u200d💻ab" and s.length == 5 and s.room == "project:1"

    # Overlapping by two code points ("ab"): only "c" is new; an old delta adds nothing.
    s._handle("stream.delta", {"stream_id": "s1", "offset": 3, "text": "abc"})
    s._handle("stream.delta", {"stream_id": "s1", "offset": 1, "text": "\u200d💻"})
    assert s.text == "👩\u200d💻abc"

    # A gap: one resume from what it has, however many deltas come meanwhile.
    s._handle("stream.delta", {"stream_id": "s1", "offset": 9, "text": "x"})
    s._handle("stream.delta", {"stream_id": "s1", "offset": 10, "text": "y"})
    assert len(client.sent) == 2 and client.sent[1][1] == {"stream_id": "s1", "offset": 6}
    client.sent[1][2](None, ack(6, "漢字e\u0301"))
    assert s.text == "👩\u200d💻abc漢字e\u0301" and s.length == 10

    # A reconnect: the answer in flight is stale; the new resume's answer counts.
    s._handle("stream.delta", {"stream_id": "s1", "offset": 12, "text": "z"})
    assert len(client.sent) == 3
    s._disconnected()
    s._reconnected()
    await settle()
    assert len(client.sent) == 4
    client.sent[2][2](None, ack(10, "STALE"))
    assert s.text == "👩\u200d💻abc漢字e\u0301"
    client.sent[3][2](None, ack(10, "yz"))

    # The end before the last text: still open, and a resume fetches the rest.
    s._handle("stream.finished", {"stream_id": "s1", "length": 14, "duration_ms": 5})
    assert s.status == "open" and len(client.sent) == 5
    client.sent[4][2](None, ack(12, "🎉!", "finished", 14))
    assert s.status == "finished"
    await asyncio.wait_for(reader, 2)
    assert "".join(pieces) == s.text == "👩\u200d💻abc漢字e\u0301yz🎉!"
    assert await s.wait() == "finished"
