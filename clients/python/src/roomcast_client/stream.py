"""Following one AI stream (WEBSOCKET_API.md section 13): `RoomcastClient.stream(stream_id)`.

The follower keeps the stream's exact text by the client rule for offsets (code points,
which is what `len` and slicing count in Python): a delta that starts before the end of
what it has is trimmed, one that starts past it is a gap and triggers `stream.resume`. It
resumes when it starts, after every reconnect and on a gap; the resume's ack is handled
as its packet is read (a callback, not an awaited future), in order with the deltas around
it, so no delta is applied out of place.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, AsyncIterator, Dict, Literal, Optional, Union

from .errors import RoomcastError

if TYPE_CHECKING:
    from .client import RoomcastClient

logger = logging.getLogger("roomcast_client")

StreamStatus = Literal["open", "finished", "failed", "cancelled"]

_ENDS: Dict[str, StreamStatus] = {
    "stream.finished": "finished",
    "stream.failed": "failed",
    "stream.cancelled": "cancelled",
}

#: Refusals of `stream.resume` that no later resume will change: the iterator raises them.
_FATAL = frozenset({"stream_not_found", "not_subscribed", "forbidden", "invalid_payload"})

_END = object()


class RoomcastStream:
    """One followed stream. Iterate it for the text as it grows:

    ```python
    stream = client.stream(stream_id, room="project:42")
    async for piece in stream:      # the new text, exactly, as it arrives
        print(piece, end="", flush=True)
    print(stream.status)            # "finished", "failed" or "cancelled"
    ```

    The iteration ends once the stream has ended and its text is complete (then the
    follower closes itself); it raises `RoomcastError` if the stream cannot be followed
    (`stream_not_found`, `not_subscribed`). `await stream.cancel()` stops the producer.
    """

    def __init__(self, client: "RoomcastClient", stream_id: str, room: Optional[str] = None) -> None:
        self.id = stream_id
        self._client = client
        self._room = room
        self._subscribed_room = False
        self._kind: Optional[str] = None
        self._text: list[str] = []
        self._have = 0
        self._status: StreamStatus = "open"
        self._end: Optional[tuple[StreamStatus, int]] = None
        self.error: Optional[str] = None
        """The producer's error, for a failed stream."""
        self.cancelled_by: Optional[str] = None
        """Who cancelled (user id), for a stream seen being cancelled."""
        self.cancel_reason: Optional[str] = None
        self._generation = 0
        self._resuming = False
        self._closed = False
        #: Set once the first catch-up is on its way: reconnects resume from then on.
        self._ready = False
        self._pieces: "asyncio.Queue[Union[str, object, RoomcastError]]" = asyncio.Queue()
        self._done = asyncio.get_running_loop().create_future()
        self._starter = asyncio.ensure_future(self._start())

    # ------------------------------------------------------------------------- reading

    @property
    def text(self) -> str:
        """The whole text so far."""
        if len(self._text) > 1:
            self._text = ["".join(self._text)]
        return self._text[0] if self._text else ""

    @property
    def length(self) -> int:
        """How many code points `text` has."""
        return self._have

    @property
    def status(self) -> StreamStatus:
        """`open`, then `finished`, `failed` or `cancelled` once the text is complete."""
        return self._status

    @property
    def room(self) -> Optional[str]:
        return self._room

    @property
    def kind(self) -> Optional[str]:
        return self._kind

    async def wait(self) -> StreamStatus:
        """Returns the end status once the stream ended and its text is complete."""
        return await asyncio.shield(self._done)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        try:
            while True:
                item = await self._pieces.get()
                if item is _END:
                    return
                if isinstance(item, RoomcastError):
                    raise item
                assert isinstance(item, str)
                yield item
        finally:
            await self.close()

    async def __aenter__(self) -> "RoomcastStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ------------------------------------------------------------------------ commands

    async def cancel(self, reason: Optional[str] = None) -> Dict[str, Any]:
        """Stops the stream (`stream.cancel`): the producer's next append is refused. Returns
        the ack (`{ok, stream_id, length}`); raises `RoomcastError` (`stream_ended`,
        `stream_cancelled`, `forbidden`, `not_subscribed`, `timeout`…). The connection stays."""
        payload: Dict[str, Any] = {"stream_id": self.id}
        if reason is not None:
            payload["reason"] = reason
        ack = await self._client._command("stream.cancel", payload)
        length = ack.get("length")
        if isinstance(length, int):
            self._ended("cancelled", length)
        return ack

    async def close(self) -> None:
        """Stops following (and leaves the room if this stream subscribed it)."""
        if self._closed:
            return
        self._closed = True
        self._generation += 1
        self._starter.cancel()
        self._client._detach_stream(self)
        if self._subscribed_room and self._room is not None and self._client.state == "connected":
            try:
                await self._client.unsubscribe(self._room)
            except RoomcastError:
                pass

    # ------------------------------------------------------------- called by the client

    def _handle(self, event_type: str, data: Dict[str, Any]) -> None:
        """A `stream.*` envelope's data with this stream's id, in arrival order."""
        if self._closed:
            return
        if event_type == "stream.delta":
            offset, piece = data.get("offset"), data.get("text")
            if isinstance(offset, int) and isinstance(piece, str):
                # A gap: the resume under way (or a new one) brings the text before it.
                if not self._apply(offset, piece) and not self._resuming:
                    self._resume()
            return
        if event_type == "stream.started":
            kind = data.get("kind")
            self._kind = kind if isinstance(kind, str) else self._kind
            return
        status = _ENDS.get(event_type)
        length = data.get("length")
        if status is None or not isinstance(length, int):
            return
        if status == "failed" and isinstance(data.get("error"), str):
            self.error = data["error"]
        if status == "cancelled":
            by, reason = data.get("by"), data.get("reason")
            self.cancelled_by = by if isinstance(by, str) else None
            self.cancel_reason = reason if isinstance(reason, str) else None
        self._ended(status, length)

    def _reconnected(self) -> None:
        """The connection is (again) established: catch up once the room is joined again."""
        if self._closed or not self._ready:
            return  # the start (subscribe, then resume) is still under way
        self._resuming = False
        rooms = [self._room] if self._room is not None else []

        async def op() -> None:
            if not self._closed:
                await self._resume_and_wait()

        self._client._spawn(self._client._enqueue(rooms, op))

    def _disconnected(self) -> None:
        self._generation += 1
        self._resuming = False

    # ----------------------------------------------------------------------- internals

    async def _start(self) -> None:
        try:
            if self._room is not None and self._room not in self._client.rooms:
                await self._connected()
                await self._client.subscribe(self._room)
                self._subscribed_room = True
            self._ready = True
            if self._client.state == "connected" and self._generation == 0:
                await self._resume_and_wait()
        except RoomcastError as err:
            self._refused(err)

    async def _connected(self) -> None:
        """Returns once the client is connected."""
        if self._client.state == "connected":
            return
        up = asyncio.get_running_loop().create_future()

        def changed(state: str) -> None:
            if state == "connected" and not up.done():
                up.set_result(None)

        remove = self._client.on_state_change(changed)
        try:
            await up
        finally:
            remove()

    async def _resume_and_wait(self) -> None:
        answered = asyncio.get_running_loop().create_future()
        self._resume(answered)
        await answered

    def _resume(self, answered: "Optional[asyncio.Future[None]]" = None) -> None:
        """Sends `stream.resume` from what we have; its ack is applied as it is read."""
        self._generation += 1
        generation = self._generation
        self._resuming = True

        def done(err: Optional[RoomcastError], ack: Optional[Dict[str, Any]]) -> None:
            if answered is not None and not answered.done():
                answered.set_result(None)
            if generation != self._generation or self._closed:
                return
            self._resuming = False
            if err is not None or ack is None:
                self._refused(err or RoomcastError("invalid_reply", "bad stream.resume ack"))
                return
            room, kind = ack.get("room"), ack.get("kind")
            if self._room is None and isinstance(room, str):
                self._room = room
            if isinstance(kind, str):
                self._kind = kind
            offset, piece = ack.get("offset"), ack.get("text")
            if isinstance(offset, int) and isinstance(piece, str):
                self._apply(offset, piece)
            status, length = ack.get("status"), ack.get("length")
            if status in ("finished", "failed", "cancelled") and isinstance(length, int):
                self._ended(status, length)

        self._client._send("stream.resume", {"stream_id": self.id, "offset": self._have}, done)

    def _apply(self, offset: int, piece: str) -> bool:
        """The client rule: place `piece` at `offset`, keeping what is past what we have."""
        if offset > self._have:
            return False
        fresh = piece[self._have - offset:]
        if fresh:
            self._text.append(fresh)
            self._have += len(fresh)
            self._pieces.put_nowait(fresh)
        self._complete()
        return True

    def _ended(self, status: StreamStatus, length: int) -> None:
        if self._end is None:
            self._end = (status, length)
        self._complete()
        # The last deltas may still be on their way (in a cluster they travel apart from the
        # end event) or lost: a resume of an ended stream brings the final text at once.
        if self._status == "open" and not self._resuming and self._client.state == "connected":
            self._resume()

    def _complete(self) -> None:
        if self._end is None or self._status != "open" or self._have < self._end[1]:
            return
        self._status = self._end[0]
        if not self._done.done():
            self._done.set_result(self._status)
        self._pieces.put_nowait(_END)

    def _refused(self, err: RoomcastError) -> None:
        self._client._emit("error", err)
        if err.code in _FATAL:
            self._pieces.put_nowait(err)
        else:
            logger.info("roomcast_client: stream %s: %s", self.id, err)
